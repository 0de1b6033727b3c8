/* luaopen_attnswap_core: the C half of `require "attnswap"`.  The Lua half
 * (lua/attnswap/init.lua) requires this module and adds the Lua-written API. */
#include <lauxlib.h>
#include <lua.h>

#include "l_util.h"

int luaopen_attnswap_core(lua_State *L)
{
    lua_newtable(L);
    l_open_tensor(L);
    l_open_file(L);
    l_open_module(L);
    l_open_registry(L);
    l_open_attention(L);
    l_open_bench(L);
    l_open_json(L);
    l_open_zoo_sparse(L);
    l_open_zoo_linear(L);
    l_open_zoo_reweight(L);
    return 1;
}
