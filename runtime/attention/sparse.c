/* sparse_attention: exact softmax attention restricted to a block layout
 * (Child et al. 2019, "Generating Long Sequences with Sparse Transformers",
 * eq. 2 with the connectivity pattern S_i; the block-sparse kernels of
 * OpenAI's blocksparse and xFormers).  This file checks the arguments,
 * turns the layout into a list of non-empty key blocks per block row (CSR)
 * and runs the tile driver (kernels/cpu/zoo_sparse_tiles.c); it also holds
 * what the family's front-ends share (as_sp_prepare). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attnswap/error.h"
#include "attention_flash.h"
#include "attnswap/attention_sparse.h"

#define FN "sparse_attention"

/* ---- shared by the family ---- */

static int check_inputs(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                        const as_tensor *mask)
{
    char s1[128], s2[128], s3[128];
    const as_tensor *in[3] = {q, k, v};
    const char *names = "qkv";
    for (int i = 0; i < 3; i++) {
        if (!in[i]) {
            as_error_set("%s: %c must be a Tensor, got nil", fn, names[i]);
            return -1;
        }
        if (in[i]->ndim != 4) {
            as_error_set("%s: %c must be 4-d (B, H, L, D), got shape %s", fn, names[i],
                         as_shape_str(s1, sizeof s1, in[i]->ndim, in[i]->shape));
            return -1;
        }
        if (as_tensor_device(in[i]).type != AS_DEV_CPU) {
            as_error_set("%s: %c is on %s; this kernel runs on cpu tensors", fn, names[i],
                         as_device_name(as_tensor_device(in[i])));
            return -1;
        }
    }
    if (!as_dtype_is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype) {
        as_error_set("%s: q, k and v must be floating point of one dtype, got %s, %s and %s", fn,
                     as_dtype_name(q->dtype), as_dtype_name(k->dtype), as_dtype_name(v->dtype));
        return -1;
    }
    as_shape_str(s1, sizeof s1, 4, q->shape);
    as_shape_str(s2, sizeof s2, 4, k->shape);
    as_shape_str(s3, sizeof s3, 4, v->shape);
    if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0]) {
        as_error_set("%s: batch sizes differ: q %s, k %s, v %s", fn, s1, s2, s3);
        return -1;
    }
    if (k->shape[1] != v->shape[1] || k->shape[2] != v->shape[2]) {
        as_error_set("%s: k %s and v %s must have the same heads and length", fn, s2, s3);
        return -1;
    }
    if (k->shape[1] == 0 || q->shape[1] % k->shape[1] != 0) {
        as_error_set("%s: the query heads (%lld) must be a multiple of the key/value heads (%lld): "
                     "q %s, k %s",
                     fn, (long long)q->shape[1], (long long)k->shape[1], s1, s2);
        return -1;
    }
    if (k->shape[3] != q->shape[3]) {
        as_error_set("%s: q %s and k %s must have the same head dimension", fn, s1, s2);
        return -1;
    }
    if (k->shape[2] > INT32_MAX - 1 || q->shape[3] > INT32_MAX || v->shape[3] > INT32_MAX) {
        as_error_set("%s: sizes past 2^31 are more than this kernel indexes", fn);
        return -1;
    }
    if (!mask) return 0;
    if (as_tensor_device(mask).type != AS_DEV_CPU) {
        as_error_set("%s: mask is on %s; this kernel runs on cpu tensors", fn,
                     as_device_name(as_tensor_device(mask)));
        return -1;
    }
    int64_t target[4] = {q->shape[0], q->shape[1], q->shape[2], k->shape[2]};
    bool ok = mask->ndim <= 4;
    for (int d = 0; ok && d < mask->ndim; d++) {
        int64_t n = mask->shape[mask->ndim - 1 - d];
        ok = n == 1 || n == target[3 - d];
    }
    if (!ok) {
        as_error_set("%s: mask of shape %s is not broadcastable to (B, H, Lq, Lk) = %s", fn,
                     as_shape_str(s1, sizeof s1, mask->ndim, mask->shape),
                     as_shape_str(s2, sizeof s2, 4, target));
        return -1;
    }
    if (mask->dtype != AS_BOOL && !as_dtype_is_float(mask->dtype)) {
        as_error_set("%s: mask must be bool (keep) or floating point (additive), got %s", fn,
                     as_dtype_name(mask->dtype));
        return -1;
    }
    return 0;
}

static as_tensor *to_f32_contiguous(const as_tensor *t)
{
    as_tensor *f = as_to_dtype(t, AS_F32);
    if (!f) return NULL;
    as_tensor *c = as_contiguous(f);
    as_release(f);
    return c;
}

/* 64 bits from the seeded generator, as the flash kernel draws its seed. */
static int dropout_seed(uint64_t *seed)
{
    as_tensor *u = as_rand(1, (int64_t[]){4}, AS_F32, AS_CPU);
    if (!u) return -1;
    const float *f = as_data(u);
    uint64_t s = 0;
    for (int i = 0; i < 4; i++) s = as_attn_mix64(s ^ (uint64_t)(f[i] * 16777216.0f));
    as_release(u);
    *seed = s;
    return 0;
}

void as_sp_release(as_sp_inputs *in)
{
    as_release(in->q), as_release(in->k), as_release(in->v), as_release(in->mask);
    in->q = in->k = in->v = in->mask = NULL;
}

int as_sp_prepare(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                  const as_tensor *mask, const as_attention_opts *opts, bool training, as_sp_inputs *in)
{
    *in = (as_sp_inputs){0};
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (!(o.dropout >= 0 && o.dropout < 1)) {
        as_error_set("%s: dropout must be in [0, 1), got %g", fn, o.dropout);
        return -1;
    }
    if (isinf(o.scale)) {
        as_error_set("%s: scale must be finite (or NaN for 1/sqrt(D)), got %g", fn, o.scale);
        return -1;
    }
    if (check_inputs(fn, q, k, v, mask)) return -1;
    in->dtype = q->dtype;
    in->q = to_f32_contiguous(q);
    in->k = in->q ? to_f32_contiguous(k) : NULL;
    in->v = in->k ? to_f32_contiguous(v) : NULL;
    if (!in->v) goto fail;
    if (mask) {
        in->mask = mask->dtype == AS_BOOL ? as_retain((as_tensor *)mask) : as_to_dtype(mask, AS_F32);
        if (!in->mask) goto fail;
    }
    int64_t D = q->shape[3];
    in->c = (as_cpu_sp_common){
        .B = q->shape[0], .H = q->shape[1], .Hkv = k->shape[1], .Lq = q->shape[2], .Lk = k->shape[2],
        .D = D, .Dv = v->shape[3],
        .q = as_data(in->q), .k = as_data(in->k), .v = as_data(in->v),
        .causal = o.causal,
        .scale = (float)(isnan(o.scale) ? (D > 0 ? 1.0 / sqrt((double)D) : 1.0) : o.scale),
    };
    if (in->mask) {
        as_cpu_sp_mask *mk = &in->c.mask;
        mk->data = as_data(in->mask);
        mk->dtype = in->mask->dtype;
        for (int d = 0; d < 4; d++) {
            int td = d - (4 - in->mask->ndim);
            mk->stride[d] = td < 0 || in->mask->shape[td] == 1 ? 0 : in->mask->stride[td];
        }
    }
    if (training && o.dropout > 0) {
        in->c.dropout = (float)o.dropout;
        if (dropout_seed(&in->c.seed)) goto fail;
    }
    return 0;
fail:
    as_sp_release(in);
    return -1;
}

as_tensor *as_sp_output(as_sp_inputs *in)
{
    const as_cpu_sp_common *c = &in->c;
    as_tensor *out = as_zeros(4, (int64_t[]){c->B, c->H, c->Lq, c->Dv}, AS_F32, AS_CPU);
    if (out) in->c.out = as_data(out);
    return out;
}

as_tensor *as_sp_finish(as_sp_inputs *in, as_tensor *out)
{
    if (!out || in->dtype == AS_F32) return out;
    as_tensor *r = as_to_dtype(out, in->dtype);
    as_release(out);
    return r;
}

static int nthreads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- the layout as CSR ---- */

typedef struct {
    as_tensor *layout; /* contiguous bool (LH, rows, cols) */
    as_cpu_sp_blocks b;
    int64_t *row_ptr;
    int32_t *col;
    uint8_t *partial;
} csr;

static void csr_free(csr *s)
{
    as_release(s->layout);
    free(s->row_ptr), free(s->col), free(s->partial);
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Reads the layout's kind and alignment; 0 or -1 with the error set. */
static int layout_shape(const as_tensor *t, int64_t H, int64_t Lq, int64_t Lk, int64_t bs,
                        bool *element, int64_t *LH, int64_t *Lr)
{
    char s1[128];
    if (!t) {
        as_error_set(FN ": layout must be a bool Tensor, got nil");
        return -1;
    }
    if (t->dtype != AS_BOOL || as_tensor_device(t).type != AS_DEV_CPU || t->ndim < 2 || t->ndim > 3) {
        as_error_set(FN ": layout must be a 2-d or 3-d bool cpu tensor, got %s %s on %s",
                     as_dtype_name(t->dtype), as_shape_str(s1, sizeof s1, t->ndim, t->shape),
                     as_device_name(as_tensor_device(t)));
        return -1;
    }
    *LH = t->ndim == 3 ? t->shape[0] : 1;
    if (*LH != 1 && *LH != H) {
        as_error_set(FN ": a 3-d layout has one layout per head: its first dim must be 1 or %lld "
                     "(the query heads), got shape %s",
                     (long long)H, as_shape_str(s1, sizeof s1, t->ndim, t->shape));
        return -1;
    }
    int64_t rows = t->shape[t->ndim - 2], cols = t->shape[t->ndim - 1];
    if (cols == Lk && (rows == Lq || (rows == Lk && Lk > Lq))) {
        *element = true, *Lr = rows;
        return 0;
    }
    if (cols == cdiv(Lk, bs) && ((rows == cdiv(Lk, bs) && Lk > Lq) || rows == cdiv(Lq, bs))) {
        *element = false, *Lr = rows == cdiv(Lk, bs) && Lk > Lq ? Lk : Lq;
        return 0;
    }
    as_error_set(FN ": layout of shape %s fits neither the elements (%lld, %lld) nor the "
                 "%lld-blocks (%lld, %lld) of Lq = %lld queries and Lk = %lld keys",
                 as_shape_str(s1, sizeof s1, t->ndim, t->shape), (long long)Lq, (long long)Lk,
                 (long long)bs, (long long)cdiv(Lq, bs), (long long)cdiv(Lk, bs), (long long)Lq,
                 (long long)Lk);
    return -1;
}

/* The state of every block: 0 empty, 1 full, 2 partial (elements). */
static void block_states(const uint8_t *lay, bool element, int64_t LH, int64_t Lr, int64_t Lk,
                         int64_t bs, int64_t R, int64_t C, uint8_t *state, int64_t *count)
{
    for (int64_t h = 0; h < LH; h++)
        for (int64_t r = 0; r < R; r++) {
            uint8_t *st = state + (h * R + r) * C;
            if (!element) {
                const uint8_t *row = lay + (h * R + r) * C;
                for (int64_t c = 0; c < C; c++) st[c] = row[c] != 0;
                continue;
            }
            memset(count, 0, (size_t)C * sizeof *count);
            int64_t i1 = (r + 1) * bs < Lr ? (r + 1) * bs : Lr;
            for (int64_t i = r * bs; i < i1; i++) {
                const uint8_t *row = lay + (h * Lr + i) * Lk;
                for (int64_t j = 0; j < Lk; j++) count[j / bs] += row[j] != 0;
            }
            for (int64_t c = 0; c < C; c++) {
                int64_t cells = (i1 - r * bs) * (((c + 1) * bs < Lk ? (c + 1) * bs : Lk) - c * bs);
                st[c] = count[c] == 0 ? 0 : count[c] == cells ? 1 : 2;
            }
        }
}

static int make_csr(const as_tensor *layout, int64_t H, int64_t Lq, int64_t Lk, int64_t bs, csr *s)
{
    *s = (csr){0};
    bool element;
    int64_t LH, Lr;
    if (layout_shape(layout, H, Lq, Lk, bs, &element, &LH, &Lr)) return -1;
    s->layout = as_contiguous(layout);
    if (!s->layout) return -1;
    /* a block past both sides is one block: the same R = C = 1, fewer empty work items */
    int64_t side = Lr > Lk ? Lr : Lk;
    if (bs > side) bs = side > 0 ? side : 1;
    const int64_t R = cdiv(Lr, bs), C = cdiv(Lk, bs), rows = LH * R;
    uint8_t *state = malloc((size_t)(rows * C) + 1);
    int64_t *count = malloc(((size_t)C + 1) * sizeof *count);
    s->row_ptr = malloc(((size_t)rows + 1) * sizeof *s->row_ptr);
    if (!state || !count || !s->row_ptr) goto oom;
    const uint8_t *lay = as_data(s->layout);
    block_states(lay, element, LH, Lr, Lk, bs, R, C, state, count);
    int64_t nnz = 0;
    bool any_partial = false;
    for (int64_t r = 0; r < rows; r++) {
        s->row_ptr[r] = nnz;
        for (int64_t c = 0; c < C; c++) nnz += state[r * C + c] != 0;
    }
    s->row_ptr[rows] = nnz;
    s->col = malloc(((size_t)nnz + 1) * sizeof *s->col);
    s->partial = malloc((size_t)nnz + 1);
    if (!s->col || !s->partial) goto oom;
    for (int64_t r = 0, e = 0; r < rows; r++)
        for (int64_t c = 0; c < C; c++)
            if (state[r * C + c]) {
                s->col[e] = (int32_t)c;
                s->partial[e] = state[r * C + c] == 2;
                any_partial |= s->partial[e];
                e++;
            }
    free(state), free(count);
    s->b = (as_cpu_sp_blocks){.bs = bs, .R = R, .C = C, .LH = LH, .roff = Lr - Lq, .Lr = Lr,
                              .row_ptr = s->row_ptr, .col = s->col, .partial = s->partial,
                              .elem = element && any_partial ? lay : NULL};
    return 0;
oom:
    free(state), free(count);
    csr_free(s);
    as_error_set(FN ": out of memory for the layout's block lists");
    return -1;
}

as_tensor *as_sp_run_tiles(const char *fn, as_sp_inputs *in, const as_cpu_sp_blocks *blocks,
                           const as_cpu_sp_band *band)
{
    as_tensor *out = as_sp_output(in);
    if (!out) return NULL;
    as_cpu_sp_params p = {.c = in->c, .blocks = blocks, .band = band};
    if (as_numel(out) > 0) {
        int nt = nthreads();
        size_t bytes = as_cpu_sp_workspace_size(&p, nt);
        void *ws = malloc(bytes);
        if (!ws) {
            as_release(out);
            as_error_set("%s: out of memory (%zu bytes of scratch)", fn, bytes);
            return NULL;
        }
        as_cpu_sp_attention(&p, ws, nt);
        free(ws);
    }
    return as_sp_finish(in, out);
}

as_tensor *as_sparse_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                               const as_tensor *mask, const as_attention_opts *o,
                               const as_tensor *layout, int64_t block_size, bool training)
{
    if (block_size < 1 || block_size > INT32_MAX) {
        as_error_set(FN ": block_size must be a positive integer, got %lld", (long long)block_size);
        return NULL;
    }
    as_sp_inputs in;
    if (as_sp_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    csr s;
    if (make_csr(layout, in.c.H, in.c.Lq, in.c.Lk, block_size, &s)) {
        as_sp_release(&in);
        return NULL;
    }
    as_tensor *r = as_sp_run_tiles(FN, &in, &s.b, NULL);
    csr_free(&s);
    as_sp_release(&in);
    return r;
}
