/* FlashAttention forward in float32 on the tensor cores, 3xTF32
 * (flash/tf32x3): the path for float32 q, k, v and out on sm_80+, D = Dv in
 * {64, 128}, unit last strides, 16-byte aligned rows.
 *
 * Why 3xTF32: a TF32 product keeps 10 bits of each operand's mantissa, far
 * from float32.  Each operand x is split into big = tf32(x) and small =
 * x - big, and a b = a_big b_big + a_big b_small + a_small b_big (the
 * a_small b_small term, ~2^-22 of the product, is dropped): three TF32
 * products with float32 accumulation give float32-level results (a relative
 * error of about 2^-21 a term) at tensor-core speed.  PyTorch's float32
 * SDPA (the memory-efficient kernel, CUTLASS's OpMultiplyAddFastF32) does
 * the same on sm_80+.  The small part goes to the tensor core as it is:
 * the hardware reads a tf32 operand's top 19 bits, so its tail is
 * truncated (2^-11 of a term already ~2^-11 of x).
 *
 * Same semantics as the other paths (attention_flash.cu): S = scale q.k
 * (+ bias), a bool mask keeps where true, causal keeps j <= i + Lk - Lq,
 * dropout with the CPU's hash, zeros for a row that sees no key.
 *
 * A CTA of 4 warps owns BM = 64 query rows of one (b, h), a warp 16 of them;
 * key tiles of BN (64 at D = 64, 32 at D = 128, so two CTAs fit an sm_90 SM)
 * stream through a 2-stage cp.async pipeline, as in flash/mma.
 *
 * With the mma.m16n8k8 fragments of attention_flash_common.cuh (the order
 * of k inside one product is free, so k = t stands for element 2t of the 8
 * and k = t + 4 for element 2t + 1):
 *   S = Q K^T: a lane reads Q[g][2t..2t+1] and K[g][2t..2t+1] as float2;
 *   O += P V: P's A fragment is S's C fragment as it is (a0 a2 = c0 c1,
 *             a1 a3 = c2 c3), and b0 b1 = V[2t][g], V[2t + 1][g].
 * Rows in shared memory are padded (Q, K: D + 8 floats, V: D + 4) so that
 * these reads hit 32 different banks. */
#include <stdlib.h>
#include <string.h>

#include "attention_flash_common.cuh"

namespace as_flash {
namespace {

constexpr int TBM = 64, TTH = 128;

template <int D>
struct Tf32Cfg {
    static constexpr int BN = D == 64 ? 64 : 32;
    static constexpr int QLD = D + 8, KLD = D + 8, VLD = D + 4; /* floats */
    static constexpr size_t smem = (size_t)(TBM * QLD + 2 * BN * KLD + 2 * BN * VLD) * sizeof(float);
};

template <int D, bool EXTRA>
__global__ void __launch_bounds__(TTH, 2) flash_tf32_kernel(const KParams P)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using C = Tf32Cfg<D>;
    constexpr int BN = C::BN, QLD = C::QLD, KLD = C::KLD, VLD = C::VLD;
    constexpr int NT = BN / 8, DT = D / 8, KS = D / 8;
    constexpr int CH = D / 4, RPI = TTH / CH; /* 16-byte chunks a row; rows one pass loads */
    constexpr bool QREG = D == 64;            /* the warp's split Q stays in registers */
    extern __shared__ __align__(16) float tsm[];
    float *sQ = tsm, *sK = sQ + TBM * QLD, *sV = sK + 2 * BN * KLD;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const FlashBlock<float> fb(P, blockIdx.x, TBM);
    const int Lq = fb.Lq, Lk = fb.Lk, off = fb.off, row0 = fb.row0, n_end = fb.n_end;
    float *out = fb.out(P);
    if (n_end <= 0) { /* no row of the block sees a key */
        fb.zero_rows(P, tid, TTH, D);
        return;
    }
    const int n_tiles = (n_end + BN - 1) / BN;
    const float *qg = fb.q(P), *kg = fb.k(P), *vg = fb.v(P);
    const int64_t qs = P.q.s2, ks = P.k.s2, vs = P.v.s2;

    /* the thread's share of every tile load: rows lr + RPI it, 16-byte chunk lc */
    const int lr = tid / CH, lc = tid % CH;
    const float *q_ld = qg + (int64_t)(row0 + lr) * qs + lc * 4;
    const float *k_ld = kg + (int64_t)lr * ks + lc * 4;
    const float *v_ld = vg + (int64_t)lr * vs + lc * 4;
    const uint32_t q_s = smem_u32(sQ) + (lr * QLD + lc * 4) * 4;
    const uint32_t k_s = smem_u32(sK) + (lr * KLD + lc * 4) * 4;
    const uint32_t v_s = smem_u32(sV) + (lr * VLD + lc * 4) * 4;

    /* prologue: {Q, K0}, {V0} */
    load_rows<TBM, RPI, QLD * 4>(q_s, q_ld, qs, row0, lr, Lq, qg);
    load_rows<BN, RPI, KLD * 4>(k_s, k_ld, ks, 0, lr, Lk, kg);
    cp_async_commit();
    load_rows<BN, RPI, VLD * 4>(v_s, v_ld, vs, 0, lr, Lk, vg);
    cp_async_commit();

    const int wrow0 = row0 + warp * 16; /* the warp's first row */
    const int wrow_last = wrow0 + 15 < Lq - 1 ? wrow0 + 15 : Lq - 1;
    const bool warp_idle = wrow0 >= Lq;
    const float *sQw = sQ + warp * 16 * QLD;
    const float sl2 = P.sl2;

    float acc_o[DT][4], m_r[2], l_r[2];
    uint32_t rkey[2];
#pragma unroll
    for (int nt = 0; nt < DT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc_o[nt][e] = 0.0f;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        m_r[r] = -INFINITY, l_r[r] = 0.0f;
        rkey[r] = EXTRA && P.dropout ? fl_row_key(P.seed, P.H, P.Lq, fb.b, fb.h, wrow0 + g + 8 * r) : 0u;
    }

    uint32_t qb[QREG ? KS : 1][4], qsm[QREG ? KS : 1][4];
    if constexpr (QREG) {
        cp_async_wait<1>(); /* Q, K0 landed */
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < KS; kk++) a_frag_rows<QLD>(sQw, kk, lane, qb[kk], qsm[kk]);
    }

    for (int n = 0; n < n_tiles; n++) {
        const int st = n & 1, j0 = n * BN;
        cp_async_wait<1>(); /* K[n] landed (V[n] may still be in flight) */
        __syncthreads();    /* ... for every thread, and every warp is done with tile n - 1 */
        if (n + 1 < n_tiles)
            load_rows<BN, RPI, KLD * 4>(k_s + (st ^ 1) * BN * KLD * 4, k_ld + (int64_t)(j0 + BN) * ks, ks, j0 + BN,
                                        lr, Lk, kg);
        cp_async_commit();
        if (n + 1 < n_tiles)
            load_rows<BN, RPI, VLD * 4>(v_s + (st ^ 1) * BN * VLD * 4, v_ld + (int64_t)(j0 + BN) * vs, vs, j0 + BN,
                                        lr, Lk, vg);
        cp_async_commit();

        const bool skip = warp_idle || (P.causal && j0 > wrow_last + off);
        float acc_s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc_s[nt][e] = 0.0f;

        if (!skip) {
            /* S = Q K^T */
            const float *sKt = sK + st * BN * KLD;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t ab[4], as[4];
                if constexpr (QREG) {
#pragma unroll
                    for (int x = 0; x < 4; x++) ab[x] = qb[QREG ? kk : 0][x], as[x] = qsm[QREG ? kk : 0][x];
                } else {
                    a_frag_rows<QLD>(sQw, kk, lane, ab, as);
                }
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    uint32_t bb[2], bs[2];
                    b_frag_rows<KLD>(sKt, kk, nt * 8, lane, bb, bs);
                    mma3f(acc_s[nt], ab, as, bb, bs);
                }
            }

            /* the key tail and the causal diagonal; with EXTRA, also the mask / bias */
            const bool bound = j0 + BN > Lk, diag = P.causal && j0 + BN - 1 > wrow0 + off;
            if (!EXTRA) {
                if (bound || diag) {
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        const int lm = tile_limit(wrow0 + g + 8 * r, j0, Lk, off, P.causal, BN);
#pragma unroll
                        for (int nt = 0; nt < NT; nt++)
#pragma unroll
                            for (int c = 0; c < 2; c++)
                                if (nt * 8 + 2 * t + c > lm) acc_s[nt][2 * r + c] = -INFINITY;
                    }
                }
            } else {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int i = wrow0 + g + ((e >> 1) << 3);
                    const int64_t mrow = fb.b * P.mask.s0 + fb.h * P.mask.s1 + (int64_t)(i < Lq ? i : 0) * P.mask.s2;
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        const int j = j0 + nt * 8 + 2 * t + (e & 1);
                        float x = acc_s[nt][e];
                        if (P.prescale) x *= P.scale;
                        if (P.has_mask && j < Lk) x += load_f(P.mask.data, P.mask.dtype, mrow + (int64_t)j * P.mask.s3);
                        if (j >= Lk || (P.causal && j > i + off)) x = -INFINITY;
                        acc_s[nt][e] = x;
                    }
                }
            }

            /* online softmax, in the exp2 domain: p = 2^(s sl2 - m sl2) */
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const float alpha = softmax_row(acc_s, r, m_r[r], l_r[r], sl2);
#pragma unroll
                for (int nt = 0; nt < DT; nt++) acc_o[nt][2 * r] *= alpha, acc_o[nt][2 * r + 1] *= alpha;
            }

            if (EXTRA && P.dropout) { /* on the probabilities; 1 / (1 - p) goes in at the end */
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (!fl_keep(rkey[e >> 1], j0 + nt * 8 + 2 * t + (e & 1), P.threshold)) acc_s[nt][e] = 0.0f;
            }
        }

        cp_async_wait<2>(); /* V[n] landed */
        __syncthreads();

        if (!skip) {
            /* O += P V: k-step kk is S's n-tile kk */
            const float *sVt = sV + st * BN * VLD;
#pragma unroll
            for (int kk = 0; kk < NT; kk++) mma3_acc_cols<DT, VLD>(acc_o, acc_s[kk], sVt, kk, lane);
        }
    }
    cp_async_wait<0>();

    /* out = O / l (x 1 / (1 - p)); zero where nothing was seen */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_r[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.0f ? P.keep_scale / l : 0.0f;
        const int i = wrow0 + g + 8 * r;
        if (P.lse && i < Lq && t == 0)
            P.lse[fb.bh * P.Lq + i] = l > 0.0f ? m_r[r] * (sl2 * (1.0f / LOG2E)) + logf(l) : INFINITY;
        if (i < Lq) {
            float *o = out + (int64_t)i * P.os2 + 2 * t;
#pragma unroll
            for (int nt = 0; nt < DT; nt++)
                *reinterpret_cast<float2 *>(o + nt * 8) = make_float2(acc_o[nt][2 * r] * inv, acc_o[nt][2 * r + 1] * inv);
        }
    }
#endif
}

template <int D, bool EXTRA>
int launch(KParams kp, cudaStream_t s)
{
    static uint64_t done;
    const size_t bytes = Tf32Cfg<D>::smem;
    int e = smem_optin((const void *)flash_tf32_kernel<D, EXTRA>, bytes, &done);
    if (e) return e;
    kp.nm = (kp.Lq + TBM - 1) / TBM;
    const int64_t blocks = kp.nm * kp.B * kp.H;
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    flash_tf32_kernel<D, EXTRA><<<(unsigned)blocks, TTH, bytes, s>>>(kp);
    return (int)cudaGetLastError();
}

} // namespace

int g_force_simt = -1; /* as_cuda_flash_force_f32_simt */

/* Whether float32 attention takes the tensor cores by default (it does since
 * the kernels passed their tests on an H100: docs/performance.md, v0.12). */
#ifndef AS_FLASH_F32_TF32X3_DEFAULT
#define AS_FLASH_F32_TF32X3_DEFAULT 1
#endif

/* ATTNSWAP_FLASH_F32=tf32x3 / simt in the environment takes the tensor cores
 * (flash/tf32x3, flash-bwd/tf32x3) or the CUDA cores for float32 attention;
 * the tests and benchmarks measure one against the other */
bool tf32x3_allowed(void)
{
    static int cache; /* 0 unknown, 1 yes, -1 no */
    if (g_force_simt >= 0) return !g_force_simt;
    if (!cache) {
        const char *e = getenv("ATTNSWAP_FLASH_F32");
        const bool on = e && !strcmp(e, "tf32x3") ? true : e && !strcmp(e, "simt") ? false : AS_FLASH_F32_TF32X3_DEFAULT;
        cache = on ? 1 : -1;
    }
    return cache > 0;
}

/* The current device's shared memory a block may opt in to, where its
 * compute capability is 8.0 or more (the TF32 mma); else 0 */
size_t tf32_device_smem(void)
{
    static int64_t cache[64]; /* 0 unknown, -1 none */
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
    if (!cache[dev]) {
        int major = 0, optin = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        cache[dev] = major >= 8 && optin > 0 ? optin : -1;
    }
    return cache[dev] > 0 ? (size_t)cache[dev] : 0;
}

/* Both forward kernels fit (and with them the backward's, sized to fit as
 * much: attention_flash_bwd_tf32.cu): sm_80 (A100, 163 KiB) and sm_90 do;
 * the 99 KiB of sm_86 / sm_89 cards keep float32 on the CUDA cores. */
bool tf32x3_device(void) { return tf32_device_smem() >= Tf32Cfg<128>::smem; }

bool rows16(const as_attn_operand &o) /* 16-byte aligned float32 rows */
{
    return ((uintptr_t)o.data & 15) == 0 && o.stride[0] % 4 == 0 && o.stride[1] % 4 == 0 && o.stride[2] % 4 == 0;
}

bool tf32x3_ok(const as_attn_params *p)
{
    if (!simt_f32_ok(p) || !tf32x3_allowed() || !tf32x3_device()) return false;
    if (!rows16(p->q) || !rows16(p->k) || !rows16(p->v)) return false;
    if (p->Lq > (1 << 30) || p->Lk > (1 << 30)) return false; /* positions in 32 bits */
    const int64_t *os = p->out_stride; /* float2 stores */
    return ((uintptr_t)p->out & 7) == 0 && os[0] % 2 == 0 && os[1] % 2 == 0 && os[2] % 2 == 0;
}

int launch_tf32x3(const KParams &kp, cudaStream_t s)
{
    const bool extra = kp.has_mask || kp.dropout || kp.prescale;
    if (kp.D == 64) return extra ? launch<64, true>(kp, s) : launch<64, false>(kp, s);
    return extra ? launch<128, true>(kp, s) : launch<128, false>(kp, s);
}

} // namespace as_flash

extern "C" int as_cuda_flash_force_f32_simt(int mode)
{
    if (mode < -1 || mode > 1) return -1;
    as_flash::g_force_simt = mode;
    return as_flash::tf32x3_device() ? 1 : 0;
}
