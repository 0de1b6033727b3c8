/* CUDA graphs: a forward's kernels captured once from the device's stream
 * and replayed with one launch, so the card stops waiting between kernels
 * for the host to issue the next (torch.cuda.CUDAGraph's model).  The
 * capture's memory is its own pool (device.c), kept while the graph lives:
 * a replay writes the same addresses the capture did. */
#include "attnswap/cuda.h"

#ifdef ATTNSWAP_HAVE_CUDA

#include <cuda_runtime.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/ops.h"
#include "cuda_backend.h"
#include "cuda_kernels.h"

struct as_cuda_graph {
    int device;
    cudaStream_t stream; /* the device's, where the capture ran and replays go */
    int state; /* 0 capturing, 1 ready, -1 failed */
    void *pool;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
};

static const char rng_refusal[] =
    "random numbers cannot be drawn while a CUDA graph is captured: every replay would repeat the capture's "
    "draw (capture in eval mode, without dropout)";

/* Graphs freed while another was being captured (the collector runs
 * anywhere): waiting for the stream then would break that capture, so they
 * wait here until it ends. */
static as_cuda_graph **deferred;
static size_t n_deferred, cap_deferred;

static void destroy(as_cuda_graph *g)
{
    /* a replay still queued must finish before its graph and memory go */
    if (g->stream) cudaStreamSynchronize(g->stream);
    cudaGetLastError();
    if (g->exec) cudaGraphExecDestroy(g->exec);
    if (g->graph) cudaGraphDestroy(g->graph);
    as_cuda_pool_drop(g->pool);
    free(g);
}

static void flush_deferred(void)
{
    while (n_deferred) destroy(deferred[--n_deferred]);
}

as_cuda_graph *as_cuda_graph_begin(int index)
{
    if (as_cuda_use("graph", index)) return NULL;
    if (as_cuda_capturing(-1)) {
        as_error_set("graph: a capture is already open (graphs do not nest)");
        return NULL;
    }
    as_cuda_graph *g = calloc(1, sizeof *g);
    if (!g) {
        as_error_set("graph: out of host memory");
        return NULL;
    }
    g->device = index;
    cudaStream_t s = g->stream = as_cuda_current_stream();
    /* nothing queued may still be running into the capture's first kernels'
     * memory from before: the stream orders that, but a capture refuses to
     * start on a stream with an error pending */
    if (as_cuda_check("graph", cudaGetLastError()) || !as_cuda_bad_index_flag(index) ||
        !(g->pool = as_cuda_pool_open(index))) {
        free(g);
        return NULL;
    }
    if (as_cuda_check("graph", cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal))) {
        as_cuda_pool_drop(g->pool);
        free(g);
        return NULL;
    }
    as_rng_forbid(rng_refusal);
    return g;
}

int as_cuda_graph_end(as_cuda_graph *g)
{
    if (!g || g->state != 0) {
        as_error_set("graph: end: %s", g ? "the capture has already ended" : "no graph");
        return -1;
    }
    as_rng_forbid(NULL);
    as_cuda_pool_close(g->device);
    g->state = -1;
    cudaError_t e = cudaStreamEndCapture(g->stream, &g->graph);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* the capture's error is not the next call's */
        flush_deferred();
        as_error_set("graph: the capture failed (%s): an operation in it cannot be part of a graph, such as a copy "
                     "between the host and the card or a wait for the card",
                     cudaGetErrorString(e));
        return -1;
    }
    e = cudaGraphInstantiate(&g->exec, g->graph, 0);
    flush_deferred(); /* graphs collected during the capture, now that the stream may wait */
    if (as_cuda_check("graph", e)) return -1;
    g->state = 1;
    return 0;
}

int as_cuda_graph_replay(as_cuda_graph *g)
{
    if (!g || g->state != 1) {
        as_error_set("graph: replay: %s", !g ? "no graph" : g->state == 0 ? "the capture has not ended" : "the capture failed");
        return -1;
    }
    /* an index out of range that an earlier replay met (the card checks them in a graph) */
    if (as_cuda_use("graph", g->device) || as_cuda_bad_index_report(g->device)) return -1;
    return as_cuda_check("graph", cudaGraphLaunch(g->exec, g->stream));
}

void as_cuda_graph_free(as_cuda_graph *g)
{
    if (!g) return;
    if (g->state != 0 && as_cuda_capturing(-1)) {
        if (n_deferred == cap_deferred) {
            size_t cap = cap_deferred ? 2 * cap_deferred : 8;
            as_cuda_graph **d = realloc(deferred, cap * sizeof *d);
            if (d) deferred = d, cap_deferred = cap;
        }
        if (n_deferred < cap_deferred) deferred[n_deferred++] = g;
        /* else out of host memory: the graph is left, not destroyed under the capture */
        return;
    }
    if (g->state == 0) { /* dropped mid-capture (an error unwound past end): close it */
        as_rng_forbid(NULL);
        as_cuda_pool_close(g->device);
        cudaGraph_t partial = NULL;
        if (cudaStreamEndCapture(g->stream, &partial) == cudaSuccess && partial) cudaGraphDestroy(partial);
        cudaGetLastError();
    }
    destroy(g);
    flush_deferred();
}

#else /* no CUDA in this build: every call says so */

as_cuda_graph *as_cuda_graph_begin(int index)
{
    as_cuda_use("graph", index);
    return NULL;
}
int as_cuda_graph_end(as_cuda_graph *g)
{
    (void)g;
    return as_cuda_check("graph", 1);
}
int as_cuda_graph_replay(as_cuda_graph *g)
{
    (void)g;
    return as_cuda_check("graph", 1);
}
void as_cuda_graph_free(as_cuda_graph *g) { (void)g; }

#endif
