/* Elementwise kernels on the GPU: copy with conversion, fill, binary and
 * unary maps, clamp, where.  One thread per element, grid-stride, or per 16
 * bytes where the innermost run is contiguous (map_vec_kernel); operands
 * are walked by the same merged-dims iterator as on the CPU, and the element
 * functions are the CPU's (kernels/cpu/elementwise.c) so results agree. */
#include <math.h>

#include "as_grad_math.h"
#include "cuda_common.cuh"

#define AT(T, base, off) (*(T *)((base) + (off)))

template <int NOPS, typename Index, typename F>
__global__ void map_kernel(as_iter it, F f)
{
    for (Index i = blockIdx.x * (Index)blockDim.x + threadIdx.x; i < (Index)it.numel;
         i += (Index)gridDim.x * blockDim.x) {
        Offsets<NOPS> o = iter_offsets<NOPS, Index>(it, i);
        f(it.base, o.off);
    }
}

/* The fast path: every operand's innermost run contiguous and its rows
 * 16-byte aligned, one element size (2 or 4 bytes): each thread moves 16
 * bytes of each operand with one load or store and does the index
 * arithmetic once per 16 bytes, not once per element.  The element function
 * is the same, applied to the registers the vectors were loaded into. */
template <int NOPS, int ES, typename F>
__global__ void map_vec_kernel(as_iter it, F f)
{
    constexpr int V = 16 / ES;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < (uint32_t)it.numel; i += gridDim.x * blockDim.x) {
        Offsets<NOPS> o = iter_offsets<NOPS, uint32_t>(it, i);
        uint4 r[NOPS];
#pragma unroll
        for (int k = 1; k < NOPS; k++) r[k] = *(const uint4 *)(it.base[k] + o.off[k]);
        char *p[NOPS];
#pragma unroll
        for (int k = 0; k < NOPS; k++) p[k] = (char *)&r[k];
#pragma unroll
        for (int v = 0; v < V; v++) {
            int64_t lo[NOPS];
#pragma unroll
            for (int k = 0; k < NOPS; k++) lo[k] = v * ES;
            f(p, lo);
        }
        *(uint4 *)(it.base[0] + o.off[0]) = r[0];
    }
}

/* The element size of the vector path for it (2 or 4), or 0 where it does not
 * apply; it is then rewritten to walk 16-byte vectors. */
static int vectorise(as_iter *it, int n, const as_kview *const *ops)
{
    int es = (int)as_dtype_size(ops[0]->dtype), d = it->ndim - 1;
    if ((es != 2 && es != 4) || d < 0) return 0;
    int64_t v = 16 / es;
    if (it->shape[d] % v || it->numel / v >= ((int64_t)1 << 31)) return 0;
    for (int k = 0; k < n; k++) {
        if ((int)as_dtype_size(ops[k]->dtype) != es || it->stride[k][d] != es || (uintptr_t)it->base[k] % 16) return 0;
        for (int j = 0; j < d; j++)
            if (it->stride[k][j] % 16) return 0;
    }
    it->shape[d] /= v, it->numel /= v;
    for (int k = 0; k < n; k++) it->stride[k][d] = 16;
    return es;
}

template <int NOPS, typename F>
static int run_map(int n, const as_kview *const *ops, const as_kview *out, F f)
{
    as_iter it;
    as_iter_init(&it, n, ops, out->ndim, out->shape);
    if (it.numel == 0) return 0;
    int es = vectorise(&it, n, ops);
    if (es == 2)
        map_vec_kernel<NOPS, 2><<<as_blocks(it.numel), AS_CUDA_THREADS, 0, as_stream()>>>(it, f);
    else if (es == 4)
        map_vec_kernel<NOPS, 4><<<as_blocks(it.numel), AS_CUDA_THREADS, 0, as_stream()>>>(it, f);
    else if (it.numel < ((int64_t)1 << 31))
        map_kernel<NOPS, uint32_t><<<as_blocks(it.numel), AS_CUDA_THREADS, 0, as_stream()>>>(it, f);
    else
        map_kernel<NOPS, int64_t><<<as_blocks(it.numel), AS_CUDA_THREADS, 0, as_stream()>>>(it, f);
    return as_launched();
}

/* ---- copy and fill ---- */

struct CopySame {
    int64_t es;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        switch (es) {
        case 8: AT(uint64_t, p[0], o[0]) = AT(const uint64_t, p[1], o[1]); break;
        case 4: AT(uint32_t, p[0], o[0]) = AT(const uint32_t, p[1], o[1]); break;
        case 2: AT(uint16_t, p[0], o[0]) = AT(const uint16_t, p[1], o[1]); break;
        default: AT(uint8_t, p[0], o[0]) = AT(const uint8_t, p[1], o[1]); break;
        }
    }
};

struct CopyConvert {
    as_dtype dst, src;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        if (src == AS_I64 && dst == AS_I32) AT(int32_t, p[0], o[0]) = (int32_t)AT(const int64_t, p[1], o[1]);
        else if (src == AS_I32 && dst == AS_I64) AT(int64_t, p[0], o[0]) = AT(const int32_t, p[1], o[1]);
        else store_elem(p[0] + o[0], dst, load_elem(p[1] + o[1], src));
    }
};

extern "C" int as_cuda_copy(const as_kview *dst, const as_kview *src)
{
    const as_kview *ops[2] = {dst, src};
    if (dst->dtype == src->dtype) return run_map<2>(2, ops, dst, CopySame{(int64_t)as_dtype_size(dst->dtype)});
    return run_map<2>(2, ops, dst, CopyConvert{dst->dtype, src->dtype});
}

struct Fill {
    uint64_t bits;
    int64_t es;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        switch (es) {
        case 8: AT(uint64_t, p[0], o[0]) = bits; break;
        case 4: AT(uint32_t, p[0], o[0]) = (uint32_t)bits; break;
        case 2: AT(uint16_t, p[0], o[0]) = (uint16_t)bits; break;
        default: AT(uint8_t, p[0], o[0]) = (uint8_t)bits; break;
        }
    }
};

extern "C" int as_cuda_fill(const as_kview *dst, double value)
{
    uint64_t bits = 0; /* the value encoded on the host, as the CPU fill does */
    as_store_elem(&bits, dst->dtype, 0, value);
    const as_kview *ops[1] = {dst};
    return run_map<1>(1, ops, dst, Fill{bits, (int64_t)as_dtype_size(dst->dtype)});
}

/* ---- binary ---- */

__device__ __forceinline__ float f32_binop(as_binop op, float x, float y)
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

__device__ __forceinline__ int64_t i64_binop(as_binop op, int64_t x, int64_t y)
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

template <typename T>
__device__ __forceinline__ int compare(as_binop op, T x, T y)
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

/* float32, float16, bfloat16: computed in float32, rounded once.  OP >= 0 fixes
 * the op at compile time, for the ones a model runs every layer: the switch in
 * f32_binop then folds to the one case, where with a run-time op every
 * element carried all of them (ViT's bf16 GELU ran at half eager's speed). */
template <typename T, int OP = -1>
struct BinaryFloat {
    as_binop op;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        AT(T, p[0], o[0]) = from_f<T>(
            f32_binop(OP >= 0 ? (as_binop)OP : op, to_f(AT(const T, p[1], o[1])), to_f(AT(const T, p[2], o[2]))));
    }
};

template <typename T>
static int binary_float(as_binop op, const as_kview *const *ops, const as_kview *out)
{
    switch (op) {
    case AS_ADD: return run_map<3>(3, ops, out, BinaryFloat<T, AS_ADD>{op});
    case AS_MUL: return run_map<3>(3, ops, out, BinaryFloat<T, AS_MUL>{op});
    case AS_GELU_GRAD: return run_map<3>(3, ops, out, BinaryFloat<T, AS_GELU_GRAD>{op});
    case AS_GELU_TANH_GRAD: return run_map<3>(3, ops, out, BinaryFloat<T, AS_GELU_TANH_GRAD>{op});
    case AS_SILU_GRAD: return run_map<3>(3, ops, out, BinaryFloat<T, AS_SILU_GRAD>{op});
    default: return run_map<3>(3, ops, out, BinaryFloat<T>{op});
    }
}

template <typename T>
struct BinaryInt {
    as_binop op;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        AT(T, p[0], o[0]) = (T)i64_binop(op, AT(const T, p[1], o[1]), AT(const T, p[2], o[2]));
    }
};

template <typename T>
struct Compare {
    as_binop op;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        AT(uint8_t, p[0], o[0]) = (uint8_t)compare<T>(op, AT(const T, p[1], o[1]), AT(const T, p[2], o[2]));
    }
};

template <typename T>
struct CompareHalf {
    as_binop op;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        AT(uint8_t, p[0], o[0]) = (uint8_t)compare<float>(op, to_f(AT(const T, p[1], o[1])), to_f(AT(const T, p[2], o[2])));
    }
};

extern "C" int as_cuda_binary(as_binop op, const as_kview *out, const as_kview *a, const as_kview *b)
{
    const as_kview *ops[3] = {out, a, b};
    if (op >= AS_EQ) {
        switch (a->dtype) {
        case AS_F32: return run_map<3>(3, ops, out, Compare<float>{op});
        case AS_F16: return run_map<3>(3, ops, out, CompareHalf<__half>{op});
        case AS_BF16: return run_map<3>(3, ops, out, CompareHalf<__nv_bfloat16>{op});
        case AS_I64: return run_map<3>(3, ops, out, Compare<int64_t>{op});
        default: return run_map<3>(3, ops, out, Compare<int32_t>{op});
        }
    }
    switch (a->dtype) {
    case AS_F32: return binary_float<float>(op, ops, out);
    case AS_F16: return binary_float<__half>(op, ops, out);
    case AS_BF16: return binary_float<__nv_bfloat16>(op, ops, out);
    case AS_I64: return run_map<3>(3, ops, out, BinaryInt<int64_t>{op});
    default: return run_map<3>(3, ops, out, BinaryInt<int32_t>{op});
    }
}

/* ---- unary ---- */

__device__ __forceinline__ float f32_unop(as_unop op, float x)
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
    /* PyTorch's form: erff is half erfcf's instructions, and this map is bound by them
     * (ViT's bf16 GELU ran at 44 us a call against eager's 30); 1 + erf loses the
     * relative accuracy of the far-negative tail (the CPU's erfc form keeps it): a few
     * 1e-7 absolute there */
    case AS_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
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

/* OP >= 0: the op fixed at compile time, as BinaryFloat's */
template <typename T, int OP = -1>
struct UnaryFloat {
    as_unop op;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        AT(T, p[0], o[0]) = from_f<T>(f32_unop(OP >= 0 ? (as_unop)OP : op, to_f(AT(const T, p[1], o[1]))));
    }
};

template <typename T>
static int unary_float(as_unop op, const as_kview *const *ops, const as_kview *out)
{
    switch (op) {
    case AS_GELU: return run_map<2>(2, ops, out, UnaryFloat<T, AS_GELU>{op});
    case AS_GELU_TANH: return run_map<2>(2, ops, out, UnaryFloat<T, AS_GELU_TANH>{op});
    case AS_SILU: return run_map<2>(2, ops, out, UnaryFloat<T, AS_SILU>{op});
    case AS_EXP: return run_map<2>(2, ops, out, UnaryFloat<T, AS_EXP>{op});
    default: return run_map<2>(2, ops, out, UnaryFloat<T>{op});
    }
}

template <typename T>
struct UnaryInt { /* NEG, ABS, RELU on integers */
    as_unop op;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        int64_t x = AT(const T, p[1], o[1]);
        int64_t r = op == AS_NEG ? (int64_t)(0 - (uint64_t)x)
                  : op == AS_ABS ? (x < 0 ? (int64_t)(0 - (uint64_t)x) : x) : (x > 0 ? x : 0);
        AT(T, p[0], o[0]) = (T)r;
    }
};

struct LogicalNot {
    as_dtype dt;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        AT(uint8_t, p[0], o[0]) = load_elem(p[1] + o[1], dt) == 0;
    }
};

extern "C" int as_cuda_unary(as_unop op, const as_kview *out, const as_kview *a)
{
    const as_kview *ops[2] = {out, a};
    if (op == AS_LOGICAL_NOT) return run_map<2>(2, ops, out, LogicalNot{a->dtype});
    if (a->dtype == AS_F32) return unary_float<float>(op, ops, out);
    if (a->dtype == AS_F16) return unary_float<__half>(op, ops, out);
    if (a->dtype == AS_BF16) return unary_float<__nv_bfloat16>(op, ops, out);
    if (a->dtype == AS_I64) return run_map<2>(2, ops, out, UnaryInt<int64_t>{op});
    return run_map<2>(2, ops, out, UnaryInt<int32_t>{op});
}

template <typename T>
struct Clamp {
    float lo, hi;
    int has_lo, has_hi;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        float x = to_f(AT(const T, p[1], o[1]));
        if (has_lo && x < lo) x = lo;
        if (has_hi && x > hi) x = hi;
        AT(T, p[0], o[0]) = from_f<T>(x);
    }
};

extern "C" int as_cuda_clamp(const as_kview *out, const as_kview *a, double lo, double hi)
{
    const as_kview *ops[2] = {out, a};
    float l = (float)lo, h = (float)hi;
    int hl = !isnan(lo), hh = !isnan(hi);
    if (a->dtype == AS_F16) return run_map<2>(2, ops, out, Clamp<__half>{l, h, hl, hh});
    if (a->dtype == AS_BF16) return run_map<2>(2, ops, out, Clamp<__nv_bfloat16>{l, h, hl, hh});
    return run_map<2>(2, ops, out, Clamp<float>{l, h, hl, hh});
}

struct Where {
    int64_t es;
    __device__ void operator()(char *const *p, const int64_t *o) const
    {
        const char *s = AT(const uint8_t, p[1], o[1]) ? p[2] + o[2] : p[3] + o[3];
        switch (es) {
        case 8: AT(uint64_t, p[0], o[0]) = *(const uint64_t *)s; break;
        case 4: AT(uint32_t, p[0], o[0]) = *(const uint32_t *)s; break;
        case 2: AT(uint16_t, p[0], o[0]) = *(const uint16_t *)s; break;
        default: AT(uint8_t, p[0], o[0]) = *(const uint8_t *)s; break;
        }
    }
};

extern "C" int as_cuda_where(const as_kview *out, const as_kview *cond, const as_kview *a, const as_kview *b)
{
    const as_kview *ops[4] = {out, cond, a, b};
    return run_map<4>(4, ops, out, Where{(int64_t)as_dtype_size(out->dtype)});
}
