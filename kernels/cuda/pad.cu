/* A matrix copied into a larger (or equal) one, zeros outside it: the padded
 * operands of a misaligned 16-bit product (runtime/cuda/gemm.c) and the crop
 * back.  Memory-bound; rows of the destination are written whole, so its
 * stores coalesce whatever the source's pitch. */
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_kernels.h"

namespace {

/* A row a block row: blockIdx.y walks the rows, the x threads a row's columns,
 * so no element divides its flat index (a 64-bit division an element made the
 * LM head's crop run at a third of the memory's speed). */
template <typename E>
__global__ void pad_copy_kernel(E *dst, int64_t dld, int64_t drows, int64_t dcols, const E *src, int64_t sld,
                                int64_t srows, int64_t scols)
{
    for (int64_t r = blockIdx.y; r < drows; r += gridDim.y) {
        E *d = dst + r * dld;
        const E *s = src + r * sld;
        const bool in = r < srows;
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dcols; c += (int64_t)gridDim.x * blockDim.x)
            d[c] = in && c < scols ? s[c] : E(0);
    }
}

} // namespace

extern "C" int as_cuda_pad_copy(void *dst, int64_t dld, int64_t drows, int64_t dcols, const void *src, int64_t sld,
                                int64_t srows, int64_t scols, int es)
{
    if (drows <= 0 || dcols <= 0) return 0;
    const int64_t bx = (dcols + 255) / 256;
    const dim3 grid((unsigned)(bx < 64 ? bx : 64), (unsigned)(drows < 65535 ? drows : 65535));
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    if (es == 2)
        pad_copy_kernel<uint16_t><<<grid, 256, 0, s>>>((uint16_t *)dst, dld, drows, dcols, (const uint16_t *)src, sld,
                                                       srows, scols);
    else if (es == 4)
        pad_copy_kernel<uint32_t><<<grid, 256, 0, s>>>((uint32_t *)dst, dld, drows, dcols, (const uint32_t *)src, sld,
                                                       srows, scols);
    else
        return (int)cudaErrorInvalidValue;
    return (int)cudaGetLastError();
}
