/* flows.c - per-flow packet and byte accounting on TC clsact hooks.
 *
 * Hooks:    two SCHED_CLS programs, nobs_tc_ingress and nobs_tc_egress, attached with
 *           direct-action to clsact ingress/egress of each captured interface. They never
 *           change a packet's fate: both always return TC_ACT_OK.
 * Maps:     flows and flows_spare (hash, MAX_FLOWS entries each) keyed by struct flow_id,
 *           and flows_current (array of maps, one slot): the map the programs count in.
 *           Every eviction interval user space puts the other map in the slot and then
 *           drains the one taken out with BPF_MAP_LOOKUP_AND_DELETE_BATCH. Updating an
 *           array of maps returns only once every program that could still use the old
 *           map has finished (the kernel waits an RCU grace period), so the drain never
 *           races a program that looked an entry up: no packet counted into an entry that
 *           was copied and deleted (lost), or into one reused by another flow (misplaced).
 *           overflow (ring buffer): when flows is full, the packet is sent to user space as a
 *           one-packet record instead of being lost; counters counts both that event and a
 *           full ring buffer, so a full map is never silent.
 *           workload_ips (hash, workload.h, only with ENABLE_WORKLOAD): the addresses of the
 *           workload a capture is narrowed to; a packet with neither end in it is not counted.
 *           packets (ring buffer, packets.h, only with ENABLE_PACKETS): a copy of every
 *           packet that is counted, for packet capture.
 * Fallback: none needed; TC BPF with bpf_skb_load_bytes works on every kernel BCC supports.
 * Minimum:  Linux 5.8 (BPF ring buffer), 5.12 for the atomic OR on flags.
 * Build:    compiled by BCC; -DMAX_FLOWS=<n> and -DOVERFLOW_PAGES=<n> come from the agent.
 *           Optional: -DENABLE_FILTER, -DENABLE_DNS, -DENABLE_WORKLOAD, -DENABLE_PACKETS
 *           (see each header).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include "flow_record.h"

/* Optional features, each compiled in only when the agent enables it (costs nothing off). */
#ifdef ENABLE_FILTER
#include "filter.h"   /* filter_verdict(): the --enable_filter rules */
#endif
#ifdef ENABLE_DNS
#include "dns.h"      /* dns_track(): DNS id, flags, rcode, latency, name */
#endif
#ifdef ENABLE_WORKLOAD
#include "workload.h" /* workload_has(): an end of the packet is in the workload's addresses */
#endif
#ifndef SAMPLING
#define SAMPLING 0
#endif

#ifndef MAX_FLOWS
#define MAX_FLOWS 100000
#endif
#ifndef OVERFLOW_PAGES
#define OVERFLOW_PAGES 256
#endif

#define DIR_INGRESS 0
#define DIR_EGRESS 1

#define ETH_HLEN_ 14
#define VLAN_HLEN_ 4
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_SCTP_ 132
#define NEXTHDR_HOP_ 0
#define NEXTHDR_ROUTING_ 43
#define NEXTHDR_FRAGMENT_ 44
#define NEXTHDR_DEST_ 60
#define IPV6_EXT_MAX 4

BPF_HASH(flows, struct flow_id, struct flow_metrics, MAX_FLOWS);
BPF_HASH(flows_spare, struct flow_id, struct flow_metrics, MAX_FLOWS);
BPF_ARRAY_OF_MAPS(flows_current, "flows", 1);
BPF_RINGBUF_OUTPUT(overflow, OVERFLOW_PAGES);
BPF_PERCPU_ARRAY(counters, u64, COUNTER_MAX);

#if defined(ENABLE_PKTDROP) || defined(ENABLE_RTT) || defined(ENABLE_TCP_EVENTS)
#include "kernel_events.h"  /* tracepoints: drops, RTT, retransmits, resets */
#endif

static __always_inline void count(u32 index)
{
    u64 *value = counters.lookup(&index);
    if (value)
        *value += 1;
}

#ifdef ENABLE_PACKETS
#include "packets.h"  /* copy_packet(): the packet itself to user space, for packet capture */
#endif

/* Fills ports, flags and ICMP type/code from the transport header at l4_off. */
static __always_inline void parse_transport(struct __sk_buff *skb, u32 l4_off,
                                            struct flow_id *id, u64 *tcp_flags)
{
    u8 l4[14];

    switch (id->transport_protocol) {
    case IPPROTO_TCP:
        if (bpf_skb_load_bytes(skb, l4_off, l4, 14) < 0)
            return;
        *tcp_flags = l4[13];
        break;
    case IPPROTO_UDP:
    case IPPROTO_SCTP_:
        if (bpf_skb_load_bytes(skb, l4_off, l4, 4) < 0)
            return;
        break;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6_:
        if (bpf_skb_load_bytes(skb, l4_off, l4, 2) < 0)
            return;
        id->icmp_type = l4[0];
        id->icmp_code = l4[1];
        return;
    default:
        return;
    }
    id->src_port = ((u16)l4[0] << 8) | l4[1];
    id->dst_port = ((u16)l4[2] << 8) | l4[3];
}

/* Returns the transport offset, or 0 when there is no transport header to read
 * (a non-first fragment, or a truncated packet). */
static __always_inline u32 parse_ipv4(struct __sk_buff *skb, u32 off, struct flow_id *id,
                                      u8 *dscp)
{
    u8 ip[20];

    if (bpf_skb_load_bytes(skb, off, ip, 20) < 0)
        return 0;
    *dscp = ip[1] >> 2;
    id->transport_protocol = ip[9];
    id->src_ip[10] = 0xff;
    id->src_ip[11] = 0xff;
    id->dst_ip[10] = 0xff;
    id->dst_ip[11] = 0xff;
    __builtin_memcpy(&id->src_ip[12], &ip[12], 4);
    __builtin_memcpy(&id->dst_ip[12], &ip[16], 4);
    if ((((u16)ip[6] << 8) | ip[7]) & 0x1fff)
        return 0;
    return off + (ip[0] & 0x0f) * 4;
}

static __always_inline u32 parse_ipv6(struct __sk_buff *skb, u32 off, struct flow_id *id,
                                      u8 *dscp)
{
    u8 ip[8];
    u8 ext[4];
    u8 next;

    if (bpf_skb_load_bytes(skb, off, ip, 8) < 0)
        return 0;
    if (bpf_skb_load_bytes(skb, off + 8, id->src_ip, 16) < 0)
        return 0;
    if (bpf_skb_load_bytes(skb, off + 24, id->dst_ip, 16) < 0)
        return 0;
    *dscp = (((ip[0] & 0x0f) << 4) | (ip[1] >> 4)) >> 2;
    next = ip[6];
    off += 40;

#pragma unroll
    for (int i = 0; i < IPV6_EXT_MAX; i++) {
        if (next != NEXTHDR_HOP_ && next != NEXTHDR_ROUTING_ && next != NEXTHDR_DEST_ &&
            next != NEXTHDR_FRAGMENT_)
            break;
        if (bpf_skb_load_bytes(skb, off, ext, 4) < 0)
            return 0;
        if (next == NEXTHDR_FRAGMENT_) {
            next = ext[0];
            if ((((u16)ext[2] << 8) | ext[3]) & 0xfff8) {
                id->transport_protocol = next;
                return 0;
            }
            off += 8;
        } else {
            next = ext[0];
            off += ((u32)ext[1] + 1) * 8;
        }
    }
    id->transport_protocol = next;
    return off;
}

static __always_inline void fill_metrics(struct flow_metrics *m, struct __sk_buff *skb,
                                         const u8 *eth, u64 now, u64 tcp_flags, u8 dscp)
{
    m->packets = 1;
    m->bytes = skb->len;
    m->start_mono_ns = now;
    m->end_mono_ns = now;
    __builtin_memcpy(m->dst_mac, eth, 6);
    __builtin_memcpy(m->src_mac, eth + 6, 6);
    m->flags = tcp_flags;
    m->dscp = dscp;
}

static __always_inline void add_packet(struct flow_metrics *m, struct __sk_buff *skb, u64 now,
                                       u64 tcp_flags)
{
    __sync_fetch_and_add(&m->packets, 1);
    __sync_fetch_and_add(&m->bytes, skb->len);
    m->end_mono_ns = now;
    if ((m->flags | tcp_flags) != m->flags)
        __sync_fetch_and_or(&m->flags, tcp_flags);
}

/* l3: the device has no link-layer header (ipip, gre, sit, wireguard, tun: the agent
 * attaches the *_l3 programs there): the packet starts with its IP header and
 * skb->protocol says which; the MACs stay 0. A constant at each call site, so each
 * program keeps only its own branch. */
static __always_inline int account(struct __sk_buff *skb, u8 direction, const bool l3)
{
    struct flow_id id;
    struct flow_metrics *m;
    u8 eth[ETH_HLEN_];
    u32 off = ETH_HLEN_;
    u32 l4_off = 0;
    u64 tcp_flags = 0;
    u8 dscp = 0;
    u16 proto;

    __builtin_memset(&id, 0, sizeof(id));
    if (l3) {
        __builtin_memset(eth, 0, sizeof(eth));
        proto = bpf_ntohs((u16)skb->protocol);
        off = 0;
    } else {
        if (bpf_skb_load_bytes(skb, 0, eth, ETH_HLEN_) < 0)
            return TC_ACT_OK;
        proto = ((u16)eth[12] << 8) | eth[13];
        if (proto == ETH_P_8021Q || proto == ETH_P_8021AD) {
            u8 tag[VLAN_HLEN_];
            if (bpf_skb_load_bytes(skb, off, tag, VLAN_HLEN_) < 0)
                return TC_ACT_OK;
            proto = ((u16)tag[2] << 8) | tag[3];
            off += VLAN_HLEN_;
        }
    }
    id.eth_protocol = proto;
    id.direction = direction;
    id.if_index = skb->ifindex;

    if (proto == ETH_P_IP)
        l4_off = parse_ipv4(skb, off, &id, &dscp);
    else if (proto == ETH_P_IPV6)
        l4_off = parse_ipv6(skb, off, &id, &dscp);
    if (l4_off)
        parse_transport(skb, l4_off, &id, &tcp_flags);
#ifdef ENABLE_WORKLOAD
    /* Before the filter rules and any map update. A frame that is not IP has no address that
     * could be in the set: it is not counted. Not placed before parse_transport(), which
     * would save one header read for skipped packets: there, the two lookups' branches
     * multiply with the transport parse paths, and with DNS and 16 filter rules the verifier
     * went past its 1M instruction limit (here: about 104k, against 98k without the check). */
    if ((proto != ETH_P_IP && proto != ETH_P_IPV6) || !workload_has(id.src_ip, id.dst_ip))
        return TC_ACT_OK;
#endif

#ifdef ENABLE_FILTER
    if (!filter_verdict(&id, (u8)tcp_flags))
        return TC_ACT_OK;
#endif
#if SAMPLING > 1
    if (bpf_get_prandom_u32() % SAMPLING)
        return TC_ACT_OK;
#endif
#ifdef ENABLE_PACKETS
    /* Exactly the packets counted below are copied: after every rule, before the map.
     * Not on devices without a link-layer header: the packet file's interfaces are
     * Ethernet. */
    if (!l3)
        copy_packet(skb, direction);
#endif

    u64 now = bpf_ktime_get_ns();
#ifdef ENABLE_DNS
    if (l4_off)
        dns_track(skb, &id, l4_off, now);
#endif
    u32 slot = 0;
    void *counting = flows_current.lookup(&slot);
    if (!counting)
        return TC_ACT_OK;  /* never: user space fills the slot before attaching */
    m = bpf_map_lookup_elem(counting, &id);
    if (m) {
        add_packet(m, skb, now, tcp_flags);
        return TC_ACT_OK;
    }

    struct flow_metrics fresh;
    __builtin_memset(&fresh, 0, sizeof(fresh));
    fill_metrics(&fresh, skb, eth, now, tcp_flags, dscp);
    int err = bpf_map_update_elem(counting, &id, &fresh, BPF_NOEXIST);
    if (err == 0)
        return TC_ACT_OK;
    if (err == -EEXIST) {
        /* Another CPU created the entry between our lookup and insert. */
        m = bpf_map_lookup_elem(counting, &id);
        if (m)
            add_packet(m, skb, now, tcp_flags);
        return TC_ACT_OK;
    }

    /* The map is full (or refused the entry): hand the packet to user space. */
    count(COUNTER_MAP_FULL);
    struct flow_overflow *rec = overflow.ringbuf_reserve(sizeof(struct flow_overflow));
    if (!rec) {
        count(COUNTER_RINGBUF_LOST);
        return TC_ACT_OK;
    }
    __builtin_memcpy(&rec->id, &id, sizeof(id));
    __builtin_memcpy(&rec->metrics, &fresh, sizeof(fresh));
    overflow.ringbuf_submit(rec, 0);
    return TC_ACT_OK;
}

int nobs_tc_ingress(struct __sk_buff *skb)
{
    return account(skb, DIR_INGRESS, false);
}

int nobs_tc_egress(struct __sk_buff *skb)
{
    return account(skb, DIR_EGRESS, false);
}

int nobs_tc_ingress_l3(struct __sk_buff *skb)
{
    return account(skb, DIR_INGRESS, true);
}

int nobs_tc_egress_l3(struct __sk_buff *skb)
{
    return account(skb, DIR_EGRESS, true);
}
