-- as.patterns: keep-masks for sparse_attention (and for any attention's
-- mask argument).  Each builder returns a bool tensor (L, L), true = query i
-- may attend key j, made in C (runtime/attention/sparse_patterns.c) or with
-- tensor ops, never element by element in Lua.  Positions are 1-based, as
-- everywhere in the Lua API.  sparse_attention takes these element masks as
-- they are (blocks only partly kept are checked element by element) or a
-- block layout from to_blocks.
local core = require "attnswap.core"

local C = core.sparse_patterns
local P = {}

local function describe(v)
  if type(v) == "string" then return string.format("%q", v) end
  if core.is_tensor(v) then return v:dtype() .. " tensor " .. tostring(v:shape()) end
  return tostring(v)
end

-- level 4: fail <- a checker <- the builder <- its caller
local function fail(fn, what, want, v, level)
  error(string.format("patterns.%s: %s must be %s, got %s", fn, what, want, describe(v)), level or 4)
end

local function int(fn, what, v, min)
  if math.type(v) ~= "integer" or v < min then
    fail(fn, what, min > 0 and "a positive integer" or "a non-negative integer", v)
  end
  return v
end

local function length(fn, v) return int(fn, "L", v, 0) end

local function flag(fn, what, v)
  if v ~= nil and type(v) ~= "boolean" then fail(fn, what, "a boolean", v) end
  return v == true
end

local function mask_arg(fn, what, v)
  if not core.is_tensor(v) or v:dtype() ~= "bool" then fail(fn, what, "a bool tensor", v) end
  return v
end

--- causal(L): key j <= query i (the lower triangle).
function P.causal(L)
  length("causal", L)
  return core.ones(L, L, "bool"):tril()
end

--- full(L): every query sees every key (sparse_attention then equals exact attention).
function P.full(L)
  length("full", L)
  return core.ones(L, L, "bool")
end

--- local_1d(L, window [, causal]): |i - j| <= window (j <= i when causal).
function P.local_1d(L, window, causal)
  return C["local"](length("local_1d", L), int("local_1d", "window", window, 0),
    flag("local_1d", "causal", causal))
end

--- strided(L, stride [, causal]): Child et al. 2019's strided pattern,
--- |i - j| <= stride or (i - j) divisible by stride.
function P.strided(L, stride, causal)
  return C.strided(length("strided", L), int("strided", "stride", stride, 1), flag("strided", "causal", causal))
end

--- fixed(L, stride [, c = 1 [, causal]]): Child et al. 2019's fixed pattern,
--- the same stride-block as i, or one of the last c positions of any block.
function P.fixed(L, stride, c, causal)
  if type(c) == "boolean" and causal == nil then c, causal = nil, c end
  length("fixed", L)
  int("fixed", "stride", stride, 1)
  c = c == nil and 1 or int("fixed", "c", c, 0)
  if c > stride then fail("fixed", "c", "at most stride (" .. stride .. ")", c, 3) end
  return C.fixed(L, stride, c, flag("fixed", "causal", causal))
end

--- axial_2d(h, w [, causal]): positions of an h x w grid in raster order (L = h w)
--- see their row and their column.
function P.axial_2d(h, w, causal)
  return C.axial(int("axial_2d", "h", h, 0), int("axial_2d", "w", w, 0), flag("axial_2d", "causal", causal))
end

--- random(L, p [, seed = 0]): each (i, j) kept with probability p; the same
--- seed gives the same mask on every machine (a hash, not the global generator).
function P.random(L, p, seed)
  length("random", L)
  if type(p) ~= "number" or not (p >= 0 and p <= 1) then fail("random", "p", "a probability in [0, 1]", p, 3) end
  if seed ~= nil and math.type(seed) ~= "integer" then fail("random", "seed", "an integer", seed, 3) end
  return C.random(L, p, seed or 0)
end

--- global_tokens(L, positions): the listed positions (a list or a 1-d integer
--- tensor, 1-based) see every key and are seen by every query.
function P.global_tokens(L, idx)
  length("global_tokens", L)
  if type(idx) == "table" then
    for i, x in ipairs(idx) do
      if math.type(x) ~= "integer" then fail("global_tokens", "positions[" .. i .. "]", "an integer", x, 3) end
    end
    if #idx == 0 then return core.zeros(L, L, "bool") end
    idx = core.tensor(idx)
  elseif not (core.is_tensor(idx) and (idx:dtype() == "int64" or idx:dtype() == "int32") and idx:dim() <= 1) then
    fail("global_tokens", "positions", "a list or a 1-d integer tensor of 1-based positions", idx, 3)
  end
  return C.global(L, idx - 1)
end

local BIGBIRD = { block = 64, window = 3, globals = 2, randoms = 3, seed = 0, causal = false, blocks = false }

--- bigbird(L [, {block = 64, window = 3, globals = 2, randoms = 3, seed = 0,
---   causal = false, blocks = false}]): BigBird's block pattern (Zaheer et al.
--- 2020): a window of `window` blocks around the diagonal, the first `globals`
--- blocks global (rows and columns), `randoms` random blocks per other row.
--- (L, L) elements, or the (ceil(L/block), ceil(L/block)) block layout itself
--- when blocks = true.
function P.bigbird(L, o)
  length("bigbird", L)
  if o ~= nil and type(o) ~= "table" then fail("bigbird", "options", "a table", o, 3) end
  o = o or {}
  for k in pairs(o) do
    if BIGBIRD[k] == nil then
      error(string.format("patterns.bigbird: unknown option '%s' (block, window, globals, randoms, seed, causal, blocks)",
        tostring(k)), 2)
    end
  end
  local v = {}
  for k, d in pairs(BIGBIRD) do
    local x = o[k]
    if x == nil then x = d end
    if type(d) == "boolean" then flag("bigbird", k, x)
    elseif k == "seed" then
      if math.type(x) ~= "integer" then fail("bigbird", k, "an integer", x, 3) end
    else int("bigbird", k, x, k == "block" and 1 or 0) end
    v[k] = x
  end
  return C.bigbird(L, v.block, v.window, v.globals, v.randoms, v.seed, v.causal, v.blocks)
end

local function combine(fn, op, ...)
  local n = select("#", ...)
  if n == 0 then error("patterns." .. fn .. ": expected at least one mask", 3) end
  local acc = mask_arg(fn, "mask 1", (...))
  for i = 2, n do acc = op(acc, mask_arg(fn, "mask " .. i, (select(i, ...)))) end
  return acc
end

--- union(a, b, ...): kept where any is kept.
function P.union(...) return combine("union", core.logical_or, ...) end

--- intersect(a, b, ...): kept where all are kept.
function P.intersect(...) return combine("intersect", core.logical_and, ...) end

--- to_blocks(mask, block): (..., ceil(Lq/block), ceil(Lk/block)), a block kept
--- when any of its elements is (a coarser superset of mask).
function P.to_blocks(mask, block)
  mask_arg("to_blocks", "mask", mask)
  return C.to_blocks(mask, int("to_blocks", "block", block, 1))
end

--- from_blocks(layout, block, Lq [, Lk = Lq]): the element mask of a block layout.
function P.from_blocks(layout, block, Lq, Lk)
  mask_arg("from_blocks", "layout", layout)
  int("from_blocks", "block", block, 1)
  int("from_blocks", "Lq", Lq, 0)
  return C.from_blocks(layout, block, Lq, Lk == nil and Lq or int("from_blocks", "Lk", Lk, 0))
end

--- density(mask): the fraction of kept entries.
function P.density(mask)
  mask_arg("density", "mask", mask)
  if mask:numel() == 0 then return 0 end
  return mask:float():mean():item()
end

return P
