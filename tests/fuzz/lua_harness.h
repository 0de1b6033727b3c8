/* Shared by the Lua-level fuzz harnesses: one Lua state with attnswap loaded,
 * and a decoder that turns fuzz bytes into Lua values (numbers, booleans,
 * strings, nested tables) without ever running fuzz bytes as code. */
#ifndef AS_FUZZ_LUA_HARNESS_H
#define AS_FUZZ_LUA_HARNESS_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int luaopen_attnswap_core(lua_State *L);

static lua_State *fuzz_state(void)
{
    static lua_State *L;
    if (L) return L;
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_attnswap_core);
    lua_setfield(L, -2, "attnswap.core");
    lua_pop(L, 1);
    if (luaL_dostring(L, "package.path = '" AS_FUZZ_LUA_DIR "/?.lua;" AS_FUZZ_LUA_DIR "/?/init.lua;' .. package.path; "
                         "as = require 'attnswap'") != LUA_OK)
        abort();
    return L;
}

typedef struct {
    const uint8_t *p;
    size_t n, i;
} fuzz_bytes;

static int fuzz_byte(fuzz_bytes *b) { return b->i < b->n ? b->p[b->i++] : -1; }

/* Pushes one value decoded from the bytes (depth-limited). */
static void fuzz_push_value(lua_State *L, fuzz_bytes *b, int depth)
{
    int c = fuzz_byte(b);
    if (c < 0) {
        lua_pushnil(L);
        return;
    }
    if (c < 0x40) {
        lua_pushnumber(L, (c - 32) * 0.5);
    } else if (c < 0x48) {
        lua_pushinteger(L, c - 0x44);
    } else if (c < 0x50) {
        lua_pushboolean(L, c & 1);
    } else if (c < 0x60 && depth < 12) {
        int len = c - 0x50 + (fuzz_byte(b) & 7);
        lua_createtable(L, len, 0);
        for (int i = 1; i <= len; i++) {
            fuzz_push_value(L, b, depth + 1);
            lua_rawseti(L, -2, i);
        }
    } else {
        switch (c & 7) {
        case 0: lua_pushliteral(L, "x"); break;
        case 1: lua_pushnumber(L, 1e308); break;
        case 2: lua_pushnumber(L, NAN); break;
        case 3: lua_pushnumber(L, -INFINITY); break;
        case 4: lua_pushinteger(L, INT64_MAX); break;
        case 5: lua_pushinteger(L, -1); break;
        case 6: lua_pushlstring(L, (const char *)b->p + b->i, b->n - b->i < 8 ? b->n - b->i : 8); break;
        default: lua_pushnil(L); break;
        }
    }
}

#endif
