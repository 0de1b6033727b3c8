-- nn.parallel.DistributedDataParallel (docs/distributed.md): one replica of
-- the model per rank, each on its share of the batch (as.distributed's
-- DistributedSampler); after the backward, ddp:sync_grads() averages every
-- gradient over the ranks, so each replica takes the step one process would
-- take on the whole batch and the replicas stay equal.
--
-- Gradients travel in buckets (bucket_mb, 25 MB by default): each bucket's
-- gradients are flattened into one buffer and all-reduced in one message,
-- since a few large messages cost far less than one per parameter.
-- Overlapped with the backward (overlap = true, the default): each parameter
-- carries a post-accumulate-grad hook (include/attnswap/autograd.h) that
-- marks its gradient final; when a bucket's last one is, its all-reduce
-- starts in flight (as.distributed.iall_reduce) while the backward goes on
-- to earlier layers, and sync_grads() only waits for them.  A bucket not
-- complete by then (a parameter that got no gradient), and every bucket
-- after a second backward without sync_grads in between (accumulation), is
-- reduced by sync_grads as without overlap.  Every rank must run the same
-- backward (MPI starts collectives in one order on all ranks).
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
    self.overlap = opts.overlap ~= false
    if self.overlap then self:_add_hooks() end
  end

  -- The overlap's state lives apart from self: the hooks (kept by the
  -- parameters) hold it, never the module, so the model holds no cycle.
  -- Buckets are fixed here, over the parameters that require grad now.
  function DDP:_add_hooks()
    local params = self.module:parameters()
    local st = { buckets = make_buckets(params, self.bucket_bytes), stale = false }
    self._overlap, self._params, self._handles = st, params, {}
    for _, b in ipairs(st.buckets) do
      b.ready, b.count = {}, 0
      for k, i in ipairs(b.idx) do
        self._handles[#self._handles + 1] = { params[i], params[i]:register_post_accumulate_grad_hook(function(t)
          if b.ready[k] then st.stale = true return end -- a second backward before sync_grads
          b.ready[k], b.count = t, b.count + 1
          if b.count < #b.idx or st.stale then return end
          local flat = {}
          for j, leaf in ipairs(b.ready) do flat[j] = leaf.grad:reshape(-1) end
          b.buf = #flat == 1 and flat[1]:clone() or core.cat(flat, 1)
          b.req = D.iall_reduce(b.buf, "avg")
        end) }
      end
    end
  end

  --- ddp:remove_hooks(): back to reducing after the backward (overlap off).
  function DDP:remove_hooks()
    for _, h in ipairs(self._handles or {}) do h[1]:remove_post_accumulate_grad_hook(h[2]) end
    self._handles, self._overlap, self.overlap = nil, nil, false
  end

  function DDP:forward(...) return self.module(...) end

  --- ddp:sync_grads(): averages every parameter's .grad over the ranks (a
  --- missing .grad counts as zeros, so ranks stay in step); call it after
  --- backward and before the optimizer's step.  Returns the number of messages.
  --- ddp.in_flight: how many of those the last sync_grads found started by the backward.
  function DDP:sync_grads()
    local params, buckets, st = self.module:parameters(), nil, self._overlap
    if st then params, buckets = self._params, st.buckets else buckets = make_buckets(params, self.bucket_bytes) end
    local prev = core.set_grad_enabled(false)
    local in_flight = 0
    local ok, err = pcall(function()
      for _, b in ipairs(buckets) do
        local req = b.req
        b.req, b.ready, b.count = nil, {}, 0
        if req then
          req:wait()
          if not st.stale then
            in_flight = in_flight + 1
            local off = 1
            for _, i in ipairs(b.idx) do
              local p = params[i]
              local n = p:numel()
              p.grad:copy_(b.buf:narrow(1, off, n):view(p:shape()))
              off = off + n
            end
            b.done = true
          end
          b.buf = nil
        end
      end
      for _, b in ipairs(buckets) do
        if b.done then b.done = nil goto continue end
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
        ::continue::
      end
    end)
    if st then st.stale = false end
    core.set_grad_enabled(prev)
    self.in_flight = in_flight
    if not ok then error(err, 0) end
    return #buckets
  end

  function DDP:extra_repr()
    return string.format("world_size=%d, bucket_mb=%g, overlap=%s", D.world_size(), self.bucket_bytes / 1048576,
      tostring(self.overlap))
  end

  parallel.DistributedDataParallel = DDP
  return parallel
end
