/* The fused optimizer steps and the generator's state, for lua/attnswap/optim
 * and checkpoints:
 *   core.sgd_step(p, grad, buf|nil, master|nil, lr, momentum, dampening,
 *                 weight_decay, nesterov, maximize, first)
 *   core.adamw_step(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq|nil, master|nil,
 *                   lr, beta1, beta2, eps, weight_decay, step, decoupled, amsgrad, maximize)
 *   core.storage_version(t) -> the count of in-place writes to t's storage
 *   as.get_rng_state() -> seed, offset;  as.set_rng_state(seed, offset)
 * Positional numbers, not an options table: these run once per parameter per
 * step, and the Lua optimizer has checked the options already. */
#include "attnswap/ops.h"
#include "attnswap/optim.h"
#include "l_util.h"

static as_tensor *opt_tensor(lua_State *L, int idx) { return lua_isnoneornil(L, idx) ? NULL : l_checktensor(L, idx); }

static int l_sgd_step(lua_State *L)
{
    as_tensor *p = l_checktensor(L, 1), *g = l_checktensor(L, 2);
    as_tensor *buf = opt_tensor(L, 3), *master = opt_tensor(L, 4);
    as_sgd_params h = {
        .lr = luaL_checknumber(L, 5),
        .momentum = luaL_checknumber(L, 6),
        .dampening = luaL_checknumber(L, 7),
        .weight_decay = luaL_checknumber(L, 8),
        .nesterov = lua_toboolean(L, 9),
        .maximize = lua_toboolean(L, 10),
    };
    if (as_sgd_step(p, g, buf, master, &h, lua_toboolean(L, 11))) return l_raise(L);
    return 0;
}

static int l_adamw_step(lua_State *L)
{
    as_tensor *p = l_checktensor(L, 1), *g = l_checktensor(L, 2);
    as_tensor *m = l_checktensor(L, 3), *v = l_checktensor(L, 4);
    as_tensor *vmax = opt_tensor(L, 5), *master = opt_tensor(L, 6);
    as_adamw_params h = {
        .lr = luaL_checknumber(L, 7),
        .beta1 = luaL_checknumber(L, 8),
        .beta2 = luaL_checknumber(L, 9),
        .eps = luaL_checknumber(L, 10),
        .weight_decay = luaL_checknumber(L, 11),
        .step = luaL_checkinteger(L, 12),
        .decoupled = lua_toboolean(L, 13),
        .amsgrad = lua_toboolean(L, 14),
        .maximize = lua_toboolean(L, 15),
    };
    if (as_adamw_step(p, g, m, v, vmax, master, &h)) return l_raise(L);
    return 0;
}

/* The seed and offset as Lua integers (a uint64 seed wraps to negative, as
 * manual_seed's argument does, and comes back the same). */
static int l_get_rng_state(lua_State *L)
{
    uint64_t seed, offset;
    as_get_rng_state(&seed, &offset);
    lua_pushinteger(L, (lua_Integer)seed);
    lua_pushinteger(L, (lua_Integer)offset);
    return 2;
}

static int l_set_rng_state(lua_State *L)
{
    int ok1, ok2;
    lua_Integer seed = lua_tointegerx(L, 1, &ok1), offset = lua_tointegerx(L, 2, &ok2);
    if (!ok1) return l_argerror(L, 1, "set_rng_state", "integer seed");
    if (!ok2) return l_argerror(L, 2, "set_rng_state", "integer offset");
    if (as_set_rng_state((uint64_t)seed, (uint64_t)offset)) return l_raise(L);
    return 0;
}

/* The optimizers compare it before a step with the one after their last
 * step: a parameter written in between (loaded, edited) refreshes its master copy. */
static int l_storage_version(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)l_checktensor(L, 1)->storage->version);
    return 1;
}

/* The tensors of a Lua list (argument idx), or an error naming fn. */
static as_tensor **list_arg(lua_State *L, int idx, const char *fn, int *n)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer len = luaL_len(L, idx);
    if (len > 1 << 24) luaL_error(L, "%s: too many tensors (%d)", fn, (int)len);
    as_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)(len > 0 ? len : 1), 0); /* freed by the GC */
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, idx, i);
        ts[i - 1] = l_totensor(L, -1);
        if (!ts[i - 1]) luaL_error(L, "%s: element %d of the list is a %s, expected a Tensor", fn, (int)i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    *n = (int)len;
    return ts;
}

/* sum_squares({t1, t2, ...}) -> 0-d float32 tensor on their device */
static int l_sum_squares(lua_State *L)
{
    int n;
    as_tensor **ts = list_arg(L, 1, "sum_squares", &n);
    l_pushtensor(L, as_sum_squares(n, (const as_tensor *const *)ts));
    return 1;
}

/* scale_all_({t1, t2, ...}, s): each multiplied by s in place */
static int l_scale_all_(lua_State *L)
{
    int n;
    as_tensor **ts = list_arg(L, 1, "scale_all_", &n);
    if (as_scale_all_(n, ts, luaL_checknumber(L, 2))) return l_raise(L);
    return 0;
}

static const luaL_Reg optim_funcs[] = {
    {"sgd_step", l_sgd_step},
    {"adamw_step", l_adamw_step},
    {"sum_squares", l_sum_squares},
    {"scale_all_", l_scale_all_},
    {"storage_version", l_storage_version},
    {"get_rng_state", l_get_rng_state},
    {"set_rng_state", l_set_rng_state},
    {NULL, NULL},
};

void l_open_optim(lua_State *L) { luaL_setfuncs(L, optim_funcs, 0); }
