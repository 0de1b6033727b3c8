-- as.distill on a real checkpoint (issue 18's check): the GPT-2 parity
-- fixture (tests/fixtures/gpt2, HF transformers' weights) swapped to
-- hedgehog_attention and distilled with the defaults except the steps;
-- the KL to the original on held-out inputs at least halves, and the
-- teacher's weights are bit-identical afterwards.
-- The fixture's weights are HF's random init (std 0.02): every score is ~0,
-- attention is uniform whatever its kind, and a swap moves the output by
-- float rounding only (KL ~3e-8, halved by one step or by none).  So the
-- teacher is the checkpoint with its q/k projections scaled by 5 (scores of
-- order 0.3: attention that depends on the input) and its v and output
-- projections by 10 (so that attention moves the logits).
local as = require "attnswap"
local U = require "spec_util"

local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
local dir = src .. "/tests/fixtures/gpt2"

-- n batches of 2 x 16 random ids below the fixture's vocabulary (100)
local function batches(n)
  local out = {}
  for k = 1, n do
    local rows = {}
    for b = 1, 2 do
      rows[b] = {}
      for t = 1, 16 do rows[b][t] = math.floor(as.rand(1):item() * 100) end
    end
    out[k] = as.tensor(rows, "int64")
  end
  return out
end

describe("as.distill on the GPT-2 checkpoint", function()
  it("swapped to hedgehog_attention: the held-out KL at least halves, the teacher is bit-identical", function()
    as.manual_seed(3)
    local teacher = as.models.gpt2.from_pretrained(dir):eval()
    as.no_grad(function()
      for _, blk in ipairs(teacher.transformer.h:children()) do
        local w = blk.attn.c_attn.weight -- Conv1D (in, out): q, k, v columns
        local qk, v = w:narrow(2, 1, 64), w:narrow(2, 65, 32)
        qk:copy_(qk * 5)
        v:copy_(v * 10)
        blk.attn.c_proj.weight:copy_(blk.attn.c_proj.weight * 10)
      end
    end)
    local student = teacher:clone()
    as.swap_attention(student, "scaled_dot_product", "hedgehog_attention")
    local before = {}
    for k, v in pairs(teacher:state_dict()) do before[k] = v:clone() end
    local train, held = batches(8), batches(3)
    -- the fixture's ids too: the inputs HF ran, never trained on
    held[#held + 1] = as.load(dir .. "/io.safetensors").input_ids
    local hist = as.distill(student, teacher, train, { steps = { attention = 100, logits = 5 }, eval_data = held, log = false })
    local first, last = hist.eval[1], hist.eval[#hist.eval]
    assert.are.equal("attention", first.stage)
    assert.are.equal("before", first.when)
    assert.are.equal("logits", last.stage)
    assert.are.equal("after", last.when)
    -- a gap well above float rounding (the unscaled checkpoint's is ~3e-8)
    assert.is_true(first.value > 1e-4, string.format("KL after the swap %.3g", first.value))
    assert.is_true(last.value <= 0.5 * first.value, string.format("held-out KL %.4g -> %.4g", first.value, last.value))
    for k, v in pairs(teacher:state_dict()) do
      assert.are.equal(0, U.maxdiff(v, before[k]), k)
      assert.are.equal(tostring(before[k]:shape()), tostring(v:shape()), k)
    end
    for name, p in teacher:named_parameters() do assert.is_false(p.requires_grad, name) end
  end)
end)
