/* flow_record.h - record structs shared by the eBPF programs and the Python agent.
 *
 * The Python mirror is netobserv_tui/agent/records.py (struct module formats); any change
 * here must be made there too, and RECORD_ABI_VERSION bumped.  Layouts have explicit
 * padding so that the C compiler and Python's struct module agree byte for byte, and keys
 * are always zeroed before they are filled so that padding never splits a flow.
 */
#ifndef NETOBSERV_FLOW_RECORD_H
#define NETOBSERV_FLOW_RECORD_H

#define RECORD_ABI_VERSION 1

/* Identity of a flow at one hook: 48 bytes. IPv4 addresses are stored IPv4-mapped
 * (::ffff:a.b.c.d) so that one key type serves both families. */
struct flow_id {
    u8 src_ip[16];
    u8 dst_ip[16];
    u16 src_port;           /* host byte order */
    u16 dst_port;
    u16 eth_protocol;       /* host byte order, e.g. 0x0800 */
    u8 transport_protocol;  /* IPPROTO_* */
    u8 direction;           /* 0 ingress, 1 egress, at the interface */
    u32 if_index;
    u8 icmp_type;
    u8 icmp_code;
    u8 pad[2];
};

/* A flow's addresses, ports and protocols without interface or direction: 40 bytes. It is
 * the first 39 bytes of struct flow_id (plus padding), so that user space can join the
 * feature maps below to flow records by slicing the key. Hooks that do not see an
 * interface (tracepoints) key their data this way. */
struct flow_5tuple {
    u8 src_ip[16];
    u8 dst_ip[16];
    u16 src_port;
    u16 dst_port;
    u16 eth_protocol;
    u8 transport_protocol;
    u8 pad;
};

/* Counters of a flow over one eviction interval: 56 bytes. */
struct flow_metrics {
    u64 packets;
    u64 bytes;
    u64 start_mono_ns;      /* bpf_ktime_get_ns() of the first packet */
    u64 end_mono_ns;        /* ... of the latest packet */
    u64 flags;              /* OR of TCP flags; 64 bits for the atomic OR */
    u8 src_mac[6];
    u8 dst_mac[6];
    u8 dscp;
    u8 pad[3];
};

/* A packet that found the flow map full goes to user space on its own. */
struct flow_overflow {
    struct flow_id id;
    struct flow_metrics metrics;
};

/* Indexes of the per-CPU counter array. */
enum agent_counter {
    COUNTER_MAP_FULL = 0,      /* packets that found the flow map full */
    COUNTER_RINGBUF_LOST = 1,  /* ... and also could not be sent through the ring buffer */
    COUNTER_EVENTS_FULL = 2,   /* drop/TCP events that found their map full */
    COUNTER_PACKETS_LOST = 3,  /* captured packets the packets ring buffer had no room for */
    COUNTER_MAX = 4,
};

#endif
