-- as.compare: run a model as it is and once per named attention
-- implementation, and show what each swap does to time, memory and output.
--
-- Three things keep the table honest (issue "the first hour", item 5):
-- * sizes: the sequence lengths the model's cores see are probed first; an
--   implementation whose default options would cover the whole sequence
--   (a window of 64 on 65 tokens is exact) is given the options its
--   registration says mean something at that length (the class's sized_options);
-- * a row whose output equals the model's own is marked, so an approximate
--   implementation is never shown as free without saying why;
-- * a swap the implementation refuses (one that would change the model's
--   causality, say) is a row that says so, not an error that ends the table;
-- and times are medians over enough repeats to be stable, with their spread.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local swap = require "attnswap.swap"
local registry = require "attnswap.registry"

local C = {}

local function quantile(sorted, p)
  local x = 1 + (#sorted - 1) * p
  local lo = math.floor(x)
  local hi = math.min(lo + 1, #sorted)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo)
end

local function call(model, inputs)
  local out = model(table.unpack(inputs, 1, inputs.n or #inputs))
  if type(out) == "table" and not core.is_tensor(out) then out = out[1] end
  if not core.is_tensor(out) then error("compare: the model's first output is not a tensor", 3) end
  return out
end

-- Times model(inputs): at least min_repeats calls, more until min_time
-- seconds have gone (at most max_repeats).  Returns the output, the median,
-- the spread (interquartile range over the median), the count and the peak
-- memory above what was allocated before.
local function measure(model, inputs, o)
  call(model, inputs) -- warm-up
  collectgarbage()
  collectgarbage()
  core.reset_peak_memory()
  local base = core.memory_stats().allocated
  local times, out, total = {}, nil, 0
  while #times < o.min_repeats or (total < o.min_time and #times < o.max_repeats) do
    local t0 = core.clock()
    out = call(model, inputs)
    local t = core.clock() - t0
    times[#times + 1], total = t, total + t
  end
  table.sort(times)
  local med = quantile(times, 0.5)
  local spread = (quantile(times, 0.75) - quantile(times, 0.25)) / math.max(med, 1e-12)
  return out, med, spread, #times, core.memory_stats().peak - base
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

-- A stand-in core that notes the key length it sees and runs the original.
local Probe = nn.class("CompareLengthProbe")
function Probe:init(inner, seen) self.inner, self.seen = inner, seen end
function Probe:forward(q, k, v, mask)
  self.seen.L = math.max(self.seen.L or 0, k:size(3))
  return self.inner(q, k, v, mask)
end

-- Calls fn(parent, name, core) for every attention core below m.
local function each_core(m, fn)
  for name, child in m:named_children() do
    if registry.attention.is_core(child) then fn(m, name, child) else each_core(child, fn) end
  end
end

-- The longest key length the model's attention cores see on these inputs
-- (nil when the model holds none below its root).
local function probe_length(model, inputs)
  if registry.attention.is_core(model) then
    local k = inputs[2]
    return core.is_tensor(k) and k:dim() == 4 and k:size(3) or nil
  end
  local seen, put = {}, {}
  each_core(model, function(parent, name, c)
    put[#put + 1] = { parent, name, c }
    core.add_module(parent, name, Probe(c, seen))
  end)
  local ok, err = pcall(call, model, inputs)
  for _, p in ipairs(put) do core.add_module(p[1], p[2], p[3]) end
  if not ok then error(err, 0) end
  return seen.L
end

-- "window_size=16, num_sinks=4": a row's options, keys sorted.
local function opts_text(opts)
  local keys = {}
  for k in pairs(opts or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do keys[i] = k .. "=" .. tostring(opts[k]) end
  return table.concat(keys, ", ")
end

local function fmt_bytes(n)
  if n >= 1 << 20 then return string.format("%.1f MiB", n / (1 << 20)) end
  return string.format("%.1f KiB", n / 1024)
end

local Rows = {}
Rows.__index = Rows

-- The table compare prints; also what a row list shows in the REPL.
function Rows:__tostring()
  local lines = { string.format("%-22s %10s %6s %9s %12s %11s %10s %10s %7s  %s", "implementation", "time", "spread",
    "speed-up", "peak memory", "max |diff|", "rel diff", "cosine", "top-1", "notes") }
  local t_ref = self[1].time
  for _, r in ipairs(self) do
    if r.refused then
      lines[#lines + 1] = string.format("%-22s %s", r.name, "refused: " .. r.refused)
    else
      local notes = {}
      if r.options ~= "" then notes[#notes + 1] = r.options end
      if r.note then notes[#notes + 1] = r.note end
      lines[#lines + 1] = string.format("%-22s %7.2f ms %5.0f%% %8.2fx %12s %11.2e %10.2e %10.6f %7s  %s", r.name,
        r.time * 1e3, 100 * r.spread, t_ref / r.time, fmt_bytes(r.memory), r.max_abs, r.rel, r.cos,
        r.top1 and string.format("%.0f%%", 100 * r.top1) or "-", table.concat(notes, "; "))
    end
  end
  if self.length then
    lines[#lines + 1] = string.format("(the attention sees %d keys; time: median of %d-%d calls, spread: the "
      .. "interquartile range over the median)", self.length, self.min_count, self.max_count)
  end
  return table.concat(lines, "\n")
end

-- A row's output equal to the model's own within this relative difference is
-- marked: the swap changes nothing at these sizes or initial values.
local SAME = 1e-4

--- compare(model, inputs, names [, {min_repeats = 5, min_time = 0.25, max_repeats = 50,
---   out = io.stdout, quiet = false, swap_opts = {...}, opts = {name = {...}}, sized = true}])
--- inputs: a tensor or a list of forward arguments.  Returns the rows (they
--- print as the table).
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
  if o.repeats ~= nil then -- the older option: a fixed count
    if math.type(o.repeats) ~= "integer" or o.repeats < 1 then
      error("compare: repeats must be a positive integer, got " .. tostring(o.repeats), 2)
    end
  end
  local m = {
    min_repeats = o.repeats or o.min_repeats or 5,
    max_repeats = o.repeats or o.max_repeats or 50,
    min_time = o.repeats and 0 or o.min_time or 0.25,
  }
  local length = o.sized ~= false and probe_length(model, inputs) or nil
  local ref, t_ref, spread_ref, n_ref, m_ref = measure(model, inputs, m)
  local rows = setmetatable({ { name = "(as is)", time = t_ref, spread = spread_ref, count = n_ref, memory = m_ref,
    max_abs = 0, rel = 0, cos = 1, options = "", top1 = (ref:dim() == 2 and ref:size(2) > 1) and 1 or nil } }, Rows)
  rows.length, rows.min_count, rows.max_count = length, n_ref, n_ref
  for _, name in ipairs(names) do
    local info = registry.attention.info(name)
    local opts = (o.opts or {})[name]
    local sized_options = rawget(registry.attention.get(name), "sized_options")
    local sized = false
    if opts == nil and length and sized_options then
      opts = sized_options(length)
      sized = opts ~= nil
    end
    local ok, s = pcall(swap.swapped, model, registry.attention.is_core, name, opts, o.swap_opts)
    if not ok then
      rows[#rows + 1] = { name = name, refused = tostring(s):gsub("^[^\n]-:%d+: ", "") }
    else
      local row
      do
        local _ <close> = s
        local out, t, spread, count, mem = measure(s.model, inputs, m)
        local max_abs, rel, cos, top1 = stats(out, ref)
        row = { name = name, time = t, spread = spread, count = count, memory = mem, max_abs = max_abs, rel = rel,
          cos = cos, top1 = top1, swapped = #s.report.swapped,
          options = sized and opts_text(opts) .. " (sized to " .. length .. " keys)" or opts_text(opts) }
      end
      if not info.exact and row.rel < SAME then
        row.note = "same output as the model's here: exact at these sizes or initial values"
      end
      rows.min_count = math.min(rows.min_count, row.count)
      rows.max_count = math.max(rows.max_count, row.count)
      rows[#rows + 1] = row
    end
  end
  if not o.quiet then (o.out or io.stdout):write(tostring(rows), "\n") end
  return rows
end

return C
