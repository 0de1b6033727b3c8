/* What base/ lets a layer above it attach, installed once at start
 * (as_autograd_init): base names no layer above it. */
#ifndef AS_BASE_HOOKS_H
#define AS_BASE_HOOKS_H

#include <stdint.h>

#include "attnswap/tensor.h"

/* Frees a dying tensor's autograd state (t->autograd). */
extern void (*as_hook_autograd_free)(as_tensor *t);

/* The views base/ makes, for autograd to record: out is a view (or copy)
 * of in; args per kind (AS_VIEW_PERMUTE: the dims; AS_VIEW_NARROW: dim,
 * start; AS_VIEW_SELECT: dim, index). */
typedef enum {
    AS_VIEW_RESHAPE, /* view, reshape, flatten, squeeze, unsqueeze, alias: same elements, new shape */
    AS_VIEW_PERMUTE, /* permute, transpose */
    AS_VIEW_EXPAND,  /* broadcast: the gradient is summed back */
    AS_VIEW_NARROW,
    AS_VIEW_SELECT,
    AS_VIEW_COPY,    /* contiguous / clone / to_dtype / to_device: the gradient passes as it is */
} as_view_kind;
extern void (*as_hook_view)(as_tensor *out, const as_tensor *in, as_view_kind kind, const int64_t *args);

/* Records a view when in takes part in autograd (the hook decides the rest). */
static inline void as_record_view(as_tensor *out, const as_tensor *in, as_view_kind kind, const int64_t *args)
{
    if (out && in->autograd && as_hook_view) as_hook_view(out, in, kind, args);
}

#endif
