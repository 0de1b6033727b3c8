-- as.optim.lr_scheduler: learning-rate schedules, as torch.optim.lr_scheduler.
-- A scheduler remembers each group's starting lr (base_lrs, also kept as the
-- group's initial_lr); building one sets the lr of step 0, and sched:step()
-- (after opt:step(), once per step) moves to the next step and writes each
-- group's lr.  Every schedule here is in closed form: lr(step) = f(base_lr, step).
--
--   LambdaLR(opt, fn | {fn, ...})             base * fn(step)
--   LinearLR(opt, {start_factor = 1/3, end_factor = 1, total_iters = 5})
--   CosineAnnealingLR(opt, {T_max, eta_min = 0})
--   LinearWarmupCosine(opt, {warmup_steps, total_steps, min_lr_ratio = 0, num_cycles = 0.5})
--       0 -> base linearly over warmup_steps, then a half cosine down to min_lr_ratio * base
--       at total_steps (transformers' get_cosine_schedule_with_warmup when min_lr_ratio = 0)
--   LinearWarmupLinear(opt, {warmup_steps, total_steps})
--       0 -> base over warmup_steps, then linearly down to 0 at total_steps
--       (transformers' get_linear_schedule_with_warmup)
local M = {}

local Scheduler = {}
Scheduler.__index = Scheduler

local function check_opt(fn, opt, level)
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then
    error(string.format("bad argument #1 to '%s' (an optimizer expected, got %s)", fn, type(opt)), level or 4)
  end
end

local function check_options(fn, o, known)
  if o ~= nil and type(o) ~= "table" then
    error(string.format("%s: options must be a table, got %s", fn, type(o)), 3)
  end
  o = o or {}
  local ok, err = pcall(require("attnswap.nn").check_options, fn, o, known)
  if not ok then error((tostring(err):gsub("^[^%s:]+:%d+: ", "")), 3) end
  return o
end

local function need_int(fn, o, key, lo)
  local v = o[key]
  if math.type(v) ~= "integer" or v < lo then
    error(string.format("%s: %s must be an integer >= %d, got %s", fn, key, lo, tostring(v)), 3)
  end
  return v
end

-- new(fn, opt, lr_at): lr_at(base_lr, step, group_index) -> lr.
local function new(fn, opt, lr_at)
  check_opt(fn, opt)
  local self = setmetatable({ optimizer = opt, name = fn, lr_at = lr_at, base_lrs = {}, last_epoch = -1 }, Scheduler)
  for i, g in ipairs(opt.param_groups) do
    if g.initial_lr == nil then g.initial_lr = g.lr end
    self.base_lrs[i] = g.initial_lr
  end
  self:step()
  return self
end

--- sched:step(): the next step's lr into every group.
function Scheduler:step()
  self.last_epoch = self.last_epoch + 1
  self._last_lr = {}
  for i, g in ipairs(self.optimizer.param_groups) do
    g.lr = self.lr_at(self.base_lrs[i], self.last_epoch, i)
    self._last_lr[i] = g.lr
  end
end

--- sched:get_last_lr() -> {lr of group 1, ...}
function Scheduler:get_last_lr() return table.move(self._last_lr, 1, #self._last_lr, 1, {}) end

function Scheduler:state_dict()
  return { last_epoch = self.last_epoch, base_lrs = table.move(self.base_lrs, 1, #self.base_lrs, 1, {}) }
end

--- sched:load_state_dict(sd): resumes at the saved step (and writes that step's lr).
function Scheduler:load_state_dict(sd)
  if type(sd) ~= "table" or math.type(sd.last_epoch) ~= "integer" or type(sd.base_lrs) ~= "table" then
    error(self.name .. ": load_state_dict expects a table from state_dict()", 2)
  end
  self.base_lrs = table.move(sd.base_lrs, 1, #sd.base_lrs, 1, {})
  self.last_epoch = sd.last_epoch - 1
  self:step()
end

function M.LambdaLR(opt, fns)
  local fn = "LambdaLR"
  check_opt(fn, opt, 3)
  if type(fns) == "function" then
    local f = fns
    fns = {}
    for i = 1, #opt.param_groups do fns[i] = f end
  end
  if type(fns) ~= "table" or #fns ~= #opt.param_groups then
    error(string.format("%s: lr_lambda must be a function or a list of %d (one per group)", fn, #opt.param_groups), 2)
  end
  return new(fn, opt, function(base, step, i) return base * fns[i](step) end)
end

function M.LinearLR(opt, o)
  local fn = "LinearLR"
  o = check_options(fn, o, { "start_factor", "end_factor", "total_iters" })
  local s, e = o.start_factor or 1 / 3, o.end_factor or 1.0
  local n = o.total_iters or 5
  if type(s) ~= "number" or s <= 0 or s > 1 or type(e) ~= "number" or e < 0 or e > 1 then
    error(fn .. ": start_factor must be in (0, 1] and end_factor in [0, 1]", 2)
  end
  if math.type(n) ~= "integer" or n < 0 then error(fn .. ": total_iters must be an integer >= 0", 2) end
  return new(fn, opt, function(base, step)
    local t = n == 0 and 1 or math.min(step, n) / n
    return base * (s + (e - s) * t)
  end)
end

function M.CosineAnnealingLR(opt, o)
  local fn = "CosineAnnealingLR"
  o = check_options(fn, o, { "T_max", "eta_min" })
  local T = need_int(fn, o, "T_max", 1)
  local eta_min = o.eta_min or 0
  return new(fn, opt, function(base, step)
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * step / T)) / 2
  end)
end

function M.LinearWarmupCosine(opt, o)
  local fn = "LinearWarmupCosine"
  o = check_options(fn, o, { "warmup_steps", "total_steps", "min_lr_ratio", "num_cycles" })
  local w = need_int(fn, o, "warmup_steps", 0)
  local total = need_int(fn, o, "total_steps", 1)
  if w > total then error(string.format("%s: warmup_steps (%d) exceeds total_steps (%d)", fn, w, total), 2) end
  local floor = o.min_lr_ratio or 0
  local cycles = o.num_cycles or 0.5
  return new(fn, opt, function(base, step)
    if step < w then return base * step / w end
    local progress = total == w and 1 or (step - w) / (total - w)
    local c = math.max(0, 0.5 * (1 + math.cos(math.pi * 2 * cycles * math.min(progress, 1))))
    return base * (floor + (1 - floor) * c)
  end)
end

function M.LinearWarmupLinear(opt, o)
  local fn = "LinearWarmupLinear"
  o = check_options(fn, o, { "warmup_steps", "total_steps" })
  local w = need_int(fn, o, "warmup_steps", 0)
  local total = need_int(fn, o, "total_steps", 1)
  if w > total then error(string.format("%s: warmup_steps (%d) exceeds total_steps (%d)", fn, w, total), 2) end
  return new(fn, opt, function(base, step)
    if step < w then return base * step / w end
    return base * math.max(0, (total - step) / math.max(1, total - w))
  end)
end

M.Scheduler = Scheduler
return M
