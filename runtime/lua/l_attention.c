/* Bindings of the attention kernels: functional forms (as.sdp_attention,
 * as.flash_attention), core-module constructors, and which kernel ran. */
#include <math.h>

#include "l_util.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"

/* f(q, k, v [, mask [, opts [, training]]]) */
static int call_fn(lua_State *L, as_attention_fn fn, const char *name)
{
    l_attention_call a;
    l_check_attention_call(L, name, &a);
    l_pushtensor(L, fn(a.q, a.k, a.v, a.mask, &a.o, a.training));
    return 1;
}

static int l_sdp_attention(lua_State *L) { return call_fn(L, as_sdp_attention, "sdp_attention"); }
static int l_flash_attention(lua_State *L) { return call_fn(L, as_flash_attention, "flash_attention"); }

/* flash_attention_lse(q, k, v [, mask [, opts]]) -> out, lse (B, H, Lq) */
static int l_flash_attention_lse(lua_State *L)
{
    l_attention_call a;
    l_check_attention_call(L, "flash_attention_lse", &a);
    as_tensor *lse = NULL;
    as_tensor *out = as_flash_attention_lse(a.q, a.k, a.v, a.mask, &a.o, &lse);
    if (!out) return l_raise(L);
    l_pushtensor(L, out);
    l_pushtensor(L, lse);
    return 2;
}

/* flash_attention_backward(dout, q, k, v, out, lse [, mask [, opts]]) -> dq, dk, dv */
static int l_flash_attention_backward(lua_State *L)
{
    const char *fn = "flash_attention_backward";
    as_tensor *t[6];
    for (int i = 0; i < 6; i++) t[i] = l_checktensor(L, i + 1);
    as_tensor *mask = lua_isnoneornil(L, 7) ? NULL : l_checktensor(L, 7);
    as_attention_opts o;
    l_attention_opts(L, 8, fn, &o);
    as_tensor *dq, *dk, *dv;
    if (as_flash_attention_backward(t[0], t[1], t[2], t[3], mask, t[4], t[5], &o, &dq, &dk, &dv)) return l_raise(L);
    l_pushtensor(L, dq);
    l_pushtensor(L, dk);
    l_pushtensor(L, dv);
    return 3;
}

static int l_new_flash(lua_State *L)
{
    as_attention_opts o;
    l_attention_opts(L, 1, "FlashAttention", &o);
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

/* flash_has_backward(t) -> whether t's device has the fused flash backward
 * (else a call that needs gradients takes the materialising math path) */
static int l_flash_has_backward(lua_State *L)
{
    lua_pushboolean(L, as_flash_has_backward(as_tensor_device(l_checktensor(L, 1))));
    return 1;
}

/* sdpa_backend() -> the kernel and vector path of the last flash call */
static int l_sdpa_backend(lua_State *L)
{
    lua_pushstring(L, as_flash_backend());
    return 1;
}

/* sdpa_backward_backend() -> the kernel of the last fused attention backward */
static int l_sdpa_backward_backend(lua_State *L)
{
    lua_pushstring(L, as_flash_backward_backend());
    return 1;
}

static const luaL_Reg attention_functions[] = {
    {"sdp_attention", l_sdp_attention}, {"flash_attention", l_flash_attention},
    {"flash_attention_lse", l_flash_attention_lse}, {"flash_attention_backward", l_flash_attention_backward},
    {"new_flash", l_new_flash}, {"sdpa_backend", l_sdpa_backend},
    {"sdpa_backward_backend", l_sdpa_backward_backend},
    {"flash_has_backward", l_flash_has_backward},
    {"attention_check", l_attention_check}, {NULL, NULL},
};

void l_open_attention(lua_State *L) { luaL_setfuncs(L, attention_functions, 0); }
