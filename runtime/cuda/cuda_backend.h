/* Row-major GEMM on cuBLAS for runtime/ops/matmul.c: C = op(A) op(B) with the
 * transposes as flags, float32 / float16 / bfloat16 operands of one dtype,
 * float32 accumulation (CUBLAS_COMPUTE_32F: no TF32, so float32 results
 * match the CPU's to rounding).  0, or -1 with the error set. */
#ifndef AS_CUDA_GEMM_H
#define AS_CUDA_GEMM_H

#include <stdint.h>

#include "attnswap/tensor.h"

/* batch matrices, the i-th at element offsets i*sa, i*sb, i*sc. */
int as_cuda_gemm(const as_tensor *a, const as_tensor *b, as_tensor *c, int ta, int tb, int64_t M, int64_t N,
                 int64_t K, int64_t lda, int64_t ldb, int64_t ldc, int64_t batch, int64_t sa, int64_t sb,
                 int64_t sc);

#endif
