/* as_set_float32_matmul_precision: torch.set_float32_matmul_precision's
 * switch, for the float32 products on CUDA.  "highest" keeps every one an
 * IEEE SGEMM; "high", the default, lets a large one run in 3xTF32 on a card
 * with TF32 tensor cores (runtime/cuda/gemm.c), which keeps float32's
 * accuracy to a few units in the last place (PyTorch's "high" is a single
 * TF32 product, 10 bits of mantissa; there is no such mode here).  The CPU's
 * products are SGEMMs either way. */
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "attnswap/ops.h"

static const char *g_precision; /* NULL: not read from the environment yet */

int as_set_float32_matmul_precision(const char *p)
{
    if (!p || (strcmp(p, "highest") && strcmp(p, "high"))) {
        as_error_set("set_float32_matmul_precision: expected \"highest\" or \"high\", got %s%s%s",
                     p ? "\"" : "", p ? p : "nothing", p ? "\"" : "");
        return -1;
    }
    g_precision = !strcmp(p, "highest") ? "highest" : "high";
    return 0;
}

const char *as_get_float32_matmul_precision(void)
{
    if (!g_precision) {
        const char *e = getenv("ATTNSWAP_F32_MATMUL");
        g_precision = e && !strcmp(e, "highest") ? "highest" : "high";
    }
    return g_precision;
}
