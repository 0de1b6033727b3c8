/* Math on tensors from Lua: methods (t:exp(), a:matmul(b)), metamethods
 * (a + 1, -t), and the same ops as module functions (as.matmul(a, b)). */
#include <math.h>
#include <string.h>

#include "l_util.h"
#include "attnswap/ops.h"

/* ---- binary ops: tensor or number on either side ---- */

static int binary(lua_State *L, as_binop op)
{
    as_tensor *a = l_totensor(L, 1), *b = l_totensor(L, 2);
    const char *name = as_binop_name(op);
    if (a && b) {
        l_pushtensor(L, as_binary(op, a, b));
        return 1;
    }
    if (a || b) {
        int sidx = a ? 2 : 1;
        double s;
        if (lua_type(L, sidx) == LUA_TNUMBER) s = lua_tonumber(L, sidx);
        else if (lua_isboolean(L, sidx)) s = lua_toboolean(L, sidx);
        else return l_argerror(L, sidx, name, "Tensor or number");
        as_tensor *t = a ? a : b;
        l_pushtensor(L, as_binary_scalar(op, t, s, a == NULL));
        return 1;
    }
    return l_argerror(L, 1, name, "Tensor");
}

#define BINARY(fname, op) \
    static int fname(lua_State *L) { return binary(L, op); }
BINARY(l_add, AS_ADD)
BINARY(l_sub, AS_SUB)
BINARY(l_mul, AS_MUL)
BINARY(l_div, AS_DIV)
BINARY(l_pow, AS_POW)
BINARY(l_maximum, AS_MAXIMUM)
BINARY(l_minimum, AS_MINIMUM)
BINARY(l_eq, AS_EQ)
BINARY(l_ne, AS_NE)
BINARY(l_lt, AS_LT)
BINARY(l_le, AS_LE)
BINARY(l_gt, AS_GT)
BINARY(l_ge, AS_GE)
BINARY(l_logical_and, AS_LOGICAL_AND)
BINARY(l_logical_or, AS_LOGICAL_OR)

/* In place: t:add_(other) */
static int binary_inplace(lua_State *L, as_binop op)
{
    as_tensor *dst = l_checktensor(L, 1);
    as_tensor *src = l_totensor(L, 2);
    as_tensor *tmp = NULL;
    if (!src) {
        tmp = as_scalar(luaL_checknumber(L, 2), dst->dtype, as_tensor_device(dst));
        if (!tmp) return l_raise(L);
        src = tmp;
    }
    int rc = as_binary_(op, dst, src);
    as_release(tmp);
    if (rc) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}
static int l_add_(lua_State *L) { return binary_inplace(L, AS_ADD); }
static int l_sub_(lua_State *L) { return binary_inplace(L, AS_SUB); }
static int l_mul_(lua_State *L) { return binary_inplace(L, AS_MUL); }
static int l_div_(lua_State *L) { return binary_inplace(L, AS_DIV); }

/* ---- unary ops ---- */

static int unary(lua_State *L, as_unop op)
{
    l_pushtensor(L, as_unary(op, l_checktensor(L, 1)));
    return 1;
}

#define UNARY(fname, op) \
    static int fname(lua_State *L) { return unary(L, op); }
UNARY(l_neg, AS_NEG)
UNARY(l_abs, AS_ABS)
UNARY(l_exp, AS_EXP)
UNARY(l_log, AS_LOG)
UNARY(l_sqrt, AS_SQRT)
UNARY(l_rsqrt, AS_RSQRT)
UNARY(l_tanh, AS_TANH)
UNARY(l_sigmoid, AS_SIGMOID)
UNARY(l_relu, AS_RELU)
UNARY(l_silu, AS_SILU)
UNARY(l_sin, AS_SIN)
UNARY(l_cos, AS_COS)
UNARY(l_logical_not, AS_LOGICAL_NOT)

/* gelu(t [, approximate]) with approximate = "none" | "tanh", as torch */
static int l_gelu(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    const char *approx = luaL_optstring(L, 2, "none");
    if (strcmp(approx, "none") && strcmp(approx, "tanh"))
        return luaL_error(L, "gelu: approximate must be \"none\" or \"tanh\", got \"%s\"", approx);
    l_pushtensor(L, as_unary(approx[0] == 't' ? AS_GELU_TANH : AS_GELU, t));
    return 1;
}

static int l_unm(lua_State *L) { return unary(L, AS_NEG); }

static int l_clamp(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    double lo = lua_isnoneornil(L, 2) ? NAN : luaL_checknumber(L, 2);
    double hi = lua_isnoneornil(L, 3) ? NAN : luaL_checknumber(L, 3);
    l_pushtensor(L, as_clamp(t, lo, hi));
    return 1;
}

/* ---- reductions ---- */

/* sum() | sum(dim [, keepdim]) */
static int reduce(lua_State *L, as_redop op, const char *fn)
{
    as_tensor *t = l_checktensor(L, 1);
    int dim = AS_ALL_DIMS;
    if (!lua_isnoneornil(L, 2)) dim = l_checkdim(L, 2, fn);
    int keepdim = lua_toboolean(L, 3);
    int correction = 1;
    if (op == AS_VAR && lua_istable(L, 4)) {
        lua_getfield(L, 4, "correction");
        correction = (int)luaL_optinteger(L, -1, 1);
        lua_pop(L, 1);
    } else if (op == AS_VAR && lua_isboolean(L, 4)) {
        correction = lua_toboolean(L, 4); /* var(dim, keepdim, unbiased) */
    }
    as_tensor *r = as_reduce(op, t, dim, keepdim, correction);
    if (r && (op == AS_ARGMAX || op == AS_ARGMIN)) { /* 1-based indices */
        as_tensor *r1 = as_binary_scalar(AS_ADD, r, 1, false);
        as_release(r);
        r = r1;
    }
    l_pushtensor(L, r);
    return 1;
}

static int l_sum(lua_State *L) { return reduce(L, AS_SUM, "sum"); }
static int l_mean(lua_State *L) { return reduce(L, AS_MEAN, "mean"); }
static int l_prod(lua_State *L) { return reduce(L, AS_PROD, "prod"); }
static int l_var(lua_State *L) { return reduce(L, AS_VAR, "var"); }
/* std: the square root of var, so its gradient is the composite's */
static int l_std(lua_State *L)
{
    reduce(L, AS_VAR, "std");
    as_tensor *v = l_checktensor(L, -1);
    l_pushtensor(L, as_unary(AS_SQRT, v));
    return 1;
}
static int l_argmax(lua_State *L) { return reduce(L, AS_ARGMAX, "argmax"); }
static int l_argmin(lua_State *L) { return reduce(L, AS_ARGMIN, "argmin"); }

/* max() -> 0-d tensor; max(dim [, keepdim]) -> values, indices (torch);
 * max(other) -> elementwise maximum. */
static int max_min(lua_State *L, as_redop vop, as_redop iop, as_binop bop)
{
    if (l_totensor(L, 2)) return binary(L, bop);
    if (lua_isnoneornil(L, 2)) return reduce(L, vop, vop == AS_MAX ? "max" : "min");
    lua_settop(L, 3); /* both reductions read (t, dim, keepdim) */
    reduce(L, vop, vop == AS_MAX ? "max" : "min");
    reduce(L, iop, vop == AS_MAX ? "max" : "min");
    return 2;
}
static int l_max(lua_State *L) { return max_min(L, AS_MAX, AS_ARGMAX, AS_MAXIMUM); }
static int l_min(lua_State *L) { return max_min(L, AS_MIN, AS_ARGMIN, AS_MINIMUM); }

/* ---- softmax and norms ---- */

static int l_softmax(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    l_pushtensor(L, as_softmax(t, l_optdim(L, 2, -1, "softmax")));
    return 1;
}

static int l_log_softmax(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    l_pushtensor(L, as_log_softmax(t, l_optdim(L, 2, -1, "log_softmax")));
    return 1;
}

/* cross_entropy_rows(x, target [, ignore_index = -100]) -> (rows) float32 losses */
static int l_cross_entropy_rows(lua_State *L)
{
    as_tensor *x = l_checktensor(L, 1), *t = l_checktensor(L, 2);
    lua_Integer ignore = luaL_optinteger(L, 3, -100);
    l_pushtensor(L, as_cross_entropy_rows(x, t, (int64_t)ignore));
    return 1;
}

static as_tensor *opt_tensor(lua_State *L, int idx, const char *fn, const char *what)
{
    if (lua_isnoneornil(L, idx)) return NULL;
    as_tensor *t = l_totensor(L, idx);
    if (!t) l_argerror(L, idx, fn, what);
    return t;
}

/* layer_norm(x [, weight [, bias [, eps]]]) over the last dim */
static int l_layer_norm(lua_State *L)
{
    as_tensor *x = l_checktensor(L, 1);
    as_tensor *w = opt_tensor(L, 2, "layer_norm", "Tensor or nil");
    as_tensor *b = opt_tensor(L, 3, "layer_norm", "Tensor or nil");
    l_pushtensor(L, as_layer_norm(x, w, b, luaL_optnumber(L, 4, 1e-5)));
    return 1;
}

static int l_rms_norm(lua_State *L)
{
    as_tensor *x = l_checktensor(L, 1);
    as_tensor *w = opt_tensor(L, 2, "rms_norm", "Tensor or nil");
    l_pushtensor(L, as_rms_norm(x, w, luaL_optnumber(L, 3, 1e-6)));
    return 1;
}

/* ---- linear algebra, indexing, joining ---- */

static int l_matmul(lua_State *L)
{
    as_tensor *a = l_checktensor(L, 1), *b = l_checktensor(L, 2);
    l_pushtensor(L, as_matmul(a, b));
    return 1;
}

static int l_linear(lua_State *L)
{
    as_tensor *x = l_checktensor(L, 1), *w = l_checktensor(L, 2);
    as_tensor *b = opt_tensor(L, 3, "linear", "Tensor or nil");
    l_pushtensor(L, as_linear(x, w, b));
    return 1;
}

/* linear_add(x, w, b, r): linear(x, w, b) + r, r added inside the product where it can (attnswap/ops.h) */
static int l_linear_add(lua_State *L)
{
    as_tensor *x = l_checktensor(L, 1), *w = l_checktensor(L, 2);
    as_tensor *b = opt_tensor(L, 3, "linear_add", "Tensor or nil");
    as_tensor *r = l_checktensor(L, 4);
    l_pushtensor(L, as_linear_add(x, w, b, r));
    return 1;
}

/* index_select(dim, index): index holds 1-based positions, as Torch7 */
static int l_index_select(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    int dim = l_checkdim(L, 2, "index_select");
    as_tensor *idx = l_checktensor(L, 3);
    if (idx->dtype != AS_I64 && idx->dtype != AS_I32)
        return luaL_error(L, "index_select: index must be int64 or int32, got %s", as_dtype_name(idx->dtype));
    as_tensor *zero_based = as_binary_scalar(AS_SUB, idx, 1, false);
    if (!zero_based) return l_raise(L);
    as_tensor *r = as_index_select(t, dim, zero_based);
    as_release(zero_based);
    l_pushtensor(L, r);
    return 1;
}

/* embedding(weight, ids): ids are 0-based token ids, the tokenizer's own numbers */
static int l_embedding(lua_State *L)
{
    as_tensor *w = l_checktensor(L, 1), *ids = l_checktensor(L, 2);
    l_pushtensor(L, as_embedding(w, ids));
    return 1;
}

static int l_tril(lua_State *L)
{
    l_pushtensor(L, as_tril(l_checktensor(L, 1), (int64_t)luaL_optinteger(L, 2, 0)));
    return 1;
}

static int l_triu(lua_State *L)
{
    l_pushtensor(L, as_triu(l_checktensor(L, 1), (int64_t)luaL_optinteger(L, 2, 0)));
    return 1;
}

/* where(cond, a, b); a and b may be numbers */
/* t:masked_fill(mask, value) */
static int l_masked_fill(lua_State *L)
{
    as_tensor *t = l_checktensor(L, 1);
    as_tensor *mask = l_totensor(L, 2);
    if (!mask) return l_argerror(L, 2, "masked_fill", "Tensor (bool mask)");
    l_pushtensor(L, as_masked_fill(t, mask, luaL_checknumber(L, 3)));
    return 1;
}

static int l_where(lua_State *L)
{
    as_tensor *c = l_checktensor(L, 1);
    /* check both branches before allocating, so an error cannot leak a scalar */
    for (int i = 2; i <= 3; i++)
        if (!l_totensor(L, i) && lua_type(L, i) != LUA_TNUMBER) return l_argerror(L, i, "where", "Tensor or number");
    as_tensor *ab[2], *tmp[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        ab[i] = l_totensor(L, i + 2);
        if (!ab[i]) {
            as_tensor *other = l_totensor(L, 3 - i);
            as_dtype dt = other ? other->dtype : AS_F32;
            tmp[i] = ab[i] = as_scalar(lua_tonumber(L, i + 2), dt, as_tensor_device(c));
            if (!tmp[i]) {
                as_release(tmp[0]);
                return l_raise(L);
            }
        }
    }
    as_tensor *r = as_where(c, ab[0], ab[1]);
    as_release(tmp[0]);
    as_release(tmp[1]);
    l_pushtensor(L, r);
    return 1;
}

/* cat({a, b, ...} [, dim]) */
static int l_cat(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    if (n < 1) return luaL_error(L, "cat: expected a non-empty table of tensors");
    if (n > 65536) return luaL_error(L, "cat: too many tensors (%d)", n);
    const as_tensor **ts = lua_newuserdatauv(L, sizeof(*ts) * (size_t)n, 0); /* freed by the GC */
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        ts[i] = l_totensor(L, -1);
        if (!ts[i]) return luaL_error(L, "cat: element %d is %s, expected Tensor", i + 1, luaL_typename(L, -1));
        lua_pop(L, 1); /* the table keeps it alive */
    }
    int dim = l_optdim(L, 2, 0, "cat");
    l_pushtensor(L, as_cat(n, (const as_tensor *const *)ts, dim));
    return 1;
}

/* stack({a, b, ...} [, dim]): cat of unsqueezed tensors */
static int l_stack(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    if (n < 1) return luaL_error(L, "stack: expected a non-empty table of tensors");
    lua_Integer d = luaL_optinteger(L, 2, 1);
    if (d == 0) return luaL_error(L, "stack: dimension 0 is invalid (dimensions are 1-based)");
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        as_tensor *t = l_totensor(L, -1);
        if (!t) return luaL_error(L, "stack: element %d is %s, expected Tensor", i + 1, luaL_typename(L, -1));
        l_pushtensor(L, as_unsqueeze(t, d > 0 ? (int)d - 1 : (int)d));
        lua_rawseti(L, -3, i + 1);
        lua_pop(L, 1);
    }
    lua_replace(L, 1);
    lua_settop(L, 1);
    lua_pushinteger(L, d);
    return l_cat(L);
}

static int l_set_num_threads(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 1 || n > 1024) return l_error(L, "set_num_threads: expected 1 to 1024, got %lld", (long long)n);
    as_set_num_threads((int)n);
    return 0;
}

static int l_get_num_threads(lua_State *L)
{
    lua_pushinteger(L, as_get_num_threads());
    return 1;
}

/* set_deterministic(on): as_set_deterministic (attnswap/ops.h) */
static int l_set_deterministic(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TBOOLEAN)
        return l_error(L, "set_deterministic: expected a boolean, got %s", luaL_typename(L, 1));
    as_set_deterministic(lua_toboolean(L, 1));
    return 0;
}

static int l_get_deterministic(lua_State *L)
{
    lua_pushboolean(L, as_get_deterministic());
    return 1;
}

/* set_float32_matmul_precision("highest" | "high"): as torch's (attnswap/ops.h) */
static int l_set_float32_matmul_precision(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return l_error(L, "set_float32_matmul_precision: expected \"highest\" or \"high\", got %s",
                       luaL_typename(L, 1));
    if (as_set_float32_matmul_precision(lua_tostring(L, 1))) return l_raise(L);
    return 0;
}

static int l_get_float32_matmul_precision(lua_State *L)
{
    lua_pushstring(L, as_get_float32_matmul_precision());
    return 1;
}

/* Methods, also exported as module functions: as.exp(t) == t:exp(). */
static const luaL_Reg op_methods[] = {
    {"add", l_add}, {"sub", l_sub}, {"mul", l_mul}, {"div", l_div}, {"pow", l_pow},
    {"maximum", l_maximum}, {"minimum", l_minimum},
    {"eq", l_eq}, {"ne", l_ne}, {"lt", l_lt}, {"le", l_le}, {"gt", l_gt}, {"ge", l_ge},
    {"logical_and", l_logical_and}, {"logical_or", l_logical_or}, {"logical_not", l_logical_not},
    {"add_", l_add_}, {"sub_", l_sub_}, {"mul_", l_mul_}, {"div_", l_div_},
    {"neg", l_neg}, {"abs", l_abs}, {"exp", l_exp}, {"log", l_log}, {"sqrt", l_sqrt},
    {"rsqrt", l_rsqrt}, {"tanh", l_tanh}, {"sigmoid", l_sigmoid}, {"relu", l_relu},
    {"gelu", l_gelu}, {"silu", l_silu}, {"sin", l_sin}, {"cos", l_cos}, {"clamp", l_clamp},
    {"sum", l_sum}, {"mean", l_mean}, {"prod", l_prod}, {"var", l_var}, {"std", l_std}, {"max", l_max},
    {"min", l_min}, {"argmax", l_argmax}, {"argmin", l_argmin},
    {"softmax", l_softmax}, {"log_softmax", l_log_softmax}, {"layer_norm", l_layer_norm},
    {"cross_entropy_rows", l_cross_entropy_rows},
    {"rms_norm", l_rms_norm}, {"matmul", l_matmul}, {"index_select", l_index_select},
    {"tril", l_tril}, {"triu", l_triu}, {"masked_fill", l_masked_fill},
    {NULL, NULL},
};

static const luaL_Reg op_functions[] = {
    {"where", l_where}, {"cat", l_cat}, {"stack", l_stack}, {"linear", l_linear}, {"linear_add", l_linear_add},
    {"embedding", l_embedding}, {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads}, {"set_deterministic", l_set_deterministic},
    {"get_deterministic", l_get_deterministic}, {"set_float32_matmul_precision", l_set_float32_matmul_precision},
    {"get_float32_matmul_precision", l_get_float32_matmul_precision},
    {NULL, NULL},
};

static const luaL_Reg op_meta[] = {
    {"__add", l_add}, {"__sub", l_sub}, {"__mul", l_mul}, {"__div", l_div},
    {"__pow", l_pow}, {"__unm", l_unm},
    {NULL, NULL},
};

void l_open_tensor_ops(lua_State *L)
{
    luaL_setfuncs(L, op_methods, 0);  /* methods table at -1 */
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, op_meta, 0);     /* metatable */
    lua_pop(L, 1);
    lua_pushvalue(L, -3);             /* module table */
    luaL_setfuncs(L, op_methods, 0);
    luaL_setfuncs(L, op_functions, 0);
    lua_pop(L, 1);
}
