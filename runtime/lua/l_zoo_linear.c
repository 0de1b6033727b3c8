/* Bindings of the linear-cost attention kernels: the causal prefix scan that
 * linear_attention and performer_attention share (their feature maps and the
 * non-causal path are tensor ops, in lua/attnswap/attention/). */
#include "l_util.h"

#include "attention_linear.h"

/* linear_attention_causal(phi_q (B,H,Lq,F), phi_k (B,H,Lk,F), v (B,H,Lk,Dv)) -> (B,H,Lq,Dv) */
static int l_linear_attention_causal(lua_State *L)
{
    as_tensor *fq = l_checktensor(L, 1), *fk = l_checktensor(L, 2), *v = l_checktensor(L, 3);
    l_pushtensor(L, as_linear_attention_causal(fq, fk, v));
    return 1;
}

void l_open_zoo_linear(lua_State *L)
{
    lua_pushcfunction(L, l_linear_attention_causal);
    lua_setfield(L, -2, "linear_attention_causal");
}
