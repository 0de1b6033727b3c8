/* FlashAttention backward, CPU driver (Dao 2023, FlashAttention-2,
 * Algorithm 2): work units, packing, the dQ partials and their reduction.
 * The tile kernels are the forward's (qk for S^T, pv for dQ^T) plus three
 * of the backward's (gemm, bwd_p, bwd_ds) on the chosen vector path; see
 * attention_flash.h for the algorithm.
 *
 * Layout, per (key block j, query tile) pair, transposed as in the forward
 * (columns m = g * np + t: the tile's query positions of the G heads that
 * share the kv-head):
 *
 *   S^T  (n, mp)  = K_j Q^T (scaled, + bias, masked)     qk
 *   P^T  (n, mp)  = e^(S^T - lse)  (and Pd^T, dropped)   bwd_p
 *   dV_j (n, Dv) += Pd^T dO                              gemm (acc)
 *   dP^T (n, mp)  = V_j dO^T                             gemm
 *   dS^T (n, mp)  = P^T o (dP^T o keep - Di)             bwd_ds
 *   dK_j (n, D)  += dS^T (scale Q)                       gemm (acc)
 *   dQ^T (D, mp) += K_j^T dS^T    (the lane's partial)   pv
 *   dbias        =  dS            (when asked)           transpose
 *
 * Q, dO and the statistics of a query tile (Q^T, Q, dO^T, dO, lse, Di, the
 * causal limits: its "tile state") are packed the first time a unit meets the
 * tile and kept, per thread, for the unit's later key blocks, when the states
 * of all of a head's tiles fit TILE_CACHE bytes (4 MiB: kept at L = 1024,
 * D = 64 and 128; at L = 4096, D = 64, 4.2 MiB a thread, kept looked slower,
 * under noise); otherwise packed again for every pair (a pair costs 10 n M D
 * flops against 4 M D floats packed, but the packing is 6-8% of the
 * backward's time at D = 64-128). */
#include "attention_flash.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#ifndef AS_FLASH_BWD_BK /* keys per block */
#define AS_FLASH_BWD_BK 128
#endif
#ifndef AS_FLASH_BWD_MT /* about this many query columns per tile */
#define AS_FLASH_BWD_MT 64
#endif
#define BK AS_FLASH_BWD_BK
#define MT AS_FLASH_BWD_MT
/* Lanes: enough units (batch x kv-heads x lanes) for UNITS threads, at most
 * MAX_LANES dQ partials.  Shapes alone decide, never the thread count. */
#define UNITS 16
#define MAX_LANES 8
/* Per thread, at most this many bytes of kept tile states. */
#ifndef AS_FLASH_BWD_TILE_CACHE
#define AS_FLASH_BWD_TILE_CACHE ((size_t)4 << 20)
#endif
#define TILE_CACHE AS_FLASH_BWD_TILE_CACHE

typedef struct {
    int64_t P, mp, ntile, nkb, lanes; /* query positions per tile, its mpad, tiles, key blocks */
    int64_t Dp, Dvp;                  /* D, Dv rounded up to 16 */
    size_t di, part, shared;          /* Di and the partials, from the workspace's start */
    size_t part_tile;                 /* floats per tile of a partial: D x mp */
    /* one tile state, from its start: */
    size_t qt, qs, dot, dor, lse, dit, jmax, rkey, colbase, vmax, tile;
    bool cached; /* a unit keeps all of its head's tile states */
    size_t tiles, packed; /* per thread: the tile states (1 or ntile), ntile flags */
    size_t st, pd, dp, bias, maskrows, rowbias, kbuf, vbuf, dk, dv, colmax, vis, total; /* per thread */
} layout;

static size_t take(size_t *at, size_t bytes)
{
    size_t o = *at;
    *at += (bytes + 63) & ~(size_t)63;
    return o;
}

static void make_layout(const as_attn_bwd_params *bp, layout *L)
{
    const as_attn_params *p = &bp->f;
    const int64_t G = p->H / p->Hkv, bh = p->B * p->Hkv;
    int64_t P = G >= MT ? 1 : MT / G;
    if (P > p->Lq) P = p->Lq > 0 ? p->Lq : 1;
    L->P = P;
    L->mp = as_cpu_flash_round16(G * P);
    L->ntile = (p->Lq + P - 1) / P;
    L->nkb = (p->Lk + BK - 1) / BK;
    int64_t lanes = (UNITS + bh - 1) / (bh > 0 ? bh : 1);
    if (lanes > MAX_LANES) lanes = MAX_LANES;
    if (lanes > L->nkb) lanes = L->nkb;
    L->lanes = lanes > 0 ? lanes : 1;
    L->Dp = as_cpu_flash_round16(p->D);
    L->Dvp = as_cpu_flash_round16(p->Dv);

    const size_t f = sizeof(float), mp = (size_t)L->mp, D = (size_t)p->D, Dv = (size_t)p->Dv;
    size_t at = 0;
    L->part_tile = D * mp;
    L->di = take(&at, (size_t)(p->B * p->H * p->Lq) * f);
    L->part = take(&at, (size_t)L->lanes * (size_t)bh * (size_t)L->ntile * L->part_tile * f);
    L->shared = at;

    at = 0;
    L->qt = take(&at, D * mp * f);
    L->qs = take(&at, mp * (size_t)L->Dp * f);
    L->dot = take(&at, Dv * mp * f);
    L->dor = take(&at, mp * (size_t)L->Dvp * f);
    L->lse = take(&at, mp * f);
    L->dit = take(&at, mp * f);
    L->jmax = take(&at, mp * sizeof(int32_t));
    L->rkey = take(&at, mp * sizeof(uint32_t));
    L->colbase = take(&at, mp * sizeof(int64_t));
    L->vmax = take(&at, mp / 16 * sizeof(int64_t));
    L->tile = at;
    /* keep the states when a unit meets its tiles more than once and they fit */
    L->cached = L->nkb > L->lanes && (size_t)L->ntile * L->tile <= TILE_CACHE;

    at = 0;
    bool masked = p->mask.data != NULL;
    L->tiles = take(&at, (L->cached ? (size_t)L->ntile : 1) * L->tile);
    L->packed = take(&at, L->cached ? (size_t)L->ntile : 0);
    L->st = take(&at, BK * mp * f);
    L->pd = take(&at, p->dropout > 0 ? BK * mp * f : 0);
    L->dp = take(&at, BK * mp * f);
    L->bias = take(&at, masked ? BK * mp * f : 0);
    L->maskrows = take(&at, masked ? BK * mp * f : 0);
    L->rowbias = take(&at, BK * f);
    L->kbuf = take(&at, as_cpu_flash_in_place(&p->k, p->D) ? 0 : BK * D * f);
    L->vbuf = take(&at, as_cpu_flash_in_place(&p->v, p->Dv) ? 0 : BK * Dv * f);
    L->dk = take(&at, BK * (size_t)L->Dp * f);
    L->dv = take(&at, BK * (size_t)L->Dvp * f);
    L->colmax = take(&at, mp * f);
    L->vis = take(&at, mp / 16 * sizeof(int64_t));
    L->total = at;
}

size_t as_cpu_flash_bwd_workspace_size(const as_attn_bwd_params *p, int nthreads)
{
    layout L;
    make_layout(p, &L);
    return L.shared + L.total * (size_t)(nthreads > 0 ? nthreads : 1) + 64;
}

typedef struct {
    const as_attn_bwd_params *bp;
    const as_attn_params *p;
    const as_cpu_flash_isa *isa;
    const layout *L;
    int mask_mode;
    char *shared;
} job;

#define WS(T, field) ((T *)(ws + jb->L->field))
#define TS(T, field) ((T *)(ts + jb->L->field)) /* in a tile state */

/* Di = rowsum(dO o O) for every (b, h, i). */
static void row_dots(const job *jb, int nthreads)
{
    const as_attn_params *p = jb->p;
    const as_attn_operand *dout = &jb->bp->dout;
    const int64_t rows = p->B * p->H * p->Lq, Dv = p->Dv;
    float *di = (float *)(jb->shared + jb->L->di);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t r = 0; r < rows; r++) {
        int64_t b = r / (p->H * p->Lq), h = r / p->Lq % p->H, i = r % p->Lq;
        int64_t at = b * dout->stride[0] + h * dout->stride[1] + i * dout->stride[2];
        float s = 0;
        for (int64_t c = 0; c < Dv; c++)
            s += as_cpu_flash_load(dout->data, dout->dtype, at + c * dout->stride[3]) *
                 as_cpu_flash_load(p->out, p->out_dtype, r * Dv + c);
        di[r] = s;
    }
}

/* The state of tile (b, hk, i0, np) at ts: Q^T, Q, dO^T and dO packed, the
 * statistics, the causal limits and the dropout keys; vmax per column group;
 * the mask's column bases.  Q's and dO's padding columns (D..Dp, Dv..Dvp)
 * must be zero already. */
static void pack_tile(const job *jb, char *ts, int64_t b, int64_t hk, int64_t i0, int64_t np)
{
    const as_attn_params *p = jb->p;
    const as_attn_operand *dout = &jb->bp->dout;
    const int64_t G = p->H / p->Hkv, D = p->D, Dv = p->Dv, M = G * np;
    const int64_t mp = as_cpu_flash_round16(M), Dp = jb->L->Dp, Dvp = jb->L->Dvp;
    const int64_t off = p->Lk - p->Lq;
    float *qt = TS(float, qt), *dot = TS(float, dot);

    as_cpu_flash_pack_qt(p, jb->isa, qt, b, hk, i0, np);
    jb->isa->transpose(TS(float, qs), Dp, qt, mp, D, mp, 1.0f, NULL); /* Q rows, scaled */
    for (int64_t g = 0; g < G; g++) {
        int64_t at = b * dout->stride[0] + (hk * G + g) * dout->stride[1] + i0 * dout->stride[2];
        if (as_cpu_flash_in_place(dout, Dv)) {
            jb->isa->transpose(dot + g * np, mp, (const float *)dout->data + at, dout->stride[2], np,
                               Dv, 1.0f, NULL);
            continue;
        }
        for (int64_t t = 0; t < np; t++)
            for (int64_t c = 0; c < Dv; c++)
                dot[c * mp + g * np + t] = as_cpu_flash_load(
                    dout->data, dout->dtype, at + t * dout->stride[2] + c * dout->stride[3]);
    }
    for (int64_t c = 0; c < Dv; c++)
        for (int64_t m = M; m < mp; m++) dot[c * mp + m] = 0;
    jb->isa->transpose(TS(float, dor), Dvp, dot, mp, Dv, mp, 1.0f, NULL); /* dO rows */

    const float *di = (const float *)(jb->shared + jb->L->di);
    float *lse = TS(float, lse), *dit = TS(float, dit);
    int32_t *jmax = TS(int32_t, jmax);
    uint32_t *rkey = TS(uint32_t, rkey);
    for (int64_t m = 0; m < mp; m++) {
        int64_t row = (b * p->H + hk * G + m / np) * p->Lq + i0 + m % np;
        lse[m] = m < M ? p->lse[row] : INFINITY; /* padded columns: P = 0 */
        dit[m] = m < M ? di[row] : 0;
        int64_t lim = m < M ? i0 + m % np + off : INT32_MAX;
        jmax[m] = (int32_t)(lim < -1 ? -1 : lim > INT32_MAX ? INT32_MAX : lim);
        if (p->dropout > 0)
            rkey[m] = m < M ? as_attn_row_key(p->seed, p->H, p->Lq, b, hk * G + m / np,
                                              i0 + m % np)
                            : 0;
    }
    int64_t *vmax = TS(int64_t, vmax);
    for (int64_t v = 0; v < mp / 16; v++) {
        vmax[v] = jmax[16 * v];
        for (int64_t m = 16 * v + 1; m < 16 * v + 16; m++) vmax[v] = jmax[m] > vmax[v] ? jmax[m] : vmax[v];
    }
    if (jb->mask_mode == 2) {
        const as_attn_operand *mk = &p->mask;
        int64_t *colbase = TS(int64_t, colbase);
        int64_t rowbase = b * mk->stride[0] + hk * G * mk->stride[1];
        for (int64_t m = 0; m < M; m++)
            colbase[m] = rowbase + m / np * mk->stride[1] + (i0 + m % np) * mk->stride[2];
    }
}

/* One pair: key block [j0, j0 + n) (K, V rows at kr, vr) against the packed
 * tile (b, hk, i0, np), its state at ts; dQ^T into part (D, mp). */
static void run_pair(const job *jb, char *ws, const char *ts, int64_t b, int64_t hk, int64_t i0, int64_t np,
                     int64_t j0, int64_t n, const float *kr, int64_t ldk, const float *vr,
                     int64_t ldv, float *part)
{
    const as_attn_params *p = jb->p;
    const as_cpu_flash_isa *isa = jb->isa;
    const int64_t G = p->H / p->Hkv, D = p->D, Dv = p->Dv, M = G * np;
    const int64_t mp = as_cpu_flash_round16(M), Dp = jb->L->Dp, Dvp = jb->L->Dvp;
    float *st = WS(float, st), *dp = WS(float, dp);

    as_cpu_flash_qk_args qa = {.s = st, .k = kr, .ldk = ldk, .qt = TS(const float, qt), .n = n,
                               .d = D, .mpad = mp, .j0 = j0, .colmax = WS(float, colmax)};
    if (p->causal && j0 + n - 1 > i0 + p->Lk - p->Lq) {
        qa.jmax = TS(const int32_t, jmax);
        const int64_t *vmax = TS(const int64_t, vmax);
        int64_t *vis = WS(int64_t, vis);
        bool staircase = true; /* per 16 columns, the last visible key never decreases */
        for (int64_t v = 0; v < mp / 16; v++) {
            int64_t e = vmax[v] - j0 + 1;
            vis[v] = e < 0 ? 0 : e > n ? n : e;
            staircase &= v == 0 || vmax[v] >= vmax[v - 1];
        }
        if (staircase) qa.vis = vis;
    }
    if (jb->mask_mode) {
        const as_attn_operand *mk = &p->mask;
        int64_t rowbase = b * mk->stride[0] + hk * G * mk->stride[1];
        if (jb->mask_mode == 2) { /* the bias's padding columns: zero */
            float *bias = WS(float, bias);
            for (int64_t r = 0; r < BK; r++)
                for (int64_t m = M; m < mp; m++) bias[r * mp + m] = 0;
        }
        if (!as_cpu_flash_mask_tile(p, isa, jb->mask_mode, &qa, rowbase, TS(const int64_t, colbase),
                                    WS(float, rowbias), WS(float, maskrows), BK, WS(float, bias), M))
            return; /* hidden from every column: P = 0, nothing to add */
    }
    isa->qk(&qa); /* S^T */

    as_cpu_flash_bwd_args ba = {.s = st, .dp = dp, .n = n, .mpad = mp, .j0 = j0,
                                .stat = TS(const float, lse)};
    if (p->dropout > 0) {
        ba.pd = WS(float, pd);
        ba.row_key = TS(const uint32_t, rkey);
        ba.threshold = as_attn_drop_threshold(p->dropout);
        ba.keep_scale = 1.0f / (1.0f - p->dropout);
    }
    isa->bwd_p(&ba); /* P^T, Pd^T */

    isa->gemm(&(as_cpu_flash_gemm_args){.c = WS(float, dv), .ldc = Dvp, .a = ba.pd ? ba.pd : st,
                                         .lda = mp, .b = TS(const float, dor), .ldb = Dvp, .m = n,
                                         .n = Dvp, .k = mp, .acc = true}); /* dV += Pd^T dO */
    isa->gemm(&(as_cpu_flash_gemm_args){.c = dp, .ldc = mp, .a = vr, .lda = ldv,
                                         .b = TS(const float, dot), .ldb = mp, .m = n, .n = mp,
                                         .k = Dv}); /* dP^T = V dO^T */
    ba.pd = NULL, ba.stat = TS(const float, dit);
    isa->bwd_ds(&ba); /* dS^T */
    isa->gemm(&(as_cpu_flash_gemm_args){.c = WS(float, dk), .ldc = Dp, .a = dp, .lda = mp,
                                         .b = TS(const float, qs), .ldb = Dp, .m = n, .n = Dp, .k = mp,
                                         .acc = true}); /* dK += dS^T (scale Q) */
    isa->pv(&(as_cpu_flash_pv_args){.ot = part, .v = kr, .ldv = ldk, .pt = dp, .n = n, .dv = D,
                                    .mpad = mp, .vis = qa.vis}); /* dQ^T += K^T dS^T */

    if (jb->bp->dbias)
        for (int64_t g = 0; g < G; g++)
            isa->transpose(jb->bp->dbias + ((b * p->H + hk * G + g) * p->Lq + i0) * p->Lk + j0,
                           p->Lk, dp + g * np, mp, n, np, 1.0f, NULL);
}

/* Unit (b, hk, lane): key blocks lane, lane + lanes, ... against every query tile. */
static void run_unit(const job *jb, char *ws, int64_t b, int64_t hk, int64_t lane)
{
    const as_attn_params *p = jb->p;
    const layout *L = jb->L;
    const int64_t D = p->D, Dv = p->Dv, P = L->P, off = p->Lk - p->Lq, bh = p->B * p->Hkv;
    const as_attn_operand *k = &p->k, *v = &p->v;
    float *part = (float *)(jb->shared + L->part) +
                  ((size_t)(lane * bh + b * p->Hkv + hk) * (size_t)L->ntile) * L->part_tile;
    memset(part, 0, (size_t)L->ntile * L->part_tile * sizeof(float));
    char *tiles = ws + L->tiles;
    uint8_t *packed = L->cached ? WS(uint8_t, packed) : NULL;
    for (int64_t t = 0; t < (L->cached ? L->ntile : 1); t++) { /* Q's and dO's padding columns */
        char *ts = tiles + (size_t)t * L->tile;
        if (!L->cached || L->Dp != D) memset(TS(float, qs), 0, (size_t)(L->mp * L->Dp) * sizeof(float));
        if (!L->cached || L->Dvp != Dv)
            memset(TS(float, dor), 0, (size_t)(L->mp * L->Dvp) * sizeof(float));
    }
    if (packed) memset(packed, 0, (size_t)L->ntile);

    const size_t ks = as_dtype_size(k->dtype), vs = as_dtype_size(v->dtype);
    const char *kb = (const char *)k->data + (b * k->stride[0] + hk * k->stride[1]) * (int64_t)ks;
    const char *vb = (const char *)v->data + (b * v->stride[0] + hk * v->stride[1]) * (int64_t)vs;
    const bool k_direct = as_cpu_flash_in_place(k, D), v_direct = as_cpu_flash_in_place(v, Dv);
    float *dk = WS(float, dk), *dv = WS(float, dv);

    for (int64_t kbi = lane; kbi < L->nkb; kbi += L->lanes) {
        const int64_t j0 = kbi * BK, n = p->Lk - j0 < BK ? p->Lk - j0 : BK;
        const float *kr, *vr;
        int64_t ldk, ldv;
        if (k_direct) {
            kr = (const float *)kb + j0 * k->stride[2], ldk = k->stride[2];
        } else {
            as_cpu_flash_pack_rows(WS(float, kbuf), kb, k->dtype, k->stride[2], k->stride[3], j0, n, D);
            kr = WS(float, kbuf), ldk = D;
        }
        if (v_direct) {
            vr = (const float *)vb + j0 * v->stride[2], ldv = v->stride[2];
        } else {
            as_cpu_flash_pack_rows(WS(float, vbuf), vb, v->dtype, v->stride[2], v->stride[3], j0, n, Dv);
            vr = WS(float, vbuf), ldv = Dv;
        }
        memset(dk, 0, (size_t)(n * L->Dp) * sizeof(float));
        memset(dv, 0, (size_t)(n * L->Dvp) * sizeof(float));
        /* causal: tiles whose last query is before the block's first key see none of it */
        int64_t t0 = 0;
        if (p->causal) {
            int64_t first = j0 - off - (P - 1); /* i0 + P - 1 + off >= j0 */
            t0 = first > 0 ? first / P : 0;
        }
        for (int64_t t = t0; t < L->ntile; t++) {
            const int64_t i0 = t * P, np = p->Lq - i0 < P ? p->Lq - i0 : P;
            if (p->causal && i0 + np - 1 + off < j0) continue;
            char *ts = tiles + (packed ? (size_t)t * L->tile : 0);
            if (!packed || !packed[t]) pack_tile(jb, ts, b, hk, i0, np);
            if (packed) packed[t] = 1;
            run_pair(jb, ws, ts, b, hk, i0, np, j0, n, kr, ldk, vr, ldv, part + t * L->part_tile);
        }
        float *dko = (float *)jb->bp->dk + ((b * p->Hkv + hk) * p->Lk + j0) * D;
        float *dvo = (float *)jb->bp->dv + ((b * p->Hkv + hk) * p->Lk + j0) * Dv;
        for (int64_t r = 0; r < n; r++) {
            memcpy(dko + r * D, dk + r * L->Dp, (size_t)D * sizeof(float));
            memcpy(dvo + r * Dv, dv + r * L->Dvp, (size_t)Dv * sizeof(float));
        }
    }
}

/* dQ = scale * (sum of the lanes' partials, in lane order), transposed out. */
static void reduce_dq(const job *jb, int nthreads)
{
    const as_attn_params *p = jb->p;
    const layout *L = jb->L;
    const int64_t G = p->H / p->Hkv, D = p->D, bh = p->B * p->Hkv, items = bh * L->ntile;
    const size_t lane_stride = (size_t)bh * (size_t)L->ntile * L->part_tile;
    float *part = (float *)(jb->shared + L->part);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t it = 0; it < items; it++) {
        const int64_t r = it / L->ntile, t = it % L->ntile, b = r / p->Hkv, hk = r % p->Hkv;
        const int64_t i0 = t * L->P, np = p->Lq - i0 < L->P ? p->Lq - i0 : L->P;
        const int64_t mp = as_cpu_flash_round16(G * np);
        float *acc = part + (size_t)it * L->part_tile;
        for (int64_t l = 1; l < L->lanes; l++) {
            const float *o = acc + (size_t)l * lane_stride;
            for (int64_t x = 0; x < D * mp; x++) acc[x] += o[x];
        }
        for (int64_t g = 0; g < G; g++)
            jb->isa->transpose(jb->bp->dq + ((b * p->H + hk * G + g) * p->Lq + i0) * D, D,
                               acc + g * np, mp, D, np, p->scale, NULL);
    }
}

void as_cpu_flash_backward(const as_attn_bwd_params *bp, void *workspace, int nthreads)
{
    const as_attn_params *p = &bp->f;
    const size_t nq = (size_t)(p->B * p->H * p->Lq), nk = (size_t)(p->B * p->Hkv * p->Lk);
    if (bp->dbias) memset(bp->dbias, 0, nq * (size_t)p->Lk * sizeof(float));
    if (nq == 0 || nk == 0 || p->Dv == 0) { /* no keys or no values: zero gradients */
        if (bp->dq) memset(bp->dq, 0, nq * (size_t)p->D * sizeof(float));
        if (bp->dk) memset(bp->dk, 0, nk * (size_t)p->D * sizeof(float));
        if (bp->dv) memset(bp->dv, 0, nk * (size_t)p->Dv * sizeof(float));
        return;
    }
    if (nthreads < 1) nthreads = 1;
    layout L;
    make_layout(bp, &L);
    char *base = (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    job jb = {.bp = bp, .p = p, .isa = as_cpu_flash_current_isa(), .L = &L,
              .mask_mode = as_cpu_flash_mask_mode(p), .shared = base};
    char *ws0 = base + L.shared;
    row_dots(&jb, nthreads);
    const int64_t bh = p->B * p->Hkv, units = bh * L.lanes;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t u = 0; u < units; u++) {
        int64_t lane = u / bh, r = u % bh;
        run_unit(&jb, ws0 + (size_t)omp_get_thread_num() * L.total, r / p->Hkv, r % p->Hkv, lane);
    }
    reduce_dq(&jb, nthreads);
}
