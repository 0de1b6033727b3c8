-- Attention transfer in miniature (issue 18's stage "attention"): a fresh core learns
-- to mimic causal softmax attention on random q, k, v (AdamW, lr 1e-2, 150 steps of
-- B = 4, H = 2, L = 96, D = 16); held-out MSE before and after.  A smoke test that the
-- maps train, not a quality claim: random inputs have little for a map to learn.
-- Run: OMP_NUM_THREADS=1 attnswap-run bench/hedgehog_mimic.lua
as.manual_seed(0)
local B, H, L, D = 4, 2, 96, 16
local sdp = as.attention.new("scaled_dot_product", { causal = true })
for _, name in ipairs { "linear_attention", "hedgehog_attention", "lolcats_attention" } do
  local opts = { causal = true }
  if name ~= "linear_attention" then opts.num_heads, opts.head_dim = H, D end
  if name == "lolcats_attention" then opts.window_size = 16 end
  local c = as.attention.new(name, opts)
  local has = c:num_parameters() > 0
  local opt = has and as.optim.AdamW(c:requires_grad_():parameters(), { lr = 1e-2, weight_decay = 0 }) or nil
  local function batch() local x = as.randn(B, H, L, D) * 1.5; return x, as.randn(B, H, L, D) * 1.5, as.randn(B, H, L, D) end
  as.manual_seed(99)
  local tq, tk, tv = batch()
  local function eval() return as.no_grad(function() return ((c(tq, tk, tv) - sdp(tq, tk, tv)) ^ 2):mean():item() end) end
  local before = eval()
  local t0 = as.clock()
  if has then
    for _ = 1, 150 do
      local q, k, v = batch()
      local loss = ((c(q, k, v) - as.no_grad(sdp, q, k, v)) ^ 2):mean()
      opt:zero_grad(); loss:backward(); opt:step()
    end
  end
  print(string.format("%-20s held-out MSE to softmax: %.4f -> %.4f  (150 steps, %.1f s)", name, before, eval(), as.clock() - t0))
end
