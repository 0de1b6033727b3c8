-- as.patterns: each builder against its definition written here element by
-- element (small L), the combinators, block conversion, argument errors, and
-- that large masks are built in C (L = 4096 in well under a second each).
local as = require "attnswap"
local patterns = as.patterns or require "attnswap.patterns"

-- the mask f(i, j) (1-based) as a Lua table of booleans
local function table_of(L, f, Lk)
  local t = {}
  for i = 1, L do
    t[i] = {}
    for j = 1, Lk or L do t[i][j] = f(i, j) and true or false end
  end
  return t
end

local function same(mask, want)
  local got = mask:tolist()
  assert.are.equal(#want, #got)
  for i = 1, #want do
    for j = 1, #want[i] do
      if got[i][j] ~= want[i][j] then
        error(string.format("entry (%d, %d): got %s, expected %s", i, j, tostring(got[i][j]), tostring(want[i][j])), 2)
      end
    end
  end
end

local function errors_with(text, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error containing: " .. text)
  assert.is_truthy(tostring(err):find(text, 1, true), "got: " .. tostring(err))
end

describe("patterns", function()
  it("causal and full", function()
    same(patterns.causal(6), table_of(6, function(i, j) return j <= i end))
    same(patterns.full(4), table_of(4, function() return true end))
    assert.are.equal("bool", patterns.causal(3):dtype())
  end)

  it("local_1d keeps |i - j| <= window", function()
    same(patterns.local_1d(11, 2), table_of(11, function(i, j) return math.abs(i - j) <= 2 end))
    same(patterns.local_1d(11, 3, true), table_of(11, function(i, j) return i - j >= 0 and i - j <= 3 end))
    same(patterns.local_1d(5, 0), table_of(5, function(i, j) return i == j end))
  end)

  it("strided is Child et al.'s strided pattern", function()
    same(patterns.strided(17, 4), table_of(17, function(i, j)
      return math.abs(i - j) <= 4 or (i - j) % 4 == 0
    end))
    same(patterns.strided(17, 3, true), table_of(17, function(i, j)
      return j <= i and (i - j <= 3 or (i - j) % 3 == 0)
    end))
  end)

  it("fixed is Child et al.'s fixed pattern", function()
    -- 1-based i, j: block of i-1 by stride, summary columns (j-1) % l >= l - c
    same(patterns.fixed(19, 5, 2), table_of(19, function(i, j)
      return (i - 1) // 5 == (j - 1) // 5 or (j - 1) % 5 >= 3
    end))
    same(patterns.fixed(10, 4, true), table_of(10, function(i, j) -- c = 1 by default
      return j <= i and ((i - 1) // 4 == (j - 1) // 4 or (j - 1) % 4 == 3)
    end))
  end)

  it("axial_2d keeps the row and the column of a grid position", function()
    same(patterns.axial_2d(3, 4), table_of(12, function(i, j)
      return (i - 1) // 4 == (j - 1) // 4 or (i - 1) % 4 == (j - 1) % 4
    end))
  end)

  it("global_tokens keeps the rows and columns of the listed (1-based) positions", function()
    local want = table_of(7, function(i, j) return i == 1 or i == 5 or j == 1 or j == 5 end)
    same(patterns.global_tokens(7, { 1, 5 }), want)
    same(patterns.global_tokens(7, as.tensor { 5, 1 }), want)
    same(patterns.global_tokens(3, {}), table_of(3, function() return false end))
  end)

  it("random is reproducible from its seed and has the asked density", function()
    local a, b, c = patterns.random(300, 0.2, 9), patterns.random(300, 0.2, 9), patterns.random(300, 0.2, 10)
    assert.are.equal(0, a:ne(b):float():sum():item())
    assert.is_true(a:ne(c):float():sum():item() > 1000)
    assert.is_true(math.abs(patterns.density(a) - 0.2) < 0.01)
    assert.are.equal(0, patterns.density(patterns.random(10, 0)))
    assert.are.equal(1, patterns.density(patterns.random(10, 1)))
  end)

  it("bigbird: window, global and random blocks (Zaheer et al. 2020)", function()
    local blocks = patterns.bigbird(64, { block = 8, window = 3, globals = 1, randoms = 2, seed = 4, blocks = true })
    assert.are.equal("(8, 8)", tostring(blocks:shape()))
    local t = blocks:tolist()
    for r = 1, 8 do
      local extra = 0
      for c = 1, 8 do
        local base = math.abs(r - c) <= 1 or r == 1 or c == 1
        if base then assert.is_true(t[r][c]) elseif t[r][c] then extra = extra + 1 end
      end
      if r > 1 then assert.are.equal(2, extra) end
    end
    -- the element mask is the block mask expanded; causal cuts the diagonal blocks too
    local elem = patterns.bigbird(64, { block = 8, window = 3, globals = 1, randoms = 2, seed = 4 })
    assert.are.equal(0, elem:ne(patterns.from_blocks(blocks, 8, 64)):float():sum():item())
    local causal = patterns.bigbird(64, { block = 8, randoms = 1, causal = true })
    assert.are.equal(0, causal:logical_and(patterns.causal(64):logical_not()):float():sum():item())
    -- defaults: block 64, window 3, 2 global blocks, 3 random blocks
    assert.are.equal("(4, 4)", tostring(patterns.bigbird(256, { blocks = true }):shape()))
  end)

  it("union and intersect combine masks", function()
    local a, b = patterns.local_1d(9, 1), patterns.global_tokens(9, { 4 })
    same(patterns.union(a, b), table_of(9, function(i, j) return math.abs(i - j) <= 1 or i == 4 or j == 4 end))
    same(patterns.intersect(a, b, patterns.causal(9)), table_of(9, function(i, j)
      return math.abs(i - j) <= 1 and (i == 4 or j == 4) and j <= i
    end))
    same(patterns.union(a), a:tolist())
  end)

  it("to_blocks keeps a block when any element is kept; from_blocks expands back", function()
    local m = patterns.global_tokens(10, { 6 })
    local blocks = patterns.to_blocks(m, 4) -- ceil(10 / 4) = 3
    same(blocks, table_of(3, function(r, c) return r == 2 or c == 2 end))
    same(patterns.from_blocks(blocks, 4, 10), table_of(10, function(i, j)
      return (i - 1) // 4 == 1 or (j - 1) // 4 == 1
    end))
    -- per-head layouts keep their leading dim; rectangular shapes work
    local heads = as.stack({ patterns.causal(8), patterns.full(8) }, 1)
    assert.are.equal("(2, 2, 2)", tostring(patterns.to_blocks(heads, 4):shape()))
    assert.are.equal("(3, 7)", tostring(patterns.from_blocks(as.ones(2, 4, "bool"), 2, 3, 7):shape()))
  end)

  it("builds L = 4096 masks in C, quickly", function()
    local t0 = os.clock()
    local m = patterns.local_1d(4096, 64)
    patterns.strided(4096, 64)
    patterns.bigbird(4096)
    patterns.to_blocks(m, 32)
    local dt = os.clock() - t0
    assert.are.equal("(4096, 4096)", tostring(m:shape()))
    assert.is_true(dt < 2, "took " .. dt .. " s")
  end)

  it("rejects bad arguments, naming the builder", function()
    errors_with("patterns.local_1d: window must be a non-negative integer, got -1", patterns.local_1d, 8, -1)
    errors_with("patterns.causal: L must be a non-negative integer, got 2.5", patterns.causal, 2.5)
    errors_with("patterns.strided: stride must be a positive integer, got 0", patterns.strided, 8, 0)
    errors_with("patterns.strided: causal must be a boolean", patterns.strided, 8, 2, "yes")
    errors_with("patterns.fixed: c must be at most stride (4), got 5", patterns.fixed, 8, 4, 5)
    errors_with("patterns.random: p must be a probability in [0, 1], got 2", patterns.random, 8, 2)
    errors_with("patterns.global_tokens: position 9 is outside 1..8", patterns.global_tokens, 8, { 9 })
    errors_with("patterns.global_tokens: positions[2] must be an integer", patterns.global_tokens, 8, { 1, "x" })
    errors_with("patterns.bigbird: unknown option 'blocksize'", patterns.bigbird, 8, { blocksize = 2 })
    errors_with("patterns.bigbird: block must be a positive integer, got 0", patterns.bigbird, 8, { block = 0 })
    errors_with("patterns.union: mask 2 must be a bool tensor, got float32 tensor (2, 2)", patterns.union,
      patterns.full(2), as.ones(2, 2))
    errors_with("patterns.intersect: expected at least one mask", patterns.intersect)
    errors_with("patterns.to_blocks: block must be a positive integer", patterns.to_blocks, patterns.full(4), 0)
    errors_with("patterns.from_blocks: a layout of shape (2, 2) does not cover (9, 9) in blocks of 4",
      patterns.from_blocks, as.ones(2, 2, "bool"), 4, 9)
    errors_with("patterns.local_1d: L must be an integer in [0, 65536]", patterns.local_1d, 100000, 1)
  end)
end)
