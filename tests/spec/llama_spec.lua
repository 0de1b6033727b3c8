-- The Llama family against HF transformers: tiny random checkpoints of llama
-- (llama3 RoPE), mistral (sliding window 4 < 12 tokens), qwen2 (q/k/v biases,
-- tied head, linear RoPE, stored bf16) and qwen3 (q/k RMSNorm, head_dim 32,
-- yarn RoPE), made by tests/fixtures/make_llama_fixtures.py with transformers
-- 5.17, load by their own names and reproduce transformers' logits and greedy
-- generations (single, batched with left padding), with and without the cache.
local as = require "attnswap"
local U = require "spec_util" -- tests/spec/spec_util.lua
local maxdiff, tmpdir, write, errmsg = U.maxdiff, U.tmpdir, U.write, U.errmsg

local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
local fixtures = src .. "/tests/fixtures/llama/"
local FAMILIES = { "llama", "mistral", "qwen2", "qwen3" }

local function copy_weights(from, dir) U.copy(from .. "/model.safetensors", dir .. "/model.safetensors") end

for _, family in ipairs(FAMILIES) do
  describe(family .. " (HF transformers)", function()
    local dir = fixtures .. family
    local model = as.models[family].from_pretrained(dir)
    local io_, meta = as.load(dir .. "/io.safetensors")
    local prompt = io_.input_ids:narrow(1, 1, 1)

    it("matches transformers' logits to 1e-4", function()
      local logits = model(io_.input_ids)
      assert.are.equal("(2, 12, 128)", tostring(logits:shape()))
      local d = maxdiff(logits, io_.logits)
      assert.is_true(d < 1e-4, "max diff " .. d)
    end)

    it("has transformers' RoPE frequencies", function()
      local ours, theirs = model.model.inv_freq, io_.inv_freq
      local tol = 1e-6
      local rel = ((ours - theirs):abs() / theirs):max():item()
      assert.is_true(rel < tol, "relative diff " .. rel)
      assert.is_true(math.abs(tonumber(meta.attention_scaling) - model.model.attention_scaling) < 1e-12)
    end)

    it("greedy generation gives transformers' tokens, with and without the cache", function()
      local with_cache = model:generate(prompt, { max_new_tokens = 8 })
      local without = model:generate(prompt, { max_new_tokens = 8, use_cache = false })
      assert.are.same(io_.generated:tolist(), with_cache:tolist())
      assert.are.same(with_cache:tolist(), without:tolist())
    end)

    it("batched prompts of different lengths, left-padded, give transformers' tokens", function()
      local want = io_.batch_generated:tolist()
      local got = model:generate(io_.batch_input_ids, { max_new_tokens = 8, attention_mask = io_.batch_attention_mask })
      assert.are.same(want, got:tolist())
      local nocache = model:generate(io_.batch_input_ids,
        { max_new_tokens = 8, attention_mask = io_.batch_attention_mask, use_cache = false })
      assert.are.same(want, nocache:tolist())
      -- the same prompts as Lua lists, padded here; the short one alone gives its own row
      local rows = io_.input_ids:tolist()
      local short = { table.unpack(rows[2], 1, 7) }
      assert.are.same(want, model:generate({ rows[1], short }, { max_new_tokens = 8 }):tolist())
      assert.are.same(io_.generated_short:tolist(), model:generate({ short }, { max_new_tokens = 8 }):tolist())
    end)

    it("the cache agrees with a full forward", function()
      local full = model(prompt)
      local _, past = model(prompt:narrow(2, 1, 7))
      local tail = model(prompt:narrow(2, 8, 5), { past = past })
      assert.is_true(maxdiff(tail, full:narrow(2, 8, 5)) < 1e-4)
    end)

    it("a padded row's logits equal the unpadded prompt's", function()
      local padded = model(io_.batch_input_ids, { attention_mask = io_.batch_attention_mask })
      local alone = model(io_.input_ids:narrow(1, 2, 1):narrow(2, 1, 7))
      assert.is_true(maxdiff(padded:narrow(1, 2, 1):narrow(2, 6, 7), alone) < 1e-4)
    end)
  end)
end

describe("swapping attention into the Llama family", function()
  local io_ = as.load(fixtures .. "llama/io.safetensors")
  local ids = io_.input_ids

  it("every layer's core is a causal scaled_dot_product that gets rotated q and grouped k, v", function()
    local model = as.models.llama.from_pretrained(fixtures .. "llama")
    local seen = {}
    local Probe = as.nn.class("ProbeAttention")
    function Probe:forward(q, k, v, mask)
      seen[#seen + 1] = { tostring(q:shape()), tostring(k:shape()), tostring(v:shape()) }
      return as.sdp_attention(q, k, v, mask, { causal = true })
    end
    local before = model(ids)
    for _, layer in ipairs(model.model.layers) do layer.self_attn.core = Probe() end
    local d = maxdiff(model(ids), before)
    assert.is_true(d < 1e-5, "max diff " .. d)
    assert.are.same({ "(2, 4, 12, 16)", "(2, 2, 12, 16)", "(2, 2, 12, 16)" }, seen[1])
  end)

  it("flash_attention gives the original's logits to 1e-5 and its tokens", function()
    for _, family in ipairs { "llama", "qwen2", "qwen3" } do
      local model = as.models[family].from_pretrained(fixtures .. family)
      local fio = as.load(fixtures .. family .. "/io.safetensors")
      local before = model(fio.input_ids)
      local _, report = as.swap_attention(model, "scaled_dot_product", "flash_attention")
      assert.are.equal(2, #report.swapped)
      assert.are.equal("FlashAttention", model.model.layers[1].self_attn.core:type())
      local d = maxdiff(model(fio.input_ids), before)
      assert.is_true(d < 1e-5, family .. ": max diff " .. d)
      assert.are.same(fio.generated:tolist(), model:generate(fio.input_ids:narrow(1, 1, 1), { max_new_tokens = 8 }):tolist())
    end
  end)

  it("linear_attention and local_attention run, with the cache, and change the output", function()
    for _, case in ipairs { { "linear_attention", {} }, { "local_attention", { window_size = 3 } } } do
      local model = as.models.llama.from_pretrained(fixtures .. "llama")
      local before = model(ids)
      as.swap_attention(model, "scaled_dot_product", case[1], case[2])
      local out = model(ids)
      assert.are.equal("(2, 12, 128)", tostring(out:shape()))
      assert.is_true(maxdiff(out, before) > 1e-3, case[1] .. " changed nothing")
      local g = model:generate(ids:narrow(1, 1, 1), { max_new_tokens = 6 })
      assert.are.equal("(1, 18)", tostring(g:shape()))
      assert.are.same(g:tolist(), model:generate(ids:narrow(1, 1, 1), { max_new_tokens = 6, use_cache = false }):tolist())
    end
  end)

  it("local_attention with a window covering the sequence equals the original", function()
    local model = as.models.llama.from_pretrained(fixtures .. "llama")
    local before = model(ids)
    as.swap_attention(model, "scaled_dot_product", "local_attention", { window_size = 64 })
    assert.is_true(maxdiff(model(ids), before) < 1e-5)
  end)

  it("mistral's sliding window is a causal local_attention core; the cache keeps only the window", function()
    local model = as.models.mistral.from_pretrained(fixtures .. "mistral")
    local core = model.model.layers[1].self_attn.core
    assert.are.equal("LocalAttention", core:type())
    assert.is_truthy(tostring(core):find("window_size=3, causal=true", 1, true))
    local mio = as.load(fixtures .. "mistral/io.safetensors")
    local _, past = model(mio.input_ids)
    -- a ring buffer of sliding_window = 4 keys (the next query's 3 and its own)
    assert.are.equal("ring", past[1].kind)
    assert.are.equal(4, past[1].k:size(3))
    assert.are.equal(12, past.length)
    -- flash in its place sees every key: a different model past the window
    local before = model(mio.input_ids)
    as.swap_attention(model, "local_attention", "flash_attention")
    local after = model(mio.input_ids)
    assert.is_true(maxdiff(after:narrow(2, 1, 4), before:narrow(2, 1, 4)) < 1e-5)
    assert.is_true(maxdiff(after, before) > 1e-3)
  end)

  it("an implementation with no causal form is refused, the model left as it was", function()
    local model = as.models.llama.from_pretrained(fixtures .. "llama")
    local err = errmsg(as.swap_attention, model, "scaled_dot_product", "efficient_attention")
    assert.is_truthy(err:find("efficient_attention", 1, true), err)
    assert.are.equal("ScaledDotProductAttention", model.model.layers[1].self_attn.core:type())
  end)

  it("sink_attention (StreamingLLM) swaps in and generates through the cache", function()
    local model = as.models.llama.from_pretrained(fixtures .. "llama")
    as.swap_attention(model, "scaled_dot_product", "sink_attention", { window_size = 4, num_sinks = 2 })
    local g = model:generate(ids:narrow(1, 1, 1), { max_new_tokens = 4 })
    assert.are.same(g:tolist(), model:generate(ids:narrow(1, 1, 1), { max_new_tokens = 4, use_cache = false }):tolist())
  end)

  it("a core that cannot run incrementally is named when the cache is asked for", function()
    local model = as.models.llama.from_pretrained(fixtures .. "llama")
    local Whole = as.nn.class("WholeSequenceAttention")
    function Whole:init(opts) self.causal = opts and opts.causal end
    function Whole:forward(q, k, v, mask) return as.sdp_attention(q, k, v, mask, { causal = true }) end
    as.register_attention("llama_spec_whole", Whole, { exact = true, incremental = false, replace = true })
    as.swap_attention(model, "scaled_dot_product", "llama_spec_whole", {}, { quiet = true })
    local err = errmsg(model.generate, model, ids:narrow(1, 1, 1), { max_new_tokens = 2 })
    assert.is_truthy(err:find("model.layers.0.self_attn.core (llama_spec_whole)", 1, true), err)
    assert.is_truthy(err:find("use_cache = false", 1, true), err)
    local g = model:generate(ids:narrow(1, 1, 1), { max_new_tokens = 8, use_cache = false })
    assert.are.same(io_.generated:tolist(), g:tolist())
  end)
end)

describe("Llama-family generation options", function()
  local model = as.models.llama.from_pretrained(fixtures .. "llama")
  local io_ = as.load(fixtures .. "llama/io.safetensors")
  local prompt = io_.input_ids:narrow(1, 1, 1)
  local greedy = io_.generated:tolist()[1]

  it("stops at an eos token and pads finished rows", function()
    local stop = greedy[15] -- the third new token
    local g = model:generate(prompt, { max_new_tokens = 8, eos_token_id = { 999, stop } })
    assert.are.same({ table.unpack(greedy, 1, 15) }, g:tolist()[1])
    local b = model:generate({ prompt:tolist()[1], { table.unpack(prompt:tolist()[1], 1, 7) } },
      { max_new_tokens = 8, eos_token_id = stop, pad_token_id = 0 })
    local row = b:tolist()[1]
    assert.are.same({ table.unpack(greedy, 1, 15) }, { table.unpack(row, 1, 15) })
    assert.are.same({ 0, 0, 0, 0, 0 }, { table.unpack(row, 16) }) -- the other row went on
  end)

  it("streams each step's tokens to the callback, which can stop it", function()
    local seen = {}
    model:generate(prompt, { max_new_tokens = 8, callback = function(t, step) seen[step] = t[1] end })
    assert.are.same({ table.unpack(greedy, 13, 20) }, seen)
    local n = 0
    local g = model:generate(prompt, { max_new_tokens = 8, callback = function() n = n + 1 return n < 3 end })
    assert.are.equal(15, g:size(2))
  end)

  it("samples reproducibly from a seed; top_k = 1 is greedy", function()
    local a = model:generate(prompt, { max_new_tokens = 8, do_sample = true, temperature = 1.5, top_p = 0.9, seed = 7 })
    local b = model:generate(prompt, { max_new_tokens = 8, do_sample = true, temperature = 1.5, top_p = 0.9, seed = 7 })
    assert.are.same(a:tolist(), b:tolist())
    local draws = {}
    for s = 1, 4 do
      draws[s] = table.concat(model:generate(prompt, { max_new_tokens = 8, do_sample = true, temperature = 2.0, seed = s }):tolist()[1], ",")
    end
    assert.is_true(draws[1] ~= draws[2] or draws[2] ~= draws[3] or draws[3] ~= draws[4], "four seeds, one draw")
    local k1 = model:generate(prompt, { max_new_tokens = 8, do_sample = true, top_k = 1, seed = 3 })
    assert.are.same(io_.generated:tolist(), k1:tolist())
  end)

  it("a prompt that runs past max_position_embeddings is an error naming it", function()
    local long = as.zeros({ 1, 127 }, "int64")
    local err = errmsg(model.generate, model, long, { max_new_tokens = 4 })
    assert.is_truthy(err:find("past max_position_embeddings = 128", 1, true), err)
  end)

  it("rejects bad options with their names", function()
    assert.is_truthy(errmsg(model.generate, model, prompt, { max_new_token = 8 }):find("did you mean 'max_new_tokens'", 1, true))
    assert.is_truthy(errmsg(model.generate, model, prompt, { temperature = 0 }):find("temperature should be a number > 0", 1, true))
    assert.is_truthy(errmsg(model.generate, model, prompt, { top_p = 1.5 }):find("top_p", 1, true))
    assert.is_truthy(errmsg(model.generate, model, prompt, { top_k = 0 }):find("top_k", 1, true))
    assert.is_truthy(errmsg(model.generate, model, { { 1, 2.5 } }, {}):find("id should be an integer", 1, true))
  end)
end)

describe("Llama-family configs", function()
  local tiny = { vocab_size = 32, hidden_size = 16, intermediate_size = 32, num_hidden_layers = 1,
    num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 16 }
  local function with(over)
    local c = {}
    for k, v in pairs(tiny) do c[k] = v end
    for k, v in pairs(over) do c[k] = v end
    return c
  end

  it("bad values are errors that name the key", function()
    local cases = {
      { { num_key_value_heads = 3 }, "not a multiple of num_key_value_heads = 3" },
      { { head_dim = 5 }, "'head_dim' should be an even positive integer" },
      { { hidden_act = "gelu" }, "hidden_act 'gelu' is not supported" },
      { { rope_scaling = { rope_type = "dynamic", factor = 2.0 } }, "rope type 'dynamic' is not supported" },
      { { rope_scaling = { rope_type = "llama3", factor = 8.0 } }, "needs 'low_freq_factor'" },
      { { rope_parameters = { rope_type = "linear", rope_theta = 1e4, factor = "2" } }, "'factor' should be a number" },
      { { sliding_window = 1, model_type = "mistral" }, "'sliding_window' should be an integer >= 2" },
      { { num_hidden_layers = 0 }, "'num_hidden_layers' should be a positive integer" },
      { { layer_types = { "full_attention", "full_attention" } }, "one type per layer (1)" },
      { { hidden_sizee = 16 }, "unknown option 'hidden_sizee'" },
      { { model_type = "falcon" }, "model_type 'falcon' is not a Llama-family model" },
    }
    for _, case in ipairs(cases) do
      local err = errmsg(as.models.llama.new, with(case[1]))
      assert.is_truthy(err:find(case[2], 1, true), err)
    end
  end)

  it("reads transformers 4.x RoPE configs (rope_theta + rope_scaling with 'type') as 5.x ones", function()
    local rope = require "attnswap.models.rope"
    local v5 = rope.params({ rope_parameters = { rope_type = "llama3", rope_theta = 500000.0, factor = 8.0,
      low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 64 } }, "t")
    local v4 = rope.params({ rope_theta = 500000.0, rope_scaling = { type = "llama3", factor = 8.0,
      low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 64 } }, "t")
    assert.are.same(v5, v4)
    assert.are.same({ rope_type = "default", rope_theta = 10000.0 }, rope.params({}, "t"))
  end)

  it("a 4.x config.json of the llama fixture loads and gives the same logits", function()
    local dir = tmpdir()
    copy_weights(fixtures .. "llama", dir)
    write(dir .. "/config.json", [[{"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
      "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "torch_dtype": "float32",
      "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64}, "tie_word_embeddings": false, "eos_token_id": 2}]])
    local model, family = as.models.from_pretrained(dir)
    assert.are.equal("llama", family)
    local io_ = as.load(fixtures .. "llama/io.safetensors")
    assert.is_true(maxdiff(model(io_.input_ids), io_.logits) < 1e-4)
    os.execute("rm -rf " .. dir)
  end)

  it("computes in the dtype asked for, whatever the checkpoint stores", function()
    local model = as.models.qwen2.from_pretrained(fixtures .. "qwen2", { dtype = "bfloat16" })
    assert.are.equal("bfloat16", model.model.layers[1].self_attn.q_proj.weight:dtype())
    local f32 = as.models.qwen2.from_pretrained(fixtures .. "qwen2")
    assert.are.equal("float32", f32.model.embed_tokens.weight:dtype())
    local io_ = as.load(fixtures .. "qwen2/io.safetensors")
    local logits = model(io_.input_ids)
    assert.are.equal("bfloat16", logits:dtype())
    local scale = io_.logits:abs():max():item()
    assert.is_true(maxdiff(logits, io_.logits) < 0.1 * scale)
  end)

  it("token ids out of range and positions past max_position_embeddings are errors", function()
    local model = as.models.llama(with {})
    assert.is_truthy(errmsg(model, as.tensor({ { 1, 32 } })):find("token id 32 is out of range (vocab_size = 32)", 1, true))
    local err = errmsg(model, as.zeros({ 1, 17 }, "int64"))
    assert.is_truthy(err:find("past max_position_embeddings = 16", 1, true), err)
  end)

  it("a tied head has no lm_head; an untied one does", function()
    assert.is_nil(as.models.llama(with { tie_word_embeddings = true }).lm_head)
    assert.are.equal("Linear", as.models.llama(with {}).lm_head:type())
    assert.is_truthy(as.models.qwen2(with {}).model.layers[1].self_attn.q_proj.bias)
    assert.is_nil(as.models.qwen2(with {}).model.layers[1].self_attn.o_proj.bias)
    assert.are.equal("RMSNorm", as.models.qwen3(with {}).model.layers[1].self_attn.k_norm:type())
  end)
end)

describe("as.models.from_pretrained", function()
  local root = src .. "/tests/fixtures/"

  it("dispatches on config.json to every family", function()
    for _, family in ipairs(FAMILIES) do
      local model, f = as.models.from_pretrained(fixtures .. family)
      assert.are.equal(family, f)
      assert.are.equal("LlamaForCausalLM", model:type())
    end
    local cases = { gpt2 = "GPT2LMHeadModel", bert = "BertModel", vit = "VisionTransformer" }
    for dir, class in pairs(cases) do
      local model, f = as.models.from_pretrained(root .. dir)
      assert.are.equal(dir, f)
      assert.are.equal(class, model:type())
    end
  end)

  it("falls back to architectures when there is no model_type", function()
    local dir = tmpdir()
    copy_weights(fixtures .. "mistral", dir)
    local f = assert(io.open(fixtures .. "mistral/config.json"))
    local text = f:read("a"):gsub('"model_type": "mistral",', "")
    f:close()
    write(dir .. "/config.json", text)
    local model, family = as.models.from_pretrained(dir)
    assert.are.equal("mistral", family)
    assert.are.equal("LocalAttention", model.model.layers[1].self_attn.core:type())
    os.execute("rm -rf " .. dir)
  end)

  it("an unknown family is an error naming the known ones", function()
    local dir = tmpdir()
    write(dir .. "/config.json", '{"model_type": "falcon", "architectures": ["FalconForCausalLM"]}')
    write(dir .. "/model.safetensors", "")
    local err = errmsg(as.models.from_pretrained, dir)
    assert.is_truthy(err:find("model_type 'falcon' is not a family attnswap knows", 1, true), err)
    assert.is_truthy(err:find("known: bert, gpt2, llama, mistral, qwen2, qwen3, vit", 1, true), err)
    write(dir .. "/config.json", '{"architectures": ["FalconForCausalLM"]}')
    err = errmsg(as.models.from_pretrained, dir)
    assert.is_truthy(err:find("architectures [FalconForCausalLM]", 1, true), err)
    os.execute("rm -rf " .. dir)
  end)

  it("a file without config.json says to use the family's loader", function()
    local err = errmsg(as.models.from_pretrained, fixtures .. "llama/model.safetensors")
    assert.is_truthy(err:find("no config.json", 1, true), err)
    assert.is_truthy(err:find("as.models.<family>.from_pretrained", 1, true), err)
  end)

  it("a hub name resolves through the local Hugging Face cache", function()
    local cache = tmpdir()
    local snap = cache .. "/models--tiny--qwen3/snapshots/0123456789abcdef"
    assert(os.execute("mkdir -p " .. snap .. " " .. cache .. "/models--tiny--qwen3/refs"))
    write(cache .. "/models--tiny--qwen3/refs/main", "0123456789abcdef")
    for _, name in ipairs { "config.json", "model.safetensors" } do U.copy(fixtures .. "qwen3/" .. name, snap .. "/" .. name) end
    local model, family = as.models.from_pretrained("tiny/qwen3", { cache_dir = cache })
    assert.are.equal("qwen3", family)
    local io_ = as.load(fixtures .. "qwen3/io.safetensors")
    assert.is_true(maxdiff(model(io_.input_ids), io_.logits) < 1e-4)
    os.execute("rm -rf " .. cache)
  end)
end)

describe("examples/generate.lua", function()
  local run = os.getenv("ATTNSWAP_RUN")

  local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("a")
    local ok, _, code = p:close()
    return out, ok and 0 or code
  end

  it("streams transformers' greedy tokens, and swaps with --attention", function()
    if not run then return pending("ATTNSWAP_RUN is not set") end
    local io_ = as.load(fixtures .. "llama/io.safetensors")
    local g = io_.generated:tolist()[1]
    local cmd = string.format("%s %s/examples/generate.lua --model %sllama --prompt-ids %s --max-new-tokens 8", run, src,
      fixtures, table.concat({ table.unpack(g, 1, 12) }, ","))
    local out, code = sh(cmd)
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find(table.concat({ table.unpack(g, 1, 12) }, " ") .. " | " ..
      table.concat({ table.unpack(g, 13, 20) }, " "), 1, true), out)
    out, code = sh(cmd .. " --attention flash_attention")
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("swapped 2 module(s) for 'flash_attention'", 1, true), out)
    assert.is_truthy(out:find(table.concat({ table.unpack(g, 13, 20) }, " "), 1, true), out)
    out, code = sh(cmd .. " --top-k x")
    assert.are.equal(2, code, out)
    assert.is_truthy(out:find("--top-k should be an integer", 1, true), out)
  end)

  it("streams text with the tokenizer beside the model", function()
    if not run then return pending("ATTNSWAP_RUN is not set") end
    local dir = tmpdir()
    as.manual_seed(5)
    local model = as.models.llama { vocab_size = 420, hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1,
      num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 64 }
    as.save(dir .. "/model.safetensors", model:state_dict())
    write(dir .. "/config.json", '{"model_type": "llama", "vocab_size": 420, "hidden_size": 32, "intermediate_size": 64, ' ..
      '"num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}')
    assert(os.execute(string.format("cp %s/tests/fixtures/tokenizers/llama3/tokenizer.json %s/", src, dir)))
    local tok = as.tokenizer.from_pretrained(dir)
    local ids = tok:encode("Hello world")
    local g = model:eval():generate({ ids }, { max_new_tokens = 5 }):tolist()[1]
    local text = tok:decode({ table.unpack(g, #ids + 1) }, { skip_special_tokens = true })
    local out, code = sh(string.format("%s %s/examples/generate.lua --model %s --prompt 'Hello world' --max-new-tokens 5",
      run, src, dir))
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("\nHello world" .. text .. "\n", 1, true), out)
    os.execute("rm -rf " .. dir)
  end)
end)

describe("sharded checkpoints", function()
  it("load through model.safetensors.index.json, each shard holding part of the weights", function()
    local dir = tmpdir()
    assert(os.execute(string.format("cp %sqwen3/config.json %s/", fixtures, dir)))
    local sd = as.load(fixtures .. "qwen3/model.safetensors")
    local a, b, map = {}, {}, {}
    for k, v in pairs(sd) do
      if k:match("^model%.layers%.1%.") or k == "lm_head.weight" then b[k], map[k] = v, "model-00002-of-00002.safetensors"
      else a[k], map[k] = v, "model-00001-of-00002.safetensors" end
    end
    as.save(dir .. "/model-00001-of-00002.safetensors", a)
    as.save(dir .. "/model-00002-of-00002.safetensors", b)
    local entries = {}
    for k, f in pairs(map) do entries[#entries + 1] = string.format('"%s": "%s"', k, f) end
    write(dir .. "/model.safetensors.index.json", '{"metadata": {}, "weight_map": {' .. table.concat(entries, ", ") .. "}}")
    local model, family = as.models.from_pretrained(dir)
    assert.are.equal("qwen3", family)
    local io_ = as.load(fixtures .. "qwen3/io.safetensors")
    assert.is_true(maxdiff(model(io_.input_ids), io_.logits) < 1e-4)
    -- a shard the map names but the folder lacks is an error naming it
    os.remove(dir .. "/model-00002-of-00002.safetensors")
    local err = errmsg(as.models.qwen3.from_pretrained, dir)
    assert.is_truthy(err:find("names shard 'model-00002-of-00002.safetensors'", 1, true), err)
    os.execute("rm -rf " .. dir)
  end)
end)
