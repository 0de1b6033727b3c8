/* The caching allocator's bookkeeping, host memory only (no CUDA here, so it
 * is tested on any machine): the free blocks kept for reuse, binned by size,
 * and the size of every block handed out, by address.  Both are O(log n) or
 * O(1) per call: a decode step makes hundreds of allocations, and the
 * collector frees a step's temporaries thousands at a time, so a list scanned
 * on every call cost more than the kernels did. */
#ifndef AS_BLOCK_CACHE_H
#define AS_BLOCK_CACHE_H

#include <stddef.h>

/* Free blocks: bins of one size each, sorted by size, none empty. */
typedef struct {
    size_t size;
    void **p;
    size_t n, cap;
} as_block_bin;

typedef struct {
    as_block_bin *bins;
    size_t nbins, cap;
    size_t bytes; /* held in all bins */
} as_block_cache;

/* The smallest kept block of at least size bytes that wastes at most a
 * quarter of itself, taken out of the cache (*got = its size); NULL if none. */
void *as_block_cache_take(as_block_cache *c, size_t size, size_t *got);
/* Keep p (size bytes); -1 when out of host memory (p is then not kept). */
int as_block_cache_put(as_block_cache *c, void *p, size_t size);
/* Hand every block to release (may be NULL) and empty the cache. */
void as_block_cache_clear(as_block_cache *c, void (*release)(void *p, size_t size, void *ctx), void *ctx);

/* Blocks handed out: address -> size and owner (the pool it came from: NULL
 * for the device's cache, else a CUDA graph's), open addressing. */
typedef struct {
    struct as_live_slot {
        void *p;
        size_t size;
        void *owner;
    } *slots;
    size_t n, cap; /* cap: 0 or a power of two */
} as_live_map;

/* -1 when out of host memory (then nothing is recorded). */
int as_live_map_add(as_live_map *m, void *p, size_t size, void *owner);
/* The size recorded for p (and its owner, where owner is not NULL),
 * removed; 0 if p was not recorded. */
size_t as_live_map_remove(as_live_map *m, void *p, void **owner);
/* Every block of owner becomes owner-less (the pool is going away). */
void as_live_map_disown(as_live_map *m, const void *owner);
void as_live_map_free(as_live_map *m);

#endif
