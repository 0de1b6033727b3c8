-- Tab completion for attnswap-run's REPL: given the word before the cursor
-- ("pri", "model.blocks.", "t:so"), the words it can become.  The C side
-- (cli/repl_edit.c) only hands the word over and shows the answers, so
-- what a value offers is decided here, where modules and tensors are known.
local core = require "attnswap.core"
local nn = require "attnswap.nn"

local C = {}

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
            repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function is_name(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not KEYWORDS[k]
end

-- Adds the identifier keys of table t (raw, so no __pairs or __index runs),
-- then those of its __index tables, up to a few levels (class chains).
-- With methods_only, only keys whose value is a function.
local function add_table(out, t, methods_only, depth)
  if type(t) ~= "table" or depth > 8 then return end
  for k, v in next, t do
    if is_name(k) and k:sub(1, 2) ~= "__" and (not methods_only or type(v) == "function") then
      out[k] = true
    end
  end
  local mt = getmetatable(t)
  if type(mt) == "table" then add_table(out, rawget(mt, "__index"), methods_only, depth + 1) end
end

-- A module offers its children, parameters and buffers (after '.') and the
-- methods of its class chain and of nn.Module (after '.' and ':'), which is
-- what its C __index looks up.  Numbered children ("0", "1", ... of a
-- ModuleList or Sequential) go to idx as the 1-based indices m[1], m[2], ...
local function add_module(out, m, methods_only, idx)
  if not methods_only then
    for _, kind in ipairs { "children", "parameters", "buffers" } do
      for _, e in ipairs(core.members(m, kind)) do
        if is_name(e[1]) then
          out[e[1]] = true
        elseif kind == "children" and e[1]:match("^%d+$") then
          idx[#idx + 1] = math.tointeger(e[1]) + 1
        end
      end
    end
    add_table(out, core.env(m), false, 1)
  end
  add_table(out, nn.class_of(m), methods_only, 1)
  add_table(out, nn.Module, methods_only, 1)
end

-- The keys value v offers after '.' (all) or ':' (methods only), and the
-- indices of its numbered children.
local function keys_of(v, methods_only)
  local out, idx = {}, {}
  if core.is_module(v) then
    add_module(out, v, methods_only, idx)
  elseif type(v) == "table" then
    add_table(out, v, methods_only, 1)
  elseif type(v) == "string" then
    add_table(out, string, methods_only, 1)
  else -- tensors and other userdata: their metatable's method table
    local mt = getmetatable(v)
    if type(mt) == "table" then
      add_table(out, rawget(mt, "__methods"), methods_only, 1)
      add_table(out, rawget(mt, "__index"), methods_only, 1)
    end
  end
  return out, idx
end

-- Follows a path ("model.blocks[2].attn") from env; nil when a step fails.
-- Indexing runs __index (a module's children live there), inside pcall.
local function resolve(path, env)
  local v, pos = env, 1
  while pos <= #path do
    local key, stop = path:match(pos == 1 and "^([%a_][%w_]*)()" or "^%.([%a_][%w_]*)()", pos)
    if key and KEYWORDS[key] then return nil end
    if not key and pos > 1 then
      local n
      n, stop = path:match("^%[(%d+)%]()", pos)
      key = n and math.tointeger(tonumber(n))
    end
    if not key then return nil end
    local ok, x = pcall(function() return v[key] end)
    if not ok or x == nil then return nil end
    v, pos = x, stop
  end
  return v
end

--- candidates(word [, env]) -> sorted list of completions of word, each
--- starting with word.  env (default _G) is where the first name is looked up.
function C.candidates(word, env)
  env = env or _G
  local out = {}
  -- "model.blocks[" (and "model.blocks[1"): the numbered children
  local ipath, ipartial = word:match("^([%w_.%[%]]+)%[(%d*)$")
  if ipath then
    local v = resolve(ipath, env)
    if v == nil then return {} end
    local _, idx = keys_of(v, false)
    for _, i in ipairs(idx) do
      if tostring(i):sub(1, #ipartial) == ipartial then out[#out + 1] = ipath .. "[" .. i .. "]" end
    end
    table.sort(out, function(a, b) return #a < #b or (#a == #b and a < b) end)
    return out
  end
  local path, sep, partial = word:match("^([%w_.%[%]]-)([.:])([%w_]*)$")
  local keys, idx, prefix
  if path then
    if path == "" or path:find("%.%.") or path:sub(-1) == "." then return {} end
    local v = resolve(path, env)
    if v == nil then return {} end
    keys, idx = keys_of(v, sep == ":")
    prefix = path .. sep
  elseif word:match("^[%w_]*$") then
    keys, idx, prefix, partial = keys_of(env, false), {}, "", word
    for k in pairs(KEYWORDS) do keys[k] = true end
  else
    return {}
  end
  for k in pairs(keys) do
    if k:sub(1, #partial) == partial then out[#out + 1] = prefix .. k end
  end
  table.sort(out)
  -- after "model.blocks.", its numbered children as model.blocks[1], ...
  if sep == "." and partial == "" then
    for _, i in ipairs(idx) do out[#out + 1] = path .. "[" .. i .. "]" end
  end
  return out
end

return C
