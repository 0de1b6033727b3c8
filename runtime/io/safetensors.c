/* safetensors load (mmap, zero-copy, hostile input) and save (atomic). */
#define _POSIX_C_SOURCE 200809L

#include "attnswap/io.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "attnswap/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ull /* 100 MB, as the reference implementation */
#define ST_MAX_JSON_INT 9007199254740992.0 /* 2^53: larger JSON numbers lose digits */

/* dtypes of the format; the first seven are ours as they are. */
static const struct {
    const char *name;
    int size;
    as_dtype to;
} st_dtypes[] = {
    {"F32", 4, AS_F32}, {"F16", 2, AS_F16}, {"BF16", 2, AS_BF16}, {"I64", 8, AS_I64},
    {"I32", 4, AS_I32}, {"BOOL", 1, AS_BOOL}, {"F64", 8, AS_F64},  {"I8", 1, AS_I32},
    {"I16", 2, AS_I32}, {"U8", 1, AS_I32},    {"U16", 2, AS_I32},  {"U32", 4, AS_I64},
};
#define ST_NATIVE 7
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

static const char *st_name_of(as_dtype dt)
{
    for (int i = 0; i < ST_NATIVE; i++)
        if (st_dtypes[i].to == dt) return st_dtypes[i].name;
    return NULL;
}

/* ---- strings ---- */

/* Length of the UTF-8 sequence at s (at most n bytes), 0 when invalid
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (!len || len > n || c > 0xf4) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
    if (c == 0xed && s[1] >= 0xa0) return 0; /* surrogate */
    if (c == 0xf0 && s[1] < 0x90) return 0; /* overlong */
    if (c == 0xf4 && s[1] >= 0x90) return 0; /* > U+10FFFF */
    return len;
}

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

/* A name fit for an error message: valid UTF-8 and printable ASCII as they
 * are, other bytes as \xNN, cut after about 80 bytes. */
static const char *shown(const char *s, char *buf, size_t size)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), o = 0;
    for (size_t i = 0; i < n && o + 8 < size;) {
        size_t k = p[i] >= 0x80 ? utf8_seq(p + i, n - i) : (p[i] >= 0x20 && p[i] < 0x7f);
        if (o > 80) {
            memcpy(buf + o, "...", 3), o += 3;
            break;
        }
        if (k && o + k + 1 < size) {
            memcpy(buf + o, p + i, k), o += k, i += k;
        } else {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", p[i]), i++;
        }
    }
    buf[o] = 0;
    return buf;
}

/* ---- loading ---- */

typedef struct {
    const char *name; /* in the cJSON tree */
    int st;           /* index into st_dtypes */
    int ndim;
    int64_t shape[AS_MAX_DIMS];
    int64_t begin, end;
} st_entry;

static void st_fail(const char *path, const char *fmt, ...) AS_PRINTF(2, 3);
static void st_fail(const char *path, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    as_error_set("load: %s: %s", path, msg);
}

static void unmap_storage(as_storage *s) { munmap(s->data, s->nbytes); }

/* 0: a JSON integer in [0, 2^53]; -1: not an integer; -2: negative. */
static int json_count(const cJSON *it, int64_t *out)
{
    if (!cJSON_IsNumber(it)) return -1;
    double d = it->valuedouble;
    if (!isfinite(d) || d != floor(d) || d > ST_MAX_JSON_INT) return -1;
    if (d < 0) return -2;
    *out = (int64_t)d;
    return 0;
}

static const char *json_type(const cJSON *it)
{
    if (!it) return "missing";
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    if (cJSON_IsBool(it)) return "a boolean";
    return "null";
}

static int parse_entry(const char *path, const cJSON *item, int64_t data_len, st_entry *e)
{
    char nb[128];
    const char *nm = shown(item->string, nb, sizeof nb);
    if (!cJSON_IsObject(item)) {
        st_fail(path, "tensor '%s' must be an object, got %s", nm, json_type(item));
        return -1;
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) {
        st_fail(path, "tensor '%s': dtype must be a string, got %s", nm, json_type(dt));
        return -1;
    }
    e->st = -1;
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(dt->valuestring, st_dtypes[i].name) == 0) e->st = i;
    if (e->st < 0) {
        char db[128];
        st_fail(path,
                "tensor '%s' has dtype '%s', which is not supported (supported: F32 F16 BF16 "
                "I64 I32 BOOL F64, and I8 I16 U8 U16 U32 converted)",
                nm, shown(dt->valuestring, db, sizeof db));
        return -1;
    }
    if (!cJSON_IsArray(sh)) {
        st_fail(path, "tensor '%s': shape must be an array, got %s", nm, json_type(sh));
        return -1;
    }
    int nd = cJSON_GetArraySize(sh);
    if (nd > AS_MAX_DIMS) {
        st_fail(path, "tensor '%s' has %d dimensions (at most %d are supported)", nm, nd, AS_MAX_DIMS);
        return -1;
    }
    e->ndim = 0;
    int64_t numel = 1;
    bool overflow = false;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh)
    {
        int64_t v = 0;
        int r = json_count(d, &v);
        if (r == -2) {
            st_fail(path, "tensor '%s' has a negative size %g in its shape", nm, d->valuedouble);
            return -1;
        }
        if (r) {
            st_fail(path, "tensor '%s': shape entries must be integers in [0, 2^53], got %s", nm,
                    cJSON_IsNumber(d) ? "a number out of range" : json_type(d));
            return -1;
        }
        if (v && numel > INT64_MAX / v) overflow = true;
        numel = overflow ? 1 : numel * v;
        e->shape[e->ndim++] = v;
    }
    for (int k = 0; k < e->ndim; k++)
        if (e->shape[k] == 0) numel = 0, overflow = false; /* (2^60, 2^60, 0) is empty */
    int es = st_dtypes[e->st].size;
    if (overflow || numel > INT64_MAX / es) {
        st_fail(path, "tensor '%s': the size of its shape overflows", nm);
        return -1;
    }
    int64_t nbytes = numel * es;
    int64_t b = 0, en = 0;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_count(off->child, &b) ||
        json_count(off->child->next, &en)) {
        st_fail(path, "tensor '%s': data_offsets must be [begin, end] with integers >= 0", nm);
        return -1;
    }
    if (b > en) {
        st_fail(path, "tensor '%s' data_offsets [%lld, %lld) end before they begin", nm,
                (long long)b, (long long)en);
        return -1;
    }
    if (en > data_len) {
        st_fail(path, "tensor '%s' data_offsets [%lld, %lld) exceed the data section (%lld bytes)",
                nm, (long long)b, (long long)en, (long long)data_len);
        return -1;
    }
    if (en - b != nbytes) {
        char sb[160];
        st_fail(path, "tensor '%s' data_offsets [%lld, %lld) hold %lld bytes but shape %s of %s needs %lld",
                nm, (long long)b, (long long)en, (long long)(en - b),
                as_shape_str(sb, sizeof sb, e->ndim, e->shape), st_dtypes[e->st].name,
                (long long)nbytes);
        return -1;
    }
    e->begin = b, e->end = en;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

static int cmp_begin(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Duplicate names and overlapping byte ranges; entries are sorted in place
 * through ptrs. */
static int check_set(const char *path, st_entry **ptrs, int64_t n)
{
    char b1[128], b2[128];
    qsort(ptrs, (size_t)n, sizeof *ptrs, cmp_name);
    for (int64_t i = 1; i < n; i++)
        if (strcmp(ptrs[i - 1]->name, ptrs[i]->name) == 0) {
            st_fail(path, "tensor '%s' appears twice in the header", shown(ptrs[i]->name, b1, sizeof b1));
            return -1;
        }
    qsort(ptrs, (size_t)n, sizeof *ptrs, cmp_begin);
    const st_entry *last = NULL; /* the non-empty range reaching furthest so far */
    for (int64_t i = 0; i < n; i++) {
        const st_entry *e = ptrs[i];
        if (e->begin == e->end) continue;
        if (last && e->begin < last->end) {
            st_fail(path, "tensors '%s' [%lld, %lld) and '%s' [%lld, %lld) overlap",
                    shown(last->name, b1, sizeof b1), (long long)last->begin, (long long)last->end,
                    shown(e->name, b2, sizeof b2), (long long)e->begin, (long long)e->end);
            return -1;
        }
        if (!last || e->end > last->end) last = e;
    }
    return 0;
}

/* A tensor for entry e whose bytes start at p (possibly unaligned). */
static as_tensor *make_tensor(as_storage *map, const st_entry *e, const char *p, bool *zero_copy)
{
    const unsigned char *u = (const unsigned char *)p;
    as_dtype to = st_dtypes[e->st].to;
    size_t es = (size_t)st_dtypes[e->st].size;
    size_t byte_off = (size_t)(p - (const char *)map->data);
    *zero_copy = e->st < ST_NATIVE && byte_off % es == 0;
    if (*zero_copy)
        return as_from_storage(map, (int64_t)(byte_off / es), e->ndim, e->shape, NULL, to);
    as_tensor *t = as_empty(e->ndim, e->shape, to, AS_CPU);
    if (!t) return NULL;
    int64_t n = as_numel(t);
    void *dst = as_data(t);
    const char *nm = st_dtypes[e->st].name;
    if (e->st < ST_NATIVE) {
        memcpy(dst, p, (size_t)n * es);
    } else if (strcmp(nm, "U32") == 0) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t v;
            memcpy(&v, p + 4 * i, 4);
            ((int64_t *)dst)[i] = v;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            int32_t v;
            if (strcmp(nm, "I8") == 0) v = (int8_t)u[i];
            else if (strcmp(nm, "U8") == 0) v = u[i];
            else if (strcmp(nm, "I16") == 0) {
                int16_t h;
                memcpy(&h, p + 2 * i, 2);
                v = h;
            } else {
                uint16_t h;
                memcpy(&h, p + 2 * i, 2);
                v = h;
            }
            ((int32_t *)dst)[i] = v;
        }
    }
    return t;
}

void as_safetensors_free(as_safetensors *st)
{
    if (!st) return;
    for (int64_t i = 0; i < st->n; i++) {
        free(st->tensors[i].name);
        as_release(st->tensors[i].tensor);
    }
    for (int64_t i = 0; i < st->nmeta; i++) free(st->meta_keys[i]), free(st->meta_values[i]);
    free(st->tensors), free(st->meta_keys), free(st->meta_values);
    free(st);
}

as_tensor *as_safetensors_find(const as_safetensors *st, const char *name)
{
    for (int64_t i = 0; st && i < st->n; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return st->tensors[i].tensor;
    return NULL;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Reads __metadata__ into st; -1 with the error set. */
static int read_metadata(const char *path, const cJSON *meta, as_safetensors *st)
{
    char b1[128];
    if (!cJSON_IsObject(meta)) {
        st_fail(path, "__metadata__ must be an object of strings, got %s", json_type(meta));
        return -1;
    }
    int n = cJSON_GetArraySize(meta);
    st->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    st->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (!st->meta_keys || !st->meta_values) {
        st_fail(path, "out of memory");
        return -1;
    }
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta)
    {
        if (!cJSON_IsString(kv)) {
            st_fail(path, "__metadata__ must be an object of strings, but '%s' is %s",
                    shown(kv->string, b1, sizeof b1), json_type(kv));
            return -1;
        }
        if (!utf8_valid(kv->string) || !utf8_valid(kv->valuestring)) {
            st_fail(path, "__metadata__ entry '%s' is not valid UTF-8", shown(kv->string, b1, sizeof b1));
            return -1;
        }
        int64_t i = st->nmeta;
        st->meta_keys[i] = dup_str(kv->string);
        st->meta_values[i] = dup_str(kv->valuestring);
        st->nmeta++;
        if (!st->meta_keys[i] || !st->meta_values[i]) {
            st_fail(path, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Parses the header and makes the tensors; everything it allocates is in st
 * or freed here. */
static int read_header(const char *path, const char *hdr, size_t hlen, as_storage *map,
                       as_safetensors *st)
{
    char b1[128];
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)hdr[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            st_fail(path, "header is not valid JSON (control byte 0x%02x at byte %zu)", c, i);
            return -1;
        }
    }
    /* cJSON reads a NUL-terminated copy: even a parser bug cannot read past it */
    char *copy = malloc(hlen + 1);
    if (!copy) {
        st_fail(path, "out of memory");
        return -1;
    }
    memcpy(copy, hdr, hlen);
    copy[hlen] = 0;
    hdr = copy;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        free(copy);
        st_fail(path, "header is not valid JSON (error near byte %zu of %zu)", at, hlen);
        return -1;
    }
    int rc = -1;
    st_entry *ents = NULL, **ptrs = NULL;
    for (const char *p = end; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st_fail(path, "header has bytes after its JSON value (at byte %zu)", (size_t)(p - hdr));
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        st_fail(path, "header must be a JSON object, got %s", json_type(root));
        goto out;
    }
    int64_t data_len = (int64_t)map->nbytes - 8 - (int64_t)hlen;
    int64_t cap = cJSON_GetArraySize(root);
    ents = calloc((size_t)cap + 1, sizeof *ents);
    ptrs = calloc((size_t)cap + 1, sizeof *ptrs);
    if (!ents || !ptrs) {
        st_fail(path, "out of memory");
        goto out;
    }
    int64_t n = 0;
    bool have_meta = false;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (have_meta) {
                st_fail(path, "__metadata__ appears twice in the header");
                goto out;
            }
            have_meta = true;
            if (read_metadata(path, item, st)) goto out;
            continue;
        }
        if (!utf8_valid(item->string)) {
            st_fail(path, "tensor name '%s' is not valid UTF-8", shown(item->string, b1, sizeof b1));
            goto out;
        }
        ents[n].name = item->string;
        if (parse_entry(path, item, data_len, &ents[n])) goto out;
        ptrs[n] = &ents[n];
        n++;
    }
    if (check_set(path, ptrs, n)) goto out;
    st->tensors = calloc((size_t)n + 1, sizeof *st->tensors);
    if (!st->tensors) {
        st_fail(path, "out of memory");
        goto out;
    }
    const char *data = (const char *)map->data + 8 + hlen;
    for (int64_t i = 0; i < n; i++) {
        bool zc;
        as_named_tensor *nt = &st->tensors[i];
        nt->name = dup_str(ents[i].name);
        nt->tensor = nt->name ? make_tensor(map, &ents[i], data + ents[i].begin, &zc) : NULL;
        if (nt->tensor) st->n++;
        if (!nt->tensor) {
            free(nt->name);
            st_fail(path, "out of memory reading tensor '%s'", shown(ents[i].name, b1, sizeof b1));
            goto out;
        }
        st->nzero_copy += zc;
    }
    rc = 0;
out:
    free(ents), free(ptrs), free(copy);
    cJSON_Delete(root);
    return rc;
}

as_safetensors *as_safetensors_load(const char *path)
{
    if (!path) {
        as_error_set("load: expected a path, got NULL");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block us */
    if (fd < 0) {
        st_fail(path, "cannot open (%s)", strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st_fail(path, "not a regular file");
        close(fd);
        return NULL;
    }
    if (sb.st_size < 8) {
        st_fail(path, "file is %lld bytes, too short for a safetensors header", (long long)sb.st_size);
        close(fd);
        return NULL;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st_fail(path, "file is too large to map");
        close(fd);
        return NULL;
    }
    size_t size = (size_t)sb.st_size;
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (base == MAP_FAILED) {
        st_fail(path, "cannot map (%s)", strerror(map_errno));
        return NULL;
    }
    const unsigned char *b = base;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen > ST_MAX_HEADER) {
        st_fail(path, "header length %llu is absurd (the limit is %llu bytes)",
                (unsigned long long)hlen, ST_MAX_HEADER);
        munmap(base, size);
        return NULL;
    }
    if (hlen > size - 8) {
        st_fail(path, "header length %llu exceeds the file (%zu bytes)", (unsigned long long)hlen, size);
        munmap(base, size);
        return NULL;
    }
    as_storage *map = as_storage_wrap(base, size, AS_CPU, unmap_storage, NULL);
    if (!map) {
        munmap(base, size);
        st_fail(path, "out of memory");
        return NULL;
    }
    as_safetensors *st = calloc(1, sizeof *st);
    if (!st || read_header(path, (const char *)base + 8, (size_t)hlen, map, st)) {
        if (!st) st_fail(path, "out of memory");
        as_safetensors_free(st);
        st = NULL;
    }
    as_storage_release(map); /* the zero-copy tensors keep it */
    return st;
}

/* ---- saving ---- */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p;
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static void sb_int(sbuf *b, long long v)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", v);
    sb_str(b, num);
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        c += w, n -= (size_t)w;
    }
    return 0;
}

/* Checks the arguments; fills cpu[i] with a contiguous CPU copy or view. */
static int save_check(const char *path, int n, const char *const *names,
                      const as_tensor *const *tensors, const char *const *metadata, as_tensor **cpu)
{
    char b1[128];
    if (n < 0 || (n > 0 && (!names || !tensors))) {
        as_error_set("save: %s: expected n >= 0 names and tensors", path);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!names[i] || !tensors[i]) {
            as_error_set("save: %s: name or tensor %d is NULL", path, i + 1);
            return -1;
        }
        if (!utf8_valid(names[i])) {
            as_error_set("save: %s: tensor name '%s' is not valid UTF-8", path, shown(names[i], b1, sizeof b1));
            return -1;
        }
        if (strcmp(names[i], "__metadata__") == 0) {
            as_error_set("save: %s: '__metadata__' is reserved and cannot name a tensor", path);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) {
                as_error_set("save: %s: tensor name '%s' is given twice", path, shown(names[i], b1, sizeof b1));
                return -1;
            }
    }
    for (const char *const *m = metadata; m && *m; m += 2)
        if (!m[1] || !utf8_valid(m[0]) || !utf8_valid(m[1])) {
            as_error_set("save: %s: metadata '%s' needs a valid UTF-8 key and value", path,
                         shown(m[0], b1, sizeof b1));
            return -1;
        }
    for (int i = 0; i < n; i++) {
        as_tensor *c = as_to_device(tensors[i], AS_CPU);
        cpu[i] = c ? as_contiguous(c) : NULL;
        as_release(c);
        if (!cpu[i]) {
            char msg[400];
            snprintf(msg, sizeof msg, "%s", as_error_get());
            as_error_set("save: %s: tensor '%s': %s", path, shown(names[i], b1, sizeof b1), msg);
            return -1;
        }
    }
    return 0;
}

static char *build_header(int n, const char *const *names, as_tensor *const *cpu,
                          const char *const *metadata, const int64_t *begin)
{
    sbuf b = {0};
    sb_str(&b, "{");
    bool first = true;
    if (metadata && *metadata) {
        sb_str(&b, "\"__metadata__\":{");
        for (const char *const *m = metadata; *m; m += 2) {
            if (m != metadata) sb_str(&b, ",");
            sb_json_str(&b, m[0]);
            sb_str(&b, ":");
            sb_json_str(&b, m[1]);
        }
        sb_str(&b, "}");
        first = false;
    }
    for (int i = 0; i < n; i++) {
        const as_tensor *t = cpu[i];
        if (!first) sb_str(&b, ",");
        first = false;
        sb_json_str(&b, names[i]);
        sb_str(&b, ":{\"dtype\":\"");
        sb_str(&b, st_name_of(t->dtype));
        sb_str(&b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_str(&b, ",");
            sb_int(&b, t->shape[d]);
        }
        sb_str(&b, "],\"data_offsets\":[");
        sb_int(&b, begin[i]);
        sb_str(&b, ",");
        sb_int(&b, begin[i] + as_numel(t) * (int64_t)as_dtype_size(t->dtype));
        sb_str(&b, "]}");
    }
    sb_str(&b, "}");
    while (b.n % 8) sb_str(&b, " ");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* After the rename, the folder's entry must reach the disk too, or a crash
 * can bring back the old file (or none).  Filesystems that cannot sync a
 * folder say EINVAL: nothing more can be done there. */
static int sync_folder(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else return 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 0; /* written and renamed; a folder we cannot open we cannot sync */
    int rc = fsync(fd) && errno != EINVAL ? -1 : 0;
    if (rc) as_error_set("save: %s: written, but syncing its folder failed (%s)", path, strerror(errno));
    close(fd);
    return rc;
}

int as_safetensors_save(const char *path, int n, const char *const *names,
                        const as_tensor *const *tensors, const char *const *metadata)
{
    if (!path) {
        as_error_set("save: expected a path, got NULL");
        return -1;
    }
    int rc = -1, fd = -1;
    char *tmp = NULL, *hdr = NULL;
    size_t cnt = n > 0 ? (size_t)n : 0;
    as_tensor **cpu = calloc(cnt + 1, sizeof *cpu);
    int *order = calloc(cnt + 1, sizeof *order);
    int64_t *begin = calloc(cnt + 1, sizeof *begin);
    if (!cpu || !order || !begin) {
        as_error_set("save: %s: out of memory", path);
        goto out;
    }
    if (save_check(path, n, names, tensors, metadata, cpu)) goto out;
    /* data in order of decreasing element size (stable), so all are aligned */
    int64_t pos = 0;
    int k = 0;
    for (size_t size = 8; size >= 1; size /= 2)
        for (int i = 0; i < n; i++)
            if (as_dtype_size(cpu[i]->dtype) == size) {
                order[k++] = i;
                begin[i] = pos;
                pos += as_numel(cpu[i]) * (int64_t)size;
            }
    AS_ASSERT(k == n);
    hdr = build_header(n, names, cpu, metadata, begin);
    size_t tlen = strlen(path) + 48;
    tmp = malloc(tlen);
    if (!hdr || !tmp) {
        as_error_set("save: %s: out of memory", path);
        goto out;
    }
    static unsigned counter;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        snprintf(tmp, tlen, "%s.tmp.%ld.%u", path, (long)getpid(), counter++);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        as_error_set("save: %s: cannot create a file beside it (%s)", path, strerror(errno));
        goto out;
    }
    size_t hlen = strlen(hdr);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int err = 0;
    if (write_all(fd, len8, 8) || write_all(fd, hdr, hlen)) err = errno;
    for (k = 0; !err && k < n; k++) {
        const as_tensor *t = cpu[order[k]];
        if (write_all(fd, as_data(t), (size_t)as_numel(t) * as_dtype_size(t->dtype))) err = errno;
    }
    if (!err && fsync(fd)) err = errno;
    if (close(fd) && !err) err = errno;
    fd = -1;
    if (!err && rename(tmp, path)) err = errno;
    if (err) {
        unlink(tmp);
        as_error_set("save: %s: cannot write (%s)", path, strerror(err));
        goto out;
    }
    if (sync_folder(path)) goto out;
    rc = 0;
out:
    for (size_t i = 0; cpu && i < cnt; i++) as_release(cpu[i]);
    free(cpu), free(order), free(begin), free(tmp), free(hdr);
    return rc;
}
