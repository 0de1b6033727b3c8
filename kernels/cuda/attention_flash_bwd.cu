/* FlashAttention-2 backward on CUDA (Dao 2023, Algorithm 2), two paths:
 *
 *  flash-bwd/mma   q, k, v, out and dO all F16 or all BF16, D = Dv in
 *                  {64, 128}, unit last strides, 16-byte aligned rows.  A CTA
 *                  of 4 warps owns BN = 64 keys of one (b, kv-head); a warp
 *                  owns 16 of them and keeps their dK, dV (float32) in
 *                  registers over the whole sweep: the G query heads of the
 *                  group, then BM = 64 query rows at a time (Q, dO and the
 *                  rows' statistics double-buffered by cp.async).  Per query
 *                  block, with mma.sync m16n8k16 (fp32 accumulate):
 *                    S^T  = K Q^T                 P^T = 2^(S^T sl2 - lse log2 e)
 *                    dV  += Pd^T dO               (Pd: P dropped, scaled)
 *                    dP^T = V dO^T                dS^T = P^T o (dP^T o keep - Di)
 *                    dK  += dS^T Q                (scale at the end)
 *                    dQ  += scale dS K            dS^T through shared memory,
 *                                                 float32 atomics into dq
 *                  so the work per CTA is deterministic except dQ's sum order;
 *                  with dq_turns (as_set_deterministic) the key blocks add
 *                  into each 64-row block of dq one after another, in order.
 *  flash-bwd/tf32x3  float32 on sm_80+, the same kernel in 3xTF32
 *                  (attention_flash_bwd_tf32.cu).
 *  flash-bwd/cuda-f32  everything else: one warp a query row for dQ (and
 *                  dbias), one warp a key row for dK and dV; fp32 throughout.
 *
 * Before either: Di = rowsum(dO o O) per query row, and dq (and dbias) zeroed.
 * Semantics are the CPU's (kernels/cpu/attention_flash_bwd.c): the mask,
 * bias, causal alignment, dropout hash and scale of the forward; a row that
 * saw nothing (lse = +inf) gets zero gradients.  See docs/cuda_flash.md. */
#include <stdlib.h>
#include <string.h>

#include "as_scalar.h"
#include "attention_flash_common.cuh"

namespace {

using namespace as_flash;

/* ---- Di = rowsum(dO o O): one warp a row ---- */

__global__ void flash_bwd_di_kernel(const BParams B)
{
    const KParams &P = B.f;
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const int64_t rows = P.B * P.H * P.Lq;
    for (int64_t r = (int64_t)blockIdx.x * warps + (threadIdx.x >> 5); r < rows; r += (int64_t)gridDim.x * warps) {
        const int64_t i = r % P.Lq, bh = r / P.Lq, h = bh % P.H, b = bh / P.H;
        const int64_t go = b * B.dout.s0 + h * B.dout.s1 + i * B.dout.s2;
        float acc = 0.0f;
        for (int64_t d = lane; d < P.Dv; d += 32)
            acc = fmaf(load_f(B.dout.data, B.dout.dtype, go + d * B.dout.s3),
                       load_f((const char *)P.out, P.out_dtype, b * P.os0 + h * P.os1 + i * P.os2 + d), acc);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0) B.di[r] = acc;
    }
}

/* The score of (b, h, i, j) as the forward formed it, in its units:
 * natural-log units when mul = 1, exp2 units when mul = log2 e. */
__device__ __forceinline__ float score_of(const KParams &P, float qk, int64_t b, int64_t h, int64_t i, int64_t j)
{
    float x = qk;
    if (P.prescale) x *= P.scale;
    if (P.has_mask) x += load_f(P.mask.data, P.mask.dtype, b * P.mask.s0 + h * P.mask.s1 + i * P.mask.s2 + j * P.mask.s3);
    if (!P.prescale) x *= P.scale;
    return x;
}

/* ---- the tensor-core path ---- */

constexpr int BW = 4, BTH = BW * 32; /* warps, threads */
constexpr int BBN = 64, BBM = 64;    /* keys per CTA, query rows per step */

template <int D>
struct BCfg {
    static constexpr int CH = D / 8;
    /* K, V; Q[2], dO[2]; dS^T (BN, BM); then float lse2[2][BM], di[2][BM], uint32 rkey[2][BM] */
    static constexpr size_t halves = (size_t)(2 * BBN + 4 * BBM) * D + BBN * BBM;
    static constexpr size_t smem = halves * 2 + 6 * BBM * 4;
};

template <typename T, int D, bool EXTRA>
__global__ void __launch_bounds__(BTH) flash_bwd_mma_kernel(const BParams B)
{
    using C = BCfg<D>;
    constexpr int CH = C::CH, DT = D / 8, KS = D / 16, NT = BBM / 8;
    constexpr int RPI = BTH / CH;
    static_assert(RPI % 8 == 0 && BBM % RPI == 0 && BBN % RPI == 0, "tile shape");
    extern __shared__ __align__(128) unsigned char smem_raw[];
    T *sK = reinterpret_cast<T *>(smem_raw);
    T *sV = sK + BBN * D;
    T *sQ = sV + BBN * D;    /* [2][BM][D] */
    T *sO = sQ + 2 * BBM * D; /* dO, [2][BM][D] */
    T *sS = sO + 2 * BBM * D; /* dS^T, [BN][BM] */
    float *sL = reinterpret_cast<float *>(sS + BBN * BBM); /* lse log2 e, [2][BM] */
    float *sDi = sL + 2 * BBM;
    uint32_t *sR = reinterpret_cast<uint32_t *>(sDi + 2 * BBM);

    const KParams &P = B.f;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const BwdSweep<BBN, BBM> sw_(P, B.nn, blockIdx.x);
    const int64_t bhk = sw_.bhk, b = sw_.b, hk = sw_.hk;
    const int Lq = sw_.Lq, Lk = sw_.Lk, off = sw_.off, n0 = sw_.n0, iters = sw_.iters;

    const T *kg = reinterpret_cast<const T *>(P.k.data) + b * P.k.s0 + hk * P.k.s1;
    const T *vg = reinterpret_cast<const T *>(P.v.data) + b * P.v.s0 + hk * P.v.s1;
    const int64_t ks = P.k.s2, vs = P.v.s2, qs = P.q.s2, gs = B.dout.s2;

    const int lr = tid / CH, lc = tid % CH;
    const uint32_t s_ld = (uint32_t)(lr * D + ((lc ^ (lr & 7)) << 3)) * 2;
    const uint32_t sKa = smem_u32(sK), sVa = smem_u32(sV), sQa = smem_u32(sQ), sOa = smem_u32(sO),
                   sSa = smem_u32(sS);

    /* the loads of step `it` into stage st: Q, dO rows by cp.async, the row
     * statistics by plain stores (read after the next barrier) */
    auto issue = [&](int it, int st) {
        const int64_t h = sw_.head(it);
        const int i0 = sw_.row0(it);
        const T *qg = reinterpret_cast<const T *>(P.q.data) + b * P.q.s0 + h * P.q.s1;
        const T *og = reinterpret_cast<const T *>(B.dout.data) + b * B.dout.s0 + h * B.dout.s1;
        load_rows<BBM, RPI, D * 2>(sQa + st * BBM * D * 2 + s_ld, qg + (int64_t)(i0 + lr) * qs + lc * 8, qs, i0, lr,
                                   Lq, qg);
        load_rows<BBM, RPI, D * 2>(sOa + st * BBM * D * 2 + s_ld, og + (int64_t)(i0 + lr) * gs + lc * 8, gs, i0, lr,
                                   Lq, og);
        bwd_stage_stats<BBM, EXTRA>(B, b, h, i0, tid, sL + st * BBM, sDi + st * BBM, sR + st * BBM);
    };

    load_rows<BBN, RPI, D * 2>(sKa + s_ld, kg + (int64_t)(n0 + lr) * ks + lc * 8, ks, n0, lr, Lk, kg);
    load_rows<BBN, RPI, D * 2>(sVa + s_ld, vg + (int64_t)(n0 + lr) * vs + lc * 8, vs, n0, lr, Lk, vg);
    if (iters > 0) issue(0, 0);
    cp_async_commit();

    float dk[DT][4], dv[DT][4];
#pragma unroll
    for (int nt = 0; nt < DT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[nt][e] = dv[nt][e] = 0.0f;

    /* ldmatrix lane addresses (bytes), as in the forward: "A" rows lane & 15,
     * chunk + (lane >> 4); "B" rows (lane & 7) + ((lane >> 4) << 3), chunk +
     * ((lane >> 3) & 1); every tile row base is a multiple of 8 */
    const uint32_t sw = lane & 7;
    const int kw = warp * 16; /* the warp's first key in the block */
    const uint32_t a_row = (uint32_t)(lane & 15), a_hi = lane >> 4;
    const uint32_t b_row = (uint32_t)((lane & 7) + ((lane >> 4) << 3)), b_hi = (lane >> 3) & 1;
    const uint32_t k_a = sKa + ((kw + a_row) * D) * 2, v_a = sVa + ((kw + a_row) * D) * 2;

    for (int it = 0; it < iters; it++) {
        const int st = it & 1;
        const int64_t h = sw_.head(it);
        const int i0 = sw_.row0(it);
        cp_async_wait<0>();
        __syncthreads(); /* stage st landed for all; every warp is done with step it - 1 */
        if (it + 1 < iters) issue(it + 1, st ^ 1);
        cp_async_commit();

        const uint32_t q_st = sQa + st * BBM * D * 2, o_st = sOa + st * BBM * D * 2;
        const float *lse2 = sL + st * BBM, *dis = sDi + st * BBM;
        const uint32_t *rks = sR + st * BBM;
        /* causal: no row of the step sees the warp's keys */
        const bool skip = n0 + kw >= Lk || (P.causal && n0 + kw > i0 + BBM - 1 + off);

        float acc_s[NT][4]; /* S^T, then P^T, then dS^T: (16 keys, BM queries) */
        uint32_t keep = 0xffffffffu; /* bit 4 nt + e: element kept by dropout */
        if (!skip) {
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc_s[nt][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t ka[4];
                ldsm_x4(ka, k_a + (((2 * kk + a_hi) ^ sw) << 4));
#pragma unroll
                for (int np = 0; np < NT / 2; np++) {
                    uint32_t qb[4];
                    ldsm_x4(qb, q_st + ((np * 16 + b_row) * D) * 2 + (((2 * kk + b_hi) ^ sw) << 4));
                    Mma<T>::run(acc_s[2 * np], ka, qb[0], qb[1]);
                    Mma<T>::run(acc_s[2 * np + 1], ka, qb[2], qb[3]);
                }
            }
            bwd_probs<NT, EXTRA>(acc_s, keep, P, b, h, n0 + kw, i0, Lq, Lk, off, lane, lse2, rks);
            /* dV += Pd^T dO */
#pragma unroll
            for (int kk = 0; kk < BBM / 16; kk++) {
                uint32_t pa[4];
                const float ks_ = P.keep_scale;
                auto pd = [&](int nt, int e) { return bwd_dropped<EXTRA>(P.dropout, ks_, keep, 4 * nt + e, acc_s[nt][e]); };
                pa[0] = Mma<T>::pack(pd(2 * kk, 0), pd(2 * kk, 1));
                pa[1] = Mma<T>::pack(pd(2 * kk, 2), pd(2 * kk, 3));
                pa[2] = Mma<T>::pack(pd(2 * kk + 1, 0), pd(2 * kk + 1, 1));
                pa[3] = Mma<T>::pack(pd(2 * kk + 1, 2), pd(2 * kk + 1, 3));
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t ob[4];
                    ldsm_x4_t(ob, o_st + ((kk * 16 + a_row) * D) * 2 + (((2 * dp + a_hi) ^ sw) << 4));
                    Mma<T>::run(dv[2 * dp], pa, ob[0], ob[1]);
                    Mma<T>::run(dv[2 * dp + 1], pa, ob[2], ob[3]);
                }
            }
            /* dP^T = V dO^T, then dS^T = P^T o (dP^T o keep - Di) */
            float acc_p[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc_p[nt][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t va[4];
                ldsm_x4(va, v_a + (((2 * kk + a_hi) ^ sw) << 4));
#pragma unroll
                for (int np = 0; np < NT / 2; np++) {
                    uint32_t ob[4];
                    ldsm_x4(ob, o_st + ((np * 16 + b_row) * D) * 2 + (((2 * kk + b_hi) ^ sw) << 4));
                    Mma<T>::run(acc_p[2 * np], va, ob[0], ob[1]);
                    Mma<T>::run(acc_p[2 * np + 1], va, ob[2], ob[3]);
                }
            }
            bwd_dscores<NT, EXTRA>(acc_s, acc_p, keep, B, b, h, n0 + kw, i0, Lq, Lk, lane, dis);
            /* dK += dS^T Q; dS^T to shared memory for dQ */
#pragma unroll
            for (int kk = 0; kk < BBM / 16; kk++) {
                uint32_t sa[4];
                sa[0] = Mma<T>::pack(acc_s[2 * kk][0], acc_s[2 * kk][1]);
                sa[1] = Mma<T>::pack(acc_s[2 * kk][2], acc_s[2 * kk][3]);
                sa[2] = Mma<T>::pack(acc_s[2 * kk + 1][0], acc_s[2 * kk + 1][1]);
                sa[3] = Mma<T>::pack(acc_s[2 * kk + 1][2], acc_s[2 * kk + 1][3]);
                /* rows kw + g and kw + g + 8, query chunks 2kk, 2kk + 1 (BM / 8 = 8 chunks a row) */
                const int r0 = kw + (lane >> 2), r1 = r0 + 8;
                const uint32_t cb = (uint32_t)((lane & 3) << 2);
                uint32_t *s32 = reinterpret_cast<uint32_t *>(sS);
                s32[(r0 * BBM * 2 + (((2 * kk) ^ (r0 & 7)) << 4) + cb) >> 2] = sa[0];
                s32[(r1 * BBM * 2 + (((2 * kk) ^ (r1 & 7)) << 4) + cb) >> 2] = sa[1];
                s32[(r0 * BBM * 2 + (((2 * kk + 1) ^ (r0 & 7)) << 4) + cb) >> 2] = sa[2];
                s32[(r1 * BBM * 2 + (((2 * kk + 1) ^ (r1 & 7)) << 4) + cb) >> 2] = sa[3];
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t qb[4];
                    ldsm_x4_t(qb, q_st + ((kk * 16 + a_row) * D) * 2 + (((2 * dp + a_hi) ^ sw) << 4));
                    Mma<T>::run(dk[2 * dp], sa, qb[0], qb[1]);
                    Mma<T>::run(dk[2 * dp + 1], sa, qb[2], qb[3]);
                }
            }
        } else { /* the warp's rows of dS^T are zeros */
            uint32_t *s32 = reinterpret_cast<uint32_t *>(sS);
            for (int x = lane; x < 16 * BBM / 2; x += 32) s32[kw * BBM / 2 + x] = 0u;
        }
        __syncthreads(); /* dS^T complete */

        /* dQ (BM, D) += scale dS K: warp w takes query rows 16w..16w+15; A = dS
         * from dS^T by ldmatrix.trans, B = K by ldmatrix.trans */
        const int qw = warp * 16;
        float acc_q[DT][4];
        if (i0 + qw < Lq) {
#pragma unroll
            for (int nt = 0; nt < DT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc_q[nt][e] = 0.0f;
            const int kmax = Lk - n0 < BBN ? (Lk - n0 + 15) / 16 : BBN / 16;
#pragma unroll
            for (int kk = 0; kk < BBN / 16; kk++) {
                if (kk >= kmax) break;
                uint32_t sa[4];
                ldsm_x4_t(sa, sSa + ((kk * 16 + b_row) * BBM) * 2 + ((((qw >> 3) + b_hi) ^ sw) << 4));
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t kb[4];
                    ldsm_x4_t(kb, sKa + ((kk * 16 + a_row) * D) * 2 + (((2 * dp + a_hi) ^ sw) << 4));
                    Mma<T>::run(acc_q[2 * dp], sa, kb[0], kb[1]);
                    Mma<T>::run(acc_q[2 * dp + 1], sa, kb[2], kb[3]);
                }
            }
        }
        bwd_add_dq(acc_q, i0 + qw < Lq, sw_, B, it, h, i0 + qw, tid);
    }
    cp_async_wait<0>();
    bwd_store_dkv(dk, dv, B, bhk, n0 + kw, lane); /* dK = scale dS^T Q, dV */
}

/* ---- the fallback, fp32 on the CUDA cores ----
 * dQ (and dbias): one warp a query row; lane t takes key j0 + t, forms its
 * p and dS, then the lanes sweep D adding the 32 dS-weighted K rows.
 * dK, dV: one warp a key row; lane t takes query i0 + t of each head of the
 * group, then the lanes sweep D adding the 32 weighted Q and dO rows. */

__global__ void __launch_bounds__(128) flash_bwd_dq_f32_kernel(const BParams B, int warps)
{
    extern __shared__ float fsm[];
    const KParams &P = B.f;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t D = P.D, Dv = P.Dv, Lq = P.Lq, Lk = P.Lk, off = Lk - Lq;
    float *qv = fsm + (int64_t)warp * (2 * D + Dv + 32), *gv = qv + D, *acc = gv + Dv, *ps = acc + D;
    const int64_t rows = P.B * P.H * Lq;
    for (int64_t r = (int64_t)blockIdx.x * warps + warp; r < rows; r += (int64_t)gridDim.x * warps) {
        const int64_t i = r % Lq, bh = r / Lq, h = bh % P.H, b = bh / P.H, hk = h / P.G;
        const int64_t qo = b * P.q.s0 + h * P.q.s1 + i * P.q.s2, go = b * B.dout.s0 + h * B.dout.s1 + i * B.dout.s2;
        const int64_t ko = b * P.k.s0 + hk * P.k.s1, vo = b * P.v.s0 + hk * P.v.s1;
        for (int64_t d = lane; d < D; d += 32) qv[d] = load_f(P.q.data, P.q.dtype, qo + d * P.q.s3), acc[d] = 0.0f;
        for (int64_t d = lane; d < Dv; d += 32) gv[d] = load_f(B.dout.data, B.dout.dtype, go + d * B.dout.s3);
        __syncwarp();
        const float lse = B.lse[r], di = B.di[r];
        const uint32_t rk = P.dropout ? fl_row_key(P.seed, P.H, Lq, b, h, i) : 0u;
        int64_t j_end = Lk;
        if (P.causal && i + off + 1 < j_end) j_end = i + off + 1;
        for (int64_t j0 = 0; j0 < j_end; j0 += 32) {
            const int64_t j = j0 + lane;
            float ds = 0.0f;
            if (j < j_end) {
                float qk = 0.0f, dp = 0.0f;
                for (int64_t d = 0; d < D; d++) qk = fmaf(qv[d], load_f(P.k.data, P.k.dtype, ko + j * P.k.s2 + d * P.k.s3), qk);
                for (int64_t d = 0; d < Dv; d++) dp = fmaf(gv[d], load_f(P.v.data, P.v.dtype, vo + j * P.v.s2 + d * P.v.s3), dp);
                const float p = expf(score_of(P, qk, b, h, i, j) - lse);
                if (P.dropout) dp = fl_keep(rk, j, P.threshold) ? dp * P.keep_scale : 0.0f;
                ds = p * (dp - di);
                if (B.dbias) B.dbias[r * Lk + j] = ds;
            }
            ps[lane] = ds;
            __syncwarp();
            const int nk = (int)(j_end - j0 < 32 ? j_end - j0 : 32);
            for (int64_t d = lane; d < D; d += 32) {
                float a = acc[d];
                for (int t = 0; t < nk; t++) a = fmaf(ps[t], load_f(P.k.data, P.k.dtype, ko + (j0 + t) * P.k.s2 + d * P.k.s3), a);
                acc[d] = a;
            }
            __syncwarp();
        }
        for (int64_t d = lane; d < D; d += 32) B.dq[r * D + d] = acc[d] * P.scale;
        __syncwarp();
    }
}

__global__ void __launch_bounds__(128) flash_bwd_dkv_f32_kernel(const BParams B, int warps)
{
    extern __shared__ float fsm[];
    const KParams &P = B.f;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t D = P.D, Dv = P.Dv, Lq = P.Lq, Lk = P.Lk, off = Lk - Lq, Hkv = P.H / P.G;
    float *kv = fsm + (int64_t)warp * (2 * D + 2 * Dv + 64), *vv = kv + D, *adk = vv + Dv, *adv = adk + D;
    float *ps = adv + Dv, *pds = ps + 32;
    const int64_t rows = P.B * Hkv * Lk;
    for (int64_t r = (int64_t)blockIdx.x * warps + warp; r < rows; r += (int64_t)gridDim.x * warps) {
        const int64_t j = r % Lk, bhk = r / Lk, hk = bhk % Hkv, b = bhk / Hkv;
        const int64_t ko = b * P.k.s0 + hk * P.k.s1 + j * P.k.s2, vo = b * P.v.s0 + hk * P.v.s1 + j * P.v.s2;
        for (int64_t d = lane; d < D; d += 32) kv[d] = load_f(P.k.data, P.k.dtype, ko + d * P.k.s3), adk[d] = 0.0f;
        for (int64_t d = lane; d < Dv; d += 32) vv[d] = load_f(P.v.data, P.v.dtype, vo + d * P.v.s3), adv[d] = 0.0f;
        __syncwarp();
        const int64_t i_start = P.causal && j - off > 0 ? j - off : 0;
        for (int64_t h = hk * P.G; h < (hk + 1) * P.G; h++) {
            const int64_t qb = b * P.q.s0 + h * P.q.s1, gb = b * B.dout.s0 + h * B.dout.s1, rb = (b * P.H + h) * Lq;
            for (int64_t i0 = i_start; i0 < Lq; i0 += 32) {
                const int64_t i = i0 + lane;
                float pd = 0.0f, ds = 0.0f;
                if (i < Lq) {
                    float qk = 0.0f, dp = 0.0f;
                    for (int64_t d = 0; d < D; d++) qk = fmaf(kv[d], load_f(P.q.data, P.q.dtype, qb + i * P.q.s2 + d * P.q.s3), qk);
                    for (int64_t d = 0; d < Dv; d++)
                        dp = fmaf(vv[d], load_f(B.dout.data, B.dout.dtype, gb + i * B.dout.s2 + d * B.dout.s3), dp);
                    const float p = expf(score_of(P, qk, b, h, i, j) - B.lse[rb + i]);
                    const bool kept = !P.dropout || fl_keep(fl_row_key(P.seed, P.H, Lq, b, h, i), j, P.threshold);
                    pd = kept ? p * P.keep_scale : 0.0f;
                    ds = p * ((kept ? dp * P.keep_scale : 0.0f) - B.di[rb + i]);
                }
                ps[lane] = pd, pds[lane] = ds;
                __syncwarp();
                const int nq = (int)(Lq - i0 < 32 ? Lq - i0 : 32);
                for (int64_t d = lane; d < Dv; d += 32) {
                    float a = adv[d];
                    for (int t = 0; t < nq; t++)
                        a = fmaf(ps[t], load_f(B.dout.data, B.dout.dtype, gb + (i0 + t) * B.dout.s2 + d * B.dout.s3), a);
                    adv[d] = a;
                }
                for (int64_t d = lane; d < D; d += 32) {
                    float a = adk[d];
                    for (int t = 0; t < nq; t++) a = fmaf(pds[t], load_f(P.q.data, P.q.dtype, qb + (i0 + t) * P.q.s2 + d * P.q.s3), a);
                    adk[d] = a;
                }
                __syncwarp();
            }
        }
        for (int64_t d = lane; d < D; d += 32) store_f(B.dk, B.dkv_dtype, r * D + d, adk[d] * P.scale);
        for (int64_t d = lane; d < Dv; d += 32) store_f(B.dv, B.dkv_dtype, r * Dv + d, adv[d]);
        __syncwarp();
    }
}

/* ---- host side ---- */

bool mma_bwd_ok(const as_attn_bwd_params *p)
{
    if (!mma_ok(&p->f)) return false;
    const as_attn_operand *g = &p->dout;
    return g->dtype == p->f.q.dtype && g->stride[3] == 1 && aligned16(g);
}

template <typename T, int D, bool EXTRA>
int launch_bwd_mma(BParams bp, cudaStream_t s)
{
    static uint64_t done;
    const void *fn = (const void *)flash_bwd_mma_kernel<T, D, EXTRA>;
    int e = smem_optin(fn, BCfg<D>::smem, &done);
    if (e) return e;
    bp.nn = (bp.f.Lk + BBN - 1) / BBN;
    const int64_t blocks = bp.nn * bp.f.B * (bp.f.H / bp.f.G);
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    flash_bwd_mma_kernel<T, D, EXTRA><<<(unsigned)blocks, BTH, BCfg<D>::smem, s>>>(bp);
    return (int)cudaGetLastError();
}

template <typename T>
int launch_bwd_mma_t(const BParams &bp, cudaStream_t s)
{
    const bool extra = bp.f.has_mask || bp.f.dropout || bp.f.prescale || bp.dbias;
    if (bp.f.D == 64) return extra ? launch_bwd_mma<T, 64, true>(bp, s) : launch_bwd_mma<T, 64, false>(bp, s);
    return extra ? launch_bwd_mma<T, 128, true>(bp, s) : launch_bwd_mma<T, 128, false>(bp, s);
}

/* warps a CTA and the shared bytes for per-warp floats of a fallback kernel */
int fallback_launch_shape(size_t per_warp, int *warps, size_t *bytes, const void *fn, uint64_t *done)
{
    *warps = 4;
    while (*warps > 1 && *warps * per_warp > 48 * 1024) *warps >>= 1;
    *bytes = *warps * per_warp;
    if (*bytes <= 48 * 1024) return 0;
    int dev = 0, optin = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if ((size_t)optin < *bytes) return (int)cudaErrorInvalidValue;
    return smem_optin(fn, (size_t)optin, done);
}

int launch_bwd_f32(const BParams &bp, cudaStream_t s)
{
    static uint64_t done_q, done_kv;
    const KParams &P = bp.f;
    int warps;
    size_t bytes;
    int e = fallback_launch_shape((size_t)(2 * P.D + P.Dv + 32) * sizeof(float), &warps, &bytes,
                                  (const void *)flash_bwd_dq_f32_kernel, &done_q);
    if (e) return e;
    int64_t blocks = (P.B * P.H * P.Lq + warps - 1) / warps;
    if (blocks > (1 << 30)) blocks = 1 << 30;
    if (blocks > 0) flash_bwd_dq_f32_kernel<<<(unsigned)blocks, warps * 32, bytes, s>>>(bp, warps);
    if ((e = (int)cudaGetLastError())) return e;
    e = fallback_launch_shape((size_t)(2 * P.D + 2 * P.Dv + 64) * sizeof(float), &warps, &bytes,
                              (const void *)flash_bwd_dkv_f32_kernel, &done_kv);
    if (e) return e;
    blocks = (P.B * (P.H / P.G) * P.Lk + warps - 1) / warps;
    if (blocks > (1 << 30)) blocks = 1 << 30;
    if (blocks > 0) flash_bwd_dkv_f32_kernel<<<(unsigned)blocks, warps * 32, bytes, s>>>(bp, warps);
    return (int)cudaGetLastError();
}

/* 0 automatic, -1 never the wgmma backward (tests and benchmarks of the mma
 * one on a Hopper card); ATTNSWAP_FLASH_BWD=mma in the environment sets -1 */
int g_force_bwd = 0;

/* ATTNSWAP_FLASH_BWD: mma (never wgmma) -> -1; for tuning runs, the wgmma
 * kernel's variants, "wgmma" then any of -reg (WB_REG), -persist
 * (WB_PERSIST), -nmajor (WB_NMAJOR), -bm64 (WB_BM64), -tma (WB_DQ_TMA),
 * -overlap (WB_OVERLAP): wgmma-persist-nmajor ("wgmma" alone: v0.13's kernel,
 * dQ by atomics, the softmax between the products); else automatic, 0 */
int bwd_env(void)
{
    static int env = -2;
    if (env == -2) {
        const char *e = getenv("ATTNSWAP_FLASH_BWD");
        env = 0;
        if (e && strcmp(e, "mma") == 0) env = -1;
        else if (e && strncmp(e, "wgmma", 5) == 0)
            env = WB_SET | (strstr(e, "-reg") ? WB_REG : 0) | (strstr(e, "-persist") ? WB_PERSIST : 0) |
                  (strstr(e, "-nmajor") ? WB_NMAJOR : 0) | (strstr(e, "-bm64") ? WB_BM64 : 0) |
                  (strstr(e, "-tma") ? WB_DQ_TMA : 0) | (strstr(e, "-overlap") ? WB_OVERLAP : 0);
    }
    return env;
}

/* probe_tma: also make the TMA maps (the path's name); a launch makes them
 * once and falls back to mma by itself where TMA refuses an operand */
bool use_wgmma_bwd(const as_attn_bwd_params *p, bool probe_tma)
{
#ifdef AS_FLASH_WGMMA
    return g_force_bwd >= 0 && bwd_env() >= 0 && mma_bwd_ok(p) && wgmma_bwd_ok(p, probe_tma, bwd_env());
#else
    (void)p, (void)probe_tma;
    return false;
#endif
}

} // namespace

extern "C" int as_cuda_flash_force_bwd(int mode)
{
    if (mode < -1 || mode > 0) return -1;
    g_force_bwd = mode;
    return wgmma_device() ? 1 : 0;
}

extern "C" const char *as_cuda_flash_bwd_path(const as_attn_bwd_params *p)
{
    return use_wgmma_bwd(p, true) ? "flash-bwd/wgmma"
           : mma_bwd_ok(p)        ? "flash-bwd/mma"
           : bwd_tf32x3_ok(p)     ? "flash-bwd/tf32x3"
                                  : "flash-bwd/cuda-f32";
}

extern "C" int as_cuda_flash_attention_backward(const as_attn_bwd_params *p, void *stream)
{
    if (!p || !p->dq || !p->dk || !p->dv || (p->f.B * p->f.H * p->f.Lq > 0 && (!p->f.lse || !p->di)) ||
        (p->dkv_dtype != AS_F32 && p->dkv_dtype != AS_F16 && p->dkv_dtype != AS_BF16))
        return (int)cudaErrorInvalidValue;
    const as_attn_params *f = &p->f;
    if (f->B < 0 || f->H <= 0 || f->Hkv <= 0 || f->H % f->Hkv != 0 || f->Lq < 0 || f->Lk < 0 || f->D < 0 ||
        f->Dv < 0)
        return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t ce;
    /* dq is summed into; dbias is written only where a row sees a key */
    if ((ce = cudaMemsetAsync(p->dq, 0, (size_t)(f->B * f->H * f->Lq * f->D) * sizeof(float), s))) return (int)ce;
    if (p->dq_turns &&
        (ce = cudaMemsetAsync(p->dq_turns, 0, (size_t)AS_ATTN_BWD_TURNS(f->B, f->H, f->Lq) * sizeof(int32_t), s)))
        return (int)ce;
    if (p->dbias &&
        (ce = cudaMemsetAsync(p->dbias, 0, (size_t)(f->B * f->H * f->Lq * f->Lk) * sizeof(float), s)))
        return (int)ce;
    if (f->Lq == 0 || f->B == 0) { /* no query: zero dk, dv */
        const size_t es = as_dtype_size(p->dkv_dtype);
        if ((ce = cudaMemsetAsync(p->dk, 0, (size_t)(f->B * f->Hkv * f->Lk * f->D) * es, s))) return (int)ce;
        return (int)cudaMemsetAsync(p->dv, 0, (size_t)(f->B * f->Hkv * f->Lk * f->Dv) * es, s);
    }
    if (f->Lk == 0) return 0; /* dq zeroed; no key rows */

    BParams bp;
    bp.f = make_kparams(f);
    bp.dout = opnd(p->dout);
    bp.lse = f->lse, bp.di = p->di;
    bp.dq = p->dq, bp.dk = p->dk, bp.dv = p->dv, bp.dbias = p->dbias, bp.dkv_dtype = (int)p->dkv_dtype;
    bp.dq_turns = p->dq_turns;
    bp.nn = 1, bp.nmajor = 0;
    const int64_t rows = f->B * f->H * f->Lq;
    int64_t blocks = (rows + 3) / 4;
    if (blocks > (1 << 30)) blocks = 1 << 30;
    flash_bwd_di_kernel<<<(unsigned)blocks, 128, 0, s>>>(bp);
    if ((ce = cudaGetLastError())) return (int)ce;
#ifdef AS_FLASH_WGMMA
    if (use_wgmma_bwd(p, false)) {
        bool taken = false;
        const int e = launch_bwd_wgmma(bp, p, bwd_env(), s, &taken);
        if (taken) return e;
    }
#endif
    if (mma_bwd_ok(p))
        return f->q.dtype == AS_F16 ? launch_bwd_mma_t<__half>(bp, s) : launch_bwd_mma_t<__nv_bfloat16>(bp, s);
    if (bwd_tf32x3_ok(p)) return launch_bwd_tf32x3(bp, s);
    return launch_bwd_f32(bp, s);
}
