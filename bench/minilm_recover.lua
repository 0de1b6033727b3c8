-- Opt-in, real weights (issue 18): all-MiniLM-L6-v2 swapped to linear,
-- hedgehog and lolcats attention, distilled with as.distill (output =
-- "hidden": MSE on the last hidden states, the defaults otherwise) on
-- sentences of a text that Debian installs, and the cosine similarity of
-- the held-out sentences' embeddings to the original's before and after.
--   scripts/fetch-minilm.sh /tmp/models        # the download; never committed
--   attnswap-run bench/minilm_recover.lua [--model DIR] [--text FILE] [--steps N] [--batch N]
--     [--held N] [--window N] [--only NAME]
-- --window sets lolcats' window_size (default 64 keys: every sentence here fits,
-- so lolcats is then the exact softmax).
-- Sentences: the text split at ". ", at most 32 words each; the last --held
-- (16) are held out, the others cycled in batches of --batch (8).
local as = require "attnswap"
local WordPiece = require "attnswap.models.wordpiece"

local opts = { model = "models/all-MiniLM-L6-v2", text = "/usr/share/common-licenses/GPL-3", steps = 50, batch = 8,
  held = 16, seed = 0, window = 64, only = nil }
local i = 1
while i <= #arg do
  local k = arg[i]:match("^%-%-(.+)$")
  if not k or opts[k] == nil and k ~= "only" or arg[i + 1] == nil then
    io.stderr:write("usage: attnswap-run bench/minilm_recover.lua [--model DIR] [--text FILE] [--steps N] [--batch N] " ..
      "[--held N] [--window N] [--seed N] [--only NAME]\n")
    os.exit(2)
  end
  opts[k] = math.tointeger(tonumber(arg[i + 1])) or arg[i + 1]
  i = i + 2
end
if not io.open(opts.model .. "/model.safetensors", "rb") then
  io.stderr:write("no model in " .. opts.model .. "; run scripts/fetch-minilm.sh first (opt-in download)\n")
  os.exit(77) -- skipped, as ctest counts it
end

-- sentences of the text: whitespace folded, split at ". ", 4 to 32 words
local text = assert(io.open(opts.text, "rb")):read("a"):gsub("%s+", " ")
local sentences = {}
for s in (text .. " "):gmatch("(.-%.) ") do
  local words = {}
  for w in s:gmatch("%S+") do words[#words + 1] = w end
  if #words >= 4 then
    sentences[#sentences + 1] = table.concat(words, " ", 1, math.min(#words, 32))
  end
end
local tok = WordPiece.load(opts.model .. "/tokenizer.json")
local function batch_of(list) return { tok:batch(list) } end -- {ids, mask}: model(ids, mask) below
local n_train = #sentences - opts.held
assert(n_train >= opts.batch, "too few sentences in " .. opts.text)
local train, held = {}, {}
for s = 1, n_train - opts.batch + 1, opts.batch do
  train[#train + 1] = batch_of(table.move(sentences, s, s + opts.batch - 1, 1, {}))
end
for s = n_train + 1, #sentences, opts.batch do
  held[#held + 1] = batch_of(table.move(sentences, s, math.min(s + opts.batch - 1, #sentences), 1, {}))
end
local function forward(model, b) return model(b[1], { attention_mask = b[2] }) end

-- sentence-transformers' pipeline: mean over real tokens, then L2-normalise
local function embed(model, b)
  local h = forward(model, b)
  local m = b[2]:float():unsqueeze(3)
  local e = (h * m):sum(2) / m:sum(2)
  return e / (e * e):sum(2, true):sqrt()
end
local function cosine(student, teacher)
  local _ <close> = as.no_grad()
  local total, n = 0, 0
  for _, b in ipairs(held) do
    local c = (embed(student, b) * embed(teacher, b)):sum(2)
    total, n = total + c:sum():item(), n + c:size(1)
  end
  return total / n
end

local teacher = as.models.bert.from_pretrained(opts.model):eval()
print(string.format("all-MiniLM-L6-v2; %d sentences of %s: %d training batches of %d, %d held out; %d steps per stage",
  #sentences, opts.text, #train, opts.batch, #sentences - n_train, opts.steps))
print(string.format("%-20s %14s %14s %10s", "attention", "cosine before", "cosine after", "distil s"))
for _, name in ipairs { "linear_attention", "hedgehog_attention", "lolcats_attention" } do
  if not opts.only or opts.only == name then
    as.manual_seed(opts.seed)
    local student = teacher:clone()
    as.swap_attention(student, "scaled_dot_product", name,
      name == "lolcats_attention" and { window_size = opts.window } or nil)
    local before = cosine(student, teacher)
    local ok, hist = pcall(as.distill, student, teacher, train,
      { steps = opts.steps, output = "hidden", forward = forward, log = false, progress = false })
    if ok then
      print(string.format("%-20s %14.4f %14.4f %10.1f", name, before, cosine(student, teacher), hist.seconds))
    else
      print(string.format("%-20s %14.4f failed: %s", name, before, tostring(hist)))
    end
    io.stdout:flush()
  end
end
