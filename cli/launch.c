/* attnswap-run --nproc N script.lua ...: the short form of
 * `mpirun -np N attnswap-run script.lua ...` (docs/distributed.md).  Parsed
 * before anything else: the process becomes mpirun, which starts N copies
 * of this program with the rest of the command line.  As root it adds
 * --allow-run-as-root (Open MPI refuses root otherwise), and --oversubscribe
 * when N exceeds the cores (Open MPI refuses more ranks than slots);
 * ATTNSWAP_MPIRUN names another launcher. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launch.h"

int as_cli_nproc(int argc, char **argv)
{
    int at = -1;
    const char *val = NULL;
    for (int i = 1; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--nproc") == 0) {
            at = i, val = i + 1 < argc ? argv[i + 1] : NULL;
            break;
        }
        if (strncmp(argv[i], "--nproc=", 8) == 0) {
            at = i, val = argv[i] + 8;
            break;
        }
    }
    if (at < 0) return -1;
    char *end = NULL;
    long n = val ? strtol(val, &end, 10) : 0;
    if (!val || *end || n < 1 || n > 4096) {
        fprintf(stderr, "attnswap-run: --nproc: expected a number of processes from 1 to 4096, got '%s'\n",
                val ? val : "nothing");
        return 2;
    }
    int skip = strchr(argv[at], '=') ? 1 : 2;
    char **args = calloc((size_t)argc + 8, sizeof *args);
    if (!args) return 1;
    const char *mpirun = getenv("ATTNSWAP_MPIRUN");
    int k = 0;
    args[k++] = (char *)(mpirun && *mpirun ? mpirun : "mpirun");
    args[k++] = "-np";
    args[k++] = (char *)val;
    if (geteuid() == 0) args[k++] = "--allow-run-as-root";
    if (n > sysconf(_SC_NPROCESSORS_ONLN)) args[k++] = "--oversubscribe";
    /* this very program, wherever it was started from */
    static char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    args[k++] = len > 0 ? (self[len] = 0, self) : argv[0];
    for (int i = 1; i < argc; i++)
        if (i < at || i >= at + skip) args[k++] = argv[i];
    args[k] = NULL;
    fflush(stdout);
    execvp(args[0], args);
    fprintf(stderr, "attnswap-run: --nproc: cannot run %s (%s; Debian: apt-get install openmpi-bin)\n", args[0],
            strerror(errno));
    free(args);
    return 1;
}
