/* Work items spread over OpenMP threads while OpenBLAS is kept to one thread:
 * the items call sgemm themselves, in the calling thread, and two thread
 * pools on the same cores would fight (runtime/base/threads.c). */
#ifndef AS_CPU_PARALLEL_H
#define AS_CPU_PARALLEL_H

#include <stdint.h>

/* item: the item's index; thread: the running thread's index, below the
 * thread count (its slice of a per-thread workspace) */
typedef void (*as_cpu_item_fn)(void *ctx, int64_t item, int thread);

/* fn(ctx, i, t) for every i in [0, items), one at a time from a shared queue,
 * on at most nthreads threads (fewer when there are fewer items). */
void as_cpu_parallel_items(int64_t items, int nthreads, as_cpu_item_fn fn, void *ctx);

#endif
