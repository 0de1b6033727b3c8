/* CPU kernels of the "sparse" attention family: exact softmax attention
 * restricted to a subset of the keys of each query.
 *
 *   sparse_attention   a block layout (Child et al. 2019; xFormers' blocksparse)
 *   local_attention    a band |i' - j| <= w (Beltagy et al. 2020)
 *   sink_attention     the first s keys plus a causal band (Xiao et al. 2023)
 *   dynamic_attention  the top k scores of each query row (Zhao et al. 2019)
 *
 * The first three share one tile driver (zoo_sparse_tiles.c): FlashAttention's
 * online softmax (the tile kernels of attention_flash.h, vectorised, chosen at
 * run time) run only over the key tiles a query block may see — the
 * non-empty blocks of its layout row, or the band and the sinks — so the
 * cost is the number of visible tiles, never Lq x Lk.  Inside a tile that
 * is only partly visible an additive bias of 0 / -inf keeps the exact set.
 *
 * dynamic_attention (zoo_sparse_topk.c) must see every score of a row to
 * choose its top k: per block of queries one sgemm gives S (m, n), each row
 * keeps its k largest (ties to the lower key index), and the output gathers
 * only those k value rows.
 *
 * Positions: query i stands at i' = i + Lk - Lq (bottom-right aligned, as
 * causal is), so a KV-cache query works.  Kernels trust their caller
 * (runtime/attention/sparse.c, local.c, dynamic.c) to
 * have checked shapes and brought q, k, v to contiguous float32; they never
 * fail. */
#ifndef AS_CPU_ZOO_SPARSE_H
#define AS_CPU_ZOO_SPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "as_attention.h" /* as_attn_f32_params: what every kernel of the family reads */
#include "as_scalar.h"

/* ---- block layouts (sparse_attention) ----
 * A grid of R x C blocks of bs x bs elements over (layout rows, keys); query
 * i reads layout row i + roff.  Row r of layout head lh lists its non-empty
 * key blocks in CSR form, ascending: entries e in [row_ptr[lh * R + r],
 * row_ptr[lh * R + r + 1]) name key block col[e]; partial[e] != 0 when only
 * some elements of the block are kept, which elem (LH, Lr, Lk) then says
 * (elem may be NULL when no entry is partial). */
typedef struct {
    int64_t bs, R, C, LH; /* LH: 1 (shared by every head) or H */
    int64_t roff, Lr;     /* layout rows Lr = Lq + roff */
    const int64_t *row_ptr;
    const int32_t *col;
    const uint8_t *partial;
    const uint8_t *elem;
} as_cpu_sp_blocks;

/* ---- bands (local_attention, sink_attention) ----
 * Query i sees key j iff i' + lo <= j <= i' + hi, or j < sinks; and j <= i'
 * when causal. */
typedef struct {
    int64_t lo, hi, sinks;
} as_cpu_sp_band;

typedef struct {
    as_attn_f32_params c;
    const as_cpu_sp_blocks *blocks; /* exactly one of blocks and band */
    const as_cpu_sp_band *band;
} as_cpu_sp_params;

/* Scratch bytes as_cpu_sp_attention needs for nthreads threads. */
size_t as_cpu_sp_workspace_size(const as_cpu_sp_params *p, int nthreads);
/* Runs over at most nthreads OpenMP threads. */
void as_cpu_sp_attention(const as_cpu_sp_params *p, void *workspace, int nthreads);
/* The vector path the tile kernels take ("avx512", "avx2", "scalar"). */
const char *as_cpu_sp_isa_name(void);

/* ---- dynamic_attention: per-query top-k ---- */
/* Query rows per work item. */
#define AS_CPU_TOPK_BQ 32
size_t as_cpu_topk_workspace_size(const as_attn_f32_params *p, int nthreads);
/* Query i keeps the top_k largest of its visible scores (all of them when
 * fewer; ties to the lower index; -inf and masked keys never); softmax over
 * those.  A row with a NaN score gives NaN. */
void as_cpu_topk_attention(const as_attn_f32_params *p, int64_t top_k, void *workspace, int nthreads);
/* Up to this k a heap selects (O(n + k log k log(n/k))); above, quickselect (O(n)). */
#ifndef AS_CPU_TOPK_HEAP_MAX
#define AS_CPU_TOPK_HEAP_MAX 16
#endif
/* Positions of the k largest of x[0..n) (entries equal to -inf excluded; no
 * NaN), in no particular order; of equal values the lower index wins.
 * Returns how many: min(k, the number of entries above -inf).  idx holds
 * n entries, scratch 3 n. */
int64_t as_cpu_topk_select(const float *x, int64_t n, int64_t k, int32_t *idx, float *scratch);

/* keep (rows, n) = 1 at each row's as_cpu_topk_select positions, 0 elsewhere
 * (dynamic_attention's selection for its composite); -1 out of memory. */
int as_cpu_topk_keep_rows(const float *x, int64_t rows, int64_t n, int64_t k, uint8_t *keep);

/* ---- patterns: bool keep-masks (L, L) row-major, true = may attend ----
 * (zoo_sparse_patterns.c).  0-based positions; causal adds j <= i. */
void as_cpu_pattern_local(uint8_t *m, int64_t L, int64_t window, bool causal);
/* Child et al. 2019 strided: |i - j| <= stride or (i - j) % stride == 0. */
void as_cpu_pattern_strided(uint8_t *m, int64_t L, int64_t stride, bool causal);
/* Child et al. 2019 fixed: floor(j / l) == floor(i / l) or j % l >= l - c. */
void as_cpu_pattern_fixed(uint8_t *m, int64_t L, int64_t stride, int64_t c, bool causal);
/* Axial over an h x w grid in raster order: same row or same column. */
void as_cpu_pattern_axial(uint8_t *m, int64_t h, int64_t w, bool causal);
/* Each (i, j) kept with probability p, from a hash of (seed, i, j). */
void as_cpu_pattern_random(uint8_t *m, int64_t L, double p, uint64_t seed);
/* Rows and columns of the listed positions kept (global tokens). */
void as_cpu_pattern_global(uint8_t *m, int64_t L, const int64_t *idx, int64_t n);
/* BigBird (Zaheer et al. 2020) on nb x nb blocks: |r - c| <= (window - 1) / 2,
 * r or c < globals, and per row >= globals `randoms` other blocks drawn
 * from a hash of (seed, r); causal keeps c <= r. */
void as_cpu_pattern_bigbird_blocks(uint8_t *m, int64_t nb, int64_t window, int64_t globals,
                                   int64_t randoms, uint64_t seed, bool causal);
/* dst (R, C) = any of each bs x bs block of src (Lr, Lc); nh heads of each. */
void as_cpu_pattern_to_blocks(uint8_t *dst, const uint8_t *src, int64_t nh, int64_t Lr, int64_t Lc,
                              int64_t bs);
/* dst (Lr, Lc) = src (R, C) block of each element; nh heads. */
void as_cpu_pattern_from_blocks(uint8_t *dst, const uint8_t *src, int64_t nh, int64_t Lr, int64_t Lc,
                                int64_t bs);

#endif
