/* Shared helpers of the Lua bindings: checking arguments the way lauxlib
 * does, and turning runtime failures into Lua errors.  Bindings never
 * compute: they check, call the runtime, and push. */
#ifndef AS_L_UTIL_H
#define AS_L_UTIL_H

#include <lauxlib.h>
#include <lua.h>

#include <stdbool.h>

#include "attnswap/attention.h"
#include "attnswap/tensor.h"

#define AS_TENSOR_MT "attnswap.Tensor"
#define AS_MODULE_MT "attnswap.Module"

/* Pushes t as a Tensor userdata, taking over the reference.  t == NULL
 * raises the runtime's error (so `l_pushtensor(L, as_op(...))` is the idiom). */
void l_pushtensor(lua_State *L, as_tensor *t);
as_tensor *l_checktensor(lua_State *L, int idx);
as_tensor *l_totensor(lua_State *L, int idx); /* NULL when not a tensor */
/* luaL_error with the full printf format (luaL_error knows no %lld or %g). */
int l_error(lua_State *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Raises the runtime's last error as a Lua error. */
int l_raise(lua_State *L);
/* 1-based or negative Lua dim -> 0-based or negative C dim; 0 is an error. */
int l_checkdim(lua_State *L, int idx, const char *fn);
int l_optdim(lua_State *L, int idx, int def, const char *fn);
/* Shape from varargs (2, 3) or a table {2, 3} starting at idx; returns ndim. */
int l_checkshape(lua_State *L, int idx, int64_t *shape, const char *fn);
/* Optional dtype name at idx; def when none. */
as_dtype l_optdtype(lua_State *L, int idx, as_dtype def, const char *fn);
as_device l_checkdevice(lua_State *L, int idx, const char *fn);
/* Raises "fn: expected X, got Y" naming the argument. */
int l_argerror(lua_State *L, int idx, const char *fn, const char *expected);

typedef struct as_module as_module;
/* Pushes the one userdata of m (made on first push, retaining m). */
void l_pushmodule(lua_State *L, as_module *m);
as_module *l_checkmodule(lua_State *L, int idx);
as_module *l_tomodule(lua_State *L, int idx);

/* Registration entry points of each binding file. */
void l_open_tensor(lua_State *L);   /* leaves nothing; fills the module table at -1 */
void l_open_file(lua_State *L);
void l_open_module(lua_State *L);
void l_open_registry(lua_State *L);
void l_open_attention(lua_State *L);
void l_open_bench(lua_State *L);
void l_open_config(lua_State *L);   /* config(): BLAS core, threads, ISA, CUDA */
void l_open_cuda(lua_State *L);     /* the as.cuda table */
void l_open_distributed(lua_State *L); /* core.distributed (l_distributed.c) */
void l_open_json(lua_State *L);
void l_open_tokenizer(lua_State *L);   /* attnswap.Tokenizer, tokenizer_load */
void l_open_autograd(lua_State *L);    /* set_grad_enabled, is_grad_enabled */
void l_open_autograd_methods(lua_State *L); /* requires_grad_, backward, detach: into the table at -1 */
/* t.grad, t.requires_grad, t.is_leaf, t.grad_fn (read) and t.grad, t.requires_grad
 * (assigned): 1 when key is one of them, 0 otherwise (l_autograd.c). */
int l_autograd_property(lua_State *L, as_tensor *t, const char *key);
int l_autograd_assign(lua_State *L, as_tensor *t, const char *key, int value);
void l_open_optim(lua_State *L);       /* sgd_step, adamw_step, get/set_rng_state */
void l_open_clone(lua_State *L);       /* module_copy, tensor_key */
void l_open_zoo_sparse(lua_State *L);   /* sparse, local, dynamic, sink kernels */
void l_open_zoo_linear(lua_State *L);   /* linear, performer, efficient, nystrom */
void l_open_zoo_reweight(lua_State *L); /* relative, adaptive, gated, entmax, ... */
/* Math methods (l_tensor_ops.c): table of methods at -1, Tensor metatable at -2;
 * module functions go in the table at -3. */
void l_open_tensor_ops(lua_State *L);


/* ---- options tables (runtime/lua/l_options.c) ----
 * opts[field] of the table at idx (nil table or field: def); errors name fn. */
double l_opt_number(lua_State *L, int idx, const char *field, double def, const char *fn);
int64_t l_opt_integer(lua_State *L, int idx, const char *field, int64_t def, const char *fn);
bool l_opt_bool(lua_State *L, int idx, const char *field, bool def);
/* The tensor (or NULL), referenced by the table. */
as_tensor *l_opt_tensor(lua_State *L, int idx, const char *field, const char *fn);
/* causal, scale (NaN: 1/sqrt(D)), dropout in [0, 1): what every attention takes. */
void l_attention_opts(lua_State *L, int idx, const char *fn, as_attention_opts *o);
/* f(q, k, v [, mask [, opts [, training]]]): the arguments of every functional attention. */
typedef struct {
    as_tensor *q, *k, *v, *mask;
    as_attention_opts o;
    bool training;
} l_attention_call;
void l_check_attention_call(lua_State *L, const char *fn, l_attention_call *a);

#endif
