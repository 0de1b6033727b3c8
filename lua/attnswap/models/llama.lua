-- The Llama family: HF transformers' LlamaForCausalLM (Touvron et al. 2023)
-- and the models that share its shape — MistralForCausalLM (sliding-window
-- attention), Qwen2ForCausalLM (q/k/v biases), Qwen3ForCausalLM (per-head
-- q/k RMSNorm) — with HF's parameter names, so a save_pretrained folder loads
-- as it is.  Pre-norm decoder layers: RMSNorm, grouped-query attention with
-- rotary positions, RMSNorm, SwiGLU MLP (down(silu(gate(x)) * up(x))).
--
-- RoPE is applied in LlamaAttention, outside the swappable core: the core
-- (model.layers.N.self_attn.core) gets rotated q (B, H, L, D) and k, v
-- (B, Hkv, Lk, D), causal, so any registered implementation swaps in.
-- Sliding-window layers (Mistral, Qwen with use_sliding_window) get a causal
-- local_attention core of the same window instead of scaled_dot_product.
local as = require "attnswap"
local common = require "attnswap.models.common"
local rope = require "attnswap.models.rope"
local generate = require "attnswap.models.generate"
local nn = as.nn

local FAMILIES = { llama = "LlamaForCausalLM", mistral = "MistralForCausalLM", qwen2 = "Qwen2ForCausalLM",
  qwen3 = "Qwen3ForCausalLM" }

-- HF's config names; false: optional, any type.
local DEFAULTS = {
  model_type = "llama", vocab_size = 32000, hidden_size = 4096, intermediate_size = 11008, num_hidden_layers = 32,
  num_attention_heads = 32, num_key_value_heads = false, head_dim = false, hidden_act = "silu",
  max_position_embeddings = 2048, rms_norm_eps = 1e-6, tie_word_embeddings = false, rope_theta = false,
  rope_scaling = false, rope_parameters = false, partial_rotary_factor = false, attention_bias = false,
  mlp_bias = false, sliding_window = false, use_sliding_window = false, max_window_layers = false,
  layer_types = false, bos_token_id = false, eos_token_id = false, pad_token_id = false,
  attention = "scaled_dot_product", attention_opts = false,
}
-- config.json keys HF writes that do not change the forward (ignored)
local IGNORED = {}
for _, k in ipairs { "architectures", "attention_dropout", "initializer_range", "pretraining_tp", "use_cache",
  "torch_dtype", "transformers_version", "_name_or_path", "output_attentions", "output_hidden_states",
  "return_dict", "bos_token", "eos_token", "use_return_dict", "mlp_only_layers" } do
  IGNORED[k] = false
end

local function is_int(v) return math.type(v) == "integer" end

-- Checks a filled config and derives what the modules need; errors name the key.
local function resolve(name, c)
  local function bad(fmt, ...) error(string.format("%s: " .. fmt, name, ...), 0) end
  if not FAMILIES[c.model_type] then
    bad("model_type '%s' is not a Llama-family model (known here: llama, mistral, qwen2, qwen3)", tostring(c.model_type))
  end
  for _, k in ipairs { "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "max_position_embeddings" } do
    if not is_int(c[k]) or c[k] < 1 then bad("'%s' should be a positive integer, got %s", k, tostring(c[k])) end
  end
  local H = c.num_attention_heads
  local Hkv = c.num_key_value_heads or H
  if not is_int(Hkv) or Hkv < 1 then bad("'num_key_value_heads' should be a positive integer, got %s", tostring(Hkv)) end
  if H % Hkv ~= 0 then
    bad("num_attention_heads = %d is not a multiple of num_key_value_heads = %d (grouped-query attention shares " ..
      "each key/value head among H / Hkv query heads)", H, Hkv)
  end
  local D = c.head_dim
  if not D then
    if c.hidden_size % H ~= 0 then
      bad("hidden_size = %d is not a multiple of num_attention_heads = %d; give head_dim", c.hidden_size, H)
    end
    D = c.hidden_size // H
  end
  if not is_int(D) or D < 2 or D % 2 ~= 0 then
    bad("'head_dim' should be an even positive integer (RoPE rotates pairs), got %s", tostring(D))
  end
  if c.hidden_act ~= "silu" and c.hidden_act ~= "swish" then
    bad("hidden_act '%s' is not supported (Llama-family MLPs use 'silu')", tostring(c.hidden_act))
  end
  if type(c.rms_norm_eps) ~= "number" or not (c.rms_norm_eps > 0) then
    bad("'rms_norm_eps' should be a number > 0, got %s", tostring(c.rms_norm_eps))
  end
  -- which layers slide: Mistral every layer when sliding_window is set; Qwen
  -- by layer_types (5.x) or use_sliding_window + max_window_layers (4.x)
  local window = c.sliding_window or nil
  if window ~= nil and (not is_int(window) or window < 2) then
    bad("'sliding_window' should be an integer >= 2 (the keys each query sees, itself included), got %s",
      tostring(window))
  end
  local types = {}
  if c.layer_types then
    if type(c.layer_types) ~= "table" or #c.layer_types ~= c.num_hidden_layers then
      bad("'layer_types' should list one type per layer (%d), got %s", c.num_hidden_layers,
        type(c.layer_types) == "table" and (#c.layer_types .. " entries") or type(c.layer_types))
    end
    for i, t in ipairs(c.layer_types) do
      if t ~= "full_attention" and t ~= "sliding_attention" then
        bad("layer_types[%d] = '%s' is not supported (full_attention, sliding_attention)", i, tostring(t))
      end
      types[i] = t == "sliding_attention" and window ~= nil
    end
  else
    for i = 1, c.num_hidden_layers do
      if c.model_type == "mistral" then
        types[i] = window ~= nil
      elseif c.model_type == "qwen2" or c.model_type == "qwen3" then
        types[i] = window ~= nil and c.use_sliding_window == true and (i - 1) >= (c.max_window_layers or 0)
      else
        types[i] = false
      end
    end
  end
  local r = {
    H = H, Hkv = Hkv, D = D, window = window, sliding = types,
    qkv_bias = c.model_type == "qwen2" or c.attention_bias == true,
    o_bias = c.attention_bias == true and c.model_type ~= "qwen2",
    qk_norm = c.model_type == "qwen3",
    rope = rope.params(c, name),
  }
  return r
end

local LlamaRMSNorm = function(dim, eps) return nn.RMSNorm(dim, eps) end

local LlamaAttention = nn.class("LlamaAttention")

function LlamaAttention:init(c, r, sliding)
  local H, Hkv, D, E = r.H, r.Hkv, r.D, c.hidden_size
  self.q_proj = nn.Linear(E, H * D, { bias = r.qkv_bias })
  self.k_proj = nn.Linear(E, Hkv * D, { bias = r.qkv_bias })
  self.v_proj = nn.Linear(E, Hkv * D, { bias = r.qkv_bias })
  self.o_proj = nn.Linear(H * D, E, { bias = r.o_bias })
  if r.qk_norm then
    self.q_norm = LlamaRMSNorm(D, c.rms_norm_eps)
    self.k_norm = LlamaRMSNorm(D, c.rms_norm_eps)
  end
  local opts = {}
  for k, v in pairs(c.attention_opts or {}) do opts[k] = v end
  opts.causal = true
  if sliding then
    -- HF's window holds `sliding_window` keys, the query's own included
    opts.window_size = r.window - 1
    self.core = as.attention.new("local_attention", opts)
  else
    self.core = as.attention.new(c.attention, opts)
  end
  self.num_heads, self.num_kv_heads, self.head_dim = H, Hkv, D
end

-- x (B, L, E); cos, sin (B, 1, L, D); past: the core's state (a KV cache,
-- a ring buffer of a window, a recurrent state: attention/incremental.lua)
-- or nil; keep (B, L) bool or nil: the new tokens that are real ->
-- (B, L, E), the state after them (nil without use_cache)
function LlamaAttention:forward(x, cos, sin, past, keep, use_cache)
  local B, L = x:size(1), x:size(2)
  local H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
  local q = self.q_proj(x):reshape(B, L, H, D)
  local k = self.k_proj(x):reshape(B, L, Hkv, D)
  local v = self.v_proj(x):reshape(B, L, Hkv, D):permute(1, 3, 2, 4)
  if self.q_norm then q, k = self.q_norm(q), self.k_norm(k) end
  q = rope.apply(q:permute(1, 3, 2, 4), cos, sin)
  k = rope.apply(k:permute(1, 3, 2, 4), cos, sin)
  local o, present = generate.attend(self.core, q, k, v, past, keep, use_cache)
  o = o:permute(1, 3, 2, 4):reshape(B, L, H * D)
  return self.o_proj(o), present
end

function LlamaAttention:extra_repr()
  return string.format("num_heads=%d, num_kv_heads=%d, head_dim=%d", self.num_heads, self.num_kv_heads, self.head_dim)
end

local LlamaMLP = nn.class("LlamaMLP")

function LlamaMLP:init(c)
  local bias = c.mlp_bias == true
  self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, { bias = bias })
  self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, { bias = bias })
  self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, { bias = bias })
end

function LlamaMLP:forward(x) return self.down_proj(self.gate_proj(x):silu() * self.up_proj(x)) end

local LlamaDecoderLayer = nn.class("LlamaDecoderLayer")

function LlamaDecoderLayer:init(c, r, i)
  self.self_attn = LlamaAttention(c, r, r.sliding[i])
  self.mlp = LlamaMLP(c)
  self.input_layernorm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)
  self.post_attention_layernorm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)
end

function LlamaDecoderLayer:forward(x, cos, sin, past, keep, use_cache)
  local a, present = self.self_attn(self.input_layernorm(x), cos, sin, past, keep, use_cache)
  x = x + a
  return x + self.mlp(self.post_attention_layernorm(x)), present
end

local LlamaModel = nn.class("LlamaModel")

function LlamaModel:init(c, r)
  self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
  local layers = {}
  for i = 1, c.num_hidden_layers do layers[i] = LlamaDecoderLayer(c, r, i) end
  self.layers = nn.ModuleList(layers)
  self.norm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)
  -- not a buffer: HF's rotary_emb.inv_freq is not in checkpoints either
  self.inv_freq, self.attention_scaling = rope.inv_freq(r.rope, r.D)
  self.max_position_embeddings = c.max_position_embeddings
end

-- ids (B, L); opts.past (a cache from an earlier call), opts.attention_mask
-- (B, Lpast + L), opts.position_ids (B, L), opts.use_cache (true) -> hidden
-- (B, L, E), cache (nil when use_cache = false)
function LlamaModel:forward(ids, opts)
  local B, L = ids:size(1), ids:size(2)
  local past = opts.past
  local offset = past and past.length or 0
  local use_cache = opts.use_cache ~= false
  local mask = generate.check_mask("LlamaForCausalLM", opts.attention_mask, B, offset + L, 3)
  local pos = generate.position_ids("LlamaForCausalLM", opts.position_ids, B, L, offset, mask, 3)
  local top = pos:max():item()
  if top >= self.max_position_embeddings then
    error(string.format("LlamaForCausalLM: position %d is past max_position_embeddings = %d (%d cached + %d new tokens)",
      top, self.max_position_embeddings, offset, L), 3)
  end
  local x = self.embed_tokens(ids)
  local cos, sin = rope.cos_sin(self.inv_freq, pos:cpu(), self.attention_scaling)
  cos, sin = cos:to(x:device()):to(x:dtype()), sin:to(x:device()):to(x:dtype())
  local keep = mask and mask:narrow(2, offset + 1, L) or nil
  if keep and generate.all_on(keep) then keep = nil end
  keep = keep and keep:ne(0):to(x:device()) or nil
  local presents = { length = offset + L }
  for i, layer in ipairs(self.layers:children()) do
    x, presents[i] = layer(x, cos, sin, generate.layer_past("LlamaForCausalLM", past, i, 3), keep, use_cache)
  end
  return self.norm(x), use_cache and presents or nil
end

local LlamaForCausalLM = nn.class("LlamaForCausalLM")

function LlamaForCausalLM:init(c, r)
  self.config = c
  self.model = LlamaModel(c, r)
  if not c.tie_word_embeddings then self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, { bias = false }) end
end

--- forward(input_ids (B, L) int64 [, {past = cache, attention_mask = (B, Lpast + L),
---   position_ids = (B, L), last_only = false, use_cache = true}]) -> logits (B, L, vocab)
---   (last_only: (B, 1, vocab)), cache: {length = tokens seen, [i] = layer i's core state}
function LlamaForCausalLM:forward(ids, opts)
  if not as.is_tensor(ids) or ids:dim() ~= 2 or (ids:dtype() ~= "int64" and ids:dtype() ~= "int32") then
    error("LlamaForCausalLM: expected input_ids as an int64 tensor (B, L), got " ..
      (as.is_tensor(ids) and (ids:dtype() .. " " .. tostring(ids:shape())) or type(ids)), 2)
  end
  opts = opts or {}
  generate.check_ids("LlamaForCausalLM", ids, self.config.vocab_size, 2)
  local h, presents = self.model(ids, opts)
  if opts.last_only then h = h:narrow(2, h:size(2), 1) end
  local w = self.lm_head and self.lm_head.weight or self.model.embed_tokens.weight
  return as.linear(h, w), presents
end

--- generate(ids, opts) -> ids (B, Lprompt + new): see models/generate.lua
function LlamaForCausalLM:generate(ids, opts)
  return generate.generate(self, ids, opts, { mask = true, pad_token_id = self.config.pad_token_id,
    eos_token_id = self.config.eos_token_id, last_only = true, name = "generate",
    max_positions = self.config.max_position_embeddings, positions_name = "max_position_embeddings" })
end

local function family(model_type)
  local F = {}
  local name = model_type
  -- Llama's sizes; model_type picks the family's layout (biases, q/k norms, windows)
  local defaults = {}
  for k, v in pairs(DEFAULTS) do defaults[k] = v end
  defaults.model_type = model_type

  --- as.models.<family>{hidden_size = ..., num_attention_heads = ..., ...}: HF's config names
  function F.new(config)
    local c = common.config(name, config, defaults, IGNORED)
    local r = resolve(name, c)
    return LlamaForCausalLM(c, r)
  end

  --- Loads HF weights by their own names from a .safetensors file or a sharded
  --- checkpoint's index.json; a tied head's lm_head.weight, if stored, is dropped.  bf16/fp16 tensors are converted as they are copied in.
  function F.load(model, path)
    local sd = common.load_weights(path)
    if model.config.tie_word_embeddings then sd = common.filter(sd, function(k) return k == "lm_head.weight" end) end
    model:load_state_dict(sd)
    return model
  end

  --- <family>.from_pretrained(path [, config]): a save_pretrained folder (sharded too), a
  --- .safetensors file (with config), or a hub name from the local Hugging
  --- Face cache.  config may add dtype (the compute dtype, default float32;
  --- config.json's dtype only says how the weights are stored), revision,
  --- cache_dir, and override the checkpoint's options.
  function F.from_pretrained(path, config)
    local given, dtype = {}, "float32"
    if type(config) == "table" then
      for k, v in pairs(config) do given[k] = v end
      dtype, given.dtype = given.dtype or dtype, nil
    elseif config ~= nil then
      error(string.format("bad argument #2 to '%s.from_pretrained' (config table expected, got %s)", name,
        type(config)), 2)
    end
    local weights, c = common.pretrained(name, path, given, defaults, nil, true)
    local model = F.load(F.new(c), weights)
    if dtype ~= "float32" and dtype ~= "float" then model:to(dtype) end
    return model:eval()
  end

  F.Class = LlamaForCausalLM
  F.DEFAULTS = defaults
  F.model_type = model_type
  return setmetatable(F, { __call = function(_, config) return F.new(config) end })
end

local llama = family("llama")
llama.family = family
llama.FAMILIES = FAMILIES
llama.resolve = resolve
return llama
