-- as.models.charlm: train_tiny's character model and data helpers (shared
-- with bench/recover.lua): the alphabet, ids, split and unigram entropy of a
-- text, batches that are windows of it with next-character targets, and the
-- model's shapes and errors.
local as = require "attnswap"
local U = require "spec_util"
local charlm = as.models.charlm

describe("as.models.charlm", function()
  it("reads a text into a sorted alphabet, 0-based ids, a 90/10 split and the unigram entropy", function()
    local path = U.tmpdir() .. "/t.txt"
    local text = string.rep("abcab", 8) .. "zzzzzzzzzz" -- 50 characters
    U.write(path, text)
    local d = assert(charlm.load_text(path))
    assert.are.same({ "a", "b", "c", "z" }, d.chars)
    assert.are.equal(4, d.V)
    assert.are.equal(50, d.n)
    assert.are.equal(45, d.split)
    for k = 1, d.n do assert.are.equal(text:sub(k, k), d.chars[d.ids[k] + 1]) end
    -- the first 45: 16 a, 16 b, 8 c, 5 z
    local H = 0
    for _, c in ipairs { 16, 16, 8, 5 } do H = H - c / 45 * math.log(c / 45) end
    assert.is_true(math.abs(d.unigram - H) < 1e-12)
    local none, msg = charlm.load_text(path .. ".missing")
    assert.is_nil(none)
    assert.is_truthy(msg:find("cannot read", 1, true))
  end)

  it("makes batches of windows with next-character targets, repeatable under manual_seed", function()
    local path = U.tmpdir() .. "/t.txt"
    local text = {}
    for k = 1, 300 do text[k] = string.char(97 + (k * 7) % 26) end
    U.write(path, table.concat(text))
    local d = charlm.load_text(path)
    as.manual_seed(4)
    local x, y = charlm.batcher(d, 3, 8)(0, d.split)
    assert.are.equal("(3, 8)", tostring(x:shape()))
    assert.are.equal("int64", x:dtype())
    for b = 1, 3 do
      for t = 1, 7 do
        assert.are.equal(x[b][t + 1], y[b][t])
        -- consecutive characters of the text: each 7 letters after the last
        assert.are.equal((x[b][t] + 7) % 26, x[b][t + 1])
      end
    end
    as.manual_seed(4)
    local x2 = charlm.batcher(d, 3, 8)(0, d.split)
    assert.are.equal(0, U.maxdiff(x, x2))
  end)

  it("maps (B, L) ids to (B, L, V) logits, its cores swappable; a missing V is an error", function()
    as.manual_seed(0)
    local m = charlm.new { V = 11, L = 12, dim = 16, num_heads = 2, layers = 3 }
    local out = m(as.zeros(2, 12):long())
    assert.are.equal("(2, 12, 11)", tostring(out:shape()))
    as.swap_attention(m, "scaled_dot_product", "linear_attention")
    assert.are.equal("LinearAttention", m.blocks[3].attn.core:type())
    assert.are.equal("(2, 12, 11)", tostring(m(as.zeros(2, 12):long()):shape()))
    assert.is_truthy(U.errmsg(charlm.new, {}):find("V (the alphabet size) must be a positive integer, got nil", 1, true))
  end)
end)
