/* The keep-masks behind as.patterns: argument checks and allocation around
 * the loops of kernels/cpu/zoo_sparse_patterns.c.  Results are contiguous
 * bool tensors, true = may attend. */
#include <string.h>

#include "attnswap/error.h"
#include "attnswap/attention_sparse.h"
#include "prepare.h"

/* Sides past 2^16 would be 4 GiB of mask per head; nobody means that. */
#define MAX_SIDE 65536

static int check_side(const char *fn, const char *what, int64_t n)
{
    if (n < 0 || n > MAX_SIDE) {
        as_error_set("%s: %s must be an integer in [0, %d], got %lld", fn, what, MAX_SIDE, (long long)n);
        return -1;
    }
    return 0;
}

static as_tensor *square(int64_t L) { return as_empty(2, (int64_t[]){L, L}, AS_BOOL, AS_CPU); }

as_tensor *as_pattern(as_pattern_kind kind, int64_t L, int64_t a, int64_t b, bool causal)
{
    static const char *const names[] = {"patterns.local_1d", "patterns.strided", "patterns.fixed",
                                        "patterns.axial_2d"};
    const char *fn = names[kind];
    if (kind == AS_PATTERN_AXIAL) {
        if (check_side(fn, "h", a) || check_side(fn, "w", b)) return NULL;
        if (a * b > MAX_SIDE) {
            as_error_set("%s: h * w (%lld) must be at most %d", fn, (long long)(a * b), MAX_SIDE);
            return NULL;
        }
        L = a * b;
    }
    if (check_side(fn, "L", L)) return NULL;
    if (kind == AS_PATTERN_LOCAL && a < 0) {
        as_error_set("%s: window must be a non-negative integer, got %lld", fn, (long long)a);
        return NULL;
    }
    if ((kind == AS_PATTERN_STRIDED || kind == AS_PATTERN_FIXED) && a < 1) {
        as_error_set("%s: stride must be a positive integer, got %lld", fn, (long long)a);
        return NULL;
    }
    if (kind == AS_PATTERN_FIXED && (b < 0 || b > a)) {
        as_error_set("%s: c must be an integer in [0, stride = %lld], got %lld", fn, (long long)a,
                     (long long)b);
        return NULL;
    }
    as_tensor *m = square(L);
    if (!m) return NULL;
    uint8_t *d = as_data(m);
    switch (kind) {
    case AS_PATTERN_LOCAL: as_cpu_pattern_local(d, L, a > L ? L : a, causal); break;
    case AS_PATTERN_STRIDED: as_cpu_pattern_strided(d, L, a, causal); break;
    case AS_PATTERN_FIXED: as_cpu_pattern_fixed(d, L, a, b, causal); break;
    case AS_PATTERN_AXIAL: as_cpu_pattern_axial(d, a, b, causal); break;
    }
    return m;
}

as_tensor *as_pattern_random(int64_t L, double p, uint64_t seed)
{
    const char *fn = "patterns.random";
    if (check_side(fn, "L", L)) return NULL;
    if (!(p >= 0 && p <= 1)) {
        as_error_set("%s: p must be a probability in [0, 1], got %g", fn, p);
        return NULL;
    }
    as_tensor *m = square(L);
    if (m) as_cpu_pattern_random(as_data(m), L, p, seed);
    return m;
}

as_tensor *as_pattern_global(int64_t L, const as_tensor *idx)
{
    const char *fn = "patterns.global_tokens";
    if (check_side(fn, "L", L)) return NULL;
    if (!idx || (idx->dtype != AS_I64 && idx->dtype != AS_I32) || idx->ndim > 1) {
        as_error_set("%s: positions must be a list or a 1-d integer tensor", fn);
        return NULL;
    }
    as_tensor *ix = as_to_dtype(idx, AS_I64), *c = ix ? as_contiguous(ix) : NULL;
    as_release(ix);
    if (!c) return NULL;
    const int64_t *p = as_data(c), n = as_numel(c);
    for (int64_t t = 0; t < n; t++)
        if (p[t] < 0 || p[t] >= L) {
            as_error_set("%s: position %lld is outside 1..%lld", fn, (long long)p[t] + 1, (long long)L);
            as_release(c);
            return NULL;
        }
    as_tensor *m = square(L);
    if (m) as_cpu_pattern_global(as_data(m), L, p, n);
    as_release(c);
    return m;
}

as_tensor *as_pattern_bigbird(int64_t L, int64_t block, int64_t window, int64_t globals,
                              int64_t randoms, uint64_t seed, bool causal, bool blocks_only)
{
    const char *fn = "patterns.bigbird";
    if (check_side(fn, "L", L)) return NULL;
    if (block < 1 || block > MAX_SIDE) {
        as_error_set("%s: block must be a positive integer, got %lld", fn, (long long)block);
        return NULL;
    }
    if (window < 0 || globals < 0 || randoms < 0) {
        as_error_set("%s: window, globals and randoms must be non-negative integers, got %lld, %lld, %lld",
                     fn, (long long)window, (long long)globals, (long long)randoms);
        return NULL;
    }
    int64_t nb = (L + block - 1) / block;
    if (window > 2 * nb + 1) window = 2 * nb + 1;
    if (globals > nb) globals = nb;
    if (randoms > nb) randoms = nb;
    as_tensor *blocks = as_empty(2, (int64_t[]){nb, nb}, AS_BOOL, AS_CPU);
    if (!blocks) return NULL;
    as_cpu_pattern_bigbird_blocks(as_data(blocks), nb, window, globals, randoms, seed, causal);
    if (blocks_only) return blocks;
    as_tensor *m = square(L);
    if (m) {
        as_cpu_pattern_from_blocks(as_data(m), as_data(blocks), 1, L, L, block);
        if (causal) { /* within the diagonal blocks too */
            uint8_t *d = as_data(m);
            for (int64_t i = 0; i < L; i++) memset(d + i * L + i + 1, 0, (size_t)(L - i - 1));
        }
    }
    as_release(blocks);
    return m;
}

/* (..., Lr, Lc) as nh heads of contiguous bool; NULL with the error set. */
static as_tensor *heads_of(const char *fn, const as_tensor *t, const char *what)
{
    char s1[128];
    if (!t || t->dtype != AS_BOOL || t->ndim < 2 || t->ndim > 3 || as_tensor_device(t).type != AS_DEV_CPU) {
        if (!t) as_error_set("%s: %s must be a bool Tensor, got nil", fn, what);
        else
            as_error_set("%s: %s must be a 2-d or 3-d bool cpu tensor, got %s %s", fn, what,
                         as_dtype_name(t->dtype), as_shape_str(s1, sizeof s1, t->ndim, t->shape));
        return NULL;
    }
    return as_contiguous(t);
}

as_tensor *as_pattern_to_blocks(const as_tensor *mask, int64_t bs)
{
    const char *fn = "patterns.to_blocks";
    if (bs < 1 || bs > MAX_SIDE) {
        as_error_set("%s: block must be a positive integer, got %lld", fn, (long long)bs);
        return NULL;
    }
    as_tensor *c = heads_of(fn, mask, "mask");
    if (!c) return NULL;
    int nd = c->ndim;
    int64_t nh = nd == 3 ? c->shape[0] : 1, Lr = c->shape[nd - 2], Lc = c->shape[nd - 1];
    int64_t shape[3] = {nh, (Lr + bs - 1) / bs, (Lc + bs - 1) / bs};
    as_tensor *r = as_empty(nd, shape + (3 - nd), AS_BOOL, AS_CPU);
    if (r) as_cpu_pattern_to_blocks(as_data(r), as_data(c), nh, Lr, Lc, bs);
    as_release(c);
    return r;
}

as_tensor *as_pattern_from_blocks(const as_tensor *layout, int64_t bs, int64_t Lr, int64_t Lc)
{
    const char *fn = "patterns.from_blocks";
    char s1[128];
    if (bs < 1 || bs > MAX_SIDE) {
        as_error_set("%s: block must be a positive integer, got %lld", fn, (long long)bs);
        return NULL;
    }
    if (check_side(fn, "rows", Lr) || check_side(fn, "cols", Lc)) return NULL;
    as_tensor *c = heads_of(fn, layout, "layout");
    if (!c) return NULL;
    int nd = c->ndim;
    int64_t nh = nd == 3 ? c->shape[0] : 1;
    if (c->shape[nd - 2] != (Lr + bs - 1) / bs || c->shape[nd - 1] != (Lc + bs - 1) / bs) {
        as_error_set("%s: a layout of shape %s does not cover (%lld, %lld) in blocks of %lld", fn,
                     as_shape_str(s1, sizeof s1, nd, c->shape), (long long)Lr, (long long)Lc,
                     (long long)bs);
        as_release(c);
        return NULL;
    }
    int64_t shape[3] = {nh, Lr, Lc};
    as_tensor *r = as_empty(nd, shape + (3 - nd), AS_BOOL, AS_CPU);
    if (r) as_cpu_pattern_from_blocks(as_data(r), as_data(c), nh, Lr, Lc, bs);
    as_release(c);
    return r;
}
