-- The CUDA flash backward (kernels/cuda/attention_flash_bwd.cu) against the
-- CPU's fused backward on the same inputs: gradients of q, k, v and of an
-- additive bias, through scaled_dot_product under autograd.  Run by
-- attnswap-run (ctest label cuda); exit 77 where no GPU is visible.
--   bfloat16 / float16, D 64 and 128: the tensor-core paths (flash-bwd/wgmma on
--   a compute capability 9.0 card for the cases without mask, bias, dropout or
--   a negative scale, flash-bwd/mma for the rest and, under
--   ATTNSWAP_FLASH_BWD=mma, for all of them: ctest cuda.flash_bwd_mma);
--   float32, D 64 and 128: flash-bwd/tf32x3 (3xTF32 on the tensor cores,
--   sm_80+) where the forward took flash/tf32x3, else the fallback
--   (ATTNSWAP_FLASH_F32=simt: ctest cuda.flash_bwd_simt);
--   odd D, strided dO: the fallback (flash-bwd/cuda-f32).
-- Each case: plain, causal (Lq < Lk too), GQA, a keep-mask with a row that
-- sees nothing, a bias that requires grad, dropout (the CPU's hash).
-- Then as.set_deterministic: the same gradients, and two runs bit-identical.
local t = dofile((arg[0]:match("^(.*)/") or ".") .. "/harness.lua")("flash_bwd_cuda")
local check = t.check

-- gradients of (out * w):sum() for q, k, v and the mask (when float), on dev in dtype
local function grads(dev, dtype, q0, k0, v0, m0, w0, opts, training)
  -- detached first: the caller's tensors stay free of this run's graph
  local function leaf(t) return t:detach():to(dtype):to(dev):requires_grad_() end
  local q, k, v = leaf(q0), leaf(k0), leaf(v0)
  local m
  if m0 ~= nil then
    if m0:dtype() == "bool" then m = m0:to(dev) else m = m0:detach():to(dev):requires_grad_() end
  end
  as.manual_seed(7) -- the dropout seed: the same draw on both devices
  local core = as.attention.new("scaled_dot_product", opts)
  if training then core:train() else core:eval() end
  local out = core(q, k, v, m)
  local backend = as.sdpa_backend()
  ;(out:float() * w0:to(dev)):sum():backward()
  local g = { q.grad, k.grad, v.grad }
  if m ~= nil and m.requires_grad then g[4] = m.grad end
  for i, x in pairs(g) do g[i] = x:cpu():float() end
  return g, backend, out:cpu():float(), as.sdpa_backward_backend()
end

-- The backward kernel a case must take: float32 at D 64 / 128 on the tensor
-- cores exactly where its forward went (the two share their conditions),
-- 16-bit inputs on wgmma or mma, the rest on the fallback.
local function bwd_expected(dtype, shp, fwd, bwd)
  local d, dv = shp.q[4], shp.v[4]
  local tiled = d == dv and (d == 64 or d == 128)
  if dtype == "float32" then
    if tiled and fwd == "flash/tf32x3" then return bwd == "flash-bwd/tf32x3" end
    return bwd == "flash-bwd/cuda-f32"
  end
  if tiled then -- wgmma only on a Hopper card, and never under ATTNSWAP_FLASH_BWD=mma
    if os.getenv("ATTNSWAP_FLASH_BWD") == "mma" then return bwd == "flash-bwd/mma" end
    return bwd == "flash-bwd/wgmma" or bwd == "flash-bwd/mma"
  end
  return bwd == "flash-bwd/cuda-f32"
end

local function case(name, dtype, shp, opts, mask, training)
  as.manual_seed(3)
  local q0, k0, v0 = as.randn(table.unpack(shp.q)), as.randn(table.unpack(shp.k)), as.randn(table.unpack(shp.v))
  if shp.transpose then -- (B, L, H, D) storage seen as (B, H, L, D): strided rows
    q0 = as.randn(shp.q[1], shp.q[3], shp.q[2], shp.q[4]):transpose(2, 3)
  end
  -- the reference sees the inputs rounded to dtype, in float32
  q0, k0, v0 = q0:to(dtype):float(), k0:to(dtype):float(), v0:to(dtype):float()
  if shp.transpose then q0 = q0:transpose(2, 3):contiguous():transpose(2, 3) end
  local w0 = as.randn(shp.q[1], shp.q[2], shp.q[3], shp.v[4])
  local gr, _, oref = grads("cpu", "float32", q0, k0, v0, mask, w0, opts, training)
  local gc, backend, ocuda, bwd = grads("cuda", dtype, q0, k0, v0, mask, w0, opts, training)
  -- float32 (both kernels, 3xTF32 too) stays near 1e-6 of the gradients' scale
  local tol = dtype == "float32" and 2e-5 or 3e-2
  check(backend:sub(1, 6) == "flash/", name .. ": the forward took " .. backend)
  check(bwd_expected(dtype, shp, backend, bwd), name .. ": the backward took " .. bwd .. " after " .. backend)
  local od = (ocuda - oref):abs():max():item()
  check(od <= tol * math.max(1, oref:abs():max():item()), string.format("%s: forward max diff %.3g", name, od))
  local names = { "dq", "dk", "dv", "dbias" }
  local worst = 0
  for i, want in pairs(gr) do
    local got = gc[i]
    if got == nil then
      check(false, name .. ": no CUDA gradient for " .. names[i])
    else
      local scale = math.max(1, want:abs():max():item())
      local d = (got - want):abs():max():item()
      local finite = got:sum():item()
      check(finite == finite, name .. ": NaN in " .. names[i])
      check(d <= tol * scale, string.format("%s: %s max diff %.3g (scale %.3g)", name, names[i], d, scale))
      worst = math.max(worst, d / scale)
    end
  end
  print(string.format("%-44s %-9s %-16s %-18s worst rel %.2e", name, dtype, backend, bwd, worst))
end

local function shapes(B, H, Hkv, Lq, Lk, D, Dv)
  return { q = { B, H, Lq, D }, k = { B, Hkv, Lk, D }, v = { B, Hkv, Lk, Dv or D } }
end

for _, dtype in ipairs { "bfloat16", "float16", "float32" } do
  for _, D in ipairs { 64, 128 } do
    local tag = string.format("D%d", D)
    case(tag .. " plain", dtype, shapes(2, 3, 3, 77, 77, D), {})
    case(tag .. " causal", dtype, shapes(2, 3, 3, 130, 130, D), { causal = true })
    case(tag .. " causal Lq<Lk", dtype, shapes(1, 2, 2, 37, 100, D), { causal = true })
    case(tag .. " causal Lq>Lk", dtype, shapes(1, 2, 2, 90, 41, D), { causal = true })
    case(tag .. " GQA causal", dtype, shapes(2, 6, 2, 65, 65, D), { causal = true })
    local keep = as.rand(2, 1, 70, 51):lt(0.7)
    keep[1][1][5]:fill_(0) -- a query that sees no key
    case(tag .. " keep-mask, an empty row", dtype, shapes(2, 4, 2, 70, 51, D), {}, keep)
    case(tag .. " bias with grad, causal", dtype, shapes(1, 2, 2, 66, 80, D), { causal = true }, as.randn(66, 80))
    case(tag .. " bias (B,H,Lq,Lk)", dtype, shapes(2, 2, 1, 33, 47, D), {}, as.randn(2, 2, 33, 47))
    case(tag .. " dropout 0.2, causal", dtype, shapes(1, 2, 2, 75, 75, D), { causal = true, dropout = 0.2 }, nil, true)
    case(tag .. " scale -0.5", dtype, shapes(1, 2, 2, 20, 30, D), { scale = -0.5 })
    local tr = shapes(2, 3, 3, 45, 45, D)
    tr.transpose = true
    case(tag .. " strided q", dtype, tr, { causal = true })
  end
  case("odd D 40, Dv 24", dtype, shapes(2, 4, 2, 33, 47, 40, 24), { causal = true })
end
-- longer rows: several key blocks and query steps per CTA
case("D64 L 1000 causal", "bfloat16", shapes(1, 4, 4, 1000, 1000, 64), { causal = true })
case("D128 L 777 GQA", "bfloat16", shapes(1, 4, 1, 777, 777, 128), {})
case("D64 L 300/520 causal GQA", "float16", shapes(2, 4, 2, 300, 520, 64), { causal = true })
case("D128 L 520/300 causal", "bfloat16", shapes(1, 3, 3, 520, 300, 128), { causal = true })
case("D64 L 640 GQA 4:1", "bfloat16", shapes(1, 8, 2, 640, 640, 64), {})
case("D64 L 600 causal GQA", "float32", shapes(1, 4, 2, 600, 600, 64), { causal = true })
case("D128 L 333/700 causal", "float32", shapes(1, 2, 2, 333, 700, 128), { causal = true })
case("D128 L 450 bias with grad", "float32", shapes(1, 2, 2, 450, 450, 128), {}, as.randn(450, 450))
-- grids that fill a Hopper card: the forward on the wgmma kernels (persistent grid, each CTA
-- several tiles) keeping the row statistics the backward reads
case("D64 L 600 causal, 80 heads", "bfloat16", shapes(2, 40, 40, 600, 600, 64), { causal = true })
case("D128 L 520 GQA 4:1, 64 heads", "float16", shapes(2, 32, 8, 520, 520, 128), {})

-- as.set_deterministic: the key blocks add into dq in their index order, so
-- two runs agree bit for bit (the atomics' order may differ without it); the
-- gradients still match the CPU's
local function repeatable(name, dtype, shp, opts, mask)
  as.manual_seed(5)
  local q0, k0, v0 = as.randn(table.unpack(shp.q)), as.randn(table.unpack(shp.k)), as.randn(table.unpack(shp.v))
  local w0 = as.randn(shp.q[1], shp.q[2], shp.q[3], shp.v[4])
  as.set_deterministic(true)
  case("deterministic " .. name, dtype, shp, opts, mask)
  local g1, backend = grads("cuda", dtype, q0, k0, v0, mask, w0, opts)
  local g2 = grads("cuda", dtype, q0, k0, v0, mask, w0, opts)
  as.set_deterministic(false)
  local same = true
  for i, x in pairs(g1) do
    local d = (x - g2[i]):abs():max():item()
    check(d == 0, string.format("deterministic %s: two runs differ by %.3g in gradient %d", name, d, i))
    same = same and d == 0
  end
  print(string.format("%-44s %-9s %-16s %s", "deterministic " .. name, dtype, backend,
    same and "two runs bit-identical" or "two runs DIFFER"))
end
repeatable("D64 L 1000 causal", "bfloat16", shapes(1, 4, 4, 1000, 1000, 64), { causal = true })
repeatable("D128 L 777 GQA", "bfloat16", shapes(1, 4, 1, 777, 777, 128), {})
repeatable("D64 L 300/520 causal GQA", "float16", shapes(2, 4, 2, 300, 520, 64), { causal = true })
repeatable("D128 L 520/300 causal", "bfloat16", shapes(1, 3, 3, 520, 300, 128), { causal = true })
repeatable("D64 bias with grad, L 600", "bfloat16", shapes(1, 2, 2, 600, 600, 64), {}, as.randn(600, 600))
repeatable("float32 D 40", "float32", shapes(1, 2, 2, 300, 300, 40), { causal = true })
repeatable("float32 D 64 L 520 causal", "float32", shapes(1, 2, 2, 520, 520, 64), { causal = true })
repeatable("float32 D 128 L 300 GQA", "float32", shapes(1, 4, 2, 300, 300, 128), {})

t.finish()
