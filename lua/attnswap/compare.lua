-- as.compare: run a model as it is and once per named attention
-- implementation, and show what each swap does to time, memory and output.
local core = require "attnswap.core"
local swap = require "attnswap.swap"
local registry = require "attnswap.registry"

local C = {}

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  return s[(#s + 1) // 2]
end

local function call(model, inputs)
  local out = model(table.unpack(inputs, 1, inputs.n or #inputs))
  if type(out) == "table" and not core.is_tensor(out) then out = out[1] end
  if not core.is_tensor(out) then error("compare: the model's first output is not a tensor", 3) end
  return out
end

local function measure(model, inputs, repeats)
  call(model, inputs) -- warm-up
  collectgarbage()
  collectgarbage()
  core.reset_peak_memory()
  local base = core.memory_stats().allocated
  local times, out = {}, nil
  for i = 1, repeats do
    local t0 = core.clock()
    out = call(model, inputs)
    times[i] = core.clock() - t0
  end
  return out, median(times), core.memory_stats().peak - base
end

local function stats(out, ref)
  local a, b = out:float(), ref:float()
  local d = (a - b):abs()
  local max_abs = d:max():item()
  local rel = max_abs / math.max(b:abs():max():item(), 1e-30)
  local fa, fb = a:flatten(), b:flatten()
  local cos = (fa * fb):sum():item() / math.max(math.sqrt((fa * fa):sum():item() * (fb * fb):sum():item()), 1e-30)
  local top1
  if b:dim() == 2 and b:size(2) > 1 then
    top1 = a:argmax(2):eq(b:argmax(2)):float():mean():item()
  end
  return max_abs, rel, cos, top1
end

local function fmt_bytes(n)
  if n >= 1 << 20 then return string.format("%.1f MiB", n / (1 << 20)) end
  return string.format("%.1f KiB", n / 1024)
end

--- compare(model, inputs, names [, {repeats = 3, out = io.stdout, quiet = false, swap_opts = {...}, opts = {...}}])
--- inputs: a tensor or a list of forward arguments.  Returns the rows.
function C.compare(model, inputs, names, o)
  if not core.is_module(model) then
    error("bad argument #1 to 'compare' (Module expected, got " .. type(model) .. ")", 2)
  end
  if core.is_tensor(inputs) then inputs = { inputs } end
  if type(inputs) ~= "table" then error("bad argument #2 to 'compare' (tensor or list of inputs expected, got " .. type(inputs) .. ")", 2) end
  if type(names) == "string" then names = { names } end
  if type(names) ~= "table" or #names == 0 then
    error("bad argument #3 to 'compare' (list of attention names expected)", 2)
  end
  for _, n in ipairs(names) do
    if not registry.attention.exists(n) then
      error(string.format("compare: no attention named '%s' (registered: %s)", tostring(n),
        table.concat(registry.attention.names(), ", ")), 2)
    end
  end
  o = o or {}
  local repeats = o.repeats or 3
  local ref, t_ref, m_ref = measure(model, inputs, repeats)
  local rows = { { name = "(as is)", time = t_ref, memory = m_ref, max_abs = 0, rel = 0, cos = 1,
    top1 = (ref:dim() == 2 and ref:size(2) > 1) and 1 or nil } }
  for _, name in ipairs(names) do
    local s <close> = swap.swapped(model, registry.attention.is_core, name, (o.opts or {})[name], o.swap_opts)
    local out, t, m = measure(s.model, inputs, repeats)
    local max_abs, rel, cos, top1 = stats(out, ref)
    rows[#rows + 1] = { name = name, time = t, memory = m, max_abs = max_abs, rel = rel, cos = cos, top1 = top1,
      swapped = #s.report.swapped }
  end
  if not o.quiet then
    local out = o.out or io.stdout
    out:write(string.format("%-22s %10s %9s %12s %11s %10s %10s %7s\n", "implementation", "time", "speed-up",
      "peak memory", "max |diff|", "rel diff", "cosine", "top-1"))
    for _, r in ipairs(rows) do
      out:write(string.format("%-22s %8.2f ms %8.2fx %12s %11.2e %10.2e %10.6f %7s\n", r.name, r.time * 1e3,
        t_ref / r.time, fmt_bytes(r.memory), r.max_abs, r.rel, r.cos,
        r.top1 and string.format("%.0f%%", 100 * r.top1) or "-"))
    end
  end
  return rows
end

return C
