-- local_attention and sparse_attention keep their cost class under autograd
-- (issue 17): the composite (attention/blocked.lua) gathers each query
-- chunk's band, or each query block's kept key blocks, and runs flash on
-- those alone, so forward and backward are O(L W D), never an (Lq, Lk)
-- tensor.  Checked against the fused C kernel (forward) and against the
-- dense composite, flash over all keys with an (Lq, Lk) keep-mask
-- (blocked.dense = true): forward and the gradients of q, k, v and an
-- additive mask, float32, odd shapes.  "the checks can fail" shows each
-- comparison catches a wrong answer.
local as = require "attnswap"
local core = require "attnswap.core"
local P = require "attnswap.attention.ops_path"
local BL = require "attnswap.attention.blocked"

local NEG_INF = -math.huge
local B, H, D, DV = 2, 4, 8, 6

local function reset()
  P.force, BL.dense, BL.local_chunk, BL.local_narrow = false, false, nil, false
end

local narrow = false -- the composite runs with blocked.local_narrow = narrow

local function maxabs(t) return t:numel() == 0 and 0 or t:abs():max():item() end

-- a equals b within tol * max(1, |b|) (float32: different tile orders)
local function close(a, b, what, tol)
  assert(a ~= nil and b ~= nil, what .. ": a gradient is missing")
  assert.same(tostring(b:shape()), tostring(a:shape()), what)
  local d = maxabs(a:float() - b:float())
  local lim = (tol or 1e-4) * math.max(1, maxabs(b:float()))
  assert(d <= lim, string.format("%s: max abs diff %g > %g", what, d, lim))
  assert(a:ne(a):sum():item() == 0, what .. ": NaN")
end

-- The fused C kernel: inference, no gradient.
local function fused(c, q, k, v, mask)
  reset()
  return as.no_grad(function() return c(q, k, v, mask) end)
end

-- The composite with gradients: out and {q, k, v, mask} gradients of
-- sum(out * w), blocked or dense.
local function composite(dense, c, q, k, v, mask, w)
  reset()
  P.force, BL.dense, BL.local_narrow = true, dense, narrow
  local xs = { q:clone(), k:clone(), v:clone() }
  if mask ~= nil and mask:dtype() ~= "bool" then xs[4] = mask:clone() end
  for _, x in ipairs(xs) do x:requires_grad_() end
  local ok, out = pcall(c, xs[1], xs[2], xs[3], xs[4] or mask)
  if ok then ok, out = pcall(function() (out * w):sum():backward(); return out end) end
  reset()
  if not ok then error(out, 0) end
  return out:detach(), { xs[1].grad, xs[2].grad, xs[3].grad, xs[4] and xs[4].grad }
end

local NAMES = { "q", "k", "v", "mask" }

-- the three agree: fused = blocked = dense forward, blocked = dense gradients
local function agree(c, q, k, v, mask, what)
  local w = as.randn(B, H, q:size(3), DV)
  local ref = fused(c, q, k, v, mask)
  local outb, gb = composite(false, c, q, k, v, mask, w)
  local outd, gd = composite(true, c, q, k, v, mask, w)
  close(outb, ref, what .. ": blocked forward vs fused kernel")
  close(outb, outd, what .. ": blocked forward vs dense composite")
  local additive = mask ~= nil and mask:dtype() ~= "bool"
  for i = 1, additive and 4 or 3 do close(gb[i], gd[i], what .. ": d" .. NAMES[i] .. " blocked vs dense") end
end

local function problem(seed, Lq, Lk, Hkv)
  as.manual_seed(seed)
  return as.randn(B, H, Lq, D), as.randn(B, Hkv, Lk, D), as.randn(B, Hkv, Lk, DV)
end

-- no mask, and masks of several broadcast shapes, each with a row that sees nothing
local function masks(Lq, Lk)
  local keep = as.rand(B, 1, Lq, Lk):gt(0.3)
  keep[1][1][math.min(2, Lq)] = false
  local pad = as.ones(B, 1, 1, Lk, "bool")
  pad[2][1][1][Lk] = false
  local bias = as.randn(Lq, Lk) * 0.5
  bias[Lq] = NEG_INF
  return {
    { "no mask", nil },
    { "bool (B, 1, Lq, Lk)", keep },
    { "bool key padding (B, 1, 1, Lk)", pad },
    { "additive (Lq, Lk), a -inf row", bias },
    { "additive (1, H, 1, Lk)", as.randn(1, H, 1, Lk) },
    { "additive (B, H, Lq, Lk)", as.randn(B, H, Lq, Lk) },
  }
end

-- {Lq, Lk, Hkv}: Lq = Lk, Lq < Lk (a KV cache), Lq > Lk, GQA and multi-query
local SHAPES = {
  { 1, 1, 4 }, { 1, 300, 2 }, { 7, 7, 2 }, { 5, 11, 1 }, { 13, 9, 2 }, { 64, 64, 4 },
  { 65, 130, 2 }, { 200, 150, 1 }, { 300, 300, 2 },
}

describe("local_attention's composite is banded", function()
  after_each(reset)

  for _, sh in ipairs(SHAPES) do
    it(string.format("equals the kernel and the dense composite: Lq %d, Lk %d, Hkv %d", sh[1], sh[2], sh[3]),
      function()
        local q, k, v = problem(sh[1] * 7 + sh[2], sh[1], sh[2], sh[3])
        local ms = masks(sh[1], sh[2])
        for _, w in ipairs { 1, 3, 64 } do
          for _, causal in ipairs { false, true } do
            local c = as.attention.new("local_attention", { window_size = w, causal = causal })
            for _, m in ipairs(ms) do
              agree(c, q, k, v, m[2], string.format("w %d causal %s %s", w, causal, m[1]))
            end
          end
        end
      end)
  end

  it("chunk by chunk on narrowed views (blocked.local_narrow) too", function()
    narrow = true
    local ok, err = pcall(function()
      for _, sh in ipairs { { 1, 300, 2 }, { 13, 9, 2 }, { 65, 130, 2 }, { 200, 150, 1 } } do
        local q, k, v = problem(sh[1] + sh[2], sh[1], sh[2], sh[3])
        for _, w in ipairs { 1, 64 } do
          for _, causal in ipairs { false, true } do
            local c = as.attention.new("local_attention", { window_size = w, causal = causal })
            for _, m in ipairs(masks(sh[1], sh[2])) do
              agree(c, q, k, v, m[2], string.format("narrow: Lq %d Lk %d w %d causal %s %s", sh[1], sh[2], w,
                causal, m[1]))
            end
          end
        end
      end
    end)
    narrow = false
    if not ok then error(err, 0) end
  end)

  it("gives the same for any chunk size", function()
    local q, k, v = problem(3, 37, 41, 2)
    local c = as.attention.new("local_attention", { window_size = 5, causal = true })
    local ref = fused(c, q, k, v)
    for _, ch in ipairs { 1, 2, 5, 16, 37, 100 } do
      BL.local_chunk = ch
      P.force = true
      close(c(q, k, v), ref, "chunk " .. ch)
    end
  end)
end)

local PT = as.patterns

-- layouts (as options) for Lq, Lk: block and element, shared and per head,
-- read from Lk rows, one with a query block that keeps nothing
local function layouts(Lq, Lk)
  local out = {
    { "random elements, b 8, causal", { layout = function(lq, lk) return as.rand(lq, lk):gt(0.6) end,
      block_size = 8, causal = true } },
    { "random elements per head, b 16", { layout = function(lq, lk) return as.rand(H, lq, lk):gt(0.7) end,
      block_size = 16 } },
  }
  if Lk >= Lq then -- the default layout and local_1d have Lk rows
    out[#out + 1] = { "default layout, b 32", { block_size = 32 } }
    out[#out + 1] = { "default layout, b 4, causal", { block_size = 4, causal = true } }
    out[#out + 1] = { "elements from Lk rows, b 5",
      { layout = function(_, lk) return PT.local_1d(lk, 3) end, block_size = 5 } }
  end
  local bs = 8
  local nq, nk = (Lq + bs - 1) // bs, (Lk + bs - 1) // bs
  local blocks = as.rand(H, nq, nk):gt(0.5)
  blocks[1][1] = false -- head 1's first query block sees nothing
  out[#out + 1] = { "random blocks per head, b 8, a block row empty", { layout = blocks, block_size = bs } }
  local one = as.rand(nq, nk):gt(0.4)
  out[#out + 1] = { "random blocks, b 8, causal", { layout = one, block_size = bs, causal = true } }
  return out
end

describe("sparse_attention's composite is block-sparse", function()
  after_each(reset)

  for _, sh in ipairs(SHAPES) do
    it(string.format("equals the kernel and the dense composite: Lq %d, Lk %d, Hkv %d", sh[1], sh[2], sh[3]),
      function()
        local q, k, v = problem(sh[1] * 5 + sh[2], sh[1], sh[2], sh[3])
        local ms = masks(sh[1], sh[2])
        as.manual_seed(sh[1] + sh[2])
        for _, lay in ipairs(layouts(sh[1], sh[2])) do
          local c = as.attention.new("sparse_attention", lay[2])
          for _, m in ipairs(ms) do agree(c, q, k, v, m[2], lay[1] .. ", " .. m[1]) end
        end
      end)
  end

  it("takes a block layout of Lk rows for a KV-cache step", function()
    local q, k, v = problem(9, 3, 40, 2)
    local lay = PT.to_blocks(PT.local_1d(40, 4), 8)
    agree(as.attention.new("sparse_attention", { layout = lay, block_size = 8, causal = true }), q, k, v, nil,
      "(5, 5) blocks, Lq 3, Lk 40")
  end)
end)

-- Every flash call the composite makes, by its shapes.
local function spy(fn)
  local calls, orig = {}, P.flash
  P.flash = function(q, k, v, mask, ...)
    calls[#calls + 1] = { rows = q:size(1) * q:size(3), Lk = k:size(3), mask = mask and mask:numel() or 0 }
    return orig(q, k, v, mask, ...)
  end
  local ok, err = pcall(fn)
  P.flash = orig
  if not ok then error(err, 0) end
  return calls
end

-- extra bytes of tensor storage at the peak of fn()
local function peak_bytes(fn)
  core.reset_peak_memory()
  local base = core.memory_stats().allocated
  fn()
  return core.memory_stats().peak - base
end

local function train_step(c, q, k, v)
  local xs = { q:clone():requires_grad_(), k:clone():requires_grad_(), v:clone():requires_grad_() }
  c(xs[1], xs[2], xs[3]):sum():backward()
end

describe("the cost class", function()
  after_each(reset)

  it("local: every flash call sees c + 2w keys, no mask of Lq x Lk", function()
    local L, w = 1000, 16
    local q, k, v = problem(1, L, L, 2)
    local c = as.attention.new("local_attention", { window_size = w })
    P.force = true
    local calls = spy(function() c(q, k, v) end)
    assert.equal(1, #calls)
    local ch = math.max(w, BL.LOCAL_ROWS)
    assert.equal(ch + 2 * w, calls[1].Lk)
    assert(calls[1].mask < L * L, "a mask of " .. calls[1].mask .. " elements")
  end)

  it("sparse: the flash calls see the kept blocks only", function()
    local L, bs = 1024, 32
    local q, k, v = problem(2, L, L, 4)
    -- the default layout: own block, its neighbours, block 0, and block 0
    -- sees all (global)
    local c = as.attention.new("sparse_attention", { block_size = bs })
    P.force = true
    local calls = spy(function() c(q, k, v) end)
    local pairs_ = 0
    for _, call in ipairs(calls) do pairs_ = pairs_ + call.rows * call.Lk end
    local nnz = c:layout_for(q, k):float():sum():item() * bs * bs
    assert.equal(nnz, pairs_)
    assert(pairs_ < L * L / 4, pairs_ .. " (query, key) pairs")
    assert(#calls <= 4, #calls .. " flash calls") -- m = 2, 3, 4 and the global row's L / bs
  end)

  it("forward + backward memory is O(L w), where the dense composite's is O(L^2)", function()
    local L, w = 4096, 16
    local q, k, v = problem(3, L, L, 1)
    q, k, v = q:narrow(1, 1, 1):narrow(2, 1, 1):contiguous(), k:narrow(1, 1, 1):contiguous(), v:narrow(1, 1, 1):contiguous()
    local c = as.attention.new("local_attention", { window_size = w, causal = true })
    P.force = true
    train_step(c, q, k, v) -- the plan, made once
    local blocked = peak_bytes(function() train_step(c, q, k, v) end)
    BL.dense = true
    local dense = peak_bytes(function() train_step(c, q, k, v) end)
    assert(dense >= L * L, "dense composite: " .. dense .. " bytes") -- its (L, L) bool mask
    assert(blocked < L * L / 4, "blocked composite: " .. blocked .. " bytes")
  end)

  it("dropout in training takes the dense composite (the flash hash of the whole call)", function()
    local q, k, v = problem(4, 50, 50, 2)
    for name, opts in pairs { local_attention = { dropout = 0.3, window_size = 4 },
      sparse_attention = { dropout = 0.3, block_size = 8 } } do
      local c = as.attention.new(name, opts)
      c:train()
      P.force = true
      as.manual_seed(11)
      local calls = spy(function() c(q, k, v) end)
      as.manual_seed(11)
      local a = c(q, k, v)
      BL.dense = true
      as.manual_seed(11)
      local b = c(q, k, v)
      assert.equal(1, #calls)
      assert.equal(50 * 50, calls[1].mask, name .. ": the dense (Lq, Lk) keep-mask")
      close(a, b, name .. ": dropout")
      reset()
    end
  end)
end)

describe("the checks can fail", function()
  after_each(reset)

  it("a band one key too wide fails the forward checks", function()
    local q, k, v = problem(5, 40, 40, 2)
    local c = as.attention.new("local_attention", { window_size = 3 })
    local wide = as.attention.new("local_attention", { window_size = 4 })
    local ref = fused(c, q, k, v)
    local w = as.randn(B, H, 40, DV)
    local out = composite(false, wide, q, k, v, nil, w)
    assert.has_error(function() close(out, ref, "forward") end)
  end)

  it("a q gradient off by 5% of dout fails the gradient check, the forward unchanged", function()
    local q, k, v = problem(6, 40, 40, 2)
    local c = as.attention.new("local_attention", { window_size = 3 })
    local attend = BL.attend
    BL.attend = function(q_, ...)
      local out = attend(q_, ...)
      local x = q_:narrow(4, 1, DV)
      return out + (x - x:detach()) * 0.05
    end
    local ok, err = pcall(agree, c, q, k, v, nil, "broken")
    BL.attend = attend
    assert.is_false(ok)
    assert.truthy(tostring(err):find("dq blocked vs dense", 1, true), tostring(err))
  end)

  it("a mask gradient left out fails the gradient check", function()
    local q, k, v = problem(7, 30, 30, 2)
    local c = as.attention.new("sparse_attention", { block_size = 4 })
    local attend = BL.attend
    BL.attend = function(q_, k_, v_, m4, ...) return attend(q_, k_, v_, m4 and m4:detach(), ...) end
    local ok, err = pcall(agree, c, q, k, v, as.randn(30, 30), "broken")
    BL.attend = attend
    assert.is_false(ok)
    assert.truthy(tostring(err):find("dmask", 1, true), tostring(err))
  end)

  it("the dense composite fails the cost checks", function()
    local q, k, v = problem(8, 1000, 1000, 2)
    local c = as.attention.new("local_attention", { window_size = 16 })
    P.force, BL.dense = true, true
    local calls = spy(function() c(q, k, v) end)
    assert.equal(1000, calls[1].Lk)
    assert.equal(1000 * 1000, calls[1].mask)
  end)
end)

describe("dynamic_attention's selection (core.topk_keep)", function()
  -- a reference in Lua: each row's k largest, ties to the lower index, -inf never
  local function reference(rows, k)
    local out = {}
    for r, row in ipairs(rows) do
      local order = {}
      for j, x in ipairs(row) do if x ~= -math.huge then order[#order + 1] = j end end
      table.sort(order, function(a, b) return row[a] > row[b] or (row[a] == row[b] and a < b) end)
      out[r] = {}
      for j = 1, #row do out[r][j] = false end
      for t = 1, math.min(k, #order) do out[r][order[t]] = true end
    end
    return out
  end

  it("keeps each row's k largest with the kernel's rules: ties to the lower index, -inf never", function()
    as.manual_seed(12)
    for _, case in ipairs { { 7, 40, 5 }, { 3, 17, 16 }, { 4, 33, 1 }, { 2, 9, 20 } } do
      local R, n, k = table.unpack(case)
      local rows = {}
      for r = 1, R do
        rows[r] = {}
        for j = 1, n do
          local u = math.random()
          rows[r][j] = u < 0.15 and -math.huge or math.random(-3, 3) * 0.5 -- many ties
        end
      end
      rows[1] = {}
      for j = 1, n do rows[1][j] = j <= 2 and 1.0 or -math.huge end -- fewer visible keys than k
      local got = as.core.topk_keep(as.tensor(rows), k):tolist()
      assert.are.same(reference(rows, k), got)
    end
    -- not float32 on the CPU: nil, the composite's own walk takes over
    assert.is_nil(as.core.topk_keep(as.randn(2, 5):double(), 2))
  end)

  it("the composite's gradient through it equals the walk's", function()
    local C = require "attnswap.core"
    local real = C.topk_keep
    local function grads(use_kernel)
      C.topk_keep = use_kernel and real or function() return nil end
      as.manual_seed(13)
      local core = as.attention.new("dynamic_attention", { top_k = 5 })
      local q, k, v = as.randn(1, 2, 23, 8):requires_grad_(), as.randn(1, 2, 23, 8):requires_grad_(), as.randn(1, 2, 23, 8):requires_grad_()
      local out = core(q, k, v)
      out:sum():backward()
      return out, q.grad, k.grad, v.grad
    end
    local a = { grads(true) }
    local b = { grads(false) }
    C.topk_keep = real
    for i = 1, 4 do assert.is_true((a[i] - b[i]):abs():max():item() < 1e-6) end
  end)
end)

describe("entmax_attention's support on the CPU (core.entmax)", function()
  it("float32 equals float64 (both through the row kernel, float32 and double), values and gradients", function()
    for _, alpha in ipairs { 1.5, 2 } do
      local function run(dtype)
        as.manual_seed(21)
        local core_ = as.attention.new("entmax_attention", { alpha = alpha, causal = true })
        local q, k, v = as.randn(2, 3, 29, 8), as.randn(2, 3, 29, 8), as.randn(2, 3, 29, 8)
        local mask = as.rand(2, 1, 29, 29):lt(0.8)
        q, k, v = q:to(dtype):requires_grad_(), k:to(dtype):requires_grad_(), v:to(dtype):requires_grad_()
        local out = core_(q, k, v, mask)
        ;(out * out):sum():backward()
        return out:double(), q.grad:double(), k.grad:double(), v.grad:double()
      end
      local a, b = { run("float32") }, { run("float64") }
      for i = 1, 4 do
        local d = (a[i] - b[i]):abs():max():item()
        assert.is_true(d < 2e-4 * math.max(1, b[i]:abs():max():item()), string.format("alpha %g, %d: %.3g", alpha, i, d))
      end
    end
  end)
end)
