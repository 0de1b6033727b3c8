#include "attnswap/storage.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "backend.h"

/* Bytes held by owned CPU storages now, and the most since the last reset.
 * Storages are made and freed on the thread that runs Lua (kernels never
 * allocate), so plain counters suffice. */
static size_t cpu_live, cpu_peak;

void as_cpu_memory_stats(size_t *live, size_t *peak)
{
    *live = cpu_live;
    *peak = cpu_peak;
}

void as_cpu_reset_peak(void) { cpu_peak = cpu_live; }

/* Blocks of glibc's largest mmap threshold (32 MiB) and up are always mmapped,
 * and page-fault in again on every allocation.  The last few freed ones are
 * kept here for reuse by an allocation of the same (MiB-rounded) size; when
 * the slots or the byte cap run out, the block kept longest ago goes back to
 * the system, so that the sizes a loop uses now displace those of work done
 * before it (a cache that refused new blocks once full kept stale sizes
 * forever, and every later big output faulted in afresh). */
#define BIG_BLOCK ((size_t)32 << 20)
#define BIG_CACHE_SLOTS 8
#define BIG_CACHE_BYTES ((size_t)1 << 30)
static struct {
    void *p;
    size_t size;
    unsigned long stamp; /* when it was kept: the smallest goes first */
} big_cache[BIG_CACHE_SLOTS];
static size_t big_cached;
static unsigned long big_clock;

static size_t cpu_block_size(size_t nbytes)
{
    size_t r = (nbytes + 63) & ~(size_t)63;
    if (r >= BIG_BLOCK) r = (r + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    return r ? r : 64;
}

static void *big_take(size_t size)
{
    for (int i = 0; i < BIG_CACHE_SLOTS; i++)
        if (big_cache[i].p && big_cache[i].size == size) {
            void *p = big_cache[i].p;
            big_cache[i].p = NULL;
            big_cached -= size;
            return p;
        }
    return NULL;
}

/* Frees the block kept longest ago; returns its slot, or -1 when none is kept. */
static int big_evict_oldest(void)
{
    int old = -1;
    for (int i = 0; i < BIG_CACHE_SLOTS; i++)
        if (big_cache[i].p && (old < 0 || big_cache[i].stamp < big_cache[old].stamp)) old = i;
    if (old >= 0) {
        free(big_cache[old].p);
        big_cache[old].p = NULL;
        big_cached -= big_cache[old].size;
    }
    return old;
}

static int big_keep(void *p, size_t size)
{
    if (size < BIG_BLOCK || size > BIG_CACHE_BYTES) return 0;
    while (big_cached + size > BIG_CACHE_BYTES)
        if (big_evict_oldest() < 0) return 0; /* nothing kept: cannot happen while the count is right */
    int slot = -1;
    for (int i = 0; i < BIG_CACHE_SLOTS && slot < 0; i++)
        if (!big_cache[i].p) slot = i;
    if (slot < 0) slot = big_evict_oldest();
    big_cache[slot].p = p, big_cache[slot].size = size, big_cache[slot].stamp = ++big_clock;
    big_cached += size;
    return 1;
}

static void free_owned(as_storage *s)
{
    if (s->device.type == AS_DEV_CPU) {
        cpu_live -= s->nbytes;
        if (!big_keep(s->data, cpu_block_size(s->nbytes))) free(s->data);
    }
    else {
        const as_backend *b = as_backend_get(s->device.type);
        if (b && b->free) b->free(s->data, s->device.index);
    }
}

/* glibc returns large blocks to the kernel on free and page-faults them back
 * on the next allocation: for a tensor runtime that re-allocates the same
 * sizes every step this costs more than the op (a 1024^2 matmul lost 18%).
 * Keep freed blocks in the heap instead, as PyTorch's CPU allocator does. */
static void keep_large_blocks(void)
{
    static int done;
    if (done) return;
    done = 1;
    mallopt(M_MMAP_THRESHOLD, 32 << 20); /* glibc's largest allowed value */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

as_storage *as_storage_new(size_t nbytes, as_device dev)
{
    void *data = NULL;
    keep_large_blocks();
    if (dev.type == AS_DEV_CPU) {
        size_t rounded = cpu_block_size(nbytes);
        if (rounded < nbytes) {
            as_error_set("out of memory (requested %zu bytes)", nbytes);
            return NULL;
        }
        data = rounded >= BIG_BLOCK ? big_take(rounded) : NULL;
        if (!data) data = aligned_alloc(64, rounded);
    } else {
        /* errors read "cuda: no CUDA device is available" */
        const as_backend *b = as_backend_for(dev.type == AS_DEV_CUDA ? "cuda" : "device", dev);
        if (!b) return NULL; /* no such device, or a build without it */
        data = b->alloc(nbytes, dev.index);
    }
    if (!data) {
        as_error_set("out of memory (requested %zu bytes on %s)", nbytes, as_device_name(dev));
        return NULL;
    }
    as_storage *s = as_storage_wrap(data, nbytes, dev, free_owned, NULL);
    if (!s) {
        if (dev.type == AS_DEV_CPU) free(data);
        else free_owned(&(as_storage){.data = data, .device = dev});
        return NULL;
    }
    if (dev.type == AS_DEV_CPU && (cpu_live += nbytes) > cpu_peak) cpu_peak = cpu_live;
    return s;
}

as_storage *as_storage_wrap(void *data, size_t nbytes, as_device dev,
                            void (*release)(as_storage *), void *ctx)
{
    as_storage *s = malloc(sizeof *s);
    if (!s) {
        as_error_set("out of memory");
        return NULL;
    }
    *s = (as_storage){.data = data, .nbytes = nbytes, .refcount = 1, .device = dev,
                      .release = release, .ctx = ctx};
    return s;
}

as_storage *as_storage_retain(as_storage *s)
{
    s->refcount++;
    return s;
}

void as_storage_release(as_storage *s)
{
    if (!s || --s->refcount > 0) return;
    if (s->release) s->release(s);
    free(s);
}

const char *as_device_name(as_device dev)
{
    static _Thread_local char buf[32];
    if (dev.type == AS_DEV_CPU) return "cpu";
    snprintf(buf, sizeof buf, "cuda:%d", dev.index);
    return buf;
}

int as_device_equal(as_device a, as_device b) { return a.type == b.type && a.index == b.index; }
