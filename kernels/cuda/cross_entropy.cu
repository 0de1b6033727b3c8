/* Cross-entropy over rows of class logits, fused (the CPU's contract,
 * kernels/cpu/cross_entropy.c): one CTA a row; the forward reads the row
 * once (an online max and sum per thread, combined across the CTA), the
 * backward reads it and writes its gradient once.  x in its own dtype. */
#include <math.h>

#include "cuda_common.cuh"

namespace {

constexpr int XT = 512; /* threads a row */

/* (m, s) pairs: s = sum e^(x - m); merged so that m is the larger max */
__device__ __forceinline__ void merge(float &m, float &s, float m2, float s2)
{
    if (m2 > m) {
        s = s * __expf(m - m2) + s2;
        m = m2;
    } else if (m2 > -INFINITY) {
        s += s2 * __expf(m2 - m);
    }
}

template <typename T>
__global__ void __launch_bounds__(XT) xent_kernel(const T *x, const int64_t *target, int64_t ignore, float *loss,
                                                  float *lse, int64_t rows, int64_t n)
{
    __shared__ float sm[XT / 32], ss[XT / 32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *p = x + r * n;
        float m = -INFINITY, s = 0.0f;
#pragma unroll 4
        for (int64_t i = threadIdx.x; i < n; i += XT) merge(m, s, to_f(p[i]), 1.0f);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            merge(m, s, m2, s2);
        }
        const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
        if (lane == 0) sm[w] = m, ss[w] = s;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int k = 1; k < XT / 32; k++) merge(m, s, sm[k], ss[k]);
            const int64_t t = target[r];
            const float l = m == -INFINITY || m == INFINITY ? m : m + logf(s);
            lse[r] = l;
            /* an out-of-range target (the front-end checks first) reads nothing: NaN */
            loss[r] = t == ignore ? 0.0f : t < 0 || t >= n ? NAN : l - to_f(p[t]);
        }
        __syncthreads();
    }
}

template <typename T>
__global__ void __launch_bounds__(XT) xent_bwd_kernel(const T *x, const int64_t *target, int64_t ignore,
                                                      const float *lse, const float *g, T *dx, int64_t rows, int64_t n)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *p = x + r * n;
        T *o = dx + r * n;
        const int64_t t = target[r];
        const float gr = t == ignore ? 0.0f : g[r], l = lse[r];
#pragma unroll 4
        for (int64_t i = threadIdx.x; i < n; i += XT) {
            float d = gr == 0.0f ? 0.0f : __expf(to_f(p[i]) - l) * gr;
            if (i == t) d -= gr;
            o[i] = from_f<T>(d);
        }
    }
}

unsigned row_blocks(int64_t rows) { return (unsigned)(rows < (1 << 20) ? rows : (1 << 20)); }

} // namespace

extern "C" int as_cuda_xent_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss,
                                 float *lse, int64_t rows, int64_t n)
{
    if (rows <= 0) return 0;
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    switch (dt) {
    case AS_F32: xent_kernel<float><<<row_blocks(rows), XT, 0, s>>>((const float *)x, target, ignore, loss, lse, rows, n); break;
    case AS_F16: xent_kernel<__half><<<row_blocks(rows), XT, 0, s>>>((const __half *)x, target, ignore, loss, lse, rows, n); break;
    case AS_BF16:
        xent_kernel<__nv_bfloat16><<<row_blocks(rows), XT, 0, s>>>((const __nv_bfloat16 *)x, target, ignore, loss, lse, rows, n);
        break;
    default: return (int)cudaErrorInvalidValue;
    }
    return (int)cudaGetLastError();
}

extern "C" int as_cuda_xent_bwd_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, const float *lse,
                                     const float *g, void *dx, int64_t rows, int64_t n)
{
    if (rows <= 0) return 0;
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    switch (dt) {
    case AS_F32:
        xent_bwd_kernel<float><<<row_blocks(rows), XT, 0, s>>>((const float *)x, target, ignore, lse, g, (float *)dx, rows, n);
        break;
    case AS_F16:
        xent_bwd_kernel<__half><<<row_blocks(rows), XT, 0, s>>>((const __half *)x, target, ignore, lse, g, (__half *)dx, rows, n);
        break;
    case AS_BF16:
        xent_bwd_kernel<__nv_bfloat16><<<row_blocks(rows), XT, 0, s>>>((const __nv_bfloat16 *)x, target, ignore, lse, g,
                                                                       (__nv_bfloat16 *)dx, rows, n);
        break;
    default: return (int)cudaErrorInvalidValue;
    }
    return (int)cudaGetLastError();
}
