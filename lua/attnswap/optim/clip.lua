-- Gradient clipping, as torch.nn.utils: clip_grad_norm_ and clip_grad_value_.
local core = require "attnswap.core"

local M = {}

-- The tensors of a parameter list (a tensor, a list, model:parameters()) that have a .grad.
local function grads_of(fn, params)
  if core.is_tensor(params) then params = { params } end
  if core.is_module(params) then
    error(fn .. ": got a Module; pass model:parameters()", 3)
  end
  if type(params) ~= "table" then
    error(string.format("bad argument #1 to '%s' (a list of tensors expected, got %s)", fn, type(params)), 3)
  end
  local out = {}
  for i, p in ipairs(params) do
    if not core.is_tensor(p) then
      error(string.format("%s: parameter %d is a %s, expected a Tensor", fn, i, type(p)), 3)
    end
    local g = p.grad
    if g ~= nil then out[#out + 1] = g end
  end
  return out
end

-- float64 keeps the per-tensor path: the sweep's total is a float32
local SWEEP_DTYPES = { float32 = true, float16 = true, bfloat16 = true }

-- Whether the multi-tensor sweeps (core.sum_squares, core.scale_all_) take g.
local function sweepable(g)
  return g:is_contiguous() and SWEEP_DTYPES[g:dtype()] ~= nil
end

-- The sweepable gradients grouped by device.
local function sweep_lists(grads)
  local lists = {}
  for _, g in ipairs(grads) do
    if g:numel() > 0 and sweepable(g) then
      local d = g:device()
      lists[d] = lists[d] or {}
      table.insert(lists[d], g)
    end
  end
  return lists
end

local function with_no_grad(fn)
  local prev = core.set_grad_enabled(false)
  local ok, r = pcall(fn)
  core.set_grad_enabled(prev)
  if not ok then error(r, 0) end
  return r
end

--- clip_grad_norm_(params, max_norm [, norm_type = 2 [, error_if_nonfinite = false]]) -> total_norm
--- The norm of all the gradients together (as if concatenated into one vector); when it
--- exceeds max_norm every gradient is scaled in place by max_norm / (total_norm + 1e-6).
--- norm_type: any p >= 1 or math.huge / "inf" (the largest magnitude). Returns a number.
function M.clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite)
  local fn = "clip_grad_norm_"
  local grads = grads_of(fn, params)
  if type(max_norm) ~= "number" then
    error(string.format("bad argument #2 to '%s' (number max_norm expected, got %s)", fn, type(max_norm)), 2)
  end
  if norm_type == nil then norm_type = 2 end
  if norm_type == "inf" then norm_type = math.huge end
  if type(norm_type) ~= "number" or norm_type <= 0 then
    error(string.format("%s: norm_type must be a positive number or math.huge, got %s", fn, tostring(norm_type)), 2)
  end
  if #grads == 0 then return 0.0 end
  local lists = sweep_lists(grads) -- the sweepable gradients by device, for the norm and the scaling
  local total = with_no_grad(function()
    if norm_type == math.huge then
      local m = 0.0
      for _, g in ipairs(grads) do
        if g:numel() > 0 then m = math.max(m, g:float():abs():max():item()) end
      end
      return m
    end
    local s = 0.0
    -- the 2-norm: contiguous gradients of float dtypes in one multi-tensor
    -- sweep per device (core.sum_squares: a few kernel launches for any number
    -- of tensors, the device waited on once), where a dot product per gradient
    -- cost a GPU a few launches and casts each
    if norm_type == 2 then
      for _, list in pairs(lists) do s = s + core.sum_squares(list):item() end
    end
    for _, g in ipairs(grads) do
      if g:numel() == 0 or (norm_type == 2 and sweepable(g)) then goto continue end
      local a = g:float():abs()
      if norm_type == 2 then
        s = s + (a * a):sum():item()
      elseif norm_type == 1 then
        s = s + a:sum():item()
      else
        s = s + (a ^ norm_type):sum():item()
      end
      ::continue::
    end
    return s ^ (1 / norm_type)
  end)
  if error_if_nonfinite and (total ~= total or total == math.huge) then
    error(string.format("%s: the total norm of order %s of the gradients is non-finite (%s), so it cannot be clipped",
      fn, tostring(norm_type), tostring(total)), 2)
  end
  local coef = max_norm / (total + 1e-6)
  if coef < 1 then
    with_no_grad(function()
      for _, list in pairs(lists) do core.scale_all_(list, coef) end
      for _, g in ipairs(grads) do
        if not sweepable(g) then g:mul_(coef) end
      end
    end)
  end
  return total
end

--- clip_grad_value_(params, clip_value): clamps every gradient to [-clip_value, clip_value] in place.
function M.clip_grad_value_(params, clip_value)
  local fn = "clip_grad_value_"
  local grads = grads_of(fn, params)
  if type(clip_value) ~= "number" then
    error(string.format("bad argument #2 to '%s' (number clip_value expected, got %s)", fn, type(clip_value)), 2)
  end
  with_no_grad(function()
    for _, g in ipairs(grads) do g:copy_(g:clamp(-clip_value, clip_value)) end
  end)
end

return M
