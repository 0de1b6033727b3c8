/* Tensor math for backward formulas (ops_internal.h): each function consumes
 * its tensor arguments, so a gradient reads as one expression. */
#include "ops_internal.h"

as_tensor *g_bin(as_binop op, as_tensor *a, as_tensor *b)
{
    as_tensor *r = a && b ? as_binary(op, a, b) : NULL;
    as_release(a), as_release(b);
    return r;
}

as_tensor *g_scal(as_binop op, as_tensor *a, double s)
{
    as_tensor *r = a ? as_binary_scalar(op, a, s, false) : NULL;
    as_release(a);
    return r;
}

as_tensor *g_un(as_unop op, as_tensor *a)
{
    as_tensor *r = a ? as_unary(op, a) : NULL;
    as_release(a);
    return r;
}

as_tensor *g_red(as_redop op, as_tensor *a, int dim)
{
    as_tensor *r = a ? as_reduce(op, a, dim, true, 0) : NULL;
    as_release(a);
    return r;
}

as_tensor *g_to(as_tensor *a, as_dtype dt)
{
    as_tensor *r = a ? as_to_dtype(a, dt) : NULL;
    as_release(a);
    return r;
}
