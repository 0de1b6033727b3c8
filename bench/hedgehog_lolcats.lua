-- hedgehog_attention and lolcats_attention beside softmax and linear
-- attention: causal, B = 1, H = 8, D = 64, the default F = 64 and w = 64;
-- best of 3 (docs/attention.md, "Learnable linear attention").  Inference
-- under no_grad, then forward + backward with the core's parameters
-- trainable.  Run: OMP_NUM_THREADS=1 attnswap-run bench/hedgehog_lolcats.lua [L ...]
-- (on a GPU: ... [L ...] cuda).
local lens, dev = {}, "cpu"
for _, a in ipairs(arg or {}) do
  if tonumber(a) then lens[#lens + 1] = math.tointeger(tonumber(a)) else dev = a end
end
if #lens == 0 then lens = { 1024, 4096 } end
local B, H, D = 1, 8, 64
local function sync() if dev ~= "cpu" then as.cuda.synchronize() end end
for _, L in ipairs(lens) do
  as.manual_seed(0)
  local q, k, v = as.randn(B, H, L, D):to(dev), as.randn(B, H, L, D):to(dev), as.randn(B, H, L, D):to(dev)
  local function time(name, grad)
    local opts = { causal = true }
    if name == "hedgehog_attention" or name == "lolcats_attention" then opts.num_heads, opts.head_dim = H, D end
    local c = as.attention.new(name, opts)
    if dev ~= "cpu" then c:to(dev) end
    local f
    if grad then
      c:requires_grad_()
      f = function() c(q, k, v):sum():backward() end
    else
      f = function() as.no_grad(c, q, k, v) end
    end
    f(); sync()
    local best = math.huge
    for _ = 1, 3 do
      local t0 = as.clock(); f(); sync()
      best = math.min(best, as.clock() - t0)
    end
    print(string.format("L=%-5d %-20s %-10s %9.1f ms", L, name, grad and "fwd+bwd" or "inference", best * 1e3))
  end
  for _, name in ipairs { "scaled_dot_product", "linear_attention", "hedgehog_attention", "lolcats_attention" } do
    time(name, false)
  end
  time("hedgehog_attention", true)
  time("lolcats_attention", true)
end
