/* Layers without parameters: Dropout and the elementwise activations, and
 * the argument check every C forward starts with. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/nn.h"

int as_check_args(const char *fn, const as_args *args, int min, int max)
{
    int n = args ? args->n : 0;
    while (n > max && !args->v[n - 1]) n--; /* trailing nils are absent arguments */
    if (n < min || n > max) {
        if (min == max)
            as_error_set("%s: expected %d argument%s, got %d", fn, min, min == 1 ? "" : "s", n);
        else
            as_error_set("%s: expected %d to %d arguments, got %d", fn, min, max, n);
        return -1;
    }
    for (int i = 0; i < min; i++) {
        if (!args->v[i]) {
            as_error_set("%s: argument #%d must be a Tensor, got nil", fn, i + 1);
            return -1;
        }
    }
    return 0;
}

/* ---- dropout ---- */

as_tensor *as_dropout(const as_tensor *x, double p, bool training)
{
    if (!(p >= 0 && p < 1)) {
        as_error_set("dropout: p must be in [0, 1), got %g", p);
        return NULL;
    }
    if (!training || p == 0) return as_retain((as_tensor *)x);
    as_device dev = as_tensor_device(x);
    as_tensor *keep = as_bernoulli_keep(x->ndim, x->shape, p, dev);
    as_tensor *zero = as_scalar(0.0, x->dtype, dev);
    as_tensor *scaled = as_binary_scalar(AS_MUL, x, 1.0 / (1.0 - p), false);
    as_tensor *y = keep && zero && scaled ? as_where(keep, scaled, zero) : NULL;
    as_release(keep), as_release(zero), as_release(scaled);
    return y;
}

static as_tensor *dropout_forward(as_module *m, const as_args *args)
{
    if (as_check_args("Dropout", args, 1, 1)) return NULL;
    return as_dropout(args->v[0], *(double *)m->config, m->training);
}

static void dropout_repr(const as_module *m, char *buf, size_t size)
{
    snprintf(buf, size, "p=%g", *(const double *)m->config);
}

static const as_module_class dropout_class = {
    .name = "Dropout", .forward = dropout_forward, .free_config = free, .extra_repr = dropout_repr,
    .config_size = sizeof(double)};

as_module *as_dropout_new(double p)
{
    if (!(p >= 0 && p < 1)) {
        as_error_set("Dropout: p must be in [0, 1), got %g", p);
        return NULL;
    }
    double *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = p;
    as_module *m = as_module_new(&dropout_class, NULL, c);
    if (!m) free(c);
    return m;
}

/* ---- activations: one class per torch type name ---- */

static as_tensor *activation_forward(as_module *m, const as_args *args)
{
    if (as_check_args(m->cls->name, args, 1, 1)) return NULL;
    return as_unary(*(as_unop *)m->config, args->v[0]);
}

/* As torch: GELU() for the erf form, GELU(approximate='tanh') for the other. */
static void activation_repr(const as_module *m, char *buf, size_t size)
{
    snprintf(buf, size, "%s", *(const as_unop *)m->config == AS_GELU_TANH ? "approximate='tanh'" : "");
}

#define ACTIVATION_CLASS(var, nm)                                                                  \
    static const as_module_class var = {                                                           \
        .name = nm, .forward = activation_forward, .free_config = free, .extra_repr = activation_repr,   \
        .config_size = sizeof(as_unop)}
ACTIVATION_CLASS(gelu_class, "GELU");
ACTIVATION_CLASS(silu_class, "SiLU");
ACTIVATION_CLASS(relu_class, "ReLU");
ACTIVATION_CLASS(tanh_class, "Tanh");
ACTIVATION_CLASS(sigmoid_class, "Sigmoid");

as_module *as_activation_new(as_unop op)
{
    const as_module_class *cls;
    switch (op) {
    case AS_GELU:
    case AS_GELU_TANH: cls = &gelu_class; break;
    case AS_SILU: cls = &silu_class; break;
    case AS_RELU: cls = &relu_class; break;
    case AS_TANH: cls = &tanh_class; break;
    case AS_SIGMOID: cls = &sigmoid_class; break;
    default:
        as_error_set("activation: '%s' is not an activation (expected gelu, gelu_tanh, silu, relu, "
                     "tanh or sigmoid)",
                     (unsigned)op < AS_NUNOPS ? as_unop_name(op) : "?");
        return NULL;
    }
    as_unop *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = op;
    as_module *m = as_module_new(cls, NULL, c);
    if (!m) free(c);
    return m;
}
