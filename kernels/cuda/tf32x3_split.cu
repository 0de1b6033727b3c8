/* The operands of a float32 product run in 3xTF32 on cuBLAS's TF32 kernels
 * (runtime/cuda/gemm.c says why): each element x of a stored matrix becomes
 * big = tf32(x), rounded to nearest, and small = tf32(x - big), laid out as
 * three copies of the matrix one after another along the product's inner (k)
 * dimension.  With A' = [Ab Ab As] and B' = [Bb Bs Bb] over a 3K-long k,
 * A' B' = Ab Bb + Ab Bs + As Bb: a single TF32 product of three times the
 * depth.  The copies keep the source's orientation (k along its rows or its
 * columns), so reads and writes both run along memory, and may be padded
 * with zeros to aligned sizes.  Memory-bound: one read and three writes an
 * element. */
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_kernels.h"

namespace {

__device__ __forceinline__ float tf32_round(float x) /* nearest TF32 value, ties away from zero (cvt.rna) */
{
    return __uint_as_float((__float_as_uint(x) + 0x1000u) & 0xffffe000u);
}

/* x = big + small, both TF32 values: the tensor core would truncate a
 * float32's low 13 bits, so small is rounded here (its error is then at most
 * 2^-22 of x, unbiased, against 2^-21 truncated).  Infinities and NaNs are
 * their own big part with a zero small part, as is a finite x that rounds
 * past float's range.  So an infinity meets the other operand's small parts
 * too, and inf times a zero small part (any TF32-exact value: 1, 0.5, ...)
 * makes the product NaN where SGEMM gives +-inf (docs/api.md). */
__device__ __forceinline__ void split(float x, float &big, float &small)
{
    if ((__float_as_uint(x) & 0x7f800000u) == 0x7f800000u) {
        big = x, small = 0.0f;
        return;
    }
    big = tf32_round(x);
    if (isinf(big)) {
        big = x, small = 0.0f;
        return;
    }
    small = tf32_round(x - big);
}

/* V floats at a time (4 where every row start is 16-byte aligned, else 1).
 * Element (b, i, j) of the (rows, cols) source, rows ld apart and batch
 * matrices bs apart, lands at segment s of the dense destination, each
 * segment (drows, dcols) with zeros past the source: along the columns, row
 * i of 3 dcols; along the rows, row s drows + i. */
template <int V, bool ALONG_ROWS>
__global__ void split3_kernel(float *__restrict__ dst, const float *__restrict__ src, int64_t batch, int64_t rows,
                              int64_t cols, int64_t ld, int64_t bs, int64_t drows, int64_t dcols, int small_seg)
{
    const int64_t cv = dcols / V, n = batch * drows * cv;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < n; x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j = (x % cv) * V, r = x / cv, i = r % drows, b = r / drows;
        float v[V], big[V], small[V];
        if (i >= rows || j >= cols) {
#pragma unroll
            for (int e = 0; e < V; e++) v[e] = 0.0f;
        } else if constexpr (V == 4) {
            const float4 q = *reinterpret_cast<const float4 *>(src + b * bs + i * ld + j);
            v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
        } else {
            v[0] = src[b * bs + i * ld + j];
        }
#pragma unroll
        for (int e = 0; e < V; e++) split(v[e], big[e], small[e]);
        float *d = dst + b * 3 * drows * dcols;
#pragma unroll
        for (int s = 0; s < 3; s++) {
            const float *w = s == small_seg ? small : big;
            float *o = ALONG_ROWS ? d + (s * drows + i) * dcols + j : d + i * 3 * dcols + s * dcols + j;
            if constexpr (V == 4)
                *reinterpret_cast<float4 *>(o) = make_float4(w[0], w[1], w[2], w[3]);
            else
                o[0] = w[0];
        }
    }
}

template <int V, bool ALONG_ROWS>
void launch(float *dst, const float *src, int64_t batch, int64_t rows, int64_t cols, int64_t ld, int64_t bs,
            int64_t drows, int64_t dcols, int small_seg, cudaStream_t s)
{
    const int64_t n = batch * drows * (dcols / V);
    int64_t blocks = (n + 255) / 256;
    if (blocks > (1 << 20)) blocks = 1 << 20;
    split3_kernel<V, ALONG_ROWS>
        <<<(unsigned)blocks, 256, 0, s>>>(dst, src, batch, rows, cols, ld, bs, drows, dcols, small_seg);
}

} // namespace

extern "C" int as_cuda_tf32x3_split(float *dst, const float *src, int64_t batch, int64_t rows, int64_t cols,
                                    int64_t ld, int64_t bs, int64_t drows, int64_t dcols, int along_rows,
                                    int small_seg)
{
    if (batch <= 0 || drows <= 0 || dcols <= 0) return 0;
    if (drows < rows || dcols < cols) return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    const bool vec = cols % 4 == 0 && dcols % 4 == 0 && ld % 4 == 0 && bs % 4 == 0 && ((uintptr_t)src & 15) == 0 &&
                     ((uintptr_t)dst & 15) == 0;
    if (vec)
        along_rows ? launch<4, true>(dst, src, batch, rows, cols, ld, bs, drows, dcols, small_seg, s)
                   : launch<4, false>(dst, src, batch, rows, cols, ld, bs, drows, dcols, small_seg, s);
    else
        along_rows ? launch<1, true>(dst, src, batch, rows, cols, ld, bs, drows, dcols, small_seg, s)
                   : launch<1, false>(dst, src, batch, rows, cols, ld, bs, drows, dcols, small_seg, s);
    return (int)cudaGetLastError();
}
