-- Float32 products on CUDA: SGEMM ("highest") against the default ("high":
-- 3xTF32 where runtime/cuda/gemm.c takes it), and bfloat16 for scale, at
-- square sizes, the linear layers of GPT-2 small (8 x 1024 tokens) and
-- ViT-B/16 (32 images: 6304 tokens), GPT-2's LM head, and small products
-- near the threshold.  Medians of repeats, each timing a burst of calls.
-- Under ATTNSWAP_F32_GEMM=tf32x3 "high" is 3xTF32 at every size (and so is
-- "highest"): run it both ways to see where the threshold should sit.
--   attnswap-run bench/matmul_cuda.lua [--repeats N] [--out rows.json]
local as = require "attnswap"
local bench = require "attnswap.bench"

local o = bench.options(arg, { repeats = 9, out = false }, "matmul_cuda")
if not as.cuda.is_available() then
  io.stderr:write("matmul_cuda: no CUDA device is available\n")
  os.exit(1)
end

-- {label, m, k, n, linear}: m x k times k x n; linear: x @ W^T with W n x k, plus a bias
local cases = {
  { "128^3", 128, 128, 128 }, { "256^3", 256, 256, 256 }, { "384^3", 384, 384, 384 },
  { "512^3", 512, 512, 512 }, { "768^3", 768, 768, 768 }, { "1024^3", 1024, 1024, 1024 },
  { "2048^3", 2048, 2048, 2048 }, { "4096^3", 4096, 4096, 4096 },
  { "64 x 768 x 768", 64, 768, 768, true }, { "256 x 768 x 768", 256, 768, 768, true },
  { "1024 x 768 x 3072", 1024, 768, 3072, true },
  { "gpt2 qkv", 8192, 768, 2304, true }, { "gpt2 proj", 8192, 768, 768, true },
  { "gpt2 fc", 8192, 768, 3072, true }, { "gpt2 fc2", 8192, 3072, 768, true },
  { "gpt2 lm head", 8192, 768, 50257 },
  { "vit qkv", 6304, 768, 2304, true }, { "vit proj", 6304, 768, 768, true },
  { "vit fc", 6304, 768, 3072, true }, { "vit fc2", 6304, 3072, 768, true },
}

local dev = as.cuda.get_device_properties and as.cuda.get_device_properties(0)
print(string.format("%s, ATTNSWAP_F32_GEMM=%s, %s", dev and dev.name or "cuda:0", os.getenv("ATTNSWAP_F32_GEMM") or "-",
  os.date("!%H:%M:%S UTC")))
print(string.format("%-20s %14s %14s %14s %8s %10s", "shape", "highest TF/s", "high TF/s", "bf16 TF/s", "high/hst",
  "rel. diff"))
local rows = {}
for _, s in ipairs(cases) do
  local label, m, k, n, linear = s[1], s[2], s[3], s[4], s[5]
  local flops = 2 * m * k * n
  local burst = math.max(1, math.min(50, math.floor(2e10 / flops)))
  local a = as.randn(m, k):cuda()
  local w = (linear and as.randn(n, k) or as.randn(k, n)):cuda()
  local bias = linear and as.randn(n):cuda() or nil
  local function run(x, wt, b)
    return function()
      local y
      for _ = 1, burst do y = linear and as.linear(x, wt, b) or x:matmul(wt) end
      return y
    end
  end
  local t, out = {}, {}
  for _, p in ipairs { "highest", "high" } do
    as.set_float32_matmul_precision(p)
    out[p] = run(a, w, bias)()
    t[p] = bench.time(run(a, w, bias), o.repeats, 1, as.cuda.synchronize) / burst
  end
  as.set_float32_matmul_precision("high")
  local ab, wb, bb = a:to("bfloat16"), w:to("bfloat16"), bias and bias:to("bfloat16")
  local tb = bench.time(run(ab, wb, bb), o.repeats, 1, as.cuda.synchronize) / burst
  local x, y = out.high:cpu(), out.highest:cpu()
  local d = (x - y):abs():max():item() / math.max(y:abs():max():item(), 1e-30)
  rows[#rows + 1] = { shape = label, m = m, k = k, n = n, highest_tflops = flops / t.highest / 1e12,
    high_tflops = flops / t.high / 1e12, bf16_tflops = flops / tb / 1e12, rel_diff = d }
  local r = rows[#rows]
  print(string.format("%-20s %14.1f %14.1f %14.1f %7.2fx %10.1e", label, r.highest_tflops, r.high_tflops,
    r.bf16_tflops, t.highest / t.high, d))
  io.stdout:flush()
  a, w, bias, ab, wb, bb, out, x, y = nil, nil, nil, nil, nil, nil, nil, nil, nil
  collectgarbage()
end
if o.out then
  bench.write(o.out, bench.json(rows, { "shape", "m", "k", "n", "highest_tflops", "high_tflops", "bf16_tflops",
    "rel_diff" }))
end
