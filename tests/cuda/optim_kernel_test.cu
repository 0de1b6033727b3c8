/* The fused optimizer kernels on CUDA (kernels/cuda/optim.cu) against the
 * CPU's (kernels/cpu/optim.c), bit for bit: the same float32 operations in
 * the same order, so params, state and master copies must be identical,
 * for float32 / bfloat16 / float16 parameters, odd sizes, every option, over
 * several steps.  Needs only the two kernels (no Lua, no BLAS):
 *
 *   gcc -O2 -std=c11 -fopenmp -fno-math-errno -Ikernels/common -c kernels/cpu/optim.c -o optim_cpu.o
 *   nvcc -O2 -std=c++17 -arch=sm_90 -Ikernels/common -Ikernels/cuda -Ikernels/cpu -DAS_OPTIM_TEST_STREAM \
 *        tests/cuda/optim_kernel_test.cu kernels/cuda/optim.cu optim_cpu.o -Xcompiler -fopenmp -o optim_kernel_test
 *   ./optim_kernel_test      exit 1 on a mismatch, 77 without a GPU
 * (ctest builds it against the library instead; AS_OPTIM_TEST_STREAM gives
 * the default stream where the runtime's device.c is not linked.) */
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" {
#include "as_scalar.h"
#include "optim.h"
}
#include "optim_cuda.h"

#ifdef AS_OPTIM_TEST_STREAM
extern "C" void *as_cuda_current_stream(void) { return nullptr; }
#endif

#define CK(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));           \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

static uint64_t rng = 0x243f6a8885a308d3ull;
static float randf()
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * 0x1p-53 * 2 - 1);
}

static void fill(std::vector<uint8_t> &buf, as_dtype dt, int64_t n)
{
    buf.resize((size_t)n * as_dtype_size(dt) + 1);
    for (int64_t i = 0; i < n; i++) as_store_elem(buf.data(), dt, i, randf());
}

template <typename T>
static T *to_dev(const std::vector<T> &v)
{
    T *d;
    CK(cudaMalloc(&d, v.size() * sizeof(T) + 1));
    CK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

template <typename T>
static bool same(const std::vector<T> &host, const T *dev, const char *what, const char *label)
{
    std::vector<T> back(host.size());
    CK(cudaMemcpy(back.data(), dev, host.size() * sizeof(T), cudaMemcpyDeviceToHost));
    if (memcmp(back.data(), host.data(), host.size() * sizeof(T)) == 0) return true;
    fprintf(stderr, "MISMATCH %s: %s differs between the CPU and CUDA\n", label, what);
    return false;
}

static int failures, cases;

static void run_case(bool adam, as_dtype pdt, as_dtype gdt, int64_t n, int variant)
{
    char label[128];
    snprintf(label, sizeof label, "%s p=%s g=%s n=%lld variant %d", adam ? "adamw" : "sgd", as_dtype_size(pdt) == 4 ? "f32" : pdt == AS_BF16 ? "bf16" : "f16",
             as_dtype_size(gdt) == 4 ? "f32" : gdt == AS_BF16 ? "bf16" : "f16", (long long)n, variant);
    std::vector<uint8_t> p, g;
    fill(p, pdt, n);
    std::vector<float> m(n, 0.f), v(n, 0.f), vmax(n, 0.f), master(n);
    for (int64_t i = 0; i < n; i++) master[i] = (float)as_load_elem(p.data(), pdt, i);
    bool use_master = pdt != AS_F32;
    uint8_t *dp = to_dev(p);
    float *dm = to_dev(m), *dv = to_dev(v), *dvmax = to_dev(vmax), *dmaster = to_dev(master);
    as_adamw_params h = {1e-2, 0.9, 0.999, 1e-8, 0.1, 0, variant != 1, variant == 2, variant == 3};
    if (variant == 4) h.beta1 = 0.3, h.beta2 = 0.5, h.eps = 1e-3;
    as_sgd_params s = {0.05, variant ? 0.9 : 0.0, variant == 2 ? 0.3 : 0.0, 0.01, variant == 3, variant == 4};
    for (int step = 1; step <= 4; step++) {
        fill(g, gdt, n);
        uint8_t *dg = to_dev(g);
        h.step = step;
        if (adam) {
            as_cpu_adamw_step(&h, n, p.data(), pdt, g.data(), gdt, m.data(), v.data(), vmax.data(),
                              use_master ? master.data() : nullptr);
            CK((cudaError_t)as_cuda_adamw_step(&h, n, dp, pdt, dg, gdt, dm, dv, dvmax, use_master ? dmaster : nullptr));
        } else {
            as_cpu_sgd_step(&s, n, p.data(), pdt, g.data(), gdt, m.data(), use_master ? master.data() : nullptr, step == 1);
            CK((cudaError_t)as_cuda_sgd_step(&s, n, dp, pdt, dg, gdt, dm, use_master ? dmaster : nullptr, step == 1));
        }
        CK(cudaDeviceSynchronize());
        CK(cudaFree(dg));
    }
    cases++;
    bool ok = same(p, dp, "param", label) && same(m, dm, adam ? "exp_avg" : "momentum_buffer", label);
    if (adam) ok = ok && same(v, dv, "exp_avg_sq", label) && same(vmax, dvmax, "max_exp_avg_sq", label);
    if (use_master) ok = ok && same(master, dmaster, "master", label);
    if (!ok) failures++;
    CK(cudaFree(dp));
    CK(cudaFree(dm));
    CK(cudaFree(dv));
    CK(cudaFree(dvmax));
    CK(cudaFree(dmaster));
}

int main()
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        printf("optim_kernel_test: no CUDA device, skipped\n");
        return 77;
    }
    const as_dtype dts[3] = {AS_F32, AS_BF16, AS_F16};
    const int64_t sizes[4] = {1, 7, 1000, 100003};
    for (int adam = 0; adam < 2; adam++)
        for (int pi = 0; pi < 3; pi++)
            for (int gi = 0; gi < 2; gi++)
                for (int si = 0; si < 4; si++)
                    for (int variant = 0; variant < 5; variant++)
                        run_case(adam, dts[pi], gi ? dts[pi] : AS_F32, sizes[si], variant);
    printf("optim_kernel_test: %d cases, %d mismatches\n", cases, failures);
    return failures ? 1 : 0;
}
