/* Float32 products C = op(A) op(B), row-major, on the project's own AVX-512
 * kernel: a Linear's forward (x W^T), its input gradient (dY W) and its
 * weight gradient (dY^T x).  Debian's OpenBLAS 0.3.21 reaches 270-290 GFLOP/s at
 * ViT-B's layer shapes on this 2-core Xeon, PyTorch's MKL 305-315
 * (docs/performance.md, v0.17); this kernel matches or passes OpenBLAS there
 * and adds the bias and the residual as it stores C, where OpenBLAS needs C
 * filled with them first (a pass over C, beta 1).
 *
 * BLIS's loop nest, row-major: C is cut into 12 x 32 register tiles (24 zmm
 * accumulators); each is the product of a packed A micro-panel (kc x 12,
 * broadcast a row at a time) and a packed B micro-panel (kc x 32, two
 * vectors a step), 24 FMAs to 2 loads and 12 broadcasts.  With KC = 256
 * an A micro-panel (12 KiB) stays in L1 while it meets NB = 384 columns of
 * packed B (384 KiB, in L2), each B micro-panel 32 KiB: measured at ViT's
 * shapes against KC 192-768 and NB 128-512 (docs/performance.md, v0.17).
 * The threads split C's rows and pack the shared B panels together (a
 * barrier each K block); a short C (few rows) is split by columns. */
#include "cpu_kernels.h"
#include "vector_variants.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef AS_CPU_FLASH_X86

#include <immintrin.h>

#define AT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define AI AT static inline __attribute__((always_inline))

#define MR 12
#define NR 32
#define KC 256
#define MC 960   /* rows of A packed at once: MC x KC floats, 960 KiB */
#define NB 384   /* columns of packed B one A micro-panel meets: KC x NB floats, 384 KiB */
#define NC 8192 /* columns of B packed at once: KC x NC floats, 8 MiB */
#define A_STRIDE (MC * KC + 16) /* a thread's A block; pack_a's last 16-wide store runs 4 past */

typedef struct {
    int ta, tb;
    int64_t M, N, K, lda, ldb, ldc, ldr;
    const float *A, *B, *bias, *resid;
    float beta;
    float *C, *bp, *ap; /* ap: A_STRIDE floats a thread */
    int by_cols;        /* split C's column panels between the threads, not its rows */
} gemm_job;

/* The first n of a vector's 16 lanes (none for n <= 0, all from 16). */
AI __mmask16 lanes(int n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* C[mr x nr] = the tile's sum (+ bias + resid + C where asked), masked to
 * the tile's rows and columns. */
AI void tile(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, int mr, int nr,
             const float *bias, const float *resid, int64_t ldr, int addc)
{
    for (int r = 0; r < mr; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 16), _MM_HINT_T0);
    }
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; p++) {
        const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            const __m512 a = _mm512_set1_ps(ap[r]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
        ap += MR, bp += NR;
    }
    const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
    const __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    const __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (int r = 0; r < mr; r++) {
        __m512 x0 = acc[r][0], x1 = acc[r][1];
        float *cr = c + r * ldc;
        if (bias) x0 = _mm512_add_ps(x0, bias0), x1 = _mm512_add_ps(x1, bias1);
        if (resid) {
            x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, resid + r * ldr));
            x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, resid + r * ldr + 16));
        }
        if (addc) {
            x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, cr));
            x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, cr + 16));
        }
        _mm512_mask_storeu_ps(cr, m0, x0);
        _mm512_mask_storeu_ps(cr + 16, m1, x1);
    }
}

/* B's columns [j0, j0 + nr) and rows [pc, pc + kc) as a kc x 32 panel, the
 * columns past nr zero. */
AT static void pack_b(float *dst, const gemm_job *g, int64_t pc, int64_t kc, int64_t j0, int nr)
{
    if (nr < NR) memset(dst, 0, (size_t)(kc * NR) * sizeof *dst);
    if (g->tb) {
        as_cpu_flash_isa_avx512.transpose(dst, NR, g->B + j0 * g->ldb + pc, g->ldb, nr, kc, 1.0f, NULL);
        return;
    }
    const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
    for (int64_t p = 0; p < kc; p++) {
        const float *s = g->B + (pc + p) * g->ldb + j0;
        _mm512_store_ps(dst + p * NR, _mm512_maskz_loadu_ps(m0, s));
        _mm512_store_ps(dst + p * NR + 16, _mm512_maskz_loadu_ps(m1, s + 16));
    }
}

/* op(A)'s rows [i0, i0 + mr) and columns [pc, pc + kc) as a kc x 12 panel,
 * the rows past mr zero. */
AT static void pack_a(float *dst, const gemm_job *g, int64_t i0, int mr, int64_t pc, int64_t kc)
{
    if (!g->ta) {
        if (mr < MR) memset(dst, 0, (size_t)(kc * MR) * sizeof *dst);
        as_cpu_flash_isa_avx512.transpose(dst, MR, g->A + i0 * g->lda + pc, g->lda, mr, kc, 1.0f, NULL);
        return;
    }
    /* A stored K x M: each step's 12 values are adjacent; 16-wide stores overlap the next step's */
    for (int64_t p = 0; p < kc; p++)
        _mm512_storeu_ps(dst + p * MR, _mm512_maskz_loadu_ps(lanes(mr), g->A + (pc + p) * g->lda + i0));
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* One thread's share.  Called inside the parallel region: its barriers bind
 * to that team (a team of one where the caller is itself a worker). */
AT static void gemm_thread(const gemm_job *g, int th, int nt)
{
    float *ap = g->ap + (int64_t)th * A_STRIDE;
    /* by rows: whole 12-row panels, as even as they divide */
    const int64_t panels = (g->M + MR - 1) / MR;
    const int64_t r0 = g->by_cols ? 0 : min64(g->M, panels * th / nt * MR);
    const int64_t r1 = g->by_cols ? g->M : min64(g->M, panels * (th + 1) / nt * MR);
    for (int64_t jc = 0; jc < g->N; jc += NC) {
        const int64_t nc = min64(NC, g->N - jc), np = (nc + NR - 1) / NR;
        /* this thread packs panels [q0, q1) of the block; by columns it also computes them */
        const int64_t q0 = np * th / nt, q1 = np * (th + 1) / nt;
        const int64_t c0 = g->by_cols ? q0 : 0, c1 = g->by_cols ? q1 : np;
        for (int64_t pc = 0; pc < g->K; pc += KC) {
            const int64_t kc = min64(KC, g->K - pc);
            const int first = pc == 0;
            for (int64_t q = q0; q < q1; q++)
                pack_b(g->bp + q * NR * kc, g, pc, kc, jc + q * NR, (int)min64(NR, nc - q * NR));
#pragma omp barrier
            for (int64_t ic = r0; ic < r1; ic += MC) {
                const int64_t mc = min64(MC, r1 - ic);
                for (int64_t i0 = 0; i0 < mc; i0 += MR)
                    pack_a(ap + i0 * kc, g, ic + i0, (int)min64(MR, mc - i0), pc, kc);
                /* NB columns of B (L2) at a time; each A micro-panel (L1) meets all of them */
                for (int64_t qb = c0; qb < c1; qb += NB / NR) {
                    const int64_t qe = min64(c1, qb + NB / NR);
                    for (int64_t i0 = 0; i0 < mc; i0 += MR) {
                        const int64_t i = ic + i0;
                        const int mr = (int)min64(MR, mc - i0);
                        for (int64_t q = qb; q < qe; q++) {
                            const int64_t j = jc + q * NR;
                            tile(kc, ap + i0 * kc, g->bp + q * NR * kc, g->C + i * g->ldc + j, g->ldc, mr,
                                 (int)min64(NR, g->N - j), first && g->bias ? g->bias + j : NULL,
                                 first && g->resid ? g->resid + i * g->ldr + j : NULL, g->ldr,
                                 !first || g->beta != 0.0f);
                        }
                    }
                }
            }
#pragma omp barrier
        }
    }
}

/* The packing buffers, kept by the calling thread and grown as needed: a
 * fresh 8 MiB block each call would come from mmap and pay its page faults
 * (and the kernel's zeroing of them) every time.  They live as long as the
 * thread (a thread of the host program that calls a product and then exits
 * leaves its up to 10 MiB behind; OpenMP's workers live with the process). */
typedef struct {
    float *p;
    size_t n;
} scratch_buf;
static _Thread_local scratch_buf b_buf, a_buf;

static float *scratch(scratch_buf *b, size_t n)
{
    if (b->n < n) {
        float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        if (!p) return NULL;
        free(b->p);
        b->p = p, b->n = n;
    }
    return b->p;
}

static int g_any_size;

void as_cpu_sgemm_own_any_size(bool on) { g_any_size = on; }

/* ATTNSWAP_GEMM=blas gives every product to OpenBLAS (for measuring this kernel against it). */
static int own_allowed(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ATTNSWAP_GEMM");
        on = !(e && !strcmp(e, "blas"));
    }
    return on;
}

const char *as_cpu_sgemm_own_name(void)
{
    return as_cpu_vector_level() == 2 && own_allowed() ? "attnswap-avx512" : "OpenBLAS";
}

bool as_cpu_sgemm_own(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, const float *bias, const float *resid, int64_t ldr,
                      float beta, float *C, int64_t ldc)
{
    if (M < 1 || N < 1 || K < 1) return false;
    /* below these a tile is mostly padding, or OpenBLAS's small-product paths win */
    if (!g_any_size && (M < 4 * MR || N < NR || K < 16 || (double)M * (double)N * (double)K < 2097152.0))
        return false;
    if (as_cpu_vector_level() != 2 || !own_allowed()) return false;
    int nt = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) nt = omp_get_max_threads();
#endif
    const int64_t kc = min64(K, KC), nc = min64(N, NC), np = (nc + NR - 1) / NR;
    const int by_cols = M < (int64_t)nt * 4 * MR;
    if (by_cols && np < nt) nt = (int)np;
    gemm_job g = {ta, tb, M, N, K, lda, ldb, ldc, ldr, A, B, bias, resid, beta, C, NULL, NULL, by_cols};
    g.bp = scratch(&b_buf, (size_t)(np * NR * kc));
    g.ap = scratch(&a_buf, (size_t)nt * A_STRIDE);
    if (!g.bp || !g.ap) return false; /* OpenBLAS then tries */
#pragma omp parallel num_threads(nt)
    {
        /* the team OpenMP gave, which may be smaller than asked (OMP_THREAD_LIMIT,
         * OMP_DYNAMIC): the work is split over the threads that run */
        int th = 0, team = 1;
#ifdef _OPENMP
        th = omp_get_thread_num(), team = omp_get_num_threads();
#endif
        gemm_thread(&g, th, team);
    }
    return true;
}

#else

void as_cpu_sgemm_own_any_size(bool on) { (void)on; }

const char *as_cpu_sgemm_own_name(void) { return "OpenBLAS"; }

bool as_cpu_sgemm_own(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, const float *bias, const float *resid, int64_t ldr,
                      float beta, float *C, int64_t ldc)
{
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb;
    (void)bias, (void)resid, (void)ldr, (void)beta, (void)C, (void)ldc;
    return false;
}

#endif
