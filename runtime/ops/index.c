/* Gathering and joining: index_select, embedding, cat, tril/triu, arange. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/autograd.h"
#include "attnswap/cuda.h"
#include "cuda_backend.h"
#include "dispatch.h"
#include "ops_internal.h"

/* The first index of the n (int64, on the host) outside [0, size), or -1. */
static int64_t first_out_of_range(const int64_t *ip, int64_t n, int64_t size)
{
    for (int64_t i = 0; i < n; i++)
        if (ip[i] < 0 || ip[i] >= size) return i;
    return -1;
}

/* a's rows along dim at index (1-d, int64 or int32, on a's device).  The
 * indices are checked on the host first, so a bad one is a clear error now,
 * except while a CUDA graph is captured: no copy to the host may happen
 * there, so the kernel checks them, gives a zero row for one out of range
 * and records it for the next replay or synchronisation to report.
 * embedding: its own words for a bad id. */
static as_tensor *gather(const char *fn, const as_tensor *a, int dim, const as_tensor *index, bool embedding)
{
    int64_t n = as_numel(index), size = a->shape[dim];
    as_device dev = as_tensor_device(a);
    as_tensor *i64 = as_to_dtype(index, AS_I64);
    as_tensor *idx = i64 ? as_contiguous(i64) : NULL;
    as_release(i64);
    if (!idx) return NULL;
    int64_t *bad = NULL;
    if (dev.type == AS_DEV_CUDA && as_cuda_capturing(dev.index)) {
        if (!(bad = as_cuda_bad_index_flag(dev.index))) goto fail;
    } else {
        as_tensor *host = as_to_device(idx, AS_CPU); /* idx itself on the CPU */
        if (!host) goto fail;
        const int64_t *ip = as_data(host);
        int64_t i = first_out_of_range(ip, n, size);
        if (i >= 0) {
            if (embedding)
                as_error_set("%s: id %lld is out of range for %lld embeddings", fn, (long long)ip[i], (long long)size);
            else
                as_error_set("%s: index %lld is out of range for dimension %d of size %lld", fn, (long long)ip[i] + 1,
                             dim + 1, (long long)size);
        }
        as_release(host);
        if (i >= 0) goto fail;
    }
    as_tensor *ca = as_contiguous(a);
    int64_t shape[AS_MAX_DIMS];
    memcpy(shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    shape[dim] = n;
    as_tensor *out = ca ? as_empty(a->ndim, shape, a->dtype, dev) : NULL;
    if (out) {
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < dim; d++) outer *= a->shape[d];
        for (int d = dim + 1; d < a->ndim; d++) inner *= a->shape[d];
        int64_t row = inner * (int64_t)as_dtype_size(a->dtype);
        if (as_k_gather_rows(dev, as_data(out), as_data(ca), as_data(idx), outer, n, size, row, bad)) {
            as_release(out);
            out = NULL;
        }
    }
    as_release(ca), as_release(idx);
    return out;
fail:
    as_release(idx);
    return NULL;
}

/* index_select's arguments checked: dim made 0-based, or -1 with the error set */
static int index_select_dim(const as_tensor *a, int dim, const as_tensor *index)
{
    const as_tensor *ts[2] = {a, index};
    if (as_ops_check_device("index_select", 2, ts)) return -1;
    if (index->dtype != AS_I64 && index->dtype != AS_I32) {
        as_error_set("index_select: index must be int64 or int32, got %s", as_dtype_name(index->dtype));
        return -1;
    }
    if (index->ndim > 1) {
        as_error_set("index_select: index must be 1-d, got %d-d", index->ndim);
        return -1;
    }
    if (a->ndim == 0) {
        as_error_set("index_select: cannot index a 0-d tensor");
        return -1;
    }
    return as_wrap_dim("index_select", dim, a->ndim);
}

static as_tensor *cat_forward(int n, const as_tensor *const *ts, int dim)
{
    if (n < 1) {
        as_error_set("cat: expected at least one tensor");
        return NULL;
    }
    if (as_ops_check_device("cat", n, ts)) return NULL;
    const as_tensor *ref = ts[0];
    if (ref->ndim == 0) {
        as_error_set("cat: cannot concatenate 0-d tensors");
        return NULL;
    }
    dim = as_wrap_dim("cat", dim, ref->ndim);
    if (dim < 0) return NULL;
    int64_t shape[AS_MAX_DIMS];
    memcpy(shape, ref->shape, sizeof(int64_t) * (size_t)ref->ndim);
    shape[dim] = 0;
    as_dtype dt = ref->dtype;
    for (int i = 0; i < n; i++) {
        const as_tensor *t = ts[i];
        int ok = t->ndim == ref->ndim;
        for (int d = 0; ok && d < ref->ndim; d++)
            if (d != dim && t->shape[d] != ref->shape[d]) ok = 0;
        if (!ok) {
            char s1[128];
            /* show the free dim as ? */
            char expect[192] = "(";
            for (int d = 0; d < ref->ndim; d++) {
                char part[32];
                if (d == dim) snprintf(part, sizeof part, d ? ", ?" : "?");
                else snprintf(part, sizeof part, d ? ", %lld" : "%lld", (long long)ref->shape[d]);
                strncat(expect, part, sizeof expect - strlen(expect) - 1);
            }
            strncat(expect, ")", sizeof expect - strlen(expect) - 1);
            as_error_set("cat: tensor %d has shape %s, expected %s", i + 1,
                         as_shape_str(s1, sizeof s1, t->ndim, t->shape), expect);
            return NULL;
        }
        shape[dim] += t->shape[dim];
        dt = as_dtype_promote(dt, t->dtype);
    }
    as_tensor *out = as_empty(ref->ndim, shape, dt, as_tensor_device(ref));
    int64_t at = 0;
    for (int i = 0; out && i < n; i++) {
        as_tensor *slot = as_narrow(out, dim, at, ts[i]->shape[dim]);
        if (!slot || as_copy_(slot, ts[i])) {
            as_release(slot);
            as_release(out);
            return NULL;
        }
        as_release(slot);
        at += ts[i]->shape[dim];
    }
    return out;
}

/* Zeroes the entries above (tril) or below (triu) the k-th diagonal of every matrix. */
static as_tensor *triangle(const char *fn, const as_tensor *a, int64_t k, int lower)
{
    if (as_ops_check_device(fn, 1, &a)) return NULL;
    if (a->ndim < 2) {
        as_error_set("%s: expected at least 2 dimensions, got %d", fn, a->ndim);
        return NULL;
    }
    as_tensor *out = as_clone(a);
    if (!out) return NULL;
    int64_t R = a->shape[a->ndim - 2], C = a->shape[a->ndim - 1];
    int64_t mats = R > 0 && C > 0 ? as_numel(a) / (R * C) : 0;
    if (as_k_triangle(as_tensor_device(out), as_data(out), mats, R, C, k, lower, (int64_t)as_dtype_size(a->dtype))) {
        as_release(out);
        return NULL;
    }
    return out;
}

/* tril/triu: the gradient is g with the same entries zeroed. */
static int triangle_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const double *p = as_node_scalars(n);
    bool lower = p[1] != 0;
    gi[0] = triangle(lower ? "tril" : "triu", g, (int64_t)p[0], lower);
    return gi[0] ? 0 : -1;
}

static as_tensor *triangle_recorded(const as_tensor *a, int64_t k, int lower)
{
    const char *fn = lower ? "tril" : "triu";
    as_grad_scope s = as_grad_begin(1, &a);
    as_tensor *out = triangle(fn, a, k, lower);
    as_node *n = as_grad_end(s, fn, triangle_backward, &out, 1, &a);
    if (n) as_node_scalars(n)[0] = (double)k, as_node_scalars(n)[1] = lower;
    return out;
}

as_tensor *as_tril(const as_tensor *a, int64_t diagonal) { return triangle_recorded(a, diagonal, 1); }
as_tensor *as_triu(const as_tensor *a, int64_t diagonal) { return triangle_recorded(a, diagonal, 0); }

as_tensor *as_arange(double start, double end, double step, as_dtype dt)
{
    if (step == 0 || !isfinite(step) || !isfinite(start) || !isfinite(end)) {
        as_error_set("arange: step must be nonzero and bounds finite (got start %g, end %g, step %g)", start, end, step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (count < 0) count = 0;
    if (count > 1e12) {
        as_error_set("arange: too many elements (%g)", count);
        return NULL;
    }
    int64_t n = (int64_t)count;
    as_tensor *t = as_empty(1, &n, dt, AS_CPU);
    if (!t) return NULL;
    void *p = as_data(t);
    for (int64_t i = 0; i < n; i++) as_store_elem(p, dt, i, start + (double)i * step);
    return t;
}

/* ---- gradients ---- */

/* index_select: g's rows added back to the rows they came from (an index
 * chosen twice gets both): zeros of a's shape, then a scatter-add. */
static int index_select_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const as_tensor *index = as_node_saved(n, 0);
    if (!index) return -1;
    int ndim, dim = (int)as_node_scalars(n)[0];
    const int64_t *shape;
    as_node_input_shape(n, 0, &ndim, &shape);
    as_device dev = as_tensor_device(g);
    as_dtype wdt = as_ops_work_float(g->dtype);
    as_tensor *out = as_zeros(ndim, shape, wdt, dev);
    as_tensor *cg = out ? as_ops_contiguous_as(g, wdt) : NULL;
    as_tensor *i64 = cg ? as_to_dtype(index, AS_I64) : NULL;
    as_tensor *di = i64 ? as_to_device(i64, dev) : NULL;
    as_tensor *ci = di ? as_contiguous(di) : NULL;
    int rc = ci ? 0 : -1;
    if (!rc) {
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < dim; d++) outer *= shape[d];
        for (int d = dim + 1; d < ndim; d++) inner *= shape[d];
        rc = wdt == AS_F64 ? as_k_scatter_add_rows_f64(dev, as_data(out), as_data(cg), as_data(ci), outer,
                                                        as_numel(index), shape[dim], inner)
                           : as_k_scatter_add_rows(dev, as_data(out), as_data(cg), as_data(ci), outer, as_numel(index),
                                                   shape[dim], inner);
    }
    as_ops_release4(cg, i64, di, ci);
    if (rc) {
        as_release(out);
        return -1;
    }
    gi[0] = out;
    return 0;
}

/* gather, recorded: dim checked and 0-based */
static as_tensor *select_recorded(const char *fn, const as_tensor *a, int dim, const as_tensor *index, bool embedding)
{
    as_grad_scope s = as_grad_begin(1, &a);
    as_tensor *out = gather(fn, a, dim, index, embedding);
    as_node *n = as_grad_end(s, "index_select", index_select_backward, &out, 1, &a);
    if (n) {
        as_node_scalars(n)[0] = dim;
        as_node_save(n, 0, index);
    }
    return out;
}

as_tensor *as_index_select(const as_tensor *a, int dim, const as_tensor *index)
{
    dim = index_select_dim(a, dim, index);
    return dim < 0 ? NULL : select_recorded("index_select", a, dim, index, false);
}

static as_tensor *embedding_forward(const as_tensor *weight, const as_tensor *ids)
{
    if (weight->ndim != 2) {
        as_error_set("embedding: weight must be 2-d (num_embeddings, dim), got %d-d", weight->ndim);
        return NULL;
    }
    if (ids->dtype != AS_I64 && ids->dtype != AS_I32) {
        as_error_set("embedding: ids must be int64 or int32, got %s", as_dtype_name(ids->dtype));
        return NULL;
    }
    if (ids->ndim >= AS_MAX_DIMS) {
        as_error_set("embedding: ids have too many dimensions (%d)", ids->ndim);
        return NULL;
    }
    const as_tensor *ts[2] = {weight, ids};
    if (as_ops_check_device("embedding", 2, ts)) return NULL;
    as_tensor *flat = as_reshape(ids, 1, (int64_t[]){as_numel(ids)});
    as_tensor *rows = flat ? select_recorded("embedding", weight, 0, flat, true) : NULL;
    as_release(flat);
    if (!rows) return NULL;
    int64_t shape[AS_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = weight->shape[1];
    as_tensor *out = as_reshape(rows, ids->ndim + 1, shape);
    as_release(rows);
    return out;
}


/* A composite of recorded ops (index_select, reshape): differentiable as it is. */
as_tensor *as_embedding(const as_tensor *weight, const as_tensor *ids) { return embedding_forward(weight, ids); }

/* cat: each input's gradient is its slice of g along dim. */
static int cat_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    int dim = (int)as_node_scalars(n)[0], k = (int)as_node_scalars(n)[1];
    int64_t start = 0;
    for (int i = 0; i < k; i++) {
        int nd;
        const int64_t *shape;
        as_node_input_shape(n, i, &nd, &shape);
        int64_t len = nd ? shape[dim] : 0;
        if (as_node_needs(n, i) && !(gi[i] = as_narrow(g, dim, start, len))) return -1;
        start += len;
    }
    return 0;
}

as_tensor *as_cat(int n, const as_tensor *const *ts, int dim)
{
    if (n > AS_NODE_MAX_INPUTS && as_autograd_needed(n, ts)) {
        /* more inputs than a node has edges: cat the groups, then the results
         * (cat is associative along one dim), each step recorded */
        int groups = (n + AS_NODE_MAX_INPUTS - 1) / AS_NODE_MAX_INPUTS;
        as_tensor **part = calloc((size_t)groups, sizeof *part);
        int rc = part ? 0 : -1;
        if (!part) as_error_set("out of memory");
        for (int i = 0; i < groups && !rc; i++) {
            int k = i == groups - 1 ? n - i * AS_NODE_MAX_INPUTS : AS_NODE_MAX_INPUTS;
            if (!(part[i] = as_cat(k, ts + i * AS_NODE_MAX_INPUTS, dim))) rc = -1;
        }
        as_tensor *out = rc ? NULL : as_cat(groups, (const as_tensor *const *)part, dim);
        for (int i = 0; part && i < groups; i++) as_release(part[i]);
        free(part);
        return out;
    }
    as_grad_scope s = as_grad_begin(n, ts);
    as_tensor *out = cat_forward(n, ts, dim);
    as_node *node = as_grad_end(s, "cat", cat_backward, &out, n, ts);
    if (!node) return out;
    as_node_scalars(node)[0] = as_wrap_dim("cat", dim, out->ndim), as_node_scalars(node)[1] = n;
    return out;
}
