/* packets.h - packet capture: copy the packets flows.c counts to user space.
 *
 * Contract with flows.c: compiled only with -DENABLE_PACKETS; provides
 *   static __always_inline void copy_packet(struct __sk_buff *skb, u8 direction);
 * which account() calls right after the filter rules and the sampling check, before the
 * flow map is touched: exactly the packets that are counted in flows are copied (and none
 * that are not).
 * Hooks:    the TC classifiers of flows.c (nobs_tc_ingress, nobs_tc_egress); nothing else.
 * Record:   struct packet_meta (24 bytes) followed by caplen bytes of the frame from its
 *           Ethernet header on; caplen = min(skb->len, SNAPLEN). The Python mirror is
 *           PACKET_META in netobserv_tui/agent/packets.py. len is skb->len: for a GSO/TSO
 *           super-packet at egress (or a GRO one at ingress) it is the super-packet's length,
 *           as tcpdump sees it on the same hook, not the length of each wire frame.
 * Maps:     packets (ring buffer, PACKET_RING_PAGES pages): the records. A record that does
 *           not fit (user space is behind) is lost and counted in COUNTER_PACKETS_LOST of
 *           flows.c's counters; so is a frame that could not be read (never seen so far).
 *           packet_scratch (array, PACKET_CPUS entries of 24 + 64 KiB, one per possible
 *           CPU, indexed by bpf_get_smp_processor_id()): where a record is assembled before
 *           bpf_ringbuf_output() copies it into the ring with its real size. It is a plain
 *           array, not a per-CPU one, because per-CPU values above 32 KiB fail with E2BIG;
 *           one slot per CPU is safe because a TC classifier never nests on its CPU
 *           (BH is disabled around both hooks; on PREEMPT_RT kernels two softirq threads of
 *           one CPU could interleave and mix two records). bpf_ringbuf_reserve() would avoid
 *           the copy, but it needs a constant size: every 64-byte frame would take 64 KiB.
 * Clock:    with -DPACKET_CLOCK_TAI, ts_ns is bpf_ktime_get_tai_ns() (Linux 6.1), which
 *           user space turns into wall-clock time with the kernel's (REALTIME - TAI)
 *           offset, a whole number of seconds that follows every step of the system clock.
 *           Without it, bpf_ktime_get_ns() (CLOCK_MONOTONIC), converted with
 *           (REALTIME - MONOTONIC) read at take time. User space probes the helper once
 *           and picks (FlowProgram, tai_helper_available()).
 * Fallback: none needed: the ring buffer needs Linux 5.8, which flows.c's overflow ring
 *           already requires; no perf-buffer variant is kept for older kernels.
 * Minimum:  Linux 5.8 (ring buffer); 6.1 for the TAI clock (else monotonic, see Clock).
 * Build:    -DENABLE_PACKETS, -DPACKET_CPUS=<possible CPUs>, -DSNAPLEN=<1..65535> (65535)
 *           and -DPACKET_RING_PAGES=<power of 2> (2048 = 8 MiB) come from the agent.
 */
#ifndef NETOBSERV_PACKETS_H
#define NETOBSERV_PACKETS_H

#ifndef SNAPLEN
#define SNAPLEN 65535
#endif
#if SNAPLEN < 1 || SNAPLEN > 65535
#error "SNAPLEN must be between 1 and 65535"
#endif
#ifndef PACKET_RING_PAGES
#define PACKET_RING_PAGES 2048
#endif
#ifndef PACKET_CPUS
#define PACKET_CPUS 256
#endif

#define PACKET_DATA_MAX 65536   /* a power of two above SNAPLEN: the mask below */

/* 24 bytes; user space reads it with struct "<QIIIB3x". */
struct packet_meta {
    u64 ts_ns;      /* see Clock above */
    u32 ifindex;    /* skb->ifindex: the interface of the hook */
    u32 len;        /* skb->len: the frame's length */
    u32 caplen;     /* bytes of frame that follow: min(len, SNAPLEN) */
    u8 direction;   /* 0 ingress, 1 egress */
    u8 pad[3];
};

struct packet_slot {
    struct packet_meta meta;
    u8 data[PACKET_DATA_MAX];
};

BPF_RINGBUF_OUTPUT(packets, PACKET_RING_PAGES);
BPF_ARRAY(packet_scratch, struct packet_slot, PACKET_CPUS);

static __always_inline void copy_packet(struct __sk_buff *skb, u8 direction)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct packet_slot *slot = packet_scratch.lookup(&cpu);
    u32 n = skb->len;

    if (!slot) {
        count(COUNTER_PACKETS_LOST);
        return;
    }
    if (n > SNAPLEN)
        n = SNAPLEN;
    if (n == 0)
        return;  /* an empty skb: nothing to copy (none reaches TC) */
    /* Bounds the verifier can see: 1 <= n <= 65536. Written as a mask because clang turns
     * the two checks above into one unsigned compare of n - 1, which leaves the verifier
     * with 0 <= n ("invalid zero-sized read"); the empty asm hides from clang that the
     * mask changes nothing, so that it keeps it. */
    asm volatile("" : "+r"(n));
    n = ((n - 1) & (PACKET_DATA_MAX - 1)) + 1;
#ifdef PACKET_CLOCK_TAI
    slot->meta.ts_ns = bpf_ktime_get_tai_ns();
#else
    slot->meta.ts_ns = bpf_ktime_get_ns();
#endif
    slot->meta.ifindex = skb->ifindex;
    slot->meta.len = skb->len;
    slot->meta.caplen = n;
    slot->meta.direction = direction;
    slot->meta.pad[0] = 0;
    slot->meta.pad[1] = 0;
    slot->meta.pad[2] = 0;
    if (bpf_skb_load_bytes(skb, 0, slot->data, n) < 0) {
        count(COUNTER_PACKETS_LOST);
        return;
    }
    if (packets.ringbuf_output(slot, sizeof(struct packet_meta) + n, 0) < 0)
        count(COUNTER_PACKETS_LOST);
}

#endif
