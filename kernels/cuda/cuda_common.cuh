/* What every .cu file shares: the C headers, the strided iterator carried
 * into a kernel by value, element loads and stores, launch sizes. */
#ifndef AS_CUDA_COMMON_CUH
#define AS_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "as_iter.h"
}
#include "cuda_kernels.h"

#define AS_CUDA_THREADS 256

static inline cudaStream_t as_stream(void) { return (cudaStream_t)as_cuda_current_stream(); }

static inline unsigned as_blocks(int64_t n, int threads = AS_CUDA_THREADS)
{
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32); /* grid-stride loops do the rest */
}

/* The iterator's layout (merged dims, byte strides) computed on the host by
 * as_iter_init, which does not touch memory: the same walk on both sides. */
template <int NOPS>
struct Offsets {
    int64_t off[NOPS];
};

/* Byte offsets of element i for every operand.  One merged dim (the
 * contiguous and the scalar-broadcast cases) needs no division; below 2^32
 * elements the divisions are 32-bit, several times cheaper on the GPU. */
template <int NOPS, typename Index>
__device__ __forceinline__ Offsets<NOPS> iter_offsets(const as_iter &it, Index i)
{
    Offsets<NOPS> o;
    if (it.ndim == 1) {
#pragma unroll
        for (int k = 0; k < NOPS; k++) o.off[k] = (int64_t)i * it.stride[k][0];
        return o;
    }
#pragma unroll
    for (int k = 0; k < NOPS; k++) o.off[k] = 0;
    for (int d = it.ndim - 1; d >= 0; d--) {
        Index n = (Index)it.shape[d], idx = i % n;
        i /= n;
#pragma unroll
        for (int k = 0; k < NOPS; k++) o.off[k] += (int64_t)idx * it.stride[k][d];
    }
    return o;
}

/* float16 / bfloat16 / float32 element <-> float */
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

/* Elements as float / double, and back, as the CPU's as_load_elem and
 * as_store_elem do (float to integer saturates, NaN gives 0). */
__device__ __forceinline__ double load_elem(const char *p, as_dtype dt)
{
    switch (dt) {
    case AS_F32: return *(const float *)p;
    case AS_F16: return __half2float(*(const __half *)p);
    case AS_BF16: return __bfloat162float(*(const __nv_bfloat16 *)p);
    case AS_I64: return (double)*(const int64_t *)p;
    case AS_I32: return *(const int32_t *)p;
    default: return *(const uint8_t *)p;
    }
}

__device__ __forceinline__ int64_t saturate(double v, double lo, double hi, int64_t mn, int64_t mx)
{
    if (v != v) return 0;
    if (v < lo) return mn;
    if (v >= hi) return mx;
    return (int64_t)v;
}

__device__ __forceinline__ void store_elem(char *p, as_dtype dt, double v)
{
    switch (dt) {
    case AS_F32: *(float *)p = (float)v; break;
    case AS_F16: *(__half *)p = __float2half_rn((float)v); break;
    case AS_BF16: *(__nv_bfloat16 *)p = __float2bfloat16_rn((float)v); break;
    case AS_I64: *(int64_t *)p = saturate(v, -0x1p63, 0x1p63, INT64_MIN, INT64_MAX); break;
    case AS_I32: *(int32_t *)p = (int32_t)saturate(v, -0x1p31, 0x1p31, INT32_MIN, INT32_MAX); break;
    default: *(uint8_t *)p = v != 0; break;
    }
}

static inline int as_launched(void) { return (int)cudaGetLastError(); }

#endif
