/* The CUDA allocator's bookkeeping (runtime/cuda/block_cache.c) against a
 * naive model of it: the free blocks (smallest that fits, wasting at most a
 * quarter) and the address -> size map, under random sequences. */
#include <stdint.h>
#include <stdlib.h>

#include "as_test.h"
#include "block_cache.h"

#define MAXB 4096

typedef struct {
    void *p;
    size_t size;
} entry;

/* the rule, written plainly: the smallest kept size >= want, if it wastes <= a quarter */
static long naive_take(entry *e, int n, size_t want)
{
    long best = -1;
    for (int i = 0; i < n; i++)
        if (e[i].size >= want && (best < 0 || e[i].size < e[best].size)) best = i;
    if (best >= 0 && e[best].size - want > e[best].size / 4) best = -1;
    return best;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static void test_cache(void)
{
    static entry kept[MAXB];
    int n = 0;
    as_block_cache c = {0};
    uintptr_t addr = 0x10000;
    const size_t sizes[] = {512, 1024, 1536, 4096, 4608, 65536, 2 << 20, 4 << 20, 6 << 20, 8 << 20};
    int takes = 0, hits = 0;
    for (int step = 0; step < 200000; step++) {
        size_t want = sizes[next() % 10];
        if (next() % 7 == 0) want += 512 * (next() % 4);
        if (n < MAXB && next() % 2) {
            void *p = (void *)(addr += 4096);
            CHECK(as_block_cache_put(&c, p, want) == 0);
            kept[n++] = (entry){p, want};
        } else {
            size_t got = 0;
            void *p = as_block_cache_take(&c, want, &got);
            long i = naive_take(kept, n, want);
            takes++;
            if (i < 0) {
                CHECK(p == NULL);
                continue;
            }
            hits++;
            CHECK(p != NULL && got == kept[i].size);
            /* any block of that size may come: find the one that did */
            long j = -1;
            for (int k = 0; k < n; k++)
                if (kept[k].p == p) j = k;
            CHECK(j >= 0 && kept[j].size == got);
            if (j >= 0) kept[j] = kept[--n];
        }
        if (step % 997 == 0) {
            size_t bytes = 0;
            for (int k = 0; k < n; k++) bytes += kept[k].size;
            CHECK(bytes == c.bytes);
            for (size_t b = 0; b + 1 < c.nbins; b++) CHECK(c.bins[b].size < c.bins[b + 1].size && c.bins[b].n > 0);
        }
    }
    CHECK(hits > 1000 && hits < takes); /* both outcomes were exercised */
    as_block_cache_clear(&c, NULL, NULL);
    CHECK(c.nbins == 0 && c.bytes == 0 && c.bins == NULL);
}

static void count_release(void *p, size_t size, void *ctx)
{
    (void)p;
    *(size_t *)ctx += size;
}

static void test_clear(void)
{
    as_block_cache c = {0};
    size_t total = 0;
    for (int i = 1; i <= 100; i++) CHECK(as_block_cache_put(&c, (void *)(uintptr_t)(i * 256), (size_t)(i % 5 + 1) * 512) == 0);
    for (int i = 1; i <= 100; i++) total += (size_t)(i % 5 + 1) * 512;
    size_t got = 0, released = 0;
    CHECK(c.nbins == 5 && c.bytes == total);
    CHECK(as_block_cache_take(&c, 800, &got) != NULL && got == 1024); /* smallest that fits */
    CHECK(as_block_cache_take(&c, 513, &got) == NULL);                /* 1024 would waste > a quarter */
    CHECK(as_block_cache_take(&c, 4000, &got) == NULL);               /* none that large */
    as_block_cache_clear(&c, count_release, &released);
    CHECK(released == total - 1024);
}

/* a block's owner in this test: none, pool A or pool B, from its size */
static void *owner_of(size_t size) { return (void *)(uintptr_t)(size / 512 % 3 * 0x40); }

static void test_live_map(void)
{
    static entry e[MAXB];
    int n = 0;
    void *owner;
    as_live_map m = {0};
    CHECK(as_live_map_remove(&m, (void *)0x1000, &owner) == 0 && owner == NULL); /* empty */
    for (int step = 0; step < 300000; step++) {
        if (n < MAXB && (n == 0 || next() % 3)) {
            /* addresses that collide in the hash's low bits */
            void *p = (void *)(uintptr_t)(((next() % 100000) + 1) << 8);
            int dup = 0;
            for (int k = 0; k < n; k++) dup |= e[k].p == p;
            if (dup) continue;
            size_t size = 512 * (1 + next() % 1000);
            CHECK(as_live_map_add(&m, p, size, owner_of(size)) == 0);
            e[n++] = (entry){p, size};
        } else {
            int k = (int)(next() % (uint64_t)n);
            CHECK(as_live_map_remove(&m, e[k].p, &owner) == e[k].size && owner == owner_of(e[k].size));
            CHECK(as_live_map_remove(&m, e[k].p, NULL) == 0); /* gone */
            e[k] = e[--n];
        }
        if (step % 4999 == 0) {
            CHECK(m.n == (size_t)n);
            for (int k = 0; k < n; k++) { /* every entry still found: remove and put back */
                CHECK(as_live_map_remove(&m, e[k].p, &owner) == e[k].size && owner == owner_of(e[k].size));
                CHECK(as_live_map_add(&m, e[k].p, e[k].size, owner) == 0);
            }
        }
    }
    /* pool A goes away: its blocks lose their owner, the others keep theirs */
    void *a = (void *)(uintptr_t)0x40;
    as_live_map_disown(&m, a);
    int had_a = 0;
    for (int k = 0; k < n; k++) {
        void *was = owner_of(e[k].size);
        had_a += was == a;
        CHECK(as_live_map_remove(&m, e[k].p, &owner) == e[k].size && owner == (was == a ? NULL : was));
    }
    CHECK(had_a > 0 && m.n == 0);
    as_live_map_free(&m);
    CHECK(m.cap == 0 && m.slots == NULL);
}

int main(void)
{
    test_clear();
    test_cache();
    test_live_map();
    return as_test_report("block_cache");
}
