-- model:clone(): a deep copy, as Python's copy.deepcopy(model).  Every module
-- of the tree is rebuilt with its class, config and training flag
-- (core.module_copy: built-in layers, Lua-defined modules and swapped
-- attention cores alike), every parameter, buffer and gradient copied, and
-- the modules' Lua fields copied deeply: plain tables are copied, tensors
-- cloned, modules cloned; classes, functions and other tables with a
-- metatable are shared.  A tensor or module reached twice (tied weights, a
-- child also kept in a field) is copied once, so the copy has the same
-- sharing.  The copy shares no storage with the original.
local core = require "attnswap.core"

local copy_value

local function copy_tensor(t, memo)
  local key = core.tensor_key(t)
  local c = memo[key]
  if c then return c end
  local prev = core.set_grad_enabled(false)
  local ok, r = pcall(function()
    local x = t:detach():clone()
    if t.requires_grad then x:requires_grad_(true) end
    local g = t.grad
    if g ~= nil then x.grad = g:detach():clone() end
    return x
  end)
  core.set_grad_enabled(prev)
  if not ok then error(r, 0) end
  memo[key] = r
  return r
end

local function copy_module(m, memo)
  local c = memo[m]
  if c then return c end
  c = core.module_copy(m)
  memo[m] = c
  for _, e in ipairs(core.members(m, "parameters")) do core.register_parameter(c, e[1], copy_tensor(e[2], memo)) end
  for _, e in ipairs(core.members(m, "buffers")) do core.register_buffer(c, e[1], copy_tensor(e[2], memo)) end
  for _, e in ipairs(core.members(m, "children")) do core.add_module(c, e[1], copy_module(e[2], memo)) end
  local env, cenv = core.env(m), core.env(c)
  for k, v in pairs(env) do cenv[copy_value(k, memo)] = copy_value(v, memo) end
  return c
end

function copy_value(v, memo)
  if core.is_tensor(v) then return copy_tensor(v, memo) end
  if core.is_module(v) then return copy_module(v, memo) end
  if type(v) ~= "table" or getmetatable(v) ~= nil or rawget(v, "__name") ~= nil then return v end
  local c = memo[v]
  if c then return c end
  c = {}
  memo[v] = c
  for k, x in pairs(v) do c[copy_value(k, memo)] = copy_value(x, memo) end
  return c
end

--- model:clone() -> an independent deep copy of model (see above).
return function(self)
  if not core.is_module(self) then
    error("bad argument #1 to 'clone' (Module expected, got " .. type(self) .. ")", 2)
  end
  return copy_module(self, {})
end
