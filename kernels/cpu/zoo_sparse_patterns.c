/* Keep-masks for sparse_attention (as.patterns): plain loops writing one byte
 * per (query, key), row-major, 1 = may attend.  Each follows its paper's
 * definition; positions are 0-based here. */
#include <math.h>
#include <string.h>

#include "attention_flash.h"
#include "zoo_sparse.h"

void as_cpu_pattern_local(uint8_t *m, int64_t L, int64_t window, bool causal)
{
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            int64_t d = i - j;
            m[i * L + j] = (d <= window && -d <= window && (!causal || d >= 0));
        }
}

/* Child et al. 2019, section 4.2 (strided): A1 = {j : |i - j| <= l} (causal:
 * t = max(0, i - l) .. i), A2 = {j : (i - j) mod l = 0}. */
void as_cpu_pattern_strided(uint8_t *m, int64_t L, int64_t stride, bool causal)
{
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            int64_t d = i - j;
            m[i * L + j] = ((d <= stride && -d <= stride) || d % stride == 0) && (!causal || d >= 0);
        }
}

/* Child et al. 2019, section 4.2 (fixed): A1 = {j : floor(j / l) = floor(i / l)},
 * A2 = {j : j mod l in {l - c, ..., l - 1}} (the "summary" positions). */
void as_cpu_pattern_fixed(uint8_t *m, int64_t L, int64_t stride, int64_t c, bool causal)
{
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++)
            m[i * L + j] = (i / stride == j / stride || j % stride >= stride - c) && (!causal || j <= i);
}

void as_cpu_pattern_axial(uint8_t *m, int64_t h, int64_t w, bool causal)
{
    int64_t L = h * w;
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++)
            m[i * L + j] = (i / w == j / w || i % w == j % w) && (!causal || j <= i);
}

/* A uniform in [0, 1) from (seed, i, j): splitmix64 of the three, 53 bits. */
static double hash_uniform(uint64_t seed, uint64_t i, uint64_t j)
{
    uint64_t x = as_attn_mix64(seed ^ as_attn_mix64(i * 0x9e3779b97f4a7c15ull + j));
    return (double)(x >> 11) * 0x1p-53;
}

void as_cpu_pattern_random(uint8_t *m, int64_t L, double p, uint64_t seed)
{
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++)
            m[i * L + j] = hash_uniform(seed, (uint64_t)i, (uint64_t)j) < p;
}

void as_cpu_pattern_global(uint8_t *m, int64_t L, const int64_t *idx, int64_t n)
{
    memset(m, 0, (size_t)(L * L));
    for (int64_t t = 0; t < n; t++) {
        int64_t g = idx[t];
        memset(m + g * L, 1, (size_t)L);
        for (int64_t i = 0; i < L; i++) m[i * L + g] = 1;
    }
}

/* BigBird ITC (Zaheer et al. 2020, section 2 and appendix D): sliding
 * window blocks, global blocks, and r random blocks per row drawn without
 * replacement from the blocks the row does not have yet (a partial
 * Fisher-Yates shuffle driven by a hash of (seed, row, step)). */
void as_cpu_pattern_bigbird_blocks(uint8_t *m, int64_t nb, int64_t window, int64_t globals,
                                   int64_t randoms, uint64_t seed, bool causal)
{
    int64_t rad = (window - 1) / 2;
    for (int64_t r = 0; r < nb; r++) {
        uint8_t *row = m + r * nb;
        for (int64_t c = 0; c < nb; c++) {
            int64_t d = r - c;
            row[c] = (d <= rad && -d <= rad) || r < globals || c < globals;
        }
        if (r >= globals && randoms > 0) {
            /* candidates: columns not yet kept (and not in the future when causal) */
            int64_t lim = causal ? r + 1 : nb, ncand = 0;
            for (int64_t c = 0; c < lim; c++) ncand += !row[c];
            for (int64_t t = 0; t < randoms && ncand > 0; t++, ncand--) {
                int64_t pick = (int64_t)(hash_uniform(seed, (uint64_t)r, (uint64_t)t) * (double)ncand);
                for (int64_t c = 0; c < lim; c++) /* the pick-th free column */
                    if (!row[c] && pick-- == 0) {
                        row[c] = 1;
                        break;
                    }
            }
        }
        if (causal)
            for (int64_t c = r + 1; c < nb; c++) row[c] = 0;
    }
}

void as_cpu_pattern_to_blocks(uint8_t *dst, const uint8_t *src, int64_t nh, int64_t Lr, int64_t Lc,
                              int64_t bs)
{
    int64_t R = (Lr + bs - 1) / bs, C = (Lc + bs - 1) / bs;
    memset(dst, 0, (size_t)(nh * R * C));
    for (int64_t h = 0; h < nh; h++)
        for (int64_t i = 0; i < Lr; i++) {
            const uint8_t *s = src + (h * Lr + i) * Lc;
            uint8_t *d = dst + (h * R + i / bs) * C;
            for (int64_t j = 0; j < Lc; j++) d[j / bs] |= s[j] != 0;
        }
}

void as_cpu_pattern_from_blocks(uint8_t *dst, const uint8_t *src, int64_t nh, int64_t Lr, int64_t Lc,
                                int64_t bs)
{
    int64_t R = (Lr + bs - 1) / bs, C = (Lc + bs - 1) / bs;
    for (int64_t h = 0; h < nh; h++)
        for (int64_t i = 0; i < Lr; i++) {
            const uint8_t *s = src + (h * R + i / bs) * C;
            uint8_t *d = dst + (h * Lr + i) * Lc;
            for (int64_t j = 0; j < Lc; j++) d[j] = s[j / bs] != 0;
        }
}
