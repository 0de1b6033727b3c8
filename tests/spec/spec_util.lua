-- Helpers the busted specs share (found on package.path: tests/spec/?.lua).
local assert = require "luassert" -- busted gives specs its assert; a required module asks for it

local U = {}

U.src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
U.fixtures = U.src .. "/tests/fixtures/"

function U.maxdiff(a, b) return (a:float() - b:float()):abs():max():item() end

--- The message of the error fn(...) raises (failing the spec when it raises none).
function U.errmsg(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

--- A command's output (stdout and stderr) and exit status.  Commands run
--- without LD_PRELOAD: under the sanitizers they would inherit ASan and fail
--- its leak check.
function U.sh(cmd)
  local p = assert(io.popen("env -u LD_PRELOAD " .. cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

--- A new empty folder.
function U.tmpdir()
  local d = U.sh("mktemp -d"):match("[^\n]+")
  assert(d and d ~= "", "mktemp -d failed")
  return d
end

function U.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

function U.copy(from, to)
  local f = assert(io.open(from, "rb"))
  U.write(to, f:read("a"))
  f:close()
end

return U
