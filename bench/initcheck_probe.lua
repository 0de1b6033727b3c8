-- compute-sanitizer initcheck probe (not a test; docs/reliability.md): a cuBLAS product read by our kernel.
-- compute-sanitizer --tool initcheck attnswap-run bench/initcheck_probe.lua [float32|float16|bfloat16] [n]
local dt = arg[1] or "bfloat16"
local n = tonumber(arg[2]) or 256
local a, b = as.randn(n, n):to(dt):cuda(), as.randn(n, n):to(dt):cuda()
local c = a:matmul(b)
local d = c + c
as.cuda.synchronize()
print(dt, n, d:float():cpu():sum():item() ~= nil)
