/* TransformerBlock and its Mlp, named as timm's ViT Block:
 *   pre-norm:  h = x + drop(attn(norm1(x), mask));  y = h + mlp(norm2(h))
 *   post-norm: h = norm1(x + drop(attn(x, mask)));  y = norm2(h + mlp(h))
 *   mlp:       fc2(drop(act(fc1(x)))) then drop
 * "drop" children exist only when dropout > 0.  A zero field of the config
 * takes the default: mlp_ratio 4, norm_eps 1e-5, activation GELU (AS_NEG,
 * the zero of as_unop, is no activation). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/nn.h"

#define FN "TransformerBlock"

/* Calls m's child `name` on (x [, mask]), + resid where not NULL (as_module_forward_add);
 * a missing optional child is the identity. */
static as_tensor *call_child_add(const char *fn, as_module *m, const char *name, as_tensor *x, as_tensor *mask,
                                 bool optional, const as_tensor *resid)
{
    as_module *ch = as_module_retain(as_module_child(m, name));
    if (!ch) {
        if (optional) return resid ? as_binary(AS_ADD, x, resid) : as_retain(x);
        as_error_set("%s: child '%s' is missing", fn, name);
        return NULL;
    }
    as_args args = {.n = mask ? 2 : 1, .v = {x, mask}};
    as_tensor *y = as_module_forward_add(ch, &args, resid);
    as_module_release(ch);
    return y;
}

static as_tensor *call_child(const char *fn, as_module *m, const char *name, as_tensor *x, as_tensor *mask,
                             bool optional)
{
    return call_child_add(fn, m, name, x, mask, optional, NULL);
}

/* ---- Mlp ---- */

/* The forward, + resid where not NULL: added by fc2 (as_module_forward_add) when no
 * dropout follows it, else after the dropout. */
static as_tensor *mlp_run(as_module *m, const as_args *args, const as_tensor *resid)
{
    if (as_check_args("Mlp", args, 1, 1)) return NULL;
    static const char *steps[] = {"fc1", "act", "drop", "fc2", "drop"};
    const bool fuse = resid && !as_module_child(m, "drop");
    as_tensor *x = as_retain(args->v[0]);
    for (int i = 0; x && i < 5; i++) {
        as_tensor *y = call_child_add("Mlp", m, steps[i], x, NULL, i == 2 || i == 4, fuse && i == 3 ? resid : NULL);
        as_release(x);
        x = y;
    }
    if (x && resid && !fuse) {
        as_tensor *r = as_binary(AS_ADD, x, resid);
        as_release(x);
        x = r;
    }
    return x;
}

static as_tensor *mlp_forward(as_module *m, const as_args *args) { return mlp_run(m, args, NULL); }

static as_tensor *mlp_forward_add(as_module *m, const as_args *args, const as_tensor *resid)
{
    return mlp_run(m, args, resid);
}

static const as_module_class mlp_class = {
    .name = "Mlp", .forward = mlp_forward, .free_config = free, .forward_add = mlp_forward_add};

static int add_child(as_module *m, const char *name, as_module *c)
{
    int r = c ? as_module_set_child(m, name, c) : -1;
    as_module_release(c);
    return r;
}

as_module *as_mlp_new(int64_t in_features, int64_t hidden, as_unop activation, double dropout)
{
    if (!(dropout >= 0 && dropout < 1)) {
        as_error_set("Mlp: dropout must be in [0, 1), got %g", dropout);
        return NULL;
    }
    as_module *m = as_module_new(&mlp_class, NULL, NULL);
    if (!m) return NULL;
    if (add_child(m, "fc1", as_linear_new(in_features, hidden, true)) ||
        add_child(m, "act", as_activation_new(activation)) ||
        add_child(m, "fc2", as_linear_new(hidden, in_features, true)) ||
        (dropout > 0 && add_child(m, "drop", as_dropout_new(dropout)))) {
        as_module_release(m);
        return NULL;
    }
    return m;
}

/* ---- TransformerBlock ---- */

/* resid + child(x [, mask]), with the block's dropout between where drop: a residual
 * connection, the add inside the child's last product where it can
 * (as_module_forward_add) unless that dropout sits between */
static as_tensor *residual(as_module *m, const char *name, as_tensor *x, as_tensor *mask, const as_tensor *resid,
                           bool drop)
{
    if (!drop || !as_module_child(m, "drop")) return call_child_add(FN, m, name, x, mask, false, resid);
    as_tensor *t = call_child(FN, m, name, x, mask, false), *d = t ? call_child(FN, m, "drop", t, NULL, true) : NULL;
    as_tensor *y = d ? as_binary(AS_ADD, resid, d) : NULL;
    as_release(t), as_release(d);
    return y;
}

static as_tensor *block_forward(as_module *m, const as_args *args)
{
    const as_block_config *c = m->config;
    if (as_check_args(FN, args, 1, 2)) return NULL;
    as_tensor *x = args->v[0], *mask = args->n > 1 ? args->v[1] : NULL;
    if (x->ndim != 3 || x->shape[2] != c->attn.dim) {
        char s[128];
        as_error_set(FN ": expected input (B, L, %lld), got shape %s", (long long)c->attn.dim,
                     as_shape_str(s, sizeof s, x->ndim, x->shape));
        return NULL;
    }
    as_tensor *h, *t;
    if (c->pre_norm) {
        t = call_child(FN, m, "norm1", x, NULL, false);
        h = t ? residual(m, "attn", t, mask, x, true) : NULL; /* x + drop(attn(norm1(x))) */
        as_release(t);
        t = h ? call_child(FN, m, "norm2", h, NULL, false) : NULL;
        as_tensor *y = t ? residual(m, "mlp", t, NULL, h, false) : NULL; /* h + mlp(norm2(h)) */
        as_release(t), as_release(h);
        return y;
    }
    t = residual(m, "attn", x, mask, x, true);
    h = t ? call_child(FN, m, "norm1", t, NULL, false) : NULL; /* norm1(x + drop(attn(x))) */
    as_release(t);
    t = h ? residual(m, "mlp", h, NULL, h, false) : NULL;
    as_release(h);
    h = t ? call_child(FN, m, "norm2", t, NULL, false) : NULL;
    as_release(t);
    return h;
}

static void block_repr(const as_module *m, char *buf, size_t size)
{
    const as_block_config *c = m->config;
    snprintf(buf, size, "dim=%lld, mlp_ratio=%g, norm='%s'", (long long)c->attn.dim, c->mlp_ratio,
             c->pre_norm ? "pre" : "post");
}

static const as_module_class block_class = {
    .name = FN, .forward = block_forward, .free_config = free, .extra_repr = block_repr,
    .config_size = sizeof(as_block_config)};

as_module *as_transformer_block_new(const as_block_config *cfg, as_module *core)
{
    if (as_mha_config_check(FN, &cfg->attn)) return NULL;
    as_block_config *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = *cfg;
    if (c->mlp_ratio == 0) c->mlp_ratio = 4.0;
    if (c->norm_eps == 0) c->norm_eps = 1e-5;
    if (c->activation == AS_NEG) c->activation = AS_GELU;
    int64_t dim = c->attn.dim, hidden = (int64_t)floor((double)dim * c->mlp_ratio);
    const char *bad = !(c->mlp_ratio > 0) || hidden <= 0 ? "mlp_ratio must give a positive hidden size"
                      : !(c->norm_eps > 0) || isinf(c->norm_eps) ? "norm_eps must be positive"
                      : !(c->dropout >= 0 && c->dropout < 1)     ? "dropout must be in [0, 1)"
                                                                 : NULL;
    if (bad) {
        as_error_set(FN ": %s, got mlp_ratio=%g, norm_eps=%g, dropout=%g", bad, c->mlp_ratio, c->norm_eps,
                     c->dropout);
        free(c);
        return NULL;
    }
    as_module *m = as_module_new(&block_class, NULL, c);
    if (!m) {
        free(c);
        return NULL;
    }
    if (add_child(m, "norm1", as_layer_norm_new(dim, c->norm_eps, true)) ||
        add_child(m, "attn", as_mha_new(&c->attn, core)) ||
        (c->dropout > 0 && add_child(m, "drop", as_dropout_new(c->dropout))) ||
        add_child(m, "norm2", as_layer_norm_new(dim, c->norm_eps, true)) ||
        add_child(m, "mlp", as_mlp_new(dim, hidden, c->activation, c->dropout))) {
        as_module_release(m);
        return NULL;
    }
    return m;
}
