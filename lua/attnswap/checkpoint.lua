-- as.save_checkpoint / as.load_checkpoint: a training run in one safetensors
-- file, to resume bit for bit (docs/training.md).
--
--   as.save_checkpoint(path, {model = m, optimizer = opt, scheduler = sch, step = n, <name> = value, ...})
--   as.load_checkpoint(path, {model = m, optimizer = opt, scheduler = sch}) -> {step = n, <name> = value, ...}
--
-- The file holds the model's parameters and buffers as "model.<name>", the
-- optimizer's state tensors as "optimizer.<k>.<key>" (k numbers the
-- parameters across groups, as in opt:state_dict()), and JSON strings in
-- __metadata__: "attnswap.checkpoint" (the format version), "optimizer"
-- (class, param_groups, each parameter's step and other numbers),
-- "scheduler" (its state_dict), "rng" (the generator's seed and offset, so
-- dropout and sampling continue as they would have), "fields" (the plain
-- values given: numbers, strings, booleans, and tables of them).
--
-- Saving goes through as.save: a temporary file beside path, written,
-- fsynced, renamed over path, the folder fsynced; a failure at any point
-- leaves the previous file whole.  Loading reads the file with the
-- safetensors reader's checks, then checks everything against the objects
-- given (names, shapes, dtypes, group sizes) before it changes anything: an
-- error leaves model, optimizer, scheduler and generator as they were.
local core = require "attnswap.core"

local M = {}
local FORMAT = "1"

-- ---- JSON (numbers exactly: integers as they are, floats with 17 digits) ----
local function encode(v, where)
  local t = type(v)
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v or v == math.huge or v == -math.huge then
      error(string.format("save_checkpoint: %s is %s, which JSON cannot hold", where, tostring(v)), 0)
    end
    return string.format("%.17g", v)
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif t == "table" and getmetatable(v) == nil then
    local n = #v
    local count = 0
    for _ in pairs(v) do count = count + 1 end
    local parts = {}
    if count == n and (n > 0 or next(v) == nil) then
      for i = 1, n do parts[i] = encode(v[i], where .. "[" .. i .. "]") end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" then
        error(string.format("save_checkpoint: %s has a %s key; only string keys or a list can be saved", where, type(k)), 0)
      end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for i, k in ipairs(keys) do parts[i] = encode(k) .. ":" .. encode(v[k], where .. "." .. k) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error(string.format("save_checkpoint: %s is a %s; a checkpoint holds tensors of the model and optimizer, " ..
    "and numbers, strings, booleans and plain tables of them", where, t), 0)
end

local function decode(s, what, path)
  local ok, v = pcall(core.json_decode, s)
  if not ok or type(v) ~= "table" then
    error(string.format("load_checkpoint: %s: the %s metadata is not valid JSON", path, what), 0)
  end
  return v
end

local function rethrow(ok, ...)
  if not ok then error((tostring((...)):gsub("^[^%s:]+:%d+: ", "")), 3) end
  return ...
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

local OBJECTS = { model = true, optimizer = true, scheduler = true }

-- ---- save ----
local function save(path, t)
  if type(path) ~= "string" then
    error(string.format("bad argument #1 to 'save_checkpoint' (string path expected, got %s)", type(path)), 0)
  end
  if type(t) ~= "table" then
    error(string.format("bad argument #2 to 'save_checkpoint' (table expected, got %s)", type(t)), 0)
  end
  local tensors, meta = {}, { ["attnswap.checkpoint"] = FORMAT }
  if t.model ~= nil then
    if not core.is_module(t.model) then error("save_checkpoint: model must be a Module, got " .. type(t.model), 0) end
    for name, v in pairs(t.model:state_dict()) do tensors["model." .. name] = v end
  end
  if t.optimizer ~= nil then
    local opt = t.optimizer
    if type(opt) ~= "table" or type(opt.state_dict) ~= "function" then
      error("save_checkpoint: optimizer must be an as.optim optimizer, got " .. type(opt), 0)
    end
    local sd = opt:state_dict()
    local plain = {}
    for _, k in ipairs(sorted_keys(sd.state)) do
      local entry = { index = k }
      for key, v in pairs(sd.state[k]) do
        if core.is_tensor(v) then tensors[string.format("optimizer.%d.%s", k, key)] = v else entry[key] = v end
      end
      plain[#plain + 1] = entry
    end
    meta.optimizer = encode({ class = opt.name, param_groups = sd.param_groups, state = plain }, "optimizer")
  end
  if t.scheduler ~= nil then
    if type(t.scheduler) ~= "table" or type(t.scheduler.state_dict) ~= "function" then
      error("save_checkpoint: scheduler must be an as.optim.lr_scheduler schedule, got " .. type(t.scheduler), 0)
    end
    meta.scheduler = encode(t.scheduler:state_dict(), "scheduler")
  end
  local seed, offset = core.get_rng_state()
  meta.rng = encode({ seed = tostring(seed), offset = tostring(offset) }, "rng")
  local fields = {}
  for k, v in pairs(t) do
    if not OBJECTS[k] then
      if type(k) ~= "string" then error("save_checkpoint: field names must be strings, got " .. type(k), 0) end
      fields[k] = v
    end
  end
  meta.fields = encode(fields, "field")
  core.save(path, tensors, meta)
end

function M.save_checkpoint(path, t) rethrow(pcall(save, path, t)) end

-- ---- load: check everything, then apply ----
local function shape_str(t) return tostring(t:shape()) end

local function check_model(path, model, file)
  local own = model:state_dict()
  for _, name in ipairs(sorted_keys(own)) do -- sorted: the same error every time
    local t = own[name]
    local v = file["model." .. name]
    if v == nil then error(string.format("load_checkpoint: %s: the model's '%s' is not in the file", path, name), 0) end
    if shape_str(v) ~= shape_str(t) or v:dtype() ~= t:dtype() then
      error(string.format("load_checkpoint: %s: '%s' is %s %s in the file, %s %s in the model", path, name,
        v:dtype(), shape_str(v), t:dtype(), shape_str(t)), 0)
    end
  end
  for _, key in ipairs(sorted_keys(file)) do
    local name = key:match("^model%.(.+)$")
    if name and own[name] == nil then
      error(string.format("load_checkpoint: %s: the file has '%s', which the model does not", path, name), 0)
    end
  end
  return own
end

-- The optimizer state_dict the file holds (tensors from the file), checked
-- against opt by its own preparation step (nothing applied).
local function optimizer_sd(path, opt, meta, file)
  if meta.optimizer == nil then error(string.format("load_checkpoint: %s: the file has no optimizer state", path), 0) end
  local o = decode(meta.optimizer, "optimizer", path)
  if o.class ~= opt.name then
    error(string.format("load_checkpoint: %s: the file holds a %s's state, the optimizer given is a %s", path,
      tostring(o.class), opt.name), 0)
  end
  if type(o.param_groups) ~= "table" or type(o.state) ~= "table" then
    error(string.format("load_checkpoint: %s: the optimizer metadata lacks param_groups or state", path), 0)
  end
  local state = {}
  for _, e in ipairs(o.state) do
    if math.type(e.index) ~= "integer" then
      error(string.format("load_checkpoint: %s: an optimizer state entry has no integer index", path), 0)
    end
    local st = {}
    for k, v in pairs(e) do if k ~= "index" then st[k] = v end end
    state[e.index] = st
  end
  for _, key in ipairs(sorted_keys(file)) do
    local v = file[key]
    local k, name = key:match("^optimizer%.(%d+)%.(.+)$")
    if k then
      k = math.tointeger(tonumber(k))
      if not state[k] then state[k] = {} end
      state[k][name] = v
    elseif key:match("^optimizer%.") then
      error(string.format("load_checkpoint: %s: unexpected tensor '%s'", path, key), 0)
    end
  end
  return { state = state, param_groups = o.param_groups }
end

local function load(path, t)
  if type(path) ~= "string" then
    error(string.format("bad argument #1 to 'load_checkpoint' (string path expected, got %s)", type(path)), 0)
  end
  if t ~= nil and type(t) ~= "table" then
    error(string.format("bad argument #2 to 'load_checkpoint' (table expected, got %s)", type(t)), 0)
  end
  t = t or {}
  for k in pairs(t) do
    if not OBJECTS[k] then
      error(string.format("load_checkpoint: unknown key '%s' (expected model, optimizer, scheduler)", tostring(k)), 0)
    end
  end
  local file, meta = core.load(path)
  if meta["attnswap.checkpoint"] ~= FORMAT then
    error(string.format("load_checkpoint: %s: not an attnswap checkpoint (no \"attnswap.checkpoint\": \"%s\" in " ..
      "its metadata); for plain weights use as.load and model:load_state_dict", path, FORMAT), 0)
  end
  local rng = decode(meta.rng or "", "rng", path)
  local seed, offset = math.tointeger(tonumber(rng.seed)), math.tointeger(tonumber(rng.offset))
  if not seed or not offset or offset % 4 ~= 0 then
    error(string.format("load_checkpoint: %s: the rng metadata is not a seed and an offset", path), 0)
  end
  local fields = decode(meta.fields or "{}", "fields", path)
  local sched_sd
  if t.scheduler ~= nil then
    if meta.scheduler == nil then error(string.format("load_checkpoint: %s: the file has no scheduler state", path), 0) end
    sched_sd = decode(meta.scheduler, "scheduler", path)
    if math.type(sched_sd.last_epoch) ~= "integer" or type(sched_sd.base_lrs) ~= "table"
        or #sched_sd.base_lrs ~= #t.scheduler.base_lrs then
      error(string.format("load_checkpoint: %s: the scheduler state does not fit the scheduler given (%d groups)",
        path, #t.scheduler.base_lrs), 0)
    end
  end
  -- every check before any change
  local own = t.model and check_model(path, t.model, file)
  local prepared
  if t.optimizer ~= nil then
    local sd = optimizer_sd(path, t.optimizer, meta, file)
    local ok, err = pcall(t.optimizer._prepare_load, t.optimizer, sd)
    if not ok then error(string.format("load_checkpoint: %s: %s", path, tostring(err):gsub("^[^%s:]+:%d+: ", "")), 0) end
    prepared = { sd, err }
  end
  -- apply
  if own then
    local prev = core.set_grad_enabled(false)
    local ok, err = pcall(function()
      for name, dst in pairs(own) do dst:copy_(file["model." .. name]) end
    end)
    core.set_grad_enabled(prev)
    if not ok then error(err, 0) end
  end
  if prepared then t.optimizer:_commit_load(prepared[1], prepared[2]) end
  if sched_sd then t.scheduler:load_state_dict(sched_sd) end
  core.set_rng_state(seed, offset)
  return fields
end

function M.load_checkpoint(path, t) return rethrow(pcall(load, path, t)) end

return M
