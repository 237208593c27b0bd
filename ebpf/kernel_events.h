/* kernel_events.h - per-flow data from kernel tracepoints: packet drops and TCP state.
 *
 * Hooks:    skb:kfree_skb (ENABLE_PKTDROP): a packet the kernel dropped, with the drop
 *           reason; the flow is read from the skb's headers.
 *           tcp:tcp_probe (ENABLE_RTT): the socket's smoothed RTT.
 *           tcp:tcp_retransmit_skb, tcp:tcp_send_reset, tcp:tcp_receive_reset
 *           (ENABLE_TCP_EVENTS): retransmissions and resets per connection.
 * Maps:     drops and tcp_stats, keyed by struct flow_5tuple, drained by user space at every
 *           eviction and joined to the TC flow records by 5-tuple.
 * Workload: with ENABLE_WORKLOAD (workload.h), a drop or TCP event whose two ends are both
 *           outside the workload's addresses creates no record: drops would otherwise become
 *           rows of their own (flows no TC hook recorded), and TCP records of the rest of the
 *           host would fill tcp_stats and crowd out the workload's. Checked after the cheap
 *           early exits, before any map is touched.
 * Fallback: tracepoints are stable ABI; the agent checks each exists before enabling the
 *           feature and turns off (and reports) a feature whose hook cannot load.
 * Minimum:  Linux 5.17 for the kfree_skb drop reason; struct offsets come from BTF
 *           (-DSKB_OFF_*), not from headers.
 */
#ifndef NETOBSERV_KERNEL_EVENTS_H
#define NETOBSERV_KERNEL_EVENTS_H

#ifndef EVENT_MAX_FLOWS
#define EVENT_MAX_FLOWS 16384
#endif

/* BCC declares tracepoint fields with the kernel's own enum types. We include only UAPI
 * headers, which lack them (and header trees older than the running kernel may too), so
 * they are declared here; both are 4-byte enums as the tracepoint formats say. The values
 * are never used from C: names come from the tracepoint's format file. */
enum skb_drop_reason { NOBS_SKB_DROP_REASON_PLACEHOLDER_ };
enum sk_rst_reason { NOBS_SK_RST_REASON_PLACEHOLDER_ };

#define AF_INET_ 2
#define AF_INET6_ 10

/* Whether a 16-byte address is IPv4-mapped (::ffff:a.b.c.d). */
static __always_inline int is_v4_mapped(const u8 *ip16)
{
#pragma unroll
    for (int i = 0; i < 10; i++) {
        if (ip16[i])
            return 0;
    }
    return ip16[10] == 0xff && ip16[11] == 0xff;
}

/* The ethertype of a socket's packets: an AF_INET6 socket talking to an IPv4 peer (a
 * dual-stack server, ::ffff:a.b.c.d addresses) sends and receives IPv4, which the TC hooks
 * key as 0x0800 with the same IPv4-mapped layout; keyed 0x86DD, its events would join no
 * flow and make records of their own with ::ffff: addresses. */
static __always_inline u16 ethertype_of(u16 family, const u8 *ip16)
{
    if (family == AF_INET6_)
        return is_v4_mapped(ip16) ? 0x0800 : 0x86DD;
    return 0x0800;
}

/* Fills ip16 (IPv4-mapped for AF_INET) and port from a sockaddr_in / sockaddr_in6 copy as
 * the tcp tracepoints store it; returns the ethertype, or 0 for another family. */
static __always_inline u16 from_sockaddr(const u8 *sa, u8 *ip16, u16 *port)
{
    u16 family = *(const u16 *)sa;

    *port = ((u16)sa[2] << 8) | sa[3];
    if (family == AF_INET_) {
        ip16[10] = 0xff;
        ip16[11] = 0xff;
        __builtin_memcpy(ip16 + 12, sa + 4, 4);
        return 0x0800;
    }
    if (family == AF_INET6_) {
        __builtin_memcpy(ip16, sa + 8, 16);
        return ethertype_of(family, ip16);
    }
    return 0;
}

#ifdef ENABLE_PKTDROP
struct drop_record {
    u64 packets;
    u64 bytes;
    u32 latest_reason;   /* enum skb_drop_reason; names come from the tracepoint format */
    u8 latest_state;     /* TCP state of the socket, 0 when there is none */
    u8 latest_flags;     /* TCP flags of the latest dropped packet */
    u8 pad[2];
    u32 latest_ifindex;  /* skb->dev's ifindex, 0 without a device */
    u32 latest_netns;    /* inode number of that device's network namespace, 0 if unknown */
};
BPF_HASH(drops, struct flow_5tuple, struct drop_record, EVENT_MAX_FLOWS);

TRACEPOINT_PROBE(skb, kfree_skb)
{
    u8 *skb = (u8 *)args->skbaddr;
    u8 *head;
    u16 network_header, transport_header;
    u32 len;
    struct flow_5tuple key;
    u8 flags = 0;
    u8 state = 0;

    /* SKB_CONSUMED (1) is a normal free on kernels that report it here. */
    if (args->reason <= 1)
        return 0;
    if (args->protocol != 0x0800 && args->protocol != 0x86DD)
        return 0;
    __builtin_memset(&key, 0, sizeof(key));
    bpf_probe_read_kernel(&head, sizeof(head), skb + SKB_OFF_HEAD);
    bpf_probe_read_kernel(&len, sizeof(len), skb + SKB_OFF_LEN);
    bpf_probe_read_kernel(&network_header, sizeof(network_header), skb + SKB_OFF_NETWORK_HEADER);
    bpf_probe_read_kernel(&transport_header, sizeof(transport_header),
                          skb + SKB_OFF_TRANSPORT_HEADER);
    if (!head || network_header == 0xffff)
        return 0;
    u8 *ip = head + network_header;
    u8 *l4 = 0;
    key.eth_protocol = args->protocol;
    if (args->protocol == 0x0800) {
        u8 hdr[20];
        if (bpf_probe_read_kernel(hdr, sizeof(hdr), ip) < 0 || (hdr[0] >> 4) != 4)
            return 0;
        key.transport_protocol = hdr[9];
        key.src_ip[10] = 0xff;
        key.src_ip[11] = 0xff;
        key.dst_ip[10] = 0xff;
        key.dst_ip[11] = 0xff;
        __builtin_memcpy(&key.src_ip[12], &hdr[12], 4);
        __builtin_memcpy(&key.dst_ip[12], &hdr[16], 4);
        if (!((((u16)hdr[6] << 8) | hdr[7]) & 0x1fff))
            l4 = ip + (hdr[0] & 0x0f) * 4;
    } else {
        u8 hdr[8];
        if (bpf_probe_read_kernel(hdr, sizeof(hdr), ip) < 0 || (hdr[0] >> 4) != 6)
            return 0;
        key.transport_protocol = hdr[6];
        bpf_probe_read_kernel(key.src_ip, 16, ip + 8);
        bpf_probe_read_kernel(key.dst_ip, 16, ip + 24);
        /* Extension headers are rare on dropped packets: only a direct transport header. */
        l4 = ip + 40;
    }
#ifdef ENABLE_WORKLOAD
    if (!workload_has(key.src_ip, key.dst_ip))
        return 0;
#endif
    if (transport_header != 0xffff && transport_header > network_header)
        l4 = head + transport_header;
    if (l4) {
        u8 t[14];
        switch (key.transport_protocol) {
        case IPPROTO_TCP:
            if (bpf_probe_read_kernel(t, 14, l4) == 0) {
                key.src_port = ((u16)t[0] << 8) | t[1];
                key.dst_port = ((u16)t[2] << 8) | t[3];
                flags = t[13];
            }
            break;
        case IPPROTO_UDP:
        case 132: /* SCTP */
            if (bpf_probe_read_kernel(t, 4, l4) == 0) {
                key.src_port = ((u16)t[0] << 8) | t[1];
                key.dst_port = ((u16)t[2] << 8) | t[3];
            }
            break;
        }
    }
#ifdef ENABLE_FILTER
    {
        /* The filter rules see a flow_id; its first 39 bytes are the 5-tuple. */
        struct flow_id fid;
        __builtin_memset(&fid, 0, sizeof(fid));
        __builtin_memcpy(&fid, &key, 39);
        if (!filter_drop_verdict(&fid, flags))
            return 0;
    }
#endif
    u8 *sk = 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), skb + SKB_OFF_SK);
    if (sk && key.transport_protocol == IPPROTO_TCP)
        bpf_probe_read_kernel(&state, sizeof(state), sk + SK_OFF_STATE);
    /* The device, as user space names interfaces: its ifindex, and its namespace (an
     * ifindex alone is ambiguous: every pod's namespace has its own lo at 1). */
    u8 *dev = 0;
    u8 *net = 0;
    u32 ifindex = 0;
    u32 netns = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), skb + SKB_OFF_DEV);
    if (dev) {
        bpf_probe_read_kernel(&ifindex, sizeof(ifindex), dev + NETDEV_OFF_IFINDEX);
        bpf_probe_read_kernel(&net, sizeof(net), dev + NETDEV_OFF_NET);
        if (net)
            bpf_probe_read_kernel(&netns, sizeof(netns), net + NET_OFF_NS_INUM);
    }

    struct drop_record *rec = drops.lookup(&key);
    if (!rec) {
        struct drop_record fresh;
        __builtin_memset(&fresh, 0, sizeof(fresh));
        drops.insert(&key, &fresh);
        rec = drops.lookup(&key);
        if (!rec) {
            u32 index = COUNTER_EVENTS_FULL;
            u64 *value = counters.lookup(&index);
            if (value)
                *value += 1;
            return 0;
        }
    }
    __sync_fetch_and_add(&rec->packets, 1);
    __sync_fetch_and_add(&rec->bytes, len);
    rec->latest_reason = args->reason;
    rec->latest_state = state;
    rec->latest_flags = flags;
    rec->latest_ifindex = ifindex;
    rec->latest_netns = netns;
    return 0;
}
#endif /* ENABLE_PKTDROP */

#if defined(ENABLE_RTT) || defined(ENABLE_TCP_EVENTS)
struct tcp_record {
    u64 srtt_ns;          /* latest smoothed RTT seen, ns; 0 when not measured */
    u64 retransmits;
    u64 resets_sent;
    u64 resets_received;
};
BPF_HASH(tcp_stats, struct flow_5tuple, struct tcp_record, EVENT_MAX_FLOWS);

/* The tcp_record of a socket's send direction (local -> remote), created if needed; NULL
 * when the map is full, or when neither end is in the workload (ENABLE_WORKLOAD). */
static __always_inline struct tcp_record *tcp_record_for(struct flow_5tuple *key)
{
#ifdef ENABLE_WORKLOAD
    if (!workload_has(key->src_ip, key->dst_ip))
        return 0;
#endif
    struct tcp_record *rec = tcp_stats.lookup(key);
    if (rec)
        return rec;
    struct tcp_record fresh;
    __builtin_memset(&fresh, 0, sizeof(fresh));
    tcp_stats.insert(key, &fresh);
    rec = tcp_stats.lookup(key);
    if (!rec) {
        u32 index = COUNTER_EVENTS_FULL;
        u64 *value = counters.lookup(&index);
        if (value)
            *value += 1;
    }
    return rec;
}

static __always_inline int key_from_sockaddrs(struct flow_5tuple *key, const u8 *saddr,
                                              const u8 *daddr)
{
    __builtin_memset(key, 0, sizeof(*key));
    key->eth_protocol = from_sockaddr(saddr, key->src_ip, &key->src_port);
    if (!key->eth_protocol || from_sockaddr(daddr, key->dst_ip, &key->dst_port) == 0)
        return -1;
    key->transport_protocol = IPPROTO_TCP;
    return 0;
}
#endif

#ifdef ENABLE_RTT
TRACEPOINT_PROBE(tcp, tcp_probe)
{
    struct flow_5tuple key;
    if (key_from_sockaddrs(&key, args->saddr, args->daddr) < 0 || !args->srtt)
        return 0;
    struct tcp_record *rec = tcp_record_for(&key);
    if (rec)
        rec->srtt_ns = (u64)args->srtt * 1000;
    return 0;
}
#endif

#ifdef ENABLE_TCP_EVENTS
/* tcp_retransmit_skb and tcp_receive_reset store IPv4 addresses IPv4-mapped in *_v6. */
static __always_inline void key_from_v6(struct flow_5tuple *key, const u8 *saddr_v6,
                                        const u8 *daddr_v6, u16 sport, u16 dport, u16 family)
{
    __builtin_memset(key, 0, sizeof(*key));
    __builtin_memcpy(key->src_ip, saddr_v6, 16);
    __builtin_memcpy(key->dst_ip, daddr_v6, 16);
    key->src_port = sport;
    key->dst_port = dport;
    key->eth_protocol = ethertype_of(family, key->src_ip);
    key->transport_protocol = IPPROTO_TCP;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    struct flow_5tuple key;
    key_from_v6(&key, args->saddr_v6, args->daddr_v6, args->sport, args->dport, args->family);
    struct tcp_record *rec = tcp_record_for(&key);
    if (rec)
        __sync_fetch_and_add(&rec->retransmits, 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
    struct flow_5tuple key;
    if (key_from_sockaddrs(&key, args->saddr, args->daddr) < 0)
        return 0;
    struct tcp_record *rec = tcp_record_for(&key);
    if (rec)
        __sync_fetch_and_add(&rec->resets_sent, 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
    struct flow_5tuple key;
    key_from_v6(&key, args->saddr_v6, args->daddr_v6, args->sport, args->dport, args->family);
    struct tcp_record *rec = tcp_record_for(&key);
    if (rec)
        __sync_fetch_and_add(&rec->resets_received, 1);
    return 0;
}
#endif

#endif
