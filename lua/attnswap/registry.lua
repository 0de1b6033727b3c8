-- The attention registry's Lua face.  Entries live in C (runtime/attention/registry.c):
-- a name, the facts about the implementation, and its class.
local core = require "attnswap.core"
local nn = require "attnswap.nn"

local R = { attention = {} }
local attention = R.attention

local INFO_FIELDS = {
  exact = "boolean", complexity = "string", causal = "boolean", mask = "boolean",
  gqa = "boolean", incremental = "boolean", devices = "string", paper = "string",
  summary = "string", replace = "boolean",
}

local function check_class(Class, fn)
  if type(Class) ~= "table" or not rawget(Class, "__name") then
    error(string.format("bad argument #2 to '%s' (attention class expected, got %s)", fn, type(Class)), 3)
  end
end

local function add(name, Class, info)
  check_class(Class, "register_attention")
  info = info or {}
  if type(info) ~= "table" then
    error("bad argument #3 to 'register_attention' (table expected, got " .. type(info) .. ")", 3)
  end
  for k, v in pairs(info) do
    local want = INFO_FIELDS[k]
    if not want then error("register_attention: unknown info field '" .. tostring(k) .. "'", 3) end
    if type(v) ~= want then
      error(string.format("register_attention: info.%s must be a %s, got %s", k, want, type(v)), 3)
    end
  end
  core.registry_add(name, Class, info, info.replace)
  return Class
end

--- register_attention(name, Class [, info]) or, as a decorator, register_attention(name [, info])(Class).
function R.register_attention(name, Class, info)
  if type(name) ~= "string" or name == "" then
    error("bad argument #1 to 'register_attention' (name expected, got " .. type(name) .. ")", 2)
  end
  if Class == nil or (type(Class) == "table" and not rawget(Class, "__name")) then
    local decorator_info = Class
    return function(C) return add(name, C, decorator_info) end
  end
  return add(name, Class, info)
end

function attention.names() return core.registry_names() end

local function lookup(name, fn)
  if type(name) ~= "string" then
    error(string.format("bad argument #1 to '%s' (attention name expected, got %s)", fn, type(name)), 3)
  end
  local Class, info = core.registry_get(name)
  if not Class then
    error(string.format("%s: no attention named '%s' (registered: %s)", fn, name,
      table.concat(core.registry_names(), ", ")), 3)
  end
  return Class, info
end

function attention.get(name) return (lookup(name, "attention.get")) end
function attention.info(name) return select(2, lookup(name, "attention.info")) end
function attention.exists(name) return type(name) == "string" and core.registry_get(name) ~= nil end

--- new(name [, opts]) -> a core module, callable as core(q, k, v [, mask]).
function attention.new(name, opts)
  local Class = lookup(name, "attention.new")
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'attention.new' (options table expected, got " .. type(opts) .. ")", 2)
  end
  return Class(opts or {})
end

--- is_core(m): whether m is an instance of a registered attention class.
function attention.is_core(m)
  if not core.is_module(m) then return false end
  for _, name in ipairs(core.registry_names()) do
    if nn.isinstance(m, (core.registry_get(name))) then return true, name end
  end
  return false
end

local function yesno(b) return b and "yes" or "-" end

--- list() prints the registry as a table and returns the rows.
function attention.list(out)
  out = out or io.stdout
  local rows = {}
  for _, name in ipairs(core.registry_names()) do
    local _, i = core.registry_get(name)
    rows[#rows + 1] = { name, yesno(i.exact), i.complexity, yesno(i.causal),
      yesno(i.mask), yesno(i.gqa), i.devices, i.paper }
  end
  local head = { "name", "exact", "cost", "causal", "mask", "gqa", "devices", "paper" }
  local width = {}
  for c = 1, #head do
    width[c] = #head[c]
    for _, r in ipairs(rows) do width[c] = math.max(width[c], #r[c]) end
  end
  local function line(r)
    local cells = {}
    for c = 1, #head do cells[c] = r[c] .. string.rep(" ", width[c] - #r[c]) end
    return table.concat(cells, "  "):gsub("%s+$", "")
  end
  out:write(line(head), "\n")
  local rule = {}
  for c = 1, #head do rule[c] = string.rep("-", width[c]) end
  out:write(table.concat(rule, "  "), "\n")
  for _, r in ipairs(rows) do out:write(line(r), "\n") end
  return rows
end

-- ---- the attention layers that hold a swappable core ----

local function core_module(spec, opts, fn)
  if core.is_module(spec) then return spec end
  if spec ~= nil and type(spec) ~= "string" then
    error(fn .. ": core must be a registry name or a Module, got " .. type(spec), 3)
  end
  return attention.new(spec or "scaled_dot_product", opts)
end

local function check_config(fn, c)
  if type(c) ~= "table" then error("bad argument #1 to '" .. fn .. "' (options table expected, got " .. type(c) .. ")", 3) end
  for _, k in ipairs { "dim", "num_heads" } do
    if math.type(c[k]) ~= "integer" or c[k] <= 0 then
      error(string.format("%s: %s must be a positive integer, got %s", fn, k, tostring(c[k])), 3)
    end
  end
  local kv = c.num_kv_heads or c.num_heads
  if math.type(kv) ~= "integer" or kv <= 0 or c.num_heads % kv ~= 0 then
    error(string.format("%s: num_kv_heads (%s) must divide num_heads (%d)", fn, tostring(c.num_kv_heads), c.num_heads), 3)
  end
  if not c.head_dim and c.dim % c.num_heads ~= 0 then
    error(string.format("%s: dim (%d) must be divisible by num_heads (%d)", fn, c.dim, c.num_heads), 3)
  end
end

-- The options, as help shows them, and PyTorch's spellings
-- (nn.MultiheadAttention, nn.TransformerEncoderLayer) pointed to, not accepted:
-- one name per option keeps configs readable (docs/api.md).
local MHA_OPTIONS = {
  "dim", "num_heads", "num_kv_heads=num_heads", "head_dim=dim/num_heads", "qkv_bias=true", "out_bias=true",
  "fused_qkv=false", "core=\"scaled_dot_product\"", "core_opts={}",
}
local BATCH_FIRST = "inputs here are always batch first, (B, L, dim)"
local MHA_PYTORCH = {
  embed_dim = "dim", d_model = "dim", nhead = "num_heads",
  bias = "here it is two options, qkv_bias and out_bias",
  batch_first = BATCH_FIRST, kdim = "not supported here (keys and values have dim features)",
  vdim = "not supported here (keys and values have dim features)",
  add_bias_kv = "not supported here", add_zero_attn = "not supported here",
  device = "build, then m:to(...)", dtype = "build, then m:to(...)",
}
local BLOCK_OPTIONS = { "mlp_ratio=4", "norm=\"pre\"", "activation=\"gelu\"", "norm_eps=1e-05", "dropout=0" }
for i, o in ipairs(MHA_OPTIONS) do table.insert(BLOCK_OPTIONS, i, o) end
local BLOCK_PYTORCH = {
  dim_feedforward = "here it is mlp_ratio = dim_feedforward / dim", layer_norm_eps = "norm_eps",
  norm_first = "here it is norm = \"pre\" (true) or \"post\" (false)",
}
for k, v in pairs(MHA_PYTORCH) do BLOCK_PYTORCH[k] = v end

--- MultiheadAttention{dim, num_heads, num_kv_heads, head_dim, qkv_bias, out_bias,
---                    fused_qkv, core = "scaled_dot_product", core_opts = {...}}
nn.MultiheadAttention = nn.builtin("MultiheadAttention", function(c)
  check_config("MultiheadAttention", c)
  return core.new_mha(c, core_module(c.core, c.core_opts, "MultiheadAttention"))
end, { options = MHA_OPTIONS, pytorch = MHA_PYTORCH })

--- TransformerBlock{dim, num_heads, mlp_ratio = 4, norm = "pre" | "post", activation = "gelu", ...}
nn.TransformerBlock = nn.builtin("TransformerBlock", function(c)
  check_config("TransformerBlock", c)
  return core.new_block(c, core_module(c.core, c.core_opts, "TransformerBlock"))
end, { options = BLOCK_OPTIONS, pytorch = BLOCK_PYTORCH })

nn.Mlp = nn.builtin("Mlp", function() error("Mlp is built by TransformerBlock", 2) end)

return R
