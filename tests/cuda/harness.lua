-- What the GPU scripts under tests/cuda share: exit 77 (ctest's skip) where
-- no CUDA device is visible, count the checks and name each failure on
-- stderr, and end with the count and the exit status.
--   local t = dofile((arg[0]:match("^(.*)/") or ".") .. "/harness.lua")("cuda_lua")
--   local check = t.check   -- check(cond, what)
--   ...
--   t.finish()              -- t.finish(true): close the state first (a leak checker's run)
return function(name)
  if not as.cuda.is_available() then
    print(name .. ": no CUDA device, skipped")
    os.exit(77)
  end
  local t = { checks = 0, failures = 0 }
  function t.check(cond, what)
    t.checks = t.checks + 1
    if not cond then
      t.failures = t.failures + 1
      io.stderr:write("FAILED: ", what, "\n")
    end
  end
  function t.finish(close)
    print(string.format("%s: %d checks, %d failed", name, t.checks, t.failures))
    os.exit(t.failures == 0 and 0 or 1, close)
  end
  return t
end
