-- ring_attention on 2 ranks equals one process's flash attention over the
-- whole sequence: not causal (contiguous split) and causal (zig-zag), odd
-- sizes, GQA; the registry knows it; bad shards are errors.
local as = require "attnswap"
local D = as.distributed.init({ timeout = 60 })
local rank = D.rank()
local R = as.attention.get and as.attention.get("ring_attention") or require "attnswap.attention.ring_attention"
local function check(cond, msg) if not cond then error(("rank %d: %s"):format(rank, msg), 2) end end

local cases = {
  { B = 2, H = 3, Hkv = 3, L = 12, Dh = 5, causal = false },
  { B = 1, H = 4, Hkv = 2, L = 20, Dh = 7, causal = true },
  { B = 2, H = 2, Hkv = 1, L = 8, Dh = 16, causal = false },
  { B = 1, H = 2, Hkv = 2, L = 36, Dh = 3, causal = true },
}
for n, c in ipairs(cases) do
  as.manual_seed(n) -- the same whole q, k, v on every rank
  local q, k, v = as.randn(c.B, c.H, c.L, c.Dh), as.randn(c.B, c.Hkv, c.L, c.Dh), as.randn(c.B, c.Hkv, c.L, c.Dh)
  local want = as.core.flash_attention(q, k, v, nil, { causal = c.causal })
  local ring = R({ causal = c.causal })
  local sh = function(x) return R.shard(x, 3, c.causal) end
  local mine = ring(sh(q), sh(k), sh(v))
  check(as.core.is_tensor(mine) and mine:size(3) == c.L // D.world_size(), "local rows")
  local got = R.unshard(mine, 3, c.causal)
  local d = (got - want):abs():max():item()
  check(d < 1e-5, ("case %d (causal %s): ring differs from flash by %g"):format(n, c.causal, d))
  -- the local rows are this rank's rows of the whole
  check((mine - sh(want)):abs():max():item() < 1e-5, "shard rows")
end
local odd = as.randn(1, 1, 3, 4)
local ok, err = pcall(function() return R({ causal = true })(odd, odd, odd) end)
check(not ok and err:find("must be even"), "odd causal shard: " .. tostring(err))
ok, err = pcall(R.shard, as.randn(1, 1, 6, 2), 3, true)
check(not ok and err:find("multiple of 4"), "bad split: " .. tostring(err))
print(("ring ok on rank %d"):format(rank))

-- the backward: each rank's dq, dk, dv equal its shard of one process's
-- gradients of sum(out * G) through the math attention's autograd
for n, c in ipairs(cases) do
  as.manual_seed(50 + n)
  local q, k, v = as.randn(c.B, c.H, c.L, c.Dh), as.randn(c.B, c.Hkv, c.L, c.Dh), as.randn(c.B, c.Hkv, c.L, c.Dh)
  local G = as.randn(c.B, c.H, c.L, c.Dh)
  for _, t in ipairs({ q, k, v }) do t:requires_grad_(true) end
  local full = as.core.sdp_attention(q, k, v, nil, { causal = c.causal })
  ;(full * G):sum():backward()
  local sh = function(x) return R.shard(x:detach(), 3, c.causal) end
  local opts = { causal = c.causal }
  local o, lse = R.attention(sh(q), sh(k), sh(v), opts)
  local dq, dk, dv = R.attention_backward(sh(q), sh(k), sh(v), o, lse, sh(G), opts)
  for name, pair in pairs({ dq = { dq, q.grad }, dk = { dk, k.grad }, dv = { dv, v.grad } }) do
    local d = (pair[1] - sh(pair[2])):abs():max():item()
    check(d < 1e-4, ("backward case %d (causal %s): %s differs by %g"):format(n, c.causal, name, d))
  end
end
print(("ring backward ok on rank %d"):format(rank))

-- swap_attention puts it in a model: each rank runs the swapped model on its
-- shard of the sequence (everything else is per token) and gets its rows of
-- the one-process output
do
  as.manual_seed(77)
  local blocks = {}
  for i = 1, 2 do blocks[i] = as.nn.TransformerBlock { dim = 16, num_heads = 4, mlp_ratio = 2 } end
  local model = as.nn.Sequential(table.unpack(blocks)):eval()
  local x = as.randn(2, 10, 16)
  local want = model(x)
  local swapped = as.swap_attention(model, "scaled_dot_product", "ring_attention")
  local mine = swapped(R.shard(x, 2, false))
  local d = (R.unshard(mine, 2, false) - want):abs():max():item()
  check(d < 1e-4, ("swapped model differs from one process by %g"):format(d))
end
print(("ring in a swapped model ok on rank %d"):format(rank))

-- training: the module's forward is recorded (an autograd.Function), so
-- loss:backward() on every rank gives each rank's q, k, v shards the shard
-- of one process's flash-attention gradients, causal (zig-zag) and not
for n, c in ipairs(cases) do
  as.manual_seed(90 + n)
  local q, k, v = as.randn(c.B, c.H, c.L, c.Dh), as.randn(c.B, c.Hkv, c.L, c.Dh), as.randn(c.B, c.Hkv, c.L, c.Dh)
  local G = as.randn(c.B, c.H, c.L, c.Dh)
  for _, t in ipairs({ q, k, v }) do t:requires_grad_(true) end
  ;(as.core.flash_attention(q, k, v, nil, { causal = c.causal }) * G):sum():backward()
  local sh = function(x) return R.shard(x:detach(), 3, c.causal) end
  local qs, ks, vs = sh(q):requires_grad_(), sh(k):requires_grad_(), sh(v):requires_grad_()
  local out = R({ causal = c.causal })(qs, ks, vs)
  check(out.grad_fn == "ring_attention", "recorded as ring_attention, got " .. tostring(out.grad_fn))
  ;(out * sh(G)):sum():backward()
  for name, pair in pairs({ dq = { qs, q }, dk = { ks, k }, dv = { vs, v } }) do
    local d = (pair[1].grad - sh(pair[2].grad)):abs():max():item()
    check(d < 1e-4, ("train case %d (causal %s): %s differs from flash by %g"):format(n, c.causal, name, d))
  end
end
print(("ring trains (q, k, v) on rank %d"):format(rank))

-- a swapped model trains: each rank's parameter gradients from its shard of
-- the sequence, summed over the ranks, equal one process's with flash
-- attention over the whole sequence
for _, causal in ipairs({ false, true }) do
  as.manual_seed(78)
  local blocks = {}
  for i = 1, 2 do blocks[i] = as.nn.TransformerBlock { dim = 16, num_heads = 4, mlp_ratio = 2 } end
  local model = as.nn.Sequential(table.unpack(blocks)):eval()
  model:requires_grad_(true)
  local x, G = as.randn(2, 12, 16), as.randn(2, 12, 16)
  local flash = as.swap_attention(model:clone(), "scaled_dot_product", "flash_attention", { causal = causal })
  local ring = as.swap_attention(model, "scaled_dot_product", "ring_attention", { causal = causal })
  ;(flash(x) * G):sum():backward()
  ;(ring(R.shard(x, 2, causal)) * R.shard(G, 2, causal)):sum():backward()
  local pf, pr = flash:parameters(), ring:parameters()
  check(#pf == #pr and #pr > 0, "parameter lists")
  for i = 1, #pr do
    local g = D.all_reduce(pr[i].grad:clone(), "sum")
    local d = (g - pf[i].grad):abs():max():item()
    check(d < 1e-4, ("swapped model (causal %s): param %d grad differs by %g"):format(causal, i, d))
  end
end
print(("ring trains a swapped model on rank %d"):format(rank))

-- the fused blocks (flash_attention_lse / flash_attention_backward) against
-- the materialised ones (RingAttention.math_blocks), forward and backward
for n, c in ipairs(cases) do
  as.manual_seed(120 + n)
  local sh = function(x) return R.shard(x, 3, c.causal) end
  local q, k, v = sh(as.randn(c.B, c.H, c.L, c.Dh)), sh(as.randn(c.B, c.Hkv, c.L, c.Dh)), sh(as.randn(c.B, c.Hkv, c.L, c.Dh))
  local G = sh(as.randn(c.B, c.H, c.L, c.Dh))
  local res = {}
  for _, math_blocks in ipairs({ false, true }) do
    R.math_blocks = math_blocks
    local o, lse = R.attention(q, k, v, { causal = c.causal })
    res[#res + 1] = { o, lse, R.attention_backward(q, k, v, o, lse, G, { causal = c.causal }) }
  end
  R.math_blocks = nil
  for i, name in ipairs({ "out", "lse", "dq", "dk", "dv" }) do
    local d = (res[1][i] - res[2][i]):abs():max():item()
    check(d < 1e-4, ("case %d: fused and math blocks' %s differ by %g"):format(n, name, d))
  end
end
print(("ring fused blocks = math blocks on rank %d"):format(rank))
