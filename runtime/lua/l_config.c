/* as.config(): what this process runs on (attnswap/info.h) as a table that
 * prints as the lines of `attnswap-run --version` (the REPL shows results
 * through __tostring). */
#include <lauxlib.h>
#include <lua.h>

#include "l_util.h"
#include "attnswap/info.h"

static void set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static int config_tostring(lua_State *L)
{
    char buf[1024];
    as_runtime_info_describe(buf, sizeof buf);
    lua_pushfstring(L, "attnswap %s\n%s", AS_VERSION, buf);
    return 1;
}

/* config() -> {version, cpu, cpu_features, blas, blas_core, blas_core_by,
 * blas_core_openblas, blas_note, threads, attention_isa, cpu_gemm, cuda, cuda_devices,
 * deterministic, float32_matmul_precision} */
static int l_config(lua_State *L)
{
    as_runtime_info i;
    as_runtime_info_get(&i);
    lua_createtable(L, 0, 15);
    set_string(L, "version", AS_VERSION);
    set_string(L, "cpu", i.cpu);
    set_string(L, "cpu_features", i.cpu_features);
    set_string(L, "blas", i.blas);
    set_string(L, "blas_core", i.blas_core);
    set_string(L, "blas_core_by", i.blas_core_by);
    set_string(L, "blas_core_openblas", i.blas_core_openblas);
    set_string(L, "blas_note", i.blas_note);
    lua_pushinteger(L, i.threads);
    lua_setfield(L, -2, "threads");
    set_string(L, "attention_isa", i.attention_isa);
    set_string(L, "cpu_gemm", i.cpu_gemm);
    lua_pushboolean(L, i.cuda_built);
    lua_setfield(L, -2, "cuda");
    lua_pushinteger(L, i.cuda_devices);
    lua_setfield(L, -2, "cuda_devices");
    lua_pushboolean(L, i.deterministic);
    lua_setfield(L, -2, "deterministic");
    set_string(L, "float32_matmul_precision", i.f32_matmul);
    if (luaL_newmetatable(L, "attnswap.config")) {
        lua_pushcfunction(L, config_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    return 1;
}

void l_open_config(lua_State *L)
{
    lua_pushcfunction(L, l_config);
    lua_setfield(L, -2, "config");
}
