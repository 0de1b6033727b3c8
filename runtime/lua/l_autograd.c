/* Bindings of autograd (attnswap/autograd.h): tensor methods and
 * properties with PyTorch's names, and grad mode.  The Lua side
 * (lua/attnswap/init.lua) builds as.no_grad and as.enable_grad on
 * set_grad_enabled. */
#include <stdlib.h>
#include <string.h>

#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "attnswap/ops.h"
#include "l_util.h"

/* The Lua state a backward runs Lua code in: the one that called
 * t:backward() (a coroutine, maybe), else the main thread. */
static _Thread_local lua_State *backward_L;

/* t:requires_grad_([flag = true]) -> t */
static int l_requires_grad_(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    bool flag = lua_isnone(L, 2) || lua_toboolean(L, 2);
    if (as_requires_grad_(t, flag)) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}

/* t:backward([gradient] [, {retain_graph = false}]) */
static int l_backward(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int opts = 2;
    as_tensor *g = NULL;
    if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2)) {
        g = l_totensor(L, 2);
        if (!g) return l_argerror(L, 2, "backward", "Tensor (the gradient) or options table");
        opts = 3;
    } else if (lua_isnil(L, 2)) {
        opts = 3;
    }
    if (!lua_isnoneornil(L, opts) && !lua_istable(L, opts)) return l_argerror(L, opts, "backward", "options table");
    bool retain = l_opt_bool(L, opts, "retain_graph", false);
    lua_State *prev = backward_L;
    backward_L = L;
    int rc = as_backward(t, g, retain);
    backward_L = prev;
    if (rc) return l_raise(L);
    return 0;
}

/* ---- custom functions (as.autograd.Function, lua/attnswap/autograd.lua) ----
 * A node's host state: a registry reference to the Lua closure run(k, g)
 * that calls the user's backward for output k and returns one gradient (or
 * nil) per tensor input.  The state and its refs live here, never in the
 * runtime, which only frees them through fn_free. */
typedef struct {
    lua_State *main; /* the main thread: the registry outlives coroutines */
    int ref;
    int output; /* 1-based */
    char name[]; /* the node's name lives as long as the node */
} fn_host;

static void fn_free(void *p)
{
    fn_host *h = p;
    luaL_unref(h->main, LUA_REGISTRYINDEX, h->ref);
    free(h);
}

static int fn_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    if (as_node_check_live(n)) return -1; /* its ctx stands for saved tensors */
    fn_host *h = as_node_host(n);
    lua_State *L = backward_L ? backward_L : h->main;
    int ninputs = as_node_ninputs(n), top = lua_gettop(L);
    if (!lua_checkstack(L, ninputs + 4)) {
        as_error_set("backward: %s: Lua stack overflow", as_node_name(n));
        return -1;
    }
    /* The engine passes a gradient in the layout its producer made (a transpose's
     * is a view); a Lua backward gets it contiguous, as before, so that g:view()
     * works and an in-place change does not write through a view upstream. */
    as_tensor *gc = as_contiguous(g);
    if (!gc) return -1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref);
    lua_pushinteger(L, h->output);
    l_pushtensor(L, gc);
    /* grad mode stays off, as for every backward (a checkpoint turns it on itself) */
    if (lua_pcall(L, 2, ninputs, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        as_error_set("backward: %s: %s", as_node_name(n), msg ? msg : "(error object is not a string)");
        lua_settop(L, top);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < ninputs && !rc; i++) {
        int idx = top + 1 + i;
        if (lua_isnil(L, idx)) continue;
        as_tensor *t = l_totensor(L, idx);
        int nd;
        const int64_t *shape;
        as_node_input_shape(n, i, &nd, &shape);
        if (!t) {
            as_error_set("backward: %s returned a %s as gradient %d, expected a Tensor or nil", as_node_name(n),
                         luaL_typename(L, idx), i + 1);
            rc = -1;
        } else if (t->ndim != nd || memcmp(t->shape, shape, sizeof(int64_t) * (size_t)nd) != 0) {
            char s1[128], s2[128];
            as_error_set("backward: %s returned gradient %d of shape %s, expected the input's shape %s",
                         as_node_name(n), i + 1, as_shape_str(s1, sizeof s1, t->ndim, t->shape),
                         as_shape_str(s2, sizeof s2, nd, shape));
            rc = -1;
        } else if (as_node_needs(n, i)) {
            gi[i] = as_retain(t);
        }
    }
    lua_settop(L, top);
    if (!as_backward_retains_graph()) { /* the closure holds ctx, the saved tensors: freed like them */
        luaL_unref(h->main, LUA_REGISTRYINDEX, h->ref);
        h->ref = LUA_NOREF;
    }
    return rc;
}

/* function_record(name, run, inputs, outputs): makes each floating-point
 * tensor in the array outputs the result of a node over the tensors in the
 * array inputs whose backward calls run(k, g) for output k. */
static int l_function_record(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    int nin = (int)luaL_len(L, 3), nout = (int)luaL_len(L, 4);
    if (nin > AS_NODE_MAX_INPUTS)
        return l_error(L, "%s: at most %d tensor inputs, got %d", name, AS_NODE_MAX_INPUTS, nin);
    const as_tensor *in[AS_NODE_MAX_INPUTS];
    for (int i = 0; i < nin; i++) {
        lua_geti(L, 3, i + 1);
        in[i] = l_totensor(L, -1);
        lua_pop(L, 1);
        if (!in[i]) return l_error(L, "%s: input %d is not a Tensor", name, i + 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    for (int k = 0; k < nout; k++) {
        lua_geti(L, 4, k + 1);
        as_tensor *out = l_totensor(L, -1);
        lua_pop(L, 1);
        if (!out || !as_dtype_is_float(out->dtype)) continue;
        fn_host *h = malloc(sizeof *h + strlen(name) + 1);
        if (!h) return l_error(L, "%s: out of memory", name);
        lua_pushvalue(L, 2);
        h->main = main, h->ref = luaL_ref(L, LUA_REGISTRYINDEX), h->output = k + 1;
        strcpy(h->name, name);
        as_node *n = as_autograd_record(h->name, fn_backward, out, nin, in);
        if (!n) {
            fn_free(h);
            return l_raise(L);
        }
        as_node_set_host(n, h, fn_free);
    }
    return 0;
}

/* ---- post-accumulate-grad hooks ----
 * The hook's state: a registry reference to the Lua function, released
 * (through hook_free) by the runtime when the hook goes. */
typedef struct {
    lua_State *main;
    int ref;
} hook_host;

static void hook_free(void *p)
{
    hook_host *h = p;
    luaL_unref(h->main, LUA_REGISTRYINDEX, h->ref);
    free(h);
}

static int hook_run(as_tensor *leaf, void *ud)
{
    hook_host *h = ud;
    lua_State *L = backward_L ? backward_L : h->main;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 3)) {
        as_error_set("backward: post-accumulate-grad hook: Lua stack overflow");
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref);
    l_pushtensor(L, as_retain(leaf));
    int rc = 0;
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        as_error_set("backward: post-accumulate-grad hook: %s", msg ? msg : "(error object is not a string)");
        rc = -1;
    }
    lua_settop(L, top);
    return rc;
}

/* t:register_post_accumulate_grad_hook(fn) -> handle: fn(t) runs in each
 * backward once t.grad is final for it (see autograd.h). */
static int l_register_hook(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    hook_host *h = malloc(sizeof *h);
    if (!h) return l_error(L, "register_post_accumulate_grad_hook: out of memory");
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    h->main = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    h->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int id = as_register_post_accumulate_grad_hook(t, hook_run, h, hook_free);
    if (id < 0) {
        hook_free(h);
        return l_raise(L);
    }
    lua_pushinteger(L, id);
    return 1;
}

/* t:remove_post_accumulate_grad_hook(handle) */
static int l_remove_hook(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    if (as_remove_grad_hook(t, (int)luaL_checkinteger(L, 2))) return l_raise(L);
    return 0;
}

/* set_anomaly_enabled(on) -> the previous mode */
static int l_set_anomaly_enabled(lua_State *L)
{
    lua_pushboolean(L, as_set_anomaly_enabled(lua_toboolean(L, 1)));
    return 1;
}

static int l_is_anomaly_enabled(lua_State *L)
{
    lua_pushboolean(L, as_anomaly_enabled());
    return 1;
}

static int l_detach(lua_State *L)
{
    l_pushtensor(L, as_detach(l_checktensor(L, 1)));
    return 1;
}

/* set_grad_enabled(on) -> the previous mode */
static int l_set_grad_enabled(lua_State *L)
{
    lua_pushboolean(L, as_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}

static int l_is_grad_enabled(lua_State *L)
{
    lua_pushboolean(L, as_grad_enabled());
    return 1;
}

/* The properties t.grad, t.requires_grad, t.is_leaf, t.grad_fn: 1 when key
 * is one (its value pushed), 0 otherwise. */
int l_autograd_property(lua_State *L, as_tensor *t, const char *key)
{
    if (strcmp(key, "grad") == 0) {
        as_tensor *g = as_grad(t);
        if (g) l_pushtensor(L, as_retain(g));
        else lua_pushnil(L);
    } else if (strcmp(key, "requires_grad") == 0) {
        lua_pushboolean(L, as_requires_grad(t));
    } else if (strcmp(key, "is_leaf") == 0) {
        lua_pushboolean(L, as_is_leaf(t));
    } else if (strcmp(key, "grad_fn") == 0) {
        const char *n = as_grad_fn_name(t);
        if (n) lua_pushstring(L, n);
        else lua_pushnil(L);
    } else {
        return 0;
    }
    return 1;
}

/* t.grad = g | nil, t.requires_grad = flag: 1 when key is one of them. */
int l_autograd_assign(lua_State *L, as_tensor *t, const char *key, int value)
{
    if (strcmp(key, "grad") == 0) {
        as_tensor *g = lua_isnil(L, value) ? NULL : l_totensor(L, value);
        if (!g && !lua_isnil(L, value)) return l_argerror(L, value, "grad", "Tensor or nil");
        if (as_set_grad(t, g)) return l_raise(L);
        return 1;
    }
    if (strcmp(key, "requires_grad") == 0) {
        if (as_requires_grad_(t, lua_toboolean(L, value))) return l_raise(L);
        return 1;
    }
    return 0;
}

static const luaL_Reg autograd_methods[] = {
    {"requires_grad_", l_requires_grad_}, {"backward", l_backward}, {"detach", l_detach},
    {"register_post_accumulate_grad_hook", l_register_hook}, {"remove_post_accumulate_grad_hook", l_remove_hook},
    {NULL, NULL},
};

static const luaL_Reg autograd_functions[] = {
    {"set_grad_enabled", l_set_grad_enabled}, {"is_grad_enabled", l_is_grad_enabled},
    {"function_record", l_function_record}, {"set_anomaly_enabled", l_set_anomaly_enabled},
    {"is_anomaly_enabled", l_is_anomaly_enabled},
    {NULL, NULL},
};

/* The methods go into the tensor methods table on top of the stack. */
void l_open_autograd_methods(lua_State *L) { luaL_setfuncs(L, autograd_methods, 0); }
void l_open_autograd(lua_State *L) { luaL_setfuncs(L, autograd_functions, 0); }
