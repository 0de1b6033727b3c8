-- DistributedDataParallel on 2 ranks: gradients after sync_grads equal one
-- process's gradients on the concatenated batch; three SGD steps keep the
-- replicas equal to the one-process trajectory; the sampler splits the data;
-- a checkpoint is written by rank 0 only.
local as = require "attnswap"
local D = as.distributed.init({ timeout = 60 })
local rank, world = D.rank(), D.world_size()
local function check(cond, msg) if not cond then error(("rank %d: %s"):format(rank, msg), 2) end end
local function maxdiff(a, b) return (a - b):abs():max():item() end

local function make_model(seed)
  as.manual_seed(seed)
  local m = as.nn.Sequential(as.nn.Linear(5, 7), as.nn.Tanh(), as.nn.Linear(7, 3))
  m:requires_grad_(true)
  return m
end
-- ranks start from different weights: the wrap makes them rank 0's
local model = make_model(100 + rank)
local ddp = as.nn.parallel.DistributedDataParallel(model, { bucket_mb = 0.0001 }) -- several buckets
local ref = make_model(100) -- one process, rank 0's start

as.manual_seed(7)
local N = 10
local X, Y = as.randn(N, 5), as.randn(N, 3)
local sampler = D.DistributedSampler(N)
local idx = sampler:indices()
check(#idx == N // world, "sampler share " .. #idx)
local all = D.all_gather(as.tensor(idx):long(), { stacked = true }):reshape(-1):tolist()
table.sort(all)
for i = 1, N do check(all[i] == i, "sampler: every index once") end
local ids = as.tensor(idx):long() - 1
local xs, ys = X:index_select(1, ids + 1), Y:index_select(1, ids + 1)

local lr = 0.1
for step = 1, 3 do
  model:zero_grad(); ref:zero_grad()
  local loss = as.F.mse_loss(ddp(xs), ys)
  loss:backward()
  local nmsg = ddp:sync_grads()
  check(nmsg > 1, "expected several buckets, got " .. nmsg)
  local rloss = as.F.mse_loss(ref(X), Y)
  rloss:backward()
  local global = D.all_reduce(loss:detach():clone(), "avg"):item()
  check(math.abs(global - rloss:item()) < 1e-5, ("step %d loss %g vs %g"):format(step, global, rloss:item()))
  local p, q = model:parameters(), ref:parameters()
  for i = 1, #p do
    local d = maxdiff(p[i].grad, q[i].grad)
    check(d < 1e-5, ("step %d param %d grad differs by %g"):format(step, i, d))
  end
  as.no_grad(function()
    for i = 1, #p do p[i]:sub_(p[i].grad * lr); q[i]:sub_(q[i].grad * lr) end
  end)
end
for i, p in ipairs(model:parameters()) do
  check(maxdiff(p, ref:parameters()[i]) < 1e-5, "parameters drifted from one process's")
end

local path = os.getenv("TMPDIR") or "/tmp"
path = ("%s/attnswap_ddp_%s.safetensors"):format(path, os.getenv("OMPI_COMM_WORLD_JOBID") or "x")
if D.is_main() then as.save(path, model:state_dict()) end
D.barrier()
local loaded = as.load(path)
check(maxdiff(loaded["0.weight"], model:parameters()[1]) == 0, "checkpoint")
D.barrier()
if D.is_main() then os.remove(path) end
print(("ddp ok on rank %d of %d"):format(rank, world))

-- the overlap: each bucket's all-reduce starts in the backward, from the
-- parameters' post-accumulate-grad hooks; with it and without it (overlap =
-- false, and after remove_hooks) the gradients equal one process's on the
-- whole batch.  A second backward before sync_grads (accumulation) falls back
-- to reducing the sums after it.
local function grads_match(m, r, what)
  local p, q = m:parameters(), r:parameters()
  for i = 1, #p do
    local d = maxdiff(p[i].grad, q[i].grad)
    check(d < 1e-5, ("%s: param %d grad differs by %g"):format(what, i, d))
  end
end
for _, mode in ipairs({ "overlap", "off", "removed", "twice" }) do
  local m = make_model(300 + rank)
  local d = as.nn.parallel.DistributedDataParallel(m, { bucket_mb = 0.0001, overlap = mode ~= "off" })
  if mode == "removed" then d:remove_hooks() end
  local r = make_model(300)
  local passes = mode == "twice" and 2 or 1
  for _ = 1, passes do
    as.F.mse_loss(d(xs), ys):backward()
    as.F.mse_loss(r(X), Y):backward()
  end
  local nmsg = d:sync_grads()
  local want = mode == "overlap" and nmsg or 0
  check(d.in_flight == want, ("%s: %d of %d buckets in flight, expected %d"):format(mode, d.in_flight, nmsg, want))
  grads_match(m, r, mode)
  -- the next round reuses the hooks: in flight again, still exact
  m:zero_grad(); r:zero_grad()
  as.F.mse_loss(d(xs), ys):backward()
  as.F.mse_loss(r(X), Y):backward()
  d:sync_grads()
  check(d.in_flight == (mode == "off" or mode == "removed") and 0 or nmsg, mode .. ": second round in flight")
  grads_match(m, r, mode .. " (second round)")
end
print(("ddp overlap ok on rank %d of %d"):format(rank, world))
