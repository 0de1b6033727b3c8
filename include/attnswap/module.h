/* The module tree, owned by C.  A module has a class (its type name and a
 * forward), ordered named children, parameters and buffers, a training flag,
 * and an opaque config for its class.  A forward is C (built-in layers) or
 * Lua (classes written in scripts, called back through the hook that the
 * bindings install), so a tree of built-in layers runs without entering Lua.
 *
 * Modules are refcounted like tensors: a parent holds a reference to each
 * child, the tree holds a reference to each parameter tensor. */
#ifndef AS_MODULE_H
#define AS_MODULE_H

#include <stdbool.h>

#include "attnswap/tensor.h"

#define AS_FORWARD_MAX_ARGS 8

typedef struct as_module as_module;

/* Positional arguments of a forward: tensors or NULL (Lua's nil). */
typedef struct {
    int n;
    as_tensor *v[AS_FORWARD_MAX_ARGS];
} as_args;

/* One entry of a module's config: a number, or a boolean (0 or 1). */
typedef struct {
    const char *name;
    double value;
    bool boolean;
} as_config_field;

typedef struct as_module_class {
    const char *name;
    /* Returns a new reference, or NULL with the error set. */
    as_tensor *(*forward)(as_module *m, const as_args *args);
    /* Frees m->config (NULL: plain free). */
    void (*free_config)(void *config);
    /* One line of options for printing, "in_features=4, out_features=8" (may be NULL). */
    void (*extra_repr)(const as_module *m, char *buf, size_t size);
    /* The config as named values for code that reads it (swap_attention
     * inherits causal and head counts from it): writes at most max fields,
     * returns how many (may be NULL: none). */
    int (*config_fields)(const as_module *m, as_config_field *out, int max);
    /* The size of the config when it is one flat malloc'd block (no
     * pointers it owns), so that as_module_copy can duplicate it; 0 for a
     * class whose config cannot be copied that way (or that has none). */
    size_t config_size;
    /* forward(args) + residual, the add done inside the forward's last product
     * where the class can (as_linear_add); NULL: as_module_forward_add adds. */
    as_tensor *(*forward_add)(as_module *m, const as_args *args, const as_tensor *residual);
} as_module_class;

typedef struct {
    char *name;
    void *value; /* as_module* for children, as_tensor* for params and buffers */
} as_named;

typedef struct {
    int n, cap;
    as_named *items;
} as_named_list;

struct as_module {
    int refcount;
    const as_module_class *cls;
    char *type_name; /* the class name users see; Lua classes set their own */
    as_named_list children, params, buffers;
    bool training;
    void *config;
    /* The host's state for this module (the Lua bindings: its fields and
     * class), NULL until the host attaches some; opaque to the runtime,
     * released through the host's hooks. */
    void *host;
};

/* What the embedding host (the Lua bindings) lends the runtime, installed
 * once at start: the forward of classes the host defines (as_host_module_class)
 * and the release of m->host when a module dies. */
typedef struct {
    as_tensor *(*forward)(as_module *m, const as_args *args);
    void (*release)(as_module *m);
} as_module_hooks;
void as_module_set_hooks(const as_module_hooks *hooks);

/* ---- lifetime ---- */
as_module *as_module_new(const as_module_class *cls, const char *type_name, void *config);
as_module *as_module_retain(as_module *m);
void as_module_release(as_module *m);

/* ---- members: set replaces an entry of the same name (keeping its position),
 * retaining the new value; NULL removes it.  0 or -1 (error set). ---- */
int as_module_set_child(as_module *m, const char *name, as_module *child);
int as_module_set_param(as_module *m, const char *name, as_tensor *t);
int as_module_set_buffer(as_module *m, const char *name, as_tensor *t);
as_module *as_module_child(const as_module *m, const char *name);
as_tensor *as_module_param(const as_module *m, const char *name);
as_tensor *as_module_buffer(const as_module *m, const char *name);
/* Looks up a dotted path ("blocks.0.attn"); NULL when absent (no error). */
as_module *as_module_find(as_module *m, const char *path);

/* ---- forward ---- */
/* Runs m's forward: C, or the host's for host-defined classes. */
as_tensor *as_module_forward(as_module *m, const as_args *args);
/* m's forward + residual (a residual connection): the class's forward_add
 * where it has one, else its forward and an add; a NULL residual is none. */
as_tensor *as_module_forward_add(as_module *m, const as_args *args, const as_tensor *residual);
/* Anomaly mode only (autograd.h): m's forward starts / ends, so the nodes
 * recorded meanwhile know the module path.  push returns whether it pushed
 * (pop only then); as_module_forward does both, a host's own forwards too. */
bool as_module_path_push(as_module *m);
void as_module_path_pop(void);
/* Shorthands for C composites. */
as_tensor *as_module_call1(as_module *m, as_tensor *x);
as_tensor *as_module_call4(as_module *m, as_tensor *a, as_tensor *b, as_tensor *c, as_tensor *d);

/* ---- tree ---- */
/* Depth-first pre-order walk, root first with path "".  fn returns nonzero
 * to stop; the walk returns that value. */
typedef int (*as_module_visit)(void *ctx, const char *path, as_module *m);
int as_module_walk(as_module *m, as_module_visit fn, void *ctx);
/* Every parameter (then buffers when with_buffers) with its dotted path. */
typedef int (*as_tensor_visit)(void *ctx, const char *path, as_tensor *t, bool is_buffer);
int as_module_walk_tensors(as_module *m, bool with_buffers, as_tensor_visit fn, void *ctx);
void as_module_train(as_module *m, bool training); /* recursive */
/* Moves every parameter and buffer to dev / casts floating ones to dt. */
int as_module_to_device(as_module *m, as_device dev);
int as_module_to_dtype(as_module *m, as_dtype dt);
int64_t as_module_num_parameters(as_module *m);

/* A new module of m's class, type name, config (copied) and training flag,
 * with no children, parameters, buffers or host state: the first step of a
 * deep copy (model:clone()), which fills in the members.  NULL with "clone:
 * ..." set when the class's config cannot be copied. */
as_module *as_module_copy(const as_module *m);

/* The class of modules the host defines (Lua classes): its forward is the hooks'. */
extern const as_module_class as_host_module_class;

#endif
