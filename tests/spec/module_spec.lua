-- The module tree: Lua classes, built-in layers, tree walking, state dicts.
local as = require "attnswap"
local nn = as.nn

local function maxdiff(a, b) return (a - b):abs():max():item() end

local Block = nn.class("SpecBlock")
function Block:init(dim)
  self.proj = nn.Linear(dim, dim)
  self.norm = nn.LayerNorm(dim)
  self.scale = 2
end
function Block:forward(x) return self.norm(self.proj(x)) * self.scale end

local Net = nn.class("SpecNet")
function Net:init()
  self.embed = nn.Linear(4, 8)
  self.blocks = nn.ModuleList { Block(8), Block(8) }
  self.head = nn.Linear(8, 2, false)
end
function Net:forward(x)
  x = self.embed(x)
  for _, b in ipairs(self.blocks:children()) do x = b(x) end
  return self.head(x)
end

describe("Lua classes", function()
  it("init runs, fields sort into children, parameters and plain fields", function()
    local b = Block(8)
    assert.are.equal("SpecBlock", b:type())
    assert.are.equal("Linear", b.proj:type())
    assert.are.equal(2, b.scale)
    b.w = nn.Parameter(as.zeros(3))
    local names = {}
    for path in b:named_parameters() do names[#names + 1] = path end
    assert.are.same({ "w", "proj.weight", "proj.bias", "norm.weight", "norm.bias" }, names)
  end)

  it("module identity is stable and calling runs forward", function()
    local net = Net()
    assert.are.equal(net.blocks, net.blocks)
    local y = net(as.randn(3, 4))
    assert.are.equal("(3, 2)", tostring(y:shape()))
  end)

  it("isinstance follows inheritance", function()
    local Base = nn.class("SpecBase")
    local Derived = nn.class("SpecDerived", Base)
    function Base:hello() return "base" end
    local d = Derived()
    assert.is_true(as.isinstance(d, Derived))
    assert.is_true(as.isinstance(d, Base))
    assert.is_true(as.isinstance(d, nn.Module))
    assert.is_false(as.isinstance(d, nn.Linear))
    assert.are.equal("base", d:hello())
    assert.is_true(as.isinstance(nn.Linear(2, 2), nn.Linear))
  end)
end)

describe("tree API", function()
  it("named_modules is depth-first with PyTorch paths, root first", function()
    local paths = {}
    for path, m in Net():named_modules() do paths[#paths + 1] = path .. ":" .. m:type() end
    assert.are.same({
      ":SpecNet", "embed:Linear", "blocks:ModuleList", "blocks.0:SpecBlock", "blocks.0.proj:Linear",
      "blocks.0.norm:LayerNorm", "blocks.1:SpecBlock", "blocks.1.proj:Linear", "blocks.1.norm:LayerNorm",
      "head:Linear",
    }, paths)
  end)

  it("counts parameters", function()
    local n = 4 * 8 + 8 + 2 * (8 * 8 + 8 + 8 + 8) + 8 * 2
    assert.are.equal(n, Net():num_parameters())
  end)

  it("state_dict round trip", function()
    local a, b = Net(), Net()
    local x = as.randn(2, 4)
    assert.is_true(maxdiff(a(x), b(x)) > 0)
    local sd = {}
    for k, v in pairs(a:state_dict()) do sd[k] = v:clone() end
    b:load_state_dict(sd)
    assert.are.equal(0, maxdiff(a(x), b(x)))
  end)

  it("strict loading names missing and unexpected keys, and shape mismatches", function()
    local net = Net()
    local sd = net:state_dict()
    sd["head.weight"] = nil
    sd["extra.weight"] = as.zeros(1)
    local ok, err = pcall(net.load_state_dict, net, sd)
    assert.is_false(ok)
    assert.is_truthy(err:find("missing keys: head.weight", 1, true))
    assert.is_truthy(err:find("unexpected keys: extra.weight", 1, true))
    local r = net:load_state_dict(sd, { strict = false })
    assert.are.same({ "head.weight" }, r.missing)
    sd = net:state_dict()
    sd["embed.weight"] = as.zeros(3, 3)
    ok, err = pcall(net.load_state_dict, net, sd)
    assert.is_false(ok)
    assert.is_truthy(err:find("'embed.weight': checkpoint has shape (3, 3), model has (8, 4)", 1, true))
  end)

  it("train and eval set the flag on the whole tree", function()
    local net = Net():eval()
    for _, m in net:named_modules() do assert.is_false(m:is_training()) end
    net:train()
    assert.is_true(net.blocks[1].proj:is_training())
  end)

  it("apply visits every module", function()
    local n = 0
    Net():apply(function() n = n + 1 end)
    assert.are.equal(10, n)
  end)

  it("prints the tree like PyTorch", function()
    local s = nn.Sequential(nn.Linear(4, 8), nn.GELU())
    assert.are.equal("Sequential(\n  (0): Linear(in_features=4, out_features=8, bias=true)\n  (1): GELU()\n)", tostring(s))
  end)
end)

describe("built-in layers", function()
  it("Linear matches x W^T + b", function()
    local l = nn.Linear(5, 3)
    local x = as.randn(4, 5)
    local ref = x:matmul(l.weight:t()) + l.bias
    assert.is_true(maxdiff(l(x), ref) < 1e-5)
  end)

  it("Linear init is U(-1/sqrt(in), 1/sqrt(in))", function()
    local l = nn.Linear(100, 50)
    local bound = 1 / math.sqrt(100)
    assert.is_true(l.weight:abs():max():item() <= bound)
    assert.is_true(l.weight:abs():max():item() > 0.9 * bound)
  end)

  it("Sequential calls its children in order", function()
    local s = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    local x = as.randn(2, 3)
    assert.are.equal(0, maxdiff(s(x), s[2](s[1](x))))
    assert.are.equal(2, #s)
  end)

  it("a Lua-defined module inside a C composite is called back", function()
    local Twice = nn.class("Twice")
    function Twice:forward(x) return x * 2 end
    local s = nn.Sequential(nn.Linear(3, 3), Twice(), nn.ReLU())
    local x = as.randn(2, 3)
    assert.is_true(maxdiff(s(x), (s[1](x) * 2):relu()) < 1e-6)
    -- errors in the Lua forward surface with their message
    function Twice:forward(x) error("boom from Lua") end
    local ok, err = pcall(s, x)
    assert.is_false(ok)
    assert.is_truthy(err:find("boom from Lua", 1, true))
  end)

  it("Dropout is the identity in eval mode", function()
    local d = nn.Dropout(0.5):eval()
    local x = as.randn(100)
    assert.are.equal(0, maxdiff(d(x), x))
    d:train()
    local y = d(as.ones(10000))
    local kept = y:gt(0):float():mean():item()
    assert.is_true(math.abs(kept - 0.5) < 0.05)
    assert.is_true(math.abs(y:max():item() - 2) < 1e-6)
  end)

  it("MultiheadAttention has a swappable core child", function()
    local mha = nn.MultiheadAttention { dim = 16, num_heads = 4 }
    assert.are.equal("ScaledDotProductAttention", mha.core:type())
    local y = mha(as.randn(2, 5, 16))
    assert.are.equal("(2, 5, 16)", tostring(y:shape()))
  end)

  it("TransformerBlock pre and post norm", function()
    for _, norm in ipairs { "pre", "post" } do
      local b = nn.TransformerBlock { dim = 16, num_heads = 2, norm = norm }
      assert.are.equal("(1, 3, 16)", tostring(b(as.randn(1, 3, 16)):shape()))
    end
  end)
end)

describe("memory", function()
  it("a swapped-out module is collected without harm", function()
    local net = Net()
    local old = net.head
    net.head = nn.Linear(8, 2)
    old = nil
    collectgarbage()
    collectgarbage()
    assert.are.equal("(1, 2)", tostring(net(as.randn(1, 4)):shape()))
  end)

  it("a Lua module held only by the C tree keeps its fields", function()
    local s = nn.Sequential(Block(4))
    collectgarbage()
    collectgarbage()
    assert.are.equal(2, s[1].scale)
    assert.are.equal("(2, 4)", tostring(s(as.randn(2, 4)):shape()))
  end)
end)

describe("numbered children", function()
  it("index 0 is an error that says indices start at 1, for every module", function()
    local net = Net()
    local s = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    for _, m in ipairs { net.blocks, s, nn.ModuleList {}, nn.Linear(2, 2), net } do
      local ok, err = pcall(function() return m[0] end)
      assert.is_false(ok, m:type() .. "[0] gave no error")
      assert.is_truthy(err:find(m:type() .. ": index 0 is invalid (indices start at 1 in attnswap, as in Lua", 1, true), err)
    end
    local _, err = pcall(function() return s[0] end)
    assert.is_truthy(err:find("PyTorch's [0] is [1] here, the child named '0'", 1, true), err)
  end)

  it("counts from 1 and from the end; past the end is nil, so ipairs works", function()
    local a, b = nn.Linear(2, 2), nn.ReLU()
    local s = nn.Sequential(a, b)
    assert.are.equal(a, s[1])
    assert.are.equal(b, s[2])
    assert.are.equal(b, s[-1])
    assert.is_nil(s[3])
    assert.is_nil(s[-3])
    local seen = {}
    for i, m in ipairs(s) do seen[i] = m:type() end
    assert.are.same({ "Linear", "ReLU" }, seen)
  end)

  it("m[i] = module replaces the i-th child and keeps its name; 0 and past the end are errors", function()
    local s = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    local t = nn.Tanh()
    s[2] = t
    assert.are.equal(t, s["1"])
    assert.are.equal(2, #s)
    s[-2] = nn.GELU()
    assert.are.equal("GELU", s["0"]:type())
    local ok, err = pcall(function() s[0] = nn.ReLU() end)
    assert.is_false(ok)
    assert.is_truthy(err:find("index 0 is invalid (indices start at 1", 1, true), err)
    ok, err = pcall(function() s[3] = nn.ReLU() end)
    assert.is_false(ok)
    assert.is_truthy(err:find("Sequential: index 3 is out of range for 2 children (m:append(x) adds one)", 1, true), err)
    ok, err = pcall(function() s[1] = 5 end)
    assert.is_false(ok)
    assert.is_truthy(err:find("cannot assign number to [1] of Sequential", 1, true), err)
    assert.are.equal("(3, 2)", tostring(s(as.randn(3, 2)):shape()))
  end)
end)

describe("constructor options", function()
  local function message(f)
    local ok, err = pcall(f)
    assert.is_false(ok, "expected an error")
    return tostring(err)
  end

  it("a typo in a TransformerBlock option is an error naming the key and the known options", function()
    local err = message(function()
      local block = nn.TransformerBlock { dim = 64, num_heads = 4, mlp_raito = 2 }
      return block
    end)
    assert.is_truthy(err:find("nn.TransformerBlock: unknown option 'mlp_raito' (did you mean 'mlp_ratio'?); known options: dim, num_heads,", 1, true), err)
    assert.is_truthy(err:find("mlp_ratio, norm, activation, norm_eps, dropout", 1, true), err)
    -- the error points at the caller's line, not into the library
    assert.is_truthy(err:find("module_spec.lua:%d+: nn.TransformerBlock"), err)
  end)

  it("PyTorch's spelling is named, with ours", function()
    local err = message(function() return nn.MultiheadAttention { embed_dim = 64, num_heads = 4 } end)
    assert.is_truthy(err:find("nn.MultiheadAttention: unknown option 'embed_dim' (PyTorch's name; here it is 'dim')", 1, true), err)
    for _, c in ipairs {
      { function() return nn.TransformerBlock { d_model = 8, nhead = 2 } end, "unknown option 'd_model' (PyTorch's name; here it is 'dim')" },
      { function() return nn.TransformerBlock { dim = 8, num_heads = 2, dim_feedforward = 32 } end, "(PyTorch's option; here it is mlp_ratio = dim_feedforward / dim)" },
      { function() return nn.TransformerBlock { dim = 8, num_heads = 2, layer_norm_eps = 1e-6 } end, "(PyTorch's name; here it is 'norm_eps')" },
      { function() return nn.MultiheadAttention { dim = 8, num_heads = 2, batch_first = true } end, "unknown option 'batch_first' (PyTorch's option; inputs here are always batch first" },
      { function() return nn.LayerNorm(8, { elementwise_affine = false }) end, "nn.LayerNorm: unknown option 'elementwise_affine' (PyTorch's name; here it is 'affine')" },
      { function() return nn.RMSNorm(8, { normalized_shape = 8 }) end, "nn.RMSNorm: unknown option 'normalized_shape' (PyTorch's name; here it is 'dim')" },
      { function() return nn.Embedding(10, 4, { padding_idx = 0 }) end, "nn.Embedding: unknown option 'padding_idx' (PyTorch's option; not supported here)" },
      { function() return nn.Dropout(0.1, { inplace = true }) end, "nn.Dropout: unknown option 'inplace'" },
      { function() return nn.ReLU { inplace = true } end, "nn.ReLU: unknown option 'inplace' (PyTorch's option; not supported here" },
      { function() return nn.Linear(4, 4, { dtype = "float16" }) end, "nn.Linear: unknown option 'dtype' (PyTorch's option; build, then m:to(...))" },
      { function() return as.attention.new("scaled_dot_product", { is_causal = true }) end, "scaled_dot_product: unknown option 'is_causal' (PyTorch's name; here it is 'causal')" },
      { function() return as.attention.new("flash_attention", { dropout_p = 0.1 }) end, "flash_attention: unknown option 'dropout_p' (PyTorch's name; here it is 'dropout')" },
    } do
      local e = message(c[1])
      assert.is_truthy(e:find(c[2], 1, true), e)
    end
  end)

  it("every built-in constructor rejects an unknown option", function()
    for _, c in ipairs {
      { "nn.Linear", function() return nn.Linear(4, 4, { bais = false }) end, "in_features, out_features, bias" },
      { "nn.LayerNorm", function() return nn.LayerNorm(4, { epsilon = 1e-6 }) end, "dim, eps, affine" },
      { "nn.RMSNorm", function() return nn.RMSNorm(4, { epsilon = 1e-6 }) end, "dim, eps, affine" },
      { "nn.Embedding", function() return nn.Embedding(10, 4, { dim = 4 }) end, "num_embeddings, embedding_dim" },
      { "nn.Dropout", function() return nn.Dropout { rate = 0.1 } end, "known options: p" },
      { "nn.GELU", function() return nn.GELU { approx = "tanh" } end, "known options: approximate" },
      { "nn.SiLU", function() return nn.SiLU { x = 1 } end, "known options: none" },
      { "nn.Tanh", function() return nn.Tanh { x = 1 } end, "known options: none" },
      { "nn.MultiheadAttention", function() return nn.MultiheadAttention { dim = 8, num_heads = 2, qkvbias = false } end, "(did you mean 'qkv_bias'?)" },
      { "scaled_dot_product", function() return as.attention.new("scaled_dot_product", { casual = true }) end, "(did you mean 'causal'?); known options: causal, scale, dropout, backend" },
      { "flash_attention", function() return as.attention.new("flash_attention", { casual = true }) end, "known options: causal, scale, dropout" },
      { "scaled_dot_product", function() return nn.MultiheadAttention { dim = 8, num_heads = 2, core_opts = { casual = true } } end, "unknown option 'casual'" },
    } do
      local e = message(c[2])
      assert.is_truthy(e:find(c[1] .. ": unknown option", 1, true), e)
      assert.is_truthy(e:find(c[3], 1, true), e)
    end
  end)

  it("options are named: positional entries, extra arguments and a name given twice are errors", function()
    local e = message(function() return nn.MultiheadAttention { 8, 2 } end)
    assert.is_truthy(e:find("nn.MultiheadAttention: unknown option [1] (options are named, as {dim = ...})", 1, true), e)
    e = message(function() return nn.Embedding(10, 4, 0) end)
    assert.is_truthy(e:find("nn.Embedding: too many arguments (at most 2: num_embeddings, embedding_dim; got 3)", 1, true), e)
    e = message(function() return nn.ReLU(true) end)
    assert.is_truthy(e:find("nn.ReLU: too many arguments (none expected; got 1)", 1, true), e)
    e = message(function() return nn.Linear(4, 2, { in_features = 3 }) end)
    assert.is_truthy(e:find("nn.Linear: in_features given twice (argument #1 and by name)", 1, true), e)
    e = message(function() return nn.Linear(4, 2, 0) end)
    assert.is_truthy(e:find("bad argument #3 to 'Linear' (boolean bias expected, got number)", 1, true), e)
  end)

  it("arguments named in a table build the same layer as positional ones", function()
    assert.are.equal(tostring(nn.Linear(4, 2, false)), tostring(nn.Linear(4, 2, { bias = false })))
    assert.are.equal(tostring(nn.Linear(4, 2, false)), tostring(nn.Linear { in_features = 4, out_features = 2, bias = false }))
    assert.is_nil(nn.Linear(4, 2, { bias = false }).bias)
    assert.are.equal(tostring(nn.LayerNorm(8, 1e-3, false)), tostring(nn.LayerNorm(8, { eps = 1e-3, affine = false })))
    assert.are.equal(tostring(nn.Dropout(0.25)), tostring(nn.Dropout { p = 0.25 }))
    assert.are.equal(tostring(nn.GELU("tanh")), tostring(nn.GELU { approximate = "tanh" }))
    assert.are.equal("(10, 4)", tostring(nn.Embedding { num_embeddings = 10, embedding_dim = 4 }.weight:shape()))
  end)
end)
