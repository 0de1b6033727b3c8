-- Trains a small character-level transformer on a text that Debian installs
-- (a license under /usr/share/common-licenses, read at run time), with
-- AdamW, a warmup + cosine schedule and gradient clipping; prints progress,
-- the held-out loss against the unigram entropy, and writes the loss curve
-- as SVG and the weights as safetensors.  Checkpoints: --save FILE --every N
-- writes model, optimizer, schedule and generator every N steps; --resume
-- FILE continues from one, giving the same losses bit for bit on the CPU;
-- --log FILE writes each step's loss (17 digits) as "step loss" lines.
--   attnswap-run examples/train_tiny.lua [--steps N] [--text FILE] [--out DIR] [--seed N]
--     [--save FILE --every N] [--resume FILE] [--log FILE]
local as = require "attnswap"
local nn, F = as.nn, as.F

local USAGE = "usage: attnswap-run examples/train_tiny.lua [--steps N] [--text FILE] [--out DIR] [--seed N]\n" ..
  "  [--save FILE --every N] [--resume FILE] [--log FILE]\n"
local opts = { steps = 300, text = "/usr/share/common-licenses/GPL-3", out = nil, seed = 0, every = 0 }
local optional = { out = true, save = true, resume = true, log = true }
local i = 1
while i <= #arg do
  local k = arg[i]:match("^%-%-(.+)$")
  if not k or opts[k] == nil and not optional[k] or arg[i + 1] == nil then
    io.stderr:write(USAGE)
    os.exit(2)
  end
  opts[k] = tonumber(arg[i + 1]) or arg[i + 1]
  i = i + 2
end

local charlm = as.models.charlm -- the model and data helpers, shared with bench/recover.lua
local data = charlm.load_text(opts.text)
if not data then
  io.stderr:write("train_tiny: cannot read " .. opts.text .. " (install base-files, or pass --text FILE)\n")
  os.exit(1)
end
local V, n, split, unigram = data.V, data.n, data.split, data.unigram

as.manual_seed(opts.seed)
local L, B, dim = 64, 16, 64
local batch = charlm.batcher(data, B, L)

local model = charlm.new({ V = V, L = L, dim = dim, num_heads = 4, layers = 2 }):requires_grad_()
local opt = as.optim.AdamW(model:parameters(), { lr = 3e-3, weight_decay = 0.01 })
local sched = as.optim.lr_scheduler.LinearWarmupCosine(opt, { warmup_steps = math.min(20, opts.steps), total_steps = opts.steps })

local function loss_of(x, y)
  return F.cross_entropy(model(x):reshape(B * L, V), y:reshape(B * L))
end

local function held_out()
  local _ <close> = as.no_grad()
  local total = 0
  for _ = 1, 4 do total = total + loss_of(batch(split, n)):item() end
  return total / 4
end

print(string.format("train_tiny: %d characters of %s, %d symbols, unigram entropy %.3f nats; %d parameters",
  n, opts.text, V, unigram, model:num_parameters()))
local first = 1
if opts.resume then
  local got = as.load_checkpoint(opts.resume, { model = model, optimizer = opt, scheduler = sched })
  first = got.step + 1
  print(string.format("resumed from %s at step %d", opts.resume, got.step))
end
local log = opts.log and assert(io.open(opts.log, "w"))
local curve, t0 = {}, as.clock()
for step = first, opts.steps do
  local loss = loss_of(batch(0, split))
  opt:zero_grad()
  loss:backward()
  as.nn.utils.clip_grad_norm_(model:parameters(), 1.0)
  opt:step()
  sched:step()
  curve[#curve + 1] = loss:item()
  if log then log:write(string.format("%d %.17g\n", step, curve[#curve])) end
  if opts.save and opts.every > 0 and step % opts.every == 0 then
    as.save_checkpoint(opts.save, { model = model, optimizer = opt, scheduler = sched, step = step })
  end
  local every = math.max(1, opts.steps // 10)
  if step % every == 0 or step == opts.steps then
    local elapsed = as.clock() - t0
    local tps = (step - first + 1) * B * L / elapsed
    io.write(string.format("\rstep %4d/%d  loss %.3f  %6.0f tokens/s  eta %4.0f s", step, opts.steps, curve[#curve],
      tps, (opts.steps - step) * B * L / tps))
    io.flush()
  end
end
print()
if log then log:close() end
local final = held_out()
print(string.format("held-out loss %.3f nats against the unigram entropy %.3f (%s)", final, unigram,
  final < unigram and "learned context" or "no better than unigram"))

-- the loss curve as SVG, and the weights
local out = opts.out or os.getenv("TMPDIR") or "/tmp"
local svg = out .. "/train_tiny_loss.svg"
local lo, hi = math.huge, -math.huge
for _, v in ipairs(curve) do lo, hi = math.min(lo, v), math.max(hi, v) end
local pts = {}
for k, v in ipairs(curve) do
  pts[k] = string.format("%.1f,%.1f", 40 + 560 * (k - 1) / math.max(#curve - 1, 1), 20 + 260 * (hi - v) / math.max(hi - lo, 1e-9))
end
local g = assert(io.open(svg, "w"))
g:write(string.format([[<svg xmlns="http://www.w3.org/2000/svg" width="640" height="320">
<rect width="640" height="320" fill="white"/><text x="40" y="14" font-size="12">train_tiny: training loss per step (%.2f to %.2f nats); unigram %.2f</text>
<polyline fill="none" stroke="steelblue" stroke-width="1.5" points="%s"/>
<line x1="40" y1="%.1f" x2="600" y2="%.1f" stroke="gray" stroke-dasharray="4"/></svg>
]], lo, hi, unigram, table.concat(pts, " "), 20 + 260 * (hi - unigram) / math.max(hi - lo, 1e-9),
  20 + 260 * (hi - unigram) / math.max(hi - lo, 1e-9)))
g:close()
local weights = out .. "/train_tiny.safetensors"
as.save(weights, model:state_dict())
print("wrote " .. svg .. " and " .. weights)
return final, unigram
