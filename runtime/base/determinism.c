/* as_set_deterministic: one switch, as torch.use_deterministic_algorithms,
 * for the kernels whose float32 sums could otherwise land in a different
 * order from run to run.  Today that is the CUDA flash-attention backward's
 * dQ (float32 atomics from every key block); with the switch on, the key
 * blocks add in their index order (kernels/cuda/attention_flash_bwd.cu).
 * The CPU's kernels are deterministic either way.  docs/api.md lists what
 * the switch covers and what it does not. */
#include <stdlib.h>
#include <string.h>

#include "attnswap/ops.h"

static int g_deterministic = -1; /* -1: not read from the environment yet */

void as_set_deterministic(bool on) { g_deterministic = on ? 1 : 0; }

bool as_get_deterministic(void)
{
    if (g_deterministic < 0) {
        const char *e = getenv("ATTNSWAP_DETERMINISTIC");
        g_deterministic = e && *e && strcmp(e, "0") != 0;
    }
    return g_deterministic == 1;
}
