/* The tile driver of sparse_attention, local_attention and sink_attention:
 * FlashAttention's online softmax (Dao et al. 2022; the vectorised tile
 * kernels of attention_flash.h) over only the key tiles a block of queries
 * may see.
 *
 * A work item is (batch b, heads h0 .. h0 + ng - 1, queries i0 .. i0 + np - 1);
 * its M = ng * np query columns share one list of key runs:
 *
 *   blocks  the item's layout row: consecutive non-empty blocks of one kind
 *           (full or partial) make one run
 *   band    [i0' + lo, i_last' + hi] and the sinks [0, s)
 *
 * Each run is cut into tiles of at most TILE keys; per tile (transposed as
 * in the flash kernel, S^T is keys x columns):
 *
 *   S^T = K_tile Q^T (+ bias)     bias 0 / -inf where the band, the sinks or
 *                                 a partial block's elements exclude a key,
 *                                 plus the user's mask; none when the tile
 *                                 is wholly visible
 *   P^T = exp(S^T - m), m, l      online softmax (dropout by the flash hash)
 *   O^T = O^T alpha + V^T P^T
 *
 * Causal limits go through the tile kernels' per-column jmax.  A tile that
 * no column may see is skipped before any arithmetic. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attention_flash.h"
#include "zoo_sparse.h"

#define TILE 128    /* keys per tile */
#define MAXCOLS 128 /* query columns per work item */

static const as_cpu_flash_isa *tile_isa(void)
{
    const char *n = as_cpu_flash_isa_name(); /* honours as_cpu_flash_force_isa */
#ifdef AS_CPU_FLASH_X86
    if (!strcmp(n, "avx512")) return &as_cpu_flash_isa_avx512;
    if (!strcmp(n, "avx2")) return &as_cpu_flash_isa_avx2;
#endif
    (void)n;
    return &as_cpu_flash_isa_scalar;
}

const char *as_cpu_sp_isa_name(void) { return tile_isa()->name; }

static int64_t round16(int64_t n) { return (n + 15) & ~(int64_t)15; }
static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- the plan: how items are cut, and the scratch of one thread ---- */

typedef struct {
    int64_t P;      /* query rows per item (blocks: per chunk of a block row) */
    int64_t hg;     /* heads per item */
    int64_t ngroup; /* head groups: items per (b, row chunk) */
    int64_t nrow;   /* row chunks */
    int64_t r0, chunks; /* blocks: first block row, chunks per block row */
    int64_t mp;     /* columns, padded to 16 */
    size_t qt, st, ot, bias, rows, colmax, m, l, alpha, jmax, rkey, pos, head, total;
} plan;

static size_t take(size_t *at, size_t bytes)
{
    size_t o = *at;
    *at += (bytes + 63) & ~(size_t)63;
    return o;
}

static void make_plan(const as_cpu_sp_params *p, plan *pl)
{
    const as_attn_f32_params *c = &p->c;
    const int64_t G = c->H / c->Hkv;
    bool shared = true; /* may heads of one kv group share an item? */
    if (p->blocks) {
        const as_cpu_sp_blocks *bl = p->blocks;
        pl->P = imin(bl->bs, 64);
        pl->r0 = bl->roff / bl->bs;
        pl->chunks = (bl->bs + pl->P - 1) / pl->P;
        pl->nrow = (bl->R - pl->r0) * pl->chunks;
        shared = bl->LH == 1;
    } else {
        int64_t width = p->band->hi - p->band->lo + 1;
        pl->P = imax(16, imin(64, round16(width)));
        if (pl->P > c->Lq && c->Lq > 0) pl->P = c->Lq;
        pl->nrow = (c->Lq + pl->P - 1) / pl->P;
    }
    pl->hg = shared ? imax(1, imin(G, MAXCOLS / pl->P)) : 1;
    pl->ngroup = shared ? c->Hkv * ((G + pl->hg - 1) / pl->hg) : c->H;
    pl->mp = round16(pl->hg * pl->P);
    size_t mp = (size_t)pl->mp, at = 0, f = sizeof(float);
    pl->qt = take(&at, (size_t)c->D * mp * f);
    pl->st = take(&at, TILE * mp * f);
    pl->ot = take(&at, (size_t)c->Dv * mp * f);
    pl->bias = take(&at, TILE * mp * f);
    pl->rows = take(&at, p->blocks ? TILE * mp * f : 0);
    pl->colmax = take(&at, mp * f);
    pl->m = take(&at, mp * f);
    pl->l = take(&at, mp * f);
    pl->alpha = take(&at, mp * f);
    pl->jmax = take(&at, mp * sizeof(int32_t));
    pl->rkey = take(&at, mp * sizeof(uint32_t));
    pl->pos = take(&at, mp * sizeof(int64_t));
    pl->head = take(&at, mp * sizeof(int64_t));
    pl->total = at;
}

size_t as_cpu_sp_workspace_size(const as_cpu_sp_params *p, int nthreads)
{
    plan pl;
    make_plan(p, &pl);
    return pl.total * (size_t)(nthreads > 0 ? nthreads : 1) + 64;
}

/* ---- one work item ---- */

typedef struct {
    const as_cpu_sp_params *p;
    const as_cpu_flash_isa *isa;
    const plan *pl;
    char *ws;
    int64_t b, h0, ng, i0, np, M, mp;
    int64_t minpos, maxpos; /* i' of the first and last query */
    const uint8_t *elem;    /* blocks: the item's layout head, row 0 */
    as_cpu_flash_softmax_args sa;
} item;

#define WS(T, field) ((T *)(it->ws + it->pl->field))

static void fill(float *x, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++) x[i] = v;
}

/* The band's rows: key j is visible to the columns of query offsets t in
 * [j - minpos - hi, j - minpos - lo] (every t when j is a sink), the same
 * for each head of the item.  Returns whether any column sees any key,
 * causal included. */
static bool band_rows(item *it, int64_t j0, int64_t n, float *bias)
{
    const as_cpu_sp_band *band = it->p->band;
    const int64_t np = it->np, mp = it->mp, base = it->minpos;
    const bool causal = it->p->c.causal;
    bool any = false;
    for (int64_t r = 0; r < n; r++) {
        const int64_t j = j0 + r;
        int64_t ta = 0, tb = np - 1;
        if (j >= band->sinks) ta = imax(0, j - base - band->hi), tb = imin(np - 1, j - base - band->lo);
        any |= (causal ? imax(ta, j - base) : ta) <= tb;
        float *row = bias + r * mp;
        for (int64_t g = 0; g < it->ng; g++, row += np) {
            if (tb < ta) {
                fill(row, np, -INFINITY);
                continue;
            }
            fill(row, ta, -INFINITY);
            fill(row + ta, tb - ta + 1, 0.0f);
            fill(row + tb + 1, np - tb - 1, -INFINITY);
        }
        fill(bias + r * mp + it->M, mp - it->M, 0.0f);
    }
    return any;
}

/* Builds the bias (n, mp) of keys [j0, j0 + n) when the tile needs one:
 * the band's and sinks' limits, a partial block's elements, the user's mask.
 * False when no column may see any of its keys (the tile is skipped). */
static bool tile_bias(item *it, int64_t j0, int64_t n, bool partial, bool *use_bias)
{
    const as_attn_f32_params *c = &it->p->c;
    const as_cpu_sp_band *band = it->p->band;
    const as_attn_operand *mk = &c->mask;
    bool need_band = false;
    if (band) {
        int64_t a = imax(j0, band->sinks), e = j0 + n;
        need_band = a < e && (a < it->maxpos + band->lo || e - 1 > it->minpos + band->hi);
    }
    *use_bias = need_band || partial || mk->data;
    if (!*use_bias) return true;

    const int64_t mp = it->mp, M = it->M, off = c->Lk - c->Lq;
    const int64_t *pos = WS(int64_t, pos), *head = WS(int64_t, head);
    const int32_t *jmax = WS(int32_t, jmax);
    float *bias = WS(float, bias);
    if (!band) { /* blocks: column m's row of the tile, contiguous, then one transpose */
        float *rows = WS(float, rows);
        const int64_t Lk = c->Lk, roff = it->p->blocks->roff;
        bool any = false;
        for (int64_t m = 0; m < mp; m++) {
            float *x = rows + m * TILE;
            if (m >= M || !partial) {
                fill(x, n, 0.0f);
            } else {
                const uint8_t *er = it->elem + (pos[m] - off + roff) * Lk + j0;
                for (int64_t r = 0; r < n; r++) x[r] = er[r] ? 0.0f : -INFINITY;
            }
            if (m >= M) continue;
            if (mk->data) {
                const int64_t sj = mk->stride[3];
                int64_t at = it->b * mk->stride[0] + head[m] * mk->stride[1] +
                             (pos[m] - off) * mk->stride[2] + j0 * sj;
                if (mk->dtype == AS_BOOL) {
                    const uint8_t *keep = (const uint8_t *)mk->data + at;
                    for (int64_t r = 0; r < n; r++) x[r] = keep[r * sj] ? x[r] : -INFINITY;
                } else {
                    const float *add = (const float *)mk->data + at;
                    for (int64_t r = 0; r < n; r++) x[r] += add[r * sj];
                }
            }
            int64_t last = imin(n - 1, (int64_t)jmax[m] - j0); /* causal: keys past it are cut */
            for (int64_t r = 0; r <= last && !any; r++) any = x[r] != -INFINITY;
        }
        if (any) it->isa->transpose(bias, mp, rows, TILE, mp, n, 1.0f, NULL);
        return any;
    }

    bool any = band_rows(it, j0, n, bias);
    if (!any || !mk->data) return any;
    const int64_t sj = mk->stride[3];
    for (int64_t m = 0; m < M; m++) {
        int64_t at = it->b * mk->stride[0] + head[m] * mk->stride[1] + (pos[m] - off) * mk->stride[2] +
                     j0 * sj;
        if (mk->dtype == AS_BOOL) {
            const uint8_t *keep = (const uint8_t *)mk->data + at;
            for (int64_t r = 0; r < n; r++)
                if (!keep[r * sj]) bias[r * mp + m] = -INFINITY;
        } else {
            const float *add = (const float *)mk->data + at;
            for (int64_t r = 0; r < n; r++) bias[r * mp + m] += add[r * sj];
        }
    }
    /* does any column still see a key (causal limits included)? */
    any = false;
    for (int64_t r = 0; r < n && !any; r++)
        for (int64_t m = 0; m < M; m++) any |= bias[r * mp + m] != -INFINITY && j0 + r <= jmax[m];
    return any;
}

/* One tile of keys [j0, j0 + n) through the online softmax. */
static void run_tile(item *it, int64_t j0, int64_t n, bool partial)
{
    const as_attn_f32_params *c = &it->p->c;
    if (c->causal && j0 > it->maxpos) return;
    bool use_bias;
    if (!tile_bias(it, j0, n, partial, &use_bias)) return;
    const int64_t hk = it->h0 / (c->H / c->Hkv);
    const float *kb = c->k + ((it->b * c->Hkv + hk) * c->Lk + j0) * c->D;
    const float *vb = c->v + ((it->b * c->Hkv + hk) * c->Lk + j0) * c->Dv;
    as_cpu_flash_qk_args qa = {
        .s = WS(float, st), .k = kb, .ldk = c->D, .qt = WS(float, qt), .n = n, .d = c->D,
        .mpad = it->mp, .bias = use_bias ? WS(float, bias) : NULL,
        .jmax = c->causal && j0 + n - 1 > it->minpos ? WS(int32_t, jmax) : NULL,
        .j0 = j0, .colmax = WS(float, colmax),
    };
    it->isa->qk(&qa);
    it->sa.n = n, it->sa.j0 = j0;
    bool changed = it->isa->softmax(&it->sa);
    as_cpu_flash_pv_args pa = {.ot = WS(float, ot), .v = vb, .ldv = c->Dv, .pt = WS(float, st),
                               .n = n, .dv = c->Dv, .mpad = it->mp,
                               .alpha = changed ? it->sa.alpha : NULL};
    it->isa->pv(&pa);
}

/* Keys [j0, j1) in tiles. */
static void run_range(item *it, int64_t j0, int64_t j1, bool partial)
{
    for (int64_t j = j0; j < j1; j += TILE) run_tile(it, j, imin(TILE, j1 - j), partial);
}

static void run_blocks(item *it, int64_t csr_row)
{
    const as_cpu_sp_blocks *bl = it->p->blocks;
    const int64_t Lk = it->p->c.Lk;
    int64_t e = bl->row_ptr[csr_row], end = bl->row_ptr[csr_row + 1];
    while (e < end) {
        int64_t f = e + 1;
        while (f < end && bl->col[f] == bl->col[f - 1] + 1 && bl->partial[f] == bl->partial[e]) f++;
        run_range(it, (int64_t)bl->col[e] * bl->bs, imin(Lk, ((int64_t)bl->col[f - 1] + 1) * bl->bs),
                  bl->partial[e] != 0);
        e = f;
    }
}

static void run_band(item *it)
{
    const as_cpu_sp_band *band = it->p->band;
    const int64_t Lk = it->p->c.Lk;
    int64_t hi = it->p->c.causal ? imin(band->hi, 0) : band->hi;
    int64_t ws = imax(0, it->minpos + band->lo), we = imin(Lk, it->maxpos + hi + 1);
    int64_t se = imin(band->sinks, Lk);
    if (we <= ws) {
        run_range(it, 0, se, false);
    } else if (se >= ws) {
        run_range(it, 0, imax(se, we), false);
    } else {
        run_range(it, 0, se, false);
        run_range(it, ws, we, false);
    }
}

/* out (B, H, Lq, Dv) = O^T / l; a row that saw nothing gives zeros. */
static void write_out(item *it)
{
    const as_attn_f32_params *c = &it->p->c;
    const float *ot = WS(float, ot), *l = WS(float, l);
    float *inv = WS(float, alpha);
    for (int64_t m = 0; m < it->M; m++) inv[m] = l[m] > 0 ? 1.0f / l[m] : 0.0f;
    for (int64_t g = 0; g < it->ng; g++) {
        float *o = c->out + ((it->b * c->H + it->h0 + g) * c->Lq + it->i0) * c->Dv;
        it->isa->transpose(o, c->Dv, ot + g * it->np, it->mp, c->Dv, it->np, 1.0f, inv + g * it->np);
    }
}

static void run_item(const as_cpu_sp_params *p, const as_cpu_flash_isa *isa, const plan *pl,
                     char *ws, int64_t index)
{
    const as_attn_f32_params *c = &p->c;
    const int64_t G = c->H / c->Hkv, off = c->Lk - c->Lq;
    /* latest rows first: under causal they see the most keys */
    int64_t rowc = pl->nrow - 1 - index / (c->B * pl->ngroup), rest = index % (c->B * pl->ngroup);
    item it = {.p = p, .isa = isa, .pl = pl, .ws = ws, .b = rest / pl->ngroup};
    int64_t grp = rest % pl->ngroup, csr_row = 0;
    if (p->blocks && p->blocks->LH != 1) { /* a layout per head: one head per item */
        it.h0 = grp, it.ng = 1;
    } else {
        int64_t per = (G + pl->hg - 1) / pl->hg, hk = grp / per, gi = grp % per;
        it.h0 = hk * G + gi * pl->hg, it.ng = imin(pl->hg, G - gi * pl->hg);
    }
    if (p->blocks) {
        const as_cpu_sp_blocks *bl = p->blocks;
        int64_t r = pl->r0 + rowc / pl->chunks, q = rowc % pl->chunks;
        int64_t a = imax(r * bl->bs + q * pl->P, bl->roff);
        int64_t e = imin(imin(r * bl->bs + (q + 1) * pl->P, (r + 1) * bl->bs), bl->roff + c->Lq);
        if (e <= a) return;
        it.i0 = a - bl->roff, it.np = e - a;
        int64_t lh = bl->LH == 1 ? 0 : it.h0;
        csr_row = lh * bl->R + r;
        it.elem = bl->elem ? bl->elem + lh * bl->Lr * c->Lk : NULL;
    } else {
        it.i0 = rowc * pl->P, it.np = imin(pl->P, c->Lq - it.i0);
    }
    it.M = it.ng * it.np, it.mp = round16(it.M);
    it.minpos = it.i0 + off, it.maxpos = it.i0 + it.np - 1 + off;

    const int64_t D = c->D, Dv = c->Dv, M = it.M, mp = it.mp, np = it.np;
    float *qt = (float *)(ws + pl->qt);
    for (int64_t g = 0; g < it.ng; g++)
        isa->transpose(qt + g * np, mp, c->q + ((it.b * c->H + it.h0 + g) * c->Lq + it.i0) * D, D, np,
                       D, c->scale, NULL);
    for (int64_t d = 0; d < D; d++)
        for (int64_t m = M; m < mp; m++) qt[d * mp + m] = 0.0f;
    float *mrun = (float *)(ws + pl->m), *lrun = (float *)(ws + pl->l);
    int32_t *jmax = (int32_t *)(ws + pl->jmax);
    int64_t *pos = (int64_t *)(ws + pl->pos), *head = (int64_t *)(ws + pl->head);
    for (int64_t m = 0; m < mp; m++) {
        mrun[m] = -INFINITY, lrun[m] = 0.0f;
        pos[m] = m < M ? it.i0 + m % np + off : 0;
        head[m] = m < M ? it.h0 + m / np : 0;
        int64_t lim = m < M && c->causal ? pos[m] : INT32_MAX;
        jmax[m] = (int32_t)(lim < -1 ? -1 : lim > INT32_MAX ? INT32_MAX : lim);
    }
    memset(ws + pl->ot, 0, (size_t)(Dv * mp) * sizeof(float));
    it.sa = (as_cpu_flash_softmax_args){.s = (float *)(ws + pl->st), .mpad = mp,
                                        .colmax = (float *)(ws + pl->colmax), .m = mrun, .l = lrun,
                                        .alpha = (float *)(ws + pl->alpha)};
    if (c->dropout > 0) {
        uint32_t *rkey = (uint32_t *)(ws + pl->rkey);
        for (int64_t m = 0; m < mp; m++)
            rkey[m] = m < M ? as_attn_row_key(c->seed, c->H, c->Lq, it.b, head[m], it.i0 + m % np) : 0;
        it.sa.row_key = rkey;
        it.sa.threshold = as_attn_drop_threshold(c->dropout);
        it.sa.keep_scale = 1.0f / (1.0f - c->dropout);
    }
    if (p->blocks) run_blocks(&it, csr_row);
    else run_band(&it);
    write_out(&it);
}

void as_cpu_sp_attention(const as_cpu_sp_params *p, void *workspace, int nthreads)
{
    const as_attn_f32_params *c = &p->c;
    if (c->B == 0 || c->H == 0 || c->Lq == 0 || c->Dv == 0) return;
    plan pl;
    make_plan(p, &pl);
    const as_cpu_flash_isa *isa = tile_isa();
    char *ws = (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    const int64_t items = c->B * pl.ngroup * pl.nrow;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t i = 0; i < items; i++) {
#ifdef _OPENMP
        int t = omp_get_thread_num();
#else
        int t = 0;
#endif
        run_item(p, isa, &pl, ws + (size_t)t * pl.total, i);
    }
}
