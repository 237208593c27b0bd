/* filter.h - the --enable_filter rules, matched in the kernel (placeholder: accepts all).
 *
 * Contract with flows.c: compiled only with -DENABLE_FILTER; provides
 *   static __always_inline int filter_verdict(const struct flow_id *id, u8 tcp_flags);
 * returning 1 when the packet is to be recorded and 0 when it is to be skipped.
 */
#ifndef NETOBSERV_FILTER_H
#define NETOBSERV_FILTER_H

static __always_inline int filter_verdict(const struct flow_id *id, u8 tcp_flags)
{
    return 1;
}

#endif
