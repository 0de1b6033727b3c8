-- The xFormers "sparse ViT" scenario: a ViT like the note's (224 px, 16 px
-- patches, dim 96, 8 blocks, 8 heads, mlp ratio 3, no qkv bias), its
-- attention swapped for sparse_attention with a local 2-D window on the patch
-- grid plus a global class token — everywhere, and (as the note advises) only
-- in the first blocks.  Prints, per variant, how far the logits move from
-- exact attention and the speed-up.
--   attnswap-run examples/vit_sparse.lua [--batch 8] [--window 2]
local as = require "attnswap"
local patterns = as.patterns

local batch, window = 8, 2
for i = 1, #arg do
  if arg[i] == "--batch" then batch = assert(tonumber(arg[i + 1]), "--batch needs a number") end
  if arg[i] == "--window" then window = assert(tonumber(arg[i + 1]), "--window needs a number") end
end

as.manual_seed(0)
local cfg = { img_size = 224, patch_size = 16, embed_dim = 96, depth = 8, num_heads = 8, mlp_ratio = 3,
  qkv_bias = false, num_classes = 10 }
local model = as.models.vit(cfg):eval()
local images = as.randn(batch, 3, 224, 224)

-- The pattern: patch (r, c) sees patches within `window` rows and columns;
-- token 1 (the class token) sees and is seen by every token.
local side = cfg.img_size // cfg.patch_size -- 14
local n = side * side                        -- 196 patches
local L = n + 1                              -- plus the class token
local grid = as.arange(side)
local row = grid:unsqueeze(2):expand(side, side):reshape(n) -- patch i's row
local col = grid:unsqueeze(1):expand(side, side):reshape(n) -- and column
local near = (row:unsqueeze(2) - row:unsqueeze(1)):abs():le(window)
    :logical_and((col:unsqueeze(2) - col:unsqueeze(1)):abs():le(window))
local layout = as.zeros(L, L, "bool")
layout:narrow(1, 2, n):narrow(2, 2, n):copy_(near)
layout = patterns.union(layout, patterns.global_tokens(L, { 1 }))

local function median_time(f, reps)
  local t = {}
  for i = 1, reps do
    local t0 = as.core.clock()
    f()
    t[i] = as.core.clock() - t0
  end
  table.sort(t)
  return t[(reps + 1) // 2]
end

local function run() return model(images) end
local reference = run()
local t_ref = median_time(run, 5)

print(string.format("ViT (timm layout): %d blocks, dim %d, %d heads, %d tokens, batch %d", cfg.depth,
  cfg.embed_dim, cfg.num_heads, L, batch))
print(string.format("pattern: %dx%d local window on the %dx%d patch grid + global class token; density %.1f%%",
  2 * window + 1, 2 * window + 1, side, side, 100 * patterns.density(layout)))
print()
print(string.format("%-34s %10s %9s %11s %11s %7s", "variant", "time", "speed-up", "max |diff|", "mean |diff|", "top-1"))
print(string.format("%-34s %8.1f ms %8.2fx %11s %11s %7s", "exact (scaled_dot_product)", t_ref * 1e3, 1, "-", "-", "-"))

local variants = {
  { "exact, fused (flash_attention)", "flash_attention", nil, nil },
  { "sparse, all 8 blocks", "sparse_attention", { layout = layout }, nil },
  { "sparse, first 4 blocks", "sparse_attention", { layout = layout }, { layers = { 1, 2, 3, 4 } } },
  { "sparse, first 2 blocks", "sparse_attention", { layout = layout }, { layers = { 1, 2 } } },
}
for _, v in ipairs(variants) do
  local s <close> = as.swapped(model, "scaled_dot_product", v[2], v[3], v[4])
  local out = run()
  local t = median_time(run, 5)
  local d = (out - reference):abs()
  local top1 = out:argmax(2):eq(reference:argmax(2)):float():mean():item()
  print(string.format("%-34s %8.1f ms %8.2fx %11.2e %11.2e %6.0f%%", v[1], t * 1e3, t_ref / t, d:max():item(),
    d:mean():item(), 100 * top1))
end
