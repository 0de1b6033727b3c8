-- as.distributed: collectives between the processes of a job launched with
-- `mpirun -np N attnswap-run script.lua` (or `attnswap-run --nproc N
-- script.lua`).  CPU tensors over MPI, CUDA tensors over NCCL when the build
-- has it (docs/distributed.md).  Ranks are 0-based, as MPI's are.  Without
-- a launcher a process is a world of one and every collective is the
-- identity, so the same script runs alone.
--
-- Every blocking call waits at most the timeout (init{timeout = s}, 300 s by
-- default, ATTNSWAP_DIST_TIMEOUT in the environment, or {timeout = s} on one
-- call): a rank that died or stopped answering ends the others with an error
-- naming it, never a hang.
local core = require "attnswap.core"

local C = core.distributed
local D = {}

local function is_tensor(x) return core.is_tensor(x) end

local function argerr(fn, i, expected, got)
  error(("bad argument #%d to '%s' (%s expected, got %s)"):format(i, fn, expected, type(got)), 3)
end

-- Runs f(...) under opts.timeout when given (restored after, error or not).
local function timed(opts, f, ...)
  if type(opts) ~= "table" or opts.timeout == nil then return f(...) end
  if type(opts.timeout) ~= "number" then error("timeout: expected a number of seconds", 3) end
  local prev = C.set_timeout(opts.timeout)
  local res = table.pack(pcall(f, ...))
  C.set_timeout(prev)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- init([opts]): joins the job (opts.timeout: seconds every blocking call waits).
function D.init(opts)
  if opts ~= nil and type(opts) ~= "table" then argerr("init", 1, "options table", opts) end
  C.init()
  if opts and opts.timeout then C.set_timeout(opts.timeout) end
  return D
end
D.is_initialized = C.is_initialized
D.rank = C.rank
D.world_size = C.world_size
D.local_rank = C.local_rank
D.finalize = C.finalize
D.set_timeout = C.set_timeout
D.timeout = C.timeout
--- backend() -> "mpi" | "none", whether CUDA tensors go over NCCL
D.backend = C.backend

--- is_main(): rank 0 (or not distributed at all): the one that writes files.
function D.is_main()
  return not C.is_initialized() or C.rank() == 0
end

-- op: a name, or opts with .op
local function split_op(op, opts)
  if type(op) == "table" then return op.op or "sum", op end
  return op or "sum", opts
end

--- all_reduce(t [, op = "sum" | "avg" | "max" | "min" | "prod" [, opts]]): in place; returns t.
function D.all_reduce(t, op, opts)
  if not is_tensor(t) then argerr("all_reduce", 1, "tensor", t) end
  op, opts = split_op(op, opts)
  return timed(opts, C.all_reduce, t, op)
end

--- broadcast(t [, root = 0 [, opts]]): in place, every rank's t becomes root's; returns t.
function D.broadcast(t, root, opts)
  if not is_tensor(t) then argerr("broadcast", 1, "tensor", t) end
  if type(root) == "table" then root, opts = root.root, root end
  return timed(opts, C.broadcast, t, root or 0)
end

--- all_gather(t [, opts]) -> a list of world tensors (rank order);
--- opts.stacked: one (world, ...) tensor instead.  all_gather(list, t) fills list (torch's form).
function D.all_gather(t, opts)
  if type(t) == "table" and is_tensor(opts) then
    local out = D.all_gather(opts)
    for i, x in ipairs(out) do
      if t[i] then t[i]:copy_(x) else t[i] = x end
    end
    return t
  end
  if not is_tensor(t) then argerr("all_gather", 1, "tensor", t) end
  local stacked = timed(opts, C.all_gather, t)
  if type(opts) == "table" and opts.stacked then return stacked end
  local list = {}
  for i = 1, stacked:size(1) do list[i] = stacked:select(1, i) end
  return list
end

--- reduce_scatter(t | list [, op [, opts]]) -> this rank's share of op over the ranks:
--- t (world * n, ...) gives rows rank*n+1 .. (rank+1)*n; a list of world tensors gives the rank's one.
function D.reduce_scatter(t, op, opts)
  op, opts = split_op(op, opts)
  if type(t) == "table" and not is_tensor(t) then
    if #t ~= C.world_size() then
      error(("reduce_scatter: expected a list of %d tensors (one per rank), got %d"):format(C.world_size(), #t), 2)
    end
    local r = timed(opts, C.reduce_scatter, core.stack(t, 1), op)
    return r:select(1, 1)
  end
  if not is_tensor(t) then argerr("reduce_scatter", 1, "tensor or list of tensors", t) end
  return timed(opts, C.reduce_scatter, t, op)
end

--- send(t, dst [, tag = 0 [, opts]]), recv(t, src [, tag [, opts]]) -> t (filled),
--- sendrecv(send, dst, recv, src [, tag [, opts]]) -> recv.
function D.send(t, dst, tag, opts) return timed(opts, C.send, t, dst, tag or 0) end
function D.recv(t, src, tag, opts) return timed(opts, C.recv, t, src, tag or 0) end
function D.sendrecv(s, dst, r, src, tag, opts) return timed(opts, C.sendrecv, s, dst, r, src, tag or 0) end

--- isendrecv(send, dst, recv, src [, tag]) -> request: the exchange in flight while the
--- caller computes; request:wait([opts]) -> recv (the deadline applies at the wait).
function D.isendrecv(s, dst, r, src, tag)
  local req = C.isendrecv(s, dst, r, src, tag or 0)
  return setmetatable({}, { __index = { wait = function(_, opts) return timed(opts, req.wait, req) end } })
end

--- iall_reduce(t [, op = "sum"]) -> request: all_reduce(t, op) in flight while the
--- caller computes; request:wait([opts]) -> t, reduced in place.  Every rank starts
--- its collectives in the same order.
function D.iall_reduce(t, op)
  if not is_tensor(t) then argerr("iall_reduce", 1, "tensor", t) end
  local req = C.iall_reduce(t, op or "sum")
  return setmetatable({}, { __index = { wait = function(_, opts) return timed(opts, req.wait, req) end } })
end

--- barrier([opts]): every rank waits for all the others.
function D.barrier(opts) return timed(opts, C.barrier) end

-- ---- DistributedSampler: which items of a dataset this rank reads ----
local Sampler = {}
Sampler.__index = Sampler

--- DistributedSampler(n | dataset [, opts]): opts.shuffle (false), opts.seed (0),
--- opts.drop_last (false), opts.rank, opts.world_size (default: this job's).
--- As torch's: the n indices (shuffled by seed + epoch when asked) are padded by
--- repeating the first ones to a multiple of the world size (or cut with drop_last), and
--- rank r takes every world-th one from r + 1.  Indices are 1-based.
function D.DistributedSampler(data, opts)
  opts = opts or {}
  local n = type(data) == "number" and data or (type(data) == "table" and #data)
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then
    argerr("DistributedSampler", 1, "dataset size or a list", data)
  end
  local world = opts.world_size or (C.is_initialized() and C.world_size() or 1)
  local rank = opts.rank or (C.is_initialized() and C.rank() or 0)
  if rank < 0 or rank >= world then
    error(("DistributedSampler: rank %d is out of range (world size %d)"):format(rank, world), 2)
  end
  return setmetatable({ n = n, world = world, rank = rank, shuffle = opts.shuffle or false,
    seed = opts.seed or 0, drop_last = opts.drop_last or false, epoch = 0 }, Sampler)
end

function Sampler:set_epoch(e) self.epoch = e end

-- Fisher-Yates on a small PRNG (xorshift) of seed + epoch, so every rank
-- draws the same permutation without communicating.
local function permutation(n, seed)
  local p = {}
  for i = 1, n do p[i] = i end
  local s = (seed * 2654435761 + 12345) % 4294967296
  if s == 0 then s = 88172645 end
  for i = n, 2, -1 do
    s = s ~ ((s << 13) & 0xffffffff); s = s ~ (s >> 17); s = s ~ ((s << 5) & 0xffffffff)
    local j = s % i + 1
    p[i], p[j] = p[j], p[i]
  end
  return p
end

--- sampler:indices() -> this rank's 1-based indices for the current epoch.
function Sampler:indices()
  local all = self.shuffle and permutation(self.n, self.seed + self.epoch) or nil
  local function at(i) return all and all[i] or i end
  local total
  if self.drop_last then
    total = self.n - self.n % self.world
  else
    total = math.ceil(self.n / self.world) * self.world
  end
  local out = {}
  for k = self.rank + 1, total, self.world do
    local i = k
    if i > self.n then i = (i - 1) % self.n + 1 end -- padding repeats from the start
    out[#out + 1] = at(i)
  end
  return out
end

function Sampler:__len() return #self:indices() end

--- sampler:iter(): for i in sampler:iter() do ... end
function Sampler:iter()
  local idx, k = self:indices(), 0
  return function()
    k = k + 1
    return idx[k]
  end
end

return D
