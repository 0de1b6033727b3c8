-- Generates from a causal LM checkpoint (Llama, Mistral, Qwen2, Qwen3, GPT-2),
-- streaming each token id as it comes, optionally with another attention:
--
--   attnswap-run examples/generate.lua --model DIR --prompt-ids 1,2,3
--   attnswap-run examples/generate.lua --model DIR --prompt-ids 1,2,3 --attention flash_attention
--   attnswap-run examples/generate.lua -- --model DIR --prompt-ids 1,2,3 --swap local_attention:window_size=64
--
-- (attnswap-run reads a --swap after the script itself, for scripts that
-- return a model and inputs; after `--` it reaches this script, or use
-- --attention, the same option by a name attnswap-run leaves alone.)
-- Options: --max-new-tokens N (20), --sample, --temperature T, --top-k K,
-- --top-p P, --seed S, --dtype float32|bfloat16|float16, --no-cache,
-- --prompt TEXT (encoded by the tokenizer.json beside the model, or --tokenizer PATH;
-- the new text is then streamed instead of ids).
-- DIR is a save_pretrained folder or a hub name in the local Hugging Face cache.
local as = require "attnswap"

local function usage(msg)
  io.stderr:write("generate.lua: " .. msg .. "\n" ..
    "usage: attnswap-run examples/generate.lua --model DIR --prompt-ids 1,2,3 [--attention NAME[:key=value,...]]\n" ..
    "       [--max-new-tokens N] [--sample] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n" ..
    "       [--dtype float32|bfloat16|float16] [--no-cache] [--prompt TEXT [--tokenizer PATH]]\n")
  os.exit(2)
end

local FLAGS = { sample = true, ["no-cache"] = true }
local opts, i = {}, 1
if arg[1] == "--" then i = 2 end
while arg[i] do
  local a = arg[i]
  local key, value = a:match("^%-%-([%w%-]+)=(.*)$")
  key = key or a:match("^%-%-([%w%-]+)$")
  if not key then usage("unexpected argument '" .. a .. "'") end
  if FLAGS[key] then
    opts[key] = true
  else
    if value == nil then
      i = i + 1
      value = arg[i]
      if value == nil then usage("--" .. key .. " needs a value") end
    end
    opts[key] = value
  end
  i = i + 1
end
local KNOWN = { model = 1, ["prompt-ids"] = 1, prompt = 1, tokenizer = 1, swap = 1, attention = 1, ["max-new-tokens"] = 1, sample = 1,
  temperature = 1, ["top-k"] = 1, ["top-p"] = 1, seed = 1, dtype = 1, ["no-cache"] = 1 }
for k in pairs(opts) do if not KNOWN[k] then usage("unknown option --" .. k) end end
if not opts.model then usage("--model DIR is required") end

local function number(key, integer)
  local v = opts[key]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or (integer and math.type(n) ~= "integer") then
    usage(string.format("--%s should be %s, got '%s'", key, integer and "an integer" or "a number", v))
  end
  return n
end

local model, family = as.models.from_pretrained(opts.model, { dtype = opts.dtype })
if not model.generate then usage(string.format("%s is a %s model, which does not generate text", opts.model, family)) end
io.stderr:write(string.format("loaded %s (%s), %d parameters\n", opts.model, family, model:num_parameters()))

local swap = opts.attention or opts.swap
if swap then
  local name, rest = swap:match("^([^:]+):?(.*)$")
  local core_opts = {}
  for kv in rest:gmatch("[^,]+") do
    local k, v = kv:match("^([%w_]+)=(.*)$")
    if not k then usage("attention options are key=value, got '" .. kv .. "'") end
    core_opts[k] = tonumber(v) or (v == "true" and true) or (v ~= "false" and v) or false
  end
  local _, report = as.swap_attention(model, as.attention.is_core, name, core_opts)
  io.stderr:write(tostring(report) .. "\n")
end

local tokenizer
local ids = {}
if opts.prompt then
  if not as.tokenizer then usage("--prompt needs a tokenizer, which this build does not have; give --prompt-ids") end
  local ok, tok = pcall(as.tokenizer.from_pretrained, opts.tokenizer or opts.model)
  if not ok then usage(tostring(tok) .. " (give --tokenizer PATH, or --prompt-ids)") end
  tokenizer = tok
  ids = tokenizer:encode(opts.prompt)
elseif opts["prompt-ids"] then
  for v in opts["prompt-ids"]:gmatch("[^,%s]+") do
    local n = math.tointeger(tonumber(v))
    if not n then usage("--prompt-ids should be integers separated by commas, got '" .. v .. "'") end
    ids[#ids + 1] = n
  end
end
if #ids == 0 then usage("give --prompt-ids 1,2,3 or --prompt TEXT") end

-- With a tokenizer the text is streamed: the new ids are decoded together and
-- what they add is printed once it does not end inside a UTF-8 character.
local new_ids, shown = {}, 0
local function stream(id)
  if not tokenizer then return io.write(" ", tostring(id)) end
  new_ids[#new_ids + 1] = id
  local text = tokenizer:decode(new_ids, { skip_special_tokens = true })
  if text:sub(-3) ~= "\xEF\xBF\xBD" then
    io.write(text:sub(shown + 1))
    shown = #text
  end
end

if tokenizer then io.write(opts.prompt) else io.write(table.concat(ids, " "), " |") end
io.flush()
local t0 = as.clock()
local n = 0
local out = model:generate({ ids }, {
  max_new_tokens = number("max-new-tokens", true) or 20, use_cache = not opts["no-cache"], do_sample = opts.sample,
  temperature = number("temperature"), top_k = number("top-k", true), top_p = number("top-p"),
  seed = number("seed", true),
  callback = function(tokens)
    n = n + 1
    stream(tokens[1])
    io.flush()
  end,
})
local dt = as.clock() - t0
if tokenizer then io.write(tokenizer:decode(new_ids, { skip_special_tokens = true }):sub(shown + 1)) end
io.write("\n")
io.flush()
io.stderr:write(string.format("%d new tokens in %.3f s (%.1f tokens/s)\n", n, dt, n / math.max(dt, 1e-9)))
return out
