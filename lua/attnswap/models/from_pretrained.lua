-- as.models.from_pretrained(path [, config]): one entry for every family.
-- Reads the checkpoint's config.json (a folder, or a hub name resolved
-- through the local Hugging Face cache as models/hub.lua does) and hands the
-- path to the family's own from_pretrained: HF's model_type, else its
-- architectures list, else timm's keys (a ViT).  The tokenizer.json beside
-- the weights, when there is one, comes back too (as.tokenizer).
local common = require "attnswap.models.common"

local KNOWN = { "bert", "gpt2", "llama", "mistral", "qwen2", "qwen3", "vit" }

local MODEL_TYPES = { bert = "bert", gpt2 = "gpt2", llama = "llama", mistral = "mistral", qwen2 = "qwen2",
  qwen3 = "qwen3", vit = "vit" }

local ARCHITECTURES = {
  LlamaForCausalLM = "llama", MistralForCausalLM = "mistral", Qwen2ForCausalLM = "qwen2",
  Qwen3ForCausalLM = "qwen3", GPT2LMHeadModel = "gpt2", GPT2Model = "gpt2", BertModel = "bert",
}

local function known() return table.concat(KNOWN, ", ") end

-- The family of a parsed config.json, or nil and what it says instead.
local function family_of(cfg)
  if cfg.model_type ~= nil then
    local f = MODEL_TYPES[cfg.model_type]
    if f then return f end
    return nil, string.format("model_type '%s'", tostring(cfg.model_type))
  end
  if type(cfg.architectures) == "table" then
    for _, a in ipairs(cfg.architectures) do
      if ARCHITECTURES[a] then return ARCHITECTURES[a] end
      if type(a) == "string" and a:match("^Bert") then return "bert" end
    end
    local names = {}
    for i, a in ipairs(cfg.architectures) do names[i] = tostring(a) end
    return nil, "architectures [" .. table.concat(names, ", ") .. "]"
  end
  -- timm: {"architecture": "vit_...", "model_args": {...}} or its constructor's keys
  if type(cfg.architecture) == "string" then
    if cfg.architecture:match("^vit_") then return "vit" end
    return nil, string.format("timm architecture '%s'", cfg.architecture)
  end
  if cfg.patch_size ~= nil and cfg.embed_dim ~= nil then return "vit" end
  return nil, "no model_type, architectures or timm architecture"
end

local M = {}
M.KNOWN = KNOWN
M.family_of = family_of

-- The tokenizer.json in the folder of the weights: a tokenizer, or nil and
-- why not (nil, nil when there is none: a tokenizer that cannot be read does
-- not stop the model from loading).
local function tokenizer_beside(weights)
  local dir = weights:match("^(.*)/[^/]*$") or "."
  local file = dir .. "/tokenizer.json"
  local f = io.open(file, "rb")
  if not f then return nil end
  f:close()
  local ok, tok = pcall(require("attnswap.tokenizers").from_pretrained, file)
  if not ok then return nil, tostring(tok) end
  return tok
end

--- from_pretrained(path [, config]) -> model, family name, tokenizer (the
--- tokenizer.json beside the weights through as.tokenizer, or nil), and when
--- that file is there but cannot be read, why
function M.from_pretrained(path, config)
  if config ~= nil and type(config) ~= "table" then
    error("bad argument #2 to 'models.from_pretrained' (config table expected, got " .. type(config) .. ")", 2)
  end
  local where = { revision = config and config.revision, cache_dir = config and config.cache_dir, sharded = true }
  local weights, cfg = common.locate("models", path, where)
  if not cfg then
    error(string.format("models.from_pretrained: '%s' has no config.json to tell the model family; " ..
      "call the family's own loader (as.models.<family>.from_pretrained(path, config); families: %s)",
      tostring(path), known()), 2)
  end
  local family, what = family_of(cfg)
  if not family then
    error(string.format("models.from_pretrained: '%s': %s is not a family attnswap knows (known: %s)", tostring(path),
      what, known()), 2)
  end
  local model = require("attnswap.models." .. family).from_pretrained(path, config)
  return model, family, tokenizer_beside(weights)
end

return setmetatable(M, { __call = function(_, ...) return M.from_pretrained(...) end })
