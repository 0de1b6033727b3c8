/* Bindings of the linear-cost attention kernels that linear_attention and
 * performer_attention share: the fused kernel (causal or not, inference
 * only) and the causal prefix scan over features made by tensor ops, which
 * records its own backward (their causal path under autograd, and the fused
 * kernel's reference in the specs). */
#include "l_util.h"

#include "attnswap/attention_linear.h"

/* linear_attention_causal(phi_q (B,H,Lq,F), phi_k (B,H,Lk,F), v (B,H,Lk,Dv)) -> (B,H,Lq,Dv),
 * one float dtype (float64 stays float64, the halves come back float32) */
static int l_linear_attention_causal(lua_State *L)
{
    as_tensor *fq = l_checktensor(L, 1), *fk = l_checktensor(L, 2), *v = l_checktensor(L, 3);
    l_pushtensor(L, as_linear_attention_causal(fq, fk, v));
    return 1;
}

/* kernelized_attention(q, k, v, keep|nil, w|nil, "elu1"|"favor"|"softmax" [, causal]) -> (B,H,Lq,Dv) */
static int l_kernelized_attention(lua_State *L)
{
    static const char *const maps[] = {"elu1", "favor", "softmax", NULL};
    static const as_feature_map map_of[] = {AS_FEATURE_ELU1, AS_FEATURE_FAVOR, AS_FEATURE_SOFTMAX};
    as_tensor *q = l_checktensor(L, 1), *k = l_checktensor(L, 2), *v = l_checktensor(L, 3);
    as_tensor *keep = lua_isnoneornil(L, 4) ? NULL : l_checktensor(L, 4);
    as_tensor *w = lua_isnoneornil(L, 5) ? NULL : l_checktensor(L, 5);
    int map = luaL_checkoption(L, 6, NULL, maps);
    bool causal = lua_toboolean(L, 7);
    l_pushtensor(L, as_kernelized_attention(q, k, v, keep, w, map_of[map], causal));
    return 1;
}

void l_open_zoo_linear(lua_State *L)
{
    lua_pushcfunction(L, l_kernelized_attention);
    lua_setfield(L, -2, "kernelized_attention");
    lua_pushcfunction(L, l_linear_attention_causal);
    lua_setfield(L, -2, "linear_attention_causal");
}
