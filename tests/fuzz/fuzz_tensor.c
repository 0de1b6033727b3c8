/* libFuzzer harness: as.tensor(value [, dtype]) on arbitrary nested tables,
 * strings and special numbers, then printing, listing and reducing whatever
 * tensor comes back.  Errors are fine; crashes, leaks and UB are not. */
#include "lua_harness.h"

static const char *const dtypes[] = {NULL, "float32", "float16", "bfloat16", "int64", "int32", "bool", "nope"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_state();
    fuzz_bytes b = {data, size, 0};
    int top = lua_gettop(L);
    lua_getglobal(L, "as");
    lua_getfield(L, -1, "tensor");
    fuzz_push_value(L, &b, 0);
    const char *dt = dtypes[(size ? data[size - 1] : 0) & 7];
    if (dt) lua_pushstring(L, dt);
    if (lua_pcall(L, dt ? 2 : 1, 1, 0) == LUA_OK) {
        lua_setglobal(L, "t");
        luaL_dostring(L, "local s = tostring(t); local l = t:tolist(); "
                         "if t:numel() > 0 then local m = t:float():sum() end; t = nil");
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
