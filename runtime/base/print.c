#include "attnswap/print.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"

#define SUMMARIZE_ABOVE 1000
#define EDGE 3

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_printf(strbuf *sb, const char *fmt, ...) AS_PRINTF(2, 3);

static void sb_printf(strbuf *sb, const char *fmt, ...)
{
    if (sb->failed) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (sb->len + (size_t)n + 1 > sb->cap) {
        size_t cap = (sb->cap ? sb->cap * 2 : 256) + (size_t)n;
        char *p = realloc(sb->buf, cap);
        if (!p) {
            sb->failed = 1;
            return;
        }
        sb->buf = p, sb->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

typedef struct {
    const as_tensor *t;
    int summarize;
    int is_float, int_mode, sci;
    int width;
    strbuf sb;
} printer;

/* Whether index i of a dim of size n is printed, and whether "..." goes before it. */
static int shown(const printer *p, int64_t n, int64_t i)
{
    return !p->summarize || n <= 2 * EDGE || i < EDGE || i >= n - EDGE;
}

/* Element off of the tensor as text; integers are read as integers (a double
 * cannot hold every int64). */
static void format_elem(const printer *p, int64_t off, char *out, size_t size)
{
    const as_tensor *t = p->t;
    double v = as_load_elem(as_data(t), t->dtype, off);
    if (t->dtype == AS_BOOL) snprintf(out, size, "%s", v != 0 ? "true" : "false");
    else if (t->dtype == AS_I64) snprintf(out, size, "%lld", (long long)((const int64_t *)as_data(t))[off]);
    else if (t->dtype == AS_I32) snprintf(out, size, "%d", ((const int32_t *)as_data(t))[off]);
    else if (isnan(v)) snprintf(out, size, "nan");
    else if (isinf(v)) snprintf(out, size, v > 0 ? "inf" : "-inf");
    else if (p->sci) snprintf(out, size, "%.4e", v);
    else if (p->int_mode) snprintf(out, size, "%.0f.", v);
    else snprintf(out, size, "%.4f", v);
}

/* Visits every printed element (for the width pass and the float mode). */
static void scan(printer *p, int dim, int64_t off, double *maxabs, double *minabs, int *all_int)
{
    const as_tensor *t = p->t;
    if (dim == t->ndim) {
        double v = as_load_elem(as_data(t), t->dtype, off);
        char s[64];
        if (isfinite(v)) {
            double a = fabs(v);
            if (a > *maxabs) *maxabs = a;
            if (a != 0 && a < *minabs) *minabs = a;
            if (v != floor(v)) *all_int = 0;
        }
        if (maxabs != minabs) return; /* first pass only collects the mode */
        format_elem(p, off, s, sizeof s);
        if ((int)strlen(s) > p->width) p->width = (int)strlen(s);
        return;
    }
    for (int64_t i = 0; i < t->shape[dim]; i++)
        if (shown(p, t->shape[dim], i)) scan(p, dim + 1, off + i * t->stride[dim], maxabs, minabs, all_int);
}

static void emit(printer *p, int dim, int64_t off, int indent)
{
    const as_tensor *t = p->t;
    if (dim == t->ndim) {
        char s[64];
        format_elem(p, off, s, sizeof s);
        sb_printf(&p->sb, "%*s", p->width, s);
        return;
    }
    int64_t n = t->shape[dim];
    sb_printf(&p->sb, "[");
    for (int64_t i = 0; i < n; i++) {
        if (!shown(p, n, i)) {
            if (i == EDGE) {
                if (dim == t->ndim - 1) sb_printf(&p->sb, "..., ");
                else sb_printf(&p->sb, "...,\n%*s", indent + 1, "");
            }
            continue;
        }
        emit(p, dim + 1, off + i * t->stride[dim], indent + 1);
        if (i < n - 1) {
            if (dim == t->ndim - 1) sb_printf(&p->sb, ", ");
            else {
                sb_printf(&p->sb, ",");
                for (int k = 0; k < t->ndim - dim - 1; k++) sb_printf(&p->sb, "\n");
                sb_printf(&p->sb, "%*s", indent + 1, "");
            }
        }
    }
    sb_printf(&p->sb, "]");
}

char *as_tensor_format(const as_tensor *t0)
{
    as_tensor *t = as_to_device(t0, AS_CPU);
    if (!t) return NULL;
    printer p = {.t = t, .summarize = as_numel(t) > SUMMARIZE_ABOVE, .is_float = as_dtype_is_float(t->dtype)};
    double maxabs = 0, minabs = INFINITY;
    int all_int = 1;
    scan(&p, 0, 0, &maxabs, &minabs, &all_int);
    if (p.is_float) {
        p.int_mode = all_int;
        p.sci = maxabs >= 1e8 || (minabs < 1e-4 && minabs != INFINITY) || (minabs != INFINITY && maxabs / minabs > 1000.0);
        if (all_int && maxabs < 1e8) p.sci = 0;
    }
    double dummy = 0;
    scan(&p, 0, 0, &dummy, &dummy, &all_int);

    sb_printf(&p.sb, "tensor(");
    if (as_numel(t) == 0) {
        sb_printf(&p.sb, "[]");
    } else if (t->ndim == 0) {
        emit(&p, 0, 0, 0);
    } else {
        emit(&p, 0, 0, 7);
    }
    if (as_numel(t) == 0 && t->ndim != 1) {
        char s[128];
        sb_printf(&p.sb, ", size=%s", as_shape_str(s, sizeof s, t->ndim, t->shape));
    }
    if (t->dtype != AS_F32 && t->dtype != AS_I64 && t->dtype != AS_BOOL)
        sb_printf(&p.sb, ", dtype=%s", as_dtype_name(t->dtype));
    if (t0->storage->device.type != AS_DEV_CPU) sb_printf(&p.sb, ", device='%s'", as_device_name(t0->storage->device));
    sb_printf(&p.sb, ")");
    as_release(t);
    if (p.sb.failed) {
        free(p.sb.buf);
        return NULL;
    }
    return p.sb.buf;
}
