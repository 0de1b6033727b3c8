/* Tokenizer userdata (attnswap.Tokenizer) over runtime/io/tokenizer.h:
 * core.tokenizer_load(path), core.tokenizer_from_json(text [, name]); methods
 * encode, decode, token_to_id, id_to_token; fields vocab_size and kind.
 * Buffers the runtime mallocs sit in a box userdata while Lua values are
 * built, so an error there (out of memory) leaks nothing. */
#include <stdlib.h>
#include <string.h>

#include "l_util.h"
#include "attnswap/tokenizer.h"

#define TOKENIZER_MT "attnswap.Tokenizer"
#define BOX_MT "attnswap.tokenizer_box"

static as_tokenizer **check_box(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, TOKENIZER_MT);
}

static as_tokenizer *check(lua_State *L, int idx, const char *fn)
{
    as_tokenizer **p = luaL_testudata(L, idx, TOKENIZER_MT);
    if (!p) l_argerror(L, idx, fn, "Tokenizer");
    if (!*p) l_error(L, "%s: the tokenizer was freed", fn);
    return *p;
}

static int box_gc(lua_State *L)
{
    void **box = lua_touserdata(L, 1);
    free(*box);
    *box = NULL;
    return 0;
}

/* A userdata that frees *box when collected; left on the stack. */
static void **new_box(lua_State *L)
{
    void **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return box;
}

static int l_tokenizer_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    as_tokenizer **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL;
    luaL_setmetatable(L, TOKENIZER_MT);
    if (!(*p = as_tokenizer_load(path))) return l_raise(L);
    return 1;
}

static int l_tokenizer_from_json(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "tokenizer.json");
    as_tokenizer **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL;
    luaL_setmetatable(L, TOKENIZER_MT);
    if (!(*p = as_tokenizer_from_json(text, len, name))) return l_raise(L);
    return 1;
}

/* opts.key as a boolean (default def); anything else is an error naming fn. */
static int opt_flag(lua_State *L, int idx, const char *key, int def, const char *fn)
{
    if (lua_isnoneornil(L, idx)) return def;
    if (!lua_istable(L, idx)) l_argerror(L, idx, fn, "table of options");
    int t = lua_getfield(L, idx, key);
    int v = t == LUA_TNIL ? def : lua_toboolean(L, -1);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) l_error(L, "%s: option %s must be a boolean, got %s", fn, key, lua_typename(L, t));
    lua_pop(L, 1);
    return v;
}

static void check_options(lua_State *L, int idx, const char *fn, const char *const *known)
{
    if (!lua_istable(L, idx)) return;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int ok = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int i = 0; known[i]; i++) ok |= strcmp(lua_tostring(L, -2), known[i]) == 0;
        if (!ok) {
            lua_pop(L, 1);
            l_error(L, "%s: unknown option '%s' (known: %s%s%s)", fn, luaL_tolstring(L, -1, NULL), known[0],
                    known[1] ? ", " : "", known[1] ? known[1] : "");
        }
        lua_pop(L, 1);
    }
}

/* tok:encode(text [, {add_special_tokens = true, tensor = false}]) -> ids (0-based) */
static int l_encode(lua_State *L)
{
    static const char *const known[] = {"add_special_tokens", "tensor", NULL};
    as_tokenizer *tok = check(L, 1, "encode");
    size_t len;
    const char *text = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &len) : NULL;
    if (!text) return l_argerror(L, 2, "encode", "string");
    check_options(L, 3, "encode", known);
    int add_special = opt_flag(L, 3, "add_special_tokens", 1, "encode");
    int as_tensor_out = opt_flag(L, 3, "tensor", 0, "encode");
    void **box = new_box(L);
    int32_t *ids = NULL;
    size_t n = 0;
    if (as_tokenizer_encode(tok, text, len, add_special, &ids, &n)) return l_raise(L);
    *box = ids;
    if (as_tensor_out) {
        int64_t shape[1] = {(int64_t)n};
        as_tensor *t = as_empty(1, shape, AS_I64, AS_CPU);
        if (!t) return l_raise(L);
        int64_t *d = as_data(t);
        for (size_t i = 0; i < n; i++) d[i] = ids[i];
        l_pushtensor(L, t);
        return 1;
    }
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* tok:decode(ids [, {skip_special_tokens = false}]): ids a list or a 1-d integer tensor */
static int l_decode(lua_State *L)
{
    static const char *const known[] = {"skip_special_tokens", NULL};
    as_tokenizer *tok = check(L, 1, "decode");
    check_options(L, 3, "decode", known);
    int skip = opt_flag(L, 3, "skip_special_tokens", 0, "decode");
    as_tensor *t = l_totensor(L, 2);
    size_t n;
    if (t) {
        if (t->ndim > 1 || (t->dtype != AS_I64 && t->dtype != AS_I32) || as_tensor_device(t).type != AS_DEV_CPU)
            return l_argerror(L, 2, "decode", "list of ids or 1-d int64/int32 CPU tensor");
        n = (size_t)as_numel(t);
    } else if (lua_istable(L, 2)) {
        n = (size_t)lua_rawlen(L, 2);
    } else {
        return l_argerror(L, 2, "decode", "list of ids or 1-d int64/int32 CPU tensor");
    }
    int32_t *ids = lua_newuserdatauv(L, (n ? n : 1) * sizeof *ids, 0);
    for (size_t i = 0; i < n; i++) {
        lua_Integer v;
        if (t) {
            v = (lua_Integer)as_get_flat(t, (int64_t)i);
        } else {
            int isint;
            lua_rawgeti(L, 2, (lua_Integer)i + 1);
            v = lua_tointegerx(L, -1, &isint);
            if (!isint) return l_error(L, "decode: ids[%zu] is %s, expected an integer id", i + 1, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
        if (v < 0 || v > INT32_MAX)
            return l_error(L, "decode: id %lld (at position %zu) is not in the vocabulary (ids 0..%lld)", (long long)v, i + 1,
                           (long long)as_tokenizer_vocab_size(tok) - 1);
        ids[i] = (int32_t)v;
    }
    void **box = new_box(L);
    size_t len;
    char *s = as_tokenizer_decode(tok, ids, n, skip, &len);
    if (!s) return l_raise(L);
    *box = s;
    lua_pushlstring(L, s, len);
    return 1;
}

static int l_token_to_id(lua_State *L)
{
    as_tokenizer *tok = check(L, 1, "token_to_id");
    size_t len;
    const char *s = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &len) : NULL;
    if (!s) return l_argerror(L, 2, "token_to_id", "string");
    int32_t id = as_tokenizer_token_to_id(tok, s, len);
    if (id < 0) lua_pushnil(L);
    else lua_pushinteger(L, id);
    return 1;
}

static int l_id_to_token(lua_State *L)
{
    as_tokenizer *tok = check(L, 1, "id_to_token");
    int isint;
    lua_Integer id = lua_tointegerx(L, 2, &isint);
    if (!isint) return l_argerror(L, 2, "id_to_token", "integer id");
    size_t len;
    const char *s = id >= 0 && id <= INT32_MAX ? as_tokenizer_id_to_token(tok, (int32_t)id, &len) : NULL;
    if (!s) lua_pushnil(L);
    else lua_pushlstring(L, s, len);
    return 1;
}

static int l_is_special(lua_State *L)
{
    as_tokenizer *tok = check(L, 1, "is_special");
    lua_Integer id = luaL_checkinteger(L, 2);
    lua_pushboolean(L, id >= 0 && id <= INT32_MAX && as_tokenizer_is_special(tok, (int32_t)id));
    return 1;
}

static int l_len(lua_State *L)
{
    lua_pushinteger(L, as_tokenizer_vocab_size(check(L, 1, "__len")));
    return 1;
}

static int l_tostring(lua_State *L)
{
    as_tokenizer **p = check_box(L, 1);
    char buf[256];
    if (!*p) lua_pushliteral(L, "Tokenizer(freed)");
    else lua_pushstring(L, as_tokenizer_describe(*p, buf, sizeof buf));
    return 1;
}

static int l_gc(lua_State *L)
{
    as_tokenizer **p = check_box(L, 1);
    as_tokenizer_free(*p);
    *p = NULL;
    return 0;
}

static const luaL_Reg methods[] = {
    {"encode", l_encode}, {"decode", l_decode}, {"token_to_id", l_token_to_id}, {"id_to_token", l_id_to_token},
    {"is_special", l_is_special}, {NULL, NULL}};

/* Methods, then the fields vocab_size and kind. */
static int l_index(lua_State *L)
{
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "vocab_size") == 0) {
        lua_pushinteger(L, as_tokenizer_vocab_size(check(L, 1, "vocab_size")));
        return 1;
    }
    lua_getfield(L, lua_upvalueindex(1), key ? key : "");
    return 1;
}

static const luaL_Reg functions[] = {
    {"tokenizer_load", l_tokenizer_load}, {"tokenizer_from_json", l_tokenizer_from_json}, {NULL, NULL}};

void l_open_tokenizer(lua_State *L)
{
    luaL_newmetatable(L, TOKENIZER_MT);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, l_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "Tokenizer");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
}
