/* FlashAttention forward in float32 on the CUDA cores (flash/simt-f32):
 * the path for float32 q, k, v and out (no tensor cores: float32 stays
 * float32, as PyTorch does with TF32 off), D = Dv in {64, 128}, unit
 * last strides.  Same semantics as the other paths (attention_flash.cu):
 * q is scaled before the product, a bias is added to the scaled score,
 * bool masks keep where true, causal keeps j <= i + Lk - Lq, dropout with
 * the CPU's hash, zeros for a row that sees no key.
 *
 * A CTA of 128 threads owns BM = 64 query rows of one (b, h) and walks key
 * tiles of BN = 64.  Thread (tr, tc) = (tid / 8, tid % 8) computes rows
 * 4 tr .. 4 tr + 3 against keys tc, tc + 8, ..., tc + 56 of S (4 x 8
 * scores), so a row's 64 scores sit on the 8 lanes tc of one warp and its
 * max and sum take three shuffles; for O += P V the same thread owns the
 * rows' columns tc, tc + 8, ... (4 x D/8 accumulators).  Shared memory:
 * Q (64, D+1) scaled, K (64, D+1) (the +1 puts the 8 keys a warp reads at
 * one d on 8 banks), reused for P (64, 65) once every warp is done with K,
 * and V (64, D): (3 D + 2) 256 bytes, 98 KiB at D = 128, so two CTAs fit
 * an SM. */
#include "attention_flash_common.cuh"

namespace as_flash {
namespace {

constexpr int SBM = 64, SBN = 64, STH = 128;

template <int D>
constexpr size_t simt_smem() { return (size_t)(2 * SBM * (D + 1) + SBN * D) * sizeof(float); }

template <int D>
__global__ void __launch_bounds__(STH, 2) flash_simt_kernel(const KParams P)
{
    extern __shared__ float sm[];
    float *Qs = sm, *Ks = Qs + SBM * (D + 1), *Vs = Ks + SBM * (D + 1), *Ps = Ks; /* P (64, 65) over K */
    constexpr int PS = SBN + 1, DC = D / 8;
    const int tid = threadIdx.x, tr = tid >> 3, tc = tid & 7;

    const int64_t bid = blockIdx.x, nm = P.nm;
    const int64_t bh = bid / nm, b = bh / P.H, h = bh % P.H, hk = h / P.G;
    const int64_t Lq = P.Lq, Lk = P.Lk, off = Lk - Lq, row0 = (bid % nm) * SBM;
    const int64_t row_end = row0 + SBM < Lq ? row0 + SBM : Lq;
    float *out = reinterpret_cast<float *>(P.out) + b * P.os0 + h * P.os1; /* rows P.os2 apart */

    const float *qg = reinterpret_cast<const float *>(P.q.data) + b * P.q.s0 + h * P.q.s1;
    const float *kg = reinterpret_cast<const float *>(P.k.data) + b * P.k.s0 + hk * P.k.s1;
    const float *vg = reinterpret_cast<const float *>(P.v.data) + b * P.v.s0 + hk * P.v.s1;

    /* Q, scaled; rows past Lq are zeros (their results are not stored) */
    for (int x = tid; x < SBM * D; x += STH) {
        const int r = x / D, d = x % D;
        Qs[r * (D + 1) + d] = row0 + r < Lq ? qg[(row0 + r) * P.q.s2 + d] * P.scale : 0.0f;
    }

    float o[4][DC], m_r[4], l_r[4];
    uint32_t rkey[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m_r[i] = -INFINITY, l_r[i] = 0.0f;
        rkey[i] = P.dropout ? fl_row_key(P.seed, P.H, Lq, b, h, row0 + 4 * tr + i) : 0u;
#pragma unroll
        for (int c = 0; c < DC; c++) o[i][c] = 0.0f;
    }

    int64_t n_end = Lk;
    if (P.causal && row_end + off < n_end) n_end = row_end + off;
    for (int64_t j0 = 0; j0 < n_end; j0 += SBN) {
        __syncthreads(); /* every warp is done with the last tile's P and V */
        for (int x = tid; x < SBN * D; x += STH) {
            const int r = x / D, d = x % D;
            const bool ok = j0 + r < Lk;
            Ks[r * (D + 1) + d] = ok ? kg[(j0 + r) * P.k.s2 + d] : 0.0f;
            Vs[r * D + d] = ok ? vg[(j0 + r) * P.v.s2 + d] : 0.0f;
        }
        __syncthreads();

        float s[4][8];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) s[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            float q[4], k[8];
#pragma unroll
            for (int i = 0; i < 4; i++) q[i] = Qs[(4 * tr + i) * (D + 1) + d];
#pragma unroll
            for (int j = 0; j < 8; j++) k[j] = Ks[(tc + 8 * j) * (D + 1) + d];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 8; j++) s[i][j] = fmaf(q[i], k[j], s[i][j]);
        }

        /* bias / mask, key tail, causal; then the online softmax by row */
        float alpha[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int64_t qi = row0 + 4 * tr + i;
            const int64_t mrow = b * P.mask.s0 + h * P.mask.s1 + (qi < Lq ? qi : 0) * P.mask.s2;
            float mx = m_r[i];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int64_t kj = j0 + tc + 8 * j;
                float x = s[i][j];
                if (P.has_mask && kj < Lk) x += load_f(P.mask.data, P.mask.dtype, mrow + kj * P.mask.s3);
                if (kj >= Lk || (P.causal && kj > qi + off)) x = -INFINITY;
                s[i][j] = x;
                mx = fmaxf(mx, x);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
            const float mu = mx == -INFINITY ? 0.0f : mx;
            alpha[i] = expf(m_r[i] - mu); /* 0 while the row has seen nothing */
            m_r[i] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float p = expf(s[i][j] - mu);
                sum += p;
                s[i][j] = P.dropout && !fl_keep(rkey[i], j0 + tc + 8 * j, P.threshold) ? 0.0f : p;
            }
            l_r[i] = l_r[i] * alpha[i] + sum; /* per lane; summed over the 8 lanes at the end */
        }

        __syncthreads(); /* K is read by all: only now may P overwrite it */
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) Ps[(4 * tr + i) * PS + tc + 8 * j] = s[i][j];
        __syncwarp(); /* a row's P comes from its own warp's 8 lanes */

#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int c = 0; c < DC; c++) o[i][c] *= alpha[i];
        const int nk = (int)(n_end - j0 < SBN ? n_end - j0 : SBN);
        for (int kk = 0; kk < nk; kk++) {
            float p[4];
#pragma unroll
            for (int i = 0; i < 4; i++) p[i] = Ps[(4 * tr + i) * PS + kk];
#pragma unroll
            for (int c = 0; c < DC; c++) {
                const float v = Vs[kk * D + tc + 8 * c];
#pragma unroll
                for (int i = 0; i < 4; i++) o[i][c] = fmaf(p[i], v, o[i][c]);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        float l = l_r[i];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        l += __shfl_xor_sync(0xffffffffu, l, 4);
        const int64_t qi = row0 + 4 * tr + i;
        const float inv = l > 0.0f ? P.keep_scale / l : 0.0f;
        if (P.lse && qi < Lq && tc == 0) P.lse[bh * Lq + qi] = l > 0.0f ? m_r[i] + logf(l) : INFINITY;
        if (qi < Lq)
#pragma unroll
            for (int c = 0; c < DC; c++) out[qi * P.os2 + tc + 8 * c] = o[i][c] * inv;
    }
}

template <int D>
int launch(KParams kp, cudaStream_t s)
{
    static uint64_t done;
    int e = smem_optin((const void *)flash_simt_kernel<D>, simt_smem<D>(), &done);
    if (e) return e;
    kp.nm = (kp.Lq + SBM - 1) / SBM;
    const int64_t blocks = kp.nm * kp.B * kp.H;
    if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
    flash_simt_kernel<D><<<(unsigned)blocks, STH, simt_smem<D>(), s>>>(kp);
    return (int)cudaGetLastError();
}

} // namespace

bool simt_f32_ok(const as_attn_params *p)
{
    if (p->q.dtype != AS_F32 || p->k.dtype != AS_F32 || p->v.dtype != AS_F32 || p->out_dtype != AS_F32) return false;
    if (p->D != p->Dv || (p->D != 64 && p->D != 128)) return false; /* P (64, 65) fits K's (64, D + 1) */
    return p->q.stride[3] == 1 && p->k.stride[3] == 1 && p->v.stride[3] == 1;
}

int launch_simt_f32(const KParams &kp, cudaStream_t s)
{
    return kp.D == 64 ? launch<64>(kp, s) : launch<128>(kp, s);
}

} // namespace as_flash
