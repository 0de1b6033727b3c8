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
  it("-v and --version print 'attnswap X.Y.Z (Lua 5.4.x)' and exit 0", function()
    local version = run({ "-e", "io.write(as.version)" }).out
    assert.matches("^%d+%.%d+%.%d+$", version)
    for _, opt in ipairs { "-v", "--version" } do
      local r = run { opt }
      assert.equals(0, r.code)
      assert.matches("^attnswap " .. version:gsub("%.", "%%.") .. " %(Lua 5%.4%.%d+%)\n$", r.out)
      assert.equals("", r.err)
    end
  end)

  it("-h and --help print the usage and the options on stdout and exit 0", function()
    for _, opt in ipairs { "-h", "--help" } do
      local r = run { opt }
      assert.equals(0, r.code)
      assert.equals(USAGE, r.out:match("^[^\n]*"))
      for _, o in ipairs { "-e stat", "-i", "-l mod", "-v, --version", "-h, --help", "--", "-" } do
        assert.truthy(r.out:find("\n  " .. o .. " ", 1, true), o)
      end
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

describe("attnswap-run with stdin", function()
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

  it("runs the script first and keeps its globals", function()
    local out = repl("y + 1\n", { "-i", script "y = 41" })
    assert.equals("> 42\n> \n", out)
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
