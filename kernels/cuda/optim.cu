// Fused SGD and AdamW steps on CUDA (kernels/cuda/optim_cuda.h): one thread
// per element in a grid-stride loop, the CPU kernel's float32 operations in
// its order (no FMA contraction: __fadd_rn / __fmul_rn), so a step on the
// GPU gives the CPU's bits for float32 parameters.
#include <type_traits>

#include "cuda_common.cuh"
#include "optim_cuda.h"

namespace {

template <typename P, typename G>
__global__ void sgd_kernel(as_sgd_params h, int64_t n, P *param, const G *grad, float *buf, float *master,
                           bool first)
{
    const float lr = (float)h.lr, mom = (float)h.momentum, damp = (float)(1.0 - h.dampening);
    const float wd = (float)h.weight_decay;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float p = master ? master[i] : to_f(param[i]);
        float d = to_f(grad[i]);
        if (h.maximize) d = -d;
        if (h.weight_decay != 0) d = __fadd_rn(d, __fmul_rn(wd, p));
        if (h.momentum != 0) {
            float b = first ? d : __fadd_rn(__fmul_rn(buf[i], mom), __fmul_rn(damp, d));
            buf[i] = b;
            d = h.nesterov ? __fadd_rn(d, __fmul_rn(mom, b)) : b;
        }
        p = __fadd_rn(p, __fmul_rn(-lr, d));
        if (master) master[i] = p;
        param[i] = from_f<P>(p);
    }
}

template <typename P, typename G>
__global__ void adamw_kernel(as_adamw_consts c, bool maximize, int64_t n, P *param, const G *grad, float *m,
                             float *v, float *vmax, float *master)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float p = master ? master[i] : to_f(param[i]);
        float g = to_f(grad[i]);
        if (maximize) g = -g;
        p = __fmul_rn(p, c.decay);
        if (c.l2 != 0.0f) g = __fadd_rn(g, __fmul_rn(c.l2, p));
        float mi = m[i];
        mi = c.w1 < 0.5f ? __fadd_rn(mi, __fmul_rn(c.w1, __fsub_rn(g, mi)))
                         : __fsub_rn(g, __fmul_rn(__fsub_rn(g, mi), 1.0f - c.w1));
        float vi = __fadd_rn(__fmul_rn(v[i], c.b2), __fmul_rn(__fmul_rn(c.w2, g), g));
        m[i] = mi, v[i] = vi;
        if (vmax) {
            float old = vmax[i];
            if (old > vi || old != old) vi = old;
            vmax[i] = vi;
        }
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.bc2_sqrt), c.eps);
        p = __fadd_rn(p, __fmul_rn(-c.step_size, __fdiv_rn(mi, denom)));
        if (master) master[i] = p;
        param[i] = from_f<P>(p);
    }
}

// Calls f with a null pointer of the element type of dt (float, __half, __nv_bfloat16).
template <typename F>
int by_dtype(as_dtype dt, F f)
{
    switch (dt) {
    case AS_F16: return f((__half *)nullptr);
    case AS_BF16: return f((__nv_bfloat16 *)nullptr);
    default: return f((float *)nullptr);
    }
}

} // namespace

extern "C" int as_cuda_sgd_step(const as_sgd_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                                as_dtype gdt, float *buf, float *master, bool first)
{
    if (n <= 0) return 0;
    return by_dtype(pdt, [&](auto *pt) {
        return by_dtype(gdt, [&](auto *gt) {
            using P = std::remove_pointer_t<decltype(pt)>;
            using G = std::remove_pointer_t<decltype(gt)>;
            sgd_kernel<P, G><<<as_blocks(n), AS_CUDA_THREADS, 0, as_stream()>>>(*h, n, (P *)param, (const G *)grad,
                                                                                 buf, master, first);
            return as_launched();
        });
    });
}

extern "C" int as_cuda_adamw_step(const as_adamw_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                                  as_dtype gdt, float *m, float *v, float *vmax, float *master)
{
    if (n <= 0) return 0;
    const as_adamw_consts c = as_adamw_consts_of(h);
    float *vm = h->amsgrad ? vmax : nullptr;
    return by_dtype(pdt, [&](auto *pt) {
        return by_dtype(gdt, [&](auto *gt) {
            using P = std::remove_pointer_t<decltype(pt)>;
            using G = std::remove_pointer_t<decltype(gt)>;
            adamw_kernel<P, G><<<as_blocks(n), AS_CUDA_THREADS, 0, as_stream()>>>(
                c, h->maximize, n, (P *)param, (const G *)grad, m, v, vm, master);
            return as_launched();
        });
    });
}

/* ---- multi-tensor sweeps: up to LIST_MAX tensors a launch, by value ---- */

namespace {

constexpr int LIST_MAX = 48, LIST_THREADS = 256, LIST_CHUNK = 4096; /* elements a block */

struct ListArgs {
    int n;
    void *p[LIST_MAX];
    int64_t numel[LIST_MAX];
    int dt[LIST_MAX];
    int64_t first_block[LIST_MAX + 1]; /* block b sweeps chunk b - first_block[t] of tensor t */
};

__device__ __forceinline__ float list_load(const void *p, int dt, int64_t i)
{
    if (dt == AS_BF16) return to_f(((const __nv_bfloat16 *)p)[i]);
    if (dt == AS_F16) return to_f(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

template <typename T>
__device__ __forceinline__ void list_scale(void *p, int64_t i, float f)
{
    T *q = (T *)p;
    q[i] = from_f<T>(to_f(q[i]) * f);
}

__device__ __forceinline__ int list_find(const ListArgs &a, int64_t b)
{
    int t = 0;
    while (t + 1 < a.n && a.first_block[t + 1] <= b) t++;
    return t;
}

__global__ void __launch_bounds__(LIST_THREADS) sumsq_list_kernel(const ListArgs a, float *out)
{
    __shared__ float part[LIST_THREADS / 32];
    const int t = list_find(a, blockIdx.x);
    const int64_t i0 = (blockIdx.x - a.first_block[t]) * (int64_t)LIST_CHUNK;
    const int64_t i1 = i0 + LIST_CHUNK < a.numel[t] ? i0 + LIST_CHUNK : a.numel[t];
    float s = 0.0f;
    for (int64_t i = i0 + threadIdx.x; i < i1; i += LIST_THREADS) {
        const float x = list_load(a.p[t], a.dt[t], i);
        s = fmaf(x, x, s);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < LIST_THREADS / 32; w++) s += part[w];
        atomicAdd(out, s);
    }
}

__global__ void __launch_bounds__(LIST_THREADS) scale_list_kernel(const ListArgs a, float f)
{
    const int t = list_find(a, blockIdx.x);
    const int64_t i0 = (blockIdx.x - a.first_block[t]) * (int64_t)LIST_CHUNK;
    const int64_t i1 = i0 + LIST_CHUNK < a.numel[t] ? i0 + LIST_CHUNK : a.numel[t];
    for (int64_t i = i0 + threadIdx.x; i < i1; i += LIST_THREADS) {
        if (a.dt[t] == AS_BF16) list_scale<__nv_bfloat16>(a.p[t], i, f);
        else if (a.dt[t] == AS_F16) list_scale<__half>(a.p[t], i, f);
        else list_scale<float>(a.p[t], i, f);
    }
}

/* f(args, blocks) for each launch's worth of items; 0 or a cudaError_t value */
template <typename F>
int over_lists(const as_list_item *it, int n, F f)
{
    for (int s = 0; s < n;) {
        ListArgs a;
        a.n = 0;
        int64_t blocks = 0;
        for (; s < n && a.n < LIST_MAX; s++) {
            if (it[s].n <= 0) continue;
            if (it[s].dtype != AS_F32 && it[s].dtype != AS_F16 && it[s].dtype != AS_BF16) return (int)cudaErrorInvalidValue;
            a.p[a.n] = it[s].data, a.numel[a.n] = it[s].n, a.dt[a.n] = (int)it[s].dtype;
            a.first_block[a.n] = blocks;
            blocks += (it[s].n + LIST_CHUNK - 1) / LIST_CHUNK;
            a.n++;
        }
        a.first_block[a.n] = blocks;
        if (a.n == 0) continue;
        if (blocks > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
        if (int e = f(a, (unsigned)blocks)) return e;
    }
    return 0;
}

} // namespace

extern "C" int as_cuda_sumsq_list(const as_list_item *it, int n, float *out)
{
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    cudaError_t e = cudaMemsetAsync(out, 0, sizeof(float), s);
    if (e) return (int)e;
    return over_lists(it, n, [&](const ListArgs &a, unsigned blocks) {
        sumsq_list_kernel<<<blocks, LIST_THREADS, 0, s>>>(a, out);
        return (int)cudaGetLastError();
    });
}

extern "C" int as_cuda_scale_list(const as_list_item *it, int n, float f)
{
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    return over_lists(it, n, [&](const ListArgs &a, unsigned blocks) {
        scale_list_kernel<<<blocks, LIST_THREADS, 0, s>>>(a, f);
        return (int)cudaGetLastError();
    });
}
