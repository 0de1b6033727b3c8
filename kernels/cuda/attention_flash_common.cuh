/* What the FlashAttention CUDA kernels share (attention_flash.cu: the
 * mma.sync kernel for sm_80+, the generic fallback and the dispatcher;
 * attention_flash_simt.cu: float32 on the CUDA cores;
 * sm90/attention_flash_wgmma.cu: the wgmma kernel for sm_90a): the parameter
 * block, the CPU's dropout hash, and the PTX wrappers. */
#ifndef AS_CUDA_ATTENTION_FLASH_COMMON_CUH
#define AS_CUDA_ATTENTION_FLASH_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "attention_flash_cuda.h"

namespace as_flash {

/* ---- the CPU's dropout hash (attention_flash.h), on the device ---- */

__device__ __forceinline__ uint64_t fl_mix64(uint64_t x)
{
    x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27, x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
__device__ __forceinline__ uint32_t fl_mix32(uint32_t x)
{
    x ^= x >> 16, x *= 0x7feb352du;
    x ^= x >> 15, x *= 0x846ca68bu;
    return x ^ (x >> 16);
}
__device__ __forceinline__ uint32_t fl_row_key(uint64_t seed, int64_t H, int64_t Lq, int64_t b,
                                               int64_t h, int64_t i)
{
    return (uint32_t)fl_mix64(seed ^ fl_mix64((uint64_t)((b * H + h) * Lq + i)));
}
__device__ __forceinline__ bool fl_keep(uint32_t row_key, int64_t j, uint32_t threshold)
{
    return (fl_mix32(row_key + (uint32_t)j * 0x9e3779b9u) >> 8) >= threshold;
}

/* ---- parameters, by value ---- */

struct Opnd {
    const char *data;
    int64_t s0, s1, s2, s3; /* elements */
    int dtype;
};

struct KParams {
    Opnd q, k, v, mask;
    int64_t B, H, G, Lq, Lk, D, Dv;
    int64_t nm; /* query blocks per (b, h) (mma path) */
    int64_t sec; /* causal tile order: heads a section (flash_tile), 1 to B H */
    float scale;
    float sl2;      /* multiplier of the scores in the exp2 domain */
    int causal;
    int has_mask;
    int prescale;   /* scores scaled before the mask / bias is added */
    int dropout;
    uint32_t threshold;
    float keep_scale;
    uint64_t seed;
    void *out;
    int out_dtype;
    int64_t os0, os1, os2; /* out's element strides of b, h and a row */
    float *lse; /* NULL, or (B, H, Lq): each row's log-sum-exp (+inf: saw nothing) */
};

#define LOG2E 1.4426950408889634f

__device__ __forceinline__ float load_f(const char *base, int dt, int64_t i)
{
    switch (dt) {
    case AS_F32: return ((const float *)base)[i];
    case AS_F16: return __half2float(((const __half *)base)[i]);
    case AS_BF16: return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
    case AS_BOOL: return base[i] ? 0.0f : -INFINITY;
    default: return 0.0f;
    }
}

__device__ __forceinline__ void store_f(void *base, int dt, int64_t i, float x)
{
    switch (dt) {
    case AS_F32: ((float *)base)[i] = x; break;
    case AS_F16: ((__half *)base)[i] = __float2half_rn(x); break;
    default: ((__nv_bfloat16 *)base)[i] = __float2bfloat16_rn(x); break;
    }
}
/* elements i, i + 1 (i even, 4-byte aligned) of an F32, F16 or BF16 array */
__device__ __forceinline__ void store_f2(void *base, int dt, int64_t i, float x, float y)
{
    switch (dt) {
    case AS_F32: *reinterpret_cast<float2 *>((float *)base + i) = make_float2(x, y); break;
    case AS_F16: *reinterpret_cast<__half2 *>((__half *)base + i) = __floats2half2_rn(x, y); break;
    default: *reinterpret_cast<__nv_bfloat162 *>((__nv_bfloat16 *)base + i) = __floats2bfloat162_rn(x, y); break;
    }
}

__device__ __forceinline__ float ex2(float x) /* 2^x, 2^-inf = 0 */
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* ---- PTX wrappers ---- */

__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared; zero-filled when !valid (src then only needs to be mapped) */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

template <typename T>
struct Mma;

template <>
struct Mma<__half> {
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
                     "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi)
    {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};

template <>
struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                     "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi)
    {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};

/* ---- 3xTF32: float32 products on the TF32 tensor cores (attention_flash_tf32.cu) ----
 * x = big + small, big = tf32(x) rounded, small = x - big (its 13-bit tail,
 * which the tensor core ignores, is below 2^-23 of x); a b ~ a_small b_big +
 * a_big b_small + a_big b_big.  mma.m16n8k8 fragments (g = lane / 4, t = lane % 4):
 *   A (16x8): a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)
 *   B (8x8):  b0 (k t, n g)  b1 (k t+4, n g)
 *   C (16x8): c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..2t+1) */

__device__ __forceinline__ uint32_t tf32_big(float x)
{
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

/* x = big + small, both as mma operands */
__device__ __forceinline__ void split(float x, uint32_t &big, uint32_t &small)
{
    big = tf32_big(x);
    small = __float_as_uint(x - __uint_as_float(big));
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* c += a b in 3xTF32, the small terms first */
__device__ __forceinline__ void mma3(float (&c)[4], const uint32_t (&ab)[4], const uint32_t (&as)[4], uint32_t bb0,
                                     uint32_t bb1, uint32_t bs0, uint32_t bs1)
{
    mma_tf32(c, as, bb0, bb1);
    mma_tf32(c, ab, bs0, bs1);
    mma_tf32(c, ab, bb0, bb1);
}

/* The A fragment of k-step kk (columns 8 kk ..) from 16 row-major rows of LD floats:
 * k = t stands for column 2t, k = t + 4 for 2t + 1 (the order of k inside a product
 * is free, and its B operand must follow it), so a lane reads two float2 */
template <int LD>
__device__ __forceinline__ void a_frag_rows(const float *rows, int kk, int lane, uint32_t (&ab)[4], uint32_t (&as)[4])
{
    const int g = lane >> 2, t = lane & 3;
    const float2 lo = *reinterpret_cast<const float2 *>(rows + g * LD + kk * 8 + 2 * t);
    const float2 hi = *reinterpret_cast<const float2 *>(rows + (g + 8) * LD + kk * 8 + 2 * t);
    split(lo.x, ab[0], as[0]);
    split(hi.x, ab[1], as[1]);
    split(lo.y, ab[2], as[2]);
    split(hi.y, ab[3], as[3]);
}

/* The same A fragment from a matrix stored transposed (X[k][m], LD floats a
 * row): a0 a1 = X[8 kk + 2t][m0 + g, + 8], a2 a3 = X[8 kk + 2t + 1][...] */
template <int LD>
__device__ __forceinline__ void a_frag_cols(const float *x, int kk, int m0, int lane, uint32_t (&ab)[4],
                                            uint32_t (&as)[4])
{
    const int g = lane >> 2, t = lane & 3;
    const float *r0 = x + (kk * 8 + 2 * t) * LD + m0 + g, *r1 = r0 + LD;
    split(r0[0], ab[0], as[0]);
    split(r0[8], ab[1], as[1]);
    split(r1[0], ab[2], as[2]);
    split(r1[8], ab[3], as[3]);
}

/* The A fragment of a product whose left operand is a C fragment (c0 c1 at
 * columns 2t, 2t + 1): a0 a2 = c0 c1, a1 a3 = c2 c3 under the k order above */
__device__ __forceinline__ void a_frag_acc(const float (&c)[4], uint32_t (&ab)[4], uint32_t (&as)[4])
{
    split(c[0], ab[0], as[0]);
    split(c[1], ab[2], as[2]);
    split(c[2], ab[1], as[1]);
    split(c[3], ab[3], as[3]);
}

/* The B fragment of k-step kk, n-tile at row n0, from row-major rows X[n][k]
 * (B = X^T, as K in Q K^T): b0 b1 = X[n0 + g][8 kk + 2t, + 1], one float2 */
template <int LD>
__device__ __forceinline__ void b_frag_rows(const float *x, int kk, int n0, int lane, uint32_t (&bb)[2],
                                            uint32_t (&bs)[2])
{
    const float2 v = *reinterpret_cast<const float2 *>(x + (n0 + (lane >> 2)) * LD + kk * 8 + 2 * (lane & 3));
    split(v.x, bb[0], bs[0]);
    split(v.y, bb[1], bs[1]);
}

/* The B fragment of k-step kk, n-tile at column n0, from B itself stored
 * row-major (X[k][n], as V in P V): b0 b1 = X[8 kk + 2t, + 1][n0 + g] */
template <int LD>
__device__ __forceinline__ void b_frag_cols(const float *x, int kk, int n0, int lane, uint32_t (&bb)[2],
                                            uint32_t (&bs)[2])
{
    const float *r = x + (kk * 8 + 2 * (lane & 3)) * LD + n0 + (lane >> 2);
    split(r[0], bb[0], bs[0]);
    split(r[LD], bb[1], bs[1]);
}

/* c += a b in 3xTF32 with the fragments above */
__device__ __forceinline__ void mma3f(float (&c)[4], const uint32_t (&ab)[4], const uint32_t (&as)[4],
                                      const uint32_t (&bb)[2], const uint32_t (&bs)[2])
{
    mma3(c, ab, as, bb[0], bb[1], bs[0], bs[1]);
}

/* acc[nt] += A B^T over KS k-steps: A the 16 rows at a (LDA floats apart), B's
 * n-tile nt the rows 8 nt .. of b (LDB apart), both row-major (as S = Q K^T) */
template <int NT, int KS, int LDA, int LDB>
__device__ __forceinline__ void mma3_rows(float (&acc)[NT][4], const float *a, const float *b, int lane)
{
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        uint32_t ab[4], as[4];
        a_frag_rows<LDA>(a, kk, lane, ab, as);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            uint32_t bb[2], bs[2];
            b_frag_rows<LDB>(b, kk, nt * 8, lane, bb, bs);
            mma3f(acc[nt], ab, as, bb, bs);
        }
    }
}

/* acc[dn] += A X over k-step kk: A the C fragment c (as P in P V), X row-major
 * (X[k][n], LD floats a row), n-tile dn its columns 8 dn .. */
template <int DT, int LD>
__device__ __forceinline__ void mma3_acc_cols(float (&acc)[DT][4], const float (&c)[4], const float *x, int kk, int lane)
{
    uint32_t ab[4], as[4];
    a_frag_acc(c, ab, as);
#pragma unroll
    for (int dn = 0; dn < DT; dn++) {
        uint32_t bb[2], bs[2];
        b_frag_cols<LD>(x, kk, dn * 8, lane, bb, bs);
        mma3f(acc[dn], ab, as, bb, bs);
    }
}

/* ---- what the tensor-core kernels do alike ---- */

/* Tile bid's head bh (b H + h) and query block m_block.  Non-causal grids keep one
 * head's blocks together, so the CTAs at work share a few heads' K, V in L2.  Causal
 * ones run the longest blocks (the last ones) first, but within sections of P.sec
 * heads whose K, V fit in L2 together (FlashAttention-3's longest-first order with its
 * L2 swizzle): over all heads at once, the CTAs at work each streamed another head's
 * K, V from memory, ~130 FLOP a byte at D = 128, about what HBM feeds at the kernel's
 * rate.  I: int64_t, or int where the tile count is under 2^31. */
template <typename I>
__device__ __forceinline__ I flash_tile(const KParams &P, I bid, int &m_block)
{
    const I nm = (I)P.nm;
    if (!P.causal) {
        m_block = (int)(bid % nm);
        return bid / nm;
    }
    const I BH = (I)(P.B * P.H), sec = (I)P.sec, s0 = bid / (sec * nm) * sec, r = bid - s0 * nm;
    const I w = BH - s0 < sec ? BH - s0 : sec; /* heads in this section (the last may have fewer) */
    m_block = (int)(nm - 1 - r / w);
    return s0 + r % w;
}

/* The (b, h) and the BM query rows CTA bid owns, and the keys they see, in
 * flash_tile's order.  Positions are 32-bit (the host keeps Lq, Lk <= 2^30 on
 * these paths). */
template <typename T>
struct FlashBlock {
    int64_t b, h, hk, bh;
    int Lq, Lk, off, row0, row_end, n_end; /* n_end: keys [0, n_end) matter */

    __device__ __forceinline__ FlashBlock(const KParams &P, int64_t bid, int BM)
    {
        int m_block;
        bh = flash_tile(P, bid, m_block);
        b = bh / P.H, h = bh % P.H, hk = h / P.G;
        Lq = (int)P.Lq, Lk = (int)P.Lk, off = Lk - Lq, row0 = m_block * BM;
        row_end = row0 + BM < Lq ? row0 + BM : Lq;
        n_end = Lk;
        if (P.causal && row_end + off < n_end) n_end = row_end + off; /* last row's diagonal + 1 */
    }

    /* (b, h)'s q, (b, hk)'s k and v, (b, h)'s output rows (P.os2 apart) */
    __device__ __forceinline__ const T *q(const KParams &P) const
    {
        return reinterpret_cast<const T *>(P.q.data) + b * P.q.s0 + h * P.q.s1;
    }
    __device__ __forceinline__ const T *k(const KParams &P) const
    {
        return reinterpret_cast<const T *>(P.k.data) + b * P.k.s0 + hk * P.k.s1;
    }
    __device__ __forceinline__ const T *v(const KParams &P) const
    {
        return reinterpret_cast<const T *>(P.v.data) + b * P.v.s0 + hk * P.v.s1;
    }
    __device__ __forceinline__ T *out(const KParams &P) const { return reinterpret_cast<T *>(P.out) + b * P.os0 + h * P.os1; }

    /* no row of the block sees a key: zeros, by nth threads (and lse +inf, when kept) */
    __device__ __forceinline__ void zero_rows(const KParams &P, int tid, int nth, int D) const
    {
        T *o = out(P);
        for (int x = tid; x < (row_end - row0) * D; x += nth) o[(int64_t)(row0 + x / D) * P.os2 + x % D] = T(0.0f);
        if (P.lse)
            for (int i = row0 + tid; i < row_end; i += nth) P.lse[bh * P.Lq + i] = INFINITY;
    }
};

/* The last key of the tile at j0 (relative to j0, clamped to [-1, BN]) that query
 * row i sees: the key tail and the causal diagonal. */
__device__ __forceinline__ int tile_limit(int i, int j0, int Lk, int off, bool causal, int BN)
{
    int lim = Lk - 1 - j0;
    if (causal && i + off - j0 < lim) lim = i + off - j0;
    return lim < -1 ? -1 : (lim > BN ? BN : lim);
}

/* ---- the two mma.sync forwards (flash/mma, flash/tf32x3) alike: scores as C
 * fragments s[nt] of one warp's 16 rows (g, g + 8) against a key tile ---- */

/* One row (r = 0: g, 1: g + 8) of the online softmax in the exp2 domain:
 * m takes the new max, the row's scores become p = 2^(s sl2 - m sl2), l (this
 * lane's part of the sum) is rescaled and added to; returns the factor
 * alpha the row's output must be rescaled by (0 while it has seen nothing) */
template <int NT>
__device__ __forceinline__ float softmax_row(float (&s)[NT][4], int r, float &m, float &l, float sl2)
{
    float mx = m;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float ms = mx == -INFINITY ? 0.0f : mx * sl2;
    const float alpha = ex2(m * sl2 - ms); /* 0 when m was -inf */
    m = mx;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 2; c++) {
            const float p = ex2(fmaf(s[nt][2 * r + c], sl2, -ms));
            sum += p;
            s[nt][2 * r + c] = p;
        }
    l = l * alpha + sum;
    return alpha;
}

/* cp.async of rows [r0, r0 + NR) of a (lim, .) matrix into a tile: the calling
 * thread's 16-byte chunk of rows lr, lr + RPI, ... (g: its element of row r0,
 * rows gs apart) goes to shared byte s, s + RPI ROWB, ...; rows >= lim are
 * zero-filled (source g0, any mapped address). */
template <int NR, int RPI, int ROWB, typename T>
__device__ __forceinline__ void load_rows(uint32_t s, const T *g, int64_t gs, int r0, int lr, int lim, const T *g0)
{
    if (r0 + NR <= lim) {
#pragma unroll
        for (int it = 0; it < NR / RPI; it++) cp_async16(s + it * RPI * ROWB, g + it * RPI * gs, true);
    } else {
#pragma unroll
        for (int it = 0; it < NR / RPI; it++) {
            const bool ok = r0 + lr + it * RPI < lim;
            cp_async16(s + it * RPI * ROWB, ok ? g + it * RPI * gs : g0, ok);
        }
    }
}

/* the large-shared-memory opt-in, once per kernel and device */
inline int smem_optin(const void *fn, size_t bytes, uint64_t *done)
{
    if (bytes <= 48 * 1024) return 0;
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return (int)e;
    uint64_t bit = 1ull << (dev & 63);
    if (*done & bit) return 0;
    e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess) return (int)e;
    *done |= bit;
    return 0;
}

/* The host side the forward and the backward share (attention_flash.cu). */
KParams make_kparams(const as_attn_params *p);
/* q, k, v all F16 or all BF16 (and out), D = Dv in {64, 128}, unit last
 * stride, 16-byte aligned rows, positions in 32 bits: the mma.sync paths */
bool mma_ok(const as_attn_params *p);
bool aligned16(const as_attn_operand *o);
Opnd opnd(const as_attn_operand &o);
int sm_count(void);

/* The float32 kernel on the CUDA cores (attention_flash_simt.cu): F32 q, k,
 * v and out, D = Dv in {64, 128}, unit last strides; everything the
 * parameters carry (masks, bias, dropout, causal, GQA). */
bool simt_f32_ok(const as_attn_params *p);
int launch_simt_f32(const KParams &kp, cudaStream_t s);

/* The float32 kernel on the tensor cores, 3xTF32 (attention_flash_tf32.cu):
 * what simt_f32_ok takes, with 16-byte aligned rows, on sm_80+, unless
 * ATTNSWAP_FLASH_F32=simt. */
bool tf32x3_ok(const as_attn_params *p);
int launch_tf32x3(const KParams &kp, cudaStream_t s);
/* what tf32x3_ok asks besides the operands: not ATTNSWAP_FLASH_F32=simt or
 * as_cuda_flash_force_f32_simt(1); a compute capability 8.0+ device with the
 * shared memory of both forward kernels (tf32_device_smem: its opt-in
 * limit); 16-byte aligned float32 rows */
bool tf32x3_allowed(void);
size_t tf32_device_smem(void);
bool tf32x3_device(void);
bool rows16(const as_attn_operand &o);

/* The wgmma kernel (sm90/attention_flash_wgmma.cu, built for sm_90a only when
 * the toolkit can): plain attention (no mask, bias, dropout), F16/BF16,
 * D = Dv in {64, 128}, on a device of compute capability 9.0: v 1 the cp.async
 * kernel, 2 and 3 the warp-specialised one, which falls back to the cp.async
 * one where TMA refuses the operands if cp_async_ok, else launches nothing
 * (*taken false).  Returns a cudaError_t value. */
int launch_wgmma(const KParams &kp, const as_attn_params *p, int v, bool cp_async_ok, cudaStream_t s, bool *taken);
/* The warp-specialised variant (v 2, or 3 on the persistent grid: TMA loads by a
 * producer warpgroup) can take these operands (strides TMA accepts). */
bool wgmma_ws_ok(const as_attn_params *p);

/* ---- the backward (attention_flash_bwd.cu) ---- */

struct BParams {
    KParams f;
    Opnd dout;
    const float *lse; /* (B, H, Lq) */
    float *di;        /* (B, H, Lq) scratch: rowsum(dO o O) */
    float *dq, *dbias;
    void *dk, *dv;  /* of dkv_dtype (F32, F16, BF16) */
    int dkv_dtype;
    int *dq_turns; /* NULL, or one zeroed counter a (b, h, 64-row block): dQ added in key-block order */
    int64_t nn;    /* key blocks per (b, kv-head) (tensor-core paths) */
    int nmajor;    /* tiles numbered key block first: t = n * (B Hkv) + bhk (else bhk nn + n) */
};

/* A CTA's sweep in the tensor-core backwards: tile t (a CTA's blockIdx, or
 * each of a persistent CTA's tiles) is key block t % nn (BN keys from n0) of
 * (b, kv-head hk) = t / nn, over the G query heads of
 * the group and, per head, the BM-row query blocks from m_first (causal:
 * query i sees key j iff j <= i + off, so rows below n0 - off see none of the
 * block).  Step it is query head head(it), rows from row0(it). */
template <int BN, int BM>
struct BwdSweep {
    int64_t bhk, b, hk, hq0;
    int Lq, Lk, off, n0, m_first, per_head, iters;

    __device__ __forceinline__ BwdSweep(const KParams &P, int64_t nn, int64_t tile, bool nmajor = false)
    {
        const int64_t Hkv = P.H / P.G;
        bhk = tile / nn;
        n0 = (int)(tile % nn) * BN;
        if (nmajor) {
            const int64_t nbhk = P.B * Hkv;
            bhk = tile % nbhk, n0 = (int)(tile / nbhk) * BN;
        }
        b = bhk / Hkv, hk = bhk % Hkv, hq0 = hk * P.G;
        Lq = (int)P.Lq, Lk = (int)P.Lk, off = Lk - Lq;
        m_first = P.causal && n0 - off > 0 ? (n0 - off) / BM : 0;
        const int nmb = (Lq + BM - 1) / BM;
        per_head = nmb > m_first ? nmb - m_first : 0;
        iters = (int)P.G * per_head;
    }
    __device__ __forceinline__ int64_t head(int it) const { return hq0 + it / per_head; }
    __device__ __forceinline__ int row0(int it) const { return (m_first + it % per_head) * BM; }
    /* Deterministic dQ: the counter of step it's query block, or NULL. */
    __device__ __forceinline__ int *turn(const BParams &B, int it) const
    {
        static_assert(BM == 64, "dq_turns counts 64-row query blocks (AS_ATTN_BWD_TURNS)");
        return B.dq_turns ? B.dq_turns + (b * B.f.H + head(it)) * ((Lq + BM - 1) / BM) + row0(it) / BM : nullptr;
    }
    /* Key block n adds its part of a query block's dQ after blocks 0 .. n - 1
     * did: each of them sweeps that query block too (m_first grows with n), so
     * the counter reads n when its turn comes.  Tiles of lower index are
     * scheduled first (CTAs in launch order), so the one waited for is running
     * or done; a persistent grid would need all its CTAs resident at once, so
     * the launch never combines the two.  One thread waits, then the caller's
     * barrier lets the rest add. */
    __device__ __forceinline__ void wait_turn(const int *c) const
    {
        while (*(volatile const int *)c != n0 / BN) __nanosleep(64);
        __threadfence();
    }
    /* after every thread's adds, their fence, and a barrier: one thread passes
     * the turn on (its own fence too, so the store releases what the barrier
     * ordered before it) */
    __device__ __forceinline__ void pass_turn(int *c) const
    {
        __threadfence();
        *(volatile int *)c = n0 / BN + 1;
    }
};

/* ---- what the two mma.sync backwards share (flash-bwd/mma, flash-bwd/tf32x3):
 * a warp's 16 keys (from jw = n0 + 16 warp) against a step's BM query rows
 * (from i0) of head h, as C fragments: acc[nt][e] is key jw + g + 8 (e >> 1),
 * query i0 + 8 nt + 2t + (e & 1) ---- */

/* the step's row statistics into shared memory by the first BM threads:
 * lse log2 e (+inf past Lq), Di, the dropout row keys */
template <int BM, bool EXTRA>
__device__ __forceinline__ void bwd_stage_stats(const BParams &B, int64_t b, int64_t h, int i0, int tid, float *sL,
                                                float *sDi, uint32_t *sR)
{
    const KParams &P = B.f;
    if (tid < BM) {
        const int i = i0 + tid;
        const int64_t r = (b * P.H + h) * P.Lq + i;
        const bool in = i < (int)P.Lq;
        sL[tid] = in ? B.lse[r] * LOG2E : INFINITY;
        sDi[tid] = in ? B.di[r] : 0.0f;
        sR[tid] = EXTRA && P.dropout && in ? fl_row_key(P.seed, P.H, P.Lq, b, h, i) : 0u;
    }
}

/* S^T -> P^T = 2^(S^T sl2 - lse log2 e), 0 where masked; dropout's keep bits
 * (bit 4 nt + e) cleared where dropped */
template <int NT, bool EXTRA>
__device__ __forceinline__ void bwd_probs(float (&acc)[NT][4], uint32_t &keep, const KParams &P, int64_t b, int64_t h,
                                          int jw, int i0, int Lq, int Lk, int off, int lane, const float *lse2,
                                          const uint32_t *rks)
{
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int j = jw + (lane >> 2) + ((e >> 1) << 3);
            const int il = nt * 8 + ((lane & 3) << 1) + (e & 1), i = i0 + il;
            float x;
            if (EXTRA) {
                x = acc[nt][e];
                if (P.prescale) x *= P.scale;
                if (P.has_mask && i < Lq && j < Lk)
                    x += load_f(P.mask.data, P.mask.dtype,
                                b * P.mask.s0 + h * P.mask.s1 + (int64_t)i * P.mask.s2 + (int64_t)j * P.mask.s3);
                x *= P.sl2;
            } else {
                x = acc[nt][e] * P.sl2;
            }
            const bool vis = j < Lk && (!P.causal || j <= i + off);
            acc[nt][e] = vis ? ex2(x - lse2[il]) : 0.0f;
            if (EXTRA && P.dropout && !fl_keep(rks[il], j, P.threshold)) keep &= ~(1u << (4 * nt + e));
        }
}

/* P^T -> dS^T = P^T o (dP^T o keep / (1 - p) - Di); with a dbias, written there too */
template <int NT, bool EXTRA>
__device__ __forceinline__ void bwd_dscores(float (&acc)[NT][4], const float (&dp)[NT][4], uint32_t keep,
                                            const BParams &B, int64_t b, int64_t h, int jw, int i0, int Lq, int Lk,
                                            int lane, const float *dis)
{
    const KParams &P = B.f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int il = nt * 8 + ((lane & 3) << 1) + (e & 1);
            float d = dp[nt][e];
            if (EXTRA && P.dropout) d = (keep >> (4 * nt + e)) & 1u ? d * P.keep_scale : 0.0f;
            acc[nt][e] = acc[nt][e] * (d - dis[il]);
        }
    if (EXTRA && B.dbias) { /* the bias's gradient is dS itself */
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int j = jw + (lane >> 2) + ((e >> 1) << 3);
                const int i = i0 + nt * 8 + ((lane & 3) << 1) + (e & 1);
                if (i < Lq && j < Lk) B.dbias[((b * P.H + h) * P.Lq + i) * P.Lk + j] = acc[nt][e];
            }
    }
}

/* Pd^T: P^T with dropout applied (kept x 1 / (1 - p), dropped 0), for dV */
template <bool EXTRA>
__device__ __forceinline__ float bwd_dropped(bool dropout, float keep_scale, uint32_t keep, int bit, float p)
{
    return EXTRA && dropout ? ((keep >> bit) & 1u ? p * keep_scale : 0.0f) : p;
}

/* dQ's rows iq (16 of them, from row i0 + qw; acc[nt][e]: row + g + 8 (e >> 1),
 * column 8 nt + 2t + (e & 1)) added, x scale, into the float32 dq by every
 * thread of the CTA (rows past Lq skipped), after the lower key blocks'
 * turns when deterministic (sw.turn). */
template <int DT, int BN, int BM>
__device__ __forceinline__ void bwd_add_dq(const float (&acc)[DT][4], bool rows, const BwdSweep<BN, BM> &sw,
                                           const BParams &B, int it, int64_t h, int row, int tid)
{
    const KParams &P = B.f;
    constexpr int D = DT * 8;
    const int lane = tid & 31;
    int *turn = sw.turn(B, it); /* deterministic: wait for the lower key blocks' adds */
    if (turn) {
        if (tid == 0) sw.wait_turn(turn);
        __syncthreads();
    }
    if (rows) {
        float *dq = B.dq + (sw.b * P.H + h) * P.Lq * D;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int i = row + (lane >> 2) + 8 * r;
            if (i >= (int)P.Lq) continue;
            float *q = dq + (int64_t)i * D + ((lane & 3) << 1);
#pragma unroll
            for (int nt = 0; nt < DT; nt++) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
                atomicAdd(reinterpret_cast<float2 *>(q + nt * 8),
                          make_float2(acc[nt][2 * r] * P.scale, acc[nt][2 * r + 1] * P.scale));
#else
                atomicAdd(q + nt * 8, acc[nt][2 * r] * P.scale);
                atomicAdd(q + nt * 8 + 1, acc[nt][2 * r + 1] * P.scale);
#endif
            }
        }
    }
    if (turn) {
        __threadfence();
        __syncthreads();
        if (tid == 0) sw.pass_turn(turn);
    }
}

/* the warp's 16 keys' dK (x scale) and dV, in dkv_dtype */
template <int DT>
__device__ __forceinline__ void bwd_store_dkv(const float (&dk)[DT][4], const float (&dv)[DT][4], const BParams &B,
                                              int64_t bhk, int jw, int lane)
{
    const KParams &P = B.f;
    constexpr int D = DT * 8;
    const int64_t kv0 = bhk * P.Lk * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = jw + (lane >> 2) + 8 * r;
        if (j >= (int)P.Lk) continue;
#pragma unroll
        for (int nt = 0; nt < DT; nt++) {
            const int64_t o = kv0 + (int64_t)j * D + nt * 8 + ((lane & 3) << 1);
            store_f2(B.dk, B.dkv_dtype, o, dk[nt][2 * r] * P.scale, dk[nt][2 * r + 1] * P.scale);
            store_f2(B.dv, B.dkv_dtype, o, dv[nt][2 * r], dv[nt][2 * r + 1]);
        }
    }
}

/* A device of compute capability 9.0 and the sm_90a kernels built. */
bool wgmma_device(void);

/* The Hopper backward (sm90/attention_flash_bwd_wgmma.cu): plain attention
 * (no mask, bias, dropout; positive scale), F16/BF16, D = Dv in {64, 128},
 * operands TMA accepts.  wgmma_bwd_ok says whether it takes p (the operands
 * offered to TMA only when probe_tma); the launch returns a cudaError_t value,
 * *taken false (and nothing launched) where TMA refuses an operand.  variant:
 * WB_REG, K and V in registers at D = 64; WB_PERSIST, one CTA an SM looping
 * over the tiles; WB_NMAJOR, the tiles in key-block-major order; WB_BM64,
 * 64 query rows a step at D = 64 (whose default is 128); WB_DQ_TMA, dQ added
 * by TMA from shared memory, not by the consumers' float32 atomics;
 * WB_OVERLAP, a step's softmax overlapped with its products; WB_SET, the
 * variant as given (tuning runs: ATTNSWAP_FLASH_BWD), else the automatic one,
 * WB_DQ_TMA, with WB_OVERLAP at D = 64 (docs/performance.md, v0.20). */
enum { WB_REG = 1, WB_PERSIST = 2, WB_NMAJOR = 4, WB_BM64 = 8, WB_DQ_TMA = 16, WB_OVERLAP = 32, WB_SET = 64 };

/* The float32 backward on the tensor cores, 3xTF32 (attention_flash_bwd_tf32.cu):
 * what tf32x3_ok takes, with a float32 dO of 16-byte aligned rows. */
bool bwd_tf32x3_ok(const as_attn_bwd_params *p);
int launch_bwd_tf32x3(const BParams &bp, cudaStream_t s);
bool wgmma_bwd_ok(const as_attn_bwd_params *p, bool probe_tma, int variant);
int launch_bwd_wgmma(const BParams &bp, const as_attn_bwd_params *p, int variant, cudaStream_t s, bool *taken);

} // namespace as_flash

#endif
