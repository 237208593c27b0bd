/* dns.h - DNS tracking on the TC hooks: transaction id, flags, response code, latency and
 *         queried name of each DNS flow.
 *
 * Hooks:    none of its own. flows.c calls dns_track() from both TC programs (ingress and
 *           egress of every captured interface) for each recorded packet that has a transport
 *           header, when it is built with -DENABLE_DNS. A non-DNS packet costs two port
 *           comparisons.
 * Maps:     dns_queries (LRU hash, DNS_MAX_INFLIGHT entries): the query's 5-tuple + DNS id ->
 *           bpf_ktime_get_ns() of the query's first sighting. The response (whose 5-tuple is the
 *           query's reversed) looks it up, computes the latency and deletes it. LRU, so that
 *           queries that are never answered age out instead of filling the map.
 *           dns_flows (hash, DNS_MAX_FLOWS entries): struct flow_5tuple in the packet's own
 *           orientation -> struct dns_record, the latest DNS message of that 5-tuple. User space
 *           drains it with the flows map and joins the two on the first 39 bytes of the keys
 *           (struct flow_5tuple is the first 39 bytes of struct flow_id). Python mirror:
 *           netobserv_tui/agent/dns.py.
 *           dns_counters (per-CPU array): records lost because dns_flows was full.
 * Twice-seen packets: a packet crossing two captured interfaces (a pod's veth, then another
 *           pod's veth) is seen twice. The query's timestamp is inserted with BPF_NOEXIST, so the
 *           first sighting wins; the response's first sighting computes the latency and deletes
 *           the query entry; a later sighting of the same response finds no query entry and must
 *           not overwrite that latency with 0, so it leaves a complete record alone.
 * Fallback: none needed: bounded loops and bpf_skb_load_bytes exist on every kernel flows.c
 *           supports.
 * Minimum:  Linux 5.3 (bounded loops, LRU hash); flows.c's own minimum (5.12) is higher.
 * Build:    -DENABLE_DNS turns it on; -DDNS_PORT=<port> (53), -DDNS_NAME_MAX=<bytes> (64, a
 *           multiple of 8; the Python mirror must match), -DDNS_MAX_INFLIGHT=<n> (4096),
 *           -DDNS_MAX_FLOWS=<n> (16384), -DDNS_STALE_NS=<ns> (10 s).
 */
#ifndef NETOBSERV_DNS_H
#define NETOBSERV_DNS_H

#ifndef DNS_PORT
#define DNS_PORT 53
#endif
#ifndef DNS_NAME_MAX
#define DNS_NAME_MAX 64
#endif
#ifndef DNS_MAX_INFLIGHT
#define DNS_MAX_INFLIGHT 4096
#endif
#ifndef DNS_MAX_FLOWS
#define DNS_MAX_FLOWS 16384
#endif
/* A query entry older than this belongs to an earlier query that was never answered (the same
 * client port and id came round again): a new query replaces its timestamp. */
#ifndef DNS_STALE_NS
#define DNS_STALE_NS 10000000000ULL
#endif

#if DNS_NAME_MAX < 8 || DNS_NAME_MAX > 248 || DNS_NAME_MAX % 8
#error "DNS_NAME_MAX must be a multiple of 8 between 8 and 248"
#endif

#define DNS_HEADER_LEN 12
#define DNS_FLAG_QR 0x8000     /* set in responses */
#define DNS_QUESTION_MIN 5     /* root name (1 byte) + QTYPE + QCLASS */
#define DNS_LABEL_MAX 63       /* larger length bytes are compression pointers or invalid */
#define TCP_DOFF_OFFSET 12     /* byte of the TCP header holding the data offset */

/* DnsErrno values: why the record is incomplete (0: it is not). A record with an errno still
 * carries the id and flags; the name holds what could be decoded. */
#define DNS_ERR_NONE 0
#define DNS_ERR_TRUNCATED 1         /* the packet ended inside the question name */
#define DNS_ERR_NAME_TOO_LONG 2     /* name longer than DNS_NAME_MAX: name holds its start */
#define DNS_ERR_BAD_NAME 3          /* a label length over 63 (compression pointer, garbage) */
#define DNS_ERR_NO_QUERY 4          /* response whose query was not seen: latency unknown (0) */
#define DNS_ERR_QUERY_NOT_STORED 5  /* query whose timestamp could not be stored */

/* What user space reads per 5-tuple: 16 + DNS_NAME_MAX bytes (80 by default), no implicit
 * padding. Python mirror: DNS_RECORD in netobserv_tui/agent/dns.py ("<HHB3xQ{N}s"). */
struct dns_record {
    u16 id;                  /* DNS transaction id, host byte order */
    u16 flags;               /* header flags, host byte order; rcode = flags & 0xF */
    u8 dns_errno;            /* DNS_ERR_* */
    u8 pad[3];
    u64 latency_ns;          /* responses: response - query time at the hooks; 0 if unknown */
    char name[DNS_NAME_MAX]; /* QNAME as dotted text, NUL-padded; no NUL when exactly full */
};

/* Key of an in-flight query: 42 bytes, every byte written (tuple zeroed first). */
struct dns_query_key {
    struct flow_5tuple tuple;  /* the query's own orientation */
    u16 id;
};

_Static_assert(sizeof(struct dns_record) == 16 + DNS_NAME_MAX, "dns_record has hidden padding");
_Static_assert(sizeof(struct dns_query_key) == 42, "dns_query_key has hidden padding");

enum dns_counter {
    DNS_COUNTER_FLOWS_FULL = 0,  /* records lost because dns_flows was full */
    DNS_COUNTER_MAX = 1,
};

BPF_TABLE("lru_hash", struct dns_query_key, u64, dns_queries, DNS_MAX_INFLIGHT);
BPF_HASH(dns_flows, struct flow_5tuple, struct dns_record, DNS_MAX_FLOWS);
BPF_PERCPU_ARRAY(dns_counters, u64, DNS_COUNTER_MAX);
/* Scratch space for the record being built: flows.c already uses much of the 512-byte stack. */
BPF_PERCPU_ARRAY(dns_scratch, struct dns_record, 1);

/* Clears name[] after its first NUL, so that records hold clean text rather than the bytes
 * that followed the name in the packet (QTYPE, QCLASS, ...). It looks for the NUL itself
 * instead of taking the terminator's position from dns_read_name(): that position is a
 * different precise value at each of the decoder's exits, and the verifier would walk this
 * loop once per exit (quadratic in DNS_NAME_MAX). Branch-free for the same reason, and not
 * unrolled: unrolled, clang spills enough to overflow the 512-byte stack. */
static __always_inline void dns_clear_tail(char *name)
{
    u64 keep = 0xff;  /* 0xff until the first NUL, then 0 */

#pragma clang loop unroll(disable)
    for (u32 i = 0; i < DNS_NAME_MAX; i++) {
        u64 c = (u8)name[i];
        keep &= ~(((c - 1) >> 63) * 0xff);  /* c == 0: (c - 1) >> 63 == 1 */
        name[i] = (char)(c & keep);
    }
}

/* Returns v, hiding from the verifier where it came from: a round trip through map memory,
 * whose contents the verifier does not track. Needed for the size of a helper call: the
 * verifier marks a size register "precise" and propagates that back to everything the size was
 * computed from, here the transport offset that flows.c computed along one of its many IP
 * header paths. States that differ in a precise register are never pruned, so the whole DNS
 * code would be verified again for every one of those paths (and for every outcome of
 * filter.h's rules on top: more than a million instructions with 16 rules). */
static __always_inline u64 dns_opaque(volatile u64 *slot, u64 v)
{
    u64 out;

    *slot = v;
    out = *slot;
    *slot = 0;
    return out;
}

/* Decodes the question name at `off` (wire format: length-prefixed labels ending with a zero
 * byte) into dotted text in rec->name, which must be zeroed. Everything after the first length
 * byte is loaded in one helper call straight into the name: each later length byte then sits
 * exactly where its dot belongs, so decoding is hopping from length byte to length byte,
 * replacing each by '.', one loop iteration per label. Returns a DNS_ERR_* code. */
static __always_inline u8 dns_read_name(struct __sk_buff *skb, u32 off, u32 end,
                                        struct dns_record *rec)
{
    char *name = rec->name;
    u8 byte;
    u64 len;
    u32 pos;

    if (off >= end || bpf_skb_load_bytes(skb, off, &byte, 1) < 0)
        return DNS_ERR_TRUNCATED;
    /* Check the register, not the stack byte: clang would reload `byte` after the checks and
     * the verifier would not know its bounds any more. */
    pos = byte;  /* index in name[] of the next length byte: the first label's end */
    asm volatile("" : "+r"(pos));
    if (pos == 0)
        return DNS_ERR_NONE;  /* the root name: "" */
    if (pos > DNS_LABEL_MAX)
        return DNS_ERR_BAD_NAME;
    /* 64-bit on purpose: the verifier must see 1 <= len <= DNS_NAME_MAX on the very register
     * passed to the helper, and a u32 would be checked on a zero-extended copy. The scratch
     * record's latency (0 until a response sets it) carries the opaque round trip. */
    len = dns_opaque(&rec->latency_ns, (u64)end - off - 1);
    if (len > DNS_NAME_MAX)
        len = DNS_NAME_MAX;
    asm volatile("" : "+r"(len));
    if (len < 1 || len > DNS_NAME_MAX)
        return DNS_ERR_TRUNCATED;
    if (bpf_skb_load_bytes(skb, off + 1, name, len) < 0)
        return DNS_ERR_TRUNCATED;

    /* Every label takes at least 2 bytes (length + 1 character) and pos starts at >= 1. */
    for (int k = 0; k < DNS_NAME_MAX / 2; k++) {
        if (pos >= DNS_NAME_MAX)
            break;
        if (pos >= len)
            return DNS_ERR_TRUNCATED;  /* the packet ends inside the name */
        byte = name[pos];
        if (byte == 0)
            return DNS_ERR_NONE;
        if (byte > DNS_LABEL_MAX)
            return DNS_ERR_BAD_NAME;
        name[pos] = '.';
        pos += byte + 1;
    }
    if (pos > DNS_NAME_MAX)
        return DNS_ERR_NAME_TOO_LONG;
    /* pos == DNS_NAME_MAX: the name fills name[] exactly if the next byte ends it. */
    if (bpf_skb_load_bytes(skb, off + 1 + DNS_NAME_MAX, &byte, 1) < 0)
        return DNS_ERR_TRUNCATED;
    return byte == 0 ? DNS_ERR_NONE : DNS_ERR_NAME_TOO_LONG;
}

static __always_inline void dns_reverse(struct flow_5tuple *out, const struct flow_5tuple *in)
{
    __builtin_memcpy(out->src_ip, in->dst_ip, 16);
    __builtin_memcpy(out->dst_ip, in->src_ip, 16);
    out->src_port = in->dst_port;
    out->dst_port = in->src_port;
    out->eth_protocol = in->eth_protocol;
    out->transport_protocol = in->transport_protocol;
    out->pad = 0;
}

static __always_inline void dns_track(struct __sk_buff *skb, const struct flow_id *id,
                                      u32 l4_off, u64 now)
{
    struct dns_query_key qkey;
    struct dns_record *rec;
    struct flow_5tuple tuple;
    u8 hdr[DNS_HEADER_LEN];
    u32 off;
    u32 end = skb->len;

    /* The only work every packet pays for. */
    if (id->src_port != DNS_PORT && id->dst_port != DNS_PORT)
        return;

    if (id->transport_protocol == IPPROTO_UDP) {
        u8 ulen[2];
        u32 udp_len;

        /* The UDP length bounds the message: trailing Ethernet padding is not DNS. */
        if (bpf_skb_load_bytes(skb, l4_off + 4, ulen, 2) < 0)
            return;
        udp_len = ((u32)ulen[0] << 8) | ulen[1];
        off = l4_off + 8;
        if (l4_off + udp_len < end)
            end = l4_off + udp_len;
    } else if (id->transport_protocol == IPPROTO_TCP) {
        u8 doff;
        u8 prefix[2];

        /* Skip the TCP header and the 2-byte length prefix. Segments without payload
         * (handshake, ACKs) stop here or below; a prefix too small for a header and one
         * question means the segment does not start a message. */
        if (bpf_skb_load_bytes(skb, l4_off + TCP_DOFF_OFFSET, &doff, 1) < 0)
            return;
        off = l4_off + (doff >> 4) * 4;
        if (bpf_skb_load_bytes(skb, off, prefix, 2) < 0)
            return;
        if ((((u16)prefix[0] << 8) | prefix[1]) < DNS_HEADER_LEN + DNS_QUESTION_MIN)
            return;
        off += 2;
    } else {
        return;
    }
    if (off + DNS_HEADER_LEN > end || bpf_skb_load_bytes(skb, off, hdr, DNS_HEADER_LEN) < 0)
        return;
    /* Queries and their responses carry exactly one question. Anything else is not a message
     * we track (or is the middle of a long TCP response). */
    if (hdr[4] != 0 || hdr[5] != 1)
        return;

    u32 zero = 0;
    rec = dns_scratch.lookup(&zero);
    if (!rec)
        return;
    __builtin_memset(rec, 0, sizeof(*rec));
    rec->id = ((u16)hdr[0] << 8) | hdr[1];
    rec->flags = ((u16)hdr[2] << 8) | hdr[3];
    rec->dns_errno = dns_read_name(skb, off + DNS_HEADER_LEN, end, rec);
    dns_clear_tail(rec->name);

    __builtin_memset(&tuple, 0, sizeof(tuple));
    __builtin_memcpy(&tuple, id, __builtin_offsetof(struct flow_5tuple, pad));
    __builtin_memset(&qkey, 0, sizeof(qkey));
    qkey.id = rec->id;

    if (!(rec->flags & DNS_FLAG_QR)) {
        __builtin_memcpy(&qkey.tuple, &tuple, sizeof(tuple));
        int err = dns_queries.insert(&qkey, &now);
        if (err == -EEXIST) {
            /* Seen already: at another hook (keep the first timestamp), or a retry. */
            u64 *ts = dns_queries.lookup(&qkey);
            if (ts && now - *ts > DNS_STALE_NS)
                *ts = now;
        } else if (err && rec->dns_errno == DNS_ERR_NONE) {
            rec->dns_errno = DNS_ERR_QUERY_NOT_STORED;
        }
    } else {
        dns_reverse(&qkey.tuple, &tuple);
        u64 *ts = dns_queries.lookup(&qkey);
        if (ts) {
            /* At least 1 ns: 0 means "not measured" and may be overwritten (below). */
            rec->latency_ns = now > *ts ? now - *ts : 1;
            dns_queries.delete(&qkey);
        } else {
            struct dns_record *seen = dns_flows.lookup(&tuple);
            /* This response's first sighting already recorded its latency. */
            if (seen && seen->id == rec->id && (seen->flags & DNS_FLAG_QR) && seen->latency_ns)
                return;
            if (rec->dns_errno == DNS_ERR_NONE)
                rec->dns_errno = DNS_ERR_NO_QUERY;
        }
    }

    if (dns_flows.update(&tuple, rec) < 0) {
        u32 index = DNS_COUNTER_FLOWS_FULL;
        u64 *lost = dns_counters.lookup(&index);
        if (lost)
            *lost += 1;
    }
}

#endif
