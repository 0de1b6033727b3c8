-- as.cuda.graph (ctest label cuda): a captured forward replays to the eager
-- forward's outputs, takes new inputs, never writes memory outside its own
-- pool, and fails clearly where a graph cannot hold the function.  Exit 77:
-- no GPU here.
local t = dofile((arg[0]:match("^(.*)/") or ".") .. "/harness.lua")("cuda_graph")
local check = t.check
local function maxdiff(a, b) return (a:cpu():double() - b:cpu():double()):abs():max():item() end
local function fails(fn, want, what)
  local ok, err = pcall(fn)
  check(not ok and tostring(err):find(want, 1, true), what .. ": " .. tostring(err))
end

as.manual_seed(3)
-- odd sizes: 37 tokens, 3 sequences
local function blocks(dim, heads)
  return nn.Sequential(nn.TransformerBlock { dim = dim, num_heads = heads },
    nn.TransformerBlock { dim = dim, num_heads = heads }, nn.LayerNorm(dim)):eval()
end

for _, dtype in ipairs { "float32", "bfloat16" } do
  local model = blocks(64, 4):to("cuda"):to(dtype)
  as.swap_attention(model, "scaled_dot_product", "flash_attention", {}, { quiet = true })
  local x = as.randn(3, 37, 64):cuda():to(dtype)
  local want = as.no_grad(function() return model(x) end)
  local g = as.cuda.graph(function(inp) return model(inp) end, x)
  local y = g(x)
  check(maxdiff(y, want) == 0, dtype .. ": the replay gives the eager forward's output exactly: " .. maxdiff(y, want))
  -- a new input is copied in; the output is the same tensor, rewritten
  local x2 = as.randn(3, 37, 64):cuda():to(dtype)
  local x_before = x:clone()
  local want2 = as.no_grad(function() return model(x2) end)
  local y2 = g(x2)
  check(rawequal(y, y2), dtype .. ": the outputs are the capture's tensors")
  check(maxdiff(y2, want2) == 0, dtype .. ": a new input replays to its own eager output: " .. maxdiff(y2, want2))
  check(maxdiff(x, x_before) == 0, dtype .. ": the caller's first input is not written by a later call")
  check(maxdiff(g.inputs[1], x2) == 0, dtype .. ": the new input went into the graph's own input")
  check(not y2.requires_grad, dtype .. ": no autograd graph behind the output")
  fails(function() return g(as.randn(3, 36, 64):cuda():to(dtype)) end, "argument 1: expected (3, 37, 64)",
    dtype .. ": a wrong shape")
  fails(function() return g(x, x) end, "captured with 1 argument, called with 2", dtype .. ": an extra argument")
  g:free()
  fails(function() return g(x) end, "graph: the graph has been freed", dtype .. ": a freed graph")
end

-- isolation: tensors made after the capture (from the device's cache, with
-- the blocks the capture freed) are never written by a replay
do
  local model = blocks(96, 6):to("cuda")
  local x = as.randn(2, 50, 96):cuda()
  local g = as.cuda.graph(function(inp) return model(inp) end, x)
  local kept, values = {}, {}
  for i = 1, 40 do
    kept[i] = as.full({ 2, 50, 96 * (1 + i % 4) }, i):cuda()
    values[i] = i
  end
  for _ = 1, 5 do g(x) end
  as.cuda.synchronize()
  local intact = true
  for i = 1, #kept do
    local t = kept[i]:cpu()
    intact = intact and t:min():item() == values[i] and t:max():item() == values[i]
  end
  check(intact, "replays leave tensors made outside the graph alone")
  local want = as.no_grad(function() return model(x) end)
  check(maxdiff(g(x), want) == 0, "and still give the eager output")
end

-- a non-tensor argument is part of the capture
do
  local x = as.randn(4, 8):cuda()
  local g = as.cuda.graph(function(t, k) return t * k + 1 end, x, 3)
  check(maxdiff(g(x, 3), x * 3 + 1) == 0, "a number argument")
  fails(function() return g(x, 4) end, "argument 2 was captured as 3", "a changed number")
end

-- what a graph cannot hold: a clear error, and the device keeps working
do
  local x = as.randn(5, 7):cuda()
  fails(function() return as.cuda.graph(function(t) return (t * 2):cpu() end, x) end,
    "as.cuda.graph: capture failed", "a copy to the host inside the capture")
  fails(function() return as.cuda.graph(function(t) return t + as.randn(5, 7):cuda() end, x) end,
    "random numbers cannot be drawn while a CUDA graph is captured", "a random draw inside the capture")
  fails(function() return as.cuda.graph(function(t) as.cuda.empty_cache(); return t * 2 end, x) end,
    "empty_cache: a CUDA graph is being captured", "empty_cache inside the capture")
  check(not as.cuda.is_capturing(), "no capture left open after a failure")
  check(maxdiff((x * 2):cpu(), x:cpu() * 2) == 0, "the device works after failed captures")
  local r = as.randn(3) -- and draws work again
  check(r:numel() == 3, "draws work after a failed capture")
  fails(function() return as.cuda.graph(function() error("boom") end) end,
    "the function failed before the capture", "an error in the function")
end

-- a graph collected while another is being captured waits for the capture's end
do
  local x = as.randn(6, 16):cuda()
  local g1 = as.cuda.graph(function(t) return t:exp() end, x)
  g1 = nil
  local calls = 0
  local g2 = as.cuda.graph(function(t)
    calls = calls + 1
    if calls == 2 then collectgarbage(); collectgarbage() end -- inside the capture, not the warm-up
    return t:exp() * 2
  end, x)
  collectgarbage()
  check(maxdiff(g2(x), x:exp() * 2) < 1e-6, "a capture during which another graph was collected")
end

-- a GPT-2 forward (integer inputs, embeddings, causal attention)
do
  local model = as.models.gpt2.new { n_layer = 2, n_embd = 64, n_head = 4, vocab_size = 301, n_positions = 64 }
  model = model:eval():to("cuda")
  as.swap_attention(model, "scaled_dot_product", "flash_attention", {}, { quiet = true })
  local ids = (as.rand(2, 29) * 301):long():cuda()
  local want = as.no_grad(function() return model(ids) end)
  local ok, g = pcall(as.cuda.graph, function(t) return model(t) end, ids)
  check(ok, "GPT-2's forward can be captured: " .. tostring(g))
  if ok then
    check(maxdiff(g(ids), want) == 0, "GPT-2 replayed gives the eager logits")
    local ids2 = (as.rand(2, 29) * 301):long():cuda()
    local want2 = as.no_grad(function() return model(ids2) end)
    check(maxdiff(g(ids2), want2) == 0, "GPT-2 on new ids")
    -- ids out of range: the card checks them in a graph, and the next synchronisation says so
    local bad = ids2 * 0 + 400
    g(bad)
    fails(function() as.cuda.synchronize() end,
      "index_select: a CUDA graph's replay met index 400, out of range for a dimension of size 301", "a bad id in a replay")
    local logits = g(bad)
    fails(function() return logits:cpu() end, "a CUDA graph's replay met index 400", "a read after a bad replay says so")
    check(maxdiff(g(ids2), want2) == 0, "GPT-2 after a bad replay")
    as.cuda.synchronize()
  end
end

t.finish()
