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
} as_cpu_flash_isa;

extern const as_cpu_flash_isa as_cpu_flash_isa_scalar;
#if defined(__x86_64__) && defined(__GNUC__)
#define AS_CPU_FLASH_X86 1
extern const as_cpu_flash_isa as_cpu_flash_isa_avx2;
extern const as_cpu_flash_isa as_cpu_flash_isa_avx512;
#endif

#endif
