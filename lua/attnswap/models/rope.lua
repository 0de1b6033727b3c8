-- Rotary position embedding (Su et al. 2021, "RoFormer", eq. 34) as HF
-- transformers applies it to Llama-family models: the head dim is split in
-- halves (rotate_half), not interleaved pairs.
--
--   inv_freq_i = 1 / theta^(2i / D)            (i = 0 .. D/2 - 1, then rescaled by the rope type)
--   angle(p)   = p * inv_freq, cos/sin of [angle, angle] times attention_scaling
--   x'         = x * cos + rotate_half(x) * sin,  rotate_half([x1, x2]) = [-x2, x1]
--
-- RoPE types: default, linear (Chen et al. 2023, position interpolation),
-- llama3 (Llama 3.1's frequency-band scaling) and yarn (Peng et al. 2023,
-- "YaRN", eq. 16-23 as transformers computes it).  Configs come as
-- transformers 4.x writes them (rope_theta + rope_scaling) or as 5.x writes
-- them (rope_parameters, which holds rope_theta).
local as = require "attnswap"

local M = {}

M.TYPES = { default = true, linear = true, llama3 = true, yarn = true }

local function fail(where, fmt, ...) error(string.format("%s: " .. fmt, where, ...), 0) end

local function number_field(where, p, key, required, positive)
  local v = p[key]
  if v == nil then
    if required then fail(where, "rope type '%s' needs '%s' in its RoPE parameters", p.rope_type, key) end
    return nil
  end
  if type(v) ~= "number" then fail(where, "RoPE parameter '%s' should be a number, got %s", key, type(v)) end
  if positive and not (v > 0) then fail(where, "RoPE parameter '%s' should be > 0, got %s", key, tostring(v)) end
  return v
end

--- params(cfg, where) -> {rope_type, rope_theta, factor, ...}: the RoPE
--- parameters of an HF config (5.x rope_parameters, or 4.x rope_theta and
--- rope_scaling whose type is under "rope_type" or the older "type"),
--- checked.  where names the caller in errors.
function M.params(cfg, where)
  local src = cfg.rope_parameters or cfg.rope_scaling or nil
  if src ~= nil and type(src) ~= "table" then
    fail(where, "%s should be an object, got %s", cfg.rope_parameters and "rope_parameters" or "rope_scaling", type(src))
  end
  local p = {}
  for k, v in pairs(src or {}) do p[k] = v end
  p.rope_type = p.rope_type or p.type or "default"
  p.type = nil
  if p.rope_theta == nil then p.rope_theta = cfg.rope_theta or 10000.0 end
  for k, v in pairs(p) do if v == false then p[k] = nil end end
  if cfg.partial_rotary_factor and p.partial_rotary_factor == nil then
    p.partial_rotary_factor = cfg.partial_rotary_factor
  end
  if type(p.rope_type) ~= "string" or not M.TYPES[p.rope_type] then
    fail(where, "rope type '%s' is not supported (supported: default, linear, llama3, yarn)", tostring(p.rope_type))
  end
  number_field(where, p, "rope_theta", true, true)
  if p.partial_rotary_factor ~= nil and p.partial_rotary_factor ~= 1 then
    fail(where, "partial_rotary_factor = %s is not supported (Llama-family models rotate the whole head)",
      tostring(p.partial_rotary_factor))
  end
  if p.rope_type == "linear" then
    number_field(where, p, "factor", true, true)
  elseif p.rope_type == "llama3" then
    number_field(where, p, "factor", true, true)
    number_field(where, p, "low_freq_factor", true, true)
    number_field(where, p, "high_freq_factor", true, true)
    number_field(where, p, "original_max_position_embeddings", true, true)
    if p.high_freq_factor <= p.low_freq_factor then
      fail(where, "llama3 RoPE needs high_freq_factor > low_freq_factor, got %s and %s", tostring(p.high_freq_factor),
        tostring(p.low_freq_factor))
    end
  elseif p.rope_type == "yarn" then
    p.original_max_position_embeddings = p.original_max_position_embeddings or cfg.max_position_embeddings or nil
    number_field(where, p, "original_max_position_embeddings", true, true)
    if p.factor == nil then p.factor = cfg.max_position_embeddings / p.original_max_position_embeddings end
    number_field(where, p, "factor", true, true)
    for _, k in ipairs { "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim" } do
      number_field(where, p, k, false, false)
    end
  end
  return p
end

--- inv_freq(p, head_dim) -> float32 tensor (D/2,), attention_scaling (a number)
function M.inv_freq(p, dim)
  -- base^(2i/D) in float32, as transformers computes it
  local pos_freqs = p.rope_theta ^ (as.arange(0, dim, 2):float() / dim)
  local inv = (1 / pos_freqs):tolist()
  local scaling = 1.0
  local t = p.rope_type
  if t == "linear" then
    for i = 1, #inv do inv[i] = inv[i] / p.factor end
  elseif t == "llama3" then
    local old = p.original_max_position_embeddings
    local low_wavelen, high_wavelen = old / p.low_freq_factor, old / p.high_freq_factor
    for i, f in ipairs(inv) do
      local wavelen = 2 * math.pi / f
      if wavelen > low_wavelen then
        inv[i] = f / p.factor                   -- low frequencies: interpolated
      elseif wavelen >= high_wavelen then       -- the band between: smoothed
        local smooth = (old / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor)
        inv[i] = (1 - smooth) * f / p.factor + smooth * f
      end                                       -- high frequencies: kept
    end
  elseif t == "yarn" then
    local factor, base, old = p.factor, p.rope_theta, p.original_max_position_embeddings
    local function get_mscale(s, m)
      if s <= 1 then return 1.0 end
      return 0.1 * (m or 1) * math.log(s) + 1.0
    end
    scaling = p.attention_factor
    if scaling == nil then
      if p.mscale and p.mscale ~= 0 and p.mscale_all_dim and p.mscale_all_dim ~= 0 then
        scaling = get_mscale(factor, p.mscale) / get_mscale(factor, p.mscale_all_dim)
      else
        scaling = get_mscale(factor)
      end
    end
    local beta_fast, beta_slow = p.beta_fast or 32, p.beta_slow or 1
    local function correction_dim(rot) return dim * math.log(old / (rot * 2 * math.pi)) / (2 * math.log(base)) end
    local low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.truncate ~= false then low, high = math.floor(low), math.ceil(high) end
    low, high = math.max(low, 0), math.min(high, dim - 1)
    if low == high then high = high + 0.001 end
    for i, f in ipairs(inv) do
      local ramp = math.min(math.max(((i - 1) - low) / (high - low), 0), 1)
      local extrapolation = 1 - ramp
      inv[i] = (f / factor) * (1 - extrapolation) + f * extrapolation
    end
  end
  return as.tensor(inv, "float32"), scaling
end

--- cos_sin(inv_freq (D/2,), positions (B, L) int64, scaling) -> cos, sin
--- (B, 1, L, D) float32 on the CPU (the caller moves them).
function M.cos_sin(inv_freq, positions, scaling)
  local B, L = positions:size(1), positions:size(2)
  local freqs = positions:float():reshape(B, L, 1) * inv_freq:reshape(1, 1, -1)   -- (B, L, D/2)
  local emb = as.cat({ freqs, freqs }, 3):reshape(B, 1, L, -1)
  local cos, sin = emb:cos(), emb:sin()
  if scaling ~= 1 then cos, sin = cos * scaling, sin * scaling end
  return cos, sin
end

--- apply(x (B, H, L, D), cos, sin (B, 1, L, D)) -> x rotated, in x's dtype
function M.apply(x, cos, sin)
  local D = x:size(4)
  local h = D // 2
  local x1, x2 = x:narrow(4, 1, h), x:narrow(4, h + 1, h)
  return x * cos + as.cat({ -x2, x1 }, 4) * sin
end

return M
