-- as.distill: attention transfer then logit distillation on a tiny GPT-2,
-- with a Lua-registered attention whose parameters start wrong (a per-head
-- temperature far from 1/sqrt(D)), so there is a gap to close; LoRA
-- adapters added and merged back; the teacher untouched; and the errors,
-- each before any training.
local as = require "attnswap"
local U = require "spec_util"

-- softmax(s_h * q k^T) v with a learnable per-head scale s_h, started at
-- `init` (the exact attention's is 1/sqrt(D)).
local Tempered = as.nn.class("TemperedAttention")
function Tempered:init(opts)
  self.causal = opts.causal or false
  self.log_scale = as.nn.Parameter(as.full({ 1, opts.num_heads or 4, 1, 1 }, math.log(opts.init or 2.0)))
end
function Tempered:forward(q, k, v, mask)
  local s = q:matmul(k:transpose(-2, -1)) * self.log_scale:exp()
  if self.causal then
    local lq, lk = q:size(-2), k:size(-2)
    s = as.where(as.ones(lq, lk, "bool"):tril(lk - lq), s, -math.huge)
  end
  if mask then s = as.where(mask, s, -math.huge) end
  return s:softmax(-1):matmul(v)
end
Tempered.shape_options = { "num_heads" } -- filled in by swap_attention
if not as.attention.exists("tempered_attention_test") then
  as.register_attention("tempered_attention_test", Tempered, { exact = false, complexity = "O(L^2 D)", gqa = false,
    summary = "test: softmax with a learnable per-head temperature" })
end
local Fixed = as.nn.class("FixedTemperedAttention")
function Fixed:init(opts) self.causal = opts.causal or false end
function Fixed:forward(q, k, v, mask) return as.sdp_attention(q, k, v, mask, { causal = self.causal, scale = 2.0 }) end
if not as.attention.exists("fixed_attention_test") then
  as.register_attention("fixed_attention_test", Fixed, { exact = false, complexity = "O(L^2 D)", gqa = false })
end

local CFG = { vocab_size = 48, n_positions = 32, n_embd = 32, n_layer = 2, n_head = 4 }

local function pair(name)
  as.manual_seed(5)
  local teacher = as.models.gpt2.new(CFG):eval()
  -- projections large enough that attention is far from uniform, so the
  -- temperature matters (GPT-2's own init, 0.02, makes every score ~0)
  as.no_grad(function()
    for _, blk in ipairs(teacher.transformer.h:children()) do
      blk.attn.c_attn.weight:copy_(as.randn(32, 96) * 0.5)
      blk.attn.c_proj.weight:copy_(as.randn(32, 32) * 0.3)
    end
    teacher.transformer.wte.weight:copy_(as.randn(CFG.vocab_size, 32))
  end)
  local student = as.models.gpt2.new(CFG):eval()
  student:load_state_dict(teacher:state_dict())
  as.swap_attention(student, "scaled_dot_product", name or "tempered_attention_test")
  return teacher, student
end

local function data(n, seed)
  math.randomseed(seed or 1)
  local out = {}
  for i = 1, n do
    local rows = {}
    for b = 1, 2 do
      rows[b] = {}
      for t = 1, 12 do rows[b][t] = math.random(0, CFG.vocab_size - 1) end
    end
    out[i] = as.tensor(rows, "int64")
  end
  return out
end

local function snapshot(model)
  local out = {}
  for k, v in pairs(model:state_dict()) do out[k] = v:clone() end
  return out
end

describe("as.distill", function()
  it("closes most of the gap to the teacher, trains only the new cores and LoRA, and leaves the teacher bit-identical", function()
    local teacher, student = pair()
    local before_teacher = snapshot(teacher)
    local held = data(3, 99)
    local hist = as.distill(student, teacher, data(6, 1), {
      steps = { attention = 60, logits = 30 }, lr = { attention = 5e-2 }, eval_data = held, log = false,
    })
    assert.are.equal(90, #hist)
    assert.are.equal("attention", hist[1].stage)
    assert.are.equal("logits", hist[#hist].stage)
    -- attention transfer: the per-layer MSE falls by far
    assert.is_true(hist[60].loss < 0.1 * hist[1].loss, string.format("attention loss %.3g -> %.3g", hist[1].loss, hist[60].loss))
    -- the KL on held-out batches: before the first stage, after the last
    local first, last = hist.eval[1], hist.eval[#hist.eval]
    assert.are.equal("before", first.when)
    assert.is_true(last.value < 0.5 * first.value, string.format("held-out KL %.4g -> %.4g", first.value, last.value))
    -- the temperatures moved toward the exact 1/sqrt(8)
    local s = student.transformer.h[1].attn.core.log_scale:exp():mean():item()
    assert.is_true(math.abs(s - 1 / math.sqrt(8)) < math.abs(2.0 - 1 / math.sqrt(8)) * 0.5, "scale " .. s)
    -- LoRA merged back: the tree holds its Conv1D projections again, their weights changed
    assert.are.equal("Conv1D", student.transformer.h[1].attn.c_attn:type())
    local sd = student:state_dict()
    for k in pairs(sd) do assert.is_falsy(k:find("lora_", 1, true), k) end
    assert.is_true(U.maxdiff(sd["transformer.h.0.attn.c_attn.weight"], before_teacher["transformer.h.0.attn.c_attn.weight"]) > 0)
    -- only the projections next to the cores changed; the MLP did not train
    assert.are.equal(0, U.maxdiff(sd["transformer.h.0.mlp.c_fc.weight"], before_teacher["transformer.h.0.mlp.c_fc.weight"]))
    -- the teacher is bit-identical, and no parameter was left requiring grad
    for k, v in pairs(teacher:state_dict()) do assert.are.equal(0, U.maxdiff(v, before_teacher[k]), k) end
    for name, p in student:named_parameters() do assert.is_false(p.requires_grad, name) end
  end)

  it("stages, train = \"cores\", accumulation, an iterator that runs out, a plot and the saved student", function()
    local teacher, student = pair()
    local dir = U.tmpdir()
    local batches, n = data(4, 3), 0
    local function iter()
      n = n + 1
      return batches[n] -- nil after four
    end
    local hist = as.distill(student, teacher, iter, { stages = "logits", steps = 10, accumulate = 2, train = "cores",
      log = false, plot = dir .. "/loss.svg", save = dir .. "/student.safetensors" })
    assert.are.equal(2, #hist, "four batches, two per step")
    local f = assert(io.open(dir .. "/loss.svg"))
    assert.is_truthy(f:read("a"):find("<polyline", 1, true))
    f:close()
    local saved = as.load(dir .. "/student.safetensors")
    assert.is_truthy(saved["transformer.h.0.attn.core.log_scale"])
  end)

  it("skips stage attention, saying why, for a core with nothing to train", function()
    local teacher, student = pair("fixed_attention_test")
    local hist = as.distill(student, teacher, data(2), { stages = "attention", steps = 3, log = false })
    assert.are.equal(0, #hist)
  end)

  it("refuses bad input before any training", function()
    local teacher, student = pair()
    local d = data(2)
    local function err(...) return U.errmsg(as.distill, ...) end
    local same = as.models.gpt2.new(CFG)
    assert.is_truthy(err(same, teacher, d):find("no swapped attention core", 1, true))
    local other = as.models.gpt2.new({ vocab_size = 48, n_positions = 32, n_embd = 32, n_layer = 1, n_head = 4 })
    as.swap_attention(other, "scaled_dot_product", "tempered_attention_test")
    assert.is_truthy(err(other, teacher, d):find("same architecture", 1, true))
    assert.is_truthy(err(student, teacher, d, { steps = 0 }):find("steps (attention) must be a positive integer", 1, true))
    assert.is_truthy(err(student, teacher, {}, {}):find("data is empty", 1, true))
    assert.is_truthy(err(student, teacher, d[1]):find("a Tensor (wrap it: {t})", 1, true))
    assert.is_truthy(err(student, teacher, { as.randn(2, 12) }):find("the teacher cannot run the first batch", 1, true))
    assert.is_truthy(err(student, teacher, d, { stepz = 3 }):find("unknown option 'stepz'", 1, true))
    assert.is_truthy(err(student, teacher, d, { stages = "logit" }):find("unknown stage 'logit'", 1, true))
    assert.is_truthy(err(student, student, d):find("no swapped attention core", 1, true))
    -- nothing trained: the student's cores are as swapped
    local ls = student.transformer.h[1].attn.core.log_scale
    assert.is_true(math.abs(ls:max():item() - math.log(2.0)) < 1e-6 and math.abs(ls:min():item() - math.log(2.0)) < 1e-6)
  end)
end)

describe("nn.LoRA", function()
  it("starts as its base, trains A and B only, and merges into the base's weight (Linear and Conv1D)", function()
    for _, make in ipairs { function() return as.nn.Linear(6, 5) end,
      function() return as.models.gpt2.new(CFG).transformer.h[1].attn.c_proj end } do
      local base = make()
      local x = as.randn(3, base.weight:size(base:type() == "Linear" and 2 or 1))
      local y0 = base(x)
      local l = as.nn.LoRA(base, 2, 4)
      assert.are.equal(0, U.maxdiff(l(x), y0))
      as.no_grad(function() l.lora_B:copy_(as.randn(table.unpack(l.lora_B:shape()))) end)
      local y1 = l(x)
      assert.is_true(U.maxdiff(y1, y0) > 1e-3)
      local m = as.nn.Sequential(l)
      assert.are.equal(1, as.nn.LoRA.merge(m))
      assert.are.equal(base:type(), m[1]:type())
      assert.is_true(U.maxdiff(m[1](x), y1) < 1e-5)
    end
    assert.is_truthy(U.errmsg(as.nn.LoRA, as.nn.LayerNorm(4)):find("must be a Linear or a Conv1D", 1, true))
    assert.is_truthy(U.errmsg(as.nn.LoRA, as.nn.Linear(4, 4), 0):find("r must be a positive integer", 1, true))
  end)
end)
