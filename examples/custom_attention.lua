-- A custom attention written in Lua, registered next to the built-in ones and
-- swapped into a small transformer.
--   attnswap-run examples/custom_attention.lua
local as = require "attnswap"
local nn = as.nn

-- Cosine attention (Swin Transformer V2, Liu et al. 2022, eq. 2):
--   softmax(cos(q_i, k_j) / tau + bias) V, tau a learnable temperature.
-- Its heavy work is tensor ops, so it runs in C kernels.
local CosineAttention = nn.class("CosineAttention")

function CosineAttention:init(opts)
  self.causal = opts.causal or false
  self.logit_scale = nn.Parameter(as.full({1}, math.log(10.0)))
end

local function l2_normalize(x)
  return x / (x * x):sum(-1, true):sqrt():clamp(1e-6)
end

function CosineAttention:forward(q, k, v, mask)
  local scores = l2_normalize(q):matmul(l2_normalize(k):transpose(-2, -1)) * self.logit_scale:exp()
  if self.causal then
    local lq, lk = q:size(-2), k:size(-2)
    local keep = as.ones(lq, lk, "bool"):tril(lk - lq)
    scores = as.where(keep, scores, -math.huge)
  end
  if mask then
    if mask:dtype() == "bool" then scores = as.where(mask, scores, -math.huge) else scores = scores + mask end
  end
  return scores:softmax(-1):matmul(v)
end

as.register_attention("my_cosine_attention", CosineAttention, {
  exact = false, complexity = "O(L^2 D)", gqa = false,
  paper = "Liu et al. 2022 (Swin V2)", summary = "softmax of scaled cosine similarities",
})

print("Registered attention implementations:")
as.attention.list()
print()

-- A small transformer: 2 blocks, dim 32, 4 heads.
as.manual_seed(0)
local model = nn.Sequential(
  nn.TransformerBlock { dim = 32, num_heads = 4, mlp_ratio = 2 },
  nn.TransformerBlock { dim = 32, num_heads = 4, mlp_ratio = 2 },
  nn.LayerNorm(32)
):eval()
print(model)
print()

local x = as.randn(2, 10, 32)
local before = model(x)

local _, report = as.swap_attention(model, "scaled_dot_product", "my_cosine_attention")
print(report)
local after = model(x)

print(string.format("output shape %s; mean |change| after the swap: %.4f",
  tostring(after:shape()), (after - before):abs():mean():item()))
