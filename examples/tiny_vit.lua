-- A model script: a small ViT (4 blocks, 64x64 images in 8x8 patches) and a
-- batch of images, returned for the command line to swap or compare:
--   attnswap-run --swap local_attention:window_size=8 examples/tiny_vit.lua
--   attnswap-run --compare flash_attention,local_attention examples/tiny_vit.lua
-- (examples/compare.lua runs it against every registered implementation).
local as = require "attnswap"

as.manual_seed(0)
local model = as.models.vit {
  img_size = 64, patch_size = 8, embed_dim = 96, depth = 4, num_heads = 8, mlp_ratio = 3,
  qkv_bias = false, num_classes = 10,
}:eval()
local images = as.randn(4, 3, 64, 64)
if as.device and as.device ~= "cpu" then -- attnswap-run --device cuda
  model:to(as.device)
  images = images:to(as.device)
end
return model, { images }
