-- The default example (`make run`): a small ViT (examples/tiny_vit.lua), run
-- as it is and with its attention swapped for each implementation, side by side.
--   attnswap-run examples/compare.lua
local as = require "attnswap"

local dir = (arg and arg[0] or ""):match("^(.*)/") or "examples"
local model, inputs = dofile(dir .. "/tiny_vit.lua")
print(string.format("ViT: %d blocks, %d parameters, %d tokens per image", #model.blocks,
  model:num_parameters(), 65))
local names = {}
for _, n in ipairs(as.attention.names()) do
  if n ~= "scaled_dot_product" then names[#names + 1] = n end
end
as.compare(model, inputs, names, { opts = { local_attention = { window_size = 8 } } })
