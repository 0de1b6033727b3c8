-- as.cuda.graph: a function's kernels captured once into a CUDA graph and
-- replayed with one launch (torch.cuda.graphs' make_graphed_callables, for
-- inference).  The card then runs the kernels back to back instead of
-- waiting between them for the host to issue the next.
--
--   local g = as.cuda.graph(function(x) return model(x) end, x)
--   local y = g(x2)      -- x2 copied into x's memory, the graph replayed
--
-- What a replay repeats is what the card did during the capture: the same
-- kernels on the same addresses.  So
--   * the graph's inputs are copies of the tensors given to graph(); a call
--     copies its arguments into them (same shape, dtype and device); other
--     arguments (numbers, strings, tables) are part of the capture: a call
--     must pass equal numbers and strings and the same tables, and what a
--     table held at the capture is what the replays use;
--   * the outputs are the capture's tensors, overwritten by each replay
--     (clone one to keep it);
--   * fn runs twice, a warm-up and the capture, and never again: its Lua
--     code does not run on a replay; random draws, copies between the host
--     and the card and waits for the card fail the capture;
--   * it runs under no_grad: a replay records no autograd graph;
--   * the graph reads the tensors it was captured with (the model's
--     weights): load new values into them in place (copy_, load_state_dict)
--     and the replays use them; replace them (model:to(...)) and capture
--     again.
-- The graph keeps the function (and so the model it closes over) alive.
local core = require "attnswap.core"

local M = {}

local Graph = {}
Graph.__index = Graph

local function same_layout(a, b)
  if a:dtype() ~= b:dtype() or a:device() ~= b:device() or a:dim() ~= b:dim() then return false end
  for d = 1, a:dim() do
    if a:size(d) ~= b:size(d) then return false end
  end
  return true
end

local function describe(t)
  return string.format("%s %s on %s", tostring(t:shape()), t:dtype(), t:device())
end

--- graph(fn, ...) -> g: fn(...) captured on the device of its tensor arguments.
--- fn runs once before the capture (lazy set-up: cuBLAS handles, algorithm
--- choices, kernel attributes) and once inside it, both times on copies of
--- the tensor arguments.
function M.graph(fn, ...)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("as.cuda.graph: expected a function to capture, got " .. type(fn), 2)
  end
  local inputs = table.pack(...)
  local device
  for i = 1, inputs.n do
    local v = inputs[i]
    if core.is_tensor(v) then
      local dev = v:device()
      local index = dev:match("^cuda:(%d+)$")
      if not index then
        error(string.format("as.cuda.graph: argument %d is on %s; a graph's tensors live on a CUDA device", i, dev), 2)
      end
      if device and tonumber(index) ~= device then
        error(string.format("as.cuda.graph: argument %d is on %s, an earlier one on cuda:%d: one device a graph", i,
          dev, device), 2)
      end
      device = tonumber(index)
    end
  end
  device = device or 0
  if not core.cuda.is_available() then error("as.cuda.graph: no CUDA device is available", 2) end
  for i = 1, inputs.n do -- the graph's own inputs: a call never writes the caller's tensors
    if core.is_tensor(inputs[i]) then inputs[i] = inputs[i]:detach():clone() end
  end
  local prev = core.set_grad_enabled(false)
  local ok, err = pcall(fn, table.unpack(inputs, 1, inputs.n))
  if ok then ok, err = pcall(core.cuda.synchronize, device) end
  if not ok then
    core.set_grad_enabled(prev)
    error("as.cuda.graph: the function failed before the capture: " .. tostring(err), 2)
  end
  local handle
  ok, err = pcall(function() handle = core.cuda.graph_begin(device) end)
  local outputs
  if ok then
    ok, err = pcall(function() outputs = table.pack(fn(table.unpack(inputs, 1, inputs.n))) end)
    local ended, end_err = pcall(handle.end_capture, handle)
    if ok and not ended then ok, err = false, end_err end
  end
  core.set_grad_enabled(prev)
  if not ok then
    if handle then handle:free() end
    error("as.cuda.graph: capture failed: " .. tostring(err), 2)
  end
  return setmetatable({ handle = handle, fn = fn, inputs = inputs, outputs = outputs }, Graph)
end

--- g(...) -> the outputs: the tensor arguments copied into the graph's inputs
--- (a copy on the card, queued before the replay), the graph replayed.  The
--- outputs are the same tensors every call.
function Graph:__call(...)
  local n = select("#", ...)
  if n ~= self.inputs.n then
    error(string.format("as.cuda.graph: the graph was captured with %d argument%s, called with %d", self.inputs.n,
      self.inputs.n == 1 and "" or "s", n), 2)
  end
  for i = 1, n do
    local v, want = select(i, ...), self.inputs[i]
    if core.is_tensor(want) then
      if not core.is_tensor(v) then
        error(string.format("as.cuda.graph: argument %d: expected a tensor (%s), got %s", i, describe(want), type(v)), 2)
      end
      if not same_layout(v, want) then
        error(string.format("as.cuda.graph: argument %d: expected %s as captured, got %s", i, describe(want),
          describe(v)), 2)
      end
      want:copy_(v)
    elseif v ~= want then
      error(string.format("as.cuda.graph: argument %d was captured as %s; a replay cannot change it (got %s)", i,
        tostring(want), tostring(v)), 2)
    end
  end
  self.handle:replay()
  return table.unpack(self.outputs, 1, self.outputs.n)
end

--- g:replay(): the graph again on whatever its inputs hold now.
function Graph:replay() self.handle:replay() end

--- g.inputs[i]: the graph's i-th input tensor (write into it, then g:replay()).

--- g:free(): gives the graph and its memory back now (else the collector does).
function Graph:free() self.handle:free() end

function Graph:__tostring()
  return string.format("CudaGraph(%d input%s, %d output%s)", self.inputs.n, self.inputs.n == 1 and "" or "s",
    self.outputs.n, self.outputs.n == 1 and "" or "s")
end

return M
