/* The CUDA FlashAttention kernel (kernels/cuda/attention_flash.cu) against
 * a host reference in double that reads the same rounded inputs and uses
 * the CPU kernel's dropout hash (kernels/cpu/attention_flash.h).
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90 -Iruntime -Ikernels/cpu -Ikernels/cuda \
 *        tests/cuda/flash_kernel_test.cu kernels/cuda/attention_flash.cu -o flash_kernel_test
 *   ./flash_kernel_test            correctness cases; exit 1 on a failure, 77 without a GPU
 *   ./flash_kernel_test --bench [64|128|mma|wgmma|wgmma-ws|persist|xtile] [TOKENS HIDDEN L D]   bf16 throughput table (optionally
 *                       forcing the mma.sync kernel's BM, that kernel, or a wgmma one)
 *   ./flash_kernel_test --bench f32|simt   float32: flash/tf32x3, or flash/simt-f32 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "attention_flash_cuda.h"

#define CK(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));           \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

static size_t esize(as_dtype t) { return t == AS_F32 ? 4 : t == AS_BOOL ? 1 : 2; }
static const char *dname(as_dtype t)
{
    return t == AS_F32 ? "f32" : t == AS_F16 ? "f16" : t == AS_BF16 ? "bf16" : "bool";
}

/* x rounded to t and stored at byte buffer index i */
static float put(std::vector<unsigned char> &buf, as_dtype t, size_t i, float x)
{
    switch (t) {
    case AS_F32: memcpy(&buf[i * 4], &x, 4); return x;
    case AS_F16: {
        __half h = __float2half_rn(x);
        memcpy(&buf[i * 2], &h, 2);
        return __half2float(h);
    }
    case AS_BF16: {
        __nv_bfloat16 h = __float2bfloat16_rn(x);
        memcpy(&buf[i * 2], &h, 2);
        return __bfloat162float(h);
    }
    default: buf[i] = x != 0.0f; return x != 0.0f ? 1.0f : 0.0f;
    }
}
static float get(const std::vector<unsigned char> &buf, as_dtype t, size_t i)
{
    switch (t) {
    case AS_F32: {
        float x;
        memcpy(&x, &buf[i * 4], 4);
        return x;
    }
    case AS_F16: {
        __half h;
        memcpy(&h, &buf[i * 2], 2);
        return __half2float(h);
    }
    case AS_BF16: {
        __nv_bfloat16 h;
        memcpy(&h, &buf[i * 2], 2);
        return __bfloat162float(h);
    }
    default: return buf[i] ? 1.0f : 0.0f;
    }
}

static uint64_t rng_state = 0x1234567887654321ull;
static double urand() /* [0, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

/* A host + device operand: storage of n elements, the float values as rounded. */
struct Op {
    as_dtype dt = AS_F32;
    size_t n = 0;
    std::vector<unsigned char> bytes;
    std::vector<float> val;
    int64_t stride[4] = {0, 0, 0, 0};
    void *dev = nullptr;
    void alloc(as_dtype t, size_t count)
    {
        dt = t, n = count;
        bytes.assign(std::max<size_t>(count, 1) * esize(t), 0);
        val.assign(std::max<size_t>(count, 1), 0.0f);
    }
    void set(size_t i, float x) { val[i] = put(bytes, dt, i, x); }
    void upload()
    {
        CK(cudaMalloc(&dev, bytes.size()));
        CK(cudaMemcpy(dev, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
    }
    float at(int64_t a, int64_t b, int64_t c, int64_t d) const
    {
        return val[a * stride[0] + b * stride[1] + c * stride[2] + d * stride[3]];
    }
    void release()
    {
        if (dev) cudaFree(dev);
        dev = nullptr;
    }
};

enum Layout { BHLD, BLHD, DMAJOR, PADDED };
enum MaskKind { M_NONE, M_BOOL_QK, M_BOOL_BK, M_FLOAT_FULL, M_BOOL_DEADROW };

/* a (B, H, L, D) operand in the given storage layout, values uniform in [-amp, amp] */
static void make_qkv(Op &o, as_dtype t, int64_t B, int64_t H, int64_t L, int64_t D, Layout lay,
                     float amp)
{
    int64_t *s = o.stride;
    size_t n;
    switch (lay) {
    case BLHD: s[0] = L * H * D, s[1] = D, s[2] = H * D, s[3] = 1, n = B * L * H * D; break;
    case DMAJOR: s[0] = H * D * L, s[1] = D * L, s[2] = 1, s[3] = L, n = B * H * D * L; break;
    case PADDED: s[0] = H * L * (D + 8), s[1] = L * (D + 8), s[2] = D + 8, s[3] = 1, n = B * H * L * (D + 8); break;
    default: s[0] = H * L * D, s[1] = L * D, s[2] = D, s[3] = 1, n = B * H * L * D; break;
    }
    o.alloc(t, n);
    for (size_t i = 0; i < n; i++) o.set(i, (float)((2 * urand() - 1) * amp));
}

struct Case {
    std::string name;
    as_dtype dt = AS_F32;
    int64_t B = 1, H = 1, Hkv = 1, Lq = 1, Lk = 1, D = 64, Dv = 64;
    bool causal = false;
    MaskKind mask = M_NONE;
    as_dtype mask_dt = AS_BOOL;
    Layout qlay = BHLD, klay = BHLD;
    float dropout = 0.0f;
    int bm = 0; /* forced block_m on the mma path */
    int wg = 0; /* 1: the wgmma kernel forced, 2: its warp-specialised variant, 3: that on the persistent grid, 4: flash/wgmma-xt (where the device and the case allow it) */
    bool simt = false; /* float32: flash/simt-f32 forced (else flash/tf32x3 where it applies) */
    bool lse = false;  /* the row log-sum-exps asked for (what a forward for the backward keeps) */
};

struct Ref {
    const Case *c;
    const Op *q, *k, *v, *m;
    float scale;
    uint64_t seed;
    std::vector<double> *out;
    std::vector<double> *lse; /* each row's max + ln(sum), +inf where it sees nothing */
};

static void ref_rows(const Ref &r, int64_t r0, int64_t r1)
{
    const Case &c = *r.c;
    const int64_t G = c.H / c.Hkv, off = c.Lk - c.Lq;
    const uint32_t thr = as_attn_drop_threshold(c.dropout);
    std::vector<double> s(c.Lk > 0 ? c.Lk : 1), o(c.Dv);
    for (int64_t row = r0; row < r1; row++) {
        int64_t i = row % c.Lq, bh = row / c.Lq, h = bh % c.H, b = bh / c.H, hk = h / G;
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.Lk; j++) {
            double x = -INFINITY;
            if (!c.causal || j <= i + off) {
                double acc = 0;
                for (int64_t d = 0; d < c.D; d++)
                    acc += (double)r.q->at(b, h, i, d) * (double)r.k->at(b, hk, j, d);
                x = acc * (double)r.scale;
                if (r.m) {
                    float mv = r.m->at(b, h, i, j);
                    if (r.m->dt == AS_BOOL)
                        x = mv != 0.0f ? x : -INFINITY;
                    else
                        x += mv;
                }
            }
            s[j] = x;
            mx = std::max(mx, x);
        }
        std::fill(o.begin(), o.end(), 0.0);
        (*r.lse)[row] = INFINITY;
        if (mx != -INFINITY) {
            double l = 0;
            uint32_t rk = as_attn_row_key(r.seed, c.H, c.Lq, b, h, i);
            for (int64_t j = 0; j < c.Lk; j++) {
                double p = s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
                l += p;
                if (c.dropout > 0) p = as_attn_keep(rk, j, thr) ? p / (1.0 - c.dropout) : 0.0;
                if (p != 0)
                    for (int64_t d = 0; d < c.Dv; d++) o[d] += p * (double)r.v->at(b, hk, j, d);
            }
            for (int64_t d = 0; d < c.Dv; d++) o[d] /= l;
            (*r.lse)[row] = mx + std::log(l);
        }
        for (int64_t d = 0; d < c.Dv; d++) (*r.out)[row * c.Dv + d] = o[d];
    }
}

static bool mma_eligible(const Case &c)
{
    return c.dt != AS_F32 && c.D == c.Dv && (c.D == 64 || c.D == 128) && c.qlay != DMAJOR &&
           c.klay != DMAJOR;
}

/* float32 cases the tiled kernels take (flash/tf32x3, flash/simt-f32) */
static bool f32_tiled(const Case &c)
{
    return c.dt == AS_F32 && c.D == c.Dv && (c.D == 64 || c.D == 128) && c.qlay != DMAJOR && c.klay != DMAJOR;
}

static bool run_case(const Case &c, int idx)
{
    Op q, k, v, m;
    make_qkv(q, c.dt, c.B, c.H, c.Lq, c.D, c.qlay, 2.0f);
    make_qkv(k, c.dt, c.B, c.Hkv, c.Lk, c.D, c.klay, 1.0f);
    make_qkv(v, c.dt, c.B, c.Hkv, c.Lk, c.Dv, c.klay, 1.0f);
    bool has_mask = c.mask != M_NONE;
    if (has_mask) {
        int64_t *s = m.stride;
        switch (c.mask) {
        case M_BOOL_QK: /* (1, 1, Lq, Lk) */
            m.alloc(AS_BOOL, c.Lq * c.Lk);
            s[0] = 0, s[1] = 0, s[2] = c.Lk, s[3] = 1;
            for (size_t x = 0; x < m.n; x++) m.set(x, urand() < 0.8 ? 1.0f : 0.0f);
            break;
        case M_BOOL_BK: /* (B, 1, 1, Lk) */
            m.alloc(AS_BOOL, c.B * c.Lk);
            s[0] = c.Lk, s[1] = 0, s[2] = 0, s[3] = 1;
            for (size_t x = 0; x < m.n; x++) m.set(x, urand() < 0.7 ? 1.0f : 0.0f);
            break;
        case M_BOOL_DEADROW: /* (B, H, Lq, Lk), query row Lq / 2 of head 0 sees nothing */
            m.alloc(AS_BOOL, c.B * c.H * c.Lq * c.Lk);
            s[0] = c.H * c.Lq * c.Lk, s[1] = c.Lq * c.Lk, s[2] = c.Lk, s[3] = 1;
            for (size_t x = 0; x < m.n; x++) m.set(x, urand() < 0.9 ? 1.0f : 0.0f);
            for (int64_t j = 0; j < c.Lk; j++) m.set((c.Lq / 2) * c.Lk + j, 0.0f);
            break;
        default: /* M_FLOAT_FULL: (B, H, Lq, Lk) bias, some -inf, row 0 of head 0 all -inf */
            m.alloc(c.mask_dt, c.B * c.H * c.Lq * c.Lk);
            s[0] = c.H * c.Lq * c.Lk, s[1] = c.Lq * c.Lk, s[2] = c.Lk, s[3] = 1;
            for (size_t x = 0; x < m.n; x++)
                m.set(x, urand() < 0.1 ? -INFINITY : (float)(2 * urand() - 1));
            for (int64_t j = 0; j < c.Lk; j++) m.set(j, -INFINITY);
            break;
        }
    }
    q.upload(), k.upload(), v.upload();
    if (has_mask) m.upload();
    const size_t nout = c.B * c.H * c.Lq * c.Dv;
    void *dout;
    CK(cudaMalloc(&dout, std::max<size_t>(nout, 1) * esize(c.dt)));
    CK(cudaMemset(dout, 0xff, std::max<size_t>(nout, 1) * esize(c.dt))); /* NaN if unwritten */

    as_attn_params p;
    memset(&p, 0, sizeof p);
    p.B = c.B, p.H = c.H, p.Hkv = c.Hkv, p.Lq = c.Lq, p.Lk = c.Lk, p.D = c.D, p.Dv = c.Dv;
    auto opnd = [](const Op &o) {
        as_attn_operand r;
        r.data = o.dev, r.dtype = o.dt;
        for (int x = 0; x < 4; x++) r.stride[x] = o.stride[x];
        return r;
    };
    p.q = opnd(q), p.k = opnd(k), p.v = opnd(v);
    if (has_mask) p.mask = opnd(m);
    p.causal = c.causal;
    p.scale = (float)(1.0 / std::sqrt((double)c.D));
    p.dropout = c.dropout;
    p.seed = 0x5eed0000ull + (uint64_t)idx * 7919u;
    p.out = dout;
    p.out_dtype = c.dt;
    const int64_t rows = c.B * c.H * c.Lq;
    float *dlse = nullptr;
    if (c.lse) {
        CK(cudaMalloc(&dlse, std::max<int64_t>(rows, 1) * sizeof(float)));
        CK(cudaMemset(dlse, 0xff, std::max<int64_t>(rows, 1) * sizeof(float))); /* NaN if unwritten */
        p.lse = dlse;
    }

    /* the automatic choice is never wgmma on these small grids; wg forces it */
    const bool wg_dev = as_cuda_flash_force_wgmma(c.wg ? c.wg : -1) == 1;
    const bool tf32_dev = as_cuda_flash_force_f32_simt(c.simt ? 1 : 0) == 1;
    const char *path = as_cuda_flash_path(&p);
    as_cuda_flash_force_block_m(c.bm);
    int rc = as_cuda_flash_attention(&p, nullptr);
    as_cuda_flash_force_block_m(0);
    as_cuda_flash_force_wgmma(0);
    as_cuda_flash_force_f32_simt(-1);
    cudaError_t sync = cudaDeviceSynchronize();

    std::vector<double> ref(std::max<size_t>(nout, 1)), ref_lse(std::max<int64_t>(rows, 1));
    Ref r = {&c, &q, &k, &v, has_mask ? &m : nullptr, p.scale, p.seed, &ref, &ref_lse};
    int nth = (int)std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
    std::vector<std::thread> th;
    for (int t = 0; t < nth; t++)
        th.emplace_back(ref_rows, std::cref(r), rows * t / nth, rows * (t + 1) / nth);
    for (auto &t : th) t.join();

    std::vector<unsigned char> ob(std::max<size_t>(nout, 1) * esize(c.dt));
    CK(cudaMemcpy(ob.data(), dout, ob.size(), cudaMemcpyDeviceToHost));
    double err = 0;
    bool finite = true;
    for (size_t x = 0; x < nout; x++) {
        double o = get(ob, c.dt, x), e = ref[x];
        if (!std::isfinite(o)) finite = false;
        double d = std::fabs(o - e);
        if (c.dt != AS_F32) d /= 1.0 + std::fabs(e);
        err = std::max(err, d);
    }
    /* the log-sum-exps: relative to 1 + |lse|, float32 sums of exp2 (1e-4); +inf exactly where a
     * row sees nothing */
    double lse_err = 0;
    if (c.lse) {
        std::vector<float> lb(std::max<int64_t>(rows, 1));
        CK(cudaMemcpy(lb.data(), dlse, lb.size() * sizeof(float), cudaMemcpyDeviceToHost));
        for (int64_t x = 0; x < rows; x++) {
            const double g = lb[x], e = ref_lse[x];
            const double d = std::isinf(e) ? (g == e ? 0.0 : INFINITY) : std::fabs(g - e) / (1.0 + std::fabs(e));
            lse_err = std::isnan(d) ? INFINITY : std::max(lse_err, d);
        }
        cudaFree(dlse);
    }
    /* float32 against float64: both float32 kernels (3xTF32 too) stay near 1e-6 */
    const double tol = c.dt == AS_F32 ? 2e-5 : 2e-2;
    const bool wg_path = c.wg && wg_dev && c.mask == M_NONE && c.dropout == 0.0f;
    /* the warp-specialised kernel takes what TMA accepts: not an empty K */
    const char *wg_name = c.wg >= 2 && c.Lk > 0
                              ? (c.wg == 4 ? "flash/wgmma-xt" : c.wg == 3 ? "flash/wgmma-ws-persist" : "flash/wgmma-ws")
                              : "flash/wgmma";
    const bool simt = f32_tiled(c);
    const bool path_ok = !strcmp(path, mma_eligible(c) ? (wg_path ? wg_name : "flash/mma")
                                       : simt           ? (tf32_dev && !c.simt ? "flash/tf32x3" : "flash/simt-f32")
                                                        : "flash/cuda-f32");
    const bool ok = rc == 0 && sync == cudaSuccess && finite && err <= tol && path_ok && lse_err <= 1e-4;
    printf("[%3d] %-4s %-44s %-15s err %.2e%s  %s%s%s\n", idx, ok ? "ok" : "FAIL", c.name.c_str(),
           path, err, c.lse ? (lse_err <= 1e-4 ? " lse ok" : " LSE WRONG") : "", rc ? cudaGetErrorString((cudaError_t)rc) : "",
           sync != cudaSuccess ? cudaGetErrorString(sync) : "", path_ok ? "" : " (wrong path)");
    fflush(stdout);
    if (sync != cudaSuccess) exit(1); /* the context is gone */
    q.release(), k.release(), v.release(), m.release();
    cudaFree(dout);
    return ok;
}

static std::string describe(const Case &c)
{
    static const char *mk[] = {"", " mask=bool(1,1,Lq,Lk)", " mask=bool(B,1,1,Lk)", " mask=bias", " mask=deadrow"};
    static const char *ly[] = {"", " q=BLHD", " q=Dmajor", " q=padded"};
    char buf[256];
    snprintf(buf, sizeof buf, "%s B%lld H%lld/%lld Lq%lld Lk%lld D%lld%s%s%s%s%s%s", dname(c.dt),
             (long long)c.B, (long long)c.H, (long long)c.Hkv, (long long)c.Lq, (long long)c.Lk,
             (long long)c.D, c.Dv != c.D ? (" Dv" + std::to_string(c.Dv)).c_str() : "",
             c.causal ? " causal" : "", mk[c.mask],
             c.mask == M_FLOAT_FULL ? (std::string("/") + dname(c.mask_dt)).c_str() : "", ly[c.qlay],
             c.dropout > 0 ? " drop0.3" : "");
    std::string s = buf;
    if (c.klay == PADDED) s += " kv=padded";
    if (c.klay == BLHD) s += " kv=BLHD";
    if (c.bm) s += " bm" + std::to_string(c.bm);
    if (c.wg) s += c.wg == 4 ? " wgmma-xt" : c.wg == 3 ? " wgmma-ws-persist" : c.wg == 2 ? " wgmma-ws" : " wgmma";
    if (c.lse) s += " lse";
    return s;
}

static std::vector<Case> cases()
{
    std::vector<Case> v;
    auto add = [&](Case c) {
        if (mma_eligible(c) && c.bm == 0) { /* both CTA shapes, and the wgmma kernel */
            for (int bm : {64, 128}) {
                c.bm = bm;
                c.name = describe(c);
                v.push_back(c);
            }
            for (int wg : {1, 2, 3, 4})
                for (bool lse : {false, true}) { /* the wgmma kernels with and without the row statistics */
                    c.bm = 0, c.wg = wg, c.lse = lse;
                    c.name = describe(c);
                    v.push_back(c);
                }
            return;
        }
        if (f32_tiled(c)) { /* both float32 kernels */
            c.simt = true;
            c.name = describe(c) + " simt";
            v.push_back(c);
            c.simt = false;
        }
        c.name = describe(c);
        v.push_back(c);
    };
    /* every other case also checks the row log-sum-exps (the wgmma ones: both ways, above) */
    int nth_case = 0;
    auto add_lse = [&](Case c) {
        c.lse = nth_case++ % 2 == 1;
        add(c);
    };
    const int64_t pairs[][2] = {{1, 1}, {7, 63}, {63, 7}, {65, 129}, {129, 65}, {300, 1000}, {1000, 300}, {64, 64}, {128, 192}};
    for (as_dtype t : {AS_F32, AS_F16, AS_BF16})
        for (int64_t D : {64, 128, 32, 80})
            for (auto &pr : pairs)
                for (bool causal : {false, true}) {
                    if ((D == 32 || D == 80) && pr[0] * pr[1] > 100000) continue;
                    Case c;
                    c.dt = t, c.B = 2, c.H = 2, c.Hkv = 2, c.Lq = pr[0], c.Lk = pr[1], c.D = c.Dv = D;
                    c.causal = causal;
                    add_lse(c);
                }
    /* GQA */
    for (as_dtype t : {AS_F32, AS_F16, AS_BF16})
        for (int64_t D : {64, 128})
            for (bool causal : {false, true})
                for (auto &pr : {std::pair<int64_t, int64_t>{300, 300}, {65, 1000}}) {
                    Case c;
                    c.dt = t, c.B = 2, c.H = 8, c.Hkv = 2, c.Lq = pr.first, c.Lk = pr.second, c.D = c.Dv = D;
                    c.causal = causal;
                    add_lse(c);
                }
    /* masks */
    for (as_dtype t : {AS_F32, AS_F16, AS_BF16})
        for (int64_t D : {64, 128, 80})
            for (MaskKind mk : {M_BOOL_QK, M_BOOL_BK, M_FLOAT_FULL, M_BOOL_DEADROW})
                for (bool causal : {false, true}) {
                    Case c;
                    c.dt = t, c.B = 2, c.H = 4, c.Hkv = 2, c.Lq = 129, c.Lk = 300, c.D = c.Dv = D;
                    c.causal = causal, c.mask = mk;
                    c.mask_dt = t == AS_F16 ? AS_F32 : t; /* bias in f32 for f16 runs */
                    add_lse(c);
                }
    /* layouts */
    for (as_dtype t : {AS_F32, AS_F16, AS_BF16})
        for (Layout ql : {BLHD, DMAJOR, PADDED})
            for (int64_t D : {64, 128}) {
                Case c;
                c.dt = t, c.B = 2, c.H = 4, c.Hkv = 4, c.Lq = 200, c.Lk = 333, c.D = c.Dv = D;
                c.qlay = ql, c.klay = ql == DMAJOR ? BHLD : ql, c.causal = D == 64;
                add_lse(c);
            }
    /* dropout */
    for (as_dtype t : {AS_F32, AS_F16, AS_BF16})
        for (int64_t D : {64, 128})
            for (bool causal : {false, true}) {
                Case c;
                c.dt = t, c.B = 2, c.H = 4, c.Hkv = 2, c.Lq = 129, c.Lk = 257, c.D = c.Dv = D;
                c.causal = causal, c.dropout = 0.3f;
                if (causal) c.mask = M_BOOL_QK;
                add_lse(c);
            }
    /* Dv != D, empty keys, long rows */
    for (as_dtype t : {AS_F32, AS_BF16}) {
        Case c;
        c.dt = t, c.B = 1, c.H = 2, c.Hkv = 1, c.Lq = 65, c.Lk = 130, c.D = 64, c.Dv = 32;
        add_lse(c);
        c.D = 128, c.Dv = 64, c.causal = true;
        add_lse(c);
        c.D = c.Dv = 64, c.Lq = 5, c.Lk = 0, c.causal = false;
        add_lse(c);
    }
    for (as_dtype t : {AS_F16, AS_BF16}) {
        Case c;
        c.dt = t, c.B = 1, c.H = 2, c.Hkv = 1, c.Lq = 1000, c.Lk = 4099, c.D = c.Dv = 128, c.causal = true;
        add_lse(c);
    }
    /* grids of more tiles than an H100 or H200 has SMs: the persistent grid's CTAs take several
     * tiles each (the ring's stages and phases, Q reused across tiles, skipped empty tiles) */
    for (as_dtype t : {AS_F16, AS_BF16}) {
        Case c;
        c.dt = t, c.B = 2, c.H = 72, c.Hkv = 8, c.Lq = 257, c.Lk = 257, c.D = c.Dv = 64, c.causal = true;
        add_lse(c);
        c.B = 1, c.H = 66, c.Hkv = 66, c.Lq = 400, c.Lk = 700, c.D = c.Dv = 128, c.causal = false;
        add_lse(c);
        c.B = 2, c.H = 70, c.Hkv = 14, c.Lq = 300, c.Lk = 100, c.D = c.Dv = 64, c.causal = true; /* rows < 200 see nothing */
        add_lse(c);
        /* under cuda.flash_kernel_variants' 1 MiB (ATTNSWAP_FLASH_L2=1), causal sections of 7, 7
         * and 2 heads (GQA), with blocks that see nothing (rows < 400) inside each */
        c.B = 1, c.H = 16, c.Hkv = 4, c.Lq = 1500, c.Lk = 1100, c.D = c.Dv = 128, c.causal = true;
        add_lse(c);
    }
    return v;
}

/* ---- benchmark ---- */

template <typename T>
__global__ void fill_uniform(T *x, size_t n, uint32_t salt)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 0x9e3779b9u ^ salt;
        h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
        x[i] = T((float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
}

/* kernel: 0 automatic, 64 / 128 the mma kernel with that BM, -1 the mma
 * kernel's own choice, 1 the wgmma kernel, 2 wgmma-ws, 3 wgmma-ws-persist; with dt F32, 0
 * automatic (flash/tf32x3) and -2 flash/simt-f32 */
static int bench(int kernel, as_dtype dt, int64_t tokens, int64_t hidden, int64_t only_L, int64_t only_D)
{
    const int bm = kernel == 64 || kernel == 128 ? kernel : 0;
    const size_t n = tokens * hidden, es = esize(dt);
    void *q, *k, *v, *o;
    CK(cudaMalloc(&q, n * es));
    CK(cudaMalloc(&k, n * es));
    CK(cudaMalloc(&v, n * es));
    CK(cudaMalloc(&o, n * es));
    void *qkv[3] = {q, k, v};
    for (uint32_t x = 0; x < 3; x++) {
        if (dt == AS_F32)
            fill_uniform<<<1024, 256>>>((float *)qkv[x], n, x + 1);
        else
            fill_uniform<<<1024, 256>>>((__nv_bfloat16 *)qkv[x], n, x + 1);
    }
    CK(cudaDeviceSynchronize());
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    if (bm) as_cuda_flash_force_block_m(bm);
    if (dt == AS_F32)
        as_cuda_flash_force_f32_simt(kernel == -2 ? 1 : 0);
    else
        as_cuda_flash_force_wgmma(kernel >= 1 && kernel <= 4 ? kernel : kernel != 0 ? -1 : 0);
    printf("%s forward, %lld tokens, hidden %lld%s\n", dname(dt), (long long)tokens, (long long)hidden,
           kernel == 1 ? ", wgmma forced" : kernel == 2 ? ", wgmma-ws forced" : kernel == 3 ? ", wgmma-ws-persist forced" : kernel == 4 ? ", wgmma-xt forced" : kernel == -1 ? ", mma.sync" : kernel == -2 ? ", CUDA cores" : bm == 64 ? ", BM forced 64" : bm == 128 ? ", BM forced 128" : "");
    printf("%6s %4s %4s %4s %6s %10s %9s  %s\n", "L", "D", "B", "H", "causal", "ms", "TFLOP/s", "path");
    for (int64_t D0 : {64, 128})
        for (bool causal : {false, true})
            for (int64_t L0 : {512, 1024, 2048, 4096, 8192, 16384}) {
                int64_t D = D0, L = L0;
                if (only_L) { /* one shape, in the loops' first pass */
                    if (D0 != 64 || L0 != 512) continue;
                    D = only_D, L = only_L;
                }
                int64_t B = tokens / L, H = hidden / D;
                as_attn_params p;
                memset(&p, 0, sizeof p);
                p.B = B, p.H = H, p.Hkv = H, p.Lq = L, p.Lk = L, p.D = D, p.Dv = D;
                as_attn_operand op;
                op.dtype = dt;
                op.stride[0] = H * L * D, op.stride[1] = L * D, op.stride[2] = D, op.stride[3] = 1;
                p.q = op, p.k = op, p.v = op;
                p.q.data = q, p.k.data = k, p.v.data = v;
                p.causal = causal;
                p.scale = (float)(1.0 / std::sqrt((double)D));
                p.out = o, p.out_dtype = dt;
                for (int w = 0; w < 3; w++)
                    if (int rc = as_cuda_flash_attention(&p, nullptr)) {
                        printf("launch failed: %s\n", cudaGetErrorString((cudaError_t)rc));
                        return 1;
                    }
                CK(cudaDeviceSynchronize());
                std::vector<float> ms;
                for (int r = 0; r < 15; r++) {
                    CK(cudaEventRecord(e0));
                    as_cuda_flash_attention(&p, nullptr);
                    CK(cudaEventRecord(e1));
                    CK(cudaEventSynchronize(e1));
                    float t;
                    CK(cudaEventElapsedTime(&t, e0, e1));
                    ms.push_back(t);
                }
                std::sort(ms.begin(), ms.end());
                double t = ms[ms.size() / 2];
                double flops = 4.0 * B * H * (double)L * L * D / (causal ? 2 : 1);
                printf("%6lld %4lld %4lld %4lld %6s %10.3f %9.1f  %s\n", (long long)L, (long long)D,
                       (long long)B, (long long)H, causal ? "yes" : "no", t, flops / (t * 1e-3) / 1e12,
                       as_cuda_flash_path(&p));
                fflush(stdout);
            }
    as_cuda_flash_force_block_m(0);
    as_cuda_flash_force_wgmma(0);
    as_cuda_flash_force_f32_simt(-1);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o);
    return 0;
}

int main(int argc, char **argv)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("flash_kernel_test: no CUDA device, skipped\n");
        return 77;
    }
    if (argc > 1 && !strcmp(argv[1], "--bench")) {
        const char *k = argc > 2 ? argv[2] : "";
        /* --bench KERNEL TOKENS HIDDEN L D: that one shape (ViT-B/16 at 32 images: 6304 768 197 64) */
        const bool one = argc > 6;
        const int64_t tokens = one ? atoll(argv[3]) : 16384, hidden = one ? atoll(argv[4]) : 2048;
        const int64_t L = one ? atoll(argv[5]) : 0, D = one ? atoll(argv[6]) : 0;
        if (one && (tokens < L || L <= 0 || hidden < D || (D != 64 && D != 128))) {
            printf("flash_kernel_test: --bench KERNEL TOKENS HIDDEN L D, D 64 or 128, L <= TOKENS\n");
            return 2;
        }
        if (!strcmp(k, "f32") || !strcmp(k, "simt")) return bench(!strcmp(k, "simt") ? -2 : 0, AS_F32, tokens, hidden, L, D);
        return bench(!strcmp(k, "wgmma") ? 1 : !strcmp(k, "wgmma-ws") ? 2 : !strcmp(k, "persist") ? 3 : !strcmp(k, "xtile") ? 4 : !strcmp(k, "mma") ? -1 : atoi(k), AS_BF16, tokens, hidden, L, D);
    }
    std::vector<Case> cs = cases();
    int passed = 0;
    for (size_t x = 0; x < cs.size(); x++) passed += run_case(cs[x], (int)x);
    printf("%d/%d passed\n", passed, (int)cs.size());
    return passed == (int)cs.size() ? 0 : 1;
}
