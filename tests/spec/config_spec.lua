-- as.config() and the OpenBLAS core (kernels/cpu/blas_core.c): which core
-- runs, that a user's OPENBLAS_CORETYPE stands in every way attnswap is
-- started (attnswap-run, a stock lua5.4's require), and products on odd
-- shapes after the switch against a loop written here.
local as = require "attnswap"
local U = require "spec_util"

local RUN = assert(os.getenv("ATTNSWAP_RUN"), "ATTNSWAP_RUN is not set")
local CORES = { -- openblas_get_corename's x86-64 names by kernel width
  Prescott = 0, Core2 = 0, Nehalem = 0, Atom = 0, Barcelona = 0, Sandybridge = 1, Bulldozer = 1,
  Piledriver = 1, Steamroller = 1, Excavator = 1, Haswell = 2, Zen = 2, SkylakeX = 3, Cooperlake = 4,
}

-- what a command prints with OPENBLAS_CORETYPE set to core (nil: unset)
local function with_core(core, cmd)
  local env = core and ("env OPENBLAS_CORETYPE=" .. core .. " ") or "env -u OPENBLAS_CORETYPE "
  return U.sh(env .. cmd)
end

-- a stock lua5.4 requiring attnswap prints core_field of as.config(); it keeps
-- LD_PRELOAD (under the sanitizers the runtime must come first), stdout only
local function stock_lua(core)
  local env = core and ("env OPENBLAS_CORETYPE=" .. core .. " ") or "env -u OPENBLAS_CORETYPE "
  local p = assert(io.popen(env .. [[lua5.4 -e "local as = require 'attnswap'; io.write(as.config().blas_core)"]]))
  local out = p:read("a")
  p:close()
  return out
end

describe("as.config()", function()
  it("reports the BLAS library and core, threads, the attention ISA and CUDA", function()
    local c = as.config()
    assert.equals(as.version, c.version)
    assert.matches("^OpenBLAS %d+%.%d+", c.blas)
    assert.is_true(#c.blas_core > 0)
    assert.truthy(c.blas:find(c.blas_core, 1, true), "openblas_get_config names the core")
    assert.truthy(({ attnswap = 1, OPENBLAS_CORETYPE = 1, OpenBLAS = 1 })[c.blas_core_by])
    assert.equals(as.get_num_threads(), c.threads)
    assert.truthy(({ avx512 = 1, avx2 = 1, scalar = 1 })[c.attention_isa])
    assert.is_boolean(c.cuda)
    assert.equals(as.cuda.device_count(), c.cuda_devices)
    -- prints as the lines of attnswap-run --version (the REPL shows it so)
    local s = tostring(c)
    assert.matches("^attnswap " .. as.version:gsub("%.", "%%.") .. "\n", s)
    assert.truthy(s:find("blas core:     " .. c.blas_core, 1, true))
    assert.truthy(s:find("attention isa: " .. c.attention_isa, 1, true))
    -- the CPU's own product runs where the attention path is AVX-512, unless ATTNSWAP_GEMM=blas
    local own = c.attention_isa == "avx512" and os.getenv("ATTNSWAP_GEMM") ~= "blas"
    assert.equals(own and "attnswap-avx512" or "OpenBLAS", c.cpu_gemm)
    assert.truthy(s:find("cpu gemm:      " .. c.cpu_gemm, 1, true))
    assert.matches("cpu gemm:      OpenBLAS\n", U.sh("env ATTNSWAP_GEMM=blas " .. RUN .. " --version"))
    assert.matches("cpu gemm:      OpenBLAS\n", U.sh("env ATTNSWAP_FLASH_ISA=avx2 " .. RUN .. " --version"))
  end)

  it("reports and sets the deterministic switch (as.set_deterministic, ATTNSWAP_DETERMINISTIC)", function()
    local was = as.get_deterministic()
    assert.equals(was, as.config().deterministic)
    as.set_deterministic(not was)
    assert.equals(not was, as.get_deterministic())
    assert.equals(not was, as.config().deterministic)
    assert.truthy(tostring(as.config()):find("deterministic: " .. (was and "off" or "on"), 1, true))
    as.set_deterministic(was)
    assert.truthy(U.errmsg(as.set_deterministic, 1):find("set_deterministic: expected a boolean, got number", 1, true))
    assert.truthy(U.errmsg(as.set_deterministic):find("set_deterministic: expected a boolean, got no value", 1, true))
    assert.matches("deterministic: on", U.sh("env ATTNSWAP_DETERMINISTIC=1 " .. RUN .. " --version"))
    assert.matches("deterministic: off", U.sh("env ATTNSWAP_DETERMINISTIC=0 " .. RUN .. " --version"))
  end)

  it("gives this CPU a core at least as wide as its features (no setting needed)", function()
    local out = with_core(nil, RUN .. " --version")
    local core, features = out:match("blas core: +(%S+)"), out:match("cpu: +[^\n]*%(([^)]*)%)")
    assert.is_not_nil(CORES[core], "known core: " .. tostring(core))
    -- (SkylakeX, not Cooperlake, for AVX-512: a build may lack Cooperlake)
    local want = features:find("avx512") and 3 or features:find("avx2") and 2 or 0
    assert.is_true(CORES[core] >= want, out)
  end)

  it("keeps a user's OPENBLAS_CORETYPE: attnswap-run, --version, a stock lua5.4", function()
    -- Prescott: the weakest x86-64 core, which attnswap would otherwise replace
    local out, code = with_core("Prescott", RUN .. [[ -e "io.write(as.config().blas_core, ' ', as.config().blas_core_by)"]])
    assert.equals(0, code, out)
    assert.equals("Prescott OPENBLAS_CORETYPE", out)
    out = with_core("Prescott", RUN .. " --version")
    assert.truthy(out:find("blas core:     Prescott (OPENBLAS_CORETYPE)", 1, true), out)
    assert.equals("Prescott", stock_lua("Prescott"))
    -- and without it, a stock lua5.4 gets the same core as attnswap-run
    local mine = as.config()
    if mine.blas_core_by ~= "OPENBLAS_CORETYPE" then
      assert.equals(mine.blas_core, stock_lua(nil))
    end
  end)

  it("matmul on odd shapes after the switch matches a loop (transposed operands too)", function()
    as.manual_seed(21)
    for _, s in ipairs { { 1, 1, 1 }, { 3, 5, 7 }, { 17, 33, 65 }, { 63, 129, 31 }, { 130, 67, 257 } } do
      local m, k, n = s[1], s[2], s[3]
      for _, tr in ipairs { { false, false }, { true, false }, { false, true }, { true, true } } do
        local a = tr[1] and as.randn(k, m):t() or as.randn(m, k)
        local b = tr[2] and as.randn(n, k):t() or as.randn(k, n)
        local c, A, B = a:matmul(b):tolist(), a:tolist(), b:tolist()
        local worst = 0
        for i = 1, m do
          for j = 1, n do
            local x = 0
            for p = 1, k do x = x + A[i][p] * B[p][j] end
            worst = math.max(worst, math.abs(x - c[i][j]))
          end
        end
        assert.is_true(worst <= 1e-4 * k, ("%dx%dx%d %s: %g"):format(m, k, n, tostring(tr[1]) .. tostring(tr[2]), worst))
      end
    end
  end)
end)
