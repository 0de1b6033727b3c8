-- cudaMalloc calls and time a forward in a loop of bf16 forwards with no collection asked for
-- (a user's loop; bench/cuda_trace.c sees one stop a ViT forward there, v0.17-v0.18).
--   attnswap-run bench/cuda_loop_mallocs.lua [vit|gpt2]
local which = arg[1] or "vit"
if not as.cuda.is_available() then
  io.stderr:write("cuda_loop_mallocs: no CUDA device is available\n")
  os.exit(1)
end
as.manual_seed(0)
local model, x
if which == "vit" then
  model = as.models.vit { img_size = 224, patch_size = 16, embed_dim = 768, depth = 12, num_heads = 12, num_classes = 1000 }
  x = as.randn(32, 3, 224, 224)
else
  model = as.models.gpt2.new { n_layer = 12, n_embd = 768, n_head = 12, vocab_size = 50257, n_positions = 1024 }
  x = (as.rand(8, 1024) * 50257):long()
end
model = model:eval():to("cuda")
as.swap_attention(model, "scaled_dot_product", "flash_attention", {}, { quiet = true })
model:to("bfloat16")
x = x:cuda()
if x:dtype() == "float32" then x = x:to("bfloat16") end
as.no_grad(function()
  for _ = 1, 3 do model(x) end
  as.cuda.synchronize()
  local line = {}
  for r = 1, 8 do
    local m0 = as.cuda.memory_stats().num_mallocs
    local t0 = as.core.clock()
    for _ = 1, 10 do model(x) end
    as.cuda.synchronize()
    local ms = (as.core.clock() - t0) * 100
    local st = as.cuda.memory_stats()
    line[#line + 1] = string.format("%d mallocs %.3f ms/fwd (res %.0f MiB)", st.num_mallocs - m0, ms, st.reserved / 2^20)
  end
  print(which .. " ten forwards at a time, no collection asked: " .. table.concat(line, "; "))
end)
