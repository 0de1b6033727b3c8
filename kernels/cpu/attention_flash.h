/* Fused exact attention forward on the CPU: FlashAttention (Dao et al. 2022,
 * Algorithm 1).  Tiles of queries meet tiles of keys; an online softmax keeps
 * a running max m and sum l per query, so the Lq x Lk scores are never
 * materialised:
 *
 *   S = Q K_j^T * scale (+ bias, masked)      m' = max(m, rowmax S)
 *   P = exp(S - m')                           l' = l e^(m - m') + rowsum P
 *   O' = O e^(m - m') + P V_j                 out = O / l   (0 when l = 0)
 *
 * Everything runs transposed, vectorised over queries: a work item is one
 * (batch, kv-head, block of query positions) and its M columns are the
 * query positions of all G = H / Hkv heads that share the kv-head, so each
 * K/V tile is read once for all of them.  Per key tile (Bk keys):
 *
 *   S^T (Bk, M)  = K (Bk, D) Q^T (D, M)     K read in place when f32, last stride 1
 *   P^T (Bk, M)  = exp(S^T - m)             column max / sum are vertical: no shuffles
 *   O^T (Dv, M) += V^T (Dv, Bk) P^T (Bk, M) V read in place likewise
 *
 * Q^T is packed and scaled once per item; O^T is normalised and written to
 * (B, H, Lq, Dv) once per item.  A kernel trusts its caller (runtime/
 * attention/flash.c) to have checked shapes, dtypes and devices. */
#ifndef AS_CPU_ATTENTION_FLASH_H
#define AS_CPU_ATTENTION_FLASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "as_attention.h"
#include "as_scalar.h"

/* Scratch bytes as_cpu_flash_attention needs for nthreads threads. */
size_t as_cpu_flash_workspace_size(const as_attn_params *p, int nthreads);
/* Runs over at most nthreads OpenMP threads; never fails. */
void as_cpu_flash_attention(const as_attn_params *p, void *workspace, int nthreads);

/* ---- the backward (attention_flash_bwd.c): FlashAttention-2's Algorithm 2.
 * With P = e^(S - lse) recomputed per tile from the forward's statistics and
 * Di = rowsum(dO o O) (Pd: P with the forward's dropout replayed):
 *
 *   dV_j += Pd^T dO     dP = dO V_j^T     dS = P o (dP o keep / (1 - p) - Di)
 *   dK_j += scale dS^T Q                  dQ += scale dS K_j
 *
 * A unit is (batch, kv-head, lane): lane l takes key blocks l, l + NL, ...
 * in order, holding their dK/dV in registers-to-L2 tiles over all the query
 * tiles of the G heads; its dQ goes into the lane's own float32 partial.  NL
 * depends on the shapes only, and the partials are summed in lane order, so
 * the result has the same bits for any thread count.  Extra memory: Di
 * (B H Lq floats) and NL dQ partials, never Lq x Lk (but dbias itself). */
size_t as_cpu_flash_bwd_workspace_size(const as_attn_bwd_params *p, int nthreads);
/* p->f.lse from the forward run with the same block; never fails. */
void as_cpu_flash_backward(const as_attn_bwd_params *p, void *workspace, int nthreads);

/* The vector path: "avx512", "avx2" or "scalar".  By default the best the
 * CPU supports (or ATTNSWAP_FLASH_ISA from the environment, when supported).
 * force_isa(NULL) goes back to the default; -1 when the name is unknown or
 * the CPU lacks it. */
int as_cpu_flash_force_isa(const char *name);
const char *as_cpu_flash_isa_name(void);
/* The kernel's exp on the current path (for tests): y[i] = e^x[i] within 2
 * ulp, 0 below ln(FLT_MIN) = -87.3365 (so exp(-inf) = 0), x clamped to 88
 * above (attention only asks for x <= 0); NaN stays NaN. */
void as_cpu_flash_exp(const float *x, float *y, int64_t n);

/* ---- between the driver and the per-ISA files ----
 * Tile buffers are float, 64-byte aligned, with row stride mpad (M rounded
 * up to 16); padded columns hold zero queries and are never written out. */
/* S^T = K Q^T (+ bias, masked), and the column max. */
typedef struct {
    float *s;             /* out: S^T (n, mpad) */
    const float *k;       /* (n, d), row stride ldk */
    int64_t ldk;
    const float *qt;      /* Q^T (d, mpad), scaled */
    int64_t n, d, mpad;
    const float *bias;    /* NULL or (n, mpad), added (-inf: masked) */
    const float *rowbias; /* NULL or (n), added to every column of a row */
    const int32_t *jmax;  /* NULL or (mpad): key j0 + r visible to column m iff j0 + r <= jmax[m] */
    int64_t j0;
    /* NULL or (mpad / 16), non-decreasing: in column group v (16 columns)
     * rows r >= vis[v] are masked for every column and may be skipped
     * (S^T = -inf there, so P^T = 0) */
    const int64_t *vis;
    float *colmax;        /* out: (mpad), max over the tile's rows */
} as_cpu_flash_qk_args;

/* P^T = exp(S^T - m_new) in place; the running max m and sum l updated. */
typedef struct {
    float *s;                /* in S^T, out P^T (dropped and rescaled when dropout), (n, mpad) */
    int64_t n, mpad;
    const float *colmax;     /* (mpad) */
    float *m, *l, *alpha;    /* (mpad): running max and sum; out alpha = e^(m_old - m_new) */
    const uint32_t *row_key; /* dropout: (mpad); NULL: none */
    uint32_t threshold;
    float keep_scale;        /* 1 / (1 - p) */
    int64_t j0;
} as_cpu_flash_softmax_args;

/* O^T = O^T * alpha + V^T P^T. */
typedef struct {
    float *ot;          /* O^T (dv, mpad), accumulated */
    const float *v;     /* (n, dv), row stride ldv */
    int64_t ldv;
    const float *pt;    /* P^T (n, mpad) */
    int64_t n, dv, mpad;
    const float *alpha; /* NULL or (mpad): O^T columns scaled first */
    const int64_t *vis; /* NULL or as in qk: rows past vis[v] have P^T = 0 in group v */
} as_cpu_flash_pv_args;

/* C (m, n) = (acc ? C : 0) + A (m, k) B (k, n): n a multiple of 16, B and C
 * rows 64-byte aligned (ldb, ldc multiples of 16); A any row stride. */
typedef struct {
    float *c;
    int64_t ldc;
    const float *a;
    int64_t lda;
    const float *b;
    int64_t ldb;
    int64_t m, n, k;
    bool acc;
} as_cpu_flash_gemm_args;

/* The backward's elementwise passes over (n, mpad) tiles, vertical in the
 * columns as the forward's softmax:
 *   bwd_p:  s = e^(s - stat[m]) (P^T, stat = lse); pd, when not NULL, = s
 *           dropped and rescaled as the forward did
 *   bwd_ds: dp = s o (dp o keep * keep_scale - stat[m]) (dS^T, stat = Di) */
typedef struct {
    float *s, *pd, *dp;
    const float *stat;
    int64_t n, mpad, j0;
    const uint32_t *row_key; /* dropout: (mpad); NULL: none */
    uint32_t threshold;
    float keep_scale;
} as_cpu_flash_bwd_args;

typedef struct {
    const char *name;
    void (*qk)(const as_cpu_flash_qk_args *a);
    bool (*softmax)(const as_cpu_flash_softmax_args *a); /* true when some alpha != 1 */
    void (*pv)(const as_cpu_flash_pv_args *a);
    void (*exp)(const float *x, float *y, int64_t n);
    /* dst[c * ldd + r] = src[r * lds + c] * (colscale ? colscale[c] : scale)
     * for r < rows, c < cols: packs Q^T and writes O out of O^T. */
    void (*transpose)(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                      int64_t cols, float scale, const float *colscale);
    /* the backward's */
    void (*gemm)(const as_cpu_flash_gemm_args *a);
    void (*bwd_p)(const as_cpu_flash_bwd_args *a);
    void (*bwd_ds)(const as_cpu_flash_bwd_args *a);
} as_cpu_flash_isa;

/* ---- shared by the forward and backward drivers (attention_flash.c) ---- */
const as_cpu_flash_isa *as_cpu_flash_current_isa(void);
int64_t as_cpu_flash_round16(int64_t n);
/* One element of a (dtype) buffer as float; BOOL gives 0 (keep) or -inf. */
float as_cpu_flash_load(const void *base, as_dtype dt, int64_t i);
/* Rows [j0, j0 + n) of a (L, d) matrix with strides (rs, cs) into dst (n, d). */
void as_cpu_flash_pack_rows(float *dst, const void *base, as_dtype dt, int64_t rs, int64_t cs,
                            int64_t j0, int64_t n, int64_t d);
/* Whether an operand's (L, d) rows can be read in place as float32. */
bool as_cpu_flash_in_place(const as_attn_operand *o, int64_t d);
/* Q^T (D, mp) = scale * q rows [i0, i0 + np) of the G heads of kv-head hk
 * (column g * np + t), padded columns zero. */
void as_cpu_flash_pack_qt(const as_attn_params *p, const as_cpu_flash_isa *isa, float *qt,
                          int64_t b, int64_t hk, int64_t i0, int64_t np);
/* The mask's mode: 0 none, 1 one value per key (shared by the item's
 * columns), 2 a full tile. */
int as_cpu_flash_mask_mode(const as_attn_params *p);
/* The mask of keys [qa->j0, qa->j0 + qa->n) for M columns into qa (rowbias
 * in mode 1, from rowbase; bias in mode 2, from colbase[m], through rows
 * (M x BK floats, row stride bk)); false when it hides the tile from every
 * column. */
bool as_cpu_flash_mask_tile(const as_attn_params *p, const as_cpu_flash_isa *isa, int mode,
                            as_cpu_flash_qk_args *qa, int64_t rowbase, const int64_t *colbase,
                            float *rowbias, float *rows, int64_t bk, float *bias, int64_t M);

extern const as_cpu_flash_isa as_cpu_flash_isa_scalar;
#if defined(__x86_64__) && defined(__GNUC__)
#define AS_CPU_FLASH_X86 1
extern const as_cpu_flash_isa as_cpu_flash_isa_avx2;
extern const as_cpu_flash_isa as_cpu_flash_isa_avx512;
#endif

#endif
