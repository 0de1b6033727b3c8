-- The attention registry and swap_attention.
local as = require "attnswap"
local nn = as.nn

local function maxdiff(a, b) return (a - b):abs():max():item() end

local function tiny(depth)
  local blocks = {}
  for i = 1, depth or 3 do blocks[i] = nn.TransformerBlock { dim = 16, num_heads = 4, mlp_ratio = 2 } end
  return nn.Sequential(table.unpack(blocks)):eval()
end

-- A Lua attention with a parameter, for carry-over tests.
local Gated = nn.class("SpecGatedAttention")
function Gated:init(opts)
  self.gate = nn.Parameter(as.full({ 1 }, opts.gate or 1.0))
  self.inner = as.attention.new("scaled_dot_product", { causal = opts.causal })
end
function Gated:forward(q, k, v, mask) return self.inner(q, k, v, mask) * self.gate end
as.register_attention("spec_gated", Gated, { exact = false, complexity = "O(L^2 D)" })

local Plain = nn.class("SpecPlainAttention")
function Plain:init(opts) self.opts = opts end
function Plain:forward(q, k, v, mask) return v end
as.register_attention("spec_plain", Plain)

describe("registry", function()
  it("lists, describes and builds registered implementations", function()
    local names = as.attention.names()
    assert.is_truthy(#names >= 3)
    for i = 2, #names do assert.is_true(names[i - 1] < names[i]) end
    local info = as.attention.info("scaled_dot_product")
    assert.is_true(info.exact)
    assert.are.equal("O(L^2 D)", info.complexity)
    local core = as.attention.new("scaled_dot_product", { causal = true })
    local q = as.randn(1, 2, 4, 8)
    assert.are.equal("(1, 2, 4, 8)", tostring(core(q, q, q):shape()))
  end)

  it("refuses duplicates unless replace is given", function()
    local ok, err = pcall(as.register_attention, "spec_plain", Plain)
    assert.is_false(ok)
    assert.is_truthy(err:find("'spec_plain' is already registered", 1, true))
    assert.has_no.errors(function() as.register_attention("spec_plain", Plain, { replace = true }) end)
  end)

  it("works as a decorator", function()
    local C = nn.class("SpecDecorated")
    function C:forward(q, k, v) return v end
    local r = as.register_attention("spec_decorated", { exact = false })(C)
    assert.are.equal(C, r)
    assert.are.equal(C, as.attention.get("spec_decorated"))
  end)

  it("lists as a table", function()
    local buf = {}
    local out = { write = function(self, ...) for _, s in ipairs { ... } do buf[#buf + 1] = s end end }
    as.attention.list(out)
    local text = table.concat(buf)
    assert.is_truthy(text:find("scaled_dot_product", 1, true))
    assert.is_truthy(text:find("Vaswani", 1, true))
  end)
end)

describe("swap_attention", function()
  it("replaces every matching core and reports each path", function()
    local m = tiny(3)
    local model, report = as.swap_attention(m, "scaled_dot_product", "spec_gated")
    assert.are.equal(m, model)
    assert.are.equal(3, #report.swapped)
    assert.are.equal("0.attn.core", report.swapped[1].path)
    assert.are.equal("SpecGatedAttention", report.swapped[1].new)
    assert.are.equal("SpecGatedAttention", m[3].attn.core:type())
  end)

  it("matches a class, its subclasses, a class name and a predicate", function()
    local Base = nn.class("SpecBaseAttn")
    function Base:forward(q, k, v) return v end
    local Sub = nn.class("SpecSubAttn", Base)
    local Holder = nn.class("SpecHolder")
    function Holder:init() self.a = Base(); self.b = Sub(); self.c = nn.Linear(2, 2) end
    local _, r = as.swap_attention(Holder(), Base, "spec_plain")
    assert.are.equal(2, #r.swapped)
    _, r = as.swap_attention(Holder(), "SpecSubAttn", "spec_plain")
    assert.are.equal(1, #r.swapped)
    assert.are.equal("b", r.swapped[1].path)
    _, r = as.swap_attention(Holder(), function(m, path) return path == "a" end, "spec_plain")
    assert.are.equal(1, #r.swapped)
  end)

  it("narrows with where and layers", function()
    local m = tiny(4)
    local _, r = as.swap_attention(m, "scaled_dot_product", "spec_plain", nil, { layers = { 1, 2 } })
    assert.are.equal(2, #r.swapped)
    assert.are.equal("SpecPlainAttention", m[2].attn.core:type())
    assert.are.equal("ScaledDotProductAttention", m[3].attn.core:type())
    m = tiny(4)
    _, r = as.swap_attention(m, "scaled_dot_product", "spec_plain", nil, { where = "^3%." })
    assert.are.equal(1, #r.swapped)
    assert.are.equal("3.attn.core", r.swapped[1].path)
    m = tiny(4)
    _, r = as.swap_attention(m, "scaled_dot_product", "spec_plain", nil,
      { where = function(path) return path:sub(1, 1) == "0" end })
    assert.are.equal("0.attn.core", r.swapped[1].path)
  end)

  it("can replace the root", function()
    local root = as.attention.new("scaled_dot_product")
    local model, r = as.swap_attention(root, "scaled_dot_product", "spec_plain")
    assert.are.equal("SpecPlainAttention", model:type())
    assert.are.equal("", r.swapped[1].path)
  end)

  it("says when nothing matched, unless allowed", function()
    local ok, err = pcall(as.swap_attention, nn.Linear(2, 2), "scaled_dot_product", "spec_plain")
    assert.is_false(ok)
    assert.is_truthy(err:find("nothing matched 'scaled_dot_product' in Linear", 1, true))
    local m, r = as.swap_attention(nn.Linear(2, 2), "scaled_dot_product", "spec_plain", nil, { allow_empty = true })
    assert.are.equal(0, #r.swapped)
    assert.are.equal("Linear", m:type())
  end)

  it("carries parameters shared by name and shape, and reports dropped ones", function()
    local Holder = nn.class("SpecGateHolder")
    function Holder:init() self.attn = Gated { gate = 3.0 } end
    local h = Holder()
    local _, r = as.swap_attention(h, Gated, "spec_gated", { gate = 1.0 })
    assert.are.same({ "gate" }, r.swapped[1].carried)
    assert.are.equal(3.0, h.attn.gate:item())
    h = Holder()
    _, r = as.swap_attention(h, Gated, "scaled_dot_product")
    assert.are.same({ "gate" }, r.swapped[1].dropped)
    h = Holder()
    h.attn = Plain {}
    _, r = as.swap_attention(h, Plain, "spec_gated")
    assert.are.same({ "gate" }, r.swapped[1].initialized)
  end)

  it("the new module inherits the training flag", function()
    local m = tiny(1):train()
    as.swap_attention(m, "scaled_dot_product", "spec_plain")
    assert.is_true(m[1].attn.core:is_training())
    m:eval()
    as.swap_attention(m, "SpecPlainAttention", "scaled_dot_product")
    assert.is_false(m[1].attn.core:is_training())
  end)

  it("keeps the output when swapping one exact implementation for another", function()
    as.manual_seed(1)
    local m = tiny(2)
    local x = as.randn(2, 6, 16)
    local before = m(x)
    local Exact = nn.class("SpecExactLua")
    function Exact:init(opts) self.causal = opts.causal end
    function Exact:forward(q, k, v, mask)
      local s = q:matmul(k:transpose(-2, -1)) / math.sqrt(q:size(-1))
      return s:softmax(-1):matmul(v)
    end
    as.register_attention("spec_exact_lua", Exact, { exact = true })
    as.swap_attention(m, "scaled_dot_product", "spec_exact_lua")
    assert.is_true(maxdiff(m(x), before) < 1e-5)
  end)
end)

describe("scoped swap", function()
  it("restores the very same objects at scope exit", function()
    local m = tiny(2)
    local originals = { m[1].attn.core, m[2].attn.core }
    do
      local s <close> = as.swapped(m, "scaled_dot_product", "spec_plain")
      assert.are.equal("SpecPlainAttention", m[1].attn.core:type())
      assert.are.equal(2, #s.report.swapped)
    end
    assert.are.equal(originals[1], m[1].attn.core)
    assert.are.equal(originals[2], m[2].attn.core)
  end)

  it("restore() works early and only once", function()
    local m = tiny(1)
    local orig = m[1].attn.core
    local s = as.swapped(m, "scaled_dot_product", "spec_plain")
    s:restore()
    assert.are.equal(orig, m[1].attn.core)
    s:restore()
    assert.are.equal(orig, m[1].attn.core)
  end)

  it("sizes per-head parameters from the MultiheadAttention swapped into", function()
    local m = nn.TransformerBlock { dim = 36, num_heads = 3 } -- head_dim 12, not the default 64
    local x = as.randn(2, 5, 36)
    as.swap_attention(m, "scaled_dot_product", "gated_attention")
    assert.are.equal("(3, 12, 1)", tostring(m.attn.core.gate_weight:shape()))
    assert.are.equal("(2, 5, 36)", tostring(m(x):shape()))
    as.swap_attention(m, "gated_attention", "relative_attention")
    assert.are.equal("(32, 3)", tostring(m.attn.core.relative_attention_bias:shape()))
    -- what the caller gives wins
    local ok, err = pcall(as.swap_attention, m, "relative_attention", "gated_attention", { head_dim = 7 })
    assert.is_true(ok)
    assert.are.equal("(3, 7, 1)", tostring(m.attn.core.gate_weight:shape()))
    assert.has_error(function() m(x) end)
  end)

  it("keeps a causal model causal, and refuses a core that cannot be", function()
    local m = nn.TransformerBlock { dim = 16, num_heads = 2, core_opts = { causal = true } }
    as.swap_attention(m, "scaled_dot_product", "flash_attention")
    assert.truthy(tostring(m.attn.core):find("causal=true", 1, true))
    as.swap_attention(m, "flash_attention", "local_attention", { window_size = 3 })
    assert.truthy(tostring(m.attn.core):find("causal=true", 1, true))
    -- efficient_attention has no causal form
    local ok, err = pcall(as.swap_attention, m, "local_attention", "efficient_attention")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("causal is not supported", 1, true))
    as.swap_attention(m, "local_attention", "scaled_dot_product", { causal = false }) -- what the caller says wins
    assert.truthy(tostring(m.attn.core):find("causal=false", 1, true))
  end)
end)

describe("registry facts checked at swap time", function()
  -- A core that needs as many k/v heads as query heads, and says so.
  local SameHeads = nn.class("SpecSameHeadsAttention")
  function SameHeads:init() end
  function SameHeads:forward(q, k, v) return q:matmul(k:transpose(-2, -1)):softmax(-1):matmul(v) end
  as.register_attention("spec_same_heads", SameHeads, { gqa = false })

  it("gqa = false is refused in a grouped-query module, before anything is swapped", function()
    local model = nn.Sequential(nn.TransformerBlock { dim = 16, num_heads = 4 },
      nn.TransformerBlock { dim = 16, num_heads = 4, num_kv_heads = 2 }):eval()
    local x = as.randn(1, 5, 16)
    local before = model(x)
    local ok, err = pcall(as.swap_attention, model, "scaled_dot_product", "spec_same_heads")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("swap_attention: 'spec_same_heads' is registered with gqa = false", 1, true), err)
    assert.truthy(tostring(err):find("1.attn.core sits in a grouped-query MultiheadAttention (num_heads = 4, num_kv_heads = 2)", 1, true), err)
    -- the first block, which it could go into, was not swapped either
    assert.are.equal("ScaledDotProductAttention", model[1].attn.core:type())
    assert.are.equal(0, maxdiff(model(x), before))
    -- as.swapped refuses the same way
    assert.has_error(function() as.swapped(model, "scaled_dot_product", "spec_same_heads") end)
  end)

  it("gqa = false swaps where the heads match, and a Lua module's head counts are read too", function()
    local model = nn.Sequential(nn.TransformerBlock { dim = 16, num_heads = 4 },
      nn.TransformerBlock { dim = 16, num_heads = 4, num_kv_heads = 2 }):eval()
    local _, report = as.swap_attention(model, "scaled_dot_product", "spec_same_heads", nil, { layers = { 1 } })
    assert.are.equal("0.attn.core", report.swapped[1].path)
    assert.are.equal("(1, 5, 16)", tostring(model(as.randn(1, 5, 16)):shape()))

    local Attn = nn.class("SpecGQAAttention")
    function Attn:init() self.num_heads, self.num_kv_heads = 8, 2; self.core = as.attention.new("scaled_dot_product") end
    local ok, err = pcall(as.swap_attention, Attn(), "scaled_dot_product", "spec_same_heads")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("core sits in a grouped-query SpecGQAAttention (num_heads = 8, num_kv_heads = 2)", 1, true), err)
  end)
end)

describe("swap_attention and causality", function()
  local function maxdiff(a, b) return (a - b):abs():max():item() end

  it("refuses to make a bidirectional model causal, before anything is swapped", function()
    local model = nn.Sequential(nn.TransformerBlock { dim = 16, num_heads = 4 },
      nn.TransformerBlock { dim = 16, num_heads = 4 }):eval()
    local x = as.randn(1, 9, 16)
    local before = model(x)
    local ok, err = pcall(as.swap_attention, model, "scaled_dot_product", "sink_attention", { window_size = 2 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("swap_attention: 'sink_attention' is causal, but 0.attn.core " ..
      "(ScaledDotProductAttention) is not: the swap would make the model causal", 1, true), err)
    assert.are.equal("ScaledDotProductAttention", model[1].attn.core:type())
    assert.are.equal(0, maxdiff(model(x), before))
  end)

  it("lets it through when asked, and swaps a causal core for a causal one", function()
    local model = nn.Sequential(nn.TransformerBlock { dim = 16, num_heads = 4 }):eval()
    local _, report = as.swap_attention(model, "scaled_dot_product", "sink_attention", { causal = true })
    assert.are.equal(1, #report.swapped)
    assert.truthy(model[1].attn.core:extra_repr():find("causal=true", 1, true))
    local causal = nn.Sequential(nn.TransformerBlock { dim = 16, num_heads = 4, core_opts = { causal = true } })
    _, report = as.swap_attention(causal, "scaled_dot_product", "sink_attention")
    assert.are.equal(1, #report.swapped)
  end)
end)

describe("module configs", function()
  it("C modules expose their config as a table; swap reads it, not the printed repr", function()
    local mha = nn.MultiheadAttention { dim = 12, num_heads = 4, num_kv_heads = 2 }
    assert.are.same({ dim = 12, num_heads = 4, num_kv_heads = 2, head_dim = 3 }, as.core.module_config(mha))
    assert.are.same({ causal = true, dropout = 0 },
      as.core.module_config(as.attention.new("scaled_dot_product", { causal = true })))
    assert.are.same({ causal = false, dropout = 0.25, scale = 0.5 },
      as.core.module_config(as.attention.new("flash_attention", { dropout = 0.25, scale = 0.5 })))
    assert.is_nil(as.core.module_config(nn.class("SpecNoConfig")()))
    -- a causal core's causality is inherited through the config
    local blk = nn.TransformerBlock { dim = 16, num_heads = 4, core_opts = { causal = true } }
    as.swap_attention(blk, "scaled_dot_product", "local_attention", { window_size = 3 })
    assert.is_true(blk.attn.core.opts.causal)
  end)
end)
