-- The Lua face of the CUDA backend, run by attnswap-run (ctest label cuda):
-- device moves, as.cuda, a model moved with model:to("cuda") giving the
-- CPU's outputs, swaps on the GPU, and clear errors.  Exit 77: no GPU here.
local t = dofile((arg[0]:match("^(.*)/") or ".") .. "/harness.lua")("cuda_lua")
local check = t.check

local function maxdiff(a, b)
  return (a:cpu():float() - b:cpu():float()):abs():max():item()
end

print(string.format("devices: %d", as.cuda.device_count()))

-- tensors move and come back
as.manual_seed(1)
local x = as.randn(3, 5)
local g = x:cuda()
check(g:device() == "cuda:0", "t:cuda() device is " .. g:device())
check(x:to("cuda"):device() == "cuda:0", "t:to('cuda')")
check(maxdiff(g:cpu(), x) == 0, "round trip is exact")
check(g:cpu():device() == "cpu", "t:cpu()")
check(maxdiff((g * 2 + 1):exp(), (x * 2 + 1):exp()) < 1e-5, "math on the GPU")
check(tostring(g):find("cuda:0") ~= nil, "print names the device: " .. tostring(g))
check(g:sum():item() - x:sum():item() < 1e-4, "item() from the GPU")

-- mixing devices: a clear error naming both
local ok, err = pcall(function() return x + g end)
check(not ok and tostring(err):find("cpu") and tostring(err):find("cuda:0"), "mixed devices error: " .. tostring(err))

-- a model, moved whole, gives the CPU's output
local model = nn.Sequential(
  nn.TransformerBlock { dim = 64, num_heads = 4 },
  nn.TransformerBlock { dim = 64, num_heads = 4 },
  nn.LayerNorm(64)
)
model:eval()
local inp = as.randn(2, 37, 64)
local want = model(inp)
model:to("cuda")
local got = model(inp:cuda())
check(got:device() == "cuda:0", "output on the GPU")
local d = maxdiff(got, want)
print(string.format("TransformerBlock x2 on cuda vs cpu: max |diff| = %.3g", d))
check(d < 1e-4, "model on cuda matches the cpu: " .. d)

-- swap on the GPU: flash (the CUDA kernel) and back
as.swap_attention(model, "scaled_dot_product", "flash_attention", {}, { quiet = true })
local flash = model(inp:cuda())
d = maxdiff(flash, want)
print(string.format("after the swap to flash_attention: max |diff| = %.3g (backend %s)", d, as.sdpa_backend and as.sdpa_backend() or "?"))
check(d < 1e-4, "flash on cuda matches: " .. d)

-- bfloat16 model on the GPU within bf16 tolerance
model:to("bfloat16")
local half = model(inp:cuda():to("bfloat16"))
check(half:dtype() == "bfloat16", "bf16 output dtype " .. half:dtype())
d = maxdiff(half, want)
print(string.format("bfloat16 on cuda: max |diff| = %.3g", d))
check(d < 0.15, "bf16 model close to fp32: " .. d)

-- every zoo implementation runs on cuda (its ops path) and gives the CPU kernel's output
as.manual_seed(3)
local zq, zk, zv = as.randn(2, 4, 37, 16), as.randn(2, 2, 53, 16), as.randn(2, 2, 53, 16)
local zmask = as.rand(2, 1, 37, 53):gt(0.2)
zmask[1][1][5] = false -- a fully masked row
for _, spec in ipairs {
  { "sparse_attention", { block_size = 8, causal = true } }, { "local_attention", { window_size = 5 } },
  { "sink_attention", { window_size = 6, num_sinks = 2 } }, { "dynamic_attention", { top_k = 7 } },
  { "relative_attention", { num_heads = 4 } }, { "relative_attention", { alibi = true, causal = true } },
  { "adaptive_attention", { num_heads = 4, init_span = 0.01 } },
  { "gated_attention", { num_heads = 4, head_dim = 16 } }, { "entmax_attention", { alpha = 1.5 } },
  { "entmax_attention", { alpha = 2, causal = true } }, { "entmax_attention", { alpha = 1.25 } },
  { "sigmoid_attention", {} }, { "cosine_attention", { num_heads = 4 } },
  { "flex_attention", { block_size = 16, causal = true } },
  { "linear_attention", { causal = true } }, { "performer_attention", { causal = true, nb_features = 32 } },
  { "efficient_attention", {} }, { "nystrom_attention", { num_landmarks = 8 } },
} do
  local name, opts = spec[1], spec[2]
  local core = as.attention.new(name, opts)
  core:eval()
  local linear = name:find("linear") or name:find("performer") or name:find("efficient") or name:find("nystrom")
  local m = not linear and zmask or nil
  local okc, want = pcall(core, zq, zk, zv, m)
  core:to("cuda")
  local okg, got = pcall(core, zq:cuda(), zk:cuda(), zv:cuda(), m and m:cuda())
  check(okc and okg, name .. " runs on cpu and cuda: " .. tostring(not okc and want or got))
  if okc and okg then
    check(got:device() == "cuda:0", name .. " output stays on cuda")
    local dz = maxdiff(got, want)
    check(dz <= 1e-4, string.format("%s on cuda matches the CPU kernel: %.3g", name, dz))
  end
end

-- gradients on CUDA equal the CPU's (autograd's formulas are tensor ops; the
-- embedding's scatter-add is a CUDA kernel of its own)
do
  as.manual_seed(5)
  local w0, x0 = as.randn(10, 8), as.randn(2, 5, 8)
  local ids = as.tensor({ { 1, 3, 3, 0, 9 }, { 2, 2, 2, 7, 1 } }, "int64")
  local function grads(dev)
    local w = w0:clone():to(dev):requires_grad_()
    as.manual_seed(6)
    local blk = nn.TransformerBlock { dim = 8, num_heads = 2 }
    blk:to(dev)
    local x = as.embedding(w, ids:to(dev)) + x0:to(dev)
    local loss = (blk(x) ^ 2):mean()
    loss:backward()
    return w.grad:cpu(), loss:item()
  end
  local gc, lc = grads("cpu")
  local gg, lg = grads("cuda")
  local dz = maxdiff(gg, gc)
  check(dz <= 1e-4 and math.abs(lg - lc) <= 1e-4,
    string.format("gradients through embedding and a TransformerBlock on cuda match the CPU: %.3g", dz))
  -- t:to("cuda") of a CPU leaf sends its gradient back to the CPU
  local leaf = as.randn(3, 4):requires_grad_()
  local twice = (leaf:to("cuda") * 2):sum()
  twice:backward()
  check(leaf.grad and leaf.grad:device() == "cpu" and maxdiff(leaf.grad, as.ones(3, 4) * 2) == 0,
    "the gradient of t:to('cuda') goes back to t on the cpu")
end

-- the backwards of issue 16 part B on CUDA equal the CPU's: max/min (over a
-- dim and over everything, with ties), var/std, prod with zeros, tril/triu,
-- cat of many tensors, a custom Function and a checkpoint with dropout
do
  as.manual_seed(9)
  local a0 = as.randn(4, 7)
  a0[2][3] = 0
  a0[3][1], a0[3][5] = 0, 0
  local w0 = as.randn(4, 7)
  local Sq = as.autograd.Function {
    forward = function(ctx, t) ctx:save_for_backward(t) return t * t end,
    backward = function(ctx, g) return g * 2 * ctx.saved_tensors[1] end,
  }
  local function run(dev)
    local a = a0:clone():to(dev):requires_grad_()
    local w = w0:to(dev)
    local parts = {}
    for i = 1, 6 do parts[i] = a:narrow(2, i, 1) end
    local terms = {
      a:max(2):sum(), a:min(1):sum(), a:max(), (a:var(2) * 2):sum(), a:std(), a:prod(2):sum(), a:prod(),
      (a:t():tril(1) * w:t()):sum(), (a:triu(-1) * w):sum(), (as.cat(parts, 2) * w:narrow(2, 1, 6)):sum(),
      (Sq:apply(a) * w):sum(),
    }
    local loss = terms[1]
    for i = 2, #terms do loss = loss + terms[i] end
    loss:backward()
    return a.grad:cpu()
  end
  local dz = maxdiff(run("cuda"), run("cpu"))
  check(dz <= 1e-3, string.format("max/min/var/std/prod/tril/triu/cat/Function gradients on cuda match the CPU: %.3g", dz))
  local function ckpt(dev, use)
    as.manual_seed(3)
    local blk = nn.TransformerBlock { dim = 8, num_heads = 2, dropout = 0.25 }
    blk:to(dev)
    blk:requires_grad_(true)
    blk:train()
    local x = as.randn(2, 3, 8):to(dev):requires_grad_()
    as.manual_seed(4)
    local y = use and as.checkpoint(function(t) return blk(t) end, x) or blk(x)
    ;(y ^ 2):sum():backward()
    return x.grad:cpu()
  end
  dz = maxdiff(ckpt("cuda", true), ckpt("cuda", false))
  check(dz <= 1e-5, string.format("checkpointing with dropout on cuda gives the plain gradients: %.3g", dz))
end

-- the fused optimizer steps on CUDA give the CPU's (same float32 operations in
-- the same order); bfloat16 parameters keep a float32 master copy on the GPU
do
  local function run_opt(make, dev, dt, steps)
    as.manual_seed(11)
    local p0 = as.randn(37, 53)
    local p = p0:to(dt):to(dev):requires_grad_()
    local opt = make({ p })
    for _ = 1, steps do
      p.grad = as.randn(37, 53):to(dt):to(dev)
      opt:step()
    end
    return p, opt
  end
  for _, case in ipairs {
    { "AdamW", function(ps) return as.optim.AdamW(ps, { lr = 1e-2, weight_decay = 0.1 }) end },
    { "AdamW amsgrad", function(ps) return as.optim.AdamW(ps, { lr = 1e-2, amsgrad = true }) end },
    { "Adam", function(ps) return as.optim.Adam(ps, { lr = 1e-2, weight_decay = 0.05 }) end },
    { "SGD nesterov", function(ps) return as.optim.SGD(ps, { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.01 }) end },
  } do
    local pc = run_opt(case[2], "cpu", "float32", 5)
    local pg, og = run_opt(case[2], "cuda", "float32", 5)
    local d = maxdiff(pg, pc)
    print(string.format("%s on cuda vs cpu, float32, 5 steps: max |diff| = %.3g", case[1], d))
    check(pg:device() == "cuda:0" and d <= 1e-6, case[1] .. " on cuda matches the cpu: " .. d)
    local st = og.state[1][1]
    local buf = st.exp_avg or st.momentum_buffer
    check(buf:device() == "cuda:0" and buf:dtype() == "float32", case[1] .. ": state float32 on the GPU")
  end
  local make = function(ps) return as.optim.AdamW(ps, { lr = 1e-4, weight_decay = 0 }) end
  local pb, ob = run_opt(make, "cuda", "bfloat16", 6)
  local master = ob.state[1][1].master_param
  check(pb:dtype() == "bfloat16" and master:dtype() == "float32" and master:device() == "cuda:0",
    "bf16 AdamW keeps a float32 master on the GPU")
  check(maxdiff(master:bfloat16(), pb) == 0, "the bf16 parameter is its master's rounding")
  local pcpu, ocpu = run_opt(make, "cpu", "bfloat16", 6)
  local dm = maxdiff(master, ocpu.state[1][1].master_param)
  print(string.format("bf16 AdamW master weights, cuda vs cpu: max |diff| = %.3g", dm))
  check(dm <= 1e-6 and maxdiff(pb, pcpu) == 0, "bf16 AdamW on cuda matches the cpu's: " .. dm)
  -- a step on a parameter whose grad is on another device is a clear error
  local p = as.randn(4):cuda():requires_grad_()
  local opt = as.optim.AdamW({ p })
  p.grad = as.randn(4):cuda()
  opt:step()
  local okg, e = pcall(function()
    as.core.adamw_step(p, as.randn(4), opt.state[1][1].exp_avg, opt.state[1][1].exp_avg_sq, nil, nil,
      1e-3, 0.9, 0.999, 1e-8, 0, 2, true, false, false)
  end)
  check(not okg and tostring(e):find("adamw_step: the parameter is on cuda:0, its gradient on cpu", 1, true),
    "mixed devices in a fused step: " .. tostring(e))
end

-- 16-bit products whose rows are not 16-byte aligned (an odd vocabulary) run
-- on padded copies (runtime/cuda/gemm.c): the same numbers as the CPU's, in
-- every transpose, an odd K too
do
  as.manual_seed(5)
  for _, dt in ipairs { "bfloat16", "float16" } do
    for _, case in ipairs {
      { 512, 1000, 2049, false, false }, { 512, 1001, 2049, true, false },
      { 515, 1024, 2051, false, true }, { 2049, 512, 1003, true, true },
    } do
      local M, K, N, ta, tb = table.unpack(case)
      local a = ta and as.randn(K, M):to(dt):t() or as.randn(M, K):to(dt)
      local b = tb and as.randn(N, K):to(dt):t() or as.randn(K, N):to(dt)
      local want = a:float():matmul(b:float())
      local got = a:cuda():matmul(b:cuda()):cpu():float()
      local d = (got - want):abs():max():item()
      check(d <= 0.02 * want:abs():max():item(),
        string.format("%s matmul (%d x %d) @ (%d x %d)%s%s: max diff %.3g", dt, M, K, K, N, ta and " a^T" or "",
          tb and " b^T" or "", d))
    end
  end
end

-- cross_entropy's fused rows on the GPU (kernels/cuda/cross_entropy.cu)
-- against the CPU's: a GPT-2-sized vocabulary, bf16 and float32, an ignored row
do
  as.manual_seed(6)
  for _, dt in ipairs { "float32", "bfloat16" } do
    local x = (as.randn(37, 50257) * 2):to(dt)
    local ids = {}
    for i = 1, 37 do ids[i] = (i * 7919) % 50257 end
    ids[5] = -100
    local t = as.tensor(ids):long()
    local function run(dev)
      local xl = x:detach():to(dev):requires_grad_() -- detached: x stays out of this run's graph
      local loss = as.F.cross_entropy(xl, t:to(dev))
      loss:backward()
      return loss:float():item(), xl.grad:cpu():float()
    end
    local lc, gc = run("cpu")
    local lg, gg = run("cuda")
    local tol = dt == "float32" and 1e-5 or 1e-2
    check(math.abs(lc - lg) <= tol * math.max(1, math.abs(lc)), string.format("%s cross_entropy %g vs %g", dt, lg, lc))
    local d = (gc - gg):abs():max():item()
    check(d <= tol, string.format("%s cross_entropy gradient max diff %.3g", dt, d))
  end
end

-- clip_grad_norm_'s multi-tensor sweeps on the GPU (kernels/cuda/optim.cu): 70
-- tensors of three dtypes (two launches), against the CPU's
do
  as.manual_seed(8)
  local cpu_ts, gpu_ts = {}, {}
  for i = 1, 70 do
    local t = as.randn((i * 37) % 5001 + 1)
    if i % 3 == 0 then t = t:to("bfloat16") elseif i % 5 == 0 then t = t:to("float16") end
    cpu_ts[i], gpu_ts[i] = t, t:cuda()
  end
  local want, got = as.core.sum_squares(cpu_ts):item(), as.core.sum_squares(gpu_ts):item()
  check(math.abs(want - got) <= 1e-4 * want, string.format("sum_squares on cuda %.6g vs cpu %.6g", got, want))
  as.core.scale_all_(cpu_ts, 0.3)
  as.core.scale_all_(gpu_ts, 0.3)
  local worst = 0
  for i = 1, 70 do worst = math.max(worst, (gpu_ts[i]:cpu():float() - cpu_ts[i]:float()):abs():max():item()) end
  check(worst == 0, "scale_all_ on cuda equals the cpu's: max diff " .. worst)
end

-- memory: the caching allocator holds what it freed
as.cuda.synchronize()
local m = as.cuda.memory_stats()
check(m.reserved >= m.allocated and m.num_mallocs > 0, "memory_stats")
print(string.format("cuda memory: %.1f MiB allocated, %.1f MiB reserved, peak %.1f MiB, %d cudaMalloc calls",
  m.allocated / 2^20, m.reserved / 2^20, m.peak_allocated / 2^20, m.num_mallocs))
ok, err = pcall(as.cuda.memory_stats, 99)
check(not ok and tostring(err):find("no CUDA device 99"), "memory_stats(99): " .. tostring(err))

t.finish(true) -- close the state: every tensor freed, so a leak checker sees real leaks only
