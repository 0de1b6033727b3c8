/* as.json_decode(text): JSON to Lua values through cJSON (Debian's libcjson),
 * for the config.json files that sit next to checkpoints.  Objects become
 * tables, arrays become sequences, null becomes nil. */
#include <cjson/cJSON.h>

#include "l_util.h"

#define MAX_DEPTH 64

static void push_json(lua_State *L, const cJSON *j, int depth)
{
    if (depth > MAX_DEPTH) luaL_error(L, "json_decode: nesting deeper than %d", MAX_DEPTH);
    luaL_checkstack(L, 4, "json_decode");
    if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
        lua_newtable(L);
        int i = 1;
        for (const cJSON *c = j->child; c; c = c->next) {
            push_json(L, c, depth + 1);
            if (cJSON_IsArray(j)) lua_rawseti(L, -2, i++);
            else lua_setfield(L, -2, c->string ? c->string : "");
        }
    } else if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsBool(j)) {
        lua_pushboolean(L, cJSON_IsTrue(j));
    } else if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        /* range first: converting a double outside lua_Integer's range is undefined */
        if (v >= -9.007e15 && v <= 9.007e15 && v == (double)(lua_Integer)v) lua_pushinteger(L, (lua_Integer)v);
        else lua_pushnumber(L, v);
    } else {
        lua_pushnil(L);
    }
}

/* The parsed document lives in a userdata whose __gc frees it, so an error
 * while building the Lua value (out of memory, too deep) cannot leak it. */
static int box_gc(lua_State *L)
{
    cJSON **box = lua_touserdata(L, 1);
    cJSON_Delete(*box);
    *box = NULL;
    return 0;
}

static int l_json_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    cJSON **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, "attnswap.json_box")) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *box = cJSON_ParseWithLength(text, len);
    if (!*box) return l_error(L, "json_decode: invalid JSON near byte %d", (int)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : 0));
    push_json(L, *box, 0);
    return 1;
}

static const luaL_Reg json_functions[] = {{"json_decode", l_json_decode}, {NULL, NULL}};

void l_open_json(lua_State *L) { luaL_setfuncs(L, json_functions, 0); }
