-- Checkpoints by hub name, from a Hugging Face cache built here in a temp
-- folder (the layout huggingface_hub writes: refs/main -> snapshots/<commit>/,
-- files linked into blobs/).  Nothing is downloaded.
local as = require "attnswap"
local U = require "spec_util" -- tests/spec/spec_util.lua
local sh, tmpdir, write, copy = U.sh, U.tmpdir, U.write, U.copy
local hub = require "attnswap.models.hub"
local common = require "attnswap.models.common"

local RUN = assert(os.getenv("ATTNSWAP_RUN"), "ATTNSWAP_RUN is not set")
local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
local fixtures = src .. "/tests/fixtures/"
local COMMIT = "0123456789abcdef0123456789abcdef01234567"

local function q(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

-- A cache holding repo_id at COMMIT (refs/main and refs/<extra ref>) with the
-- files of fixture folder `fixture`; model.safetensors is a link into blobs/.
local function fake_cache(root, repo_id, fixture, refs)
  local repo = root .. "/" .. hub.repo_folder(repo_id)
  local snap = repo .. "/snapshots/" .. COMMIT
  assert(os.execute("mkdir -p " .. q(repo .. "/refs") .. " " .. q(snap) .. " " .. q(repo .. "/blobs")))
  for _, r in ipairs(refs or { "main" }) do write(repo .. "/refs/" .. r, COMMIT) end
  if fixture then
    copy(fixtures .. fixture .. "/config.json", snap .. "/config.json")
    copy(fixtures .. fixture .. "/model.safetensors", repo .. "/blobs/aa11")
    assert(os.execute("ln -s ../../blobs/aa11 " .. q(snap .. "/model.safetensors")))
  end
  return repo, snap
end

local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function has(s, part) assert.is_truthy(s:find(part, 1, true), "no '" .. part .. "' in:\n" .. s) end

describe("hub names", function()
  it("parse as 'name', 'org/name' and 'org/name@revision'; paths do not", function()
    assert.are.same({ "gpt2" }, { hub.parse("gpt2") })
    assert.are.same({ "Qwen/Qwen2.5-0.5B" }, { hub.parse("Qwen/Qwen2.5-0.5B") })
    assert.are.same({ "org/name", "v1.0" }, { hub.parse("org/name@v1.0") })
    assert.are.same({ "org/name", "refs/pr/1" }, { hub.parse("org/name@refs/pr/1") })
    for _, s in ipairs { "/nonexistent", "./gpt2", "a/b/c", "../x", "org/..", "org/name@../../x", "a--b", "x.", "" } do
      assert.is_nil(hub.parse(s), s)
    end
    assert.are.equal("models--gpt2", hub.repo_folder("gpt2"))
    assert.are.equal("models--Qwen--Qwen2.5-0.5B", hub.repo_folder("Qwen/Qwen2.5-0.5B"))
  end)

  it("find the cache as huggingface_hub does: HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME, ~/.cache", function()
    local function from(vars) return function(name) return vars[name] end end
    local all = { HF_HUB_CACHE = "/a", HF_HOME = "/b", XDG_CACHE_HOME = "/c", HOME = "/h" }
    assert.are.same({ "/a", "HF_HUB_CACHE" }, { hub.cache_dir(from(all)) })
    all.HF_HUB_CACHE = ""
    assert.are.same({ "/b/hub", "HF_HOME/hub" }, { hub.cache_dir(from(all)) })
    all.HF_HOME = nil
    assert.are.same({ "/c/huggingface/hub", "XDG_CACHE_HOME/huggingface/hub" }, { hub.cache_dir(from(all)) })
    all.XDG_CACHE_HOME = nil
    assert.are.same({ "/h/.cache/huggingface/hub", "~/.cache/huggingface/hub" }, { hub.cache_dir(from(all)) })
    assert.are.equal("/h/x/hub", (hub.cache_dir(from { HF_HOME = "~/x", HOME = "/h" })))
    assert.is_nil((hub.cache_dir(from {})))
  end)
end)

describe("from_pretrained by hub name", function()
  local root = tmpdir()
  fake_cache(root, "test/tiny-gpt2", "gpt2", { "main", "v1" })
  fake_cache(root, "tiny-bert", "bert")
  fake_cache(root, "test/tiny-vit", "vit")
  local gio = as.load(fixtures .. "gpt2/io.safetensors")
  local function maxdiff(a, b) return (a:float() - b:float()):abs():max():item() end

  it("loads 'org/name' and 'name' from the cache's snapshot", function()
    local g = as.models.gpt2.from_pretrained("test/tiny-gpt2", { cache_dir = root })
    assert.is_true(maxdiff(g(gio.input_ids), gio.logits) < 1e-4)
    local b = as.models.bert.from_pretrained("tiny-bert", { cache_dir = root })
    assert.are.equal(32, b.config.hidden_size)
    local v = as.models.vit.from_pretrained("test/tiny-vit", { cache_dir = root })
    assert.are.equal(2, #v.blocks:children())
  end)

  it("loads the hub's own layouts: GPT-2 without 'transformer.', BERT with LayerNorm gamma/beta", function()
    local function restage(repo_id, fixture, rename)
      local _, snap = fake_cache(root, repo_id)
      copy(fixtures .. fixture .. "/config.json", snap .. "/config.json")
      local sd = {}
      for k, v in pairs(as.load(fixtures .. fixture .. "/model.safetensors")) do sd[rename(k)] = v end
      as.save(snap .. "/model.safetensors", sd)
    end
    restage("openai-community/gpt2", "gpt2", function(k) return (k:gsub("^transformer%.", "")) end)
    local g = as.models.gpt2.from_pretrained("openai-community/gpt2", { cache_dir = root })
    assert.is_true(maxdiff(g(gio.input_ids), gio.logits) < 1e-4)
    restage("google-bert/bert-tiny", "bert", function(k)
      return "bert." .. k:gsub("LayerNorm%.weight$", "LayerNorm.gamma"):gsub("LayerNorm%.bias$", "LayerNorm.beta")
    end)
    local bio = as.load(fixtures .. "bert/io.safetensors")
    local b = as.models.bert.from_pretrained("google-bert/bert-tiny", { cache_dir = root })
    local h = b(bio.input_ids, { attention_mask = bio.attention_mask, token_type_ids = bio.token_type_ids })
    assert.is_true(maxdiff(h, bio.last_hidden_state) < 1e-4)
  end)

  it("takes a revision as name@rev, as an option, or as a commit hash", function()
    local g = as.models.gpt2.from_pretrained("test/tiny-gpt2@v1", { cache_dir = root })
    assert.is_true(maxdiff(g(gio.input_ids), gio.logits) < 1e-4)
    as.models.gpt2.from_pretrained("test/tiny-gpt2", { cache_dir = root, revision = "v1" })
    as.models.gpt2.from_pretrained("test/tiny-gpt2@" .. COMMIT, { cache_dir = root })
    local err = err_of(as.models.gpt2.from_pretrained, "test/tiny-gpt2", { cache_dir = root, revision = "v2" })
    has(err, "gpt2.from_pretrained: 'test/tiny-gpt2' is in the Hugging Face cache")
    has(err, "no file " .. root .. "/models--test--tiny-gpt2/refs/v2")
    has(err, "huggingface-cli download test/tiny-gpt2 --revision v2 --include '*.safetensors' '*.json'")
  end)

  it("says where it looked and how to get the files when the name is not there", function()
    local err = err_of(as.models.gpt2.from_pretrained, "org/absent", { cache_dir = root })
    has(err, "gpt2.from_pretrained: 'org/absent' is not a local folder and not in the Hugging Face cache")
    has(err, "nothing is downloaded")
    has(err, "looked for the folder ./org/absent")
    has(err, "looked for the folder " .. root .. "/models--org--absent")
    has(err, "huggingface-cli download org/absent --include '*.safetensors' '*.json'")
    has(err, "hf download org/absent --include '*.safetensors' '*.json'")
    err = err_of(as.models.gpt2.from_pretrained, "/nonexistent")
    has(err, "gpt2.from_pretrained: '/nonexistent' is neither a .safetensors file, a folder, nor a hub name")
  end)

  it("names the file when refs/main is not a commit or the snapshot is missing", function()
    local repo = fake_cache(root, "bad/ref")
    write(repo .. "/refs/main", "<html>not a hash</html>")
    local err = err_of(as.models.gpt2.from_pretrained, "bad/ref", { cache_dir = root })
    has(err, repo .. "/refs/main should hold a commit hash (hex digits), got \"<html>not a hash</html>\"")
    write(repo .. "/refs/main", string.rep("f", 40))
    err = err_of(as.models.gpt2.from_pretrained, "bad/ref", { cache_dir = root })
    has(err, "the cache has no folder " .. repo .. "/snapshots/" .. string.rep("f", 40) .. " (an interrupted download?)")
  end)

  it("refuses a PyTorch pickle, with how to convert it, and never opens it as weights", function()
    local _, snap = fake_cache(root, "old/pickled")
    copy(fixtures .. "gpt2/config.json", snap .. "/config.json")
    write(snap .. "/pytorch_model.bin", "\x80\x02cos\nsystem\n(S'echo pwned'\ntR.")
    local err = err_of(as.models.gpt2.from_pretrained, "old/pickled", { cache_dir = root })
    has(err, "gpt2.from_pretrained: '" .. snap .. "/pytorch_model.bin' is a PyTorch pickle, which attnswap never loads")
    has(err, "huggingface-cli download old/pickled --include '*.safetensors' '*.json'")
    has(err, "from safetensors.torch import save_file")
    has(err, "weights_only=True")
    -- the same for a folder, and for the file named directly
    local dir = tmpdir()
    write(dir .. "/pytorch_model.bin", "\x80\x02}q\x00.")
    err = err_of(as.models.bert.from_pretrained, dir)
    has(err, "bert.from_pretrained: '" .. dir .. "/pytorch_model.bin' is a PyTorch pickle")
    err = err_of(as.models.vit.from_pretrained, dir .. "/pytorch_model.bin")
    has(err, "vit.from_pretrained: '" .. dir .. "/pytorch_model.bin' is a PyTorch pickle")
    has(err, "save_file(")
    os.execute("rm -rf " .. q(dir))
  end)

  it("names config.json and what is wrong in it", function()
    local dir = tmpdir()
    copy(fixtures .. "gpt2/model.safetensors", dir .. "/model.safetensors")
    write(dir .. "/config.json", '{\n  "n_embd": 32,\n  "n_head": ,\n}')
    local err = err_of(as.models.gpt2.from_pretrained, dir)
    has(err, "gpt2.from_pretrained: " .. dir .. "/config.json is not valid JSON: invalid JSON near byte")
    has(err, "(line 3)")
    write(dir .. "/config.json", "[1, 2]")
    err = err_of(as.models.gpt2.from_pretrained, dir)
    has(err, dir .. "/config.json should hold a JSON object of options, got an array")
    write(dir .. "/config.json", '{"n_embd": "32", "n_head": 4}')
    err = err_of(as.models.gpt2.from_pretrained, dir)
    has(err, "gpt2.from_pretrained: " .. dir .. "/config.json: 'n_embd' should be a number (like 768), got string 32")
    os.remove(dir .. "/config.json")
    assert(os.execute("ln -s /dev/zero " .. q(dir .. "/config.json")))
    err = err_of(as.models.gpt2.from_pretrained, dir)
    has(err, dir .. "/config.json should be a small JSON file, got more than 8 MiB")
    os.remove(dir .. "/config.json")
    write(dir .. "/config.json", '{"model_args": 3}')
    err = err_of(as.models.vit.from_pretrained, dir)
    has(err, dir .. "/config.json: 'model_args' should be an object, got number")
    os.execute("rm -rf " .. q(dir))
  end)

  it("checks that model.safetensors exists without reading it into Lua", function()
    local dir = tmpdir()
    as.save(dir .. "/model.safetensors", { w = as.zeros(4 * 1024 * 1024) }) -- 16 MiB
    collectgarbage()
    collectgarbage("stop")
    local before = collectgarbage("count")
    local weights = common.locate("gpt2", dir)
    local grown = collectgarbage("count") - before
    collectgarbage("restart")
    assert.are.equal(dir .. "/model.safetensors", weights)
    assert.is_true(grown < 1024, string.format("locate grew the Lua heap by %.0f KiB", grown))
    os.execute("rm -rf " .. q(dir))
  end)

  it("finds the cache through HF_HUB_CACHE and HF_HOME in the environment", function()
    local script = [[local g = as.models.gpt2.from_pretrained("test/tiny-gpt2"); print(g.config.n_embd)]]
    local out, code = sh("HF_HUB_CACHE=" .. q(root) .. " " .. q(RUN) .. " -e " .. q(script))
    assert.are.equal(0, code, out)
    assert.are.equal("32\n", out)
    local home = tmpdir()
    assert(os.execute("ln -s " .. q(root) .. " " .. q(home .. "/hub")))
    out, code = sh("env -u HF_HUB_CACHE -u HUGGINGFACE_HUB_CACHE HF_HOME=" .. q(home) .. " " .. q(RUN) .. " -e " .. q(script))
    assert.are.equal(0, code, out)
    assert.are.equal("32\n", out)
    out, code = sh("env -u HF_HUB_CACHE -u HUGGINGFACE_HUB_CACHE HF_HOME=" .. q(home) .. " " .. q(RUN) ..
      " -e " .. q([[as.models.gpt2.from_pretrained("gpt2")]]))
    assert.are_not.equal(0, code)
    has(out, "looked for the folder " .. home .. "/hub/models--gpt2  (cache from HF_HOME/hub)")
    has(out, "huggingface-cli download gpt2 --include '*.safetensors' '*.json'")
    os.execute("rm -rf " .. q(home))
  end)

  teardown(function() os.execute("rm -rf " .. q(root)) end)
end)
