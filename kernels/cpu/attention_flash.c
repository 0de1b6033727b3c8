/* FlashAttention forward, CPU driver: work items, packing, masks, output;
 * plus the portable path.  The vector paths (attention_flash_avx512.c,
 * attention_flash_avx2.c) supply the three tile kernels, chosen at run time.
 * See attention_flash.h for the algorithm and the transposed layout. */
#include "attention_flash.h"
#include "vector_variants.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Tile sizes: BK keys per tile, about MT query columns per work item.  The
 * S^T/P^T tile (BK x MT floats, 32 KiB) stays in L1 across the softmax and
 * P V passes; K and V tiles (BK x D) stream from L2.  Every item reads all
 * of its head's K and V once, so when they outgrow L2 (KV_L2 bytes) an item
 * takes up to LONG_MT columns: K and V then come from memory fewer times,
 * for an S^T tile that lives in L2 instead of L1. */
#ifndef AS_FLASH_BK /* overridable for tuning runs */
#define AS_FLASH_BK 128
#endif
#ifndef AS_FLASH_MT
#define AS_FLASH_MT 64
#endif
#define BK AS_FLASH_BK
#define MT AS_FLASH_MT
#define MIN_COLS 16
#define KV_L2 ((size_t)1 << 20)
#define LONG_MT 256

/* ---- path selection ---- */

static const as_cpu_flash_isa *isa_by_name(const char *name)
{
    if (!strcmp(name, "scalar")) return &as_cpu_flash_isa_scalar;
#ifdef AS_CPU_FLASH_X86
    __builtin_cpu_init();
    if (!strcmp(name, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                   ? &as_cpu_flash_isa_avx2
                   : NULL;
    if (!strcmp(name, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
                   ? &as_cpu_flash_isa_avx512
                   : NULL;
#endif
    return NULL;
}

static const as_cpu_flash_isa *isa_forced, *isa_default;

static const as_cpu_flash_isa *current_isa(void)
{
    if (isa_forced) return isa_forced;
    if (!isa_default) {
        const as_cpu_flash_isa *d = NULL;
        const char *env = getenv("ATTNSWAP_FLASH_ISA");
        if (env && *env) d = isa_by_name(env);
        if (!d) d = isa_by_name("avx512");
        if (!d) d = isa_by_name("avx2");
        isa_default = d ? d : &as_cpu_flash_isa_scalar;
    }
    return isa_default;
}

int as_cpu_flash_force_isa(const char *name)
{
    if (!name) {
        isa_forced = NULL;
        return 0;
    }
    const as_cpu_flash_isa *i = isa_by_name(name);
    if (!i) return -1;
    isa_forced = i;
    return 0;
}

const char *as_cpu_flash_isa_name(void) { return current_isa()->name; }

const as_cpu_flash_isa *as_cpu_flash_current_isa(void) { return current_isa(); }

void as_cpu_flash_exp(const float *x, float *y, int64_t n) { current_isa()->exp(x, y, n); }

int as_cpu_vector_level(void)
{
    const as_cpu_flash_isa *i = current_isa();
#ifdef AS_CPU_FLASH_X86
    if (i == &as_cpu_flash_isa_avx512) return 2;
    if (i == &as_cpu_flash_isa_avx2) return 1;
#endif
    (void)i;
    return 0;
}

/* ---- the portable path: plain loops over contiguous columns ---- */

/* Cephes expf: x = n ln2 + r, |r| <= ln2/2 (ln2 split in two so that n ln2
 * is exact); e^r = 1 + r + r^2 P(r), P Cephes' degree-5 fit, evaluated as
 * one Horner chain (1.3 ulp with FMA); times 2^n. */
static inline float exp_scalar1(float x)
{
    if (!(x >= -87.33654f)) return x != x ? x : 0.0f; /* NaN stays NaN */
    if (x > 88.0f) x = 88.0f; /* keeps 2^n normal; attention only asks for x <= 0 */
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r + 1.0f;
    float y = p * r + 1.0f;
    union {
        float f;
        int32_t i;
    } u = {.i = ((int32_t)n + 127) << 23}; /* n in [-126, 127] */
    return y * u.f;
}

static void exp_scalar(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = exp_scalar1(x[i]);
}

static void qk_scalar(const as_cpu_flash_qk_args *a)
{
    int64_t mp = a->mpad;
    for (int64_t m = 0; m < mp; m++) a->colmax[m] = -INFINITY;
    for (int64_t n = 0; n < a->n; n++) {
        if (a->vis && n >= a->vis[mp / 16 - 1]) { /* masked for every column */
            for (int64_t m = 0; m < mp; m++) a->s[n * mp + m] = -INFINITY;
            continue;
        }
        float *s = a->s + n * mp;
        const float *k = a->k + n * a->ldk;
        for (int64_t m = 0; m < mp; m++) s[m] = 0;
        for (int64_t d = 0; d < a->d; d++) {
            const float *q = a->qt + d * mp;
            float kv = k[d];
            for (int64_t m = 0; m < mp; m++) s[m] += kv * q[m];
        }
        if (a->bias)
            for (int64_t m = 0; m < mp; m++) s[m] += a->bias[n * mp + m];
        if (a->rowbias)
            for (int64_t m = 0; m < mp; m++) s[m] += a->rowbias[n];
        if (a->jmax)
            for (int64_t m = 0; m < mp; m++)
                if (a->j0 + n > a->jmax[m]) s[m] = -INFINITY;
        for (int64_t m = 0; m < mp; m++) a->colmax[m] = fmaxf(a->colmax[m], s[m]);
    }
}

static bool softmax_scalar(const as_cpu_flash_softmax_args *a)
{
    bool changed = false;
    for (int64_t m = 0; m < a->mpad; m++) {
        float mo = a->m[m], mn = fmaxf(mo, a->colmax[m]);
        float mu = mn == -INFINITY ? 0.0f : mn, sum = 0;
        changed |= mn != mo;
        a->alpha[m] = exp_scalar1(mo - mu);
        a->m[m] = mn;
        for (int64_t n = 0; n < a->n; n++) {
            float *s = a->s + n * a->mpad + m;
            float e = exp_scalar1(*s - mu);
            sum += e;
            if (a->row_key)
                e = as_attn_keep(a->row_key[m], a->j0 + n, a->threshold) ? e * a->keep_scale
                                                                              : 0.0f;
            *s = e;
        }
        a->l[m] = a->l[m] * a->alpha[m] + sum;
    }
    return changed;
}

static void pv_scalar(const as_cpu_flash_pv_args *a)
{
    int64_t mp = a->mpad;
    for (int64_t c = 0; c < a->dv; c++) {
        float *o = a->ot + c * mp;
        if (a->alpha)
            for (int64_t m = 0; m < mp; m++) o[m] *= a->alpha[m];
        for (int64_t n = 0; n < (a->vis ? a->vis[mp / 16 - 1] : a->n); n++) {
            const float *p = a->pt + n * mp;
            float vv = a->v[n * a->ldv + c];
            for (int64_t m = 0; m < mp; m++) o[m] += vv * p[m];
        }
    }
}

static void transpose_scalar(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                             int64_t cols, float scale, const float *colscale)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            dst[c * ldd + r] = src[r * lds + c] * (colscale ? colscale[c] : scale);
}

/* ---- the backward's (attention_flash.h) ---- */

static void gemm_scalar(const as_cpu_flash_gemm_args *a)
{
    for (int64_t i = 0; i < a->m; i++) {
        float *c = a->c + i * a->ldc;
        if (!a->acc)
            for (int64_t j = 0; j < a->n; j++) c[j] = 0;
        for (int64_t l = 0; l < a->k; l++) {
            float x = a->a[i * a->lda + l];
            const float *b = a->b + l * a->ldb;
            for (int64_t j = 0; j < a->n; j++) c[j] += x * b[j];
        }
    }
}

static void bwd_p_scalar(const as_cpu_flash_bwd_args *a)
{
    for (int64_t n = 0; n < a->n; n++)
        for (int64_t m = 0; m < a->mpad; m++) {
            float *s = a->s + n * a->mpad + m;
            *s = exp_scalar1(*s - a->stat[m]);
            if (a->pd)
                a->pd[n * a->mpad + m] =
                    as_attn_keep(a->row_key[m], a->j0 + n, a->threshold) ? *s * a->keep_scale : 0.0f;
        }
}

static void bwd_ds_scalar(const as_cpu_flash_bwd_args *a)
{
    for (int64_t n = 0; n < a->n; n++)
        for (int64_t m = 0; m < a->mpad; m++) {
            float *dp = a->dp + n * a->mpad + m, x = *dp;
            if (a->row_key)
                x = as_attn_keep(a->row_key[m], a->j0 + n, a->threshold) ? x * a->keep_scale : 0.0f;
            *dp = a->s[n * a->mpad + m] * (x - a->stat[m]);
        }
}

const as_cpu_flash_isa as_cpu_flash_isa_scalar = {
    "scalar",         qk_scalar,  softmax_scalar, pv_scalar,    exp_scalar,
    transpose_scalar, gemm_scalar, bwd_p_scalar,  bwd_ds_scalar};

/* ---- workspace ---- */

typedef struct {
    int64_t P;    /* query positions per work item */
    int64_t mpad; /* largest mpad of an item */
    size_t qt, st, ot, bias, maskrows, rowbias, kbuf, vbuf, colmax, m, l, alpha, jmax, rkey,
        colbase, vmax, vis, total;
} layout;

static int64_t round16(int64_t n) { return (n + 15) & ~(int64_t)15; }

int64_t as_cpu_flash_round16(int64_t n) { return round16(n); }

static size_t take(size_t *at, size_t bytes)
{
    size_t o = *at;
    *at += (bytes + 63) & ~(size_t)63;
    return o;
}

static bool packed_in_place(const as_attn_operand *o, int64_t d)
{
    return o->dtype == AS_F32 && (o->stride[3] == 1 || d <= 1);
}

bool as_cpu_flash_in_place(const as_attn_operand *o, int64_t d) { return packed_in_place(o, d); }

static void make_layout(const as_attn_params *p, int nthreads, layout *L)
{
    int64_t G = p->H / p->Hkv, P = G >= MT ? 1 : MT / G;
    size_t kv_bytes = (size_t)p->Lk * (size_t)(p->D + p->Dv) * sizeof(float);
    while (kv_bytes > KV_L2 && G * P * 2 <= LONG_MT) P *= 2;
    if (P > p->Lq) P = p->Lq > 0 ? p->Lq : 1;
    /* enough items for the threads, while keeping at least MIN_COLS columns */
    int64_t bh = p->B * p->Hkv;
    while (P > 1 && G * (P / 2) >= MIN_COLS && bh * ((p->Lq + P - 1) / P) < 2 * (int64_t)nthreads)
        P = (P + 1) / 2;
    L->P = P;
    L->mpad = round16(G * P);
    size_t mp = (size_t)L->mpad, at = 0, f = sizeof(float);
    L->qt = take(&at, (size_t)p->D * mp * f);
    L->st = take(&at, BK * mp * f);
    L->ot = take(&at, (size_t)p->Dv * mp * f);
    L->bias = take(&at, p->mask.data ? BK * mp * f : 0);
    L->maskrows = take(&at, p->mask.data ? BK * mp * f : 0);
    L->rowbias = take(&at, BK * f);
    L->kbuf = take(&at, packed_in_place(&p->k, p->D) ? 0 : BK * (size_t)p->D * f);
    L->vbuf = take(&at, packed_in_place(&p->v, p->Dv) ? 0 : BK * (size_t)p->Dv * f);
    L->colmax = take(&at, mp * f);
    L->m = take(&at, mp * f);
    L->l = take(&at, mp * f);
    L->alpha = take(&at, mp * f);
    L->jmax = take(&at, mp * sizeof(int32_t));
    L->rkey = take(&at, mp * sizeof(uint32_t));
    L->colbase = take(&at, mp * sizeof(int64_t));
    L->vmax = take(&at, mp / 16 * sizeof(int64_t));
    L->vis = take(&at, mp / 16 * sizeof(int64_t));
    L->total = at;
}

size_t as_cpu_flash_workspace_size(const as_attn_params *p, int nthreads)
{
    layout L;
    make_layout(p, nthreads, &L);
    return L.total * (size_t)(nthreads > 0 ? nthreads : 1) + 64;
}

/* ---- element access ---- */

static inline float load_f(const void *base, as_dtype dt, int64_t i)
{
    switch (dt) {
    case AS_F32: return ((const float *)base)[i];
    case AS_BF16: {
        union {
            uint32_t u;
            float f;
        } c = {.u = (uint32_t)((const uint16_t *)base)[i] << 16};
        return c.f;
    }
    case AS_F16: return as_f16_to_f32(((const uint16_t *)base)[i]);
    case AS_BOOL: return ((const uint8_t *)base)[i] ? 0.0f : -INFINITY;
    default: return 0;
    }
}

float as_cpu_flash_load(const void *base, as_dtype dt, int64_t i) { return load_f(base, dt, i); }

void as_cpu_flash_pack_rows(float *dst, const void *base, as_dtype dt, int64_t rs, int64_t cs, int64_t j0,
                      int64_t n, int64_t d)
{
    for (int64_t r = 0; r < n; r++) {
        int64_t at = (j0 + r) * rs;
        float *o = dst + r * d;
        if (dt == AS_BF16 && cs == 1) {
            const uint16_t *s = (const uint16_t *)base + at;
            for (int64_t c = 0; c < d; c++) {
                union {
                    uint32_t u;
                    float f;
                } x = {.u = (uint32_t)s[c] << 16};
                o[c] = x.f;
            }
        } else {
            for (int64_t c = 0; c < d; c++) o[c] = load_f(base, dt, at + c * cs);
        }
    }
}

/* n mask values from element at along the key dim, as additive floats (a
 * false keep is -inf); whether any is not -inf. */
static bool mask_row(float *dst, const as_attn_operand *mk, int64_t at, int64_t n)
{
    int64_t sj = mk->stride[3];
    if (mk->dtype == AS_BOOL && sj == 1) {
        const uint8_t *s = (const uint8_t *)mk->data + at;
        uint8_t keep = 0;
        for (int64_t r = 0; r < n; r++) {
            dst[r] = s[r] ? 0.0f : -INFINITY;
            keep |= s[r];
        }
        return keep != 0;
    }
    if (mk->dtype == AS_F32 && sj == 1) {
        memcpy(dst, (const float *)mk->data + at, (size_t)n * sizeof(float));
        return true; /* a float bias rarely hides a whole tile: not worth a scan */
    }
    bool any = false;
    for (int64_t r = 0; r < n; r++) {
        dst[r] = load_f(mk->data, mk->dtype, at + r * sj);
        any |= dst[r] != -INFINITY;
    }
    return any;
}

/* ---- one work item: batch b, kv-head hk, query positions [i0, i0 + np) ----
 * Column m = g * np + t of the item's tiles is head hk * G + g, position i0 + t. */

typedef struct {
    const as_attn_params *p;
    const as_cpu_flash_isa *isa;
    const layout *L;
    int mask_mode; /* 0 none, 1 one value per key row, 2 a full tile */
} job;

#define WS(T, field) ((T *)(ws + jb->L->field))

void as_cpu_flash_pack_qt(const as_attn_params *p, const as_cpu_flash_isa *isa, float *qt,
                          int64_t b, int64_t hk, int64_t i0, int64_t np)
{
    const as_attn_operand *q = &p->q;
    const int64_t G = p->H / p->Hkv, D = p->D, M = G * np, mp = round16(M);
    for (int64_t g = 0; g < G; g++) {
        int64_t at = b * q->stride[0] + (hk * G + g) * q->stride[1] + i0 * q->stride[2];
        if (packed_in_place(q, D)) {
            isa->transpose(qt + g * np, mp, (const float *)q->data + at, q->stride[2], np, D,
                           p->scale, NULL);
            continue;
        }
        for (int64_t t = 0; t < np; t++)
            for (int64_t d = 0; d < D; d++) {
                float x = load_f(q->data, q->dtype, at + t * q->stride[2] + d * q->stride[3]);
                qt[d * mp + g * np + t] = p->scale * x;
            }
    }
    for (int64_t d = 0; d < D; d++)
        for (int64_t m = M; m < mp; m++) qt[d * mp + m] = 0;
}

int as_cpu_flash_mask_mode(const as_attn_params *p)
{
    if (!p->mask.data) return 0;
    const int64_t *s = p->mask.stride;
    return s[2] == 0 && (s[1] == 0 || p->H == p->Hkv) ? 1 : 2;
}

bool as_cpu_flash_mask_tile(const as_attn_params *p, const as_cpu_flash_isa *isa, int mode,
                            as_cpu_flash_qk_args *qa, int64_t rowbase, const int64_t *colbase,
                            float *rowbias, float *rows, int64_t bk, float *bias, int64_t M)
{
    const as_attn_operand *mk = &p->mask;
    const int64_t n = qa->n, j0 = qa->j0, sj = mk->stride[3];
    bool any = false;
    if (mode == 1) {
        for (int64_t r = 0; r < n; r++) {
            rowbias[r] = load_f(mk->data, mk->dtype, rowbase + (j0 + r) * sj);
            any |= rowbias[r] != -INFINITY;
        }
        qa->rowbias = rowbias;
        return any;
    }
    /* rows of the mask (contiguous in j) as floats, transposed into the tile */
    for (int64_t m = 0; m < M; m++) any |= mask_row(rows + m * bk, mk, colbase[m] + j0 * sj, n);
    if (any) isa->transpose(bias, qa->mpad, rows, bk, M, n, 1.0f, NULL);
    qa->bias = bias;
    return any;
}

/* The mask of keys [j0, j0 + n) as rowbias (mode 1) or bias (mode 2) in qa;
 * false when the tile is masked for every column (it changes nothing). */
static bool mask_tile(const job *jb, char *ws, as_cpu_flash_qk_args *qa, int64_t at, int64_t M)
{
    return as_cpu_flash_mask_tile(jb->p, jb->isa, jb->mask_mode, qa, at, WS(int64_t, colbase),
                                  WS(float, rowbias), WS(float, maskrows), BK, WS(float, bias), M);
}

/* out (B, H, Lq, Dv) = O^T / l; a row that saw nothing (l = 0) gives zeros. */
static void write_out(const job *jb, char *ws, int64_t b, int64_t hk, int64_t i0, int64_t np)
{
    const as_attn_params *p = jb->p;
    const int64_t G = p->H / p->Hkv, Dv = p->Dv, M = G * np, mp = round16(M);
    const float *ot = WS(float, ot), *l = WS(float, l);
    float *inv = WS(float, alpha);
    for (int64_t m = 0; m < M; m++) inv[m] = l[m] > 0 ? 1.0f / l[m] : 0.0f;
    if (p->lse) {
        const float *mx = WS(float, m);
        for (int64_t m = 0; m < M; m++)
            p->lse[(b * p->H + hk * G + m / np) * p->Lq + i0 + m % np] =
                l[m] > 0 ? mx[m] + logf(l[m]) : INFINITY;
    }
    for (int64_t g = 0; g < G; g++) {
        int64_t at = ((b * p->H + hk * G + g) * p->Lq + i0) * Dv;
        if (p->out_dtype == AS_F32) {
            jb->isa->transpose((float *)p->out + at, Dv, ot + g * np, mp, Dv, np, 1.0f, inv + g * np);
            continue;
        }
        uint16_t *o = (uint16_t *)p->out + at;
        for (int64_t t = 0; t < np; t++)
            for (int64_t c = 0; c < Dv; c++) {
                float x = ot[c * mp + g * np + t] * inv[g * np + t];
                o[t * Dv + c] = p->out_dtype == AS_BF16 ? as_f32_to_bf16(x) : as_f32_to_f16(x);
            }
    }
}

static void run_item(const job *jb, char *ws, int64_t b, int64_t hk, int64_t i0, int64_t np)
{
    const as_attn_params *p = jb->p;
    const int64_t G = p->H / p->Hkv, M = G * np, mp = round16(M), D = p->D, Dv = p->Dv;
    const int64_t off = p->Lk - p->Lq;
    float *st = WS(float, st), *ot = WS(float, ot), *mrun = WS(float, m), *lrun = WS(float, l);
    int32_t *jmax = WS(int32_t, jmax);
    int64_t *vmax = WS(int64_t, vmax), *vis = WS(int64_t, vis);

    as_cpu_flash_pack_qt(p, jb->isa, WS(float, qt), b, hk, i0, np);
    for (int64_t m = 0; m < mp; m++) {
        mrun[m] = -INFINITY, lrun[m] = 0;
        int64_t lim = m < M ? i0 + m % np + off : INT32_MAX;
        jmax[m] = (int32_t)(lim < -1 ? -1 : lim > INT32_MAX ? INT32_MAX : lim);
    }
    memset(ot, 0, (size_t)(Dv * mp) * sizeof(float));

    /* Causal: keys past the last position's diagonal are never visited, and
     * only tiles reaching past the first position's diagonal need the mask. */
    int64_t kv_end = p->Lk, diag = INT64_MAX;
    bool staircase = false; /* per 16 columns, the last visible key never decreases */
    if (p->causal) {
        diag = i0 + off;
        kv_end = i0 + np + off < p->Lk ? i0 + np + off : p->Lk;
        staircase = true;
        for (int64_t v = 0; v < mp / 16; v++) {
            vmax[v] = jmax[16 * v];
            for (int64_t m = 16 * v + 1; m < 16 * v + 16; m++)
                vmax[v] = jmax[m] > vmax[v] ? jmax[m] : vmax[v];
            staircase &= v == 0 || vmax[v] >= vmax[v - 1];
        }
    }

    const as_attn_operand *mk = &p->mask, *k = &p->k, *v = &p->v;
    int64_t rowbase = b * mk->stride[0] + hk * G * mk->stride[1]; /* mask mode 1 */
    if (jb->mask_mode == 2) {
        int64_t *colbase = WS(int64_t, colbase);
        float *bias = WS(float, bias);
        for (int64_t m = 0; m < M; m++)
            colbase[m] = rowbase + m / np * mk->stride[1] + (i0 + m % np) * mk->stride[2];
        for (int64_t n = 0; n < BK; n++)
            for (int64_t m = M; m < mp; m++) bias[n * mp + m] = 0;
    }
    as_cpu_flash_softmax_args sa = {.s = st, .mpad = mp, .colmax = WS(float, colmax),
                                    .m = mrun, .l = lrun, .alpha = WS(float, alpha)};
    if (p->dropout > 0) {
        uint32_t *rkey = WS(uint32_t, rkey);
        for (int64_t m = 0; m < mp; m++)
            rkey[m] = m < M ? as_attn_row_key(p->seed, p->H, p->Lq, b, hk * G + m / np,
                                                   i0 + m % np)
                            : 0;
        sa.row_key = rkey;
        sa.threshold = as_attn_drop_threshold(p->dropout);
        sa.keep_scale = 1.0f / (1.0f - p->dropout);
    }

    const size_t ks = as_dtype_size(k->dtype), vs = as_dtype_size(v->dtype);
    const char *kb = (const char *)k->data + (b * k->stride[0] + hk * k->stride[1]) * (int64_t)ks;
    const char *vb = (const char *)v->data + (b * v->stride[0] + hk * v->stride[1]) * (int64_t)vs;
    bool k_direct = packed_in_place(k, D), v_direct = packed_in_place(v, Dv);

    for (int64_t j0 = 0; j0 < kv_end; j0 += BK) {
        int64_t n = kv_end - j0 < BK ? kv_end - j0 : BK;
        as_cpu_flash_qk_args qa = {.s = st, .qt = WS(float, qt), .n = n, .d = D, .mpad = mp,
                                   .j0 = j0, .colmax = WS(float, colmax)};
        if (p->causal && j0 + n - 1 > diag) {
            qa.jmax = jmax;
            if (staircase) { /* rows no column of a group sees are skipped */
                for (int64_t g = 0; g < mp / 16; g++) {
                    int64_t e = vmax[g] - j0 + 1;
                    vis[g] = e < 0 ? 0 : e > n ? n : e;
                }
                qa.vis = vis;
            }
        }
        if (jb->mask_mode && !mask_tile(jb, ws, &qa, rowbase, M)) continue;

        if (k_direct) {
            qa.k = (const float *)kb + j0 * k->stride[2], qa.ldk = k->stride[2];
        } else {
            as_cpu_flash_pack_rows(WS(float, kbuf), kb, k->dtype, k->stride[2], k->stride[3], j0, n, D);
            qa.k = WS(float, kbuf), qa.ldk = D;
        }
        jb->isa->qk(&qa); /* S^T */

        sa.n = n, sa.j0 = j0;
        bool changed = jb->isa->softmax(&sa); /* P^T, m, l */

        as_cpu_flash_pv_args pa = {.ot = ot, .pt = st, .n = n, .dv = Dv, .mpad = mp,
                                   .alpha = changed ? sa.alpha : NULL, .vis = qa.vis};
        if (v_direct) {
            pa.v = (const float *)vb + j0 * v->stride[2], pa.ldv = v->stride[2];
        } else {
            as_cpu_flash_pack_rows(WS(float, vbuf), vb, v->dtype, v->stride[2], v->stride[3], j0, n, Dv);
            pa.v = WS(float, vbuf), pa.ldv = Dv;
        }
        jb->isa->pv(&pa); /* O^T */
    }
    write_out(jb, ws, b, hk, i0, np);
}

void as_cpu_flash_attention(const as_attn_params *p, void *workspace, int nthreads)
{
    if (p->B == 0 || p->H == 0 || p->Lq == 0 || p->Dv == 0) return;
    if (nthreads < 1) nthreads = 1;
    layout L;
    make_layout(p, nthreads, &L);
    job jb = {.p = p, .isa = current_isa(), .L = &L};
    jb.mask_mode = as_cpu_flash_mask_mode(p);
    char *ws = (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    const int64_t P = L.P, nblk = (p->Lq + P - 1) / P, bh = p->B * p->Hkv, items = bh * nblk;
    /* latest query blocks first: under causal they see the most keys */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t it = 0; it < items; it++) {
        int64_t t = nblk - 1 - it / bh, r = it % bh, i0 = t * P;
        run_item(&jb, ws + (size_t)omp_get_thread_num() * L.total, r / p->Hkv, r % p->Hkv, i0,
                 p->Lq - i0 < P ? p->Lq - i0 : P);
    }
}
