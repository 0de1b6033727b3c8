-- GPT-2: HF transformers' GPT2LMHeadModel (Radford et al. 2019) with HF's
-- parameter names, so a save_pretrained folder loads as it is.  GPT-2's
-- projections are Conv1D layers (weight stored (in, out), y = x W + b), kept
-- as such here.  Each block's attention core (transformer.h.N.attn.core) is
-- swappable; generation keeps each core's cache (attention/incremental.lua:
-- the growing K/V for exact attention, a window's ring buffer, a recurrent
-- state) and takes left-padded batches with an attention mask, positions
-- counted as transformers' generate counts them (cumsum(mask) - 1).
local as = require "attnswap"
local common = require "attnswap.models.common"
local generate = require "attnswap.models.generate"
local nn = as.nn

local DEFAULTS = {
  vocab_size = 50257, n_positions = 1024, n_embd = 768, n_layer = 12, n_head = 12, n_inner = false,
  layer_norm_epsilon = 1e-5, activation_function = "gelu_new", attention = "scaled_dot_product",
  attention_opts = false, attn_pdrop = 0.1, embd_pdrop = 0.1, resid_pdrop = 0.1, initializer_range = 0.02,
}
-- config.json keys HF writes that do not change the forward (ignored)
local IGNORED = {}
for _, k in ipairs { "architectures", "model_type", "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
  "summary_first_dropout", "bos_token_id", "eos_token_id", "torch_dtype", "dtype", "transformers_version",
  "scale_attn_weights", "use_cache", "reorder_and_upcast_attn", "scale_attn_by_inverse_layer_idx",
  "task_specific_params", "n_ctx", "tie_word_embeddings", "add_cross_attention", "_name_or_path" } do
  IGNORED[k] = false
end

local Conv1D = nn.class("Conv1D")

function Conv1D:init(nx, nf)
  self.weight = nn.Parameter(as.randn(nx, nf) * 0.02)
  self.bias = nn.Parameter(as.zeros(nf))
end

-- as.linear on the transposed view is the same product (the weight read as
-- stored), and lets the bias ride in the product's epilogue on CUDA
function Conv1D:forward(x) return as.linear(x, self.weight:t(), self.bias) end

-- forward(x) + r with r added inside the product where the device can
-- (as.linear_add): a residual connection without a pass of its own
function Conv1D:forward_add(x, r) return as.linear_add(x, self.weight:t(), self.bias, r) end

-- proj(x) through drop, + resid when given: inside the product (forward_add)
-- where the dropout does nothing (eval, or p = 0) and proj has it
local function project_add(proj, drop, p, x, resid)
  if resid and proj.forward_add and (p == 0 or not drop:is_training()) then return proj:forward_add(x, resid) end
  local y = drop(proj(x))
  return resid and y + resid or y
end

function Conv1D:extra_repr() return string.format("nf=%d, nx=%d", self.weight:size(2), self.weight:size(1)) end

local GPT2Attention = nn.class("GPT2Attention")

function GPT2Attention:init(c)
  self.c_attn = Conv1D(c.n_embd, 3 * c.n_embd)
  self.c_proj = Conv1D(c.n_embd, c.n_embd)
  local opts = {}
  for k, v in pairs(c.attention_opts or {}) do opts[k] = v end
  opts.causal = true
  if opts.dropout == nil and c.attn_pdrop > 0 then opts.dropout = c.attn_pdrop end
  self.core = as.attention.new(c.attention, opts)
  self.resid_dropout = nn.Dropout(c.resid_pdrop)
  self.resid_pdrop = c.resid_pdrop
  self.n_head = c.n_head
  -- the head counts swap_attention reads to size a new core's per-head parameters
  self.num_heads, self.head_dim = c.n_head, c.n_embd // c.n_head
end

-- x (B, L, E), past: the core's state or nil, keep (B, L) bool or nil (the
-- new tokens that are real), resid (B, L, E) or nil: added to the output
-- -> (B, L, E), the state after them
function GPT2Attention:forward(x, past, keep, use_cache, resid)
  local B, L, E = x:size(1), x:size(2), x:size(3)
  local H = self.n_head
  local q, k, v = self.c_attn(x):split(E, 3)
  local function heads(t) return t:reshape(B, L, H, E // H):permute(1, 3, 2, 4) end
  q, k, v = heads(q), heads(k), heads(v)
  local o, present = generate.attend(self.core, q, k, v, past, keep, use_cache)
  o = o:permute(1, 3, 2, 4):reshape(B, L, E)
  return project_add(self.c_proj, self.resid_dropout, self.resid_pdrop, o, resid), present
end

local GPT2MLP = nn.class("GPT2MLP")

function GPT2MLP:init(c)
  local inner = c.n_inner or 4 * c.n_embd
  self.c_fc = Conv1D(c.n_embd, inner)
  self.act = nn.GELU(c.activation_function == "gelu" and "none" or "tanh")
  self.c_proj = Conv1D(inner, c.n_embd)
  self.dropout = nn.Dropout(c.resid_pdrop)
  self.resid_pdrop = c.resid_pdrop
end

-- x (B, L, E) [, resid (B, L, E): added to the output]
function GPT2MLP:forward(x, resid)
  return project_add(self.c_proj, self.dropout, self.resid_pdrop, self.act(self.c_fc(x)), resid)
end

local GPT2Block = nn.class("GPT2Block")

function GPT2Block:init(c)
  self.ln_1 = nn.LayerNorm(c.n_embd, c.layer_norm_epsilon)
  self.attn = GPT2Attention(c)
  self.ln_2 = nn.LayerNorm(c.n_embd, c.layer_norm_epsilon)
  self.mlp = GPT2MLP(c)
end

-- the residual connections ride in the projections' products (project_add)
function GPT2Block:forward(x, past, keep, use_cache)
  local h, present = self.attn(self.ln_1(x), past, keep, use_cache, x)
  return self.mlp(self.ln_2(h), h), present
end

local GPT2Model = nn.class("GPT2Model")

function GPT2Model:init(c)
  self.wte = nn.Embedding(c.vocab_size, c.n_embd)
  self.wpe = nn.Embedding(c.n_positions, c.n_embd)
  self.drop = nn.Dropout(c.embd_pdrop)
  local h = {}
  for i = 1, c.n_layer do h[i] = GPT2Block(c) end
  self.h = nn.ModuleList(h)
  self.ln_f = nn.LayerNorm(c.n_embd, c.layer_norm_epsilon)
  self.n_positions = c.n_positions
end

-- ids (B, L) int64; opts.past (a cache from an earlier call), opts.attention_mask
-- (B, Lpast + L), opts.position_ids (B, L), opts.use_cache (true) -> hidden
-- (B, L, E), cache {length, [i] = block i's core state} (nil without use_cache)
function GPT2Model:forward(ids, opts)
  opts = opts or {}
  local B, L = ids:size(1), ids:size(2)
  local past = opts.past
  local offset = past and past.length or 0
  local use_cache = opts.use_cache ~= false
  if offset + L > self.n_positions then
    error(string.format("GPT2: sequence of %d tokens exceeds n_positions = %d", offset + L, self.n_positions), 3)
  end
  local mask = generate.check_mask("GPT2LMHeadModel", opts.attention_mask, B, offset + L, 3)
  local pe
  if opts.position_ids == nil and not mask then
    -- positions offset .. offset + L - 1 for every row: wpe's rows as they are (no
    -- ids made on the host and copied over, which a CUDA graph could not hold)
    pe = self.wpe.weight:narrow(1, offset + 1, L)
  else
    pe = self.wpe(generate.position_ids("GPT2LMHeadModel", opts.position_ids, B, L, offset, mask, 3):to(ids:device()))
  end
  local x = self.drop(self.wte(ids) + pe)
  local keep = mask and mask:narrow(2, offset + 1, L) or nil
  if keep and generate.all_on(keep) then keep = nil end
  keep = keep and keep:ne(0):to(x:device()) or nil
  local presents = { length = offset + L }
  for i, blk in ipairs(self.h:children()) do
    x, presents[i] = blk(x, generate.layer_past("GPT2LMHeadModel", past, i, 3), keep, use_cache)
  end
  return self.ln_f(x), use_cache and presents or nil
end

local GPT2LMHeadModel = nn.class("GPT2LMHeadModel")

function GPT2LMHeadModel:init(c)
  self.config = c
  self.transformer = GPT2Model(c)
  self:init_weights()
end

-- transformers' GPT2PreTrainedModel._init_weights: every weight N(0, 0.02)
-- (initializer_range; Conv1D starts so), the projections into the residual stream scaled by
-- 1/sqrt(2 n_layer) (GPT-2 paper, 2.3), biases 0, LayerNorm 1 and 0.  The
-- embeddings matter most: nn.Embedding's own N(0, 1) would start training at
-- a cross entropy of hundreds of nats through the tied head.
function GPT2LMHeadModel:init_weights()
  local c, t = self.config, self.transformer
  local std = c.initializer_range
  local function normal(p, s) p:copy_(as.randn(table.unpack(p:shape())) * s) end
  as.no_grad(function()
    normal(t.wte.weight, std)
    normal(t.wpe.weight, std)
    for _, blk in ipairs(t.h:children()) do
      normal(blk.attn.c_proj.weight, std / math.sqrt(2 * c.n_layer))
      normal(blk.mlp.c_proj.weight, std / math.sqrt(2 * c.n_layer))
    end
  end)
end

--- forward(input_ids (B, L) int64 [, {past = cache, attention_mask = (B, Lpast + L),
---   position_ids = (B, L), last_only = false, use_cache = true}]) -> logits (B, L, vocab)
---   (last_only: (B, 1, vocab)), cache
-- The head is tied to the token embedding (as HF ties lm_head.weight to wte.weight).
function GPT2LMHeadModel:forward(ids, opts)
  if not as.is_tensor(ids) or ids:dim() ~= 2 or (ids:dtype() ~= "int64" and ids:dtype() ~= "int32") then
    error("GPT2LMHeadModel: expected input_ids as an int64 tensor (B, L), got " ..
      (as.is_tensor(ids) and (ids:dtype() .. " " .. tostring(ids:shape())) or type(ids)), 2)
  end
  opts = opts or {}
  generate.check_ids("GPT2LMHeadModel", ids, self.config.vocab_size, 2)
  local h, presents = self.transformer(ids, opts)
  if opts.last_only then h = h:narrow(2, h:size(2), 1) end
  return h:matmul(self.transformer.wte.weight:t()), presents
end

--- generate(ids (B, L) int64 [with attention_mask], or lists of ids of any lengths (left-padded),
---           {max_new_tokens = 20, use_cache = true, do_sample = false, top_k, top_p, temperature,
---           seed, eos_token_id, pad_token_id, attention_mask, callback})
--- -> ids (B, L + new): models/generate.lua, shared with the Llama family
function GPT2LMHeadModel:generate(ids, opts)
  return generate.generate(self, ids, opts, { mask = true, last_only = true, max_positions = self.config.n_positions,
    positions_name = "n_positions" })
end

local gpt2 = {}

function gpt2.new(config) return GPT2LMHeadModel(common.config("gpt2", config, DEFAULTS, IGNORED)) end

-- The hub's own gpt2 checkpoints hold the base model's names (wte.weight,
-- h.0.attn.c_attn.weight): they get the "transformer." prefix that
-- GPT2LMHeadModel's save_pretrained writes.
function gpt2.load(model, path)
  local sd = common.filter(as.load(path), function(k)
    -- the tied head, and the causal-mask buffers older checkpoints carry
    return k == "lm_head.weight" or k:match("%.attn%.bias$") or k:match("%.attn%.masked_bias$")
  end)
  local prefixed = false
  for k in pairs(sd) do if k:match("^transformer%.") then prefixed = true break end end
  if not prefixed then sd = common.rename(sd, { { "^", "transformer." } }) end
  model:load_state_dict(sd)
  return model
end

--- gpt2.from_pretrained(path [, config]) loads a save_pretrained folder, a
--- .safetensors file, or a hub name ("gpt2", "org/name@rev") from the local
--- Hugging Face cache; config may add revision and cache_dir (models/hub.lua).
function gpt2.from_pretrained(path, config)
  local weights, c = common.pretrained("gpt2", path, config, DEFAULTS)
  return gpt2.load(gpt2.new(c), weights):eval()
end

gpt2.Class = GPT2LMHeadModel
return setmetatable(gpt2, { __call = function(_, config) return gpt2.new(config) end })
