#include "block_cache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* first bin whose size is >= size */
static size_t lower_bound(const as_block_cache *c, size_t size)
{
    size_t lo = 0, hi = c->nbins;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->bins[mid].size < size) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

void *as_block_cache_take(as_block_cache *c, size_t size, size_t *got)
{
    size_t i = lower_bound(c, size);
    if (i == c->nbins) return NULL;
    as_block_bin *b = &c->bins[i];
    /* bins are sorted and none is empty: if the smallest fitting size wastes
     * too much, every larger one does */
    if (b->size - size > b->size / 4) return NULL;
    void *p = b->p[--b->n];
    *got = b->size;
    c->bytes -= b->size;
    if (b->n == 0) {
        free(b->p);
        memmove(b, b + 1, (c->nbins - i - 1) * sizeof *b);
        c->nbins--;
    }
    return p;
}

int as_block_cache_put(as_block_cache *c, void *p, size_t size)
{
    size_t i = lower_bound(c, size);
    if (i == c->nbins || c->bins[i].size != size) {
        if (c->nbins == c->cap) {
            size_t cap = c->cap ? 2 * c->cap : 64;
            as_block_bin *bins = realloc(c->bins, cap * sizeof *bins);
            if (!bins) return -1;
            c->bins = bins, c->cap = cap;
        }
        memmove(&c->bins[i + 1], &c->bins[i], (c->nbins - i) * sizeof *c->bins);
        c->bins[i] = (as_block_bin){.size = size};
        c->nbins++;
    }
    as_block_bin *b = &c->bins[i];
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 8;
        void **q = realloc(b->p, cap * sizeof *q);
        if (!q) {
            if (b->n == 0) { /* the bin just made: take it out again, none stays empty */
                memmove(b, b + 1, (c->nbins - i - 1) * sizeof *b);
                c->nbins--;
            }
            return -1;
        }
        b->p = q, b->cap = cap;
    }
    b->p[b->n++] = p;
    c->bytes += size;
    return 0;
}

void as_block_cache_clear(as_block_cache *c, void (*release)(void *p, size_t size, void *ctx), void *ctx)
{
    for (size_t i = 0; i < c->nbins; i++) {
        if (release)
            for (size_t j = 0; j < c->bins[i].n; j++) release(c->bins[i].p[j], c->bins[i].size, ctx);
        free(c->bins[i].p);
    }
    free(c->bins);
    *c = (as_block_cache){0};
}

/* Fibonacci hashing of the address: its high bits (device blocks are at
 * least 256-byte aligned, so the low bits carry nothing). */
static size_t slot_of(const as_live_map *m, const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 32) & (m->cap - 1);
}

static void insert(as_live_map *m, void *p, size_t size, void *owner)
{
    size_t i = slot_of(m, p);
    while (m->slots[i].p) i = (i + 1) & (m->cap - 1);
    m->slots[i] = (struct as_live_slot){p, size, owner};
    m->n++;
}

int as_live_map_add(as_live_map *m, void *p, size_t size, void *owner)
{
    if (2 * (m->n + 1) > m->cap) { /* at most half full: probes stay short */
        size_t cap = m->cap ? 2 * m->cap : 1024;
        struct as_live_slot *old = m->slots, *slots = calloc(cap, sizeof *slots);
        if (!slots) return -1;
        size_t oldcap = m->cap;
        m->slots = slots, m->cap = cap, m->n = 0;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].p) insert(m, old[i].p, old[i].size, old[i].owner);
        free(old);
    }
    insert(m, p, size, owner);
    return 0;
}

size_t as_live_map_remove(as_live_map *m, void *p, void **owner)
{
    if (owner) *owner = NULL;
    if (!m->cap || !p) return 0;
    size_t mask = m->cap - 1, i = slot_of(m, p);
    while (m->slots[i].p && m->slots[i].p != p) i = (i + 1) & mask;
    if (!m->slots[i].p) return 0;
    size_t size = m->slots[i].size;
    if (owner) *owner = m->slots[i].owner;
    /* backward-shift deletion: move later entries of the run into the hole
     * when their home slot is at or before it, so no tombstones pile up */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].p; j = (j + 1) & mask) {
        size_t home = slot_of(m, m->slots[j].p);
        /* j's entry may move to hole unless its home lies cyclically in (hole, j] */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole] = (struct as_live_slot){0};
    m->n--;
    return size;
}

void as_live_map_disown(as_live_map *m, const void *owner)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].p && m->slots[i].owner == owner) m->slots[i].owner = NULL;
}

void as_live_map_free(as_live_map *m)
{
    free(m->slots);
    *m = (as_live_map){0};
}
