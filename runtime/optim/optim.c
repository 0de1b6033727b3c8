/* The fused optimizer steps' front-end (include/attnswap/optim.h): checks
 * every operand before anything is written, then one kernel call through the
 * parameter's device table.  A non-contiguous gradient is copied (autograd's
 * gradients are contiguous, so this is the rare case); nothing else is
 * allocated, so a training step allocates nothing here per parameter. */
#include "attnswap/optim.h"

#include <math.h>
#include <stdlib.h>

#include "attnswap/autograd.h"
#include "attnswap/dtype.h"
#include "attnswap/error.h"
#include "backend.h"

static bool is_float(as_dtype dt) { return dt == AS_F32 || dt == AS_F16 || dt == AS_BF16; }

static int check_param(const char *fn, const as_tensor *p, const as_tensor *g)
{
    char b1[96], b2[96];
    if (!p || !g) {
        as_error_set("%s: expected a parameter and its gradient, got NULL", fn);
        return -1;
    }
    if (!is_float(p->dtype)) {
        as_error_set("%s: the parameter is %s; expected float32, float16 or bfloat16", fn, as_dtype_name(p->dtype));
        return -1;
    }
    if (!as_is_contiguous(p)) {
        as_error_set("%s: the parameter %s is not contiguous (strides %s); the fused update needs a contiguous "
                     "parameter: optimize a contiguous tensor (t:contiguous()) instead",
                     fn, as_shape_str(b1, sizeof b1, p->ndim, p->shape), as_shape_str(b2, sizeof b2, p->ndim, p->stride));
        return -1;
    }
    if (!as_same_shape(p, g)) {
        as_error_set("%s: the gradient has shape %s, the parameter %s", fn,
                     as_shape_str(b1, sizeof b1, g->ndim, g->shape), as_shape_str(b2, sizeof b2, p->ndim, p->shape));
        return -1;
    }
    if (!is_float(g->dtype)) {
        as_error_set("%s: the gradient is %s; expected a float dtype", fn, as_dtype_name(g->dtype));
        return -1;
    }
    if (!as_device_equal(as_tensor_device(p), as_tensor_device(g))) {
        as_error_set("%s: the parameter is on %s, its gradient on %s", fn, as_device_name(as_tensor_device(p)),
                     as_device_name(as_tensor_device(g)));
        return -1;
    }
    return 0;
}

/* A state buffer: float32, contiguous, as many elements as p, on p's device. */
static int check_state(const char *fn, const char *what, const as_tensor *s, const as_tensor *p)
{
    if (!s) {
        as_error_set("%s: the %s buffer is missing", fn, what);
        return -1;
    }
    if (s->dtype != AS_F32 || !as_is_contiguous(s) || as_numel(s) != as_numel(p) ||
        !as_device_equal(as_tensor_device(s), as_tensor_device(p))) {
        char b1[96];
        as_error_set("%s: the %s buffer must be a contiguous float32 tensor of %lld elements on %s; got %s %s%s on %s",
                     fn, what, (long long)as_numel(p), as_device_name(as_tensor_device(p)), as_dtype_name(s->dtype),
                     as_shape_str(b1, sizeof b1, s->ndim, s->shape), as_is_contiguous(s) ? "" : " (not contiguous)",
                     as_device_name(as_tensor_device(s)));
        return -1;
    }
    if (s->storage == p->storage) {
        as_error_set("%s: the %s buffer shares the parameter's storage", fn, what);
        return -1;
    }
    return 0;
}

static int check_master(const char *fn, const as_tensor *master, const as_tensor *p)
{
    if (!master) return 0;
    if (p->dtype == AS_F32) {
        as_error_set("%s: a float32 parameter takes no master copy", fn);
        return -1;
    }
    return check_state(fn, "master", master, p);
}

static bool finite_nonneg(double x) { return isfinite(x) && x >= 0; }

/* g itself when contiguous, else a contiguous copy; NULL with the error set. */
static as_tensor *contiguous_grad(const char *fn, const as_tensor *g)
{
    as_tensor *c = as_contiguous(g);
    if (!c) as_error_set("%s: cannot make the gradient contiguous: %s", fn, as_error_get());
    return c;
}

static void bump(as_tensor *t)
{
    if (t) as_bump_version(t);
}

int as_sgd_step(as_tensor *param, const as_tensor *grad, as_tensor *momentum_buffer, as_tensor *master,
                const as_sgd_params *h, bool first)
{
    const char *fn = "sgd_step";
    if (!h) {
        as_error_set("%s: expected the options, got NULL", fn);
        return -1;
    }
    if (check_param(fn, param, grad)) return -1;
    if (!finite_nonneg(h->lr) || !finite_nonneg(h->momentum) || !isfinite(h->dampening) ||
        !finite_nonneg(h->weight_decay)) {
        as_error_set("%s: lr, momentum and weight_decay must be finite numbers >= 0 and dampening finite "
                     "(got lr %g, momentum %g, dampening %g, weight_decay %g)",
                     fn, h->lr, h->momentum, h->dampening, h->weight_decay);
        return -1;
    }
    if (h->momentum != 0 && check_state(fn, "momentum", momentum_buffer, param)) return -1;
    if (check_master(fn, master, param)) return -1;
    const as_backend *b = as_backend_for(fn, as_tensor_device(param));
    if (!b) return -1;
    if (!b->sgd_step) {
        as_error_set("%s: no fused SGD step on %s", fn, as_device_name(as_tensor_device(param)));
        return -1;
    }
    as_tensor *g = contiguous_grad(fn, grad);
    if (!g) return -1;
    float *buf = h->momentum != 0 ? as_data(momentum_buffer) : NULL;
    int rc = b->check(fn, b->sgd_step(h, as_numel(param), as_data(param), param->dtype, as_data(g), g->dtype, buf,
                                      master ? as_data(master) : NULL, first));
    as_release(g);
    bump(param), bump(master);
    if (h->momentum != 0) bump(momentum_buffer);
    return rc;
}

int as_adamw_step(as_tensor *param, const as_tensor *grad, as_tensor *exp_avg, as_tensor *exp_avg_sq,
                  as_tensor *max_exp_avg_sq, as_tensor *master, const as_adamw_params *h)
{
    const char *fn = "adamw_step";
    if (!h) {
        as_error_set("%s: expected the options, got NULL", fn);
        return -1;
    }
    if (check_param(fn, param, grad)) return -1;
    if (h->step < 1) {
        as_error_set("%s: step must be >= 1 (the count after this step), got %lld", fn, (long long)h->step);
        return -1;
    }
    if (!finite_nonneg(h->lr) || !finite_nonneg(h->eps) || !finite_nonneg(h->weight_decay) ||
        !(h->beta1 >= 0 && h->beta1 < 1) || !(h->beta2 >= 0 && h->beta2 < 1)) {
        as_error_set("%s: expected lr, eps, weight_decay finite and >= 0 and betas in [0, 1) "
                     "(got lr %g, betas (%g, %g), eps %g, weight_decay %g)",
                     fn, h->lr, h->beta1, h->beta2, h->eps, h->weight_decay);
        return -1;
    }
    if (check_state(fn, "exp_avg", exp_avg, param) || check_state(fn, "exp_avg_sq", exp_avg_sq, param)) return -1;
    if (h->amsgrad && check_state(fn, "max_exp_avg_sq", max_exp_avg_sq, param)) return -1;
    if (exp_avg->storage == exp_avg_sq->storage) {
        as_error_set("%s: exp_avg and exp_avg_sq share a storage", fn);
        return -1;
    }
    if (check_master(fn, master, param)) return -1;
    const as_backend *b = as_backend_for(fn, as_tensor_device(param));
    if (!b) return -1;
    if (!b->adamw_step) {
        as_error_set("%s: no fused AdamW step on %s", fn, as_device_name(as_tensor_device(param)));
        return -1;
    }
    as_tensor *g = contiguous_grad(fn, grad);
    if (!g) return -1;
    float *vmax = h->amsgrad ? as_data(max_exp_avg_sq) : NULL;
    int rc = b->check(fn, b->adamw_step(h, as_numel(param), as_data(param), param->dtype, as_data(g), g->dtype,
                                        as_data(exp_avg), as_data(exp_avg_sq), vmax, master ? as_data(master) : NULL));
    as_release(g);
    bump(param), bump(master), bump(exp_avg), bump(exp_avg_sq);
    if (h->amsgrad) bump(max_exp_avg_sq);
    return rc;
}

/* ---- multi-tensor sweeps (clip_grad_norm_) ---- */

/* ts as list items on one device; NULL with the error set */
static as_list_item *list_items(const char *fn, int n, const as_tensor *const *ts, as_device *dev)
{
    as_list_item *it = malloc(sizeof *it * (size_t)(n > 0 ? n : 1));
    if (!it) {
        as_error_set("%s: out of memory", fn);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const as_tensor *t = ts[i];
        if (!t) {
            as_error_set("%s: tensor %d is NULL", fn, i + 1);
            goto bad;
        }
        as_dtype dt = t->dtype;
        if (dt != AS_F32 && dt != AS_F16 && dt != AS_BF16 && dt != AS_F64) {
            as_error_set("%s: tensor %d is %s; expected a float dtype", fn, i + 1, as_dtype_name(dt));
            goto bad;
        }
        if (!as_is_contiguous(t)) {
            as_error_set("%s: tensor %d is not contiguous", fn, i + 1);
            goto bad;
        }
        if (i == 0) *dev = as_tensor_device(t);
        else if (!as_device_equal(*dev, as_tensor_device(t))) {
            as_error_set("%s: tensor %d is on %s, tensor 1 on %s", fn, i + 1, as_device_name(as_tensor_device(t)),
                         as_device_name(*dev));
            goto bad;
        }
        it[i] = (as_list_item){.data = as_data(t), .n = as_numel(t), .dtype = dt};
    }
    return it;
bad:
    free(it);
    return NULL;
}

as_tensor *as_sum_squares(int n, const as_tensor *const *ts)
{
    const char *fn = "sum_squares";
    if (n < 0) {
        as_error_set("%s: expected n >= 0, got %d", fn, n);
        return NULL;
    }
    as_device dev = AS_CPU;
    as_list_item *it = list_items(fn, n, ts, &dev);
    if (!it) return NULL;
    const as_backend *b = as_backend_for(fn, dev);
    as_tensor *out = b ? as_empty(0, NULL, AS_F32, dev) : NULL;
    if (out && (!b->sumsq_list || b->check(fn, b->sumsq_list(it, n, as_data(out))))) {
        if (!b->sumsq_list) as_error_set("%s: no multi-tensor sweep on %s", fn, as_device_name(dev));
        as_release(out);
        out = NULL;
    }
    free(it);
    return out;
}

int as_scale_all_(int n, as_tensor *const *ts, double s)
{
    const char *fn = "scale_all_";
    if (n < 0) {
        as_error_set("%s: expected n >= 0, got %d", fn, n);
        return -1;
    }
    if (n == 0) return 0;
    as_device dev = AS_CPU;
    as_list_item *it = list_items(fn, n, (const as_tensor *const *)ts, &dev);
    if (!it) return -1;
    const as_backend *b = as_backend_for(fn, dev);
    int rc = -1;
    if (b && !b->scale_list) as_error_set("%s: no multi-tensor sweep on %s", fn, as_device_name(dev));
    else if (b) rc = b->check(fn, b->scale_list(it, n, s));
    free(it);
    for (int i = 0; i < n && !rc; i++) bump(ts[i]);
    return rc;
}
