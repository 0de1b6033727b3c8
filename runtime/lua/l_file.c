/* Files and random numbers from Lua:
 *   as.save(path, {name = tensor, ...} [, {key = "value", ...}])
 *   as.save(path, tensor [, metadata]): one tensor, named "tensor"
 *   as.load(path) -> {name = tensor, ...}, {key = "value", ...}
 *   as.manual_seed(n), as.initial_seed()
 *   as.rand(2, 3), as.randn({2, 3}, "bfloat16")
 * save writes names (and metadata keys) in sorted order, so the same table
 * always gives the same bytes. */
#include <stdlib.h>
#include <string.h>

#include "l_util.h"
#include "attnswap/ops.h"
#include "attnswap/io.h"

#define LOADBOX_MT "attnswap.safetensors_load"

/* Raises Lua's own message shape, whatever name the function was called by:
 * "bad argument #1 to 'save' (string expected, got nil)". */
static int argerror(lua_State *L, int arg, const char *fn, const char *msg)
{
    return luaL_error(L, "bad argument #%d to '%s' (%s)", arg, fn, msg);
}

static const char *check_path(lua_State *L, int arg, const char *fn)
{
    if (lua_type(L, arg) != LUA_TSTRING)
        argerror(L, arg, fn, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, arg)));
    return lua_tostring(L, arg);
}

typedef struct {
    const char *key;
    const void *value; /* a tensor, or a string for metadata */
} kv;

static int cmp_kv(const void *a, const void *b) { return strcmp(((const kv *)a)->key, ((const kv *)b)->key); }

/* Collects the string keys of the table at arg with their values, sorted by
 * key; the array is a userdata left on the stack (so an error cannot leak it).
 * Values must be tensors (tensors = 1) or strings. */
static kv *collect(lua_State *L, int arg, const char *fn, bool tensors, int *n_out)
{
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            argerror(L, arg, fn, lua_pushfstring(L, "%s must be strings, got a %s key",
                                                 tensors ? "tensor names" : "metadata keys",
                                                 luaL_typename(L, -2)));
        bool ok = tensors ? l_totensor(L, -1) != NULL : lua_type(L, -1) == LUA_TSTRING;
        if (!ok)
            argerror(L, arg, fn, lua_pushfstring(L, "field '%s' is a %s, expected a %s",
                                                 lua_tostring(L, -2), luaL_typename(L, -1),
                                                 tensors ? "tensor" : "string"));
        n++;
        lua_pop(L, 1);
    }
    kv *items = lua_newuserdatauv(L, sizeof(kv) * (size_t)(n + 1), 0);
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        /* the strings stay alive: the table holds them and is not changed */
        items[i].key = lua_tostring(L, -2);
        items[i].value = tensors ? (const void *)l_totensor(L, -1) : (const void *)lua_tostring(L, -1);
        i++;
        lua_pop(L, 1);
    }
    qsort(items, (size_t)n, sizeof *items, cmp_kv);
    *n_out = n;
    return items;
}

static int l_save(lua_State *L)
{
    const char *path = check_path(L, 1, "save");
    if (l_totensor(L, 2)) { /* one tensor: {tensor = t} */
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, 2);
        lua_setfield(L, -2, "tensor");
        lua_replace(L, 2);
    }
    if (!lua_istable(L, 2))
        return argerror(L, 2, "save", lua_pushfstring(L, "tensor or table of tensors expected, got %s", luaL_typename(L, 2)));
    if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
        return argerror(L, 3, "save", lua_pushfstring(L, "table of metadata strings expected, got %s",
                                                      luaL_typename(L, 3)));
    lua_settop(L, 3);
    int n = 0, nmeta = 0;
    kv *items = collect(L, 2, "save", true, &n);
    const char **meta = NULL;
    if (lua_istable(L, 3)) {
        kv *m = collect(L, 3, "save", false, &nmeta);
        meta = lua_newuserdatauv(L, sizeof(char *) * (size_t)(2 * nmeta + 1), 0);
        for (int i = 0; i < nmeta; i++) meta[2 * i] = m[i].key, meta[2 * i + 1] = m[i].value;
        meta[2 * nmeta] = NULL;
    }
    const char **names = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    const as_tensor **ts = lua_newuserdatauv(L, sizeof(as_tensor *) * (size_t)(n + 1), 0);
    for (int i = 0; i < n; i++) names[i] = items[i].key, ts[i] = items[i].value;
    if (as_safetensors_save(path, n, names, ts, meta)) return l_raise(L);
    return 0;
}

static int loadbox_gc(lua_State *L)
{
    as_safetensors **box = luaL_checkudata(L, 1, LOADBOX_MT);
    as_safetensors_free(*box);
    *box = NULL;
    return 0;
}

static int l_load(lua_State *L)
{
    const char *path = check_path(L, 1, "load");
    /* the loaded list lives in a box that the GC frees if pushing fails */
    as_safetensors **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, LOADBOX_MT);
    *box = as_safetensors_load(path);
    if (!*box) return l_raise(L);
    as_safetensors *st = *box;
    lua_createtable(L, 0, st->n > 1000000 ? 1000000 : (int)st->n);
    for (int64_t i = 0; i < st->n; i++) {
        l_pushtensor(L, as_retain(st->tensors[i].tensor));
        lua_setfield(L, -2, st->tensors[i].name);
    }
    lua_createtable(L, 0, st->nmeta > 1000000 ? 1000000 : (int)st->nmeta);
    for (int64_t i = 0; i < st->nmeta; i++) {
        lua_pushstring(L, st->meta_values[i]);
        lua_setfield(L, -2, st->meta_keys[i]);
    }
    as_safetensors_free(st);
    *box = NULL;
    return 2;
}

static int l_manual_seed(lua_State *L)
{
    int ok = 0;
    lua_Integer seed = lua_tointegerx(L, 1, &ok);
    if (!ok)
        return argerror(L, 1, "manual_seed", lua_pushfstring(L, "integer expected, got %s", luaL_typename(L, 1)));
    as_manual_seed((uint64_t)seed); /* negative seeds wrap, as torch's do */
    return 0;
}

static int l_initial_seed(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)as_initial_seed());
    return 1;
}

/* as.rand(2, 3) / as.rand({2, 3}) with an optional trailing dtype name. */
static int rand_common(lua_State *L, const char *fn, bool normal)
{
    int top = lua_gettop(L);
    as_dtype dt = AS_F32;
    if (top >= 1 && lua_type(L, top) == LUA_TSTRING) {
        dt = l_optdtype(L, top, AS_F32, fn);
        lua_settop(L, top - 1);
    }
    int64_t shape[AS_MAX_DIMS];
    int nd = l_checkshape(L, 1, shape, fn);
    l_pushtensor(L, normal ? as_randn(nd, shape, dt, AS_CPU) : as_rand(nd, shape, dt, AS_CPU));
    return 1;
}

static int l_rand(lua_State *L) { return rand_common(L, "rand", false); }
static int l_randn(lua_State *L) { return rand_common(L, "randn", true); }

static const luaL_Reg file_funcs[] = {
    {"save", l_save},
    {"load", l_load},
    {"manual_seed", l_manual_seed},
    {"initial_seed", l_initial_seed},
    {"rand", l_rand},
    {"randn", l_randn},
    {NULL, NULL},
};

void l_open_file(lua_State *L)
{
    if (luaL_newmetatable(L, LOADBOX_MT)) {
        lua_pushcfunction(L, loadbox_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, file_funcs, 0);
}
