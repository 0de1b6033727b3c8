/* attnswap-run --nproc N: re-runs the command under mpirun (cli/launch.c). */
#ifndef AS_CLI_LAUNCH_H
#define AS_CLI_LAUNCH_H

/* -1 when argv has no --nproc; otherwise execs mpirun and returns only on
 * failure, with the exit status (the error printed). */
int as_cli_nproc(int argc, char **argv);

#endif
