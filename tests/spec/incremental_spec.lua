-- The incremental protocol (attention/incremental.lua): every core with an
-- incremental form decodes through its own state — the growing K/V (exact
-- attention), a ring buffer of the window (local, sink), a recurrent state
-- (linear, performer) — and gives what the whole prefix gives without a
-- cache: step by step against the core's forward, and in the models
-- (the tiny Llama-family and GPT-2 fixtures), logits to 1e-4 and the same
-- greedy tokens.  States of bounded kinds stay bounded.
local as = require "attnswap"
local U = require "spec_util" -- tests/spec/spec_util.lua
local maxdiff, errmsg = U.maxdiff, U.errmsg
local I = require "attnswap.attention.incremental"

local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
local fixtures = src .. "/tests/fixtures/"

-- name, options, state kind
local CORES = {
  { "scaled_dot_product", {}, "kv" },
  { "flash_attention", {}, "kv" },
  { "local_attention", { window_size = 3 }, "ring" },
  { "sink_attention", { window_size = 4, num_sinks = 2 }, "ring" },
  { "linear_attention", {}, "recurrent" },
  { "performer_attention", { nb_features = 24 }, "recurrent" },
}

local function new_core(case)
  local o = { causal = true }
  for k, v in pairs(case[2]) do o[k] = v end
  return as.attention.new(case[1], o)
end

describe("core:step against the core's forward", function()
  local B, H, Hkv, D, L = 2, 4, 2, 8, 90
  as.manual_seed(11)
  local q, k, v = as.randn(B, H, L, D), as.randn(B, Hkv, L, D), as.randn(B, Hkv, L, D)
  -- row 2 left-padded by 3 tokens
  local keep = as.ones({ B, L }, "bool")
  keep[2]:narrow(1, 1, 3):fill_(false)
  -- chunks of new tokens: a prompt, single tokens, a block, one past 64 (the recurrent form's block)
  local chunks = { 7, 1, 1, 5, 1, 1, 1, 70, 1, 1, 1 }

  for _, case in ipairs(CORES) do
    it(case[1] .. " (" .. case[3] .. " state) gives each prefix's rows, padded or not", function()
      local c = new_core(case)
      for _, masked in ipairs { false, true } do
        local state, at = nil, 0
        for _, n in ipairs(chunks) do
          local function part(t) return t:narrow(3, at + 1, n) end
          local kp = masked and keep:narrow(2, at + 1, n) or nil
          local out
          out, state = I.stepper(c)(part(q), part(k), part(v), state, kp)
          assert.are.equal(case[3], state.kind)
          at = at + n
          -- the forward over the prefix (what a model without a cache computes), its last n rows
          local function prefix(t) return t:narrow(3, 1, at) end
          local mask = masked and keep:narrow(2, 1, at):reshape(B, 1, 1, at) or nil
          local want = c(prefix(q), prefix(k), prefix(v), mask):narrow(3, at - n + 1, n)
          local d = maxdiff(out, want)
          assert.is_true(d < 1e-4, string.format("%s after %d tokens (masked %s): max diff %g", case[1], at,
            tostring(masked), d))
        end
        assert.are.equal(L, state.length)
      end
    end)
  end

  it("every step runs on the ops path too (what a CUDA tensor takes)", function()
    local P = require "attnswap.attention.ops_path"
    for _, case in ipairs(CORES) do
      local c = new_core(case)
      local state, at = nil, 0
      P.force = true
      local ok, err = pcall(function()
        for _, n in ipairs { 9, 1, 1, 3, 1 } do
          local function part(t) return t:narrow(3, at + 1, n) end
          local out
          out, state = I.stepper(c)(part(q), part(k), part(v), state, keep:narrow(2, at + 1, n))
          at = at + n
          local function prefix(t) return t:narrow(3, 1, at) end
          local want = c(prefix(q), prefix(k), prefix(v), keep:narrow(2, 1, at):reshape(B, 1, 1, at))
          local d = maxdiff(out, want:narrow(3, at - n + 1, n))
          assert(d < 1e-4, string.format("%s after %d tokens: max diff %g", case[1], at, d))
        end
      end)
      P.force = false
      assert.is_true(ok, tostring(err))
    end
  end)

  it("a ring holds at most window (+ sinks) keys, written in place once full", function()
    local c = new_core(CORES[4]) -- sink_attention, window 4, 2 sinks
    local state
    for t = 1, 20 do
      local _, s = c:step(q:narrow(3, t, 1), k:narrow(3, t, 1), v:narrow(3, t, 1), state)
      if state and t > 7 then assert.are.equal(state.k, s.k) end -- the same buffer
      state = s
      assert.is_true(state.k:size(3) <= 6, "held " .. state.k:size(3))
    end
    assert.are.equal(6, state.k:size(3))
    -- the sinks are the first two keys, the rest the last four in some order
    assert.is_true(maxdiff(state.k:narrow(3, 1, 2), k:narrow(3, 1, 2)) == 0)
    local l = new_core(CORES[3]) -- local_attention, window_size 3: 4 keys, its own included
    state = nil
    for t = 1, 20 do
      _, state = l:step(q:narrow(3, t, 1), k:narrow(3, t, 1), v:narrow(3, t, 1), state)
      assert.is_true(state.k:size(3) <= 4, "held " .. state.k:size(3))
    end
    assert.are.equal(4, state.k:size(3))
    -- a long prompt leaves only the window too
    _, state = l:step(q, k, v, nil)
    assert.are.equal(4, state.k:size(3))
    assert.is_true(maxdiff(state.k, k:narrow(3, L - 3, 4)) == 0)
  end)

  it("a recurrent state keeps its shape whatever the number of tokens", function()
    for _, case in ipairs { CORES[5], CORES[6] } do
      local c = new_core(case)
      local _, state = c:step(q:narrow(3, 1, 2), k:narrow(3, 1, 2), v:narrow(3, 1, 2), nil)
      local shapes = {}
      for key, t in pairs(state) do if as.is_tensor(t) then shapes[key] = tostring(t:shape()) end end
      local bytes = I.bytes(state)
      for t = 3, L do
        _, state = c:step(q:narrow(3, t, 1), k:narrow(3, t, 1), v:narrow(3, t, 1), state)
      end
      for key, t in pairs(state) do
        if as.is_tensor(t) then assert.are.equal(shapes[key], tostring(t:shape()), case[1] .. "." .. key) end
      end
      assert.are.equal(bytes, I.bytes(state))
      assert.are.equal(L, state.length)
    end
    local _, s = new_core(CORES[5]):step(q, k, v, nil)
    assert.are.equal("(2, 2, 8, 8)", tostring(s.S:shape())) -- (B, Hkv, D, Dv): per key/value head
    assert.are.equal("(2, 2, 8, 1)", tostring(s.z:shape()))
    _, s = new_core(CORES[6]):step(q, k, v, nil)
    assert.are.equal("(2, 2, 24, 8)", tostring(s.A:shape())) -- (B, Hkv, m, Dv)
  end)

  it("the K/V of exact attention grows by each token", function()
    local step = I.stepper(new_core(CORES[1]))
    local _, state = step(q:narrow(3, 1, 5), k:narrow(3, 1, 5), v:narrow(3, 1, 5), nil)
    _, state = step(q:narrow(3, 6, 1), k:narrow(3, 6, 1), v:narrow(3, 6, 1), state)
    assert.are.equal(6, state.k:size(3))
    assert.is_true(maxdiff(state.v, v:narrow(3, 1, 6)) == 0)
    -- one token a step: the buffers double when full (5 -> 10 -> 20), so the
    -- cache allocates a logarithmic number of times, not twice a step
    local caps = {}
    for t = 7, 18 do
      _, state = step(q:narrow(3, t, 1), k:narrow(3, t, 1), v:narrow(3, t, 1), state)
      caps[state.buf_k:size(3)] = true
    end
    assert.are.same({ [10] = true, [20] = true }, caps)
    assert.are.equal(18, state.k:size(3))
    assert.is_true(maxdiff(state.k, k:narrow(3, 1, 18)) == 0 and maxdiff(state.v, v:narrow(3, 1, 18)) == 0)
  end)

  it("non-causal windows and linear forms have no step", function()
    local l = as.attention.new("local_attention", { window_size = 2 })
    assert.is_truthy(errmsg(l.step, l, q, k, v, nil):find("needs causal = true", 1, true))
    local lin = as.attention.new("linear_attention", {})
    assert.is_truthy(errmsg(lin.step, lin, q, k, v, nil):find("needs causal = true", 1, true))
    local step, why = I.stepper(as.attention.new("nystrom_attention", {}))
    assert.is_nil(step)
    assert.is_truthy(why:find("incremental = false", 1, true), why)
  end)
end)

-- How far a model's logits through the cache may be from a forward without
-- one: 1e-4, but 1e-4 of the logits' size for performer_attention, whose
-- forward stabilises every row's key features with the max over all the
-- keys it is given, later ones included; through the 1e-6 floor of the
-- features an earlier row then moves by ~1e-7 when a key is appended (see
-- below), which the layers above amplify.  The cache computes each row with
-- the keys up to it.
local function tolerance(name, logits)
  if name == "performer_attention" then return 1e-4 * logits:abs():max():item() end
  return 1e-4
end

-- The logits of each decoding step through the cache against a forward over
-- the whole prefix without one, and the greedy tokens of both.
local function check_model(model, prompt, n, label, name)
  local logits, past = model(prompt)
  local ids = prompt:tolist()[1]
  for _ = 1, n do
    local last = logits:narrow(2, logits:size(2), 1)
    local full = model(as.tensor({ ids }, "int64"), { use_cache = false })
    local d = maxdiff(last, full:narrow(2, full:size(2), 1))
    assert.is_true(d < tolerance(name, last), string.format("%s after %d tokens: max diff %g", label, #ids, d))
    local nxt = last:reshape(-1):argmax():item() - 1
    ids[#ids + 1] = nxt
    logits, past = model(as.tensor({ { nxt } }, "int64"), { past = past })
  end
  local with = model:generate(prompt, { max_new_tokens = n, eos_token_id = false })
  local without = model:generate(prompt, { max_new_tokens = n, use_cache = false, eos_token_id = false })
  assert.are.same(without:tolist(), with:tolist(), label)
  assert.are.same({ ids }, with:tolist(), label)
  return past
end

describe("generation with each core's cache equals generation without it", function()
  for _, family in ipairs { "llama", "qwen2", "qwen3" } do
    local io_ = as.load(fixtures .. "llama/" .. family .. "/io.safetensors")
    local prompt = io_.input_ids:narrow(1, 1, 1)
    for _, case in ipairs(CORES) do
      it(family .. " with " .. case[1], function()
        local model = as.models[family].from_pretrained(fixtures .. "llama/" .. family)
        as.manual_seed(3)
        as.swap_attention(model, "scaled_dot_product", case[1], case[2], { quiet = true })
        local past = check_model(model, prompt, 10, family .. "/" .. case[1], case[1])
        assert.are.equal(case[3], past[1].kind)
        -- left-padded batches too, cached and not
        local rows = io_.input_ids:tolist()
        local batch = { rows[1], { table.unpack(rows[2], 1, 7) } }
        assert.are.same(model:generate(batch, { max_new_tokens = 6, use_cache = false }):tolist(),
          model:generate(batch, { max_new_tokens = 6 }):tolist())
      end)
    end
  end

  it("mistral's sliding-window layers decode through their ring buffer", function()
    local model = as.models.mistral.from_pretrained(fixtures .. "llama/mistral")
    local io_ = as.load(fixtures .. "llama/mistral/io.safetensors")
    local past = check_model(model, io_.input_ids:narrow(1, 1, 1), 10, "mistral")
    assert.are.equal("ring", past[1].kind)
    assert.are.equal(4, past[1].k:size(3)) -- sliding_window = 4 keys
    assert.are.equal(22, past.length)
  end)

  for _, case in ipairs(CORES) do
    it("GPT-2 with " .. case[1], function()
      local model = as.models.gpt2.from_pretrained(fixtures .. "gpt2")
      local io_ = as.load(fixtures .. "gpt2/io.safetensors")
      as.manual_seed(3)
      as.swap_attention(model, "scaled_dot_product", case[1], case[2], { quiet = true })
      local past = check_model(model, io_.input_ids:narrow(1, 1, 1), 10, "gpt2/" .. case[1], case[1])
      assert.are.equal(case[3], past[1].kind)
    end)
  end

  it("several new tokens after a cache (a recurrent block past 64 tokens) equal the full forward", function()
    as.manual_seed(5)
    local ids = (as.rand(1, 110) * 127):long()
    for _, case in ipairs(CORES) do
      local model = as.models.llama.from_pretrained(fixtures .. "llama/llama")
      as.swap_attention(model, "scaled_dot_product", case[1], case[2], { quiet = true })
      local full = model(ids, { use_cache = false })
      local _, past = model(ids:narrow(2, 1, 30))
      local tail = model(ids:narrow(2, 31, 80), { past = past })
      local d = maxdiff(tail, full:narrow(2, 31, 80))
      assert.is_true(d < tolerance(case[1], full), case[1] .. ": max diff " .. d)
    end
  end)

  it("performer's forward: a row moves (by the floor only) when a later key is appended", function()
    as.manual_seed(2)
    local c = as.attention.new("performer_attention", { causal = true, nb_features = 24 })
    local q, k, v = as.randn(1, 2, 9, 8) * 2, as.randn(1, 2, 9, 8) * 2, as.randn(1, 2, 9, 8)
    c(q, k, v) -- draws the projection w
    -- Key 9 of head 1 along the longest feature w_f, sized so that its
    -- exponent s |w_f|^2 (1 - s / 2) (x~ = s w_f, x~ = x D^-1/4) tops the first
    -- eight keys' largest by exactly 0.01: the head's stabiliser grows by that
    -- (feature g gives s (w_g . w_f) - s^2 |w_f|^2 / 2, no more for s < 1).  A
    -- random key need not (scaled up, its -|x~|^2 / 2 wins), and whether it
    -- did hung on the draw.  Head 2's key 9 repeats its key 1: no new max
    -- there.  How far the floor moves a row depends on the features' sizes:
    -- the bound is for this seed's draw (4.6e-6).
    local w = c.projection
    local n2 = (w * w):sum(2)
    local f = n2:argmax():item() -- 1-based
    local xs = k:narrow(3, 1, 8) * (8 ^ -0.25)
    local e = xs:matmul(w:t()) - (xs * xs):sum(4, true) * 0.5
    local target = e[1][1]:max():item() + 0.01
    local nf = n2[f]
    assert.is_true(2 * target < nf, "no key along w_f reaches " .. target)
    local scale = 1 - math.sqrt(1 - 2 * target / nf)
    k[1][1][9]:copy_(w[f] * (scale * 8 ^ 0.25))
    k[1][2][9]:copy_(k[1][2][1])
    local short = c(q:narrow(3, 1, 8), k:narrow(3, 1, 8), v:narrow(3, 1, 8))
    local long = c(q, k, v):narrow(3, 1, 8)
    local d = maxdiff(short, long)
    assert.is_true(d > 0 and d < 1e-4, "moved by " .. d)
  end)
end)

describe("a core written in Lua", function()
  local io_ = as.load(fixtures .. "llama/llama/io.safetensors")
  local prompt = io_.input_ids:narrow(1, 1, 1)

  it("decodes through its own step when it has one, else through the growing K/V", function()
    local Mine = as.nn.class("IncrementalSpecAttention")
    function Mine:init(opts) self.causal = opts and opts.causal end
    function Mine:forward(q, k, v, mask) return as.sdp_attention(q, k, v, mask, { causal = true }) end
    local steps = 0
    function Mine:step(q, k, v, state, keep)
      steps = steps + 1
      return I.kv_step(self, q, k, v, state, keep)
    end
    as.register_attention("incremental_spec_mine", Mine, { exact = true, incremental = true, replace = true })
    local model = as.models.llama.from_pretrained(fixtures .. "llama/llama")
    as.swap_attention(model, "scaled_dot_product", "incremental_spec_mine", {}, { quiet = true })
    assert.are.same(io_.generated:tolist(), model:generate(prompt, { max_new_tokens = 8 }):tolist())
    assert.are.equal(2 * 8, steps) -- two layers, a prompt and 7 single tokens
    Mine.step = nil
    local _, past = model(prompt)
    assert.are.equal("kv", past[1].kind)
    assert.are.same(io_.generated:tolist(), model:generate(prompt, { max_new_tokens = 8 }):tolist())
  end)

  it("a core with no incremental form: a plain forward works, extending a cache is an error", function()
    local Whole = as.nn.class("IncrementalSpecWhole")
    function Whole:init(opts) self.causal = opts and opts.causal end
    function Whole:forward(q, k, v, mask) return as.sdp_attention(q, k, v, mask, { causal = true }) end
    as.register_attention("incremental_spec_whole", Whole, { exact = true, incremental = false, replace = true })
    local model = as.models.llama.from_pretrained(fixtures .. "llama/llama")
    local before = model(prompt)
    as.swap_attention(model, "scaled_dot_product", "incremental_spec_whole", {}, { quiet = true })
    local logits, past = model(prompt)
    assert.is_true(maxdiff(logits, before) < 1e-5)
    assert.is_nil(past[1])
    local err = errmsg(model, prompt:narrow(2, 1, 1), { past = past })
    assert.is_truthy(err:find("no state for layer 1", 1, true), err)
    err = errmsg(model.generate, model, prompt, { max_new_tokens = 2 })
    assert.is_truthy(err:find("model.layers.0.self_attn.core (incremental_spec_whole)", 1, true), err)
  end)
end)
