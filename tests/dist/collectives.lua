-- Every collective on 2 ranks against the result one process computes from
-- all the ranks' inputs (each rank can rebuild any rank's input: seeded by
-- that rank's number).  dtypes float32/float16/bfloat16/int64/int32,
-- non-contiguous tensors, every reduction op; and the errors.
local as = require "attnswap"
local D = as.distributed.init({ timeout = 60 })
local rank, W = D.rank(), D.world_size()
local function check(cond, msg) if not cond then error(("rank %d: %s"):format(rank, msg), 2) end end
local function same(a, b, what)
  check(a:dtype() == b:dtype(), ("%s: dtype %s vs %s"):format(what, a:dtype(), b:dtype()))
  check(tostring(a:shape()) == tostring(b:shape()), ("%s: shape %s vs %s"):format(what, a:shape(), b:shape()))
  local d = (a:float() - b:float()):abs():max():item()
  check(d == 0, ("%s: differs by %g"):format(what, d))
end
check(W == 2, "these tests run on 2 ranks")
check(D.local_rank() == rank, "local rank on one machine")
local backend = D.backend()
check(backend == "mpi", "backend " .. tostring(backend))

-- rank r's input: small integers (exact in every dtype and under prod)
local function input(r, shape, dtype)
  as.manual_seed(1000 + r)
  return ((as.rand(shape) * 6):long() - 3):to(dtype)
end
local function fold(op, a, b)
  if op == "sum" or op == "avg" then return a + b end
  if op == "max" then return a:maximum(b) end
  if op == "min" then return a:minimum(b) end
  return a * b
end

for _, dt in ipairs({ "float32", "float16", "bfloat16", "int64", "int32" }) do
  for _, op in ipairs({ "sum", "avg", "max", "min", "prod" }) do
    if not (op == "avg" and dt:find("int")) then
      local shape = { 3, 5 }
      local want = input(0, shape, "float32")
      for r = 1, W - 1 do want = fold(op, want, input(r, shape, "float32")) end
      if op == "avg" then want = want / W end
      local t = input(rank, shape, dt)
      D.all_reduce(t, op)
      same(t, want:to(dt), ("all_reduce %s %s"):format(dt, op))
    end
  end
end
check(not pcall(D.all_reduce, as.ones(3):long(), "avg"), "avg of int64 is an error")

-- non-contiguous, written back in place
local base = input(rank, { 4, 6 }, "float32")
local view = base:t()
D.all_reduce(view, "sum")
same(base, input(0, { 4, 6 }, "float32") + input(1, { 4, 6 }, "float32"), "all_reduce of a transposed view")

-- broadcast from rank 1, non-contiguous
local b = input(rank, { 3, 4 }, "float32"):narrow(2, 2, 2)
D.broadcast(b, 1)
same(b, input(1, { 3, 4 }, "float32"):narrow(2, 2, 2), "broadcast root 1")
local bh = input(rank, { 7 }, "bfloat16")
D.broadcast(bh, 0)
same(bh, input(0, { 7 }, "bfloat16"), "broadcast bfloat16")

-- all_gather: a list and stacked
local list = D.all_gather(input(rank, { 2, 3 }, "int32"))
check(#list == W, "all_gather list length")
for r = 0, W - 1 do same(list[r + 1], input(r, { 2, 3 }, "int32"), "all_gather rank " .. r) end
local st = D.all_gather(input(rank, { 5 }, "float16"), { stacked = true })
same(st, as.stack({ input(0, { 5 }, "float16"), input(1, { 5 }, "float16") }, 1), "all_gather stacked")

-- reduce_scatter: rows of the sum
local rs = D.reduce_scatter(input(rank, { 4, 3 }, "float32"), "sum")
local total = input(0, { 4, 3 }, "float32") + input(1, { 4, 3 }, "float32")
same(rs, total:narrow(1, rank * 2 + 1, 2), "reduce_scatter")
local rsl = D.reduce_scatter({ input(rank, { 3 }, "float32"), input(rank + 10, { 3 }, "float32") }, "max")
local wl = rank == 0 and input(0, { 3 }, "float32"):maximum(input(1, { 3 }, "float32"))
  or input(10, { 3 }, "float32"):maximum(input(11, { 3 }, "float32"))
same(rsl, wl, "reduce_scatter of a list")
local ok, err = pcall(D.reduce_scatter, as.ones(3), "sum")
check(not ok and err:find("multiple of the world size 2"), "reduce_scatter odd rows: " .. tostring(err))

-- send / recv / sendrecv
local other = 1 - rank
if rank == 0 then
  D.send(input(0, { 2, 2 }, "float32"):t(), 1, 3)
else
  local r = D.recv(as.zeros(2, 2), 0, 3)
  same(r, input(0, { 2, 2 }, "float32"):t(), "send/recv")
end
local got = D.sendrecv(input(rank, { 6 }, "int64"), other, as.zeros({ 6 }, "int64"), other, 4)
same(got, input(other, { 6 }, "int64"), "sendrecv")

-- isendrecv: in flight while this rank computes, then waited
local req = D.isendrecv(input(rank, { 3, 4 }, "float32"), other, as.zeros(3, 4), other, 6)
local busy = as.randn(64, 64):matmul(as.randn(64, 64)) -- work while the transfer runs
check(busy:numel() == 4096, "busy")
same(req:wait(), input(other, { 3, 4 }, "float32"), "isendrecv")
-- same element count, other shape: the header says so at the wait (a longer
-- message than the buffer would be MPI's truncation error, which ends the job)
local shp = rank == 0 and { 2, 3 } or { 3, 2 }
local bad = D.isendrecv(as.zeros(shp), other, as.zeros(shp), other, 7)
ok, err = pcall(bad.wait, bad)
check(not ok and err:find("isendrecv: mismatched shapes: rank " .. rank), "isendrecv mismatch: " .. tostring(err))

-- errors: they name the function and what came
ok, err = pcall(D.all_reduce, as.zeros(rank + 2))
check(not ok and err:find("all_reduce: mismatched shapes") and err:find("rank " .. rank), "mismatch: " .. tostring(err))
ok, err = pcall(D.broadcast, as.zeros(2), 5)
check(not ok and err:find("root rank 5 is out of range"), "root range: " .. tostring(err))
ok, err = pcall(D.send, as.zeros(2), rank, 0)
check(not ok and err:find("is this rank"), "send to self: " .. tostring(err))
ok, err = pcall(D.all_reduce, as.zeros(2), "median")
check(not ok and err:find("unknown op 'median'"), "op name: " .. tostring(err))
if rank == 0 then
  D.send(as.zeros(2, 3), 1, 5)
else
  ok, err = pcall(D.recv, as.zeros(3, 2), 0, 5)
  check(not ok and err:find("mismatched shapes: rank 1 expects float32 %(3, 2%), rank 0 sent float32 %(2, 3%)"),
    "recv mismatch: " .. tostring(err))
end
-- the job goes on after those errors
local t = as.ones(2)
D.all_reduce(t)
same(t, as.full({ 2 }, 2), "after the errors")

-- iall_reduce: in flight (contiguous float32 / int64) and done at once
-- (non-contiguous, float16 staged) equal all_reduce; several in flight at a
-- time complete in any wait order
do
  local function input(r, shape, dtype)
    as.manual_seed(500 + r)
    return as.randn(table.unpack(shape)):mul(10):to(dtype)
  end
  for _, c in ipairs({ { "float32", "sum" }, { "float32", "avg" }, { "int64", "max" }, { "float16", "sum" },
    { "float32", "prod" } }) do
    local dtype, op = c[1], c[2]
    local want = D.all_reduce(input(rank, { 3, 5 }, dtype), op)
    local a = input(rank, { 3, 5 }, dtype)
    local nc = input(rank, { 3, 5 }, dtype):t():contiguous():t() -- non-contiguous: the blocking path
    local ra, rn = D.iall_reduce(a, op), D.iall_reduce(nc, op)
    same(rn:wait(), want, "iall_reduce non-contiguous " .. dtype .. " " .. op)
    same(ra:wait(), want, "iall_reduce " .. dtype .. " " .. op)
    same(ra:wait(), want, "a second wait")
  end
  local ok, err = pcall(D.iall_reduce, as.ones(2), "bogus")
  check(not ok and err:find("iall_reduce"), "bad op: " .. tostring(err))
  ok, err = pcall(D.iall_reduce, "x")
  check(not ok and err:find("iall_reduce"), "not a tensor: " .. tostring(err))
end
D.barrier({ timeout = 30 })
print(("collectives ok on rank %d"):format(rank))
D.finalize()
