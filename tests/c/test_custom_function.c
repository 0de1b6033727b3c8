/* The C API for custom functions (autograd.h): a differentiable op written
 * outside the runtime, recorded with as_grad_begin/as_grad_end, its state
 * hung on the node with as_node_set_host and released with it; its gradient
 * against central differences, its errors, and no leak (the sanitizers). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_test.h"
#include "attnswap/autograd.h"
#include "attnswap/ops.h"

/* y = scale * x^3, with scale kept in the node's host state */
typedef struct {
    double scale;
    int *freed; /* counts releases, to check the callback runs once */
} cube_state;

static void cube_free(void *p)
{
    cube_state *s = p;
    (*s->freed)++;
    free(s);
}

static int cube_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const cube_state *s = as_node_host(n);
    const as_tensor *x = as_node_saved(n, 0);
    if (!x) return -1;
    as_tensor *x2 = as_binary(AS_MUL, x, x);
    as_tensor *d = x2 ? as_binary_scalar(AS_MUL, x2, 3 * s->scale, false) : NULL;
    gi[0] = d ? as_binary(AS_MUL, g, d) : NULL;
    as_release(x2), as_release(d);
    return gi[0] ? 0 : -1;
}

static as_tensor *cube(const as_tensor *x, double scale, int *freed)
{
    as_grad_scope sc = as_grad_begin(1, &x);
    as_tensor *x2 = as_binary(AS_MUL, x, x); /* not recorded: inside the op */
    as_tensor *x3 = x2 ? as_binary(AS_MUL, x2, x) : NULL;
    as_tensor *out = x3 ? as_binary_scalar(AS_MUL, x3, scale, false) : NULL;
    as_release(x2), as_release(x3);
    as_node *n = as_grad_end(sc, "cube", cube_backward, &out, 1, &x);
    if (n) {
        cube_state *s = malloc(sizeof *s);
        *s = (cube_state){scale, freed};
        as_node_set_host(n, s, cube_free);
        as_node_save(n, 0, x);
    }
    return out;
}

static double sum_of(const as_tensor *t)
{
    as_tensor *s = as_reduce(AS_SUM, t, AS_ALL_DIMS, false, 0);
    double v = as_get_flat(s, 0);
    as_release(s);
    return v;
}

static void test_gradient(void)
{
    int freed = 0;
    int64_t shape[2] = {3, 5};
    as_tensor *x = as_test_random(2, shape);
    CHECK(as_requires_grad_(x, true) == 0);
    as_tensor *y = cube(x, 0.5, &freed);
    CHECK_OK(y);
    CHECK(strcmp(as_grad_fn_name(y), "cube") == 0);
    as_tensor *loss = as_reduce(AS_SUM, y, AS_ALL_DIMS, false, 0);
    CHECK(as_backward(loss, NULL, false) == 0);
    CHECK(freed == 0); /* the host state lives as long as the node (y holds it) */
    const as_tensor *g = as_grad(x);
    CHECK_OK(g);
    /* central differences of sum(0.5 x^3) */
    as_set_grad_enabled(false);
    double worst = 0;
    for (int64_t i = 0; i < as_numel(x); i++) {
        float *p = as_data(x);
        float v = p[i];
        p[i] = v + 1e-2f;
        as_tensor *up = cube(x, 0.5, &freed);
        p[i] = v - 1e-2f;
        as_tensor *down = cube(x, 0.5, &freed);
        p[i] = v;
        double num = (sum_of(up) - sum_of(down)) / 2e-2;
        worst = fmax(worst, fabs(num - as_get_flat(g, i)));
        as_release(up), as_release(down);
    }
    as_set_grad_enabled(true);
    CHECK(worst < 1e-2);
    CHECK(freed == 0); /* nothing recorded under no_grad */
    /* a second backward through the freed graph says so */
    CHECK(as_backward(loss, NULL, false) == -1);
    CHECK(strstr(as_error_get(), "backward through the graph a second time") != NULL);
    as_release(loss), as_release(y), as_release(x);
    CHECK(freed == 1); /* released once, with the graph */
}

static void test_lifetime_and_errors(void)
{
    int freed = 0;
    int64_t shape[1] = {4};
    as_tensor *x = as_test_random(1, shape);
    as_requires_grad_(x, true);
    as_tensor *y = cube(x, 2, &freed);
    as_release(y); /* the graph dies unused: the state with it */
    CHECK(freed == 1);
    /* an in-place write to the saved input is caught */
    as_tensor *x1 = as_binary_scalar(AS_MUL, x, 1, false);
    y = cube(x1, 1, &freed);
    as_tensor *loss = as_reduce(AS_SUM, y, AS_ALL_DIMS, false, 0);
    as_fill_(x1, 3);
    CHECK(as_backward(loss, NULL, false) == -1);
    CHECK(strstr(as_error_get(), "modified by an in-place operation") != NULL);
    as_release(loss), as_release(y), as_release(x1);
    CHECK(freed == 2);
    /* no input requires grad: nothing recorded, no state made */
    as_tensor *c = as_test_random(1, shape);
    y = cube(c, 1, &freed);
    CHECK(as_grad_fn_name(y) == NULL && !as_requires_grad(y));
    as_release(y), as_release(c), as_release(x);
    /* too many inputs for one node */
    const as_tensor *many[AS_NODE_MAX_INPUTS + 1];
    for (int i = 0; i <= AS_NODE_MAX_INPUTS; i++) many[i] = NULL;
    as_tensor *o = as_test_random(1, shape);
    CHECK(as_autograd_record("wide", cube_backward, o, AS_NODE_MAX_INPUTS + 1, many) == NULL);
    CHECK(strstr(as_error_get(), "wide: a recorded op takes at most") != NULL);
    as_release(o);
}

int main(void)
{
    as_init();
    test_gradient();
    test_lifetime_and_errors();
    return as_test_report("test_custom_function");
}
