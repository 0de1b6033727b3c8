/* The Tensor userdata: creation from Lua values, facts, views, printing and
 * indexing.  Math methods are in l_tensor_ops.c.  Dims and indices are
 * 1-based as in Lua and Torch7; negative ones count from the end. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "attnswap/cuda.h"
#include "l_util.h"
#include "attnswap/ops.h"
#include "attnswap/print.h"

/* ---- shared helpers (l_util.h) ---- */

int l_raise(lua_State *L) { return luaL_error(L, "%s", as_error_get()); }

int l_error(lua_State *L, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return luaL_error(L, "%s", buf);
}

/* Lua's collector sees a tensor as a few bytes of userdata and does not know
 * the storage behind it, so large temporaries could pile up until a step
 * that happens to run late (and on a GPU, each new one would be a fresh
 * cudaMalloc).  Collect when tensor memory, CPU and CUDA apart, has grown by
 * an eighth since the last collection (and by at least 64 MiB, 256 MiB on
 * CUDA), as Torch7's heap tracking did.  An eighth, not a doubling: in a
 * training step the live set (weights, gradients, optimizer state) is large
 * and the garbage (last step's activations, held by dead userdata) would
 * otherwise add up to as much again; PyTorch frees them at once by refcount.
 * A full collection of a model's Lua heap costs about 0.1 ms (GPT-2 small).
 * On CUDA, also after CUDA_MISSES cudaMallocs since the last collection:
 * small temporaries (a decode step's are a few KiB each) never add up to the
 * byte threshold, so dead ones held their blocks while every new one missed
 * the cache and paid a cudaMalloc, hundreds per step; a collection returns
 * them all to the cache. */
#define CUDA_MISSES 32
static void collect_if_grown(lua_State *L)
{
    static size_t cpu_after, cuda_after, mallocs_after;
    size_t live, peak, cuda, mallocs;
    as_cuda_usage(&cuda, &mallocs);
    as_cpu_memory_stats(&live, &peak);
    const size_t cpu_floor = (size_t)64 << 20, cuda_floor = (size_t)256 << 20;
    size_t cpu_grow = cpu_after / 8 > cpu_floor ? cpu_after / 8 : cpu_floor;
    size_t cuda_grow = cuda_after / 8 > cuda_floor ? cuda_after / 8 : cuda_floor;
    if (live > cpu_after + cpu_grow || cuda > cuda_after + cuda_grow || mallocs >= mallocs_after + CUDA_MISSES) {
        lua_gc(L, LUA_GCCOLLECT);
        as_cpu_memory_stats(&live, &peak);
        as_cuda_usage(&cuda_after, &mallocs_after);
        cpu_after = live;
    }
}

void l_pushtensor(lua_State *L, as_tensor *t)
{
    if (!t) l_raise(L);
    collect_if_grown(L);
    as_tensor **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = t; /* lua_newuserdatauv raises only before this line, when t could leak:
                that is a memory error, where Lua itself is already failing */
    luaL_setmetatable(L, AS_TENSOR_MT);
}

as_tensor *l_totensor(lua_State *L, int idx)
{
    as_tensor **ud = luaL_testudata(L, idx, AS_TENSOR_MT);
    return ud ? *ud : NULL;
}

as_tensor *l_checktensor(lua_State *L, int idx)
{
    as_tensor **ud = luaL_testudata(L, idx, AS_TENSOR_MT);
    if (!ud) luaL_typeerror(L, idx, "Tensor");
    if (!*ud) luaL_argerror(L, idx, "tensor was closed");
    return *ud;
}

int l_argerror(lua_State *L, int idx, const char *fn, const char *expected)
{
    const char *got = l_totensor(L, idx) ? "Tensor" : luaL_typename(L, idx);
    return luaL_error(L, "bad argument #%d to '%s' (%s expected, got %s)", idx, fn, expected, got);
}

int l_checkdim(lua_State *L, int idx, const char *fn)
{
    lua_Integer d = luaL_checkinteger(L, idx);
    if (d == 0) return luaL_error(L, "%s: dimension 0 is invalid (dimensions are 1-based; -1 is the last)", fn);
    if (d > AS_MAX_DIMS || d < -AS_MAX_DIMS)
        return luaL_error(L, "%s: dimension %d is out of range", fn, (int)d);
    return d > 0 ? (int)d - 1 : (int)d;
}

int l_optdim(lua_State *L, int idx, int def, const char *fn)
{
    return lua_isnoneornil(L, idx) ? def : l_checkdim(L, idx, fn);
}

static int64_t check_size(lua_State *L, int idx, const char *fn)
{
    int isnum;
    lua_Number x = lua_tonumberx(L, idx, &isnum);
    if (!isnum) return l_argerror(L, idx, fn, "size (number)");
    if (x != floor(x) || x < 0 || x > 9.2e18)
        return luaL_error(L, "%s: invalid size %s (sizes are non-negative integers)", fn, lua_tostring(L, idx));
    return (int64_t)x;
}

int l_checkshape(lua_State *L, int idx, int64_t *shape, const char *fn)
{
    int n = 0;
    if (lua_istable(L, idx)) {
        n = (int)luaL_len(L, idx);
        if (n > AS_MAX_DIMS) return luaL_error(L, "%s: at most %d dimensions, got %d", fn, AS_MAX_DIMS, n);
        for (int i = 1; i <= n; i++) {
            lua_geti(L, idx, i);
            shape[i - 1] = check_size(L, -1, fn);
            lua_pop(L, 1);
        }
        return n;
    }
    int top = lua_gettop(L);
    for (int i = idx; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) {
        if (n == AS_MAX_DIMS) return luaL_error(L, "%s: at most %d dimensions", fn, AS_MAX_DIMS);
        shape[n++] = check_size(L, i, fn);
    }
    return n;
}

as_dtype l_optdtype(lua_State *L, int idx, as_dtype def, const char *fn)
{
    if (lua_isnoneornil(L, idx)) return def;
    const char *name = lua_tostring(L, idx);
    if (lua_type(L, idx) != LUA_TSTRING) return (as_dtype)l_argerror(L, idx, fn, "dtype name");
    int dt = as_dtype_from_name(name);
    if (dt < 0)
        return (as_dtype)luaL_error(L, "%s: unknown dtype '%s' (expected float32, float64, float16, "
                                       "bfloat16, int64, int32 or bool)", fn, name);
    return (as_dtype)dt;
}

/* "cpu", "cuda" or "cuda:N" (N a decimal index); 0 when s is one of them. */
static int parse_device(const char *s, as_device *dev)
{
    if (strcmp(s, "cpu") == 0) {
        *dev = AS_CPU;
        return 0;
    }
    if (strncmp(s, "cuda", 4) != 0) return -1;
    if (s[4] == '\0') {
        *dev = (as_device){AS_DEV_CUDA, 0};
        return 0;
    }
    if (s[4] != ':' || !s[5] || strlen(s + 5) > 4 || strspn(s + 5, "0123456789") != strlen(s + 5)) return -1;
    *dev = (as_device){AS_DEV_CUDA, atoi(s + 5)};
    return 0;
}

as_device l_checkdevice(lua_State *L, int idx, const char *fn)
{
    const char *s = luaL_checkstring(L, idx);
    as_device dev;
    if (parse_device(s, &dev))
        luaL_error(L, "%s: unknown device '%s' (expected \"cpu\" or \"cuda[:N]\")", fn, s);
    return dev;
}

/* ---- as.tensor: nested tables -> tensor ---- */

/* Walks the first element at each depth to find the shape. */
static int infer_table_shape(lua_State *L, int idx, int64_t *shape)
{
    int n = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) {
        if (n == AS_MAX_DIMS) {
            lua_pop(L, 1);
            return luaL_error(L, "tensor: nesting deeper than %d levels", AS_MAX_DIMS);
        }
        shape[n++] = (int64_t)luaL_len(L, -1);
        if (shape[n - 1] == 0) break;
        lua_geti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return n;
}

typedef struct {
    int ndim;
    const int64_t *shape;
    as_tensor *t; /* NULL: only check the structure and note the value kinds */
    int64_t pos;
    int saw_float, saw_bool, saw_number;
} fill_state;

/* Depth-first walk of the nested table: raises on ragged or non-numeric
 * entries, stores into st->t when there is one.  The tensor is anchored on
 * the Lua stack (as userdata) before this runs, so raising does not leak it. */
static void fill_from_table(lua_State *L, int idx, int dim, fill_state *st)
{
    if (dim == st->ndim) {
        int type = lua_type(L, idx);
        double v;
        if (type == LUA_TNUMBER) {
            v = lua_tonumber(L, idx);
            if (!lua_isinteger(L, idx)) st->saw_float = 1;
            st->saw_number = 1;
        } else if (type == LUA_TBOOLEAN) {
            v = lua_toboolean(L, idx);
            st->saw_bool = 1;
        } else {
            luaL_error(L, "tensor: expected a number or boolean, got %s", luaL_typename(L, idx));
            return;
        }
        if (st->t && st->t->dtype == AS_I64 && lua_isinteger(L, idx))
            ((int64_t *)as_data(st->t))[st->pos++] = lua_tointeger(L, idx); /* exact past 2^53 */
        else if (st->t)
            as_store_elem(as_data(st->t), st->t->dtype, st->pos++, v);
        return;
    }
    if (!lua_istable(L, idx))
        l_error(L, "tensor: ragged nested table (expected a table of %lld entries at depth %d, got %s)",
                (long long)st->shape[dim], dim + 1, luaL_typename(L, idx));
    if ((int64_t)luaL_len(L, idx) != st->shape[dim])
        l_error(L, "tensor: ragged nested table (expected %lld entries at depth %d, got %lld)",
                (long long)st->shape[dim], dim + 1, (long long)luaL_len(L, idx));
    luaL_checkstack(L, 2, "tensor: nesting too deep");
    for (int64_t i = 1; i <= st->shape[dim]; i++) {
        lua_geti(L, idx, (lua_Integer)i);
        fill_from_table(L, lua_gettop(L), dim + 1, st);
        lua_pop(L, 1);
    }
}

static int l_tensor_new(lua_State *L)
{
    int type = lua_type(L, 1);
    if (type == LUA_TUSERDATA && l_totensor(L, 1)) {
        as_tensor *src = l_checktensor(L, 1);
        as_dtype dt = l_optdtype(L, 2, src->dtype, "tensor");
        as_tensor *c = as_to_dtype(src, dt);
        if (c == src) {
            as_release(c);
            c = as_clone(src);
        }
        l_pushtensor(L, c);
        return 1;
    }
    if (type != LUA_TTABLE && type != LUA_TNUMBER && type != LUA_TBOOLEAN)
        return l_argerror(L, 1, "tensor", "table, number or boolean");
    int has_dtype = !lua_isnoneornil(L, 2);
    as_dtype dt = l_optdtype(L, 2, AS_F32, "tensor");
    int64_t shape[AS_MAX_DIMS];
    int ndim = type == LUA_TTABLE ? infer_table_shape(L, 1, shape) : 0;
    /* First check the whole structure (so a small ragged table cannot make a
     * huge allocation) and see what kinds of values it holds; then pick the
     * dtype as torch does (bool, int64 for integers, else float32). */
    fill_state st = {.ndim = ndim, .shape = shape};
    fill_from_table(L, 1, 0, &st);
    if (!has_dtype) {
        if (st.saw_number && st.saw_bool) return luaL_error(L, "tensor: mixes numbers and booleans");
        dt = st.saw_bool ? AS_BOOL : st.saw_float || !st.saw_number ? AS_F32 : AS_I64;
    }
    as_tensor *t = as_empty(ndim, shape, dt, AS_CPU);
    l_pushtensor(L, t);
    st = (fill_state){.ndim = ndim, .shape = shape, .t = t};
    fill_from_table(L, 1, 0, &st);
    return 1;
}

/* ---- factories ---- */

static int factory(lua_State *L, double value, int use_value, const char *fn)
{
    int64_t shape[AS_MAX_DIMS];
    int first = use_value == 2 ? 2 : 1; /* full(shape..., value): value read separately */
    int ndim = l_checkshape(L, first, shape, fn);
    int next = lua_istable(L, first) ? first + 1 : first + ndim;
    if (use_value == 2) {
        value = luaL_checknumber(L, next);
        next++;
    }
    as_dtype dt = l_optdtype(L, next, AS_F32, fn);
    if (use_value) l_pushtensor(L, as_full(ndim, shape, value, dt, AS_CPU));
    else l_pushtensor(L, as_empty(ndim, shape, dt, AS_CPU));
    return 1;
}

static int l_zeros(lua_State *L) { return factory(L, 0, 1, "zeros"); }
static int l_ones(lua_State *L) { return factory(L, 1, 1, "ones"); }
static int l_empty(lua_State *L) { return factory(L, 0, 0, "empty"); }

/* full(shape_table, value [, dtype]) or full(d1, d2, ..., value [, dtype]) */
static int l_full(lua_State *L)
{
    int64_t shape[AS_MAX_DIMS];
    int ndim, vidx;
    if (lua_istable(L, 1)) {
        ndim = l_checkshape(L, 1, shape, "full");
        vidx = 2;
    } else {
        int top = lua_gettop(L), last_num = 0;
        for (int i = 1; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) last_num = i;
        if (last_num < 1) return l_argerror(L, 1, "full", "shape and value");
        lua_settop(L, top);
        ndim = last_num - 1;
        for (int i = 1; i <= ndim; i++) shape[i - 1] = (int64_t)luaL_checkinteger(L, i);
        vidx = last_num;
        for (int i = 0; i < ndim; i++)
            if (shape[i] < 0) return l_error(L, "full: invalid size %lld", (long long)shape[i]);
    }
    double v = luaL_checknumber(L, vidx);
    as_dtype dt = l_optdtype(L, vidx + 1, AS_F32, "full");
    l_pushtensor(L, as_full(ndim, shape, v, dt, AS_CPU));
    return 1;
}

/* arange(end) | arange(start, end [, step]) [, dtype]; Lua-style: end is exclusive as in torch. */
static int l_arange(lua_State *L)
{
    int n = 0;
    double a[3];
    while (n < 3 && lua_type(L, n + 1) == LUA_TNUMBER) a[n] = lua_tonumber(L, n + 1), n++;
    if (n == 0) return l_argerror(L, 1, "arange", "number");
    double start = n >= 2 ? a[0] : 0, end = n >= 2 ? a[1] : a[0], step = n == 3 ? a[2] : 1;
    int all_int = 1;
    for (int i = 1; i <= n; i++) all_int &= lua_isinteger(L, i);
    as_dtype dt = l_optdtype(L, n + 1, all_int ? AS_I64 : AS_F32, "arange");
    l_pushtensor(L, as_arange(start, end, step, dt));
    return 1;
}

/* ---- facts ---- */

static int l_shape_of(lua_State *L, const as_tensor *t);

static int l_shape(lua_State *L) { return l_shape_of(L, l_checktensor(L, 1)); }

static int shape_tostring(lua_State *L)
{
    char buf[256];
    int n = (int)luaL_len(L, 1);
    int64_t shape[AS_MAX_DIMS];
    for (int i = 0; i < n && i < AS_MAX_DIMS; i++) {
        lua_geti(L, 1, i + 1);
        shape[i] = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_pushstring(L, as_shape_str(buf, sizeof buf, n, shape));
    return 1;
}

static int shape_eq(lua_State *L)
{
    int n = (int)luaL_len(L, 1);
    if (!lua_istable(L, 2) || n != (int)luaL_len(L, 2)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    for (int i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        lua_geti(L, 2, i);
        int eq = lua_compare(L, -1, -2, LUA_OPEQ);
        lua_pop(L, 2);
        if (!eq) {
            lua_pushboolean(L, 0);
            return 1;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* A plain table {2, 3} whose tostring is "(2, 3)" and that compares by value. */
static int l_shape_of(lua_State *L, const as_tensor *t)
{
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, (lua_Integer)t->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    if (luaL_newmetatable(L, "attnswap.Shape")) {
        lua_pushcfunction(L, shape_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, shape_eq);
        lua_setfield(L, -2, "__eq");
        lua_pushliteral(L, "Shape");
        lua_setfield(L, -2, "__name");
    }
    lua_setmetatable(L, -2);
    return 1;
}

static int l_size(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) return l_shape_of(L, t);
    int d = as_wrap_dim("size", l_checkdim(L, 2, "size"), t->ndim);
    if (d < 0 || t->ndim == 0) return luaL_error(L, "%s", t->ndim ? as_error_get() : "size: a 0-d tensor has no dimensions");
    lua_pushinteger(L, (lua_Integer)t->shape[d]);
    return 1;
}

static int l_stride(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, (lua_Integer)t->stride[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

static int l_dim(lua_State *L)
{
    lua_pushinteger(L, l_checktensor(L, 1)->ndim);
    return 1;
}

static int l_numel(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)as_numel(l_checktensor(L, 1)));
    return 1;
}

static int l_dtype(lua_State *L)
{
    lua_pushstring(L, as_dtype_name(l_checktensor(L, 1)->dtype));
    return 1;
}

static int l_device(lua_State *L)
{
    lua_pushstring(L, as_device_name(as_tensor_device(l_checktensor(L, 1))));
    return 1;
}

static int l_is_contiguous(lua_State *L)
{
    lua_pushboolean(L, as_is_contiguous(l_checktensor(L, 1)));
    return 1;
}

static int l_is_tensor(lua_State *L)
{
    lua_pushboolean(L, l_totensor(L, 1) != NULL);
    return 1;
}

/* ---- reading values ---- */

static void push_elem(lua_State *L, const as_tensor *t, int64_t off)
{
    const void *p = as_data(t);
    switch (t->dtype) {
    case AS_I64: lua_pushinteger(L, ((const int64_t *)p)[off]); break;
    case AS_I32: lua_pushinteger(L, ((const int32_t *)p)[off]); break;
    case AS_BOOL: lua_pushboolean(L, ((const uint8_t *)p)[off] != 0); break;
    default: lua_pushnumber(L, as_load_elem(p, t->dtype, off)); break;
    }
}

/* Device tensors are read through a CPU copy, anchored on the stack. */
static as_tensor *cpu_view(lua_State *L, int idx)
{
    as_tensor *t = l_checktensor(L, idx);
    if (as_tensor_device(t).type == AS_DEV_CPU) return t;
    l_pushtensor(L, as_to_device(t, AS_CPU));
    lua_replace(L, idx);
    return l_checktensor(L, idx);
}

static int l_item(lua_State *L)
{
    as_tensor *t = cpu_view(L, 1);
    if (as_numel(t) != 1) {
        char s[128];
        return luaL_error(L, "item: expected a tensor with one element, got shape %s",
                          as_shape_str(s, sizeof s, t->ndim, t->shape));
    }
    int64_t off = 0; /* every dim has size 1 */
    push_elem(L, t, off);
    return 1;
}

static void tolist_rec(lua_State *L, const as_tensor *t, int dim, int64_t off)
{
    if (dim == t->ndim) {
        push_elem(L, t, off);
        return;
    }
    luaL_checkstack(L, 3, "tolist");
    lua_createtable(L, (int)t->shape[dim], 0);
    for (int64_t i = 0; i < t->shape[dim]; i++) {
        tolist_rec(L, t, dim + 1, off + i * t->stride[dim]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int l_tolist(lua_State *L)
{
    as_tensor *t = cpu_view(L, 1);
    tolist_rec(L, t, 0, 0);
    return 1;
}

static int l_tostring(lua_State *L)
{
    as_tensor **ud = luaL_checkudata(L, 1, AS_TENSOR_MT);
    if (!*ud) {
        lua_pushliteral(L, "tensor(<closed>)");
        return 1;
    }
    char *s = as_tensor_format(*ud);
    if (!s) return l_raise(L);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int l_len(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    if (t->ndim == 0) return luaL_error(L, "len: a 0-d tensor has no length");
    lua_pushinteger(L, (lua_Integer)t->shape[0]);
    return 1;
}

static int l_gc(lua_State *L)
{
    as_tensor **ud = luaL_checkudata(L, 1, AS_TENSOR_MT);
    as_release(*ud);
    *ud = NULL;
    return 0;
}

/* ---- views ---- */

static int l_view_like(lua_State *L, int copy_ok)
{
    as_tensor *t = l_checktensor(L, 1);
    int64_t shape[AS_MAX_DIMS];
    int n = 0;
    const char *fn = copy_ok ? "reshape" : "view";
    if (lua_istable(L, 2)) {
        n = (int)luaL_len(L, 2);
        if (n > AS_MAX_DIMS) return luaL_error(L, "%s: at most %d dimensions", fn, AS_MAX_DIMS);
        for (int i = 0; i < n; i++) {
            lua_geti(L, 2, i + 1);
            shape[i] = (int64_t)luaL_checkinteger(L, -1);
            lua_pop(L, 1);
        }
    } else {
        int top = lua_gettop(L);
        if (top - 1 > AS_MAX_DIMS) return luaL_error(L, "%s: at most %d dimensions", fn, AS_MAX_DIMS);
        for (int i = 2; i <= top; i++) shape[n++] = (int64_t)luaL_checkinteger(L, i);
    }
    l_pushtensor(L, copy_ok ? as_reshape(t, n, shape) : as_view(t, n, shape));
    return 1;
}

static int l_view(lua_State *L) { return l_view_like(L, 0); }
static int l_reshape(lua_State *L) { return l_view_like(L, 1); }

static int l_permute(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int dims[AS_MAX_DIMS];
    int tbl = lua_istable(L, 2);
    int n = tbl ? (int)luaL_len(L, 2) : lua_gettop(L) - 1;
    if (n != t->ndim) return luaL_error(L, "permute: expected %d dimensions, got %d", t->ndim, n);
    for (int i = 0; i < n; i++) {
        if (tbl) {
            lua_geti(L, 2, i + 1);
            dims[i] = l_checkdim(L, -1, "permute");
            lua_pop(L, 1);
        } else {
            dims[i] = l_checkdim(L, i + 2, "permute");
        }
    }
    l_pushtensor(L, as_permute(t, dims));
    return 1;
}

static int l_transpose(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int d0 = l_optdim(L, 2, -2, "transpose"), d1 = l_optdim(L, 3, -1, "transpose");
    if (t->ndim < 2 && lua_isnoneornil(L, 2)) return l_pushtensor(L, as_alias(t)), 1;
    l_pushtensor(L, as_transpose(t, d0, d1));
    return 1;
}

static int l_narrow(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int dim = l_checkdim(L, 2, "narrow");
    lua_Integer start = luaL_checkinteger(L, 3), length = luaL_checkinteger(L, 4);
    if (start == 0) return luaL_error(L, "narrow: start 0 is invalid (indices are 1-based)");
    int d = as_wrap_dim("narrow", dim, t->ndim);
    if (d < 0) return l_raise(L);
    if (start < 0) start += t->shape[d] + 1;
    l_pushtensor(L, as_narrow(t, dim, (int64_t)start - 1, (int64_t)length));
    return 1;
}

static int64_t check_index(lua_State *L, int idx, const char *fn)
{
    lua_Integer i = luaL_checkinteger(L, idx);
    if (i == 0) return luaL_error(L, "%s: index 0 is invalid (indices are 1-based; -1 is the last)", fn);
    return i > 0 ? (int64_t)i - 1 : (int64_t)i;
}

static int l_select(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int dim = l_checkdim(L, 2, "select");
    l_pushtensor(L, as_select(t, dim, check_index(L, 3, "select")));
    return 1;
}

static int l_expand(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int64_t shape[AS_MAX_DIMS];
    int n = 0;
    as_tensor *other = l_totensor(L, 2);
    if (other) {
        n = other->ndim;
        memcpy(shape, other->shape, sizeof(int64_t) * (size_t)n);
    } else if (lua_istable(L, 2)) {
        n = (int)luaL_len(L, 2);
        if (n > AS_MAX_DIMS) return luaL_error(L, "expand: at most %d dimensions", AS_MAX_DIMS);
        for (int i = 0; i < n; i++) {
            lua_geti(L, 2, i + 1);
            shape[i] = (int64_t)luaL_checkinteger(L, -1);
            lua_pop(L, 1);
        }
    } else {
        int top = lua_gettop(L);
        if (top - 1 > AS_MAX_DIMS) return luaL_error(L, "expand: at most %d dimensions", AS_MAX_DIMS);
        for (int i = 2; i <= top; i++) shape[n++] = (int64_t)luaL_checkinteger(L, i);
    }
    l_pushtensor(L, as_expand(t, n, shape));
    return 1;
}

static int l_squeeze(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int dim = lua_isnoneornil(L, 2) ? INT32_MIN : l_checkdim(L, 2, "squeeze");
    l_pushtensor(L, as_squeeze(t, dim));
    return 1;
}

static int l_unsqueeze(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    lua_Integer d = luaL_checkinteger(L, 2);
    if (d == 0) return luaL_error(L, "unsqueeze: dimension 0 is invalid (dimensions are 1-based)");
    l_pushtensor(L, as_unsqueeze(t, d > 0 ? (int)d - 1 : (int)d));
    return 1;
}

static int l_flatten(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    l_pushtensor(L, as_flatten(t, l_optdim(L, 2, 0, "flatten"), l_optdim(L, 3, -1, "flatten")));
    return 1;
}

static int l_contiguous(lua_State *L)
{
    l_pushtensor(L, as_contiguous(l_checktensor(L, 1)));
    return 1;
}

static int l_clone(lua_State *L)
{
    l_pushtensor(L, as_clone(l_checktensor(L, 1)));
    return 1;
}

static int l_copy_(lua_State *L)
{
    as_tensor *dst = l_checktensor(L, 1), *src = l_checktensor(L, 2);
    if (as_copy_tracked_(dst, src)) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int l_fill_(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    double v = lua_isboolean(L, 2) ? lua_toboolean(L, 2) : luaL_checknumber(L, 2);
    if (as_fill_(t, v)) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int l_zero_(lua_State *L)
{
    if (as_fill_(l_checktensor(L, 1), 0)) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}

/* to(dtype) | to(device) | to(device, dtype) */
static int l_to(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    for (int i = 2; i <= lua_gettop(L); i++) luaL_checkstring(L, i); /* raise before holding a reference */
    as_tensor *r = as_retain(t);
    as_device dev;
    for (int i = 2; i <= lua_gettop(L) && r; i++) {
        const char *s = lua_tostring(L, i);
        int dt = as_dtype_from_name(s);
        as_tensor *next;
        if (dt >= 0) {
            next = as_to_dtype(r, (as_dtype)dt);
        } else if (!parse_device(s, &dev)) {
            next = as_to_device(r, dev);
        } else {
            as_release(r);
            return luaL_error(L, "to: '%s' is neither a dtype nor a device", s);
        }
        as_release(r);
        r = next;
    }
    l_pushtensor(L, r);
    return 1;
}

static int to_dtype_method(lua_State *L, as_dtype dt)
{
    l_pushtensor(L, as_to_dtype(l_checktensor(L, 1), dt));
    return 1;
}
static int l_float(lua_State *L) { return to_dtype_method(L, AS_F32); }
static int l_half(lua_State *L) { return to_dtype_method(L, AS_F16); }
static int l_double(lua_State *L) { return to_dtype_method(L, AS_F64); }
static int l_bfloat16(lua_State *L) { return to_dtype_method(L, AS_BF16); }
static int l_long(lua_State *L) { return to_dtype_method(L, AS_I64); }
static int l_int(lua_State *L) { return to_dtype_method(L, AS_I32); }
static int l_bool(lua_State *L) { return to_dtype_method(L, AS_BOOL); }

static int l_cpu(lua_State *L)
{
    l_pushtensor(L, as_to_device(l_checktensor(L, 1), AS_CPU));
    return 1;
}

static int l_cuda(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int index = (int)luaL_optinteger(L, 2, 0);
    l_pushtensor(L, as_to_device(t, (as_device){AS_DEV_CUDA, index}));
    return 1;
}

/* split(size_or_sizes, dim) -> tensors; chunk(n, dim) -> tensors (torch semantics) */
static int push_pieces(lua_State *L, as_tensor *t, int dim, const int64_t *sizes, int n)
{
    luaL_checkstack(L, n, "split: too many pieces");
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        l_pushtensor(L, as_narrow(t, dim, start, sizes[i]));
        start += sizes[i];
    }
    return n;
}

static int l_split(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int dim = as_wrap_dim("split", l_optdim(L, 3, 0, "split"), t->ndim);
    if (dim < 0 || t->ndim == 0) return luaL_error(L, "%s", t->ndim ? as_error_get() : "split: cannot split a 0-d tensor");
    int64_t len = t->shape[dim];
    int64_t sizes[4096];
    int n = 0;
    if (lua_istable(L, 2)) {
        int64_t total = 0;
        n = (int)luaL_len(L, 2);
        if (n > 4096) return luaL_error(L, "split: too many pieces");
        for (int i = 0; i < n; i++) {
            lua_geti(L, 2, i + 1);
            sizes[i] = (int64_t)luaL_checkinteger(L, -1);
            lua_pop(L, 1);
            if (sizes[i] < 0) return l_error(L, "split: negative size %lld", (long long)sizes[i]);
            total += sizes[i];
        }
        if (total != len)
            return l_error(L, "split: sizes add up to %lld but dimension %d has size %lld", (long long)total,
                              dim + 1, (long long)len);
    } else {
        lua_Integer size = luaL_checkinteger(L, 2);
        if (size <= 0) return l_error(L, "split: size must be positive, got %lld", (long long)size);
        for (int64_t s = 0; s < len; s += size) {
            if (n == 4096) return luaL_error(L, "split: too many pieces");
            sizes[n++] = s + size <= len ? size : len - s;
        }
    }
    return push_pieces(L, t, dim, sizes, n);
}

static int l_chunk(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    lua_Integer chunks = luaL_checkinteger(L, 2);
    int dim = as_wrap_dim("chunk", l_optdim(L, 3, 0, "chunk"), t->ndim);
    if (dim < 0 || t->ndim == 0) return luaL_error(L, "%s", t->ndim ? as_error_get() : "chunk: cannot chunk a 0-d tensor");
    if (chunks <= 0 || chunks > 4096) return l_error(L, "chunk: number of chunks must be 1 to 4096, got %lld", (long long)chunks);
    int64_t len = t->shape[dim], size = (len + chunks - 1) / chunks;
    int64_t sizes[4096];
    int n = 0;
    if (size == 0) size = 1;
    for (int64_t s = 0; s < len; s += size) sizes[n++] = s + size <= len ? size : len - s;
    return push_pieces(L, t, dim, sizes, n);
}

/* ---- indexing: t[i] selects along dim 1 (a number for 1-d tensors, as Torch7) ---- */

static int l_index(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TNUMBER) {
        as_tensor *t = l_checktensor(L, 1);
        if (!lua_isinteger(L, 2)) return luaL_error(L, "index: expected an integer index, got %s", lua_tostring(L, 2));
        int64_t i = check_index(L, 2, "index");
        if (t->ndim == 1) {
            int64_t n = t->shape[0];
            if (i < -n || i >= n)
                return l_error(L, "index: index %lld is out of bounds for size %lld", (long long)lua_tointeger(L, 2), (long long)n);
            if (i < 0) i += n;
            as_tensor *c = cpu_view(L, 1);
            push_elem(L, c, i * c->stride[0]);
            return 1;
        }
        l_pushtensor(L, as_select(t, 0, i));
        return 1;
    }
    if (lua_type(L, 2) == LUA_TSTRING && l_autograd_property(L, l_checktensor(L, 1), lua_tostring(L, 2))) return 1;
    /* methods */
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int l_newindex(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING && l_autograd_assign(L, t, lua_tostring(L, 2), 3)) return 0;
    if (!lua_isinteger(L, 2))
        return luaL_error(L, "tensor: cannot assign to field '%s' (only t[i] = value, t.grad, t.requires_grad)",
                          luaL_tolstring(L, 2, NULL));
    as_tensor *row = as_select(t, 0, check_index(L, 2, "index"));
    if (!row) return l_raise(L);
    int rc;
    as_tensor *src = l_totensor(L, 3);
    if (src) rc = as_copy_tracked_(row, src);
    else if (lua_isboolean(L, 3)) rc = as_fill_(row, lua_toboolean(L, 3));
    else if (lua_type(L, 3) == LUA_TNUMBER) rc = as_fill_(row, lua_tonumber(L, 3));
    else {
        as_release(row);
        return l_argerror(L, 3, "__newindex", "number, boolean or Tensor");
    }
    as_release(row);
    if (rc) return l_raise(L);
    return 0;
}

static const luaL_Reg tensor_methods[] = {
    {"shape", l_shape}, {"size", l_size}, {"stride", l_stride}, {"dim", l_dim}, {"numel", l_numel},
    {"dtype", l_dtype}, {"device", l_device}, {"is_contiguous", l_is_contiguous},
    {"item", l_item}, {"tolist", l_tolist},
    {"view", l_view}, {"reshape", l_reshape}, {"permute", l_permute}, {"transpose", l_transpose},
    {"t", l_transpose}, {"narrow", l_narrow}, {"select", l_select}, {"expand", l_expand},
    {"expand_as", l_expand}, {"squeeze", l_squeeze}, {"unsqueeze", l_unsqueeze}, {"flatten", l_flatten},
    {"contiguous", l_contiguous}, {"clone", l_clone}, {"copy_", l_copy_}, {"fill_", l_fill_},
    {"zero_", l_zero_}, {"to", l_to}, {"float", l_float}, {"double", l_double}, {"half", l_half}, {"bfloat16", l_bfloat16},
    {"long", l_long}, {"int", l_int}, {"bool", l_bool}, {"cpu", l_cpu}, {"cuda", l_cuda},
    {"split", l_split}, {"chunk", l_chunk},
    {NULL, NULL},
};

static const luaL_Reg tensor_functions[] = {
    {"tensor", l_tensor_new}, {"zeros", l_zeros}, {"ones", l_ones}, {"empty", l_empty},
    {"full", l_full}, {"arange", l_arange}, {"is_tensor", l_is_tensor},
    {NULL, NULL},
};

void l_open_tensor(lua_State *L)
{
    luaL_newmetatable(L, AS_TENSOR_MT);
    lua_pushliteral(L, "Tensor");
    lua_setfield(L, -2, "__name");
    lua_newtable(L); /* methods */
    luaL_setfuncs(L, tensor_methods, 0);
    l_open_tensor_ops(L); /* adds math methods to the table at -1, and metamethods to the one below */
    l_open_autograd_methods(L);
    lua_setfield(L, -2, "__methods");
    static const luaL_Reg meta[] = {
        {"__index", l_index}, {"__newindex", l_newindex}, {"__tostring", l_tostring},
        {"__len", l_len}, {"__gc", l_gc}, {"__close", l_gc}, {NULL, NULL},
    };
    luaL_setfuncs(L, meta, 0);
    lua_getfield(L, -1, "__methods");
    lua_setfield(L, -3, "Tensor"); /* as.Tensor: the methods table, for extension and help */
    lua_pop(L, 1);
    luaL_setfuncs(L, tensor_functions, 0);
}
