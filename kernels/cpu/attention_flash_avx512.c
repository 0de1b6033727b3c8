/* FlashAttention tile kernels for AVX-512 (F, BW, VL, DQ + FMA), compiled
 * with function target attributes so the library still runs on any x86-64;
 * attention_flash.c picks this path at run time.
 *
 * Both products are one register-blocked shape, C (R, 16 NV) += A^T B,
 * vectorised over query columns: S^T rows are keys (A = K, broadcast from
 * its rows), O^T rows are value dims (A = V, broadcast along a row).  24 zmm
 * accumulators (6 rows x 4 vectors) hide the FMA latency; per step 4 loads
 * of B and 6 broadcasts feed 24 FMAs. */
#include "attention_flash.h"

#ifdef AS_CPU_FLASH_X86

#include <immintrin.h>
#include <math.h>

#define AT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define AI AT static inline __attribute__((always_inline))

#define NR 6 /* rows of a register block */
#define NVMAX 4

/* e^x as in exp_scalar1; vscalefps applies 2^n and the live mask zeroes
 * x < ln(FLT_MIN), so no lower clamp is needed (-inf gives a NaN r that the
 * mask drops).  The unordered predicate keeps a NaN x live: NaN out. */
AI __m512 exp16(__m512 x)
{
    __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_NLT_UQ);
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x); /* NaN stays (second operand) */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(live, p, n);
}

AT static void exp_avx512(const float *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, exp16(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

/* ---- S^T = K Q^T, with the mask epilogue and the column max ---- */

AI void qk_block(const as_cpu_flash_qk_args *a, const int R, const int NV, int64_t n0, int64_t m0,
                 __m512 *cmax)
{
    const int64_t mp = a->mpad, ldk = a->ldk, D = a->d;
    __m512 acc[NR][NVMAX];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    const float *kr = a->k + n0 * ldk;
    const float *q = a->qt + m0;
    for (int64_t d = 0; d < D; d++, q += mp) {
        __m512 b[NVMAX];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = _mm512_load_ps(q + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 x = _mm512_set1_ps(kr[r * ldk + d]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(x, b[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const int64_t n = n0 + r;
        float *s = a->s + n * mp + m0;
        __m512i jv = _mm512_set1_epi32((int32_t)(a->j0 + n));
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __m512 x = acc[r][v];
            if (a->bias) x = _mm512_add_ps(x, _mm512_load_ps(a->bias + n * mp + m0 + 16 * v));
            if (a->rowbias) x = _mm512_add_ps(x, _mm512_set1_ps(a->rowbias[n]));
            if (a->jmax) {
                __m512i lim = _mm512_load_si512((const void *)(a->jmax + m0 + 16 * v));
                x = _mm512_mask_mov_ps(x, _mm512_cmpgt_epi32_mask(jv, lim),
                                       _mm512_set1_ps(-INFINITY));
            }
            _mm512_store_ps(s + 16 * v, x);
            cmax[v] = _mm512_max_ps(cmax[v], x);
        }
    }
}

#define QK_NV(R)                                                                                   \
    switch (w) {                                                                                   \
    case 1: qk_block(a, R, 1, n0, m1, cmax + vs); break;                                           \
    case 2: qk_block(a, R, 2, n0, m1, cmax + vs); break;                                           \
    case 3: qk_block(a, R, 3, n0, m1, cmax + vs); break;                                           \
    default: qk_block(a, R, 4, n0, m1, cmax + vs); break;                                          \
    }

AT static void qk_avx512(const as_cpu_flash_qk_args *a)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int64_t m0 = 0; m0 < a->mpad; m0 += 16 * NVMAX) {
        int nv = (int)((a->mpad - m0) / 16);
        if (nv > NVMAX) nv = NVMAX;
        __m512 cmax[NVMAX];
        for (int v = 0; v < NVMAX; v++) cmax[v] = ninf;
        for (int64_t n0 = 0; n0 < a->n; n0 += NR) {
            int rows = a->n - n0 < NR ? (int)(a->n - n0) : NR;
            /* causal diagonal: leading column groups that see none of these rows */
            int vs = 0;
            while (a->vis && vs < nv && a->vis[m0 / 16 + vs] <= n0) vs++;
            for (int r = 0; r < rows; r++)
                for (int v = 0; v < vs; v++)
                    _mm512_store_ps(a->s + (n0 + r) * a->mpad + m0 + 16 * v, ninf);
            const int w = nv - vs;
            const int64_t m1 = m0 + 16 * vs;
            if (w == 0) continue;
            switch (rows) {
            case 1: QK_NV(1); break;
            case 2: QK_NV(2); break;
            case 3: QK_NV(3); break;
            case 4: QK_NV(4); break;
            case 5: QK_NV(5); break;
            default: QK_NV(6); break;
            }
        }
        for (int v = 0; v < nv; v++) _mm512_store_ps(a->colmax + m0 + 16 * v, cmax[v]);
    }
}

/* ---- online softmax over the tile, vertical in the columns ---- */

AI __mmask16 keep16(__m512i rk, int64_t j, uint32_t threshold)
{
    __m512i x = _mm512_add_epi32(rk, _mm512_set1_epi32((int32_t)((uint32_t)j * 0x9e3779b9u)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int32_t)0x846ca68bu));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    return _mm512_cmpge_epu32_mask(_mm512_srli_epi32(x, 8), _mm512_set1_epi32((int32_t)threshold));
}

AT static bool softmax_avx512(const as_cpu_flash_softmax_args *a)
{
    const int64_t mp = a->mpad;
    __mmask16 changed = 0;
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int64_t m0 = 0; m0 < mp; m0 += 16) {
        __m512 mo = _mm512_load_ps(a->m + m0);
        __m512 mn = _mm512_max_ps(mo, _mm512_load_ps(a->colmax + m0));
        changed |= _mm512_cmp_ps_mask(mn, mo, _CMP_NEQ_UQ);
        __m512 mu =
            _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
        __m512 al = exp16(_mm512_sub_ps(mo, mu));
        _mm512_store_ps(a->alpha + m0, al);
        _mm512_store_ps(a->m + m0, mn);
        __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
        float *s = a->s + m0;
        if (!a->row_key) {
            int64_t n = 0;
            for (; n + 2 <= a->n; n += 2, s += 2 * mp) {
                __m512 e0 = exp16(_mm512_sub_ps(_mm512_load_ps(s), mu));
                __m512 e1 = exp16(_mm512_sub_ps(_mm512_load_ps(s + mp), mu));
                sum0 = _mm512_add_ps(sum0, e0), sum1 = _mm512_add_ps(sum1, e1);
                _mm512_store_ps(s, e0), _mm512_store_ps(s + mp, e1);
            }
            if (n < a->n) {
                __m512 e0 = exp16(_mm512_sub_ps(_mm512_load_ps(s), mu));
                sum0 = _mm512_add_ps(sum0, e0);
                _mm512_store_ps(s, e0);
            }
        } else {
            __m512i rk = _mm512_load_si512((const void *)(a->row_key + m0));
            __m512 ks = _mm512_set1_ps(a->keep_scale);
            for (int64_t n = 0; n < a->n; n++, s += mp) {
                __m512 e = exp16(_mm512_sub_ps(_mm512_load_ps(s), mu));
                sum0 = _mm512_add_ps(sum0, e);
                _mm512_store_ps(s, _mm512_maskz_mul_ps(keep16(rk, a->j0 + n, a->threshold), e, ks));
            }
        }
        __m512 l = _mm512_load_ps(a->l + m0);
        _mm512_store_ps(a->l + m0, _mm512_fmadd_ps(l, al, _mm512_add_ps(sum0, sum1)));
    }
    return changed != 0;
}

/* ---- O^T (Dv, M) += V^T P^T ---- */

/* Rows [0, e[0]) update all NV vectors, then [e[0], e[1]) vectors 1.., and
 * so on: past e[v] group v's probabilities are 0 (causal diagonal). */
AI void pv_block(const as_cpu_flash_pv_args *a, const int R, const int NV, int64_t c0, int64_t m0,
                 const int64_t *e)
{
    const int64_t mp = a->mpad, ldv = a->ldv, N = a->n;
    __m512 acc[NR][NVMAX];
    float *o = a->ot + c0 * mp + m0;
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            acc[r][v] = _mm512_load_ps(o + r * mp + 16 * v);
            if (a->alpha)
                acc[r][v] = _mm512_mul_ps(acc[r][v], _mm512_load_ps(a->alpha + m0 + 16 * v));
        }
    const float *vr = a->v + c0;
    const float *p = a->pt + m0;
    int64_t n = 0;
#pragma GCC unroll 4
    for (int s = 0; s < NV; s++) {
        const int64_t end = e ? e[s] : N;
        for (; n < end; n++, vr += ldv, p += mp) {
            __m512 b[NVMAX];
#pragma GCC unroll 4
            for (int v = s; v < NV; v++) b[v] = _mm512_load_ps(p + 16 * v);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                __m512 x = _mm512_set1_ps(vr[r]);
#pragma GCC unroll 4
                for (int v = s; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(x, b[v], acc[r][v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_store_ps(o + r * mp + 16 * v, acc[r][v]);
}

#define PV_NV(R)                                                                                   \
    switch (nv) {                                                                                  \
    case 1: pv_block(a, R, 1, c0, m0, e); break;                                                   \
    case 2: pv_block(a, R, 2, c0, m0, e); break;                                                   \
    case 3: pv_block(a, R, 3, c0, m0, e); break;                                                   \
    default: pv_block(a, R, 4, c0, m0, e); break;                                                  \
    }

AT static void pv_avx512(const as_cpu_flash_pv_args *a)
{
    for (int64_t m0 = 0; m0 < a->mpad; m0 += 16 * NVMAX) {
        int nv = (int)((a->mpad - m0) / 16);
        if (nv > NVMAX) nv = NVMAX;
        const int64_t *e = a->vis ? a->vis + m0 / 16 : NULL;
        for (int64_t c0 = 0; c0 < a->dv; c0 += NR) {
            switch (a->dv - c0 < NR ? (int)(a->dv - c0) : NR) {
            case 1: PV_NV(1); break;
            case 2: PV_NV(2); break;
            case 3: PV_NV(3); break;
            case 4: PV_NV(4); break;
            case 5: PV_NV(5); break;
            default: PV_NV(6); break;
            }
        }
    }
}

/* ---- 16 x 16 transposes for packing Q^T and writing O ---- */

AI void transpose16(__m512 *t)
{
    __m512 u[16], w[16];
    for (int i = 0; i < 16; i += 2) {
        u[i] = _mm512_unpacklo_ps(t[i], t[i + 1]); /* pairs of rows interleaved */
        u[i + 1] = _mm512_unpackhi_ps(t[i], t[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* 4 x 4 blocks transposed within each 128-bit lane */
        w[i] = _mm512_shuffle_ps(u[i], u[i + 2], 0x44);
        w[i + 1] = _mm512_shuffle_ps(u[i], u[i + 2], 0xee);
        w[i + 2] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0x44);
        w[i + 3] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) { /* then the 4 x 4 grid of lanes */
        u[i] = _mm512_shuffle_f32x4(w[i], w[i + 4], 0x88);
        u[i + 4] = _mm512_shuffle_f32x4(w[i], w[i + 4], 0xdd);
        u[i + 8] = _mm512_shuffle_f32x4(w[i + 8], w[i + 12], 0x88);
        u[i + 12] = _mm512_shuffle_f32x4(w[i + 8], w[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        t[i] = _mm512_shuffle_f32x4(u[i], u[i + 8], 0x88);
        t[i + 8] = _mm512_shuffle_f32x4(u[i], u[i + 8], 0xdd);
    }
}

AT static void transpose_avx512(float *dst, int64_t ldd, const float *src, int64_t lds,
                                int64_t rows, int64_t cols, float scale, const float *colscale)
{
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        int nr = rows - r0 < 16 ? (int)(rows - r0) : 16;
        __mmask16 rmask = (__mmask16)((1u << nr) - 1);
        for (int64_t c0 = 0; c0 < cols; c0 += 16) {
            int nc = cols - c0 < 16 ? (int)(cols - c0) : 16;
            __mmask16 cmask = (__mmask16)((1u << nc) - 1);
            __m512 t[16];
            for (int i = 0; i < 16; i++)
                t[i] = i < nr ? _mm512_maskz_loadu_ps(cmask, src + (r0 + i) * lds + c0)
                              : _mm512_setzero_ps();
            transpose16(t);
            for (int j = 0; j < nc; j++) {
                __m512 s = _mm512_set1_ps(colscale ? colscale[c0 + j] : scale);
                _mm512_mask_storeu_ps(dst + (c0 + j) * ldd + r0, rmask, _mm512_mul_ps(t[j], s));
            }
        }
    }
}

/* ---- the backward's: C (+)= A B vectorised over C's columns, and the two
 * elementwise passes (attention_flash.h) ---- */

AI void gemm_block(const as_cpu_flash_gemm_args *a, const int R, const int NV, int64_t i0,
                   int64_t j0)
{
    const int64_t lda = a->lda, ldb = a->ldb, K = a->k;
    float *c = a->c + i0 * a->ldc + j0;
    __m512 acc[NR][NVMAX];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[r][v] = a->acc ? _mm512_load_ps(c + r * a->ldc + 16 * v) : _mm512_setzero_ps();
    const float *ar = a->a + i0 * lda, *b = a->b + j0;
    for (int64_t l = 0; l < K; l++, b += ldb) {
        __m512 x[NVMAX];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) x[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 y = _mm512_set1_ps(ar[r * lda + l]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(y, x[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_store_ps(c + r * a->ldc + 16 * v, acc[r][v]);
}

#define GEMM_NV(R)                                                                                 \
    switch (nv) {                                                                                  \
    case 1: gemm_block(a, R, 1, i0, j0); break;                                                    \
    case 2: gemm_block(a, R, 2, i0, j0); break;                                                    \
    case 3: gemm_block(a, R, 3, i0, j0); break;                                                    \
    default: gemm_block(a, R, 4, i0, j0); break;                                                   \
    }

AT static void gemm_avx512(const as_cpu_flash_gemm_args *a)
{
    for (int64_t j0 = 0; j0 < a->n; j0 += 16 * NVMAX) {
        int nv = (int)((a->n - j0) / 16);
        if (nv > NVMAX) nv = NVMAX;
        for (int64_t i0 = 0; i0 < a->m; i0 += NR) {
            switch (a->m - i0 < NR ? (int)(a->m - i0) : NR) {
            case 1: GEMM_NV(1); break;
            case 2: GEMM_NV(2); break;
            case 3: GEMM_NV(3); break;
            case 4: GEMM_NV(4); break;
            case 5: GEMM_NV(5); break;
            default: GEMM_NV(6); break;
            }
        }
    }
}

AT static void bwd_p_avx512(const as_cpu_flash_bwd_args *a)
{
    const int64_t mp = a->mpad;
    const __m512 ks = _mm512_set1_ps(a->keep_scale);
    for (int64_t m0 = 0; m0 < mp; m0 += 16) {
        const __m512 st = _mm512_load_ps(a->stat + m0);
        __m512i rk = a->pd ? _mm512_load_si512((const void *)(a->row_key + m0)) : _mm512_setzero_si512();
        for (int64_t n = 0; n < a->n; n++) {
            float *s = a->s + n * mp + m0;
            __m512 e = exp16(_mm512_sub_ps(_mm512_load_ps(s), st));
            _mm512_store_ps(s, e);
            if (a->pd)
                _mm512_store_ps(a->pd + n * mp + m0,
                                _mm512_maskz_mul_ps(keep16(rk, a->j0 + n, a->threshold), e, ks));
        }
    }
}

AT static void bwd_ds_avx512(const as_cpu_flash_bwd_args *a)
{
    const int64_t mp = a->mpad;
    const __m512 ks = _mm512_set1_ps(a->keep_scale);
    for (int64_t m0 = 0; m0 < mp; m0 += 16) {
        const __m512 di = _mm512_load_ps(a->stat + m0);
        __m512i rk =
            a->row_key ? _mm512_load_si512((const void *)(a->row_key + m0)) : _mm512_setzero_si512();
        for (int64_t n = 0; n < a->n; n++) {
            float *dp = a->dp + n * mp + m0;
            __m512 x = _mm512_load_ps(dp);
            if (a->row_key) x = _mm512_maskz_mul_ps(keep16(rk, a->j0 + n, a->threshold), x, ks);
            _mm512_store_ps(dp, _mm512_mul_ps(_mm512_load_ps(a->s + n * mp + m0), _mm512_sub_ps(x, di)));
        }
    }
}

const as_cpu_flash_isa as_cpu_flash_isa_avx512 = {
    "avx512",         qk_avx512,   softmax_avx512, pv_avx512,    exp_avx512,
    transpose_avx512, gemm_avx512, bwd_p_avx512,   bwd_ds_avx512};

#endif
