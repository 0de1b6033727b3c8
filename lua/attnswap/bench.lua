-- Benchmark helpers: timing, a progress bar, and writers for the results
-- (JSON, CSV, an SVG line plot) with no dependency beyond Lua.
local core = require "attnswap.core"

local B = {}

function B.median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  return s[(#s + 1) // 2]
end

--- time(f, repeats [, warmup = 1 [, sync]]) -> median seconds of f()
--- A full collection (untimed) before each call: the last call's tensors go
--- back to the allocator, so every call finds the same warm memory, as in a
--- steady training or inference loop, instead of some calls paying for fresh
--- pages from the kernel when the collector happened not to run.  sync (e.g.
--- as.cuda.synchronize) brackets each call, so queued device work is counted.
function B.time(f, repeats, warmup, sync)
  for _ = 1, warmup or 1 do f() end
  local t = {}
  for i = 1, repeats do
    collectgarbage()
    if sync then sync() end
    local t0 = core.clock()
    f()
    if sync then sync() end
    t[i] = core.clock() - t0
  end
  return B.median(t)
end

--- load() -> the 1, 5 and 15 minute load averages ("0.52 0.61 0.70"), or "?":
--- how busy the machine was, for a benchmark's record.
function B.load()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then f:close() end
  return s:match("^(%S+ %S+ %S+)") or s
end

--- options(args, defaults, name) -> a copy of defaults with each `--key value`
--- of args (a script's arg) applied.  The default's type says how the value
--- reads: a list takes comma-separated values (numbers where they read as
--- numbers), a number a number, anything else (a string, or false for an
--- option with no default) the text.  An unknown key, a missing value or a
--- number that does not read as one is an error naming the script.
function B.options(args, defaults, name)
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  local i = 1
  while i <= #args do
    local key = args[i]:match("^%-%-(.+)$")
    local cur = key and defaults[key]
    if cur == nil then error(string.format("%s: unknown option %s", name, tostring(args[i])), 2) end
    local v = args[i + 1]
    if v == nil then error(string.format("%s: %s needs a value", name, args[i]), 2) end
    if type(cur) == "table" then
      local t = {}
      for x in v:gmatch("[^,]+") do t[#t + 1] = math.tointeger(tonumber(x)) or tonumber(x) or x end
      o[key] = t
    elseif type(cur) == "number" then
      o[key] = math.tointeger(tonumber(v)) or tonumber(v)
      if not o[key] then error(string.format("%s: %s expects a number, got %s", name, args[i], v), 2) end
    else
      o[key] = v
    end
    i = i + 2
  end
  return o
end

--- A one-line progress bar on stderr.
function B.progress(done, total, label)
  local width = 30
  local filled = math.floor(width * done / math.max(total, 1))
  io.stderr:write(string.format("\r[%s%s] %3d/%d %-40s", string.rep("#", filled), string.rep(".", width - filled),
    done, total, (label or ""):sub(1, 40)))
  if done >= total then io.stderr:write("\n") end
  io.stderr:flush()
end

local function json_value(v)
  local t = type(v)
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return math.type(v) == "integer" and tostring(v) or string.format("%.6g", v)
  elseif t == "boolean" then return tostring(v)
  elseif t == "string" then return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif v == nil then return "null"
  end
  error("json: cannot encode a " .. t)
end

--- rows (list of flat tables) as a JSON array, keys in the order given.
function B.json(rows, keys)
  local out = {}
  for i, r in ipairs(rows) do
    local fields = {}
    for j, k in ipairs(keys) do fields[j] = json_value(k) .. ": " .. json_value(r[k]) end
    out[i] = "  {" .. table.concat(fields, ", ") .. "}"
  end
  return "[\n" .. table.concat(out, ",\n") .. "\n]\n"
end

function B.csv(rows, keys)
  local lines = { table.concat(keys, ",") }
  for _, r in ipairs(rows) do
    local cells = {}
    for j, k in ipairs(keys) do
      local v = r[k]
      cells[j] = v == nil and "" or (type(v) == "number" and math.type(v) ~= "integer") and string.format("%.6g", v) or tostring(v)
    end
    lines[#lines + 1] = table.concat(cells, ",")
  end
  return table.concat(lines, "\n") .. "\n"
end

local COLORS = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#000000", "#aec7e8", "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94" }

--- An SVG of panels, each a log-log line plot.  panels: list of {title = ..,
--- series = {{name = .., points = {{x, y}, ...}}, ...}}; all share x and y labels.
function B.svg(panels, o)
  local pw, ph, ml, mr, mt, mb = 460, 340, 70, 20, 40, 50
  local legend_w = 210
  local W = #panels * pw + legend_w
  local H = ph + 30
  local out = { string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">', W, H),
    string.format('<rect width="%d" height="%d" fill="white"/>', W, H),
    string.format('<text x="%d" y="18" font-size="15" font-weight="bold">%s</text>', 10, o.title or "") }
  local names, color_of = {}, {}
  for _, p in ipairs(panels) do
    for _, s in ipairs(p.series) do
      if not color_of[s.name] then
        names[#names + 1] = s.name
        color_of[s.name] = COLORS[(#names - 1) % #COLORS + 1]
      end
    end
  end
  for pi, p in ipairs(panels) do
    local x0, y0 = (pi - 1) * pw + ml, 30 + mt
    local w, h = pw - ml - mr, ph - mt - mb
    local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
    for _, s in ipairs(p.series) do
      for _, pt in ipairs(s.points) do
        if pt[2] and pt[2] > 0 then
          xmin, xmax = math.min(xmin, pt[1]), math.max(xmax, pt[1])
          ymin, ymax = math.min(ymin, pt[2]), math.max(ymax, pt[2])
        end
      end
    end
    if xmin == math.huge then xmin, xmax, ymin, ymax = 1, 10, 1, 10 end
    local lx0, lx1 = math.log(xmin, 10), math.log(math.max(xmax, xmin * 2), 10)
    local ly0, ly1 = math.floor(math.log(ymin, 10)), math.ceil(math.log(math.max(ymax, ymin * 10), 10))
    local function X(x) return x0 + (math.log(x, 10) - lx0) / (lx1 - lx0) * w end
    local function Y(y) return y0 + h - (math.log(y, 10) - ly0) / (ly1 - ly0) * h end
    out[#out + 1] = string.format('<text x="%d" y="%d" font-weight="bold">%s</text>', x0, y0 - 10, p.title)
    out[#out + 1] = string.format('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>', x0, y0, w, h)
    for e = ly0, ly1 do
      local y = Y(10 ^ e)
      out[#out + 1] = string.format('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>', x0, y, x0 + w, y)
      out[#out + 1] = string.format('<text x="%d" y="%.1f" text-anchor="end">%s</text>', x0 - 5, y + 4, o.y_tick and o.y_tick(10 ^ e) or tostring(10 ^ e))
    end
    for _, pt in ipairs(p.series[1] and p.series[1].points or {}) do
      local x = X(pt[1])
      out[#out + 1] = string.format('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>', x, y0, x, y0 + h)
      out[#out + 1] = string.format('<text x="%.1f" y="%d" text-anchor="middle">%d</text>', x, y0 + h + 15, pt[1])
    end
    out[#out + 1] = string.format('<text x="%d" y="%d" text-anchor="middle">%s</text>', x0 + w // 2, y0 + h + 35, o.x_label or "")
    out[#out + 1] = string.format('<text transform="translate(%d,%d) rotate(-90)" text-anchor="middle">%s</text>', x0 - 50, y0 + h // 2, o.y_label or "")
    for _, s in ipairs(p.series) do
      local pts = {}
      for _, pt in ipairs(s.points) do
        if pt[2] and pt[2] > 0 then pts[#pts + 1] = string.format("%.1f,%.1f", X(pt[1]), Y(pt[2])) end
      end
      if #pts > 0 then
        out[#out + 1] = string.format('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"><title>%s</title></polyline>',
          color_of[s.name], table.concat(pts, " "), s.name)
      end
    end
  end
  local lx = #panels * pw + 10
  out[#out + 1] = string.format('<text x="%d" y="%d" font-weight="bold">implementation</text>', lx, 30 + mt)
  for i, n in ipairs(names) do
    local y = 30 + mt + 8 + i * 18
    out[#out + 1] = string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>', lx, y - 4, lx + 24, y - 4, color_of[n])
    out[#out + 1] = string.format('<text x="%d" y="%d">%s</text>', lx + 30, y, n)
  end
  out[#out + 1] = "</svg>"
  return table.concat(out, "\n") .. "\n"
end

-- FlashAttention's convention: a backward costs 2.5 forwards, so forward +
-- backward counts 3.5 x the forward's 4 B H pairs D.
B.FWD_BWD_FLOPS = 3.5

--- step(fn, inputs, grad) -> a function running one training step of an
--- attention: clears each input's .grad, out = fn(inputs...),
--- out:backward(grad) with the fixed upstream gradient grad; returns out.
function B.step(fn, inputs, grad)
  return function()
    for _, x in ipairs(inputs) do x.grad = nil end
    local out = fn(table.unpack(inputs))
    out:backward(grad)
    return out
  end
end

--- max |a[i] - b[i]| over pairs of tensor lists (gradients against a
--- reference); nil when one is missing.
function B.max_abs_diff(as_, bs)
  local m = 0
  for i, a in ipairs(as_) do
    local b = bs[i]
    if a == nil or b == nil then return nil end
    m = math.max(m, (a:float() - b:float()):abs():max():item())
  end
  return m
end

--- read_rows(path) -> the rows of a peer's JSON: one array, or one object
--- a line (bench/torch_cpu_sdpa_bwd.py prints JSON lines).
function B.read_rows(path, decode)
  local f, err = io.open(path)
  if not f then error("bench: cannot read " .. path .. ": " .. tostring(err), 2) end
  local text = f:read("a")
  f:close()
  if text:match("^%s*%[") then return decode(text) end
  local rows = {}
  for line in text:gmatch("[^\n]+") do
    if line:match("^%s*{") then rows[#rows + 1] = decode(line) end
  end
  return rows
end

--- key(row, ...) -> the values of the keys named joined with "/", integral
--- floats as integers: key({D = 64, L = 1024.0, causal = true}, "D", "L",
--- "causal") is "64/1024/true", however a JSON decoder typed the numbers.
function B.key(r, ...)
  local parts = {}
  for i, k in ipairs { ... } do
    local v = r[k]
    parts[i] = math.type(v) == "float" and v == math.floor(v) and string.format("%d", v) or tostring(v)
  end
  return table.concat(parts, "/")
end

--- "1.23x" for a / b, or "-" when either is missing or not positive.
function B.ratio(a, b)
  if type(a) ~= "number" or type(b) ~= "number" or a <= 0 or b <= 0 then return "-" end
  return string.format("%.2fx", a / b)
end

function B.write(path, text)
  local f, err = io.open(path, "w")
  if not f then error("bench: cannot write " .. path .. ": " .. tostring(err), 2) end
  f:write(text)
  f:close()
end

return B
