#define _GNU_SOURCE /* dladdr; clock_gettime, nanosleep */
/* The process's place in the job: init from the launcher's environment
 * (Open MPI's OMPI_COMM_WORLD_*), rank / world / local rank, the timeout,
 * finalize, and the deadline-polled wait every blocking call goes through.
 * Without a launcher (or without MPI in the build) the process is a world
 * of one, so the same script runs alone. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef ATTNSWAP_HAVE_MPI
#include <dlfcn.h>
#endif

#include "attnswap/error.h"
#include "dist_internal.h"

#ifdef ATTNSWAP_HAVE_NCCL
#include "nccl_comm.h"
#endif

as_dist_state as_dist_g = {.timeout = 300};

const char *as_dist_backend(void)
{
#ifdef ATTNSWAP_HAVE_MPI
    return "mpi";
#else
    return "none";
#endif
}

bool as_dist_has_nccl(void)
{
#ifdef ATTNSWAP_HAVE_NCCL
    return true;
#else
    return false;
#endif
}

int as_reduce_op_from_name(const char *name)
{
    static const char *names[] = {"sum", "avg", "max", "min", "prod"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, names[i])) return i;
    if (!strcmp(name, "mean")) return AS_REDUCE_AVG;
    return -1;
}

double as_dist_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void as_dist_set_timeout(double seconds) { as_dist_g.timeout = seconds; }
double as_dist_timeout(void) { return as_dist_g.timeout; }
bool as_dist_is_initialized(void) { return as_dist_g.init; }

int as_dist_check_init(const char *fn)
{
    if (as_dist_g.init) return 0;
    as_error_set("%s: not initialised (call as.distributed.init() first)", fn);
    return -1;
}

int as_dist_check_rank(const char *fn, const char *what, int r)
{
    if (as_dist_check_init(fn)) return -1;
    if (r >= 0 && r < as_dist_g.world) return 0;
    as_error_set("%s: %s rank %d is out of range (world size %d: 0 to %d)", fn, what, r, as_dist_g.world,
                 as_dist_g.world - 1);
    return -1;
}

int as_dist_rank(void) { return as_dist_check_init("rank") ? -1 : as_dist_g.rank; }
int as_dist_world_size(void) { return as_dist_check_init("world_size") ? -1 : as_dist_g.world; }
int as_dist_local_rank(void) { return as_dist_check_init("local_rank") ? -1 : as_dist_g.local; }

static int env_int(const char *name, int def)
{
    const char *s = getenv(name);
    return s && *s ? atoi(s) : def;
}

#ifdef ATTNSWAP_HAVE_MPI
/* At exit: leave the job cleanly, or, after a failure, abort it so the
 * ranks still waiting on this one end too (mpirun then reports the job). */
static void at_exit(void)
{
    if (!as_dist_g.mpi || as_dist_g.finalized) return;
    int fin = 0;
    MPI_Finalized(&fin);
    if (fin) return;
    if (as_dist_g.failed) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
}

int as_dist_mpi_check(const char *fn, int rc)
{
    if (rc == MPI_SUCCESS) return 0;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    as_dist_g.failed = true;
    as_error_set("%s: MPI error on rank %d: %s", fn, as_dist_g.rank, msg);
    return -1;
}

/* After a collective timed out: which ranks are silent?  Every rank pings
 * every other on a tag of its own and listens for a while (the live ones
 * time out too, at about the same moment); those never heard from are
 * named.  The requests stay posted and their buffers alive: MPI may still
 * write them, and the job is ending. */
static void silent_ranks(double timeout, char *out, size_t size)
{
    int W = as_dist_g.world, me = as_dist_g.rank;
    static int32_t *heard; /* static: reachable until exit */
    static MPI_Request *req;
    static int32_t ping;
    heard = calloc((size_t)W, sizeof *heard);
    req = calloc(2 * (size_t)W, sizeof *req);
    snprintf(out, size, "the other %d ranks", W - 1);
    if (!heard || !req) return;
    ping = me;
    for (int r = 0; r < W; r++) {
        req[2 * r] = req[2 * r + 1] = MPI_REQUEST_NULL;
        if (r == me) continue;
        MPI_Irecv(&heard[r], 1, MPI_INT32_T, r, AS_DIST_PING_TAG, MPI_COMM_WORLD, &req[2 * r]);
        MPI_Isend(&ping, 1, MPI_INT32_T, r, AS_DIST_PING_TAG, MPI_COMM_WORLD, &req[2 * r + 1]);
    }
    bool *got = calloc((size_t)W, sizeof *got);
    if (!got) return;
    double end = as_dist_now() + (timeout > 0 && timeout < 2 ? timeout : 2);
    int missing = W - 1;
    while (missing > 0 && as_dist_now() < end) {
        for (int r = 0; r < W; r++) {
            int done = 0;
            if (r == me || got[r]) continue;
            if (MPI_Test(&req[2 * r], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) got[r] = true, missing--;
        }
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    if (missing == 0 || missing == W - 1) {
        free(got);
        return; /* all answered (a mismatch of calls, not a death) or none: no one to name */
    }
    size_t k = (size_t)snprintf(out, size, "rank%s", missing > 1 ? "s" : "");
    int listed = 0;
    for (int r = 0; r < W && k < size; r++)
        if (r != me && !got[r]) k += (size_t)snprintf(out + k, size - k, "%s %d", listed++ ? "," : "", r);
    free(got);
}

int as_dist_wait(const char *fn, MPI_Request *req, int n, int peer)
{
    double t = as_dist_g.timeout;
    double deadline = t > 0 ? as_dist_now() + t : INFINITY;
    /* MPI progresses only inside MPI_Test: poll without pause for the first
     * 5 ms (a transfer in progress, as MPI's blocking calls spin), then
     * with naps growing to 1 ms (a slow or dead peer: its core, when
     * oversubscribed, is left to it) */
    double start = as_dist_now();
    long nap = 20000;
    for (;;) {
        int done = 0;
        if (as_dist_mpi_check(fn, MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE))) return -1;
        if (done) return 0;
        double now = as_dist_now();
        if (now > deadline) break;
        if (now - start > 0.005) {
            nanosleep(&(struct timespec){0, nap}, NULL);
            if (nap < 1000000) nap *= 2;
        }
    }
    as_dist_g.failed = true;
    if (peer >= 0)
        as_error_set("%s: rank %d timed out after %g s waiting for rank %d (it died or stopped answering)", fn,
                     as_dist_g.rank, t, peer);
    else if (as_dist_g.world == 2)
        as_error_set("%s: rank %d timed out after %g s waiting for rank %d (it died or stopped answering)", fn,
                     as_dist_g.rank, t, 1 - as_dist_g.rank);
    else {
        char who[256];
        silent_ranks(t, who, sizeof who);
        as_error_set("%s: rank %d timed out after %g s waiting for %s (it died or stopped answering)", fn,
                     as_dist_g.rank, t, who);
    }
    return -1;
}
#endif

int as_dist_init(void)
{
    if (as_dist_g.init) return 0;
    if (as_dist_g.finalized) {
        as_error_set("init: the job was finalised; a process joins it once");
        return -1;
    }
    const char *t = getenv("ATTNSWAP_DIST_TIMEOUT");
    if (t && *t) as_dist_g.timeout = atof(t);
    int world = env_int("OMPI_COMM_WORLD_SIZE", 1);
#ifdef ATTNSWAP_HAVE_MPI
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        int inited = 0, provided = 0;
        /* Open MPI's plugins look for libmpi's symbols globally; a stock
         * lua5.4 loads attnswap/core.so (and libmpi with it) RTLD_LOCAL. */
        Dl_info info;
        if (dladdr((void *)MPI_Init, &info) && info.dli_fname)
            dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
        MPI_Initialized(&inited);
        if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            as_error_set("init: MPI_Init failed (rank %s of %d)", getenv("OMPI_COMM_WORLD_RANK"), world);
            return -1;
        }
        as_dist_g.mpi = true;
        atexit(at_exit);
        /* errors come back as codes, turned into attnswap errors, instead of
         * MPI's default of aborting the job on the spot */
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &as_dist_g.rank);
        MPI_Comm_size(MPI_COMM_WORLD, &as_dist_g.world);
        as_dist_g.local = env_int("OMPI_COMM_WORLD_LOCAL_RANK", -1);
        if (as_dist_g.local < 0) {
            MPI_Comm node;
            MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
            MPI_Comm_rank(node, &as_dist_g.local);
            MPI_Comm_free(&node);
        }
        as_dist_g.init = true;
        return 0;
    }
#else
    if (world > 1) {
        as_error_set("init: this process is one of %d ranks, but attnswap was built without MPI "
                     "(install libopenmpi-dev and rebuild with -DATTNSWAP_MPI=ON)",
                     world);
        return -1;
    }
#endif
    as_dist_g.rank = 0, as_dist_g.world = 1, as_dist_g.local = 0;
    as_dist_g.init = true;
    return 0;
}

int as_dist_finalize(void)
{
    if (!as_dist_g.init) return 0;
#ifdef ATTNSWAP_HAVE_NCCL
    as_nccl_finalize();
#endif
#ifdef ATTNSWAP_HAVE_MPI
    if (as_dist_g.mpi && !as_dist_g.failed) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin && as_dist_mpi_check("finalize", MPI_Finalize())) return -1;
        as_dist_g.finalized = true;
    }
#endif
    as_dist_g.init = false;
    return 0;
}
