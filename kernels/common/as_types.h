/* The plain types kernels and runtime share: element types, the op enums,
 * and a kernel's view of an operand.  No runtime header, no allocation:
 * this is what a kernel may know about a tensor.  Also installed beside the
 * public headers (include/attnswap/dtype.h and ops.h include it). */
#ifndef AS_TYPES_H
#define AS_TYPES_H

#include <stdint.h>

#define AS_MAX_DIMS 8

typedef enum {
    AS_F32 = 0,
    AS_F16,
    AS_BF16,
    AS_I64,
    AS_I32,
    AS_BOOL,
    AS_F64, /* CPU only: kernels compute in double, no float32 round trip */
    AS_NDTYPES
} as_dtype;

/* Elementwise binary ops, NumPy broadcasting, PyTorch type promotion. */
typedef enum {
    AS_ADD, AS_SUB, AS_MUL, AS_DIV, AS_POW, AS_MAXIMUM, AS_MINIMUM,
    /* g f'(x) of an activation (a = x, b = g): backward formulas' own, in one
     * pass where the composite took a dozen (kernels/common/as_grad_math.h) */
    AS_GELU_GRAD, AS_GELU_TANH_GRAD, AS_SILU_GRAD,
    /* comparisons and logic give bool */
    AS_EQ, AS_NE, AS_LT, AS_LE, AS_GT, AS_GE, AS_LOGICAL_AND, AS_LOGICAL_OR,
    AS_NBINOPS
} as_binop;

typedef enum {
    AS_NEG, AS_ABS, AS_EXP, AS_LOG, AS_SQRT, AS_RSQRT, AS_TANH, AS_SIGMOID, AS_RELU,
    AS_GELU,      /* x * Phi(x), erf form */
    AS_GELU_TANH, /* tanh approximation */
    AS_SILU, AS_SIN, AS_COS, AS_LOGICAL_NOT,
    AS_NUNOPS
} as_unop;

typedef enum { AS_SUM, AS_MEAN, AS_MAX, AS_MIN, AS_ARGMAX, AS_ARGMIN, AS_VAR, AS_PROD, AS_NREDOPS } as_redop;

/* An operand as a kernel reads it: the address of its first element, its
 * element type, and shape and strides in elements (0 for a broadcast dim).
 * The runtime fills one from a tensor (runtime/ops/dispatch.h). */
typedef struct {
    void *data;
    as_dtype dtype;
    int ndim;
    int64_t shape[AS_MAX_DIMS];
    int64_t stride[AS_MAX_DIMS];
} as_kview;

#endif
