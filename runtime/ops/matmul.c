/* matmul (torch.matmul semantics) and linear on the device's products
 * (as_k_gemm: OpenBLAS sgemm on the CPU, cuBLAS on CUDA).  Operands whose
 * last two dims have a unit stride in either direction go to BLAS as they
 * are, transposed by flag; only other layouts are copied. */
#include <stdbool.h>
#include <string.h>

#include "attnswap/autograd.h"
#include "dispatch.h"
#include "ops_internal.h"

/* How BLAS can read a (rows, cols) matrix with strides (rs, cs): 0 fine, -1 copy needed. */
static int blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, bool *trans, int64_t *ld)
{
    if ((cs == 1 || cols == 1) && rs >= (cols > 1 ? cols : 1)) {
        *trans = false, *ld = rs > 0 ? rs : 1;
        if (rows == 1) *ld = cols > 1 ? cols : 1;
        return 0;
    }
    if ((rs == 1 || rows == 1) && cs >= (rows > 1 ? rows : 1)) {
        *trans = true, *ld = cs > 0 ? cs : 1;
        if (cols == 1) *ld = rows > 1 ? rows : 1;
        return 0;
    }
    return -1;
}

/* a (..., M, K) @ b (..., K, N), of one dtype (float32 or float64 on the CPU), at least 2-d;
 * bias and resid (or NULL) as as_gemm_args takes them, *bias_done and *resid_done whether
 * they were added. */
static as_tensor *matmul_2d_plus(const as_tensor *a0, const as_tensor *b0, const as_tensor *bias, bool *bias_done,
                                 const as_tensor *resid, bool *resid_done)
{
    char s1[128], s2[128];
    int64_t M = a0->shape[a0->ndim - 2], K = a0->shape[a0->ndim - 1];
    int64_t K2 = b0->shape[b0->ndim - 2], N = b0->shape[b0->ndim - 1];
    if (K != K2) {
        as_error_set("matmul: shapes %s and %s do not align", as_shape_str(s1, sizeof s1, a0->ndim, a0->shape),
                     as_shape_str(s2, sizeof s2, b0->ndim, b0->shape));
        return NULL;
    }
    int64_t batch[AS_MAX_DIMS];
    int nb = as_broadcast_shape("matmul", a0->ndim - 2, a0->shape, b0->ndim - 2, b0->shape, batch);
    if (nb < 0) return NULL;
    int64_t shape[AS_MAX_DIMS], ash[AS_MAX_DIMS], bsh[AS_MAX_DIMS];
    memcpy(shape, batch, sizeof(int64_t) * (size_t)nb);
    memcpy(ash, batch, sizeof(int64_t) * (size_t)nb);
    memcpy(bsh, batch, sizeof(int64_t) * (size_t)nb);
    shape[nb] = M, shape[nb + 1] = N;
    ash[nb] = M, ash[nb + 1] = K;
    bsh[nb] = K, bsh[nb + 1] = N;
    /* gemm with beta = 0 writes every element; only K = 0 needs the zeros */
    as_device dev = as_tensor_device(a0);
    as_tensor *out = K == 0 ? as_zeros(nb + 2, shape, a0->dtype, dev) : as_empty(nb + 2, shape, a0->dtype, dev);
    if (!out || M == 0 || N == 0 || K == 0) return out;
    as_tensor *a = as_expand(a0, nb + 2, ash), *b = a ? as_expand(b0, nb + 2, bsh) : NULL;
    if (!b) {
        as_ops_release4(out, a, b, NULL);
        return NULL;
    }
    bool ta = false, tb = false;
    int64_t lda = 1, ldb = 1;
    as_tensor *ca = NULL, *cb = NULL;
    if (blas_layout(M, K, a->stride[nb], a->stride[nb + 1], &ta, &lda)) {
        ca = as_contiguous(a);
        if (!ca) goto fail;
        as_release(a);
        a = as_retain(ca);
        blas_layout(M, K, a->stride[nb], a->stride[nb + 1], &ta, &lda);
    }
    if (blas_layout(K, N, b->stride[nb], b->stride[nb + 1], &tb, &ldb)) {
        cb = as_contiguous(b);
        if (!cb) goto fail;
        as_release(b);
        b = as_retain(cb);
        blas_layout(K, N, b->stride[nb], b->stride[nb + 1], &tb, &ldb);
    }
    int64_t nbatch = 1;
    for (int d = 0; d < nb; d++) nbatch *= batch[d];
    /* Fold the batch into M when b is the same matrix for every batch and a's
     * rows follow each other in memory: one big GEMM (nn.Linear's case). */
    int b_shared = 1;
    for (int d = 0; d < nb; d++)
        if (b->stride[d] != 0 && batch[d] != 1) b_shared = 0;
    int a_rows_contig = !ta;
    int64_t expect = M * a->stride[nb];
    for (int d = nb - 1; d >= 0 && a_rows_contig; d--) {
        if (batch[d] != 1 && a->stride[d] != expect) a_rows_contig = 0;
        expect *= batch[d];
    }
    as_gemm_args g = {.a = a, .b = b, .out = out, .ta = ta, .tb = tb,
                      .fold = b_shared && a_rows_contig, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb,
                      .nb = nb, .batch = batch, .nbatch = nbatch, .bias = bias,
                      .resid = resid && as_same_shape(resid, out) ? resid : NULL};
    int rc = as_k_gemm(dev, &g);
    *bias_done = g.bias_done, *resid_done = g.resid_done;
    as_ops_release4(g.a, g.b, ca, cb);
    if (rc) {
        as_release(out);
        return NULL;
    }
    return out;
fail:
    as_ops_release4(a, b, ca, cb);
    as_release(out);
    return NULL;
}

/* bias (or NULL): an (N,) the product may add in its epilogue (*bias_done says);
 * resid (or NULL): a tensor of the result's shape it may add too (*resid_done) */
static as_tensor *matmul_forward_bias(const as_tensor *a, const as_tensor *b, const as_tensor *bias, bool *bias_done,
                                      const as_tensor *resid, bool *resid_done)
{
    *bias_done = *resid_done = false;
    const as_tensor *ts[2] = {a, b};
    if (as_ops_check_device("matmul", 2, ts)) return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        as_error_set("matmul: both arguments need at least 1 dimension, got %d-d and %d-d", a->ndim, b->ndim);
        return NULL;
    }
    if (!as_dtype_is_float(a->dtype) || !as_dtype_is_float(b->dtype)) {
        as_error_set("matmul: expected floating-point tensors, got %s and %s", as_dtype_name(a->dtype),
                     as_dtype_name(b->dtype));
        return NULL;
    }
    as_dtype result = as_dtype_promote(a->dtype, b->dtype);
    /* cuBLAS multiplies float16 and bfloat16 as they are (float32 accumulation) */
    as_dtype cdt = as_tensor_device(a).type == AS_DEV_CUDA ? result : as_ops_work_float(result);
    as_tensor *fa = as_to_dtype(a, cdt), *fb = fa ? as_to_dtype(b, cdt) : NULL;
    as_tensor *ua = fb ? (a->ndim == 1 ? as_unsqueeze(fa, 0) : as_retain(fa)) : NULL;
    as_tensor *ub = ua ? (b->ndim == 1 ? as_unsqueeze(fb, 1) : as_retain(fb)) : NULL;
    /* the epilogue adds the bias only when it is of the product's dtype and the result stays in it */
    bool fits = bias && bias->dtype == cdt && result == cdt && b->ndim >= 2 && as_is_contiguous(bias);
    bool rfits = resid && resid->dtype == cdt && result == cdt && a->ndim >= 2 && b->ndim >= 2 &&
                 as_is_contiguous(resid);
    as_tensor *out = ub ? matmul_2d_plus(ua, ub, fits ? bias : NULL, bias_done, rfits ? resid : NULL, resid_done)
                        : NULL;
    as_ops_release4(fa, fb, ua, ub);
    if (out && (a->ndim == 1 || b->ndim == 1)) {
        /* drop the dims the 1-d operands gained */
        int64_t shape[AS_MAX_DIMS];
        int n = 0;
        for (int d = 0; d < out->ndim; d++) {
            if (a->ndim == 1 && d == out->ndim - 2) continue;
            if (b->ndim == 1 && d == out->ndim - 1) continue;
            shape[n++] = out->shape[d];
        }
        as_tensor *r = as_reshape(out, n, shape);
        as_release(out);
        out = r;
    }
    if (out && result != out->dtype) {
        as_tensor *r = as_to_dtype(out, result);
        as_release(out);
        out = r;
    }
    return out;
}

static as_tensor *matmul_forward(const as_tensor *a, const as_tensor *b)
{
    bool unused, unused2;
    return matmul_forward_bias(a, b, NULL, &unused, NULL, &unused2);
}

/* out = a @ b: g_a = g @ b^T, g_b = a^T @ g, over the broadcast batch (the
 * engine sums it back); a 1-d operand is a row (a) or a column (b), as in
 * the forward. */
static as_tensor *last2_t(as_tensor *t) { as_tensor *r = t ? as_transpose(t, -2, -1) : NULL; as_release(t); return r; }
static as_tensor *unsq(as_tensor *t, int d) { as_tensor *r = t ? as_unsqueeze(t, d) : NULL; as_release(t); return r; }
static as_tensor *sq(as_tensor *t, int d) { as_tensor *r = t ? as_squeeze(t, d) : NULL; as_release(t); return r; }
static as_tensor *mm(as_tensor *x, as_tensor *y)
{
    as_tensor *r = x && y ? as_matmul(x, y) : NULL;
    as_release(x), as_release(y);
    return r;
}

/* Whether t is the transpose of a row-major matrix (a Linear's W^T, a tied
 * LM head's E^T).  Its gradient is then made in that layout, (G^T A)^T, so
 * that the transpose's backward hands the leaf a contiguous gradient that
 * the engine keeps as it is, as PyTorch's mm_mat2_backward does; made
 * row-major, it was copied: for GPT-2's tied 50257 x 768 embedding that
 * copy was 19 % of the CPU training step. */
static bool col_major(const as_tensor *t)
{
    return t->ndim == 2 && t->shape[0] > 1 && t->shape[1] > 1 && t->stride[0] == 1 && t->stride[1] == t->shape[0];
}

static int matmul_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    bool na = as_node_needs(n, 0), nb = as_node_needs(n, 1);
    const as_tensor *a = nb ? as_node_saved(n, 0) : NULL, *b = na ? as_node_saved(n, 1) : NULL;
    if ((nb && !a) || (na && !b)) return -1;
    int an, bn;
    const int64_t *shape;
    as_node_input_shape(n, 0, &an, &shape);
    as_node_input_shape(n, 1, &bn, &shape);
    const bool b_col_major = as_node_scalars(n)[0] != 0; /* b was col_major: its gradient is made so */
    as_tensor *G = g_ref(g);
    if (an == 1) G = unsq(G, bn == 1 ? 0 : G->ndim - 1); /* the dropped row dim */
    if (bn == 1) G = unsq(G, G ? G->ndim : 0);           /* the dropped column dim */
    if (na) {
        as_tensor *B = bn == 1 ? unsq(g_ref(b), 1) : g_ref(b);
        gi[0] = mm(g_ref(G), last2_t(B));
        if (an == 1) gi[0] = sq(gi[0], -2);
    }
    if (nb && bn == 2 && an >= 3) {
        /* a matrix broadcast over a's batch dims (x W in every Linear): its
         * gradient is one product over all the rows, A^T G (K, rows) x (rows, N),
         * as PyTorch folds it — not one (K, N) product per batch entry, summed
         * afterwards, which costs the weight's size in memory per entry */
        int64_t K = a->shape[an - 1], N = G ? G->shape[G->ndim - 1] : 0;
        int64_t rows = 1;
        for (int d = 0; d < an - 1; d++) rows *= a->shape[d];
        as_tensor *A2 = as_reshape(a, 2, (int64_t[]){rows, K});
        as_tensor *G2 = G ? as_reshape(G, 2, (int64_t[]){rows, N}) : NULL;
        gi[1] = b_col_major ? last2_t(mm(last2_t(G2), A2)) : mm(last2_t(A2), G2);
    } else if (nb) {
        as_tensor *A = an == 1 ? unsq(g_ref(a), 0) : g_ref(a);
        gi[1] = b_col_major ? last2_t(mm(last2_t(g_ref(G)), A)) : mm(last2_t(A), g_ref(G));
        if (bn == 1) gi[1] = sq(gi[1], -1);
    }
    as_release(G);
    return (!na || gi[0]) && (!nb || gi[1]) ? 0 : -1;
}

as_tensor *as_matmul(const as_tensor *a, const as_tensor *b)
{
    const as_tensor *in[2] = {a, b};
    as_grad_scope s = as_grad_begin(2, in);
    as_tensor *out = matmul_forward(a, b);
    as_node *n = as_grad_end(s, "matmul", matmul_backward, &out, 2, in);
    if (!n) return out;
    if (as_requires_grad(b)) as_node_save(n, 0, a);
    if (as_requires_grad(a)) as_node_save(n, 1, b);
    as_node_scalars(n)[0] = col_major(b);
    return out;
}

/* linear's checks and product; resid (or NULL) is added too, in the product where it can be */
static as_tensor *linear_plus(const as_tensor *x, const as_tensor *w, const as_tensor *bias, const as_tensor *resid)
{
    const char *fn = resid ? "linear_add" : "linear";
    const as_tensor *ts[4] = {x, w, bias, resid};
    if (as_ops_check_device(fn, resid ? 4 : 3, ts)) return NULL;
    char s1[128], s2[128];
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
        as_error_set("%s: input of shape %s does not match weight of shape %s", fn,
                     as_shape_str(s1, sizeof s1, x->ndim, x->shape), as_shape_str(s2, sizeof s2, w->ndim, w->shape));
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0])) {
        as_error_set("%s: bias of shape %s does not match %lld output features", fn,
                     as_shape_str(s1, sizeof s1, bias->ndim, bias->shape), (long long)w->shape[0]);
        return NULL;
    }
    as_tensor *wt = as_transpose(w, 0, 1);
    bool done = false, rdone = false;
    /* with no gradient to record, the bias and the residual may ride in the product (cuBLASLt
     * epilogue and C operand on CUDA; C filled with them, beta 1, on the CPU) */
    as_tensor *y = !wt ? NULL
                 : (bias || resid) && !as_autograd_needed(resid ? 4 : 3, ts)
                     ? matmul_forward_bias(x, wt, bias, &done, resid, &rdone)
                     : as_matmul(x, wt);
    as_release(wt);
    if (y && bias && !done && as_binary_(AS_ADD, y, bias)) {
        as_release(y);
        return NULL;
    }
    if (y && resid && !rdone) { /* out of place: y + resid may broadcast to more than y */
        as_tensor *r = as_binary(AS_ADD, y, resid);
        as_release(y);
        y = r;
    }
    return y;
}

as_tensor *as_linear(const as_tensor *x, const as_tensor *w, const as_tensor *bias)
{
    return linear_plus(x, w, bias, NULL);
}

as_tensor *as_linear_add(const as_tensor *x, const as_tensor *w, const as_tensor *bias, const as_tensor *resid)
{
    if (!resid) {
        as_error_set("linear_add: the residual is missing");
        return NULL;
    }
    return linear_plus(x, w, bias, resid);
}
