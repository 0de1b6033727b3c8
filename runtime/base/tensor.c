#include "attnswap/tensor.h"

#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "backend.h"
#include "hooks.h"

static as_tensor *tensor_alloc(void)
{
    as_tensor *t = calloc(1, sizeof *t);
    if (!t) as_error_set("out of memory");
    return t;
}

as_tensor *as_retain(as_tensor *t)
{
    if (t) t->refcount++;
    return t;
}

void (*as_hook_autograd_free)(as_tensor *t);
void (*as_hook_view)(as_tensor *out, const as_tensor *in, as_view_kind kind, const int64_t *args);

void as_release(as_tensor *t)
{
    if (!t || --t->refcount > 0) return;
    if (t->autograd && as_hook_autograd_free) as_hook_autograd_free(t);
    as_storage_release(t->storage);
    free(t);
}

int64_t as_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t n = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (stride) stride[d] = n;
        if (shape[d] != 0 && n > INT64_MAX / shape[d]) return -1;
        n *= shape[d];
    }
    return n;
}

static int check_shape(const char *fn, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > AS_MAX_DIMS) {
        as_error_set("%s: a tensor has 0 to %d dimensions, got %d", fn, AS_MAX_DIMS, ndim);
        return -1;
    }
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0) {
            as_error_set("%s: negative size %lld in dimension %d", fn, (long long)shape[d], d + 1);
            return -1;
        }
    return 0;
}

as_tensor *as_from_storage(as_storage *s, int64_t offset, int ndim, const int64_t *shape,
                           const int64_t *stride, as_dtype dt)
{
    as_tensor *t = tensor_alloc();
    if (!t) return NULL;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    if (stride)
        for (int d = 0; d < ndim; d++) t->stride[d] = stride[d];
    else
        as_contiguous_strides(ndim, shape, t->stride);
    t->offset = offset;
    t->dtype = dt;
    t->storage = as_storage_retain(s);
    t->refcount = 1;
    return t;
}

/* float64 has kernels on the CPU only; 0 or "fn: ..." set. */
static int check_f64_device(const char *fn, as_dtype dt, as_device dev)
{
    if (dt != AS_F64 || dev.type == AS_DEV_CPU) return 0;
    as_error_set("%s: float64 is CPU-only, got device %s (convert to float32 first)", fn, as_device_name(dev));
    return -1;
}

as_tensor *as_empty(int ndim, const int64_t *shape, as_dtype dt, as_device dev)
{
    if (check_shape("empty", ndim, shape) || check_f64_device("empty", dt, dev)) return NULL;
    int64_t n = as_contiguous_strides(ndim, shape, NULL);
    size_t es = as_dtype_size(dt);
    if (n < 0 || (uint64_t)n > SIZE_MAX / es) {
        as_error_set("out of memory (tensor of %s elements is too large)", n < 0 ? "> 2^63" : "many");
        return NULL;
    }
    as_storage *s = as_storage_new((size_t)n * es, dev);
    if (!s) return NULL;
    as_tensor *t = as_from_storage(s, 0, ndim, shape, NULL, dt);
    as_storage_release(s);
    return t;
}

as_tensor *as_full(int ndim, const int64_t *shape, double value, as_dtype dt, as_device dev)
{
    as_tensor *t = as_empty(ndim, shape, dt, dev);
    if (t && as_fill_(t, value)) {
        as_release(t);
        return NULL;
    }
    return t;
}

as_tensor *as_zeros(int ndim, const int64_t *shape, as_dtype dt, as_device dev)
{
    return as_full(ndim, shape, 0.0, dt, dev);
}

as_tensor *as_scalar(double value, as_dtype dt, as_device dev) { return as_full(0, NULL, value, dt, dev); }

as_tensor *as_empty_like(const as_tensor *t)
{
    return as_empty(t->ndim, t->shape, t->dtype, t->storage->device);
}

int64_t as_numel(const as_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

bool as_is_contiguous(const as_tensor *t)
{
    int64_t expected = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] == 0) return true;
        if (t->shape[d] != 1 && t->stride[d] != expected) return false;
        expected *= t->shape[d];
    }
    return true;
}

as_device as_tensor_device(const as_tensor *t) { return t->storage->device; }

bool as_same_shape(const as_tensor *a, const as_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

double as_get_flat(const as_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return as_load_elem(as_data(t), t->dtype, off);
}

int as_wrap_dim(const char *fn, int dim, int ndim)
{
    int n = ndim > 0 ? ndim : 1;
    if (dim < -n || dim >= n) {
        as_error_set("%s: dimension %d out of range for a %d-d tensor (expected %d to %d or %d to -1)",
                     fn, dim >= 0 ? dim + 1 : dim, ndim, 1, n, -n);
        return -1;
    }
    return dim < 0 ? dim + n : dim;
}

int as_broadcast_shape(const char *fn, int na, const int64_t *a, int nb, const int64_t *b,
                       int64_t *out)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t x = i < na ? a[na - 1 - i] : 1, y = i < nb ? b[nb - 1 - i] : 1;
        if (x != y && x != 1 && y != 1) {
            char sa[128], sb[128];
            as_error_set("%s: shapes %s and %s cannot be broadcast together", fn,
                         as_shape_str(sa, sizeof sa, na, a), as_shape_str(sb, sizeof sb, nb, b));
            return -1;
        }
        out[n - 1 - i] = x == 1 ? y : x;
    }
    return n;
}

/* ---- views ---- */

static as_tensor *clone_impl(const as_tensor *t);

static as_tensor *alias_impl(const as_tensor *t)
{
    return as_from_storage(t->storage, t->offset, t->ndim, t->shape, t->stride, t->dtype);
}

as_tensor *as_alias(const as_tensor *t)
{
    as_tensor *v = alias_impl(t);
    as_record_view(v, t, AS_VIEW_RESHAPE, NULL);
    return v;
}

/* Resolves a single -1 entry against numel; -1 on mismatch. */
static int infer_shape(const char *fn, const as_tensor *t, int ndim, const int64_t *in, int64_t *out)
{
    int infer = -1;
    int64_t known = 1;
    if (ndim < 0 || ndim > AS_MAX_DIMS) {
        as_error_set("%s: a tensor has 0 to %d dimensions, got %d", fn, AS_MAX_DIMS, ndim);
        return -1;
    }
    for (int d = 0; d < ndim; d++) {
        out[d] = in[d];
        if (in[d] == -1) {
            if (infer >= 0) {
                as_error_set("%s: only one dimension can be -1", fn);
                return -1;
            }
            infer = d;
        } else if (in[d] < 0) {
            as_error_set("%s: invalid size %lld", fn, (long long)in[d]);
            return -1;
        } else {
            if (in[d] && known > INT64_MAX / in[d]) known = -2; /* overflow: cannot match */
            else if (known >= 0) known *= in[d];
        }
    }
    int64_t n = as_numel(t);
    if (infer >= 0 && known > 0 && n % known == 0) out[infer] = n / known;
    else if (infer >= 0 && known == 0 && n == 0) out[infer] = 0;
    if ((infer >= 0 && (known <= 0 || n % known)) || (infer < 0 && known != n)) {
        if (!(infer >= 0 && known == 0 && n == 0)) {
            char s1[128], s2[128];
            as_error_set("%s: shape %s is invalid for a tensor of shape %s (%lld elements)", fn,
                         as_shape_str(s1, sizeof s1, ndim, in), as_shape_str(s2, sizeof s2, t->ndim, t->shape),
                         (long long)n);
            return -1;
        }
    }
    return 0;
}

/* Strides for viewing t as shape without a copy (PyTorch's computeStride);
 * 0 when possible. */
static int view_strides(const as_tensor *t, int ndim, const int64_t *shape, int64_t *stride)
{
    if (as_numel(t) == 0 || as_is_contiguous(t)) {
        as_contiguous_strides(ndim, shape, stride);
        return 0;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->stride[t->ndim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tensor_numel *= t->shape[d];
        if (d == 0 || (t->shape[d - 1] != 1 && t->stride[d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                stride[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return -1;
            if (d > 0) {
                chunk_base_stride = t->stride[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1 ? 0 : -1;
}

static as_tensor *view_impl(const as_tensor *t, int ndim, const int64_t *shape)
{
    int64_t sh[AS_MAX_DIMS], st[AS_MAX_DIMS];
    if (infer_shape("view", t, ndim, shape, sh)) return NULL;
    if (view_strides(t, ndim, sh, st)) {
        as_error_set("view: the tensor's strides cannot express this shape without a copy "
                     "(call contiguous() first, or use reshape)");
        return NULL;
    }
    return as_from_storage(t->storage, t->offset, ndim, sh, st, t->dtype);
}

as_tensor *as_view(const as_tensor *t, int ndim, const int64_t *shape)
{
    as_tensor *v = view_impl(t, ndim, shape);
    as_record_view(v, t, AS_VIEW_RESHAPE, NULL);
    return v;
}

as_tensor *as_reshape(const as_tensor *t, int ndim, const int64_t *shape)
{
    int64_t sh[AS_MAX_DIMS], st[AS_MAX_DIMS];
    if (infer_shape("reshape", t, ndim, shape, sh)) return NULL;
    as_tensor *v;
    if (view_strides(t, ndim, sh, st) == 0) {
        v = as_from_storage(t->storage, t->offset, ndim, sh, st, t->dtype);
    } else {
        as_tensor *c = clone_impl(t);
        if (!c) return NULL;
        v = as_from_storage(c->storage, 0, ndim, sh, NULL, c->dtype);
        as_release(c);
    }
    as_record_view(v, t, AS_VIEW_RESHAPE, NULL);
    return v;
}

static as_tensor *permute_impl(const as_tensor *t, const int *dims)
{
    int seen[AS_MAX_DIMS] = {0};
    int64_t sh[AS_MAX_DIMS], st[AS_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) {
        int d = as_wrap_dim("permute", dims[i], t->ndim);
        if (d < 0) return NULL;
        if (seen[d]++) {
            as_error_set("permute: dimension %d repeats", d + 1);
            return NULL;
        }
        sh[i] = t->shape[d];
        st[i] = t->stride[d];
    }
    return as_from_storage(t->storage, t->offset, t->ndim, sh, st, t->dtype);
}

as_tensor *as_permute(const as_tensor *t, const int *dims)
{
    as_tensor *v = permute_impl(t, dims);
    if (v && t->autograd) {
        int64_t a[AS_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) a[d] = dims[d];
        as_record_view(v, t, AS_VIEW_PERMUTE, a);
    }
    return v;
}

static as_tensor *transpose_impl(const as_tensor *t, int d0, int d1)
{
    if (t->ndim == 0 && (d0 == 0 || d0 == -1) && (d1 == 0 || d1 == -1)) return alias_impl(t);
    d0 = as_wrap_dim("transpose", d0, t->ndim);
    if (d0 < 0) return NULL;
    d1 = as_wrap_dim("transpose", d1, t->ndim);
    if (d1 < 0) return NULL;
    as_tensor *v = alias_impl(t);
    if (!v) return NULL;
    int64_t s = v->shape[d0], r = v->stride[d0];
    v->shape[d0] = v->shape[d1], v->stride[d0] = v->stride[d1];
    v->shape[d1] = s, v->stride[d1] = r;
    return v;
}

as_tensor *as_transpose(const as_tensor *t, int d0, int d1)
{
    as_tensor *v = transpose_impl(t, d0, d1);
    if (v && t->autograd && t->ndim > 0) {
        int64_t a[AS_MAX_DIMS];
        int i0 = d0 < 0 ? d0 + t->ndim : d0, i1 = d1 < 0 ? d1 + t->ndim : d1;
        for (int d = 0; d < t->ndim; d++) a[d] = d == i0 ? i1 : d == i1 ? i0 : d;
        as_record_view(v, t, AS_VIEW_PERMUTE, a);
    }
    return v;
}

static as_tensor *narrow_impl(const as_tensor *t, int dim, int64_t start, int64_t length)
{
    if (t->ndim == 0) {
        as_error_set("narrow: cannot narrow a 0-d tensor");
        return NULL;
    }
    dim = as_wrap_dim("narrow", dim, t->ndim);
    if (dim < 0) return NULL;
    if (start < 0 || length < 0 || start > t->shape[dim] || length > t->shape[dim] - start) {
        as_error_set("narrow: range [%lld, %lld) is out of bounds for dimension %d of size %lld",
                     (long long)start + 1, (long long)(start + length) + 1, dim + 1,
                     (long long)t->shape[dim]);
        return NULL;
    }
    as_tensor *v = alias_impl(t);
    if (!v) return NULL;
    v->offset += start * t->stride[dim];
    v->shape[dim] = length;
    return v;
}

as_tensor *as_narrow(const as_tensor *t, int dim, int64_t start, int64_t length)
{
    as_tensor *v = narrow_impl(t, dim, start, length);
    if (v && t->autograd) as_record_view(v, t, AS_VIEW_NARROW, (int64_t[]){dim < 0 ? dim + t->ndim : dim, start});
    return v;
}

static as_tensor *select_impl(const as_tensor *t, int dim, int64_t index)
{
    if (t->ndim == 0) {
        as_error_set("select: cannot index a 0-d tensor");
        return NULL;
    }
    dim = as_wrap_dim("select", dim, t->ndim);
    if (dim < 0) return NULL;
    if (index < 0) index += t->shape[dim];
    if (index < 0 || index >= t->shape[dim]) {
        as_error_set("select: index %lld is out of bounds for dimension %d of size %lld",
                     (long long)(index >= 0 ? index + 1 : index - t->shape[dim]), dim + 1,
                     (long long)t->shape[dim]);
        return NULL;
    }
    as_tensor *v = alias_impl(t);
    if (!v) return NULL;
    v->offset += index * t->stride[dim];
    for (int d = dim; d < t->ndim - 1; d++) {
        v->shape[d] = t->shape[d + 1];
        v->stride[d] = t->stride[d + 1];
    }
    v->ndim--;
    return v;
}

as_tensor *as_select(const as_tensor *t, int dim, int64_t index)
{
    as_tensor *v = select_impl(t, dim, index);
    if (v && t->autograd) {
        int d = dim < 0 ? dim + t->ndim : dim;
        as_record_view(v, t, AS_VIEW_SELECT, (int64_t[]){d, index < 0 ? index + t->shape[d] : index});
    }
    return v;
}

static as_tensor *expand_impl(const as_tensor *t, int ndim, const int64_t *shape)
{
    if (ndim < t->ndim || ndim > AS_MAX_DIMS) {
        char s1[128], s2[128];
        as_error_set("expand: cannot expand shape %s to %s", as_shape_str(s1, sizeof s1, t->ndim, t->shape),
                     as_shape_str(s2, sizeof s2, ndim, shape));
        return NULL;
    }
    int64_t sh[AS_MAX_DIMS], st[AS_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int d = ndim - 1; d >= 0; d--) {
        int sd = d - lead;
        int64_t size = shape[d];
        if (sd < 0) {
            if (size < 0) goto bad;
            sh[d] = size, st[d] = 0;
        } else if (size == -1 || size == t->shape[sd]) {
            sh[d] = t->shape[sd], st[d] = t->stride[sd];
        } else if (t->shape[sd] == 1 && size >= 0) {
            sh[d] = size, st[d] = 0;
        } else {
            goto bad;
        }
    }
    return as_from_storage(t->storage, t->offset, ndim, sh, st, t->dtype);
bad: {
    char s1[128], s2[128];
    as_error_set("expand: cannot expand shape %s to %s", as_shape_str(s1, sizeof s1, t->ndim, t->shape),
                 as_shape_str(s2, sizeof s2, ndim, shape));
    return NULL;
}
}

as_tensor *as_expand(const as_tensor *t, int ndim, const int64_t *shape)
{
    as_tensor *v = expand_impl(t, ndim, shape);
    as_record_view(v, t, AS_VIEW_EXPAND, NULL);
    return v;
}

static as_tensor *squeeze_impl(const as_tensor *t, int dim)
{
    as_tensor *v = alias_impl(t);
    if (!v) return NULL;
    if (dim != INT32_MIN && t->ndim > 0) {
        int d = as_wrap_dim("squeeze", dim, t->ndim);
        if (d < 0) {
            as_release(v);
            return NULL;
        }
        if (t->shape[d] != 1) return v;
        for (int i = d; i < t->ndim - 1; i++) v->shape[i] = t->shape[i + 1], v->stride[i] = t->stride[i + 1];
        v->ndim--;
        return v;
    }
    int n = 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != 1) v->shape[n] = t->shape[i], v->stride[n++] = t->stride[i];
    v->ndim = n;
    return v;
}

as_tensor *as_squeeze(const as_tensor *t, int dim)
{
    as_tensor *v = squeeze_impl(t, dim);
    as_record_view(v, t, AS_VIEW_RESHAPE, NULL);
    return v;
}

static as_tensor *unsqueeze_impl(const as_tensor *t, int dim)
{
    if (t->ndim >= AS_MAX_DIMS) {
        as_error_set("unsqueeze: a tensor has at most %d dimensions", AS_MAX_DIMS);
        return NULL;
    }
    if (dim < -(t->ndim + 1) || dim > t->ndim) {
        as_error_set("unsqueeze: dimension %d out of range for a %d-d tensor (expected %d to %d)",
                     dim >= 0 ? dim + 1 : dim, t->ndim, -(t->ndim + 1), t->ndim + 1);
        return NULL;
    }
    if (dim < 0) dim += t->ndim + 1;
    as_tensor *v = alias_impl(t);
    if (!v) return NULL;
    for (int i = t->ndim; i > dim; i--) v->shape[i] = t->shape[i - 1], v->stride[i] = t->stride[i - 1];
    v->shape[dim] = 1;
    v->stride[dim] = dim < t->ndim ? t->shape[dim] * t->stride[dim] : 1;
    v->ndim++;
    return v;
}

as_tensor *as_unsqueeze(const as_tensor *t, int dim)
{
    as_tensor *v = unsqueeze_impl(t, dim);
    as_record_view(v, t, AS_VIEW_RESHAPE, NULL);
    return v;
}

as_tensor *as_flatten(const as_tensor *t, int start, int end)
{
    if (t->ndim == 0) return as_reshape(t, 1, (int64_t[]){1});
    start = as_wrap_dim("flatten", start, t->ndim);
    if (start < 0) return NULL;
    end = as_wrap_dim("flatten", end, t->ndim);
    if (end < 0) return NULL;
    if (start > end) {
        as_error_set("flatten: start dimension %d comes after end dimension %d", start + 1, end + 1);
        return NULL;
    }
    int64_t sh[AS_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < start; d++) sh[n++] = t->shape[d];
    int64_t m = 1;
    for (int d = start; d <= end; d++) m *= t->shape[d];
    sh[n++] = m;
    for (int d = end + 1; d < t->ndim; d++) sh[n++] = t->shape[d];
    return as_reshape(t, n, sh);
}

/* ---- copies ---- */

as_tensor *as_contiguous(const as_tensor *t)
{
    if (as_is_contiguous(t)) return as_retain((as_tensor *)t);
    return as_clone(t);
}

static as_tensor *clone_impl(const as_tensor *t)
{
    as_tensor *c = as_empty_like(t);
    if (c && as_copy_(c, t)) {
        as_release(c);
        return NULL;
    }
    return c;
}

as_tensor *as_clone(const as_tensor *t)
{
    as_tensor *v = clone_impl(t);
    as_record_view(v, t, AS_VIEW_COPY, NULL);
    return v;
}

static int copy_shapes_ok(const as_tensor *dst, const as_tensor *src)
{
    int64_t sh[AS_MAX_DIMS];
    int n = as_broadcast_shape("copy_", dst->ndim, dst->shape, src->ndim, src->shape, sh);
    if (n < 0) return 0;
    for (int d = 0; d < n; d++)
        if (n != dst->ndim || sh[d] != dst->shape[d]) {
            char s1[128], s2[128];
            as_error_set("copy_: source of shape %s does not broadcast to destination shape %s",
                         as_shape_str(s1, sizeof s1, src->ndim, src->shape),
                         as_shape_str(s2, sizeof s2, dst->ndim, dst->shape));
            return 0;
        }
    return 1;
}

int as_copy_(as_tensor *dst, const as_tensor *src)
{
    if (!copy_shapes_ok(dst, src)) return -1;
    dst->storage->version++; /* an in-place write (autograd checks what it saved) */
    /* the backend of the device that is not the CPU (if any) moves the data */
    as_device dev = dst->storage->device.type != AS_DEV_CPU ? dst->storage->device : src->storage->device;
    const as_backend *b = as_backend_for("copy_", dev);
    return b ? b->copy(dst, src) : -1;
}

int as_fill_(as_tensor *dst, double value)
{
    dst->storage->version++;
    const as_backend *b = as_backend_for("fill_", dst->storage->device);
    as_kview d = as_kview_of(dst);
    return b ? b->check("fill_", b->fill(&d, value)) : -1;
}

/* t as dt on dev: t itself (a new reference) when it already is, else a
 * converted copy, recorded for autograd as a copy (its gradient goes back
 * converted to t's dtype and device). */
static as_tensor *converted(const as_tensor *t, as_dtype dt, as_device dev)
{
    if (t->dtype == dt && as_device_equal(t->storage->device, dev)) return as_retain((as_tensor *)t);
    if (check_f64_device("to", dt, dev)) return NULL;
    as_tensor *c = as_empty(t->ndim, t->shape, dt, dev);
    if (c && as_copy_(c, t)) {
        as_release(c);
        return NULL;
    }
    as_record_view(c, t, AS_VIEW_COPY, NULL);
    return c;
}

as_tensor *as_to_dtype(const as_tensor *t, as_dtype dt) { return converted(t, dt, t->storage->device); }

as_tensor *as_to_device(const as_tensor *t, as_device dev) { return converted(t, t->dtype, dev); }
