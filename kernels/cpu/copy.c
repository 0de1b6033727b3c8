/* Copy with dtype conversion, and fill. */
#include <string.h>

#include "cpu_kernels.h"
#include "strided.h"

typedef struct {
    as_dtype dst, src;
} copy_ctx;

static void copy_same(void *ctx, char **p, const int64_t *s, int64_t n)
{
    size_t es = (size_t)*(const int64_t *)ctx;
    if (s[0] == (int64_t)es && s[1] == (int64_t)es) {
        memcpy(p[0], p[1], (size_t)n * es);
        return;
    }
    for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0], p[1] + i * s[1], es);
}

static void copy_convert(void *ctx, char **p, const int64_t *s, int64_t n)
{
    const copy_ctx *c = ctx;
    if (c->dst == AS_F32 && (c->src == AS_F16 || c->src == AS_BF16)) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = *(const uint16_t *)(p[1] + i * s[1]);
            *(float *)(p[0] + i * s[0]) = c->src == AS_F16 ? as_f16_to_f32(h) : as_bf16_to_f32(h);
        }
        return;
    }
    if (c->src == AS_I64 && c->dst == AS_I32) {
        for (int64_t i = 0; i < n; i++)
            *(int32_t *)(p[0] + i * s[0]) = (int32_t) * (const int64_t *)(p[1] + i * s[1]);
        return;
    }
    if (c->src == AS_I32 && c->dst == AS_I64) {
        for (int64_t i = 0; i < n; i++)
            *(int64_t *)(p[0] + i * s[0]) = *(const int32_t *)(p[1] + i * s[1]);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        as_store_elem(p[0] + i * s[0], c->dst, 0, as_load_elem(p[1] + i * s[1], c->src, 0));
}

void as_cpu_copy(const as_kview *dst, const as_kview *src)
{
    as_iter it;
    const as_kview *ops[2] = {dst, src};
    as_iter_init(&it, 2, ops, dst->ndim, dst->shape);
    if (dst->dtype == src->dtype) {
        int64_t es = (int64_t)as_dtype_size(dst->dtype);
        as_cpu_iter_run(&it, copy_same, &es);
    } else {
        copy_ctx c = {dst->dtype, src->dtype};
        as_cpu_iter_run(&it, copy_convert, &c);
    }
}

static void fill_loop(void *ctx, char **p, const int64_t *s, int64_t n)
{
    const unsigned char *v = ctx; /* v[0] = size, then the encoded value */
    size_t es = v[0];
    for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0], v + 8, es);
}

void as_cpu_fill(const as_kview *dst, double value)
{
    _Alignas(8) unsigned char v[16] = {0};
    v[0] = (unsigned char)as_dtype_size(dst->dtype);
    as_store_elem(v + 8, dst->dtype, 0, value);
    as_iter it;
    const as_kview *ops[1] = {dst};
    as_iter_init(&it, 1, ops, dst->ndim, dst->shape);
    as_cpu_iter_run(&it, fill_loop, v);
}

void as_cpu_gather_rows(void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n, int64_t size,
                        int64_t row_bytes)
{
    char *d = dst;
    const char *s = src;
#pragma omp parallel for if (outer * n * row_bytes > 262144)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < n; i++)
            memcpy(d + (o * n + i) * row_bytes, s + (o * size + idx[i]) * row_bytes, (size_t)row_bytes);
}

void as_cpu_scatter_add_rows(float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n, int64_t size,
                             int64_t row)
{
    /* threads split the columns, each walks every index in order: the same
     * sums in the same order whatever the thread count (deterministic) */
    const int64_t chunk = 256, nchunks = (row + chunk - 1) / chunk;
#pragma omp parallel for collapse(2) if (outer * n * row > 262144)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t j0 = c * chunk, j1 = j0 + chunk < row ? j0 + chunk : row;
            for (int64_t i = 0; i < n; i++) {
                float *d = dst + (o * size + idx[i]) * row;
                const float *s = src + (o * n + i) * row;
                for (int64_t j = j0; j < j1; j++) d[j] += s[j];
            }
        }
}

void as_cpu_triangle(void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es)
{
    char *c = p;
    for (int64_t m = 0; m < mats; m++)
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++)
                if (lower ? j - i > k : j - i < k) memset(c + ((m * R + i) * C + j) * es, 0, (size_t)es);
}
