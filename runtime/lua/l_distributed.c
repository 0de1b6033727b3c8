/* core.distributed: the C face of as.distributed (lua/attnswap/distributed.lua
 * adds op names, lists, per-call timeouts and the sampler).  Ranks are
 * 0-based, as MPI's and torch.distributed's are. */
#include <string.h>

#include "attnswap/distributed.h"
#include "l_util.h"

static as_reduce_op check_op(lua_State *L, int idx, const char *fn)
{
    const char *name = luaL_optstring(L, idx, "sum");
    int op = as_reduce_op_from_name(name);
    if (op < 0) l_error(L, "%s: unknown op '%s' (sum, avg, max, min or prod)", fn, name);
    return (as_reduce_op)op;
}

static int check_rank(lua_State *L, int idx, const char *fn, const char *what)
{
    lua_Integer r = luaL_checkinteger(L, idx);
    if (r < -1000000 || r > 1000000) return l_error(L, "%s: %s rank %lld is out of range", fn, what, (long long)r);
    return (int)r;
}

static int push_int(lua_State *L, int v)
{
    if (v < 0) return l_raise(L);
    lua_pushinteger(L, v);
    return 1;
}

static int l_init(lua_State *L)
{
    if (as_dist_init()) return l_raise(L);
    return 0;
}
static int l_is_initialized(lua_State *L)
{
    lua_pushboolean(L, as_dist_is_initialized());
    return 1;
}
static int l_rank(lua_State *L) { return push_int(L, as_dist_rank()); }
static int l_world_size(lua_State *L) { return push_int(L, as_dist_world_size()); }
static int l_local_rank(lua_State *L) { return push_int(L, as_dist_local_rank()); }
static int l_finalize(lua_State *L)
{
    if (as_dist_finalize()) return l_raise(L);
    return 0;
}
static int l_backend(lua_State *L)
{
    lua_pushstring(L, as_dist_backend());
    lua_pushboolean(L, as_dist_has_nccl());
    return 2;
}
/* set_timeout(seconds) -> the previous timeout */
static int l_set_timeout(lua_State *L)
{
    double prev = as_dist_timeout();
    as_dist_set_timeout(luaL_checknumber(L, 1));
    lua_pushnumber(L, prev);
    return 1;
}
static int l_timeout(lua_State *L)
{
    lua_pushnumber(L, as_dist_timeout());
    return 1;
}

static int l_all_reduce(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    if (as_dist_all_reduce(t, check_op(L, 2, "all_reduce"))) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}
static int l_broadcast(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    if (as_dist_broadcast(t, check_rank(L, 2, "broadcast", "root"))) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}
static int l_all_gather(lua_State *L)
{
    l_pushtensor(L, as_dist_all_gather(l_checktensor(L, 1)));
    return 1;
}
static int l_reduce_scatter(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    l_pushtensor(L, as_dist_reduce_scatter(t, check_op(L, 2, "reduce_scatter")));
    return 1;
}
static int l_send(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    if (as_dist_send(t, check_rank(L, 2, "send", "dst"), (int)luaL_optinteger(L, 3, 0))) return l_raise(L);
    return 0;
}
static int l_recv(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    if (as_dist_recv(t, check_rank(L, 2, "recv", "src"), (int)luaL_optinteger(L, 3, 0))) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}
/* sendrecv(send, dst, recv, src [, tag]) -> recv */
static int l_sendrecv(lua_State *L)
{
    as_tensor *s = l_checktensor(L, 1);
    int dst = check_rank(L, 2, "sendrecv", "dst");
    as_tensor *r = l_checktensor(L, 3);
    int src = check_rank(L, 4, "sendrecv", "src");
    if (as_dist_sendrecv(s, dst, r, src, (int)luaL_optinteger(L, 5, 0))) return l_raise(L);
    lua_settop(L, 3);
    return 1;
}
#define REQ_MT "attnswap.DistRequest"

/* isendrecv(send, dst, recv, src [, tag]) -> a request; request:wait() -> recv */
static int l_isendrecv(lua_State *L)
{
    as_tensor *s = l_checktensor(L, 1);
    int dst = check_rank(L, 2, "isendrecv", "dst");
    as_tensor *r = l_checktensor(L, 3);
    int src = check_rank(L, 4, "isendrecv", "src");
    as_dist_request **ud = lua_newuserdatauv(L, sizeof *ud, 1);
    *ud = NULL;
    luaL_setmetatable(L, REQ_MT);
    if (!(*ud = as_dist_isendrecv(s, dst, r, src, (int)luaL_optinteger(L, 5, 0)))) return l_raise(L);
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, -2, 1); /* wait returns recv */
    return 1;
}
/* iall_reduce(t, op) -> a request; request:wait() -> t, reduced */
static int l_iall_reduce(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    as_reduce_op op = check_op(L, 2, "iall_reduce");
    as_dist_request **ud = lua_newuserdatauv(L, sizeof *ud, 1);
    *ud = NULL;
    luaL_setmetatable(L, REQ_MT);
    if (!(*ud = as_dist_iall_reduce(t, op))) return l_raise(L);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}
static int l_req_wait(lua_State *L)
{
    as_dist_request **ud = luaL_checkudata(L, 1, REQ_MT);
    if (!*ud) return luaL_error(L, "wait: the request was freed");
    if (as_dist_request_wait(*ud)) return l_raise(L);
    lua_getiuservalue(L, 1, 1);
    return 1;
}
static int l_req_gc(lua_State *L)
{
    as_dist_request **ud = luaL_checkudata(L, 1, REQ_MT);
    as_dist_request_free(*ud);
    *ud = NULL;
    return 0;
}

static int l_barrier(lua_State *L)
{
    if (as_dist_barrier()) return l_raise(L);
    return 0;
}

void l_open_distributed(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"init", l_init},
        {"is_initialized", l_is_initialized},
        {"rank", l_rank},
        {"world_size", l_world_size},
        {"local_rank", l_local_rank},
        {"finalize", l_finalize},
        {"backend", l_backend},
        {"set_timeout", l_set_timeout},
        {"timeout", l_timeout},
        {"all_reduce", l_all_reduce},
        {"broadcast", l_broadcast},
        {"all_gather", l_all_gather},
        {"reduce_scatter", l_reduce_scatter},
        {"send", l_send},
        {"recv", l_recv},
        {"sendrecv", l_sendrecv},
        {"barrier", l_barrier},
        {"isendrecv", l_isendrecv},
        {"iall_reduce", l_iall_reduce},
        {NULL, NULL},
    };
    static const luaL_Reg req[] = {{"wait", l_req_wait}, {"__gc", l_req_gc}, {"__close", l_req_gc}, {NULL, NULL}};
    luaL_newmetatable(L, REQ_MT);
    luaL_setfuncs(L, req, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "distributed");
}
