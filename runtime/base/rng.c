/* Random numbers: Philox-4x32-10 (Salmon et al., "Parallel random numbers:
 * as easy as 1, 2, 3", SC'11), the counter-based generator of cuRAND and
 * PyTorch's CUDA backend.
 *
 * State is (seed, offset).  A draw of n numbers uses the 32-bit words
 * offset .. offset+n-1 of the stream for key = seed: word j is lane j % 4 of
 * philox(counter = j / 4 as a 64-bit number in words 0-1, key).  The offset then
 * advances by n rounded up to a multiple of 4, so each draw starts on a fresh
 * block.  Element i of a draw is therefore a pure function of (seed,
 * offset + i): the same on every machine and every OpenMP thread count.
 *
 * At startup the seed is 0 and the offset 0 (torch seeds its default
 * generator from the clock; we prefer scripts that reproduce without asking).
 * as_manual_seed(s) sets seed s and offset 0.
 *
 * Conversions: uniform u in [0, 1) keeps the top 24 bits of a word (11 for
 * float16, 8 for bfloat16, so that rounding can never give 1.0).  Normal
 * numbers come from Box-Muller on the pair of words (2k, 2k+1): element 2k
 * gets r cos(theta), element 2k+1 gets r sin(theta), computed in double and
 * rounded once to the tensor's dtype.  Bernoulli keep (p) is word >= p * 2^32,
 * exact for every p in [0, 1]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "attnswap/ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static uint64_t rng_seed;   /* 0 at startup */
static uint64_t rng_offset; /* in 32-bit words, always a multiple of 4 */

/* Philox-4x32 with 10 rounds; exposed (not in ops.h) for the known-answer test. */
void as_philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]);
void as_philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4])
{
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < 10; r++) {
        if (r) k0 += PHILOX_W0, k1 += PHILOX_W1;
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

void as_manual_seed(uint64_t seed)
{
    rng_seed = seed;
    rng_offset = 0;
}

uint64_t as_initial_seed(void) { return rng_seed; }

void as_get_rng_state(uint64_t *seed, uint64_t *offset)
{
    *seed = rng_seed;
    *offset = rng_offset;
}

int as_set_rng_state(uint64_t seed, uint64_t offset)
{
    if (offset % 4) {
        as_error_set("set_rng_state: the offset must be a multiple of 4 (a draw starts on a fresh block), got %llu",
                     (unsigned long long)offset);
        return -1;
    }
    rng_seed = seed;
    rng_offset = offset;
    return 0;
}

static const char *forbidden; /* why draws fail now, or NULL */

void as_rng_forbid(const char *why) { forbidden = why; }

static int refuse(const char *fn)
{
    if (!forbidden) return 0;
    as_error_set("%s: %s", fn, forbidden);
    return -1;
}

/* Reserves n words of the stream; returns the first. */
static uint64_t take_offset(int64_t n)
{
    uint64_t base = rng_offset;
    rng_offset += ((uint64_t)n + 3) & ~(uint64_t)3;
    return base;
}

typedef enum { GEN_UNIFORM, GEN_NORMAL, GEN_BERNOULLI } gen_kind;

typedef struct {
    gen_kind kind;
    double a, b;        /* uniform: lo, hi - lo; normal: mean, std */
    uint64_t threshold; /* bernoulli: keep when word >= threshold */
} gen_params;

static inline double uniform_bits(uint32_t x, as_dtype dt)
{
    switch (dt) {
    case AS_F16: return (x >> 21) * 0x1p-11;
    case AS_BF16: return (x >> 24) * 0x1p-8;
    case AS_F64: return x * 0x1p-32; /* all 32 bits of the word */
    default: return (x >> 8) * 0x1p-24;
    }
}

static inline void store(void *dst, as_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case AS_F32: ((float *)dst)[i] = (float)v; break;
    case AS_F64: ((double *)dst)[i] = v; break;
    case AS_F16: ((uint16_t *)dst)[i] = as_f32_to_f16((float)v); break;
    case AS_BF16: ((uint16_t *)dst)[i] = as_f32_to_bf16((float)v); break;
    default: break;
    }
}

/* One Philox block: the four values of elements 4b .. 4b+3 of the draw. */
static void gen_block(const gen_params *g, uint64_t word0, uint32_t key[2], as_dtype dt,
                      void *dst, int64_t b, int64_t n)
{
    uint64_t block = word0 / 4 + (uint64_t)b;
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0}, x[4];
    as_philox4x32_10(ctr, key, x);
    int64_t i0 = 4 * b;
    int lanes = n - i0 < 4 ? (int)(n - i0) : 4;
    switch (g->kind) {
    case GEN_UNIFORM:
        for (int l = 0; l < lanes; l++) store(dst, dt, i0 + l, g->a + g->b * uniform_bits(x[l], dt));
        break;
    case GEN_NORMAL:
        for (int l = 0; l < lanes; l += 2) {
            double u1 = ((x[l] >> 8) + 1) * 0x1p-24; /* (0, 1]: log never sees 0 */
            double u2 = (x[l + 1] >> 8) * 0x1p-24;
            double r = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
            store(dst, dt, i0 + l, g->a + g->b * r * cos(th));
            if (l + 1 < lanes) store(dst, dt, i0 + l + 1, g->a + g->b * r * sin(th));
        }
        break;
    case GEN_BERNOULLI:
        for (int l = 0; l < lanes; l++) ((uint8_t *)dst)[i0 + l] = x[l] >= g->threshold;
        break;
    }
}

/* Fills n contiguous elements of dst (float dtypes, or bool for bernoulli). */
static void generate(const gen_params *g, void *dst, as_dtype dt, int64_t n)
{
    if (n <= 0) return;
    uint64_t word0 = take_offset(n);
    uint32_t key[2] = {(uint32_t)rng_seed, (uint32_t)(rng_seed >> 32)};
    int64_t nblocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t b = 0; b < nblocks; b++) gen_block(g, word0, key, dt, dst, b, n);
}

static int check_float(const char *fn, as_dtype dt)
{
    if (!as_dtype_is_float(dt)) {
        as_error_set("%s: expected a floating point dtype, got %s", fn, as_dtype_name(dt));
        return -1;
    }
    return 0;
}

/* Draws into t: in place when t is a contiguous CPU tensor, else through a
 * contiguous CPU temporary (element i of the draw goes to t's i-th element
 * in row-major order).  Device tensors get the host's numbers, so a seed
 * gives the same values on every device. */
static int fill(const char *fn, as_tensor *t, const gen_params *g)
{
    if (check_float(fn, t->dtype) || refuse(fn)) return -1;
    if (as_is_contiguous(t) && as_tensor_device(t).type == AS_DEV_CPU) {
        generate(g, as_data(t), t->dtype, as_numel(t));
        return 0;
    }
    as_tensor *tmp = as_empty(t->ndim, t->shape, t->dtype, AS_CPU);
    if (!tmp) return -1;
    generate(g, as_data(tmp), tmp->dtype, as_numel(tmp));
    int r = as_copy_(t, tmp);
    as_release(tmp);
    return r;
}

/* A new tensor of draws, made on the host and moved to dev. */
static as_tensor *drawn(const gen_params *g, int ndim, const int64_t *shape, as_dtype dt, as_device dev)
{
    as_tensor *t = as_empty(ndim, shape, dt, AS_CPU);
    if (t) generate(g, as_data(t), dt, as_numel(t));
    if (!t || dev.type == AS_DEV_CPU) return t;
    as_tensor *d = as_to_device(t, dev);
    as_release(t);
    return d;
}

static as_tensor *make(const char *fn, int ndim, const int64_t *shape, as_dtype dt, as_device dev,
                       const gen_params *g)
{
    if (check_float(fn, dt) || refuse(fn)) return NULL;
    return drawn(g, ndim, shape, dt, dev);
}

as_tensor *as_rand(int ndim, const int64_t *shape, as_dtype dt, as_device dev)
{
    gen_params g = {GEN_UNIFORM, 0.0, 1.0, 0};
    return make("rand", ndim, shape, dt, dev, &g);
}

as_tensor *as_randn(int ndim, const int64_t *shape, as_dtype dt, as_device dev)
{
    gen_params g = {GEN_NORMAL, 0.0, 1.0, 0};
    return make("randn", ndim, shape, dt, dev, &g);
}

int as_uniform_(as_tensor *t, double lo, double hi)
{
    if (!(isfinite(lo) && isfinite(hi) && lo <= hi)) {
        as_error_set("uniform_: expected finite lo <= hi, got [%g, %g)", lo, hi);
        return -1;
    }
    gen_params g = {GEN_UNIFORM, lo, hi - lo, 0};
    return fill("uniform_", t, &g);
}

int as_normal_(as_tensor *t, double mean, double std)
{
    if (!(isfinite(mean) && isfinite(std) && std >= 0)) {
        as_error_set("normal_: expected a finite mean and std >= 0, got mean %g, std %g", mean, std);
        return -1;
    }
    gen_params g = {GEN_NORMAL, mean, std, 0};
    return fill("normal_", t, &g);
}

as_tensor *as_bernoulli_keep(int ndim, const int64_t *shape, double p, as_device dev)
{
    if (!(p >= 0 && p <= 1)) {
        as_error_set("bernoulli: drop probability must be in [0, 1], got %g", p);
        return NULL;
    }
    if (refuse("bernoulli")) return NULL;
    gen_params g = {GEN_BERNOULLI, 0, 0, (uint64_t)llround(p * 0x1p32)};
    return drawn(&g, ndim, shape, AS_BOOL, dev);
}
