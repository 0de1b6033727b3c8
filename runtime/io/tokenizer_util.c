/* The tokenizer's small parts: buffers, hash maps, UTF-8, Unicode classes
 * (utf8proc) and regex matching (PCRE2) with HF's find_matches semantics. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "attnswap/error.h"
#include "tokenizer_internal.h"

void *tk_oom(const char *fn)
{
    as_error_set("%s: out of memory", fn);
    return NULL;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return tk_oom("tokenizer"), -1;
    *p = q;
    *cap = c;
    return 0;
}

int tk_buf_put(tk_buf *b, const void *s, size_t n)
{
    if (grow((void **)&b->p, &b->cap, b->n + n + 1, 1)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int tk_buf_putc(tk_buf *b, uint32_t cp)
{
    char u[4];
    int k;
    if (cp < 0x80) u[0] = (char)cp, k = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), k = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 63)), u[2] = (char)(0x80 | (cp & 63)), k = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 63)), u[2] = (char)(0x80 | (cp >> 6 & 63)),
        u[3] = (char)(0x80 | (cp & 63)), k = 4;
    return tk_buf_put(b, u, (size_t)k);
}

int tk_ids_push(tk_ids *ids, int32_t id)
{
    if (grow((void **)&ids->v, &ids->cap, ids->n + 1, sizeof *ids->v)) return -1;
    ids->v[ids->n++] = id;
    return 0;
}

int tk_spans_push(tk_spans *sp, size_t start, size_t end, int match)
{
    if (grow((void **)&sp->v, &sp->cap, sp->n + 1, sizeof *sp->v)) return -1;
    sp->v[sp->n++] = (tk_span){start, end, match};
    return 0;
}

int tk_pieces_push(tk_pieces *ps, const char *s, size_t n, int32_t id, int first)
{
    tk_buf b = {0};
    if (tk_buf_put(&b, s, n)) return -1;
    if (tk_pieces_take(ps, &b, id, first)) return free(b.p), -1;
    return 0;
}

int tk_pieces_take(tk_pieces *ps, tk_buf *b, int32_t id, int first)
{
    if (!b->p && tk_buf_put(b, "", 0)) return -1;
    if (grow((void **)&ps->v, &ps->cap, ps->n + 1, sizeof *ps->v)) return -1;
    ps->v[ps->n++] = (tk_piece){b->p, b->n, id, first};
    *b = (tk_buf){0};
    return 0;
}

void tk_pieces_free(tk_pieces *ps)
{
    for (size_t i = 0; i < ps->n; i++) free(ps->v[i].s);
    free(ps->v);
    *ps = (tk_pieces){0};
}

/* ---- maps: open addressing, FNV-1a ---- */
static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int map_grow(tk_map *m)
{
    uint32_t cap = m->cap ? m->cap * 2 : 64;
    tk_slot *s = calloc(cap, sizeof *s);
    if (!s) return tk_oom("tokenizer"), -1;
    for (uint32_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key) continue;
        uint32_t j = hash_bytes(m->slots[i].key, m->slots[i].len) & (cap - 1);
        while (s[j].key) j = (j + 1) & (cap - 1);
        s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->cap = cap;
    return 0;
}

const tk_slot *tk_map_find(const tk_map *m, const char *key, size_t len)
{
    if (!m->cap) return NULL;
    for (uint32_t j = hash_bytes(key, len) & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
        const tk_slot *s = &m->slots[j];
        if (!s->key) return NULL;
        if (s->len == len && memcmp(s->key, key, len) == 0) return s;
    }
}

int32_t tk_map_get(const tk_map *m, const char *key, size_t len)
{
    const tk_slot *s = tk_map_find(m, key, len);
    return s ? s->val : -1;
}

int tk_map_put(tk_map *m, const char *key, size_t len, int32_t val)
{
    tk_slot *found = (tk_slot *)tk_map_find(m, key, len);
    if (found) return found->val = val, 0;
    if ((m->count + 1) * 4 >= m->cap * 3 && map_grow(m)) return -1;
    char *k = malloc(len + 1);
    if (!k) return tk_oom("tokenizer"), -1;
    memcpy(k, key, len);
    k[len] = 0;
    uint32_t j = hash_bytes(key, len) & (m->cap - 1);
    while (m->slots[j].key) j = (j + 1) & (m->cap - 1);
    m->slots[j] = (tk_slot){k, (uint32_t)len, val};
    m->count++;
    return 0;
}

void tk_map_free(tk_map *m)
{
    for (uint32_t i = 0; i < m->cap; i++) free(m->slots[i].key);
    free(m->slots);
    *m = (tk_map){0};
}

static uint32_t hash_pair(uint64_t k)
{
    k ^= k >> 33, k *= 0xff51afd7ed558ccdull, k ^= k >> 33;
    return (uint32_t)k;
}

const tk_pair_slot *tk_pair_find(const tk_pair_map *m, int32_t a, int32_t b)
{
    if (!m->cap) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1; /* 0 marks an empty slot */
    for (uint32_t j = hash_pair(key) & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
        if (!m->slots[j].key) return NULL;
        if (m->slots[j].key == key) return &m->slots[j];
    }
}

/* A pair given twice keeps the later rank, as HF's HashMap collect does. */
int tk_pair_put(tk_pair_map *m, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    tk_pair_slot *found = (tk_pair_slot *)tk_pair_find(m, a, b);
    if (found) return found->rank = rank, found->id = id, 0;
    if ((m->count + 1) * 4 >= m->cap * 3) {
        uint32_t cap = m->cap ? m->cap * 2 : 64;
        tk_pair_slot *s = calloc(cap, sizeof *s);
        if (!s) return tk_oom("tokenizer"), -1;
        for (uint32_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].key) continue;
            uint32_t j = hash_pair(m->slots[i].key) & (cap - 1);
            while (s[j].key) j = (j + 1) & (cap - 1);
            s[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = s;
        m->cap = cap;
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    uint32_t j = hash_pair(key) & (m->cap - 1);
    while (m->slots[j].key) j = (j + 1) & (m->cap - 1);
    m->slots[j] = (tk_pair_slot){key, rank, id};
    m->count++;
    return 0;
}

void tk_pair_free(tk_pair_map *m)
{
    free(m->slots);
    *m = (tk_pair_map){0};
}

/* ---- UTF-8 ---- */
int tk_utf8_next(const char *s, size_t n, uint32_t *cp)
{
    const uint8_t *u = (const uint8_t *)s;
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate(u, (utf8proc_ssize_t)n, &c);
    if (k <= 0) { /* not reached on checked input; stay in bounds anyway */
        *cp = 0xFFFD;
        return 1;
    }
    *cp = (uint32_t)c;
    return (int)k;
}

/* Length of the valid sequence at s (1-4), or -(length of the maximal
 * invalid subpart) (Unicode 3.9, "U+FFFD substitution of maximal subparts"). */
static int utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) need = 2;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) return -i;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -i;
    }
    return need + 1;
}

size_t tk_utf8_check(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int k = utf8_seq((const uint8_t *)s + i, n - i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return n;
}

int tk_utf8_lossy(tk_buf *out, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int k = utf8_seq((const uint8_t *)s + i, n - i);
        if (k > 0) {
            if (tk_buf_put(out, s + i, (size_t)k)) return -1;
            i += (size_t)k;
        } else {
            if (tk_buf_put(out, "\xEF\xBF\xBD", 3)) return -1;
            i += (size_t)-k;
        }
    }
    return 0;
}

/* ---- Unicode classes ---- */
int tk_is_whitespace(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

int tk_is_punctuation(uint32_t c)
{
    if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

int tk_is_numeric(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

int tk_is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

int tk_is_control(uint32_t c)
{
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CO ||
           k == UTF8PROC_CATEGORY_CS || k == UTF8PROC_CATEGORY_CN;
}

int tk_is_mark(uint32_t c, int nonspacing_only)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    if (nonspacing_only) return k == UTF8PROC_CATEGORY_MN;
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

int tk_unicode_normalize(tk_buf *out, const char *s, size_t n, char form)
{
    utf8proc_option_t opt = UTF8PROC_STABLE;
    if (form == 'C' || form == 'c') opt |= UTF8PROC_COMPOSE;
    else opt |= UTF8PROC_DECOMPOSE;
    if (form == 'c' || form == 'd') opt |= UTF8PROC_COMPAT;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, opt);
    if (k < 0) {
        free(dst);
        if (k == UTF8PROC_ERROR_NOMEM) return tk_oom("tokenizer.encode"), -1;
        as_error_set("tokenizer.encode: unicode normalization failed: %s", utf8proc_errmsg(k));
        return -1;
    }
    int rc = tk_buf_put(out, dst, (size_t)k);
    free(dst);
    return rc;
}

/* Rust's char::to_lowercase, one char at a time: utf8proc's simple mapping,
 * plus the one full mapping that differs (U+0130 -> "i\u0307"). */
int tk_lowercase(tk_buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t c;
        i += (size_t)tk_utf8_next(s + i, n - i, &c);
        if (c == 0x130) {
            if (tk_buf_put(out, "i\xCC\x87", 3)) return -1;
        } else if (tk_buf_putc(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c))) {
            return -1;
        }
    }
    return 0;
}

/* ---- regex ---- */
pcre2_code *tk_regex_compile(const char *pattern, size_t len, int literal, const char *fn, const char *name)
{
    int err;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        as_error_set("%s: %s: regex /%.*s/ does not compile: %s at offset %zu", fn, name, (int)(len > 200 ? 200 : len),
                     pattern, (char *)msg, (size_t)off);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* an interpreter when JIT is unavailable */
    return re;
}

/* HF's find_matches over onig's find_iter: every match, the gaps between as
 * non-matches; an empty match right where the previous match ended is
 * skipped by one char. */
int tk_regex_spans(const pcre2_code *re, const char *s, size_t n, tk_spans *out)
{
    out->n = 0;
    if (n == 0) return tk_spans_push(out, 0, 0, 0) ? -1 : 1;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) return tk_oom("tokenizer.encode"), -1;
    size_t prev = 0, at = 0, last_end = (size_t)-1;
    while (at <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            as_error_set("tokenizer.encode: regex match failed: %s", (char *)msg);
            pcre2_match_data_free(md);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t st = ov[0], en = ov[1];
        if (en < st) en = st; /* \K tricks: treat as empty */
        if (st == en && en == last_end) {
            if (at >= n) break;
            uint32_t c;
            at += (size_t)tk_utf8_next(s + at, n - at, &c);
            continue;
        }
        if (prev != st && tk_spans_push(out, prev, st, 0)) goto oom;
        if (tk_spans_push(out, st, en, 1)) goto oom;
        prev = en;
        at = en;
        last_end = en;
    }
    pcre2_match_data_free(md);
    if (prev != n && tk_spans_push(out, prev, n, 0)) return -1;
    return (int)out->n;
oom:
    pcre2_match_data_free(md);
    return -1;
}
