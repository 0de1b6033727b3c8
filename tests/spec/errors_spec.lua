-- The bad-input contract: every bad call raises a Lua error whose message
-- names the function and says what was expected and what came.
local as = require "attnswap"
local nn = as.nn

-- Each case: a description, a function making the bad call, and a plain
-- substring the message must contain.
local cases = {
  -- construction
  { "tensor from a string", function() return as.tensor("abc") end, "bad argument #1 to 'tensor' (table, number or boolean expected, got string)" },
  { "ragged table", function() return as.tensor { { 1, 2 }, { 3 } } end, "tensor: ragged nested table (expected 2 entries at depth 2, got 1)" },
  { "a small ragged table whose first entries imply 15^8 elements (fuzz finding: it used to allocate them)", function()
    local t = 1
    for _ = 1, 8 do
      local level = { t }
      for i = 2, 15 do level[i] = 0 end
      t = level
    end
    return as.tensor(t)
  end, "tensor: ragged nested table" },
  { "non-number entry", function() return as.tensor { 1, "x" } end, "tensor: expected a number or boolean, got string" },
  { "mixed numbers and booleans", function() return as.tensor { 1, true } end, "tensor: mixes numbers and booleans" },
  { "unknown dtype", function() return as.tensor({ 1 }, "float65") end, "tensor: unknown dtype 'float65'" },
  { "negative size", function() return as.zeros(2, -3) end, "zeros: invalid size -3" },
  { "fractional size", function() return as.ones(2.5) end, "ones: invalid size 2.5" },
  { "too many dims", function() return as.zeros(1, 1, 1, 1, 1, 1, 1, 1, 1) end, "zeros: at most 8 dimensions" },
  { "huge allocation", function() return as.zeros(1e6, 1e6, 1e6) end, "out of memory" },
  { "arange without numbers", function() return as.arange("a") end, "bad argument #1 to 'arange' (number expected, got string)" },
  { "arange zero step", function() return as.arange(0, 5, 0) end, "arange: step must be nonzero" },
  { "full without value", function() return as.full({ 2 }) end, "number expected, got no value" },
  -- devices
  { "a misspelt device", function() return as.zeros(2):to("cudax") end, "to: 'cudax' is neither a dtype nor a device" },
  { "a device index that is not a number", function() return nn.Linear(2, 2):to("cuda:x") end, "to: unknown device 'cuda:x'" },
  { "memory_stats of a missing device", function() return as.cuda.memory_stats(99) end, "memory_stats: no CUDA device 99" },
  { "a graph of something not callable", function() return as.cuda.graph(42) end,
    "as.cuda.graph: expected a function to capture, got number" },
  { "a graph of CPU tensors", function() return as.cuda.graph(function(x) return x end, as.zeros(2)) end,
    "as.cuda.graph: argument 1 is on cpu; a graph's tensors live on a CUDA device" },
  -- facts and indexing
  { "size of a missing dim", function() return as.zeros(2, 3):size(3) end, "size: dimension 3 out of range for a 2-d tensor" },
  { "dim 0", function() return as.zeros(2, 3):size(0) end, "dimension 0 is invalid (dimensions are 1-based" },
  { "index 0", function() return as.zeros(3)[0] end, "index 0 is invalid (indices are 1-based" },
  { "index out of range", function() return as.zeros(3)[4] end, "index: index 4 is out of bounds for size 3" },
  { "select out of range", function() return as.zeros(2, 3):select(2, 5) end, "select: index 5 is out of bounds for dimension 2 of size 3" },
  { "item of many", function() return as.zeros(2):item() end, "item: expected a tensor with one element, got shape (2)" },
  { "assign a string", function() local t = as.zeros(2, 2); t[1] = "x" end, "number, boolean or Tensor expected, got string" },
  { "field assignment", function() local t = as.zeros(2); t.foo = 1 end, "tensor: cannot assign to field 'foo'" },
  -- views
  { "view of a transposed tensor", function() return as.zeros(2, 3):t():view(6) end, "view: the tensor's strides cannot express this shape" },
  { "reshape to a wrong size", function() return as.zeros(2, 3):reshape(4, 2) end, "reshape: shape (4, 2) is invalid for a tensor of shape (2, 3) (6 elements)" },
  { "two -1 in reshape", function() return as.zeros(2, 3):reshape(-1, -1) end, "reshape: only one dimension can be -1" },
  { "permute wrong count", function() return as.zeros(2, 3):permute(1) end, "permute: expected 2 dimensions, got 1" },
  { "permute repeats", function() return as.zeros(2, 3):permute(1, 1) end, "permute: dimension 1 repeats" },
  { "narrow past the end", function() return as.zeros(4):narrow(1, 3, 5) end, "narrow: range [3, 8) is out of bounds for dimension 1 of size 4" },
  { "expand incompatible", function() return as.zeros(2, 3):expand(4, 3) end, "expand: cannot expand shape (2, 3) to (4, 3)" },
  { "transpose bad dim", function() return as.zeros(2, 3):transpose(1, 5) end, "transpose: dimension 5 out of range" },
  { "split sizes don't add up", function() return as.zeros(5):split({ 2, 2 }) end, "split: sizes add up to 4 but dimension 1 has size 5" },
  { "chunk zero", function() return as.zeros(5):chunk(0) end, "chunk: number of chunks must be 1 to 4096, got 0" },
  { "to an unknown target", function() return as.zeros(2):to("tpu") end, "to: 'tpu' is neither a dtype nor a device" },
  -- math
  { "add a string", function() return as.zeros(2) + "x" end, "bad argument #2 to 'add' (Tensor or number expected, got string)" },
  { "broadcast mismatch", function() return as.zeros(2, 3) + as.zeros(4) end, "add: shapes (2, 3) and (4) cannot be broadcast together" },
  { "matmul mismatch", function() return as.zeros(2, 3):matmul(as.zeros(4, 5)) end, "matmul: shapes (2, 3) and (4, 5) do not align" },
  { "matmul of a 0-d", function() return as.tensor(1.0):matmul(as.zeros(2)) end, "matmul: both arguments need at least 1 dimension" },
  { "matmul with a number", function() return as.zeros(2, 2):matmul(3) end, "bad argument #1 to 'matmul' (Tensor expected, got number)" },
  { "softmax of ints", function() return as.tensor({ 1, 2 }):softmax(1) end, "softmax: expected a floating-point tensor, got int64" },
  { "softmax bad dim", function() return as.zeros(2, 3):softmax(3) end, "softmax: dimension 3 out of range" },
  { "where with a float condition", function() return as.where(as.zeros(2), as.zeros(2), as.zeros(2)) end, "where: condition must be bool, got float32" },
  { "where bad branch", function() return as.where(as.zeros(2):gt(0), "a", 1) end, "bad argument #2 to 'where' (Tensor or number expected, got string)" },
  { "layer_norm wrong weight", function() return as.zeros(2, 4):layer_norm(as.ones(3)) end, "layer_norm: weight of shape (3) does not match the last dimension 4" },
  { "cat mismatch", function() return as.cat({ as.zeros(2, 3), as.zeros(2, 4) }, 1) end, "cat: tensor 2 has shape (2, 4), expected (?, 3)" },
  { "cat of a non-tensor", function() return as.cat({ as.zeros(2), 5 }) end, "cat: element 2 is number, expected Tensor" },
  { "max of empty", function() return as.zeros(0):max() end, "max: cannot reduce an empty tensor" },
  { "gelu bad approximate", function() return as.zeros(2):gelu("fast") end, "gelu: approximate must be \"none\" or \"tanh\", got \"fast\"" },
  { "index_select float index", function() return as.zeros(3):index_select(1, as.zeros(2)) end, "index_select: index must be int64 or int32, got float32" },
  { "index_select out of range", function() return as.zeros(3):index_select(1, as.tensor { 4 }) end, "index_select: index 4 is out of range for dimension 1 of size 3" },
  { "embedding id out of range", function() return as.embedding(as.zeros(5, 2), as.tensor { 7 }) end, "embedding: id 7 is out of range for 5 embeddings" },
  { "method on a non-tensor", function() return as.zeros(2).exp(5) end, "bad argument #1 to 'exp' (Tensor expected, got number)" },
  { "set_num_threads zero", function() return as.set_num_threads(0) end, "set_num_threads: expected 1 to 1024, got 0" },
  -- files
  { "load a missing file", function() return as.load("/nonexistent/x.safetensors") end, "load: /nonexistent/x.safetensors" },
  { "save a non-table", function() return as.save("/tmp/x.safetensors", 5) end, "bad argument #2 to 'save' (tensor or table of tensors expected, got number)" },
  -- modules
  { "Linear with a string", function() return nn.Linear("a", 2) end, "bad argument #1 to 'Linear' (integer in_features expected, got string)" },
  { "Linear with a wrong input", function() return nn.Linear(4, 2)(as.zeros(3, 5)) end, "Linear: expected input with last dimension 4, got shape (3, 5)" },
  { "calling a module with a string", function() return nn.Linear(4, 2)("x") end, "Linear: argument #1 must be a Tensor or nil, got string" },
  { "MultiheadAttention heads don't divide", function() return nn.MultiheadAttention { dim = 10, num_heads = 3 } end, "MultiheadAttention: dim (10) must be divisible by num_heads (3)" },
  { "MultiheadAttention bad kv heads", function() return nn.MultiheadAttention { dim = 12, num_heads = 4, num_kv_heads = 3 } end, "num_kv_heads (3) must divide num_heads (4)" },
  { "TransformerBlock bad norm", function() return nn.TransformerBlock { dim = 8, num_heads = 2, norm = "middle" } end, "TransformerBlock: norm must be \"pre\" or \"post\", got \"middle\"" },
  { "class without a name", function() return nn.class(5) end, "bad argument #1 to 'class' (class name expected, got number)" },
  { "assign a number over a child", function() local s = nn.Sequential(nn.Linear(2, 2)); s["0"] = 5 end, "cannot assign number to '0' of Sequential: it is a child module" },
  { "module cycle", function() local s = nn.Sequential(nn.ReLU()); s[1].x = s end, "would make a cycle" },
  { "load_state_dict a non-table", function() return nn.Linear(2, 2):load_state_dict(5) end, "bad argument #1 to 'load_state_dict' (table expected, got number)" },
  { "dropout p out of range", function() return nn.Dropout(1.5) end, "Dropout: p must be in [0, 1), got 1.5" },
  { "a misspelt layer option", function() return nn.TransformerBlock { dim = 8, num_heads = 2, mlp_raito = 2 } end, "nn.TransformerBlock: unknown option 'mlp_raito' (did you mean 'mlp_ratio'?); known options: dim, num_heads," },
  { "PyTorch's option name", function() return nn.MultiheadAttention { embed_dim = 8, num_heads = 2 } end, "nn.MultiheadAttention: unknown option 'embed_dim' (PyTorch's name; here it is 'dim')" },
  { "an unknown option of a positional layer", function() return nn.Linear(2, 2, { bias = false, device = "cuda" }) end, "nn.Linear: unknown option 'device'" },
  { "too many arguments to a layer", function() return nn.Embedding(10, 4, 0) end, "nn.Embedding: too many arguments (at most 2: num_embeddings, embedding_dim; got 3)" },
  { "a misspelt core option", function() return as.attention.new("scaled_dot_product", { casual = true }) end, "scaled_dot_product: unknown option 'casual' (did you mean 'causal'?)" },
  { "child index 0", function() return nn.Sequential(nn.ReLU())[0] end, "Sequential: index 0 is invalid (indices start at 1 in attnswap, as in Lua: PyTorch's [0] is [1] here" },
  { "assign child past the end", function() local s = nn.Sequential(nn.ReLU()); s[2] = nn.ReLU() end, "Sequential: index 2 is out of range for 1 children" },
  -- attention registry and swaps
  { "unknown attention", function() return as.attention.new("nope") end, "attention.new: no attention named 'nope'" },
  { "register without a class", function() return as.register_attention("x", 5) end, "bad argument #2 to 'register_attention' (attention class expected, got number)" },
  { "register a duplicate", function() return as.register_attention("scaled_dot_product", nn.class("Dup")) end, "'scaled_dot_product' is already registered" },
  { "register with a bad info field", function() return as.register_attention("x2", nn.class("X2"), { exact = "yes" }) end, "register_attention: info.exact must be a boolean, got string" },
  { "swap a non-module", function() return as.swap_attention(5, "scaled_dot_product", "scaled_dot_product") end, "bad argument #1 to 'swap_attention' (Module expected, got number)" },
  { "swap to an unknown name", function() return as.swap_attention(nn.Linear(2, 2), "Linear", "nope") end, "swap_attention: no attention named 'nope'" },
  { "swap with a bad target", function() return as.swap_attention(nn.Linear(2, 2), 5, "scaled_dot_product") end, "bad argument #2 to 'swap_attention'" },
  { "swap a gqa = false core into a grouped-query module", function()
    local C = nn.class("ErrSameHeads")
    as.register_attention("err_same_heads", C, { gqa = false })
    return as.swap_attention(nn.MultiheadAttention { dim = 8, num_heads = 4, num_kv_heads = 1 }, "scaled_dot_product", "err_same_heads")
  end, "swap_attention: 'err_same_heads' is registered with gqa = false (k and v must have as many heads as q), but core sits in a grouped-query MultiheadAttention (num_heads = 4, num_kv_heads = 1)" },
  { "swap with bad layers", function() return as.swap_attention(nn.Linear(2, 2), "Linear", "scaled_dot_product", nil, { layers = { 0 } }) end, "swap_opts.layers holds 1-based indices, got 0" },
  { "attention with mismatched shapes", function()
    local c = as.attention.new("scaled_dot_product")
    return c(as.zeros(1, 2, 3, 4), as.zeros(1, 2, 3, 5), as.zeros(1, 2, 3, 5))
  end, "scaled_dot_product:" },
  { "attention with heads that don't divide", function()
    local c = as.attention.new("scaled_dot_product")
    return c(as.zeros(1, 3, 3, 4), as.zeros(1, 2, 3, 4), as.zeros(1, 2, 3, 4))
  end, "scaled_dot_product:" },
}
if not as.cuda.is_available() then -- here a GPU tensor cannot be made: say so, never crash
  cases[#cases + 1] = { "cuda without a GPU", function() return as.zeros(2):cuda() end, "cuda: " }
  cases[#cases + 1] = { "a model to cuda without a GPU", function() return nn.Linear(2, 2):to("cuda") end, "cuda: " }
  cases[#cases + 1] = { "the profiler's range without a GPU", function() return as.cuda.profiler_start() end,
    "profiler_start: " }
  cases[#cases + 1] = { "the profiler's stop without a GPU", function() return as.cuda.profiler_stop() end,
    "profiler_stop: " }
  cases[#cases + 1] = { "a graph without a GPU", function() return as.cuda.graph(function() end) end,
    "as.cuda.graph: no CUDA device is available" }
  cases[#cases + 1] = { "a capture without a GPU", function() return as.cuda.graph_begin() end, "graph: " }
end

describe("bad input gives a clear error", function()
  it("has at least 40 cases", function() assert.is_true(#cases >= 40) end)
  for _, c in ipairs(cases) do
    it(c[1], function()
      local ok, err = pcall(c[2])
      assert.is_false(ok, "expected an error")
      err = tostring(err)
      if not err:find(c[3], 1, true) then
        error(string.format("message %q\n does not contain %q", err, c[3]))
      end
    end)
  end
end)
