/* A matrix copied into a larger (or equal) one, zeros outside it: the padded
 * operands of a misaligned 16-bit product (runtime/cuda/gemm.c) and the crop
 * back.  Memory-bound; rows of the destination are written whole, so its
 * stores coalesce whatever the source's pitch. */
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_kernels.h"

namespace {

template <typename E>
__global__ void pad_copy_kernel(E *dst, int64_t dld, int64_t drows, int64_t dcols, const E *src, int64_t sld,
                                int64_t srows, int64_t scols)
{
    const int64_t n = drows * dcols;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < n; x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = x / dcols, c = x % dcols;
        dst[r * dld + c] = r < srows && c < scols ? src[r * sld + c] : E(0);
    }
}

} // namespace

extern "C" int as_cuda_pad_copy(void *dst, int64_t dld, int64_t drows, int64_t dcols, const void *src, int64_t sld,
                                int64_t srows, int64_t scols, int es)
{
    const int64_t n = drows * dcols;
    if (n <= 0) return 0;
    int64_t blocks = (n + 255) / 256;
    if (blocks > (1 << 20)) blocks = 1 << 20;
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    if (es == 2)
        pad_copy_kernel<uint16_t><<<(unsigned)blocks, 256, 0, s>>>((uint16_t *)dst, dld, drows, dcols,
                                                                  (const uint16_t *)src, sld, srows, scols);
    else if (es == 4)
        pad_copy_kernel<uint32_t><<<(unsigned)blocks, 256, 0, s>>>((uint32_t *)dst, dld, drows, dcols,
                                                                  (const uint32_t *)src, sld, srows, scols);
    else
        return (int)cudaErrorInvalidValue;
    return (int)cudaGetLastError();
}
