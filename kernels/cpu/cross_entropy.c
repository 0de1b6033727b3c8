/* Cross-entropy over rows of class logits, fused: per row r with target t,
 *   lse_r = log sum_c e^(x_rc),   loss_r = lse_r - x_rt,
 * and its backward dx_rc = g_r (e^(x_rc - lse_r) - [c = t]); a row whose
 * target is ignore_index has loss 0 and gradient 0.  x is read in its own
 * dtype (float32, float16, bfloat16): the logits of a language model
 * (8 x 1024 x 50257) are never widened to a float32 copy.  Rows in chunks
 * of CHUNK floats on the stack through the flash kernels' vector exp, the
 * max and the sum in chains (row_stats.h), each row compiled for the CPU's
 * vector ISA (vector_variants.h): one chain of adds made this 4x slower. */
#include <math.h>

#include "as_scalar.h"
#include "attention_flash.h"
#include "cpu_kernels.h"
#include "row_stats.h"
#include "vector_variants.h"

#define CHUNK 2048
#define PARALLEL_ROWS(rows, n) if ((rows) * (n) >= 65536 && (rows) > 1)

/* lse of one row of n logits from base */
AS_VECTOR_IMPL void xent_row_impl(const void *x, as_dtype dt, int64_t base, int64_t n, float *lse)
{
    /* one pass, the online softmax: the sum rescaled when the max grows */
    float buf[CHUNK], m = -INFINITY;
    double s = 0;
    int nan = 0;
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
        load_f32_chunk(buf, x, dt, base + i0, k);
        float mk = max_f32(buf, k);
        if (!(mk > -INFINITY)) { /* all -inf or NaN: adds 0, or makes the sum NaN */
            double c = sum_f32(buf, NULL, k);
            nan |= c != c;
            continue;
        }
        if (mk > m) {
            if (m > -INFINITY) s *= exp((double)m - mk);
            m = mk;
        }
        for (int64_t i = 0; i < k; i++) buf[i] -= m;
        as_cpu_flash_exp(buf, buf, k);
        s += sum_f32(buf, NULL, k);
    }
    if (nan) s = NAN;
    *lse = m == -INFINITY || m == INFINITY ? m : m + (float)log(s);
}
AS_VECTOR_VARIANTS(xent_row, (const void *x, as_dtype dt, int64_t base, int64_t n, float *lse), (x, dt, base, n, lse))

int as_cpu_xent_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss, float *lse,
                     int64_t rows, int64_t n)
{
    int bad = 0;
    xent_row_fn f = xent_row_pick();
#pragma omp parallel for PARALLEL_ROWS(rows, n) reduction(| : bad)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = target[r], base = r * n;
        if (t != ignore && (t < 0 || t >= n)) { /* the front-end checks; a kernel never reads out of bounds */
            bad = 1;
            loss[r] = lse[r] = NAN;
            continue;
        }
        f(x, dt, base, n, &lse[r]);
        loss[r] = t == ignore ? 0.0f : lse[r] - as_load_f32(x, dt, base + t);
    }
    return bad ? -1 : 0;
}

/* dx of one row: g (e^(x - lse) - [c = t]) (t < 0: ignored, zeros) */
AS_VECTOR_IMPL void xent_bwd_row_impl(const void *x, as_dtype dt, int64_t t, float l, float gr, void *dx, int64_t base,
                                      int64_t n)
{
    float buf[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
        if (t < 0) {
            for (int64_t i = 0; i < k; i++) buf[i] = 0.0f;
        } else {
            load_f32_chunk(buf, x, dt, base + i0, k);
            for (int64_t i = 0; i < k; i++) buf[i] -= l;
            as_cpu_flash_exp(buf, buf, k);
            for (int64_t i = 0; i < k; i++) buf[i] *= gr;
            if (t >= i0 && t < i0 + k) buf[t - i0] -= gr;
        }
        if (dt == AS_BF16)
            for (int64_t i = 0; i < k; i++) ((uint16_t *)dx)[base + i0 + i] = as_f32_to_bf16(buf[i]);
        else if (dt == AS_F16)
            for (int64_t i = 0; i < k; i++) ((uint16_t *)dx)[base + i0 + i] = as_f32_to_f16(buf[i]);
        else
            for (int64_t i = 0; i < k; i++) ((float *)dx)[base + i0 + i] = buf[i];
    }
}
AS_VECTOR_VARIANTS(xent_bwd_row, (const void *x, as_dtype dt, int64_t t, float l, float gr, void *dx, int64_t base,
                                  int64_t n), (x, dt, t, l, gr, dx, base, n))

void as_cpu_xent_bwd_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, const float *lse,
                          const float *g, void *dx, int64_t rows, int64_t n)
{
    xent_bwd_row_fn f = xent_bwd_row_pick();
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++)
        f(x, dt, target[r] == ignore ? -1 : target[r], lse[r], g[r], dx, r * n, n);
}
