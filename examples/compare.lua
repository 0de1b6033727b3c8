-- The default example (`make run`): a small ViT, run as it is and with its
-- attention swapped for each implementation, side by side.
--   attnswap-run examples/compare.lua
-- As a model script it also returns the model and its inputs, so
--   attnswap-run examples/compare.lua --compare flash_attention,local_attention
-- works the same way.
local as = require "attnswap"

as.manual_seed(0)
local model = as.models.vit {
  img_size = 64, patch_size = 8, embed_dim = 96, depth = 4, num_heads = 8, mlp_ratio = 3,
  qkv_bias = false, num_classes = 10,
}:eval()
local images = as.randn(4, 3, 64, 64)

if ... == nil or arg and arg[0] and arg[0]:match("compare%.lua$") then
  print(string.format("ViT: %d blocks, %d parameters, %d tokens per image", #model.blocks,
    model:num_parameters(), 65))
  local names = {}
  for _, n in ipairs(as.attention.names()) do
    if n ~= "scaled_dot_product" then names[#names + 1] = n end
  end
  as.compare(model, images, names, { opts = { local_attention = { window_size = 8 } } })
end

return model, { images }
