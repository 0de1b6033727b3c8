/* Elementwise kernels: binary arithmetic and comparisons, unary maps, where.
 * Operands arrive expanded to the output's shape and converted to the compute
 * dtype (float32, float64, int64 or int32); comparisons write bool. */
#include <math.h>
#include <string.h>

#include "as_grad_math.h"
#include "attention_flash.h"
#include "cpu_kernels.h"
#include "strided.h"
#include "vector_variants.h"

#define AT(T, p, s, i) (*(T *)((p) + (i) * (s)))

/* ---- binary ---- */

typedef struct {
    as_binop op;
} binop_ctx;

static inline float f32_binop(as_binop op, float x, float y)
{
    switch (op) {
    case AS_ADD: return x + y;
    case AS_SUB: return x - y;
    case AS_MUL: return x * y;
    case AS_DIV: return x / y;
    case AS_POW: return powf(x, y);
    case AS_MAXIMUM: return (x != x || x > y) ? x : y; /* NaN propagates, as torch */
    case AS_MINIMUM: return (x != x || x < y) ? x : y;
    case AS_GELU_GRAD: return as_gelu_grad_f(x, y);
    case AS_GELU_TANH_GRAD: return as_gelu_tanh_grad_f(x, y);
    case AS_SILU_GRAD: return as_silu_grad_f(x, y);
    default: return 0;
    }
}

static inline double f64_binop(as_binop op, double x, double y)
{
    switch (op) {
    case AS_ADD: return x + y;
    case AS_SUB: return x - y;
    case AS_MUL: return x * y;
    case AS_DIV: return x / y;
    case AS_POW: return pow(x, y);
    case AS_MAXIMUM: return (x != x || x > y) ? x : y;
    case AS_MINIMUM: return (x != x || x < y) ? x : y;
    case AS_GELU_GRAD: return as_gelu_grad_d(x, y);
    case AS_GELU_TANH_GRAD: return as_gelu_tanh_grad_d(x, y);
    case AS_SILU_GRAD: return as_silu_grad_d(x, y);
    default: return 0;
    }
}

static inline int64_t i64_binop(as_binop op, int64_t x, int64_t y)
{
    switch (op) {
    case AS_ADD: return (int64_t)((uint64_t)x + (uint64_t)y);
    case AS_SUB: return (int64_t)((uint64_t)x - (uint64_t)y);
    case AS_MUL: return (int64_t)((uint64_t)x * (uint64_t)y);
    case AS_MAXIMUM: return x > y ? x : y;
    case AS_MINIMUM: return x < y ? x : y;
    case AS_POW: {
        if (y < 0) return x == 1 ? 1 : (x == -1 ? (y & 1 ? -1 : 1) : 0);
        uint64_t r = 1, b = (uint64_t)x;
        for (; y; y >>= 1, b *= b)
            if (y & 1) r *= b;
        return (int64_t)r;
    }
    default: return 0;
    }
}

static inline int compare(as_binop op, double x, double y)
{
    switch (op) {
    case AS_EQ: return x == y;
    case AS_NE: return x != y;
    case AS_LT: return x < y;
    case AS_LE: return x <= y;
    case AS_GT: return x > y;
    case AS_GE: return x >= y;
    case AS_LOGICAL_AND: return x != 0 && y != 0;
    case AS_LOGICAL_OR: return x != 0 || y != 0;
    default: return 0;
    }
}

static int grad_map_f32(as_binop op, float *o, const float *x, const float *g, int64_t n);

static void loop_f32(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_binop op = ((binop_ctx *)ctx)->op;
    if (s[0] == 4 && s[1] == 4 && s[2] == 4) {
        float *o = (float *)p[0];
        const float *x = (const float *)p[1], *y = (const float *)p[2];
        if (grad_map_f32(op, o, x, y, n)) return;
        switch (op) { /* the hot cases, written so the compiler vectorises them */
        case AS_ADD: for (int64_t i = 0; i < n; i++) o[i] = x[i] + y[i]; return;
        case AS_SUB: for (int64_t i = 0; i < n; i++) o[i] = x[i] - y[i]; return;
        case AS_MUL: for (int64_t i = 0; i < n; i++) o[i] = x[i] * y[i]; return;
        case AS_DIV: for (int64_t i = 0; i < n; i++) o[i] = x[i] / y[i]; return;
        default: break;
        }
    } else if (s[0] == 4 && s[1] == 4 && s[2] == 0) {
        float *o = (float *)p[0];
        const float *x = (const float *)p[1], y = *(const float *)p[2];
        switch (op) {
        case AS_ADD: for (int64_t i = 0; i < n; i++) o[i] = x[i] + y; return;
        case AS_SUB: for (int64_t i = 0; i < n; i++) o[i] = x[i] - y; return;
        case AS_MUL: for (int64_t i = 0; i < n; i++) o[i] = x[i] * y; return;
        case AS_DIV: for (int64_t i = 0; i < n; i++) o[i] = x[i] / y; return;
        default: break;
        }
    }
    for (int64_t i = 0; i < n; i++)
        AT(float, p[0], s[0], i) = f32_binop(op, AT(float, p[1], s[1], i), AT(float, p[2], s[2], i));
}

/* float64 (CPU only): no fast paths, the naive loop is what gradcheck needs */
static void loop_f64(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_binop op = ((binop_ctx *)ctx)->op;
    for (int64_t i = 0; i < n; i++)
        AT(double, p[0], s[0], i) = f64_binop(op, AT(double, p[1], s[1], i), AT(double, p[2], s[2], i));
}

static void loop_i64(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_binop op = ((binop_ctx *)ctx)->op;
    for (int64_t i = 0; i < n; i++)
        AT(int64_t, p[0], s[0], i) = i64_binop(op, AT(int64_t, p[1], s[1], i), AT(int64_t, p[2], s[2], i));
}

static void loop_i32(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_binop op = ((binop_ctx *)ctx)->op;
    for (int64_t i = 0; i < n; i++)
        AT(int32_t, p[0], s[0], i) =
            (int32_t)i64_binop(op, AT(int32_t, p[1], s[1], i), AT(int32_t, p[2], s[2], i));
}

typedef struct {
    as_binop op;
    as_dtype dt;
} cmp_ctx;

static void loop_cmp(void *ctx, char **p, const int64_t *s, int64_t n)
{
    const cmp_ctx *c = ctx;
    for (int64_t i = 0; i < n; i++) {
        double x = as_load_elem(p[1] + i * s[1], c->dt, 0), y = as_load_elem(p[2] + i * s[2], c->dt, 0);
        AT(uint8_t, p[0], s[0], i) = (uint8_t)compare(c->op, x, y);
    }
}

static void loop_cmp_i64(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_binop op = ((cmp_ctx *)ctx)->op;
    for (int64_t i = 0; i < n; i++) {
        int64_t x = AT(int64_t, p[1], s[1], i), y = AT(int64_t, p[2], s[2], i);
        int r = op == AS_EQ ? x == y : op == AS_NE ? x != y : op == AS_LT ? x < y : op == AS_LE ? x <= y
              : op == AS_GT ? x > y : op == AS_GE ? x >= y : compare(op, (double)(x != 0), (double)(y != 0));
        AT(uint8_t, p[0], s[0], i) = (uint8_t)r;
    }
}

static void loop_cmp_f32(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_binop op = ((cmp_ctx *)ctx)->op;
    for (int64_t i = 0; i < n; i++)
        AT(uint8_t, p[0], s[0], i) = (uint8_t)compare(op, AT(float, p[1], s[1], i), AT(float, p[2], s[2], i));
}

void as_cpu_binary(as_binop op, const as_kview *out, const as_kview *a, const as_kview *b)
{
    as_iter it;
    const as_kview *ops[3] = {out, a, b};
    as_iter_init(&it, 3, ops, out->ndim, out->shape);
    if (op >= AS_EQ) {
        cmp_ctx c = {op, a->dtype};
        /* int64 beyond 2^53 compares exactly only as integers */
        as_cpu_iter_run(&it, a->dtype == AS_F32 ? loop_cmp_f32 : a->dtype == AS_I64 ? loop_cmp_i64 : loop_cmp, &c);
        return;
    }
    binop_ctx c = {op};
    switch (a->dtype) {
    case AS_F32: as_cpu_iter_run(&it, loop_f32, &c); break;
    case AS_F64: as_cpu_iter_run(&it, loop_f64, &c); break;
    case AS_I64: as_cpu_iter_run(&it, loop_i64, &c); break;
    case AS_I32: as_cpu_iter_run(&it, loop_i32, &c); break;
    default: break;
    }
}

/* ---- unary ---- */

typedef struct {
    as_unop op;
    double lo, hi;
} unop_ctx;

static inline float f32_unop(as_unop op, float x)
{
    switch (op) {
    case AS_NEG: return -x;
    case AS_ABS: return fabsf(x);
    case AS_EXP: return expf(x);
    case AS_LOG: return logf(x);
    case AS_SQRT: return sqrtf(x);
    case AS_RSQRT: return 1.0f / sqrtf(x);
    case AS_TANH: return tanhf(x);
    case AS_SIGMOID: return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
    case AS_RELU: return x > 0 ? x : (x != x ? x : 0.0f);
    case AS_GELU: return 0.5f * x * erfcf(x * -0.70710678118654752f); /* erfc: no 1 - 1 cancellation below 0 */
    case AS_GELU_TANH: {
        float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(inner));
    }
    case AS_SILU: return x >= 0 ? x / (1.0f + expf(-x)) : x * expf(x) / (1.0f + expf(x));
    case AS_SIN: return sinf(x);
    case AS_COS: return cosf(x);
    default: return 0;
    }
}

static inline double f64_unop(as_unop op, double x)
{
    switch (op) {
    case AS_NEG: return -x;
    case AS_ABS: return fabs(x);
    case AS_EXP: return exp(x);
    case AS_LOG: return log(x);
    case AS_SQRT: return sqrt(x);
    case AS_RSQRT: return 1.0 / sqrt(x);
    case AS_TANH: return tanh(x);
    case AS_SIGMOID: return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    case AS_RELU: return x > 0 ? x : (x != x ? x : 0.0);
    case AS_GELU: return 0.5 * x * erfc(x * -0.70710678118654752);
    case AS_GELU_TANH: return 0.5 * x * (1.0 + tanh(0.79788456080286536 * (x + 0.044715 * x * x * x)));
    case AS_SILU: return x >= 0 ? x / (1.0 + exp(-x)) : x * exp(x) / (1.0 + exp(x));
    case AS_SIN: return sin(x);
    case AS_COS: return cos(x);
    default: return 0;
    }
}

static void loop_unary_f64(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_unop op = ((unop_ctx *)ctx)->op;
    for (int64_t i = 0; i < n; i++) AT(double, p[0], s[0], i) = f64_unop(op, AT(double, p[1], s[1], i));
}

/* The maps made of e^x, on contiguous float32: a block at a time through the
 * flash kernels' vector exp (2 ulp; libm's expf is scalar and was most of a
 * GELU or a sigmoid).  Each is written where it has no cancellation: tanh
 * from e^(-2|x|) (a series below 1/16), the sigmoid from e^(-|x|).  Returns
 * 0 for the other maps. */
#define EXP_BLOCK 512

/* The normal CDF Phi(x) = 0.5 erfc(-x / sqrt 2) through erfc(z) = s e^(-z^2 + P(s)),
 * s = 1 / (1 + z/2), z = |x| / sqrt 2 (Numerical Recipes' erfcc: relative error
 * < 1.2e-7 for every z), in two steps around the vector exp: erfc_exponent gives
 * -z^2 + P(s), phi_from takes its exp.  x < 0 takes 0.5 erfc(z) directly (no
 * 1 - 1 cancellation), x >= 0 1 - erfc / 2.  libm's erff is scalar: it made
 * GELU 3x PyTorch's, and its gradient 8x the tanh form's. */
AS_VECTOR_IMPL float erfc_exponent(float x)
{
    float z = fabsf(x) * 0.70710678118654752f, u = 1.0f / (1.0f + 0.5f * z);
    return -z * z - 1.26551223f + u * (1.00002368f + u * (0.37409196f + u * (0.09678418f +
           u * (-0.18628806f + u * (0.27886807f + u * (-1.13520398f + u * (1.48851587f +
           u * (-0.82215223f + u * 0.17087277f))))))));
}

AS_VECTOR_IMPL float phi_from(float v, float e)
{
    /* q = erfc(z), zeroed past z = 9 (1e-36) where the vector exp's clamp at
     * e^-87 would leave 1e-38; then 0.5 (2 - q) for v >= +0, 0.5 q below.
     * Both choices on the bits: a float compare may trap, so gcc keeps it a
     * branch and the loop would not vectorise (5x slower). */
    float z = fabsf(v) * 0.70710678118654752f, q = e / (1.0f + 0.5f * z);
    int32_t vb, zb, qb;
    memcpy(&vb, &v, 4), memcpy(&zb, &z, 4), memcpy(&qb, &q, 4);
    qb &= -(int32_t)(zb <= 0x41100000); /* 9.0f */
    memcpy(&q, &qb, 4);
    float pos = (float)(1 - ((uint32_t)vb >> 31));
    return 0.5f * (q + pos * (2.0f - 2.0f * q));
}

AS_VECTOR_IMPL void exp_map_impl(as_unop op, float *o, const float *x, int64_t n)
{
    float t[EXP_BLOCK];
    for (int64_t i0 = 0; i0 < n; i0 += EXP_BLOCK) {
        int64_t m = n - i0 < EXP_BLOCK ? n - i0 : EXP_BLOCK;
        const float *xb = x + i0;
        float *ob = o + i0;
        switch (op) {
        case AS_EXP:
            as_cpu_flash_exp(xb, ob, m);
            for (int64_t j = 0; j < m; j++)
                if (xb[j] > 88.0f) ob[j] = expf(xb[j]); /* the vector exp stops at e^88 */
            break;
        case AS_SIGMOID:
        case AS_SILU:
            for (int64_t j = 0; j < m; j++) t[j] = -fabsf(xb[j]);
            as_cpu_flash_exp(t, t, m);
            for (int64_t j = 0; j < m; j++) {
                float r = 1.0f / (1.0f + t[j]), sg = xb[j] >= 0 ? r : t[j] * r;
                ob[j] = op == AS_SILU ? xb[j] * sg : sg;
            }
            break;
        case AS_TANH:
            for (int64_t j = 0; j < m; j++) t[j] = -2.0f * fabsf(xb[j]);
            as_cpu_flash_exp(t, t, m);
            for (int64_t j = 0; j < m; j++) {
                float a = fabsf(xb[j]), a2 = a * a, r;
                if (a < 0.0625f) /* tanh's series: 1 - t cancels here */
                    r = a * (1.0f + a2 * (-1.0f / 3 + a2 * (2.0f / 15 + a2 * (-17.0f / 315))));
                else
                    r = (1.0f - t[j]) / (1.0f + t[j]);
                ob[j] = copysignf(r, xb[j]);
            }
            break;
        case AS_GELU: /* 0.5 x (1 + erf(x / sqrt 2)) = x Phi(x) */
            for (int64_t j = 0; j < m; j++) t[j] = erfc_exponent(xb[j]);
            as_cpu_flash_exp(t, t, m);
            for (int64_t j = 0; j < m; j++) ob[j] = xb[j] * phi_from(xb[j], t[j]);
            break;
        default: /* AS_GELU_TANH: 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)) */
            for (int64_t j = 0; j < m; j++) {
                float v = xb[j];
                t[j] = -2.0f * 0.79788456080286536f * (v + 0.044715f * v * v * v);
            }
            for (int64_t j = 0; j < m; j++) ob[j] = t[j]; /* keep -2u: the exp clamps it */
            as_cpu_flash_exp(t, t, m);
            for (int64_t j = 0; j < m; j++)
                ob[j] = ob[j] > 88.0f ? 0.0f * xb[j] : xb[j] / (1.0f + t[j]);
            break;
        }
    }
}
AS_VECTOR_VARIANTS(exp_map, (as_unop op, float *o, const float *x, int64_t n), (op, o, x, n))

static int exp_map_f32(as_unop op, float *o, const float *x, int64_t n)
{
    if (op != AS_EXP && op != AS_SIGMOID && op != AS_SILU && op != AS_TANH && op != AS_GELU_TANH && op != AS_GELU)
        return 0;
    exp_map_pick()(op, o, x, n);
    return 1;
}

/* GELU (erf and tanh) and SiLU gradients on contiguous float32: their erfc,
 * tanh and sigmoid through the vector exp above, a block at a time (libm's
 * tanhf made the one-pass gradient slower than the composite it replaced). */
AS_VECTOR_IMPL void grad_map_impl(as_binop op, float *o, const float *x, const float *g, int64_t n)
{
    const float k = 0.79788456080286536f, c = 0.044715f;
    float u[EXP_BLOCK], t[EXP_BLOCK];
    for (int64_t i0 = 0; i0 < n; i0 += EXP_BLOCK) {
        int64_t m = n - i0 < EXP_BLOCK ? n - i0 : EXP_BLOCK;
        const float *xb = x + i0, *gb = g + i0;
        float *ob = o + i0;
        if (op == AS_GELU_GRAD) { /* Phi(x) + x phi(x), phi(x) = e^(-x^2 / 2) / sqrt(2 pi) */
            for (int64_t j = 0; j < m; j++) t[j] = erfc_exponent(xb[j]), u[j] = -0.5f * xb[j] * xb[j];
            as_cpu_flash_exp(t, t, m);
            as_cpu_flash_exp(u, u, m);
            for (int64_t j = 0; j < m; j++)
                ob[j] = gb[j] * (phi_from(xb[j], t[j]) + xb[j] * 0.39894228040143268f * u[j]);
        } else if (op == AS_GELU_TANH_GRAD) {
            for (int64_t j = 0; j < m; j++) u[j] = k * xb[j] * (1.0f + c * xb[j] * xb[j]);
            exp_map_impl(AS_TANH, t, u, m);
            for (int64_t j = 0; j < m; j++) {
                float v = xb[j], tj = t[j];
                ob[j] = gb[j] * (0.5f * (1.0f + tj) + 0.5f * v * (1.0f - tj * tj) * k * (1.0f + 3.0f * c * v * v));
            }
        } else {
            exp_map_impl(AS_SIGMOID, t, xb, m);
            for (int64_t j = 0; j < m; j++) ob[j] = gb[j] * t[j] * (1.0f + xb[j] * (1.0f - t[j]));
        }
    }
}
AS_VECTOR_VARIANTS(grad_map, (as_binop op, float *o, const float *x, const float *g, int64_t n), (op, o, x, g, n))

static int grad_map_f32(as_binop op, float *o, const float *x, const float *g, int64_t n)
{
    if (op != AS_GELU_GRAD && op != AS_GELU_TANH_GRAD && op != AS_SILU_GRAD) return 0;
    grad_map_pick()(op, o, x, g, n);
    return 1;
}

static void loop_unary_f32(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_unop op = ((unop_ctx *)ctx)->op;
    if (s[0] == 4 && s[1] == 4) {
        float *o = (float *)p[0];
        const float *x = (const float *)p[1];
        if (o != x && exp_map_f32(op, o, x, n)) return;
        switch (op) {
        case AS_NEG: for (int64_t i = 0; i < n; i++) o[i] = -x[i]; return;
        case AS_RELU: for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 ? x[i] : 0.0f; return;
        default: for (int64_t i = 0; i < n; i++) o[i] = f32_unop(op, x[i]); return;
        }
    }
    for (int64_t i = 0; i < n; i++) AT(float, p[0], s[0], i) = f32_unop(op, AT(float, p[1], s[1], i));
}

static void loop_unary_int(void *ctx, char **p, const int64_t *s, int64_t n)
{
    /* integer NEG / ABS / RELU (int64 or int32 in ctx->lo as the element size) */
    const unop_ctx *c = ctx;
    int wide = c->lo == 8;
    for (int64_t i = 0; i < n; i++) {
        int64_t x = wide ? AT(int64_t, p[1], s[1], i) : AT(int32_t, p[1], s[1], i);
        int64_t r = c->op == AS_NEG ? (int64_t)(0 - (uint64_t)x) : c->op == AS_ABS ? (x < 0 ? (int64_t)(0 - (uint64_t)x) : x) : (x > 0 ? x : 0);
        if (wide) AT(int64_t, p[0], s[0], i) = r;
        else AT(int32_t, p[0], s[0], i) = (int32_t)r;
    }
}

static void loop_not(void *ctx, char **p, const int64_t *s, int64_t n)
{
    as_dtype dt = *(as_dtype *)ctx;
    for (int64_t i = 0; i < n; i++) AT(uint8_t, p[0], s[0], i) = as_load_elem(p[1] + i * s[1], dt, 0) == 0;
}

void as_cpu_unary(as_unop op, const as_kview *out, const as_kview *a)
{
    as_iter it;
    const as_kview *ops[2] = {out, a};
    as_iter_init(&it, 2, ops, out->ndim, out->shape);
    if (op == AS_LOGICAL_NOT) {
        as_dtype dt = a->dtype;
        as_cpu_iter_run(&it, loop_not, &dt);
    } else if (a->dtype == AS_F32 || a->dtype == AS_F64) {
        unop_ctx c = {op, 0, 0};
        as_cpu_iter_run(&it, a->dtype == AS_F64 ? loop_unary_f64 : loop_unary_f32, &c);
    } else {
        unop_ctx c = {op, (double)as_dtype_size(a->dtype), 0};
        as_cpu_iter_run(&it, loop_unary_int, &c);
    }
}

static void loop_clamp(void *ctx, char **p, const int64_t *s, int64_t n)
{
    const unop_ctx *c = ctx;
    float lo = (float)c->lo, hi = (float)c->hi;
    int has_lo = !isnan(c->lo), has_hi = !isnan(c->hi);
    for (int64_t i = 0; i < n; i++) {
        float x = AT(float, p[1], s[1], i);
        if (has_lo && x < lo) x = lo;
        if (has_hi && x > hi) x = hi;
        AT(float, p[0], s[0], i) = x;
    }
}

static void loop_clamp_f64(void *ctx, char **p, const int64_t *s, int64_t n)
{
    const unop_ctx *c = ctx;
    int has_lo = !isnan(c->lo), has_hi = !isnan(c->hi);
    for (int64_t i = 0; i < n; i++) {
        double x = AT(double, p[1], s[1], i);
        if (has_lo && x < c->lo) x = c->lo;
        if (has_hi && x > c->hi) x = c->hi;
        AT(double, p[0], s[0], i) = x;
    }
}

void as_cpu_clamp(const as_kview *out, const as_kview *a, double lo, double hi)
{
    as_iter it;
    const as_kview *ops[2] = {out, a};
    as_iter_init(&it, 2, ops, out->ndim, out->shape);
    unop_ctx c = {AS_NUNOPS, lo, hi};
    as_cpu_iter_run(&it, a->dtype == AS_F64 ? loop_clamp_f64 : loop_clamp, &c);
}

/* ---- where ---- */

static void loop_where(void *ctx, char **p, const int64_t *s, int64_t n)
{
    size_t es = *(size_t *)ctx;
    for (int64_t i = 0; i < n; i++)
        memcpy(p[0] + i * s[0], AT(uint8_t, p[1], s[1], i) ? p[2] + i * s[2] : p[3] + i * s[3], es);
}

void as_cpu_where(const as_kview *out, const as_kview *cond, const as_kview *a, const as_kview *b)
{
    as_iter it;
    const as_kview *ops[4] = {out, cond, a, b};
    as_iter_init(&it, 4, ops, out->ndim, out->shape);
    size_t es = as_dtype_size(out->dtype);
    as_cpu_iter_run(&it, loop_where, &es);
}
