/* The BPE model (Sennrich et al. 2016) as HF `tokenizers` runs it: a word's
 * chars become symbols (unknown ones as <0xNN> byte tokens or <unk>), then
 * merges apply lowest rank first (leftmost on ties) through a binary heap of
 * candidate pairs, with merge ranks in a hash table: O(n log n) a word.
 * Also GPT-2's byte <-> char table of the byte-level pre-tokenizer/decoder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "tokenizer_internal.h"

/* ---- GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
 * other 68 map to U+0100.. in byte order. ---- */
static int printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }

static uint32_t byte_cp(uint8_t b)
{
    if (printable(b)) return b;
    uint32_t k = 0;
    for (int i = 0; i < b; i++) k += !printable(i);
    return 256 + k;
}

int tk_byte_char(uint8_t b, char out[2])
{
    uint32_t c = byte_cp(b);
    if (c < 0x80) return out[0] = (char)c, 1;
    out[0] = (char)(0xC0 | c >> 6);
    out[1] = (char)(0x80 | (c & 63));
    return 2;
}

int tk_char_byte(uint32_t cp)
{
    if (cp < 256) return printable((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    for (int b = 0, k = 0; b < 256; b++)
        if (!printable(b) && 256 + (uint32_t)k++ == cp) return b;
    return -1;
}

/* ---- symbols and the merge heap ---- */
typedef struct { int32_t id, prev, next; uint32_t len; } symbol;
typedef struct { int32_t rank, pos, id; } cand; /* a pair (pos, next of pos) that may merge into id */

static int cand_less(cand a, cand b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

typedef struct { cand *v; size_t n, cap; } heap;

static int heap_push(heap *h, cand c)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 32;
        cand *v = realloc(h->v, cap * sizeof *v);
        if (!v) return tk_oom("tokenizer.encode"), -1;
        h->v = v, h->cap = cap;
    }
    size_t i = h->n++;
    while (i && cand_less(c, h->v[(i - 1) / 2])) h->v[i] = h->v[(i - 1) / 2], i = (i - 1) / 2;
    h->v[i] = c;
    return 0;
}

static cand heap_pop(heap *h)
{
    cand top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        cand best = last;
        if (l < h->n && cand_less(h->v[l], best)) m = l, best = h->v[l];
        if (l + 1 < h->n && cand_less(h->v[l + 1], best)) m = l + 1;
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

typedef struct { symbol *v; size_t n, cap; } symbols;

static int sym_add(symbols *w, int32_t id, uint32_t len)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 32;
        symbol *v = realloc(w->v, cap * sizeof *v);
        if (!v) return tk_oom("tokenizer.encode"), -1;
        w->v = v, w->cap = cap;
    }
    int32_t i = (int32_t)w->n++;
    w->v[i] = (symbol){id, i - 1, -1, len};
    if (i) w->v[i - 1].next = i;
    return 0;
}

static int push_pair(const as_tokenizer *tok, heap *h, const symbols *w, int32_t pos)
{
    const symbol *s = &w->v[pos];
    if (s->next < 0) return 0;
    const tk_pair_slot *m = tk_pair_find(&tok->merges, s->id, w->v[s->next].id);
    return m ? heap_push(h, (cand){m->rank, pos, m->id}) : 0;
}

/* Word::merge_all: pop the best pair; skip it when stale (its left symbol was
 * merged away or the pair no longer gives the same token); else merge and
 * offer the new pairs with both neighbours. */
static int merge_all(const as_tokenizer *tok, symbols *w)
{
    heap h = {0};
    for (int32_t i = 0; i + 1 < (int32_t)w->n; i++)
        if (push_pair(tok, &h, w, i)) goto fail;
    while (h.n) {
        cand top = heap_pop(&h);
        symbol *s = &w->v[top.pos];
        if (s->len == 0 || s->next < 0) continue;
        symbol *r = &w->v[s->next];
        const tk_pair_slot *m = tk_pair_find(&tok->merges, s->id, r->id);
        if (!m || m->id != top.id) continue;
        s->id = top.id;
        s->len += r->len;
        s->next = r->next;
        r->len = 0;
        if (s->next >= 0) w->v[s->next].prev = top.pos;
        if (s->prev >= 0 && push_pair(tok, &h, w, s->prev)) goto fail;
        if (push_pair(tok, &h, w, top.pos)) goto fail;
    }
    free(h.v);
    return 0;
fail:
    free(h.v);
    return -1;
}

static int32_t lookup_affixed(const as_tokenizer *tok, const char *s, size_t n, int first, int last, tk_buf *tmp)
{
    if ((first || !tok->prefix) && (!last || !tok->suffix)) return tk_map_get(&tok->vocab, s, n);
    tmp->n = 0;
    if (!first && tok->prefix && tk_buf_put(tmp, tok->prefix, tok->prefix_len)) return -2;
    if (tk_buf_put(tmp, s, n)) return -2;
    if (last && tok->suffix && tk_buf_put(tmp, tok->suffix, tok->suffix_len)) return -2;
    return tk_map_get(&tok->vocab, tmp->p, tmp->n);
}

/* BPE::merge_word then merge_all, appending the ids to out. */
int tk_bpe_tokenize(const as_tokenizer *tok, const char *s, size_t n, tk_ids *out)
{
    if (n == 0) return 0;
    if (tok->ignore_merges) {
        int32_t id = tk_map_get(&tok->vocab, s, n);
        if (id >= 0) return tk_ids_push(out, id);
    }
    symbols w = {0};
    tk_buf tmp = {0};
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = (size_t)tk_utf8_next(s + i, n - i, &cp);
        int32_t id = lookup_affixed(tok, s + i, k, i == 0, i + k >= n, &tmp);
        if (id == -2) goto fail;
        if (id >= 0) {
            if (unk_id >= 0) {
                if (sym_add(&w, unk_id, unk_len)) goto fail;
                unk_id = -1;
            }
            if (sym_add(&w, id, (uint32_t)k)) goto fail;
        } else {
            if (tok->byte_fallback) {
                /* the char's bytes (with any affix, as HF formats s) as <0xNN> tokens */
                tmp.n = 0;
                if ((i != 0 && tok->prefix && tk_buf_put(&tmp, tok->prefix, tok->prefix_len)) ||
                    tk_buf_put(&tmp, s + i, k) ||
                    (i + k >= n && tok->suffix && tk_buf_put(&tmp, tok->suffix, tok->suffix_len)))
                    goto fail;
                const char *b = tmp.p;
                size_t bn = tmp.n;
                int32_t ids[64];
                size_t all = bn <= 64;
                for (size_t j = 0; all && j < bn; j++) {
                    char name[8];
                    snprintf(name, sizeof name, "<0x%02X>", (uint8_t)b[j]);
                    ids[j] = tk_map_get(&tok->vocab, name, 6);
                    if (ids[j] < 0) all = 0;
                }
                if (all) {
                    for (size_t j = 0; j < bn; j++)
                        if (sym_add(&w, ids[j], 1)) goto fail;
                    i += k;
                    continue;
                }
            }
            if (tok->unk) {
                if (tok->unk_id < 0) {
                    as_error_set("tokenizer.encode: %s: the unk token '%s' is not in the vocabulary", tok->name, tok->unk);
                    goto fail;
                }
                if (unk_id >= 0 && tok->fuse_unk) {
                    unk_len += (uint32_t)k;
                } else {
                    if (unk_id >= 0 && sym_add(&w, unk_id, unk_len)) goto fail;
                    unk_id = tok->unk_id, unk_len = (uint32_t)k;
                }
            }
        }
        i += k;
    }
    if (unk_id >= 0 && sym_add(&w, unk_id, unk_len)) goto fail;
    if (merge_all(tok, &w)) goto fail;
    for (size_t i = 0; i < w.n; i++)
        if (w.v[i].len && tk_ids_push(out, w.v[i].id)) goto fail;
    free(w.v);
    free(tmp.p);
    return 0;
fail:
    free(w.v);
    free(tmp.p);
    return -1;
}
