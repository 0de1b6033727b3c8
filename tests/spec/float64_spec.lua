-- float64 on the CPU (issue 16, part B): every op forward in float64 against
-- a double-precision reference written here in Lua, on random odd shapes,
-- non-contiguous and broadcast operands and empty tensors, with tolerances
-- (1e-12 relative) that a float32 round trip anywhere would miss by 5 orders;
-- plus checks that only double precision passes.
local as = require "attnswap"
local U = require "spec_util"

local TOL = 1e-12

-- max |a - b| in float64 (spec_util's maxdiff compares in float32)
local function maxdiff64(a, b) return (a:double() - b:double()):abs():max():item() end

-- t's values, flat and row-major, whatever its strides.
local function vals(t)
  if t:numel() == 0 then return {} end
  if t:dim() == 0 then return { t:item() } end
  return t:reshape(t:numel()):tolist()
end

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

-- Asserts t is float64 of `shape` and within TOL (relative) of the flat list ref.
local function check(t, shape, ref, tol, what)
  tol = tol or TOL
  assert.are.equal("float64", t:dtype(), what)
  assert.are.same(shape, t:shape(), what)
  local got = vals(t)
  assert.are.equal(#ref, #got, what)
  for i = 1, #ref do
    local r, g = ref[i], got[i]
    local ok = (r ~= r and g ~= g) or r == g or math.abs(g - r) <= tol * (1 + math.abs(r))
    assert(ok, ("%s: element %d: got %.17g, expected %.17g"):format(what or "", i, g, r))
  end
end

-- The multi-index (0-based) of flat position i (1-based) in shape.
local function unflat(i, shape)
  local idx, rem = {}, i - 1
  for d = #shape, 1, -1 do
    idx[d] = rem % shape[d]
    rem = rem // shape[d]
  end
  return idx
end

local function flat(idx, shape)
  local k = 0
  for d = 1, #shape do k = k * shape[d] + idx[d] end
  return k + 1
end

-- NumPy broadcasting of two shapes, and the flat position in each operand.
local function bshape(a, b)
  local n, out = math.max(#a, #b), {}
  for d = 1, n do
    local x, y = a[#a - n + d] or 1, b[#b - n + d] or 1
    out[d] = x == 1 and y or x
  end
  return out
end

local function bpos(idx, out, shape)
  local sub = {}
  for d = 1, #shape do
    local o = #out - #shape + d
    sub[d] = shape[d] == 1 and 0 or idx[o]
  end
  return flat(sub, shape)
end

local function ref_binary(f, a, b)
  local sa, sb = a:shape(), b:shape()
  local va, vb, out = vals(a), vals(b), bshape(sa, sb)
  local r = {}
  for i = 1, numel(out) do
    local idx = unflat(i, out)
    r[i] = f(va[bpos(idx, out, sa)], vb[bpos(idx, out, sb)])
  end
  return out, r
end

-- A random float64 tensor of shape, made non-contiguous when asked
-- (a transposed copy of the transposed shape).
local function rnd(shape, noncontig)
  if noncontig and #shape >= 2 then
    local s = { table.unpack(shape) }
    s[#s], s[#s - 1] = s[#s - 1], s[#s]
    return as.randn(s, "float64"):transpose(-1, -2)
  end
  return as.randn(shape, "float64")
end

local function erf(x) -- Maclaurin series, |x| < 3 here: ~1e-13 absolute
  local s, term, n = 0, x, 0
  repeat
    local add = term / (2 * n + 1)
    s = s + add
    n = n + 1
    term = -term * x * x / n
  until math.abs(add) < 1e-17 * math.max(1, math.abs(s)) and n > 3
  return 2 / math.sqrt(math.pi) * s
end

local function tanh(x)
  if math.abs(x) < 1e-3 then return x - x ^ 3 / 3 + 2 * x ^ 5 / 15 end
  local e = math.exp(2 * x)
  return (e - 1) / (e + 1)
end

local function sigmoid(x) return 1 / (1 + math.exp(-x)) end

local UNARY = {
  neg = function(x) return -x end, abs = math.abs, exp = math.exp, tanh = tanh, sigmoid = sigmoid,
  relu = function(x) return x > 0 and x or 0 end, sin = math.sin, cos = math.cos,
  silu = function(x) return x * sigmoid(x) end,
  gelu = function(x) return 0.5 * x * (1 + erf(x / math.sqrt(2))) end,
}
local POSITIVE = { log = math.log, sqrt = math.sqrt, rsqrt = function(x) return 1 / math.sqrt(x) end }

local SHAPES = { { { 3, 5 }, { 3, 5 } }, { { 4, 1, 3 }, { 2, 1 } }, { { 7 }, { 2, 3, 7 } }, { { 0, 3 }, { 3 } },
  { { 5, 3 }, {} } }

describe("float64", function()
  before_each(function() as.manual_seed(11) end)

  it("is a dtype: names, sizes, promotion, conversions", function()
    assert.are.equal("float64", as.zeros({ 2 }, "double"):dtype())
    assert.are.equal("float64", as.tensor({ 1, 2 }, "float64"):dtype())
    assert.are.equal("float64", as.randn({ 3 }):double():dtype())
    assert.are.equal("float64", as.ones({ 3 }):to("float64"):dtype())
    assert.are.equal("float64", as.arange(5, "float64"):dtype())
    -- PyTorch's promotion: float64 wins over every other dtype
    local d = as.ones({ 2 }, "float64")
    for _, other in ipairs { "float32", "float16", "bfloat16", "int64", "int32", "bool" } do
      assert.are.equal("float64", (d + as.ones({ 2 }, other)):dtype(), other)
      assert.are.equal("float64", (as.ones({ 2 }, other) * d):dtype(), other)
    end
    assert.are.equal("float64", (as.ones({ 2 }, "int64") / d):dtype())
    assert.are.equal("bool", d:lt(as.ones({ 2 })):dtype())
    -- a value float32 cannot hold survives int64 -> float64 -> int64 and printing
    local big = as.tensor({ 2 ^ 53 - 1, -(2 ^ 40) - 3 }, "int64")
    assert.are.same(big:tolist(), big:double():long():tolist())
    assert.are.same({ 1 / 3 }, as.full({ 1 }, 1 / 3, "float64"):tolist())
    assert.are_not.equal(1 / 3, as.full({ 1 }, 1 / 3):double():item()) -- float32 rounds it
    assert.truthy(tostring(d):find("dtype=float64", 1, true))
    -- random draws use more than float32's 24 bits
    local u = as.rand({ 64 }, "float64")
    assert.is_true(maxdiff64(u, u:float()) > 0)
    local msg = U.errmsg(as.zeros, { 2 }, "float65")
    assert.truthy(msg:find("float64", 1, true), msg)
  end)

  it("copies, fills and views keep every bit", function()
    local x = rnd({ 3, 5 }, true)
    check(x:contiguous(), { 3, 5 }, vals(x), 0)
    check(x:clone(), { 3, 5 }, vals(x), 0)
    local y = as.zeros({ 5, 3 }, "float64")
    y:copy_(x:t())
    check(y, { 5, 3 }, vals(x:t()), 0)
    y:fill_(math.pi)
    assert.are.equal(math.pi, y[1][1])
    check(x:narrow(2, 2, 3):select(1, 2), { 3 }, { vals(x)[7], vals(x)[8], vals(x)[9] }, 0)
    -- float64 -> float32 rounds, once
    assert.are.equal("float32", x:float():dtype())
    assert.is_true(maxdiff64(x, x:float()) > 0)
  end)

  it("binary ops with broadcasting, non-contiguous and empty operands", function()
    local ops = {
      add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
      mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
      maximum = math.max, minimum = math.min,
    }
    for _, sh in ipairs(SHAPES) do
      local a, b = rnd(sh[1], true), rnd(sh[2], true)
      for name, f in pairs(ops) do
        local shape, ref = ref_binary(f, a, b)
        check(a[name](a, b), shape, ref, TOL, name)
      end
      local p = a:abs() + 0.5
      local shape, ref = ref_binary(function(x, y) return x ^ y end, p, b)
      check(p:pow(b), shape, ref, TOL, "pow")
      local cshape, cref = ref_binary(function(x, y) return x < y end, a, b)
      assert.are.same(cshape, a:lt(b):shape())
      local got = vals(a:lt(b))
      for i = 1, #cref do assert.are.equal(cref[i], got[i]) end
    end
    -- scalars keep float64
    local a = rnd({ 3, 4 })
    check(a * (1 / 3) + 2, { 3, 4 }, (function()
      local r = {}
      for i, v in ipairs(vals(a)) do r[i] = v * (1 / 3) + 2 end
      return r
    end)(), TOL, "scalar")
  end)

  it("unary ops, clamp and where", function()
    for _, shape in ipairs { { 3, 7 }, { 2, 3, 5 }, { 0, 4 } } do
      local x = rnd(shape, true)
      for name, f in pairs(UNARY) do
        local ref = {}
        for i, v in ipairs(vals(x)) do ref[i] = f(v) end
        check(x[name](x), shape, ref, 1e-11, name)
      end
      local p = x:abs() + 0.25
      for name, f in pairs(POSITIVE) do
        local ref = {}
        for i, v in ipairs(vals(p)) do ref[i] = f(v) end
        check(p[name](p), shape, ref, TOL, name)
      end
      local ref = {}
      for i, v in ipairs(vals(x)) do ref[i] = math.min(math.max(v, -0.3), 0.4) end
      check(x:clamp(-0.3, 0.4), shape, ref, 0, "clamp")
      local y = rnd(shape)
      local cond = x:gt(y)
      local cv, xv, yv = vals(cond), vals(x), vals(y)
      for i = 1, #cv do ref[i] = cv[i] and xv[i] or yv[i] end
      for i = #cv + 1, #ref do ref[i] = nil end
      check(as.where(cond, x, y), shape, ref, 0, "where")
    end
  end)

  it("reductions, softmax and the norms along odd dims", function()
    local x = rnd({ 3, 5, 7 }, true)
    local v = vals(x)
    local shape = x:shape()
    local function along(dim, f) -- f(list of the values along dim) for every other index
      local out, r = {}, {}
      for d = 1, #shape do if d ~= dim then out[#out + 1] = shape[d] end end
      for i = 1, numel(out) do
        local idx, k, row = unflat(i, out), 1, {}
        local full = {}
        for d = 1, #shape do
          if d ~= dim then full[d] = idx[k]; k = k + 1 end
        end
        for j = 0, shape[dim] - 1 do
          full[dim] = j
          row[#row + 1] = v[flat(full, shape)]
        end
        r[i] = f(row)
      end
      return out, r
    end
    local function sum(row) local s = 0 for _, e in ipairs(row) do s = s + e end return s end
    for dim = 1, 3 do
      check(x:sum(dim), along(dim, sum))
      local out, ref = along(dim, function(row) return sum(row) / #row end)
      check(x:mean(dim), out, ref)
      out, ref = along(dim, function(row)
        local m, s = sum(row) / #row, 0
        for _, e in ipairs(row) do s = s + (e - m) ^ 2 end
        return s / (#row - 1)
      end)
      check(x:var(dim), out, ref, 1e-11, "var")
      out, ref = along(dim, function(row) local p = 1 for _, e in ipairs(row) do p = p * e end return p end)
      check(x:prod(dim), out, ref, 1e-11, "prod")
      out, ref = along(dim, function(row) return math.max(table.unpack(row)) end)
      check(x:max(dim), out, ref, 0, "max")
      out, ref = along(dim, function(row) return math.min(table.unpack(row)) end)
      check(x:min(dim), out, ref, 0, "min")
    end
    check(x:sum(), {}, { sum(v) })
    -- softmax and log_softmax along each dim: the reference keeps the row order
    for dim = 1, 3 do
      local sm = vals(x:softmax(dim))
      local lsm = vals(x:log_softmax(dim))
      local _, z = along(dim, function(row)
        local m = math.max(table.unpack(row))
        local s = 0
        for _, e in ipairs(row) do s = s + math.exp(e - m) end
        return m + math.log(s)
      end)
      -- element i's log-normaliser: its row's z
      local out = {}
      for d = 1, #shape do if d ~= dim then out[#out + 1] = shape[d] end end
      for i = 1, #v do
        local idx, sub = unflat(i, shape), {}
        for d = 1, #shape do if d ~= dim then sub[#sub + 1] = idx[d] end end
        local lz = z[flat(sub, out)]
        assert(math.abs(lsm[i] - (v[i] - lz)) <= TOL * (1 + math.abs(v[i] - lz)), "log_softmax " .. i)
        assert(math.abs(sm[i] - math.exp(v[i] - lz)) <= TOL, "softmax " .. i)
      end
    end
    -- layer_norm and rms_norm with weights, over the last dim
    local w, b = rnd({ 7 }), rnd({ 7 })
    local wv, bv = vals(w), vals(b)
    local ln, rn = {}, {}
    for r = 0, 14 do
      local m, s2, ss = 0, 0, 0
      for j = 1, 7 do m = m + v[r * 7 + j] end
      m = m / 7
      for j = 1, 7 do
        s2 = s2 + (v[r * 7 + j] - m) ^ 2
        ss = ss + v[r * 7 + j] ^ 2
      end
      for j = 1, 7 do
        ln[r * 7 + j] = (v[r * 7 + j] - m) / math.sqrt(s2 / 7 + 1e-5) * wv[j] + bv[j]
        rn[r * 7 + j] = v[r * 7 + j] / math.sqrt(ss / 7 + 1e-6) * wv[j]
      end
    end
    check(as.layer_norm(x, w, b), shape, ln, 1e-11, "layer_norm")
    check(as.rms_norm(x, w, 1e-6), shape, rn, 1e-11, "rms_norm")
    check(as.nn.LayerNorm(7):to("float64")(x), shape, (function()
      local r = {}
      for i = 1, #ln do r[i] = (ln[i] - bv[(i - 1) % 7 + 1]) / wv[(i - 1) % 7 + 1] end
      return r
    end)(), 1e-10, "nn.LayerNorm")
    -- empty: sums of nothing
    check(as.zeros({ 0, 3 }, "float64"):sum(1), { 3 }, { 0, 0, 0 }, 0)
  end)

  it("matmul (batched, broadcast, transposed), linear and the nn layers on cblas_dgemm", function()
    local function ref_mm(a, b)
      local sa, sb = a:shape(), b:shape()
      local M, K, N = sa[#sa - 1], sa[#sa], sb[#sb]
      local ba, bb = { table.unpack(sa, 1, #sa - 2) }, { table.unpack(sb, 1, #sb - 2) }
      local batch = bshape(ba, bb)
      local va, vb, r = vals(a), vals(b), {}
      for i = 1, numel(batch) do
        local idx = unflat(i, batch)
        local oa, ob = (bpos(idx, batch, ba) - 1) * M * K, (bpos(idx, batch, bb) - 1) * K * N
        for m = 0, M - 1 do
          for n = 0, N - 1 do
            local s = 0
            for k = 0, K - 1 do s = s + va[oa + m * K + k + 1] * vb[ob + k * N + n + 1] end
            r[#r + 1] = s
          end
        end
      end
      local out = { table.unpack(batch) }
      out[#out + 1], out[#out + 2] = M, N
      return out, r
    end
    for _, c in ipairs {
      { { 3, 5 }, { 5, 7 } }, { { 2, 3, 5 }, { 2, 5, 4 } }, { { 2, 1, 3, 5 }, { 3, 5, 2 } }, { { 4, 3, 5 }, { 5, 3 } },
      { { 3, 0 }, { 0, 4 } }, { { 0, 5 }, { 5, 2 } }, { { 65, 33 }, { 33, 70 } },
    } do
      for _, nc in ipairs { false, true } do
        local a, b = rnd(c[1], nc), rnd(c[2], nc)
        local shape, ref = ref_mm(a, b)
        check(a:matmul(b), shape, ref, 1e-12, "matmul " .. table.concat(c[1], "x"))
      end
    end
    local x, w, bias = rnd({ 2, 3, 5 }), rnd({ 4, 5 }), rnd({ 4 })
    local shape, ref = ref_mm(x, w:t())
    local bv = vals(bias)
    for i = 1, #ref do ref[i] = ref[i] + bv[(i - 1) % 4 + 1] end
    check(as.linear(x, w, bias), shape, ref, 1e-12, "linear")
    local lin = as.nn.Linear(5, 4):to("float64")
    assert.are.equal("float64", lin.weight:dtype())
    local s2, r2 = ref_mm(x, lin.weight:t())
    local lb = vals(lin.bias)
    for i = 1, #r2 do r2[i] = r2[i] + lb[(i - 1) % 4 + 1] end
    check(lin(x), s2, r2, 1e-12, "nn.Linear")
    -- only double precision gets 1e8 + 1 - 1e8 right
    local a = as.tensor({ { 1e8, 1, -1e8 } }, "float64")
    assert.are.equal(1, a:matmul(as.ones({ 3, 1 }, "float64")):item())
    assert.are.equal("float64", (a:float():matmul(as.ones({ 3, 1 }, "float64"))):dtype())
  end)

  it("index_select, embedding, tril/triu and cat, forward and backward in float64", function()
    local x = rnd({ 4, 5 }, true)
    local v = vals(x)
    local idx = as.tensor({ 3, 1, 3 }, "int64") -- 1-based
    local ref = {}
    for r = 0, 3 do for _, j in ipairs { 3, 1, 3 } do ref[#ref + 1] = v[r * 5 + j] end end
    check(x:index_select(2, idx), { 4, 3 }, ref, 0, "index_select")
    local ids = as.tensor({ { 0, 3 }, { 3, 2 } }, "int64") -- 0-based, as torch
    local e = as.embedding(x, ids)
    ref = {}
    for _, i in ipairs { 0, 3, 3, 2 } do for j = 1, 5 do ref[#ref + 1] = v[i * 5 + j] end end
    check(e, { 2, 2, 5 }, ref, 0, "embedding")
    local w = x:detach():requires_grad_()
    as.embedding(w, ids):sum():backward()
    check(w.grad, { 4, 5 }, (function()
      local g = {}
      for i = 0, 3 do for j = 1, 5 do g[i * 5 + j] = (i == 0 and 1 or i == 3 and 2 or i == 2 and 1 or 0) end end
      return g
    end)(), 0, "embedding grad")
    for _, k in ipairs { -1, 0, 2 } do
      local lo, up = {}, {}
      for i = 0, 3 do for j = 0, 4 do
        lo[#lo + 1] = j - i <= k and v[i * 5 + j + 1] or 0
        up[#up + 1] = j - i >= k and v[i * 5 + j + 1] or 0
      end end
      check(x:tril(k), { 4, 5 }, lo, 0, "tril")
      check(x:triu(k), { 4, 5 }, up, 0, "triu")
    end
    local y = rnd({ 4, 2 })
    local c = as.cat({ x, y, as.zeros({ 4, 0 }, "float64") }, 2)
    ref = {}
    local yv = vals(y)
    for r = 0, 3 do
      for j = 1, 5 do ref[#ref + 1] = v[r * 5 + j] end
      for j = 1, 2 do ref[#ref + 1] = yv[r * 2 + j] end
    end
    check(c, { 4, 7 }, ref, 0, "cat")
  end)

  it("gradients are float64 and sums only double precision gets right", function()
    local e = 2 ^ -40
    assert.are.equal(1 + 2 * e, as.tensor({ 1 + e, e }, "float64"):sum():item())
    assert.are.equal(1, as.tensor({ 1 + e, e }):sum():item()) -- float32 rounds both
    local x = as.tensor({ 1, 1e-12, -1 }, "float64"):requires_grad_()
    local y = (x * x * (1 / 3)):sum()
    y:backward()
    assert.are.equal("float64", x.grad:dtype())
    check(x.grad, { 3 }, { 2 / 3, 2e-12 / 3, -2 / 3 }, 1e-15)
    -- softmax of values 1e-9 apart: float32 sees equal inputs
    local p = as.tensor({ 0, 1e-9 }, "float64"):softmax(1)
    assert.is_true(p[2] > p[1])
    assert.is_true(math.abs(p[1] - (0.5 - 2.5e-10)) < 1e-15)
    assert.are.same({ 0.5, 0.5 }, as.tensor({ 0, 1e-9 }):softmax(1):tolist())
  end)

  it("scaled_dot_product attention takes the math path; flash refuses float64 by name, the zoo its composite", function()
    local q, k, v = rnd({ 1, 2, 3, 4 }), rnd({ 1, 2, 5, 4 }), rnd({ 1, 2, 5, 3 })
    local out = as.attention.new("scaled_dot_product")(q, k, v)
    assert.are.equal("math", as.sdpa_backend())
    -- reference: softmax(q k^T / 2) v per head
    local qv, kv, vv, ref = vals(q), vals(k), vals(v), {}
    for h = 0, 1 do
      for i = 0, 2 do
        local sc, m = {}, -math.huge
        for j = 0, 4 do
          local s = 0
          for d = 1, 4 do s = s + qv[h * 12 + i * 4 + d] * kv[h * 20 + j * 4 + d] end
          sc[j] = s / 2
          m = math.max(m, sc[j])
        end
        local z = 0
        for j = 0, 4 do sc[j] = math.exp(sc[j] - m); z = z + sc[j] end
        for c = 1, 3 do
          local s = 0
          for j = 0, 4 do s = s + sc[j] / z * vv[h * 15 + j * 3 + c] end
          ref[#ref + 1] = s
        end
      end
    end
    check(out, { 1, 2, 3, 3 }, ref, 1e-12, "sdpa")
    local msg = U.errmsg(as.flash_attention, q, k, v)
    assert.truthy(msg:find("flash_attention: q is float64", 1, true), msg)
    -- the zoo takes its tensor-op composite in float64 (the fused kernel is
    -- float32): every op in float64, as a float64 gradcheck needs
    local loc = as.attention.new("local_attention", { window_size = 2 })
    local o64 = loc(q, k, v)
    assert.are.equal("float64", o64:dtype())
    local o32 = loc(q:float(), k:float(), v:float())
    assert.is_true((o64 - o32:double()):abs():max():item() < 1e-5)
  end)

  it("is CPU-only: a move to CUDA names the function", function()
    local msg = U.errmsg(function() return as.ones({ 2 }, "float64"):to("cuda") end)
    assert.truthy(msg:find("to: float64 is CPU-only", 1, true), msg)
    msg = U.errmsg(function() return as.ones({ 2 }, "float64"):cuda() end)
    assert.truthy(msg:find("float64 is CPU-only", 1, true), msg)
    msg = U.errmsg(function() return as.nn.Linear(2, 2):to("float64"):to("cuda") end)
    assert.truthy(msg:find("float64 is CPU-only", 1, true), msg)
  end)

  it("safetensors reads and writes F64 as it is", function()
    local dir = U.tmpdir()
    local x = rnd({ 3, 5 }, true)
    as.save(dir .. "/x.safetensors", { x = x, third = as.full({ 2 }, 1 / 3, "float64") })
    local st = as.load(dir .. "/x.safetensors")
    check(st.x, { 3, 5 }, vals(x), 0, "F64 round trip")
    assert.are.same({ 1 / 3, 1 / 3 }, st.third:tolist())
    local f = assert(io.open(dir .. "/x.safetensors", "rb"))
    local head = f:read(200)
    f:close()
    assert.truthy(head:find('"F64"', 1, true))
    U.sh("rm -rf " .. dir)
  end)
end)
