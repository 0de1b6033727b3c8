/* FlashAttention tile kernels for AVX2 + FMA (function target attributes;
 * chosen at run time).  Same shapes as attention_flash_avx512.c with 8-wide
 * vectors and 16 registers: 6 rows x 2 vectors = 12 accumulators. */
#include "attention_flash.h"

#ifdef AS_CPU_FLASH_X86

#include <immintrin.h>
#include <math.h>

#define AT __attribute__((target("avx2,fma")))
#define AI AT static inline __attribute__((always_inline))

#define NR 6
#define NV 2 /* mpad is a multiple of 16 */
#ifndef AS_FLASH_PF_ROWS /* software prefetch distance, rows of V (K in the backward) */
#define AS_FLASH_PF_ROWS 16
#endif
#define PF_ROWS AS_FLASH_PF_ROWS

/* e^x as in exp_scalar1 (Cephes); 2^n built in the exponent bits. */
AI __m256 exp8(__m256 x)
{
    __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_NLT_UQ); /* NaN: live */
    __m256 xc = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.33654f), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256 y = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), live);
}

AT static void exp_avx2(const float *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) {
        float t[8] = {0};
        t[0] = x[i];
        _mm256_storeu_ps(t, exp8(_mm256_loadu_ps(t)));
        y[i] = t[0];
    }
}

/* ---- S^T = K Q^T ---- */

AI void qk_block(const as_cpu_flash_qk_args *a, const int R, int64_t n0, int64_t m0, __m256 *cmax)
{
    const int64_t mp = a->mpad, ldk = a->ldk, D = a->d;
    __m256 acc[NR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float *kr = a->k + n0 * ldk;
    const float *q = a->qt + m0;
    for (int64_t d = 0; d < D; d++, q += mp) {
        if (!(d & 15)) /* the next rows' line at d: K comes from L3 on the first pass */
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) _mm_prefetch((const char *)(kr + (R + r) * ldk + d), _MM_HINT_T0);
        __m256 b0 = _mm256_load_ps(q), b1 = _mm256_load_ps(q + 8);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m256 x = _mm256_broadcast_ss(kr + r * ldk + d);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const int64_t n = n0 + r;
        float *s = a->s + n * mp + m0;
        __m256i jv = _mm256_set1_epi32((int32_t)(a->j0 + n));
        for (int v = 0; v < NV; v++) {
            __m256 x = acc[r][v];
            if (a->bias) x = _mm256_add_ps(x, _mm256_load_ps(a->bias + n * mp + m0 + 8 * v));
            if (a->rowbias) x = _mm256_add_ps(x, _mm256_set1_ps(a->rowbias[n]));
            if (a->jmax) {
                __m256i lim = _mm256_load_si256((const __m256i *)(a->jmax + m0 + 8 * v));
                __m256 hide = _mm256_castsi256_ps(_mm256_cmpgt_epi32(jv, lim));
                x = _mm256_blendv_ps(x, _mm256_set1_ps(-INFINITY), hide);
            }
            _mm256_store_ps(s + 8 * v, x);
            cmax[v] = _mm256_max_ps(cmax[v], x);
        }
    }
}

AT static void qk_avx2(const as_cpu_flash_qk_args *a)
{
    for (int64_t m0 = 0; m0 < a->mpad; m0 += 8 * NV) {
        __m256 cmax[NV] = {_mm256_set1_ps(-INFINITY), _mm256_set1_ps(-INFINITY)};
        const int64_t vis = a->vis ? a->vis[m0 / 16] : a->n;
        for (int64_t n0 = 0; n0 < a->n; n0 += NR) {
            if (n0 >= vis) { /* causal diagonal: no column of the group sees these rows */
                for (int64_t r = n0; r < a->n && r < n0 + NR; r++) {
                    _mm256_store_ps(a->s + r * a->mpad + m0, _mm256_set1_ps(-INFINITY));
                    _mm256_store_ps(a->s + r * a->mpad + m0 + 8, _mm256_set1_ps(-INFINITY));
                }
                continue;
            }
            switch (a->n - n0 < NR ? (int)(a->n - n0) : NR) {
            case 1: qk_block(a, 1, n0, m0, cmax); break;
            case 2: qk_block(a, 2, n0, m0, cmax); break;
            case 3: qk_block(a, 3, n0, m0, cmax); break;
            case 4: qk_block(a, 4, n0, m0, cmax); break;
            case 5: qk_block(a, 5, n0, m0, cmax); break;
            default: qk_block(a, 6, n0, m0, cmax); break;
            }
        }
        _mm256_store_ps(a->colmax + m0, cmax[0]);
        _mm256_store_ps(a->colmax + m0 + 8, cmax[1]);
    }
}

/* ---- online softmax ---- */

AI __m256 keep8(__m256i rk, int64_t j, uint32_t threshold)
{
    __m256i x = _mm256_add_epi32(rk, _mm256_set1_epi32((int32_t)((uint32_t)j * 0x9e3779b9u)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int32_t)0x846ca68bu));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    /* x >> 8 < 2^24, so a signed compare does: keep iff x >> 8 > threshold - 1 */
    x = _mm256_cmpgt_epi32(_mm256_srli_epi32(x, 8), _mm256_set1_epi32((int32_t)threshold - 1));
    return _mm256_castsi256_ps(x);
}

AT static bool softmax_avx2(const as_cpu_flash_softmax_args *a)
{
    const int64_t mp = a->mpad;
    int changed = 0;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t m0 = 0; m0 < mp; m0 += 8) {
        __m256 mo = _mm256_load_ps(a->m + m0);
        __m256 mn = _mm256_max_ps(mo, _mm256_load_ps(a->colmax + m0));
        changed |= _mm256_movemask_ps(_mm256_cmp_ps(mn, mo, _CMP_NEQ_UQ));
        __m256 mu = _mm256_andnot_ps(_mm256_cmp_ps(mn, ninf, _CMP_EQ_OQ), mn);
        __m256 al = exp8(_mm256_sub_ps(mo, mu));
        _mm256_store_ps(a->alpha + m0, al);
        _mm256_store_ps(a->m + m0, mn);
        __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
        float *s = a->s + m0;
        if (!a->row_key) {
            int64_t n = 0;
            for (; n + 2 <= a->n; n += 2, s += 2 * mp) {
                __m256 e0 = exp8(_mm256_sub_ps(_mm256_load_ps(s), mu));
                __m256 e1 = exp8(_mm256_sub_ps(_mm256_load_ps(s + mp), mu));
                sum0 = _mm256_add_ps(sum0, e0), sum1 = _mm256_add_ps(sum1, e1);
                _mm256_store_ps(s, e0), _mm256_store_ps(s + mp, e1);
            }
            if (n < a->n) {
                __m256 e0 = exp8(_mm256_sub_ps(_mm256_load_ps(s), mu));
                sum0 = _mm256_add_ps(sum0, e0);
                _mm256_store_ps(s, e0);
            }
        } else {
            __m256i rk = _mm256_load_si256((const __m256i *)(a->row_key + m0));
            __m256 ks = _mm256_set1_ps(a->keep_scale);
            for (int64_t n = 0; n < a->n; n++, s += mp) {
                __m256 e = exp8(_mm256_sub_ps(_mm256_load_ps(s), mu));
                sum0 = _mm256_add_ps(sum0, e);
                _mm256_store_ps(
                    s, _mm256_and_ps(keep8(rk, a->j0 + n, a->threshold), _mm256_mul_ps(e, ks)));
            }
        }
        __m256 l = _mm256_load_ps(a->l + m0);
        _mm256_store_ps(a->l + m0, _mm256_fmadd_ps(l, al, _mm256_add_ps(sum0, sum1)));
    }
    return changed != 0;
}

/* ---- O^T += V^T P^T ---- */

AI void pv_block(const as_cpu_flash_pv_args *a, const int R, int64_t c0, int64_t m0)
{
    const int64_t mp = a->mpad, ldv = a->ldv, N = a->vis ? a->vis[m0 / 16] : a->n;
    __m256 acc[NR][NV];
    float *o = a->ot + c0 * mp + m0;
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) {
            acc[r][v] = _mm256_load_ps(o + r * mp + 8 * v);
            if (a->alpha)
                acc[r][v] = _mm256_mul_ps(acc[r][v], _mm256_load_ps(a->alpha + m0 + 8 * v));
        }
    const float *vr = a->v + c0;
    const float *p = a->pt + m0;
    for (int64_t n = 0; n < N; n++, vr += ldv, p += mp) {
        /* V's rows PF_ROWS ahead (their line holding this block's last column) */
        _mm_prefetch((const char *)(vr + PF_ROWS * ldv + R - 1), _MM_HINT_T0);
        __m256 b0 = _mm256_load_ps(p), b1 = _mm256_load_ps(p + 8);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m256 x = _mm256_broadcast_ss(vr + r);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) _mm256_store_ps(o + r * mp + 8 * v, acc[r][v]);
}

AT static void pv_avx2(const as_cpu_flash_pv_args *a)
{
    for (int64_t m0 = 0; m0 < a->mpad; m0 += 8 * NV) {
        for (int64_t c0 = 0; c0 < a->dv; c0 += NR) {
            switch (a->dv - c0 < NR ? (int)(a->dv - c0) : NR) {
            case 1: pv_block(a, 1, c0, m0); break;
            case 2: pv_block(a, 2, c0, m0); break;
            case 3: pv_block(a, 3, c0, m0); break;
            case 4: pv_block(a, 4, c0, m0); break;
            case 5: pv_block(a, 5, c0, m0); break;
            default: pv_block(a, 6, c0, m0); break;
            }
        }
    }
}

/* ---- 8 x 8 transposes for packing Q^T and writing O ---- */

AI void transpose8(__m256 *t)
{
    __m256 u[8], w[8];
    for (int i = 0; i < 8; i += 2) {
        u[i] = _mm256_unpacklo_ps(t[i], t[i + 1]);
        u[i + 1] = _mm256_unpackhi_ps(t[i], t[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        w[i] = _mm256_shuffle_ps(u[i], u[i + 2], 0x44);
        w[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], 0xee);
        w[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0x44);
        w[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm256_permute2f128_ps(w[i], w[i + 4], 0x20);
        t[i + 4] = _mm256_permute2f128_ps(w[i], w[i + 4], 0x31);
    }
}

AT static void transpose_avx2(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                              int64_t cols, float scale, const float *colscale)
{
    int64_t r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        int64_t c0 = 0;
        for (; c0 + 8 <= cols; c0 += 8) {
            __m256 t[8];
            for (int i = 0; i < 8; i++) t[i] = _mm256_loadu_ps(src + (r0 + i) * lds + c0);
            transpose8(t);
            for (int j = 0; j < 8; j++)
                _mm256_storeu_ps(
                    dst + (c0 + j) * ldd + r0,
                    _mm256_mul_ps(t[j], _mm256_set1_ps(colscale ? colscale[c0 + j] : scale)));
        }
        for (; c0 < cols; c0++)
            for (int64_t r = r0; r < r0 + 8; r++)
                dst[c0 * ldd + r] = src[r * lds + c0] * (colscale ? colscale[c0] : scale);
    }
    for (; r0 < rows; r0++)
        for (int64_t c = 0; c < cols; c++)
            dst[c * ldd + r0] = src[r0 * lds + c] * (colscale ? colscale[c] : scale);
}

/* ---- the backward's: C (+)= A B over 16 columns at a time, and the two
 * elementwise passes (attention_flash.h) ---- */

AI void gemm_block(const as_cpu_flash_gemm_args *a, const int R, int64_t i0, int64_t j0)
{
    const int64_t lda = a->lda, ldb = a->ldb, K = a->k;
    float *c = a->c + i0 * a->ldc + j0;
    __m256 acc[NR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = a->acc ? _mm256_load_ps(c + r * a->ldc + 8 * v) : _mm256_setzero_ps();
    const float *ar = a->a + i0 * lda, *b = a->b + j0;
    for (int64_t l = 0; l < K; l++, b += ldb) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m256 x = _mm256_broadcast_ss(ar + r * lda + l);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) _mm256_store_ps(c + r * a->ldc + 8 * v, acc[r][v]);
}

AT static void gemm_avx2(const as_cpu_flash_gemm_args *a)
{
    for (int64_t j0 = 0; j0 < a->n; j0 += 8 * NV) {
        for (int64_t i0 = 0; i0 < a->m; i0 += NR) {
            switch (a->m - i0 < NR ? (int)(a->m - i0) : NR) {
            case 1: gemm_block(a, 1, i0, j0); break;
            case 2: gemm_block(a, 2, i0, j0); break;
            case 3: gemm_block(a, 3, i0, j0); break;
            case 4: gemm_block(a, 4, i0, j0); break;
            case 5: gemm_block(a, 5, i0, j0); break;
            default: gemm_block(a, 6, i0, j0); break;
            }
        }
    }
}

AT static void bwd_p_avx2(const as_cpu_flash_bwd_args *a)
{
    const int64_t mp = a->mpad;
    const __m256 ks = _mm256_set1_ps(a->keep_scale);
    for (int64_t m0 = 0; m0 < mp; m0 += 8) {
        const __m256 st = _mm256_load_ps(a->stat + m0);
        __m256i rk = a->pd ? _mm256_load_si256((const __m256i *)(a->row_key + m0))
                           : _mm256_setzero_si256();
        for (int64_t n = 0; n < a->n; n++) {
            float *s = a->s + n * mp + m0;
            __m256 e = exp8(_mm256_sub_ps(_mm256_load_ps(s), st));
            _mm256_store_ps(s, e);
            if (a->pd)
                _mm256_store_ps(a->pd + n * mp + m0, _mm256_and_ps(keep8(rk, a->j0 + n, a->threshold),
                                                                   _mm256_mul_ps(e, ks)));
        }
    }
}

AT static void bwd_ds_avx2(const as_cpu_flash_bwd_args *a)
{
    const int64_t mp = a->mpad;
    const __m256 ks = _mm256_set1_ps(a->keep_scale);
    for (int64_t m0 = 0; m0 < mp; m0 += 8) {
        const __m256 di = _mm256_load_ps(a->stat + m0);
        __m256i rk = a->row_key ? _mm256_load_si256((const __m256i *)(a->row_key + m0))
                                : _mm256_setzero_si256();
        for (int64_t n = 0; n < a->n; n++) {
            float *dp = a->dp + n * mp + m0;
            __m256 x = _mm256_load_ps(dp);
            if (a->row_key)
                x = _mm256_and_ps(keep8(rk, a->j0 + n, a->threshold), _mm256_mul_ps(x, ks));
            _mm256_store_ps(dp, _mm256_mul_ps(_mm256_load_ps(a->s + n * mp + m0), _mm256_sub_ps(x, di)));
        }
    }
}

const as_cpu_flash_isa as_cpu_flash_isa_avx2 = {
    "avx2",         qk_avx2,   softmax_avx2, pv_avx2,    exp_avx2,
    transpose_avx2, gemm_avx2, bwd_p_avx2,   bwd_ds_avx2};

#endif
