/* Every op on CUDA against the same op on the CPU (itself tested against
 * naive loops in test_ops.c): float32, float16 and bfloat16, contiguous,
 * transposed, narrowed, broadcast and empty operands.  Exits 77 (skipped)
 * where no GPU is visible. */
#include <string.h>

#include "as_test.h"
#include "attnswap/cuda.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"
#include "attnswap/ops.h"

#define CUDA0 ((as_device){AS_DEV_CUDA, 0})

static const as_dtype float_types[3] = {AS_F32, AS_F16, AS_BF16};

/* Tolerance for a result computed in dt (float32 accumulation either way). */
static double tol(as_dtype dt) { return dt == AS_F32 ? 1e-5 : dt == AS_F16 ? 2e-3 : 1.6e-2; }

/* A view kind applied identically to a CPU tensor and its CUDA copy. */
typedef enum { PLAIN, TRANSPOSED, NARROWED, BROADCAST, EMPTY, NKINDS } view_kind;
static const char *const kind_names[NKINDS] = {"plain", "transposed", "narrowed", "broadcast", "empty"};

/* A (rows, cols) operand of dtype dt in the given layout, on the CPU and the GPU. */
static void pair(view_kind kind, as_dtype dt, int64_t rows, int64_t cols, as_tensor **cpu, as_tensor **gpu)
{
    int64_t base_shape[2] = {rows, cols};
    if (kind == TRANSPOSED) base_shape[0] = cols, base_shape[1] = rows;
    if (kind == NARROWED) base_shape[1] = cols + 3;
    if (kind == BROADCAST) base_shape[0] = 1;
    if (kind == EMPTY) base_shape[0] = 0;
    as_tensor *f = as_test_random(2, base_shape);
    as_tensor *c = as_to_dtype(f, dt), *g = as_to_device(c, CUDA0);
    as_release(f);
    as_tensor *vc = NULL, *vg = NULL;
    switch (kind) {
    case TRANSPOSED: vc = as_transpose(c, 0, 1), vg = as_transpose(g, 0, 1); break;
    case NARROWED: vc = as_narrow(c, 1, 2, cols), vg = as_narrow(g, 1, 2, cols); break;
    case BROADCAST: {
        int64_t s[2] = {rows, cols};
        vc = as_expand(c, 2, s), vg = as_expand(g, 2, s);
        break;
    }
    default: vc = as_retain(c), vg = as_retain(g); break;
    }
    as_release(c), as_release(g);
    *cpu = vc, *gpu = vg;
}

/* |gpu - cpu| within tol(dt), elementwise, after moving gpu back. */
static void check_same(const char *what, const as_tensor *cpu, const as_tensor *gpu, as_dtype dt)
{
    as_test_checks++;
    if (!cpu || !gpu) {
        as_test_failures++;
        fprintf(stderr, "%s: %s failed: %s\n", what, !cpu ? "cpu" : "cuda", as_error_get());
        return;
    }
    as_tensor *back = as_to_device(gpu, AS_CPU);
    int ok = back && as_same_shape(back, cpu) && back->dtype == cpu->dtype &&
             as_tensor_device(gpu).type == AS_DEV_CUDA;
    double worst = 0;
    for (int64_t i = 0, n = ok ? as_numel(cpu) : 0; i < n; i++) {
        double x = as_get_flat(back, i), y = as_get_flat(cpu, i);
        if (isnan(x) && isnan(y)) continue;
        if (isinf(x) && x == y) continue;
        double d = fabs(x - y) / (1 + fabs(y));
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    if (!ok || worst > tol(dt)) {
        as_test_failures++;
        fprintf(stderr, "%s: differs from the CPU (dtype %s, relative error %g, shape/dtype ok %d)\n", what,
                as_dtype_name(dt), worst, ok);
    }
    as_release(back);
}

/* Attention's head split and merge: (B, L, H, D) <-> (B, H, L, D) copies whose
 * innermost run (D) is contiguous on both sides: the 16-byte path, and odd D. */
static void test_head_copies(void)
{
    for (int t = 0; t < 3; t++)
        for (int D = 63; D <= 64; D++) {
            as_tensor *c = as_test_random(4, (int64_t[]){2, 7, 3, D}), *cd = as_to_dtype(c, float_types[t]);
            as_tensor *g = as_to_device(cd, CUDA0);
            as_tensor *cp = as_permute(cd, (int[]){0, 2, 1, 3}), *gp = as_permute(g, (int[]){0, 2, 1, 3});
            as_tensor *x = as_contiguous(cp), *y = as_contiguous(gp);
            char what[64];
            snprintf(what, sizeof what, "head split copy D=%d %s", D, as_dtype_name(float_types[t]));
            check_same(what, x, y, AS_F32);
            as_tensor *xs = as_binary(AS_ADD, cp, x), *ys = as_binary(AS_ADD, gp, y); /* permuted + contiguous */
            check_same("add permuted + contiguous", xs, ys, float_types[t]);
            as_release(c), as_release(cd), as_release(g), as_release(cp), as_release(gp);
            as_release(x), as_release(y), as_release(xs), as_release(ys);
        }
}

static void test_copies(void)
{
    for (int k = 0; k < NKINDS; k++)
        for (int t = 0; t < 3; t++) {
            as_tensor *c, *g;
            pair(k, float_types[t], 37, 19, &c, &g);
            char what[64];
            snprintf(what, sizeof what, "copy %s", kind_names[k]);
            check_same(what, c, g, AS_F32);
            /* conversion on the GPU: to every dtype */
            for (int d = 0; d < AS_NDTYPES; d++) {
                if (d == AS_F64) { /* CPU only: refused on the GPU, by name */
                    as_tensor *gf = as_to_dtype(g, AS_F64);
                    CHECK(!gf && strstr(as_error_get(), "to: float64 is CPU-only"));
                    as_release(gf);
                    continue;
                }
                as_tensor *cc = as_to_dtype(c, d), *gc = as_to_dtype(g, d);
                snprintf(what, sizeof what, "to %s from %s %s", as_dtype_name(d), as_dtype_name(float_types[t]),
                         kind_names[k]);
                check_same(what, cc, gc, AS_F32);
                as_release(cc), as_release(gc);
            }
            as_release(c), as_release(g);
        }
    /* fill, clone, and a strided write into a CUDA view */
    as_tensor *g = as_zeros(2, (int64_t[]){5, 7}, AS_F32, CUDA0);
    as_tensor *gv = as_narrow(g, 1, 1, 3);
    CHECK(as_fill_(gv, 2.5) == 0);
    as_tensor *c = as_zeros(2, (int64_t[]){5, 7}, AS_F32, AS_CPU), *cv = as_narrow(c, 1, 1, 3);
    as_fill_(cv, 2.5);
    check_same("fill_ narrowed", c, g, AS_F32);
    as_tensor *src = as_test_random(2, (int64_t[]){5, 3});
    CHECK(as_copy_(gv, src) == 0 && as_copy_(cv, src) == 0);
    check_same("copy_ cpu -> cuda view", c, g, AS_F32);
    as_release(src), as_release(gv), as_release(cv), as_release(g), as_release(c);
}

/* cols 65: the per-element walk; 64: rows of 16-byte vectors (map_vec_kernel)
 * where the kind leaves the innermost run contiguous and aligned */
static void test_elementwise(int cols)
{
    char what[96];
    for (int k = 0; k < NKINDS; k++)
        for (int t = 0; t < 3; t++) {
            as_dtype dt = float_types[t];
            as_tensor *ca, *ga, *cb, *gb;
            pair(k, dt, 33, cols, &ca, &ga);
            pair(PLAIN, dt, k == EMPTY ? 0 : 33, cols, &cb, &gb);
            for (int op = 0; op < AS_NBINOPS; op++) {
                as_tensor *x = as_binary(op, ca, cb), *y = as_binary(op, ga, gb);
                snprintf(what, sizeof what, "%s %s", as_binop_name(op), kind_names[k]);
                check_same(what, x, y, dt);
                as_release(x), as_release(y);
            }
            for (int op = 0; op < AS_NUNOPS; op++) {
                as_tensor *x = as_unary(op, ca), *y = as_unary(op, ga);
                snprintf(what, sizeof what, "%s %s", as_unop_name(op), kind_names[k]);
                check_same(what, x, y, dt);
                as_release(x), as_release(y);
            }
            as_tensor *x = as_clamp(ca, -0.25, 0.5), *y = as_clamp(ga, -0.25, 0.5);
            check_same("clamp", x, y, dt);
            as_release(x), as_release(y);
            as_tensor *cc = as_binary(AS_GT, ca, cb), *gc = as_binary(AS_GT, ga, gb);
            x = as_where(cc, ca, cb), y = as_where(gc, ga, gb);
            check_same("where", x, y, dt);
            as_release(x), as_release(y), as_release(cc), as_release(gc);
            /* a row vector broadcast against a matrix, and a scalar */
            as_tensor *row = as_narrow(cb, 0, 0, k == EMPTY ? 0 : 1), *grow = as_narrow(gb, 0, 0, k == EMPTY ? 0 : 1);
            x = as_binary(AS_SUB, ca, row), y = as_binary(AS_SUB, ga, grow);
            check_same("sub broadcast row", x, y, dt);
            as_release(x), as_release(y), as_release(row), as_release(grow);
            x = as_binary_scalar(AS_MUL, ca, 3.0, true), y = as_binary_scalar(AS_MUL, ga, 3.0, true);
            check_same("mul scalar", x, y, dt);
            as_release(x), as_release(y);
            as_release(ca), as_release(ga), as_release(cb), as_release(gb);
        }
    /* integers: arithmetic, comparisons, promotion to float */
    as_tensor *f = as_test_random(2, (int64_t[]){9, 11}), *s = as_binary_scalar(AS_MUL, f, 50, false);
    as_tensor *ci = as_to_dtype(s, AS_I64), *gi = as_to_device(ci, CUDA0);
    as_tensor *cj = as_to_dtype(s, AS_I32), *gj = as_to_device(cj, CUDA0);
    for (int op = 0; op < AS_NBINOPS; op++) {
        if (op == AS_POW) continue; /* overflow is the same wrap, but keep it readable */
        as_tensor *x = as_binary(op, ci, cj), *y = as_binary(op, gi, gj);
        snprintf(what, sizeof what, "%s int64 int32", as_binop_name(op));
        check_same(what, x, y, AS_F32);
        as_release(x), as_release(y);
    }
    as_tensor *x = as_unary(AS_ABS, cj), *y = as_unary(AS_ABS, gj);
    check_same("abs int32", x, y, AS_F32);
    as_release(x), as_release(y);
    x = as_unary(AS_LOGICAL_NOT, ci), y = as_unary(AS_LOGICAL_NOT, gi);
    check_same("logical_not int64", x, y, AS_F32);
    as_release(x), as_release(y);
    as_release(f), as_release(s), as_release(ci), as_release(gi), as_release(cj), as_release(gj);
}

/* n 300: the norms' 16-bit rows element by element; 296: in 16-byte vectors */
static void test_reductions(int n)
{
    char what[96];
    for (int k = 0; k < NKINDS; k++)
        for (int t = 0; t < 3; t++) {
            as_dtype dt = float_types[t];
            as_tensor *c, *g;
            pair(k, dt, 29, n, &c, &g);
            for (int op = 0; op < AS_NREDOPS; op++)
                for (int dim = -1; dim < 3; dim++) {
                    int d = dim == 2 ? AS_ALL_DIMS : dim;
                    if (k == EMPTY && (op == AS_MAX || op == AS_MIN || op == AS_ARGMAX || op == AS_ARGMIN)) continue;
                    if (op == AS_PROD && dt != AS_F32) continue; /* products of 300 halves underflow alike but noisily */
                    as_tensor *x = as_reduce(op, c, d, dim == 0, 1), *y = as_reduce(op, g, d, dim == 0, 1);
                    snprintf(what, sizeof what, "reduce op %d dim %d %s", op, dim, kind_names[k]);
                    check_same(what, x, y, op == AS_SUM || op == AS_MEAN ? dt : dt);
                    as_release(x), as_release(y);
                }
            for (int dim = 0; dim < 2; dim++) {
                as_tensor *x = as_softmax(c, dim), *y = as_softmax(g, dim);
                check_same("softmax", x, y, dt);
                as_release(x), as_release(y);
                x = as_log_softmax(c, dim), y = as_log_softmax(g, dim);
                check_same("log_softmax", x, y, dt);
                as_release(x), as_release(y);
            }
            as_tensor *cw, *gw, *cb, *gb;
            pair(PLAIN, dt, 1, n, &cw, &gw);
            pair(PLAIN, dt, 1, n, &cb, &gb);
            as_tensor *w1 = as_reshape(cw, 1, (int64_t[]){n}), *gw1 = as_reshape(gw, 1, (int64_t[]){n});
            as_tensor *b1 = as_reshape(cb, 1, (int64_t[]){n}), *gb1 = as_reshape(gb, 1, (int64_t[]){n});
            as_tensor *x = as_layer_norm(c, w1, b1, 1e-5), *y = as_layer_norm(g, gw1, gb1, 1e-5);
            check_same("layer_norm", x, y, dt);
            as_release(x), as_release(y);
            x = as_rms_norm(c, w1, 1e-6), y = as_rms_norm(g, gw1, 1e-6);
            check_same("rms_norm", x, y, dt);
            as_release(x), as_release(y);
            x = as_layer_norm(c, NULL, NULL, 1e-5), y = as_layer_norm(g, NULL, NULL, 1e-5);
            check_same("layer_norm without weight and bias", x, y, dt);
            as_release(x), as_release(y);
            x = as_rms_norm(c, NULL, 1e-6), y = as_rms_norm(g, NULL, 1e-6);
            check_same("rms_norm without weight", x, y, dt);
            as_release(x), as_release(y);
            as_release(cw), as_release(gw), as_release(cb), as_release(gb);
            as_release(w1), as_release(gw1), as_release(b1), as_release(gb1);
            as_release(c), as_release(g);
        }
    /* a masked row: softmax of -inf gives zeros on both */
    as_tensor *c = as_full(2, (int64_t[]){3, 5}, -INFINITY, AS_F32, AS_CPU), *g = as_to_device(c, CUDA0);
    as_tensor *x = as_softmax(c, 1), *y = as_softmax(g, 1);
    check_same("softmax of -inf", x, y, AS_F32);
    as_release(x), as_release(y), as_release(c), as_release(g);
}

static void test_matmul(void)
{
    char what[96];
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < NKINDS; k++) {
            as_dtype dt = float_types[t];
            as_tensor *ca, *ga, *cb, *gb;
            pair(k, dt, 67, 45, &ca, &ga);
            pair(TRANSPOSED, dt, 45, 31, &cb, &gb);
            as_tensor *x = as_matmul(ca, cb), *y = as_matmul(ga, gb);
            snprintf(what, sizeof what, "matmul %s @ transposed", kind_names[k]);
            check_same(what, x, y, dt);
            as_release(x), as_release(y);
            /* linear: x @ w^T + b (64 outputs: the bias in cuBLASLt's epilogue; 31: added after) */
            for (int64_t no = 31; no <= 64; no += 33) {
                as_tensor *cw, *gw, *cbias, *gbias;
                pair(PLAIN, dt, no, 45, &cw, &gw);
                pair(PLAIN, dt, 1, no, &cbias, &gbias);
                as_tensor *b1 = as_reshape(cbias, 1, &no), *gb1 = as_reshape(gbias, 1, &no);
                x = as_linear(ca, cw, b1), y = as_linear(ga, gw, gb1);
                snprintf(what, sizeof what, "linear %s to %lld", kind_names[k], (long long)no);
                check_same(what, x, y, dt);
                as_release(x), as_release(y), as_release(cw), as_release(gw), as_release(cbias), as_release(gbias);
                as_release(b1), as_release(gb1);
            }
            as_release(ca), as_release(ga), as_release(cb), as_release(gb);
        }
    /* batched with broadcast batch dims, and 1-d operands */
    for (int t = 0; t < 3; t++) {
        as_dtype dt = float_types[t];
        as_tensor *f = as_test_random(4, (int64_t[]){2, 3, 17, 24}), *h = as_test_random(3, (int64_t[]){1, 24, 9});
        as_tensor *ca = as_to_dtype(f, dt), *cb = as_to_dtype(h, dt);
        as_tensor *ga = as_to_device(ca, CUDA0), *gb = as_to_device(cb, CUDA0);
        as_tensor *x = as_matmul(ca, cb), *y = as_matmul(ga, gb);
        check_same("matmul batched broadcast", x, y, dt);
        as_release(x), as_release(y);
        as_tensor *cp = as_transpose(ca, 1, 2), *gp = as_transpose(ga, 1, 2); /* (2, 17, 3, 24): non-uniform batch */
        as_tensor *cq = as_retain(cb), *gq = as_retain(gb);
        x = as_matmul(cp, cq), y = as_matmul(gp, gq);
        check_same("matmul permuted batch", x, y, dt);
        as_release(x), as_release(y);
        as_tensor *cpt = as_transpose(cp, 2, 3), *gpt = as_transpose(gp, 2, 3); /* both non-uniform: q k^T of split heads */
        x = as_matmul(cp, cpt), y = as_matmul(gp, gpt);
        check_same("matmul permuted batch @ permuted batch", x, y, dt);
        as_release(x), as_release(y), as_release(cpt), as_release(gpt);
        { /* linear over batch dims, every size aligned: the cuBLASLt epilogue's path */
            as_tensor *w = as_test_random(2, (int64_t[]){64, 24}), *bb = as_test_random(1, (int64_t[]){64});
            as_tensor *cw = as_to_dtype(w, dt), *cbb = as_to_dtype(bb, dt);
            as_tensor *gw = as_to_device(cw, CUDA0), *gbb = as_to_device(cbb, CUDA0);
            x = as_linear(ca, cw, cbb), y = as_linear(ga, gw, gbb);
            check_same("linear batched, aligned", x, y, dt);
            as_release(x), as_release(y), as_release(w), as_release(bb), as_release(cw), as_release(cbb);
            as_release(gw), as_release(gbb);
        }
        as_tensor *v = as_test_random(1, (int64_t[]){24}), *cv = as_to_dtype(v, dt), *gv = as_to_device(cv, CUDA0);
        x = as_matmul(ca, cv), y = as_matmul(ga, gv);
        check_same("matmul @ 1-d", x, y, dt);
        as_release(x), as_release(y);
        as_release(f), as_release(h), as_release(ca), as_release(cb), as_release(ga), as_release(gb);
        as_release(cp), as_release(gp), as_release(cq), as_release(gq), as_release(v), as_release(cv), as_release(gv);
    }
}

/* float32 products against float64 on the CPU, at a size where the
 * default ("high") takes 3xTF32 (runtime/cuda/gemm.c) and under "highest"
 * (SGEMM): 3xTF32's error within a few times SGEMM's (a single TF32 product
 * would be some 50 times off); odd sizes (the padded path), A transposed or
 * narrowed, B as a linear layer's weight or as itself, with a bias, and a
 * batch sharing one B. */
static double rel_err64(const as_tensor *gpu, const as_tensor *ref)
{
    as_tensor *back = as_to_device(gpu, AS_CPU);
    double worst = back && as_same_shape(back, ref) ? 0 : INFINITY;
    for (int64_t i = 0, n = isinf(worst) ? 0 : as_numel(ref); i < n; i++) {
        double d = fabs(as_get_flat(back, i) - as_get_flat(ref, i)) / (1 + fabs(as_get_flat(ref, i)));
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    as_release(back);
    return worst;
}

/* layout 0: A @ W^T + b; 1: A^T (stored K x M) @ B; 2: narrowed A @ B^T-view;
 * 3: a batch of 3 A's @ one B; 4: as 0, where N is aligned (the bias in the epilogue) */
static void tf32x3_case(int64_t M, int64_t N, int64_t K, int layout)
{
    const bool forced = getenv("ATTNSWAP_F32_GEMM") != NULL;
    const bool lin = layout == 0 || layout == 4;
    as_tensor *fa = as_test_random(3, (int64_t[]){layout == 3 ? 3 : 1, layout == 1 ? K : M, layout == 1 ? M : K + 5});
    as_tensor *fb = as_test_random(2, (int64_t[]){layout == 1 || layout == 3 ? K : N, layout == 1 || layout == 3 ? N : K});
    as_tensor *fbias = as_test_random(1, (int64_t[]){N});
    as_tensor *a3 = layout == 3 ? as_retain(fa) : as_select(fa, 0, 0), *g3 = as_to_device(a3, CUDA0);
    const int last = a3->ndim - 1, start = layout == 2 ? 3 : 0;
    as_tensor *a2 = layout == 1 ? as_transpose(a3, 0, 1) : as_narrow(a3, last, start, K);
    as_tensor *ga = layout == 1 ? as_transpose(g3, 0, 1) : as_narrow(g3, last, start, K);
    as_tensor *gb = as_to_device(fb, CUDA0), *gbias = as_to_device(fbias, CUDA0);
    as_tensor *da = as_to_dtype(a2, AS_F64), *db = as_to_dtype(fb, AS_F64), *dbias = as_to_dtype(fbias, AS_F64);
    as_tensor *dbt = layout == 2 ? as_transpose(db, 0, 1) : as_retain(db);
    as_tensor *ref = lin ? as_linear(da, db, dbias) : as_matmul(da, dbt);
    double err[2];
    as_tensor *out[2];
    for (int hi = 0; hi < 2; hi++) {
        CHECK(as_set_float32_matmul_precision(hi ? "highest" : "high") == 0);
        as_tensor *gbt = layout == 2 ? as_transpose(gb, 0, 1) : as_retain(gb);
        out[hi] = lin ? as_linear(ga, gb, gbias) : as_matmul(ga, gbt);
        err[hi] = out[hi] ? rel_err64(out[hi], ref) : INFINITY;
        as_release(gbt);
    }
    as_set_float32_matmul_precision("high");
    fprintf(stderr, "float32 %lld x %lld x %lld, layout %d: relative error %.2e (high), %.2e (highest)\n",
            (long long)M, (long long)N, (long long)K, layout, err[0], err[1]);
    as_test_checks++;
    if (!(err[1] <= 5 * tol(AS_F32) && err[0] <= 3 * err[1] + 1e-6)) {
        as_test_failures++;
        fprintf(stderr, "float32 product, layout %d: relative error %g (high) against %g (highest, SGEMM)\n",
                layout, err[0], err[1]);
    }
    if (!forced && out[0] && out[1]) { /* two paths ran: their roundings differ somewhere */
        as_tensor *x = as_to_device(out[0], AS_CPU), *y = as_to_device(out[1], AS_CPU);
        bool differ = false;
        for (int64_t i = 0, n = as_numel(x); i < n && !differ; i++) differ = as_get_flat(x, i) != as_get_flat(y, i);
        CHECK(differ);
        as_release(x), as_release(y);
    }
    as_release(out[0]), as_release(out[1]), as_release(ref), as_release(da), as_release(db), as_release(dbias);
    as_release(dbt), as_release(ga), as_release(gb), as_release(gbias), as_release(g3), as_release(a2);
    as_release(a3);
    as_release(fa), as_release(fb), as_release(fbias);
}

static void test_matmul_tf32x3(void)
{
    for (int layout = 0; layout < 5; layout++) tf32x3_case(1029, layout == 4 ? 768 : 771, 517, layout);
    /* an odd vocabulary's LM head: C through its scratch in two bands of rows */
    tf32x3_case(2051, 50257, 32, 1);
    tf32x3_case(2051, 50257, 32, 2);
}

/* linear + a residual (as_linear_add): cuBLASLt's C operand on CUDA where the
 * residual has the output's shape and dtype, the add otherwise; against the CPU */
static void test_linear_add(void)
{
    char what[96];
    for (int t = 0; t < 3; t++)
        for (int64_t no = 31; no <= 64; no += 33)
            for (int kind = 0; kind < 3; kind++) { /* 0: bias, full residual; 1: no bias; 2: a broadcast residual */
                as_dtype dt = float_types[t];
                as_tensor *fx = as_test_random(3, (int64_t[]){2, 37, 45}), *fw = as_test_random(2, (int64_t[]){no, 45});
                as_tensor *fb = as_test_random(1, (int64_t[]){no});
                as_tensor *fr = kind == 2 ? as_test_random(1, (int64_t[]){no}) : as_test_random(3, (int64_t[]){2, 37, no});
                as_tensor *cx = as_to_dtype(fx, dt), *cw = as_to_dtype(fw, dt), *cb = as_to_dtype(fb, dt);
                as_tensor *cr = as_to_dtype(fr, dt);
                as_tensor *gx = as_to_device(cx, CUDA0), *gw = as_to_device(cw, CUDA0), *gb = as_to_device(cb, CUDA0);
                as_tensor *gr = as_to_device(cr, CUDA0);
                as_tensor *x = as_linear_add(cx, cw, kind == 1 ? NULL : cb, cr);
                as_tensor *y = as_linear_add(gx, gw, kind == 1 ? NULL : gb, gr);
                snprintf(what, sizeof what, "linear_add to %lld, %s", (long long)no,
                         kind == 0 ? "bias" : kind == 1 ? "no bias" : "broadcast residual");
                check_same(what, x, y, dt);
                as_release(x), as_release(y), as_release(fx), as_release(fw), as_release(fb), as_release(fr);
                as_release(cx), as_release(cw), as_release(cb), as_release(cr);
                as_release(gx), as_release(gw), as_release(gb), as_release(gr);
            }
    as_tensor *w = as_empty(2, (int64_t[]){4, 3}, AS_F32, AS_CPU), *x = as_empty(2, (int64_t[]){2, 3}, AS_F32, AS_CPU);
    CHECK(as_linear_add(x, w, NULL, NULL) == NULL && strstr(as_error_get(), "linear_add"));
    as_release(w), as_release(x);
}

/* TransformerBlock on CUDA (its residual adds inside the out-projection's and
 * fc2's products) against the same block on the CPU (the adds apart) */
static void test_block_cuda(void)
{
    for (int pre = 0; pre < 2; pre++)
        for (int t = 0; t < 3; t += 2) { /* float32, bfloat16 */
            as_block_config cfg = {.attn = {.dim = 64, .num_heads = 4, .num_kv_heads = 4, .fused_qkv = true,
                                            .qkv_bias = true, .out_bias = true},
                                   .pre_norm = pre};
            as_attention_opts o = {.scale = NAN};
            as_module *core = as_sdp_attention_new(&o, AS_SDP_AUTO), *blk = as_transformer_block_new(&cfg, core);
            as_module_release(core);
            CHECK(blk != NULL);
            if (!blk) continue;
            as_tensor *x = as_test_random(3, (int64_t[]){2, 33, 64});
            as_tensor *want = as_module_call1(blk, x);
            as_tensor *gx = as_to_device(x, CUDA0), *gx2 = gx ? as_to_dtype(gx, float_types[t]) : NULL;
            CHECK(as_module_to_device(blk, CUDA0) == 0 && as_module_to_dtype(blk, float_types[t]) == 0);
            as_tensor *got = gx2 ? as_module_call1(blk, gx2) : NULL, *got32 = got ? as_to_dtype(got, AS_F32) : NULL;
            check_same(pre ? "TransformerBlock pre-norm" : "TransformerBlock post-norm", want, got32, float_types[t]);
            as_release(x), as_release(want), as_release(gx), as_release(gx2), as_release(got), as_release(got32);
            as_module_release(blk);
        }
}

static void test_index(void)
{
    as_tensor *f = as_test_random(3, (int64_t[]){4, 10, 6}), *g = as_to_device(f, CUDA0);
    as_tensor *idx = as_empty(1, (int64_t[]){5}, AS_I64, AS_CPU);
    int64_t *ip = as_data(idx);
    int64_t vals[5] = {9, 0, 3, 3, 7};
    memcpy(ip, vals, sizeof vals);
    as_tensor *gidx = as_to_device(idx, CUDA0);
    as_tensor *x = as_index_select(f, 1, idx), *y = as_index_select(g, 1, gidx);
    check_same("index_select", x, y, AS_F32);
    as_release(x), as_release(y);
    as_tensor *w = as_test_random(2, (int64_t[]){12, 8}), *gw = as_to_device(w, CUDA0);
    x = as_embedding(w, idx), y = as_embedding(gw, gidx);
    check_same("embedding", x, y, AS_F32);
    as_release(x), as_release(y);
    ip[0] = 12; /* out of range: an error on both, no crash */
    as_tensor *bad = as_to_device(idx, CUDA0);
    CHECK(as_embedding(gw, bad) == NULL && strstr(as_error_get(), "out of range"));
    as_release(bad);
    const as_tensor *cs[2] = {f, f}, *gs[2] = {g, g};
    x = as_cat(2, cs, 2), y = as_cat(2, gs, 2);
    check_same("cat", x, y, AS_F32);
    as_release(x), as_release(y);
    for (int k = -2; k <= 2; k++) {
        x = as_tril(f, k), y = as_tril(g, k);
        check_same("tril", x, y, AS_F32);
        as_release(x), as_release(y);
        x = as_triu(f, k), y = as_triu(g, k);
        check_same("triu", x, y, AS_F32);
        as_release(x), as_release(y);
    }
    /* mixing devices is an error naming both */
    CHECK(as_binary(AS_ADD, f, g) == NULL && strstr(as_error_get(), "cpu") && strstr(as_error_get(), "cuda:0"));
    CHECK(as_matmul(w, gw) == NULL && strstr(as_error_get(), "matmul"));
    as_release(f), as_release(g), as_release(idx), as_release(gidx), as_release(w), as_release(gw);
}

static void test_attention(void)
{
    /* flash on CUDA against the CPU's scaled_dot_product, every path the kernel has */
    struct { int64_t B, H, Hkv, Lq, Lk, D; int causal, mask; } cases[] = {
        {2, 4, 4, 65, 65, 64, 0, 0}, {1, 8, 2, 129, 300, 128, 1, 0}, {2, 2, 1, 7, 63, 64, 0, 1},
        {1, 3, 3, 100, 100, 80, 1, 0}, {1, 2, 2, 1, 1000, 64, 0, 0}, {1, 2, 2, 33, 17, 32, 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int t = 0; t < 3; t++) {
            as_dtype dt = float_types[t];
            int64_t B = cases[c].B, H = cases[c].H, Hkv = cases[c].Hkv, D = cases[c].D;
            as_tensor *fq = as_test_random(4, (int64_t[]){B, H, cases[c].Lq, D});
            as_tensor *fk = as_test_random(4, (int64_t[]){B, Hkv, cases[c].Lk, D});
            as_tensor *fv = as_test_random(4, (int64_t[]){B, Hkv, cases[c].Lk, D});
            as_tensor *q = as_to_dtype(fq, dt), *k = as_to_dtype(fk, dt), *v = as_to_dtype(fv, dt);
            as_tensor *gq = as_to_device(q, CUDA0), *gk = as_to_device(k, CUDA0), *gv = as_to_device(v, CUDA0);
            as_tensor *m = NULL, *gm = NULL;
            if (cases[c].mask) {
                as_tensor *r = as_test_random(4, (int64_t[]){B, 1, 1, cases[c].Lk});
                m = as_binary_scalar(AS_GT, r, -0.5, false);
                gm = as_to_device(m, CUDA0);
                as_release(r);
            }
            as_attention_opts o = {.scale = NAN, .causal = cases[c].causal};
            as_tensor *x = as_sdp_attention(q, k, v, m, &o, false), *y = as_flash_attention(gq, gk, gv, gm, &o, false);
            char what[96];
            snprintf(what, sizeof what, "flash case %zu (%s)", c, as_flash_backend());
            check_same(what, x, y, dt);
            as_release(x), as_release(y);
            x = as_sdp_attention(gq, gk, gv, gm, &o, false);
            y = as_sdp_attention(q, k, v, m, &o, false);
            snprintf(what, sizeof what, "scaled_dot_product on cuda, case %zu", c);
            check_same(what, y, x, dt);
            as_release(x), as_release(y);
            as_release(fq), as_release(fk), as_release(fv), as_release(q), as_release(k), as_release(v);
            as_release(gq), as_release(gk), as_release(gv), as_release(m), as_release(gm);
        }
}

static void test_allocator(void)
{
    as_cuda_memory m0, m1;
    as_cuda_memory_stats(0, &m0);
    for (int i = 0; i < 100; i++) {
        as_tensor *t = as_empty(2, (int64_t[]){256, 256}, AS_F32, CUDA0);
        as_release(t);
    }
    as_cuda_memory_stats(0, &m1);
    CHECK(m1.num_mallocs <= m0.num_mallocs + 1); /* the cache served 99 of them */
    CHECK(m1.allocated == m0.allocated);
    CHECK(m1.reserved >= m1.allocated);
    CHECK(as_cuda_synchronize(-1) == 0);
}

int main(void)
{
    if (as_cuda_device_count() == 0) {
        printf("test_cuda_ops: no CUDA device, skipped\n");
        return 77;
    }
    fprintf(stderr, "test_copies\n");
    test_copies();
    fprintf(stderr, "test_elementwise\n");
    test_elementwise(65);
    test_elementwise(64);
    test_head_copies();
    fprintf(stderr, "test_reductions\n");
    test_reductions(300);
    test_reductions(296);
    fprintf(stderr, "test_matmul\n");
    test_matmul();
    test_matmul_tf32x3();
    fprintf(stderr, "test_linear_add\n");
    test_linear_add();
    test_block_cuda();
    fprintf(stderr, "test_index\n");
    test_index();
    fprintf(stderr, "test_attention\n");
    test_attention();
    fprintf(stderr, "test_allocator\n");
    test_allocator();
    return as_test_report("test_cuda_ops");
}
