-- A rank that dies or stops answering ends the job with an error naming it,
-- never a hang (run by expect_failure.sh, which checks the exit status, the
-- message and the time).  arg[1]: "killed" (rank 1 is killed with SIGKILL
-- while rank 0 waits in all_reduce: mpirun ends the job and names rank 1) or
-- "silent" (rank 1 waits for a message that never comes instead of joining
-- the all_reduce: rank 0 times out after 2 s naming rank 1, aborts the job)
-- or "silent3" (3 ranks, rank 2 silent: ranks 0 and 1 time out, ping each
-- other, and name rank 2).
local as = require "attnswap"
local mode = arg[1]
local D = as.distributed.init({ timeout = 60 })
local t = as.ones(4)
D.all_reduce(t) -- both alive: the job works up to here
assert(t:sum():item() == 4 * D.world_size())
local silent = mode == "silent3" and 2 or 1
if D.rank() == silent then
  if mode == "killed" then
    os.execute("kill -9 $PPID") -- the shell's parent: this process
  else
    D.recv(as.zeros(1), 0, 9) -- never sent
  end
else
  D.all_reduce(t, "sum", { timeout = mode == "killed" and 60 or 2 })
end
error("unreachable: the job should have ended")
