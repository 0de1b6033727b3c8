-- The Llama-family fixtures on CUDA against transformers' logits, and generation with
-- and without the cache (bench/gpu_host.sh runs it on the GPU host).
local as = require "attnswap"
for _, fam in ipairs { "llama", "mistral", "qwen2", "qwen3" } do
  local dir = "tests/fixtures/llama/" .. fam
  local model = as.models.from_pretrained(dir):eval()
  local io_ = as.load(dir .. "/io.safetensors")
  local ref = model(io_.input_ids)
  model:to("cuda")
  local out = model(io_.input_ids:cuda())
  local d = (out:cpu():float() - io_.logits:float()):abs():max():item()
  local g1 = model:generate(io_.input_ids:cuda(), { max_new_tokens = 6 })
  local g0 = model:generate(io_.input_ids:cuda(), { max_new_tokens = 6, use_cache = false })
  print(string.format("%-8s cuda logits max|diff| vs transformers %.2e; cached = uncached generation: %s",
    fam, d, tostring((g1:cpu() - g0:cpu()):abs():max():item() == 0)))
end
