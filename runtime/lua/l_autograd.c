/* Bindings of autograd (attnswap/autograd.h): tensor methods and
 * properties with PyTorch's names, and grad mode.  The Lua side
 * (lua/attnswap/init.lua) builds as.no_grad and as.enable_grad on
 * set_grad_enabled. */
#include <string.h>

#include "attnswap/autograd.h"
#include "l_util.h"

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
    if (as_backward(t, g, retain)) return l_raise(L);
    return 0;
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
    {"requires_grad_", l_requires_grad_}, {"backward", l_backward}, {"detach", l_detach}, {NULL, NULL},
};

static const luaL_Reg autograd_functions[] = {
    {"set_grad_enabled", l_set_grad_enabled}, {"is_grad_enabled", l_is_grad_enabled}, {NULL, NULL},
};

/* The methods go into the tensor methods table on top of the stack. */
void l_open_autograd_methods(lua_State *L) { luaL_setfuncs(L, autograd_methods, 0); }
void l_open_autograd(lua_State *L) { luaL_setfuncs(L, autograd_functions, 0); }
