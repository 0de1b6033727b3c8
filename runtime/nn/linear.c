/* Linear: y = x W^T + b, W (out, in), b (out), initialised as torch's
 * reset_parameters: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),
 * and the bias from the same bound. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/nn.h"

typedef struct {
    int64_t in_features, out_features;
    bool bias;
} linear_config;

/* y = x W^T + b (+ resid, when not NULL: as_linear_add) */
static as_tensor *linear_run(as_module *m, const as_args *args, const as_tensor *resid)
{
    if (as_check_args("Linear", args, 1, 1)) return NULL;
    const as_tensor *x = args->v[0];
    as_tensor *w = as_module_param(m, "weight"), *b = as_module_param(m, "bias");
    if (!w || w->ndim != 2) {
        as_error_set("Linear: weight is missing or not 2-d");
        return NULL;
    }
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
        char s[128];
        as_error_set("Linear: expected input with last dimension %lld, got shape %s",
                     (long long)w->shape[1], as_shape_str(s, sizeof s, x->ndim, x->shape));
        return NULL;
    }
    return resid ? as_linear_add(x, w, b, resid) : as_linear(x, w, b);
}

static as_tensor *linear_forward(as_module *m, const as_args *args) { return linear_run(m, args, NULL); }

static as_tensor *linear_forward_add(as_module *m, const as_args *args, const as_tensor *resid)
{
    return linear_run(m, args, resid);
}

static void linear_repr(const as_module *m, char *buf, size_t size)
{
    const linear_config *c = m->config;
    snprintf(buf, size, "in_features=%lld, out_features=%lld, bias=%s", (long long)c->in_features,
             (long long)c->out_features, c->bias ? "true" : "false");
}

static const as_module_class linear_class = {
    .name = "Linear", .forward = linear_forward, .free_config = free, .extra_repr = linear_repr,
    .config_size = sizeof(linear_config), .forward_add = linear_forward_add};

/* A new uniform(-bound, bound) float32 tensor registered on m as name. */
static int add_uniform_param(as_module *m, const char *name, int ndim, const int64_t *shape,
                             double bound)
{
    as_tensor *t = as_empty(ndim, shape, AS_F32, AS_CPU);
    if (!t) return -1;
    int r = as_uniform_(t, -bound, bound);
    if (r == 0) r = as_module_set_param(m, name, t);
    as_release(t);
    return r;
}

as_module *as_linear_new(int64_t in_features, int64_t out_features, bool bias)
{
    if (in_features < 0 || out_features < 0) {
        as_error_set("Linear: sizes must be non-negative, got in_features=%lld, out_features=%lld",
                     (long long)in_features, (long long)out_features);
        return NULL;
    }
    linear_config *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = (linear_config){in_features, out_features, bias};
    as_module *m = as_module_new(&linear_class, NULL, c);
    if (!m) {
        free(c);
        return NULL;
    }
    /* torch: bound = 1/sqrt(fan_in), and 0 when fan_in is 0 */
    double bound = in_features > 0 ? 1.0 / sqrt((double)in_features) : 0.0;
    if (add_uniform_param(m, "weight", 2, (int64_t[]){out_features, in_features}, bound) ||
        (bias && add_uniform_param(m, "bias", 1, (int64_t[]){out_features}, bound))) {
        as_module_release(m);
        return NULL;
    }
    return m;
}
