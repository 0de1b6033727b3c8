/* Autograd: tensors' state, nodes, grad mode and the engine (autograd.h).
 *
 * Ownership: a non-leaf tensor holds a reference to the node that made it;
 * a node holds references to the nodes of its inputs and to its input
 * leaves (so the graph keeps what it needs alive), and to the tensors it
 * saved until a backward frees them.  Nothing points forward, so there are
 * no cycles. */
#include "attnswap/autograd.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "attnswap/ops.h"
#include "hooks.h"

/* A leaf's post-accumulate-grad hook (fn NULL: removed while the hooks ran). */
typedef struct grad_hook {
    struct grad_hook *next;
    int id;
    as_grad_hook_fn fn;
    void *ud;
    void (*free_ud)(void *ud);
} grad_hook;

struct as_autograd_meta {
    bool requires_grad;
    as_tensor *grad;  /* leaves: the accumulated gradient */
    as_node *grad_fn; /* non-leaves: the node that made the tensor */
    grad_hook *hooks; /* leaves: in registration order */
    int last_hook;    /* the last handle given */
    bool firing;      /* its hooks are running: removal is deferred */
    /* the engine's scratch: edges of this backward still to come, and
     * whether one of them brought a gradient */
    int pending;
    bool got;
    as_tensor *slices; /* the engine's scratch: the slices' gradients summed in place (run_slice_node) */
};

typedef struct {
    as_node *node;   /* the input's node, or NULL */
    as_tensor *leaf; /* or the input itself, a leaf that requires grad */
    int ndim;
    int64_t shape[AS_MAX_DIMS];
    as_dtype dtype;
    as_device device;
} as_edge;

typedef struct {
    as_tensor *t;
    uint64_t version;
} as_saved;

struct as_node {
    int refcount;
    const char *name;
    as_backward_fn backward;
    as_saved saved[AS_NODE_MAX_SAVED];
    bool released; /* saved tensors freed by a backward without retain_graph */
    double scalars[4];
    int64_t ints[2 * AS_MAX_DIMS];
    void *host; /* a custom function's state, released by host_free */
    void (*host_free)(void *host);
    char *path; /* anomaly mode: the module path its forward ran in */
    bool anomaly; /* recorded in anomaly mode (path NULL: outside any module) */
    /* the engine's scratch */
    int pending;
    as_tensor *grad;
    bool grad_own; /* grad is the engine's alone: a slice may be added into it in place */
    int ninputs;
    as_edge in[]; /* ninputs edges */
};

/* ---- grad mode ---- */

static _Thread_local bool grad_off;

bool as_grad_enabled(void) { return !grad_off; }

bool as_set_grad_enabled(bool on)
{
    bool prev = !grad_off;
    grad_off = !on;
    return prev;
}

/* ---- anomaly mode: where each node's forward ran, NaN/Inf checks ---- */

static _Thread_local bool anomaly;
static _Thread_local const char *forward_path;

bool as_anomaly_enabled(void) { return anomaly; }

bool as_set_anomaly_enabled(bool on)
{
    bool prev = anomaly;
    anomaly = on;
    return prev;
}

void as_anomaly_set_path(const char *path) { forward_path = path; }

const char *as_anomaly_path(void) { return forward_path; }

/* ---- nodes ---- */

static as_node *node_retain(as_node *n)
{
    if (n) n->refcount++;
    return n;
}

static void free_saved(as_node *n)
{
    for (int i = 0; i < AS_NODE_MAX_SAVED; i++) {
        as_release(n->saved[i].t);
        n->saved[i].t = NULL;
    }
}

static void node_release(as_node *n)
{
    if (!n || --n->refcount > 0) return;
    free_saved(n);
    for (int i = 0; i < n->ninputs; i++) {
        node_release(n->in[i].node);
        as_release(n->in[i].leaf);
    }
    as_release(n->grad);
    if (n->host_free) n->host_free(n->host);
    free(n->path);
    free(n);
}

static struct as_autograd_meta *meta_of(as_tensor *t)
{
    if (!t->autograd) t->autograd = calloc(1, sizeof *t->autograd);
    if (!t->autograd) as_error_set("out of memory");
    return t->autograd;
}

static void free_hook(grad_hook *h)
{
    if (h->free_ud) h->free_ud(h->ud);
    free(h);
}

static void free_meta(as_tensor *t)
{
    struct as_autograd_meta *m = t->autograd;
    for (grad_hook *h = m->hooks, *next; h; h = next) next = h->next, free_hook(h);
    as_release(m->grad);
    as_release(m->slices);
    node_release(m->grad_fn);
    free(m);
    t->autograd = NULL;
}

bool as_requires_grad(const as_tensor *t) { return t && t->autograd && t->autograd->requires_grad; }

bool as_is_leaf(const as_tensor *t) { return !(t->autograd && t->autograd->grad_fn); }

as_tensor *as_grad(const as_tensor *t) { return t->autograd ? t->autograd->grad : NULL; }

const char *as_grad_fn_name(const as_tensor *t)
{
    return t->autograd && t->autograd->grad_fn ? t->autograd->grad_fn->name : NULL;
}

int as_requires_grad_(as_tensor *t, bool flag)
{
    if (flag && !as_dtype_is_float(t->dtype)) {
        as_error_set("requires_grad_: only floating-point tensors can require gradients, got %s",
                     as_dtype_name(t->dtype));
        return -1;
    }
    if (!as_is_leaf(t)) {
        if (flag) return 0; /* already part of the graph */
        as_error_set("requires_grad_: t is the result of an operation (%s), not a leaf: use t:detach()",
                     t->autograd->grad_fn->name);
        return -1;
    }
    if (!flag && !t->autograd) return 0;
    struct as_autograd_meta *m = meta_of(t);
    if (!m) return -1;
    m->requires_grad = flag;
    return 0;
}

int as_set_grad(as_tensor *t, as_tensor *g)
{
    if (g && !as_same_shape(g, t)) {
        char s1[128], s2[128];
        as_error_set("grad: assigned gradient of shape %s does not match the tensor's %s",
                     as_shape_str(s1, sizeof s1, g->ndim, g->shape), as_shape_str(s2, sizeof s2, t->ndim, t->shape));
        return -1;
    }
    if (!g && !t->autograd) return 0;
    struct as_autograd_meta *m = meta_of(t);
    if (!m) return -1;
    as_release(m->grad);
    m->grad = g ? as_retain(g) : NULL;
    return 0;
}

as_tensor *as_detach(const as_tensor *t)
{
    as_tensor *d = as_from_storage(t->storage, t->offset, t->ndim, t->shape, t->stride, t->dtype);
    return d; /* a fresh view: no autograd state */
}

void as_bump_version(as_tensor *t) { t->storage->version++; }

void as_autograd_rebase(as_tensor *dst, const as_tensor *r)
{
    as_node *fn = r->autograd ? r->autograd->grad_fn : NULL;
    if (!fn) { /* dst now holds values with no history: its old one no longer applies */
        if (dst->autograd && dst->autograd->grad_fn) {
            node_release(dst->autograd->grad_fn);
            dst->autograd->grad_fn = NULL;
            dst->autograd->requires_grad = false;
        }
        return;
    }
    struct as_autograd_meta *m = meta_of(dst);
    if (!m) return;
    node_release(m->grad_fn);
    m->grad_fn = node_retain(fn);
    m->requires_grad = true;
}

bool as_autograd_needed(int n, const as_tensor *const *inputs)
{
    if (grad_off) return false;
    for (int i = 0; i < n; i++)
        if (as_requires_grad(inputs[i])) return true;
    return false;
}

as_node *as_autograd_record(const char *name, as_backward_fn backward, as_tensor *out, int n,
                            const as_tensor *const *inputs)
{
    if (n < 0 || n > AS_NODE_MAX_INPUTS) {
        as_error_set("%s: a recorded op takes at most %d inputs, got %d", name, AS_NODE_MAX_INPUTS, n);
        return NULL;
    }
    as_node *node = calloc(1, sizeof *node + sizeof(as_edge) * (size_t)n);
    struct as_autograd_meta *m = node ? meta_of(out) : NULL;
    char *path = node && anomaly && forward_path ? malloc(strlen(forward_path) + 1) : NULL;
    if (path) strcpy(path, forward_path);
    if (!node || !m || (anomaly && forward_path && !path)) {
        free(node), free(path);
        as_error_set("out of memory");
        return NULL;
    }
    node->path = path;
    node->anomaly = anomaly;
    node->refcount = 1;
    node->name = name;
    node->backward = backward;
    node->ninputs = n;
    for (int i = 0; i < n; i++) {
        const as_tensor *t = inputs[i];
        as_edge *e = &node->in[i];
        if (!t) continue;
        e->ndim = t->ndim, e->dtype = t->dtype, e->device = as_tensor_device(t);
        memcpy(e->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
        if (!as_requires_grad(t)) continue;
        if (t->autograd->grad_fn) e->node = node_retain(t->autograd->grad_fn);
        else e->leaf = as_retain((as_tensor *)t);
    }
    node_release(m->grad_fn); /* an inner op's node, replaced by the outer op's */
    m->grad_fn = node;
    m->requires_grad = true;
    return node;
}

int as_node_save(as_node *node, int i, const as_tensor *t)
{
    /* a detached view: the data and its version, no history (saving an op's
     * own output with its node would make a cycle) */
    as_tensor *d = as_detach(t);
    if (!d) return -1;
    as_release(node->saved[i].t);
    node->saved[i].t = d;
    node->saved[i].version = t->storage->version;
    return 0;
}

as_tensor *as_node_saved(as_node *node, int i)
{
    as_saved *s = &node->saved[i];
    if (as_node_check_live(node)) return NULL;
    if (s->t && s->t->storage->version != s->version) {
        as_error_set("backward: a tensor %s saved for its gradient was modified by an in-place operation "
                     "(version %llu, now %llu)", node->name, (unsigned long long)s->version,
                     (unsigned long long)s->t->storage->version);
        return NULL;
    }
    return s->t;
}

int as_node_check_live(as_node *node)
{
    if (!node->released) return 0;
    as_error_set("backward: trying to backward through the graph a second time (or to read %s's saved tensors "
                 "after they were freed): pass {retain_graph = true} to the first backward", node->name);
    return -1;
}

bool as_node_needs(const as_node *node, int i) { return node->in[i].node || node->in[i].leaf; }

void as_node_set_host(as_node *node, void *host, void (*host_free)(void *host))
{
    if (node->host_free) node->host_free(node->host);
    node->host = host;
    node->host_free = host_free;
}

void *as_node_host(const as_node *node) { return node->host; }

const char *as_node_name(const as_node *node) { return node->name; }

int as_node_ninputs(const as_node *node) { return node->ninputs; }

double *as_node_scalars(as_node *node) { return node->scalars; }
int64_t *as_node_ints(as_node *node) { return node->ints; }

void as_node_input_shape(const as_node *node, int i, int *ndim, const int64_t **shape)
{
    *ndim = node->in[i].ndim;
    *shape = node->in[i].shape;
}

/* ---- the engine ---- */

static _Thread_local bool retaining; /* the running backward's retain_graph */

/* g summed over the dims it gained by broadcasting to reach (ndim, shape). */
/* g's first `lead` dims summed away in one product, ones(1, P) @ g as (P, Q):
 * a bias's gradient over (B, L, C) rows.  Reducing one leading dim at a time
 * moved each to the last place (a transposing copy) and then summed rows of
 * B elements, one block each on a GPU; the product streams g once, through
 * cuBLAS or OpenBLAS, in the gradient's dtype with float32 accumulation. */
static as_tensor *sum_leading(const as_tensor *g, int lead)
{
    int64_t P = 1, Q = 1;
    for (int d = 0; d < g->ndim; d++) *(d < lead ? &P : &Q) *= g->shape[d];
    as_tensor *g2 = as_reshape(g, 2, (int64_t[]){P, Q});
    as_tensor *ones = g2 ? as_full(2, (int64_t[]){1, P}, 1.0, g->dtype, as_tensor_device(g)) : NULL;
    as_tensor *s = ones ? as_matmul(ones, g2) : NULL;
    as_tensor *r = s ? as_reshape(s, g->ndim - lead, g->shape + lead) : NULL;
    as_release(g2), as_release(ones), as_release(s);
    return r;
}

static as_tensor *sum_to(as_tensor *g, int ndim, const int64_t *shape)
{
    as_tensor *r = as_retain(g);
    /* a leading dim of size 1 is dropped as a view, not summed (a copy) */
    while (r && r->ndim > ndim && r->shape[0] == 1) {
        as_tensor *s = as_select(r, 0, 0);
        as_release(r);
        r = s;
    }
    if (r && r->ndim > ndim && as_dtype_is_float(r->dtype) && as_numel(r) > 0) {
        as_tensor *s = sum_leading(r, r->ndim - ndim);
        as_release(r);
        r = s;
    }
    while (r && r->ndim > ndim) { /* an empty (or non-float) gradient: a dim at a time */
        as_tensor *s = as_reduce(AS_SUM, r, 0, false, 0);
        as_release(r);
        r = s;
    }
    for (int d = 0; r && d < ndim; d++) {
        if (shape[d] == 1 && r->shape[d] != 1) {
            as_tensor *s = as_reduce(AS_SUM, r, d, true, 0);
            as_release(r);
            r = s;
        }
    }
    return r;
}

/* acc (a new reference or NULL) += g, consuming nothing: a new tensor. */
static as_tensor *add_grads(as_tensor *acc, const as_tensor *g)
{
    if (!acc) return as_contiguous(g);
    as_tensor *s = as_binary(AS_ADD, acc, g);
    as_release(acc);
    return s;
}

typedef struct {
    void **v; /* nodes, or leaves (as_tensor) */
    int n, cap;
} node_list;

static int push(node_list *l, void *n)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        void **v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) {
            as_error_set("out of memory");
            return -1;
        }
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = n;
    return 0;
}

/* Every node reachable from root, with pending = how many edges point at
 * it; and every leaf, with its own pending count (its hooks run when it
 * falls to 0: the leaf's .grad is then final for this backward). */
static int collect(as_node *root, node_list *all, node_list *leaves)
{
    node_list stack = {0};
    int rc = push(&stack, root) || push(all, root);
    root->pending = 0;
    while (!rc && stack.n > 0) {
        as_node *n = stack.v[--stack.n];
        for (int i = 0; i < n->ninputs && !rc; i++) {
            as_tensor *leaf = n->in[i].leaf;
            if (leaf && leaf->autograd && leaf->autograd->pending++ == 0) rc = push(leaves, leaf);
            as_node *m = n->in[i].node;
            if (!m) continue;
            if (m->pending++ == 0) rc = push(&stack, m) || push(all, m); /* first visit (pending starts at 0) */
        }
    }
    free(stack.v);
    return rc;
}

static int accumulate_leaf(as_tensor *leaf, as_tensor *g)
{
    struct as_autograd_meta *m = leaf->autograd;
    as_tensor *sum = add_grads(m->grad ? as_retain(m->grad) : NULL, g);
    if (!sum) return -1;
    as_release(m->grad);
    m->grad = sum;
    return 0;
}

static int run_hooks(as_tensor *leaf)
{
    struct as_autograd_meta *m = leaf->autograd;
    int rc = 0;
    m->firing = true;
    for (grad_hook *h = m->hooks; h && !rc; h = h->next)
        if (h->fn) rc = h->fn(leaf, h->ud);
    m->firing = false;
    for (grad_hook **p = &m->hooks; *p;) { /* the ones removed meanwhile go now */
        grad_hook *h = *p;
        if (h->fn) {
            p = &h->next;
        } else {
            *p = h->next;
            free_hook(h);
        }
    }
    return rc;
}

/* One edge into leaf has been handled (got: it brought a gradient); after
 * the last one the leaf's hooks run, if any gradient came. */
static int leaf_arrived(as_tensor *leaf, bool got, int rc)
{
    struct as_autograd_meta *m = leaf->autograd;
    if (!m || m->pending <= 0) return rc;
    m->got = m->got || got;
    if (--m->pending > 0) return rc;
    if (m->slices) { /* the slices' sum joins .grad once, before the hooks see it */
        if (!rc) rc = accumulate_leaf(leaf, m->slices);
        as_release(m->slices);
        m->slices = NULL;
    }
    if (!m->got) return rc;
    m->got = false;
    return rc ? rc : run_hooks(leaf);
}

int as_register_post_accumulate_grad_hook(as_tensor *t, as_grad_hook_fn fn, void *ud, void (*free_ud)(void *ud))
{
    const char *err = !fn                     ? "expected a function"
                      : !as_requires_grad(t) ? "the tensor does not require grad"
                      : !as_is_leaf(t)       ? "the tensor is not a leaf (hooks go on leaves)"
                                             : NULL;
    grad_hook *h = err ? NULL : calloc(1, sizeof *h);
    if (!h) {
        as_error_set("register_post_accumulate_grad_hook: %s", err ? err : "out of memory");
        return -1;
    }
    struct as_autograd_meta *m = t->autograd;
    *h = (grad_hook){.id = ++m->last_hook, .fn = fn, .ud = ud, .free_ud = free_ud};
    grad_hook **p = &m->hooks;
    while (*p) p = &(*p)->next;
    *p = h;
    return h->id;
}

int as_remove_grad_hook(as_tensor *t, int handle)
{
    struct as_autograd_meta *m = t->autograd;
    for (grad_hook **p = m ? &m->hooks : NULL; p && *p; p = &(*p)->next) {
        grad_hook *h = *p;
        if (h->id != handle || !h->fn) continue;
        if (m->firing) { /* the running loop holds it: freed when it ends */
            h->fn = NULL;
            return 0;
        }
        *p = h->next;
        free_hook(h);
        return 0;
    }
    as_error_set("remove_post_accumulate_grad_hook: the tensor has no hook %d", handle);
    return -1;
}

/* The gradient for an input in its shape, dtype and device (a new
 * reference): t.to("cuda") sends its gradient back to t's device. */
static as_tensor *fit(const as_edge *e, as_tensor *g)
{
    as_tensor *s = sum_to(g, e->ndim, e->shape);
    if (s && s->dtype != e->dtype) {
        as_tensor *c = as_to_dtype(s, e->dtype);
        as_release(s);
        s = c;
    }
    if (s && !as_device_equal(as_tensor_device(s), e->device)) {
        as_tensor *c = as_to_device(s, e->device);
        as_release(s);
        s = c;
    }
    return s;
}

/* Anomaly mode: 0 when every gradient n made is finite, else the error
 * naming the op and the module path its forward ran in. */
static int check_finite(const as_node *n, as_tensor *const *grad_in)
{
    for (int i = 0; i < n->ninputs; i++) {
        if (!grad_in[i] || !as_dtype_is_float(grad_in[i]->dtype)) continue;
        /* read in its own dtype (a float64 beyond float32's range is no Inf) */
        as_tensor *h = as_to_device(grad_in[i], AS_CPU);
        as_tensor *c = h ? as_contiguous(h) : NULL;
        as_release(h);
        if (!c) return -1;
        int64_t k = as_numel(c);
        const char *bad = NULL;
        for (int64_t j = 0; j < k && !bad; j++) {
            double v = as_get_flat(c, j);
            if (!isfinite(v)) bad = isnan(v) ? "NaN" : "Inf";
        }
        as_release(c);
        if (bad) {
            const char *where = n->path ? n->path
                              : n->anomaly ? "no module"
                                           : "? (recorded before anomaly detection was on)";
            as_error_set("backward: %s produced %s in its gradient for input %d (forward in %s)", n->name, bad, i + 1,
                         where);
            return -1;
        }
    }
    return 0;
}

static int view_backward(as_node *n, const as_tensor *g, as_tensor **gi);

/* Whether n is a narrow or select whose gradient can go straight into its
 * input's pending gradient (a node's, or a leaf's sum of slices; no anomaly
 * check, which reads each node's whole gradient). */
static bool slice_into_input(const as_node *n)
{
    if (n->backward != view_backward || anomaly || n->ninputs != 1 || !(n->in[0].node || n->in[0].leaf))
        return false;
    as_view_kind k = (as_view_kind)(int)n->scalars[0];
    return k == AS_VIEW_NARROW || k == AS_VIEW_SELECT;
}

/* The backward of a narrow or select: its gradient added in place into the
 * slice of the input's pending gradient, which is made once (zeros of the
 * input's shape) and then owned by the engine.  The generic path makes a
 * zero tensor of the input's shape per slice and adds them whole: for a
 * fused qkv projection split in three, three zero tensors and two full adds
 * a layer. */
/* g added in place into the slice n took of *acc (made zeros of the edge's shape when NULL) */
static int add_slice(const as_node *n, const as_edge *e, as_tensor **acc, const as_tensor *g)
{
    if (!*acc && !(*acc = as_zeros(e->ndim, e->shape, e->dtype, e->device))) return -1;
    int dim = (int)n->ints[0];
    as_tensor *slice = (as_view_kind)(int)n->scalars[0] == AS_VIEW_NARROW ? as_narrow(*acc, dim, n->ints[1], g->shape[dim])
                                                                        : as_select(*acc, dim, n->ints[1]);
    int rc = !slice || as_binary_(AS_ADD, slice, g) ? -1 : 0;
    as_release(slice);
    return rc;
}

static int run_slice_node(as_node *n, node_list *ready, bool retain)
{
    as_edge *e = &n->in[0];
    as_node *m = e->node;
    int rc = 0;
    if (!m) { /* a leaf: its slices sum apart, and join .grad when its last edge arrives */
        if (n->grad) rc = add_slice(n, e, &e->leaf->autograd->slices, n->grad);
        rc = leaf_arrived(e->leaf, n->grad != NULL, rc);
    } else {
        if (n->grad && (!m->grad || !m->grad_own)) { /* an accumulator of the engine's own */
            as_tensor *z = as_zeros(e->ndim, e->shape, e->dtype, e->device);
            if (!z || (m->grad && as_copy_(z, m->grad))) {
                as_release(z);
                rc = -1;
            } else {
                as_release(m->grad);
                m->grad = z;
                m->grad_own = true;
            }
        }
        if (!rc && n->grad) rc = add_slice(n, e, &m->grad, n->grad);
        if (--m->pending == 0 && !rc) rc = push(ready, m);
    }
    as_release(n->grad);
    n->grad = NULL;
    if (!retain) {
        free_saved(n);
        n->released = true;
    }
    return rc;
}

static int run_node(as_node *n, node_list *ready, bool retain)
{
    if (slice_into_input(n)) return run_slice_node(n, ready, retain);
    as_tensor *grad_in[AS_NODE_MAX_INPUTS] = {NULL};
    int rc = n->backward(n, n->grad, grad_in);
    if (!rc && anomaly) rc = check_finite(n, grad_in);
    as_release(n->grad);
    n->grad = NULL;
    for (int i = 0; i < n->ninputs; i++) {
        as_edge *e = &n->in[i];
        if (!rc && grad_in[i] && (e->node || e->leaf)) {
            as_tensor *g = fit(e, grad_in[i]);
            if (!g) rc = -1;
            else if (e->leaf) rc = accumulate_leaf(e->leaf, g);
            else {
                /* the sum of two is a new tensor, the engine's alone; a first gradient may be
                 * shared, and is kept in its layout: a transpose's gradient goes on as a view
                 * (each backward takes any strides), not as a copy; a leaf's .grad is made
                 * contiguous (accumulate_leaf) */
                e->node->grad_own = e->node->grad != NULL;
                if (!(e->node->grad = e->node->grad ? add_grads(e->node->grad, g) : as_retain(g))) rc = -1;
            }
            as_release(g);
        }
        if (e->leaf) rc = leaf_arrived(e->leaf, grad_in[i] != NULL, rc);
        if (e->node && --e->node->pending == 0 && !rc) rc = push(ready, e->node);
        as_release(grad_in[i]);
    }
    if (!retain) {
        free_saved(n);
        n->released = true;
    }
    return rc;
}

int as_backward(as_tensor *root, const as_tensor *gradient, bool retain_graph)
{
    if (!as_requires_grad(root)) {
        as_error_set("backward: the tensor does not require grad and has no grad_fn (no input of the "
                     "computation required grad, or it ran under no_grad)");
        return -1;
    }
    if (gradient && !as_same_shape(gradient, root)) {
        char s1[128], s2[128];
        as_error_set("backward: gradient of shape %s does not match the output's %s",
                     as_shape_str(s1, sizeof s1, gradient->ndim, gradient->shape),
                     as_shape_str(s2, sizeof s2, root->ndim, root->shape));
        return -1;
    }
    if (!gradient && as_numel(root) != 1) {
        char s1[128];
        as_error_set("backward: grad can be implicitly created only for scalar outputs, got shape %s: "
                     "pass a gradient of that shape", as_shape_str(s1, sizeof s1, root->ndim, root->shape));
        return -1;
    }
    bool prev = as_set_grad_enabled(false), prev_retain = retaining;
    retaining = retain_graph;
    as_tensor *g = gradient ? as_contiguous(gradient) : as_full(root->ndim, root->shape, 1.0, root->dtype,
                                                                  as_tensor_device(root));
    int rc = g ? 0 : -1;
    if (!rc && !root->autograd->grad_fn) { /* a leaf: its own gradient */
        rc = accumulate_leaf(root, g);
        if (!rc && root->autograd->hooks) rc = run_hooks(root);
    } else if (!rc) {
        as_node *top = root->autograd->grad_fn;
        node_list all = {0}, ready = {0}, leaves = {0};
        rc = collect(top, &all, &leaves);
        if (!rc) {
            top->grad = as_retain(g);
            top->grad_own = false;
            rc = push(&ready, top);
        }
        while (!rc && ready.n > 0) rc = run_node(ready.v[--ready.n], &ready, retain_graph);
        for (int i = 0; i < all.n; i++) { /* on an error, drop what is left */
            as_node *n = all.v[i];
            as_release(n->grad);
            n->grad = NULL;
            n->grad_own = false;
            n->pending = 0;
        }
        for (int i = 0; i < leaves.n; i++) {
            as_tensor *leaf = leaves.v[i];
            leaf->autograd->pending = 0, leaf->autograd->got = false;
            as_release(leaf->autograd->slices);
            leaf->autograd->slices = NULL;
        }
        free(all.v), free(ready.v), free(leaves.v);
    }
    as_release(g);
    as_set_grad_enabled(prev);
    retaining = prev_retain;
    return rc;
}

bool as_backward_retains_graph(void) { return retaining; }

static int unsupported_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    (void)g, (void)gi;
    as_error_set("backward: %s has no backward yet (the training issue lands it op by op); its inputs "
                 "got no gradient", (const char *)(intptr_t)n->ints[0]);
    return -1;
}

as_grad_scope as_grad_begin(int n, const as_tensor *const *inputs)
{
    as_grad_scope s = {as_autograd_needed(n, inputs), true};
    if (s.record) s.prev = as_set_grad_enabled(false);
    return s;
}

as_node *as_grad_end(as_grad_scope s, const char *name, as_backward_fn backward, as_tensor **out, int n,
                     const as_tensor *const *inputs)
{
    if (!s.record) return NULL;
    as_set_grad_enabled(s.prev);
    if (!*out) return NULL;
    as_node *node = as_autograd_record(name, backward ? backward : unsupported_backward, *out, n, inputs);
    if (!node) {
        as_release(*out);
        *out = NULL;
        return NULL;
    }
    if (!backward) node->ints[0] = (int64_t)(intptr_t)name;
    return node;
}

as_tensor *as_autograd_guard(const char *name, as_tensor *out, int n, const as_tensor *const *inputs)
{
    as_grad_scope s = {as_autograd_needed(n, inputs), as_grad_enabled()};
    as_grad_end(s, name, NULL, &out, n, inputs);
    return out;
}

/* ---- views (recorded by base/ through its hook) ---- */

static int view_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    int ndim;
    const int64_t *shape;
    as_node_input_shape(n, 0, &ndim, &shape);
    const int64_t *a = n->ints;
    switch ((as_view_kind)(int)n->scalars[0]) {
    case AS_VIEW_RESHAPE:
        gi[0] = as_reshape(g, ndim, shape);
        break;
    case AS_VIEW_PERMUTE: { /* the inverse permutation */
        int inv[AS_MAX_DIMS];
        for (int d = 0; d < ndim; d++) inv[a[d]] = d;
        gi[0] = as_permute(g, inv);
        break;
    }
    case AS_VIEW_NARROW:
    case AS_VIEW_SELECT: { /* zeros of the input's shape, the gradient in the slice */
        as_tensor *z = as_zeros(ndim, shape, g->dtype, as_tensor_device(g));
        int dim = (int)a[0];
        as_tensor *slice = !z ? NULL
                           : (as_view_kind)(int)n->scalars[0] == AS_VIEW_NARROW ? as_narrow(z, dim, a[1], g->shape[dim])
                                                                               : as_select(z, dim, a[1]);
        if (!slice || as_copy_(slice, g)) {
            as_release(z), as_release(slice);
            return -1;
        }
        as_release(slice);
        gi[0] = z;
        break;
    }
    case AS_VIEW_EXPAND: /* the engine sums back to the input's shape */
    case AS_VIEW_COPY:
        gi[0] = as_retain((as_tensor *)g);
        break;
    }
    return gi[0] ? 0 : -1;
}

static const char *view_name(as_view_kind kind)
{
    static const char *const names[] = {"view", "permute", "expand", "narrow", "select", "copy"};
    return names[kind];
}

static void record_view(as_tensor *out, const as_tensor *in, as_view_kind kind, const int64_t *args)
{
    if (!as_autograd_needed(1, &in)) return;
    as_node *n = as_autograd_record(view_name(kind), view_backward, out, 1, &in);
    if (!n) return; /* out of memory: the result simply carries no gradient */
    n->scalars[0] = kind;
    int nargs = kind == AS_VIEW_PERMUTE ? in->ndim : kind == AS_VIEW_NARROW || kind == AS_VIEW_SELECT ? 2 : 0;
    for (int i = 0; i < nargs; i++) n->ints[i] = args[i];
}

void as_autograd_init(void)
{
    as_hook_autograd_free = free_meta;
    as_hook_view = record_view;
}
