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

local f = io.open(opts.text, "rb")
if not f then
  io.stderr:write("train_tiny: cannot read " .. opts.text .. " (install base-files, or pass --text FILE)\n")
  os.exit(1)
end
local text = f:read("a")
f:close()

-- the alphabet and the ids (0-based, as token ids are)
local chars, id_of = {}, {}
for c in text:gmatch(".") do
  if not id_of[c] then chars[#chars + 1] = c; id_of[c] = true end
end
table.sort(chars)
for k, c in ipairs(chars) do id_of[c] = k - 1 end
local V, n = #chars, #text
local ids = {}
for k = 1, n do ids[k] = id_of[text:sub(k, k)] end
local split = math.floor(n * 0.9) -- the last 10% is held out

-- the unigram entropy of the training text: what a model without context gets
local counts = {}
for k = 1, split do counts[ids[k]] = (counts[ids[k]] or 0) + 1 end
local unigram = 0
for _, c in pairs(counts) do unigram = unigram - c / split * math.log(c / split) end

as.manual_seed(opts.seed)
local L, B, dim = 64, 16, 64
local function batch(lo, hi)
  local x, y = {}, {}
  for b = 1, B do
    local s = lo + math.floor(as.rand(1):item() * (hi - lo - L - 1))
    x[b], y[b] = {}, {}
    for t = 1, L do x[b][t], y[b][t] = ids[s + t], ids[s + t + 1] end
  end
  return as.tensor(x, "int64"), as.tensor(y, "int64")
end

local CharModel = nn.class("CharModel")
function CharModel:init()
  self.tok = nn.Embedding(V, dim)
  self.pos = nn.Embedding(L, dim)
  self.blocks = nn.Sequential(
    nn.TransformerBlock { dim = dim, num_heads = 4, core_opts = { causal = true } },
    nn.TransformerBlock { dim = dim, num_heads = 4, core_opts = { causal = true } })
  self.norm = nn.LayerNorm(dim)
  self.head = nn.Linear(dim, V)
  self.positions = as.arange(0, L):long()
end
function CharModel:forward(x) -- (B, L) ids -> (B, L, V) logits
  local h = self.tok(x) + self.pos(self.positions)
  return self.head(self.norm(self.blocks(h)))
end

local model = CharModel():requires_grad_()
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
