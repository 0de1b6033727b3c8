/* FlashAttention-2 backward in float32 on the tensor cores, 3xTF32
 * (flash-bwd/tf32x3): q, k, v, out and dO all float32, D = Dv in {64, 128},
 * unit last strides, 16-byte aligned rows, sm_80+.  The float32 twin of
 * flash-bwd/mma (attention_flash_bwd.cu: the same CTA, sweep, statistics,
 * dQ atomics and deterministic turns), with each product split into three
 * TF32 ones as in the forward (attention_flash_tf32.cu, the fragments in
 * attention_flash_common.cuh).
 *
 * A CTA of 4 warps owns BN = 64 keys of one (b, kv-head), a warp 16 of them
 * with their dK, dV in registers; per step of BM = 64 query rows (Q, dO and
 * the rows' statistics by cp.async, in one stage loaded while the last
 * step's dQ runs: 88 KiB at D = 64, two CTAs an SM on sm_90; 152 KiB at
 * D = 128, which an A100 holds; STAGES = 2 double-buffers them, 122 / 217 KiB):
 *   S^T = K Q^T    A: K rows (float2)       B: Q rows (float2)
 *   dV += Pd^T dO  A: the S^T accumulators  B: dO columns
 *   dP^T = V dO^T  A: V rows (float2)       B: dO rows (float2)
 *   dK += dS^T Q   A: the dS^T accumulators B: Q columns
 *   dQ += dS K     A: dS^T columns (shared) B: K columns, warp w: rows 16w..
 * Shared rows are padded to D + 4 floats where columns are read (K, Q, dO,
 * dS^T: 32 banks), D + 8 where only rows are (V); a row read of K, Q or dO
 * then meets a 2-way conflict, the rarer access of the two. */
#include <stdlib.h>
#include <string.h>

#include "attention_flash_common.cuh"

namespace as_flash {
namespace {

constexpr int TW = 4, TBTH = TW * 32; /* warps, threads */
constexpr int TBN = 64, TBM = 64;     /* keys per CTA, query rows per step */

template <int D, int STAGES>
struct TBCfg {
    static constexpr int LD = D + 4, VLD = D + 8, SLD = TBM + 4; /* floats a row */
    /* K, V; Q[STAGES], dO[STAGES]; dS^T (BN, BM); then lse log2 e, di, rkey [STAGES][BM] */
    static constexpr size_t floats = (size_t)TBN * LD + TBN * VLD + 2 * STAGES * TBM * LD + TBN * SLD;
    static constexpr size_t smem = (floats + 3 * STAGES * TBM) * 4;
};

template <int D, bool EXTRA, int STAGES>
__global__ void __launch_bounds__(TBTH) flash_bwd_tf32_kernel(const BParams B)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using C = TBCfg<D, STAGES>;
    constexpr int LD = C::LD, VLD = C::VLD, SLD = C::SLD, DT = D / 8, KS = D / 8, NT = TBM / 8;
    constexpr int CH = D / 4, RPI = TBTH / CH; /* 16-byte chunks a row; rows one pass loads */
    static_assert(TBM % RPI == 0 && TBN % RPI == 0, "tile shape");
    extern __shared__ __align__(16) float bsm[];
    float *sK = bsm, *sV = sK + TBN * LD, *sQ = sV + TBN * VLD; /* Q [STAGES][BM][LD] */
    float *sO = sQ + STAGES * TBM * LD;                          /* dO [STAGES][BM][LD] */
    float *sS = sO + STAGES * TBM * LD;                          /* dS^T [BN][SLD] */
    float *sL = sS + TBN * SLD, *sDi = sL + STAGES * TBM;
    uint32_t *sR = reinterpret_cast<uint32_t *>(sDi + STAGES * TBM);

    const KParams &P = B.f;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const BwdSweep<TBN, TBM> sw_(P, B.nn, blockIdx.x);
    const int64_t bhk = sw_.bhk, b = sw_.b, hk = sw_.hk;
    const int Lq = sw_.Lq, Lk = sw_.Lk, off = sw_.off, n0 = sw_.n0, iters = sw_.iters;

    const float *kg = reinterpret_cast<const float *>(P.k.data) + b * P.k.s0 + hk * P.k.s1;
    const float *vg = reinterpret_cast<const float *>(P.v.data) + b * P.v.s0 + hk * P.v.s1;
    const int64_t ks = P.k.s2, vs = P.v.s2, qs = P.q.s2, gs = B.dout.s2;

    const int lr = tid / CH, lc = tid % CH;
    const uint32_t ld_off = (uint32_t)(lr * LD + lc * 4) * 4;
    const uint32_t sKa = smem_u32(sK), sQa = smem_u32(sQ), sOa = smem_u32(sO);

    /* the loads of step `it` into stage st: Q, dO rows by cp.async, the row
     * statistics by plain stores (read after the next barrier) */
    auto issue = [&](int it, int st) {
        const int64_t h = sw_.head(it);
        const int i0 = sw_.row0(it);
        const float *qg = reinterpret_cast<const float *>(P.q.data) + b * P.q.s0 + h * P.q.s1;
        const float *og = reinterpret_cast<const float *>(B.dout.data) + b * B.dout.s0 + h * B.dout.s1;
        load_rows<TBM, RPI, LD * 4>(sQa + st * TBM * LD * 4 + ld_off, qg + (int64_t)(i0 + lr) * qs + lc * 4, qs, i0,
                                    lr, Lq, qg);
        load_rows<TBM, RPI, LD * 4>(sOa + st * TBM * LD * 4 + ld_off, og + (int64_t)(i0 + lr) * gs + lc * 4, gs, i0,
                                    lr, Lq, og);
        bwd_stage_stats<TBM, EXTRA>(B, b, h, i0, tid, sL + st * TBM, sDi + st * TBM, sR + st * TBM);
    };

    load_rows<TBN, RPI, LD * 4>(sKa + ld_off, kg + (int64_t)(n0 + lr) * ks + lc * 4, ks, n0, lr, Lk, kg);
    load_rows<TBN, RPI, VLD * 4>(smem_u32(sV) + (uint32_t)(lr * VLD + lc * 4) * 4, vg + (int64_t)(n0 + lr) * vs + lc * 4,
                                 vs, n0, lr, Lk, vg);
    if (iters > 0) issue(0, 0);
    cp_async_commit();

    float dk[DT][4], dv[DT][4];
#pragma unroll
    for (int nt = 0; nt < DT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[nt][e] = dv[nt][e] = 0.0f;

    const int kw = warp * 16; /* the warp's first key in the block */
    const float *sKw = sK + kw * LD, *sVw = sV + kw * VLD;

    for (int it = 0; it < iters; it++) {
        const int st = STAGES == 2 ? it & 1 : 0;
        const int64_t h = sw_.head(it);
        const int i0 = sw_.row0(it);
        cp_async_wait<0>();
        __syncthreads(); /* stage st landed for all; every warp is done with step it - 1 */
        if (STAGES == 2) {
            if (it + 1 < iters) issue(it + 1, st ^ 1);
            cp_async_commit();
        }

        const float *q_st = sQ + st * TBM * LD, *o_st = sO + st * TBM * LD;
        const float *lse2 = sL + st * TBM, *dis = sDi + st * TBM;
        const uint32_t *rks = sR + st * TBM;
        /* causal: no row of the step sees the warp's keys */
        const bool skip = n0 + kw >= Lk || (P.causal && n0 + kw > i0 + TBM - 1 + off);

        float acc_s[NT][4]; /* S^T, then P^T, then dS^T: (16 keys, BM queries) */
        uint32_t keep = 0xffffffffu; /* bit 4 nt + e: element kept by dropout */
        if (!skip) {
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc_s[nt][e] = 0.0f;
            mma3_rows<NT, KS, LD, LD>(acc_s, sKw, q_st, lane);
            bwd_probs<NT, EXTRA>(acc_s, keep, P, b, h, n0 + kw, i0, Lq, Lk, off, lane, lse2, rks);
            /* dV += Pd^T dO: k-step kk is the S^T n-tile kk */
#pragma unroll
            for (int kk = 0; kk < NT; kk++) {
                float pd[4];
#pragma unroll
                for (int e = 0; e < 4; e++) pd[e] = bwd_dropped<EXTRA>(P.dropout, P.keep_scale, keep, 4 * kk + e, acc_s[kk][e]);
                mma3_acc_cols<DT, LD>(dv, pd, o_st, kk, lane);
            }
            /* dP^T = V dO^T, then dS^T = P^T o (dP^T o keep - Di) */
            float acc_p[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc_p[nt][e] = 0.0f;
            mma3_rows<NT, KS, VLD, LD>(acc_p, sVw, o_st, lane);
            bwd_dscores<NT, EXTRA>(acc_s, acc_p, keep, B, b, h, n0 + kw, i0, Lq, Lk, lane, dis);
            /* dK += dS^T Q; dS^T to shared memory for dQ */
#pragma unroll
            for (int kk = 0; kk < NT; kk++) {
                float *r0 = sS + (kw + g) * SLD + kk * 8 + 2 * t;
                *reinterpret_cast<float2 *>(r0) = make_float2(acc_s[kk][0], acc_s[kk][1]);
                *reinterpret_cast<float2 *>(r0 + 8 * SLD) = make_float2(acc_s[kk][2], acc_s[kk][3]);
                mma3_acc_cols<DT, LD>(dk, acc_s[kk], q_st, kk, lane);
            }
        } else { /* the warp's rows of dS^T are zeros */
            for (int x = lane; x < 16 * TBM; x += 32) sS[(kw + x / TBM) * SLD + x % TBM] = 0.0f;
        }
        __syncthreads(); /* dS^T complete; with one stage, Q, dO and the statistics free */
        if (STAGES == 1) {
            if (it + 1 < iters) issue(it + 1, 0);
            cp_async_commit();
        }

        /* dQ (BM, D) += scale dS K: warp w takes query rows 16w..16w+15 */
        const int qw = warp * 16;
        float acc_q[DT][4];
        if (i0 + qw < Lq) {
#pragma unroll
            for (int nt = 0; nt < DT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc_q[nt][e] = 0.0f;
            const int kmax = Lk - n0 < TBN ? (Lk - n0 + 7) / 8 : TBN / 8;
#pragma unroll
            for (int kk = 0; kk < TBN / 8; kk++) {
                if (kk >= kmax) break;
                uint32_t ab[4], as[4];
                a_frag_cols<SLD>(sS, kk, qw, lane, ab, as);
#pragma unroll
                for (int dn = 0; dn < DT; dn++) {
                    uint32_t bb[2], bs[2];
                    b_frag_cols<LD>(sK, kk, dn * 8, lane, bb, bs);
                    mma3f(acc_q[dn], ab, as, bb, bs);
                }
            }
        }
        bwd_add_dq(acc_q, i0 + qw < Lq, sw_, B, it, h, i0 + qw, tid);
    }
    cp_async_wait<0>();
    bwd_store_dkv(dk, dv, B, bhk, n0 + kw, lane); /* dK = scale dS^T Q, dV */
#endif
}

template <int D, bool EXTRA, int STAGES>
int launch(BParams bp, cudaStream_t s)
{
    static uint64_t done;
    constexpr size_t smem = TBCfg<D, STAGES>::smem;
    const void *fn = (const void *)flash_bwd_tf32_kernel<D, EXTRA, STAGES>;
    int e = smem_optin(fn, smem, &done);
    if (e) return e;
    bp.nn = (bp.f.Lk + TBN - 1) / TBN;
    const int64_t blocks = bp.nn * bp.f.B * (bp.f.H / bp.f.G);
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    flash_bwd_tf32_kernel<D, EXTRA, STAGES><<<(unsigned)blocks, TBTH, smem, s>>>(bp);
    return (int)cudaGetLastError();
}

/* ATTNSWAP_FLASH_BWD_TF32=2stage: Q and dO double-buffered at D = 64 (tuning runs) */
bool two_stages(int64_t D)
{
    static int env = -1;
    if (env < 0) {
        const char *e = getenv("ATTNSWAP_FLASH_BWD_TF32");
        env = e && !strcmp(e, "2stage");
    }
    return env && D == 64;
}

} // namespace

bool bwd_tf32x3_ok(const as_attn_bwd_params *p)
{
    const as_attn_operand *g = &p->dout;
    const size_t need = p->f.D != 64 ? TBCfg<128, 1>::smem : two_stages(64) ? TBCfg<64, 2>::smem : TBCfg<64, 1>::smem;
    return tf32x3_ok(&p->f) && g->dtype == AS_F32 && g->stride[3] == 1 && rows16(*g) && tf32_device_smem() >= need;
}

int launch_bwd_tf32x3(const BParams &bp, cudaStream_t s)
{
    const bool extra = bp.f.has_mask || bp.f.dropout || bp.f.prescale || bp.dbias;
    if (bp.f.D == 64) {
        if (two_stages(64)) return extra ? launch<64, true, 2>(bp, s) : launch<64, false, 2>(bp, s);
        return extra ? launch<64, true, 1>(bp, s) : launch<64, false, 1>(bp, s);
    }
    return extra ? launch<128, true, 1>(bp, s) : launch<128, false, 1>(bp, s);
}

} // namespace as_flash
