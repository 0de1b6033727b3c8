-- attnswap: swap the attention inside a transformer and see what it does.
-- The C half (attnswap.core) owns tensors, modules and kernels; this file
-- assembles the public table `as` from it and from the Lua-written parts.
local core = require "attnswap.core"

-- core also carries the module and registry primitives that nn/ and
-- registry.lua build on; `as` gets only the tensor functions.
local PRIVATE = {
  members = true, add_module = true, register_parameter = true, register_buffer = true,
  set_training = true, is_training = true, type_name = true, is_builtin = true,
  extra_repr = true, module_to = true, num_parameters = true, env = true, append = true,
  Parameter = true, module_config = true,
  function_record = true, set_anomaly_enabled = true, is_anomaly_enabled = true,
}
local as = {}
for k, v in pairs(core) do
  if type(v) == "function" and not PRIVATE[k] and not k:match("^registry_") and not k:match("^new_") then
    as[k] = v
  end
end
as.version = core.version -- project(VERSION) in CMakeLists.txt
-- A wall-clock timer (monotonic seconds).  os.clock() is the process's CPU
-- time, summed over every thread, so it overstates multi-threaded work.
as.clock = core.clock
-- Grad mode, as torch.no_grad: as.no_grad(fn, ...) runs fn with gradients
-- off and returns its results; `local _ <close> = as.no_grad()` turns them
-- off until the end of the scope.  as.enable_grad likewise turns them on.
local function grad_mode(on)
  return function(fn, ...)
    local prev = core.set_grad_enabled(on)
    if fn == nil then
      return setmetatable({}, { __close = function() core.set_grad_enabled(prev) end })
    end
    local r = table.pack(pcall(fn, ...))
    core.set_grad_enabled(prev)
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end
end
as.no_grad = grad_mode(false)
as.enable_grad = grad_mode(true)
as.Tensor = core.Tensor -- the tensor methods, for help, completion and extension
as.core = core
as.cuda = core.cuda -- is_available, device_count, synchronize, memory_stats, ...
as.cuda.graph = require("attnswap.cuda_graph").graph -- capture once, replay with one launch

local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local swap = require "attnswap.swap"
as.nn = nn
-- Training: losses as functions (torch.nn.functional), optimizers, schedules, clipping.
as.F = require "attnswap.functional"
nn.functional = as.F
as.optim = require "attnswap.optim"
-- Custom functions, anomaly detection, checkpointing: merged into as.autograd
-- (gradcheck lives in the same table).
as.autograd = as.autograd or {}
for k, v in pairs(require "attnswap.autograd") do as.autograd[k] = v end
as.checkpoint = as.autograd.checkpoint
nn.utils = { clip_grad_norm_ = as.optim.clip_grad_norm_, clip_grad_value_ = as.optim.clip_grad_value_ }
-- Checkpoints (model, optimizer, schedule, generator, plain fields) and the
-- generator's state; the fused steps are the optimizers' business, not as's.
as.save_checkpoint = require("attnswap.checkpoint").save_checkpoint
as.load_checkpoint = require("attnswap.checkpoint").load_checkpoint
as.sgd_step, as.adamw_step, as.storage_version = nil, nil, nil
as.module_copy, as.tensor_key = nil, nil -- model:clone()'s, in lua/attnswap/nn/clone.lua
as.isinstance = nn.isinstance
as.register_attention = registry.register_attention
as.attention = registry.attention
as.swap_attention = swap.swap_attention
as.swapped = swap.swapped
as.compare = require("attnswap.compare").compare
as.patterns = require "attnswap.patterns"
as.tokenizer = require "attnswap.tokenizers"
as.eval = require "attnswap.eval" -- perplexity
as.distill = require("attnswap.distill").distill -- recover after a swap
as.distributed = require "attnswap.distributed" -- MPI / NCCL collectives, docs/distributed.md

-- Models load on first use (they require this module themselves).
as.models = setmetatable({}, {
  __index = function(t, name)
    if type(name) ~= "string" or not package.searchpath("attnswap.models." .. name, package.path) then
      return nil
    end
    local m = require("attnswap.models." .. name)
    rawset(t, name, m)
    return m
  end,
})

-- The implementations register themselves, one file each under attention/.
as.attention.modules = {
  "scaled_dot_product", "flash_attention",
  "sparse_attention", "local_attention", "dynamic_attention", "sink_attention",
  "linear_attention", "performer_attention", "efficient_attention", "nystrom_attention",
  "relative_attention", "adaptive_attention", "gated_attention", "entmax_attention",
  "sigmoid_attention", "cosine_attention", "flex_attention",
  "hedgehog_attention", "lolcats_attention", "ring_attention",
}
for _, name in ipairs(as.attention.modules) do
  if package.searchpath("attnswap.attention." .. name, package.path) then
    require("attnswap.attention." .. name)
  end
end

do local gc = require("attnswap.gradcheck").gradcheck; as.gradcheck = gc; as.autograd = as.autograd or {}; as.autograd.gradcheck = gc end -- after as.autograd (autograd.lua), merged into it

return as
