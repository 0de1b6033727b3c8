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
    (void)L;
    as_cuda_empty_cache();
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

static const luaL_Reg cuda_functions[] = {
    {"is_available", l_is_available}, {"is_built", l_is_built}, {"device_count", l_device_count},
    {"synchronize", l_synchronize}, {"memory_stats", l_memory_stats}, {"reset_peak_memory", l_reset_peak},
    {"empty_cache", l_empty_cache}, {"profiler_start", l_profiler_start}, {"profiler_stop", l_profiler_stop},
    {NULL, NULL},
};

void l_open_cuda(lua_State *L)
{
    luaL_newlib(L, cuda_functions);
    lua_setfield(L, -2, "cuda");
}
