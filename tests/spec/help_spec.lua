-- help() and the docs say what the code does (issue 20, item 7): as.save of one
-- tensor, help of a model constructor and of a built-in layer, as.clock.
local as = require "attnswap"
local nn = as.nn
local help = require("attnswap.help").help

-- What help(...) prints, as one string.
local function help_text(...)
  local out, print0 = {}, _G.print
  _G.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    out[#out + 1] = table.concat(parts, "\t")
  end
  local ok, err = pcall(help, ...)
  _G.print = print0
  assert(ok, err)
  return table.concat(out, "\n")
end

local function has(text, s) assert.truthy(text:find(s, 1, true), string.format("%q not in:\n%s", s, text)) end

describe("as.save", function()
  local path = os.tmpname() .. ".safetensors"
  after_each(function() os.remove(path) end)

  it("saves a single tensor under the name 'tensor', as help and docs/api.md say", function()
    local t = as.randn(2, 3)
    as.save(path, t)
    local back = as.load(path)
    assert.are.same({ "tensor" }, (function() local k = {} for n in pairs(back) do k[#k + 1] = n end return k end)())
    assert.are.equal(0, (back.tensor - t):abs():max():item())
    as.save(path, t, { note = "one" })
    local _, meta = as.load(path)
    assert.are.equal("one", meta.note)
    has(help_text(), "as.save(path, t | {name = t, ...})")
    has(help_text(as.save), 'one tensor is saved under the name "tensor"')
  end)
end)

describe("help", function()
  it("of a model constructor says what it is and lists its options", function()
    local text = help_text(as.models.vit)
    assert.falsy(text:find("table: 0x", 1, true), text)
    has(text, "as.models.vit: a model constructor (VisionTransformer)")
    has(text, "as.models.vit.from_pretrained(")
    has(text, "embed_dim=768")
    has(text, 'attention="scaled_dot_product"')
    has(help_text(as.models.gpt2), "n_layer=12")
    -- and building a model still works after help looked at its options
    assert.are.equal("VisionTransformer", as.models.vit { img_size = 8, patch_size = 4, embed_dim = 8, depth = 1, num_heads = 2, num_classes = 3 }:type())
  end)

  it("of a built-in layer shows its constructor's arguments and PyTorch's names", function()
    has(help_text(nn.Linear), "nn.Linear(in_features, out_features [, bias=true])")
    has(help_text(nn.LayerNorm), "nn.LayerNorm(dim [, eps=1e-05 [, affine=true]])")
    has(help_text(nn.LayerNorm), "elementwise_affine -> affine")
    has(help_text(nn.Embedding), "nn.Embedding(num_embeddings, embedding_dim)")
    has(help_text(nn.Dropout), "nn.Dropout([p=0.5])")
    has(help_text(nn.GELU), 'nn.GELU([approximate="none"])')
    has(help_text(nn.ReLU), "nn.ReLU()")
    local mha = help_text(nn.MultiheadAttention)
    has(mha, "nn.MultiheadAttention{dim, num_heads, num_kv_heads=num_heads,")
    has(mha, "embed_dim -> dim")
    has(help_text(nn.TransformerBlock), "mlp_ratio=4")
    has(help_text(nn.Sequential), "nn.Sequential(m1, m2, ...)")
    has(help_text(as.attention.get("scaled_dot_product")), 'as.attention.new("scaled_dot_product",')
  end)
end)

describe("as.clock", function()
  it("is a documented wall clock, unlike os.clock", function()
    assert.are.equal(as.core.clock, as.clock)
    local t0, c0 = as.clock(), os.clock()
    os.execute("sleep 0.2")
    assert.is_true(as.clock() - t0 >= 0.15)
    assert.is_true(os.clock() - c0 < 0.15) -- sleeping costs no CPU time
    has(help_text(as.clock), "wall clock")
    has(help_text(as.clock), "os.clock() is CPU time summed over all threads")
    has(help_text(), "as.clock()")
    local f = assert(io.open(os.getenv("ATTNSWAP_SOURCE_DIR") .. "/docs/api.md"))
    local api = f:read("a")
    f:close()
    has(api, "`as.clock()` returns seconds of a monotonic wall clock")
  end)
end)

describe("help(as.tokenizer)", function()
  it("says how to load and use a tokenizer", function()
    local text = help_text(as.tokenizer)
    has(text, "as.tokenizer.from_pretrained(")
    has(text, "tok:encode(text")
    has(text, "tok:decode(ids")
  end)
end)
