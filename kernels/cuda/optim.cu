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
