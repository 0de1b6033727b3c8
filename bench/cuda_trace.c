/* A kernel-time table for any CUDA process, where nsys and ncu are absent.
 *
 * Built as a shared object and preloaded (bench/gpu_host.sh trace):
 *   LD_PRELOAD=build-gpu/libcuda_trace.so CUDA_TRACE_OUT=t.txt CUDA_TRACE_ITERS=10 attnswap-run s.lua
 * Only kernels launched between cudaProfilerStart and cudaProfilerStop are
 * recorded (as.cuda.profiler_start/stop, torch.cuda.profiler.start/stop), the
 * same capture range nsys uses. The table lists each kernel's count, total
 * and mean time, sorted by total, divided by CUDA_TRACE_ITERS when given so
 * that it reads per forward; then the kernels' sum against the span from the
 * first start to the last end, whose difference is the card idling between
 * kernels (launch gaps and host work).
 *
 * CUPTI records kernels with a timestamp from the card itself, so the times
 * are the kernels' own, without the launch or a synchronisation around each.
 *
 * Then where the card idles: the gaps between one kernel's end and the next
 * one's start, summed by the pair of kernels around them (the largest first);
 * and with CUDA_TRACE_API=1, the host's CUDA runtime calls in the range, by
 * total time, so a gap can be put down to a launch, an allocation or a wait. */
#include <cupti.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_BYTES (8u << 20)
#define MAX_NAMES 1024

typedef struct {
    char *name;
    uint64_t count, total_ns;
} Entry;

static Entry entries[MAX_NAMES];
static Entry apis[MAX_NAMES];
static int n_apis;
/* every kernel of the range, for the gaps */
typedef struct {
    uint64_t start, end;
    int name; /* index into entries */
} Launch;
static Launch *launches;
static size_t n_launches, cap_launches;
static int n_entries;
static uint64_t first_start = UINT64_MAX, last_end;
static int recording, recorded; /* recorded: a capture range was opened */
static size_t dropped;
/* CUPTI may hand over completed buffers on a thread of its own */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    *buffer = aligned_alloc(8, BUF_BYTES);
    *size = *buffer ? BUF_BYTES : 0;
    *max_records = 0;
}

static void add_kernel(const char *name, uint64_t start, uint64_t end)
{
    if (end <= start) return; /* a record flushed before its kernel finished */
    int i = 0;
    while (i < n_entries && strcmp(entries[i].name, name)) i++;
    if (i == n_entries) {
        char *copy = n_entries < MAX_NAMES ? strdup(name) : NULL;
        if (!copy) {
            dropped++;
            return;
        }
        entries[n_entries++].name = copy;
    }
    entries[i].count++;
    entries[i].total_ns += end - start;
    if (n_launches == cap_launches) {
        size_t cap = cap_launches ? 2 * cap_launches : 4096;
        Launch *l = realloc(launches, cap * sizeof *l);
        if (l) launches = l, cap_launches = cap;
    }
    if (n_launches < cap_launches) launches[n_launches++] = (Launch){start, end, i};
    if (start < first_start) first_start = start;
    if (end > last_end) last_end = end;
}

static void add_api(uint32_t cbid, uint64_t start, uint64_t end)
{
    const char *name = NULL;
    if (cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, cbid, &name) != CUPTI_SUCCESS || !name) name = "?";
    int i = 0;
    while (i < n_apis && strcmp(apis[i].name, name)) i++;
    if (i == n_apis) {
        if (n_apis == MAX_NAMES) return;
        apis[n_apis++].name = (char *)name; /* CUPTI's own string */
    }
    apis[i].count++;
    apis[i].total_ns += end > start ? end - start : 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid)
{
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *rec = NULL;
    size_t lost = 0;
    pthread_mutex_lock(&lock);
    /* CUpti_ActivityKernel10: the kernel record of CUDA 13.0's CUPTI, the GPU host's */
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS)
        if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
            add_kernel(k->name ? k->name : "?", k->start, k->end);
        } else if (rec->kind == CUPTI_ACTIVITY_KIND_RUNTIME) {
            const CUpti_ActivityAPI *a = (const CUpti_ActivityAPI *)rec;
            add_api(a->cbid, a->start, a->end);
        }
    if (cuptiActivityGetNumDroppedRecords(ctx, stream, &lost) == CUPTI_SUCCESS) dropped += lost;
    pthread_mutex_unlock(&lock);
    free(buffer);
}

static int by_total(const void *a, const void *b)
{
    const Entry *x = a, *y = b;
    return x->total_ns < y->total_ns ? 1 : x->total_ns > y->total_ns ? -1 : 0;
}

static int by_start(const void *a, const void *b)
{
    const Launch *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* idle time between consecutive kernels, by (before, after) pair, the largest
 * TRACE_GAPS (default 12) pairs; names cut to 60 characters */
static void report_gaps(FILE *f, double iters)
{
    qsort(launches, n_launches, sizeof *launches, by_start);
    typedef struct {
        int a, b;
        uint64_t ns, n;
    } Gap;
    Gap *g = calloc(n_launches + 1, sizeof *g);
    size_t ng = 0;
    if (!g) return;
    uint64_t reach = n_launches ? launches[0].end : 0;
    for (size_t i = 1; i < n_launches; i++) {
        const Launch *p = &launches[i - 1], *q = &launches[i];
        if (q->start > reach) {
            size_t k = 0;
            while (k < ng && !(g[k].a == p->name && g[k].b == q->name)) k++;
            if (k == ng) g[ng++] = (Gap){p->name, q->name, 0, 0};
            g[k].ns += q->start - reach, g[k].n++;
        }
        if (q->end > reach) reach = q->end;
    }
    for (size_t i = 0; i < ng; i++) /* largest first: a selection, the list is short */
        for (size_t j = i + 1; j < ng; j++)
            if (g[j].ns > g[i].ns) {
                Gap t = g[i];
                g[i] = g[j], g[j] = t;
            }
    const char *e = getenv("TRACE_GAPS");
    size_t show = e && atoi(e) > 0 ? (size_t)atoi(e) : 12;
    fprintf(f, "# idle before a kernel, per iteration, by the kernels around it\n%10s %8s  %s\n", "us", "count",
            "after -> before");
    for (size_t i = 0; i < ng && i < show; i++)
        fprintf(f, "%10.1f %8.1f  %.60s -> %.60s\n", g[i].ns / 1e3 / iters, g[i].n / iters, entries[g[i].a].name,
                entries[g[i].b].name);
    free(g);
}

static void report(void)
{
    if (!recorded) return; /* a process that never opened a capture range (a child, a helper) */
    const char *path = getenv("CUDA_TRACE_OUT");
    const char *it = getenv("CUDA_TRACE_ITERS");
    double iters = it && atof(it) > 0 ? atof(it) : 1;
    FILE *f = path ? fopen(path, "w") : stderr;
    if (!f) f = stderr;
    FILE *gaps = tmpfile(); /* written before the table sorts the names, printed after it */
    if (gaps) report_gaps(gaps, iters);
    qsort(entries, (size_t)n_entries, sizeof *entries, by_total);
    uint64_t sum = 0;
    for (int i = 0; i < n_entries; i++) sum += entries[i].total_ns;
    fprintf(f, "# kernel time per iteration (%g iterations traced)\n", iters);
    fprintf(f, "%10s %8s %10s %6s  %s\n", "us", "count", "mean us", "%", "kernel");
    for (int i = 0; i < n_entries; i++)
        fprintf(f, "%10.1f %8.1f %10.2f %6.1f  %s\n", entries[i].total_ns / 1e3 / iters, entries[i].count / iters,
                entries[i].total_ns / 1e3 / (double)entries[i].count, 100.0 * entries[i].total_ns / (sum ? sum : 1),
                entries[i].name);
    double span = last_end > first_start ? (last_end - first_start) / 1e3 / iters : 0;
    fprintf(f, "# kernels %.1f us, span %.1f us, idle %.1f us per iteration (negative where kernels overlap)\n",
            sum / 1e3 / iters, span, span - sum / 1e3 / iters);
    if (gaps) {
        rewind(gaps);
        char line[512];
        while (fgets(line, sizeof line, gaps)) fputs(line, f);
        fclose(gaps);
    }
    if (n_apis) {
        qsort(apis, (size_t)n_apis, sizeof *apis, by_total);
        fprintf(f, "# the host's CUDA runtime calls per iteration\n%10s %8s %10s  %s\n", "us", "count", "mean us", "call");
        for (int i = 0; i < n_apis; i++)
            fprintf(f, "%10.1f %8.1f %10.2f  %s\n", apis[i].total_ns / 1e3 / iters, apis[i].count / iters,
                    apis[i].total_ns / 1e3 / (double)apis[i].count, apis[i].name);
    }
    if (dropped) fprintf(f, "# %zu records dropped: the table is incomplete\n", dropped);
    if (f != stderr) fclose(f);
}

static void CUPTIAPI on_api(void *data, CUpti_CallbackDomain domain, CUpti_CallbackId id, const void *info)
{
    (void)data, (void)domain;
    const CUpti_CallbackData *cb = info;
    if (id == CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStart_v4000 && cb->callbackSite == CUPTI_API_EXIT && !recording) {
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
        if (getenv("CUDA_TRACE_API")) cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME);
        recording = recorded = 1;
    } else if (id == CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStop_v4000 && cb->callbackSite == CUPTI_API_EXIT && recording) {
        /* the caller synchronised before the stop (as nsys asks), so every record is complete */
        cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
        if (getenv("CUDA_TRACE_API")) cuptiActivityDisable(CUPTI_ACTIVITY_KIND_RUNTIME);
        cuptiActivityFlushAll(1);
        recording = 0;
    }
}

static CUpti_SubscriberHandle subscriber;

__attribute__((constructor)) static void trace_init(void)
{
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiSubscribe(&subscriber, (CUpti_CallbackFunc)on_api, NULL) != CUPTI_SUCCESS ||
        cuptiEnableCallback(1, subscriber, CUPTI_CB_DOMAIN_RUNTIME_API, CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStart_v4000) !=
            CUPTI_SUCCESS ||
        cuptiEnableCallback(1, subscriber, CUPTI_CB_DOMAIN_RUNTIME_API, CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStop_v4000) !=
            CUPTI_SUCCESS)
        fprintf(stderr, "cuda_trace: CUPTI could not be set up; no table will be written\n");
}

/* A run that stopped its range has flushed already; one that did not (an
 * error, an early exit) gets what CUPTI still holds, unfinished records
 * skipped by add_kernel. */
__attribute__((destructor)) static void trace_fini(void)
{
    if (recording) cuptiActivityFlushAll(1);
    report();
}
