-- flash_attention: exact softmax attention computed in tiles with an online
-- softmax, never materialising the L x L scores (Dao et al. 2022,
-- "FlashAttention", Algorithm 1).  A fused C kernel (kernels/cpu/attention_flash*.c)
-- with AVX-512 / AVX2 / scalar paths chosen at run time; as.sdpa_backend()
-- says which one ran.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"

local FlashAttention = nn.builtin("FlashAttention", function(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'FlashAttention' (options table expected, got " .. type(opts) .. ")", 2)
  end
  return core.new_flash(opts or {})
end, { options = { "causal=false", "scale=1/sqrt(D)", "dropout=0" }, fn = "flash_attention",
  pytorch = { is_causal = "causal", dropout_p = "dropout" } })

registry.register_attention("flash_attention", FlashAttention, {
  exact = true, complexity = "O(L^2 D), O(L) memory", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Dao et al. 2022",
  summary = "fused tiles with online softmax; never materialises the scores",
})

return FlashAttention
