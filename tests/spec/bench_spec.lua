-- The attention benchmark runs, and its files hold what it measured.
local as = require "attnswap"
local U = require "spec_util"
local run = assert(os.getenv("ATTNSWAP_RUN"), "ATTNSWAP_RUN is not set")
local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."

describe("examples/bench_attention.lua", function()
  it("writes results.json, results.csv and an SVG with a line per implementation", function()
    local dir = U.tmpdir()
    local p = assert(io.popen(string.format("%s %s/examples/bench_attention.lua --quick --impl flash_attention,scaled_dot_product,linear_attention --out %s 2>/dev/null",
      run, src, dir)))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    assert.is_truthy(out:find("% sgemm", 1, true))
    local function read(name)
      local f = assert(io.open(dir .. "/" .. name))
      local s = f:read("a")
      f:close()
      return s
    end
    local rows = as.json_decode(read("results.json"))
    assert.are.equal(3 * 2 * 1, #rows) -- impls x L x D in quick mode
    for _, r in ipairs(rows) do
      assert.is_true(r.time > 0 and r.gflops > 0, r.impl)
      if r.impl ~= "linear_attention" then assert.is_true(r.max_err < 1e-4, r.impl .. " " .. r.max_err) end
    end
    local csv = read("results.csv")
    assert.are.equal(7, select(2, csv:gsub("\n", ""))) -- header + 6 rows
    local svg = read("plot.svg")
    assert.are.equal(3, select(2, svg:gsub("<polyline", "")))
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("--backward times forward + backward of every implementation, with gradient errors and a vs torch column", function()
    local dir = U.tmpdir()
    -- a PyTorch peer in torch_cpu_sdpa_bwd.py's JSON lines (B x H = 2 in quick mode)
    local f = assert(io.open(dir .. "/torch.json", "w"))
    f:write('{"impl": "torch", "L": 64, "D": 16, "BH": 2, "causal": false, "fwd_ms": 0.5, "bwd_ms": 1.5, "total_ms": 2.0}\n',
      '{"impl": "torch", "L": 128, "D": 16, "BH": 4, "causal": false, "total_ms": 9.0}\n') -- another B x H: no match
    f:close()
    local p = assert(io.popen(string.format("%s %s/examples/bench_attention.lua --backward --quick --torch %s/torch.json --out %s 2>/dev/null",
      run, src, dir, dir)))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    assert.is_truthy(out:find("fwd+bwd", 1, true), out)
    local jf = assert(io.open(dir .. "/results.json"))
    local rows = as.json_decode(jf:read("a"))
    jf:close()
    local names = as.attention.names()
    assert.are.equal(#names * 2, #rows) -- every implementation x L = 64, 128
    local seen = {}
    for _, r in ipairs(rows) do
      seen[r.impl] = true
      assert.is_true(r.backward, r.impl)
      if r.skipped then
        -- only an implementation that does not take these options; a failing backward would say "error: ..."
        assert.is_truthy(r.skipped:match("^unsupported"), r.impl .. ": " .. r.skipped)
      else
        assert.is_true(r.time > 0 and r.time < math.huge and r.fwd_time > 0 and r.gflops > 0, r.impl)
        assert.is_true(r.memory > 0, r.impl)
        if as.attention.info(r.impl).exact then
          assert.is_true(r.grad_err < 1e-4, r.impl .. " " .. tostring(r.grad_err))
          if r.L == 64 then
            assert.is_true(math.abs(r.vs_torch - 2e-3 / r.time) < 1e-4 * r.vs_torch, r.impl) -- %.6g in the JSON
          else
            assert.is_nil(r.vs_torch, r.impl)
          end
        else
          assert.is_nil(r.grad_err, r.impl)
          assert.is_nil(r.vs_torch, r.impl)
        end
      end
    end
    for _, n in ipairs(names) do assert.is_true(seen[n], n) end
    assert.is_truthy(io.open(dir .. "/plot.svg")):close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("--backward: an implementation whose backward fails is a row with the error, and the sweep goes on", function()
    local dir = U.tmpdir()
    -- a registered attention whose output has no graph: out:backward(g) raises
    local f = assert(io.open(dir .. "/wrap.lua", "w"))
    f:write(string.format([[
local as = require "attnswap"
local U = require "spec_util"
local NoGrad = as.nn.class("NoGradAttention")
function NoGrad:init() end
function NoGrad:forward(q, k, v) return as.no_grad(function() return as.flash_attention(q, k, v) end) end
as.register_attention("no_grad_attention", NoGrad, { exact = false, complexity = "O(L^2 D)" })
arg = { [0] = %q, "--backward", "--quick", "--impl", "no_grad_attention,flash_attention", "--out", %q }
dofile(arg[0])
]], src .. "/examples/bench_attention.lua", dir))
    f:close()
    local p = assert(io.popen(string.format("%s %s/wrap.lua 2>/dev/null", run, dir)))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local jf = assert(io.open(dir .. "/results.json"))
    local rows = as.json_decode(jf:read("a"))
    jf:close()
    assert.are.equal(4, #rows)
    for _, r in ipairs(rows) do
      if r.impl == "no_grad_attention" then
        assert.is_truthy(r.skipped and r.skipped:find("^error: .*does not require grad"), r.skipped)
      else
        assert.is_true(r.time > 0 and r.grad_err < 1e-4, r.impl)
      end
    end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("the CUDA sweep's --backward path runs small on the CPU: flash and math rows, ratios to the peer", function()
    local dir = U.tmpdir()
    -- torch_sdpa.py --backward's JSON; a forward row for the same shape is not a peer
    local f = assert(io.open(dir .. "/torch.json", "w"))
    f:write('[{"D": 16, "L": 64, "causal": true, "backward": true, "default_tflops": 1e-3, "flash_tflops": 2e-3, ',
      '"cudnn_tflops": 4e-3},\n {"D": 16, "L": 64, "causal": false, "flash_tflops": 5}]\n')
    f:close()
    local p = assert(io.popen(string.format("%s %s/examples/bench_attention_cuda.lua --device cpu --backward --tokens 256 " ..
      "--hidden 32 --L 64,128 --D 16 --repeats 1 --torch %s/torch.json --out %s/cuda.json 2>&1", run, src, dir, dir)))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local jf = assert(io.open(dir .. "/cuda.json"))
    local rows = as.json_decode(jf:read("a"))
    jf:close()
    assert.are.equal(2 * 2 * 2, #rows, out) -- L x causal x {flash, math}
    for _, r in ipairs(rows) do
      assert.is_nil(r.error, r.error)
      assert.is_true(r.seconds > 0 and r.tflops > 0 and r.B * r.L == 256 and r.H * r.D == 32, out)
      if r.L == 64 and r.causal then
        -- ours / theirs, to the %.6g the JSON keeps
        assert.is_true(math.abs(r.vs_fa2 - r.tflops / 2e-3) < 1e-4 * r.vs_fa2, out)
        assert.is_true(math.abs(r.vs_cudnn - r.tflops / 4e-3) < 1e-4 * r.vs_cudnn, out)
      else
        assert.is_nil(r.vs_fa2)
      end
    end
    assert.is_truthy(out:find("vs cudnn", 1, true), out)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("without --out writes to a new folder under $TMPDIR, says which, and leaves the working folder alone", function()
    local function mktemp()
      local p = assert(io.popen("mktemp -d"))
      local d = p:read("l")
      p:close()
      return d
    end
    local cwd, tmp = mktemp(), mktemp()
    local p = assert(io.popen(string.format("cd '%s' && TMPDIR='%s' %s %s/examples/bench_attention.lua --quick --impl flash_attention 2>/dev/null",
      cwd, tmp, run, src)))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local dir = out:match("wrote (%S+)/results%.json")
    assert.is_truthy(dir, out)
    assert.are.equal(tmp .. "/attnswap-bench.", dir:sub(1, #tmp + 16))
    local f = assert(io.open(dir .. "/results.json"))
    assert.are.equal(2, #as.json_decode(f:read("a")))
    f:close()
    local ls = assert(io.popen("ls -A '" .. cwd .. "'"))
    assert.are.equal("", ls:read("a")) -- no bench-out/ where it ran
    ls:close()
    os.execute("rm -rf '" .. cwd .. "' '" .. tmp .. "'")
  end)

  it("bench-out/, where older versions wrote, is ignored by git", function()
    local f = assert(io.open(src .. "/.gitignore"))
    local text = f:read("a")
    f:close()
    assert.is_truthy(text:find("\n/bench%-out/\n") or text:find("^/bench%-out/\n"), text)
  end)
end)

describe("bench.options", function()
  local bench = require "attnswap.bench"
  local defaults = { L = { 1024 }, impl = { "a" }, H = 4, scale = 0.5, dtype = "bfloat16", torch = false }
  it("reads each --key value by its default's type and leaves the rest", function()
    local o = bench.options({ "--L", "64,128", "--impl", "x,y", "--H", "3", "--scale", "0.25", "--torch", "t.json" },
      defaults, "demo")
    assert.same({ 64, 128 }, o.L)
    assert.same({ "x", "y" }, o.impl)
    assert.equal(3, o.H)
    assert.is_true(math.type(o.H) == "integer")
    assert.equal(0.25, o.scale)
    assert.equal("t.json", o.torch)
    assert.equal("bfloat16", o.dtype)
    assert.same({ 1024 }, defaults.L) -- the defaults are not changed
  end)
  it("an unknown option, a missing value or a bad number is an error naming the script", function()
    local function err(args)
      local ok, e = pcall(bench.options, args, defaults, "demo")
      assert.is_false(ok)
      return tostring(e)
    end
    assert.matches("demo: unknown option %-%-nope", err { "--nope", "1" })
    assert.matches("demo: unknown option L", err { "L", "1" })
    assert.matches("demo: %-%-H needs a value", err { "--H" })
    assert.matches("demo: %-%-H expects a number, got x", err { "--H", "x" })
  end)
end)
