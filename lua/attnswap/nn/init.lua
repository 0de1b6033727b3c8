-- attnswap.nn: module classes.  A module is a C object (attnswap.core); a
-- class is a Lua table.  Classes written in Lua get their instances from
-- core.new_lua_module and run their Lua forward; built-in classes construct
-- C modules whose forward runs without entering Lua.
local core = require "attnswap.core"

local nn = {}
local classes = core.classes -- type name -> class table (shared with C)

local Module = {}
Module.__name = "Module"
Module.__index = Module
classes.Module = Module
nn.Module = Module

-- ---- constructor arguments ----

-- Edit distance of two short strings, for "did you mean".
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function closest(key, known)
  local best, best_d
  for _, k in ipairs(known) do
    local d = distance(key, k)
    if d <= 2 and d < #k and (not best_d or d < best_d) then best, best_d = k, d end
  end
  return best
end

--- check_options(fn, given, known [, pytorch [, level]]): raises when the
--- table given holds a key that is not in the list known, naming fn, the key
--- and the known options.  pytorch maps PyTorch's spelling of an option to
--- ours ("embed_dim" -> "dim"), or to a sentence saying what to do instead,
--- so the message can point there.  level as error's (1: the caller).
function nn.check_options(fn, given, known, pytorch, level)
  local set, unknown = {}, {}
  for _, k in ipairs(known) do set[k] = true end
  for k in pairs(given) do
    if not set[k] then unknown[#unknown + 1] = k end
  end
  if #unknown == 0 then return end
  table.sort(unknown, function(a, b) return tostring(a) < tostring(b) end)
  local k = unknown[1]
  local hint
  if type(k) ~= "string" then
    hint = " (options are named, as {" .. (known[1] or "name") .. " = ...})"
  elseif pytorch and pytorch[k] then
    local p = pytorch[k]
    hint = set[p] and string.format(" (PyTorch's name; here it is '%s')", p) or " (PyTorch's option; " .. p .. ")"
  else
    local near = closest(k, known)
    hint = near and " (did you mean '" .. near .. "'?)" or ""
  end
  error(string.format("%s: unknown option %s%s; known options: %s", fn,
    type(k) == "string" and "'" .. k .. "'" or "[" .. tostring(k) .. "]", hint,
    #known > 0 and table.concat(known, ", ") or "none"), (level or 1) + 1)
end

-- The names of a signature's entries ("eps=1e-05" -> "eps").
local function signature_names(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = s:match("^[%w_]+") end
  return out
end

-- Checks and binds a built-in constructor's arguments by its signature:
--   sig.args: the arguments in order, as PyTorch's ("bias=true": optional);
--     they may be given positionally or named in a table given last:
--     nn.Linear(8, 4, {bias = false}), nn.Linear{in_features = 8, out_features = 4};
--   sig.options: the constructor takes one table of named options;
--   sig.pytorch: PyTorch's spellings, for the messages (check_options);
--   sig.fn: the name messages give (default "nn.<class name>").
-- Returns the arguments for cls.__new.  Errors point at the caller of the class.
local function bind(cls, sig, n, ...)
  local fn = sig.fn or "nn." .. cls.__name
  if sig.options then
    local c = ...
    if type(c) == "table" then nn.check_options(fn, c, signature_names(sig.options), sig.pytorch, 3) end
    return ...
  end
  local args, names = table.pack(...), signature_names(sig.args)
  local named = args[n]
  if n > 0 and type(named) == "table" and getmetatable(named) == nil then
    args[n], n = nil, n - 1
  else
    named = nil
  end
  if n > #names then
    error(string.format("%s: too many arguments (%s; got %d)", fn,
      #names == 0 and "none expected" or "at most " .. #names .. ": " .. table.concat(names, ", "), n), 3)
  end
  if not named then return table.unpack(args, 1, n) end
  nn.check_options(fn, named, names, sig.pytorch, 3)
  for i, name in ipairs(names) do
    if named[name] ~= nil then
      if i <= n and args[i] ~= nil then
        error(string.format("%s: %s given twice (argument #%d and by name)", fn, name, i), 3)
      end
      args[i] = named[name]
    end
  end
  return table.unpack(args, 1, #names)
end

-- ---- classes ----

local function class_call(cls, ...)
  if cls.__builtin then
    local sig = rawget(cls, "__signature")
    if sig then return cls.__new(bind(cls, sig, select("#", ...), ...)) end
    return cls.__new(...)
  end
  local m = core.new_lua_module(cls.__name, cls)
  local init = cls.init
  if init then init(m, ...) end
  return m
end

--- nn.class(name [, parent]) -> Class.  Instances: Class(...) runs Class.init.
function nn.class(name, parent)
  if type(name) ~= "string" or name == "" then
    error("bad argument #1 to 'class' (class name expected, got " .. type(name) .. ")", 2)
  end
  parent = parent or Module
  if type(parent) ~= "table" or not parent.__name then
    error("bad argument #2 to 'class' (parent class expected, got " .. type(parent) .. ")", 2)
  end
  if parent.__builtin then
    error("class: cannot derive '" .. name .. "' from the built-in " .. parent.__name ..
          " (derive from nn.Module and hold a " .. parent.__name .. " as a child)", 2)
  end
  local cls = { __name = name, __parent = parent }
  setmetatable(cls, { __index = parent, __call = class_call, __tostring = function() return "class " .. name end })
  return cls
end

--- builtin(name, new [, signature]): a class whose instances new(...) makes in C;
--- the signature (see bind) checks the arguments and is what help shows.
local function builtin(name, new, signature)
  local cls = { __name = name, __parent = Module, __builtin = true, __new = new, __signature = signature }
  setmetatable(cls, { __index = Module, __call = class_call, __tostring = function() return "class " .. name end })
  classes[name] = cls
  return cls
end
nn.builtin = builtin

--- The class of a module (nil for unknown C types).
function nn.class_of(m)
  return core.env(m).__class or classes[core.type_name(m)]
end

--- isinstance(m, Class): follows the parents.
function nn.isinstance(m, cls)
  if not core.is_module(m) then return false end
  local c = nn.class_of(m)
  while c do
    if c == cls then return true end
    c = rawget(c, "__parent")
  end
  return false
end

nn.Parameter = core.Parameter

-- ---- Module methods ----

function Module:type() return core.type_name(self) end

function Module:forward(...)
  error(core.type_name(self) .. ": forward is not defined", 2)
end

function Module:add_module(name, m) core.add_module(self, name, m) end
function Module:register_parameter(name, t) core.register_parameter(self, name, t) end
function Module:register_buffer(name, t) core.register_buffer(self, name, t) end

-- An iterator over a list of {name, value} pairs: the shape of every named_*.
local function pairs_of(list)
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

--- named_children() -> iterator over (name, module) of the direct children.
function Module:named_children() return pairs_of(core.members(self, "children")) end

function Module:children()
  local list, out = core.members(self, "children"), {}
  for i, e in ipairs(list) do out[i] = e[2] end
  return out
end

local function collect_modules(m, prefix, out)
  out[#out + 1] = { prefix, m }
  for _, e in ipairs(core.members(m, "children")) do
    collect_modules(e[2], prefix == "" and e[1] or prefix .. "." .. e[1], out)
  end
  return out
end

--- named_modules() -> iterator over (path, module), depth-first, root first with "".
function Module:named_modules() return pairs_of(collect_modules(self, "", {})) end

function Module:modules()
  local out = {}
  for _, m in self:named_modules() do out[#out + 1] = m end
  return out
end

local function named_tensors(self, kind)
  local out = {}
  for path, m in self:named_modules() do
    for _, e in ipairs(core.members(m, kind)) do
      out[#out + 1] = { path == "" and e[1] or path .. "." .. e[1], e[2] }
    end
  end
  return out
end

--- named_parameters() -> iterator over (path, tensor).
function Module:named_parameters() return pairs_of(named_tensors(self, "parameters")) end

function Module:parameters()
  local out = {}
  for _, t in self:named_parameters() do out[#out + 1] = t end
  return out
end

--- zero_grad([set_to_none = true]): clears every parameter's .grad (or zeroes it in place).
function Module:zero_grad(set_to_none)
  for _, p in self:named_parameters() do
    if set_to_none == false then
      local g = p.grad
      if g then g:zero_() end
    else
      p.grad = nil
    end
  end
  return self
end

--- requires_grad_([flag = true]): sets requires_grad on every parameter (false freezes them).
function Module:requires_grad_(flag)
  if flag == nil then flag = true end
  if type(flag) ~= "boolean" then
    error("bad argument #1 to 'requires_grad_' (boolean expected, got " .. type(flag) .. ")", 2)
  end
  for _, p in self:named_parameters() do p:requires_grad_(flag) end
  return self
end

function Module:named_buffers() return pairs_of(named_tensors(self, "buffers")) end

function Module:num_parameters() return core.num_parameters(self) end

--- state_dict() -> {path = tensor} (parameters and buffers; the tensors are shared, not copied).
function Module:state_dict()
  local sd = {}
  for _, e in ipairs(named_tensors(self, "parameters")) do sd[e[1]] = e[2] end
  for _, e in ipairs(named_tensors(self, "buffers")) do sd[e[1]] = e[2] end
  return sd
end

local function shape_str(t) return tostring(t:shape()) end

--- load_state_dict(sd [, {strict = true}]) -> {missing = {...}, unexpected = {...}}
-- Copies values into the existing tensors (dtype converted); shapes must match.
function Module:load_state_dict(sd, opts)
  if type(sd) ~= "table" then
    error("bad argument #1 to 'load_state_dict' (table expected, got " .. type(sd) .. ")", 2)
  end
  local strict = not (opts and opts.strict == false)
  local own = self:state_dict()
  local missing, unexpected, mismatched = {}, {}, {}
  for k, t in pairs(own) do
    local v = sd[k]
    if v == nil then
      missing[#missing + 1] = k
    elseif not core.is_tensor(v) then
      error("load_state_dict: '" .. k .. "' is a " .. type(v) .. ", expected a Tensor", 2)
    elseif shape_str(v) ~= shape_str(t) then
      mismatched[#mismatched + 1] = string.format("'%s': checkpoint has shape %s, model has %s", k, shape_str(v), shape_str(t))
    end
  end
  for k in pairs(sd) do
    if own[k] == nil then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(missing); table.sort(unexpected); table.sort(mismatched)
  if #mismatched > 0 then
    error("load_state_dict: size mismatch for " .. table.concat(mismatched, "; "), 2)
  end
  if strict and (#missing > 0 or #unexpected > 0) then
    local parts = {}
    if #missing > 0 then parts[#parts + 1] = "missing keys: " .. table.concat(missing, ", ") end
    if #unexpected > 0 then parts[#parts + 1] = "unexpected keys: " .. table.concat(unexpected, ", ") end
    error("load_state_dict: " .. table.concat(parts, "; "), 2)
  end
  -- under no_grad, as torch's load_state_dict: parameters are leaves that may require grad
  local prev = core.set_grad_enabled(false)
  local ok, err = pcall(function()
    for k, t in pairs(own) do
      if sd[k] ~= nil then t:copy_(sd[k]) end
    end
  end)
  core.set_grad_enabled(prev)
  if not ok then error(err, 2) end
  return { missing = missing, unexpected = unexpected }
end

function Module:train(flag)
  if flag == nil then flag = true end
  core.set_training(self, flag and true or false, true)
  return self
end

function Module:eval() return self:train(false) end

--- clone() -> a deep copy (as copy.deepcopy): lua/attnswap/nn/clone.lua.
Module.clone = require "attnswap.nn.clone"

function Module:is_training() return core.is_training(self) end

--- apply(fn): fn(m) for every module, children first (as torch).
function Module:apply(fn)
  for _, c in ipairs(self:children()) do c:apply(fn) end
  fn(self)
  return self
end

--- to(device_or_dtype): moves or casts every parameter and buffer in place.
function Module:to(what)
  core.module_to(self, what)
  return self
end

function Module:cuda() return self:to("cuda") end
function Module:cpu() return self:to("cpu") end

function Module:extra_repr() return core.extra_repr(self) end

-- Prints the tree as torch does:
--   Model(
--     (attn): MultiheadAttention(dim=8, num_heads=2)
--   )
local function repr(m, indent)
  local head = core.type_name(m) .. "("
  local extra = m:extra_repr()
  local kids = core.members(m, "children")
  if #kids == 0 then return head .. extra .. ")" end
  local lines = { head }
  if extra ~= "" then lines[2] = indent .. "  " .. extra end
  for _, e in ipairs(kids) do
    lines[#lines + 1] = indent .. "  (" .. e[1] .. "): " .. repr(e[2], indent .. "  ")
  end
  lines[#lines + 1] = indent .. ")"
  return table.concat(lines, "\n")
end

function Module:__tostring() return repr(self, "") end
core.module_metatable.__tostring = function(m) return m:__tostring() end

-- ---- built-in layers ----

local function check_int(fn, i, v, what)
  if math.type(v) ~= "integer" then
    error(string.format("bad argument #%d to '%s' (%s expected, got %s)", i, fn, what,
      math.type(v) or type(v)), 3)
  end
end

-- A flag left out is the default; anything but a boolean is an error (0 is true in Lua).
local function check_flag(fn, i, v, name)
  if v ~= nil and type(v) ~= "boolean" then
    error(string.format("bad argument #%d to '%s' (boolean %s expected, got %s)", i, fn, name, type(v)), 3)
  end
end

-- PyTorch's factory options, which every layer takes.
local TO = "build, then m:to(...)"
local function pytorch(t)
  t.device, t.dtype = TO, TO
  return t
end
local INPLACE = pytorch { inplace = "not supported here (a forward never writes its input)" }

nn.Linear = builtin("Linear", function(in_features, out_features, bias)
  check_int("Linear", 1, in_features, "integer in_features")
  check_int("Linear", 2, out_features, "integer out_features")
  check_flag("Linear", 3, bias, "bias")
  return core.new_linear(in_features, out_features, bias)
end, { args = { "in_features", "out_features", "bias=true" }, pytorch = pytorch {} })

local NORM_PYTORCH = pytorch {
  normalized_shape = "dim", elementwise_affine = "affine",
  bias = "here affine = false leaves out the weight and the bias together",
}

nn.LayerNorm = builtin("LayerNorm", function(dim, eps, affine)
  check_int("LayerNorm", 1, dim, "integer dim")
  check_flag("LayerNorm", 3, affine, "affine")
  return core.new_layer_norm(dim, eps, affine)
end, { args = { "dim", "eps=1e-05", "affine=true" }, pytorch = NORM_PYTORCH })

nn.RMSNorm = builtin("RMSNorm", function(dim, eps, affine)
  check_int("RMSNorm", 1, dim, "integer dim")
  check_flag("RMSNorm", 3, affine, "affine")
  return core.new_rms_norm(dim, eps, affine)
end, { args = { "dim", "eps=1e-06", "affine=true" }, pytorch = NORM_PYTORCH })

local UNSUPPORTED = "not supported here"
nn.Embedding = builtin("Embedding", function(num, dim)
  check_int("Embedding", 1, num, "integer num_embeddings")
  check_int("Embedding", 2, dim, "integer embedding_dim")
  return core.new_embedding(num, dim)
end, { args = { "num_embeddings", "embedding_dim" }, pytorch = pytorch {
  padding_idx = UNSUPPORTED, max_norm = UNSUPPORTED, norm_type = UNSUPPORTED,
  scale_grad_by_freq = UNSUPPORTED, sparse = UNSUPPORTED, _weight = "build, then assign m.weight",
  _freeze = UNSUPPORTED,
} })

nn.Dropout = builtin("Dropout", function(p) return core.new_dropout(p) end,
  { args = { "p=0.5" }, pytorch = INPLACE })

-- GELU([approximate = "none" | "tanh"]), as torch
nn.GELU = builtin("GELU", function(approximate)
  if approximate ~= nil and approximate ~= "none" and approximate ~= "tanh" then
    error("GELU: approximate must be \"none\" or \"tanh\", got " .. tostring(approximate), 2)
  end
  return core.new_activation(approximate == "tanh" and "gelu_tanh" or "gelu")
end, { args = { "approximate=\"none\"" }, pytorch = pytorch {} })
nn.SiLU = builtin("SiLU", function() return core.new_activation("silu") end, { args = {}, pytorch = INPLACE })
nn.ReLU = builtin("ReLU", function() return core.new_activation("relu") end, { args = {}, pytorch = INPLACE })
nn.Tanh = builtin("Tanh", function() return core.new_activation("tanh") end, { args = {}, pytorch = pytorch {} })

nn.Sequential = builtin("Sequential", function(...)
  local s = core.new_sequential()
  for i = 1, select("#", ...) do
    local m = select(i, ...)
    if not core.is_module(m) then
      error(string.format("bad argument #%d to 'Sequential' (Module expected, got %s)", i, type(m)), 2)
    end
    core.append(s, m)
  end
  return s
end)

nn.ModuleList = builtin("ModuleList", function(list)
  local l = core.new_module_list()
  for i, m in ipairs(list or {}) do
    if not core.is_module(m) then
      error(string.format("ModuleList: element %d is a %s, expected a Module", i, type(m)), 2)
    end
    core.append(l, m)
  end
  return l
end)

-- ---- losses (Lua modules over attnswap.functional) ----

-- A loss class: Class(opts) keeps the options (checked by its function at the
-- first call) and forward(input, target) calls F[fn](input, target, opts).
local function loss_class(name, fn, known)
  local cls = nn.class(name)
  function cls:init(opts)
    if opts ~= nil and (type(opts) ~= "table" or getmetatable(opts) ~= nil) then
      error(string.format("%s: options must be a table ({reduction = ...}), got %s", name,
        core.is_tensor(opts) and "a Tensor" or type(opts)), 3)
    end
    nn.check_options(name, opts or {}, known, nil, 3)
    self.options = opts or {}
  end
  function cls:forward(input, target)
    return require("attnswap.functional")[fn](input, target, self.options)
  end
  function cls:extra_repr()
    local parts = {}
    for _, k in ipairs(known) do
      local v = self.options[k]
      if v ~= nil then parts[#parts + 1] = k .. "=" .. (core.is_tensor(v) and "Tensor" or tostring(v)) end
    end
    return table.concat(parts, ", ")
  end
  nn[name] = cls
  return cls
end

loss_class("CrossEntropyLoss", "cross_entropy", { "weight", "ignore_index", "reduction", "label_smoothing" })
loss_class("NLLLoss", "nll_loss", { "weight", "ignore_index", "reduction" })
loss_class("MSELoss", "mse_loss", { "reduction" })
loss_class("L1Loss", "l1_loss", { "reduction" })
loss_class("KLDivLoss", "kl_div", { "reduction", "log_target" })
loss_class("BCEWithLogitsLoss", "binary_cross_entropy_with_logits", { "reduction", "pos_weight" })

--- container:append(m)
function Module:append(m)
  if not core.is_module(m) then
    error("bad argument #1 to 'append' (Module expected, got " .. type(m) .. ")", 2)
  end
  core.append(self, m)
  return self
end

function Module:__len() return #core.members(self, "children") end
core.module_metatable.__len = function(m) return #core.members(m, "children") end

-- LoRA adapters (nn/lora.lua): nn.LoRA(base, r, alpha), nn.LoRA.wrap, nn.LoRA.merge
nn.LoRA = require("attnswap.nn.lora")(nn)
nn.parallel = require("attnswap.nn.parallel")(nn) -- DistributedDataParallel, docs/distributed.md

return nn
