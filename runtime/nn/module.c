#include "attnswap/module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "attnswap/ops.h"

static as_module_hooks hooks;

void as_module_set_hooks(const as_module_hooks *h) { hooks = *h; }

static as_tensor *host_forward(as_module *m, const as_args *args)
{
    if (!hooks.forward) {
        as_error_set("forward: %s is a Lua module but no Lua state is attached", m->type_name);
        return NULL;
    }
    return hooks.forward(m, args);
}

const as_module_class as_host_module_class = {.name = "LuaModule", .forward = host_forward};

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

as_module *as_module_new(const as_module_class *cls, const char *type_name, void *config)
{
    as_module *m = calloc(1, sizeof *m);
    char *name = dupstr(type_name ? type_name : cls->name);
    if (!m || !name) {
        free(m), free(name);
        as_error_set("out of memory");
        return NULL;
    }
    m->refcount = 1;
    m->cls = cls;
    m->type_name = name;
    m->training = true;
    m->config = config;
    return m;
}

as_module *as_module_copy(const as_module *m)
{
    if (!m) {
        as_error_set("clone: expected a module, got NULL");
        return NULL;
    }
    void *config = NULL;
    if (m->config) {
        if (!m->cls->config_size) {
            as_error_set("clone: a %s cannot be copied (its class's config is not a flat block)", m->type_name);
            return NULL;
        }
        config = malloc(m->cls->config_size);
        if (!config) {
            as_error_set("clone: out of memory");
            return NULL;
        }
        memcpy(config, m->config, m->cls->config_size);
    }
    as_module *c = as_module_new(m->cls, m->type_name, config);
    if (!c) {
        free(config);
        return NULL;
    }
    c->training = m->training;
    return c;
}

as_module *as_module_retain(as_module *m)
{
    if (m) m->refcount++;
    return m;
}

static void list_free(as_named_list *l, int modules)
{
    for (int i = 0; i < l->n; i++) {
        if (modules) as_module_release(l->items[i].value);
        else as_release(l->items[i].value);
        free(l->items[i].name);
    }
    free(l->items);
}

void as_module_release(as_module *m)
{
    if (!m || --m->refcount > 0) return;
    if (m->host && hooks.release) hooks.release(m);
    list_free(&m->children, 1);
    list_free(&m->params, 0);
    list_free(&m->buffers, 0);
    if (m->cls && m->cls->free_config) m->cls->free_config(m->config);
    else free(m->config);
    free(m->type_name);
    free(m);
}

static int list_find(const as_named_list *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->items[i].name, name) == 0) return i;
    return -1;
}

/* Sets, replaces in place, or (value NULL) removes an entry. */
static int list_set(as_named_list *l, const char *name, void *value, int modules)
{
    int i = list_find(l, name);
    if (i >= 0) {
        void *old = l->items[i].value;
        if (value) {
            if (modules) as_module_retain(value);
            else as_retain(value);
            l->items[i].value = value;
        } else {
            free(l->items[i].name);
            memmove(l->items + i, l->items + i + 1, sizeof *l->items * (size_t)(l->n - i - 1));
            l->n--;
        }
        if (modules) as_module_release(old);
        else as_release(old);
        return 0;
    }
    if (!value) return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        as_named *items = realloc(l->items, sizeof *items * (size_t)cap);
        if (!items) goto oom;
        l->items = items, l->cap = cap;
    }
    char *nm = dupstr(name);
    if (!nm) goto oom;
    if (modules) as_module_retain(value);
    else as_retain(value);
    l->items[l->n++] = (as_named){nm, value};
    return 0;
oom:
    as_error_set("out of memory");
    return -1;
}

static int check_name(const char *what, const char *name)
{
    if (!name[0] || strchr(name, '.')) {
        as_error_set("%s: invalid name '%s' (names are non-empty and contain no '.')", what, name);
        return -1;
    }
    return 0;
}

/* A name lives in one list only, as in torch. */
static void remove_elsewhere(as_module *m, const char *name, as_named_list *keep)
{
    if (keep != &m->children) list_set(&m->children, name, NULL, 1);
    if (keep != &m->params) list_set(&m->params, name, NULL, 0);
    if (keep != &m->buffers) list_set(&m->buffers, name, NULL, 0);
}

static int is_target(void *ctx, const char *path, as_module *m) { return m == ctx; }

int as_module_set_child(as_module *m, const char *name, as_module *child)
{
    if (check_name("add_module", name)) return -1;
    if (child && as_module_walk(child, is_target, m) == 1) {
        as_error_set("add_module: '%s' would make a cycle (a module cannot contain itself)", name);
        return -1;
    }
    if (child) remove_elsewhere(m, name, &m->children);
    return list_set(&m->children, name, child, 1);
}

int as_module_set_param(as_module *m, const char *name, as_tensor *t)
{
    if (check_name("register_parameter", name)) return -1;
    if (t) remove_elsewhere(m, name, &m->params);
    return list_set(&m->params, name, t, 0);
}

int as_module_set_buffer(as_module *m, const char *name, as_tensor *t)
{
    if (check_name("register_buffer", name)) return -1;
    if (t) remove_elsewhere(m, name, &m->buffers);
    return list_set(&m->buffers, name, t, 0);
}

as_module *as_module_child(const as_module *m, const char *name)
{
    int i = list_find(&m->children, name);
    return i >= 0 ? m->children.items[i].value : NULL;
}

as_tensor *as_module_param(const as_module *m, const char *name)
{
    int i = list_find(&m->params, name);
    return i >= 0 ? m->params.items[i].value : NULL;
}

as_tensor *as_module_buffer(const as_module *m, const char *name)
{
    int i = list_find(&m->buffers, name);
    return i >= 0 ? m->buffers.items[i].value : NULL;
}

as_module *as_module_find(as_module *m, const char *path)
{
    char part[256];
    while (m && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof part) return NULL;
        memcpy(part, path, n);
        part[n] = 0;
        m = as_module_child(m, part);
        path += n + (dot != NULL);
    }
    return m;
}

/* ---- forward ---- */

/* Anomaly mode's module path ("TransformerBlock.attn.core"): the running
 * forwards as a stack, each named as its parent (the forward below it)
 * calls it, the root by its type.  Kept only while anomaly mode is on. */
#define PATH_DEPTH 64
static _Thread_local char fwd_path[1024];
static _Thread_local size_t fwd_len[PATH_DEPTH];
static _Thread_local as_module *fwd_mod[PATH_DEPTH];
static _Thread_local int fwd_depth;

/* Whether m lies under root (at most depth levels down): then its path
 * from root is appended to buf at len. */
static bool find_below(const as_module *root, const as_module *m, char *buf, size_t len, size_t size, int depth)
{
    for (int i = 0; i < root->children.n && depth > 0; i++) {
        const as_module *c = root->children.items[i].value;
        int n = snprintf(buf + len, size - len, ".%s", root->children.items[i].name);
        if (n < 0 || len + (size_t)n >= size) break;
        if (c == m || find_below(c, m, buf, len + (size_t)n, size, depth - 1)) return true;
    }
    buf[len] = 0;
    return false;
}

bool as_module_path_push(as_module *m)
{
    if (!as_anomaly_enabled() || fwd_depth >= PATH_DEPTH) return false;
    size_t len = strlen(fwd_path);
    /* named as the caller holds it: a child, or deeper (blocks.2 of a
     * ModuleList the caller walks itself); else by its type */
    if (fwd_depth == 0 || !find_below(fwd_mod[fwd_depth - 1], m, fwd_path, len, sizeof fwd_path, 8))
        snprintf(fwd_path + len, sizeof fwd_path - len, len ? ".%s" : "%s", m->type_name);
    fwd_len[fwd_depth] = len;
    fwd_mod[fwd_depth++] = m;
    as_anomaly_set_path(fwd_path);
    return true;
}

void as_module_path_pop(void)
{
    if (fwd_depth == 0) return;
    fwd_path[fwd_len[--fwd_depth]] = 0;
    as_anomaly_set_path(fwd_depth ? fwd_path : NULL);
}

as_tensor *as_module_forward(as_module *m, const as_args *args)
{
    if (!m->cls || !m->cls->forward) {
        as_error_set("forward: %s has no forward", m->type_name);
        return NULL;
    }
    bool pushed = as_module_path_push(m);
    as_tensor *out = m->cls->forward(m, args);
    if (pushed) as_module_path_pop();
    return out;
}

as_tensor *as_module_forward_add(as_module *m, const as_args *args, const as_tensor *residual)
{
    if (!residual) return as_module_forward(m, args);
    if (!m->cls || !m->cls->forward_add) {
        as_tensor *y = as_module_forward(m, args), *r = y ? as_binary(AS_ADD, y, residual) : NULL;
        as_release(y);
        return r;
    }
    bool pushed = as_module_path_push(m);
    as_tensor *out = m->cls->forward_add(m, args, residual);
    if (pushed) as_module_path_pop();
    return out;
}

as_tensor *as_module_call1(as_module *m, as_tensor *x)
{
    as_args a = {.n = 1, .v = {x}};
    return as_module_forward(m, &a);
}

as_tensor *as_module_call4(as_module *m, as_tensor *a, as_tensor *b, as_tensor *c, as_tensor *d)
{
    as_args args = {.n = 4, .v = {a, b, c, d}};
    return as_module_forward(m, &args);
}

/* ---- tree ---- */

#define AS_PATH_MAX 1024

static int walk(as_module *m, char *path, size_t len, as_module_visit fn, void *ctx)
{
    int r = fn(ctx, path, m);
    if (r) return r;
    for (int i = 0; i < m->children.n; i++) {
        const char *name = m->children.items[i].name;
        int n = snprintf(path + len, AS_PATH_MAX - len, len ? ".%s" : "%s", name);
        if (n < 0 || len + (size_t)n >= AS_PATH_MAX) {
            as_error_set("named_modules: path too long under '%s'", path);
            path[len] = 0;
            return -1;
        }
        r = walk(m->children.items[i].value, path, len + (size_t)n, fn, ctx);
        path[len] = 0;
        if (r) return r;
    }
    return 0;
}

int as_module_walk(as_module *m, as_module_visit fn, void *ctx)
{
    char path[AS_PATH_MAX] = "";
    return walk(m, path, 0, fn, ctx);
}

typedef struct {
    bool with_buffers;
    as_tensor_visit fn;
    void *ctx;
} tensor_walk;

static int visit_tensors(void *ctx, const char *path, as_module *m)
{
    tensor_walk *w = ctx;
    char full[AS_PATH_MAX + 256];
    for (int pass = 0; pass < (w->with_buffers ? 2 : 1); pass++) {
        as_named_list *l = pass ? &m->buffers : &m->params;
        for (int i = 0; i < l->n; i++) {
            snprintf(full, sizeof full, *path ? "%s.%s" : "%s%s", path, l->items[i].name);
            int r = w->fn(w->ctx, full, l->items[i].value, pass == 1);
            if (r) return r;
        }
    }
    return 0;
}

int as_module_walk_tensors(as_module *m, bool with_buffers, as_tensor_visit fn, void *ctx)
{
    tensor_walk w = {with_buffers, fn, ctx};
    return as_module_walk(m, visit_tensors, &w);
}

static int set_training(void *ctx, const char *path, as_module *m)
{
    m->training = *(bool *)ctx;
    return 0;
}

void as_module_train(as_module *m, bool training) { as_module_walk(m, set_training, &training); }

/* Replaces every tensor of a module by convert(tensor); all or nothing per module. */
typedef struct {
    as_device dev;
    int to_device;
    as_dtype dt;
} convert_spec;

static as_tensor *convert(const convert_spec *c, as_tensor *t)
{
    if (c->to_device) return as_to_device(t, c->dev);
    if (!as_dtype_is_float(t->dtype)) return as_retain(t);
    return as_to_dtype(t, c->dt);
}

static int convert_module(void *ctx, const char *path, as_module *m)
{
    const convert_spec *c = ctx;
    for (int pass = 0; pass < 2; pass++) {
        as_named_list *l = pass ? &m->buffers : &m->params;
        for (int i = 0; i < l->n; i++) {
            as_tensor *t = convert(c, l->items[i].value);
            if (!t) return -1;
            as_release(l->items[i].value);
            l->items[i].value = t;
        }
    }
    return 0;
}

int as_module_to_device(as_module *m, as_device dev)
{
    convert_spec c = {.dev = dev, .to_device = 1};
    return as_module_walk(m, convert_module, &c);
}

int as_module_to_dtype(as_module *m, as_dtype dt)
{
    convert_spec c = {.dt = dt};
    return as_module_walk(m, convert_module, &c);
}

static int count_params(void *ctx, const char *path, as_tensor *t, bool is_buffer)
{
    *(int64_t *)ctx += as_numel(t);
    return 0;
}

int64_t as_module_num_parameters(as_module *m)
{
    int64_t n = 0;
    as_module_walk_tensors(m, false, count_params, &n);
    return n;
}
