/* as.cuda: is the GPU there, how many, wait for it, how much memory it holds.
 * Present in every build; without CUDA, is_available() is false. */
#include "attnswap/cuda.h"
#include "l_util.h"

static int opt_device(lua_State *L, int idx, const char *fn)
{
    lua_Integer i = luaL_optinteger(L, idx, 0);
    if (i < 0 || i >= as_cuda_device_count())
        return luaL_error(L, "%s: no CUDA device %d (%d available)", fn, (int)i, as_cuda_device_count());
    return (int)i;
}

static int l_is_available(lua_State *L)
{
    lua_pushboolean(L, as_cuda_device_count() > 0);
    return 1;
}

static int l_is_built(lua_State *L)
{
    lua_pushboolean(L, as_cuda_built());
    return 1;
}

static int l_device_count(lua_State *L)
{
    lua_pushinteger(L, as_cuda_device_count());
    return 1;
}

/* synchronize([device]): all devices when none is given */
static int l_synchronize(lua_State *L)
{
    int i = lua_isnoneornil(L, 1) ? -1 : opt_device(L, 1, "synchronize");
    if (as_cuda_synchronize(i)) l_raise(L);
    return 0;
}

static void setsize(lua_State *L, const char *k, size_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* memory_stats([device]) -> {allocated, reserved, peak_allocated, num_mallocs} in bytes */
static int l_memory_stats(lua_State *L)
{
    as_cuda_memory m;
    as_cuda_memory_stats(opt_device(L, 1, "memory_stats"), &m);
    lua_createtable(L, 0, 4);
    setsize(L, "allocated", m.allocated);
    setsize(L, "reserved", m.reserved);
    setsize(L, "peak_allocated", m.peak_allocated);
    setsize(L, "num_mallocs", m.num_mallocs);
    return 1;
}

static int l_reset_peak(lua_State *L)
{
    as_cuda_reset_peak(opt_device(L, 1, "reset_peak_memory"));
    return 0;
}

static int l_empty_cache(lua_State *L)
{
    if (as_cuda_empty_cache()) return l_raise(L);
    return 0;
}

/* profiler_start() / profiler_stop(): the capture range of nsys, ncu and
 * bench/cuda_trace.c, as torch.cuda.profiler.start/stop */
static int l_profiler_start(lua_State *L)
{
    if (as_cuda_profiler(1)) l_raise(L);
    return 0;
}

static int l_profiler_stop(lua_State *L)
{
    if (as_cuda_profiler(0)) l_raise(L);
    return 0;
}

/* ---- graphs: the handle as.cuda.graph (lua/attnswap/cuda_graph.lua) holds ---- */
#define GRAPH_MT "attnswap.CudaGraphHandle"

static as_cuda_graph **check_graph(lua_State *L)
{
    as_cuda_graph **g = luaL_checkudata(L, 1, GRAPH_MT);
    if (!*g) luaL_error(L, "graph: the graph has been freed");
    return g;
}

/* graph_begin(device) -> handle: the device's stream records from now on */
static int l_graph_begin(lua_State *L)
{
    int dev = opt_device(L, 1, "graph");
    as_cuda_graph **g = lua_newuserdatauv(L, sizeof *g, 0);
    *g = NULL;
    luaL_setmetatable(L, GRAPH_MT);
    if (!(*g = as_cuda_graph_begin(dev))) return l_raise(L);
    return 1;
}

static int l_graph_end(lua_State *L)
{
    if (as_cuda_graph_end(*check_graph(L))) return l_raise(L);
    return 0;
}

static int l_graph_replay(lua_State *L)
{
    if (as_cuda_graph_replay(*check_graph(L))) return l_raise(L);
    return 0;
}

static int l_graph_free(lua_State *L)
{
    as_cuda_graph **g = luaL_checkudata(L, 1, GRAPH_MT);
    as_cuda_graph_free(*g);
    *g = NULL;
    return 0;
}

static int l_capturing(lua_State *L)
{
    lua_pushboolean(L, as_cuda_capturing(-1));
    return 1;
}

static const luaL_Reg cuda_functions[] = {
    {"is_available", l_is_available}, {"is_built", l_is_built}, {"device_count", l_device_count},
    {"synchronize", l_synchronize}, {"memory_stats", l_memory_stats}, {"reset_peak_memory", l_reset_peak},
    {"empty_cache", l_empty_cache}, {"profiler_start", l_profiler_start}, {"profiler_stop", l_profiler_stop},
    {"graph_begin", l_graph_begin}, {"is_capturing", l_capturing},
    {NULL, NULL},
};

void l_open_cuda(lua_State *L)
{
    static const luaL_Reg graph[] = {
        {"end_capture", l_graph_end}, {"replay", l_graph_replay}, {"free", l_graph_free}, {"__gc", l_graph_free},
        {NULL, NULL},
    };
    luaL_newmetatable(L, GRAPH_MT);
    luaL_setfuncs(L, graph, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, cuda_functions);
    lua_setfield(L, -2, "cuda");
}
