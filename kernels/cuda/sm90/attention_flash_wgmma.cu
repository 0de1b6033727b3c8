/* FlashAttention forward for Hopper (sm_90a): wgmma.mma_async instead of
 * mma.sync.  Built for sm_90a only (CMakeLists.txt), used on devices of
 * compute capability 9.0 for plain attention (no mask, bias or dropout;
 * causal or not), F16/BF16, D = Dv in {64, 128}; everything else stays on
 * the mma.sync kernel in ../attention_flash.cu, whose semantics this one
 * shares (zeros for a row that sees nothing, causal j <= i + Lk - Lq, GQA).
 *
 * A CTA is NWG warpgroups of 128 threads; warpgroup g owns query rows
 * [64 g, 64 g + 64) of the CTA's BM = 64 NWG.  K and V tiles of BN keys
 * stream through a 2-stage cp.async ring as in the mma.sync kernel, but into
 * the 128-byte-swizzled layout wgmma reads from shared memory, so neither K
 * nor V passes through registers:
 *
 *   S = Q K^T   wgmma m64nBNk16, A = Q and B = K from shared memory (K-major)
 *   softmax     in registers, online, exp2 domain (as the mma.sync kernel)
 *   O += P V    wgmma m64nDk16, A = P from registers (the S accumulators
 *               repacked), B = V from shared memory (N-major: imm-trans-b)
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
#include "../attention_flash_common.cuh"
#include "wgmma.cuh"

namespace as_flash {
namespace {

template <int D, int BN, int NWG> /* NWG warpgroups a CTA */
struct WCfg {
    static constexpr int NTH = 128 * NWG, BM = 64 * NWG;
    static constexpr int QB = BM * D * 2, KB = BN * D * 2; /* tile bytes */
    static constexpr size_t smem = (size_t)QB + 4 * KB + 1024; /* + alignment slack */
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AS_WGMMA_BODY 1
#endif

#ifdef AS_WGMMA_BODY
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo)
{
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) |
           ((uint64_t)(sbo >> 4) << 32) | (1ull << 62); /* 62-63: 1 = 128-byte swizzle */
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
/* cp.async wrote through the generic proxy; wgmma reads through the async one */
__device__ __forceinline__ void proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
/* the registers of an async wgmma are read / written only after the wait */
template <int N>
__device__ __forceinline__ void reg_fence(float (&r)[N])
{
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void reg_fence(uint32_t (&r)[N][4])
{
#pragma unroll
    for (int i = 0; i < N; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) asm volatile("" : "+r"(r[i][j])::"memory");
}
#endif

template <typename T, int D, int BN, int NWG>
__global__ void __launch_bounds__(128 * NWG, 1) flash_wgmma_kernel(const KParams P)
{
#ifdef AS_WGMMA_BODY
    using C = WCfg<D, BN, NWG>;
    constexpr int NTH = C::NTH, BM = C::BM;
    /* the first LTH threads load the tiles, RPI rows a pass */
    constexpr int LTH = NTH < 256 ? NTH : 256, CH = D / 8, RPI = LTH / CH, NT = BN / 8, DT = D / 8;
    static_assert(RPI % 8 == 0 && BM % RPI == 0 && BN % RPI == 0 && BN % 16 == 0, "tile shape");
    extern __shared__ unsigned char smem_raw[];
    const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u, sK = sQ + C::QB, sV = sK + 2 * C::KB;

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const FlashBlock<T> blk(P, blockIdx.x, BM);
    const int Lq = blk.Lq, Lk = blk.Lk, off = blk.off, row0 = blk.row0;
    if (blk.n_end <= 0) return blk.zero_rows(P, tid, NTH, D);
    const int n_tiles = (blk.n_end + BN - 1) / BN;
    const T *qg = blk.q(P), *kg = blk.k(P), *vg = blk.v(P);
    T *out = blk.out(P, D);
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

    const int grow0 = row0 + 64 * wg;            /* the warpgroup's first row */
    const int wrow0 = grow0 + 16 * warp;         /* the warp's */
    const float sl2 = P.sl2;

    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.0f;
    float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
    float s[BN / 2];
    uint32_t pa[BN / 16][4], pn[BN / 16][4]; /* P of tile n (read by the PV wgmma), of n + 1 */

    const uint32_t qdesc0 = sQ + wg * 64 * 128;
    auto issue_s = [&](int t) { /* S = Q K[t]^T */
        const uint32_t kt = sK + (t & 1) * C::KB;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            Wgmma<T, BN>::ss(s, smem_desc(qdesc0 + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024),
                             smem_desc(kt + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
        wg_commit();
    };
    /* masks, online softmax and P (into pn) of tile t from s; alpha rescales O */
    auto softmax = [&](int t, float (&alpha)[2]) {
        const int j0 = t * BN;
        /* s[4 nt + 2 r + c]: row wrow0 + lane / 4 + 8 r, key j0 + 8 nt + 2 (lane % 4) + c */
        if (j0 + BN > Lk || (P.causal && j0 + BN - 1 > wrow0 + off)) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int lm = tile_limit(wrow0 + (lane >> 2) + 8 * r, j0, Lk, off, P.causal, BN);
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
    };
    auto take_next = [&]() {
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
            for (int x = 0; x < 4; x++) pa[kk][x] = pn[kk][x];
    };

    /* Every wgmma below is issued on a path all threads take (ptxas serialises
     * the wgmma of a function with one under a branch): tiles a warpgroup's rows
     * do not see (causal) are computed and masked, not skipped. */
    auto issue_pv = [&](int t) { /* O += P[t] V[t] */
        const uint32_t vt = sV + (t & 1) * C::KB;
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) Wgmma<T, D>::rs(o, pa[kk], smem_desc(vt + kk * 2048, BN * 128, 1024), 1);
        wg_commit();
    };

    /* S0 and P0 */
    cp_async_wait<2>(); /* Q, K0 */
    proxy_fence();
    __syncthreads();
    {
        float alpha[2];
        wg_fence();
        issue_s(0);
        wg_wait<0>();
        reg_fence(s);
        softmax(0, alpha);
        take_next();
    }

    /* Tile n: S[n + 1] = Q K[n + 1]^T and O += P[n] V[n] in flight together, the
     * softmax of S[n + 1] under the PV product (FlashAttention-3's intra-warpgroup
     * overlap); K[n + 2] and V[n + 1] load meanwhile. */
    for (int n = 0; n + 1 < n_tiles; n++) {
        cp_async_wait<0>(); /* V[n], K[n + 1] */
        proxy_fence();
        __syncthreads(); /* ... for all; all are done with K[n] and V[n - 1] */
        if (loader && n + 2 < n_tiles)
            load_rows<BN, RPI, 128>(sK + (n & 1) * C::KB + kv_st, k_ld + (int64_t)(n + 2) * BN * ks, ks, (n + 2) * BN, lr, Lk, kg);
        if (loader) load_rows<BN, RPI, 128>(sV + ((n + 1) & 1) * C::KB + kv_st, v_ld + (int64_t)(n + 1) * BN * vs, vs, (n + 1) * BN, lr, Lk, vg);
        cp_async_commit();

        wg_fence();
        issue_s(n + 1);
        issue_pv(n);
        float alpha[2];
        wg_wait<1>(); /* S[n + 1] (committed first) */
        reg_fence(s);
        softmax(n + 1, alpha);
        wg_wait<0>(); /* P[n] V[n] */
        reg_fence(o);
        reg_fence(pa);
#pragma unroll
        for (int nt = 0; nt < DT; nt++) {
            o[4 * nt] *= alpha[0], o[4 * nt + 1] *= alpha[0];
            o[4 * nt + 2] *= alpha[1], o[4 * nt + 3] *= alpha[1];
        }
        take_next();
    }
    cp_async_wait<0>(); /* V[last] */
    proxy_fence();
    __syncthreads();
    wg_fence();
    issue_pv(n_tiles - 1);
    wg_wait<0>();
    reg_fence(o);
    reg_fence(pa);


#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_r[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        const int i = wrow0 + (lane >> 2) + 8 * r;
        if (i < Lq) {
            uint32_t *op = reinterpret_cast<uint32_t *>(out + (int64_t)i * D + ((lane & 3) << 1));
#pragma unroll
            for (int nt = 0; nt < DT; nt++) op[nt * 4] = Mma<T>::pack(o[4 * nt + 2 * r] * inv, o[4 * nt + 2 * r + 1] * inv);
        }
    }
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

int launch_wgmma(const KParams &kp, bool f16, cudaStream_t s)
{
    return f16 ? launch_d<__half>(kp, s) : launch_d<__nv_bfloat16>(kp, s);
}

} // namespace as_flash
