/* libFuzzer harness: load_checkpoint of a file whose tensors are a real
 * checkpoint's and whose JSON metadata (optimizer, scheduler, rng, fields)
 * comes from the fuzz bytes, split at NUL bytes, into a model, an AdamW and
 * a schedule.  Every input must load or raise a message; none may crash, and
 * a failed load must leave the model as it was (checked here). */
#include <string.h>

#include "lua_harness.h"

static const char *const setup =
    "local m = as.nn.Sequential(as.nn.Linear(3, 4), as.nn.LayerNorm(4)):requires_grad_()\n"
    "local opt = as.optim.AdamW(m:parameters(), {amsgrad = true})\n"
    "local sched = as.optim.lr_scheduler.LinearWarmupCosine(opt, {warmup_steps = 2, total_steps = 5})\n"
    "for _, p in ipairs(m:parameters()) do p.grad = as.ones(p:shape()) end\n"
    "opt:step(); sched:step()\n"
    "local path = os.tmpname()\n"
    "as.save_checkpoint(path, {model = m, optimizer = opt, scheduler = sched, step = 1})\n"
    "local tensors = as.load(path)\n"
    "local keys = {'optimizer', 'scheduler', 'rng', 'fields'}\n"
    "return function(parts)\n"
    "  local meta = {['attnswap.checkpoint'] = '1'}\n"
    "  for i, k in ipairs(keys) do meta[k] = parts[i] end\n"
    "  if not pcall(as.save, path, tensors, meta) then return end\n"
    "  local before = m[1].weight:clone()\n"
    "  local ok = pcall(as.load_checkpoint, path, {model = m, optimizer = opt, scheduler = sched})\n"
    "  if not ok and (m[1].weight - before):abs():max():item() ~= 0 then error('a failed load changed the model') end\n"
    "  if ok then pcall(opt.step, opt) end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_state();
    static int fn_ref = LUA_NOREF;
    if (fn_ref == LUA_NOREF) {
        if (luaL_dostring(L, setup) != LUA_OK) abort();
        fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_newtable(L);
    size_t start = 0;
    int k = 1;
    for (size_t i = 0; i <= size && k <= 4; i++) {
        if (i == size || data[i] == 0) {
            lua_pushlstring(L, (const char *)data + start, i - start);
            lua_rawseti(L, -2, k++);
            start = i + 1;
        }
    }
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg && strstr(msg, "a failed load changed the model")) abort();
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
