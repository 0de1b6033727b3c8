-- The attention benchmark runs, and its files hold what it measured.
local as = require "attnswap"
local run = assert(os.getenv("ATTNSWAP_RUN"), "ATTNSWAP_RUN is not set")
local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."

describe("examples/bench_attention.lua", function()
  it("writes results.json, results.csv and an SVG with a line per implementation", function()
    local dir = os.tmpname()
    os.remove(dir)
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
