-- as.gradcheck(fn, inputs [, opts]): torch.autograd.gradcheck for attnswap.
-- The analytical Jacobian (one backward per output element, the graph
-- retained) against central differences on every element of every input
-- that requires grad:
--   numerical  J[k][j] = (fn(x + eps e_k)[j] - fn(x - eps e_k)[j]) / (2 eps)
--   analytical J[k][j] = d out[j] / d x[k] from out:backward(e_j)
-- and |analytical - numerical| <= atol + rtol |numerical| everywhere.
-- PyTorch's tolerances (eps 1e-6, atol 1e-5, rtol 1e-3) are meant for
-- float64: float32 rounding alone is ~1e-7 / 1e-6 = 0.1 of a step.
local core = require "attnswap.core"

local M = {}

local DEFAULTS = { eps = 1e-6, atol = 1e-5, rtol = 1e-3, raise = true }

local function is_tensor(x) return core.is_tensor(x) end

-- A 0-d view of element k (1-based, row-major) of t, whatever t's strides.
local function element(t, k)
  local shape, idx, rem = t:shape(), {}, k - 1
  for d = #shape, 1, -1 do
    idx[d] = rem % shape[d]
    rem = rem // shape[d]
  end
  local v = t
  for d = 1, #shape do v = v:select(1, idx[d] + 1) end
  return v
end

-- t's values as a flat Lua array (row-major), read in float64.
local function values(t)
  local n = t:numel()
  if n == 0 then return {} end
  if t:dim() == 0 then return { t:item() } end
  return t:double():reshape(n):tolist()
end

local function as_list(x)
  if is_tensor(x) then return { x }, true end
  return x, false
end

-- The outputs of fn as a list of tensors.
local function call(fn, inputs)
  local out = fn(table.unpack(inputs, 1, inputs.n or #inputs))
  local list = as_list(out)
  if type(list) ~= "table" then
    error("gradcheck: fn must return a Tensor or a list of Tensors, got " .. type(out), 3)
  end
  for j, o in ipairs(list) do
    if not is_tensor(o) then
      error(("gradcheck: output %d of fn is a %s, expected a Tensor"):format(j, type(o)), 3)
    end
  end
  return list
end

local function is_float(t)
  local dt = t:dtype()
  return dt == "float32" or dt == "float64" or dt == "float16" or dt == "bfloat16"
end

-- The values of fn's outputs, read at once (an output may be a view of an input).
local function output_values(fn, inputs)
  local outs, v = call(fn, inputs), {}
  for o, t in ipairs(outs) do v[o] = values(t) end
  return v
end

-- numerical[o][k][j]: d out_o[j] / d x[k] by central differences (x perturbed in place).
local function numerical(fn, inputs, x, eps, nout)
  local J = {}
  for o = 1, nout do J[o] = {} end
  core.set_grad_enabled(false)
  local ok, err = pcall(function()
    for k = 1, x:numel() do
      local e = element(x, k)
      local v = e:item()
      e:fill_(v + eps)
      local up = output_values(fn, inputs)
      e:fill_(v - eps)
      local down = output_values(fn, inputs)
      e:fill_(v)
      for o = 1, nout do
        local u, d, col = up[o], down[o], {}
        for j = 1, #u do col[j] = (u[j] - d[j]) / (2 * eps) end
        J[o][k] = col
      end
    end
  end)
  core.set_grad_enabled(true)
  if not ok then error(err, 0) end
  return J
end

-- analytical[i][o][k][j] for every checked input i, one backward per output element;
-- nil and a message when a gradient's dtype or shape is not its input's.
local function analytical(outs, checked)
  local A = {}
  for _, c in ipairs(checked) do A[c.i] = {} end
  for o, out in ipairs(outs) do
    for _, c in ipairs(checked) do A[c.i][o] = {} end
    local n = out:numel()
    for j = 1, n do
      local grads = {}
      if out.requires_grad and is_float(out) then
        for _, c in ipairs(checked) do c.x.grad = nil end
        local seed = core.zeros(out:shape(), out:dtype())
        if n > 0 then element(seed, j):fill_(1) end
        out:backward(seed, { retain_graph = true })
        for _, c in ipairs(checked) do
          local g = c.x.grad
          if g and (g:dtype() ~= c.x:dtype() or table.concat(g:shape(), "x") ~= table.concat(c.x:shape(), "x")) then
            return nil, ("gradcheck: the gradient of input %d is %s (%s), expected %s (%s)"):format(c.i, g:dtype(),
              table.concat(g:shape(), ", "), c.x:dtype(), table.concat(c.x:shape(), ", "))
          end
          grads[c.i] = g and values(g)
        end
      end
      for _, c in ipairs(checked) do
        local g = grads[c.i]
        for k = 1, c.x:numel() do
          local col = A[c.i][o][k] or {}
          col[j] = g and g[k] or 0
          A[c.i][o][k] = col
        end
      end
    end
  end
  return A
end

local function options(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #3 to 'gradcheck' (options table expected, got " .. type(opts) .. ")", 3)
  end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if DEFAULTS[k] == nil then error("gradcheck: unknown option '" .. tostring(k) .. "'", 3) end
    o[k] = v
  end
  return o
end

--- gradcheck(fn, inputs [, {eps, atol, rtol, raise}]) -> true | false.
--- inputs: a Tensor or a list (tensors and other values, passed to fn in
--- order); those that require grad are checked.  A mismatch raises (raise =
--- true, the default) naming the input, the output, the worst element and
--- both values, or returns false.
function M.gradcheck(fn, inputs, opts)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("bad argument #1 to 'gradcheck' (function expected, got " .. type(fn) .. ")", 2)
  end
  local list = as_list(inputs)
  if type(list) ~= "table" then
    error("bad argument #2 to 'gradcheck' (Tensor or list expected, got " .. type(inputs) .. ")", 2)
  end
  local o = options(opts)
  local checked, saved = {}, {}
  for i = 1, #list do
    local x = list[i]
    if is_tensor(x) and x.requires_grad then
      checked[#checked + 1] = { i = i, x = x }
      saved[#checked] = x.grad
    end
  end
  if #checked == 0 then error("gradcheck: no input requires grad (set x.requires_grad = true)", 2) end

  local ok, result = pcall(function()
    local outs = call(fn, list)
    local A, bad = analytical(outs, checked)
    if not A then return bad end
    for _, c in ipairs(checked) do
      local N = numerical(fn, list, c.x, o.eps, #outs)
      for oi = 1, #outs do
        local worst, wk, wj, wn, wa = 0, nil, nil, nil, nil
        for k = 1, c.x:numel() do
          local ncol, acol = N[oi][k], A[c.i][oi][k]
          for j = 1, #ncol do
            local n, a = ncol[j], acol[j]
            local excess = math.abs(a - n) - (o.atol + o.rtol * math.abs(n))
            if excess > worst or excess ~= excess then
              worst, wk, wj, wn, wa = excess, k, j, n, a
              if excess ~= excess then break end
            end
          end
        end
        if wk then
          local msg = ("gradcheck: Jacobian mismatch for output %d with respect to input %d at input element %d, "
            .. "output element %d (flat, 1-based): numerical %.10g, analytical %.10g (atol %g, rtol %g, eps %g)")
            :format(oi, c.i, wk, wj, wn, wa, o.atol, o.rtol, o.eps)
          if c.x:dtype() ~= "float64" then
            msg = msg .. ("; input %d is %s: gradcheck's tolerances assume float64, "
              .. "so check x:double() (float32 rounding alone exceeds them)"):format(c.i, c.x:dtype())
          end
          return msg
        end
      end
    end
    return true
  end)
  for n, c in ipairs(checked) do c.x.grad = saved[n] end
  if not ok then error(result, 0) end
  if result ~= true then
    if o.raise then error(result, 2) end
    return false
  end
  return true
end

return M
