/* LayerNorm and RMSNorm over the last dimension; weight = 1, bias = 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/nn.h"

typedef struct {
    int64_t dim;
    double eps;
    bool affine;
} norm_config;

/* x (..., dim) -> 0, or -1 with "fn: expected input with last dimension ..." */
static int check_input(const char *fn, const as_module *m, const as_tensor *x)
{
    const norm_config *c = m->config;
    if (x->ndim >= 1 && x->shape[x->ndim - 1] == c->dim) return 0;
    char s[128];
    as_error_set("%s: expected input with last dimension %lld, got shape %s", fn, (long long)c->dim,
                 as_shape_str(s, sizeof s, x->ndim, x->shape));
    return -1;
}

static as_tensor *layer_norm_forward(as_module *m, const as_args *args)
{
    if (as_check_args("LayerNorm", args, 1, 1) || check_input("LayerNorm", m, args->v[0])) return NULL;
    const norm_config *c = m->config;
    return as_layer_norm(args->v[0], as_module_param(m, "weight"), as_module_param(m, "bias"), c->eps);
}

static as_tensor *rms_norm_forward(as_module *m, const as_args *args)
{
    if (as_check_args("RMSNorm", args, 1, 1) || check_input("RMSNorm", m, args->v[0])) return NULL;
    const norm_config *c = m->config;
    return as_rms_norm(args->v[0], as_module_param(m, "weight"), c->eps);
}

/* As torch: "(8,), eps=1e-05, elementwise_affine=true" */
static void norm_repr(const as_module *m, char *buf, size_t size)
{
    const norm_config *c = m->config;
    snprintf(buf, size, "(%lld,), eps=%g, elementwise_affine=%s", (long long)c->dim, c->eps,
             c->affine ? "true" : "false");
}

static const as_module_class layer_norm_class = {
    .name = "LayerNorm", .forward = layer_norm_forward, .free_config = free, .extra_repr = norm_repr,
    .config_size = sizeof(norm_config)};
static const as_module_class rms_norm_class = {
    .name = "RMSNorm", .forward = rms_norm_forward, .free_config = free, .extra_repr = norm_repr,
    .config_size = sizeof(norm_config)};

static int add_filled_param(as_module *m, const char *name, int64_t dim, double value)
{
    as_tensor *t = as_full(1, &dim, value, AS_F32, AS_CPU);
    if (!t) return -1;
    int r = as_module_set_param(m, name, t);
    as_release(t);
    return r;
}

static as_module *norm_new(const as_module_class *cls, int64_t dim, double eps, bool affine, bool bias)
{
    if (dim <= 0) {
        as_error_set("%s: dim must be positive, got %lld", cls->name, (long long)dim);
        return NULL;
    }
    if (!(eps >= 0) || isinf(eps)) {
        as_error_set("%s: eps must be a non-negative number, got %g", cls->name, eps);
        return NULL;
    }
    norm_config *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = (norm_config){dim, eps, affine};
    as_module *m = as_module_new(cls, NULL, c);
    if (!m) {
        free(c);
        return NULL;
    }
    if (affine && (add_filled_param(m, "weight", dim, 1.0) || (bias && add_filled_param(m, "bias", dim, 0.0)))) {
        as_module_release(m);
        return NULL;
    }
    return m;
}

as_module *as_layer_norm_new(int64_t dim, double eps, bool affine)
{
    return norm_new(&layer_norm_class, dim, eps, affine, true);
}

as_module *as_rms_norm_new(int64_t dim, double eps, bool affine)
{
    return norm_new(&rms_norm_class, dim, eps, affine, false);
}
