-- as.distributed in one process (no launcher: a world of one), the sampler's
-- split for any world, DDP and ring_attention reducing to one process.  The
-- multi-process runs are tests/dist/*.lua under mpirun (ctest -L dist).
local as = require "attnswap"
local U = require "spec_util"
local D = as.distributed

describe("as.distributed, one process", function()
  it("refuses collectives before init, naming the function", function()
    if D.is_initialized() then return end -- another spec of this run initialised it
    assert.matches("all_reduce: not initialised", U.errmsg(D.all_reduce, as.ones(2)))
    assert.matches("rank: not initialised", U.errmsg(D.rank))
    assert.is_true(D.is_main())
  end)

  it("is a world of one where every collective is the identity", function()
    D.init()
    assert.equals(0, D.rank())
    assert.equals(1, D.world_size())
    assert.equals(0, D.local_rank())
    assert.is_true(D.is_main())
    local t = as.randn(3, 4)
    local c = t:clone()
    assert.equals(0, U.maxdiff(D.all_reduce(t, "avg"), c))
    assert.equals(0, U.maxdiff(D.broadcast(t, 0), c))
    local g = D.all_gather(t)
    assert.equals(1, #g)
    assert.equals(0, U.maxdiff(g[1], c))
    assert.same({ 1, 3, 4 }, D.all_gather(t, { stacked = true }):shape())
    assert.equals(0, U.maxdiff(D.reduce_scatter(t), c))
    assert.equals(0, U.maxdiff(D.iall_reduce(t, "avg"):wait(), c))
    D.barrier()
  end)

  it("checks its arguments", function()
    D.init()
    assert.matches("broadcast: root rank 1 is out of range %(world size 1", U.errmsg(D.broadcast, as.ones(2), 1))
    assert.matches("send: dst rank 0 is this rank", U.errmsg(D.send, as.ones(2), 0))
    assert.matches("recv: src rank %-1 is out of range", U.errmsg(D.recv, as.ones(2), -1))
    assert.matches("unknown op 'mean2'", U.errmsg(D.all_reduce, as.ones(2), "mean2"))
    assert.matches("all_reduce: expected a float32.*got bool", U.errmsg(D.all_reduce, as.ones(2):bool()))
    assert.matches("avg needs a floating%-point tensor, got int64", U.errmsg(D.all_reduce, as.ones(2):long(), "avg"))
    assert.matches("bad argument #1 to 'all_reduce'", U.errmsg(D.all_reduce, 3))
    assert.matches("timeout: expected a number", U.errmsg(D.barrier, { timeout = "x" }))
  end)

  it("splits a dataset across ranks as torch's DistributedSampler does", function()
    -- 10 items on 3 ranks: padded to 12 by repeating the first ones
    local got = {}
    for r = 0, 2 do got[r + 1] = D.DistributedSampler(10, { rank = r, world_size = 3 }):indices() end
    assert.same({ 1, 4, 7, 10 }, got[1])
    assert.same({ 2, 5, 8, 1 }, got[2])
    assert.same({ 3, 6, 9, 2 }, got[3])
    assert.same({ 1, 4, 7 }, D.DistributedSampler(10, { rank = 0, world_size = 3, drop_last = true }):indices())
    -- shuffled: every rank draws the same permutation; their shares cover the data once
    local seen = {}
    for r = 0, 1 do
      local s = D.DistributedSampler(9, { rank = r, world_size = 3, shuffle = true, seed = 5 })
      s:set_epoch(2)
      for _, i in ipairs(s:indices()) do seen[#seen + 1] = i end
    end
    local s2 = D.DistributedSampler(9, { rank = 2, world_size = 3, shuffle = true, seed = 5 })
    s2:set_epoch(2)
    for i in s2:iter() do seen[#seen + 1] = i end
    table.sort(seen)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, seen)
    local a = D.DistributedSampler(9, { rank = 0, world_size = 3, shuffle = true, seed = 5 }):indices()
    assert.are_not.same({ 1, 4, 7 }, a) -- shuffled (this seed moves rank 0's share)
    assert.matches("rank 3 is out of range", U.errmsg(D.DistributedSampler, 4, { rank = 3, world_size = 3 }))
  end)

  it("DistributedDataParallel in one process leaves the gradients as they are", function()
    D.init()
    as.manual_seed(1)
    local m = as.nn.Linear(4, 3)
    m:requires_grad_(true)
    local ddp = as.nn.parallel.DistributedDataParallel(m)
    local x = as.randn(5, 4)
    ddp(x):pow(2):sum():backward()
    local g = m.weight.grad:clone()
    assert.equals(1, ddp:sync_grads())
    assert.equals(1, ddp.in_flight) -- started by the hooks, in the backward
    assert.equals(0, U.maxdiff(m.weight.grad, g))
    assert.matches("module expected", U.errmsg(as.nn.parallel.DistributedDataParallel, 3))
  end)

  it("ring_attention in one process is flash attention", function()
    D.init()
    local R = require "attnswap.attention.ring_attention"
    for _, causal in ipairs({ false, true }) do
      local q, k, v = as.randn(2, 4, 6, 8), as.randn(2, 2, 6, 8), as.randn(2, 2, 6, 8)
      local want = as.core.flash_attention(q, k, v, nil, { causal = causal })
      assert.is_true(U.maxdiff(R({ causal = causal })(q, k, v), want) < 1e-5)
      -- and trains as flash attention does
      local G = as.randn(2, 4, 6, 8)
      local ins = {}
      for i, t in ipairs({ q, k, v }) do ins[i] = t:detach():requires_grad_() end
      ;(R({ causal = causal })(ins[1], ins[2], ins[3]) * G):sum():backward()
      for _, t in ipairs({ q, k, v }) do t:requires_grad_() end
      ;(as.core.flash_attention(q, k, v, nil, { causal = causal }) * G):sum():backward()
      for i, t in ipairs({ q, k, v }) do assert.is_true(U.maxdiff(ins[i].grad, t.grad) < 1e-4) end
    end
    assert.matches("masks are not supported", U.errmsg(R(), as.randn(1, 1, 2, 2), as.randn(1, 1, 2, 2),
      as.randn(1, 1, 2, 2), as.ones(2, 2):bool()))
  end)
end)
