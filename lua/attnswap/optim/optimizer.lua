-- The optimizer base (as torch.optim.Optimizer): parameter groups, state,
-- zero_grad, state_dict/load_state_dict.  A subclass gives its name, its
-- defaults (the option names and their default values), a check of a group's
-- options and update(self, group, p, grad, state), run under no_grad.
--
-- Parameters are identified by position (group, index), never by tensor
-- identity: each read of a module's parameter is a fresh Lua value for the
-- same C tensor.
local core = require "attnswap.core"

local Optimizer = {}
Optimizer.__index = Optimizer
Optimizer.__name = "Optimizer"

local FLOATS = { float32 = true, float16 = true, bfloat16 = true, float64 = true }
-- The dtypes the fused kernels update (the others take the tensor-op path).
Optimizer.FUSED = { float32 = true, float16 = true, bfloat16 = true }

-- Runs fn(...) with grad mode set to `on`, restoring the previous mode even on error.
local function with_grad(on, fn, ...)
  local prev = core.set_grad_enabled(on)
  local r = table.pack(pcall(fn, ...))
  core.set_grad_enabled(prev)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end
Optimizer.with_grad = with_grad

local function is_plain_table(x) return type(x) == "table" and getmetatable(x) == nil end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

-- Checks a group's tensors: a list of float leaf tensors (a single tensor is a list of one).
local function check_params(fn, list, gi)
  if core.is_tensor(list) then list = { list } end
  if core.is_module(list) then
    error(fn .. ": got a Module; pass model:parameters() (or a list of parameter groups)", 0)
  end
  if not is_plain_table(list) then
    error(string.format("%s: params must be a list of tensors or of parameter groups ({params = ..., lr = ...}), got %s",
      fn, type(list)), 0)
  end
  local out = {}
  for i, p in ipairs(list) do
    local where = string.format("parameter %d%s", i, gi and " of parameter group " .. gi or "")
    if not core.is_tensor(p) then
      error(string.format("%s: %s is a %s, expected a Tensor", fn, where, type(p)), 0)
    end
    if not FLOATS[p:dtype()] then
      error(string.format("%s: %s is %s; only floating-point tensors can be optimized", fn, where, p:dtype()), 0)
    end
    if not p.is_leaf then
      error(string.format("%s: can't optimize a non-leaf tensor (%s, made by %s): optimize the leaf it came " ..
        "from, or a detached copy (t:detach():requires_grad_())", fn, where, tostring(p.grad_fn)), 0)
    end
    out[i] = p
  end
  return out
end

-- Errors inside the optimizer are raised without a position (level 0) and
-- re-raised at the user's call by the public entry points.
local function rethrow(ok, ...)
  if not ok then
    local msg = tostring((...)):gsub("^[^%s:]+:%d+: ", "")
    error(msg, 3)
  end
  return ...
end

-- Options checked as nn.check_options does, without a position.
local function check_options(fn, given, known)
  local ok, err = pcall(require("attnswap.nn").check_options, fn, given, known)
  if not ok then error((tostring(err):gsub("^[^%s:]+:%d+: ", "")), 0) end
end

local function init(self, name, params, opts, defaults)
  self.name = name
  local known = sorted_keys(defaults)
  if opts ~= nil and not is_plain_table(opts) then
    error(string.format("%s: options must be a table ({lr = ...}), got %s", name, type(opts)), 0)
  end
  opts = opts or {}
  check_options(name, opts, known)
  self.defaults = {}
  for k, v in pairs(defaults) do
    if opts[k] ~= nil then self.defaults[k] = opts[k] else self.defaults[k] = v end
  end
  self.param_groups, self.state = {}, {}
  if params == nil then error(name .. ": params expected (a list of tensors or model:parameters())", 0) end
  local groups
  if is_plain_table(params) and is_plain_table(params[1]) then
    groups = params
    self._grouped = true
  else
    groups = { { params = params } }
  end
  if #groups == 0 then error(name .. ": got an empty parameter list", 0) end
  for _, g in ipairs(groups) do self:_add_group(g) end
  local total = 0
  for _, g in ipairs(self.param_groups) do total = total + #g.params end
  if total == 0 then error(name .. ": got an empty parameter list", 0) end
  return self
end

function Optimizer:_add_group(group)
  local name = self.name
  if not is_plain_table(group) then
    error(string.format("%s: a parameter group must be a table {params = ..., lr = ...}, got %s", name, type(group)), 0)
  end
  local known = sorted_keys(self.defaults)
  table.insert(known, 1, "params")
  check_options(name .. " (parameter group)", group, known)
  if group.params == nil then error(name .. ": a parameter group needs params", 0) end
  local gi = #self.param_groups + 1
  local g = { params = check_params(name, group.params, self._grouped and gi or nil) }
  for k, v in pairs(self.defaults) do
    if group[k] ~= nil then g[k] = group[k] else g[k] = v end
  end
  local ok, err = pcall(self.check_group, self, g)
  if not ok then
    error(string.format("%s: %s%s", name, tostring(err):gsub("^[^%s:]+:%d+: ", ""),
      self._grouped and " (parameter group " .. gi .. ")" or ""), 0)
  end
  self.param_groups[gi] = g
  self.state[gi] = {}
  self._versions = self._versions or {}
  self._versions[gi] = {}
end

--- opt:add_param_group{params = ..., <option> = ...}: options left out take the defaults.
function Optimizer:add_param_group(group)
  self._grouped = true
  local r = rethrow(pcall(self._add_group, self, group))
  return r
end

function Optimizer:check_group(g) end

--- opt:zero_grad([set_to_none = true]): clears every parameter's .grad (or zeroes it in place).
function Optimizer:zero_grad(set_to_none)
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if set_to_none == false then
        local grad = p.grad
        if grad then grad:zero_() end
      else
        p.grad = nil
      end
    end
  end
end

--- opt:step([closure]): one update of every parameter that has a .grad (under no_grad).
--- closure, when given, is called first with grad mode on (it should zero the
--- gradients, compute the loss, call backward and return the loss); step returns its result.
function Optimizer:step(closure)
  local loss
  if closure ~= nil then loss = with_grad(true, closure) end
  if not self._checked_grad then
    -- torch accepts parameters that do not require grad (they get no .grad and
    -- are skipped); here modules' parameters do not require grad until
    -- requires_grad_(), so an optimizer none of whose parameters does is the
    -- mistake "nothing trains": said once, at the first step.
    local total = 0
    for _, g in ipairs(self.param_groups) do
      for _, p in ipairs(g.params) do
        total = total + 1
        if p.requires_grad then self._checked_grad = true end
      end
    end
    if not self._checked_grad then
      error(string.format("%s: none of the %d parameters requires grad, so no step would change them " ..
        "(call model:requires_grad_() or t:requires_grad_() first)", self.name, total), 2)
    end
  end
  with_grad(false, function()
    for gi, g in ipairs(self.param_groups) do
      local states = self.state[gi]
      for i, p in ipairs(g.params) do
        local grad = p.grad
        if grad ~= nil then
          local st = states[i]
          if not st then st = {}; states[i] = st end
          self:update(g, p, grad, st, gi, i)
          self:_stepped(gi, i, p)
        end
      end
    end
  end)
  return loss
end

-- A fresh zero tensor of p's shape, dtype and device (not requiring grad).
function Optimizer.zeros_like(p)
  return p:detach():clone():zero_()
end

-- The float32 master copy of a float16 / bfloat16 parameter (st.master_param),
-- made on the first step and kept in step with the parameter: when the
-- parameter was written since this optimizer's last step (a checkpoint loaded
-- into the model, an edit under no_grad), its storage's version tells, and
-- the master is refreshed from it instead of overwriting it.  _versions is
-- outside the state (state_dict does not save it): after load_state_dict the
-- loaded master is trusted.
function Optimizer:_master(gi, i, p, st)
  if p:dtype() == "float32" then return nil end
  local versions = self._versions[gi]
  if st.master_param == nil then
    st.master_param = p:detach():float()
  elseif versions[i] ~= nil and versions[i] ~= core.storage_version(p) then
    st.master_param:copy_(p:detach())
  end
  return st.master_param
end

-- Records p's version after a step (see _master).
function Optimizer:_stepped(gi, i, p) self._versions[gi][i] = core.storage_version(p) end

-- A fresh float32 zero tensor of p's shape on p's device (clone first: float()
-- of a float32 tensor is the tensor itself).
function Optimizer.zeros_f32(p)
  return p:detach():clone():float():zero_()
end

--- opt:state_dict() -> {state = {[k] = {step = n, <buffer> = tensor, ...}},
--- param_groups = {{<option> = value, ..., params = {k, ...}}}}: k numbers the parameters
--- 1, 2, ... across the groups in order; the tensors are copies.
function Optimizer:state_dict()
  local state, groups, k = {}, {}, 0
  for gi, g in ipairs(self.param_groups) do
    local ids = {}
    local out = {}
    for key, v in pairs(g) do
      if key ~= "params" then
        out[key] = type(v) == "table" and table.move(v, 1, #v, 1, {}) or v
      end
    end
    for i in ipairs(g.params) do
      k = k + 1
      ids[i] = k
      local st = self.state[gi][i]
      if st then
        local copy = {}
        for key, v in pairs(st) do
          copy[key] = core.is_tensor(v) and v:clone() or v
        end
        state[k] = copy
      end
    end
    out.params = ids
    groups[gi] = out
  end
  return { state = state, param_groups = groups }
end

-- Checks sd against this optimizer and builds the new state (copies in the
-- dtype the step uses) without changing anything; errors at level 0.
function Optimizer:_prepare_load(sd)
  local name = self.name
  if not is_plain_table(sd) or not is_plain_table(sd.param_groups) or not is_plain_table(sd.state) then
    error(name .. ": load_state_dict expects a table from state_dict() ({state = ..., param_groups = ...})", 0)
  end
  if #sd.param_groups ~= #self.param_groups then
    error(string.format("%s: load_state_dict: the saved state has %d parameter groups, this optimizer %d",
      name, #sd.param_groups, #self.param_groups), 0)
  end
  local new_state = {}
  for gi, g in ipairs(self.param_groups) do
    local sg = sd.param_groups[gi]
    if not is_plain_table(sg) or not is_plain_table(sg.params) or #sg.params ~= #g.params then
      error(string.format("%s: load_state_dict: saved parameter group %d has %d parameters, this optimizer's %d",
        name, gi, is_plain_table(sg) and is_plain_table(sg.params) and #sg.params or 0, #g.params), 0)
    end
    local merged = {}
    for key, v in pairs(g) do merged[key] = v end
    for key, v in pairs(sg) do
      if key ~= "params" and self.defaults[key] ~= nil then
        if type(v) ~= type(self.defaults[key]) then
          error(string.format("%s: load_state_dict: option %s of group %d is a %s, expected a %s", name, key, gi,
            type(v), type(self.defaults[key])), 0)
        end
        merged[key] = v
      end
    end
    -- the saved options must be ones this optimizer would accept (a file may say anything)
    local ok, err = pcall(self.check_group, self, merged)
    if not ok then
      error(string.format("%s: load_state_dict: group %d: %s", name, gi, tostring(err):gsub("^[^%s:]+:%d+: ", "")), 0)
    end
    new_state[gi] = {}
    for i, p in ipairs(g.params) do
      local st = sd.state[sg.params[i]]
      if st ~= nil then
        if not is_plain_table(st) then
          error(string.format("%s: load_state_dict: the state of parameter %d in group %d is a %s", name, i, gi,
            type(st)), 0)
        end
        local copy = {}
        for _, key in ipairs(sorted_keys(st)) do
          local v = st[key]
          if core.is_tensor(v) then
            if tostring(v:shape()) ~= tostring(p:shape()) then
              error(string.format("%s: load_state_dict: %s of parameter %d in group %d has shape %s, the parameter %s",
                name, key, i, gi, tostring(v:shape()), tostring(p:shape())), 0)
            end
            if not FLOATS[v:dtype()] then
              error(string.format("%s: load_state_dict: %s of parameter %d in group %d is %s, expected a float tensor",
                name, key, i, gi, v:dtype()), 0)
            end
            -- the fused path keeps float32 state, the tensor-op path the parameter's dtype
            local t = Optimizer.FUSED[p:dtype()] and Optimizer.zeros_f32(p) or Optimizer.zeros_like(p)
            t:copy_(v)
            copy[key] = t
          else
            copy[key] = v
          end
        end
        if copy.step ~= nil and math.type(copy.step) ~= "integer" then
          error(string.format("%s: load_state_dict: step of parameter %d in group %d is %s, expected an integer",
            name, i, gi, tostring(copy.step)), 0)
        end
        new_state[gi][i] = copy
      end
    end
  end
  return new_state
end

function Optimizer:_commit_load(sd, new_state)
  for gi, g in ipairs(self.param_groups) do
    for key, v in pairs(sd.param_groups[gi]) do
      if key ~= "params" and self.defaults[key] ~= nil then
        g[key] = type(v) == "table" and table.move(v, 1, #v, 1, {}) or v
      end
    end
  end
  self.state = new_state
  for gi in ipairs(self.param_groups) do self._versions[gi] = {} end
end

--- opt:load_state_dict(sd): the groups must match this optimizer's in number and size, and
--- each saved buffer the shape of its parameter; options and state are restored (the
--- buffers copied to the parameter's device, float32 where the fused step runs).  Checked
--- before anything changes: an error leaves the optimizer as it was.
function Optimizer:load_state_dict(sd)
  local new_state = rethrow(pcall(self._prepare_load, self, sd))
  self:_commit_load(sd, new_state)
end

function Optimizer:__tostring()
  local lines = { self.name .. " (" }
  for gi, g in ipairs(self.param_groups) do
    lines[#lines + 1] = string.format("Parameter Group %d", gi)
    for _, k in ipairs(sorted_keys(self.defaults)) do
      local v = g[k]
      if type(v) == "table" then v = "{" .. table.concat(v, ", ") .. "}" end
      lines[#lines + 1] = string.format("    %s: %s", k, tostring(v))
    end
  end
  lines[#lines + 1] = ")"
  return table.concat(lines, "\n")
end

--- Optimizer.class(name, defaults, update [, check_group]) -> the constructor's table:
--- Class(params, opts) makes an optimizer.
function Optimizer.class(name, defaults, update, check_group)
  local cls = setmetatable({}, { __index = Optimizer })
  cls.__index = cls
  cls.__name = name
  cls.__tostring = Optimizer.__tostring
  cls.update = update
  if check_group then cls.check_group = check_group end
  return setmetatable(cls, {
    __index = Optimizer,
    __call = function(_, params, opts)
      local opt = rethrow(pcall(init, setmetatable({}, cls), name, params, opts, defaults))
      return opt
    end,
    __tostring = function() return "class " .. name end,
  })
end

--- Validation helpers for check_group.
function Optimizer.check_number(g, key, lo, hi, open_hi)
  local v = g[key]
  if type(v) ~= "number" or v ~= v or v < lo or (hi and (open_hi and v >= hi or v > hi)) then
    error(string.format("invalid %s: %s (expected a number %s %s%s)", key, tostring(v),
      ">=", tostring(lo), hi and (open_hi and " and < " or " and <= ") .. tostring(hi) or ""), 0)
  end
end

return Optimizer
