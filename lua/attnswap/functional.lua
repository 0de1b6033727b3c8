-- attnswap.functional (as.F, as.nn.functional): losses and activations as
-- functions, with torch.nn.functional's names, options and reductions.
-- Every loss is written with differentiable tensor ops only (log_softmax,
-- where, eq against an arange for the one-hot, sums), so gradients flow to
-- the input (and to a float target) with no backward of its own.
--
-- Conventions: a class dim is dim 2 of an (N, C, d1, ...) input, or dim 1 of
-- an unbatched (C) one; class targets are 0-based int64 ids, as torch's (they
-- are data, like token ids); dims passed to log_softmax/softmax are 1-based.
local core = require "attnswap.core"

local F = {}

local FLOATS = { float32 = true, float16 = true, bfloat16 = true, float64 = true }
local REDUCTIONS = { mean = true, sum = true, none = true }

local function shape_str(t) return tostring(t:shape()) end

-- Unknown options are an error naming the known ones (nn.check_options); loaded
-- lazily, since attnswap.nn loads this file for its loss modules.
local function check_options(fn, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" or core.is_tensor(opts) then
    error(string.format("%s: options must be a table, got %s", fn, core.is_tensor(opts) and "a Tensor" or type(opts)), 3)
  end
  require("attnswap.nn").check_options(fn, opts, known, nil, 3)
  return opts
end

local function check_tensor(fn, i, name, t)
  if not core.is_tensor(t) then
    error(string.format("bad argument #%d to '%s' (Tensor %s expected, got %s)", i, fn, name, type(t)), 3)
  end
end

local function check_float(fn, name, t)
  if not FLOATS[t:dtype()] then
    error(string.format("%s: %s must be a floating-point tensor, got %s", fn, name, t:dtype()), 3)
  end
end

local function check_reduction(fn, r, extra)
  if r == nil then return "mean" end
  if not (REDUCTIONS[r] or (extra and extra[r])) then
    error(string.format("%s: reduction must be %s, got %s", fn,
      extra and '"batchmean", "mean", "sum" or "none"' or '"mean", "sum" or "none"',
      type(r) == "string" and '"' .. r .. '"' or tostring(r)), 3)
  end
  return r
end

local function reduce(loss, reduction)
  if reduction == "none" then return loss end
  if reduction == "sum" then return loss:sum() end
  return loss:mean()
end

-- The shape a class target must have for an input: the input's without dim 2
-- (without dim 1 for an unbatched (C) input).
local function target_shape(input)
  local s, out = input:shape(), {}
  local cdim = #s >= 2 and 2 or 1
  for i = 1, #s do
    if i ~= cdim then out[#out + 1] = s[i] end
  end
  return out, cdim
end

local function same_dims(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

local function dims_str(d)
  local parts = {}
  for i, v in ipairs(d) do parts[i] = tostring(v) end
  return "(" .. table.concat(parts, ", ") .. ")"
end

-- Checks class targets: dtype, shape, range (ignore_index excepted; the first
-- bad one is named, with its 1-based position in the flattened target).
local function check_class_target(fn, input, target, ignore_index)
  local dt = target:dtype()
  if dt ~= "int64" and dt ~= "int32" then
    error(string.format("%s: target must be int64 class ids (0-based) or float class probabilities " ..
      "shaped as the input, got %s of shape %s (class ids: target:long())", fn, dt, shape_str(target)), 3)
  end
  local want, cdim = target_shape(input)
  if not same_dims(target:shape(), want) then
    error(string.format("%s: target of shape %s does not match input of shape %s (expected %s: " ..
      "the input without its class dim %d)", fn, shape_str(target), shape_str(input), dims_str(want), cdim), 3)
  end
  local C = input:size(cdim)
  if target:numel() == 0 then return C, cdim end
  local bad = target:lt(0):logical_or(target:ge(C)):logical_and(target:ne(ignore_index))
  if bad:sum():item() > 0 then
    local flat = target:reshape(target:numel()):cpu():tolist()
    for i, v in ipairs(flat) do
      if v ~= ignore_index and (v < 0 or v >= C) then
        error(string.format("%s: target %d is out of bounds (at position %d; classes are 0 to %d, " ..
          "ignore_index is %d)", fn, v, i, C - 1, ignore_index), 3)
      end
    end
  end
  return C, cdim
end

local function check_weight(fn, weight, C, cdim, ndim)
  if weight == nil then return nil end
  if not core.is_tensor(weight) then
    error(string.format("%s: weight must be a Tensor of %d class weights, got %s", fn, C, type(weight)), 3)
  end
  if weight:dim() ~= 1 or weight:size(1) ~= C then
    error(string.format("%s: weight of shape %s, expected (%d): one weight per class", fn, shape_str(weight), C), 3)
  end
  check_float(fn, "weight", weight)
  if ndim >= 2 then
    local shape = { C }
    for i = 2, ndim - 1 do shape[i] = 1 end
    weight = weight:reshape(table.unpack(shape))
  end
  return weight
end

-- The negative log-likelihood of class targets, shared by nll_loss and
-- cross_entropy (with label smoothing as torch's cross_entropy defines it:
-- (1 - eps) * nll + eps / C * (the sum of -log p over the classes), both
-- masked where the target is ignore_index and both divided, under "mean", by
-- the summed weight of the targets kept).
-- x (C), (N, C) or (N, C, d1, ...) as (M, C): the class dim last, one row per target
local function class_rows(x, C, ndim)
  if ndim == 1 then return x:reshape(1, C) end
  if ndim == 2 then return x end
  local perm = { 1 }
  for i = 3, ndim do perm[#perm + 1] = i end
  perm[#perm + 1] = 2
  return x:permute(table.unpack(perm)):reshape(-1, C)
end

-- The options and target of a class-id loss, checked: ignore_index,
-- reduction, the class count and the class dim.  Errors are the caller's
-- caller's (level 4).
local function class_target_opts(fn, x, target, o)
  local ignore_index = o.ignore_index or -100
  if math.type(ignore_index) ~= "integer" then
    error(string.format("%s: ignore_index must be an integer, got %s", fn, tostring(ignore_index)), 4)
  end
  local reduction = check_reduction(fn, o.reduction)
  local C, cdim = check_class_target(fn, x, target, ignore_index)
  return ignore_index, reduction, C, cdim
end

local function nll_classes(fn, logp, target, o)
  local ignore_index, reduction, C, cdim = class_target_opts(fn, logp, target, o)
  local ndim = logp:dim()
  check_weight(fn, o.weight, C, cdim, ndim)
  local weight = o.weight
  local eps = o.label_smoothing or 0
  -- Each row's target log-probability is one gather from the flattened rows
  -- (index_select, whose backward is a scatter-add): no (M, C) one-hot and no
  -- (M, C) select, which for a language model's logits (8 x 1024 x 50257) are
  -- gigabytes each.
  local rows = class_rows(logp, C, ndim)
  local M = rows:size(1)
  local t = target:reshape(M)
  local keep = t:ne(ignore_index)
  local safe = core.where(keep, t, 0)
  local dev = logp:device()
  local at = core.arange(M)
  if dev ~= "cpu" then at = at:to(dev) end
  -- index_select takes 1-based positions, as Lua does
  local pick = rows:contiguous():reshape(M * C):index_select(1, at * C + safe + 1)
  local w = weight and weight:to(logp:dtype()):index_select(1, safe + 1) or nil
  local loss = w and -pick * w or -pick
  loss = core.where(keep, loss, 0)
  local denom
  if reduction == "mean" then denom = core.where(keep, w or 1, 0):to(logp:dtype()):sum() end
  local smooth
  if eps > 0 then
    local wrows = weight and rows * weight:to(logp:dtype()) or rows
    smooth = core.where(keep, -wrows:sum(2), 0)
  end
  if reduction == "none" then
    if smooth then loss = loss * (1 - eps) + smooth * (eps / C) end
    return loss:reshape(table.unpack(target:shape()))
  end
  loss = loss:sum()
  if smooth then loss = loss * (1 - eps) + smooth:sum() * (eps / C) end
  if reduction == "mean" then loss = loss / denom end
  return loss
end

-- The fused kernel's dtypes (core.cross_entropy_rows: one pass over the
-- logits in their own dtype, one float a row kept for the backward).
local FUSED_CE = { float32 = true, float16 = true, bfloat16 = true }

-- cross_entropy for class ids without weight or smoothing: the fused rows
-- op, then the reduction; the same values as log_softmax + nll_classes.
local function cross_entropy_fused(fn, input, target, o)
  local ignore_index, reduction, C = class_target_opts(fn, input, target, o)
  local rows = class_rows(input, C, input:dim())
  local M = rows:size(1)
  local t = target:reshape(M)
  local loss = core.cross_entropy_rows(rows, t, ignore_index)
  local dtype = input:dtype()
  if reduction == "none" then return loss:to(dtype):reshape(table.unpack(target:shape())) end
  local total = loss:sum()
  if reduction == "mean" then total = total / t:ne(ignore_index):float():sum() end
  return total:to(dtype)
end

local function check_smoothing(fn, eps)
  if eps ~= nil and (type(eps) ~= "number" or eps < 0 or eps > 1) then
    error(string.format("%s: label_smoothing must be a number in [0, 1], got %s", fn, tostring(eps)), 3)
  end
end

local function check_input(fn, input)
  check_tensor(fn, 1, "input", input)
  check_float(fn, "input", input)
  if input:dim() == 0 then
    error(string.format("%s: input must have a class dim: (C), (N, C) or (N, C, d1, ...), got a scalar", fn), 3)
  end
end

--- F.cross_entropy(input, target [, {weight, ignore_index = -100, reduction = "mean",
---   label_smoothing = 0}]): input (N, C) (or (C), or (N, C, d1, ...)) unnormalised
--- logits; target (N) int64 class ids, 0-based, or float class probabilities shaped as input.
function F.cross_entropy(input, target, opts)
  local fn = "cross_entropy"
  local o = check_options(fn, opts, { "weight", "ignore_index", "reduction", "label_smoothing" })
  check_input(fn, input)
  check_tensor(fn, 2, "target", target)
  check_smoothing(fn, o.label_smoothing)
  local cdim = input:dim() >= 2 and 2 or 1
  if not FLOATS[target:dtype()] and o.weight == nil and (o.label_smoothing or 0) == 0 and FUSED_CE[input:dtype()] then
    return cross_entropy_fused(fn, input, target, o)
  end
  local logp = input:log_softmax(cdim)
  if FLOATS[target:dtype()] then
    -- class probabilities: -sum_c w_c t_c log p_c, "mean" over the N * d1 * ... rows
    if not same_dims(target:shape(), input:shape()) then
      error(string.format("%s: a float target holds class probabilities and must be shaped as the input %s, got %s",
        fn, shape_str(input), shape_str(target)), 2)
    end
    local reduction = check_reduction(fn, o.reduction)
    local C = input:size(cdim)
    local eps = o.label_smoothing or 0
    if eps > 0 then target = target * (1 - eps) + eps / C end
    local weight = check_weight(fn, o.weight, C, cdim, input:dim())
    local prod = logp * target
    if weight then prod = prod * weight end
    local loss = -prod:sum(cdim)
    if reduction == "none" then return loss end
    if reduction == "sum" then return loss:sum() end
    return loss:sum() / math.max(input:numel() // C, 0)
  end
  return nll_classes(fn, logp, target, o)
end

--- F.nll_loss(log_probs, target [, {weight, ignore_index = -100, reduction = "mean"}]):
--- the negative log-likelihood of 0-based class targets under log-probabilities.
function F.nll_loss(input, target, opts)
  local fn = "nll_loss"
  local o = check_options(fn, opts, { "weight", "ignore_index", "reduction" })
  check_input(fn, input)
  check_tensor(fn, 2, "target", target)
  return nll_classes(fn, input, target, o)
end

local function check_pair(fn, input, target)
  check_tensor(fn, 1, "input", input)
  check_tensor(fn, 2, "target", target)
  check_float(fn, "input", input)
  check_float(fn, "target", target)
  if not same_dims(input:shape(), target:shape()) then
    -- torch broadcasts here with a warning; a (N, 1) against a (N) is almost always a bug
    error(string.format("%s: input of shape %s and target of shape %s differ (reshape one: " ..
      "they are not broadcast)", fn, shape_str(input), shape_str(target)), 3)
  end
end

--- F.mse_loss(input, target [, {reduction = "mean"}]): (input - target)^2.
function F.mse_loss(input, target, opts)
  local fn = "mse_loss"
  local o = check_options(fn, opts, { "reduction" })
  check_pair(fn, input, target)
  local d = input - target
  return reduce(d * d, check_reduction(fn, o.reduction))
end

--- F.l1_loss(input, target [, {reduction = "mean"}]): |input - target|.
function F.l1_loss(input, target, opts)
  local fn = "l1_loss"
  local o = check_options(fn, opts, { "reduction" })
  check_pair(fn, input, target)
  return reduce((input - target):abs(), check_reduction(fn, o.reduction))
end

--- F.binary_cross_entropy_with_logits(input, target [, {reduction = "mean", pos_weight}]):
--- the stable form max(x, 0) - x t + log(1 + exp(-|x|)) (with pos_weight p:
--- (1 - t) x + (1 + (p - 1) t) (log(1 + exp(-|x|)) + max(-x, 0))).
function F.binary_cross_entropy_with_logits(input, target, opts)
  local fn = "binary_cross_entropy_with_logits"
  local o = check_options(fn, opts, { "reduction", "pos_weight" })
  check_pair(fn, input, target)
  local reduction = check_reduction(fn, o.reduction)
  local softplus = ((-input:abs()):exp() + 1):log()
  local loss
  if o.pos_weight ~= nil then
    local pw = o.pos_weight
    loss = (1 - target) * input + (target * (pw - 1) + 1) * (softplus + (-input):relu())
  else
    loss = input:relu() - input * target + softplus
  end
  return reduce(loss, reduction)
end

--- F.kl_div(input, target [, {reduction = "mean", log_target = false}]): input holds
--- log-probabilities; pointwise target * (log target - input) (0 where target is 0),
--- or exp(target) * (target - input) with log_target. "batchmean" divides the sum by
--- input:size(1), the true KL divergence per sample ("mean" averages over every element,
--- as torch's default does).
function F.kl_div(input, target, opts)
  local fn = "kl_div"
  local o = check_options(fn, opts, { "reduction", "log_target" })
  check_pair(fn, input, target)
  local reduction = check_reduction(fn, o.reduction, { batchmean = true })
  local loss
  if o.log_target then
    loss = target:exp() * (target - input)
  else
    -- xlogy(t, t) with a zero (and a finite gradient) where t is 0
    local pos = target:gt(0)
    local safe = core.where(pos, target, 1)
    loss = core.where(pos, target * safe:log(), 0) - target * input
  end
  if reduction == "batchmean" then
    if input:dim() == 0 then return loss:sum() end
    return loss:sum() / input:size(1)
  end
  return reduce(loss, reduction)
end

--- F.log_softmax(x, dim), F.softmax(x, dim): dim 1-based (negative from the end).
function F.log_softmax(x, dim)
  check_tensor("log_softmax", 1, "input", x)
  if dim == nil then error("log_softmax: dim is required (1-based; -1 is the last)", 2) end
  return x:log_softmax(dim)
end

function F.softmax(x, dim)
  check_tensor("softmax", 1, "input", x)
  if dim == nil then error("softmax: dim is required (1-based; -1 is the last)", 2) end
  return x:softmax(dim)
end

-- The activations and linear, under torch.nn.functional's names.
F.relu = core.relu
F.gelu = core.gelu
F.silu = core.silu
F.sigmoid = core.sigmoid
F.tanh = core.tanh
F.linear = core.linear
F.layer_norm = core.layer_norm
F.rms_norm = core.rms_norm

return F
