/* Cross-entropy over rows of class logits, fused: the loss of each row and
 * its backward in one pass each over the logits, in their own dtype
 * (kernels/cpu/cross_entropy.c, kernels/cuda/cross_entropy.cu).  The
 * composite (log_softmax, a gather) widens a language model's logits to
 * float32 and keeps two (rows, classes) float32 tensors for the backward;
 * this keeps one float per row.  F.cross_entropy takes it for class-id
 * targets (lua/attnswap/functional.lua). */
#include "attnswap/autograd.h"
#include "attnswap/dtype.h"
#include "dispatch.h"
#include "ops_internal.h"

#define FN "cross_entropy_rows"

/* saved: x (contiguous), the int64 targets, lse; ints[0]: ignore_index */
static int xent_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const as_tensor *x = as_node_saved(n, 0), *t = as_node_saved(n, 1), *lse = as_node_saved(n, 2);
    if (!x || !t || !lse) return -1;
    const as_device dev = as_tensor_device(x);
    const int64_t rows = x->shape[0], C = x->shape[1];
    as_tensor *gc = as_ops_contiguous_as(g, AS_F32);
    as_tensor *dx = gc ? as_empty(2, x->shape, x->dtype, dev) : NULL;
    if (dx && rows * C > 0 &&
        as_k_xent_bwd_rows(dev, as_data(x), x->dtype, as_data(t), as_node_ints(n)[0], as_data(lse), as_data(gc),
                           as_data(dx), rows, C)) {
        as_release(dx);
        dx = NULL;
    }
    as_release(gc);
    gi[0] = dx;
    return dx ? 0 : -1;
}

as_tensor *as_cross_entropy_rows(const as_tensor *x, const as_tensor *target, int64_t ignore_index)
{
    if (!x || !target) {
        as_error_set(FN ": expected logits and targets, got NULL");
        return NULL;
    }
    if (as_ops_check_device(FN, 2, (const as_tensor *[]){x, target})) return NULL;
    if (x->ndim != 2 || (x->dtype != AS_F32 && x->dtype != AS_F16 && x->dtype != AS_BF16)) {
        as_error_set(FN ": expected (rows, classes) float32, float16 or bfloat16 logits, got %dd %s", x->ndim,
                     as_dtype_name(x->dtype));
        return NULL;
    }
    if (target->ndim != 1 || target->shape[0] != x->shape[0] ||
        (target->dtype != AS_I64 && target->dtype != AS_I32)) {
        as_error_set(FN ": expected (%lld) int64 class ids, one per row of the logits, got %dd %s with %lld elements",
                     (long long)x->shape[0], target->ndim, as_dtype_name(target->dtype),
                     (long long)as_numel(target));
        return NULL;
    }
    const as_device dev = as_tensor_device(x);
    const int64_t rows = x->shape[0], C = x->shape[1];
    as_grad_scope s = as_grad_begin(1, &x);
    as_tensor *xc = as_contiguous(x);
    as_tensor *tc = xc ? as_ops_contiguous_as(target, AS_I64) : NULL;
    as_tensor *loss = tc ? as_empty(1, (int64_t[]){rows}, AS_F32, dev) : NULL;
    as_tensor *lse = loss ? as_empty(1, (int64_t[]){rows}, AS_F32, dev) : NULL;
    if (lse && rows > 0) {
        if (C == 0) {
            as_error_set(FN ": the logits have no class (shape (%lld, 0))", (long long)rows);
            as_release(lse), lse = NULL;
        } else if (as_k_xent_rows(dev, as_data(xc), xc->dtype, as_data(tc), ignore_index, as_data(loss),
                                  as_data(lse), rows, C)) {
            as_release(lse), lse = NULL;
        }
    }
    if (!lse) {
        as_release(loss), loss = NULL;
    }
    as_node *n = as_grad_end(s, FN, xent_backward, &loss, 1, &x); /* restores grad mode, loss NULL or not */
    if (n) {
        as_node_ints(n)[0] = ignore_index;
        if (as_node_save(n, 0, xc) || as_node_save(n, 1, tc) || as_node_save(n, 2, lse)) as_release(loss), loss = NULL;
    }
    as_ops_release4(xc, tc, lse, NULL);
    return loss;
}
