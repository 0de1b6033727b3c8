-- attnswap-run as a user meets it: options, the arg table, exit statuses,
-- scripts on stdin, the REPL fed through a pipe, and Ctrl-C.  The binary is
-- $ATTNSWAP_RUN (set by tests/CMakeLists.txt).
local RUN = assert(os.getenv("ATTNSWAP_RUN"), "ATTNSWAP_RUN is not set")
local USAGE = "usage: attnswap-run [options] [script [args]]"

local function q(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

local function tmpfile(text)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(text or "")
  f:close()
  return name
end

local function slurp(name)
  local f = assert(io.open(name))
  local s = f:read("a")
  f:close()
  return s
end

-- Runs attnswap-run with args (a list) and stdin (a string, not a terminal);
-- returns { out =, err =, code = }.
local function run(args, stdin)
  local cmd = { q(RUN) }
  for _, a in ipairs(args) do cmd[#cmd + 1] = q(a) end
  local inf, errf = tmpfile(stdin), tmpfile()
  local p = assert(io.popen(table.concat(cmd, " ") .. " <" .. q(inf) .. " 2>" .. q(errf)))
  local out = p:read("a")
  local _, _, code = p:close()
  local err = slurp(errf)
  os.remove(inf)
  os.remove(errf)
  return { out = out, err = err, code = code }
end

-- Runs a shell script (with $RUN set) and returns what it prints.
local function shell(script)
  local p = assert(io.popen("RUN=" .. q(RUN) .. "\n" .. script))
  local out = p:read("a")
  p:close()
  return out
end

local scripts = {}
local function script(text)
  local name = tmpfile(text)
  scripts[#scripts + 1] = name
  return name
end
teardown(function()
  for _, name in ipairs(scripts) do os.remove(name) end
end)

describe("attnswap-run options", function()
  it("-v and --version print 'attnswap X.Y.Z (Lua 5.4.x)', then what it runs on, and exit 0", function()
    local version = run({ "-e", "io.write(as.version)" }).out
    assert.matches("^%d+%.%d+%.%d+$", version)
    for _, opt in ipairs { "-v", "--version" } do
      local r = run { opt }
      assert.equals(0, r.code)
      assert.matches("^attnswap " .. version:gsub("%.", "%%.") .. " %(Lua 5%.4%.%d+%)\n", r.out)
      -- the lines of as.config() (config_spec.lua checks their values)
      for _, line in ipairs { "cpu", "blas", "blas core", "threads", "attention isa", "cuda" } do
        assert.matches("\n" .. line .. ": +[^\n]+", r.out)
      end
      assert.equals("", r.err)
    end
  end)

  it("-h and --help print the usage and the options on stdout and exit 0", function()
    for _, opt in ipairs { "-h", "--help" } do
      local r = run { opt }
      assert.equals(0, r.code)
      assert.equals(USAGE, r.out:match("^[^\n]*"))
      for _, o in ipairs { "-e stat", "-i", "-l mod", "-v, --version", "-h, --help", "--", "-",
                           "--device D", "--threads N", "--seed N" } do
        assert.truthy(r.out:find("\n  " .. o .. " ", 1, true), o)
      end
      for _, o in ipairs { "--list-attention", "--swap NAME[:key=value,...]", "--compare NAME,NAME,..." } do
        assert.truthy(r.out:find("\n  " .. o .. "\n", 1, true), o)
      end
      assert.truthy(r.out:find("(--swap, --compare, --distill, --data and --save may also\n", 1, true), r.out)
      assert.truthy(r.out:find("--opt=VALUE", 1, true))
    end
  end)

  it("rejects a bad option with one line, the usage line and exit status 2", function()
    local cases = {
      { { "-x" }, "attnswap-run: unrecognized option '-x'" },
      { { "--bogus" }, "attnswap-run: unrecognized option '--bogus'" },
      { { "-vx" }, "attnswap-run: unrecognized option '-vx'" },
      { { "-e" }, "attnswap-run: option '-e' needs an argument" },
      { { "-l", "-i" }, "attnswap-run: option '-l' needs an argument" },
      { { "-i", "-x", "script.lua" }, "attnswap-run: unrecognized option '-x'" },
      { { "--threads" }, "attnswap-run: option '--threads' needs an argument" },
      { { "--seed" }, "attnswap-run: option '--seed' needs an argument" },
      { { "--device" }, "attnswap-run: option '--device' needs an argument" },
      { { "--swap" }, "attnswap-run: option '--swap' needs an argument" },
      { { "--compare" }, "attnswap-run: option '--compare' needs an argument" },
      { { "--threads", "abc" }, "attnswap-run: bad value 'abc' for option '--threads' (a positive integer expected)" },
      { { "--threads=0" }, "attnswap-run: bad value '0' for option '--threads' (a positive integer expected)" },
      { { "--threads", "-2" }, "attnswap-run: bad value '-2' for option '--threads' (a positive integer expected)" },
      { { "--threads", "1.5" }, "attnswap-run: bad value '1.5' for option '--threads' (a positive integer expected)" },
      { { "--threads=" }, "attnswap-run: bad value '' for option '--threads' (a positive integer expected)" },
      { { "--seed", "x1" }, "attnswap-run: bad value 'x1' for option '--seed' (an integer expected)" },
      { { "--seed", "-e" }, "attnswap-run: bad value '-e' for option '--seed' (an integer expected)" },
      { { "--device", "tpu" }, "attnswap-run: bad value 'tpu' for option '--device' (cpu or cuda expected)" },
      { { "--device=" }, "attnswap-run: bad value '' for option '--device' (cpu or cuda expected)" },
      { { "--swap", ":causal=true", "m.lua" }, "attnswap-run: bad value ':causal=true' for option '--swap' (attention names expected)" },
      { { "--list-attention=yes" }, "attnswap-run: unrecognized option '--list-attention=yes'" },
      { { "--help=me" }, "attnswap-run: unrecognized option '--help=me'" },
      { { "--devices", "cpu" }, "attnswap-run: unrecognized option '--devices'" },
      { { "--swap", "flash_attention" }, "attnswap-run: option '--swap' needs a script that returns a model and its inputs" },
      { { "--compare=flash_attention", "-e", "x=1" }, "attnswap-run: option '--compare' needs a script that returns a model and its inputs" },
      { { "--swap", "a", "--compare", "b", "m.lua" }, "attnswap-run: options '--swap' and '--compare' do not go together" },
    }
    for _, c in ipairs(cases) do
      local r = run(c[1])
      assert.equals(2, r.code)
      assert.equals("", r.out)
      assert.equals(c[2] .. "\n" .. USAGE .. "\n", r.err)
    end
  end)

  it("-e runs its statements in order, with the globals as and nn", function()
    local r = run { "-e", "x = 1", "-e", "print(x + 1, type(as), nn == as.nn, type(as.version))" }
    assert.equals(0, r.code)
    assert.equals("2\ttable\ttrue\tstring\n", r.out)
    assert.equals("", r.err)
  end)

  it("-l requires a module into a global, or into the global named before '='", function()
    local r = run { "-l", "attnswap", "-l", "s=string", "-e", "print(attnswap == as, s == string)" }
    assert.equals(0, r.code)
    assert.equals("true\ttrue\n", r.out)
  end)

  it("an error in -e or -l exits 1 with the message and a traceback", function()
    local r = run { "-e", "error('boom')" }
    assert.equals(1, r.code)
    assert.matches("^attnswap%-run: %(command line%):1: boom\nstack traceback:\n", r.err)
    r = run { "-l", "no.such.module" }
    assert.equals(1, r.code)
    assert.matches("module 'no.such.module' not found", r.err)
  end)

  it("passes os.exit's status through", function()
    assert.equals(3, run({ "-e", "os.exit(3)" }).code)
  end)
end)

describe("attnswap-run scripts", function()
  local show_args = script [[
local t = {}
for i = -3, #arg do t[#t + 1] = i .. "=" .. tostring(arg[i]) end
t[#t + 1] = "n=" .. select("#", ...)
for i = 1, select("#", ...) do t[#t + 1] = "v" .. i .. "=" .. select(i, ...) end
io.write(table.concat(t, "\n"), "\n")
]]

  it("gives the script arg and ... as lua does", function()
    local r = run { "-e", "x=1", show_args, "a", "b c" }
    assert.equals(0, r.code)
    assert.equals(table.concat({
      "-3=" .. RUN, "-2=-e", "-1=x=1", "0=" .. show_args, "1=a", "2=b c",
      "n=2", "v1=a", "v2=b c" }, "\n") .. "\n", r.out)
  end)

  it("stops reading options at the script or at '--'", function()
    local r = run { "--", show_args, "-v", "--" }
    assert.equals(0, r.code)
    assert.equals(table.concat({
      "-3=nil", "-2=" .. RUN, "-1=--", "0=" .. show_args, "1=-v", "2=--",
      "n=2", "v1=-v", "v2=--" }, "\n") .. "\n", r.out)
  end)

  it("has as and nn set before the script runs", function()
    local r = run { script "print(type(as), nn == as.nn, require 'attnswap' == as)" }
    assert.equals("table\ttrue\ttrue\n", r.out)
  end)

  it("an error exits 1 with the message and a traceback on stderr", function()
    local name = script "print('before')\nlocal function f() error('boom') end\nf()\n"
    local r = run { name }
    assert.equals(1, r.code)
    assert.equals("before\n", r.out)
    assert.equals("attnswap-run: " .. name .. ":2: boom\nstack traceback:\n",
      r.err:sub(1, #("attnswap-run: " .. name .. ":2: boom\nstack traceback:\n")))
    assert.truthy(r.err:find(name .. ":3: in main chunk", 1, true))
  end)

  it("an error object that is not a string is still reported", function()
    local r = run { "-e", "error(setmetatable({}, {__tostring = function() return 'custom' end}))" }
    assert.equals(1, r.code)
    assert.equals("attnswap-run: custom\n", r.err)
    r = run { "-e", "error({})" }
    assert.equals(1, r.code)
    assert.matches("^attnswap%-run: %(error object is a table value%)", r.err)
  end)

  it("a syntax error or a missing file exits 1", function()
    local r = run { script "x = = 1" }
    assert.equals(1, r.code)
    assert.matches(":1: unexpected symbol near '='", r.err)
    r = run { "/no/such/script.lua" }
    assert.equals(1, r.code)
    assert.matches("^attnswap%-run: cannot open /no/such/script%.lua", r.err)
  end)

  it("skips a '#!' first line", function()
    assert.equals("ok\n", run({ script "#!/usr/bin/env attnswap-run\nprint('ok')\n" }).out)
  end)
end)

describe("attnswap-run --device, --threads, --seed, --list-attention", function()
  local has_cuda = run({ "-e", "io.write(tostring(as.cuda ~= nil and as.cuda.is_available()))" }).out == "true"

  it("--device cpu sets as.device before -e and the script run", function()
    local r = run { "--device", "cpu", "-e", "print(as.device)", script "print(as.device)" }
    assert.equals(0, r.code)
    assert.equals("cpu\ncpu\n", r.out)
    assert.equals("cpu\n", run({ "--device=cpu", "-e", "print(as.device)" }).out)
    assert.equals("nil\n", run({ "-e", "print(as.device)" }).out)
  end)

  it("--device cuda sets it where a GPU is, else fails with exit status 1", function()
    local r = run { "--device", "cuda", "-e", "print(as.device)" }
    if has_cuda then
      assert.equals(0, r.code)
      assert.equals("cuda\n", r.out)
    else
      assert.equals(1, r.code)
      assert.equals("", r.out)
      assert.equals("attnswap-run: --device cuda: no CUDA device is available\n", r.err)
    end
  end)

  it("--threads N sets the kernels' thread count", function()
    assert.equals("3\n", run({ "--threads", "3", "-e", "print(as.get_num_threads())" }).out)
    assert.equals("1\n", run({ "--threads=1", "-e", "print(as.get_num_threads())" }).out)
    local r = run { "--threads", "5000", "-e", "print(1)" }
    assert.equals(2, r.code)
    assert.matches("^attnswap%-run: %-%-threads: .*1024.*\n" .. (USAGE:gsub("%p", "%%%0")) .. "\n$", r.err)
  end)

  it("--seed N seeds the generator as as.manual_seed(N) does", function()
    local a = run { "--seed", "42", "-e", "print(as.initial_seed(), as.randn(3):tolist()[2])" }
    local b = run { "-e", "as.manual_seed(42) print(as.initial_seed(), as.randn(3):tolist()[2])" }
    assert.equals(0, a.code)
    assert.equals(b.out, a.out)
    assert.matches("^42\t", a.out)
    assert.matches("^%-7\n", run({ "--seed=-7", "-e", "print(as.initial_seed())" }).out)
  end)

  it("--list-attention prints the registry and exits without reading stdin", function()
    local r = run({ "--list-attention" }, "print('stdin ran')")
    assert.equals(0, r.code)
    assert.matches("^name%s+exact%s+cost", r.out)
    assert.truthy(r.out:find("\nscaled_dot_product ", 1, true))
    assert.truthy(r.out:find("\nflash_attention ", 1, true))
    assert.falsy(r.out:find("stdin ran", 1, true))
    assert.equals("", r.err)
  end)

  it("--list-attention with a script lists, then runs the script", function()
    local r = run { "--list-attention", script "print('script ran')" }
    assert.equals(0, r.code)
    assert.matches("^name%s+exact", r.out)
    assert.matches("\nscript ran\n$", r.out)
  end)

  it("a value that looks like an option is a value, not an option", function()
    local r = run { "--swap", "-e", script "return 1" }
    assert.equals(2, r.code)
    assert.matches("^attnswap%-run: %-%-swap: the script must return a model", r.err)
  end)
end)

describe("attnswap-run --swap and --compare", function()
  local model = script [[
as.manual_seed(1)
local m = nn.Sequential(nn.TransformerBlock{dim = 8, num_heads = 2}, nn.TransformerBlock{dim = 8, num_heads = 2})
return m:eval(), as.randn(1, 5, 8)
]]
  -- a registered attention that shows the options it was made with
  local probe = script [[
local Probe = nn.class("Probe")
function Probe:init(opts)
  local keys = {}
  for k, v in pairs(opts) do keys[#keys + 1] = k .. "=" .. tostring(v) .. ":" .. (math.type(v) or type(v)) end
  table.sort(keys)
  print("opts " .. table.concat(keys, " "))
end
function Probe:forward(q, k, v) return v end
as.register_attention("probe_attention", Probe)
return nn.TransformerBlock{dim = 8, num_heads = 2}, { as.randn(1, 3, 8) }
]]

  it("--swap NAME swaps every attention core, runs the model and shows the output", function()
    local r = run { "--swap", "flash_attention", model }
    assert.equals(0, r.code, r.err)
    assert.matches("^swapped 2 module%(s%) for 'flash_attention'\n", r.out)
    assert.truthy(r.out:find("0.attn.core", 1, true))
    assert.truthy(r.out:find("ScaledDotProductAttention -> FlashAttention", 1, true))
    assert.matches("\noutput: %(1, 5, 8%) float32, mean %S+, first values %S+ %S+ %S+ %S+ %S+ %S+ %.%.%.\n$", r.out)
  end)

  it("--swap NAME:key=value,... passes typed options (number, boolean, string)", function()
    local r = run { "--swap=probe_attention:a=2,b=0.5,c=true,d=false,e=text", probe }
    assert.equals(0, r.code, r.err)
    assert.truthy(r.out:find("opts a=2:integer b=0.5:float c=true:boolean d=false:boolean e=text:string\n", 1, true), r.out)
    assert.matches("output: %(1, 3, 8%) float32", r.out)
  end)

  it("--compare NAME,... runs as.compare on the script's model and inputs", function()
    local r = run { "--compare", "flash_attention,local_attention", model }
    assert.equals(0, r.code, r.err)
    assert.matches("^implementation%s+time", r.out)
    assert.truthy(r.out:find("\n(as is) ", 1, true))
    assert.truthy(r.out:find("\nflash_attention ", 1, true))
    assert.truthy(r.out:find("\nlocal_attention ", 1, true))
  end)

  it("takes --swap and --compare after the script too, out of the script's arg", function()
    local r = run { model, "--compare", "local_attention" }
    assert.equals(0, r.code, r.err)
    assert.truthy(r.out:find("\nlocal_attention ", 1, true), r.out)
    r = run { script "print('args', ...) return nn.TransformerBlock{dim=8, num_heads=2}, as.randn(1, 2, 8)",
      "x", "--swap=flash_attention", "y", "--", "--compare", "z" }
    assert.equals(0, r.code, r.err)
    assert.matches("^args\tx\ty\t%-%-\t%-%-compare\tz\n", r.out)
    assert.truthy(r.out:find("swapped 1 module(s) for 'flash_attention'", 1, true), r.out)
    r = run { model, "--compare" }
    assert.equals(2, r.code)
    assert.matches("^attnswap%-run: option '%-%-compare' needs an argument\n", r.err)
    r = run { "--swap", "flash_attention", model, "--swap", "local_attention" }
    assert.equals(2, r.code)
    assert.matches("^attnswap%-run: option '%-%-swap' is given twice\n", r.err)
  end)

  it("--compare all compares every registered implementation", function()
    local r = run { model, "--compare", "all" }
    assert.equals(0, r.code, r.err)
    for _, name in ipairs { "flash_attention", "performer_attention", "sparse_attention", "entmax_attention" } do
      assert.truthy(r.out:find("\n" .. name .. " ", 1, true), name .. " missing:\n" .. r.out)
    end
  end)

  it("passes the script its arguments", function()
    local r = run { "--swap", "flash_attention", script "print('args', ...) return nn.TransformerBlock{dim=8, num_heads=2}, as.randn(1, 2, 8)", "x", "y" }
    assert.equals(0, r.code, r.err)
    assert.matches("^args\tx\ty\n", r.out)
  end)

  it("rejects unknown names, bad options and scripts that return no model with status 2", function()
    local U = "\n" .. USAGE:gsub("%p", "%%%0") .. "\n$"
    local cases = {
      { { "--swap", "nope", model }, "^attnswap%-run: %-%-swap: no attention named 'nope' %(registered: .*flash_attention.*%)" .. U },
      { { "--compare", "flash_attention,zzz", model }, "^attnswap%-run: %-%-compare: no attention named 'zzz'" },
      { { "--swap", "flash_attention:window", model }, "^attnswap%-run: %-%-swap: 'window' is not key=value" .. U },
      { { "--swap", "flash_attention", script "x = 1" }, "^attnswap%-run: %-%-swap: the script must return a model and its inputs %(it returned nothing%)" .. U },
      { { "--compare", "flash_attention", script "return 5" }, "^attnswap%-run: %-%-compare: the script must return a model and its inputs %(it returned a number first%)" .. U },
      { { "--swap", "flash_attention", script "return nn.Linear(2, 2)" }, "^attnswap%-run: %-%-swap: the script must return the inputs after the model" },
      { { "--swap", "local_attention:windw_size=8", model },
        "^attnswap%-run: %-%-swap: local_attention: unknown option 'windw_size' %(options: .*window_size%)" .. U },
      { { "--swap", "local_attention:window_size=-3", model },
        "^attnswap%-run: %-%-swap: local_attention: window_size must be a positive integer, got %-3" .. U },
      { { "--compare", "all", script "return nn.Linear(2, 2), as.randn(1, 2)" },
        "^attnswap%-run: %-%-compare: the model holds no attention core .* to compare" .. U },
      { { "--swap", "flash_attention", script "return nn.Linear(2, 2), as.randn(1, 2)" },
        "^attnswap%-run: %-%-swap: the model holds no attention core .* to swap" .. U },
    }
    for _, c in ipairs(cases) do
      local r = run(c[1])
      assert.equals(2, r.code, r.err)
      assert.matches(c[2], r.err)
      assert.equals(1, select(2, r.err:gsub("\n", "")) - 1, r.err) -- one line, then the usage
    end
  end)

  it("an error in the script or the model exits 1", function()
    local r = run { "--swap", "flash_attention", script "error('in script')" }
    assert.equals(1, r.code)
    assert.matches("in script", r.err)
    r = run { "--swap", "flash_attention", script "return nn.TransformerBlock{dim=8, num_heads=2}, as.randn(1, 2, 3)" }
    assert.equals(1, r.code)
    assert.matches("^attnswap%-run: .*\nstack traceback:", r.err)
  end)
end)

describe("attnswap-run with stdin", function()
  it("a script reads what is piped to it", function()
    local r = run({ script "io.write(io.read('a'):upper())" }, "hello\nworld\n")
    assert.equals(0, r.code)
    assert.equals("HELLO\nWORLD\n", r.out)
    r = run({ "--seed", "1", script "io.write(#io.read('a'))", "arg1" }, "abc")
    assert.equals("3", r.out)
  end)


  it("runs stdin as the script when there is none and stdin is not a terminal", function()
    local r = run({}, "print('from stdin', arg[0] ~= nil, type(as))")
    assert.equals(0, r.code)
    assert.equals("from stdin\ttrue\ttable\n", r.out)
    r = run({}, "1+1\n")
    assert.equals(1, r.code)
    assert.matches("^attnswap%-run: stdin:1:", r.err)
  end)

  it("runs stdin for '-', with the arguments after it", function()
    local r = run({ "-", "x", "y" }, "print(arg[0], ...)")
    assert.equals(0, r.code)
    assert.equals("-\tx\ty\n", r.out)
  end)

  it("runs nothing from stdin after -e or -v", function()
    assert.equals("1\n", run({ "-e", "print(1)" }, "print(2)").out)
  end)
end)

describe("attnswap-run REPL on a pipe (-i)", function()
  local function repl(input, args)
    local r = run(args or { "-i" }, input)
    local banner, rest = r.out:match("^([^\n]*)\n(.*)$")
    assert.matches("^attnswap %d+%.%d+%.%d+ %(Lua 5%.4%.%d+%)$", banner)
    return rest, r.err, r.code
  end

  it("prints what expressions return, goes on after errors, reads continuation lines", function()
    local out, err, code = repl(table.concat({
      "1+1", "x = 5", "x * 2", "error('oops')", "print('alive')",
      "for i = 1, 2 do", "print(i)", "end", "1, 'a', nil", "=3", "" }, "\n"))
    assert.equals(0, code)
    assert.equals("> 2\n> > 10\n> > alive\n> >> >> 1\n2\n> 1\ta\tnil\n> 3\n> \n", out)
    assert.equals("stdin:1: oops\nstack traceback:\n", err:sub(1, #"stdin:1: oops\nstack traceback:\n"))
  end)

  it("prints values with their __tostring and reports one that fails", function()
    local out, err = repl("setmetatable({}, {__tostring = function() return 'T!' end})\n" ..
                          "setmetatable({}, {__tostring = function() error('bad') end})\nprint('next')\n")
    assert.equals("> T!\n> > next\n> \n", out)
    assert.matches("^error printing the result: stdin:1: bad\nstack traceback:\n", err)
  end)

  it("reports a statement left unfinished at end of input", function()
    local out, err, code = repl("for i = 1, 2 do\n")
    assert.equals(0, code)
    assert.equals("> >> > \n", out)
    assert.matches("^stdin:1: 'end' expected near <eof>", err)
  end)

  it("prints several values and modules, tensors with their __tostring", function()
    local out = repl("1, 'two', nil, false\nnn.Linear(2, 3)\nas.tensor{1, 2}\n")
    assert.equals("> 1\ttwo\tnil\tfalse\n> Linear(in_features=2, out_features=3, bias=true)\n> " ..
                  "tensor([1, 2])\n> \n", out)
  end)

  it("has help: help(), help(tensor), help(module), help(as.attention), help('name')", function()
    local out, err, code = repl(table.concat({
      "help()", "help(as.randn(2, 3))", "help(nn.TransformerBlock{dim = 8, num_heads = 2})",
      "help(as.attention)", "help('swap_attention')", "help(as.compare)", "help(nn)", "" }, "\n"))
    assert.equals(0, code)
    assert.equals("", err)
    assert.truthy(out:find("attnswap: swap the attention", 1, true))
    assert.truthy(out:find("Tensor (2, 3) float32 on cpu", 1, true))
    assert.truthy(out:find("  abs add add_", 1, true))
    assert.truthy(out:find("TransformerBlock: a module, 872 parameters; the tree:\nTransformerBlock(", 1, true))
    assert.truthy(out:find("children: m.norm1 m.attn m.norm2 m.mlp", 1, true))
    assert.truthy(out:find("\nscaled_dot_product ", 1, true))
    assert.truthy(out:find("as.swap_attention(model, target, name", 1, true))
    assert.truthy(out:find("as.compare(model, inputs, names", 1, true))
    assert.truthy(out:find("MultiheadAttention", 1, true))
  end)

  it("help is attnswap-run's own global, not the library's", function()
    assert.equals("function\n", run({ "-e", "print(type(help))" }).out)
    local p = assert(io.popen("lua5.4 -e 'require \"attnswap\" print(type(help))'"))
    assert.equals("nil\n", p:read("a"))
    p:close()
  end)

  it("runs the script first and keeps its globals", function()
    local out = repl("y + 1\n", { "-i", script "y = 41" })
    assert.equals("> 42\n> \n", out)
  end)

  it("binds what the script returns: model and inputs by the documented convention", function()
    local s = script "local m = nn.TransformerBlock{dim = 8, num_heads = 2}\nreturn m, { as.randn(1, 3, 8) }"
    local out = repl("model:type()\ninputs[1]:shape()\nresults.n\nmodel(inputs[1]):shape()\n", { "-i", s })
    assert.equals("-- the script returned: model (TransformerBlock), inputs (a list of 1), results (all 2 returned values)\n" ..
      "> TransformerBlock\n> (1, 3, 8)\n> 2\n> (1, 3, 8)\n> \n", out)
    out = repl("results[1] + results[2]\nmodel\n", { "-i", script "return 40, 2" })
    assert.equals("-- the script returned: results (all 2 returned values)\n> 42\n> nil\n> \n", out)
    out = repl("model.attn.core:type()\n", { "-i", s, "--swap", "flash_attention" })
    assert.truthy(out:find("-- the script returned: model (TransformerBlock)", 1, true))
    assert.truthy(out:find("\n> FlashAttention\n", 1, true))
  end)
end)

describe("attnswap-run and Ctrl-C", function()
  -- wait_for FILE LINE: waits (at most 20 s, and while $pid lives) until
  -- FILE holds LINE.
  local WAIT = [[
wait_for() { n=0; until grep -qx "$2" "$1" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { echo "attnswap-run exited before '$2':"; cat "$d/err"; exit 1; }
  sleep 0.05; n=$((n+1)); [ $n -lt 400 ] || { echo "no '$2' in $1"; exit 1; }; done; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
]]

  it("stops a running script with 'interrupted!' and exit status 1", function()
    local out = shell(WAIT .. [[
"$RUN" -e 'io.stderr:write("ready\n") while true do end' 2>"$d/err" & pid=$!
(sleep 20; kill -9 $pid) >/dev/null 2>&1 & dog=$!
wait_for "$d/err" ready
kill -INT $pid
wait $pid; echo "rc=$?"
kill $dog 2>/dev/null
cat "$d/err"
]])
    assert.matches("^rc=1\nready\nattnswap%-run: .*interrupted!\nstack traceback:", out)
  end)

  it("in the REPL stops the statement or drops the line, and the session goes on", function()
    local out = shell(WAIT .. [[
mkfifo "$d/in"
"$RUN" -i <"$d/in" >"$d/out" 2>"$d/err" & pid=$!
(sleep 20; kill -9 $pid) >/dev/null 2>&1 & dog=$!
exec 3>"$d/in"
printf '%s\n' 'io.stderr:write("ready\n") while true do end' >&3
wait_for "$d/err" ready
kill -INT $pid
printf '%s\n' 'io.stderr:write("ready2\n")' >&3
wait_for "$d/err" ready2
sleep 0.3
kill -INT $pid
sleep 0.3
printf '%s\n' 'print("alive")' >&3
exec 3>&-
wait $pid; echo "rc=$?"
kill $dog 2>/dev/null
cat "$d/out" "$d/err"
]])
    assert.matches("^rc=0\n", out)
    assert.truthy(out:find("> alive\n", 1, true), out)
    assert.truthy(out:find("interrupted!", 1, true), out)
  end)
end)

describe("attnswap-run --swap NAME --distill", function()
  -- a tiny GPT-2, an attention with a learnable temperature registered by the
  -- script, and batches made from the file --data names
  local model = script [[
local T = nn.class("CliTempered")
T.shape_options = { "num_heads" }
function T:init(o)
  self.causal = o.causal or false
  self.log_scale = nn.Parameter(as.full({ 1, o.num_heads or 1, 1, 1 }, 0.7))
end
function T:forward(q, k, v, mask)
  local s = q:matmul(k:transpose(-2, -1)) * self.log_scale:exp()
  if self.causal then s = as.where(as.ones(q:size(3), k:size(3), "bool"):tril(), s, -math.huge) end
  return s:softmax(-1):matmul(v)
end
as.register_attention("cli_tempered", T, { exact = false, gqa = false })
as.manual_seed(2)
local m = as.models.gpt2.new { vocab_size = 32, n_positions = 16, n_embd = 16, n_layer = 1, n_head = 2 }
local function batches(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  local out = {}
  for i = 1, #text - 8, 8 do
    local row = {}
    for j = 0, 7 do row[j + 1] = text:byte(i + j) % 32 end
    out[#out + 1] = as.tensor({ row }, "int64")
  end
  return out
end
return m:eval(), as.tensor({ { 1, 2, 3, 4 } }, "int64"), batches
]]
  local text = tmpfile(string.rep("the quick brown fox jumps over the lazy dog. ", 4))
  scripts[#scripts + 1] = text

  it("distils the swapped model against the original, on batches the script makes from --data, and saves it", function()
    local out = os.tmpname()
    local r = run { model, "--swap", "cli_tempered", "--distill", "steps=4,stages=attention", "--data", text, "--save", out }
    assert.equals(0, r.code, r.err)
    assert.truthy(r.out:find("swapped 1 module(s) for 'cli_tempered'", 1, true), r.out)
    assert.truthy(r.out:find("stage attention: 4 steps", 1, true), r.out)
    assert.truthy(r.out:find("after distillation:\noutput: (1, 4, 32) float32", 1, true), r.out)
    local f = assert(io.open(out, "rb"))
    assert.truthy(#f:read("a") > 0)
    f:close()
    os.remove(out)
  end)

  it("says what is wrong with the command line or the script, exit 2", function()
    local r = run { model, "--distill", "steps=4" }
    assert.equals(2, r.code)
    assert.truthy(r.err:find("option '--distill' needs '--swap NAME'", 1, true), r.err)
    r = run { "--data", text, model, "--swap", "cli_tempered" }
    assert.equals(2, r.code)
    assert.truthy(r.err:find("option '--data' goes with '--distill'", 1, true), r.err)
    -- after the script and without --distill, --data and --save are the script's own
    r = run { script "print('args', ...)", "--save", "x", "--data", "y" }
    assert.equals(0, r.code, r.err)
    assert.truthy(r.out:find("args\t--save\tx\t--data\ty", 1, true), r.out)
    r = run { model, "--swap", "cli_tempered", "--distill", "steps=0", "--data", text }
    assert.equals(2, r.code)
    assert.truthy(r.err:find("--distill: steps (attention) must be a positive integer", 1, true), r.err)
    r = run { model, "--swap", "cli_tempered", "--distill", "stepz=3", "--data", text }
    assert.equals(2, r.code)
    assert.truthy(r.err:find("--distill: unknown option 'stepz'", 1, true), r.err)
    local no_data = script "return as.models.gpt2.new{vocab_size=8, n_positions=8, n_embd=8, n_layer=1, n_head=2}, as.tensor({{1, 2}}, 'int64')"
    r = run { no_data, "--swap", "flash_attention", "--distill", "default" }
    assert.equals(2, r.code)
    assert.truthy(r.err:find("the script must return, after the model and its inputs, the batches", 1, true), r.err)
  end)
end)
