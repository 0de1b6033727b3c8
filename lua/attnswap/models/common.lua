-- Helpers shared by the model definitions: config tables, checkpoint files,
-- key renames.
local core = require "attnswap.core"
local hub = require "attnswap.models.hub"

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
M.is_dir = is_dir

-- Exists and is not a folder; opened and closed, never read (a checkpoint is
-- memory-mapped later, and reading it here would hold a copy in a Lua string).
local function is_file(path)
  local f = io.open(path, "rb")
  if not f then return false end
  f:close()
  return not is_dir(path)
end
M.is_file = is_file

-- Options of from_pretrained that say where the files are, not what the model is.
local LOAD_OPTIONS = { revision = true, cache_dir = true }

-- Files torch.save and pickle write: never opened (unpickling runs code).
local PICKLE_SUFFIXES = { "%.bin$", "%.pt$", "%.pth$", "%.ckpt$", "%.pkl$" }

local function is_pickle(path)
  for _, p in ipairs(PICKLE_SUFFIXES) do if path:match(p) then return true end end
  return false
end

local function pickle_refusal(fn, file, repo_id)
  local how = repo_id and ("download the safetensors files instead: " .. hub.download_hint(repo_id) .. "; or convert")
    or "convert it"
  return string.format("%s: '%s' is a PyTorch pickle, which attnswap never loads (unpickling can run any code); " ..
    "%s with: python -c \"import torch; from safetensors.torch import save_file; " ..
    "sd = torch.load('%s', map_location='cpu', weights_only=True); " ..
    "save_file({k: v.contiguous().clone() for k, v in sd.items()}, '%s/model.safetensors')\"" ..
    " (or a transformers model's save_pretrained(dir, safe_serialization=True))", fn, file, how, file,
    file:match("^(.*)/[^/]*$") or ".")
end

local CONFIG_LIMIT = 8 << 20 -- bytes; a config.json is a few KiB

-- config.json, parsed, or nil when there is none; nil and a message naming
-- the file when it cannot be read or is not a JSON object.
local function read_config(path)
  local f, why = io.open(path, "rb")
  if not f then
    if is_dir(path:match("^(.*)/") or ".") and not why:find("No such file", 1, true) then
      return nil, string.format("cannot read %s (%s)", path, why)
    end
    return nil
  end
  local size = f:seek("end")
  if not size or size > CONFIG_LIMIT then
    f:close()
    return nil, string.format("%s should be a small JSON file, got %s bytes (more than %d MiB)", path,
      tostring(size or "unknown"), CONFIG_LIMIT >> 20)
  end
  f:seek("set")
  local text = f:read(CONFIG_LIMIT + 1) or "" -- bounded: a device file reports size 0
  f:close()
  if #text > CONFIG_LIMIT then
    return nil, string.format("%s should be a small JSON file, got more than %d MiB", path, CONFIG_LIMIT >> 20)
  end
  local ok, cfg = pcall(core.json_decode, text)
  if not ok then
    local msg = tostring(cfg):gsub("^json_decode: ", "")
    local byte = tonumber(msg:match("near byte (%d+)"))
    if byte then
      local _, lines = text:sub(1, byte):gsub("\n", "")
      msg = msg .. string.format(" (line %d)", lines + 1)
    end
    return nil, string.format("%s is not valid JSON: %s", path, msg)
  end
  if type(cfg) ~= "table" or (next(cfg) ~= nil and cfg[1] ~= nil) then
    return nil, string.format("%s should hold a JSON object of options, got %s", path,
      type(cfg) == "table" and "an array" or type(cfg) .. " " .. tostring(cfg))
  end
  return cfg
end

-- A checkpoint folder: config.json (optional) and model.safetensors.
-- Returns weights path, config table or nil, config path; or nil, message.
local function folder(fn, dir, repo_id, sharded)
  local cfg_path = dir .. "/config.json"
  local cfg, err = read_config(cfg_path)
  if err then return nil, fn .. ": " .. err end
  local weights = dir .. "/model.safetensors"
  if is_file(weights) then return weights, cfg, cfg_path end
  if sharded and is_file(weights .. ".index.json") then return weights .. ".index.json", cfg, cfg_path end
  for _, pickle in ipairs { "pytorch_model.bin", "model.bin", "model.pt", "model.pth" } do
    if is_file(dir .. "/" .. pickle) then
      return nil, pickle_refusal(fn, dir .. "/" .. pickle, repo_id)
    end
  end
  local extra = ""
  if is_file(dir .. "/model.safetensors.index.json") then
    extra = " (it holds a sharded checkpoint, model.safetensors.index.json, which this loader does not read)"
  elseif repo_id then
    extra = "; get it with: " .. hub.download_hint(repo_id)
  end
  return nil, string.format("%s: no model.safetensors in '%s'%s", fn, dir, extra)
end

-- Where the checkpoint is: a .safetensors file, a folder, or a hub name
-- resolved through the local Hugging Face cache.  Returns weights path,
-- config table or nil, config path or nil; or nil, message.
local function find(name, path, opts)
  local fn = name .. ".from_pretrained"
  if type(path) ~= "string" then
    return nil, string.format("bad argument #1 to '%s' (path or hub name expected, got %s)", fn, type(path))
  end
  if is_dir(path) then return folder(fn, path, nil, opts.sharded) end
  if path:match("%.safetensors$") then
    if is_file(path) then return path end
    return nil, string.format("%s: no file '%s'", fn, path)
  end
  if is_pickle(path) then
    if is_file(path) then return nil, pickle_refusal(fn, path) end
    return nil, string.format("%s: no file '%s' (and a PyTorch pickle would be refused: convert it to safetensors)",
      fn, path)
  end
  local repo_id, revision = hub.parse(path)
  if not repo_id then
    return nil, string.format("%s: '%s' is neither a .safetensors file, a folder, nor a hub name " ..
      "('gpt2', 'org/name', 'org/name@revision')", fn, path)
  end
  if revision and opts.revision and revision ~= opts.revision then
    return nil, string.format("%s: '%s' names revision '%s' but the revision option says '%s'", fn, path, revision,
      opts.revision)
  end
  local snap, err = hub.resolve(repo_id, { revision = revision or opts.revision, cache_dir = opts.cache_dir,
    path = path })
  if not snap then return nil, fn .. ": " .. err end
  return folder(fn, snap, repo_id, opts.sharded)
end

-- Splits from_pretrained's second argument: {revision, cache_dir} and the rest (the model's options).
local function split_options(name, config)
  if config ~= nil and type(config) ~= "table" then
    return nil, nil, string.format("bad argument #2 to '%s.from_pretrained' (config table expected, got %s)", name,
      type(config))
  end
  local load, model = {}, {}
  for k, v in pairs(config or {}) do
    if LOAD_OPTIONS[k] then load[k] = v else model[k] = v end
  end
  if load.revision ~= nil and type(load.revision) ~= "string" then
    return nil, nil, string.format("%s.from_pretrained: revision must be a string, got %s", name, type(load.revision))
  end
  if load.cache_dir ~= nil and type(load.cache_dir) ~= "string" then
    return nil, nil, string.format("%s.from_pretrained: cache_dir must be a string, got %s", name, type(load.cache_dir))
  end
  return load, model
end

--- Resolves a checkpoint location: a .safetensors file, a folder holding
--- model.safetensors (and config.json), or a hub name ("gpt2", "org/name",
--- "org/name@rev") found in the local Hugging Face cache (models/hub.lua).
--- opts: revision, cache_dir.  Returns weights path, config table or nil.
function M.locate(name, path, opts)
  local weights, cfg = find(name, path, opts or {})
  if not weights then error(cfg, 3) end
  return weights, cfg
end

--- pretrained(name, path, config, defaults [, nested]) -> weights path, model
--- config: the checkpoint's config.json (its known keys, each checked against
--- the default's type; under cfg[nested] when that is a table) overridden by
--- the caller's config, less the load options (revision, cache_dir).
--- sharded: the caller reads model.safetensors.index.json (load_weights),
--- returned as the weights path when there is no model.safetensors.
function M.pretrained(name, path, config, defaults, nested, sharded)
  local load, given, err = split_options(name, config)
  if not load then error(err, 3) end
  load.sharded = sharded
  local weights, cfg, cfg_path = find(name, path, load)
  if not weights then error(cfg, 3) end
  local c = {}
  if cfg then
    local src = cfg
    if nested and cfg[nested] ~= nil then
      if type(cfg[nested]) ~= "table" then
        error(string.format("%s.from_pretrained: %s: '%s' should be an object, got %s", name, cfg_path, nested,
          type(cfg[nested])), 3)
      end
      src = cfg[nested]
    end
    for k, v in pairs(src) do
      local d = defaults[k]
      if d ~= nil then
        local want = d == false and "any" or type(d)
        if want ~= "any" and type(v) ~= want then
          error(string.format("%s.from_pretrained: %s: '%s' should be a %s (like %s), got %s %s", name, cfg_path,
            tostring(k), want, tostring(d), type(v), type(v) == "table" and "" or tostring(v)):gsub(" $", ""), 3)
        end
        c[k] = v
      end
    end
  end
  for k, v in pairs(given) do c[k] = v end
  return weights, c
end

--- load_weights(path) -> state dict: a .safetensors file, or a sharded
--- checkpoint's model.safetensors.index.json ({"weight_map": {name: file}}),
--- each shard memory-mapped and only the names the map gives it taken.
function M.load_weights(path)
  if not path:match("%.index%.json$") then return core.load(path) end
  local index, err = read_config(path)
  if not index then error(err or ("no file " .. path), 2) end
  if type(index.weight_map) ~= "table" or next(index.weight_map) == nil then
    error(string.format("%s should hold a weight_map object {tensor name: shard file}", path), 2)
  end
  local dir = path:match("^(.*)/[^/]*$") or "."
  local shards, sd = {}, {}
  for name, file in pairs(index.weight_map) do
    if type(file) ~= "string" or file:find("/", 1, true) or file:find("..", 1, true) then
      error(string.format("%s: weight_map['%s'] should name a shard file in the same folder, got %s", path,
        tostring(name), tostring(file)), 2)
    end
    shards[file] = shards[file] or {}
    shards[file][#shards[file] + 1] = name
  end
  for file, names in pairs(shards) do
    if not is_file(dir .. "/" .. file) then
      error(string.format("%s names shard '%s', which is not in %s", path, file, dir), 2)
    end
    local t = core.load(dir .. "/" .. file)
    for _, name in ipairs(names) do
      if t[name] == nil then error(string.format("%s: shard %s has no tensor '%s'", path, file, name), 2) end
      sd[name] = t[name]
    end
  end
  return sd
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
