/* Post-accumulate-grad hooks through the C API (autograd.h): on a chain of
 * random length using each weight once and the first one again at the end,
 * every leaf's hook runs once per backward, in reverse order of first use
 * (the reused one last), with its .grad final; a leaf no gradient reached
 * gets no call; a failing hook fails the backward with its message; ud is
 * freed once on removal or with the tensor; bad registrations are errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_test.h"
#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "attnswap/ops.h"

enum { MAXN = 9 };

typedef struct {
    int order[4 * MAXN], n; /* which leaves fired, in order */
    double grad_sum[MAXN];  /* each leaf's .grad summed when its hook ran */
} hook_log;

typedef struct {
    hook_log *log;
    int id, *freed;
    bool fail;
} hook_ud;

static double sum_of(const as_tensor *t)
{
    as_tensor *s = as_reduce(AS_SUM, t, AS_ALL_DIMS, false, 0);
    double v = s ? as_get_flat(s, 0) : NAN;
    as_release(s);
    return v;
}

static int on_grad(as_tensor *leaf, void *p)
{
    hook_ud *u = p;
    if (u->fail) {
        as_error_set("hook %d refuses", u->id);
        return -1;
    }
    u->log->order[u->log->n++] = u->id;
    u->log->grad_sum[u->id] = sum_of(as_grad(leaf));
    return 0;
}

static void ud_free(void *p)
{
    hook_ud *u = p;
    (*u->freed)++;
    free(u);
}

static int add_hook(as_tensor *t, hook_log *log, int id, int *freed, bool fail)
{
    hook_ud *u = malloc(sizeof *u);
    *u = (hook_ud){.log = log, .id = id, .freed = freed, .fail = fail};
    int h = as_register_post_accumulate_grad_hook(t, on_grad, u, ud_free);
    if (h < 0) free(u);
    return h;
}

static void test_order(void)
{
    for (int trial = 0; trial < 4; trial++) {
        int n = (int)as_test_randint(2, MAXN), freed = 0;
        hook_log log = {0};
        as_tensor *w[MAXN], *unused = as_test_random(2, (int64_t[]){3, 3});
        for (int i = 0; i < n; i++) {
            w[i] = as_test_random(2, (int64_t[]){3, 3});
            CHECK(as_requires_grad_(w[i], true) == 0);
            CHECK(add_hook(w[i], &log, i, &freed, false) >= 1);
        }
        CHECK(as_requires_grad_(unused, true) == 0);
        CHECK(add_hook(unused, &log, MAXN - 1, &freed, false) >= 1);
        for (int round = 0; round < 2; round++) {
            log.n = 0;
            as_tensor *h = as_test_random(2, (int64_t[]){2, 3});
            for (int i = 0; i < n; i++) {
                as_tensor *m = as_matmul(h, w[i]), *t = m ? as_unary(AS_TANH, m) : NULL;
                as_release(h), as_release(m);
                h = t;
            }
            as_tensor *last = as_matmul(h, w[0]); /* w[0] again: it fires last, once */
            as_tensor *loss = last ? as_reduce(AS_SUM, last, AS_ALL_DIMS, false, 0) : NULL;
            CHECK_OK(loss);
            CHECK(as_backward(loss, NULL, false) == 0);
            CHECK(log.n == n); /* unused never fires */
            for (int k = 0; k < n && k < log.n; k++) CHECK(log.order[k] == (k == n - 1 ? 0 : n - 1 - k));
            for (int i = 0; i < n; i++) CHECK(log.grad_sum[i] == sum_of(as_grad(w[i]))); /* final */
            as_release(h), as_release(last), as_release(loss);
        }
        CHECK(freed == 0);
        for (int i = 0; i < n; i++) as_release(w[i]);
        as_release(unused);
        CHECK(freed == n + 1); /* each ud freed once, with its tensor */
    }
}

static void test_errors_and_removal(void)
{
    int freed = 0;
    hook_log log = {0};
    as_tensor *x = as_test_random(1, (int64_t[]){4}), *plain = as_test_random(1, (int64_t[]){4});
    CHECK(as_requires_grad_(x, true) == 0);
    int bad = add_hook(x, &log, 1, &freed, true);
    CHECK(bad >= 1);
    as_tensor *y = as_binary(AS_MUL, x, x), *loss = y ? as_reduce(AS_SUM, y, AS_ALL_DIMS, false, 0) : NULL;
    CHECK_OK(loss);
    CHECK(as_backward(loss, NULL, true) == -1);
    CHECK(strstr(as_error_get(), "hook 1 refuses") != NULL);
    CHECK(as_remove_grad_hook(x, bad) == 0 && freed == 1);
    CHECK(as_remove_grad_hook(x, bad) == -1 && strstr(as_error_get(), "no hook") != NULL);
    int good = add_hook(x, &log, 2, &freed, false);
    CHECK(good > bad); /* handles are not reused */
    CHECK(as_backward(loss, NULL, false) == 0);
    CHECK(log.n == 1 && log.order[0] == 2); /* x used twice by one node: once */
    CHECK(add_hook(plain, &log, 3, &freed, false) == -1 &&
          strstr(as_error_get(), "does not require grad") != NULL);
    CHECK(add_hook(y, &log, 3, &freed, false) == -1 && strstr(as_error_get(), "not a leaf") != NULL);
    CHECK(as_register_post_accumulate_grad_hook(x, NULL, NULL, NULL) == -1);
    as_release(y), as_release(loss), as_release(plain), as_release(x);
    CHECK(freed == 2);
}

int main(void)
{
    as_init();
    test_order();
    test_errors_and_removal();
    return as_test_report("test_grad_hook");
}
