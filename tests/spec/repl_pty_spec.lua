-- The REPL on a real terminal, typed into as a person would: tests/pty/pty_drive
-- ($ATTNSWAP_PTY_DRIVE) runs attnswap-run ($ATTNSWAP_RUN) under a pseudo-terminal,
-- sends keys and waits (10 s at most) for what should appear.  A failure shows
-- the whole transcript.  Each session gets its own HOME and history file.
local RUN = assert(os.getenv("ATTNSWAP_RUN"), "ATTNSWAP_RUN is not set")
local DRIVE = assert(os.getenv("ATTNSWAP_PTY_DRIVE"), "ATTNSWAP_PTY_DRIVE is not set")

local CTRL_C, CTRL_D, TAB, UP = "\3", "\4", "\t", "\27[A"

local function q(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

local function slurp(name)
  local f = io.open(name)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- pty_drive's script escapes: backslash and control characters.
local function escape(s)
  return (s:gsub("[%c\\]", function(c)
    return c == "\\" and "\\\\" or string.format("\\x%02x", c:byte())
  end))
end

local home
before_each(function()
  home = os.tmpname()
  os.remove(home)
  assert(os.execute("mkdir -m 700 " .. q(home)))
end)
after_each(function()
  os.execute("rm -rf " .. q(home))
end)

-- Runs attnswap-run (with args) under a terminal and plays steps, a list of
-- { "send", keys } / { "expect", text }.  Every `send` first waits for the
-- prompt "> " and for libedit to read keys (raw mode: see tests/pty/pty_drive.c);
-- cont = true skips the prompt (a ">> " line, expected before), nowait = true
-- both (keys for a running statement).  Ends with Ctrl-D.
-- Returns the transcript; fails (showing it) unless the session ended with
-- status 0 and every expect was met.
local function session(steps, o)
  o = o or {}
  local lines = { "timeout 10" }
  for _, s in ipairs(steps) do
    if s[1] == "send" and not s.nowait then
      if not s.cont then lines[#lines + 1] = "expect > " end
      lines[#lines + 1] = "raw"
    end
    lines[#lines + 1] = s[1] .. " " .. escape(s[2])
  end
  lines[#lines + 1] = "expect > "
  lines[#lines + 1] = "raw"
  lines[#lines + 1] = "send " .. escape(CTRL_D)
  local script, errf = os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  -- history = false: the default file, ~/.attnswap_history
  local histvar = o.history == false and "-u ATTNSWAP_HISTORY"
                  or "ATTNSWAP_HISTORY=" .. q(o.history or home .. "/history")
  local cmd = { "env", histvar, "HOME=" .. q(home), "TERM=xterm", q(DRIVE), q(script), q(RUN) }
  for _, a in ipairs(o.args or {}) do cmd[#cmd + 1] = q(a) end
  local p = assert(io.popen(table.concat(cmd, " ") .. " 2>" .. q(errf)))
  local transcript = p:read("a")
  local _, _, code = p:close()
  local err = slurp(errf) or ""
  os.remove(script)
  os.remove(errf)
  assert(code == 0, string.format("pty session ended with status %s%s\n--- transcript:\n%s\n---",
    tostring(code), err ~= "" and (" (" .. err:gsub("\n$", "") .. ")") or "", transcript))
  return transcript
end

local function line(text) return { "send", text .. "\r" } end
local function expect(text) return { "expect", text } end

describe("the REPL on a terminal", function()
  it("prints the value of an expression", function()
    local t = session { line "1 + 1", expect "\r\n2\r\n", line "'a', nil, 3", expect "a\tnil\t3\r\n" }
    assert.matches("^attnswap %d+%.%d+%.%d+ %(Lua 5%.4%.%d+%)\r\n", t)
  end)

  it("continues an unfinished statement on '>> ' and runs it whole", function()
    session {
      line "function sq(x)", expect ">> ",
      { "send", "local y = x * x\r", cont = true }, expect ">> ",
      { "send", "return y end\r", cont = true },
      line "sq(12)", expect "\r\n144\r\n",
    }
  end)

  it("reports an error and goes on", function()
    session {
      line "error('boom')", expect "boom", expect "stack traceback:",
      line "print('still ' .. 'here')", expect "still here\r\n",
    }
  end)

  it("Ctrl-C stops a running loop, keeps the state and goes on", function()
    session {
      line "kept = 'yes'",
      line "io.write('spin', 'ning\\n') while true do end", expect "spinning\r\n",
      { "send", CTRL_C, nowait = true }, expect "interrupted!",
      line "print('kept=' .. kept)", expect "kept=yes\r\n",
    }
  end)

  it("Ctrl-C at the prompt drops the line being typed", function()
    local t = session {
      { "send", "print('dropped')" }, { "send", CTRL_C, nowait = true },
      line "print('fresh')", expect "fresh\r\n",
    }
    assert.falsy(t:find("\ndropped\r\n", 1, true), t)
  end)

  it("Tab completes globals, a module's children and a tensor's methods", function()
    session {
      line "m = nn.TransformerBlock{dim = 8, num_heads = 2}",
      line("m.at" .. TAB), expect "MultiheadAttention(",
      line("m.attn.co" .. TAB), expect "ScaledDotProductAttention(",
      line "t = as.randn(2, 3)",
      line("print('numel', t:so" .. TAB .. "(-1):numel())"), expect "numel\t6\r\n",
      line("pri" .. TAB .. "('global ' .. 'done')"), expect "global done\r\n",
      line "s = nn.Sequential(nn.Linear(2, 3))",
      line("print('out', s[" .. TAB .. ".weight:size(1))"), expect "out\t3\r\n",
      line("print('w', s[1].we" .. TAB .. ":size(2))"), expect "w\t2\r\n",
    }
  end)

  it("Tab twice lists the choices", function()
    session {
      line "m = nn.TransformerBlock{dim = 8, num_heads = 2}",
      { "send", "m.norm" .. TAB .. TAB }, expect "m.norm1", expect "m.norm2",
      { "send", "2\r", nowait = true }, expect "LayerNorm(",
    }
  end)

  it("recalls the history of an earlier session with Up", function()
    local hist = home .. "/history"
    session({ line "print('from ' .. 'history')", expect "from history\r\n" }, { history = hist })
    assert.truthy(slurp(hist), "no history file written")
    session({ { "send", UP .. "\r" }, expect "from history\r\n" }, { history = hist })
  end)

  it("keeps the history in ~/.attnswap_history, private, at most 1000 entries", function()
    local name = home .. "/.attnswap_history"
    local f = assert(io.open(name, "w"))
    f:write("_HiStOrY_V2_\n") -- libedit's format: a header, then one entry a line
    for i = 1, 1100 do f:write("x\\040=\\040", i, "\n") end
    f:close()
    os.execute("chmod 600 " .. q(name))
    session({ { "send", UP .. "\r" }, line "x", expect "\r\n1100\r\n", line "y = 1" },
      { history = false })
    local kept = slurp(name)
    assert.equals(1001, select(2, kept:gsub("\n", "")), "the header and 1000 entries")
    assert.truthy(kept:find("\ny\\040=\\0401\n", 1, true), "the new entry is kept")
    assert.falsy(kept:find("\nx\\040=\\0401\n", 1, true), "the oldest ones are dropped")
  end)

  it("creates the history file readable by its owner only", function()
    session({ line "secret = 1" }, { history = false })
    local p = assert(io.popen("stat -c %a " .. q(home .. "/.attnswap_history")))
    assert.equals("600", p:read("l"))
    p:close()
  end)

  it("runs the script first with -i, then edits lines on the terminal", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write("answer = 42\n")
    f:close()
    local ok, t = pcall(session, { line "answer", expect "\r\n42\r\n" }, { args = { "-i", script } })
    os.remove(script)
    assert(ok, t)
  end)

  it("help() works on the terminal", function()
    session { line "help(as.randn(2, 3))", expect "Tensor (2, 3) float32 on cpu" }
  end)
end)
