/* dns.h - DNS tracking on the TC hooks (placeholder: does nothing yet).
 *
 * Contract with flows.c: compiled only with -DENABLE_DNS; provides
 *   static __always_inline void dns_track(struct __sk_buff *skb, const struct flow_id *id,
 *                                         u32 l4_off, u64 now);
 * called for every packet that has a transport header at l4_off (after filters/sampling).
 */
#ifndef NETOBSERV_DNS_H
#define NETOBSERV_DNS_H

static __always_inline void dns_track(struct __sk_buff *skb, const struct flow_id *id,
                                      u32 l4_off, u64 now)
{
}

#endif
