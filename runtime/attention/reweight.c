/* What every reweight front-end shares (their inputs prepared by
 * prepare.c): a parameter's check and the row driver
 * (kernels/cpu/zoo_reweight_rows.c). */
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attnswap/error.h"
#include "prepare.h"


int as_rw_check_param(const char *fn, const char *what, const as_tensor *t, int ndim,
                      const int64_t *shape)
{
    char s1[128], s2[128];
    if (!t) {
        as_error_set("%s: %s must be a Tensor, got nil", fn, what);
        return -1;
    }
    bool ok = t->ndim == ndim && as_dtype_is_float(t->dtype) && as_tensor_device(t).type == AS_DEV_CPU;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        as_error_set("%s: %s must be a float cpu tensor of shape %s, got %s %s", fn, what,
                     as_shape_str(s1, sizeof s1, ndim, shape), as_dtype_name(t->dtype),
                     as_shape_str(s2, sizeof s2, t->ndim, t->shape));
        return -1;
    }
    return 0;
}

as_tensor *as_rw_run(const char *fn, as_attn_inputs *in, const as_cpu_rw_mech *mech)
{
    as_cpu_rw_params p = {.a = in->p, .mech = *mech};
    as_tensor *out = as_empty(4, (int64_t[]){p.a.B, p.a.H, p.a.Lq, p.a.Dv}, AS_F32, AS_CPU);
    if (!out) return NULL;
    p.a.out = as_data(out);
    if (as_numel(out) > 0) {
        int nthreads = 1;
#ifdef _OPENMP
        nthreads = omp_get_max_threads();
#endif
        size_t bytes = as_cpu_rw_workspace_size(&p, nthreads);
        void *ws = malloc(bytes);
        if (!ws) {
            as_release(out);
            as_error_set("%s: out of memory (%zu bytes of scratch)", fn, bytes);
            return NULL;
        }
        as_cpu_rw_attention(&p, ws, nthreads);
        free(ws);
    }
    return as_attention_finish(in, out);
}
