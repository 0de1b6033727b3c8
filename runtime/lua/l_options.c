/* Options tables, read one way by every binding: opts[field] of the table
 * at idx (nil or absent: the default), with the binding's name in errors,
 * and the options every attention core takes. */
#include <math.h>

#include "l_util.h"

double l_opt_number(lua_State *L, int idx, const char *field, double def, const char *fn)
{
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, field);
    double r = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isnumber(L, -1)) l_error(L, "%s: %s must be a number, got %s", fn, field, luaL_typename(L, -1));
        r = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return r;
}

int64_t l_opt_integer(lua_State *L, int idx, const char *field, int64_t def, const char *fn)
{
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, field);
    int64_t r = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        r = (int64_t)lua_tointegerx(L, -1, &ok);
        if (!ok) l_error(L, "%s: %s must be an integer, got %s", fn, field, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return r;
}

bool l_opt_bool(lua_State *L, int idx, const char *field, bool def)
{
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, field);
    bool r = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

as_tensor *l_opt_tensor(lua_State *L, int idx, const char *field, const char *fn)
{
    if (lua_isnoneornil(L, idx)) return NULL;
    lua_getfield(L, idx, field);
    as_tensor *t = NULL;
    if (!lua_isnil(L, -1)) {
        t = l_totensor(L, -1);
        if (!t) l_error(L, "%s: %s must be a Tensor, got %s", fn, field, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return t;
}

void l_attention_opts(lua_State *L, int idx, const char *fn, as_attention_opts *o)
{
    if (!lua_isnoneornil(L, idx) && !lua_istable(L, idx)) l_argerror(L, idx, fn, "options table");
    *o = (as_attention_opts){
        .causal = l_opt_bool(L, idx, "causal", false),
        .scale = l_opt_number(L, idx, "scale", NAN, fn),
        .dropout = l_opt_number(L, idx, "dropout", 0, fn),
    };
    if (!(o->dropout >= 0 && o->dropout < 1)) l_error(L, "%s: dropout must be in [0, 1), got %g", fn, o->dropout);
}

void l_check_attention_call(lua_State *L, const char *fn, l_attention_call *a)
{
    a->q = l_checktensor(L, 1), a->k = l_checktensor(L, 2), a->v = l_checktensor(L, 3);
    a->mask = lua_isnoneornil(L, 4) ? NULL : l_checktensor(L, 4);
    l_attention_opts(L, 5, fn, &a->o);
    a->training = lua_toboolean(L, 6);
}
