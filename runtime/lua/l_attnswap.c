/* luaopen_attnswap_core: the C half of `require "attnswap"`.  The Lua half
 * (lua/attnswap/init.lua) requires this module and adds the Lua-written API. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <lauxlib.h>
#include <lua.h>

#include "l_util.h"
#include "attnswap/ops.h"

/* When a stock lua5.4 closes its state it dlcloses C modules; OpenBLAS and
 * OpenMP worker threads started from this one would then run unmapped code.
 * Pin the module (and so its libraries) for the life of the process. */
static void pin_module(void)
{
    Dl_info info;
    if (dladdr((void *)pin_module, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
}

int luaopen_attnswap_core(lua_State *L)
{
    pin_module();
    as_init();
    lua_newtable(L);
    l_open_tensor(L);
    l_open_file(L);
    l_open_module(L);
    l_open_registry(L);
    l_open_attention(L);
    l_open_bench(L);
    l_open_config(L);
    l_open_cuda(L);
    l_open_distributed(L);
    l_open_json(L);
    l_open_tokenizer(L);
    l_open_autograd(L);
    l_open_optim(L);
    l_open_clone(L);
    l_open_zoo_sparse(L);
    l_open_zoo_linear(L);
    l_open_zoo_reweight(L);
    lua_pushliteral(L, AS_VERSION); /* the project's version, from CMakeLists.txt */
    lua_setfield(L, -2, "version");
    return 1;
}
