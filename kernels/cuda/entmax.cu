/* alpha-entmax rows on the GPU (Peters et al. 2019; Correia et al. 2019):
 *
 *   p_i = [X_i - tau]_+^(1 / (a - 1)),  X = (a - 1)(z - max z),  tau: sum p = 1
 *
 * the CPU's as_cpu_entmax_row (kernels/cpu/zoo_reweight_entmax.c) without
 * its sort: f(tau) = sum (X - tau)_+^(1/(a-1)) - 1 is convex and decreasing
 * on the bracket [-1, -(1/n)^(a-1)] (p_max <= 1 and >= 1/n), so bisection
 * until the bracket is narrow on the scale of the power, then Newton from
 * the left (monotone, never past the root), in float32.  For a = 2 and 1.5
 * the support {X > tau} then gives tau in closed form, as the CPU's
 * sort-based paths do.  a = 1 is softmax.  -inf entries give zeros, a row of
 * -inf zeros.
 *
 * G threads own a row (G = 32: a warp, rows up to 512; G = 256: a block),
 * each keeping up to PER of its elements in registers (element j at
 * lane + k G); the rest of a longer row is re-read from memory (L2) on each
 * pass.  Every pass ends in a reduction whose result all G threads share
 * bit for bit, so their loops take the same turns.  Rows lie along the middle
 * dim of a contiguous (outer, n, inner) tensor; x == y is allowed (y is
 * written by the last pass, by the thread that read x there). */
#include <limits.h>
#include <math.h>

#include "cuda_common.cuh"

#define BLOCK_THREADS 256

/* (a, b) reduced over the G threads of a row (max or sum for each), the same
 * value in every thread; red: shared, 2 * 32 floats. */
template <int G, bool MAX_A>
__device__ __forceinline__ float2 reduce2(float a, float b, float *red)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float oa = __shfl_xor_sync(0xffffffffu, a, o), ob = __shfl_xor_sync(0xffffffffu, b, o);
        a = MAX_A ? fmaxf(a, oa) : a + oa;
        b += ob;
    }
    if (G > 32) {
        const int w = threadIdx.x >> 5;
        __syncthreads(); /* the previous pass's readers are done */
        if ((threadIdx.x & 31) == 0) red[w] = a, red[32 + w] = b;
        __syncthreads();
        a = red[0], b = red[32];
        for (int i = 1; i < G / 32; i++) a = MAX_A ? fmaxf(a, red[i]) : a + red[i], b += red[32 + i];
    }
    return make_float2(a, b);
}

/* d^(1/(a-1)) for d > 0: exact products for a = 2 and 1.5 (the common ones) */
__device__ __forceinline__ float power(float d, int kind, float inv)
{
    return kind == 2 ? d : kind == 1 ? d * d : powf(d, inv);
}

/* kind: 0 any a (am1 = a - 1 > 0), 1: a = 1.5, 2: a = 2, 3: a = 1 (softmax) */
template <typename T, int G, int PER>
__global__ void entmax_rows_kernel(const T *x, T *y, int64_t rows, int n, int64_t inner, int kind, float am1)
{
    __shared__ float red[64];
    const int lane = threadIdx.x % G, per_block = blockDim.x / G;
    const float inv = 1.0f / am1;
    for (int64_t r = (int64_t)blockIdx.x * per_block + threadIdx.x / G; r < rows;
         r += (int64_t)gridDim.x * per_block) {
        const int64_t base = (r / inner) * (int64_t)n * inner + r % inner;
        float v[PER]; /* this thread's elements; -inf past the row */
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int j = lane + k * G;
            v[k] = j < n ? to_f(x[base + j * inner]) : -INFINITY;
        }
        /* fn(z) over every element of this thread: registers, then the tail */
        auto each = [&](auto &&fn) {
#pragma unroll
            for (int k = 0; k < PER; k++) fn(v[k]);
            for (int j = lane + PER * G; j < n; j += G) fn(to_f(x[base + j * inner]));
        };
        auto write = [&](auto &&fn) {
#pragma unroll
            for (int k = 0; k < PER; k++) {
                int j = lane + k * G;
                if (j < n) y[base + j * inner] = from_f<T>(fn(v[k]));
            }
            for (int j = lane + PER * G; j < n; j += G) {
                int64_t o = base + j * inner;
                y[o] = from_f<T>(fn(to_f(x[o])));
            }
        };

        float mx = -INFINITY, cnt = 0;
        each([&](float z) {
            mx = fmaxf(mx, z);
            cnt += z > -INFINITY;
        });
        float2 mc = reduce2<G, true>(mx, cnt, red);
        mx = mc.x;
        if (mx == -INFINITY) { /* nothing visible */
            write([](float) { return 0.0f; });
            continue;
        }
        if (kind == 3) { /* softmax */
            float s = 0;
            each([&](float z) { s += expf(z - mx); });
            s = reduce2<G, false>(s, 0.0f, red).x;
            const float is = 1.0f / s;
            write([&](float z) { return expf(z - mx) * is; });
            continue;
        }
        /* f(tau) + 1 and sum (X - tau)_+^(1/(a-1) - 1), over X > tau */
        auto sums = [&](float tau, bool slope) {
            float f = 0, df = 0;
            each([&](float z) {
                float d = am1 * (z - mx) - tau;
                if (d > 0) {
                    float p = power(d, kind, inv);
                    f += p;
                    if (slope) df += p / d;
                }
            });
            return reduce2<G, false>(f, df, red);
        };
        float lo = -1.0f, dm = -powf(1.0f / mc.y, am1) - lo;
        const float narrow = 0.05f * am1;
        for (int it = 0; it < 40 && dm > narrow; it++) {
            dm *= 0.5f;
            float mid = lo + dm;
            if (sums(mid, false).x >= 1.0f) lo = mid; /* f(lo) >= 0 throughout */
        }
        for (int it = 0; it < 30; it++) {
            float2 s = sums(lo, true);
            float step = s.y > 0 ? (s.x - 1.0f) / (inv * s.y) : 0.0f;
            if (!(step > 0) || !(lo + step > lo) || !isfinite(step)) break;
            lo += step;
        }
        if (kind == 1 || kind == 2) {
            /* the closed form on the support S = {X > lo}, solved for the
             * shift e = tau - lo from sums of d = X - lo (small, so no
             * cancellation): a = 2: sum (d - e) = 1; a = 1.5: sum (d - e)^2 = 1,
             * the smaller root of k e^2 - 2 S1 e + S2 - 1 */
            float k = 0, s1 = 0, s2 = 0;
            each([&](float z) {
                float d = am1 * (z - mx) - lo;
                if (d > 0) k += 1, s1 += d, s2 += d * d;
            });
            float2 a = reduce2<G, false>(k, s1, red);
            float b = reduce2<G, false>(s2, 0.0f, red).x;
            k = a.x, s1 = a.y;
            float e;
            if (kind == 2) {
                e = (s1 - 1.0f) / k;
            } else {
                float disc = s1 * s1 - k * (b - 1.0f);
                e = (s1 - sqrtf(disc > 0 ? disc : 0.0f)) / k;
            }
            if (k > 0 && isfinite(e) && lo + e < 0) lo += e; /* tau < 0: the largest X (0) stays in */
        }
        float sum = sums(lo, false).x;
        const float is = 1.0f / sum;
        write([&](float z) {
            float d = am1 * (z - mx) - lo;
            return d > 0 ? power(d, kind, inv) * is : 0.0f;
        });
    }
}

template <typename T>
static void entmax_rows(const T *x, T *y, int64_t rows, int n, int64_t inner, int kind, float am1)
{
    const int wpb = BLOCK_THREADS / 32; /* rows per block in the warp kernels */
    cudaStream_t st = as_stream();
    if (n <= 32)
        entmax_rows_kernel<T, 32, 1><<<as_blocks(rows, wpb), BLOCK_THREADS, 0, st>>>(x, y, rows, n, inner, kind, am1);
    else if (n <= 128)
        entmax_rows_kernel<T, 32, 4><<<as_blocks(rows, wpb), BLOCK_THREADS, 0, st>>>(x, y, rows, n, inner, kind, am1);
    else if (n <= 512)
        entmax_rows_kernel<T, 32, 16><<<as_blocks(rows, wpb), BLOCK_THREADS, 0, st>>>(x, y, rows, n, inner, kind, am1);
    else
        entmax_rows_kernel<T, BLOCK_THREADS, 16>
            <<<as_blocks(rows, 1), BLOCK_THREADS, 0, st>>>(x, y, rows, n, inner, kind, am1);
}

extern "C" int as_cuda_entmax_rows(as_dtype dt, const void *x, void *y, int64_t outer, int64_t n, int64_t inner,
                                   double alpha)
{
    int64_t rows = outer * inner;
    if (rows == 0 || n == 0) return 0;
    if (n > INT_MAX / 2 || !(alpha >= 1 && alpha <= 2)) return (int)cudaErrorInvalidValue;
    /* a - 1 from the double: a learned a = 1 + sigmoid(.) keeps its digits */
    int kind = alpha == 1 ? 3 : alpha == 2 ? 2 : alpha == 1.5 ? 1 : 0;
    float am1 = (float)(alpha - 1);
    if (kind == 0 && !(am1 > 0)) kind = 3; /* a - 1 below float32's range: softmax */
    if (dt == AS_F32) entmax_rows((const float *)x, (float *)y, rows, (int)n, inner, kind, am1);
    else if (dt == AS_BF16)
        entmax_rows((const __nv_bfloat16 *)x, (__nv_bfloat16 *)y, rows, (int)n, inner, kind, am1);
    else if (dt == AS_F16) entmax_rows((const __half *)x, (__half *)y, rows, (int)n, inner, kind, am1);
    else return (int)cudaErrorInvalidValue;
    return as_launched();
}
