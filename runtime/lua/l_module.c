/* The Module userdata.  One userdata per C module (a weak cache keeps the
 * identity: m.attn == m.attn), holding one reference.  Each module's Lua-side
 * state — its class and plain fields — lives in an "env" table anchored in
 * the registry by the C module, so a Lua-defined module inside a C tree keeps
 * its fields even when no Lua variable points at it.
 *
 * Lookup order for m.key: children, parameters, buffers, plain fields, then
 * the class (and its parents, through the class tables' metatables). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "l_util.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"
#include "attnswap/module.h"

#define CACHE_KEY "attnswap.module_cache"
#define CLASSES_KEY "attnswap.classes" /* type name -> class table, for C-made modules */

static lua_State *main_state(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *M = lua_tothread(L, -1);
    lua_pop(L, 1);
    return M;
}

as_module *l_tomodule(lua_State *L, int idx)
{
    as_module **ud = luaL_testudata(L, idx, AS_MODULE_MT);
    return ud ? *ud : NULL;
}

as_module *l_checkmodule(lua_State *L, int idx)
{
    as_module **ud = luaL_testudata(L, idx, AS_MODULE_MT);
    if (!ud) luaL_typeerror(L, idx, "Module");
    return *ud;
}

/* What the bindings keep on a module (m->host): its env table, a registry
 * reference in the main state. */
typedef struct {
    lua_State *L;
    int ref;
} module_host;

/* Pushes m's env table, creating it on first use. */
static void push_env(lua_State *L, as_module *m)
{
    if (m->host) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ((module_host *)m->host)->ref);
        return;
    }
    module_host *h = malloc(sizeof *h);
    if (!h) luaL_error(L, "out of memory");
    lua_newtable(L);
    lua_getfield(L, LUA_REGISTRYINDEX, CLASSES_KEY);
    if (lua_istable(L, -1)) lua_getfield(L, -1, m->type_name);
    else lua_pushnil(L);
    lua_setfield(L, -3, "__class");
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    h->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    h->L = main_state(L);
    m->host = h;
}

/* Pushes the userdata of m, creating it (and retaining m) when none is alive. */
void l_pushmodule(lua_State *L, as_module *m)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
    lua_rawgetp(L, -1, m);
    if (!lua_isnil(L, -1)) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    as_module **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = as_module_retain(m);
    luaL_setmetatable(L, AS_MODULE_MT);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, -3, m);
    lua_remove(L, -2);
    push_env(L, m);
    lua_pop(L, 1);
}

/* Pushes a module made by a C constructor (consuming its reference). */
static int push_new_module(lua_State *L, as_module *m)
{
    if (!m) return l_raise(L);
    l_pushmodule(L, m);
    as_module_release(m);
    return 1;
}

static void release_hook(as_module *m)
{
    module_host *h = m->host;
    luaL_unref(h->L, LUA_REGISTRYINDEX, h->ref);
    free(h);
    m->host = NULL;
}

/* Runs a Lua forward for a C caller: the result must be one tensor. */
static int call_forward(lua_State *L)
{
    int nargs = lua_gettop(L) - 1;
    as_module *m = l_checkmodule(L, 1);
    lua_getfield(L, 1, "forward");
    if (!lua_isfunction(L, -1)) return luaL_error(L, "%s has no forward method", m->type_name);
    lua_insert(L, 1);
    lua_call(L, nargs + 1, 1);
    return 1;
}

static as_tensor *forward_hook(as_module *m, const as_args *args)
{
    lua_State *L = m->host ? ((module_host *)m->host)->L : NULL;
    if (!L) {
        as_error_set("%s: forward of a Lua module called outside Lua", m->type_name);
        return NULL;
    }
    int top = lua_gettop(L);
    if (!lua_checkstack(L, args->n + 4)) {
        as_error_set("%s: Lua stack overflow", m->type_name);
        return NULL;
    }
    lua_pushcfunction(L, call_forward);
    l_pushmodule(L, m);
    for (int i = 0; i < args->n; i++) {
        if (args->v[i]) l_pushtensor(L, as_retain(args->v[i]));
        else lua_pushnil(L);
    }
    if (lua_pcall(L, args->n + 1, 1, 0) != LUA_OK) {
        as_error_set("%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error in Lua forward");
        lua_settop(L, top);
        return NULL;
    }
    as_tensor *t = l_totensor(L, -1);
    if (!t) {
        as_error_set("%s: forward returned %s, expected a Tensor", m->type_name, luaL_typename(L, -1));
        lua_settop(L, top);
        return NULL;
    }
    as_retain(t);
    lua_settop(L, top);
    return t;
}

/* ---- metamethods ---- */

/* m[i] counts the children from 1, as Lua tables do (-1 is the last);
 * PyTorch's m[0] is an error that says so. */
static int index_zero_error(lua_State *L, const as_module *m)
{
    if (m->children.n == 0)
        return luaL_error(L, "%s: index 0 is invalid (indices start at 1 in attnswap, as in Lua; this %s has no children)",
                          m->type_name, m->type_name);
    return luaL_error(L, "%s: index 0 is invalid (indices start at 1 in attnswap, as in Lua: PyTorch's [0] is [1] "
                      "here, the child named '%s'; [-1] is the last)", m->type_name, m->children.items[0].name);
}

/* The 0-based position of child index i, or -1 past either end. */
static int child_position(lua_State *L, const as_module *m, lua_Integer i)
{
    if (i == 0) return index_zero_error(L, m);
    if (i < 0) i += m->children.n + 1;
    return i >= 1 && i <= m->children.n ? (int)(i - 1) : -1;
}

static int m_index(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER && lua_isinteger(L, 2)) {
        /* past the end: nil, as a Lua table gives (so ipairs(m) stops) */
        int pos = child_position(L, m, lua_tointeger(L, 2));
        if (pos >= 0) l_pushmodule(L, m->children.items[pos].value);
        else lua_pushnil(L);
        return 1;
    }
    const char *key = lua_tostring(L, 2);
    if (key && lua_type(L, 2) == LUA_TSTRING) {
        as_module *c = as_module_child(m, key);
        if (c) return l_pushmodule(L, c), 1;
        as_tensor *t = as_module_param(m, key);
        if (!t) t = as_module_buffer(m, key);
        if (t) return l_pushtensor(L, as_retain(t)), 1;
    }
    push_env(L, m);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    if (lua_getfield(L, -1, "__class") == LUA_TTABLE) {
        lua_pushvalue(L, 2);
        lua_gettable(L, -2); /* follows the parents */
        if (!lua_isnil(L, -1)) return 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    /* the base Module methods */
    lua_getfield(L, LUA_REGISTRYINDEX, CLASSES_KEY);
    lua_getfield(L, -1, "Module");
    if (!lua_istable(L, -1)) return lua_pushnil(L), 1;
    lua_pushvalue(L, 2);
    lua_gettable(L, -2);
    return 1;
}

#define PARAMETER_MT "attnswap.Parameter"

/* m[i] = module replaces the i-th child, keeping its name. */
static int set_numbered(lua_State *L, as_module *m)
{
    lua_Integer i = lua_tointeger(L, 2);
    int pos = child_position(L, m, i);
    if (pos < 0)
        return luaL_error(L, "%s: index %I is out of range for %d children (m:append(x) adds one)", m->type_name,
                          i, m->children.n);
    as_module *child = l_tomodule(L, 3);
    if (!child)
        return luaL_error(L, "cannot assign %s to [%I] of %s: it is a child module (assign a Module)", luaL_typename(L, 3),
                          i, m->type_name);
    lua_pushstring(L, m->children.items[pos].name); /* a copy: the item may be rewritten */
    if (as_module_set_child(m, lua_tostring(L, -1), child)) return l_raise(L);
    return 0;
}

static int m_newindex(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER && lua_isinteger(L, 2)) return set_numbered(L, m);
    const char *key = luaL_checkstring(L, 2);
    as_module *child = l_tomodule(L, 3);
    int rc = 0;
    if (child) {
        rc = as_module_set_child(m, key, child);
    } else if (luaL_testudata(L, 3, PARAMETER_MT) || (l_totensor(L, 3) && as_module_param(m, key))) {
        as_tensor *t = l_totensor(L, 3);
        if (!t) {
            lua_getiuservalue(L, 3, 1);
            t = l_checktensor(L, -1);
        }
        rc = as_module_set_param(m, key, t);
    } else if (l_totensor(L, 3) && as_module_buffer(m, key)) {
        rc = as_module_set_buffer(m, key, l_totensor(L, 3));
    } else {
        if (lua_isnil(L, 3)) {
            as_module_set_child(m, key, NULL);
            as_module_set_param(m, key, NULL);
            as_module_set_buffer(m, key, NULL);
        } else if (as_module_child(m, key) || as_module_param(m, key)) {
            return luaL_error(L, "cannot assign %s to '%s' of %s: it is a %s (assign a %s, or nil first)",
                              luaL_typename(L, 3), key, m->type_name,
                              as_module_child(m, key) ? "child module" : "parameter",
                              as_module_child(m, key) ? "Module" : "Tensor");
        }
        push_env(L, m);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, 3);
        lua_rawset(L, -3);
        return 0;
    }
    if (rc) return l_raise(L);
    /* a member shadows a plain field of the same name */
    push_env(L, m);
    lua_pushnil(L);
    lua_setfield(L, -2, key);
    return 0;
}

static int m_gc(lua_State *L)
{
    as_module **ud = luaL_checkudata(L, 1, AS_MODULE_MT);
    as_module_release(*ud);
    *ud = NULL;
    return 0;
}

/* Calling a module: a Lua forward gets the Lua values as they are and may
 * return anything; a C forward takes tensors (nil allowed) and returns one. */
static int m_call(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    if (m->cls == &as_host_module_class) {
        int n = lua_gettop(L);
        lua_getfield(L, 1, "forward");
        if (!lua_isfunction(L, -1)) return luaL_error(L, "%s has no forward method", m->type_name);
        lua_insert(L, 1);
        if (!as_module_path_push(m)) { /* anomaly mode off: a plain call keeps tracebacks whole */
            lua_call(L, n, LUA_MULTRET);
            return lua_gettop(L);
        }
        int rc = lua_pcall(L, n, LUA_MULTRET, 0); /* the module path popped on an error too */
        as_module_path_pop();
        if (rc != LUA_OK) return lua_error(L);
        return lua_gettop(L);
    }
    as_args args = {.n = lua_gettop(L) - 1};
    if (args.n > AS_FORWARD_MAX_ARGS) return luaL_error(L, "%s: too many arguments (%d)", m->type_name, args.n);
    for (int i = 0; i < args.n; i++) {
        if (lua_isnil(L, i + 2)) continue;
        args.v[i] = l_totensor(L, i + 2);
        if (!args.v[i])
            return luaL_error(L, "%s: argument #%d must be a Tensor or nil, got %s", m->type_name, i + 1,
                              luaL_typename(L, i + 2));
    }
    l_pushtensor(L, as_module_forward(m, &args));
    return 1;
}

static int m_eq(lua_State *L)
{
    lua_pushboolean(L, l_tomodule(L, 1) == l_tomodule(L, 2));
    return 1;
}

/* ---- primitives the Lua side (nn/module.lua) builds on ---- */

static int push_named(lua_State *L, const as_named_list *l, int modules)
{
    lua_createtable(L, l->n, 0);
    for (int i = 0; i < l->n; i++) {
        lua_createtable(L, 2, 0);
        lua_pushstring(L, l->items[i].name);
        lua_rawseti(L, -2, 1);
        if (modules) l_pushmodule(L, l->items[i].value);
        else l_pushtensor(L, as_retain(l->items[i].value));
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* members(m, "children" | "parameters" | "buffers") -> {{name, value}, ...} */
static int l_members(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    static const char *const kinds[] = {"children", "parameters", "buffers", NULL};
    int k = luaL_checkoption(L, 2, NULL, kinds);
    return push_named(L, k == 0 ? &m->children : k == 1 ? &m->params : &m->buffers, k == 0);
}

static int l_add_module(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    const char *name = luaL_checkstring(L, 2);
    as_module *c = lua_isnil(L, 3) ? NULL : l_checkmodule(L, 3);
    if (as_module_set_child(m, name, c)) return l_raise(L);
    return 0;
}

static int l_register_parameter(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    const char *name = luaL_checkstring(L, 2);
    as_tensor *t = lua_isnil(L, 3) ? NULL : l_checktensor(L, 3);
    if (as_module_set_param(m, name, t)) return l_raise(L);
    return 0;
}

static int l_register_buffer(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    const char *name = luaL_checkstring(L, 2);
    as_tensor *t = lua_isnil(L, 3) ? NULL : l_checktensor(L, 3);
    if (as_module_set_buffer(m, name, t)) return l_raise(L);
    return 0;
}

/* set_training(m, flag, recurse) */
static int l_set_training(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    if (lua_toboolean(L, 3)) as_module_train(m, lua_toboolean(L, 2));
    else m->training = lua_toboolean(L, 2);
    return 0;
}

static int l_is_training(lua_State *L)
{
    lua_pushboolean(L, l_checkmodule(L, 1)->training);
    return 1;
}

static int l_type_name(lua_State *L)
{
    lua_pushstring(L, l_checkmodule(L, 1)->type_name);
    return 1;
}

static int l_is_builtin(lua_State *L)
{
    lua_pushboolean(L, l_checkmodule(L, 1)->cls != &as_host_module_class);
    return 1;
}

static int l_extra_repr(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    char buf[512] = "";
    if (m->cls && m->cls->extra_repr) m->cls->extra_repr(m, buf, sizeof buf);
    lua_pushstring(L, buf);
    return 1;
}

/* module_to(m, "cpu" | "cuda[:n]" | dtype) */
static int l_module_to(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    const char *s = luaL_checkstring(L, 2);
    int dt = as_dtype_from_name(s);
    int rc = dt >= 0 ? as_module_to_dtype(m, (as_dtype)dt) : as_module_to_device(m, l_checkdevice(L, 2, "to"));
    if (rc) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int l_num_parameters(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)as_module_num_parameters(l_checkmodule(L, 1)));
    return 1;
}

/* new_lua_module(type_name, class) -> a module whose forward is the class's */
static int l_new_lua_module(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    as_module *m = as_module_new(&as_host_module_class, name, NULL);
    push_new_module(L, m);
    push_env(L, m);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "__class");
    lua_pop(L, 1);
    return 1;
}

/* env(m) -> the module's env table (class in __class) */
static int l_env(lua_State *L)
{
    push_env(L, l_checkmodule(L, 1));
    return 1;
}

static int l_is_module(lua_State *L)
{
    lua_pushboolean(L, l_tomodule(L, 1) != NULL);
    return 1;
}

/* Parameter(t): a marker that makes `m.name = nn.Parameter(t)` register a parameter. */
static int l_parameter(lua_State *L)
{
    l_checktensor(L, 1);
    lua_newuserdatauv(L, 0, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, PARAMETER_MT);
    return 1;
}

/* ---- constructors of the built-in layers ---- */

static int l_new_linear(lua_State *L)
{
    lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2);
    int bias = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
    if (in < 0 || out < 0) return luaL_error(L, "Linear: sizes must be non-negative, got (%d, %d)", (int)in, (int)out);
    return push_new_module(L, as_linear_new(in, out, bias));
}

static int l_new_layer_norm(lua_State *L)
{
    lua_Integer dim = luaL_checkinteger(L, 1);
    if (dim <= 0) return luaL_error(L, "LayerNorm: dim must be positive, got %d", (int)dim);
    return push_new_module(L, as_layer_norm_new(dim, luaL_optnumber(L, 2, 1e-5), lua_isnoneornil(L, 3) || lua_toboolean(L, 3)));
}

static int l_new_rms_norm(lua_State *L)
{
    lua_Integer dim = luaL_checkinteger(L, 1);
    if (dim <= 0) return luaL_error(L, "RMSNorm: dim must be positive, got %d", (int)dim);
    return push_new_module(L, as_rms_norm_new(dim, luaL_optnumber(L, 2, 1e-6), lua_isnoneornil(L, 3) || lua_toboolean(L, 3)));
}

static int l_new_embedding(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1), d = luaL_checkinteger(L, 2);
    if (n <= 0 || d <= 0) return luaL_error(L, "Embedding: sizes must be positive, got (%d, %d)", (int)n, (int)d);
    return push_new_module(L, as_embedding_new(n, d));
}

static int l_new_dropout(lua_State *L)
{
    lua_Number p = luaL_optnumber(L, 1, 0.5);
    if (!(p >= 0 && p < 1)) return l_error(L, "Dropout: p must be in [0, 1), got %g", p);
    return push_new_module(L, as_dropout_new(p));
}

static int l_new_activation(lua_State *L)
{
    static const char *const names[] = {"gelu", "gelu_tanh", "silu", "relu", "tanh", NULL};
    static const as_unop ops[] = {AS_GELU, AS_GELU_TANH, AS_SILU, AS_RELU, AS_TANH};
    return push_new_module(L, as_activation_new(ops[luaL_checkoption(L, 1, NULL, names)]));
}

static int l_new_sequential(lua_State *L) { return push_new_module(L, as_sequential_new()); }
static int l_new_module_list(lua_State *L) { return push_new_module(L, as_module_list_new()); }

static int l_append(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    if (as_module_append(m, l_checkmodule(L, 2))) return l_raise(L);
    lua_settop(L, 1);
    return 1;
}



/* module_config(m) -> the config of a C module as a table ({causal = false,
 * dropout = 0} for an attention core), nil for a class without one (Lua
 * classes keep theirs as fields) */
static int l_config(lua_State *L)
{
    as_module *m = l_checkmodule(L, 1);
    if (!m->cls->config_fields) return 0;
    as_config_field f[16];
    int n = m->cls->config_fields(m, f, 16);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        if (f[i].boolean) lua_pushboolean(L, f[i].value != 0);
        else if (f[i].value == (double)(lua_Integer)f[i].value) lua_pushinteger(L, (lua_Integer)f[i].value);
        else lua_pushnumber(L, f[i].value);
        lua_setfield(L, -2, f[i].name);
    }
    return 1;
}

/* new_sdp({causal, scale, dropout, backend = "auto" | "math"}) */
static int l_new_sdp(lua_State *L)
{
    static const char *const backends[] = {"auto", "math", NULL};
    as_attention_opts o;
    luaL_checktype(L, 1, LUA_TTABLE);
    l_attention_opts(L, 1, "scaled_dot_product", &o);
    lua_getfield(L, 1, "backend");
    int backend = luaL_checkoption(L, -1, "auto", backends);
    lua_pop(L, 1);
    return push_new_module(L, as_sdp_attention_new(&o, backend == 1 ? AS_SDP_MATH : AS_SDP_AUTO));
}

static void read_mha_config(lua_State *L, int t, as_mha_config *c, const char *fn)
{
    c->dim = (int64_t)l_opt_number(L, t, "dim", 0, fn);
    c->num_heads = (int64_t)l_opt_number(L, t, "num_heads", 0, fn);
    c->num_kv_heads = (int64_t)l_opt_number(L, t, "num_kv_heads", 0, fn);
    c->head_dim = (int64_t)l_opt_number(L, t, "head_dim", 0, fn);
    c->qkv_bias = (lua_getfield(L, t, "qkv_bias"), lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1));
    c->out_bias = (lua_getfield(L, t, "out_bias"), lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1));
    c->fused_qkv = (lua_getfield(L, t, "fused_qkv"), lua_toboolean(L, -1));
    lua_pop(L, 3);
}

/* new_mha(config, core) with the config already validated by nn/layers.lua */
static int l_new_mha(lua_State *L)
{
    as_mha_config c;
    luaL_checktype(L, 1, LUA_TTABLE);
    read_mha_config(L, 1, &c, "MultiheadAttention");
    return push_new_module(L, as_mha_new(&c, l_checkmodule(L, 2)));
}

static int l_new_block(lua_State *L)
{
    as_block_config c;
    luaL_checktype(L, 1, LUA_TTABLE);
    read_mha_config(L, 1, &c.attn, "TransformerBlock");
    c.mlp_ratio = l_opt_number(L, 1, "mlp_ratio", 4, "TransformerBlock");
    c.norm_eps = l_opt_number(L, 1, "norm_eps", 1e-5, "TransformerBlock");
    c.dropout = l_opt_number(L, 1, "dropout", 0, "TransformerBlock");
    lua_getfield(L, 1, "norm");
    const char *norm = luaL_optstring(L, -1, "pre");
    if (strcmp(norm, "pre") && strcmp(norm, "post")) return luaL_error(L, "TransformerBlock: norm must be \"pre\" or \"post\", got \"%s\"", norm);
    c.pre_norm = norm[1] == 'r';
    lua_getfield(L, 1, "activation");
    const char *act = luaL_optstring(L, -1, "gelu");
    if (strcmp(act, "gelu") == 0) c.activation = AS_GELU;
    else if (strcmp(act, "gelu_tanh") == 0) c.activation = AS_GELU_TANH;
    else if (strcmp(act, "relu") == 0) c.activation = AS_RELU;
    else if (strcmp(act, "silu") == 0) c.activation = AS_SILU;
    else return luaL_error(L, "TransformerBlock: unknown activation \"%s\" (gelu, gelu_tanh, relu, silu)", act);
    lua_pop(L, 2);
    return push_new_module(L, as_transformer_block_new(&c, l_checkmodule(L, 2)));
}

static const luaL_Reg module_functions[] = {
    {"members", l_members}, {"add_module", l_add_module}, {"register_parameter", l_register_parameter},
    {"register_buffer", l_register_buffer}, {"set_training", l_set_training}, {"is_training", l_is_training},
    {"type_name", l_type_name}, {"is_builtin", l_is_builtin}, {"extra_repr", l_extra_repr},
    {"module_to", l_module_to}, {"num_parameters", l_num_parameters}, {"new_lua_module", l_new_lua_module},
    {"env", l_env}, {"is_module", l_is_module}, {"Parameter", l_parameter},
    {"new_linear", l_new_linear}, {"new_layer_norm", l_new_layer_norm}, {"new_rms_norm", l_new_rms_norm},
    {"new_embedding", l_new_embedding}, {"new_dropout", l_new_dropout}, {"new_activation", l_new_activation},
    {"new_sequential", l_new_sequential}, {"new_module_list", l_new_module_list}, {"append", l_append},
    {"module_config", l_config}, {"new_sdp", l_new_sdp}, {"new_mha", l_new_mha}, {"new_block", l_new_block},
    {NULL, NULL},
};

void l_open_module(lua_State *L)
{
    lua_newtable(L); /* weak cache: C module -> its userdata */
    lua_newtable(L);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CLASSES_KEY);
    lua_setfield(L, -2, "classes"); /* core.classes: nn/ registers class tables here */

    luaL_newmetatable(L, AS_MODULE_MT);
    static const luaL_Reg meta[] = {
        {"__index", m_index}, {"__newindex", m_newindex}, {"__gc", m_gc},
        {"__call", m_call}, {"__eq", m_eq}, {NULL, NULL},
    };
    luaL_setfuncs(L, meta, 0);
    lua_pushliteral(L, "Module");
    lua_setfield(L, -2, "__name");
    lua_setfield(L, -2, "module_metatable"); /* nn/module.lua adds __tostring */
    luaL_newmetatable(L, PARAMETER_MT);
    lua_pop(L, 1);
    luaL_setfuncs(L, module_functions, 0);
    static const as_module_hooks hooks = {.forward = forward_hook, .release = release_hook};
    as_module_set_hooks(&hooks);
}
