/* Tensor operations: the runtime's front door to the kernels.
 * Each op checks its arguments (shapes, dtypes, devices), allocates its
 * result and calls the kernel for the tensors' device.  Results are new
 * references; NULL means failure with the reason in as_error_get(), whose
 * message starts with the op's name.  Dims are 0-based; negative dims count
 * from the end.  Inputs may be non-contiguous or broadcast (stride 0). */
#ifndef AS_OPS_H
#define AS_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "as_types.h" /* as_binop, as_unop, as_redop (shared with the kernels) */
#include "attnswap/tensor.h"

/* ---- elementwise, NumPy broadcasting, PyTorch type promotion ---- */
const char *as_binop_name(as_binop op); /* "add", "eq", ... */
/* DIV of two integer tensors gives float32 (true division, as torch). */
as_tensor *as_binary(as_binop op, const as_tensor *a, const as_tensor *b);
/* a op s (or s op a when scalar_first): s takes a's dtype when a is float,
 * float32 when a is integer and s is not integral. */
as_tensor *as_binary_scalar(as_binop op, const as_tensor *a, double s, bool scalar_first);
/* In place: dst = dst op src; src broadcasts to dst. */
int as_binary_(as_binop op, as_tensor *dst, const as_tensor *src);

const char *as_unop_name(as_unop op);
/* Float ops on integer tensors compute in float32; NEG and ABS keep the dtype. */
as_tensor *as_unary(as_unop op, const as_tensor *a);
as_tensor *as_where(const as_tensor *cond, const as_tensor *a, const as_tensor *b);
as_tensor *as_clamp(const as_tensor *a, double lo, double hi); /* NaN bound = unbounded */
/* value where mask (bool, broadcast to a's shape) holds, a elsewhere. */
as_tensor *as_masked_fill(const as_tensor *a, const as_tensor *mask, double value);

/* ---- reductions ---- */
#define AS_ALL_DIMS INT32_MIN
/* dim = AS_ALL_DIMS reduces everything to a 0-d tensor (keepdim ignored).
 * ARGMAX/ARGMIN give int64 indices (0-based; the binding adds 1).
 * VAR uses `correction` (1 = unbiased, as torch's default).
 * MAX/MIN/ARGMAX/ARGMIN of an empty dim is an error; SUM of empty is 0. */
as_tensor *as_reduce(as_redop op, const as_tensor *a, int dim, bool keepdim, int correction);

/* ---- softmax family and norms ---- */
as_tensor *as_softmax(const as_tensor *a, int dim);     /* max-subtracted; a row of -inf gives 0s */
as_tensor *as_log_softmax(const as_tensor *a, int dim);
/* Fused cross-entropy of each row: x (rows, classes) float32, float16 or
 * bfloat16 logits, target (rows) int64 (or int32) class ids; returns (rows)
 * float32 losses log sum_c e^x_rc - x_r,target (0 where target is
 * ignore_index), differentiable in x.  Out-of-range targets: an error on the
 * CPU, NaN on CUDA (check them first, as F.cross_entropy does). */
as_tensor *as_cross_entropy_rows(const as_tensor *x, const as_tensor *target, int64_t ignore_index);
/* Normalises over the last dim; weight and bias (each may be NULL) have shape (last,). */
as_tensor *as_layer_norm(const as_tensor *x, const as_tensor *weight, const as_tensor *bias, double eps);
as_tensor *as_rms_norm(const as_tensor *x, const as_tensor *weight, double eps);

/* ---- linear algebra ---- */
/* torch.matmul semantics: 1-d operands, batch broadcasting; float32 through
 * cblas_sgemm with transposed operands passed as flags, never copied. */
as_tensor *as_matmul(const as_tensor *a, const as_tensor *b);
/* x (..., in) @ w(out, in)^T + bias(out): nn.Linear. bias may be NULL. */
as_tensor *as_linear(const as_tensor *x, const as_tensor *w, const as_tensor *bias);
/* as_linear(x, w, bias) + resid (broadcast as as_binary's add): a residual
 * connection.  With no gradient to record, on CUDA, a contiguous resid of the
 * output's shape and dtype is added inside the product (cuBLASLt's C
 * operand), which saves the add's pass over the output; otherwise it is that
 * add. */
as_tensor *as_linear_add(const as_tensor *x, const as_tensor *w, const as_tensor *bias, const as_tensor *resid);

/* ---- indexing and joining ---- */
as_tensor *as_index_select(const as_tensor *a, int dim, const as_tensor *index); /* 0-based int64/int32 */
as_tensor *as_embedding(const as_tensor *weight, const as_tensor *ids);          /* (V, D)[ids] -> ids.shape + (D,) */
as_tensor *as_cat(int n, const as_tensor *const *ts, int dim);
as_tensor *as_tril(const as_tensor *a, int64_t diagonal);
as_tensor *as_triu(const as_tensor *a, int64_t diagonal);

/* ---- factories ---- */
as_tensor *as_arange(double start, double end, double step, as_dtype dt);

/* ---- random numbers ----
 * Philox-4x32-10, counter based: element i of the n-th draw since
 * as_manual_seed(seed) is a pure function of (seed, offset + i), so results
 * are the same on every machine and thread count. */
void as_manual_seed(uint64_t seed);
uint64_t as_initial_seed(void);
/* The whole generator state, for checkpoints: resuming with it replays the
 * same numbers.  set: 0, or -1 when offset is not one it can reach. */
void as_get_rng_state(uint64_t *seed, uint64_t *offset);
int as_set_rng_state(uint64_t seed, uint64_t offset);
/* While why is not NULL every draw fails with "<fn>: <why>" (a CUDA graph's
 * capture: a draw made once would repeat on every replay); NULL lifts it. */
void as_rng_forbid(const char *why);
as_tensor *as_rand(int ndim, const int64_t *shape, as_dtype dt, as_device dev);  /* U[0, 1) */
as_tensor *as_randn(int ndim, const int64_t *shape, as_dtype dt, as_device dev); /* N(0, 1) */
int as_uniform_(as_tensor *t, double lo, double hi);
int as_normal_(as_tensor *t, double mean, double std);
/* Keep mask for dropout: bool tensor, true with probability 1 - p. */
as_tensor *as_bernoulli_keep(int ndim, const int64_t *shape, double p, as_device dev);

/* ---- threads ---- */
/* OpenMP is the one thread pool (runtime/base/threads.c says why): n threads for
 * the kernels; OpenBLAS stays single-threaded. */
void as_set_num_threads(int n);
int as_get_num_threads(void);
void as_threads_init(void); /* part of as_init */
/* ---- determinism ----
 * On: the kernels that add float32 partial sums in a scheduling-dependent
 * order (the CUDA flash-attention backward's dQ) add them in a fixed order,
 * so a run repeats bit for bit, at some cost in speed (docs/api.md).  Off by
 * default; ATTNSWAP_DETERMINISTIC=1 in the environment turns it on. */
void as_set_deterministic(bool on);
bool as_get_deterministic(void);
/* ---- float32 products ----
 * As torch.set_float32_matmul_precision: "highest" runs every float32
 * product as an IEEE SGEMM; "high" (the default) lets a large one on a CUDA
 * card with TF32 tensor cores run in 3xTF32, errors near float32's
 * (docs/api.md).  The CPU's products are SGEMMs either way.
 * ATTNSWAP_F32_MATMUL=highest in the environment sets the starting value.
 * Setting an unknown name is an error (-1). */
int as_set_float32_matmul_precision(const char *precision);
const char *as_get_float32_matmul_precision(void);
/* Once, before anything else (the Lua module and attnswap-run call it):
 * sets up the thread pool and registers the device backends. */
void as_init(void);
#endif
