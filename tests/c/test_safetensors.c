/* safetensors: round trips, zero-copy mapping, and hostile files. */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_test.h"
#include "attnswap/dtype.h"
#include "attnswap/io.h"

static char dir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Whether path is mapped into this process. */
static bool is_mapped(const char *path)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        size_t n = strlen(line), m = strlen(path);
        found = n >= m && strcmp(line + n - m, path) == 0;
    }
    fclose(f);
    return found;
}

/* Writes a file: the 8-byte length (hlen_override when >= 0, else the
 * header's length), the header as given, then data. */
static const char *write_raw(const char *name, const char *header, long long hlen_override,
                             const void *data, size_t ndata)
{
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    size_t hlen = header ? strlen(header) : 0;
    unsigned long long len = hlen_override >= 0 ? (unsigned long long)hlen_override : hlen;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(len >> (8 * i));
    fwrite(len8, 1, 8, f);
    if (hlen) fwrite(header, 1, hlen, f);
    if (ndata) fwrite(data, 1, ndata, f);
    fclose(f);
    return path;
}

static bool equal_tensors(const as_tensor *a, const as_tensor *b)
{
    return a && b && a->dtype == b->dtype && as_same_shape(a, b) && as_test_maxdiff(a, b) == 0;
}

static as_tensor *filled(int ndim, const int64_t *shape, as_dtype dt)
{
    as_tensor *r = as_test_random(ndim, shape);
    as_tensor *t = as_to_dtype(r, dt);
    as_release(r);
    return t;
}

static void test_round_trip(void)
{
    as_tensor *f32 = filled(2, (int64_t[]){2, 3}, AS_F32);
    as_tensor *f16 = filled(3, (int64_t[]){2, 1, 3}, AS_F16);
    as_tensor *bf16 = filled(1, (int64_t[]){5}, AS_BF16);
    as_tensor *i64 = as_empty(1, (int64_t[]){7}, AS_I64, AS_CPU);
    for (int i = 0; i < 7; i++) ((int64_t *)as_data(i64))[i] = (int64_t)i * 1000000000000ll - 3;
    as_tensor *i32 = as_empty(2, (int64_t[]){2, 2}, AS_I32, AS_CPU);
    for (int i = 0; i < 4; i++) ((int32_t *)as_data(i32))[i] = -7 + 1000 * i;
    as_tensor *b = as_empty(1, (int64_t[]){3}, AS_BOOL, AS_CPU); /* odd size, named first */
    ((uint8_t *)as_data(b))[0] = 1, ((uint8_t *)as_data(b))[1] = 0, ((uint8_t *)as_data(b))[2] = 1;
    as_tensor *base = filled(2, (int64_t[]){3, 4}, AS_F32);
    as_tensor *tr = as_transpose(base, 0, 1); /* non-contiguous (4, 3) */
    as_tensor *empty = as_empty(2, (int64_t[]){0, 3}, AS_F32, AS_CPU);
    as_tensor *scalar = as_scalar(2.5, AS_F32, AS_CPU);
    as_tensor *ibf = as_scalar(-1.75, AS_BF16, AS_CPU);
    const char *names[] = {"a.mask", "z.weight", "h16", "b16", "ids", "i32", "transposed",
                           "empty", "scalar", "scalar.bf16", "名前"};
    const as_tensor *ts[] = {b, f32, f16, bf16, i64, i32, tr, empty, scalar, ibf, f32};
    int n = (int)(sizeof names / sizeof names[0]);
    const char *meta[] = {"format", "pt", "note", "quote \" backslash \\ tab \t", NULL};
    const char *path = tmp_path("round.safetensors");
    CHECK(as_safetensors_save(path, n, names, ts, meta) == 0);
    CHECK(access(tmp_path("round.safetensors.tmp"), F_OK) != 0);

    /* the header: length a multiple of 8, metadata first, entries in the given order */
    FILE *f = fopen(path, "rb");
    unsigned char len8[8];
    CHECK(fread(len8, 1, 8, f) == 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
    char *hdr = calloc(hlen + 1, 1);
    CHECK(fread(hdr, 1, hlen, f) == hlen);
    fclose(f);
    CHECK(hlen % 8 == 0 && strncmp(hdr, "{\"__metadata__\":{\"format\":\"pt\"", 30) == 0);
    const char *prev = hdr;
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "\"%s\":{", names[i]);
        const char *at = strstr(hdr, key);
        CHECK(at && at > prev);
        prev = at ? at : prev;
    }
    CHECK(strstr(hdr, "\"a.mask\":{\"dtype\":\"BOOL\",\"shape\":[3],") != NULL);
    CHECK(strstr(hdr, "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],") != NULL);
    free(hdr);

    as_safetensors *st = as_safetensors_load(path);
    CHECK_OK(st);
    if (!st) return;
    CHECK(st->n == n && st->nzero_copy == n);
    struct stat sb;
    stat(path, &sb);
    for (int i = 0; i < n && i < st->n; i++) {
        as_tensor *t = st->tensors[i].tensor;
        CHECK(strcmp(st->tensors[i].name, names[i]) == 0);
        CHECK(equal_tensors(t, ts[i]));
        /* zero-copy: a view into the mapping of the whole file */
        const char *lo = t->storage->data, *p = as_data(t);
        CHECK(t->storage->nbytes == (size_t)sb.st_size && p >= lo + 8 + hlen && p <= lo + sb.st_size);
        CHECK((uintptr_t)p % as_dtype_size(t->dtype) == 0);
    }
    CHECK(as_safetensors_find(st, "ids") == st->tensors[4].tensor);
    CHECK(as_safetensors_find(st, "nope") == NULL);
    CHECK(st->nmeta == 2 && strcmp(st->meta_keys[1], "note") == 0 &&
          strcmp(st->meta_values[1], meta[3]) == 0);

    /* writes go to private pages, never to the file */
    as_tensor *w = as_retain(as_safetensors_find(st, "z.weight"));
    ((float *)as_data(w))[0] = 1234.5f;
    CHECK(is_mapped(path));
    as_safetensors_free(st);
    CHECK(is_mapped(path)); /* w keeps the mapping */
    CHECK(((float *)as_data(w))[0] == 1234.5f);
    as_release(w);
    CHECK(!is_mapped(path)); /* last tensor gone: unmapped */
    st = as_safetensors_load(path);
    CHECK(st && equal_tensors(as_safetensors_find(st, "z.weight"), f32));
    as_safetensors_free(st);
    CHECK(!is_mapped(path));

    /* no tensors, no metadata: "{}" padded */
    const char *path0 = tmp_path("none.safetensors");
    CHECK(as_safetensors_save(path0, 0, NULL, NULL, NULL) == 0);
    st = as_safetensors_load(path0);
    CHECK(st && st->n == 0 && st->nmeta == 0);
    as_safetensors_free(st);

    /* saving over an existing file replaces it */
    CHECK(as_safetensors_save(path, 1, names + 1, ts + 1, NULL) == 0);
    st = as_safetensors_load(path);
    CHECK(st && st->n == 1 && equal_tensors(st->tensors[0].tensor, f32));
    as_safetensors_free(st);

    as_release(f32), as_release(f16), as_release(bf16), as_release(i64), as_release(i32);
    as_release(b), as_release(base), as_release(tr), as_release(empty), as_release(scalar);
    as_release(ibf);
}

/* dtypes that load as a copy: converted ones, and native ones out of alignment */
static void test_converted(void)
{
    unsigned char data[64] = {0};
    size_t o = 0;
    double f64[2] = {1.5, -1e30};
    memcpy(data + o, f64, 16), o += 16;
    int8_t i8[2] = {-128, 127};
    memcpy(data + o, i8, 2), o += 2;
    uint8_t u8[2] = {0, 255};
    memcpy(data + o, u8, 2), o += 2;
    int16_t i16[2] = {-32768, 5};
    memcpy(data + o, i16, 4), o += 4;
    uint16_t u16[2] = {65535, 1};
    memcpy(data + o, u16, 4), o += 4;
    uint32_t u32[1] = {4000000000u};
    memcpy(data + o, u32, 4), o += 4;
    unsigned char bools[1] = {1};
    memcpy(data + o, bools, 1), o += 1;
    float f32[2] = {3.25f, -0.5f}; /* at offset 33: misaligned */
    memcpy(data + o, f32, 8), o += 8;
    const char *hdr =
        "{\"f64\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
        "\"i8\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[16,18]},"
        "\"u8\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[18,20]},"
        "\"i16\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[20,24]},"
        "\"u16\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[24,28]},"
        "\"u32\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[28,32]},"
        "\"b\":{\"dtype\":\"BOOL\",\"shape\":[1,1],\"data_offsets\":[32,33]},"
        "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[33,41]}}";
    /* pad the header to 8 so only "f" is misaligned */
    char padded[1024];
    snprintf(padded, sizeof padded, "%s", hdr);
    while (strlen(padded) % 8) strcat(padded, " ");
    const char *path = write_raw("conv.safetensors", padded, -1, data, o);
    as_safetensors *st = as_safetensors_load(path);
    CHECK_OK(st);
    if (!st) return;
    as_tensor *t;
    t = as_safetensors_find(st, "f64");
    CHECK(t && t->dtype == AS_F64 && as_get_flat(t, 0) == 1.5 && as_get_flat(t, 1) == -1e30); /* as it is */
    t = as_safetensors_find(st, "i8");
    CHECK(t && t->dtype == AS_I32 && as_get_flat(t, 0) == -128 && as_get_flat(t, 1) == 127);
    t = as_safetensors_find(st, "u8");
    CHECK(t && t->dtype == AS_I32 && as_get_flat(t, 1) == 255);
    t = as_safetensors_find(st, "i16");
    CHECK(t && t->dtype == AS_I32 && as_get_flat(t, 0) == -32768 && as_get_flat(t, 1) == 5);
    t = as_safetensors_find(st, "u16");
    CHECK(t && t->dtype == AS_I32 && as_get_flat(t, 0) == 65535);
    t = as_safetensors_find(st, "u32");
    CHECK(t && t->dtype == AS_I64 && as_get_flat(t, 0) == 4000000000.0);
    t = as_safetensors_find(st, "b");
    CHECK(t && t->dtype == AS_BOOL && t->ndim == 2 && as_get_flat(t, 0) == 1);
    t = as_safetensors_find(st, "f");
    CHECK(t && t->dtype == AS_F32 && as_get_flat(t, 0) == 3.25 && as_get_flat(t, 1) == -0.5);
    CHECK(st->nzero_copy == 2); /* the F64 and the BOOL; the F32 at byte 33 is a copy */
    as_safetensors_free(st);
    CHECK(!is_mapped(path));
}

/* A hostile file must fail with "load: <path>: <expected...>" and leave nothing mapped. */
static void expect_fail_raw(const char *header, long long hlen, const void *data, size_t ndata,
                            const char *expected, int line)
{
    const char *path = write_raw("bad.safetensors", header, hlen, data, ndata);
    as_safetensors *st = as_safetensors_load(path);
    char want[600];
    snprintf(want, sizeof want, "load: %s: %s", path, expected);
    as_test_checks++;
    if (st || strncmp(as_error_get(), want, strlen(want)) != 0) {
        as_test_failures++;
        fprintf(stderr, "%s:%d: expected error\n  %s\ngot\n  %s\n", __FILE__, line, want,
                st ? "(success)" : as_error_get());
    }
    as_safetensors_free(st);
    CHECK(!is_mapped(path));
}
#define EXPECT_FAIL(hdr, data, ndata, msg) expect_fail_raw(hdr, -1, data, ndata, msg, __LINE__)

static void test_hostile(void)
{
    static const char zeros[128] = {0};
    const char *path;
    /* the file itself */
    path = tmp_path("short.safetensors");
    FILE *f = fopen(path, "wb");
    fwrite("abcde", 1, 5, f);
    fclose(f);
    CHECK(as_safetensors_load(path) == NULL);
    CHECK(strstr(as_error_get(), "short.safetensors: file is 5 bytes, too short for a safetensors header"));
    CHECK(as_safetensors_load(tmp_path("missing.safetensors")) == NULL);
    CHECK(strstr(as_error_get(), "missing.safetensors: cannot open (No such file or directory)"));
    CHECK(as_safetensors_load(dir) == NULL);
    CHECK(strstr(as_error_get(), ": not a regular file"));

    /* the header length */
    expect_fail_raw("{}", 1000, zeros, 10, "header length 1000 exceeds the file (20 bytes)", __LINE__);
    expect_fail_raw("{}", 1ll << 62, zeros, 10,
                    "header length 4611686018427387904 is absurd (the limit is 100000000 bytes)", __LINE__);
    expect_fail_raw("", 0, NULL, 0, "header is not valid JSON", __LINE__);

    /* the JSON */
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\"", zeros, 0, "header is not valid JSON (error near byte");
    EXPECT_FAIL("[1, 2]   ", zeros, 0, "header must be a JSON object, got an array");
    EXPECT_FAIL("{}  xyz ", zeros, 0, "header has bytes after its JSON value (at byte 4)");
    char nul_hdr[] = "{\"a\":{}}";
    nul_hdr[3] = 1;
    EXPECT_FAIL(nul_hdr, zeros, 0, "header is not valid JSON (control byte 0x01 at byte 3)");
    char *deep = malloc(200002);
    memset(deep, '[', 100000), memset(deep + 100000, ']', 100000), deep[200000] = 0;
    EXPECT_FAIL(deep, zeros, 0, "header is not valid JSON");
    free(deep);

    /* the entries */
    EXPECT_FAIL("{\"w\": 3}", zeros, 0, "tensor 'w' must be an object, got a number");
    EXPECT_FAIL("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor 'w': dtype must be a string, got missing");
    EXPECT_FAIL("{\"w\": {\"dtype\": 32, \"shape\": [1], \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor 'w': dtype must be a string, got a number");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F128\", \"shape\": [1], \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor 'w' has dtype 'F128', which is not supported (supported: F32 F16 BF16");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"U64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", zeros, 8,
                "tensor 'w' has dtype 'U64', which is not supported");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor 'w': shape must be an array, got missing");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": {\"a\": 1}, \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor 'w': shape must be an array, got an object");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -3], \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor 'w' has a negative size -3 in its shape");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor 'w': shape entries must be integers in [0, 2^53], got a number out of range");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor 'w': shape entries must be integers in [0, 2^53], got a string");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}",
                zeros, 4, "tensor 'w': the size of its shape overflows");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}",
                zeros, 4, "tensor 'w' has 9 dimensions (at most 8 are supported)");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", zeros, 4,
                "tensor 'w': data_offsets must be [begin, end] with integers >= 0");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", zeros, 4,
                "tensor 'w': data_offsets must be [begin, end] with integers >= 0");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, -4]}}", zeros, 4,
                "tensor 'w': data_offsets must be [begin, end] with integers >= 0");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 1e300]}}", zeros, 4,
                "tensor 'w': data_offsets must be [begin, end] with integers >= 0");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", zeros, 8,
                "tensor 'w' data_offsets [8, 4) end before they begin");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [25], \"data_offsets\": [0, 100]}}", zeros, 64,
                "tensor 'w' data_offsets [0, 100) exceed the data section (64 bytes)");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", zeros, 64,
                "tensor 'w' data_offsets [0, 8) hold 8 bytes but shape (3) of F32 needs 12");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 0], \"data_offsets\": [0, 4]}}", zeros, 64,
                "tensor 'w' data_offsets [0, 4) hold 4 bytes but shape (2, 0) of F32 needs 0");

    /* the set */
    EXPECT_FAIL("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                " \"b\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                zeros, 16, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    EXPECT_FAIL("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                " \"b\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                zeros, 16, "tensors 'a' [0, 16) and 'b' [4, 8) overlap");
    EXPECT_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                zeros, 8, "tensor 'w' appears twice in the header");
    EXPECT_FAIL("{\"w\\xff\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", zeros, 4,
                "header is not valid JSON"); /* \x is no JSON escape */
    EXPECT_FAIL("{\"w\xff\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", zeros, 4,
                "tensor name 'w\\xff' is not valid UTF-8");
    EXPECT_FAIL("{\"\xed\xa0\x80\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                zeros, 4, "tensor name '\\xed\\xa0\\x80' is not valid UTF-8"); /* a surrogate */

    /* __metadata__ */
    EXPECT_FAIL("{\"__metadata__\": \"x\"}", zeros, 0, "__metadata__ must be an object of strings, got a string");
    EXPECT_FAIL("{\"__metadata__\": {\"k\": 1}}", zeros, 0,
                "__metadata__ must be an object of strings, but 'k' is a number");
    EXPECT_FAIL("{\"__metadata__\": {}, \"__metadata__\": {}}", zeros, 0, "__metadata__ appears twice in the header");

    /* things that are fine: gaps, trailing bytes, BOM-free whitespace padding, empty tensors anywhere */
    path = write_raw("ok.safetensors",
                     "{\"__metadata__\": {\"k\": \"v\"}, \"e\": {\"dtype\": \"F32\", \"shape\": [0, 5], "
                     "\"data_offsets\": [4, 4]}, \"w\": {\"dtype\": \"F32\", \"shape\": [1], "
                     "\"data_offsets\": [8, 12]}, \"x\": {\"dtype\": \"F32\", \"shape\": [], "
                     "\"data_offsets\": [0, 4]}, \"extra\": {\"dtype\": \"BOOL\", \"shape\": [0], "
                     "\"data_offsets\": [6, 6], \"other\": null}}  \n",
                     -1, zeros, 20);
    as_safetensors *st = as_safetensors_load(path);
    CHECK_OK(st);
    CHECK(st && st->n == 4 && st->nmeta == 1 && as_numel(st->tensors[0].tensor) == 0);
    CHECK(st && st->tensors[2].tensor->ndim == 0);
    as_safetensors_free(st);
}

/* Truncations and byte flips of a valid file: each loads or fails, never crashes. */
static void test_mutations(void)
{
    as_tensor *a = filled(2, (int64_t[]){3, 5}, AS_F32);
    as_tensor *b = filled(1, (int64_t[]){7}, AS_BF16);
    const char *names[] = {"layer.0.weight", "b"};
    const as_tensor *ts[] = {a, b};
    const char *meta[] = {"k", "v", NULL};
    const char *path = tmp_path("good.safetensors");
    CHECK(as_safetensors_save(path, 2, names, ts, meta) == 0);
    FILE *f = fopen(path, "rb");
    unsigned char buf[1024];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    int loaded = 0, failed = 0;
    for (size_t len = 0; len < n; len++) {
        const char *p = tmp_path("mut.safetensors");
        f = fopen(p, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
        as_safetensors *st = as_safetensors_load(p);
        st ? loaded++ : failed++;
        as_safetensors_free(st);
    }
    CHECK(loaded == 0 && failed == (int)n); /* every truncation is caught */
    for (int k = 0; k < 3000; k++) {
        unsigned char m[1024];
        memcpy(m, buf, n);
        int flips = 1 + (int)as_test_randint(0, 2);
        for (int j = 0; j < flips; j++) {
            size_t at = (size_t)as_test_randint(0, (int64_t)(8 + 120));
            m[at] = (unsigned char)as_test_randint(0, 255);
        }
        const char *p = tmp_path("mut.safetensors");
        f = fopen(p, "wb");
        fwrite(m, 1, n, f);
        fclose(f);
        as_safetensors *st = as_safetensors_load(p);
        if (st)
            for (int64_t i = 0; i < st->n; i++) as_test_maxdiff(st->tensors[i].tensor, st->tensors[i].tensor);
        st ? loaded++ : failed++;
        as_safetensors_free(st);
    }
    CHECK(loaded > 0 && failed > 0);
    CHECK(!is_mapped(tmp_path("mut.safetensors")));
    as_release(a), as_release(b);
}

static void test_save_errors(void)
{
    as_tensor *a = filled(1, (int64_t[]){2}, AS_F32);
    const as_tensor *ts[] = {a, a};
    const char *path = tmp_path("err.safetensors");
    char want[600];
    CHECK(as_safetensors_save(path, 2, (const char *[]){"x", "x"}, ts, NULL) == -1);
    snprintf(want, sizeof want, "save: %s: tensor name 'x' is given twice", path);
    CHECK(strcmp(as_error_get(), want) == 0);
    CHECK(as_safetensors_save(path, 1, (const char *[]){"__metadata__"}, ts, NULL) == -1);
    CHECK(strstr(as_error_get(), "'__metadata__' is reserved") != NULL);
    CHECK(as_safetensors_save(path, 1, (const char *[]){"bad\xc3"}, ts, NULL) == -1);
    CHECK(strstr(as_error_get(), "tensor name 'bad\\xc3' is not valid UTF-8") != NULL);
    CHECK(as_safetensors_save(path, 1, (const char *[]){"x"}, ts, (const char *[]){"k", NULL}) == -1);
    CHECK(strstr(as_error_get(), "metadata 'k' needs a valid UTF-8 key and value") != NULL);
    const char *nodir = tmp_path("no/such/dir.safetensors");
    CHECK(as_safetensors_save(nodir, 1, (const char *[]){"x"}, ts, NULL) == -1);
    snprintf(want, sizeof want, "save: %s: cannot create a file beside it (No such file or directory)", nodir);
    CHECK(strcmp(as_error_get(), want) == 0);
    CHECK(access(path, F_OK) != 0); /* nothing was written */
    as_release(a);
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/as_st_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_converted();
    test_hostile();
    test_mutations();
    test_save_errors();
    /* clean up: every file this test made lives directly in dir */
    const char *files[] = {"round.safetensors", "none.safetensors", "conv.safetensors",
                           "bad.safetensors", "short.safetensors", "ok.safetensors",
                           "good.safetensors", "mut.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(tmp_path(files[i]));
    if (rmdir(dir) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    return as_test_report("test_safetensors");
}
