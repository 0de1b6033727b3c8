-- Option checking shared by the reweight implementations (relative, adaptive,
-- gated, entmax, sigmoid, cosine and flex attention): every constructor takes
-- one table, rejects unknown keys and bad values with a message naming the
-- implementation ("relative_attention: num_heads must be a positive integer,
-- got -1"), and fills in defaults.  Not an attention itself.
local O = {}

local function describe(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function fail(fn, name, want, v)
  error(string.format("%s: %s must be %s, got %s", fn, name, want, describe(v)), 0)
end

-- Value checkers: each returns the checked value or raises through fail.
function O.boolean(fn, name, v)
  if type(v) ~= "boolean" then fail(fn, name, "a boolean", v) end
  return v
end

function O.positive_integer(fn, name, v)
  if math.type(v) ~= "integer" or v <= 0 then fail(fn, name, "a positive integer", v) end
  return v
end

function O.positive_number(fn, name, v)
  if type(v) ~= "number" or not (v > 0) or v == math.huge then fail(fn, name, "a positive number", v) end
  return v
end

function O.finite_number(fn, name, v)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then fail(fn, name, "a finite number", v) end
  return v
end

--- number in [lo, hi] (open ends when lo_open / hi_open)
function O.number_in(lo, hi, lo_open, hi_open)
  local want = string.format("a number in %s%g, %g%s", lo_open and "(" or "[", lo, hi, hi_open and ")" or "]")
  return function(fn, name, v)
    if type(v) ~= "number" or v ~= v or (lo_open and v <= lo) or (not lo_open and v < lo)
        or (hi_open and v >= hi) or (not hi_open and v > hi) then
      fail(fn, name, want, v)
    end
    return v
  end
end

function O.one_of(...)
  local allowed = { ... }
  local want = "one of " .. table.concat((function()
    local q = {}
    for i, a in ipairs(allowed) do q[i] = string.format("%q", a) end
    return q
  end)(), ", ")
  return function(fn, name, v)
    for _, a in ipairs(allowed) do
      if v == a then return v end
    end
    fail(fn, name, want, v)
  end
end

function O.func(fn, name, v)
  if type(v) ~= "function" then fail(fn, name, "a function", v) end
  return v
end

-- The options every attention core takes (DESIGN.md, Attention).
O.COMMON = {
  causal = { O.boolean, false },
  scale = { O.positive_number, nil },
  dropout = { O.number_in(0, 1, false, true), 0 },
}

--- parse(fn, opts, spec [, level]) -> table of checked options with defaults.
--- spec: name -> { checker, default }; COMMON is always included unless
--- spec[name] == false removes it.
function O.parse(fn, opts, spec, level)
  level = (level or 1) + 1
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(string.format("bad argument #1 to '%s' (options table expected, got %s)", fn, type(opts)), level)
  end
  local full = {}
  for k, s in pairs(O.COMMON) do full[k] = s end
  for k, s in pairs(spec) do full[k] = s or nil end
  for k in pairs(opts) do
    if full[k] == nil then
      local names = {}
      for n in pairs(full) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("%s: unknown option '%s' (options: %s)", fn, tostring(k), table.concat(names, ", ")), level)
    end
  end
  local out = {}
  for k, s in pairs(full) do
    local v = opts[k]
    if v == nil then
      v = s[2]
      if type(v) == "function" then v = v(opts) end
      out[k] = v
    else
      local ok, r = pcall(s[1], fn, k, v)
      if not ok then error(r, level) end
      out[k] = r
    end
  end
  return out
end

--- The common options as the C bindings read them, plus extra fields.
function O.call_opts(o, extra)
  local t = { causal = o.causal, scale = o.scale, dropout = o.dropout }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

--- "causal=false, dropout=0, ..." for printing: the listed keys of o in order.
function O.repr(o, keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = o[k]
    if v ~= nil and type(v) ~= "function" then parts[#parts + 1] = k .. "=" .. tostring(v) end
  end
  return table.concat(parts, ", ")
end

return O
