-- Helpers shared by the model definitions: config tables, checkpoint files,
-- key renames.
local core = require "attnswap.core"

local M = {}

--- Fills defaults into a config table and rejects unknown keys (a typo in a
--- config should not be silently ignored).
function M.config(name, given, defaults, aliases)
  given = given or {}
  if type(given) ~= "table" then
    error(string.format("bad argument #1 to '%s' (config table expected, got %s)", name, type(given)), 3)
  end
  local c = {}
  for k, v in pairs(defaults) do c[k] = v end
  for k, v in pairs(given) do
    local key = aliases and aliases[k] or k
    if defaults[key] == nil and not (aliases and aliases[k] == false) then
      local known = {}
      for d in pairs(defaults) do known[#known + 1] = d end
      table.sort(known)
      error(string.format("%s: unknown option '%s' (known: %s)", name, tostring(k), table.concat(known, ", ")), 3)
    end
    if key then c[key] = v end
  end
  return c
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_file

local function is_dir(path)
  local f = io.open(path .. "/.", "rb")
  if f then f:close() return true end
  return false
end

--- Resolves a checkpoint location: a .safetensors file, or a folder holding
--- model.safetensors (and config.json). Returns weights path, config table or nil.
function M.locate(name, dir_or_file)
  if type(dir_or_file) ~= "string" then
    error(string.format("bad argument #1 to '%s.from_pretrained' (path expected, got %s)", name, type(dir_or_file)), 3)
  end
  if dir_or_file:match("%.safetensors$") then return dir_or_file, nil end
  if not is_dir(dir_or_file) then
    error(string.format("%s.from_pretrained: '%s' is neither a .safetensors file nor a folder", name, dir_or_file), 3)
  end
  local cfg
  local text = read_file(dir_or_file .. "/config.json")
  if text then cfg = core.json_decode(text) end
  local weights = dir_or_file .. "/model.safetensors"
  if not read_file(weights) then
    error(string.format("%s.from_pretrained: no model.safetensors in '%s'", name, dir_or_file), 3)
  end
  return weights, cfg
end

--- Applies {{lua_pattern, replacement}, ...} to every key of a state dict.
function M.rename(sd, renames)
  local out = {}
  for k, v in pairs(sd) do
    local key = k
    for _, r in ipairs(renames) do key = key:gsub(r[1], r[2]) end
    out[key] = v
  end
  return out
end

--- Drops keys for which keep(key) is false (checkpoint extras a model does not have).
function M.filter(sd, drop)
  local out = {}
  for k, v in pairs(sd) do
    if not drop(k) then out[k] = v end
  end
  return out
end

return M
