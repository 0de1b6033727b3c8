/* dynamic_attention: per-query top-k sparse attention (Zhao et al. 2019,
 * "Explicit Sparse Transformer: Concentrated Attention Through Explicit
 * Selection", eq. 4-6; Gupta et al. 2021, "Memory-efficient Transformers via
 * Top-k Attention").  Each query keeps its top_k largest scores (ties to the
 * lower key index; masked keys never), softmax over those, the rest get 0.
 * Choosing needs every score of a row: cost O(Lq Lk D) for the scores plus
 * O(Lq top_k Dv) for the output, memory O(BQ Lk) per thread
 * (kernels/cpu/zoo_sparse_topk.c). */
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attnswap/error.h"
#include "attnswap/attention_sparse.h"
#include "prepare.h"

#define FN "dynamic_attention"

bool as_topk_keep_takes(const as_tensor *s)
{
    return s && s->dtype == AS_F32 && as_device_equal(as_tensor_device(s), AS_CPU) && s->ndim >= 1;
}

as_tensor *as_topk_keep(const as_tensor *s, int64_t top_k)
{
    const char *fn = "topk_keep";
    if (!as_topk_keep_takes(s)) {
        as_error_set("%s: expected a float32 CPU tensor of at least one dim", fn);
        return NULL;
    }
    if (top_k < 0) {
        as_error_set("%s: top_k must be >= 0, got %lld", fn, (long long)top_k);
        return NULL;
    }
    const int64_t n = s->shape[s->ndim - 1], rows = n > 0 ? as_numel(s) / n : 0;
    as_tensor *c = as_contiguous(s);
    as_tensor *keep = c ? as_empty(s->ndim, s->shape, AS_BOOL, AS_CPU) : NULL;
    if (keep && rows > 0 && as_cpu_topk_keep_rows(as_data(c), rows, n, top_k, as_data(keep))) {
        as_error_set("%s: out of memory", fn);
        as_release(keep);
        keep = NULL;
    }
    as_release(c);
    return keep;
}

as_tensor *as_dynamic_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                const as_tensor *mask, const as_attention_opts *o, int64_t top_k,
                                bool training)
{
    if (top_k < 1) {
        as_error_set(FN ": top_k must be a positive integer, got %lld", (long long)top_k);
        return NULL;
    }
    as_attn_inputs in;
    if (as_attention_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    as_tensor *out = as_zeros(4, (int64_t[]){in.p.B, in.p.H, in.p.Lq, in.p.Dv}, AS_F32, AS_CPU);
    if (!out) goto done;
    in.p.out = as_data(out);
    if (as_numel(out) > 0) {
#ifdef _OPENMP
        int nt = omp_get_max_threads();
#else
        int nt = 1;
#endif
        size_t bytes = as_cpu_topk_workspace_size(&in.p, nt);
        void *ws = malloc(bytes);
        if (!ws) {
            as_release(out);
            out = NULL;
            as_error_set(FN ": out of memory (%zu bytes of scratch)", bytes);
            goto done;
        }
        as_cpu_topk_attention(&in.p, top_k > in.p.Lk ? in.p.Lk : top_k, ws, nt);
        free(ws);
    }
    out = as_attention_finish(&in, out);
done:
    as_attention_inputs_release(&in);
    return out;
}
