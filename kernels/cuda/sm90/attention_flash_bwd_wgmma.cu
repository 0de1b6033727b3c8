/* FlashAttention-2's backward for Hopper (sm_90a): wgmma.mma_async and TMA
 * instead of mma.sync and cp.async (flash-bwd/wgmma).  Plain attention only
 * (no mask, bias or dropout; causal or not; GQA), F16/BF16, D = Dv in
 * {64, 128}; everything else stays on ../attention_flash_bwd.cu, whose
 * semantics and outputs this shares: float32 dq (summed into, zeroed by the
 * caller), dk and dv (float32, or the inputs' dtype); Di = rowsum(dO o O) made before; a row that saw nothing
 * (lse = +inf) gives zeros.
 *
 * A CTA owns BN = 128 keys of one (b, kv-head) and sweeps the G query heads
 * of the group, BM query rows at a time (BM = 64; 128 at D = 64, where a
 * 64-row step's products are too small to keep the tensor cores fed).
 * Three warpgroups:
 *
 *   producer (warpgroup 2, 24 registers): K and V once, then Q and dO of
 *       each step by TMA into a 2-stage mbarrier ring; two of its warps put
 *       the step's lse log2 e and Di into shared memory beside them, and
 *       (!ATOMIC) a third's first thread adds each step's dQ into dq.
 *   consumers (warpgroups 0, 1, 240 registers): warpgroup w owns keys
 *       64 w .. 64 w + 63 of the block, their dK and dV in registers, and
 *       per step computes, keys as the M dimension (so P^T and dS^T are the
 *       register A operands of the products that need them):
 *         S^T  = K Q^T      m64nBMk16, A = K, B = Q (shared, K-major)
 *         dP^T = V dO^T     m64nBMk16, A = V, B = dO
 *         P^T  = 2^(S^T sl2 - lse log2 e)          (OVERLAP: while dP^T's runs)
 *         dV  += P^T dO     m64nDk16, A = P^T (registers), B = dO N-major
 *         dS^T = P^T o (dP^T - Di)                 (OVERLAP: while dV's runs)
 *         dK  += dS^T Q     m64nDk16, A = dS^T (registers), B = Q N-major
 *       then dS^T (bf16/f16) goes to shared memory, and after a barrier of
 *       the two consumers
 *         dQ[:, half w] = dS K[:, half w]   m64n(D/2)k16 over all 128 keys,
 *                          A = dS^T read M-major, B = K read N-major
 *                          (BM = 128: dQ[rows 64 w ..] = dS[rows 64 w ..] K,
 *                          m64nDk16),
 *       added into dq with float32 atomics (red.global.add.v2.f32), or
 *       (!ATOMIC) written as float32 to a shared tile in 32-column boxes,
 *       which the producer's thread adds into dq by TMA
 *       (cp.reduce.async.bulk.tensor .add) while the consumers go on
 *       (FlashAttention-3's way): either way each element of dq gets one add
 *       a key block, as in FlashAttention-2.  With dq_turns (atomics) the key
 *       blocks take turns (BwdSweep::wait_turn), so the adds come in key-block
 *       order.
 *
 * Shared-memory tiles use the forward's 128-byte-swizzled layout (see
 * attention_flash_wgmma.cu): element (r, d) of an R-row tile at byte
 * ((d / 64) R + r) 128 + ((d % 64 / 8) ^ (r % 8)) 16 + (d % 8) 2.  dS^T is
 * a (128 keys, BM queries) tile of that layout, two buffers, so one barrier
 * a step orders its writes and the other warpgroup's reads. */
#include "sm90_common.cuh"
#include "wgmma.cuh"

namespace as_flash {
namespace {

constexpr int WB_BN = 128;

/* BM: the query rows of a step, 64 or (D = 64) 128; ATOMIC: dQ added by the
 * consumers' atomics, else through a float32 tile in shared memory (DQB) */
template <int D, int BM, bool ATOMIC>
struct WbCfg {
    static constexpr uint32_t KB = WB_BN * D * 2; /* a K or V tile */
    static constexpr uint32_t QB = BM * D * 2; /* a Q or dO tile */
    static constexpr uint32_t SB = WB_BN * BM * 2; /* a dS^T tile */
    static constexpr uint32_t DQB = ATOMIC ? 0 : BM * D * 4; /* the step's dQ, 32-column boxes */
    static constexpr uint32_t oK = 0, oV = KB, oQ = 2 * KB, oO = oQ + 2 * QB, oS = oO + 2 * QB, oDq = oS + 2 * SB;
    static constexpr uint32_t oL = oDq + DQB, oDi = oL + 2 * BM * 4, oBar = oDi + 2 * BM * 4;
    /* barriers: K/V loaded, full[2], empty[2], K/V free, dQ full, dQ empty; + alignment slack */
    static constexpr size_t smem = (size_t)oBar + 8 * 8 + 1024;
};

/* the producer's threads that put lse and Di into shared memory (the full barriers' count) */
constexpr int WB_LOADERS = 64;

struct BwdMaps {
    CUtensorMap q, k, v, o, dq;
};

#ifdef AS_WGMMA_BODY
/* a (rows R) tile's k-th 16-column step, K-major operand */
template <int R>
__device__ __forceinline__ uint64_t kmajor(uint32_t tile, int kk)
{
    return smem_desc(tile + (kk >> 2) * R * 128 + (kk & 3) * 32, 16, 1024);
}
/* a (rows R) tile read with its rows as the K dimension (N- or M-major
 * operand): the k-th 16-row step */
template <int R>
__device__ __forceinline__ uint64_t mnmajor(uint32_t tile, int kk)
{
    return smem_desc(tile + kk * 2048, R * 128, 1024);
}
__device__ __forceinline__ void named_sync(int id, int threads)
{
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
#endif

/* REG: the warpgroup's K (1) or K and V (2) held in registers as the A
 * operands of S^T and dP^T, read from shared memory once instead of every
 * step (those m64n64 products with both operands in shared memory are
 * bound by its bandwidth); 0: both operands from shared memory.
 * ATOMIC: the consumers add dQ into dq with float32 atomics (the deterministic
 * turns need it); else they write it to a shared float32 tile, and a thread of
 * the producer warpgroup adds that into dq by TMA (cp.reduce.async.bulk), off
 * the consumers' path, as FlashAttention-3 does.
 * OVERLAP: S^T and dP^T are committed apart, P^T is made while dP^T's product
 * runs and dV's product runs while dS^T is made; else all after both. */
template <typename T, int D, int BM, int REG, bool PERSIST, bool ATOMIC, bool OVERLAP>
__global__ void __launch_bounds__(384, 1) flash_bwd_wgmma_kernel(const BParams B, const __grid_constant__ BwdMaps maps)
{
#ifdef AS_WGMMA_BODY
    static_assert(BM == 64 || (BM == 128 && D == 64 && REG == 0), "flash-bwd/wgmma: BM 128 is D = 64's, operands in shared memory");
    using C = WbCfg<D, BM, ATOMIC>;
    /* dQ = dS K, split between the consumers: at BM = 64 by its columns (DQN = D / 2 each),
     * at BM = 128 by its rows (64 each, all D columns) */
    constexpr int DQN = BM == 64 ? D / 2 : D;
    extern __shared__ unsigned char smem_raw[];
    const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023u) & ~1023u;
    const uint32_t sK = base + C::oK, sV = base + C::oV, sQ = base + C::oQ, sO = base + C::oO, sS = base + C::oS;
    const uint32_t sDq = base + C::oDq;
    float *sL = reinterpret_cast<float *>(smem_raw + (base - raw) + C::oL);
    float *sDi = reinterpret_cast<float *>(smem_raw + (base - raw) + C::oDi);
    const uint32_t kvbar = base + C::oBar, full = kvbar + 8, empty = full + 16, kvfree = empty + 16;
    const uint32_t dqfull = kvfree + 8, dqempty = dqfull + 8;

    const KParams &P = B.f;
    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int tiles = (int)(B.nn * P.B * (P.H / P.G)); /* < 2^31: the launch checks */
    const int Lq = (int)P.Lq, Lk = (int)P.Lk;

    if (tid == 0) {
        mbar_init(kvbar, 1);
        mbar_init(kvfree, 256);
        for (int st = 0; st < 2; st++) mbar_init(full + 8 * st, WB_LOADERS), mbar_init(empty + 8 * st, 256);
        mbar_init(dqfull, 256);
        mbar_init(dqempty, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 2) { /* the producer: threads 0 .. 63 load, thread 64 adds dQ (!ATOMIC) */
        /* 168 x 384 at launch = 128 x 24 + 256 x 240: the consumers' increase takes what this
         * releases, no more (under PERSIST the producer's loop state spills a few words) */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
        const int t = tid - 256;
        if (!ATOMIC && t == WB_LOADERS) {
            /* each step's dQ tile, once the consumers have written it, added into dq: D / 32
             * boxes of BM rows (TMA leaves out rows past Lq); the tile is free again once
             * read */
            int g = 0;
            for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
                const BwdSweep<WB_BN, BM> sw_(P, B.nn, tile, B.nmajor);
                for (int it = 0; it < sw_.iters; it++, g++) {
                    mbar_wait(dqfull, g & 1);
#pragma unroll
                    for (int c = 0; c < D / 32; c++)
                        tma_reduce_add(&maps.dq, sDq + c * BM * 128, 32 * c, sw_.row0(it), (int)sw_.head(it), (int)sw_.b);
                    bulk_commit();
                    bulk_wait_read();
                    mbar_arrive(dqempty);
                }
                if constexpr (!PERSIST) break;
            }
            bulk_wait();
            return;
        }
        if (t >= WB_LOADERS) return;
        int g = 0; /* steps so far over the CTA's tiles: the ring's stage and phase */
        for (int tile = blockIdx.x, k = 0; tile < tiles; tile += gridDim.x, k++) {
            const BwdSweep<WB_BN, BM> sw_(P, B.nn, tile, B.nmajor);
            const int64_t b = sw_.b, hk = sw_.hk;
            if (t == 0) {
                if (k > 0) mbar_wait(kvfree, (k - 1) & 1); /* the last tile's K, V read for the last time */
                mbar_expect_tx(kvbar, 2 * C::KB);
                for (int db = 0; db < D / 64; db++) {
                    tma_load(sK + db * WB_BN * 128, &maps.k, db * 64, sw_.n0, (int)hk, (int)b, kvbar);
                    tma_load(sV + db * WB_BN * 128, &maps.v, db * 64, sw_.n0, (int)hk, (int)b, kvbar);
                }
            }
            for (int it = 0; it < sw_.iters; it++, g++) {
                const int st = g & 1;
                if (g >= 2) mbar_wait(empty + 8 * st, ((g >> 1) - 1) & 1);
                const int h = (int)sw_.head(it), i0 = sw_.row0(it);
#pragma unroll
                for (int u = t; u < BM; u += WB_LOADERS) {
                    const int i = i0 + u;
                    const int64_t r = (b * P.H + h) * P.Lq + i;
                    sL[st * BM + u] = i < Lq ? B.lse[r] * LOG2E : INFINITY;
                    sDi[st * BM + u] = i < Lq ? B.di[r] : 0.0f;
                }
                if (t == 0) {
                    mbar_expect_tx(full + 8 * st, 2 * C::QB); /* thread 0's arrival */
                    for (int db = 0; db < D / 64; db++) {
                        tma_load(sQ + st * C::QB + db * BM * 128, &maps.q, db * 64, i0, h, (int)b, full + 8 * st);
                        tma_load(sO + st * C::QB + db * BM * 128, &maps.o, db * 64, i0, h, (int)b, full + 8 * st);
                    }
                } else {
                    mbar_arrive(full + 8 * st);
                }
            }
            if constexpr (!PERSIST) break;
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
    const uint32_t kw = sK + wg * 64 * 128, vw = sV + wg * 64 * 128; /* the warpgroup's 64 keys */
    /* accumulator element 4 nt + 2 r + c of an m64nN product: row 16 warp + lane / 4 + 8 r,
     * column 8 nt + 2 (lane % 4) + c */
    const int krow = 64 * wg + 16 * warp + (lane >> 2); /* the thread's first key in the block */
    const float sl2 = P.sl2;
    int g = 0; /* steps so far over the CTA's tiles, as the producer counts them */
    for (int tile = blockIdx.x, k = 0; tile < tiles; tile += gridDim.x, k++) {
        const BwdSweep<WB_BN, BM> sw_(P, B.nn, tile, B.nmajor);
        const int64_t bhk = sw_.bhk, b = sw_.b;
        const int off = sw_.off, n0 = sw_.n0, iters = sw_.iters;
        float dk[D / 2], dv[D / 2];
#pragma unroll
        for (int x = 0; x < D / 2; x++) dk[x] = dv[x] = 0.0f;
        mbar_wait(kvbar, k & 1);
        /* K, V fragments (the m16n8k16 A fragment of the warp's 16 keys, k-step kk:
         * ldmatrix rows lane % 16, 16-byte chunk 2 kk + lane / 16) */
        uint32_t kf[REG >= 1 ? D / 16 : 1][4], vf[REG >= 2 ? D / 16 : 1][4];
        if constexpr (REG >= 1) {
            const int r = 64 * wg + 16 * warp + (lane & 15);
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                const int c = 2 * kk + (lane >> 4);
                const uint32_t at = (uint32_t)(((c >> 3) * WB_BN + r) * 128 + (((c & 7) ^ (r & 7)) << 4));
                ldsm_x4(kf[kk], sK + at);
                if constexpr (REG >= 2) ldsm_x4(vf[kk], sV + at);
            }
        }

        for (int it = 0; it < iters; it++, g++) {
            const int st = g & 1;
            const int h = (int)sw_.head(it), i0 = sw_.row0(it);
            const uint32_t q = sQ + st * C::QB, o = sO + st * C::QB, ds_t = sS + st * C::SB;
            mbar_wait(full + 8 * st, (g >> 1) & 1);

            float s[BM / 2], dp[BM / 2];
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                if constexpr (REG >= 1) Wgmma<T, BM>::rsk(s, kf[kk], kmajor<BM>(q, kk), kk > 0);
                else Wgmma<T, BM>::ss(s, kmajor<WB_BN>(kw, kk), kmajor<BM>(q, kk), kk > 0);
            }
            if constexpr (OVERLAP) wg_commit();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                if constexpr (REG >= 2) Wgmma<T, BM>::rsk(dp, vf[kk], kmajor<BM>(o, kk), kk > 0);
                else Wgmma<T, BM>::ss(dp, kmajor<WB_BN>(vw, kk), kmajor<BM>(o, kk), kk > 0);
            }
            wg_commit();
            if constexpr (OVERLAP) {
                wg_wait<1>(); /* S^T; dP^T may still run */
                reg_fence(s);
            } else {
                wg_wait<0>();
                reg_fence(s);
                reg_fence(dp);
            }

            /* P^T, then dS^T = P^T o (dP^T - Di); keys past Lk and, causal, past each query's
             * diagonal give 0 */
            const float *l2 = sL + st * BM, *dis = sDi + st * BM;
#pragma unroll
            for (int nt = 0; nt < BM / 8; nt++)
#pragma unroll
                for (int r = 0; r < 2; r++)
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const int x = 4 * nt + 2 * r + c, j = n0 + krow + 8 * r;
                        const int il = 8 * nt + ((lane & 3) << 1) + c;
                        const bool vis = j < Lk && (!P.causal || j <= i0 + il + off);
                        s[x] = vis ? ex2(fmaf(s[x], sl2, -l2[il])) : 0.0f;
                    }
            uint32_t pa[BM / 16][4], da[BM / 16][4];
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++)
#pragma unroll
                for (int x = 0; x < 4; x++) pa[kk][x] = Mma<T>::pack(s[8 * kk + 2 * x], s[8 * kk + 2 * x + 1]);
            /* OVERLAP: dV's product takes P^T while dP^T's finishes, and runs while dS^T is made */
            if constexpr (OVERLAP) {
                wg_fence();
#pragma unroll
                for (int kk = 0; kk < BM / 16; kk++) Wgmma<T, D>::rs(dv, pa[kk], mnmajor<BM>(o, kk), 1);
                wg_commit();
                wg_wait<1>(); /* dP^T */
                reg_fence(dp);
            }
#pragma unroll
            for (int nt = 0; nt < BM / 8; nt++)
#pragma unroll
                for (int x = 4 * nt; x < 4 * nt + 4; x++) dp[x] = s[x] * (dp[x] - dis[8 * nt + ((lane & 3) << 1) + (x & 1)]);
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++)
#pragma unroll
                for (int x = 0; x < 4; x++) da[kk][x] = Mma<T>::pack(dp[8 * kk + 2 * x], dp[8 * kk + 2 * x + 1]);
            if constexpr (!OVERLAP) {
                wg_fence();
#pragma unroll
                for (int kk = 0; kk < BM / 16; kk++) Wgmma<T, D>::rs(dv, pa[kk], mnmajor<BM>(o, kk), 1);
                wg_commit();
            }

            /* dS^T to shared memory while that runs, before the dK product takes da as its A
             * operand (an in-flight wgmma's A registers may not be touched, not even read):
             * rows krow, krow + 8; query chunk nt (of 8, in 64-query column blocks nt / 8).
             * da[kk][x] holds n-tile 2 kk + (x >> 1), row half x & 1. */
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++)
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    const int row = krow + 8 * (x & 1), nt = 2 * kk + (x >> 1);
                    const uint32_t a =
                        ds_t + ((nt >> 3) * WB_BN + row) * 128 + (((nt & 7) ^ (row & 7)) << 4) + ((lane & 3) << 2);
                    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(a), "r"(da[kk][x]) : "memory");
                }
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++) Wgmma<T, D>::rs(dk, da[kk], mnmajor<BM>(q, kk), 1);
            wg_commit();
            proxy_fence();
            named_sync(3, 256); /* both consumers' dS^T written */
            /* over the block's 128 keys, BM = 64: dQ[:, half wg] = dS K[:, half wg];
             * BM = 128: dQ[rows 64 wg .., :] = dS[rows 64 wg .., :] K (A: dS^T's column block wg) */
            float dq[DQN / 2];
            const uint32_t dq_a = ds_t + (BM == 64 ? 0 : wg * WB_BN * 128);
            const uint32_t dq_b = sK + (BM == 128 ? 0 : DQN == 64 ? wg * WB_BN * 128 : wg * DQN * 2);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < WB_BN / 16; kk++)
                Wgmma<T, DQN>::sst(dq, mnmajor<WB_BN>(dq_a, kk), mnmajor<WB_BN>(dq_b, kk), kk > 0);
            wg_commit();
            wg_wait<0>();
            reg_fence(dq);
            reg_fence(dk);
            reg_fence(dv);
            reg_fence(pa);
            reg_fence(da);
            mbar_arrive(empty + 8 * st); /* Q and dO of this stage are done with */
            if (it == iters - 1) mbar_arrive(kvfree); /* and K, V: the producer may load the next tile's */

            if constexpr (!ATOMIC) {
                /* into the shared tile in the dq map's boxes (128-byte swizzle) once the
                 * last step's is read; the producer's thread adds it */
                if (g > 0) mbar_wait(dqempty, (g - 1) & 1);
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int row = (BM == 64 ? 0 : 64 * wg) + 16 * warp + (lane >> 2) + 8 * r;
#pragma unroll
                    for (int nt = 0; nt < DQN / 8; nt++) {
                        const int col = (BM == 64 ? wg * DQN : 0) + 8 * nt + ((lane & 3) << 1);
                        const uint32_t a = sDq + (col >> 5) * BM * 128 + row * 128 +
                                           ((((col & 31) >> 2) ^ (row & 7)) << 4) + ((col & 3) << 2);
                        asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(dq[4 * nt + 2 * r] * P.scale),
                                     "f"(dq[4 * nt + 2 * r + 1] * P.scale)
                                     : "memory");
                    }
                }
                proxy_fence(); /* TMA reads it through the async proxy */
                mbar_arrive(dqfull);
            } else {
                /* deterministic (BM = 64 only): wait for the lower key blocks' adds */
                int *turn = nullptr;
                if constexpr (BM == 64) turn = sw_.turn(B, it);
                if (turn) {
                    if (tid == 0) sw_.wait_turn(turn);
                    named_sync(4, 256);
                }
                float *dqg = B.dq + ((b * P.H + h) * P.Lq) * D + (BM == 64 ? wg * DQN : 0) + ((lane & 3) << 1);
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int i = i0 + (BM == 64 ? 0 : 64 * wg) + 16 * warp + (lane >> 2) + 8 * r;
                    if (i < Lq) {
#pragma unroll
                        for (int nt = 0; nt < DQN / 8; nt++)
                            atomicAdd(reinterpret_cast<float2 *>(dqg + (int64_t)i * D + nt * 8),
                                      make_float2(dq[4 * nt + 2 * r] * P.scale, dq[4 * nt + 2 * r + 1] * P.scale));
                    }
                }
                if (turn) {
                    __threadfence();
                    named_sync(4, 256);
                    if (tid == 0) sw_.pass_turn(turn);
                }
            }
        }

        if (iters == 0) mbar_arrive(kvfree);

        /* dK = scale dS^T Q, dV: the thread's two key rows, in dkv_dtype */
        const int64_t kv0 = bhk * P.Lk * D;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int j = n0 + krow + 8 * r;
            if (j >= Lk) continue;
#pragma unroll
            for (int nt = 0; nt < D / 8; nt++) {
                const int64_t e = kv0 + (int64_t)j * D + nt * 8 + ((lane & 3) << 1);
                store_f2(B.dk, B.dkv_dtype, e, dk[4 * nt + 2 * r] * P.scale, dk[4 * nt + 2 * r + 1] * P.scale);
                store_f2(B.dv, B.dkv_dtype, e, dv[4 * nt + 2 * r], dv[4 * nt + 2 * r + 1]);
            }
        }
        if constexpr (!PERSIST) break;
    }
#endif
}

/* bm: the step's query rows, the Q and dO boxes; *dq_tma: dq has its map too,
 * made only where want_dq (else its adds are atomics) */
bool make_bwd_maps(BwdMaps *m, const as_attn_bwd_params *p, int bm, bool want_dq, bool *dq_tma)
{
    const as_attn_params *f = &p->f;
    const bool f16 = f->q.dtype == AS_F16;
    const int D = (int)f->D;
    *dq_tma = want_dq && make_f32_map(&m->dq, p->dq, f->B, f->H, f->Lq, D, bm);
    return make_map(&m->q, f->q, f->B, f->H, f->Lq, D, bm, f16) &&
           make_map(&m->k, f->k, f->B, f->Hkv, f->Lk, D, WB_BN, f16) &&
           make_map(&m->v, f->v, f->B, f->Hkv, f->Lk, D, WB_BN, f16) &&
           make_map(&m->o, p->dout, f->B, f->H, f->Lq, D, bm, f16);
}

/* PERSIST: one CTA an SM (the kernel's occupancy), each looping over the
 * tiles blockIdx, blockIdx + grid, ...; else one CTA a tile */
template <typename T, int D, int BM, int REG, bool PERSIST, bool ATOMIC, bool OVERLAP>
int launch(BParams bp, const BwdMaps &maps, cudaStream_t s)
{
    using C = WbCfg<D, BM, ATOMIC>;
    static uint64_t done;
    const void *fn = (const void *)flash_bwd_wgmma_kernel<T, D, BM, REG, PERSIST, ATOMIC, OVERLAP>;
    int e = smem_optin(fn, C::smem, &done);
    if (e) return e;
    bp.nn = (bp.f.Lk + WB_BN - 1) / WB_BN;
    int64_t blocks = bp.nn * bp.f.B * (bp.f.H / bp.f.G);
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    if (PERSIST && blocks > sm_count()) blocks = sm_count();
    flash_bwd_wgmma_kernel<T, D, BM, REG, PERSIST, ATOMIC, OVERLAP><<<(unsigned)blocks, 384, C::smem, s>>>(bp, maps);
    return (int)cudaGetLastError();
}

/* The step's query rows: 128 at D = 64 (twice the products' N and half the
 * steps, their barriers and softmax passes, a key block's dQ adds split by
 * rows), unless deterministic dQ (its turns count 64-row blocks), K and V in
 * registers (no room beside 128-wide S^T and dP^T) or -bm64 asks for 64. */
int step_rows(int64_t D, bool dq_turns, int variant)
{
    return D == 64 && !dq_turns && !(variant & (WB_REG | WB_BM64)) ? 128 : 64;
}

} // namespace

bool wgmma_bwd_ok(const as_attn_bwd_params *p, bool probe_tma, int variant)
{
    const as_attn_params *f = &p->f;
    if (!wgmma_device() || f->mask.data || f->dropout > 0.0f || p->dbias || !(f->scale > 0.0f)) return false;
    if ((f->q.dtype != AS_BF16 && f->q.dtype != AS_F16) || p->dout.dtype != f->q.dtype) return false;
    if (f->D != f->Dv || (f->D != 64 && f->D != 128) || f->Lq > 0x7fffffff - 128 || f->Lk > 0x7fffffff - WB_BN)
        return false;
    BwdMaps maps;
    bool dq_tma;
    return !probe_tma || make_bwd_maps(&maps, p, step_rows(p->f.D, p->dq_turns != nullptr, variant), false, &dq_tma);
}

/* WB_REG (D = 64, BM = 64): K and V held in registers, compiled without spills, a
 * tuning variant (ATTNSWAP_FLASH_BWD=wgmma-reg); the default reads every
 * operand from shared memory, as measured in docs/performance.md.  At
 * D = 128 even K alone (32 more registers) makes ptxas spill and serialise
 * the wgmma (C7512).  WB_PERSIST: the persistent grid. */
template <typename T, bool PERSIST, bool ATOMIC, bool OVERLAP>
int launch_v(const BParams &bp, const BwdMaps &maps, int variant, int bm, cudaStream_t s)
{
    if (bp.f.D == 128) return launch<T, 128, 64, 0, PERSIST, ATOMIC, OVERLAP>(bp, maps, s);
    if (bm == 128) return launch<T, 64, 128, 0, PERSIST, ATOMIC, OVERLAP>(bp, maps, s);
    return variant & WB_REG ? launch<T, 64, 64, 2, PERSIST, ATOMIC, OVERLAP>(bp, maps, s)
                            : launch<T, 64, 64, 0, PERSIST, ATOMIC, OVERLAP>(bp, maps, s);
}

/* dQ by TMA where WB_DQ_TMA asks, unless the deterministic turns need the
 * atomics or dq has no map.  The persistent grid never takes deterministic
 * dQ: a CTA waiting for the tile before would spin while that tile's CTA
 * might not be resident.  WB_OVERLAP: the softmax under the products. */
template <typename T, bool PERSIST>
int launch_p(const BParams &bp, const BwdMaps &maps, int variant, int bm, bool dq_tma, cudaStream_t s)
{
    const bool atomic = bp.dq_turns || !dq_tma || !(variant & WB_DQ_TMA);
    if (variant & WB_OVERLAP)
        return atomic ? launch_v<T, PERSIST, true, true>(bp, maps, variant, bm, s)
                      : launch_v<T, PERSIST, false, true>(bp, maps, variant, bm, s);
    return atomic ? launch_v<T, PERSIST, true, false>(bp, maps, variant, bm, s)
                  : launch_v<T, PERSIST, false, false>(bp, maps, variant, bm, s);
}

template <typename T>
int launch_d(const BParams &bp, const BwdMaps &maps, int variant, int bm, bool dq_tma, cudaStream_t s)
{
    if ((variant & WB_PERSIST) && !bp.dq_turns) return launch_p<T, true>(bp, maps, variant, bm, dq_tma, s);
    return launch_p<T, false>(bp, maps, variant, bm, dq_tma, s);
}

int launch_bwd_wgmma(const BParams &bp, const as_attn_bwd_params *p, int variant, cudaStream_t s, bool *taken)
{
    BwdMaps maps;
    bool dq_tma;
    if (!(variant & WB_SET)) variant = WB_DQ_TMA | (bp.f.D == 64 ? WB_OVERLAP : 0);
    const int bm = step_rows(bp.f.D, bp.dq_turns != nullptr, variant);
    const bool want_dq = (variant & WB_DQ_TMA) && !bp.dq_turns;
    if (!(*taken = make_bwd_maps(&maps, p, bm, want_dq, &dq_tma))) return 0;
    BParams b = bp;
    b.nmajor = (variant & WB_NMAJOR) != 0;
    return p->f.q.dtype == AS_F16 ? launch_d<__half>(b, maps, variant, bm, dq_tma, s)
                                  : launch_d<__nv_bfloat16>(b, maps, variant, bm, dq_tma, s);
}

} // namespace as_flash
