-- Line plots as SVG, for curves a person would rather see than read (loss per
-- step).  bench.svg draws the benchmarks' log-log panels; this draws one
-- panel with linear axes (or a log y axis) and a legend.
local M = {}

local COLORS = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f" }

local function esc(s) return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end

-- Round tick values: about n of them between lo and hi.
local function ticks(lo, hi, n)
  local span = hi - lo
  if span <= 0 then return { lo } end
  local step = 10 ^ math.floor(math.log(span / n, 10))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if span / (step * m) <= n then step = step * m break end
  end
  local out = {}
  for v = math.ceil(lo / step) * step, hi + step * 1e-9, step do out[#out + 1] = v end
  return out
end

--- plot.lines{title, x_label, y_label, log_y = false, series = {{name, points = {{x, y}, ...}}, ...}}
--- -> the SVG text.  Points with a non-finite y (or y <= 0 on a log axis) are left out.
function M.lines(o)
  local W, H, ml, mr, mt, mb = 720, 400, 70, 170, 40, 50
  local log_y = o.log_y
  local function ok(y) return y == y and y ~= math.huge and y ~= -math.huge and (not log_y or y > 0) end
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(o.series) do
    for _, p in ipairs(s.points) do
      if ok(p[2]) then
        local y = log_y and math.log(p[2], 10) or p[2]
        xmin, xmax = math.min(xmin, p[1]), math.max(xmax, p[1])
        ymin, ymax = math.min(ymin, y), math.max(ymax, y)
      end
    end
  end
  if xmin == math.huge then xmin, xmax, ymin, ymax = 0, 1, 0, 1 end
  if xmax == xmin then xmax = xmin + 1 end
  if ymax == ymin then ymin, ymax = ymin - 0.5, ymax + 0.5 end
  local w, h = W - ml - mr, H - mt - mb
  local function X(x) return ml + (x - xmin) / (xmax - xmin) * w end
  local function Y(y) return mt + h - ((log_y and math.log(y, 10) or y) - ymin) / (ymax - ymin) * h end
  local out = {
    string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">', W, H),
    string.format('<rect width="%d" height="%d" fill="white"/>', W, H),
    string.format('<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>', ml, esc(o.title or "")),
    string.format('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>', ml, mt, w, h),
  }
  for _, v in ipairs(ticks(ymin, ymax, 6)) do
    local y = mt + h - (v - ymin) / (ymax - ymin) * h
    out[#out + 1] = string.format('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e4e4e4"/>', ml, y, ml + w, y)
    out[#out + 1] = string.format('<text x="%d" y="%.1f" text-anchor="end">%s</text>', ml - 5, y + 4,
      string.format("%.4g", log_y and 10 ^ v or v))
  end
  for _, v in ipairs(ticks(xmin, xmax, 8)) do
    out[#out + 1] = string.format('<text x="%.1f" y="%d" text-anchor="middle">%s</text>', X(v), mt + h + 16, string.format("%.6g", v))
  end
  out[#out + 1] = string.format('<text x="%d" y="%d" text-anchor="middle">%s</text>', ml + w // 2, H - 10, esc(o.x_label or ""))
  out[#out + 1] = string.format('<text transform="translate(16,%d) rotate(-90)" text-anchor="middle">%s</text>', mt + h // 2,
    esc(o.y_label or ""))
  for i, s in ipairs(o.series) do
    local color = COLORS[(i - 1) % #COLORS + 1]
    local pts = {}
    for _, p in ipairs(s.points) do
      if ok(p[2]) then pts[#pts + 1] = string.format("%.1f,%.1f", X(p[1]), Y(p[2])) end
    end
    if #pts > 0 then
      out[#out + 1] = string.format('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>', color, table.concat(pts, " "))
    end
    local ly = mt + 10 + i * 18
    out[#out + 1] = string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>', ml + w + 12, ly - 4,
      ml + w + 36, ly - 4, color)
    out[#out + 1] = string.format('<text x="%d" y="%d">%s</text>', ml + w + 42, ly, esc(s.name))
  end
  out[#out + 1] = "</svg>"
  return table.concat(out, "\n") .. "\n"
end

return M
