-- Exact attention's gradients on CUDA against PyTorch's own
-- (tests/fixtures/grads/sdpa.safetensors: make_grad_fixtures.py, float64
-- F.scaled_dot_product_attention, inputs that bfloat16 holds exactly): the
-- scaled_dot_product core under autograd, so the fused flash backward, in
-- float32 and bfloat16, on plain, causal, GQA, a keep-mask, an additive bias
-- (and its gradient) and a custom scale.  Run by attnswap-run (ctest label
-- cuda); exit 77 where no GPU is visible.  ATTNSWAP_TEST_DEVICE=cpu runs
-- the same checks on the CPU's fused backward.
local as = require "attnswap"

local device = os.getenv("ATTNSWAP_TEST_DEVICE") or "cuda"
if device == "cuda" and not as.cuda.is_available() then
  print("sdpa_grad_cuda: no CUDA device, skipped")
  os.exit(77)
end
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local ref, meta = as.load(here .. "/../fixtures/grads/sdpa.safetensors")
local json = require("attnswap.core").json_decode

-- max |got - want| over max |want|: float32 kernels against float64 PyTorch
-- to 1e-5 of the scale; bfloat16 rounds P and dS to 8 bits (the mma path)
local TOL = { float32 = 2e-5, bfloat16 = 2.5e-2 }
local failures, checks = 0, 0
local function check(what, want, got, tol)
  checks = checks + 1
  local err
  if got == nil then
    err = math.huge
  else
    got = got:cpu():float()
    local scale = math.max(want:abs():max():item(), 1e-12)
    err = (got - want):abs():max():item() / scale
  end
  if not (err <= tol) then
    failures = failures + 1
    io.stderr:write(string.format("FAILED: %s: relative error %.3g (tolerance %.3g)\n", what, err, tol))
  end
end

local CASES = { "plain_7x13", "causal_9x9", "gqa_causal_11x11", "bool_mask_5x8", "bias_4x6", "scale_3x5" }
for _, name in ipairs(CASES) do
  local c = json(meta[name])
  for _, dtype in ipairs { "float32", "bfloat16" } do
    -- detached copies: the fixture tensors stay leaves of no graph across the dtypes
    local function input(key) return ref[name .. "." .. key]:detach():to(device):to(dtype) end
    local q, k, v = input("q"):requires_grad_(), input("k"):requires_grad_(), input("v"):requires_grad_()
    local mask = ref[name .. ".mask"]
    if mask ~= nil then mask = mask:to(device) end
    if c.mask == "float" then mask = input("bias"):requires_grad_() end
    local core = as.attention.new("scaled_dot_product", { causal = c.causal or false, scale = c.scale })
    local out = core(q, k, v, mask)
    out:backward(input("do"))
    local what = string.format("%s %s %s", name, device, dtype)
    local tol = TOL[dtype]
    check(what .. " out", ref[name .. ".out"], out, tol)
    check(what .. " dq", ref[name .. ".dq"], q.grad, tol)
    check(what .. " dk", ref[name .. ".dk"], k.grad, tol)
    check(what .. " dv", ref[name .. ".dv"], v.grad, tol)
    if c.mask == "float" then check(what .. " dbias", ref[name .. ".dbias"], mask.grad, tol) end
  end
end
print(string.format("sdpa_grad_cuda (%s, backward %s): %d checks, %d failures", device,
  as.core.flash_has_backward and tostring(as.core.flash_has_backward(as.zeros(1):to(device))) or "?", checks, failures))
os.exit(failures == 0 and 0 or 1)
