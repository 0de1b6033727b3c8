/* Cross-entropy over rows of class logits, fused: per row r with target t,
 *   lse_r = log sum_c e^(x_rc),   loss_r = lse_r - x_rt,
 * and its backward dx_rc = g_r (e^(x_rc - lse_r) - [c = t]); a row whose
 * target is ignore_index has loss 0 and gradient 0.  x is read in its own
 * dtype (float32, float16, bfloat16): the logits of a language model
 * (8 x 1024 x 50257) are never widened to a float32 copy.  Rows in chunks
 * of CHUNK floats on the stack through the flash kernels' vector exp. */
#include <math.h>

#include "as_scalar.h"
#include "attention_flash.h"
#include "cpu_kernels.h"

#define CHUNK 2048
#define PARALLEL_ROWS(rows, n) if ((rows) * (n) >= 65536 && (rows) > 1)

int as_cpu_xent_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss, float *lse,
                     int64_t rows, int64_t n)
{
    int bad = 0;
#pragma omp parallel for PARALLEL_ROWS(rows, n) reduction(| : bad)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = target[r], base = r * n;
        if (t != ignore && (t < 0 || t >= n)) { /* the front-end checks; a kernel never reads out of bounds */
            bad = 1;
            loss[r] = lse[r] = NAN;
            continue;
        }
        float m = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            float v = as_load_f32(x, dt, base + i);
            m = v > m ? v : m;
        }
        double s = 0;
        float buf[CHUNK];
        for (int64_t i0 = 0; i0 < n && m > -INFINITY; i0 += CHUNK) {
            int64_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
            for (int64_t i = 0; i < k; i++) buf[i] = as_load_f32(x, dt, base + i0 + i) - m;
            as_cpu_flash_exp(buf, buf, k);
            for (int64_t i = 0; i < k; i++) s += buf[i];
        }
        lse[r] = m == -INFINITY || m == INFINITY ? m : m + (float)log(s);
        loss[r] = t == ignore ? 0.0f : lse[r] - as_load_f32(x, dt, base + t);
    }
    return bad ? -1 : 0;
}

void as_cpu_xent_bwd_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, const float *lse,
                          const float *g, void *dx, int64_t rows, int64_t n)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = target[r], base = r * n;
        if (t == ignore) {
            for (int64_t i = 0; i < n; i++) as_store_f32(dx, dt, base + i, 0.0f);
            continue;
        }
        const float gr = g[r], l = lse[r];
        float buf[CHUNK];
        for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
            int64_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
            for (int64_t i = 0; i < k; i++) buf[i] = as_load_f32(x, dt, base + i0 + i) - l;
            as_cpu_flash_exp(buf, buf, k);
            for (int64_t i = 0; i < k; i++) {
                float d = buf[i] * gr;
                if (i0 + i == t) d -= gr;
                as_store_f32(dx, dt, base + i0 + i, d);
            }
        }
    }
}
