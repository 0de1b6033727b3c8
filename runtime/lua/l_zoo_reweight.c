/* Bindings of the reweight attention kernels: functional forms that the Lua
 * classes in lua/attnswap/attention/ call, also public as as.<name>:
 *
 *   as.relative_attention(q, k, v [, mask [, opts [, training]]])
 *     opts: causal, scale, dropout, alibi, bidirectional, num_buckets,
 *           max_distance, bias (num_buckets, H)
 *   as.adaptive_attention(...)  opts: span (H), max_span, ramp
 *   as.gated_attention(...)     opts: gate_weight (H, D, G), gate_bias (H, G)
 *   as.entmax_attention(...)    opts: alpha, pre_alpha (H)
 *   as.sigmoid_attention(...)   opts: bias (number; default -log(Lk))
 *   as.cosine_attention(...)    opts: logit_scale (H, 1, 1), max_logit
 *   as.entmax(x [, alpha = 1.5 [, dim = -1]])
 *   core.flex_attention_ops.step(acc, m, l, s, v [, keep, keep_scale]),
 *   core.flex_attention_ops.finish(acc, l [, dtype])
 *     flex_attention's tile loop; a table, so `as` does not re-export them */
#include <math.h>
#include <string.h>

#include "attnswap/attention_reweight.h"
#include "l_util.h"


static int l_relative_attention(lua_State *L)
{
    const char *fn = "relative_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    as_relative_opts r = {
        .alibi = l_opt_bool(L, 5, "alibi", false),
        .bidirectional = l_opt_bool(L, 5, "bidirectional", !a.o.causal),
        .num_buckets = l_opt_integer(L, 5, "num_buckets", 32, fn),
        .max_distance = l_opt_integer(L, 5, "max_distance", 128, fn),
    };
    as_tensor *bias = l_opt_tensor(L, 5, "bias", fn);
    l_pushtensor(L, as_relative_attention(a.q, a.k, a.v, a.mask, &a.o, &r, bias, a.training));
    return 1;
}

static int l_adaptive_attention(lua_State *L)
{
    const char *fn = "adaptive_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    as_tensor *span = l_opt_tensor(L, 5, "span", fn);
    double max_span = l_opt_number(L, 5, "max_span", 1024, fn), ramp = l_opt_number(L, 5, "ramp", 32, fn);
    l_pushtensor(L, as_adaptive_attention(a.q, a.k, a.v, a.mask, &a.o, span, max_span, ramp, a.training));
    return 1;
}

static int l_gated_attention(lua_State *L)
{
    const char *fn = "gated_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    as_tensor *w = l_opt_tensor(L, 5, "gate_weight", fn), *b = l_opt_tensor(L, 5, "gate_bias", fn);
    l_pushtensor(L, as_gated_attention(a.q, a.k, a.v, a.mask, &a.o, w, b, a.training));
    return 1;
}

static int l_entmax_attention(lua_State *L)
{
    const char *fn = "entmax_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    double alpha = l_opt_number(L, 5, "alpha", 1.5, fn);
    as_tensor *pre = l_opt_tensor(L, 5, "pre_alpha", fn);
    l_pushtensor(L, as_entmax_attention(a.q, a.k, a.v, a.mask, &a.o, alpha, pre, a.training));
    return 1;
}

static int l_sigmoid_attention(lua_State *L)
{
    const char *fn = "sigmoid_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    double bias = l_opt_number(L, 5, "bias", NAN, fn);
    l_pushtensor(L, as_sigmoid_attention(a.q, a.k, a.v, a.mask, &a.o, bias, a.training));
    return 1;
}

static int l_cosine_attention(lua_State *L)
{
    const char *fn = "cosine_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    as_tensor *ls = l_opt_tensor(L, 5, "logit_scale", fn);
    double max_logit = l_opt_number(L, 5, "max_logit", log(100.0), fn);
    l_pushtensor(L, as_cosine_attention(a.q, a.k, a.v, a.mask, &a.o, ls, max_logit, a.training));
    return 1;
}

/* entmax(x [, alpha [, dim]]) */
static int l_entmax(lua_State *L)
{
    as_tensor *x = l_checktensor(L, 1);
    double alpha = luaL_optnumber(L, 2, 1.5);
    int dim = l_optdim(L, 3, -1, "entmax");
    l_pushtensor(L, as_entmax(x, dim, alpha));
    return 1;
}

/* step(acc, m, l, s, v [, keep [, keep_scale]]) */
static int l_flex_step(lua_State *L)
{
    as_tensor *acc = l_checktensor(L, 1), *m = l_checktensor(L, 2), *l = l_checktensor(L, 3);
    as_tensor *s = l_checktensor(L, 4), *v = l_checktensor(L, 5);
    as_tensor *keep = lua_isnoneornil(L, 6) ? NULL : l_checktensor(L, 6);
    double ks = luaL_optnumber(L, 7, 1.0);
    if (as_flex_step(acc, m, l, s, v, keep, ks)) return l_raise(L);
    return 0;
}

/* finish(acc, l [, dtype]) */
static int l_flex_finish(lua_State *L)
{
    as_tensor *acc = l_checktensor(L, 1), *l = l_checktensor(L, 2);
    as_dtype dt = l_optdtype(L, 3, AS_F32, "flex_attention");
    l_pushtensor(L, as_flex_finish(acc, l, dt));
    return 1;
}

static const luaL_Reg reweight_functions[] = {
    {"relative_attention", l_relative_attention}, {"adaptive_attention", l_adaptive_attention},
    {"gated_attention", l_gated_attention},       {"entmax_attention", l_entmax_attention},
    {"sigmoid_attention", l_sigmoid_attention},   {"cosine_attention", l_cosine_attention},
    {"entmax", l_entmax},                         {NULL, NULL},
};

static const luaL_Reg flex_ops[] = {{"step", l_flex_step}, {"finish", l_flex_finish}, {NULL, NULL}};

void l_open_zoo_reweight(lua_State *L)
{
    luaL_setfuncs(L, reweight_functions, 0);
    luaL_newlib(L, flex_ops);
    lua_setfield(L, -2, "flex_attention_ops");
}
