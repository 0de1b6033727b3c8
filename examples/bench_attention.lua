-- What every attention implementation costs on this machine.
--   attnswap-run examples/bench_attention.lua [--impl a,b] [--L 256,1024] [--D 64,128]
--       [--causal] [--device cpu|cuda] [--threads N] [--B 1] [--H 8] [--repeats 3] [--budget 20] [--out DIR] [--quick]
-- Sweeps implementations x sequence lengths x head dims; reports the median
-- time after a warm-up, GFLOP/s (4 B H L^2 D, unmasked pairs only when
-- causal), that rate as a % of sgemm measured just before in this process,
-- the peak extra memory of the call (tensor storage, exact), and the max and
-- mean error against exact attention on the same input.  Progress on stderr;
-- a table on stdout; results.json, results.csv and plot.svg in --out DIR, or
-- else in a new folder under $TMPDIR (or /tmp), whose name it prints.
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

local SDP_MEMORY_CAP = 2 << 30 -- bytes of scores the materialising reference may allocate

-- the sgemm rate of this process, right before the sweep
local n = 1024
local sgemm_gflops = 2 * n ^ 3 / as.core.raw_sgemm_seconds(n, n, n, 5) / 1e9
local machine = "unknown CPU"
for line in io.lines("/proc/cpuinfo") do
  local m = line:match("^model name%s*:%s*(.+)")
  if m then machine = m break end
end
print(string.format("machine: %s, %d threads; sgemm %d^3: %.1f GFLOP/s; B=%d H=%d %s",
  machine, as.get_num_threads(), n, sgemm_gflops, o.B, o.H, o.causal and "causal" or "non-causal"))

local function make_core(name, D)
  for _, opts in ipairs { { causal = o.causal, num_heads = o.H, head_dim = D }, { causal = o.causal, num_heads = o.H }, { causal = o.causal } } do
    local ok, c = pcall(as.attention.new, name, opts)
    if ok then return c end
  end
  local ok, err = pcall(as.attention.new, name, { causal = o.causal })
  return nil, tostring(err):match("[^\n]*")
end

local rows, total, done = {}, #o.impl * #o.L * #o.D, 0
local last_time = {}
for _, D in ipairs(o.D) do
  for _, L in ipairs(o.L) do
    as.manual_seed(0)
    local q, k, v = as.randn(o.B, o.H, L, D), as.randn(o.B, o.H, L, D), as.randn(o.B, o.H, L, D)
    local exact = as.flash_attention(q, k, v, nil, { causal = o.causal })
    local pairs_ = o.causal and L * (L + 1) / 2 or L * L
    local flops = 4 * o.B * o.H * pairs_ * D
    for _, name in ipairs(o.impl) do
      done = done + 1
      bench.progress(done, total, string.format("%s L=%d D=%d", name, L, D))
      local row = { impl = name, L = L, D = D, causal = o.causal, B = o.B, H = o.H }
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
      elseif predicted * (o.repeats + 1) > o.budget then
        row.skipped = string.format("time (predicted %.0f s a call)", predicted)
      else
        local out
        collectgarbage()
        as.core.reset_peak_memory()
        local base = as.core.memory_stats().allocated
        local ok, err = pcall(function()
          out = core(q, k, v)
          row.memory = as.core.memory_stats().peak - base
          row.time = bench.time(function() core(q, k, v) end, o.repeats, 0)
        end)
        if ok then
          local d = (out:float() - exact):abs()
          row.max_err, row.mean_err = d:max():item(), d:mean():item()
          row.gflops = flops / row.time / 1e9
          row.pct_sgemm = 100 * row.gflops / sgemm_gflops
          if name == "flash_attention" then row.backend = as.sdpa_backend() end
          last_time[name .. D] = { t = row.time, L = L }
        else
          row.skipped = "error: " .. tostring(err):match("[^\n]*")
        end
      end
      rows[#rows + 1] = row
    end
    q, k, v, exact = nil, nil, nil, nil
    collectgarbage()
  end
end

print()
print(string.format("%-22s %6s %4s %11s %9s %8s %11s %10s %10s", "implementation", "L", "D", "time", "GFLOP/s",
  "% sgemm", "extra mem", "max err", "mean err"))
for _, r in ipairs(rows) do
  if r.skipped then
    print(string.format("%-22s %6d %4d   skipped (%s)", r.impl, r.L, r.D, r.skipped))
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
  title = string.format("attention forward time, B=%d H=%d, %s, %d threads", o.B, o.H, machine, as.get_num_threads()),
  x_label = "sequence length L", y_label = "time per call (ms, log scale)",
  y_tick = function(v) return v >= 1 and string.format("%g", v) or string.format("%.0e", v) end }))
print(string.format("\nwrote %s/results.json, results.csv, plot.svg", o.out))
