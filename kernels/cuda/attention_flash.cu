/* FlashAttention-2 forward on CUDA (Dao 2023), two paths:
 *
 *  flash/mma       q, k, v all F16 or all BF16, D = Dv in {64, 128}, unit
 *                  last stride, 16-byte aligned rows.  A CTA of 4 warps owns
 *                  BM = 64 or 128 query rows of one (b, h); a warp owns 16 or
 *                  32 of them.  Key tiles of BN = 64 (D = 128) or 128 (D = 64,
 *                  BM = 128) stream through a 2-stage cp.async pipeline (two
 *                  barriers a tile) into XOR-swizzled shared memory; ldmatrix
 *                  feeds mma.sync m16n8k16 (fp32 accumulate) for S = Q K^T and
 *                  O += P V; the online softmax lives in registers (one row is
 *                  spread over a quad of 4 lanes), P never leaves registers.
 *  flash/cuda-f32  everything else: one warp per query row, fp32 throughout.
 *
 * Semantics follow kernels/cpu/attention_flash.c: S = scale q.k (+ bias), a
 * bool mask keeps where true, causal keeps j <= i + Lk - Lq, dropout drops
 * normalised probabilities with the CPU's counter hash and scales the kept
 * ones by 1 / (1 - p), a row that sees no key gives zeros.  See
 * docs/cuda_flash.md. */
#include <type_traits>

#include "attention_flash_common.cuh"

namespace {

using namespace as_flash;

/* ---- the tensor-core path ----
 *
 * Shared memory: Q (BM, D), K[2] (BN, D), V[2] (BN, D), row-major, each row
 * D / 8 chunks of 16 bytes; chunk c of row r lives at chunk c ^ (r & 7), so
 * the 8 row addresses of one ldmatrix phase (8 rows, same logical chunk) hit
 * 8 different 16-byte bank groups.
 *
 * Fragments of mma.m16n8k16 (g = lane / 4, t = lane % 4):
 *   A (16x16): a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
 *   B (16x8):  b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
 *   C (16x8):  c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..)
 * ldmatrix.x4: lanes 8m..8m+7 address the rows of matrix m; register m of
 * lane l then holds row l/4, columns 2(l%4), +1 of matrix m (.trans: the
 * transpose: column l/4, rows 2(l%4), +1). */

#ifndef AS_FLASH_CUDA_BN_D128 /* key tile at D = 128, BM = 128 (overridable for tuning runs) */
#define AS_FLASH_CUDA_BN_D128 64
#endif
#ifndef AS_FLASH_CUDA_BN_D64 /* likewise at D = 64 */
#define AS_FLASH_CUDA_BN_D64 128
#endif
#ifndef AS_FLASH_CUDA_QREG_D128 /* Q fragments held in registers at D = 128, BM = 128 */
#define AS_FLASH_CUDA_QREG_D128 0
#endif
#ifndef AS_FLASH_CUDA_QREG_D64 /* likewise at D = 64 */
#define AS_FLASH_CUDA_QREG_D64 0
#endif

constexpr int NWARPS = 4;
constexpr int NTHREADS = NWARPS * 32;

template <int D, int WM, int BN>
struct Cfg {
    static constexpr int BM = 16 * WM * NWARPS;
    static constexpr int CH = D / 8; /* 16-byte chunks per row */
    static constexpr size_t smem = (size_t)(BM + 4 * BN) * D * 2;
};

template <typename T, int D, int WM, int BN, bool EXTRA, bool QREG>
__global__ void __launch_bounds__(NTHREADS) flash_mma_kernel(const KParams P)
{
    using C = Cfg<D, WM, BN>;
    constexpr int BM = C::BM, CH = C::CH, NT = BN / 8, DT = D / 8, KS = D / 16;
    constexpr int RPI = NTHREADS / CH; /* tile rows one pass of the CTA's cp.async covers */
    static_assert(BN % 16 == 0 && D % 16 == 0 && RPI % 8 == 0 && BM % RPI == 0 && BN % RPI == 0,
                  "tile shape");
    extern __shared__ __align__(128) unsigned char smem_raw[];
    T *sQ = reinterpret_cast<T *>(smem_raw);
    T *sK = sQ + BM * D;
    T *sV = sK + 2 * BN * D;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    /* FlashBlock's arithmetic, written out: through the struct ptxas allocates this
     * kernel's registers differently (D 128: 12 -> 32-40 bytes of spill).  Causal grids
     * keep the order over all heads (flash_tile with one section): flash_tile's
     * sections here spilled 16-40 more bytes at BM = 128, and no card has timed them. */
    const int64_t BH = P.B * P.H, bid = blockIdx.x;
    int64_t bh;
    int m_block;
    if (P.causal) { /* longest query blocks (the last ones) first, over all heads */
        m_block = (int)(P.nm - 1 - bid / BH);
        bh = bid % BH;
    } else { /* the blocks of one head together: its K, V stay in L2 */
        m_block = (int)(bid % P.nm);
        bh = bid / P.nm;
    }
    const int64_t b = bh / P.H, h = bh % P.H, hk = h / P.G;
    /* sequence positions in 32 bits (the host keeps Lq, Lk <= 2^30 on this path) */
    const int Lq = (int)P.Lq, Lk = (int)P.Lk, off = Lk - Lq, row0 = m_block * BM;
    const int row_end = row0 + BM < Lq ? row0 + BM : Lq;
    T *out = reinterpret_cast<T *>(P.out) + b * P.os0 + h * P.os1; /* rows P.os2 apart */

    int n_end = Lk;
    if (P.causal && row_end + off < n_end) n_end = row_end + off; /* last row's diagonal + 1 */
    if (n_end <= 0) { /* no row of the block sees a key */
        for (int x = tid; x < (row_end - row0) * D; x += NTHREADS) out[(int64_t)(row0 + x / D) * P.os2 + x % D] = T(0.0f);
        if (P.lse)
            for (int i = row0 + tid; i < row_end; i += NTHREADS) P.lse[bh * P.Lq + i] = INFINITY;
        return;
    }
    const int n_tiles = (n_end + BN - 1) / BN;

    const T *qg = reinterpret_cast<const T *>(P.q.data) + b * P.q.s0 + h * P.q.s1;
    const T *kg = reinterpret_cast<const T *>(P.k.data) + b * P.k.s0 + hk * P.k.s1;
    const T *vg = reinterpret_cast<const T *>(P.v.data) + b * P.v.s0 + hk * P.v.s1;
    const int64_t qs = P.q.s2, ks = P.k.s2, vs = P.v.s2;

    /* the thread's share of every tile load: rows lr + RPI it, 16-byte chunk lc; RPI is a
     * multiple of 8, so the swizzle (chunk lc ^ (row & 7)) is the same for all of them */
    const int lr = tid / CH, lc = tid % CH;
    const uint32_t s_ld = (uint32_t)(lr * D + ((lc ^ (lr & 7)) << 3)) * 2;
    const T *q_ld = qg + (int64_t)row0 * qs + (int64_t)lr * qs + lc * 8;
    const T *k_ld = kg + (int64_t)lr * ks + lc * 8;
    const T *v_ld = vg + (int64_t)lr * vs + lc * 8;
    const uint32_t sQa = smem_u32(sQ), sKa = smem_u32(sK), sVa = smem_u32(sV);

    /* prologue: {Q, K0}, {V0} */
    load_rows<BM, RPI, D * 2>(sQa + s_ld, q_ld, qs, row0, lr, Lq, qg);
    load_rows<BN, RPI, D * 2>(sKa + s_ld, k_ld, ks, 0, lr, Lk, kg);
    cp_async_commit();
    load_rows<BN, RPI, D * 2>(sVa + s_ld, v_ld, vs, 0, lr, Lk, vg);
    cp_async_commit();

    const int wrow0 = row0 + warp * 16 * WM; /* the warp's first row */
    const int wrow_last = wrow0 + 16 * WM - 1 < Lq - 1 ? wrow0 + 16 * WM - 1 : Lq - 1;
    const bool warp_idle = wrow0 >= Lq;

    float acc_o[WM][DT][4];
    float m_r[WM][2], l_r[WM][2];
    uint32_t rkey[WM][2];
#pragma unroll
    for (int mi = 0; mi < WM; mi++) {
#pragma unroll
        for (int nt = 0; nt < DT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc_o[mi][nt][e] = 0.0f;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            m_r[mi][r] = -INFINITY, l_r[mi][r] = 0.0f;
            rkey[mi][r] = EXTRA && P.dropout ? fl_row_key(P.seed, P.H, P.Lq, b, h,
                                                 wrow0 + mi * 16 + (lane >> 2) + 8 * r)
                                    : 0u;
        }
    }

    /* per-lane parts of the ldmatrix addresses (bytes); every tile row base
     * below is a multiple of 8, so a row's swizzle key is lane & 7 */
    const uint32_t sw = lane & 7;
    const uint32_t q_lane = sQa + ((warp * 16 * WM + (lane & 15)) * D) * 2;
    const uint32_t q_hi = lane >> 4;
    const uint32_t k_lane = sKa + (((lane & 7) + ((lane >> 4) << 3)) * D) * 2;
    const uint32_t k_hi = (lane >> 3) & 1;
    const uint32_t v_lane = sVa + ((lane & 15) * D) * 2;
    const uint32_t v_hi = lane >> 4;
    const float sl2 = P.sl2;

    /* QREG: the warp's Q fragments stay in registers for the whole key loop */
    uint32_t qf[QREG ? WM : 1][QREG ? KS : 1][4];
    if constexpr (QREG) {
        cp_async_wait<1>(); /* Q, K0 landed */
        __syncthreads();
#pragma unroll
        for (int mi = 0; mi < WM; mi++)
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
                ldsm_x4(qf[mi][kk], q_lane + mi * 16 * D * 2 + (((2 * kk + q_hi) ^ sw) << 4));
    }

    for (int n = 0; n < n_tiles; n++) {
        const int st = n & 1, j0 = n * BN;
        cp_async_wait<1>(); /* K[n] landed (V[n] may still be in flight) */
        __syncthreads();    /* ... for every thread, and every warp is done with tile n - 1 */
        /* tile n + 1 into the stage tile n - 1 used */
        if (n + 1 < n_tiles)
            load_rows<BN, RPI, D * 2>(sKa + (st ^ 1) * BN * D * 2 + s_ld, k_ld + (int64_t)(j0 + BN) * ks, ks, j0 + BN, lr, Lk, kg);
        cp_async_commit();
        if (n + 1 < n_tiles)
            load_rows<BN, RPI, D * 2>(sVa + (st ^ 1) * BN * D * 2 + s_ld, v_ld + (int64_t)(j0 + BN) * vs, vs, j0 + BN, lr, Lk, vg);
        cp_async_commit();

        /* causal: the warp's rows see none of this tile */
        const bool skip = warp_idle || (P.causal && j0 > wrow_last + off);

        float acc_s[WM][NT][4];
#pragma unroll
        for (int mi = 0; mi < WM; mi++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc_s[mi][nt][e] = 0.0f;

        if (!skip) {
            /* S = Q K^T */
            const uint32_t kbase = k_lane + st * BN * D * 2;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t qa[WM][4];
                if constexpr (QREG) {
#pragma unroll
                    for (int mi = 0; mi < WM; mi++)
#pragma unroll
                        for (int x = 0; x < 4; x++) qa[mi][x] = qf[mi][QREG ? kk : 0][x];
                } else {
#pragma unroll
                    for (int mi = 0; mi < WM; mi++)
                        ldsm_x4(qa[mi], q_lane + mi * 16 * D * 2 + (((2 * kk + q_hi) ^ sw) << 4));
                }
#pragma unroll
                for (int np = 0; np < NT / 2; np++) {
                    uint32_t kb[4];
                    ldsm_x4(kb, kbase + np * 16 * D * 2 + (((2 * kk + k_hi) ^ sw) << 4));
#pragma unroll
                    for (int mi = 0; mi < WM; mi++) {
                        Mma<T>::run(acc_s[mi][2 * np], qa[mi], kb[0], kb[1]);
                        Mma<T>::run(acc_s[mi][2 * np + 1], qa[mi], kb[2], kb[3]);
                    }
                }
            }

            /* the key tail and the causal diagonal; with EXTRA, also the mask / bias
             * (scores scaled first when a bias is added) */
            const bool bound = j0 + BN > Lk, diag = P.causal && j0 + BN - 1 > wrow0 + off;
            if (!EXTRA) {
                if (bound || diag) {
#pragma unroll
                    for (int mi = 0; mi < WM; mi++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            const int lm = tile_limit(wrow0 + mi * 16 + (lane >> 2) + 8 * r, j0, Lk, off,
                                                      P.causal, BN);
#pragma unroll
                            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                                for (int c = 0; c < 2; c++)
                                    if (nt * 8 + ((lane & 3) << 1) + c > lm) acc_s[mi][nt][2 * r + c] = -INFINITY;
                        }
                }
            } else {
#pragma unroll
                for (int mi = 0; mi < WM; mi++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int i = wrow0 + mi * 16 + (lane >> 2) + ((e >> 1) << 3);
                        const int64_t mrow =
                            b * P.mask.s0 + h * P.mask.s1 + (int64_t)(i < Lq ? i : 0) * P.mask.s2;
#pragma unroll
                        for (int nt = 0; nt < NT; nt++) {
                            const int j = j0 + nt * 8 + ((lane & 3) << 1) + (e & 1);
                            float x = acc_s[mi][nt][e];
                            if (P.prescale) x *= P.scale;
                            if (P.has_mask && j < Lk)
                                x += load_f(P.mask.data, P.mask.dtype, mrow + (int64_t)j * P.mask.s3);
                            if (j >= Lk || (P.causal && j > i + off)) x = -INFINITY;
                            acc_s[mi][nt][e] = x;
                        }
                    }
            }

            /* online softmax, in the exp2 domain: p = 2^(s sl2 - m sl2) */
#pragma unroll
            for (int mi = 0; mi < WM; mi++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const float alpha = softmax_row(acc_s[mi], r, m_r[mi][r], l_r[mi][r], sl2);
#pragma unroll
                    for (int nt = 0; nt < DT; nt++) {
                        acc_o[mi][nt][2 * r] *= alpha;
                        acc_o[mi][nt][2 * r + 1] *= alpha;
                    }
                }

            if (EXTRA && P.dropout) { /* on the probabilities; 1 / (1 - p) goes in at the end */
#pragma unroll
                for (int mi = 0; mi < WM; mi++)
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int64_t j = j0 + nt * 8 + ((lane & 3) << 1) + (e & 1);
                            if (!fl_keep(rkey[mi][e >> 1], j, P.threshold)) acc_s[mi][nt][e] = 0.0f;
                        }
            }
        }

        cp_async_wait<2>(); /* V[n] landed */
        __syncthreads();

        if (!skip) {
            /* O += P V, P from the S accumulators: k-step kk takes n-tiles 2kk, 2kk+1 */
            const uint32_t vbase = v_lane + st * BN * D * 2;
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++) {
                uint32_t pa[WM][4];
#pragma unroll
                for (int mi = 0; mi < WM; mi++) {
                    pa[mi][0] = Mma<T>::pack(acc_s[mi][2 * kk][0], acc_s[mi][2 * kk][1]);
                    pa[mi][1] = Mma<T>::pack(acc_s[mi][2 * kk][2], acc_s[mi][2 * kk][3]);
                    pa[mi][2] = Mma<T>::pack(acc_s[mi][2 * kk + 1][0], acc_s[mi][2 * kk + 1][1]);
                    pa[mi][3] = Mma<T>::pack(acc_s[mi][2 * kk + 1][2], acc_s[mi][2 * kk + 1][3]);
                }
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t vb[4];
                    ldsm_x4_t(vb, vbase + kk * 16 * D * 2 + (((2 * dp + v_hi) ^ sw) << 4));
#pragma unroll
                    for (int mi = 0; mi < WM; mi++) {
                        Mma<T>::run(acc_o[mi][2 * dp], pa[mi], vb[0], vb[1]);
                        Mma<T>::run(acc_o[mi][2 * dp + 1], pa[mi], vb[2], vb[3]);
                    }
                }
            }
        }
    }
    cp_async_wait<0>();

    /* out = O / l (x 1 / (1 - p)); zero where nothing was seen */
#pragma unroll
    for (int mi = 0; mi < WM; mi++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float l = l_r[mi][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = l > 0.0f ? P.keep_scale / l : 0.0f;
            const int i = wrow0 + mi * 16 + (lane >> 2) + 8 * r;
            /* m_r is in units of the raw scores times sl2 / log2 e */
            if (P.lse && i < Lq && (lane & 3) == 0)
                P.lse[bh * P.Lq + i] = l > 0.0f ? m_r[mi][r] * (sl2 * (1.0f / LOG2E)) + logf(l) : INFINITY;
            if (i < Lq) {
                uint32_t *o = reinterpret_cast<uint32_t *>(out + (int64_t)i * P.os2 + ((lane & 3) << 1));
#pragma unroll
                for (int nt = 0; nt < DT; nt++)
                    o[nt * 4] = Mma<T>::pack(acc_o[mi][nt][2 * r] * inv, acc_o[mi][nt][2 * r + 1] * inv);
            }
        }
}

/* ---- the fallback: one warp per query row, fp32 ----
 * Per 32 keys: lane t scores key j0 + t against q (scaled, in shared
 * memory), the warp updates max and sum, then the lanes sweep Dv adding the
 * 32 weighted V rows to O (in shared memory). */

__global__ void __launch_bounds__(128) flash_f32_kernel(const KParams P, int warps)
{
    extern __shared__ float fsm[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t D = P.D, Dv = P.Dv, Lq = P.Lq, Lk = P.Lk, off = Lk - Lq;
    float *qs = fsm + (int64_t)warp * (D + Dv + 32), *os = qs + D, *ps = os + Dv;
    const int64_t rows = P.B * P.H * Lq;

    for (int64_t gr = (int64_t)blockIdx.x * warps + warp; gr < rows; gr += (int64_t)gridDim.x * warps) {
        const int64_t i = gr % Lq, bh = gr / Lq, h = bh % P.H, b = bh / P.H, hk = h / P.G;
        const int64_t qo = b * P.q.s0 + h * P.q.s1 + i * P.q.s2;
        const int64_t ko = b * P.k.s0 + hk * P.k.s1, vo = b * P.v.s0 + hk * P.v.s1;
        const int64_t mo = b * P.mask.s0 + h * P.mask.s1 + i * P.mask.s2;
        for (int64_t d = lane; d < D; d += 32) qs[d] = load_f(P.q.data, P.q.dtype, qo + d * P.q.s3) * P.scale;
        for (int64_t d = lane; d < Dv; d += 32) os[d] = 0.0f;
        __syncwarp();
        const uint32_t rk = P.dropout ? fl_row_key(P.seed, P.H, Lq, b, h, i) : 0u;

        int64_t j_end = Lk;
        if (P.causal && i + off + 1 < j_end) j_end = i + off + 1;
        float m = -INFINITY, l = 0.0f;
        for (int64_t j0 = 0; j0 < j_end; j0 += 32) {
            const int64_t j = j0 + lane;
            float s = -INFINITY;
            if (j < j_end) {
                float acc = 0.0f;
                const int64_t kr = ko + j * P.k.s2;
                for (int64_t d = 0; d < D; d++) acc = fmaf(qs[d], load_f(P.k.data, P.k.dtype, kr + d * P.k.s3), acc);
                if (P.has_mask) acc += load_f(P.mask.data, P.mask.dtype, mo + j * P.mask.s3);
                s = acc;
            }
            float mx = s;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mn = fmaxf(m, mx), mu = mn == -INFINITY ? 0.0f : mn;
            const float alpha = expf(m - mu);
            float p = expf(s - mu), sum = p;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            l = l * alpha + sum;
            m = mn;
            if (P.dropout && !fl_keep(rk, j, P.threshold)) p = 0.0f;
            ps[lane] = p;
            __syncwarp();
            const int nk = (int)(j_end - j0 < 32 ? j_end - j0 : 32);
            for (int64_t d = lane; d < Dv; d += 32) {
                float acc = os[d] * alpha;
                int64_t vr = vo + j0 * P.v.s2 + d * P.v.s3;
                for (int t = 0; t < nk; t++, vr += P.v.s2)
                    acc = fmaf(ps[t], load_f(P.v.data, P.v.dtype, vr), acc);
                os[d] = acc;
            }
            __syncwarp();
        }
        const float inv = l > 0.0f ? P.keep_scale / l : 0.0f;
        const int64_t orow = b * P.os0 + h * P.os1 + i * P.os2;
        for (int64_t d = lane; d < Dv; d += 32) store_f(P.out, P.out_dtype, orow + d, os[d] * inv);
        if (P.lse && lane == 0) P.lse[gr] = l > 0.0f ? m + logf(l) : INFINITY;
        __syncwarp();
    }
}

/* ---- host side ---- */

int g_force_bm = 0;

} // namespace

namespace as_flash {

bool aligned16(const as_attn_operand *o)
{
    return ((uintptr_t)o->data & 15) == 0 && o->stride[0] % 8 == 0 && o->stride[1] % 8 == 0 &&
           o->stride[2] % 8 == 0;
}

bool mma_ok(const as_attn_params *p)
{
    as_dtype t = p->q.dtype;
    if (t != AS_F16 && t != AS_BF16) return false;
    if (p->k.dtype != t || p->v.dtype != t || p->out_dtype != t) return false;
    if (p->D != p->Dv || (p->D != 64 && p->D != 128)) return false;
    if (p->q.stride[3] != 1 || p->k.stride[3] != 1 || p->v.stride[3] != 1) return false;
    if (!aligned16(&p->q) || !aligned16(&p->k) || !aligned16(&p->v)) return false;
    if (p->Lq > (1 << 30) || p->Lk > (1 << 30)) return false; /* positions in 32 bits */
    return ((uintptr_t)p->out & 3) == 0;
}

Opnd opnd(const as_attn_operand &o)
{
    Opnd r;
    r.data = (const char *)o.data;
    r.s0 = o.stride[0], r.s1 = o.stride[1], r.s2 = o.stride[2], r.s3 = o.stride[3];
    r.dtype = (int)o.dtype;
    return r;
}

/* the current device's attribute a, read once a device (cache: one per attribute);
 * fallback where the runtime does not say */
static int device_attr(int (&cache)[64], cudaDeviceAttr a, int fallback)
{
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return fallback;
    if (dev >= 0 && dev < 64 && cache[dev]) return cache[dev];
    int n = 0;
    if (cudaDeviceGetAttribute(&n, a, dev) != cudaSuccess || n <= 0) n = fallback;
    if (dev >= 0 && dev < 64) cache[dev] = n;
    return n;
}

int sm_count(void)
{
    static int cache[64];
    return device_attr(cache, cudaDevAttrMultiProcessorCount, 132);
}

/* ATTNSWAP_FLASH_L2 (MiB; tuning runs): the K, V a causal grid's section of heads
 * may hold in L2 (flash_tile); 0 puts all heads in one section, the order before */
static int64_t read_l2_env(void)
{
    const char *e = getenv("ATTNSWAP_FLASH_L2");
    if (!e || !*e) return -1;
    char *end;
    const long v = strtol(e, &end, 10);
    if (*end || v < 0) return -1;
    return (int64_t)(v < (1L << 20) ? v : 1L << 20) << 20; /* 1 TiB: one section, whatever the heads */
}

/* the bytes the section's K, V may take: 32 MiB (FlashAttention-3's figure), at most
 * two thirds of the card's L2 */
static int64_t l2_budget(void)
{
    static const int64_t env = read_l2_env();
    if (env >= 0) return env;
    static int cache[64];
    const int64_t l2 = device_attr(cache, cudaDevAttrL2CacheSize, 48 << 20);
    return l2 * 2 / 3 < (32 << 20) ? l2 * 2 / 3 : 32 << 20;
}

/* heads a section of the causal tile order: as many as keep their K, V in l2_budget
 * (G query heads share one K, V) */
static int64_t causal_section(const as_attn_params *p)
{
    const int64_t BH = p->B * p->H, budget = l2_budget();
    if (budget <= 0) return BH;
    const int64_t es = p->q.dtype == AS_F32 ? 4 : 2;
    const int64_t head = p->Lk * (p->D + p->Dv) * es / (p->H / p->Hkv) + 1;
    const int64_t sec = budget / head;
    return sec < 1 ? 1 : sec > BH ? BH : sec;
}

KParams make_kparams(const as_attn_params *p)
{
    KParams kp;
    kp.q = opnd(p->q), kp.k = opnd(p->k), kp.v = opnd(p->v), kp.mask = opnd(p->mask);
    kp.B = p->B, kp.H = p->H, kp.G = p->H / p->Hkv, kp.Lq = p->Lq, kp.Lk = p->Lk;
    kp.D = p->D, kp.Dv = p->Dv, kp.nm = 1;
    kp.sec = p->causal ? causal_section(p) : p->B * p->H;
    kp.scale = p->scale;
    kp.causal = p->causal;
    kp.has_mask = p->mask.data != NULL;
    if (!kp.has_mask) kp.mask.s0 = kp.mask.s1 = kp.mask.s2 = kp.mask.s3 = 0;
    /* a bias is added to scale q.k, so those scores are scaled before the
     * exp2 (sl2 = log2 e); otherwise the scale folds into sl2 */
    kp.prescale = (kp.has_mask && p->mask.dtype != AS_BOOL) || !(p->scale > 0.0f);
    kp.sl2 = kp.prescale ? LOG2E : p->scale * LOG2E;
    kp.dropout = p->dropout > 0.0f;
    kp.threshold = kp.dropout ? as_attn_drop_threshold(p->dropout) : 0u;
    kp.keep_scale = !kp.dropout ? 1.0f : p->dropout < 1.0f ? 1.0f / (1.0f - p->dropout) : 0.0f;
    kp.seed = p->seed;
    kp.out = p->out;
    kp.out_dtype = (int)p->out_dtype;
    const int64_t *os = p->out_stride;
    const bool dense = !os[0] && !os[1] && !os[2];
    kp.os2 = dense ? p->Dv : os[2], kp.os1 = dense ? p->Lq * p->Dv : os[1], kp.os0 = dense ? p->H * p->Lq * p->Dv : os[0];
    kp.lse = p->lse;
    return kp;
}

/* the sm_90a kernels: built (AS_FLASH_WGMMA) and a device of compute capability 9.0 */
bool wgmma_device(void)
{
#ifdef AS_FLASH_WGMMA
    static signed char cache[64]; /* 0 unknown, 1 yes, -1 no */
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
    if (!cache[dev]) {
        int major = 0, minor = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
        cache[dev] = major == 9 && minor == 0 ? 1 : -1;
    }
    return cache[dev] > 0;
#else
    return false;
#endif
}

} // namespace as_flash

namespace {


template <typename T, int D, int WM, int BN, bool EXTRA, bool QREG>
int launch_mma(KParams kp, cudaStream_t s)
{
    using C = Cfg<D, WM, BN>;
    static uint64_t done;
    const void *fn = (const void *)flash_mma_kernel<T, D, WM, BN, EXTRA, QREG>;
    int e = smem_optin(fn, C::smem, &done);
    if (e) return e;
    kp.nm = (kp.Lq + C::BM - 1) / C::BM;
    int64_t blocks = kp.nm * kp.B * kp.H;
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    flash_mma_kernel<T, D, WM, BN, EXTRA, QREG><<<(unsigned)blocks, NTHREADS, C::smem, s>>>(kp);
    return (int)cudaGetLastError();
}

/* 0 automatic, -1 never, 1 the cp.async wgmma kernel whenever it can, 2 the
 * warp-specialised (TMA) one whenever it can, 3 that one on the persistent grid,
 * 4 that with the overlap across tiles (flash/wgmma-xt) */
int g_force_wgmma = 0;

/* ATTNSWAP_FLASH_FWD (tuning runs): "persist" puts the automatic choice's
 * warp-specialised kernel on the persistent grid at every length, "ws" on
 * one CTA a tile, "xtile" on flash/wgmma-xt; 0: none (the measured default) */
static int read_fwd_env(void)
{
    const char *e = getenv("ATTNSWAP_FLASH_FWD");
    return e && !strcmp(e, "xtile") ? 4 : e && !strcmp(e, "persist") ? 3 : e && !strcmp(e, "ws") ? 2 : 0;
}
int fwd_env(void)
{
    static const int env = read_fwd_env();
    return env;
}

/* Where TMA refuses a shape's operands, the cp.async wgmma kernel takes it only
 * as long as it was measured to beat flash/mma (docs/performance.md, v0.4): from
 * 512 keys at D = 128 (1024 causal), from 1024 at D = 64 (2048 causal).  A forced
 * mode always falls back to it. */
bool cp_async_wgmma_wins(const as_attn_params *p)
{
    const int64_t min_keys = p->D == 128 ? (p->causal ? 1024 : 512) : (p->causal ? 2048 : 1024);
    return g_force_wgmma > 0 || p->Lk >= min_keys;
}

/* no mask, bias, dropout, and a positive scale: what the wgmma kernel does */
bool plain(bool has_mask, bool dropout, bool prescale) { return !has_mask && !dropout && !prescale; }

/* 0: not wgmma; 1: the cp.async wgmma kernel; 2: the warp-specialised one; 3: that
 * one on the persistent grid.  Measured on an H100 (docs/performance.md, v0.13
 * and v0.16, the kernels alone): on the persistent grid the warp-specialised
 * kernel beats flash/mma when its 128-row CTAs fill the GPU, non-causal from
 * 128 keys (ViT's 197: 0.037 against 0.042 ms at D = 64, 0.054 against 0.065
 * at D = 128; even at 256, D = 64), causal from 512 (at D = 128 causal the two
 * are even at 512, so that case starts at 1024), and its own
 * one-CTA-a-tile grid by 2-25 % up to 4096 keys;
 * past that they are even (-3 to +5 %), so the longer rows keep one CTA a tile
 * except at D = 64 non-causal.  The cp.async kernel takes what TMA refuses. */
int use_wgmma(const as_attn_params *p, bool is_plain, bool probe_tma)
{
    if (g_force_wgmma < 0 || !is_plain || !wgmma_device()) return 0;
    int v = g_force_wgmma;
    if (!v) {
        const int64_t min_keys = !p->causal ? 128 : p->D == 128 ? 1024 : 512;
        if (p->Lk < min_keys || p->B * p->H * ((p->Lq + 127) / 128) < (int64_t)sm_count()) return 0;
        v = fwd_env();
        if (!v) v = p->Lk > 4096 && (p->causal || p->D == 128) ? 2 : 3;
    }
#ifdef AS_FLASH_WGMMA
    if (probe_tma && v >= 2 && !wgmma_ws_ok(p)) v = cp_async_wgmma_wins(p) ? 1 : 0; /* as launch_mma_d */
#endif
    return v;
}

template <typename T, int D>
int launch_mma_d(KParams kp, const as_attn_params *p, cudaStream_t s)
{
#ifdef AS_FLASH_WGMMA
    if (int v = use_wgmma(p, plain(kp.has_mask, kp.dropout, kp.prescale), false)) {
        /* where TMA refuses, the cp.async kernel if it wins there, else (not taken) flash/mma */
        bool taken;
        const int e = launch_wgmma(kp, p, v, cp_async_wgmma_wins(p), s, &taken);
        if (taken) return e;
    }
#endif
    int bm = g_force_bm;
    if (!bm) { /* 128 rows per CTA (a warp reuses each K, V fragment twice) when that fills the GPU */
        int64_t ctas = kp.B * kp.H * ((kp.Lq + 127) / 128);
        bm = ctas >= 2 * (int64_t)sm_count() ? 128 : 64;
    }
    constexpr int BN2 = D == 128 ? AS_FLASH_CUDA_BN_D128 : AS_FLASH_CUDA_BN_D64;
    constexpr bool QR2 = D == 128 ? AS_FLASH_CUDA_QREG_D128 : AS_FLASH_CUDA_QREG_D64;
    /* EXTRA: a mask, a bias, dropout or a non-positive scale; the plain kernels carry none of it */
    if (kp.has_mask || kp.dropout || kp.prescale)
        return bm == 128 ? launch_mma<T, D, 2, BN2, true, false>(kp, s)
                         : launch_mma<T, D, 1, 64, true, false>(kp, s);
    return bm == 128 ? launch_mma<T, D, 2, BN2, false, QR2>(kp, s) : launch_mma<T, D, 1, 64, false, true>(kp, s);
}

int launch_f32(KParams kp, cudaStream_t s)
{
    static uint64_t done;
    size_t per_warp = (size_t)(kp.D + kp.Dv + 32) * sizeof(float);
    int warps = 4;
    while (warps > 1 && warps * per_warp > 48 * 1024) warps >>= 1;
    size_t bytes = warps * per_warp;
    if (bytes > 227 * 1024) return (int)cudaErrorInvalidValue; /* D + Dv > ~58000 */
    if (bytes > 48 * 1024) {
        int dev = 0, optin = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        if ((size_t)optin < bytes) return (int)cudaErrorInvalidValue;
        /* the largest size the device allows, once */
        int e = smem_optin((const void *)flash_f32_kernel, (size_t)optin, &done);
        if (e) return e;
    }
    int64_t rows = kp.B * kp.H * kp.Lq, blocks = (rows + warps - 1) / warps;
    if (blocks > (1 << 30)) blocks = 1 << 30;
    flash_f32_kernel<<<(unsigned)blocks, warps * 32, bytes, s>>>(kp, warps);
    return (int)cudaGetLastError();
}

} // namespace

extern "C" int as_cuda_flash_force_block_m(int block_m)
{
    if (block_m != 0 && block_m != 64 && block_m != 128) return -1;
    g_force_bm = block_m;
    return 0;
}

extern "C" int as_cuda_flash_force_wgmma(int mode)
{
    if (mode < -1 || mode > 4) return -1;
    g_force_wgmma = mode;
    return wgmma_device() ? 1 : 0;
}

extern "C" const char *as_cuda_flash_path(const as_attn_params *p)
{
    if (!mma_ok(p)) return tf32x3_ok(p) ? "flash/tf32x3" : simt_f32_ok(p) ? "flash/simt-f32" : "flash/cuda-f32";
    const bool is_plain = plain(p->mask.data != NULL, p->dropout > 0.0f, !(p->scale > 0.0f));
    const int v = use_wgmma(p, is_plain, true);
    return v == 4   ? "flash/wgmma-xt"
           : v == 3 ? "flash/wgmma-ws-persist"
           : v == 2 ? "flash/wgmma-ws"
           : v == 1 ? "flash/wgmma"
                    : "flash/mma";
}

extern "C" int as_cuda_flash_attention(const as_attn_params *p, void *stream)
{
    if (!p) return (int)cudaErrorInvalidValue;
    if (p->B <= 0 || p->H <= 0 || p->Lq <= 0 || p->Dv <= 0) return 0;
    if (p->Hkv <= 0 || p->H % p->Hkv != 0 || p->Lk < 0 || p->D < 0) return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)stream;
    KParams kp = make_kparams(p);

    if (mma_ok(p)) {
        if (p->q.dtype == AS_F16)
            return p->D == 64 ? launch_mma_d<__half, 64>(kp, p, s) : launch_mma_d<__half, 128>(kp, p, s);
        return p->D == 64 ? launch_mma_d<__nv_bfloat16, 64>(kp, p, s)
                          : launch_mma_d<__nv_bfloat16, 128>(kp, p, s);
    }
    if (tf32x3_ok(p)) return launch_tf32x3(kp, s);
    if (simt_f32_ok(p)) return launch_simt_f32(kp, s);
    return launch_f32(kp, s);
}
