/* Row kernels on the GPU: reductions, softmax and norms over contiguous
 * float32 rows.  One block per row (grid-stride over rows); sums accumulate
 * in double as on the CPU (kernels/cpu/rows.c), whose edge cases these
 * follow: NaN wins max/argmax, first index on ties, a row of -inf gives a
 * softmax of zeros. */
#include <math.h>

#include <limits.h>
#include <type_traits>

#include "cuda_common.cuh"

#define ROW_THREADS 256

/* Sum over the block; every thread gets the result. */
__device__ double block_sum(double v)
{
    __shared__ double part[ROW_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    __syncthreads(); /* part may still be read by a previous call */
    if (l == 0) part[w] = v;
    __syncthreads();
    double s = 0;
    for (int i = 0; i < ROW_THREADS / 32; i++) s += part[i];
    return s;
}

__device__ double block_prod(double v)
{
    __shared__ double part[ROW_THREADS];
    __syncthreads();
    part[threadIdx.x] = v;
    __syncthreads();
    double s = 1;
    if (threadIdx.x == 0)
        for (int i = 0; i < ROW_THREADS; i++) s *= part[i];
    __syncthreads();
    if (threadIdx.x == 0) part[0] = s;
    __syncthreads();
    return part[0];
}

/* (value, index) with the CPU's order: NaN first, then the larger (smaller
 * for min) value, then the lower index. */
struct Best {
    float v;
    int64_t i;
};

__device__ __forceinline__ bool better(Best a, Best b, bool is_max)
{
    bool an = a.v != a.v, bn = b.v != b.v;
    if (an || bn) return an && (!bn || a.i < b.i);
    if (a.v != b.v) return is_max ? a.v > b.v : a.v < b.v;
    return a.i < b.i;
}

__device__ Best block_best(Best b, bool is_max)
{
    __shared__ float pv[ROW_THREADS];
    __shared__ int64_t pi[ROW_THREADS];
    __syncthreads();
    pv[threadIdx.x] = b.v, pi[threadIdx.x] = b.i;
    __syncthreads();
    for (int s = ROW_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            Best o = {pv[threadIdx.x + s], pi[threadIdx.x + s]};
            Best m = {pv[threadIdx.x], pi[threadIdx.x]};
            if (better(o, m, is_max)) pv[threadIdx.x] = o.v, pi[threadIdx.x] = o.i;
        }
        __syncthreads();
    }
    return Best{pv[0], pi[0]};
}

__global__ void reduce_rows_kernel(as_redop op, const float *x, int64_t rows, int64_t n, int correction,
                                   float *out, int64_t *idx)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *p = x + r * n;
        if (op == AS_SUM || op == AS_MEAN || op == AS_VAR) {
            double s = 0;
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += p[i];
            s = block_sum(s);
            if (op == AS_VAR) {
                double m = s / (double)n, ss = 0;
                for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += (p[i] - m) * (p[i] - m);
                ss = block_sum(ss);
                double d = (double)(n - correction);
                if (threadIdx.x == 0) out[r] = (float)(d > 0 ? ss / d : NAN);
            } else if (threadIdx.x == 0) {
                out[r] = (float)(op == AS_MEAN ? s / (double)n : s);
            }
        } else if (op == AS_PROD) {
            double s = 1;
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s *= p[i];
            s = block_prod(s);
            if (threadIdx.x == 0) out[r] = (float)s;
        } else {
            bool is_max = op == AS_MAX || op == AS_ARGMAX;
            Best b = {is_max ? -INFINITY : INFINITY, INT64_MAX};
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
                Best c = {p[i], i};
                if (b.i == INT64_MAX || better(c, b, is_max)) b = c;
            }
            b = block_best(b, is_max);
            if (threadIdx.x == 0) {
                if (out) out[r] = b.v;
                if (idx) idx[r] = b.i;
            }
        }
    }
}

extern "C" int as_cuda_reduce_rows(as_redop op, const float *x, int64_t rows, int64_t n, int correction,
                                   float *out, int64_t *idx)
{
    if (rows == 0) return 0;
    reduce_rows_kernel<<<as_blocks(rows, 1), ROW_THREADS, 0, as_stream()>>>(op, x, rows, n, correction, out, idx);
    return as_launched();
}

/* Integer rows are short in practice (ids, counts): one thread per row, the
 * CPU's loop. */
__global__ void reduce_rows_i64_kernel(as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out)
{
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
        const int64_t *p = x + r * n;
        int64_t acc = op == AS_PROD ? 1 : 0, best = 0;
        for (int64_t i = 0; i < n; i++) {
            switch (op) {
            case AS_SUM: acc = (int64_t)((uint64_t)acc + (uint64_t)p[i]); break;
            case AS_PROD: acc = (int64_t)((uint64_t)acc * (uint64_t)p[i]); break;
            case AS_MAX: if (i == 0 || p[i] > acc) acc = p[i]; break;
            case AS_MIN: if (i == 0 || p[i] < acc) acc = p[i]; break;
            case AS_ARGMAX: if (p[i] > p[best]) best = i; break;
            case AS_ARGMIN: if (p[i] < p[best]) best = i; break;
            default: break;
            }
        }
        out[r] = (op == AS_ARGMAX || op == AS_ARGMIN) ? best : acc;
    }
}

extern "C" int as_cuda_reduce_rows_i64(as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out)
{
    if (rows == 0) return 0;
    reduce_rows_i64_kernel<<<as_blocks(rows), AS_CUDA_THREADS, 0, as_stream()>>>(op, x, rows, n, out);
    return as_launched();
}

__global__ void softmax_rows_kernel(const float *x, float *y, int64_t rows, int64_t n, int log)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *p = x + r * n;
        float *o = y + r * n;
        Best b = {-INFINITY, 0};
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
            if (p[i] > b.v) b.v = p[i];
        float m = block_best(b, true).v;
        if (m == -INFINITY) { /* nothing to attend to: zeros (log: -inf) */
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = log ? -INFINITY : 0.0f;
            continue;
        }
        double s = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += expf(p[i] - m);
        s = block_sum(s);
        if (log) {
            float ls = (float)(m + logf((float)s));
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = p[i] - ls;
        } else {
            float inv = (float)(1.0 / s);
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = expf(p[i] - m) * inv;
        }
    }
}

extern "C" int as_cuda_softmax_rows(const float *x, float *y, int64_t rows, int64_t n, int log)
{
    if (rows == 0 || n == 0) return 0;
    softmax_rows_kernel<<<as_blocks(rows, 1), ROW_THREADS, 0, as_stream()>>>(x, y, rows, n, log);
    return as_launched();
}

/* The CPU's as_cpu_softmax_bwd_rows: one block per row, the row's sum in
 * double, then one elementwise pass. */
__global__ void softmax_bwd_rows_kernel(const float *y, const float *g, float *out, int64_t rows, int64_t n, int log)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *yp = y + r * n, *gp = g + r * n;
        float *o = out + r * n;
        double s = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += log ? (double)gp[i] : (double)gp[i] * yp[i];
        float sf = (float)block_sum(s);
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
            o[i] = log ? gp[i] - expf(yp[i]) * sf : yp[i] * (gp[i] - sf);
    }
}

extern "C" int as_cuda_softmax_bwd_rows(const float *y, const float *g, float *out, int64_t rows, int64_t n, int log)
{
    if (rows == 0 || n == 0) return 0;
    softmax_bwd_rows_kernel<<<as_blocks(rows, 1), ROW_THREADS, 0, as_stream()>>>(y, g, out, rows, n, log);
    return as_launched();
}

/* The CPU's as_cpu_norm_bwd_rows: one block per row, sums in double. */
__global__ void norm_bwd_rows_kernel(const float *x, const float *w, const float *g, float *dx, float *gxh,
                                     int64_t rows, int64_t n, double eps, int rms)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *p = x + r * n, *gp = g + r * n;
        double m = 0, v = 0;
        if (!rms) {
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m += p[i];
            m = block_sum(m) / (double)n;
        }
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += (p[i] - m) * (p[i] - m);
        v = block_sum(v);
        float rstd = (float)(1.0 / sqrt(v / (double)n + eps)), mf = (float)m;
        double sdy = 0, sdyxh = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            float xh = (p[i] - mf) * rstd, dy = w ? gp[i] * w[i] : gp[i];
            sdy += dy, sdyxh += (double)dy * xh;
        }
        sdy = block_sum(sdy);
        sdyxh = block_sum(sdyxh);
        float mdy = rms ? 0.0f : (float)(sdy / (double)n), mdyxh = (float)(sdyxh / (double)n);
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            float xh = (p[i] - mf) * rstd, dy = w ? gp[i] * w[i] : gp[i];
            if (dx) dx[r * n + i] = rstd * (dy - mdy - xh * mdyxh);
            if (gxh) gxh[r * n + i] = gp[i] * xh;
        }
    }
}

extern "C" int as_cuda_norm_bwd_rows(const float *x, const float *w, const float *g, float *dx, float *gxh,
                                     int64_t rows, int64_t n, double eps, int rms)
{
    if (rows == 0 || n == 0) return 0;
    norm_bwd_rows_kernel<<<as_blocks(rows, 1), ROW_THREADS, 0, as_stream()>>>(x, w, g, dx, gxh, rows, n, eps, rms);
    return as_launched();
}

__global__ void norm_rows_kernel(const float *x, float *y, int64_t rows, int64_t n, const float *w,
                                 const float *b, double eps, int rms)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *p = x + r * n;
        float *o = y + r * n;
        if (rms) {
            double ss = 0;
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += (double)p[i] * p[i];
            ss = block_sum(ss);
            float rr = (float)(1.0 / sqrt(ss / (double)n + eps));
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = p[i] * rr * (w ? w[i] : 1.0f);
            continue;
        }
        double m = 0, v = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m += p[i];
        m = block_sum(m) / (double)n;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += (p[i] - m) * (p[i] - m);
        v = block_sum(v);
        float rstd = (float)(1.0 / sqrt(v / (double)n + eps)), mf = (float)m;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            float t = (p[i] - mf) * rstd;
            if (w) t *= w[i];
            if (b) t += b[i];
            o[i] = t;
        }
    }
}

extern "C" int as_cuda_layer_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w,
                                       const float *b, double eps)
{
    if (rows == 0 || n == 0) return 0;
    norm_rows_kernel<<<as_blocks(rows, 1), ROW_THREADS, 0, as_stream()>>>(x, y, rows, n, w, b, eps, 0);
    return as_launched();
}

extern "C" int as_cuda_rms_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w, double eps)
{
    if (rows == 0 || n == 0) return 0;
    norm_rows_kernel<<<as_blocks(rows, 1), ROW_THREADS, 0, as_stream()>>>(x, y, rows, n, w, NULL, eps, 1);
    return as_launched();
}

/* 16-bit rows: a warp per row, float32 sums (two passes: the mean, then the
 * squared deviations, as the float32 kernel does), 16-byte loads where the
 * row allows.  The row is read three times; the second and third reads come
 * from L1/L2 (a 768-wide bf16 row is 1.5 KiB).  No float32 copy of x. */
__device__ __forceinline__ float warp_total(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T, bool VEC>
__global__ void norm_rows_16_kernel(const T *x, T *y, int64_t rows, int n, const T *w, const T *b, float eps, int rms)
{
    constexpr int V = VEC ? 8 : 1; /* elements per access */
    using Chunk = typename std::conditional<VEC, uint4, T>::type;
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5, nc = n / V;
    for (int64_t r = (int64_t)blockIdx.x * warps + (threadIdx.x >> 5); r < rows; r += (int64_t)gridDim.x * warps) {
        const Chunk *p = (const Chunk *)(x + r * n);
        float m = 0;
        if (!rms) {
            float s = 0;
            for (int c = lane; c < nc; c += 32) {
                Chunk v = p[c];
                const T *e = (const T *)&v;
#pragma unroll
                for (int j = 0; j < V; j++) s += to_f(e[j]);
            }
            m = warp_total(s) / n;
        }
        float q = 0;
        for (int c = lane; c < nc; c += 32) {
            Chunk v = p[c];
            const T *e = (const T *)&v;
#pragma unroll
            for (int j = 0; j < V; j++) {
                float d = to_f(e[j]) - m;
                q += d * d;
            }
        }
        const float rstd = rsqrtf(warp_total(q) / n + eps);
        Chunk *o = (Chunk *)(y + r * n);
        for (int c = lane; c < nc; c += 32) {
            Chunk v = p[c], out, wv, bv;
            if (w) wv = ((const Chunk *)w)[c];
            if (b) bv = ((const Chunk *)b)[c];
            const T *e = (const T *)&v, *we = (const T *)&wv, *be = (const T *)&bv;
            T *f = (T *)&out;
#pragma unroll
            for (int j = 0; j < V; j++) {
                float t = (to_f(e[j]) - m) * rstd;
                if (w) t *= to_f(we[j]);
                if (b) t += to_f(be[j]);
                f[j] = from_f<T>(t);
            }
            o[c] = out;
        }
    }
}

template <typename T>
static void norm_rows_16(const T *x, T *y, int64_t rows, int64_t n, const T *w, const T *b, float eps, int rms)
{
    const int threads = 256, per_block = threads / 32;
    unsigned blocks = as_blocks(rows, per_block);
    bool vec = n % 8 == 0;
    for (const void *p : {(const void *)x, (const void *)y, (const void *)w, (const void *)b})
        vec = vec && (uintptr_t)p % 16 == 0;
    if (vec) norm_rows_16_kernel<T, true><<<blocks, threads, 0, as_stream()>>>(x, y, rows, (int)n, w, b, eps, rms);
    else norm_rows_16_kernel<T, false><<<blocks, threads, 0, as_stream()>>>(x, y, rows, (int)n, w, b, eps, rms);
}

extern "C" int as_cuda_norm_rows_16(as_dtype dt, const void *x, void *y, int64_t rows, int64_t n, const void *w,
                                    const void *b, double eps, int rms)
{
    if (rows == 0 || n == 0) return 0;
    if (n > INT_MAX) return (int)cudaErrorInvalidValue;
    if (dt == AS_BF16)
        norm_rows_16((const __nv_bfloat16 *)x, (__nv_bfloat16 *)y, rows, n, (const __nv_bfloat16 *)w,
                     (const __nv_bfloat16 *)b, (float)eps, rms);
    else if (dt == AS_F16)
        norm_rows_16((const __half *)x, (__half *)y, rows, n, (const __half *)w, (const __half *)b, (float)eps, rms);
    else
        return (int)cudaErrorInvalidValue;
    return as_launched();
}

/* ---- gathering ---- */

/* W: the unit a thread moves (16 bytes where rows and pointers allow, else 1);
 * row: a row's length in units */
template <typename W>
__global__ void gather_rows_kernel(W *dst, const W *src, const int64_t *idx, int64_t outer, int64_t n, int64_t size,
                                   int64_t row, int64_t *bad)
{
    int64_t total = outer * n * row;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        int64_t u = t % row, r = t / row, i = r % n, o = r / n, id = idx[i];
        if (bad && (id < 0 || id >= size)) {
            dst[t] = W{};
            if (u == 0) bad[1] = size, bad[0] = id;
            continue;
        }
        dst[t] = src[(o * size + id) * row + u];
    }
}

extern "C" int as_cuda_gather_rows(void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n,
                                   int64_t size, int64_t row_bytes, int64_t *bad)
{
    if (outer * n * row_bytes == 0) return 0;
    if (row_bytes % 16 == 0 && (uintptr_t)dst % 16 == 0 && (uintptr_t)src % 16 == 0) {
        const int64_t row = row_bytes / 16;
        gather_rows_kernel<uint4><<<as_blocks(outer * n * row), AS_CUDA_THREADS, 0, as_stream()>>>(
            (uint4 *)dst, (const uint4 *)src, idx, outer, n, size, row, bad);
    } else {
        gather_rows_kernel<char><<<as_blocks(outer * n * row_bytes), AS_CUDA_THREADS, 0, as_stream()>>>(
            (char *)dst, (const char *)src, idx, outer, n, size, row_bytes, bad);
    }
    return as_launched();
}

__global__ void scatter_add_rows_kernel(float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n,
                                        int64_t size, int64_t row)
{
    int64_t total = outer * n * row;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = t % row, r = t / row, i = r % n, o = r / n;
        atomicAdd(dst + (o * size + idx[i]) * row + j, src[t]);
    }
}

extern "C" int as_cuda_scatter_add_rows(float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n,
                                        int64_t size, int64_t row)
{
    if (outer * n * row == 0) return 0;
    scatter_add_rows_kernel<<<as_blocks(outer * n * row), AS_CUDA_THREADS, 0, as_stream()>>>(dst, src, idx, outer, n,
                                                                                             size, row);
    return as_launched();
}

__global__ void triangle_kernel(char *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es)
{
    int64_t total = mats * R * C;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = t % C, i = (t / C) % R;
        if (lower ? j - i > k : j - i < k)
            for (int64_t b = 0; b < es; b++) p[t * es + b] = 0;
    }
}

extern "C" int as_cuda_triangle(void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es)
{
    if (mats * R * C == 0) return 0;
    triangle_kernel<<<as_blocks(mats * R * C), AS_CUDA_THREADS, 0, as_stream()>>>((char *)p, mats, R, C, k, lower, es);
    return as_launched();
}
