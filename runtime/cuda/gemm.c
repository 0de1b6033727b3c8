/* cuBLAS GEMM for matmul on CUDA tensors.  cuBLAS is column-major: a
 * row-major C (M, N) is a column-major C^T (N, M) = op(B)^T op(A)^T, so the
 * operands swap and keep their transpose flags. */
#include "cuda_backend.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/cuda.h"
#include "attnswap/error.h"
#include "attnswap/ops.h"

#ifndef ATTNSWAP_HAVE_CUDA

int as_cuda_gemm(as_gemm_args *g)
{
    (void)g;
    return as_cuda_use("matmul", 0);
}

#else

#include <cublasLt.h>
#include <cublas_v2.h>

#include "cuda_kernels.h"

static cudaDataType_t cuda_type(as_dtype dt)
{
    return dt == AS_F16 ? CUDA_R_16F : dt == AS_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* the padding below, unless ATTNSWAP_GEMM_PAD=0 (for measuring it) */
static bool pad_misaligned(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ATTNSWAP_GEMM_PAD");
        on = !(e && e[0] == '0');
    }
    return on;
}

/* ---- 16-bit products with a dimension that is not a multiple of 8 ----
 * cuBLAS takes its fast tensor-core kernels only when the dimensions and
 * leading dimensions of a half-precision product are multiples of 8.  An odd
 * vocabulary (GPT-2's 50257) breaks that for the LM head: its forward took
 * 6.57 ms on the H100 at 50257 columns against 0.86 ms at 50304
 * (docs/performance.md); padding only the leading dimensions (pitched
 * copies) did not help.  A large such product runs instead on operands
 * whose odd dims are zero-padded to a multiple of 64, and its result is
 * cropped back: copies that are memory-bound, a fraction of the product. */
#define PAD_DIM 64
#define PAD_MIN_FLOPS ((int64_t)1 << 31) /* below this a copy costs more than it saves */

static int64_t padded(int64_t d) { return d % 8 == 0 ? d : (d + PAD_DIM - 1) / PAD_DIM * PAD_DIM; }
static bool misaligned(int64_t ld, size_t es) { return (ld * (int64_t)es) % 16 != 0; }

/* batch matrices, the i-th at element offsets i*sa, i*sb, i*sc. */
static int gemm_call(const char *pa, const char *pb, char *pc, cudaDataType_t t, cublasComputeType_t ct, int ta,
                     int tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, int64_t batch,
                     int64_t sa, int64_t sb, int64_t sc)
{
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const float one = 1.0f, zero = 0.0f;
    cublasHandle_t h = as_cuda_blas_handle();
    cublasStatus_t st;
    if (batch == 1)
        st = cublasGemmEx(h, opb, opa, (int)N, (int)M, (int)K, &one, pb, t, (int)ldb, pa, t, (int)lda, &zero, pc, t,
                          (int)ldc, ct, CUBLAS_GEMM_DEFAULT);
    else
        st = cublasGemmStridedBatchedEx(h, opb, opa, (int)N, (int)M, (int)K, &one, pb, t, (int)ldb, sb, pa, t,
                                        (int)lda, sa, &zero, pc, t, (int)ldc, sc, (int)batch, ct, CUBLAS_GEMM_DEFAULT);
    return as_cublas_check("matmul", st);
}

static int pad_copy(void *dst, int64_t dld, int64_t drows, int64_t dcols, const void *src, int64_t sld,
                    int64_t srows, int64_t scols, size_t es)
{
    return as_cuda_check("matmul", as_cuda_pad_copy(dst, dld, drows, dcols, src, sld, srows, scols, (int)es));
}

/* One product with an odd dimension, on zero-padded copies (see above). */
static int gemm_padded(const char *pa, const char *pb, char *pc, cudaDataType_t t, size_t es, int ta, int tb,
                       int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, int index)
{
    const int64_t M2 = padded(M), N2 = padded(N), K2 = padded(K);
    /* the stored shapes: A is (M, K) or, transposed, (K, M); B (K, N) or (N, K); C (M, N) */
    const int64_t ar = ta ? K : M, aw = ta ? M : K, br = tb ? N : K, bw = tb ? K : N;
    const int64_t ar2 = ta ? K2 : M2, aw2 = ta ? M2 : K2, br2 = tb ? N2 : K2, bw2 = tb ? K2 : N2;
    const bool pad_a = ar2 != ar || aw2 != aw || misaligned(lda, es);
    const bool pad_b = br2 != br || bw2 != bw || misaligned(ldb, es);
    const bool pad_c = M2 != M || N2 != N || misaligned(ldc, es);
    char *a2 = pad_a ? as_cuda_alloc((size_t)(ar2 * aw2) * es, index) : NULL;
    char *b2 = pad_b ? as_cuda_alloc((size_t)(br2 * bw2) * es, index) : NULL;
    char *c2 = pad_c ? as_cuda_alloc((size_t)(M2 * N2) * es, index) : NULL;
    int rc = -1;
    if ((pad_a && !a2) || (pad_b && !b2) || (pad_c && !c2)) {
        as_error_set("matmul: out of CUDA memory for the padded copies of a (%lld x %lld x %lld) product",
                     (long long)M, (long long)N, (long long)K);
        goto done;
    }
    if (pad_a && pad_copy(a2, aw2, ar2, aw2, pa, lda, ar, aw, es)) goto done;
    if (pad_b && pad_copy(b2, bw2, br2, bw2, pb, ldb, br, bw, es)) goto done;
    if (gemm_call(pad_a ? a2 : pa, pad_b ? b2 : pb, pad_c ? c2 : pc, t, CUBLAS_COMPUTE_32F, ta, tb, M2, N2, K2,
                  pad_a ? aw2 : lda,
                  pad_b ? bw2 : ldb, pad_c ? N2 : ldc, 1, 0, 0, 0))
        goto done;
    rc = pad_c ? pad_copy(pc, ldc, M, N, c2, N2, M, N, es) : 0;
done:
    /* the caching allocator hands these blocks out again only to work queued after this on the same stream */
    if (a2) as_cuda_free(a2, index);
    if (b2) as_cuda_free(b2, index);
    if (c2) as_cuda_free(c2, index);
    return rc;
}

/* ---- cuBLASLt's algorithm, chosen once a shape ----
 * cublasLtMatmulAlgoGetHeuristic takes tens of microseconds of host time a
 * call, as long as some of the products it picks for run on the card; a model
 * asks the same few shapes every layer.  The first answer for each (device,
 * dtype, transposes, sizes, leading dims, operand alignment) is kept. */
#define LT_ALGOS 256 /* slots; a full probe run overwrites its first slot */
#define LT_PROBE 8
#define LT_KEY 14
typedef struct {
    int64_t key[LT_KEY];
    cublasLtMatmulAlgo_t algo;
    bool used;
} lt_algo;
static lt_algo lt_algos[LT_ALGOS];
static pthread_mutex_t lt_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t lt_slot(const int64_t *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the key's words */
    for (int i = 0; i < LT_KEY; i++) h = (h ^ (uint64_t)key[i]) * 1099511628211ull;
    return (size_t)(h % LT_ALGOS);
}

static bool lt_find(const int64_t *key, cublasLtMatmulAlgo_t *algo)
{
    bool hit = false;
    pthread_mutex_lock(&lt_lock);
    for (size_t i = 0, s = lt_slot(key); i < LT_PROBE && lt_algos[s].used; i++, s = (s + 1) % LT_ALGOS)
        if (!memcmp(lt_algos[s].key, key, sizeof lt_algos[s].key)) {
            *algo = lt_algos[s].algo;
            hit = true;
            break;
        }
    pthread_mutex_unlock(&lt_lock);
    return hit;
}

static void lt_keep(const int64_t *key, const cublasLtMatmulAlgo_t *algo)
{
    pthread_mutex_lock(&lt_lock);
    size_t s = lt_slot(key), first = s;
    for (size_t i = 0; i < LT_PROBE && lt_algos[s].used; i++) s = (s + 1) % LT_ALGOS;
    if (lt_algos[s].used) s = first;
    memcpy(lt_algos[s].key, key, sizeof lt_algos[s].key);
    lt_algos[s].algo = *algo;
    lt_algos[s].used = true;
    pthread_mutex_unlock(&lt_lock);
}

/* the largest power of two up to 256 that divides every address */
static int64_t alignment(const void *a, const void *b, const void *c, const void *d, const void *e)
{
    uintptr_t x = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d | (uintptr_t)e | 256;
    return (int64_t)(x & (~x + 1));
}

/* ---- one product with the bias and a residual added by cuBLASLt ----
 * C (M, N) row-major = op(A) op(B) + bias + resid, bias over N, resid (or
 * NULL) of C's layout: column-major, D is (N, M) and the bias runs along its
 * rows, which is what CUBLASLT_EPILOGUE_BIAS adds; the residual is cuBLASLt's
 * C operand with beta 1 (D = A B + C, C and D apart).  Saves the separate
 * passes over C that the adds cost (a read and a write of C each: more than
 * the product itself for GPT-2's layers at bf16 on an H100,
 * docs/performance.md).  bias may be NULL too.  1 when cuBLASLt declines (no
 * handle, no algorithm): the caller then runs the plain product and adds. */
static int gemm_bias(const char *pa, const char *pb, char *pc, const void *bias, const void *resid, cudaDataType_t t,
                     cublasComputeType_t ct, int ta, int tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                     int64_t ldc, int index)
{
    cublasLtHandle_t lt = as_cuda_blaslt_handle();
    size_t wsize;
    void *ws = as_cuda_blaslt_workspace(&wsize);
    if (!lt) return 1;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulAlgo_t algo;
    int found = 0, rc = 1;
    /* the heuristic told the operands' real alignment (its default assumes 256 bytes,
     * and an algorithm that needs more fails at the call) */
    const uint32_t align = (uint32_t)alignment(pa, pb, pc, bias, resid);
    const int64_t key[LT_KEY] = {index, t, ct, ta, tb, M, N, K, lda, ldb, ldc, align, bias != NULL, resid != NULL};
    /* the operands swap, as in gemm_call: cuBLASLt's A is our B (op(B)^T is N x K), its B our A */
    if (cublasLtMatmulDescCreate(&op, ct, CUDA_R_32F) ||
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opb, sizeof opb) ||
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opa, sizeof opa) ||
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) ||
        (bias && cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias)) ||
        cublasLtMatrixLayoutCreate(&la, t, tb ? K : N, tb ? N : K, ldb) ||
        cublasLtMatrixLayoutCreate(&lb, t, ta ? M : K, ta ? K : M, lda) ||
        cublasLtMatrixLayoutCreate(&lc, t, N, M, ldc))
        goto done;
    if (!lt_find(key, &algo)) {
        cublasLtMatmulHeuristicResult_t res;
        if (cublasLtMatmulPreferenceCreate(&pref) ||
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsize,
                                                 sizeof wsize) ||
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align,
                                                 sizeof align) ||
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align,
                                                 sizeof align) ||
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align,
                                                 sizeof align) ||
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align,
                                                 sizeof align) ||
            cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res, &found) || found == 0)
            goto done;
        algo = res.algo;
        lt_keep(key, &algo);
    }
    const float one = 1.0f, zero = 0.0f;
    rc = as_cublas_check("linear", cublasLtMatmul(lt, op, &one, pb, la, pa, lb, resid ? &one : &zero,
                                                  resid ? resid : pc, lc, pc, lc, &algo, ws, wsize,
                                                  (cudaStream_t)as_cuda_current_stream()));
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return rc;
}

/* ---- float32 products in 3xTF32 ----
 * cuBLAS's SGEMM runs on the CUDA cores (about 50 TFLOP/s on an H100: the
 * bound of the float32 models, docs/performance.md v0.12).  Its TF32 kernels
 * run on the tensor cores at several times that, but TF32 keeps 10 bits of
 * each operand's mantissa.  Each operand x is split into big = tf32(x) and
 * small = x - big, and a b = ab bb + ab bs + as bb (as bs, below 2^-22 of the
 * product, is dropped): float32-level results.  That sum is one TF32 product
 * three times as deep, on copies A' = [Ab Ab As] and B' = [Bb Bs Bb] along k
 * (kernels/cuda/tf32x3_split.cu), so cuBLAS's own TF32 kernels, and
 * cuBLASLt's bias epilogue, do the work.  The copies cost a read and three
 * writes of each operand and a scratch of three times its size, so a product
 * takes this path only when it is large and square enough for that to pay
 * (measured: docs/performance.md v0.14).  flash/tf32x3 does the same inside
 * the attention kernel.  as_set_float32_matmul_precision("highest") keeps
 * SGEMM; ATTNSWAP_F32_GEMM=tf32x3 or =sgemm forces one path for every float32
 * product (the tests and benchmarks measure one against the other). */
#define TF32X3_MIN_FLOPS ((int64_t)1 << 29)
#define TF32X3_MIN_HARMONIC 320 /* M N / (M + N): the product's work per element copied */
#define TF32X3_MAX_SCRATCH ((int64_t)1 << 32) /* bytes; past it, SGEMM */

static bool tf32_cores(int index)
{
    static signed char cache[64]; /* 0 unknown, 1 yes, -1 no */
    if (index < 0 || index >= 64) return false;
    if (!cache[index]) {
        int major = 0;
        cache[index] = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) == cudaSuccess &&
                               major >= 8
                           ? 1
                           : -1;
    }
    return cache[index] > 0;
}

static bool use_tf32x3(int64_t M, int64_t N, int64_t K, int64_t batch, int index)
{
    static int forced; /* 0 unknown, 1 tf32x3, -1 sgemm, 2 not forced */
    if (!forced) {
        const char *e = getenv("ATTNSWAP_F32_GEMM");
        forced = e && !strcmp(e, "tf32x3") ? 1 : e && !strcmp(e, "sgemm") ? -1 : 2;
    }
    if (forced == -1 || M <= 0 || N <= 0 || K <= 0 || 3 * K > INT_MAX || !tf32_cores(index)) return false;
    if (forced == 1) return true;
    return !strcmp(as_get_float32_matmul_precision(), "high") && 2 * M * N * K * batch >= TF32X3_MIN_FLOPS &&
           M * N >= TF32X3_MIN_HARMONIC * (M + N);
}

/* a dim of a single product, padded so that every row of the copies and of
 * C starts 16-byte aligned: cuBLAS's TF32 kernels want that as its 16-bit
 * ones do (an odd vocabulary's LM head ran at 0.9x SGEMM unpadded) */
static int64_t tf32_padded(int64_t d) { return (d + 15) / 16 * 16; }

/* C = A B as above (the batch as in gemm_call; an operand with batch stride
 * 0 is split once).  A single product's dims are padded (zeros in the
 * copies) where they are not aligned, and C then goes through a scratch of
 * at most TF32X3_C_CHUNK bytes, a band of rows at a time, cropped back (an
 * LM head's logits whole would double their memory).  1 when it declines
 * (no scratch): the caller runs SGEMM. */
#define TF32X3_C_CHUNK ((int64_t)256 << 20)
static int gemm_tf32x3(const char *pa, const char *pb, char *pc, const void *bias, bool *bias_done, const void *resid,
                       bool *resid_done, int ta, int tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                       int64_t ldc, int64_t batch, int64_t sa, int64_t sb, int64_t sc, int index)
{
    const int64_t na = sa ? batch : 1, nb = sb ? batch : 1;
    const bool one = batch == 1;
    const int64_t M2 = one ? tf32_padded(M) : M, N2 = one ? tf32_padded(N) : N, K2 = one ? tf32_padded(K) : K;
    const bool pad_c = one && (M2 != M || N2 != N || ldc % 4 || ((uintptr_t)pc & 15));
    int64_t band = pad_c ? TF32X3_C_CHUNK / ((int64_t)sizeof(float) * N2) / 16 * 16 : M2; /* C's rows a product */
    if (band < 16) band = 16;
    if (band > M2) band = M2;
    const int64_t a_bytes = (int64_t)sizeof(float) * 3 * M2 * K2 * na, b_bytes = (int64_t)sizeof(float) * 3 * N2 * K2 * nb;
    const int64_t c_bytes = pad_c ? (int64_t)sizeof(float) * band * N2 : 0;
    if (a_bytes + b_bytes + c_bytes > TF32X3_MAX_SCRATCH || 3 * K2 > INT_MAX || !fits_int(M2) || !fits_int(N2))
        return 1;
    float *a3 = as_cuda_alloc((size_t)a_bytes, index), *b3 = as_cuda_alloc((size_t)b_bytes, index);
    float *c2 = pad_c ? as_cuda_alloc((size_t)c_bytes, index) : NULL;
    int rc = 1;
    if (!a3 || !b3 || (pad_c && !c2)) goto done;
    /* A is stored (M, K), or (K, M) when ta: k runs along its columns, or its rows; B likewise */
    rc = as_cuda_check("matmul", as_cuda_tf32x3_split(a3, (const float *)pa, na, ta ? K : M, ta ? M : K, lda, sa,
                                                      ta ? K2 : M2, ta ? M2 : K2, ta, 2));
    if (!rc)
        rc = as_cuda_check("matmul", as_cuda_tf32x3_split(b3, (const float *)pb, nb, tb ? N : K, tb ? K : N, ldb, sb,
                                                          tb ? N2 : K2, tb ? K2 : N2, !tb, 1));
    if (rc) goto done;
    const int64_t lda3 = ta ? M2 : 3 * K2, ldb3 = tb ? 3 * K2 : N2;
    bool biased = false;
    /* a residual rides along only where C is written in place, in its own layout */
    if (pad_c) resid = NULL;
    for (int64_t m0 = 0; m0 < M2 && !rc; m0 += band) {
        const int64_t rows = M2 - m0 < band ? M2 - m0 : band;
        const char *a_band = (const char *)(a3 + (ta ? m0 : m0 * lda3));
        char *out = pad_c ? (char *)c2 : pc;
        const int64_t ldo = pad_c ? N2 : ldc;
        if ((bias || resid) && one && N2 == N && band == M2) { /* the epilogue reads N2 biases; one band */
            rc = gemm_bias(a_band, (const char *)b3, out, bias, resid, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, ta,
                           tb, rows, N2, 3 * K2, lda3, ldb3, ldo, index);
            if (rc < 0) break;
            biased = rc == 0;
        }
        if (!biased)
            rc = gemm_call(a_band, (const char *)b3, out, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, ta, tb, rows, N2,
                           3 * K2, lda3, ldb3, ldo, batch, na > 1 ? 3 * M * K : 0, nb > 1 ? 3 * N * K : 0, sc);
        if (!rc && pad_c && m0 < M) {
            const int64_t keep = M - m0 < rows ? M - m0 : rows;
            rc = pad_copy(pc + m0 * ldc * (int64_t)sizeof(float), ldc, keep, N, c2, N2, keep, N, sizeof(float));
        }
    }
    if (!rc) *bias_done = biased && bias, *resid_done = biased && resid;
done:
    /* the caching allocator hands these blocks out again only to work queued after this on the same stream */
    if (a3) as_cuda_free(a3, index);
    if (b3) as_cuda_free(b3, index);
    if (c2) as_cuda_free(c2, index);
    return rc;
}

static int gemm(const as_tensor *a, const as_tensor *b, as_tensor *c, int ta, int tb, int64_t M, int64_t N,
                int64_t K, int64_t lda, int64_t ldb, int64_t ldc, int64_t batch, int64_t sa, int64_t sb, int64_t sc,
                const as_tensor *bias, bool *bias_done, const as_tensor *resid, bool *resid_done)
{
    if (!fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) || !fits_int(ldb) || !fits_int(ldc) ||
        !fits_int(batch)) {
        as_error_set("matmul: sizes past 2^31 are more than cuBLAS's int interface takes");
        return -1;
    }
    const int index = as_tensor_device(c).index;
    if (as_cuda_use("matmul", index)) return -1;
    const char *pa = as_data(a), *pb = as_data(b);
    char *pc = as_data(c);
    cudaDataType_t t = cuda_type(c->dtype);
    const size_t es = as_dtype_size(c->dtype);
    if (es == 2 && batch == 1 && 2 * M * N * K >= PAD_MIN_FLOPS && pad_misaligned() &&
        (M % 8 || N % 8 || K % 8 || misaligned(lda, es) || misaligned(ldb, es) || misaligned(ldc, es)))
        return gemm_padded(pa, pb, pc, t, es, ta, tb, M, N, K, lda, ldb, ldc, index);
    const void *pbias = bias && bias->dtype == c->dtype ? as_data(bias) : NULL;
    const void *presid = resid && resid->dtype == c->dtype && batch == 1 ? as_data(resid) : NULL;
    if (c->dtype == AS_F32 && use_tf32x3(M, N, K, batch, index)) {
        int rc = gemm_tf32x3(pa, pb, pc, pbias, bias_done, presid, resid_done, ta, tb, M, N, K, lda, ldb, ldc, batch,
                             sa, sb, sc, index);
        if (rc <= 0) return rc;
    }
    if ((pbias || presid) && batch == 1) {
        int rc = gemm_bias(pa, pb, pc, pbias, presid, t, CUBLAS_COMPUTE_32F, ta, tb, M, N, K, lda, ldb, ldc, index);
        if (rc <= 0) {
            *bias_done = rc == 0 && pbias, *resid_done = rc == 0 && presid;
            return rc;
        }
    }
    return gemm_call(pa, pb, pc, t, CUBLAS_COMPUTE_32F, ta, tb, M, N, K, lda, ldb, ldc, batch, sa, sb, sc);
}

/* The batch [0, nbatch) as one stride per operand, when its dims allow. */
static int uniform_batch(int nb, const int64_t *batch, const int64_t *stride, int64_t *step)
{
    int64_t s = -1, expect = 0;
    for (int d = nb - 1; d >= 0; d--) {
        if (batch[d] == 1) continue;
        if (s < 0) s = stride[d], expect = s * batch[d];
        else if (stride[d] != expect) return 0;
        else expect *= batch[d];
    }
    *step = s < 0 ? 0 : s;
    return 1;
}

/* *t as a contiguous copy: its matrices then read untransposed, rows of ld. */
static int make_contiguous(as_tensor **t, bool *trans, int64_t *ld)
{
    as_tensor *c = as_contiguous(*t);
    if (!c) return -1;
    as_release(*t);
    *t = c;
    *trans = false;
    *ld = c->shape[c->ndim - 1] > 1 ? c->shape[c->ndim - 1] : 1;
    return 0;
}

int as_cuda_gemm(as_gemm_args *g)
{
    int64_t M = g->M, N = g->N, K = g->K, sa = 0, sb = 0;
    if (g->fold)
        return gemm(g->a, g->b, g->out, g->ta, g->tb, M * g->nbatch, N, K, g->lda, g->ldb, N, 1, 0, 0, 0, g->bias,
                    &g->bias_done, g->resid, &g->resid_done);
    /* Batches that one stride cannot step through (a head split out of a
     * fused qkv projection: (B, H) strides (L 3HD, D)) are copied contiguous:
     * one strided-batched call and a copy cost a fraction of a cuBLAS call
     * per matrix (B H of them). */
    if (!uniform_batch(g->nb, g->batch, g->a->stride, &sa) &&
        (make_contiguous(&g->a, &g->ta, &g->lda) || !uniform_batch(g->nb, g->batch, g->a->stride, &sa)))
        return -1;
    if (!uniform_batch(g->nb, g->batch, g->b->stride, &sb) &&
        (make_contiguous(&g->b, &g->tb, &g->ldb) || !uniform_batch(g->nb, g->batch, g->b->stride, &sb)))
        return -1;
    return gemm(g->a, g->b, g->out, g->ta, g->tb, M, N, K, g->lda, g->ldb, N, g->nbatch, sa, sb, M * N, g->bias,
                &g->bias_done, g->resid, &g->resid_done);
}

#endif
