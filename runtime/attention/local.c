/* local_attention and sink_attention: exact softmax over a band of keys.
 *
 * local_attention (Beltagy et al. 2020, "Longformer", section 3.1: sliding
 * window; lucidrains' local-attention): query i sees keys i' - w .. i' + w
 * (i' - w .. i' when causal), cost O(L w D).
 *
 * sink_attention (Xiao et al. 2023, "Efficient Streaming Language Models
 * with Attention Sinks", section 3.2): query i sees the first num_sinks keys
 * and the window most recent ones, i' - window < j <= i'; always causal.
 *
 * Both run the tile driver (kernels/cpu/zoo_sparse_tiles.c) over the band
 * (and the sink tiles): keys outside are never visited. */
#include <math.h>

#include "attnswap/error.h"
#include "attnswap/attention_sparse.h"
#include "prepare.h"

as_tensor *as_local_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                              const as_tensor *mask, const as_attention_opts *o, int64_t window,
                              bool training)
{
    const char *fn = "local_attention";
    if (window < 0) {
        as_error_set("%s: window_size must be a non-negative integer, got %lld", fn, (long long)window);
        return NULL;
    }
    as_attn_inputs in;
    if (as_attention_prepare(fn, q, k, v, mask, o, training, &in)) return NULL;
    /* a window past every key is the whole row: clamp so i' +- w cannot overflow */
    int64_t w = window > in.p.Lk + in.p.Lq ? in.p.Lk + in.p.Lq : window;
    as_cpu_sp_band band = {.lo = -w, .hi = in.p.causal ? 0 : w, .sinks = 0};
    as_tensor *r = as_sp_run_tiles(fn, &in, NULL, &band);
    as_attention_inputs_release(&in);
    return r;
}

as_tensor *as_sink_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                             const as_tensor *mask, const as_attention_opts *o, int64_t window,
                             int64_t num_sinks, bool training)
{
    const char *fn = "sink_attention";
    if (window < 1) {
        as_error_set("%s: window_size must be a positive integer, got %lld", fn, (long long)window);
        return NULL;
    }
    if (num_sinks < 0) {
        as_error_set("%s: num_sinks must be a non-negative integer, got %lld", fn, (long long)num_sinks);
        return NULL;
    }
    as_attention_opts oc = o ? *o : (as_attention_opts){.scale = NAN};
    oc.causal = true; /* StreamingLLM is causal by construction */
    as_attn_inputs in;
    if (as_attention_prepare(fn, q, k, v, mask, &oc, training, &in)) return NULL;
    int64_t lim = in.p.Lk + in.p.Lq;
    int64_t w = window > lim ? lim : window, s = num_sinks > lim ? lim : num_sinks;
    as_cpu_sp_band band = {.lo = -(w - 1), .hi = 0, .sinks = s};
    as_tensor *r = as_sp_run_tiles(fn, &in, NULL, &band);
    as_attention_inputs_release(&in);
    return r;
}
