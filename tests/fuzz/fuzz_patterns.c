/* libFuzzer harness: mask and pattern construction (as.patterns.*) and a
 * sparse_attention call with the result, from arguments decoded from the
 * bytes: sizes, windows, strides, probabilities, position lists, option
 * tables, and combinations of patterns. */
#include "lua_harness.h"

static const char *const builders[] = {"causal", "full", "local_1d", "strided", "fixed", "axial_2d", "random",
                                       "global_tokens", "bigbird", "union", "intersect", "to_blocks"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_state();
    fuzz_bytes b = {data, size, 0};
    int top = lua_gettop(L);
    int c = fuzz_byte(&b);
    if (c < 0) return 0;
    const char *fn = builders[c % (int)(sizeof builders / sizeof *builders)];
    lua_getglobal(L, "as");
    lua_getfield(L, -1, "patterns");
    lua_getfield(L, -1, fn);
    int nargs = 0;
    if (c % 12 >= 9 && c % 12 <= 10) {
        /* union / intersect of two small patterns */
        for (int i = 0; i < 2; i++) {
            luaL_dostring(L, "return as.patterns.local_1d(9, 2)");
            nargs++;
        }
        fuzz_push_value(L, &b, 0); /* and something hostile */
        nargs++;
    } else {
        /* the size first (small, so a valid call stays cheap), then anything */
        int s = fuzz_byte(&b);
        lua_pushinteger(L, s < 0 ? 4 : (s % 70) - 3);
        nargs++;
        for (int i = 0; i < 3; i++) {
            fuzz_push_value(L, &b, 0);
            nargs++;
        }
    }
    if (lua_pcall(L, nargs, 1, 0) == LUA_OK && lua_isuserdata(L, -1)) {
        lua_setglobal(L, "m");
        luaL_dostring(L, "if m:dim() == 2 and m:size(1) == m:size(2) and m:size(1) > 0 and m:size(1) < 80 and m:dtype() == 'bool' then "
                         "local q = as.randn(1, 2, m:size(1), 4); "
                         "local c = as.attention.new('sparse_attention', {layout = m}); c(q, q, q) end; m = nil");
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
