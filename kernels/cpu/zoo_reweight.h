/* CPU kernels of the "reweight" attention family: mechanisms that keep
 * attention's shape (scores q k^T, weights, weights @ v) but change how
 * scores become weights — a position bias (T5, ALiBi), a soft span mask
 * (adaptive span), a sparse normaliser (entmax), no normaliser (sigmoid) —
 * or what happens around it (output gates, cosine scores, flex tiles).
 *
 * One driver runs them all: a work item is (batch, head, block of BQ query
 * rows).  For its rows it computes the scores against the keys they may see
 * with one sgemm, S (m, n) = Q_blk K_range^T * scale, masks them (-inf),
 * lets the mechanism turn scores into weights row by row in place, drops
 * weights (training), and writes O_blk = P V_range with a second sgemm.  So
 * a thread holds at most BQ x Lk scores, never Lq x Lk; a banded mechanism
 * (adaptive span) narrows the key range and never visits keys outside it.
 *
 * Kernels trust their caller (runtime/attention/reweight.c) to have checked
 * shapes and converted inputs to contiguous float32; they never fail. */
#ifndef AS_CPU_ZOO_REWEIGHT_H
#define AS_CPU_ZOO_REWEIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "as_attention.h"
#include "as_scalar.h"

/* Query rows per work item (at most). */
#define AS_CPU_RW_BQ 64

/* A mask broadcast to (B, H, Lq, Lk) by its strides (0 on broadcast dims). */

typedef struct as_cpu_rw_params as_cpu_rw_params;

/* How one mechanism turns scores into weights. */
typedef struct {
    /* Optional: narrows the keys [*j0, *j0 + *n) that query rows [i0, i0 + m)
     * of head h may see (the driver passes the causal range). */
    void (*range)(const as_cpu_rw_params *p, int64_t h, int64_t i0, int64_t m, int64_t *j0,
                  int64_t *n);
    /* Scores -> weights in place.  s (m, n) with row stride lds holds
     * q_i . k_j * scale, -inf where masked (causal, bool mask) and the float
     * mask added; row r is query i0 + r, column c key j0 + c.  A row with
     * nothing to attend to must come out as zeros. */
    void (*rows)(const as_cpu_rw_params *p, int64_t h, int64_t i0, int64_t m, int64_t j0, int64_t n,
                 float *s, int64_t lds, void *scratch);
    /* Optional: scratch bytes rows() needs per thread. */
    size_t (*scratch_bytes)(const as_cpu_rw_params *p);
    const void *ctx; /* the mechanism's own parameters */
    /* Query rows per work item, 1..AS_CPU_RW_BQ (0: AS_CPU_RW_BQ); a banded
     * mechanism takes fewer so that a block's key range stays close to
     * each row's band. */
    int64_t bq;
} as_cpu_rw_mech;

struct as_cpu_rw_params {
    as_attn_f32_params a; /* the inputs, every zoo kernel's block */
    as_cpu_rw_mech mech;
};

/* Scratch bytes as_cpu_rw_attention needs for nthreads threads. */
size_t as_cpu_rw_workspace_size(const as_cpu_rw_params *p, int nthreads);
/* Runs over at most nthreads OpenMP threads (OpenBLAS single-threaded inside). */
void as_cpu_rw_attention(const as_cpu_rw_params *p, void *workspace, int nthreads);

/* ---- row helpers shared by the mechanisms ---- */
/* Softmax of x[0..n) in place; -inf entries give 0; a row of -inf gives 0s. */
void as_cpu_rw_softmax_row(float *x, int64_t n);

/* ---- relative_attention (T5 buckets, ALiBi) ---- */
/* T5's _relative_position_bucket (Raffel et al. 2020) for rel = key - query. */
int64_t as_cpu_t5_bucket(int64_t rel, bool bidirectional, int64_t num_buckets, int64_t max_distance);
/* ALiBi's head slopes (Press et al. 2022): 2^(-8 i / H) for H a power of
 * two, else the paper's interleaving of the next power of two's slopes. */
void as_cpu_alibi_slopes(int64_t H, float *slopes);
/* ctx: the bias of head h at rel = j - (i + Lk - Lq) is
 * table[h * (Lq + Lk - 1) + rel + Lk - 1]. */
typedef struct {
    const float *table;
} as_cpu_rw_relative_ctx;
extern const as_cpu_rw_mech as_cpu_rw_relative_mech; /* set .ctx */

/* ---- adaptive_attention (Sukhbaatar et al. 2019) ---- */
/* m(x) = clamp((R + z_h - x) / R, 0, 1) on the distance x = i' - j (causal)
 * or |i' - j|, i' = i + Lk - Lq; keys with m = 0 are never visited. */
typedef struct {
    const float *span; /* (H): z_h in positions */
    float ramp;        /* R > 0 */
} as_cpu_rw_adaptive_ctx;
extern const as_cpu_rw_mech as_cpu_rw_adaptive_mech;

/* ---- entmax_attention (Peters et al. 2019; Correia et al. 2019) ---- */
/* alpha-entmax of x[0..n) in place, -inf entries give exact zeros and a
 * row of -inf gives zeros.  alpha == 1: softmax; 1.5: exact sort-based;
 * 2: sparsemax (exact sort-based); otherwise bisection.  scratch holds
 * 2 n doubles. */
void as_cpu_entmax_row(float *x, int64_t n, double alpha, void *scratch);
/* The same on a float64 row (as_entmax in float64), every step in double. */
void as_cpu_entmax_row_f64(double *x, int64_t n, double alpha, void *scratch);
typedef struct {
    const float *alpha; /* (H) */
} as_cpu_rw_entmax_ctx;
extern const as_cpu_rw_mech as_cpu_rw_entmax_mech;

/* ---- sigmoid_attention (Ramapuram et al. 2024) ---- */
typedef struct {
    float bias; /* b in sigma(q k^T * scale + b) */
} as_cpu_rw_sigmoid_ctx;
extern const as_cpu_rw_mech as_cpu_rw_sigmoid_mech;

/* ---- gated_attention (Qiu et al. 2025): out *= sigma(q W_g + b_g) ----
 * out (B, H, Lq, Dv) and q (B, H, Lq, D) contiguous; w (H, D, G), b (H, G)
 * with G = 1 (one gate per head and query) or Dv (one per channel). */
void as_cpu_rw_gate(float *out, const float *q, const float *w, const float *b, int64_t B,
                    int64_t H, int64_t Lq, int64_t D, int64_t Dv, int64_t G);

/* ---- cosine_attention (Liu et al. 2022) ----
 * dst[b, h, i, :] = src[b, h, i, :] / max(|src[b, h, i, :]|, 1e-12) * gain[h]
 * (gain NULL: 1), both contiguous (B, H, L, D). */
void as_cpu_rw_l2_normalize(float *dst, const float *src, int64_t B, int64_t H, int64_t L,
                            int64_t D, const float *gain);

/* ---- flex_attention: one online-softmax step over a score tile ----
 * s (B, H, Bq, Bk) scores (-inf masked; overwritten by the weights) and
 * acc (B, H, Bq, Dv), m, l (B, H, Bq) running max and sum, contiguous; v (B, Hkv, Bk, Dv) with
 * element strides vs (last stride 1), query head h reading v head h / (H / Hkv).
 * keep (B, H, Bq, Bk) contiguous or NULL: dropout's keep mask, the kept
 * weights scaled by keep_scale (the sum l never dropped). */
typedef struct {
    float *s;
    const float *v;
    int64_t vs[3];
    float *acc, *m, *l;
    int64_t B, H, Hkv, Bq, Bk, Dv;
    const bool *keep;
    float keep_scale;
} as_cpu_rw_flex_args;
void as_cpu_rw_flex_step(const as_cpu_rw_flex_args *a);
/* out (B, H, Bq, Dv) = acc / l, 0 where l = 0. */
void as_cpu_rw_flex_finish(float *out, const float *acc, const float *l, int64_t rows, int64_t Dv);

#endif
