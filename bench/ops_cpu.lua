-- The CPU's elementwise maps, row kernels, cross-entropy and AdamW step
-- timed alone at the models' shapes (best of 15): ViT-B/16's MLP rows (788 x
-- 3072), its attention rows (788 * 12 x 197), GPT-2's LM-head logits (1024 x
-- 50257), and a 3072 x 3072 Linear's AdamW step.  docs/performance.md v0.16
-- compares it across builds (the vector variants, kernels/cpu/vector_variants.h).
--   attnswap-run bench/ops_cpu.lua [threads=2]
local as = require "attnswap"
as.set_num_threads(tonumber(arg[1] or 2))
as.manual_seed(0)
local x = as.randn(788, 3072)
local s = as.randn(788 * 12, 197)
local function t(name, f)
  f()
  local best = 1e9
  for r = 1, 15 do local t0 = as.core.clock(); f(); best = math.min(best, as.core.clock() - t0) end
  print(string.format("%-14s %.3f ms", name, best * 1e3))
end
t("gelu", function() return as.gelu(x, "none") end)
t("gelu_tanh", function() return as.gelu(x, "tanh") end)
t("sigmoid * x", function() return x:sigmoid() * x end)
t("tanh", function() return x:tanh() end)
t("add", function() return x + x end)
t("mul", function() return x * x end)
t("sum(-1)", function() return x:sum(-1) end)
t("softmax", function() return s:softmax(-1) end)
t("log_softmax", function() return s:log_softmax(-1) end)
t("layernorm", function() return x:layer_norm() end)
t("rms_norm", function() return x:rms_norm() end)
-- backward pieces
local xg = x:clone():requires_grad_()
local g = as.randn(788, 3072)
t("gelu bwd", function() local y = as.gelu(xg, "none"); y:backward(g); xg.grad = nil end)
t("gelu_tanh bwd", function() local y = as.gelu(xg, "tanh"); y:backward(g); xg.grad = nil end)
t("layernorm bwd", function() local y = xg:layer_norm(); y:backward(g); xg.grad = nil end)
local sg = s:clone():requires_grad_()
local gs = as.randn(788 * 12, 197)
t("softmax bwd", function() local y = sg:softmax(-1); y:backward(gs); sg.grad = nil end)
local logits = as.randn(1024, 50257)
local tgt = (as.rand(1024) * 50257):long()
t("cross_entropy", function() return as.F.cross_entropy(logits, tgt) end)
local lg = logits:clone():requires_grad_()
t("xent fwd+bwd", function() local l = as.F.cross_entropy(lg, tgt); l:backward(); lg.grad = nil end)
local lin = as.nn.Linear(3072, 3072)
lin:requires_grad_()
local opt = as.optim.AdamW(lin:parameters(), { lr = 1e-3 })
for _, p in ipairs(lin:parameters()) do p.grad = as.randn(table.unpack(p:shape())) end
t("adamw 9.4M", function() opt:step() end)
