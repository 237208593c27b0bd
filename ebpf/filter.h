/* filter.h - the --enable_filter rules, matched in the kernel before a packet is counted.
 *
 * Contract with flows.c: compiled only with -DENABLE_FILTER; provides
 *   static __always_inline int filter_verdict(const struct flow_id *id, u8 tcp_flags);
 * returning 1 when the packet is to be recorded and 0 when it is to be skipped, and
 *   static __always_inline int filter_drop_verdict(const struct flow_id *id, u8 tcp_flags);
 * the same for a packet the kernel dropped (for the drop hook: only there do rules with
 * --drops match).
 *
 * Maps:     filter_rules (array, FILTER_MAX_RULES entries of struct filter_rule); user space
 *           writes entries 0..FILTER_RULES-1 before the programs are attached, in the order
 *           the rules were given (netobserv_tui/model/filters.py, FilterSet.pack()).
 * Build:    -DFILTER_RULES=<n> (0..FILTER_MAX_RULES) and -DFILTER_MAX_RULES=<max> come from
 *           the agent (FilterSet.defines()). n is a compile-time constant, so the rule loop has
 *           a constant bound the verifier can follow, and n == 0 compiles to "record".
 * Verdict:  the first rule (in order) that matches decides: Accept records, Reject skips.
 *           When no rule matches, the packet is skipped if any rule is an Accept rule, and
 *           recorded if all rules are Reject rules (a list of exclusions).
 * Minimum:  Linux 5.3 (bounded loops).
 */
#ifndef NETOBSERV_FILTER_H
#define NETOBSERV_FILTER_H

#ifndef FILTER_MAX_RULES
#define FILTER_MAX_RULES 16
#endif
#ifndef FILTER_RULES
#define FILTER_RULES 0
#endif
#if FILTER_RULES > FILTER_MAX_RULES
#error "FILTER_RULES exceeds FILTER_MAX_RULES"
#endif

/* Which conditions a rule sets: a condition whose bit is clear matches every packet. */
#define FILTER_F_ADDR       0x0001  /* --cidr (other than 0.0.0.0/0) */
#define FILTER_F_PEER       0x0002  /* --peer_ip / --peer_cidr (ditto) */
#define FILTER_F_PROTO      0x0004  /* --protocol */
#define FILTER_F_DIRECTION  0x0008  /* --direction */
#define FILTER_F_SPORT      0x0010  /* --sport, --sport_range, --sports */
#define FILTER_F_DPORT      0x0020  /* --dport, --dport_range, --dports */
#define FILTER_F_PORT       0x0040  /* --port*: sport and dport hold the same ranges, either */
#define FILTER_F_ICMP_TYPE  0x0080  /* --icmp_type */
#define FILTER_F_ICMP_CODE  0x0100  /* --icmp_code */
#define FILTER_F_TCP_FLAGS  0x0200  /* --tcp_flags: (flags & tcp_mask) == tcp_value */
#define FILTER_F_DROPS      0x0400  /* --drops: only packets the kernel dropped */

#define FILTER_REJECT 0
#define FILTER_ACCEPT 1

#define FILTER_ETH_P_IP 0x0800
#define FILTER_IPPROTO_ICMP 1
#define FILTER_IPPROTO_ICMPV6 58

/* One rule: 96 bytes, no implicit padding. Mirrored by RULE in netobserv_tui/model/filters.py
 * (struct format "<16s16s16s16s4H4HHHBBBBBBBBB3x"); change both together.
 *
 *   off size field
 *     0  16  addr          --cidr network, laid out as flow_id addresses (IPv4-mapped)
 *    16  16  addr_mask     its prefix length as a mask of the same layout (an IPv4 /24 is
 *                          the mapped /120); all zero matches any address
 *    32  16  peer          --peer_ip / --peer_cidr network, same layout
 *    48  16  peer_mask
 *    64   8  sport[4]      two inclusive ranges lo0, hi0, lo1, hi1 (one port: p,p,p,p;
 *    72   8  dport[4]      a range: a,b,a,b; a pair: p,p,q,q); ports are >= 1, so a packet
 *                          without ports (port 0) never matches
 *    80   2  eth_protocol  0x0800 or 0x86DD when an address condition fixes the IP version;
 *                          0 for any
 *    82   2  flags         FILTER_F_*
 *    84   1  protocol      IPPROTO_*
 *    85   1  direction     0 ingress, 1 egress (flow_id.direction)
 *    86   1  icmp_type
 *    87   1  icmp_code
 *    88   1  tcp_mask      --tcp_flags as a mask and the value the masked byte must equal
 *    89   1  tcp_value
 *    90   1  action        FILTER_ACCEPT or FILTER_REJECT
 *    91   1  addr_len      the prefix lengths as given (0-32 or 0-128): not read here; they
 *    92   1  peer_len      keep a map dump readable
 *    93   3  pad
 *
 * Why masks rather than prefix lengths: comparing whole bytes and then one masked byte makes
 * the loop's length depend on the rule, and the verifier explores every length on every path
 * into the filter (flows.c reaches it by a few dozen parse paths). Measured on Linux 6.18:
 * 600k verified instructions for one rule, over the 1M limit from two rules on. Masked 32-bit
 * words are straight-line code (four words for IPv6, the last one for IPv4): 16 rules verify
 * in about 64k instructions. User space turns each prefix length into its mask.
 */
struct filter_rule {
    u8 addr[16];
    u8 addr_mask[16];
    u8 peer[16];
    u8 peer_mask[16];
    u16 sport[4];
    u16 dport[4];
    u16 eth_protocol;
    u16 flags;
    u8 protocol;
    u8 direction;
    u8 icmp_type;
    u8 icmp_code;
    u8 tcp_mask;
    u8 tcp_value;
    u8 action;
    u8 addr_len;
    u8 peer_len;
    u8 pad[3];
};

BPF_ARRAY(filter_rules, struct filter_rule, FILTER_MAX_RULES);

/* A 32-bit load that may alias the u8 arrays it reads. */
typedef u32 __attribute__((may_alias)) filter_word;

/* The bits of 32-bit word w where ip and net differ inside mask. Addresses sit at 4-byte
 * aligned offsets both in struct flow_id (which has a u32 member, so the stack copy is
 * aligned; the verifier insists on aligned stack reads) and in struct filter_rule. */
static __always_inline u32 filter_word_diff(const u8 *ip, const u8 *net, const u8 *mask,
                                            const int w)
{
    return (*(const filter_word *)(ip + 4 * w) ^ *(const filter_word *)(net + 4 * w)) &
           *(const filter_word *)(mask + 4 * w);
}

/* Non-zero when ip is outside net/mask: only the IPv4 word for an IPv4 rule (the family was
 * checked, so the ::ffff: part is known to agree), all four words for IPv6. */
static __always_inline u32 filter_outside(const u8 *ip, const u8 *net, const u8 *mask,
                                          const int v4)
{
    u32 diff = filter_word_diff(ip, net, mask, 3);

    if (!v4)
        diff |= filter_word_diff(ip, net, mask, 0) | filter_word_diff(ip, net, mask, 1) |
                filter_word_diff(ip, net, mask, 2);
    return diff;
}

/* --cidr on one side and the peer on the other, tried both ways round. A condition that is
 * not set has an all-zero mask, which every address passes, so there is nothing else to
 * test. The family is read once and each branch compares with a constant width. */
static __always_inline int filter_addresses(const struct filter_rule *r,
                                            const struct flow_id *id)
{
    if (r->eth_protocol == FILTER_ETH_P_IP) {
        if (!(filter_outside(id->src_ip, r->addr, r->addr_mask, 1) |
              filter_outside(id->dst_ip, r->peer, r->peer_mask, 1)))
            return 1;
        return !(filter_outside(id->dst_ip, r->addr, r->addr_mask, 1) |
                 filter_outside(id->src_ip, r->peer, r->peer_mask, 1));
    }
    if (!(filter_outside(id->src_ip, r->addr, r->addr_mask, 0) |
          filter_outside(id->dst_ip, r->peer, r->peer_mask, 0)))
        return 1;
    return !(filter_outside(id->dst_ip, r->addr, r->addr_mask, 0) |
             filter_outside(id->src_ip, r->peer, r->peer_mask, 0));
}

static __always_inline int filter_port_in(u16 port, const u16 *range)
{
    return (port >= range[0] && port <= range[1]) || (port >= range[2] && port <= range[3]);
}

/* Cheap single-field tests first, addresses (the dearest) last. */
static __always_inline int filter_rule_matches(const struct filter_rule *r,
                                               const struct flow_id *id, u8 tcp_flags,
                                               int dropped)
{
    u16 flags = r->flags;

    if ((flags & FILTER_F_DROPS) && !dropped)
        return 0;
    if ((flags & FILTER_F_DIRECTION) && r->direction != id->direction)
        return 0;
    if (r->eth_protocol && r->eth_protocol != id->eth_protocol)
        return 0;
    if ((flags & FILTER_F_PROTO) && r->protocol != id->transport_protocol)
        return 0;
    if (flags & (FILTER_F_ICMP_TYPE | FILTER_F_ICMP_CODE)) {
        /* flow_id's ICMP fields are 0 for other protocols: do not let type 0 match TCP. */
        if (id->transport_protocol != FILTER_IPPROTO_ICMP &&
            id->transport_protocol != FILTER_IPPROTO_ICMPV6)
            return 0;
        if ((flags & FILTER_F_ICMP_TYPE) && r->icmp_type != id->icmp_type)
            return 0;
        if ((flags & FILTER_F_ICMP_CODE) && r->icmp_code != id->icmp_code)
            return 0;
    }
    if ((flags & FILTER_F_TCP_FLAGS) && (tcp_flags & r->tcp_mask) != r->tcp_value)
        return 0;
    if (flags & FILTER_F_PORT) {
        if (!filter_port_in(id->src_port, r->sport) && !filter_port_in(id->dst_port, r->dport))
            return 0;
    } else {
        if ((flags & FILTER_F_SPORT) && !filter_port_in(id->src_port, r->sport))
            return 0;
        if ((flags & FILTER_F_DPORT) && !filter_port_in(id->dst_port, r->dport))
            return 0;
    }
    if ((flags & (FILTER_F_ADDR | FILTER_F_PEER)) && !filter_addresses(r, id))
        return 0;
    return 1;
}

static __always_inline int filter_rules_verdict(const struct flow_id *id, u8 tcp_flags,
                                                int dropped)
{
#if FILTER_RULES == 0
    return 1;
#else
    int any_accept = 0;

    for (u32 i = 0; i < FILTER_RULES; i++) {
        u32 key = i;
        struct filter_rule *r = filter_rules.lookup(&key);
        if (!r)
            break;   /* cannot happen for i < FILTER_MAX_RULES; the verifier wants the test */
        if (filter_rule_matches(r, id, tcp_flags, dropped))
            return r->action == FILTER_ACCEPT;
        any_accept |= r->action == FILTER_ACCEPT;
    }
    return !any_accept;
#endif
}

static __always_inline int filter_verdict(const struct flow_id *id, u8 tcp_flags)
{
    return filter_rules_verdict(id, tcp_flags, 0);
}

static __always_inline int filter_drop_verdict(const struct flow_id *id, u8 tcp_flags)
{
    return filter_rules_verdict(id, tcp_flags, 1);
}

#endif
