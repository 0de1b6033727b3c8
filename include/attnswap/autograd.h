/* Reverse-mode autograd, recorded in C at each op's front door (PyTorch's
 * design, much simplified).  A tensor that requires grad carries its state
 * in t->autograd: the flag, its .grad (leaves), and the node that made it
 * (results of recorded ops).  A node holds its backward function, the
 * tensors it saved (with their storage's version at save time, so an
 * in-place write in between is an error at backward) and one edge per input
 * (to the node that made it, or to the leaf itself).  as_backward runs the
 * nodes in reverse topological order and accumulates into leaves' grads.
 *
 * Inference pays nothing: with no input requiring grad (or grad mode off),
 * an op records nothing and t->autograd stays NULL. */
#ifndef AS_AUTOGRAD_H
#define AS_AUTOGRAD_H

#include <stdbool.h>

#include "attnswap/tensor.h"

typedef struct as_node as_node;

/* ---- grad mode (thread-local; on by default) ---- */
bool as_grad_enabled(void);
/* Returns the previous mode. */
bool as_set_grad_enabled(bool on);

/* ---- tensors ---- */
/* Marks a leaf as requiring grad (or not): float tensors only, leaves only;
 * 0 or -1 with "requires_grad_: ..." set. */
int as_requires_grad_(as_tensor *t, bool flag);
bool as_requires_grad(const as_tensor *t);
/* Whether t was made by a recorded op (it has a node), i.e. is not a leaf. */
bool as_is_leaf(const as_tensor *t);
/* The accumulated gradient of a leaf (borrowed), NULL before any backward. */
as_tensor *as_grad(const as_tensor *t);
/* Sets (retaining g) or clears (NULL) t's grad; 0 or -1 (shape mismatch). */
int as_set_grad(as_tensor *t, as_tensor *g);
/* A new tensor sharing t's data, out of the graph (requires_grad false). */
as_tensor *as_detach(const as_tensor *t);
/* The name of the op whose node made t ("mul", "matmul", ...), NULL for a leaf. */
const char *as_grad_fn_name(const as_tensor *t);

/* Gradients of root with respect to every leaf that requires grad, added to
 * their .grad.  gradient: d(out)/d(root), root's shape; NULL only for a
 * one-element root (then 1).  retain_graph keeps the saved tensors for a
 * second backward.  0 or -1 with "backward: ..." set. */
int as_backward(as_tensor *root, const as_tensor *gradient, bool retain_graph);
/* Post-accumulate-grad hooks (PyTorch's register_post_accumulate_grad_hook):
 * fn(leaf, ud) runs once per backward for a leaf that requires grad, as soon
 * as its .grad is final for that backward, i.e. after the last node using it
 * (so leaves come in reverse order of use); not when no gradient reached it.
 * DDP starts a bucket's all-reduce from it while the backward goes on.  A
 * hook returning -1 (error set) fails the backward.  Returns a handle >= 1,
 * or -1 (not a leaf, no grad, out of memory: ud is then not freed); free_ud
 * (may be NULL) releases ud when the hook is removed or the tensor dies. */
typedef int (*as_grad_hook_fn)(as_tensor *leaf, void *ud);
int as_register_post_accumulate_grad_hook(as_tensor *t, as_grad_hook_fn fn, void *ud, void (*free_ud)(void *ud));
/* 0, or -1 when t has no hook of that handle (a hook may remove itself). */
int as_remove_grad_hook(as_tensor *t, int handle);
/* Inside a backward function: whether the running backward keeps the graph
 * (a custom function frees the state it keeps for backward when not). */
bool as_backward_retains_graph(void);

/* ---- recording (for op front-ends and custom functions) ----
 * backward(node, grad_out, grad_in): grad_out has the output's shape;
 * write a new reference (or NULL: no gradient) into grad_in[i] for each
 * input; shapes may be broadcast forms of the inputs' (the engine sums them
 * back to each input's shape and casts to its dtype).  0 or -1 (error set). */
typedef int (*as_backward_fn)(as_node *node, const as_tensor *grad_out, as_tensor **grad_in);

#define AS_NODE_MAX_INPUTS 64 /* a node allocates only the edges it has */
#define AS_NODE_MAX_SAVED 6   /* flash_attention: q, k, v, mask, out, lse */

/* Whether an op on these inputs must be recorded: grad mode on and one of
 * them (NULL entries skipped) requires grad. */
bool as_autograd_needed(int n, const as_tensor *const *inputs);

/* An op's front door:
 *     as_grad_scope s = as_grad_begin(2, in);   // recording off inside the op
 *     as_tensor *out = forward(...);
 *     as_node *node = as_grad_end(s, "mul", mul_backward, &out, 2, in);
 *     if (node) ...saves and parameters...
 * as_grad_end records out's node when the op needs one (backward NULL: an
 * op without a backward yet, whose backward is then an error naming it) and
 * returns it; NULL when nothing was recorded, or when recording failed (then
 * *out is released and NULL, the error set). */
typedef struct {
    bool record, prev;
} as_grad_scope;
as_grad_scope as_grad_begin(int n, const as_tensor *const *inputs);
as_node *as_grad_end(as_grad_scope s, const char *name, as_backward_fn backward, as_tensor **out, int n,
                     const as_tensor *const *inputs);
/* Makes out the result of a node named name over the n inputs (NULL entries
 * get no edge); saved tensors and parameters are then set on the returned
 * node.  NULL with the error set (out of memory). */
as_node *as_autograd_record(const char *name, as_backward_fn backward, as_tensor *out, int n,
                            const as_tensor *const *inputs);
/* For an op without a backward yet: when out needs one, it gets a node whose
 * backward is an error naming the op, so a gradient is never silently lost.
 * Returns out (NULL, out released, when recording failed). */
as_tensor *as_autograd_guard(const char *name, as_tensor *out, int n, const as_tensor *const *inputs);
/* Saves t (retained, with its storage's version) at slot i; 0 or -1. */
int as_node_save(as_node *node, int i, const as_tensor *t);
/* The tensor saved at slot i, checked against in-place changes since; NULL
 * with "backward: ... modified by an in-place operation" set. */
as_tensor *as_node_saved(as_node *node, int i);
/* 0, or -1 with "backward: trying to backward through the graph a second
 * time" set when a backward without retain_graph already freed the node's
 * saved state (a custom function keeping its own state checks this). */
int as_node_check_live(as_node *node);
/* Whether input i needs a gradient (requires grad): compute only those. */
bool as_node_needs(const as_node *node, int i);
/* Custom functions (the C API; the Lua bindings build as.autograd.Function
 * on it): record with as_grad_begin/as_grad_end or as_autograd_record, save
 * tensors with as_node_save, and hang any state of your own on the node:
 * host is yours, host_free (may be NULL) releases it when the node dies (a
 * replaced host is released first).  The backward reads it back. */
void as_node_set_host(as_node *node, void *host, void (*host_free)(void *host));
void *as_node_host(const as_node *node);
const char *as_node_name(const as_node *node);
int as_node_ninputs(const as_node *node);
/* Small parameters an op keeps for its backward. */
double *as_node_scalars(as_node *node); /* 4 */
int64_t *as_node_ints(as_node *node);   /* 2 * AS_MAX_DIMS */
/* The shape and dtype input i had. */
void as_node_input_shape(const as_node *node, int i, int *ndim, const int64_t **shape);

/* After dst was overwritten in place with r's values: dst's history becomes
 * r's (an in-place op recorded out of place); when r has none, a non-leaf
 * dst loses its own. */
void as_autograd_rebase(as_tensor *dst, const as_tensor *r);

/* ---- anomaly mode (thread-local; off by default) ----
 * While on, each recorded node keeps the module path its forward ran in
 * (as_anomaly_set_path, kept current by as_module_forward), and a NaN or Inf
 * in a gradient a backward makes is an error naming the op and that path.
 * Off, nothing is copied and nothing checked. */
bool as_anomaly_enabled(void);
bool as_set_anomaly_enabled(bool on); /* returns the previous mode */
/* The current module path (borrowed; NULL outside any module). */
void as_anomaly_set_path(const char *path);
const char *as_anomaly_path(void);

/* ---- in-place writes bump the storage's version (checked at backward) ---- */
void as_bump_version(as_tensor *t);

/* The runtime's start (as_init) installs the hooks base/ calls. */
void as_autograd_init(void);

#endif
