-- swap_attention: replace every matching module of a tree with a new
-- instance of a registered attention, carrying over the weights both share.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"

local S = {}

-- A predicate function(module, path) for each form of `target`.
local function matcher(target)
  local kind = type(target)
  if kind == "function" then return target, "predicate" end
  if kind == "table" and rawget(target, "__name") then
    return function(m) return nn.isinstance(m, target) end, "class " .. target.__name
  end
  if kind == "string" then
    -- a registry name matches instances of its class; otherwise a class name
    -- matches by the class chain (so subclasses count too)
    local Class = registry.attention.exists(target) and registry.attention.get(target)
    return function(m)
      if Class and nn.isinstance(m, Class) then return true end
      local c = nn.class_of(m)
      while c do
        if c.__name == target then return true end
        c = rawget(c, "__parent")
      end
      return core.type_name(m) == target
    end, "'" .. target .. "'"
  end
  error("bad argument #2 to 'swap_attention' (class, class or registry name, or function expected, got " .. kind .. ")", 3)
end

-- Matches in named_modules order; a match's descendants are not searched.
local function find_matches(model, match)
  local found = {}
  local function visit(m, path)
    if match(m, path) then
      found[#found + 1] = path
      return
    end
    for name, c in m:named_children() do visit(c, path == "" and name or path .. "." .. name) end
  end
  visit(model, "")
  return found
end

local function select_matches(paths, swap_opts, model)
  local where, layers = swap_opts.where, swap_opts.layers
  local out = {}
  for i, path in ipairs(paths) do
    local keep = true
    if type(where) == "string" then keep = path:match(where) ~= nil
    elseif type(where) == "function" then keep = where(path, model) and true or false
    elseif where ~= nil then error("swap_attention: swap_opts.where must be a Lua pattern or a function", 3) end
    if keep then out[#out + 1] = { path = path, order = i } end
  end
  if layers ~= nil then
    if type(layers) ~= "table" then error("swap_attention: swap_opts.layers must be a list of indices", 3) end
    local want = {}
    for _, k in ipairs(layers) do
      if math.type(k) ~= "integer" or k < 1 then
        error("swap_attention: swap_opts.layers holds 1-based indices, got " .. tostring(k), 3)
      end
      want[k] = true
    end
    local chosen = {}
    for n, e in ipairs(out) do
      if want[n] then chosen[#chosen + 1] = e end
    end
    out = chosen
  end
  return out
end

--- parent_of(model, path) -> the module holding the child at path, and the child's name
local function parent_of(model, path)
  local parent_path, name = path:match("^(.*)%.([^.]+)$")
  if not parent_path then return model, path end
  local parent = model
  for part in parent_path:gmatch("[^.]+") do parent = parent[part] end
  return parent, name
end

local function local_params(m)
  local out = {}
  for path, t in m:named_parameters() do out[path] = t end
  return out
end

-- Copies the parameters old and new share by name and shape; returns the lists.
local function carry(old, new)
  local old_p, new_p = local_params(old), local_params(new)
  local carried, dropped, initialized = {}, {}, {}
  for name, t in pairs(new_p) do
    local o = old_p[name]
    if o and tostring(o:shape()) == tostring(t:shape()) then
      t:copy_(o:detach())
      carried[#carried + 1] = name
    else
      initialized[#initialized + 1] = name
    end
  end
  for name in pairs(old_p) do
    local n = new_p[name]
    if not (n and tostring(n:shape()) == tostring(old_p[name]:shape())) then dropped[#dropped + 1] = name end
  end
  table.sort(carried); table.sort(dropped); table.sort(initialized)
  return carried, dropped, initialized
end

local function device_of(m)
  for _, t in m:named_parameters() do return t:device() end
end

local Report = {}
Report.__index = Report
function Report:__tostring()
  local lines = { string.format("swapped %d module(s) for '%s'", #self.swapped, self.name) }
  for _, s in ipairs(self.swapped) do
    lines[#lines + 1] = string.format("  %-24s %s -> %s  (carried %d, dropped %d, new %d)",
      s.path == "" and "<root>" or s.path, s.old, s.new, #s.carried, #s.dropped, #s.initialized)
  end
  return table.concat(lines, "\n")
end

-- A module's config as a table: a C module's (core.module_config: a
-- MultiheadAttention's head counts, an attention core's causal, scale,
-- dropout), else the `opts` table a Lua core keeps (the registry's cores do);
-- nil when neither.
local function config_of(m)
  local c = core.module_config(m)
  if c then return c end
  local o = m.opts
  return type(o) == "table" and o or nil
end

-- The head counts (num_heads, num_kv_heads, head_dim) of the module a core
-- sits in: a MultiheadAttention's config, or the numbers a Lua attention
-- module keeps as fields of those names (n_head, GPT-2's, for num_heads);
-- nil when unknown.
local function heads_of(parent)
  if not parent then return nil end
  if core.type_name(parent) == "MultiheadAttention" then
    local c = config_of(parent)
    return { num_heads = c.num_heads, num_kv_heads = c.num_kv_heads, head_dim = c.head_dim }
  end
  local heads = parent.num_heads
  if math.type(heads) ~= "integer" then heads = parent.n_head end
  if math.type(heads) ~= "integer" then return nil end
  local kv = parent.num_kv_heads
  return { num_heads = heads, num_kv_heads = math.type(kv) == "integer" and kv or heads,
    head_dim = math.type(parent.head_dim) == "integer" and parent.head_dim or nil }
end

-- Refuses an implementation registered with gqa = false where the module it
-- would go into has fewer key/value heads than query heads: its forward would
-- fail later with a shape error far from the swap.
local function check_gqa(name, path, parent)
  if registry.attention.info(name).gqa then return end
  local h = heads_of(parent)
  if h and h.num_kv_heads < h.num_heads then
    error(string.format("swap_attention: '%s' is registered with gqa = false (k and v must have as many heads as q), " ..
      "but %s sits in a grouped-query %s (num_heads = %d, num_kv_heads = %d)", name,
      path == "" and "<root>" or path, core.type_name(parent), h.num_heads, h.num_kv_heads), 4)
  end
end

-- The causality a core declares in its config; nil when it says nothing
-- (a Lua core without `opts`).
local function causal_of(m)
  if not registry.attention.is_core(m) then return nil end
  local c = config_of(m)
  if c == nil or c.causal == nil then return nil end
  return c.causal == true
end

-- Refuses a swap that would make a bidirectional core causal when the
-- caller did not ask for it: an implementation that is causal by default
-- (sink_attention) would silently change what an encoder computes.  Passing
-- causal = true says it is meant.  The reverse, a causal model given a core
-- that cannot be causal, is refused by the core's constructor (causal is
-- inherited).
local function check_causality(name, path, opts, old, new)
  if (opts == nil or opts.causal == nil) and causal_of(old) == false and causal_of(new) == true then
    error(string.format("swap_attention: '%s' is causal, but %s (%s) is not: the swap would make the model " ..
      "causal (pass {causal = true} in its options to do that on purpose)", name,
      path == "" and "<root>" or path, core.type_name(old)), 4)
  end
end

-- Options the new core inherits when the caller does not give them:
-- * `causal` from the core it replaces (a decoder stays a decoder: swapping
--   GPT-2's attention for one that cannot be causal is then an error, not a
--   silently different model);
-- * the options an implementation sizes its parameters by (Class.shape_options:
--   num_heads, head_dim), from the module the core sits in (heads_of: a
--   MultiheadAttention, or a Lua attention module such as GPT-2's, BERT's,
--   Llama's), so a per-head gate, bias or feature map fits the model it is
--   swapped into: its parameters exist, sized, from the swap on.
-- Returns opts itself when nothing is added.
local function inherited(name, opts, parent, old)
  local add = {}
  if causal_of(old) then add.causal = true end
  local keys = rawget(registry.attention.get(name), "shape_options")
  local shape = keys and heads_of(parent) -- a MultiheadAttention's, or a Lua attention module's fields
  if shape then
    for _, k in ipairs(keys) do add[k] = shape[k] and math.tointeger(shape[k]) end
  end
  local o
  for k, v in pairs(add) do
    if opts == nil or opts[k] == nil then
      o = o or {}
      o[k] = v
    end
  end
  if not o then return opts end
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end

-- The swap itself; `undo` receives (parent or nil, name, old module) per swap.
local function swap(model, target, name, opts, swap_opts, undo)
  if not core.is_module(model) then
    error("bad argument #1 to 'swap_attention' (Module expected, got " .. type(model) .. ")", 3)
  end
  if type(name) ~= "string" then
    error("bad argument #3 to 'swap_attention' (attention name expected, got " .. type(name) .. ")", 3)
  end
  if not registry.attention.exists(name) then
    error(string.format("swap_attention: no attention named '%s' (registered: %s)", name,
      table.concat(registry.attention.names(), ", ")), 3)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #4 to 'swap_attention' (options table expected, got " .. type(opts) .. ")", 3)
  end
  swap_opts = swap_opts or {}
  if type(swap_opts) ~= "table" then
    error("bad argument #5 to 'swap_attention' (table expected, got " .. type(swap_opts) .. ")", 3)
  end
  local match, what = matcher(target)
  local matches = select_matches(find_matches(model, match), swap_opts, model)
  local report = setmetatable({ name = name, swapped = {} }, Report)
  if #matches == 0 then
    if swap_opts.allow_empty then return model, report end
    error(string.format("swap_attention: nothing matched %s in %s%s (pass {allow_empty = true} to allow)",
      what, core.type_name(model),
      (swap_opts.where or swap_opts.layers) and " with the given where/layers" or ""), 3)
  end
  -- every match is checked and its new core built before the first swap, so
  -- a refusal leaves the model as it was
  for _, e in ipairs(matches) do
    if e.path ~= "" then e.parent, e.child_name = parent_of(model, e.path) end
    check_gqa(name, e.path, e.parent)
    e.old = e.parent and e.parent[e.child_name] or model
    e.new = registry.attention.new(name, inherited(name, opts, e.parent, e.old))
    check_causality(name, e.path, opts, e.old, e.new)
  end
  local root = model
  for _, e in ipairs(matches) do
    local parent, child_name, old, new = e.parent, e.child_name, e.old, e.new
    local carried, dropped, initialized = carry(old, new)
    if #dropped > 0 and not swap_opts.quiet then
      io.stderr:write(string.format("swap_attention: warning: %s: parameters of %s not carried to %s: %s\n",
        e.path == "" and "<root>" or e.path, core.type_name(old), core.type_name(new), table.concat(dropped, ", ")))
    end
    core.set_training(new, core.is_training(old), true)
    local dev = device_of(old)
    if dev and dev ~= "cpu" then new:to(dev) end
    if parent then core.add_module(parent, child_name, new) else root = new end
    if undo then undo(parent, child_name, old) end
    report.swapped[#report.swapped + 1] = { path = e.path, old = core.type_name(old), new = core.type_name(new),
      carried = carried, dropped = dropped, initialized = initialized }
  end
  return root, report
end

S.parent_of = parent_of

--- swap_attention(model, target, name [, opts [, swap_opts]]) -> model, report
function S.swap_attention(model, target, name, opts, swap_opts)
  return swap(model, target, name, opts, swap_opts)
end

local Swapped = {}
Swapped.__index = Swapped

--- Puts the original modules (the very same objects) back.
function Swapped:restore()
  if self.restored then return self.original end
  for i = #self.undo, 1, -1 do
    local u = self.undo[i]
    if u[1] then core.add_module(u[1], u[2], u[3]) end
  end
  self.restored = true
  self.model = self.original
  return self.original
end
Swapped.__close = Swapped.restore

--- local s <close> = as.swapped(model, target, name, opts, swap_opts): a swap
--- undone when s goes out of scope (or by s:restore()); s.model is the model.
function S.swapped(model, target, name, opts, swap_opts)
  local undo = {}
  local root, report = swap(model, target, name, opts, swap_opts, function(p, n, old) undo[#undo + 1] = { p, n, old } end)
  return setmetatable({ model = root, original = model, report = report, undo = undo }, Swapped)
end

return S
