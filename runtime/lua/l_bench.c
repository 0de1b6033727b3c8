#define _POSIX_C_SOURCE 200809L
/* Measuring aids for the benchmarks: a clock, and raw cblas_sgemm timed in C
 * so a benchmark can quote the API's speed as a ratio to BLAS measured in the
 * same process. */
#include <cblas.h>
#include <stdlib.h>
#include <time.h>

#include "l_util.h"
#include "attnswap/ops.h"
#include "attnswap/storage.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int l_clock(lua_State *L)
{
    lua_pushnumber(L, now());
    return 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* raw_sgemm_seconds(m, n, k, reps, transb) -> median seconds of one C = A B
 * (A B^T when transb, B stored n x k: a linear layer's weight) on float32
 * row-major buffers, after one warm-up call. */
static int l_raw_sgemm_seconds(lua_State *L)
{
    lua_Integer m = luaL_checkinteger(L, 1), n = luaL_checkinteger(L, 2), k = luaL_checkinteger(L, 3);
    lua_Integer reps = luaL_optinteger(L, 4, 5);
    int tb = lua_toboolean(L, 5);
    if (m <= 0 || n <= 0 || k <= 0 || m > 65536 || n > 65536 || k > 65536 || reps < 1 || reps > 1000)
        return luaL_error(L, "raw_sgemm_seconds: sizes must be 1..65536 and reps 1..1000");
    /* aligned_alloc wants a multiple of the alignment: round up to 16 floats */
    float *a = aligned_alloc(64, sizeof(float) * (size_t)((m * k + 15) / 16 * 16));
    float *b = aligned_alloc(64, sizeof(float) * (size_t)((k * n + 15) / 16 * 16));
    float *c = aligned_alloc(64, sizeof(float) * (size_t)((m * n + 15) / 16 * 16));
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!a || !b || !c || !t) {
        free(a), free(b), free(c), free(t);
        return luaL_error(L, "raw_sgemm_seconds: out of memory");
    }
    for (lua_Integer i = 0; i < m * k; i++) a[i] = (float)((i * 7) % 13) * 0.1f;
    for (lua_Integer i = 0; i < k * n; i++) b[i] = (float)((i * 5) % 11) * 0.1f;
    /* OpenBLAS's own threading, as its users get it (attnswap keeps it at
     * one thread and splits products itself: runtime/base/threads.c) */
    openblas_set_num_threads(as_get_num_threads());
    for (lua_Integer r = -1; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, a,
                    (int)k, b, tb ? (int)k : (int)n, 0.0f, c, (int)n);
        if (r >= 0) t[r] = now() - t0;
    }
    openblas_set_num_threads(1);
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    lua_pushnumber(L, t[reps / 2]);
    free(a), free(b), free(c), free(t);
    return 1;
}

/* memory_stats() -> {allocated = bytes, peak = bytes} of CPU tensor storage */
static int l_memory_stats(lua_State *L)
{
    size_t live, peak;
    as_cpu_memory_stats(&live, &peak);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)live);
    lua_setfield(L, -2, "allocated");
    lua_pushinteger(L, (lua_Integer)peak);
    lua_setfield(L, -2, "peak");
    return 1;
}

static int l_reset_peak_memory(lua_State *L)
{
    as_cpu_reset_peak();
    return 0;
}

static const luaL_Reg bench_functions[] = {
    {"clock", l_clock}, {"memory_stats", l_memory_stats}, {"reset_peak_memory", l_reset_peak_memory}, {"raw_sgemm_seconds", l_raw_sgemm_seconds}, {NULL, NULL},
};

void l_open_bench(lua_State *L) { luaL_setfuncs(L, bench_functions, 0); }
