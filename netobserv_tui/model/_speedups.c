/* The per-packet loops of the packet capture, in C: the two places where Python's cost per
 * packet set the capture's loss-free rate (see tests/bench/bench_packets.py).
 *
 *   ring_walk   the agent's walk over the ring's record headers (agent/packets.py,
 *               _MmapReader.take): where the committed records end, in chunks, and which
 *               interfaces they use.
 *   epb_blocks  the aggregator's PACKETS batch -> Enhanced Packet Blocks
 *               (aggregator/packets.py, PacketSink.write).
 *
 * Each has a Python twin that gives the same results (property-tested in
 * tests/unit/test_speedups.py); netobserv_tui/model/speedups.py picks this module when it
 * was built (hatch_build.py compiles it at install time) and the twin otherwise.
 * Little-endian hosts only: the records are read and the blocks written in host order, and
 * PACKETS is little-endian (the agent refuses big-endian hosts).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RING_BUSY (1u << 31)
#define RING_DISCARD (1u << 30)
#define RING_HEAD 8u
#define RECORD_HEAD 32u
#define META_SIZE 24u
#define MAX_SNAPLEN 65535u
#define EPB_TYPE 6u
#define MAX_KEY 37

static inline uint32_t load32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint16_t load16_be(const unsigned char *p) {
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* ring_walk(data, cons, prod, mask, chunk_bytes, left) -> (cuts, ifindexes)
 *
 * data: the ring's data area, mapped twice in a row (2 * (mask + 1) bytes); cons and prod:
 * the consumer and producer positions; left: at most this many records (-1: no limit).
 * Walks the record headers from cons, stops at prod, at the first record the kernel has not
 * committed, or after `left` records. cuts: [(end position, records), ...], one per chunk of
 * about chunk_bytes; ifindexes: the set of the interfaces of the records not discarded. */
static PyObject *ring_walk(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long long cons, prod, mask, chunk_bytes;
    long long left;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*KKKKL", &view, &cons, &prod, &mask, &chunk_bytes, &left))
        return NULL;
    PyObject *cuts = PyList_New(0), *ifindexes = PySet_New(NULL), *result = NULL;
    if (cuts == NULL || ifindexes == NULL)
        goto done;
    if ((unsigned long long)view.len < 2 * (mask + 1)) {
        PyErr_SetString(PyExc_ValueError, "the data area is smaller than twice the ring");
        goto done;
    }
    const volatile unsigned char *data = view.buf;
    unsigned long long begin = cons, count = 0;
    uint32_t last_ifindex = 0;
    int have_last = 0;
    while (cons < prod && left != 0) {
        const volatile unsigned char *head = data + (cons & mask);
        /* One aligned 4-byte load: x86-64 never reorders it with the loads that follow. */
        uint32_t length = *(const volatile uint32_t *)head;
        if (length & RING_BUSY)
            break;
        if (!(length & RING_DISCARD)) {
            uint32_t ifindex = *(const volatile uint32_t *)(head + 16);
            if (!have_last || ifindex != last_ifindex) {
                PyObject *key = PyLong_FromUnsignedLong(ifindex);
                if (key == NULL || PySet_Add(ifindexes, key) < 0) {
                    Py_XDECREF(key);
                    goto done;
                }
                Py_DECREF(key);
                last_ifindex = ifindex;
                have_last = 1;
            }
        }
        cons += RING_HEAD + (((length & 0x3FFFFFFFu) + 7u) & ~7ull);
        count++;
        if (left > 0)
            left--;
        if (cons - begin >= chunk_bytes) {
            PyObject *cut = Py_BuildValue("(KK)", cons, count);
            if (cut == NULL || PyList_Append(cuts, cut) < 0) {
                Py_XDECREF(cut);
                goto done;
            }
            Py_DECREF(cut);
            begin = cons;
            count = 0;
        }
    }
    if (count) {
        PyObject *cut = Py_BuildValue("(KK)", cons, count);
        if (cut == NULL || PyList_Append(cuts, cut) < 0) {
            Py_XDECREF(cut);
            goto done;
        }
        Py_DECREF(cut);
    }
    result = PyTuple_Pack(2, cuts, ifindexes);
done:
    Py_XDECREF(cuts);
    Py_XDECREF(ifindexes);
    PyBuffer_Release(&view);
    return result;
}

/* The IP source and destination addresses of an Ethernet frame, back to back (one VLAN tag
 * skipped): 8 bytes (IPv4), 32 (IPv6) or 0. Mirrors _address_bytes in
 * aggregator/packets.py. */
static Py_ssize_t address_bytes(const unsigned char *frame, Py_ssize_t len, unsigned char *out) {
    if (len < 14)
        return 0;
    uint16_t ethertype = load16_be(frame + 12);
    Py_ssize_t off = 14;
    if ((ethertype == 0x8100 || ethertype == 0x88A8) && len >= 18) {
        ethertype = load16_be(frame + 16);
        off = 18;
    }
    if (ethertype == 0x0800 && len >= off + 20) {
        memcpy(out, frame + off + 12, 8);
        return 8;
    }
    if (ethertype == 0x86DD && len >= off + 40) {
        memcpy(out, frame + off + 8, 32);
        return 32;
    }
    return 0;
}

/* The blocks being written, into the caller's bytearray (kept from batch to batch, so that
 * its memory is not faulted in again for every batch). */
typedef struct {
    PyObject *array;
    size_t len;
} Out;

static int out_reserve(Out *out, size_t more) {
    size_t cap = (size_t)PyByteArray_GET_SIZE(out->array);
    if (out->len + more <= cap)
        return 0;
    if (cap < 1 << 16)
        cap = 1 << 16;
    while (cap < out->len + more)
        cap *= 2;
    return PyByteArray_Resize(out->array, (Py_ssize_t)cap);
}

/* epb_blocks(body, start, count, clock, names, addresses, options_of, out)
 *     -> (length, packets, wire bytes) or None
 *
 * The `count` ring records of a PACKETS payload, from body[start:], as Enhanced Packet
 * Blocks back to back in out[:length] (a bytearray, grown when too small, never shrunk). clock is added to each timestamp; names holds every ifindex a
 * record may use; with addresses true the frame's IP addresses are part of the key of
 * options_of(ifindex, direction, addresses) -> (interface id, options bytes), called once
 * per distinct key of the batch. None when a record does not parse or bytes are left over:
 * the caller then names the fault (records() in model/packets.py) and writes nothing. */
static PyObject *epb_blocks(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, count;
    long long clock;
    PyObject *names, *options_of, *array;
    int addresses;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnLO!pOO!", &view, &start, &count, &clock, &PyDict_Type,
                          &names, &addresses, &options_of, &PyByteArray_Type, &array))
        return NULL;
    const unsigned char *body = view.buf;
    Py_ssize_t size = view.len, off = start;
    PyObject *cache = PyDict_New(), *result = NULL;
    Out out = {array, 0};
    unsigned long long packets = 0, wire = 0;
    int ok = cache != NULL && start >= 0;
    /* The last key and what it gave: identical keys run in long stretches. */
    unsigned char last_key[MAX_KEY];
    Py_ssize_t last_key_len = -1;
    uint32_t last_iface = 0;
    const char *last_options = NULL;
    Py_ssize_t last_options_len = 0;
    for (Py_ssize_t index = 0; ok && index < count; index++) {
        if (off > size - (Py_ssize_t)RING_HEAD) {
            ok = 0;
            break;
        }
        uint32_t length = load32(body + off);
        if (length & RING_BUSY) {
            ok = 0;
            break;
        }
        if (length & RING_DISCARD) {
            off += RING_HEAD + (((length & ~RING_DISCARD) + 7u) & ~7u);
            continue;
        }
        if (off > size - (Py_ssize_t)RECORD_HEAD) {
            ok = 0;
            break;
        }
        uint64_t ts = load64(body + off + 8);
        uint32_t ifindex = load32(body + off + 16);
        uint32_t orig_len = load32(body + off + 20);
        uint32_t caplen = load32(body + off + 24);
        unsigned char direction = body[off + 28];
        const unsigned char *reserved = body + off + 29;
        Py_ssize_t frame = off + RECORD_HEAD;
        off += RING_HEAD + ((length + 7u) & ~7u);
        if (length != META_SIZE + caplen || caplen > orig_len || off > size || direction > 1
            || reserved[0] || reserved[1] || reserved[2] || caplen > MAX_SNAPLEN) {
            ok = 0;
            break;
        }
        unsigned char key[MAX_KEY];
        memcpy(key, &ifindex, 4);
        key[4] = direction;
        Py_ssize_t key_len = 5;
        if (addresses)
            key_len += address_bytes(body + frame, caplen, key + 5);
        if (key_len != last_key_len || memcmp(key, last_key, key_len) != 0) {
            PyObject *raw = PyBytes_FromStringAndSize((const char *)key, key_len);
            if (raw == NULL) {
                ok = 0;
                goto fail;
            }
            PyObject *value = PyDict_GetItemWithError(cache, raw); /* borrowed */
            if (value == NULL && PyErr_Occurred()) {
                Py_DECREF(raw);
                goto fail;
            }
            if (value == NULL) {
                PyObject *index_key = PyLong_FromUnsignedLong(ifindex);
                int known = index_key ? PyDict_Contains(names, index_key) : -1;
                Py_XDECREF(index_key);
                if (known <= 0) {
                    Py_DECREF(raw);
                    if (known < 0)
                        goto fail;
                    ok = 0;
                    break;
                }
                value = PyObject_CallFunction(options_of, "IBy#", ifindex, direction,
                                              (const char *)key + 5, key_len - 5);
                if (value == NULL) {
                    Py_DECREF(raw);
                    goto fail;
                }
                int stored = PyDict_SetItem(cache, raw, value);
                Py_DECREF(value); /* the cache holds it */
                if (stored < 0) {
                    Py_DECREF(raw);
                    goto fail;
                }
            }
            Py_DECREF(raw);
            unsigned long iface;
            PyObject *options;
            if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 2
                || !PyBytes_Check(options = PyTuple_GET_ITEM(value, 1))) {
                PyErr_SetString(PyExc_TypeError,
                                "options_of must return (interface id, options bytes)");
                goto fail;
            }
            iface = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(value, 0));
            if (iface == (unsigned long)-1 && PyErr_Occurred())
                goto fail;
            last_iface = (uint32_t)iface;
            last_options = PyBytes_AS_STRING(options);
            last_options_len = PyBytes_GET_SIZE(options);
            memcpy(last_key, key, key_len);
            last_key_len = key_len;
        }
        uint32_t pad = (4u - (caplen & 3u)) & 3u;
        uint32_t total = 32u + caplen + pad + (uint32_t)last_options_len;
        if (out_reserve(&out, total) < 0)
            goto fail;
        uint64_t when = ts + (uint64_t)clock;
        uint32_t fixed[7] = {EPB_TYPE, total, last_iface, (uint32_t)(when >> 32),
                             (uint32_t)when, caplen, orig_len};
        unsigned char *w = (unsigned char *)PyByteArray_AS_STRING(out.array) + out.len;
        memcpy(w, fixed, sizeof fixed);
        memcpy(w + 28, body + frame, caplen);
        memset(w + 28 + caplen, 0, pad);
        memcpy(w + 28 + caplen + pad, last_options, last_options_len);
        memcpy(w + total - 4, &total, 4);
        out.len += total;
        packets++;
        wire += orig_len;
    }
    if (ok && off == size)
        result = Py_BuildValue("(nKK)", (Py_ssize_t)out.len, packets, wire);
    else
        result = Py_NewRef(Py_None);
fail:
    Py_XDECREF(cache);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"ring_walk", ring_walk, METH_VARARGS,
     "ring_walk(data, cons, prod, mask, chunk_bytes, left) -> (cuts, ifindexes)"},
    {"epb_blocks", epb_blocks, METH_VARARGS,
     "epb_blocks(body, start, count, clock, names, addresses, options_of, out) -> "
     "(length, packets, wire) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "The packet capture's per-packet loops in C (see speedups.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    return PyModule_Create(&module);
}
