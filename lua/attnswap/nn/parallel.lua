-- nn.parallel.DistributedDataParallel (docs/distributed.md): one replica of
-- the model per rank, each on its share of the batch (as.distributed's
-- DistributedSampler); after the backward, ddp:sync_grads() averages every
-- gradient over the ranks, so each replica takes the step one process would
-- take on the whole batch and the replicas stay equal.
--
-- Gradients travel in buckets (bucket_mb, 25 MB by default): each bucket's
-- gradients are flattened into one buffer and all-reduced in one message,
-- since a few large messages cost far less than one per parameter.
-- Not overlapped with the backward: the autograd (include/attnswap/autograd.h)
-- has no post-accumulate hooks yet, so the reduction starts after it.
local core = require "attnswap.core"
local D = require "attnswap.distributed"

return function(nn)
  local parallel = {}
  local DDP = nn.class("DistributedDataParallel")

  local SIZE = { float32 = 4, float64 = 8, float16 = 2, bfloat16 = 2, int64 = 8, int32 = 4, bool = 1 }

  -- Buckets of parameters that need a gradient, in reverse registration order
  -- (the order the backward finishes them), one dtype and device each, up to
  -- cap bytes.
  local function make_buckets(params, cap)
    local buckets, cur, bytes = {}, nil, 0
    for i = #params, 1, -1 do
      local p = params[i]
      if p.requires_grad then
        local key = p:dtype() .. "@" .. p:device()
        local size = p:numel() * (SIZE[p:dtype()] or 4)
        if not cur or cur.key ~= key or (bytes + size > cap and #cur.idx > 0) then
          cur, bytes = { key = key, idx = {} }, 0
          buckets[#buckets + 1] = cur
        end
        cur.idx[#cur.idx + 1] = i
        bytes = bytes + size
      end
    end
    return buckets
  end

  --- DistributedDataParallel(model [, {bucket_mb = 25, broadcast_buffers = true}]):
  --- every parameter (and buffer) becomes rank 0's now; forward is the model's.
  function DDP:init(model, opts)
    if not core.is_module(model) then
      error("bad argument #1 to 'DistributedDataParallel' (module expected, got " .. type(model) .. ")", 3)
    end
    opts = opts or {}
    if not D.is_initialized() then D.init() end
    self.module = model
    local prev = core.set_grad_enabled(false)
    local ok, err = pcall(function()
      for _, p in model:named_parameters() do D.broadcast(p, 0) end
      if opts.broadcast_buffers ~= false then
        for _, b in model:named_buffers() do D.broadcast(b, 0) end
      end
    end)
    core.set_grad_enabled(prev)
    if not ok then error(err, 0) end
    self.bucket_bytes = (opts.bucket_mb or 25) * 1024 * 1024
  end

  function DDP:forward(...) return self.module(...) end

  --- ddp:sync_grads(): averages every parameter's .grad over the ranks (a
  --- missing .grad counts as zeros, so ranks stay in step); call it after
  --- backward and before the optimizer's step.  Returns the number of messages.
  function DDP:sync_grads()
    local params = self.module:parameters()
    local buckets = make_buckets(params, self.bucket_bytes)
    local prev = core.set_grad_enabled(false)
    local ok, err = pcall(function()
      for _, b in ipairs(buckets) do
        local flat = {}
        for k, i in ipairs(b.idx) do
          local p = params[i]
          local g = p.grad or core.zeros(p:shape(), p:dtype()):to(p:device())
          flat[k] = g:reshape(-1)
        end
        local buf = #flat == 1 and flat[1]:clone() or core.cat(flat, 1)
        D.all_reduce(buf, "avg")
        local off = 1
        for _, i in ipairs(b.idx) do
          local p = params[i]
          local n = p:numel()
          local g = buf:narrow(1, off, n):view(p:shape())
          if p.grad then p.grad:copy_(g) else p.grad = g:clone() end
          off = off + n
        end
      end
    end)
    core.set_grad_enabled(prev)
    if not ok then error(err, 0) end
    return #buckets
  end

  function DDP:extra_repr()
    return string.format("world_size=%d, bucket_mb=%g", D.world_size(), self.bucket_bytes / 1048576)
  end

  parallel.DistributedDataParallel = DDP
  return parallel
end
