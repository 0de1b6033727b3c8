-- scaled_dot_product: softmax(Q K^T * scale + bias) V, materialising the
-- scores (Vaswani et al. 2017, eq. 1).  The default core and the reference
-- every other exact implementation is tested against.  C forward.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"

local ScaledDotProductAttention = nn.builtin("ScaledDotProductAttention", function(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'ScaledDotProductAttention' (options table expected, got " .. type(opts) .. ")", 2)
  end
  return core.new_sdp(opts or {})
end)

registry.register_attention("scaled_dot_product", ScaledDotProductAttention, {
  exact = true, complexity = "O(L^2 D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu, cuda", paper = "Vaswani et al. 2017",
  summary = "softmax(QK^T * scale + bias) V with the scores materialised; the reference",
})

return ScaledDotProductAttention
