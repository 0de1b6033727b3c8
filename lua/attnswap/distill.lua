-- as.distill: get a model's quality back after a swap, the recipe of LoLCATs
-- (Zhang et al. 2024, "LoLCATs: On Low-Rank Linearizing of Large Language
-- Models") and Hedgehog (Zhang et al. 2024) for any model attnswap runs.
--
-- Stage "attention" (attention transfer): each swapped core learns to give
-- the original core's output on the same q, k, v.  Teacher-forced: the
-- original output goes on to the next layer, so every layer sees exactly the
-- teacher's inputs, and each layer's loss is backpropagated on the spot —
-- the graph never spans more than one core.  Only the new cores train.
-- Stage "logits": KL(teacher || student) on the output distributions,
-- training the new cores plus LoRA adapters on the projections around them
-- (merged back at the end), or the new cores only, or everything.
-- The teacher is never modified and runs under no_grad.
local core = require "attnswap.core"
local registry = require "attnswap.registry"
local swap = require "attnswap.swap"

local M = {}

local FN = "as.distill"
local STAGES = { attention = true, logits = true }
local KNOWN = { "stages", "steps", "lr", "weight_decay", "accumulate", "eval_data", "progress", "log",
  "plot", "save", "lora", "train", "temperature", "task_loss", "forward", "output", "merge" }
local DEFAULT_LR = { attention = 1e-2, logits = 1e-4 }

local function fail(fmt, ...) error(string.format(FN .. ": " .. fmt, ...), 0) end

local function is_tensor(t) return core.is_tensor(t) end

-- ---- checks ----

local function options(opts)
  local nn = require "attnswap.nn"
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then fail("options must be a table, got %s", type(opts)) end
  nn.check_options(FN, opts, KNOWN, nil, 4)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.stages = o.stages or { "attention", "logits" }
  if type(o.stages) == "string" then o.stages = { o.stages } end
  for _, s in ipairs(o.stages) do
    if not STAGES[s] then fail("unknown stage '%s' (stages are \"attention\" and \"logits\")", tostring(s)) end
  end
  local function per_stage(name, v, default, check)
    local t = {}
    for _, s in ipairs { "attention", "logits" } do
      local x = v
      if type(v) == "table" then x = v[s] end
      if x == nil then x = default[s] end
      check(s, x)
      t[s] = x
    end
    return t
  end
  o.steps = per_stage("steps", o.steps, { attention = 100, logits = 100 }, function(s, x)
    if math.type(x) ~= "integer" or x < 1 then fail("steps (%s) must be a positive integer, got %s", s, tostring(x)) end
  end)
  o.lr = per_stage("lr", o.lr, DEFAULT_LR, function(s, x)
    if type(x) ~= "number" or x <= 0 then fail("lr (%s) must be a positive number, got %s", s, tostring(x)) end
  end)
  o.accumulate = o.accumulate or 1
  if math.type(o.accumulate) ~= "integer" or o.accumulate < 1 then
    fail("accumulate must be a positive integer, got %s", tostring(o.accumulate))
  end
  o.train = o.train or "lora"
  if o.train ~= "lora" and o.train ~= "cores" and o.train ~= "all" then
    fail("train must be \"lora\", \"cores\" or \"all\", got %s", tostring(o.train))
  end
  o.lora = o.lora or {}
  o.lora.r, o.lora.alpha = o.lora.r or 8, o.lora.alpha or 16
  o.output = o.output or "logits"
  if o.output ~= "logits" and o.output ~= "hidden" then
    fail("output must be \"logits\" (KL on distributions) or \"hidden\" (MSE on states), got %s", tostring(o.output))
  end
  o.temperature = o.temperature or 1
  if o.log == nil then o.log = true end
  if o.progress == nil then o.progress = o.log and os.execute("[ -t 2 ]") == true end
  return o
end

-- The student's cores that differ from the teacher's at the same path:
-- {path, student core, teacher core}.  Also checks that the two models are
-- the same architecture around them.
local function swapped_cores(student, teacher)
  local tmods = {}
  for path, m in teacher:named_modules() do tmods[path] = m end
  local found, is_core = {}, registry.attention.is_core
  for path, m in student:named_modules() do
    if is_core(m) then
      local t = tmods[path]
      if t == nil or not is_core(t) then
        fail("the teacher has no attention core at %s, where the student has %s: teacher and student must be the same " ..
          "architecture (the student a swapped copy: student = teacher:clone(); as.swap_attention(student, ...))",
          path == "" and "<root>" or path, core.type_name(m))
      end
      if core.type_name(m) ~= core.type_name(t) then
        found[#found + 1] = { path = path, student = m, teacher = t }
      end
    end
  end
  if #found == 0 then
    fail("the student has no swapped attention core (each core is of the teacher's type at the same path): " ..
      "swap one first, e.g. as.swap_attention(student, \"scaled_dot_product\", \"hedgehog_attention\")")
  end
  local function inside_swapped(name)
    for _, e in ipairs(found) do
      if e.path == "" or name:sub(1, #e.path + 1) == e.path .. "." then return true end
    end
    return false
  end
  local tparams = {}
  for name, p in teacher:named_parameters() do
    if not inside_swapped(name) then tparams[name] = p end
  end
  for name, p in student:named_parameters() do
    if not inside_swapped(name) then
      local t = tparams[name]
      if t == nil then
        fail("the student has a parameter %s that the teacher lacks: teacher and student must be the same architecture", name)
      end
      if tostring(t:shape()) ~= tostring(p:shape()) then
        fail("parameter %s is %s in the student and %s in the teacher: teacher and student must be the same architecture",
          name, tostring(p:shape()), tostring(t:shape()))
      end
      tparams[name] = nil
    end
  end
  local missing = next(tparams)
  if missing then
    fail("the teacher has a parameter %s that the student lacks: teacher and student must be the same architecture", missing)
  end
  if student == teacher then fail("student and teacher are the same model: distil a swapped copy (teacher:clone())") end
  return found
end

-- ---- data ----

local function batches(data)
  if type(data) == "function" then return data end
  if type(data) ~= "table" or is_tensor(data) then
    fail("data must be an array of batches (tensors, or tables of a forward's arguments) or an iterator function, got %s",
      is_tensor(data) and "a Tensor (wrap it: {t})" or type(data))
  end
  if #data == 0 then fail("data is empty") end
  local i = 0
  return function()
    i = i % #data + 1
    return data[i]
  end
end

local function forward(model, batch, fwd)
  local out
  if fwd then out = fwd(model, batch)
  elseif is_tensor(batch) then out = model(batch)
  elseif type(batch) == "table" then out = model(table.unpack(batch))
  else fail("a batch must be a tensor or a table of the forward's arguments, got %s", type(batch)) end
  if not is_tensor(out) then
    fail("the model's forward returned %s, not a tensor: pass {forward = function(model, batch) return logits end}",
      type(out))
  end
  return out
end

-- What a batch counts: its tokens (an integer input's elements) or its samples.
local function count(batch)
  local t = is_tensor(batch) and batch or (type(batch) == "table" and batch[1])
  if not is_tensor(t) then return 1 end
  local dt = t:dtype()
  if dt == "int64" or dt == "int32" then return t:numel() end
  return t:dim() > 0 and t:size(1) or 1
end

-- ---- losses ----

local function flat(t)
  local C = t:size(t:dim())
  return t:float():reshape(t:numel() // C, C)
end

-- KL(teacher || student) per row, averaged (batchmean), on the last dim.
local function output_loss(o, s, t)
  local F = require "attnswap.functional"
  if o.output == "hidden" then return F.mse_loss(s:float(), t:float()) end
  local T = o.temperature
  local ls, lt = flat(s), flat(t)
  if T ~= 1 then ls, lt = ls / T, lt / T end
  local kl = F.kl_div(ls:log_softmax(2), lt:log_softmax(2), { log_target = true, reduction = "batchmean" })
  return T ~= 1 and kl * (T * T) or kl
end

-- ---- the probe that teacher-forces a core ----

local probe_class
local function Probe()
  if probe_class then return probe_class end
  local nn = require "attnswap.nn"
  probe_class = nn.class("DistillProbe")
  function probe_class:init(student_core, teacher_core, state)
    self.student = student_core
    self.ref = { teacher = teacher_core, state = state } -- not a child: the teacher stays out of the student
  end
  function probe_class:forward(q, k, v, mask, ...)
    local st, extra = self.ref.state, table.pack(...)
    local want = core.set_grad_enabled(false)
    local ok, o_t = pcall(self.ref.teacher, q, k, v, mask, table.unpack(extra, 1, extra.n))
    core.set_grad_enabled(want)
    if not ok then error(o_t, 0) end
    local o_s = self.student(q:detach(), k:detach(), v:detach(), mask, table.unpack(extra, 1, extra.n))
    local F = require "attnswap.functional"
    local loss = F.mse_loss(o_s:float(), o_t:float())
    if loss.requires_grad then (loss * st.scale):backward() end
    st.loss = st.loss + loss:item()
    return o_t:detach()
  end
  return probe_class
end

-- ---- progress ----

local function fmt_time(s)
  s = math.max(0, math.floor(s + 0.5))
  return string.format("%d:%02d", s // 60, s % 60)
end

local function reporter(o, stage, steps)
  local t0, last_line = core.clock(), -1
  return function(step, loss, lr, done_count)
    local el = core.clock() - t0
    local rate = done_count / math.max(el, 1e-9)
    if not o.log then return rate end
    local eta = el / step * (steps - step)
    if o.progress then
      local w = 24
      local fill = math.floor(w * step / steps)
      io.stderr:write(string.format("\r%-9s %5d/%d [%s%s] loss %.4g  lr %.1e  %.0f/s  ETA %s ", stage, step, steps,
        string.rep("#", fill), string.rep(".", w - fill), loss, lr, rate, fmt_time(eta)))
      if step == steps then io.stderr:write("\n") end
      io.stderr:flush()
    else
      local line = step * 10 // steps
      if line ~= last_line and (step == steps or step * 10 % steps < 10) then
        last_line = line
        print(string.format("%s step %d/%d  loss %.4g  lr %.1e  %.0f/s  elapsed %s", stage, step, steps, loss, lr, rate,
          fmt_time(el)))
      end
    end
    return rate
  end
end

-- ---- stages ----

local function set_trainable(model, params)
  local saved = {}
  for _, p in model:named_parameters() do
    saved[#saved + 1] = { p, p.requires_grad }
    p:requires_grad_(false)
  end
  for _, p in ipairs(params) do p:requires_grad_(true) end
  return function()
    for _, e in ipairs(saved) do e[1]:requires_grad_(e[2]) end
  end
end

local function core_params(cores)
  local list = {}
  for _, e in ipairs(cores) do
    for _, p in e.student:named_parameters() do list[#list + 1] = p end
  end
  return list
end

-- Runs fn(step) for step = 1..steps; Ctrl-C (attnswap-run's "interrupted!")
-- ends the loop with the weights so far.  Returns the steps done and whether
-- it was interrupted.
local function loop(steps, fn)
  for step = 1, steps do
    local ok, err = pcall(fn, step)
    if not ok then
      if tostring(err):find("interrupted!", 1, true) then return step - 1, true end
      error(err, 0)
    end
    if err == false then return step - 1, false end -- the data ran out
  end
  return steps, false
end

local function eval_metric(o, student, teacher, data)
  if not data then return nil end
  local _ <close> = require("attnswap").no_grad()
  local total = 0
  for _, b in ipairs(data) do
    total = total + output_loss(o, forward(student, b, o.forward), forward(teacher, b, o.forward)):item()
  end
  local v = total / #data
  -- a KL is never negative; float32 rounding of two near-equal distributions can say -1e-8
  if o.output == "logits" then v = math.max(v, 0) end
  return v
end

local function attention_stage(o, student, cores, next_batch, hist)
  local trainable, skipped = {}, {}
  for _, e in ipairs(cores) do
    local n = 0
    for _ in e.student:named_parameters() do n = n + 1 end
    if n > 0 then trainable[#trainable + 1] = e else skipped[#skipped + 1] = e end
  end
  for _, e in ipairs(skipped) do
    if o.log then
      print(string.format("stage attention: %s at %s has no trainable parameter; skipped", core.type_name(e.student), e.path))
    end
  end
  if #trainable == 0 then return 0, false end
  local as = require "attnswap"
  local state = { loss = 0, scale = 1 / o.accumulate }
  local restore_grad = set_trainable(student, core_params(trainable))
  local P = Probe()
  local placed = {}
  local function unplace()
    for i = #placed, 1, -1 do core.add_module(placed[i][1], placed[i][2], placed[i][3]) end
  end
  local ok, a, b = pcall(function()
    for _, e in ipairs(trainable) do
      local parent, name = swap.parent_of(student, e.path)
      if e.path == "" then fail("the student is itself an attention core: wrap it in a model") end
      local probe = P(e.student, e.teacher, state)
      core.set_training(probe, core.is_training(e.student), false)
      core.add_module(parent, name, probe)
      placed[#placed + 1] = { parent, name, e.student }
    end
    local opt = as.optim.AdamW(core_params(trainable), { lr = o.lr.attention, weight_decay = o.weight_decay or 0 })
    local steps = o.steps.attention
    local report, seen = reporter(o, "attention", steps), 0
    return loop(steps, function(step)
      opt:zero_grad()
      state.loss = 0
      for _ = 1, o.accumulate do
        local batch = next_batch()
        if batch == nil then return false end
        as.enable_grad(forward, student, batch, o.forward)
        seen = seen + count(batch)
      end
      opt:step()
      local loss = state.loss / o.accumulate
      hist[#hist + 1] = { stage = "attention", step = step, loss = loss, lr = o.lr.attention,
        rate = report(step, loss, o.lr.attention, seen) }
    end)
  end)
  unplace()
  restore_grad()
  if not ok then error(a, 0) end
  return a, b
end

-- The projections (Linear or Conv1D children) of the modules holding the
-- swapped cores: q/k/v/out in every model attnswap builds.
local function projections(student, cores)
  local paths, seen = {}, {}
  for _, e in ipairs(cores) do
    local parent_path = e.path:match("^(.*)%.[^.]+$") or ""
    local parent = swap.parent_of(student, e.path)
    for name, m in parent:named_children() do
      local t = core.type_name(m)
      local path = parent_path == "" and name or parent_path .. "." .. name
      if (t == "Linear" or t == "Conv1D") and not seen[path] then
        seen[path] = true
        paths[#paths + 1] = path
      end
    end
  end
  return paths
end

local function logits_stage(o, student, teacher, cores, next_batch, hist)
  local as = require "attnswap"
  local params = core_params(cores)
  local adapters = {}
  if o.train == "lora" then
    local paths = projections(student, cores)
    if #paths == 0 and o.log then
      print("stage logits: no Linear/Conv1D projection beside the swapped cores; training the cores only")
    end
    adapters = as.nn.LoRA.wrap(student, paths, o.lora.r, o.lora.alpha)
    for _, a in ipairs(adapters) do
      params[#params + 1] = a.lora.lora_A
      params[#params + 1] = a.lora.lora_B
    end
  elseif o.train == "all" then
    params = student:parameters()
  end
  if #params == 0 then
    if o.log then print("stage logits: nothing to train (no core parameters, train = \"cores\"); skipped") end
    return 0, false
  end
  local restore_grad = set_trainable(student, params)
  local ok, a, b = pcall(function()
    local opt = as.optim.AdamW(params, { lr = o.lr.logits, weight_decay = o.weight_decay or 0 })
    local steps = o.steps.logits
    local report, seen = reporter(o, "logits", steps), 0
    return loop(steps, function(step)
      opt:zero_grad()
      local total = 0
      for _ = 1, o.accumulate do
        local batch = next_batch()
        if batch == nil then return false end
        local t = as.no_grad(forward, teacher, batch, o.forward)
        local loss = as.enable_grad(function()
          local s = forward(student, batch, o.forward)
          local l = output_loss(o, s, t)
          if o.task_loss then l = l + o.task_loss(s, batch) end
          return l
        end)
        as.enable_grad(function() (loss / o.accumulate):backward() end)
        total = total + loss:item()
        seen = seen + count(batch)
      end
      opt:step()
      local loss = total / o.accumulate
      hist[#hist + 1] = { stage = "logits", step = step, loss = loss, lr = o.lr.logits,
        rate = report(step, loss, o.lr.logits, seen) }
    end)
  end)
  restore_grad()
  if #adapters > 0 and o.merge ~= false then as.nn.LoRA.merge(student) end
  if not ok then error(a, 0) end
  return a, b
end

-- ---- the entry ----

local function write_plot(path, hist)
  local series, by = {}, {}
  for i, h in ipairs(hist) do
    local s = by[h.stage]
    if not s then
      s = { name = h.stage == "attention" and "attention transfer (MSE)" or "logits (KL)", points = {} }
      by[h.stage] = s
      series[#series + 1] = s
    end
    s.points[#s.points + 1] = { i, h.loss }
  end
  local f = assert(io.open(path, "w"))
  f:write(require("attnswap.plot").lines { title = "as.distill: loss per step", x_label = "step", y_label = "loss",
    log_y = true, series = series })
  f:close()
end

--- distill(student, teacher, data, opts) -> history: a list of {stage, step,
--- loss, lr, rate (tokens or samples per second so far)}, with history.eval (KL or MSE to the teacher on opts.eval_data
--- before and after each stage) and history.interrupted.
function M.distill(student, teacher, data, opts)
  if not core.is_module(student) then fail("student must be a Module, got %s", type(student)) end
  if not core.is_module(teacher) then fail("teacher must be a Module, got %s", type(teacher)) end
  local o = options(opts)
  if o.eval_data ~= nil and (type(o.eval_data) ~= "table" or is_tensor(o.eval_data) or #o.eval_data == 0) then
    fail("eval_data must be a non-empty array of batches")
  end
  local cores = swapped_cores(student, teacher)
  local next_batch = batches(data)
  -- the first batch runs through the teacher before any training, so bad data
  -- is an error here, not in the middle of a stage
  local first = next_batch()
  if first == nil then fail("data gave no batch") end
  local ok, err = pcall(function()
    local _ <close> = require("attnswap").no_grad()
    return forward(teacher, first, o.forward)
  end)
  if not ok then fail("the teacher cannot run the first batch: %s", tostring(err):gsub("^as%.distill: ", "")) end
  local pending = first
  local function take()
    if pending ~= nil then
      local b = pending
      pending = nil
      return b
    end
    return next_batch()
  end

  local hist = { eval = {} }
  local function evaluate(stage, when)
    local v = eval_metric(o, student, teacher, o.eval_data)
    if v then hist.eval[#hist.eval + 1] = { stage = stage, when = when, value = v } end
    return v
  end
  local t0 = core.clock()
  for _, stage in ipairs(o.stages) do
    local before = evaluate(stage, "before")
    local ts = core.clock()
    local done, interrupted
    if stage == "attention" then
      done, interrupted = attention_stage(o, student, cores, take, hist)
    else
      done, interrupted = logits_stage(o, student, teacher, cores, take, hist)
    end
    local after = evaluate(stage, "after")
    if o.log then
      if o.progress and interrupted then io.stderr:write("\n") end
      local what = o.output == "logits" and "KL to the teacher" or "MSE to the teacher"
      print(string.format("stage %s: %d steps in %.1f s%s%s", stage, done, core.clock() - ts,
        before and string.format("; %s %.4g -> %.4g on %d held-out batches", what, before, after, #o.eval_data) or "",
        interrupted and " (interrupted: the weights so far are kept)" or ""))
    end
    if interrupted then
      hist.interrupted = true
      break
    end
  end
  hist.seconds = core.clock() - t0
  if o.plot then write_plot(o.plot, hist) end
  if o.save then require("attnswap").save(o.save, student:state_dict()) end
  return hist
end

return M
