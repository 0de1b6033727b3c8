/* Bindings of the sparse attention kernels: functional forms that the Lua
 * classes in lua/attnswap/attention/ call, also public as as.<name>:
 *
 *   as.sparse_attention(q, k, v [, mask [, opts [, training]]])
 *     opts: causal, scale, dropout, layout (bool tensor), block_size = 32
 *   as.local_attention(...)    opts: window_size = 64
 *   as.sink_attention(...)     opts: window_size = 64, num_sinks = 4 (always causal)
 *   as.dynamic_attention(...)  opts: top_k = 32
 *
 *   core.sparse_patterns: the C builders behind as.patterns (lua/attnswap/
 *     patterns.lua checks their arguments and takes 1-based positions); a
 *     table, so `as` does not re-export them. */
#include <math.h>

#include "attnswap/attention_sparse.h"
#include "l_util.h"


static int l_sparse_attention(lua_State *L)
{
    const char *fn = "sparse_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    as_tensor *layout = l_opt_tensor(L, 5, "layout", fn);
    if (!layout) return l_error(L, "%s: opts.layout (a bool tensor of elements or blocks) is required", fn);
    int64_t bs = l_opt_integer(L, 5, "block_size", 32, fn);
    l_pushtensor(L, as_sparse_attention(a.q, a.k, a.v, a.mask, &a.o, layout, bs, a.training));
    return 1;
}

static int l_local_attention(lua_State *L)
{
    const char *fn = "local_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    int64_t w = l_opt_integer(L, 5, "window_size", 64, fn);
    l_pushtensor(L, as_local_attention(a.q, a.k, a.v, a.mask, &a.o, w, a.training));
    return 1;
}

static int l_sink_attention(lua_State *L)
{
    const char *fn = "sink_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    int64_t w = l_opt_integer(L, 5, "window_size", 64, fn);
    int64_t s = l_opt_integer(L, 5, "num_sinks", 4, fn);
    l_pushtensor(L, as_sink_attention(a.q, a.k, a.v, a.mask, &a.o, w, s, a.training));
    return 1;
}

/* topk_keep(s, top_k) -> bool keep-mask, or nil where the kernel does not
 * take s (not float32 on the CPU): the composite then selects with ops */
static int l_topk_keep(lua_State *L)
{
    as_tensor *s = l_checktensor(L, 1);
    lua_Integer k = luaL_checkinteger(L, 2);
    if (!as_topk_keep_takes(s)) {
        lua_pushnil(L);
        return 1;
    }
    l_pushtensor(L, as_topk_keep(s, (int64_t)k));
    return 1;
}

static int l_dynamic_attention(lua_State *L)
{
    const char *fn = "dynamic_attention";
    l_attention_call a;
    l_check_attention_call(L, fn, &a);
    int64_t k = l_opt_integer(L, 5, "top_k", 32, fn);
    l_pushtensor(L, as_dynamic_attention(a.q, a.k, a.v, a.mask, &a.o, k, a.training));
    return 1;
}

/* ---- core.sparse_patterns (0-based; patterns.lua is the public face) ---- */

/* local(L, window [, causal]) */
static int l_pat_local(lua_State *L)
{
    l_pushtensor(L, as_pattern(AS_PATTERN_LOCAL, luaL_checkinteger(L, 1), luaL_checkinteger(L, 2), 0,
                               lua_toboolean(L, 3)));
    return 1;
}

/* strided(L, stride [, causal]) */
static int l_pat_strided(lua_State *L)
{
    l_pushtensor(L, as_pattern(AS_PATTERN_STRIDED, luaL_checkinteger(L, 1), luaL_checkinteger(L, 2), 0,
                               lua_toboolean(L, 3)));
    return 1;
}

/* fixed(L, stride, c [, causal]) */
static int l_pat_fixed(lua_State *L)
{
    l_pushtensor(L, as_pattern(AS_PATTERN_FIXED, luaL_checkinteger(L, 1), luaL_checkinteger(L, 2),
                               luaL_checkinteger(L, 3), lua_toboolean(L, 4)));
    return 1;
}

/* axial(h, w [, causal]) */
static int l_pat_axial(lua_State *L)
{
    l_pushtensor(L, as_pattern(AS_PATTERN_AXIAL, 0, luaL_checkinteger(L, 1), luaL_checkinteger(L, 2),
                               lua_toboolean(L, 3)));
    return 1;
}

/* random(L, p, seed) */
static int l_pat_random(lua_State *L)
{
    l_pushtensor(L, as_pattern_random(luaL_checkinteger(L, 1), luaL_checknumber(L, 2),
                                      (uint64_t)luaL_optinteger(L, 3, 0)));
    return 1;
}

/* global(L, positions (0-based int tensor)) */
static int l_pat_global(lua_State *L)
{
    l_pushtensor(L, as_pattern_global(luaL_checkinteger(L, 1), l_checktensor(L, 2)));
    return 1;
}

/* bigbird(L, block, window, globals, randoms, seed, causal, blocks_only) */
static int l_pat_bigbird(lua_State *L)
{
    l_pushtensor(L, as_pattern_bigbird(luaL_checkinteger(L, 1), luaL_checkinteger(L, 2),
                                       luaL_checkinteger(L, 3), luaL_checkinteger(L, 4),
                                       luaL_checkinteger(L, 5), (uint64_t)luaL_optinteger(L, 6, 0),
                                       lua_toboolean(L, 7), lua_toboolean(L, 8)));
    return 1;
}

/* to_blocks(mask, block) */
static int l_pat_to_blocks(lua_State *L)
{
    l_pushtensor(L, as_pattern_to_blocks(l_checktensor(L, 1), luaL_checkinteger(L, 2)));
    return 1;
}

/* from_blocks(layout, block, rows, cols) */
static int l_pat_from_blocks(lua_State *L)
{
    l_pushtensor(L, as_pattern_from_blocks(l_checktensor(L, 1), luaL_checkinteger(L, 2),
                                           luaL_checkinteger(L, 3), luaL_checkinteger(L, 4)));
    return 1;
}

static const luaL_Reg sparse_functions[] = {
    {"sparse_attention", l_sparse_attention},   {"local_attention", l_local_attention},
    {"sink_attention", l_sink_attention},       {"dynamic_attention", l_dynamic_attention},
    {"topk_keep", l_topk_keep},
    {NULL, NULL},
};

static const luaL_Reg pattern_functions[] = {
    {"local", l_pat_local},         {"strided", l_pat_strided},   {"fixed", l_pat_fixed},
    {"axial", l_pat_axial},         {"random", l_pat_random},     {"global", l_pat_global},
    {"bigbird", l_pat_bigbird},     {"to_blocks", l_pat_to_blocks}, {"from_blocks", l_pat_from_blocks},
    {NULL, NULL},
};

void l_open_zoo_sparse(lua_State *L)
{
    luaL_setfuncs(L, sparse_functions, 0);
    luaL_newlib(L, pattern_functions);
    lua_setfield(L, -2, "sparse_patterns");
}
