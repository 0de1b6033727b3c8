/* What model:clone() (lua/attnswap/nn/clone.lua) needs from C:
 *   core.module_copy(m) -> a module of m's class, config and training flag,
 *                          without members (as_module_copy)
 *   core.tensor_key(t)  -> a light userdata naming the C tensor, so that one
 *                          tensor held in two places (tied weights) is copied once */
#include "attnswap/module.h"
#include "l_util.h"

static int l_module_copy(lua_State *L)
{
    as_module *c = as_module_copy(l_checkmodule(L, 1));
    if (!c) return l_raise(L);
    l_pushmodule(L, c);
    as_module_release(c);
    return 1;
}

static int l_tensor_key(lua_State *L)
{
    lua_pushlightuserdata(L, l_checktensor(L, 1));
    return 1;
}

static const luaL_Reg clone_funcs[] = {
    {"module_copy", l_module_copy},
    {"tensor_key", l_tensor_key},
    {NULL, NULL},
};

void l_open_clone(lua_State *L) { luaL_setfuncs(L, clone_funcs, 0); }
