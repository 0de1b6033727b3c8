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
#include "attnswap/attention_sparse.h"
#include "prepare.h"

#define FN "sparse_attention"

/* ---- shared by the family ---- */


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

as_tensor *as_sp_run_tiles(const char *fn, as_attn_inputs *in, const as_cpu_sp_blocks *blocks,
                           const as_cpu_sp_band *band)
{
    as_tensor *out = as_zeros(4, (int64_t[]){in->p.B, in->p.H, in->p.Lq, in->p.Dv}, AS_F32, AS_CPU);
    if (!out) return NULL;
    as_cpu_sp_params p = {.c = in->p, .blocks = blocks, .band = band};
    p.c.out = as_data(out);
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
    return as_attention_finish(in, out);
}

as_tensor *as_sparse_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                               const as_tensor *mask, const as_attention_opts *o,
                               const as_tensor *layout, int64_t block_size, bool training)
{
    if (block_size < 1 || block_size > INT32_MAX) {
        as_error_set(FN ": block_size must be a positive integer, got %lld", (long long)block_size);
        return NULL;
    }
    as_attn_inputs in;
    if (as_attention_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    csr s;
    if (make_csr(layout, in.p.H, in.p.Lq, in.p.Lk, block_size, &s)) {
        as_attention_inputs_release(&in);
        return NULL;
    }
    as_tensor *r = as_sp_run_tiles(FN, &in, &s.b, NULL);
    csr_free(&s);
    as_attention_inputs_release(&in);
    return r;
}
