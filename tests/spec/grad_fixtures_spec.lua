-- Gradients against PyTorch's own (tests/fixtures/grads, made by
-- make_grad_fixtures.py in float64): every parameter of the GPT-2 and ViT
-- parity checkpoints, exact attention's dq, dk, dv (and a bias's gradient),
-- and an AdamW + clip_grad_norm_ run that must follow torch.optim.AdamW's
-- loss trajectory.  attnswap computes in float32; a gradient matches when its
-- largest difference is within 1e-3 of the reference's largest magnitude.
local as = require "attnswap"
local U = require "spec_util"

local dir = U.fixtures .. "grads/"
local REL = 1e-3

local function rel_err(want, got)
  local scale = want:abs():max():item()
  return U.maxdiff(want, got) / math.max(scale, 1e-12), scale
end

local function check_grad(name, want, got)
  assert.is_truthy(got, name .. ": no gradient")
  assert.are.equal(tostring(want:shape()), tostring(got:shape()), name)
  local e = rel_err(want, got)
  assert.is_true(e <= REL, string.format("%s: relative error %.3g", name, e))
end

-- Next-token cross entropy over (B, L) ids, as the fixture script computes it.
local function next_token_loss(logits, ids)
  local B, L, V = logits:size(1), logits:size(2), logits:size(3)
  return as.F.cross_entropy(logits:narrow(2, 1, L - 1):reshape(B * (L - 1), V), ids:narrow(2, 2, L - 1):reshape(B * (L - 1)))
end

-- Every parameter of the model has its reference gradient, and the reference
-- names no parameter the model lacks.
local function check_model_grads(model, ref, rename)
  local seen = 0
  for name, p in model:named_parameters() do
    local want = ref["grad." .. (rename and rename(name) or name)]
    assert.is_truthy(want, "no reference gradient for " .. name)
    check_grad(name, want, p.grad)
    seen = seen + 1
  end
  local count = 0
  for k in pairs(ref) do if k:match("^grad%.") then count = count + 1 end end
  assert.are.equal(count, seen, "parameters with a reference gradient")
end

describe("gradients against PyTorch's (float64 references)", function()
  it("GPT-2: the next-token loss and every parameter's gradient", function()
    local ref = as.load(dir .. "gpt2.safetensors")
    local model = as.models.gpt2.from_pretrained(U.fixtures .. "gpt2"):requires_grad_()
    local ids = as.load(U.fixtures .. "gpt2/io.safetensors").input_ids
    local loss = next_token_loss(model(ids), ids)
    assert.is_true(math.abs(loss:item() - ref.loss:item()) < 1e-4, "loss " .. loss:item() .. " vs " .. ref.loss:item())
    loss:backward()
    check_model_grads(model, ref)
  end)

  it("ViT: the classification loss and every parameter's gradient", function()
    local ref = as.load(dir .. "vit.safetensors")
    local model = as.models.vit.from_pretrained(U.fixtures .. "vit"):requires_grad_()
    local x = as.load(U.fixtures .. "vit/io.safetensors").pixel_values:float()
    local loss = as.F.cross_entropy(model(x), ref.target)
    assert.is_true(math.abs(loss:item() - ref.loss:item()) < 1e-4, "loss " .. loss:item() .. " vs " .. ref.loss:item())
    loss:backward()
    -- timm calls the output projection attn.proj (models/vit.lua renames it on load)
    check_model_grads(model, ref, function(n) return (n:gsub("%.attn%.out_proj%.", ".attn.proj.")) end)
  end)

  local CASES = { "plain_7x13", "causal_9x9", "gqa_causal_11x11", "bool_mask_5x8", "bias_4x6", "scale_3x5" }
  local ref, meta = as.load(dir .. "sdpa.safetensors")

  for _, name in ipairs(CASES) do
    it("exact attention's dq, dk, dv on " .. name, function()
      local c = require("attnswap.core").json_decode(meta[name])
      local function leaf(key) return ref[name .. "." .. key]:clone():requires_grad_() end
      local q, k, v = leaf("q"), leaf("k"), leaf("v")
      local mask = ref[name .. ".mask"]
      if c.mask == "float" then mask = leaf("bias") end
      local out = as.sdp_attention(q, k, v, mask, { causal = c.causal or false, scale = c.scale })
      assert.is_true(U.maxdiff(out, ref[name .. ".out"]) < 1e-5, name .. ": forward")
      out:backward(ref[name .. ".do"])
      check_grad(name .. " dq", ref[name .. ".dq"], q.grad)
      check_grad(name .. " dk", ref[name .. ".dk"], k.grad)
      check_grad(name .. " dv", ref[name .. ".dv"], v.grad)
      if c.mask == "float" then check_grad(name .. " dbias", ref[name .. ".dbias"], mask.grad) end
    end)
  end

  it("AdamW with clip_grad_norm_ follows torch.optim.AdamW's loss trajectory on GPT-2", function()
    local ref = as.load(dir .. "adamw_gpt2.safetensors")
    local model = as.models.gpt2.from_pretrained(U.fixtures .. "gpt2"):requires_grad_()
    local ids = as.load(U.fixtures .. "gpt2/io.safetensors").input_ids
    local opt = as.optim.AdamW(model:parameters(), { lr = 1e-2, betas = { 0.9, 0.95 }, eps = 1e-8, weight_decay = 0.1 })
    for step = 1, ref.losses:size(1) do
      opt:zero_grad()
      local loss = next_token_loss(model(ids), ids)
      loss:backward()
      local norm = as.nn.utils.clip_grad_norm_(model:parameters(), 1.0)
      opt:step()
      local want_loss, want_norm = ref.losses[step], ref.norms[step]
      assert.is_true(math.abs(loss:item() - want_loss) <= 1e-4,
        string.format("step %d: loss %.7f vs torch %.7f", step, loss:item(), want_loss))
      assert.is_true(math.abs(norm - want_norm) <= 1e-4 * math.max(1, want_norm),
        string.format("step %d: grad norm %.7f vs torch %.7f", step, norm, want_norm))
    end
  end)
end)
