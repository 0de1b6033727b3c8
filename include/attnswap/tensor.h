/* A tensor is a view — shape, strides and offset in elements, dtype — over a
 * refcounted storage (the TH split).  Views share storage; nothing here copies
 * data unless its name says so (contiguous, clone, copy_, to_dtype).
 *
 * Dimensions are 0-based in C; the Lua binding maps 1-based and negative
 * dims.  Every function that makes a tensor returns a new reference (release
 * it with as_release) or NULL with the reason in as_error_get(). */
#ifndef AS_TENSOR_H
#define AS_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "attnswap/dtype.h"
#include "attnswap/storage.h"


typedef struct as_tensor {
    int ndim;
    int64_t shape[AS_MAX_DIMS];
    int64_t stride[AS_MAX_DIMS]; /* in elements; 0 for broadcast (expanded) dims */
    int64_t offset;              /* in elements, into storage */
    as_dtype dtype;
    as_storage *storage;
    int refcount;
    /* Autograd's state for this tensor (requires_grad, grad, the node that
     * made it): NULL until a gradient is asked for, so inference pays
     * nothing.  Owned by runtime/autograd (the training issue). */
    struct as_autograd_meta *autograd;
} as_tensor;

/* ---- lifetime ---- */
as_tensor *as_retain(as_tensor *t);
void as_release(as_tensor *t);

/* ---- creation ---- */
as_tensor *as_empty(int ndim, const int64_t *shape, as_dtype dt, as_device dev);
as_tensor *as_full(int ndim, const int64_t *shape, double value, as_dtype dt, as_device dev);
as_tensor *as_zeros(int ndim, const int64_t *shape, as_dtype dt, as_device dev);
as_tensor *as_scalar(double value, as_dtype dt, as_device dev); /* 0-d */
as_tensor *as_empty_like(const as_tensor *t);
/* A view over existing storage; retains s. */
as_tensor *as_from_storage(as_storage *s, int64_t offset, int ndim, const int64_t *shape,
                           const int64_t *stride, as_dtype dt);

/* ---- facts ---- */
int64_t as_numel(const as_tensor *t);
bool as_is_contiguous(const as_tensor *t);
as_device as_tensor_device(const as_tensor *t);
/* Address of the first element (storage base + offset). */
static inline void *as_data(const as_tensor *t)
{
    return (char *)t->storage->data + t->offset * (int64_t)as_dtype_size(t->dtype);
}
/* Contiguous row-major strides for shape; returns numel (or -1 on overflow). */
int64_t as_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
bool as_same_shape(const as_tensor *a, const as_tensor *b);
/* Element at a flat row-major index of the logical tensor, as double (slow; tests and printing). */
double as_get_flat(const as_tensor *t, int64_t i);

/* ---- views (no copy) ---- */
as_tensor *as_alias(const as_tensor *t);
/* view: fails when strides cannot express the new shape; one entry may be -1. */
as_tensor *as_view(const as_tensor *t, int ndim, const int64_t *shape);
/* reshape: a view when possible, otherwise a contiguous copy. */
as_tensor *as_reshape(const as_tensor *t, int ndim, const int64_t *shape);
as_tensor *as_permute(const as_tensor *t, const int *dims);
as_tensor *as_transpose(const as_tensor *t, int d0, int d1);
as_tensor *as_narrow(const as_tensor *t, int dim, int64_t start, int64_t length);
as_tensor *as_select(const as_tensor *t, int dim, int64_t index); /* drops dim */
as_tensor *as_expand(const as_tensor *t, int ndim, const int64_t *shape); /* -1 keeps a size */
as_tensor *as_squeeze(const as_tensor *t, int dim); /* dim < 0: every size-1 dim */
as_tensor *as_unsqueeze(const as_tensor *t, int dim);
as_tensor *as_flatten(const as_tensor *t, int start, int end);

/* ---- copies ---- */
as_tensor *as_contiguous(const as_tensor *t); /* new reference to t itself when already contiguous */
as_tensor *as_clone(const as_tensor *t);
/* dst[...] = src broadcast to dst's shape, converting dtype.  0 or -1. */
int as_copy_(as_tensor *dst, const as_tensor *src);
/* copy_ as the API offers it: recorded for autograd when a gradient is in
 * play (as_copy_ is the raw write that ops use inside their own records). */
int as_copy_tracked_(as_tensor *dst, const as_tensor *src);
int as_fill_(as_tensor *dst, double value);
as_tensor *as_to_dtype(const as_tensor *t, as_dtype dt); /* retains t when dt matches */
as_tensor *as_to_device(const as_tensor *t, as_device dev);

/* ---- shape helpers shared by ops ---- */
/* Broadcast shapes a and b (NumPy rules).  Returns ndim or -1 with an error naming fn. */
int as_broadcast_shape(const char *fn, int na, const int64_t *a, int nb, const int64_t *b,
                       int64_t *out);
/* Normalises a 0-based dim that may be negative (counting from the end); -1 with an error. */
int as_wrap_dim(const char *fn, int dim, int ndim);

#endif
