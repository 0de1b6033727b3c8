/* Bindings of the attention kernels: functional forms (as.sdp_attention,
 * as.flash_attention), core-module constructors, and which kernel ran. */
#include <math.h>

#include "l_util.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"

/* opts table at idx (nil allowed) -> as_attention_opts */
static void check_opts(lua_State *L, int idx, as_attention_opts *o, const char *fn)
{
    *o = (as_attention_opts){.causal = false, .scale = NAN, .dropout = 0};
    if (lua_isnoneornil(L, idx)) return;
    if (!lua_istable(L, idx)) {
        l_argerror(L, idx, fn, "options table");
        return;
    }
    lua_getfield(L, idx, "causal");
    o->causal = lua_toboolean(L, -1);
    lua_getfield(L, idx, "scale");
    if (!lua_isnil(L, -1)) o->scale = luaL_checknumber(L, -1);
    lua_getfield(L, idx, "dropout");
    if (!lua_isnil(L, -1)) o->dropout = luaL_checknumber(L, -1);
    lua_pop(L, 3);
    if (!(o->dropout >= 0 && o->dropout < 1)) l_error(L, "%s: dropout must be in [0, 1), got %g", fn, o->dropout);
}

/* f(q, k, v [, mask [, opts [, training]]]) */
static int call_fn(lua_State *L, as_attention_fn fn, const char *name)
{
    as_tensor *q = l_checktensor(L, 1), *k = l_checktensor(L, 2), *v = l_checktensor(L, 3);
    as_tensor *mask = lua_isnoneornil(L, 4) ? NULL : l_checktensor(L, 4);
    as_attention_opts o;
    check_opts(L, 5, &o, name);
    l_pushtensor(L, fn(q, k, v, mask, &o, lua_toboolean(L, 6)));
    return 1;
}

static int l_sdp_attention(lua_State *L) { return call_fn(L, as_sdp_attention, "sdp_attention"); }
static int l_flash_attention(lua_State *L) { return call_fn(L, as_flash_attention, "flash_attention"); }

static int l_new_flash(lua_State *L)
{
    as_attention_opts o;
    check_opts(L, 1, &o, "FlashAttention");
    as_module *m = as_attention_core_new("FlashAttention", as_flash_attention, &o);
    if (!m) return l_raise(L);
    l_pushmodule(L, m);
    as_module_release(m);
    return 1;
}

/* attention_check(fn, q, k, v [, mask]): the attention contract, for
 * implementations written in Lua (one check for every implementation) */
static int l_attention_check(lua_State *L)
{
    const char *fn = luaL_checkstring(L, 1);
    as_tensor *t[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4; i++) {
        if (lua_isnoneornil(L, i + 2)) continue;
        t[i] = l_totensor(L, i + 2);
        if (!t[i]) return l_error(L, "%s: %s must be a Tensor, got %s", fn, i < 3 ? (const char *[]){"q", "k", "v"}[i] : "mask",
                                  luaL_typename(L, i + 2));
    }
    if (as_attention_check(fn, t[0], t[1], t[2], t[3], NULL)) return l_raise(L);
    return 0;
}

/* sdpa_backend() -> the kernel and vector path of the last flash call */
static int l_sdpa_backend(lua_State *L)
{
    lua_pushstring(L, as_flash_backend());
    return 1;
}

static const luaL_Reg attention_functions[] = {
    {"sdp_attention", l_sdp_attention}, {"flash_attention", l_flash_attention},
    {"new_flash", l_new_flash}, {"sdpa_backend", l_sdpa_backend},
    {"attention_check", l_attention_check}, {NULL, NULL},
};

void l_open_attention(lua_State *L) { luaL_setfuncs(L, attention_functions, 0); }
