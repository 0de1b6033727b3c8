/* MultiheadAttention: projections around a swappable attention core.
 *   x (B, L, dim) -> q (B, L, H*hd), k, v (B, L, Hkv*hd)      qkv or q/k/v_proj
 *   -> (B, H, L, hd), (B, Hkv, L, hd)                          views
 *   -> core(q, k, v, mask) (B, H, L, hd)                        child "core"
 *   -> (B, L, H*hd) -> out_proj -> (B, L, dim)
 * The fused qkv output is laid out [q heads | k heads | v heads], as timm's
 * Attention.qkv.  Every child is looked up by name at each forward: a swap
 * replaces "core" (possibly by a Lua module) while the layer lives. */
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/nn.h"

#define FN "MultiheadAttention"

int as_mha_config_check(const char *fn, const as_mha_config *c)
{
    if (c->dim <= 0 || c->num_heads <= 0) {
        as_error_set("%s: dim and num_heads must be positive, got dim=%lld, num_heads=%lld", fn,
                     (long long)c->dim, (long long)c->num_heads);
        return -1;
    }
    int64_t kv = c->num_kv_heads ? c->num_kv_heads : c->num_heads;
    if (kv < 0 || c->num_heads % kv != 0) {
        as_error_set("%s: num_kv_heads (%lld) must divide num_heads (%lld)", fn, (long long)kv,
                     (long long)c->num_heads);
        return -1;
    }
    if (c->head_dim < 0) {
        as_error_set("%s: head_dim must be positive (or 0 for dim / num_heads), got %lld", fn,
                     (long long)c->head_dim);
        return -1;
    }
    if (c->head_dim == 0 && c->dim % c->num_heads != 0) {
        as_error_set("%s: dim (%lld) must be divisible by num_heads (%lld)", fn, (long long)c->dim,
                     (long long)c->num_heads);
        return -1;
    }
    return 0;
}

/* ---- forward ---- */

/* Calls m's child `name` (held across the call: a Lua forward may swap it). */
/* child name on (a [, b, c, d]) (+ resid where not NULL: as_module_forward_add) */
static as_tensor *call_child_add(as_module *m, const char *name, as_tensor *a, as_tensor *b, as_tensor *c,
                                 as_tensor *d, int n, const as_tensor *resid)
{
    as_module *ch = as_module_retain(as_module_child(m, name));
    if (!ch) {
        as_error_set(FN ": child '%s' is missing", name);
        return NULL;
    }
    as_args args = {.n = n, .v = {a, b, c, d}};
    as_tensor *y = as_module_forward_add(ch, &args, resid);
    as_module_release(ch);
    return y;
}

static as_tensor *call_child(as_module *m, const char *name, as_tensor *a, as_tensor *b, as_tensor *c,
                             as_tensor *d, int n)
{
    return call_child_add(m, name, a, b, c, d, n, NULL);
}

/* Checks that t is (B, L, n) as a projection must return. */
static int check_proj(const char *what, const as_tensor *t, int64_t B, int64_t L, int64_t n)
{
    if (t->ndim == 3 && t->shape[0] == B && t->shape[1] == L && t->shape[2] == n) return 0;
    char s1[128], s2[128];
    as_error_set(FN ": %s returned shape %s, expected %s", what, as_shape_str(s1, sizeof s1, t->ndim, t->shape),
                 as_shape_str(s2, sizeof s2, 3, (int64_t[]){B, L, n}));
    return -1;
}

/* (B, L, n*hd) -> (B, n, L, hd), a view when t's strides allow. */
static as_tensor *split_heads(const as_tensor *t, int64_t n, int64_t hd)
{
    as_tensor *r = as_reshape(t, 4, (int64_t[]){t->shape[0], t->shape[1], n, hd});
    as_tensor *p = r ? as_permute(r, (int[]){0, 2, 1, 3}) : NULL;
    as_release(r);
    return p;
}

/* Runs a projection child on x and checks its output (B, L, n). */
static as_tensor *project(as_module *m, const char *name, as_tensor *x, int64_t n)
{
    as_tensor *y = call_child(m, name, x, NULL, NULL, NULL, 1);
    if (y && check_proj(name, y, x->shape[0], x->shape[1], n)) as_release(y), y = NULL;
    return y;
}

/* the forward (+ resid where not NULL, added by out_proj: as_module_forward_add) */
static as_tensor *mha_run(as_module *m, const as_args *args, const as_tensor *resid)
{
    const as_mha_config *c = m->config;
    if (as_check_args(FN, args, 1, 2)) return NULL;
    as_tensor *x = args->v[0], *mask = args->n > 1 ? args->v[1] : NULL;
    if (x->ndim != 3 || x->shape[2] != c->dim) {
        char s[128];
        as_error_set(FN ": expected input (B, L, %lld), got shape %s", (long long)c->dim,
                     as_shape_str(s, sizeof s, x->ndim, x->shape));
        return NULL;
    }
    int64_t B = x->shape[0], L = x->shape[1], H = c->num_heads, Hkv = c->num_kv_heads, hd = c->head_dim;
    as_tensor *qkv = NULL, *p[3] = {NULL, NULL, NULL}, *h[3] = {NULL, NULL, NULL};
    as_tensor *o = NULL, *ot = NULL, *flat = NULL, *y = NULL;
    int64_t width[3] = {H * hd, Hkv * hd, Hkv * hd};

    if (c->fused_qkv) {
        if (!(qkv = project(m, "qkv", x, (H + 2 * Hkv) * hd))) goto done;
        int64_t start = 0;
        for (int i = 0; i < 3; start += width[i++])
            if (!(p[i] = as_narrow(qkv, 2, start, width[i]))) goto done;
    } else {
        static const char *names[3] = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++)
            if (!(p[i] = project(m, names[i], x, width[i]))) goto done;
    }
    for (int i = 0; i < 3; i++)
        if (!(h[i] = split_heads(p[i], i == 0 ? H : Hkv, hd))) goto done;

    if (!(o = call_child(m, "core", h[0], h[1], h[2], mask, mask ? 4 : 3))) goto done;
    if (o->ndim != 4 || o->shape[0] != B || o->shape[1] != H || o->shape[2] != L || o->shape[3] != hd) {
        char s1[128], s2[128];
        as_error_set(FN ": core returned shape %s, expected %s", as_shape_str(s1, sizeof s1, o->ndim, o->shape),
                     as_shape_str(s2, sizeof s2, 4, (int64_t[]){B, H, L, hd}));
        goto done;
    }
    ot = as_permute(o, (int[]){0, 2, 1, 3}); /* (B, L, H, hd) */
    flat = ot ? as_reshape(ot, 3, (int64_t[]){B, L, H * hd}) : NULL;
    if (flat) y = call_child_add(m, "out_proj", flat, NULL, NULL, NULL, 1, resid);
done:
    as_release(qkv), as_release(o), as_release(ot), as_release(flat);
    for (int i = 0; i < 3; i++) as_release(p[i]), as_release(h[i]);
    return y;
}

static as_tensor *mha_forward(as_module *m, const as_args *args) { return mha_run(m, args, NULL); }

static as_tensor *mha_forward_add(as_module *m, const as_args *args, const as_tensor *resid)
{
    return mha_run(m, args, resid);
}

static void mha_repr(const as_module *m, char *buf, size_t size)
{
    const as_mha_config *c = m->config;
    int n = snprintf(buf, size, "dim=%lld, num_heads=%lld, num_kv_heads=%lld", (long long)c->dim,
                     (long long)c->num_heads, (long long)c->num_kv_heads);
    if (c->head_dim * c->num_heads != c->dim && n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, ", head_dim=%lld", (long long)c->head_dim);
}

static int mha_config(const as_module *m, as_config_field *f, int max)
{
    const as_mha_config *c = m->config;
    const as_config_field all[] = {{"dim", (double)c->dim, false}, {"num_heads", (double)c->num_heads, false},
                                   {"num_kv_heads", (double)c->num_kv_heads, false},
                                   {"head_dim", (double)c->head_dim, false}};
    int n = 0;
    for (; n < 4 && n < max; n++) f[n] = all[n];
    return n;
}

static const as_module_class mha_class = {.name = FN, .forward = mha_forward, .free_config = free,
                                          .extra_repr = mha_repr, .config_fields = mha_config,
                                          .config_size = sizeof(as_mha_config), .forward_add = mha_forward_add};

/* ---- construction ---- */

static int add_linear(as_module *m, const char *name, int64_t in, int64_t out, bool bias)
{
    as_module *l = as_linear_new(in, out, bias);
    if (!l) return -1;
    int r = as_module_set_child(m, name, l);
    as_module_release(l);
    return r;
}

as_module *as_mha_new(const as_mha_config *cfg, as_module *core)
{
    if (as_mha_config_check(FN, cfg)) return NULL;
    if (!core) {
        as_error_set(FN ": core must be a module, got nil");
        return NULL;
    }
    as_mha_config *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = *cfg;
    if (!c->num_kv_heads) c->num_kv_heads = c->num_heads;
    if (!c->head_dim) c->head_dim = c->dim / c->num_heads;
    as_module *m = as_module_new(&mha_class, NULL, c);
    if (!m) {
        free(c);
        return NULL;
    }
    int64_t dim = c->dim, q = c->num_heads * c->head_dim, kv = c->num_kv_heads * c->head_dim;
    int r = c->fused_qkv ? add_linear(m, "qkv", dim, q + 2 * kv, c->qkv_bias)
                         : add_linear(m, "q_proj", dim, q, c->qkv_bias) ||
                               add_linear(m, "k_proj", dim, kv, c->qkv_bias) ||
                               add_linear(m, "v_proj", dim, kv, c->qkv_bias);
    if (r || as_module_set_child(m, "core", core) || add_linear(m, "out_proj", q, dim, c->out_bias)) {
        as_module_release(m);
        return NULL;
    }
    return m;
}
