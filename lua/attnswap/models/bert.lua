-- BERT: HF transformers' BertModel (Devlin et al. 2019) with HF's parameter
-- names — embeddings (word, position, token type) with LayerNorm, post-norm
-- encoder layers, pooler — and its padding mask.  Each layer's attention
-- core (encoder.layer.N.attention.self.core) is swappable.
local as = require "attnswap"
local common = require "attnswap.models.common"
local nn = as.nn

local DEFAULTS = {
  vocab_size = 30522, hidden_size = 768, num_hidden_layers = 12, num_attention_heads = 12,
  intermediate_size = 3072, hidden_act = "gelu", max_position_embeddings = 512, type_vocab_size = 2,
  layer_norm_eps = 1e-12, add_pooling_layer = true, attention = "scaled_dot_product", attention_opts = false,
  hidden_dropout_prob = 0.1, attention_probs_dropout_prob = 0.1,
}
local IGNORED = {}
for _, k in ipairs { "architectures", "model_type", "initializer_range", "pad_token_id", "position_embedding_type", "torch_dtype", "dtype", "transformers_version",
  "use_cache", "classifier_dropout", "gradient_checkpointing", "_name_or_path", "is_decoder",
  "add_cross_attention", "tie_word_embeddings" } do
  IGNORED[k] = false
end

local BertEmbeddings = nn.class("BertEmbeddings")

function BertEmbeddings:init(c)
  self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
  self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
  self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
  self.LayerNorm = nn.LayerNorm(c.hidden_size, c.layer_norm_eps)
  self.dropout = nn.Dropout(c.hidden_dropout_prob)
end

function BertEmbeddings:forward(ids, token_type_ids)
  local L = ids:size(2)
  token_type_ids = token_type_ids or as.zeros({ ids:size(1), L }, "int64"):to(ids:device())
  local x = self.word_embeddings(ids) + self.position_embeddings(as.arange(L):to(ids:device())) + self.token_type_embeddings(token_type_ids)
  return self.dropout(self.LayerNorm(x))
end

local BertSelfAttention = nn.class("BertSelfAttention")

function BertSelfAttention:init(c)
  self.query = nn.Linear(c.hidden_size, c.hidden_size)
  self.key = nn.Linear(c.hidden_size, c.hidden_size)
  self.value = nn.Linear(c.hidden_size, c.hidden_size)
  local opts = {}
  for k, v in pairs(c.attention_opts or {}) do opts[k] = v end
  if opts.dropout == nil and c.attention_probs_dropout_prob > 0 then opts.dropout = c.attention_probs_dropout_prob end
  self.core = as.attention.new(c.attention, opts)
  self.num_heads = c.num_attention_heads
  self.head_dim = c.hidden_size // c.num_attention_heads -- read by swap_attention (a core's shape_options)
end

-- x (B, L, E), keep (B, 1, 1, L) bool or nil -> (B, L, E)
function BertSelfAttention:forward(x, keep)
  local B, L, E = x:size(1), x:size(2), x:size(3)
  local H = self.num_heads
  local function heads(t) return t:reshape(B, L, H, E // H):permute(1, 3, 2, 4) end
  local o = self.core(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), keep)
  return o:permute(1, 3, 2, 4):reshape(B, L, E)
end

-- dense + LayerNorm(residual): BertSelfOutput and BertOutput have the same shape
local function residual_block(name)
  local C = nn.class(name)
  function C:init(c, inner)
    self.dense = nn.Linear(inner, c.hidden_size)
    self.LayerNorm = nn.LayerNorm(c.hidden_size, c.layer_norm_eps)
    self.dropout = nn.Dropout(c.hidden_dropout_prob)
  end
  function C:forward(h, input) return self.LayerNorm(self.dropout(self.dense(h)) + input) end
  return C
end
local BertSelfOutput, BertOutput = residual_block("BertSelfOutput"), residual_block("BertOutput")

local BertAttention = nn.class("BertAttention")
function BertAttention:init(c)
  self.self = BertSelfAttention(c)
  self.output = BertSelfOutput(c, c.hidden_size)
end
function BertAttention:forward(x, keep) return self.output(self.self(x, keep), x) end

local BertIntermediate = nn.class("BertIntermediate")
function BertIntermediate:init(c)
  self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
  self.act = nn.GELU(c.hidden_act == "gelu_new" and "tanh" or "none")
end
function BertIntermediate:forward(x) return self.act(self.dense(x)) end

local BertLayer = nn.class("BertLayer")
function BertLayer:init(c)
  self.attention = BertAttention(c)
  self.intermediate = BertIntermediate(c)
  self.output = BertOutput(c, c.intermediate_size)
end
function BertLayer:forward(x, keep)
  local a = self.attention(x, keep)
  return self.output(self.intermediate(a), a)
end

local BertEncoder = nn.class("BertEncoder")
function BertEncoder:init(c)
  local layers = {}
  for i = 1, c.num_hidden_layers do layers[i] = BertLayer(c) end
  self.layer = nn.ModuleList(layers)
end
function BertEncoder:forward(x, keep)
  for _, l in ipairs(self.layer:children()) do x = l(x, keep) end
  return x
end

local BertPooler = nn.class("BertPooler")
function BertPooler:init(c) self.dense = nn.Linear(c.hidden_size, c.hidden_size) end
function BertPooler:forward(h) return self.dense(h:select(2, 1)):tanh() end

local BertModel = nn.class("BertModel")

function BertModel:init(c)
  self.config = c
  self.embeddings = BertEmbeddings(c)
  self.encoder = BertEncoder(c)
  if c.add_pooling_layer then self.pooler = BertPooler(c) end
end

--- forward(input_ids (B, L) [, {attention_mask = (B, L) 1/0, token_type_ids = (B, L)}])
--- -> last hidden state (B, L, hidden), pooled output (B, hidden) or nil
function BertModel:forward(ids, opts)
  if not as.is_tensor(ids) or ids:dim() ~= 2 then
    error("BertModel: expected input_ids as an int64 tensor (B, L), got " ..
      (as.is_tensor(ids) and tostring(ids:shape()) or type(ids)), 2)
  end
  opts = opts or {}
  local keep
  if opts.attention_mask then
    keep = opts.attention_mask:ne(0):reshape(ids:size(1), 1, 1, ids:size(2))
  end
  local h = self.encoder(self.embeddings(ids, opts.token_type_ids), keep)
  return h, self.pooler and self.pooler(h) or nil
end

local bert = {}

function bert.new(config) return BertModel(common.config("bert", config, DEFAULTS, IGNORED)) end

-- HF checkpoints may carry a "bert." prefix (BertFor* heads) and position_ids
-- buffers; older ones (bert-base-uncased) name LayerNorm's weight and bias
-- gamma and beta, as transformers still accepts.
function bert.load(model, path)
  local sd = common.rename(as.load(path), { { "^bert%.", "" }, { "LayerNorm%.gamma$", "LayerNorm.weight" },
    { "LayerNorm%.beta$", "LayerNorm.bias" } })
  sd = common.filter(sd, function(k) return k:match("position_ids$") or k:match("^cls%.") end)
  model:load_state_dict(sd)
  return model
end

--- bert.from_pretrained(path [, config]): a save_pretrained folder, a
--- .safetensors file, or a hub name from the local Hugging Face cache.
function bert.from_pretrained(path, config)
  local weights, c = common.pretrained("bert", path, config, DEFAULTS)
  return bert.load(bert.new(c), weights):eval()
end

bert.Class = BertModel
return setmetatable(bert, { __call = function(_, config) return bert.new(config) end })
