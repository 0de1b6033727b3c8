-- The default exact core (scaled_dot_product) runs the fused kernel by
-- itself, as PyTorch's SDPA does; {backend = "math"} materialises.  Both give
-- the materialising reference's result.
local as = require "attnswap"
local nn = as.nn

local function maxdiff(a, b) return (a:float() - b:float()):abs():max():item() end

describe("scaled_dot_product dispatch", function()
  it("runs the fused kernel by default and the math path when asked", function()
    as.manual_seed(7)
    local q, k, v = as.randn(2, 4, 37, 16), as.randn(2, 2, 53, 16), as.randn(2, 2, 53, 8)
    local keep = as.rand(37, 53):lt(0.8)
    for _, causal in ipairs { false, true } do
      local ref = as.sdp_attention(q, k, v, keep, { causal = causal })
      local auto = as.attention.new("scaled_dot_product", { causal = causal })
      local out = auto(q, k, v, keep)
      assert.are.equal("flash/", as.sdpa_backend():sub(1, 6))
      assert.is_true(maxdiff(out, ref) < 1e-5)
      local math_core = as.attention.new("scaled_dot_product", { causal = causal, backend = "math" })
      out = math_core(q, k, v, keep)
      assert.are.equal("math", as.sdpa_backend())
      assert.is_true(maxdiff(out, ref) < 1e-6)
      assert.is_truthy(tostring(math_core):find("backend=math", 1, true))
    end
  end)

  it("is what models and TransformerBlock get", function()
    local blk = nn.TransformerBlock { dim = 32, num_heads = 4 }
    assert.are.equal("ScaledDotProductAttention", blk.attn.core:type())
    local x = as.randn(2, 20, 32)
    local y = blk(x)
    assert.are.equal("flash/", as.sdpa_backend():sub(1, 6))
    local s <close> = as.swapped(blk, "scaled_dot_product", "scaled_dot_product", { backend = "math" })
    assert.is_true(maxdiff(blk(x), y) < 1e-5)
    assert.are.equal("math", as.sdpa_backend())
  end)

  it("names itself in errors and rejects an unknown backend", function()
    local core = as.attention.new("scaled_dot_product")
    local ok, err = pcall(core, as.randn(2, 3, 4), as.randn(1, 1, 2, 4), as.randn(1, 1, 2, 4))
    assert.is_false(ok)
    assert.is_truthy(err:find("scaled_dot_product: q must be 4-d", 1, true))
    ok, err = pcall(as.attention.new, "scaled_dot_product", { backend = "cudnn" })
    assert.is_false(ok)
    assert.is_truthy(err:find("backend must be 'auto'", 1, true))
  end)
end)
