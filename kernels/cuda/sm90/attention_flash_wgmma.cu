/* FlashAttention forward for Hopper (sm_90a): wgmma.mma_async instead of
 * mma.sync.  Built for sm_90a only (CMakeLists.txt), used on devices of
 * compute capability 9.0 for plain attention (no mask, bias or dropout;
 * causal or not), F16/BF16, D = Dv in {64, 128}; everything else stays on
 * the mma.sync kernel in ../attention_flash.cu, whose semantics this one
 * shares (zeros for a row that sees nothing, causal j <= i + Lk - Lq, GQA).
 *
 * Two kernels, one consumer (WgConsumer): a warpgroup of 128 threads owns 64
 * query rows and computes, per key tile of BN keys,
 *
 *   S = Q K^T   wgmma m64nBNk16, A = Q and B = K from shared memory (K-major)
 *   softmax     in registers, online, exp2 domain (as the mma.sync kernel)
 *   O += P V    wgmma m64nDk16, A = P from registers (the S accumulators
 *               repacked), B = V from shared memory (N-major: imm-trans-b)
 *
 * with S of the next tile and PV of this one in flight together, the softmax
 * under the PV product.  Neither K nor V passes through registers.
 *
 *   flash_wgmma_ws_kernel  (flash/wgmma-ws, the one the dispatcher takes)
 *       a producer warpgroup loads Q, K, V with TMA into a 3-stage mbarrier
 *       ring; two consumer warpgroups (240 registers each) take turns on the
 *       tensor cores (ping-pong); BM = 128, BN = 128.
 *   flash_wgmma_kernel     (flash/wgmma: operands TMA refuses)
 *       NWG warpgroups load their own tiles with cp.async, 2 stages, one
 *       barrier a tile.
 *
 * Shared-memory layout of a (R rows, D) tile: D splits into 64-element
 * blocks; element (r, d) sits at byte
 *     ((d / 64) R + r) 128 + ((d % 64 / 8) ^ (r % 8)) 16 + (d % 8) 2,
 * i.e. 8-row x 128-byte swizzle atoms (1024-byte aligned), stacked along
 * rows, one stack per 64 columns.  For a K-major operand (Q, K) that is the
 * canonical SWIZZLE_128B layout with stride byte offset 1024 (8 rows to the
 * next 8); the k-th 16-column step starts (k / 4) R 128 + (k % 4) 32 bytes in.
 * Read as N-major (V: N = d, K = key), the same bytes have leading byte
 * offset R 128 (next 64 columns) and stride byte offset 1024 (next 8 keys);
 * the k-th 16-key step starts k 2048 bytes in. */
#include "sm90_common.cuh"
#include "wgmma.cuh"

namespace as_flash {
namespace {

template <int D, int BN, int NWG> /* NWG warpgroups a CTA */
struct WCfg {
    static constexpr int NTH = 128 * NWG, BM = 64 * NWG;
    static constexpr int QB = BM * D * 2, KB = BN * D * 2; /* tile bytes */
    static constexpr size_t smem = (size_t)QB + 4 * KB + 1024; /* + alignment slack */
};

#ifdef AS_WGMMA_BODY
/* One warpgroup's share of the attention: 64 query rows (the warp's 16 at
 * wrow0), O and the online softmax in registers, P of two tiles (pa: read by
 * the PV product in flight, pn: being made).  Q, K, V are tiles in the
 * 128-byte-swizzled layout (header comment) at shared addresses given per call. */
template <typename T, int D, int BN>
struct WgConsumer {
    static constexpr int NT = BN / 8, DT = D / 8;
    float o[D / 2], s[BN / 2], m_r[2], l_r[2];
    uint32_t pa[BN / 16][4], pn[BN / 16][4];
    int wrow0, lane;
    float sl2;

    __device__ __forceinline__ WgConsumer(int wrow0_, int lane_, float sl2_) : wrow0(wrow0_), lane(lane_), sl2(sl2_)
    {
#pragma unroll
        for (int i = 0; i < D / 2; i++) o[i] = 0.0f;
        m_r[0] = m_r[1] = -INFINITY, l_r[0] = l_r[1] = 0.0f;
    }

    /* S = Q K^T: q, the warpgroup's 64 rows of a Q tile of QR rows; k, a K tile of BN rows */
    template <int QR>
    __device__ __forceinline__ void issue_s(uint32_t q, uint32_t k)
    {
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            Wgmma<T, BN>::ss(s, smem_desc(q + (kk >> 2) * QR * 128 + (kk & 3) * 32, 16, 1024),
                             smem_desc(k + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
        wg_commit();
    }

    /* O += P V: v, a V tile of BN rows */
    __device__ __forceinline__ void issue_pv(uint32_t v)
    {
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) Wgmma<T, D>::rs(o, pa[kk], smem_desc(v + kk * 2048, BN * 128, 1024), 1);
        wg_commit();
    }

    /* masks, online softmax and P (into pn) of the tile at key j0, from s; alpha rescales O */
    __device__ __forceinline__ void softmax(int j0, int Lk, int off, bool causal, float (&alpha)[2])
    {
        /* s[4 nt + 2 r + c]: row wrow0 + lane / 4 + 8 r, key j0 + 8 nt + 2 (lane % 4) + c */
        if (j0 + BN > Lk || (causal && j0 + BN - 1 > wrow0 + off)) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int lm = tile_limit(wrow0 + (lane >> 2) + 8 * r, j0, Lk, off, causal, BN);
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int c = 0; c < 2; c++)
                        if (nt * 8 + ((lane & 3) << 1) + c > lm) s[4 * nt + 2 * r + c] = -INFINITY;
            }
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = m_r[r];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[4 * nt + 2 * r], s[4 * nt + 2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float ms = mx == -INFINITY ? 0.0f : mx * sl2;
            alpha[r] = ex2(m_r[r] * sl2 - ms);
            m_r[r] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const float p = ex2(fmaf(s[4 * nt + 2 * r + c], sl2, -ms));
                    sum += p;
                    s[4 * nt + 2 * r + c] = p;
                }
            l_r[r] = l_r[r] * alpha[r] + sum;
        }
        /* k-step kk of P V takes n-tiles 2 kk, 2 kk + 1 */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            pn[kk][0] = Mma<T>::pack(s[8 * kk + 0], s[8 * kk + 1]);
            pn[kk][1] = Mma<T>::pack(s[8 * kk + 2], s[8 * kk + 3]);
            pn[kk][2] = Mma<T>::pack(s[8 * kk + 4], s[8 * kk + 5]);
            pn[kk][3] = Mma<T>::pack(s[8 * kk + 6], s[8 * kk + 7]);
        }
    }

    /* after the PV product: O rescaled to the new maxima, the next P becomes current */
    __device__ __forceinline__ void next(const float (&alpha)[2])
    {
#pragma unroll
        for (int nt = 0; nt < DT; nt++) {
            o[4 * nt] *= alpha[0], o[4 * nt + 1] *= alpha[0];
            o[4 * nt + 2] *= alpha[1], o[4 * nt + 3] *= alpha[1];
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
            for (int x = 0; x < 4; x++) pa[kk][x] = pn[kk][x];
    }

    /* S0 and P0: the first tile, nothing else in flight */
    template <int QR>
    __device__ __forceinline__ void first(uint32_t q, uint32_t k, int Lk, int off, bool causal)
    {
        float alpha[2];
        wg_fence();
        issue_s<QR>(q, k);
        wg_wait<0>();
        reg_fence(s);
        softmax(0, Lk, off, causal, alpha);
        next(alpha);
    }

    /* S[n + 1] = Q K[n + 1]^T and O += P[n] V[n] in flight together, the softmax of
     * S[n + 1] under the PV product (FlashAttention-3's intra-warpgroup overlap) */
    template <int QR>
    __device__ __forceinline__ void step(uint32_t q, uint32_t k_next, uint32_t v, int j_next, int Lk, int off,
                                         bool causal)
    {
        issue<QR>(q, k_next, v);
        finish(j_next, Lk, off, causal);
    }
    template <int QR>
    __device__ __forceinline__ void issue(uint32_t q, uint32_t k_next, uint32_t v)
    {
        wg_fence();
        issue_s<QR>(q, k_next);
        issue_pv(v);
    }
    __device__ __forceinline__ void finish(int j_next, int Lk, int off, bool causal)
    {
        float alpha[2];
        wg_wait<1>(); /* S[n + 1] (committed first) */
        reg_fence(s);
        softmax(j_next, Lk, off, causal, alpha);
        wg_wait<0>(); /* P[n] V[n] */
        reg_fence(o);
        reg_fence(pa);
        next(alpha);
    }

    __device__ __forceinline__ void last(uint32_t v)
    {
        wg_fence();
        issue_pv(v);
        wg_wait<0>();
        reg_fence(o);
        reg_fence(pa);
    }

    /* A tile's boundary (flash/wgmma-xt): its last P V product and the next tile's S0
     * issued together, P V first; then the old tile is stored while S0 runs, and the
     * new tile's softmax starts from fresh statistics.  (S0 first, with the store
     * after both, made ptxas serialise every wgmma of the kernel, C7513.) */
    template <int QR>
    __device__ __forceinline__ void issue_boundary(uint32_t v_last, uint32_t q_next, uint32_t k_next)
    {
        wg_fence();
        issue_pv(v_last);
        issue_s<QR>(q_next, k_next);
    }
    __device__ __forceinline__ void finish_boundary(T *out, int64_t rs, int Lq, float *lse, int wrow_next, int Lk,
                                                    int off, bool causal)
    {
        float alpha[2];
        wg_wait<1>(); /* the old tile's last P V */
        reg_fence(o);
        reg_fence(pa);
        store(out, rs, Lq, lse);
#pragma unroll
        for (int i = 0; i < D / 2; i++) o[i] = 0.0f;
        m_r[0] = m_r[1] = -INFINITY, l_r[0] = l_r[1] = 0.0f;
        wrow0 = wrow_next;
        wg_wait<0>(); /* the new tile's S0 */
        reg_fence(s);
        softmax(0, Lk, off, causal, alpha);
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
            for (int x = 0; x < 4; x++) pa[kk][x] = pn[kk][x];
    }

    /* out = O / l, rows rs apart; zeros where nothing was seen.  lse (or NULL):
     * the head's row log-sum-exps, m scale + ln l (+inf where nothing was seen),
     * as the mma.sync kernel keeps them for the backward */
    __device__ __forceinline__ void store(T *out, int64_t rs, int Lq, float *lse) { store(out, rs, Lq, lse, wrow0, m_r, l_r); }
    __device__ __forceinline__ void store(T *out, int64_t rs, int Lq, float *lse, int w0, const float (&m)[2],
                                          const float (&ls)[2])
    {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float l = ls[r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            const int i = w0 + (lane >> 2) + 8 * r;
            if (lse && i < Lq && (lane & 3) == 0) lse[i] = l > 0.0f ? m[r] * (sl2 * (1.0f / LOG2E)) + logf(l) : INFINITY;
            if (i < Lq) {
                uint32_t *op = reinterpret_cast<uint32_t *>(out + (int64_t)i * rs + ((lane & 3) << 1));
#pragma unroll
                for (int nt = 0; nt < DT; nt++) op[nt * 4] = Mma<T>::pack(o[4 * nt + 2 * r] * inv, o[4 * nt + 2 * r + 1] * inv);
            }
        }
    }
};
#endif

template <typename T, int D, int BN, int NWG>
__global__ void __launch_bounds__(128 * NWG, 1) flash_wgmma_kernel(const KParams P)
{
#ifdef AS_WGMMA_BODY
    using C = WCfg<D, BN, NWG>;
    constexpr int NTH = C::NTH, BM = C::BM;
    /* the first LTH threads load the tiles, RPI rows a pass */
    constexpr int LTH = NTH < 256 ? NTH : 256, CH = D / 8, RPI = LTH / CH;
    static_assert(RPI % 8 == 0 && BM % RPI == 0 && BN % RPI == 0 && BN % 16 == 0, "tile shape");
    extern __shared__ unsigned char smem_raw[];
    const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u, sK = sQ + C::QB, sV = sK + 2 * C::KB;

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const FlashBlock<T> blk(P, blockIdx.x, BM);
    const int Lq = blk.Lq, Lk = blk.Lk, off = blk.off, row0 = blk.row0;
    if (blk.n_end <= 0) return blk.zero_rows(P, tid, NTH, D);
    const int n_tiles = (blk.n_end + BN - 1) / BN;
    const T *qg = blk.q(P), *kg = blk.k(P), *vg = blk.v(P);
    T *out = blk.out(P);
    const int64_t qs = P.q.s2, ks = P.k.s2, vs = P.v.s2;

    /* the thread's share of every tile load (the first LTH threads): rows lr + RPI it,
     * chunk lc (RPI is a multiple of 8: one swizzle for all of them) */
    const int lr = tid / CH, lc = tid % CH;
    const bool loader = NTH == LTH || tid < LTH;
    const uint32_t sw = (uint32_t)(lr * 128 + (((lc & 7) ^ (lr & 7)) << 4));
    const uint32_t q_st = sw + (uint32_t)((lc >> 3) * BM * 128), kv_st = sw + (uint32_t)((lc >> 3) * BN * 128);
    const T *q_ld = qg + (int64_t)(row0 + lr) * qs + lc * 8;
    const T *k_ld = kg + (int64_t)lr * ks + lc * 8;
    const T *v_ld = vg + (int64_t)lr * vs + lc * 8;

    /* prologue: {Q, K0}, {V0}, {K1} */
    if (loader) load_rows<BM, RPI, 128>(sQ + q_st, q_ld, qs, row0, lr, Lq, qg);
    if (loader) load_rows<BN, RPI, 128>(sK + kv_st, k_ld, ks, 0, lr, Lk, kg);
    cp_async_commit();
    if (loader) load_rows<BN, RPI, 128>(sV + kv_st, v_ld, vs, 0, lr, Lk, vg);
    cp_async_commit();
    if (loader && n_tiles > 1) load_rows<BN, RPI, 128>(sK + C::KB + kv_st, k_ld + (int64_t)BN * ks, ks, BN, lr, Lk, kg);
    cp_async_commit();

    /* Every wgmma is issued on a path all threads take (ptxas serialises the
     * wgmma of a function with one under a branch): tiles a warpgroup's rows do
     * not see (causal) are computed and masked, not skipped. */
    WgConsumer<T, D, BN> c(row0 + 64 * wg + 16 * warp, lane, P.sl2);
    const uint32_t q = sQ + wg * 64 * 128;
    cp_async_wait<2>(); /* Q, K0 */
    proxy_fence();
    __syncthreads();
    c.template first<BM>(q, sK, Lk, off, P.causal);

    /* tile n: K[n + 2] and V[n + 1] load during it, so one barrier a tile */
    for (int n = 0; n + 1 < n_tiles; n++) {
        cp_async_wait<0>(); /* V[n], K[n + 1] */
        proxy_fence();
        __syncthreads(); /* ... for all; all are done with K[n] and V[n - 1] */
        if (loader && n + 2 < n_tiles)
            load_rows<BN, RPI, 128>(sK + (n & 1) * C::KB + kv_st, k_ld + (int64_t)(n + 2) * BN * ks, ks, (n + 2) * BN, lr, Lk, kg);
        if (loader) load_rows<BN, RPI, 128>(sV + ((n + 1) & 1) * C::KB + kv_st, v_ld + (int64_t)(n + 1) * BN * vs, vs, (n + 1) * BN, lr, Lk, vg);
        cp_async_commit();
        c.template step<BM>(q, sK + ((n + 1) & 1) * C::KB, sV + (n & 1) * C::KB, (n + 1) * BN, Lk, off, P.causal);
    }
    cp_async_wait<0>(); /* V[last] */
    proxy_fence();
    __syncthreads();
    c.last(sV + ((n_tiles - 1) & 1) * C::KB);
    c.store(out, P.os2, Lq, P.lse ? P.lse + blk.bh * P.Lq : nullptr);
#endif
}

/* q, k, v as the tensor memory accelerator sees them: (D, L, heads, B), boxes
 * of 64 columns (128 bytes, the swizzle's width) by 64 (q) or BN (k, v) rows */
struct TmaMaps {
    CUtensorMap q, k, v;
};

/* The warp-specialised kernel (FlashAttention-3's structure): a producer warpgroup
 * whose one thread loads Q and the K, V tiles with TMA into a 3-stage ring
 * (mbarriers: full when a tile's bytes landed, empty when both consumers are
 * done with it), and two consumer warpgroups that only compute, with 240
 * registers each (setmaxnreg), so BN = 128 fits at D = 128.
 *
 * A CTA loops over the (b, h, 128-row query block) tiles blockIdx, blockIdx +
 * grid, ...: one tile a CTA on a grid of all of them (flash/wgmma-ws), or one
 * CTA an SM (flash/wgmma-ws-persist), where the next tile's Q and first K, V
 * load while the consumers finish the last one (its last P V product and the
 * output's store): at short L those are a fifth of a tile's time.  Q has one
 * buffer, free (qfree) once the tile's last S product is done. */
/* tuning runs: the consumers' ping-pong (0 lets them issue freely) and the depth of the ring
 * (at D = 128, BN = 128, 3 stages fill 225 of the 227 KiB an H100/H200 block may have) */
#ifndef AS_WS_PINGPONG
#define AS_WS_PINGPONG 1
#endif
#ifndef AS_WS_STAGES
#define AS_WS_STAGES 3
#endif
constexpr int WS_STAGES = AS_WS_STAGES;
static_assert(WS_STAGES >= 2, "flash/wgmma-ws: a consumer waits for key tile n + 1 before it frees tile n");

/* The producer's share of one tile (flash/wgmma-ws and -xt): its 128 query rows
 * into the Q buffer at sq (barrier qbar), then its n_tiles K, V tiles through the
 * S-stage ring at sk, sv (tb bytes a stage; barriers full and empty), kv counting
 * the ring's tiles so far.  The caller has made sure the Q buffer is free. */
#ifdef AS_WGMMA_BODY
template <int D, int BN, int S>
__device__ __forceinline__ void produce_tile(const TmaMaps &maps, uint32_t sq, uint32_t qbar, uint32_t qb, uint32_t sk,
                                             uint32_t sv, uint32_t tb, uint32_t full, uint32_t empty, int row0,
                                             int n_tiles, int h, int hk, int b, int &kv)
{
    constexpr int BM = 128;
    mbar_expect_tx(qbar, qb);
    for (int g = 0; g < BM / 64; g++)
        for (int db = 0; db < D / 64; db++)
            tma_load(sq + db * BM * 128 + g * 64 * 128, &maps.q, db * 64, row0 + 64 * g, h, b, qbar);
    for (int n = 0; n < n_tiles; n++, kv++) {
        const int st = kv % S;
        if (kv >= S) mbar_wait(empty + 8 * st, (kv / S - 1) & 1);
        mbar_expect_tx(full + 8 * st, 2 * tb);
        for (int db = 0; db < D / 64; db++) {
            tma_load(sk + st * tb + db * BN * 128, &maps.k, db * 64, n * BN, hk, b, full + 8 * st);
            tma_load(sv + st * tb + db * BN * 128, &maps.v, db * 64, n * BN, hk, b, full + 8 * st);
        }
    }
}
#endif

template <int D, int BN>
struct WsCfg {
    static constexpr int BM = 128;
    static constexpr uint32_t QB = BM * D * 2, TB = BN * D * 2;
    static constexpr size_t smem = (size_t)QB + 2 * WS_STAGES * TB + 8 * (2 + 2 * WS_STAGES) + 1024;
    static_assert(smem <= 227 * 1024, "flash/wgmma-ws: more shared memory than a Hopper block may have");
};

template <typename T, int D, int BN>
__global__ void __launch_bounds__(384, 1) flash_wgmma_ws_kernel(const KParams P, const __grid_constant__ TmaMaps maps)
{
#ifdef AS_WGMMA_BODY
    using C = WsCfg<D, BN>;
    constexpr int BM = C::BM, NWG = 2, S = WS_STAGES;
    extern __shared__ unsigned char smem_raw[];
    const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u, sK = sQ + C::QB, sV = sK + S * C::TB;
    const uint32_t qbar = sV + S * C::TB, qfree = qbar + 8, full = qfree + 8, empty = full + 8 * S;

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int64_t tiles = P.nm * P.B * P.H;
    if (tid == 0) {
        mbar_init(qbar, 1);
        mbar_init(qfree, NWG * 128);
        for (int st = 0; st < S; st++) mbar_init(full + 8 * st, 1), mbar_init(empty + 8 * st, NWG * 128);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    /* kv counts the K, V tiles and nq the Q tiles through the CTA's ring so far (their
     * stages and phases), on both sides alike; a tile no row of which sees a key is
     * skipped by both */
    if (wg == NWG) { /* the producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
        if (tid == NWG * 128) {
            int kv = 0, nq = 0;
            for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
                const FlashBlock<T> blk(P, tile, BM);
                if (blk.n_end <= 0) continue;
                const int n_tiles = (blk.n_end + BN - 1) / BN;
                const int b = (int)blk.b, h = (int)blk.h, hk = (int)blk.hk;
                if (nq > 0) mbar_wait(qfree, (nq - 1) & 1);
                produce_tile<D, BN, S>(maps, sQ, qbar, C::QB, sK, sV, C::TB, full, empty, blk.row0, n_tiles, h, hk, b,
                                       kv);
                nq++;
            }
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
    /* Ping-pong (FlashAttention-3): the two consumers issue their products in turn,
     * warpgroup 0 first (barrier 1 + wg is "my turn"), so one's softmax runs while
     * the other's products hold the tensor cores.  The turns run on across tiles
     * (warpgroup 1's last arrival of a tile is warpgroup 0's first turn of the next),
     * so neither can arrive twice on a barrier before the other has synced. */
    const int mine = 1 + wg, theirs = 2 - wg;
    const uint32_t q = sQ + wg * 64 * 128;
    named_arrive_if(1, AS_WS_PINGPONG && wg == 1);
    int kv = 0, nq = 0;
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const FlashBlock<T> blk(P, tile, BM);
        if (blk.n_end <= 0) {
            blk.zero_rows(P, tid, NWG * 128, D);
            continue;
        }
        const int n_tiles = (blk.n_end + BN - 1) / BN;
        const int Lq = blk.Lq, Lk = blk.Lk, off = blk.off;
        WgConsumer<T, D, BN> c(blk.row0 + 64 * wg + 16 * warp, lane, P.sl2);
        mbar_wait(qbar, nq & 1);
        mbar_wait(full + 8 * (kv % S), (kv / S) & 1);
        c.template first<BM>(q, sK + (kv % S) * C::TB, Lk, off, P.causal);
        for (int n = 0; n + 1 < n_tiles; n++) {
            const int st = (kv + n) % S, sn = (kv + n + 1) % S;
            mbar_wait(full + 8 * sn, ((kv + n + 1) / S) & 1);
            named_sync_if(mine, AS_WS_PINGPONG);
            c.template issue<BM>(q, sK + sn * C::TB, sV + st * C::TB);
            named_arrive_if(theirs, AS_WS_PINGPONG);
            c.finish((n + 1) * BN, Lk, off, P.causal);
            mbar_arrive(empty + 8 * st);              /* K[n] and V[n] are done with, by every consumer thread */
        }
        mbar_arrive(qfree); /* the tile's last S product is done: Q is free */
        const int sl = (kv + n_tiles - 1) % S;
        c.last(sV + sl * C::TB);
        mbar_arrive(empty + 8 * sl);
        c.store(blk.out(P), P.os2, Lq, P.lse ? P.lse + blk.bh * P.Lq : nullptr);
        kv += n_tiles, nq++;
    }
    named_sync_if(1, AS_WS_PINGPONG && wg == 0); /* warpgroup 1's last arrival */
#endif
}

/* flash/wgmma-xt: flash/wgmma-ws on the persistent grid, with FlashAttention-3's
 * overlap across tiles.  On flash/wgmma-ws-persist a tile's first S product
 * (with its softmax) runs with no P V product under it and its last P V product
 * with no S product beside it: a causal tile has half the key tiles on average,
 * so those weigh most there.  Here this tile's last P V and the next tile's S0
 * are issued together, as the key loop issues S[n + 1] with P[n] V[n]; the old
 * tile is stored while S0 runs, then the new tile's softmax starts from fresh
 * statistics (issue_boundary, finish_boundary).
 *
 * So the next tile's Q must be in shared memory before this tile ends: Q has
 * two buffers (tile i of the CTA in buffer i % 2, each with its full and free
 * barrier), which at D = 128 leaves room for 2 stages of K, V (3 at D = 64).
 * Every wgmma is issued on the common path (ptxas serialises a kernel's wgmma
 * when one sits on a branch it cannot prove warpgroup-uniform): the last tile's
 * "next S0" reads whatever the next buffers hold, and its result is dropped.
 * Tiles no row of which sees a key are zeroed in a pass of their own first, and
 * skipped by the producer and the consumers alike. */
template <int D, int BN>
struct XtCfg {
    static constexpr int BM = 128, S = D == 64 ? 3 : 2;
    static constexpr uint32_t QB = BM * D * 2, TB = BN * D * 2;
    static constexpr size_t smem = 2 * (size_t)QB + 2 * S * (size_t)TB + 8 * (4 + 2 * S) + 1024;
};

/* A tile's first query row, in flash_tile's order, in 32-bit arithmetic (the
 * launch keeps the tile count under 2^31): the boundary's bookkeeping sits inside a
 * ping-pong turn, where FlashBlock's int64 divisions cost the other warpgroup too. */
__device__ __forceinline__ int xt_row0(const KParams &P, int tile, int BM)
{
    int m_block;
    flash_tile(P, tile, m_block);
    return m_block * BM;
}

/* what the consumers need of a tile, as FlashBlock has it, in 32-bit arithmetic */
template <typename T>
struct XtTile {
    int row0, n_end, bh;
    T *out;
    __device__ __forceinline__ XtTile(const KParams &P, int tile, int BM)
    {
        const int H = (int)P.H, Lq = (int)P.Lq, Lk = (int)P.Lk;
        int m_block;
        bh = flash_tile(P, tile, m_block);
        row0 = m_block * BM;
        const int row_end = row0 + BM < Lq ? row0 + BM : Lq;
        n_end = P.causal && row_end + Lk - Lq < Lk ? row_end + Lk - Lq : Lk;
        out = reinterpret_cast<T *>(P.out) + (int64_t)(bh / H) * P.os0 + (int64_t)(bh % H) * P.os1;
    }
};

/* the first tile from t on (stepping by the grid) some row of which sees a key;
 * only causal attention with Lq > Lk has tiles that see none */
__device__ __forceinline__ int next_live_tile(const KParams &P, int t, int tiles, int BM)
{
    if (!P.causal || P.Lq <= P.Lk) return t;
    const int Lq = (int)P.Lq, off = (int)(P.Lk - P.Lq);
    for (; t < tiles; t += gridDim.x) {
        const int row0 = xt_row0(P, t, BM), row_end = row0 + BM < Lq ? row0 + BM : Lq;
        if (row_end + off > 0) break;
    }
    return t;
}

template <typename T, int D, int BN>
__global__ void __launch_bounds__(384, 1) flash_wgmma_xt_kernel(const KParams P, const __grid_constant__ TmaMaps maps)
{
#ifdef AS_WGMMA_BODY
    using C = XtCfg<D, BN>;
    constexpr int BM = C::BM, NWG = 2, S = C::S;
    extern __shared__ unsigned char smem_raw[];
    const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u, sK = sQ + 2 * C::QB, sV = sK + S * C::TB;
    const uint32_t qfull = sV + S * C::TB, qfree = qfull + 16, full = qfree + 16, empty = full + 8 * S;

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int tiles = (int)(P.nm * P.B * P.H); /* < 2^31: the launch checks */
    if (tid == 0) {
        for (int b = 0; b < 2; b++) mbar_init(qfull + 8 * b, 1), mbar_init(qfree + 8 * b, NWG * 128);
        for (int st = 0; st < S; st++) mbar_init(full + 8 * st, 1), mbar_init(empty + 8 * st, NWG * 128);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    /* kv counts the K, V tiles through the ring, nq the CTA's live tiles (Q's buffer and phase) */
    if (wg == NWG) { /* the producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
        if (tid == NWG * 128) {
            int kv = 0, nq = 0;
            for (int tile = next_live_tile(P, blockIdx.x, tiles, BM); tile < tiles;
                 tile = next_live_tile(P, tile + gridDim.x, tiles, BM)) {
                const FlashBlock<T> blk(P, tile, BM);
                const int n_tiles = (blk.n_end + BN - 1) / BN;
                const int b = (int)blk.b, h = (int)blk.h, hk = (int)blk.hk, qb = nq & 1;
                if (nq >= 2) mbar_wait(qfree + 8 * qb, ((nq - 2) >> 1) & 1);
                produce_tile<D, BN, S>(maps, sQ + qb * C::QB, qfull + 8 * qb, C::QB, sK, sV, C::TB, full, empty,
                                       blk.row0, n_tiles, h, hk, b, kv);
                nq++;
            }
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) { /* the dead tiles, first */
        const FlashBlock<T> blk(P, tile, BM);
        if (blk.n_end <= 0) blk.zero_rows(P, tid, NWG * 128, D);
    }
    /* the ping-pong of flash/wgmma-ws; a tile's boundary (next S0 with last P V) is a turn too */
    const int mine = 1 + wg, theirs = 2 - wg;
    named_arrive_if(1, AS_WS_PINGPONG && wg == 1);
    int tile = next_live_tile(P, blockIdx.x, tiles, BM);
    if (tile < tiles) {
        int kv = 0, nq = 0;
        WgConsumer<T, D, BN> c(xt_row0(P, tile, BM) + 64 * wg + 16 * warp, lane, P.sl2);
        mbar_wait(qfull, 0);
        mbar_wait(full, 0);
        c.template first<BM>(sQ + wg * 64 * 128, sK, (int)P.Lk, (int)(P.Lk - P.Lq), P.causal);
        for (; tile < tiles;) {
            const XtTile<T> blk(P, tile, BM);
            const int n_tiles = (blk.n_end + BN - 1) / BN, Lk = (int)P.Lk, off = (int)(P.Lk - P.Lq);
            const uint32_t q = sQ + (nq & 1) * C::QB + wg * 64 * 128;
            for (int n = 0; n + 1 < n_tiles; n++) {
                const int st = (kv + n) % S, sn = (kv + n + 1) % S;
                mbar_wait(full + 8 * sn, ((kv + n + 1) / S) & 1);
                named_sync_if(mine, AS_WS_PINGPONG);
                c.template issue<BM>(q, sK + sn * C::TB, sV + st * C::TB);
                named_arrive_if(theirs, AS_WS_PINGPONG);
                c.finish((n + 1) * BN, Lk, off, P.causal);
                mbar_arrive(empty + 8 * st);
            }
            mbar_arrive(qfree + 8 * (nq & 1)); /* the tile's last S product is done: its Q is free */
            /* the boundary: the next live tile's S0 beside this one's last P V (a dropped S0 after the last) */
            const int next = next_live_tile(P, tile + gridDim.x, tiles, BM);
            const int sl = (kv + n_tiles - 1) % S, kv2 = kv + n_tiles, nq2 = nq + 1;
            if (next < tiles) {
                mbar_wait(qfull + 8 * (nq2 & 1), (nq2 >> 1) & 1);
                mbar_wait(full + 8 * (kv2 % S), (kv2 / S) & 1);
            }
            const int w_next = xt_row0(P, next < tiles ? next : tile, BM) + 64 * wg + 16 * warp;
            named_sync_if(mine, AS_WS_PINGPONG);
            c.template issue_boundary<BM>(sV + sl * C::TB, sQ + (nq2 & 1) * C::QB + wg * 64 * 128, sK + (kv2 % S) * C::TB);
            named_arrive_if(theirs, AS_WS_PINGPONG);
            c.finish_boundary(blk.out, P.os2, (int)P.Lq, P.lse ? P.lse + (int64_t)blk.bh * P.Lq : nullptr, w_next, Lk, off,
                              P.causal);
            mbar_arrive(empty + 8 * sl);
            kv = kv2, nq = nq2, tile = next;
        }
    }
    named_sync_if(1, AS_WS_PINGPONG && wg == 0); /* warpgroup 1's last arrival */
#endif
}

template <typename T, int D, int BN, int NWG>
int launch(KParams kp, cudaStream_t s)
{
    using C = WCfg<D, BN, NWG>;
    constexpr int BM = C::BM;
    static uint64_t done;
    const void *fn = (const void *)flash_wgmma_kernel<T, D, BN, NWG>;
    int e = smem_optin(fn, C::smem, &done);
    if (e) return e;
    kp.nm = (kp.Lq + BM - 1) / BM;
    int64_t blocks = kp.nm * kp.B * kp.H;
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    flash_wgmma_kernel<T, D, BN, NWG><<<(unsigned)blocks, C::NTH, C::smem, s>>>(kp);
    return (int)cudaGetLastError();
}

/* ---- the warp-specialised kernel's host side ---- */

#ifndef AS_FLASH_WGMMA_WS_BN /* the warp-specialised kernel's key tile */
#define AS_FLASH_WGMMA_WS_BN 128
#endif

bool make_maps(TmaMaps *maps, const as_attn_params *p)
{
    const bool f16 = p->q.dtype == AS_F16;
    return make_map(&maps->q, p->q, p->B, p->H, p->Lq, (int)p->D, 64, f16) &&
           make_map(&maps->k, p->k, p->B, p->Hkv, p->Lk, (int)p->D, AS_FLASH_WGMMA_WS_BN, f16) &&
           make_map(&maps->v, p->v, p->B, p->Hkv, p->Lk, (int)p->D, AS_FLASH_WGMMA_WS_BN, f16);
}

/* persist: one CTA an SM looping over the tiles; else one CTA a tile */
template <typename T, int D, int BN>
int launch_ws(KParams kp, const TmaMaps &maps, bool persist, cudaStream_t s)
{
    using C = WsCfg<D, BN>;
    static uint64_t done;
    const void *fn = (const void *)flash_wgmma_ws_kernel<T, D, BN>;
    int e = smem_optin(fn, C::smem, &done);
    if (e) return e;
    kp.nm = (kp.Lq + C::BM - 1) / C::BM;
    int64_t blocks = kp.nm * kp.B * kp.H;
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    if (persist && blocks > sm_count()) blocks = sm_count();
    flash_wgmma_ws_kernel<T, D, BN><<<(unsigned)blocks, 384, C::smem, s>>>(kp, maps);
    return (int)cudaGetLastError();
}

/* flash/wgmma-xt: one CTA an SM */
template <typename T, int D, int BN>
int launch_xt(KParams kp, const TmaMaps &maps, cudaStream_t s)
{
    using C = XtCfg<D, BN>;
    static uint64_t done;
    const void *fn = (const void *)flash_wgmma_xt_kernel<T, D, BN>;
    int e = smem_optin(fn, C::smem, &done);
    if (e) return e;
    kp.nm = (kp.Lq + C::BM - 1) / C::BM;
    int64_t blocks = kp.nm * kp.B * kp.H;
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    if (blocks > sm_count()) blocks = sm_count();
    flash_wgmma_xt_kernel<T, D, BN><<<(unsigned)blocks, 384, C::smem, s>>>(kp, maps);
    return (int)cudaGetLastError();
}

} // namespace

/* key tile and warpgroups a CTA for each head dim (tuning runs override them) */
#ifndef AS_FLASH_WGMMA_BN_D64
#define AS_FLASH_WGMMA_BN_D64 128
#endif
#ifndef AS_FLASH_WGMMA_NWG_D64
#define AS_FLASH_WGMMA_NWG_D64 3
#endif
#ifndef AS_FLASH_WGMMA_BN_D128
#define AS_FLASH_WGMMA_BN_D128 64
#endif
#ifndef AS_FLASH_WGMMA_NWG_D128
#define AS_FLASH_WGMMA_NWG_D128 3
#endif

template <typename T>
int launch_d(const KParams &kp, cudaStream_t s)
{
    if (kp.D == 64) return launch<T, 64, AS_FLASH_WGMMA_BN_D64, AS_FLASH_WGMMA_NWG_D64>(kp, s);
    return launch<T, 128, AS_FLASH_WGMMA_BN_D128, AS_FLASH_WGMMA_NWG_D128>(kp, s);
}

bool wgmma_ws_ok(const as_attn_params *p)
{
    TmaMaps maps;
    return make_maps(&maps, p);
}

int launch_wgmma(const KParams &kp, const as_attn_params *p, int v, bool cp_async_ok, cudaStream_t s, bool *taken)
{
    const bool f16 = p->q.dtype == AS_F16;
    TmaMaps maps;
    *taken = true;
    if (v >= 2 && make_maps(&maps, p)) {
        constexpr int BN = AS_FLASH_WGMMA_WS_BN;
        if (v == 4)
            return f16 ? (kp.D == 64 ? launch_xt<__half, 64, BN>(kp, maps, s) : launch_xt<__half, 128, BN>(kp, maps, s))
                       : (kp.D == 64 ? launch_xt<__nv_bfloat16, 64, BN>(kp, maps, s)
                                     : launch_xt<__nv_bfloat16, 128, BN>(kp, maps, s));
        const bool persist = v == 3;
        if (f16)
            return kp.D == 64 ? launch_ws<__half, 64, BN>(kp, maps, persist, s)
                              : launch_ws<__half, 128, BN>(kp, maps, persist, s);
        return kp.D == 64 ? launch_ws<__nv_bfloat16, 64, BN>(kp, maps, persist, s)
                          : launch_ws<__nv_bfloat16, 128, BN>(kp, maps, persist, s);
    }
    if (v >= 2 && !cp_async_ok) {
        *taken = false;
        return 0;
    }
    return f16 ? launch_d<__half>(kp, s) : launch_d<__nv_bfloat16>(kp, s);
}

/* ---- the TMA maps (sm90_common.cuh) ---- */

#if CUDART_VERSION >= 12050
#define AS_DRIVER_ENTRY(name, fn, q) cudaGetDriverEntryPointByVersion(name, fn, 12000, cudaEnableDefault, q)
#else
#define AS_DRIVER_ENTRY(name, fn, q) cudaGetDriverEntryPoint(name, fn, cudaEnableDefault, q)
#endif

/* cuTensorMapEncodeTiled from the driver the runtime loaded (no link to libcuda) */
static PFN_cuTensorMapEncodeTiled_v12000 encode_tiled(void)
{
    static PFN_cuTensorMapEncodeTiled_v12000 fn;
    static bool tried;
    if (!tried) {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult q;
        if (AS_DRIVER_ENTRY("cuTensorMapEncodeTiled", &p, &q) == cudaSuccess && q == cudaDriverEntryPointSuccess)
            fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
        tried = true;
    }
    return fn;
}

/* a 4-d tiled map, 128-byte swizzle, of the boxes box[] */
static bool encode_map(CUtensorMap *m, CUtensorMapDataType dt, const void *data, const cuuint64_t dim[4],
                       const cuuint64_t stride[3], const cuuint32_t box[4])
{
    PFN_cuTensorMapEncodeTiled_v12000 encode = encode_tiled();
    if (!encode) return false;
    const cuuint32_t estride[4] = {1, 1, 1, 1};
    return encode(m, dt, 4, const_cast<void *>(data), dim, stride, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE,
                  CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool make_map(CUtensorMap *m, const as_attn_operand &o, int64_t B, int64_t heads, int64_t L, int D, int rows,
              bool f16)
{
    if (B <= 0 || heads <= 0 || L <= 0) return false; /* no empty maps: the driver says invalid */
    const cuuint64_t dim[4] = {(cuuint64_t)D, (cuuint64_t)L, (cuuint64_t)heads, (cuuint64_t)B};
    cuuint64_t stride[3];
    const int64_t es[3] = {o.stride[2], o.stride[1], o.stride[0]};
    for (int i = 0; i < 3; i++) {
        if (dim[i + 1] > 1 && es[i] <= 0) return false;
        stride[i] = dim[i + 1] > 1 ? (cuuint64_t)es[i] * 2 : 16 * dim[0]; /* unused when the size is 1 */
    }
    const cuuint32_t box[4] = {64, (cuuint32_t)rows, 1, 1};
    return encode_map(m, f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, o.data, dim,
                      stride, box);
}

bool make_f32_map(CUtensorMap *m, float *data, int64_t B, int64_t heads, int64_t L, int D, int rows)
{
    if (B <= 0 || heads <= 0 || L <= 0 || (reinterpret_cast<uintptr_t>(data) & 15)) return false;
    const cuuint64_t dim[4] = {(cuuint64_t)D, (cuuint64_t)L, (cuuint64_t)heads, (cuuint64_t)B};
    const cuuint64_t stride[3] = {(cuuint64_t)D * 4, (cuuint64_t)(L * D) * 4, (cuuint64_t)(heads * L * D) * 4};
    const cuuint32_t box[4] = {32, (cuuint32_t)rows, 1, 1};
    return encode_map(m, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, data, dim, stride, box);
}

} // namespace as_flash
