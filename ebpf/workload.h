/* workload.h - the workload filter: count only packets with an end in a set of addresses.
 *
 * Contract with flows.c: compiled only with -DENABLE_WORKLOAD; provides
 *   static __always_inline int workload_has(const u8 *src_ip, const u8 *dst_ip);
 * returning 1 when either 16-byte address (laid out as in struct flow_id: IPv4 as
 * ::ffff:a.b.c.d) is in the set, 0 otherwise. flows.c calls it once the headers are parsed,
 * before the filter rules and before any map is touched (see the comment there on why not
 * earlier); the drop and TCP tracepoints (kernel_events.h) call it before creating a record.
 * Maps:     workload_ips (hash, WORKLOAD_MAX_IPS entries): address -> 1. User space
 *           (FlowProgram.set_workload) replaces its content whenever the aggregator sends a
 *           WORKLOAD frame, without reloading anything: deletions first, then additions, so
 *           the map never needs more than its size. It starts empty: nothing is counted until
 *           the first set arrives.
 * Cost:     one hash lookup when the source is in the set, two otherwise; nothing at all
 *           without -DENABLE_WORKLOAD.
 * Build:    -DENABLE_WORKLOAD and -DWORKLOAD_MAX_IPS=<n> (8192) come from the agent.
 * Minimum:  any kernel flows.c supports (a plain hash map).
 */
#ifndef NETOBSERV_WORKLOAD_H
#define NETOBSERV_WORKLOAD_H

#ifndef WORKLOAD_MAX_IPS
#define WORKLOAD_MAX_IPS 8192
#endif

/* One address, as flow_id stores it. A struct rather than u8[16] so that BCC gives user space
 * a ctypes type it can build from 16 bytes. */
struct workload_addr {
    u8 ip[16];
};

BPF_HASH(workload_ips, struct workload_addr, u8, WORKLOAD_MAX_IPS);

static __always_inline int workload_has(const u8 *src_ip, const u8 *dst_ip)
{
    if (workload_ips.lookup((struct workload_addr *)src_ip))
        return 1;
    return workload_ips.lookup((struct workload_addr *)dst_ip) != 0;
}

#endif
