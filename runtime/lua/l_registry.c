/* Lua face of the attention registry: core.registry_add / _get / _names.
 * The Lua half (lua/attnswap/registry.lua) adds the decorator form, list()
 * and new().  A class is kept alive by a registry reference. */
#include "l_util.h"
#include "attnswap/registry.h"

/* A string field (checked to be a string), anchored by the info table. */
static const char *opt_string(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);
    return s;
}

static bool opt_bool(lua_State *L, int t, const char *k, bool def)
{
    lua_getfield(L, t, k);
    bool v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* registry_add(name, Class, info, replace) */
static int l_registry_add(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    for (const char **k = (const char *[]){"complexity", "devices", "paper", "summary", NULL}; *k; k++) {
        lua_getfield(L, 3, *k);
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "register_attention: info.%s must be a string, got %s", *k, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    as_attention_entry e = {
        .name = (char *)name,
        .exact = opt_bool(L, 3, "exact", false),
        .complexity = (char *)opt_string(L, 3, "complexity"),
        .causal = opt_bool(L, 3, "causal", true),
        .mask = opt_bool(L, 3, "mask", true),
        .gqa = opt_bool(L, 3, "gqa", true),
        .incremental = opt_bool(L, 3, "incremental", false),
        .devices = (char *)opt_string(L, 3, "devices"),
        .paper = (char *)opt_string(L, 3, "paper"),
        .summary = (char *)opt_string(L, 3, "summary"),
    };
    if (!e.devices) e.devices = "cpu";
    lua_pushvalue(L, 2);
    e.class_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int old;
    if (as_registry_add(&e, lua_toboolean(L, 4), &old)) {
        luaL_unref(L, LUA_REGISTRYINDEX, e.class_ref);
        return l_raise(L);
    }
    if (old >= 0) luaL_unref(L, LUA_REGISTRYINDEX, old);
    return 0;
}

static void push_entry(lua_State *L, const as_attention_entry *e)
{
    lua_createtable(L, 0, 10);
    lua_pushstring(L, e->name), lua_setfield(L, -2, "name");
    lua_pushboolean(L, e->exact), lua_setfield(L, -2, "exact");
    lua_pushstring(L, e->complexity), lua_setfield(L, -2, "complexity");
    lua_pushboolean(L, e->causal), lua_setfield(L, -2, "causal");
    lua_pushboolean(L, e->mask), lua_setfield(L, -2, "mask");
    lua_pushboolean(L, e->gqa), lua_setfield(L, -2, "gqa");
    lua_pushboolean(L, e->incremental), lua_setfield(L, -2, "incremental");
    lua_pushstring(L, e->devices), lua_setfield(L, -2, "devices");
    lua_pushstring(L, e->paper), lua_setfield(L, -2, "paper");
    lua_pushstring(L, e->summary), lua_setfield(L, -2, "summary");
}

/* registry_get(name) -> Class, info | nil */
static int l_registry_get(lua_State *L)
{
    const as_attention_entry *e = as_registry_get(luaL_checkstring(L, 1));
    if (!e) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->class_ref);
    push_entry(L, e);
    return 2;
}

static int l_registry_names(lua_State *L)
{
    int n = as_registry_count();
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, as_registry_at(i)->name);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static const luaL_Reg registry_functions[] = {
    {"registry_add", l_registry_add}, {"registry_get", l_registry_get},
    {"registry_names", l_registry_names}, {NULL, NULL},
};

void l_open_registry(lua_State *L) { luaL_setfuncs(L, registry_functions, 0); }
