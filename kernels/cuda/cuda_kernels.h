/* CUDA kernels: the GPU twins of kernels/cpu/cpu_kernels.h, with the same
 * contracts (operands checked, expanded and converted by runtime/ops/),
 * except that a launch can fail (each returns 0 or the cudaError_t it met)
 * and that float maps (binary, unary, clamp) read and write float16 and
 * bfloat16 operands directly, computing in float32.
 * Every kernel runs on the current device's stream (as_cuda_current_stream)
 * and does not synchronise; pointers in row kernels are device pointers. */
#ifndef AS_CUDA_KERNELS_H
#define AS_CUDA_KERNELS_H

#include <stdint.h>

#include "as_scalar.h"
#include "as_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The stream every kernel of the current device is queued on (runtime/cuda/device.c). */
void *as_cuda_current_stream(void);

int as_cuda_copy(const as_kview *dst, const as_kview *src);
/* dst (drows, dcols), rows dld apart = src (srows, scols), rows sld apart,
 * zeros where src has no element; es = 2 or 4 bytes (kernels/cuda/pad.cu) */
int as_cuda_pad_copy(void *dst, int64_t dld, int64_t drows, int64_t dcols, const void *src, int64_t sld,
                     int64_t srows, int64_t scols, int es);
/* A float32 (rows, cols) matrix, rows ld apart, batch of them bs apart, as
 * three dense (drows, dcols) copies, zero past the source, one after another
 * along the rows (along_rows) or the columns: each element's TF32 big part,
 * and its small remainder in copy small_seg, for a product run in 3xTF32
 * (kernels/cuda/tf32x3_split.cu) */
int as_cuda_tf32x3_split(float *dst, const float *src, int64_t batch, int64_t rows, int64_t cols, int64_t ld,
                         int64_t bs, int64_t drows, int64_t dcols, int along_rows, int small_seg);
int as_cuda_fill(const as_kview *dst, double value);
int as_cuda_binary(as_binop op, const as_kview *out, const as_kview *a, const as_kview *b);
int as_cuda_unary(as_unop op, const as_kview *out, const as_kview *a);
int as_cuda_clamp(const as_kview *out, const as_kview *a, double lo, double hi);
int as_cuda_where(const as_kview *out, const as_kview *cond, const as_kview *a, const as_kview *b);

int as_cuda_reduce_rows(as_redop op, const float *x, int64_t rows, int64_t n, int correction, float *out,
                        int64_t *idx);
int as_cuda_reduce_rows_i64(as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out);
int as_cuda_softmax_rows(const float *x, float *y, int64_t rows, int64_t n, int log);
/* cross-entropy rows, the CPU's contract (cpu_kernels.h) except that an
 * out-of-range target gives a NaN loss (kernels/cuda/cross_entropy.cu) */
int as_cuda_xent_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss, float *lse,
                      int64_t rows, int64_t n);
int as_cuda_xent_bwd_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, const float *lse,
                          const float *g, void *dx, int64_t rows, int64_t n);
int as_cuda_norm_bwd_rows(const float *x, const float *w, const float *g, float *dx, float *gxh, int64_t rows,
                          int64_t n, double eps, int rms);
int as_cuda_softmax_bwd_rows(const float *y, const float *g, float *out, int64_t rows, int64_t n, int log);
int as_cuda_layer_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w,
                            const float *b, double eps);
int as_cuda_rms_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w, double eps);
/* the same over float16 / bfloat16 rows (dt), float32 arithmetic, a warp per row */
int as_cuda_norm_rows_16(as_dtype dt, const void *x, void *y, int64_t rows, int64_t n, const void *w, const void *b,
                         double eps, int rms);
/* alpha-entmax (alpha in [1, 2]) along the middle dim of a contiguous
 * (outer, n, inner) tensor of dtype dt (F32, F16, BF16); x == y allowed;
 * -inf entries give zeros, a row of -inf zeros (kernels/cuda/entmax.cu). */
int as_cuda_entmax_rows(as_dtype dt, const void *x, void *y, int64_t outer, int64_t n, int64_t inner, double alpha);

/* dst[o, i, :] = src[o, idx[i], :] for o < outer, i < n; rows of row_bytes;
 * idx (device, int64).  bad NULL: idx already checked to lie in [0, size);
 * else (device-visible memory) an index out of range gives a zero row and
 * is stored in bad[0], size in bad[1]. */
int as_cuda_gather_rows(void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n,
                        int64_t size, int64_t row_bytes, int64_t *bad);
/* dst[o, idx[i], :] += src[o, i, :] (float32, device pointers), with atomic adds. */
int as_cuda_scatter_add_rows(float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n, int64_t size,
                             int64_t row);
/* Zeroes, in mats contiguous R x C matrices of es-byte elements, the entries
 * above (lower) or below (!lower) diagonal k. */
int as_cuda_triangle(void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es);

#ifdef __cplusplus
}
#endif

#endif
