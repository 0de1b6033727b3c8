/* What the runtime needs from a device, behind one table: memory, copies,
 * and the kernels the op front-ends call.  The CPU's table is built in
 * (runtime/ops/cpu_backend.c); CUDA's registers itself when the library
 * starts (runtime/cuda/backend.c, through as_init).  Nothing in base/ names
 * a device's code: storage and copies go through the table too. */
#ifndef AS_BACKEND_H
#define AS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "as_attention.h"
#include "as_optim.h"
#include "as_types.h"
#include "attnswap/tensor.h"

/* A batched matrix product for matmul: out (batch..., M, N), contiguous,
 * = op(a) @ op(b) over nb broadcast batch dims (a and b expanded to them).
 * The last two dims of a and b are read as BLAS reads them: transposed by
 * flag, leading dimensions lda and ldb.  fold: b is one matrix for every
 * batch and a's rows follow each other, so one (M * nbatch, K) product does
 * it all (nn.Linear's case).  A backend may replace a and b by copies.
 * bias (or NULL): a contiguous (N,) of out's dtype that the backend may add
 * to every row in the product's epilogue, saying so in bias_done; the
 * caller adds it otherwise.  resid (or NULL): a contiguous tensor of out's
 * shape and dtype the backend may add likewise (cuBLASLt's C operand),
 * saying so in resid_done. */
typedef struct {
    as_tensor *a, *b, *out;
    bool ta, tb, fold;
    int64_t M, N, K, lda, ldb;
    int nb;
    const int64_t *batch;
    int64_t nbatch;
    const as_tensor *bias, *resid;
    bool bias_done, resid_done;
} as_gemm_args;

/* float64 row kernels: the CPU's (kernels/cpu/rows_f64.c); a device without
 * float64 has none (as_backend.f64 NULL) and the dispatcher refuses. */
typedef struct {
    int (*reduce_rows)(as_redop op, const double *x, int64_t rows, int64_t n, int correction, double *out,
                       int64_t *idx);
    int (*softmax_rows)(const double *x, double *y, int64_t rows, int64_t n, int log);
    int (*layer_norm_rows)(const double *x, double *y, int64_t rows, int64_t n, const double *w, const double *b,
                           double eps);
    int (*rms_norm_rows)(const double *x, double *y, int64_t rows, int64_t n, const double *w, double eps);
    int (*scatter_add_rows)(double *dst, const double *src, const int64_t *idx, int64_t outer, int64_t n,
                            int64_t size, int64_t row);
} as_backend_f64;

typedef struct as_backend {
    const char *name;
    /* Makes device index current (creating its stream and handles on first
     * use); 0, or -1 with "fn: ..." set when it does not exist. */
    int (*use)(const char *fn, int index);
    /* The status a kernel returned: 0, or -1 with "fn: ..." set. */
    int (*check)(const char *fn, int status);
    void *(*alloc)(size_t nbytes, int index);
    void (*free)(void *p, int index);
    /* dst[...] = src broadcast to dst's shape, converting dtype; one of the
     * two on this backend's device, the other on it or on the CPU.  0 or -1. */
    int (*copy)(as_tensor *dst, const as_tensor *src);

    /* Kernels (kernels/cpu/cpu_kernels.h has the contracts): a status for check. */
    int (*fill)(const as_kview *dst, double value);
    int (*binary)(as_binop op, const as_kview *out, const as_kview *a, const as_kview *b);
    int (*unary)(as_unop op, const as_kview *out, const as_kview *a);
    int (*clamp)(const as_kview *out, const as_kview *a, double lo, double hi);
    int (*where)(const as_kview *out, const as_kview *cond, const as_kview *a, const as_kview *b);
    int (*reduce_rows)(as_redop op, const float *x, int64_t rows, int64_t n, int correction, float *out,
                       int64_t *idx);
    int (*reduce_rows_i64)(as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out);
    int (*softmax_rows)(const float *x, float *y, int64_t rows, int64_t n, int log);
    int (*softmax_bwd_rows)(const float *y, const float *g, float *out, int64_t rows, int64_t n, int log);
    /* cross-entropy rows: x in its dtype (F32, F16, BF16), kernels/cpu/cpu_kernels.h's contract */
    int (*xent_rows)(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss, float *lse,
                     int64_t rows, int64_t n);
    int (*xent_bwd_rows)(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, const float *lse,
                         const float *g, void *dx, int64_t rows, int64_t n);
    int (*norm_bwd_rows)(const float *x, const float *w, const float *g, float *dx, float *gxh, int64_t rows,
                         int64_t n, double eps, int rms);
    int (*layer_norm_rows)(const float *x, float *y, int64_t rows, int64_t n, const float *w, const float *b,
                           double eps);
    int (*rms_norm_rows)(const float *x, float *y, int64_t rows, int64_t n, const float *w, double eps);
    /* Layer norm (rms = 0) or RMS norm over rows of float16 / bfloat16 (x, y, w, b all of dtype dt, w and b
     * may be NULL), float32 arithmetic: no float32 copies.  NULL where the device has none. */
    int (*norm_rows_16)(as_dtype dt, const void *x, void *y, int64_t rows, int64_t n, const void *w, const void *b,
                        double eps, int rms);
    /* alpha-entmax along the middle dim of a contiguous (outer, n, inner) tensor of dtype dt (F32, F16,
     * BF16), y = entmax(x) (x == y allowed), float32 arithmetic.  NULL where the device has none. */
    int (*entmax_rows)(as_dtype dt, const void *x, void *y, int64_t outer, int64_t n, int64_t inner, double alpha);
    /* bad: NULL when idx is known to lie in [0, size); else an index out of range gives a zero row and is
     * recorded in bad[0], size in bad[1] (a CUDA graph's capture, where the host cannot check) */
    int (*gather_rows)(void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n, int64_t size,
                       int64_t row_bytes, int64_t *bad);
    int (*triangle)(void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es);
    int (*scatter_add_rows)(float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n,
                            int64_t size, int64_t row);

    const as_backend_f64 *f64; /* NULL: no float64 on this device */

    /* matmul's products, float32 or float64 (the CPU) or the tensors' dtype; 0 or -1 with the error set. */
    int (*gemm)(as_gemm_args *g);
    /* Exact attention (kernels/common/as_attention.h), pointers on this
     * device; 0 or -1 with "fn: ..." set.  flash_path: the kernel it takes
     * for p ("flash/avx512", "flash/wgmma-ws", ...). */
    int (*flash)(const char *fn, const as_attn_params *p);
    const char *(*flash_path)(const as_attn_params *p);
    /* Its backward (as_attn_bwd_params), after a forward that saved p->f.lse;
     * 0 or -1 with "fn: ..." set.  NULL where the device has none: attention
     * that needs gradients then takes scaled_dot_product's math path. */
    int (*flash_bwd)(const char *fn, const as_attn_bwd_params *p);
    const char *(*flash_bwd_path)(const as_attn_bwd_params *p); /* "flash-bwd/wgmma", ... */

    /* Fused optimizer steps, in place (kernels/cpu/optim.h has the contracts):
     * a status for check. */
    int (*sgd_step)(const as_sgd_params *h, int64_t n, void *param, as_dtype pdt, const void *grad, as_dtype gdt,
                    float *buf, float *master, bool first);
    int (*adamw_step)(const as_adamw_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                      as_dtype gdt, float *m, float *v, float *vmax, float *master);
    /* Multi-tensor sweeps (as_list_item): the sum of squares of every element
     * into *out (one float on the device), and an in-place scaling. */
    int (*sumsq_list)(const as_list_item *it, int n, float *out);
    int (*scale_list)(const as_list_item *it, int n, double s);
} as_backend;

/* Installs the table for a device type (at start, before any tensor). */
void as_backend_register(as_device_type type, const as_backend *b);
/* The table of a device type as registered (NULL when none), no device made current. */
const as_backend *as_backend_get(as_device_type type);
/* The backend of dev with the device made current; NULL with "fn: device
 * ... is not available in this build" (or the backend's own error) set. */
const as_backend *as_backend_for(const char *fn, as_device dev);

/* A tensor as a kernel reads it (kernels/common/as_types.h). */
static inline as_kview as_kview_of(const as_tensor *t)
{
    as_kview v = {.data = as_data(t), .dtype = t->dtype, .ndim = t->ndim};
    for (int d = 0; d < t->ndim; d++) v.shape[d] = t->shape[d], v.stride[d] = t->stride[d];
    return v;
}

#endif
