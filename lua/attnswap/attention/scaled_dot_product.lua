-- scaled_dot_product: softmax(Q K^T * scale + bias) V (Vaswani et al. 2017,
-- eq. 1), the default core.  As PyTorch's SDPA does, it runs the fused kernel
-- (flash_attention's) wherever that kernel takes the inputs, and materialises
-- the scores only past its index range or when asked: {backend = "math"}.
-- as.sdp_attention is the materialising reference every exact
-- implementation is tested against.  C forward.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"

local ScaledDotProductAttention = nn.builtin("ScaledDotProductAttention", function(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'ScaledDotProductAttention' (options table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  if opts.backend ~= nil and opts.backend ~= "auto" and opts.backend ~= "math" then
    error(string.format("ScaledDotProductAttention: backend must be 'auto' (the fused kernel where it can) "
      .. "or 'math' (materialise the scores), got %s", tostring(opts.backend)), 2)
  end
  return core.new_sdp(opts)
end, { options = { "causal=false", "scale=1/sqrt(D)", "dropout=0", "backend=\"auto\"" }, fn = "scaled_dot_product",
  pytorch = { is_causal = "causal", dropout_p = "dropout" } })

registry.register_attention("scaled_dot_product", ScaledDotProductAttention, {
  exact = true, complexity = "O(L^2 D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu, cuda", paper = "Vaswani et al. 2017",
  summary = "softmax(QK^T * scale + bias) V; the fused kernel where it can, {backend='math'} materialises",
})

return ScaledDotProductAttention
