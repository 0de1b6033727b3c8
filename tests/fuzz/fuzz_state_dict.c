/* libFuzzer harness: load_state_dict with hostile names, shapes and dtypes
 * into a small model (strict and not).  A state dict is decoded from the
 * bytes: per entry a name (one of the model's own, or bytes), a dtype and up
 * to 4 dims of at most 16. */
#include "lua_harness.h"

static const char *const names[] = {"0.weight", "0.bias", "1.weight", "1.bias", "2.attn.qkv.weight",
                                    "", ".", "0..weight"};
static const char *const dtypes[] = {"float32", "float16", "bfloat16", "int64", "int32", "bool"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_state();
    static int model_ref = LUA_NOREF;
    if (model_ref == LUA_NOREF) {
        luaL_dostring(L, "return as.nn.Sequential(as.nn.Linear(3, 4), as.nn.LayerNorm(4))");
        model_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    fuzz_bytes b = {data, size, 0};
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, model_ref);
    lua_getfield(L, -1, "load_state_dict");
    lua_pushvalue(L, -2);
    lua_newtable(L);
    for (int e = 0; e < 8; e++) {
        int c = fuzz_byte(&b);
        if (c < 0) break;
        if (c & 0x80) {
            int len = c & 15;
            lua_pushlstring(L, (const char *)data + b.i, b.n - b.i < (size_t)len ? b.n - b.i : (size_t)len);
            b.i += len;
        } else {
            lua_pushstring(L, names[c & 7]);
        }
        int d = fuzz_byte(&b);
        int ndim = d < 0 ? 0 : (d >> 4) & 3, dt = d < 0 ? 0 : (d & 15) % 6;
        lua_getglobal(L, "as");
        lua_getfield(L, -1, "zeros");
        lua_remove(L, -2);
        lua_newtable(L);
        for (int i = 1; i <= ndim + 1; i++) {
            int s = fuzz_byte(&b);
            lua_pushinteger(L, s < 0 ? 1 : (s & 15));
            lua_rawseti(L, -2, i);
        }
        lua_pushstring(L, dtypes[dt]);
        if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
            lua_pop(L, 2);
            continue;
        }
        lua_rawset(L, -3);
    }
    lua_newtable(L);
    lua_pushboolean(L, fuzz_byte(&b) & 1);
    lua_setfield(L, -2, "strict");
    lua_pcall(L, 3, 0, 0);
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
