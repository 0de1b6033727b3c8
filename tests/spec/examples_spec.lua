-- The examples run as a new user runs them, through attnswap-run.
local run = assert(os.getenv("ATTNSWAP_RUN"), "ATTNSWAP_RUN is not set")
local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

describe("examples", function()
  it("dummy.lua prints the seed example's three lines", function()
    local out, code = sh(run .. " " .. src .. "/examples/dummy.lua")
    assert.are.equal(0, code)
    assert.are.equal("Before swap: DummyAttention\nAfter swap: FlashAttention\nOutput shape: (1, 1, 5, 10)\n", out)
  end)

  it("custom_attention.lua registers, swaps and runs a Lua attention", function()
    local out, code = sh(run .. " " .. src .. "/examples/custom_attention.lua")
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("my_cosine_attention", 1, true))
    assert.is_truthy(out:find("swapped 2 module(s) for 'my_cosine_attention'", 1, true))
    assert.is_truthy(out:find("output shape (2, 10, 32)", 1, true))
  end)

  it("train_tiny.lua trains a character model, reports the held-out loss, writes the curve and weights", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local out, code = sh(run .. " " .. src .. "/examples/train_tiny.lua --steps 120 --out " .. dir)
    assert.are.equal(0, code, out)
    local held, unigram = out:match("held%-out loss ([%d.]+) nats against the unigram entropy ([%d.]+)")
    assert.is_truthy(held, out)
    assert.is_true(tonumber(held) < tonumber(unigram), out) -- context learned in 120 steps
    local svg = io.open(dir .. "/train_tiny_loss.svg")
    assert.is_truthy(svg and svg:read("a"):find("<polyline", 1, true))
    if svg then svg:close() end
    assert.is_truthy(io.open(dir .. "/train_tiny.safetensors"))
    os.execute("rm -rf " .. dir)
  end)

  it("bench_ops.lua runs (quick mode)", function()
    local out, code = sh(run .. " " .. src .. "/examples/bench_ops.lua --quick")
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("API/raw", 1, true))
    assert.is_truthy(out:find("ns per call", 1, true))
  end)
end)
