-- model:clone(): a deep copy (copy.deepcopy) of built-in layers, Lua-defined
-- modules and swapped attention cores, with parameters, buffers, gradients,
-- plain fields, training flags and tied weights; independent of the original
-- (training one leaves the other as it was).  And train()/eval() switching
-- dropout through a whole tree.
local as = require "attnswap"
local U = require "spec_util"
local nn = as.nn

local Char = nn.class("CloneChar")
function Char:init(V, L, dim, p)
  self.tok = nn.Embedding(V, dim)
  self.pos = nn.Embedding(L, dim)
  self.blocks = nn.Sequential(
    nn.TransformerBlock { dim = dim, num_heads = 2, dropout = p or 0, core_opts = { causal = true } })
  self.norm = nn.LayerNorm(dim)
  self.drop = nn.Dropout(p or 0)
  self.head = nn.Linear(dim, V)
  self.positions = as.arange(0, L):long() -- a plain tensor field
  self.info = { name = "char", sizes = { V, L, dim } } -- a plain table field
end
function Char:forward(x)
  local h = self.tok(x) + self.pos(self.positions)
  return self.head(self.norm(self.drop(self.blocks(h))))
end

local function ids() return as.tensor({ { 1, 2, 3, 0, 4, 5 }, { 5, 4, 3, 2, 1, 0 } }, "int64") end

describe("model:clone()", function()
  it("copies the tree, its parameters and fields; the copy computes the same", function()
    as.manual_seed(0)
    local m = Char(6, 6, 8)
    m.blocks:eval() -- a flag per module, kept
    local c = m:clone()
    assert.are_not.equal(m, c)
    assert.are.equal("CloneChar", c:type())
    assert.is_true(nn.isinstance(c, Char))
    assert.is_false(c.blocks:is_training())
    assert.is_true(c.head:is_training())
    local names = {}
    for name, mod in m:named_modules() do names[#names + 1] = name .. "=" .. mod:type() end
    local cnames = {}
    for name, mod in c:named_modules() do cnames[#cnames + 1] = name .. "=" .. mod:type() end
    assert.are.same(names, cnames)
    assert.are.equal(tostring(m), tostring(c))
    for name, t in m:named_parameters() do
      assert.are.equal(0, U.maxdiff(t, c:state_dict()[name]), name)
    end
    assert.are.same(m.info, c.info)
    assert.are_not.equal(m.info, c.info) -- a copy, not the same table
    assert.are.same(m.positions:tolist(), c.positions:tolist())
    m:eval(); c:eval()
    assert.are.equal(0, U.maxdiff(m(ids()), c(ids())))
  end)

  it("is independent of the original: training the copy leaves the original unchanged", function()
    as.manual_seed(1)
    local m = Char(6, 6, 8):requires_grad_()
    local before = {}
    for name, t in m:named_parameters() do before[name] = t:detach():clone() end
    local c = m:clone()
    for _, t in c:named_parameters() do assert.is_true(t.requires_grad) end
    local opt = as.optim.AdamW(c:parameters(), { lr = 0.05 })
    for _ = 1, 3 do
      local loss = as.F.cross_entropy(c(ids()):reshape(12, 6), ids():reshape(12))
      opt:zero_grad()
      loss:backward()
      opt:step()
    end
    local changed = 0
    for name, t in m:named_parameters() do
      assert.are.equal(0, U.maxdiff(t, before[name]), name .. " of the original")
      assert.is_nil(t.grad, name .. ": the original got no gradient")
      if U.maxdiff(c:state_dict()[name], before[name]) > 0 then changed = changed + 1 end
    end
    assert.is_true(changed > 10, "the copy trained")
    c.positions:fill_(0)
    assert.are.same({ 0, 1, 2, 3, 4, 5 }, m.positions:tolist())
  end)

  it("keeps swapped attention cores, gradients and tied weights", function()
    as.manual_seed(2)
    local m = Char(6, 6, 8)
    local swapped = as.swap_attention(m, "scaled_dot_product", "linear_attention")
    m = swapped or m
    m.head.weight = nn.Parameter(m.tok.weight) -- tied, as GPT-2's head and embedding
    m:requires_grad_()
    m.norm.weight.grad = as.ones(8)
    local c = m:clone()
    assert.are.equal(m.blocks[1].attn.core:type(), c.blocks[1].attn.core:type())
    assert.are.equal("LinearAttention", c.blocks[1].attn.core:type())
    assert.are.same({ 1, 1, 1, 1, 1, 1, 1, 1 }, c.norm.weight.grad:tolist())
    -- still tied in the copy, and only there
    local _ <close> = as.no_grad()
    c.tok.weight:fill_(0.5)
    assert.are.equal(0.5, c.head.weight:max():item())
    assert.are_not.equal(0.5, m.tok.weight:max():item())
    m:eval(); c:eval()
    c.tok.weight:copy_(m.tok.weight)
    assert.are.equal(0, U.maxdiff(m(ids()), c(ids())))
  end)

  it("clones built-in modules alone, and says what it needs", function()
    local l = nn.Linear(3, 4, false)
    local c = l:clone()
    assert.are.equal("in_features=3, out_features=4, bias=false", c:extra_repr())
    local b = nn.TransformerBlock { dim = 8, num_heads = 2, norm = "post" }:clone()
    assert.are.equal(nn.TransformerBlock { dim = 8, num_heads = 2, norm = "post" }:extra_repr(), b:extra_repr())
    assert.is_truthy(U.errmsg(function() nn.Module.clone(3) end):find("Module expected, got number", 1, true))
  end)
end)

describe("train() and eval()", function()
  it("switch dropout through the whole tree, attention cores included", function()
    as.manual_seed(3)
    local m = Char(6, 6, 8, 0.5)
    local x = ids()
    m:train()
    local a, b = m(x), m(x)
    assert.is_true(U.maxdiff(a, b) > 0, "training: dropout draws new masks")
    m:eval()
    for name, mod in m:named_modules() do assert.is_false(mod:is_training(), name) end
    local e1, e2 = m(x), m(x)
    assert.are.equal(0, U.maxdiff(e1, e2), "eval: no dropout")
    -- eval output is what the model gives with dropout's p = 0
    local m0 = m:clone()
    m0.drop = nn.Dropout(0)
    assert.are.equal(0, U.maxdiff(e1, m0(x)))
    m:train()
    assert.is_true(m.blocks[1].attn.core:is_training())
    assert.is_true(U.maxdiff(m(x), e1) > 0)
  end)
end)
