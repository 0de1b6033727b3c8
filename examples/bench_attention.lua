-- What every attention implementation costs on this machine.
--   attnswap-run examples/bench_attention.lua [--impl a,b] [--L 256,1024] [--D 64,128]
--       [--causal] [--device cpu|cuda] [--threads N] [--B 1] [--H 8] [--repeats 3] [--budget 20] [--out DIR] [--quick]
--       [--backward [--torch FILE]]
-- Sweeps implementations x sequence lengths x head dims; reports the median
-- time after a warm-up, GFLOP/s (4 B H L^2 D, unmasked pairs only when
-- causal), that rate as a % of sgemm measured just before in this process,
-- the peak extra memory of the call (tensor storage, exact), and the max and
-- mean error against exact attention on the same input.  Progress on stderr;
-- a table on stdout; results.json, results.csv and plot.svg in --out DIR, or
-- else in a new folder under $TMPDIR (or /tmp), whose name it prints.
-- --backward times a training step instead: q, k, v requiring grad, the
-- forward and out:backward(g) with a fixed random g; FLOPs are the forward's
-- x 3.5 (backward = 2.5 forwards, FlashAttention's convention); the extra
-- memory is the step's (gradients, saved tensors); for the exact
-- implementations the max error of dq, dk, dv against the materialising
-- sdp math path's.  A backward that fails is a row with its error.  --torch
-- FILE: bench/torch_cpu_sdpa_bwd.py's JSON (run with --bh B*H, same L, D,
-- causal) gives a "vs torch" column, PyTorch's time / ours, for exact rows.
local as = require "attnswap"
local bench = require "attnswap.bench"

-- the header above, for --help and after a bad option
local function usage(status, msg)
  local out = status == 0 and io.stdout or io.stderr
  if msg then out:write("bench_attention: ", msg, "\n") end
  for line in io.lines(arg[0]) do
    if not line:match("^%-%-") then break end
    out:write(line:sub(4), "\n")
  end
  os.exit(status)
end

local function list(s, num)
  local out = {}
  for item in s:gmatch("[^,]+") do out[#out + 1] = num and assert(math.tointeger(tonumber(item)), "not an integer: " .. item) or item end
  return out
end

-- --device cuda: the GPU sweep (examples/bench_attention_cuda.lua) takes over
for j = 1, #arg - 1 do
  if arg[j] == "--device" and arg[j + 1]:match("^cuda") then
    local dir = (arg[0] or ""):match("^(.*)/") or "."
    return dofile(dir .. "/bench_attention_cuda.lua")
  elseif arg[j] == "--device" and arg[j + 1] ~= "cpu" then
    error("bench_attention: --device must be cpu or cuda, got " .. tostring(arg[j + 1]))
  end
end

local o = { L = { 256, 512, 1024, 2048, 4096, 8192, 16384 }, D = { 64, 128 }, causal = false, B = 1, H = 8,
  repeats = 3, budget = 20 }
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--impl" then o.impl = list(v); i = i + 1
  elseif a == "--L" then o.L = list(v, true); i = i + 1
  elseif a == "--D" then o.D = list(v, true); i = i + 1
  elseif a == "--causal" then o.causal = true
  elseif a == "--threads" then as.set_num_threads(assert(math.tointeger(tonumber(v)), "--threads needs an integer")); i = i + 1
  elseif a == "--B" then o.B = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--H" then o.H = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--repeats" then o.repeats = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--budget" then o.budget = assert(tonumber(v)); i = i + 1
  elseif a == "--out" then o.out = v or usage(2, "--out needs a folder"); i = i + 1
  elseif a == "--device" then i = i + 1 -- cpu
  elseif a == "--backward" then o.backward = true
  elseif a == "--torch" then o.torch = v or usage(2, "--torch needs a file"); i = i + 1
  elseif a == "--quick" then o.L, o.D, o.repeats, o.H = { 64, 128 }, { 16 }, 1, 2
  elseif a == "--help" or a == "-h" then usage(0)
  else usage(2, "unknown option " .. tostring(a)) end
  i = i + 1
end
o.impl = o.impl or as.attention.names()
for _, n in ipairs(o.impl) do
  if not as.attention.exists(n) then
    usage(2, "no attention named '" .. n .. "' (these are: " .. table.concat(as.attention.names(), ", ") .. ")")
  end
end

if o.torch and not o.backward then usage(2, "--torch goes with --backward on the CPU (the forward's peer is --device cuda)") end

local SDP_MEMORY_CAP = 2 << 30 -- bytes of scores the materialising reference may allocate

-- the sgemm rate of this process, right before the sweep
local n = 1024
local sgemm_gflops = 2 * n ^ 3 / as.core.raw_sgemm_seconds(n, n, n, 5) / 1e9
local machine = "unknown CPU"
for line in io.lines("/proc/cpuinfo") do
  local m = line:match("^model name%s*:%s*(.+)")
  if m then machine = m break end
end
local function load()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or ""
  if f then f:close() end
  return s:match("^(%S+ %S+ %S+)") or "?"
end
print(string.format("machine: %s, %d threads; sgemm %d^3: %.1f GFLOP/s; B=%d H=%d %s%s; load %s",
  machine, as.get_num_threads(), n, sgemm_gflops, o.B, o.H, o.causal and "causal" or "non-causal",
  o.backward and ", forward + backward (FLOPs x 3.5)" or "", load()))

local function make_core(name, D)
  for _, opts in ipairs { { causal = o.causal, num_heads = o.H, head_dim = D }, { causal = o.causal, num_heads = o.H }, { causal = o.causal } } do
    local ok, c = pcall(as.attention.new, name, opts)
    if ok then return c end
  end
  local ok, err = pcall(as.attention.new, name, { causal = o.causal })
  return nil, tostring(err):match("[^\n]*")
end

-- --torch: PyTorch's rows by L/D/causal/BH (its q is (1, BH, L, D))
local peer = {}
if o.torch then
  for _, r in ipairs(bench.read_rows(o.torch, as.json_decode)) do
    peer[bench.key(r, "L", "D", "causal", "BH")] = r
  end
end

-- the implementations whose gradients are compared with exact attention's
local exact_of = {}
for _, name in ipairs(o.impl) do exact_of[name] = as.attention.info(name).exact or nil end

-- the exact gradients of one shape: the materialising sdp math path's dq, dk, dv
local function reference_grads(q, k, v, g, L)
  if o.B * o.H * L * L * 4 * 2 > SDP_MEMORY_CAP then return nil end
  local math_core = as.attention.new("scaled_dot_product", { causal = o.causal, backend = "math" })
  bench.step(math_core, { q, k, v }, g)()
  local ref = { q.grad, k.grad, v.grad }
  q.grad, k.grad, v.grad = nil, nil, nil
  return ref
end

-- one measurement: forward (the default) or a forward + backward step
local function measure(row, core, q, k, v, g, ref)
  local out
  if not o.backward then
    collectgarbage()
    as.core.reset_peak_memory()
    local base = as.core.memory_stats().allocated
    out = core(q, k, v)
    row.memory = as.core.memory_stats().peak - base
    row.time = bench.time(function() core(q, k, v) end, o.repeats, 0)
    return out
  end
  local step = bench.step(core, { q, k, v }, g)
  q.grad, k.grad, v.grad = nil, nil, nil
  if core.zero_grad then core:zero_grad() end
  collectgarbage()
  as.core.reset_peak_memory()
  local base = as.core.memory_stats().allocated
  out = step() -- also the warm-up
  row.memory = as.core.memory_stats().peak - base
  if exact_of[row.impl] and ref then row.grad_err = bench.max_abs_diff({ q.grad, k.grad, v.grad }, ref) end
  row.fwd_time = bench.time(function() core(q, k, v) end, o.repeats, 0)
  row.time = bench.time(step, o.repeats, 0)
  if core.zero_grad then core:zero_grad() end
  q.grad, k.grad, v.grad = nil, nil, nil
  return out
end

local flop_factor = o.backward and bench.FWD_BWD_FLOPS or 1
-- calls a shape costs: the timed ones, their warm-up, and with --backward the forward alone
local calls = o.backward and 2 * o.repeats + 1 or o.repeats + 1

local rows, total, done = {}, #o.impl * #o.L * #o.D, 0
local last_time = {}
for _, D in ipairs(o.D) do
  for _, L in ipairs(o.L) do
    as.manual_seed(0)
    local q, k, v = as.randn(o.B, o.H, L, D), as.randn(o.B, o.H, L, D), as.randn(o.B, o.H, L, D)
    local exact = as.flash_attention(q, k, v, nil, { causal = o.causal })
    local g, ref
    if o.backward then
      g = as.randn(o.B, o.H, L, D)
      for _, x in ipairs { q, k, v } do x:requires_grad_() end
      for _, name in ipairs(o.impl) do
        if exact_of[name] then
          bench.progress(done, total, string.format("sdp math gradients L=%d D=%d", L, D))
          ref = reference_grads(q, k, v, g, L)
          break
        end
      end
    end
    local pairs_ = o.causal and L * (L + 1) / 2 or L * L
    local flops = 4 * o.B * o.H * pairs_ * D * flop_factor
    for _, name in ipairs(o.impl) do
      done = done + 1
      bench.progress(done, total, string.format("%s L=%d D=%d", name, L, D))
      local row = { impl = name, L = L, D = D, causal = o.causal, B = o.B, H = o.H, backward = o.backward or nil }
      local prev = last_time[name .. D]
      -- the cost's growth in L, from the registry: "O(L D^2)" linear, else quadratic
      local complexity = as.attention.info(name).complexity or ""
      local power = complexity:match("^O%(L ") and 1 or 2
      local predicted = prev and prev.t * (L / prev.L) ^ power or 0
      local core, why = make_core(name, D)
      if not core then
        row.skipped = "unsupported: " .. why
      elseif name == "scaled_dot_product" and o.B * o.H * L * L * 4 * 2 > SDP_MEMORY_CAP then
        row.skipped = "memory"
      elseif predicted * calls > o.budget then
        row.skipped = string.format("time (predicted %.0f s a call)", predicted)
      else
        local out
        local ok, err = pcall(function() out = measure(row, core, q, k, v, g, ref) end)
        if ok then
          as.no_grad(function()
            local d = (out:float() - exact):abs()
            row.max_err, row.mean_err = d:max():item(), d:mean():item()
          end)
          row.gflops = flops / row.time / 1e9
          row.pct_sgemm = 100 * row.gflops / sgemm_gflops
          if name == "flash_attention" then row.backend = as.sdpa_backend() end
          last_time[name .. D] = { t = row.time, L = L }
          local p = exact_of[name] and peer[bench.key(row, "L", "D", "causal") .. "/" .. (o.B * o.H)]
          if p and p.total_ms then
            row.torch_ms, row.vs_torch = p.total_ms, p.total_ms / 1e3 / row.time
          end
        else
          row.skipped = "error: " .. tostring(err):match("[^\n]*")
          q.grad, k.grad, v.grad = nil, nil, nil
        end
      end
      rows[#rows + 1] = row
    end
    q, k, v, exact, g, ref = nil, nil, nil, nil, nil, nil
    collectgarbage()
  end
end

local function num(fmt, x) return x and string.format(fmt, x) or "-" end
print()
if o.backward then
  print(string.format("%-22s %6s %4s %10s %12s %9s %8s %11s %10s %10s %9s", "implementation", "L", "D", "fwd",
    "fwd+bwd", "GFLOP/s", "% sgemm", "extra mem", "max err", "grad err", "vs torch"))
else
  print(string.format("%-22s %6s %4s %11s %9s %8s %11s %10s %10s", "implementation", "L", "D", "time", "GFLOP/s",
    "% sgemm", "extra mem", "max err", "mean err"))
end
for _, r in ipairs(rows) do
  if r.skipped then
    print(string.format("%-22s %6d %4d   skipped (%s)", r.impl, r.L, r.D, r.skipped))
  elseif o.backward then
    print(string.format("%-22s %6d %4d %7.2f ms %9.2f ms %9.1f %7.1f%% %8.1f MiB %10.2e %10s %9s", r.impl, r.L, r.D,
      r.fwd_time * 1e3, r.time * 1e3, r.gflops, r.pct_sgemm, r.memory / 2 ^ 20, r.max_err, num("%.2e", r.grad_err),
      r.vs_torch and string.format("%.2fx", r.vs_torch) or "-"))
  else
    print(string.format("%-22s %6d %4d %8.2f ms %9.1f %7.1f%% %8.1f MiB %10.2e %10.2e", r.impl, r.L, r.D,
      r.time * 1e3, r.gflops, r.pct_sgemm, r.memory / 2 ^ 20, r.max_err, r.mean_err))
  end
end

-- the files go to --out, else to a fresh folder under $TMPDIR: never into the clone
local function quote(path) return "'" .. path:gsub("'", "'\\''") .. "'" end
if o.out then
  if not os.execute("mkdir -p " .. quote(o.out)) then
    error(string.format("bench_attention: cannot create the --out folder '%s'", o.out))
  end
else
  local p = io.popen('mktemp -d "${TMPDIR:-/tmp}/attnswap-bench.XXXXXX"')
  o.out = p and p:read("l")
  if p then p:close() end
  if not o.out or o.out == "" then
    error("bench_attention: cannot create a temporary folder under " .. (os.getenv("TMPDIR") or "/tmp") ..
      "; pass --out DIR")
  end
end
local keys = { "impl", "L", "D", "causal", "B", "H", "time", "gflops", "pct_sgemm", "memory", "max_err", "mean_err",
  "backend", "skipped" }
if o.backward then
  keys = { "impl", "L", "D", "causal", "B", "H", "backward", "fwd_time", "time", "gflops", "pct_sgemm", "memory",
    "max_err", "mean_err", "grad_err", "torch_ms", "vs_torch", "backend", "skipped" }
end
bench.write(o.out .. "/results.json", bench.json(rows, keys))
bench.write(o.out .. "/results.csv", bench.csv(rows, keys))
local panels = {}
for _, D in ipairs(o.D) do
  local series, by = {}, {}
  for _, r in ipairs(rows) do
    if r.D == D and r.time then
      if not by[r.impl] then
        by[r.impl] = { name = r.impl, points = {} }
        series[#series + 1] = by[r.impl]
      end
      table.insert(by[r.impl].points, { r.L, r.time * 1e3 })
    end
  end
  panels[#panels + 1] = { title = string.format("D = %d, %s", D, o.causal and "causal" or "non-causal"), series = series }
end
bench.write(o.out .. "/plot.svg", bench.svg(panels, {
  title = string.format("attention %s time, B=%d H=%d, %s, %d threads", o.backward and "forward + backward" or "forward",
    o.B, o.H, machine, as.get_num_threads()),
  x_label = "sequence length L", y_label = o.backward and "time per step (ms, log scale)" or "time per call (ms, log scale)",
  y_tick = function(v) return v >= 1 and string.format("%g", v) or string.format("%.0e", v) end }))
print(string.format("load after: %s", load()))
print(string.format("\nwrote %s/results.json, results.csv, plot.svg", o.out))
