-- The REPL's Tab completion (lua/attnswap/complete.lua), word by word; the
-- terminal side is in repl_pty_spec.lua.
local as = require "attnswap"
local nn = as.nn
local complete = require "attnswap.complete"

local function set(list)
  local s = {}
  for _, w in ipairs(list) do s[w] = true end
  return s
end

describe("Tab completion", function()
  local env
  before_each(function()
    local blocks = nn.ModuleList()
    for _ = 1, 12 do blocks:append(nn.TransformerBlock { dim = 8, num_heads = 2 }) end
    env = { net = { blocks = blocks }, seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU()), t = as.randn(2, 2) }
  end)

  it("offers a module's children, parameters and methods after '.'", function()
    local c = set(complete.candidates("seq[1].", env))
    assert.is_true(c["seq[1].weight"] and c["seq[1].bias"] and c["seq[1].forward"])
    assert.are.same({ "seq[1].weight" }, complete.candidates("seq[1].we", env))
  end)

  it("offers numbered children as 1-based indices", function()
    local c = complete.candidates("seq.", env)
    assert.are.same({ "seq[1]", "seq[2]" }, { c[#c - 1], c[#c] })
    assert.are.same({ "seq[1]", "seq[2]" }, complete.candidates("seq[", env))
    assert.are.same({ "net.blocks[1]", "net.blocks[10]", "net.blocks[11]", "net.blocks[12]" },
      complete.candidates("net.blocks[1", env))
    assert.are.same(12, #complete.candidates("net.blocks[", env))
    assert.are.equal("net.blocks[2]", complete.candidates("net.blocks[", env)[2])
  end)

  it("follows indices inside a path", function()
    assert.are.same({ "net.blocks[12].attn" }, complete.candidates("net.blocks[12].at", env))
    assert.are.same({ "t[1].sum" }, complete.candidates("t[1].sum", env)) -- a tensor's row
    assert.are.same({ "net.blocks[3].attn.core" }, complete.candidates("net.blocks[3].attn.co", env))
  end)

  it("offers only methods after ':'", function()
    local c = set(complete.candidates("t:", env))
    assert.is_true(c["t:sum"] and c["t:softmax"])
    assert.are.same({ "seq[2]:type" }, complete.candidates("seq[2]:ty", env))
  end)

  it("offers nothing for what it cannot follow", function()
    for _, w in ipairs { "net.blocks[13].", "net.blocks[x].", "net.blocks[0].", "seq[1]..", "end.x",
                         "nope.", "net.blocks[1", "[1].", "seq[1][" } do
      local c = complete.candidates(w, env)
      if w == "net.blocks[1" then
        assert.are.equal(4, #c, w)
      else
        assert.are.same({}, c, w)
      end
    end
  end)
end)
