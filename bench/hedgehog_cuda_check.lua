-- hedgehog_attention and lolcats_attention on CUDA (the tensor-op forward,
-- no kernel of their own): forward, gradients of q, k, v and the
-- parameters, and step-by-step decoding on the card against the same on the
-- CPU.  Run on a GPU host: attnswap-run bench/hedgehog_cuda_check.lua
local I = require "attnswap.attention.incremental"
local DEV = os.getenv("DEV") or "cuda" -- DEV=cpu: the script checked on a CPU-only build
local function diff(a, b) return (a:float():cpu() - b:float():cpu()):abs():max():item() end
local worst, bad = 0, 0
local function check(what, d, tol)
  worst = math.max(worst, d)
  local ok = d < tol
  if not ok then bad = bad + 1 end
  print(string.format("%-60s max diff %.3g %s", what, d, ok and "ok" or "FAIL"))
end
local B, H, Hkv, D, L = 2, 4, 2, 16, 150
for _, name in ipairs { "hedgehog_attention", "lolcats_attention" } do
  for _, causal in ipairs { true, false } do
    as.manual_seed(1)
    local opts = { num_heads = H, head_dim = D, feature_dim = 8, causal = causal }
    if name == "lolcats_attention" then opts.window_size = 10 end
    local c = as.attention.new(name, opts)
    c.feature_q:copy_(as.randn(H, D, 8) * 0.5)
    c.feature_k:copy_(as.randn(H, D, 8) * 0.5)
    local g = as.attention.new(name, opts)
    g:load_state_dict(c:state_dict())
    g:to(DEV)
    local q, k, v = as.randn(B, H, L, D), as.randn(B, Hkv, L, D), as.randn(B, Hkv, L, D)
    local keep = as.rand(B, L):gt(0.2):reshape(B, 1, 1, L)
    local w = as.randn(B, H, L, D)
    local function run(core, dev)
      core:requires_grad_()
      core:zero_grad()
      local qq, kk, vv = q:clone():to(dev):requires_grad_(), k:clone():to(dev):requires_grad_(), v:clone():to(dev):requires_grad_()
      local out = core(qq, kk, vv, keep:to(dev))
      ;(out * w:to(dev)):sum():backward()
      local r = { out = out, q = qq.grad, k = kk.grad, v = vv.grad }
      for n, p in core:named_parameters() do r[n] = p.grad end
      return r
    end
    local cpu, gpu = run(c, "cpu"), run(g, DEV)
    for _, key in ipairs { "out", "q", "k", "v", "feature_q", "feature_k", "window_factors" } do
      if cpu[key] then
        local scale = math.max(1, cpu[key]:abs():max():item())
        check(string.format("%s causal=%s %s", name, tostring(causal), key), diff(cpu[key], gpu[key]) / scale, 1e-4)
      end
    end
    if causal then
      local state, at, outs = nil, 0, {}
      as.no_grad(function()
        for _, n in ipairs { 7, 1, 1, 70, 1, 1 } do
          local function part(t) return t:narrow(3, at + 1, n):to(DEV) end
          local out
          out, state = I.stepper(g)(part(q), part(k), part(v), state)
          outs[#outs + 1] = out
          at = at + n
        end
        local full = c(q:narrow(3, 1, at), k:narrow(3, 1, at), v:narrow(3, 1, at))
        check(name .. " step on " .. DEV .. " vs forward on cpu", diff(as.cat(outs, 3), full), 1e-4)
      end)
    end
  end
end
print(string.format("worst %.3g, %d failed", worst, bad))
if bad > 0 then os.exit(1) end
