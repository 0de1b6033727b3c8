/* relative_attention: softmax(q k^T * scale + b_h(j - i) + mask) v with a T5
 * bucket bias (Raffel et al. 2020) or ALiBi's fixed slopes (Press et al.
 * 2022).  The bias is tabled per head over the Lq + Lk - 1 relative
 * positions of the inputs (i counted from the bottom-right, i' = i + Lk - Lq,
 * so a query after a KV cache keeps its position); the kernel adds it
 * before the softmax (kernels/cpu/zoo_reweight_relative.c). */
#include <math.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/attention_reweight.h"
#include "prepare.h"

#define FN "relative_attention"

static int check_opts(const as_relative_opts *r)
{
    if (r->alibi) return 0;
    int64_t min_buckets = r->bidirectional ? 4 : 2;
    if (r->num_buckets < min_buckets || r->num_buckets > (1 << 20)) {
        as_error_set(FN ": num_buckets must be an integer in [%lld, 2^20]%s, got %lld",
                     (long long)min_buckets, r->bidirectional ? " when bidirectional" : "",
                     (long long)r->num_buckets);
        return -1;
    }
    int64_t max_exact = (r->bidirectional ? r->num_buckets / 2 : r->num_buckets) / 2;
    if (r->max_distance <= max_exact) {
        as_error_set(FN ": max_distance must be more than the %lld exact buckets, got %lld",
                     (long long)max_exact, (long long)r->max_distance);
        return -1;
    }
    return 0;
}

as_tensor *as_relative_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                 const as_tensor *mask, const as_attention_opts *o,
                                 const as_relative_opts *r, const as_tensor *bias, bool training)
{
    if (check_opts(r)) return NULL;
    as_attn_inputs in;
    if (as_attention_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    in.param[0] = bias;
    int64_t H = in.p.H, Lq = in.p.Lq, Lk = in.p.Lk;
    as_tensor *b32 = NULL, *out = NULL;
    float *table = NULL;
    if (!r->alibi) {
        if (bias && bias->ndim == 2 && bias->shape[0] == r->num_buckets && bias->shape[1] != H) {
            as_error_set(FN ": the bias was made for %lld heads (num_heads) but q has %lld; "
                         "build the core with num_heads = %lld",
                         (long long)bias->shape[1], (long long)H, (long long)H);
            goto done;
        }
        if (as_rw_check_param(FN, "relative_attention_bias", bias, 2, (int64_t[]){r->num_buckets, H}) ||
            !(b32 = as_ops_f32_contiguous(bias)))
            goto done;
    }
    int64_t width = Lq + Lk - 1 > 0 ? Lq + Lk - 1 : 1;
    table = malloc((size_t)(H * width + 1) * sizeof *table);
    float *slopes = malloc((size_t)(H + 1) * sizeof *slopes);
    if (!table || !slopes) {
        free(slopes);
        as_error_set(FN ": out of memory");
        goto done;
    }
    if (r->alibi) as_cpu_alibi_slopes(H, slopes);
    const float *bw = b32 ? as_data(b32) : NULL;
    for (int64_t t = 0; t < width; t++) {
        int64_t rel = t - (Lk - 1); /* j - i' */
        if (r->alibi) {
            for (int64_t h = 0; h < H; h++) table[h * width + t] = -slopes[h] * (float)llabs(rel);
        } else {
            int64_t bucket = as_cpu_t5_bucket(rel, r->bidirectional, r->num_buckets, r->max_distance);
            for (int64_t h = 0; h < H; h++) table[h * width + t] = bw[bucket * H + h];
        }
    }
    free(slopes);
    as_cpu_rw_relative_ctx ctx = {.table = table};
    as_cpu_rw_mech mech = as_cpu_rw_relative_mech;
    mech.ctx = &ctx;
    out = as_rw_run(FN, &in, &mech);
done:
    free(table);
    as_release(b32);
    as_attention_inputs_release(&in);
    return out;
}
