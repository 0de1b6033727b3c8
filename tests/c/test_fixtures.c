/* The runtime's ops against PyTorch's outputs, stored by
 * tests/fixtures/make_fixtures.py (float64 reference rounded to float32). */
#include <string.h>

#include "as_test.h"
#include "attnswap/ops.h"
#include "attnswap/io.h"

/* The fixtures folder: AS_FIXTURES_DIR when the build defines it, else
 * ATTNSWAP_FIXTURES from the environment, else found from this file's path
 * (CMake compiles it by its absolute path: .../tests/c/test_fixtures.c). */
static const char *fixture(const char *name)
{
    static char buf[1024];
    const char *env = getenv("ATTNSWAP_FIXTURES");
#ifdef AS_FIXTURES_DIR
    const char *dir = AS_FIXTURES_DIR;
#else
    const char *dir = NULL;
#endif
    if (env && *env) dir = env;
    if (dir) {
        snprintf(buf, sizeof buf, "%s/%s", dir, name);
    } else {
        const char *file = __FILE__, *cut = strstr(file, "c/test_fixtures.c");
        int len = cut ? (int)(cut - file) : 0;
        snprintf(buf, sizeof buf, "%.*sfixtures/%s", len, file, name);
    }
    return buf;
}

static as_safetensors *load(const char *name)
{
    as_safetensors *st = as_safetensors_load(fixture(name));
    CHECK_OK(st);
    return st;
}

static const as_tensor *get(const as_safetensors *st, const char *name)
{
    as_tensor *t = st ? as_safetensors_find(st, name) : NULL;
    if (!t) fprintf(stderr, "fixture tensor '%s' missing\n", name);
    CHECK(t != NULL);
    return t;
}

/* |got - want| <= atol + rtol |want| everywhere, shapes equal; takes got. */
static void expect_close(as_tensor *got, const as_tensor *want, double atol, double rtol,
                         const char *what)
{
    as_test_checks++;
    if (!got || !want) {
        as_test_failures++;
        fprintf(stderr, "%s: %s\n", what, got ? "no reference" : as_error_get());
        as_release(got);
        return;
    }
    if (!as_same_shape(got, want)) {
        char s1[128], s2[128];
        as_test_failures++;
        fprintf(stderr, "%s: shape %s, expected %s\n", what, as_shape_str(s1, sizeof s1, got->ndim, got->shape),
                as_shape_str(s2, sizeof s2, want->ndim, want->shape));
        as_release(got);
        return;
    }
    for (int64_t i = 0, n = as_numel(want); i < n; i++) {
        double g = as_get_flat(got, i), w = as_get_flat(want, i);
        if (!(fabs(g - w) <= atol + rtol * fabs(w))) {
            as_test_failures++;
            fprintf(stderr, "%s: element %lld is %.9g, expected %.9g\n", what, (long long)i, g, w);
            break;
        }
    }
    as_release(got);
}

static void test_matmul(void)
{
    as_safetensors *st = load("matmul.safetensors");
    if (!st) return;
    const char *cases[] = {"mm", "bmm", "vm", "mv"};
    for (int k = 0; k < 4; k++) {
        char a[32], b[32], out[32];
        snprintf(a, sizeof a, "%s.a", cases[k]);
        snprintf(b, sizeof b, "%s.b", cases[k]);
        snprintf(out, sizeof out, "%s.out", cases[k]);
        const as_tensor *ta = get(st, a), *tb = get(st, b), *to = get(st, out);
        if (ta && tb) expect_close(as_matmul(ta, tb), to, 1e-5, 1e-5, out);
    }
    /* a transposed operand (a view, not a copy) gives the same product */
    const as_tensor *b = get(st, "mm.b"), *a = get(st, "mm.a");
    as_tensor *bt = b ? as_transpose(b, 0, 1) : NULL, *btc = bt ? as_contiguous(bt) : NULL;
    as_tensor *btt = btc ? as_transpose(btc, 0, 1) : NULL; /* (4, 5) with strides (1, 4) */
    if (a && btt) expect_close(as_matmul(a, btt), get(st, "mm.out"), 1e-5, 1e-5, "mm, transposed b");
    as_release(bt), as_release(btc), as_release(btt);
    as_safetensors_free(st);
}

static void test_softmax(void)
{
    as_safetensors *st = load("softmax.safetensors");
    if (!st) return;
    const as_tensor *x = get(st, "last.x"), *m = get(st, "mid.x");
    if (x) expect_close(as_softmax(x, -1), get(st, "last.out"), 1e-6, 1e-5, "softmax(last.x, -1)");
    if (m) expect_close(as_softmax(m, 1), get(st, "mid.out"), 1e-6, 1e-5, "softmax(mid.x, 1)");
    as_safetensors_free(st);
}

static void test_layer_norm(void)
{
    as_safetensors *st = load("layer_norm.safetensors");
    if (!st) return;
    const as_tensor *x = get(st, "x"), *w = get(st, "weight"), *b = get(st, "bias"), *eps = get(st, "eps");
    if (x && w && b && eps) {
        double e = as_get_flat(eps, 0);
        expect_close(as_layer_norm(x, w, b, e), get(st, "out"), 1e-5, 1e-5, "layer_norm");
        expect_close(as_layer_norm(x, NULL, NULL, e), get(st, "out_noaffine"), 1e-5, 1e-5,
                     "layer_norm without weight and bias");
    }
    as_safetensors_free(st);
}

static void test_gelu(void)
{
    as_safetensors *st = load("gelu.safetensors");
    if (!st) return;
    const as_tensor *x = get(st, "x");
    if (x) {
        expect_close(as_unary(AS_GELU, x), get(st, "out_erf"), 1e-6, 1e-5, "gelu (erf)");
        expect_close(as_unary(AS_GELU_TANH, x), get(st, "out_tanh"), 1e-6, 1e-5, "gelu (tanh)");
    }
    as_safetensors_free(st);
}

int main(void)
{
    test_matmul();
    test_softmax();
    test_layer_norm();
    test_gelu();
    return as_test_report("test_fixtures");
}
