/* jn_msg: the message envelope, ids and the msgpack storage encoding (see jn_msg.h). */
#include "jn_msg.h"

#include <msgpack.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "jn_mem.h"

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int64_t jn_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void jn_idgen_init(struct jn_idgen *g)
{
    pthread_mutex_init(&g->lock, NULL);
    g->last_ms = -1;
    memset(g->rnd, 0, sizeof(g->rnd));
}

void jn_idgen_destroy(struct jn_idgen *g)
{
    pthread_mutex_destroy(&g->lock);
}

static void fill_random(unsigned char *p, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r <= 0) {
            /* getrandom on Linux does not fail for small sizes once seeded; fall back to time. */
            uint64_t t = (uint64_t)jn_now_us();
            for (; got < n; got++) {
                p[got] = (unsigned char)(t >> (8 * (got % 8)));
            }
            return;
        }
        got += (size_t)r;
    }
}

void jn_idgen_next(struct jn_idgen *g, char out[JN_ID_LEN + 1])
{
    unsigned char b[16];
    int64_t ms = jn_now_us() / 1000;

    pthread_mutex_lock(&g->lock);
    if (ms <= g->last_ms) {
        /* Same millisecond (or the clock stepped back): keep the order by incrementing. */
        ms = g->last_ms;
        for (int i = 9; i >= 0; i--) {
            if (++g->rnd[i] != 0) {
                break;
            }
        }
    } else {
        fill_random(g->rnd, sizeof(g->rnd));
        g->rnd[0] &= 0x7f; /* leave room to increment without wrapping */
        g->last_ms = ms;
    }
    for (int i = 0; i < 6; i++) {
        b[i] = (unsigned char)((uint64_t)ms >> (40 - 8 * i));
    }
    memcpy(b + 6, g->rnd, 10);
    pthread_mutex_unlock(&g->lock);

    /* 128 bits as 26 base32 digits: the first digit carries the top 3 bits (2 of them zero).
     * The digits are taken from the low end, shifting the 128 bits (hi, lo) right by 5. */
    {
        uint64_t hi = 0, lo = 0;
        for (int i = 0; i < 8; i++) {
            hi = (hi << 8) | b[i];
            lo = (lo << 8) | b[8 + i];
        }
        for (int i = JN_ID_LEN - 1; i >= 0; i--) {
            out[i] = crockford[lo & 31u];
            lo = (lo >> 5) | (hi << 59);
            hi >>= 5;
        }
    }
    out[JN_ID_LEN] = '\0';
}

/* n bytes (not NUL-terminated) form an id: exactly JN_ID_LEN characters of the alphabet. */
static int id_bytes_valid(const char *p, size_t n)
{
    if (n != JN_ID_LEN) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\0' || strchr(crockford, p[i]) == NULL) {
            return 0;
        }
    }
    return 1;
}

int64_t jn_id_time_ms(const char *id)
{
    int64_t ms = 0;

    if (id == NULL || !id_bytes_valid(id, strnlen(id, JN_ID_LEN + 1))) {
        return -1;
    }
    /* The first 10 digits hold 50 bits, the top 2 of which are zero: 48 bits of time. */
    for (int i = 0; i < 10; i++) {
        const char *p = strchr(crockford, id[i]);
        if (p == NULL || id[i] == '\0') {
            return -1;
        }
        ms = (ms << 5) | (p - crockford);
    }
    return ms;
}

static struct jn_msg *msg_alloc(const char *channel)
{
    struct jn_msg *m = jn_calloc(1, sizeof(*m));

    if (m == NULL) {
        return NULL;
    }
    atomic_init(&m->refs, 1);
    m->channel = jn_strdup(channel ? channel : "");
    if (m->channel == NULL) {
        jn_free(m);
        return NULL;
    }
    m->recv_us = jn_now_us();
    return m;
}

struct jn_msg *jn_msg_new_take(const char *channel, void *payload, size_t len)
{
    struct jn_msg *m = msg_alloc(channel);

    if (m == NULL) {
        jn_free(payload);
        return NULL;
    }
    if (payload == NULL) {
        payload = jn_malloc(1);
        if (payload == NULL) {
            jn_msg_unref(&m);
            return NULL;
        }
        len = 0;
    }
    m->payload = payload;
    m->payload[len] = '\0';
    m->len = len;
    return m;
}

struct jn_msg *jn_msg_new(const char *channel, const void *payload, size_t len)
{
    unsigned char *p = jn_malloc(len + 1);

    if (p == NULL) {
        return NULL;
    }
    if (len) {
        memcpy(p, payload, len);
    }
    return jn_msg_new_take(channel, p, len);
}

struct jn_msg *jn_msg_copy(const struct jn_msg *src)
{
    struct jn_msg *m = jn_msg_new(src->channel, src->payload, src->len);

    if (m == NULL) {
        return NULL;
    }
    memcpy(m->id, src->id, sizeof(m->id));
    m->recv_us = src->recv_us;
    for (size_t i = 0; i < src->nhdrs; i++) {
        if (jn_msg_header_add(m, src->hdrs[i].name, src->hdrs[i].value) != 0) {
            jn_msg_unref(&m);
            return NULL;
        }
    }
    return m;
}

struct jn_msg *jn_msg_ref(struct jn_msg *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void jn_msg_unref(struct jn_msg **mp)
{
    struct jn_msg *m = *mp;

    if (m == NULL) {
        return;
    }
    *mp = NULL;
    if (atomic_fetch_sub(&m->refs, 1) != 1) {
        return;
    }
    for (size_t i = 0; i < m->nhdrs; i++) {
        jn_free(m->hdrs[i].name);
    }
    jn_free(m->hdrs);
    jn_free(m->channel);
    jn_free(m->payload);
    jn_free(m->dedup);
    jn_free(m);
}

int jn_msg_set_dedup(struct jn_msg *m, const void *key, size_t klen, long long ttl_ms,
                     const void *answer, size_t alen)
{
    struct jn_dedup *d;

    jn_msg_clear_dedup(m);
    if (klen == 0 || klen > JN_DEDUP_KEY_MAX || ttl_ms <= 0) {
        return JN_EINVAL;
    }
    if (answer == NULL) {
        alen = 0;
    }
    d = jn_malloc(sizeof(*d) + klen + alen);
    if (d == NULL) {
        return JN_ENOMEM;
    }
    d->ttl_ms = ttl_ms;
    d->answered = answer != NULL;
    d->klen = klen;
    d->alen = alen;
    memcpy(d->data, key, klen);
    if (alen) {
        memcpy(d->data + klen, answer, alen);
    }
    m->dedup = d;
    return 0;
}

void jn_msg_clear_dedup(struct jn_msg *m)
{
    jn_free(m->dedup);
    m->dedup = NULL;
}

void jn_msg_set_payload(struct jn_msg *m, void *p, size_t len)
{
    if (p == NULL) {
        /* Keep the invariant that payload is never NULL. */
        p = jn_malloc(1);
        len = 0;
        if (p == NULL) {
            m->len = 0;
            return;
        }
    }
    jn_free(m->payload);
    m->payload = p;
    m->payload[len] = '\0';
    m->len = len;
}

const char *jn_msg_header_get(const struct jn_msg *m, const char *name)
{
    for (size_t i = 0; i < m->nhdrs; i++) {
        if (strcasecmp(m->hdrs[i].name, name) == 0) {
            return m->hdrs[i].value;
        }
    }
    return NULL;
}

/* name and value (nl and vl bytes) in one new allocation, set into h. 0 | JN_ENOMEM */
static int header_make(struct jn_header *h, const char *name, size_t nl, const char *value,
                       size_t vl)
{
    char *p = jn_malloc(nl + vl + 2);

    if (p == NULL) {
        return JN_ENOMEM;
    }
    memcpy(p, name, nl);
    p[nl] = '\0';
    if (vl) {
        memcpy(p + nl + 1, value, vl);
    }
    p[nl + 1 + vl] = '\0';
    h->name = p;
    h->value = p + nl + 1;
    return 0;
}

static int header_push(struct jn_msg *m, const char *name, size_t nl, const char *value,
                       size_t vl)
{
    if (m->nhdrs == m->caphdrs) {
        size_t cap = m->caphdrs ? m->caphdrs * 2 : 8;
        struct jn_header *h = jn_realloc(m->hdrs, cap * sizeof(*h));
        if (h == NULL) {
            return JN_ENOMEM;
        }
        m->hdrs = h;
        m->caphdrs = cap;
    }
    if (header_make(&m->hdrs[m->nhdrs], name, nl, value, vl) != 0) {
        return JN_ENOMEM;
    }
    m->nhdrs++;
    return 0;
}

int jn_msg_header_add(struct jn_msg *m, const char *name, const char *value)
{
    return header_push(m, name, strlen(name), value, strlen(value));
}

int jn_msg_header_addn(struct jn_msg *m, const char *name, const char *value, size_t vlen)
{
    return header_push(m, name, strlen(name), value, vlen);
}

int jn_header_set_value(struct jn_header *h, const char *value)
{
    struct jn_header n;

    if (header_make(&n, h->name, strlen(h->name), value, strlen(value)) != 0) {
        return JN_ENOMEM;
    }
    jn_free(h->name);
    *h = n;
    return 0;
}

void jn_header_clear(struct jn_header *h)
{
    jn_free(h->name);
    h->name = NULL;
    h->value = NULL;
}

int jn_msg_header_set(struct jn_msg *m, const char *name, const char *value)
{
    for (size_t i = 0; i < m->nhdrs; i++) {
        if (strcasecmp(m->hdrs[i].name, name) == 0) {
            return jn_header_set_value(&m->hdrs[i], value);
        }
    }
    return jn_msg_header_add(m, name, value);
}

int jn_msg_header_del(struct jn_msg *m, const char *name)
{
    size_t w = 0;
    int n = 0;

    for (size_t i = 0; i < m->nhdrs; i++) {
        if (strcasecmp(m->hdrs[i].name, name) == 0) {
            jn_header_clear(&m->hdrs[i]);
            n++;
        } else {
            m->hdrs[w++] = m->hdrs[i];
        }
    }
    m->nhdrs = w;
    return n;
}

/* ---- msgpack encoding ---- */

/* Writes the header byte and n in k big-endian bytes. b has room (reserved by the caller). */
static void mp_head(struct jn_buf *b, unsigned char tag, uint64_t n, int k)
{
    unsigned char *p = (unsigned char *)b->p + b->len;

    p[0] = tag;
    for (int i = k; i >= 1; i--) {
        p[i] = (unsigned char)n;
        n >>= 8;
    }
    b->len += (size_t)k + 1;
}

/* A container or string/binary header: the fix form below fixmax (fix | n) when fix is set,
 * else the 8-bit form (when t8 is set), the 16-bit or the 32-bit one. */
static int mp_len(struct jn_buf *b, size_t n, unsigned char fix, size_t fixmax, unsigned char t8,
                  unsigned char t16, unsigned char t32)
{
    if ((uint64_t)n > 0xffffffffu || jn_buf_reserve(b, 5) != 0) {
        return JN_ENOMEM;
    }
    if (fix && n < fixmax) {
        mp_head(b, (unsigned char)(fix | n), 0, 0);
    } else if (t8 && n < 256) {
        mp_head(b, t8, n, 1);
    } else if (n < 65536) {
        mp_head(b, t16, n, 2);
    } else {
        mp_head(b, t32, n, 4);
    }
    b->p[b->len] = '\0';
    return 0;
}

int jn_mp_array(struct jn_buf *b, size_t n)
{
    return mp_len(b, n, 0x90, 16, 0, 0xdc, 0xdd);
}

int jn_mp_int(struct jn_buf *b, int64_t v)
{
    if (jn_buf_reserve(b, 9) != 0) {
        return JN_ENOMEM;
    }
    if (v >= 0) {
        uint64_t u = (uint64_t)v;
        if (u < 128) {
            mp_head(b, (unsigned char)u, 0, 0);
        } else if (u < 256) {
            mp_head(b, 0xcc, u, 1);
        } else if (u < 65536) {
            mp_head(b, 0xcd, u, 2);
        } else if (u < (1ULL << 32)) {
            mp_head(b, 0xce, u, 4);
        } else {
            mp_head(b, 0xcf, u, 8);
        }
    } else if (v >= -32) {
        mp_head(b, (unsigned char)(0xe0 | (v & 0x1f)), 0, 0);
    } else if (v >= -128) {
        mp_head(b, 0xd0, (uint64_t)v, 1);
    } else if (v >= -32768) {
        mp_head(b, 0xd1, (uint64_t)v, 2);
    } else if (v >= -2147483648LL) {
        mp_head(b, 0xd2, (uint64_t)v, 4);
    } else {
        mp_head(b, 0xd3, (uint64_t)v, 8);
    }
    b->p[b->len] = '\0';
    return 0;
}

static int mp_body(struct jn_buf *b, const void *p, size_t n)
{
    if (jn_buf_reserve(b, n) != 0) {
        return JN_ENOMEM;
    }
    if (n) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int jn_mp_str(struct jn_buf *b, const char *s, size_t n)
{
    if (mp_len(b, n, 0xa0, 32, 0xd9, 0xda, 0xdb) != 0) {
        return JN_ENOMEM;
    }
    return mp_body(b, s, n);
}

int jn_mp_cstr(struct jn_buf *b, const char *s)
{
    return s ? jn_mp_str(b, s, strlen(s)) : jn_mp_str(b, "", 0);
}

int jn_mp_bin(struct jn_buf *b, const void *p, size_t n)
{
    if (mp_len(b, n, 0, 0, 0xc4, 0xc5, 0xc6) != 0) {
        return JN_ENOMEM;
    }
    return mp_body(b, p, n);
}

static int encode(const struct jn_msg *m, struct jn_buf *out, int with_payload)
{
    size_t idl = strnlen(m->id, JN_ID_LEN), chl = strlen(m->channel);
    size_t plen = with_payload ? m->len : 0;
    /* An upper bound of the encoding (5 bytes for any container, string or binary header, 9 for
     * an integer), reserved at once so the buffer does not grow while it is written. */
    size_t need = 5 + 9 + 5 + idl + 5 + chl + 9 + 5 + 5 + plen;
    int rc;

    for (size_t i = 0; i < m->nhdrs; i++) {
        need += 5 + 5 + strlen(m->hdrs[i].name) + 5 + strlen(m->hdrs[i].value);
    }
    if (jn_buf_reserve(out, need) != 0) {
        return JN_ENOMEM;
    }
    rc = jn_mp_array(out, 6);
    rc |= jn_mp_int(out, JN_MSG_FORMAT_VERSION);
    rc |= jn_mp_str(out, m->id, idl);
    rc |= jn_mp_str(out, m->channel, chl);
    rc |= jn_mp_int(out, m->recv_us);
    rc |= jn_mp_array(out, m->nhdrs);
    for (size_t i = 0; i < m->nhdrs; i++) {
        rc |= jn_mp_array(out, 2);
        rc |= jn_mp_cstr(out, m->hdrs[i].name);
        rc |= jn_mp_cstr(out, m->hdrs[i].value);
    }
    rc |= jn_mp_bin(out, m->payload, plen);
    return rc ? JN_ENOMEM : 0;
}

int jn_msg_encode(const struct jn_msg *m, struct jn_buf *out)
{
    return encode(m, out, 1);
}

int jn_msg_encode_meta(const struct jn_msg *m, struct jn_buf *out)
{
    return encode(m, out, 0);
}

int jn_mp_get_str(const msgpack_object *o, const char **s, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_STR) {
        return JN_EPROTO;
    }
    if (o->via.str.size == 0) {
        *s = "";
        *n = 0;
        return 0;
    }
    if (o->via.str.ptr == NULL || memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL) {
        return JN_EPROTO;
    }
    *s = o->via.str.ptr;
    *n = o->via.str.size;
    return 0;
}

char *jn_mp_strdup(const msgpack_object *o)
{
    const char *s;
    size_t n;

    if (jn_mp_get_str(o, &s, &n) != 0) {
        return NULL;
    }
    return jn_strndup(s, n);
}

static int decode_v1(const msgpack_object *a, struct jn_msg **out, struct jn_err *err)
{
    const msgpack_object *f = a->via.array.ptr;
    const msgpack_object *hs;
    struct jn_msg *m;
    char *s;

    if (a->via.array.size != 6) {
        return jn_err_set(err, JN_EPROTO, "v1 record has %u fields, expected 6",
                          (unsigned)a->via.array.size);
    }
    if (f[1].type != MSGPACK_OBJECT_STR ||
        !id_bytes_valid(f[1].via.str.ptr, f[1].via.str.size)) {
        return jn_err_set(err, JN_EPROTO, "field 1 (id) is not a %d-character id", JN_ID_LEN);
    }
    if (f[2].type != MSGPACK_OBJECT_STR) {
        return jn_err_set(err, JN_EPROTO, "field 2 (channel) is not a string");
    }
    if (f[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER && f[3].type != MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        return jn_err_set(err, JN_EPROTO, "field 3 (receive time) is not an integer");
    }
    if (f[4].type != MSGPACK_OBJECT_ARRAY) {
        return jn_err_set(err, JN_EPROTO, "field 4 (headers) is not an array");
    }
    if (f[5].type != MSGPACK_OBJECT_BIN) {
        return jn_err_set(err, JN_EPROTO, "field 5 (payload) is not binary");
    }
    s = jn_mp_strdup(&f[2]);
    if (s == NULL) {
        return jn_err_set(err, JN_EPROTO, "field 2 (channel) holds a NUL byte");
    }
    m = jn_msg_new(s, f[5].via.bin.ptr, f[5].via.bin.size);
    jn_free(s);
    if (m == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory decoding a record");
    }
    memcpy(m->id, f[1].via.str.ptr, JN_ID_LEN);
    m->id[JN_ID_LEN] = '\0';
    m->recv_us = f[3].via.i64;
    hs = &f[4];
    for (uint32_t i = 0; i < hs->via.array.size; i++) {
        const msgpack_object *h = &hs->via.array.ptr[i];
        const char *hn, *hv;
        size_t hnl, hvl;
        int rc;
        if (h->type != MSGPACK_OBJECT_ARRAY || h->via.array.size != 2) {
            jn_msg_unref(&m);
            return jn_err_set(err, JN_EPROTO, "header %u is not a [name, value] pair", i);
        }
        if (jn_mp_get_str(&h->via.array.ptr[0], &hn, &hnl) != 0 ||
            jn_mp_get_str(&h->via.array.ptr[1], &hv, &hvl) != 0) {
            jn_msg_unref(&m);
            return jn_err_set(err, JN_EPROTO, "header %u is not two strings without NUL", i);
        }
        rc = header_push(m, hn, hnl, hv, hvl);
        if (rc != 0) {
            jn_msg_unref(&m);
            return jn_err_set(err, JN_ENOMEM, "out of memory decoding a record");
        }
    }
    *out = m;
    return 0;
}

/*
 * msgpack-c allocates room for every element an array or map header announces before it
 * reads them, so 5 bytes announcing 2^32 elements cost 100 GB. Walk the encoding first and
 * refuse any container that announces more elements than bytes remain (each takes one byte
 * at least). Iterative, so deep nesting costs no stack.
 */
int jn_msgpack_check(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t pos = 0;
    uint64_t pending = 1; /* objects still to read */

    while (pending > 0) {
        unsigned char b;
        uint64_t skip = 0, add = 0;
        if (pos >= len) {
            return JN_EPROTO;
        }
        b = p[pos++];
        pending--;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            continue;
        } else if (b >= 0x80 && b <= 0x8f) {
            add = 2u * (b & 0x0f);
        } else if (b >= 0x90 && b <= 0x9f) {
            add = b & 0x0f;
        } else if (b >= 0xa0 && b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            /* Fixed-size scalars, then sized strings/binaries/extensions, then containers. */
            static const unsigned char fixed[][2] = {
                {0xca, 4}, {0xcb, 8}, {0xcc, 1}, {0xcd, 2}, {0xce, 4}, {0xcf, 8}, {0xd0, 1},
                {0xd1, 2}, {0xd2, 4}, {0xd3, 8}, {0xd4, 2}, {0xd5, 3}, {0xd6, 5}, {0xd7, 9},
                {0xd8, 17},
            };
            int lenbytes = 0, found = 0;
            for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
                if (fixed[i][0] == b) {
                    skip = fixed[i][1];
                    found = 1;
                }
            }
            if (!found) {
                switch (b) {
                case 0xc4: case 0xd9: lenbytes = 1; break;
                case 0xc5: case 0xda: case 0xdc: case 0xde: lenbytes = 2; break;
                case 0xc6: case 0xdb: case 0xdd: case 0xdf: lenbytes = 4; break;
                case 0xc7: lenbytes = 1; skip = 1; break; /* ext8: size, type */
                case 0xc8: lenbytes = 2; skip = 1; break;
                case 0xc9: lenbytes = 4; skip = 1; break;
                default: return JN_EPROTO; /* 0xc1: never used */
                }
                if (len - pos < (size_t)lenbytes) {
                    return JN_EPROTO;
                }
                {
                    uint64_t n = 0;
                    for (int i = 0; i < lenbytes; i++) {
                        n = (n << 8) | p[pos++];
                    }
                    if (b == 0xdc || b == 0xdd) {
                        add = n;
                    } else if (b == 0xde || b == 0xdf) {
                        add = 2 * n;
                    } else {
                        skip += n;
                    }
                }
            }
        }
        if (skip > len - pos) {
            return JN_EPROTO;
        }
        pos += (size_t)skip;
        if (add > len - pos || pending + add < pending) {
            return JN_EPROTO; /* more elements announced than bytes left */
        }
        pending += add;
    }
    return 0;
}

int jn_msg_decode(const void *data, size_t len, struct jn_msg **out, struct jn_err *err)
{
    msgpack_unpacked u;
    size_t off = 0;
    int rc;

    *out = NULL;
    if (jn_msgpack_check(data, len) != 0) {
        return jn_err_set(err, JN_EPROTO, "record is not valid msgpack (%zu bytes)", len);
    }
    msgpack_unpacked_init(&u);
    switch (msgpack_unpack_next(&u, data, len, &off)) {
    case MSGPACK_UNPACK_SUCCESS:
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        msgpack_unpacked_destroy(&u);
        return jn_err_set(err, JN_ENOMEM, "out of memory decoding a record");
    case MSGPACK_UNPACK_CONTINUE:
        msgpack_unpacked_destroy(&u);
        return jn_err_set(err, JN_EPROTO, "record truncated (%zu bytes)", len);
    default:
        msgpack_unpacked_destroy(&u);
        return jn_err_set(err, JN_EPROTO, "record is not valid msgpack");
    }
    if (off != len) {
        rc = jn_err_set(err, JN_EPROTO, "%zu trailing bytes after the record", len - off);
    } else if (u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size == 0 ||
               u.data.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        rc = jn_err_set(err, JN_EPROTO, "record is not an array starting with a version");
    } else if (u.data.via.array.ptr[0].via.u64 == 1) {
        rc = decode_v1(&u.data, out, err);
    } else {
        rc = jn_err_set(err, JN_EPROTO, "record format version %llu is newer than this build",
                        (unsigned long long)u.data.via.array.ptr[0].via.u64);
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

int jn_msg_list_push(struct jn_msg_list *l, struct jn_msg *m)
{
    if (l->n == l->cap) {
        /* Most services emit one message; start small and double for splitters. */
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct jn_msg **v;

        if (cap < l->cap || cap > SIZE_MAX / sizeof(*v)) {
            jn_msg_unref(&m);
            return JN_ENOMEM;
        }
        v = jn_realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            jn_msg_unref(&m);
            return JN_ENOMEM;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = m;
    return 0;
}

void jn_msg_list_clear(struct jn_msg_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        jn_msg_unref(&l->v[i]);
    }
    jn_free(l->v);
    l->v = NULL;
    l->n = 0;
    l->cap = 0;
}
