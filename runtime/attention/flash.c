/* flash_attention: exact softmax(q k^T * scale + bias) v through the fused
 * tiled kernel (Dao et al. 2022), never materialising the Lq x Lk scores.
 * Same contract as as_sdp_attention; this file checks the arguments, reads
 * strides and broadcast masks as they come (no copies) into the kernels'
 * parameter block (kernels/common/as_attention.h) and hands it to the
 * device's kernel (kernels/cpu/attention_flash.c, kernels/cuda/). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attnswap/attention.h"
#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "attnswap/nn.h"
#include "dispatch.h"
#include "attnswap/ops.h"
#include "prepare.h"

#define FN "flash_attention"

static _Thread_local const char *last_backend = "none", *last_bwd_backend = "none";

const char *as_flash_backend(void) { return last_backend; }

const char *as_flash_backward_backend(void) { return last_bwd_backend; }

void as_attention_note_backend(const char *name) { last_backend = name; }

bool as_flash_has_backward(as_device dev) { return as_k_has_flash_bwd(dev); }

/* Slots of the node's saved tensors; ints: seed, causal, whether a mask. */
enum { SV_Q, SV_K, SV_V, SV_MASK, SV_OUT, SV_LSE };

static int flash_bwd_run(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                         const as_tensor *mask, const as_tensor *out, const as_tensor *lse, const as_tensor *g,
                         bool causal, float scale, float dropout, uint64_t seed, const bool *want, bool kv_own_dtype,
                         as_tensor **gi);

/* dq, dk, dv (and the additive mask's gradient, dS itself) from the fused
 * backward (kernels/cpu/attention_flash_bwd.c, kernels/cuda): float32, but
 * dk and dv in k's float16/bfloat16 on CUDA, where the kernel rounds them as
 * it writes; the engine casts the rest to the inputs' dtypes and sums the
 * mask's over its broadcast dims. */
static int flash_backward(as_node *node, const as_tensor *g, as_tensor **gi)
{
    const as_tensor *sv[6] = {NULL};
    bool has_mask = as_node_ints(node)[2] != 0;
    for (int i = 0; i < 6; i++) {
        if (i == SV_MASK && !has_mask) continue;
        if (!(sv[i] = as_node_saved(node, i))) return -1; /* freed, or changed in place */
    }
    bool want[4];
    for (int i = 0; i < 4; i++) want[i] = as_node_needs(node, i);
    const int64_t *ints = as_node_ints(node);
    const double *sc = as_node_scalars(node);
    return flash_bwd_run(FN, sv[SV_Q], sv[SV_K], sv[SV_V], sv[SV_MASK], sv[SV_OUT], sv[SV_LSE], g, ints[1] != 0,
                         (float)sc[0], (float)sc[1], (uint64_t)ints[0], want, true, gi);
}

/* The fused backward on given tensors: gi[i] (a new reference, float32, but
 * with kv_own_dtype dk and dv in k's dtype where the device writes it) for
 * each input i with want[i] (mask: its additive form's gradient). */
static int flash_bwd_run(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                         const as_tensor *mask, const as_tensor *out, const as_tensor *lse, const as_tensor *g,
                         bool causal, float scale, float dropout, uint64_t seed, const bool *want, bool kv_own_dtype,
                         as_tensor **gi)
{
    as_device dev = as_tensor_device(q);
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3];
    as_tensor *gf = NULL, *di = NULL, *turns = NULL, *t[4] = {NULL, NULL, NULL, NULL};
    int rc = -1;
    if (g->dtype != AS_F32 && g->dtype != AS_F16 && g->dtype != AS_BF16) {
        if (!(gf = as_to_dtype(g, AS_F32))) return -1;
        g = gf;
    }
    bool want_bias = mask && mask->dtype != AS_BOOL && want[3];
    t[0] = as_empty(4, (int64_t[]){B, H, Lq, D}, AS_F32, dev);
    const as_dtype kvt = kv_own_dtype && dev.type == AS_DEV_CUDA && k->dtype == v->dtype &&
                                 (k->dtype == AS_F16 || k->dtype == AS_BF16) ? k->dtype : AS_F32;
    t[1] = as_empty(4, (int64_t[]){B, Hkv, Lk, D}, kvt, dev);
    t[2] = as_empty(4, (int64_t[]){B, Hkv, Lk, Dv}, kvt, dev);
    if (want_bias) t[3] = as_empty(4, (int64_t[]){B, H, Lq, Lk}, AS_F32, dev);
    di = as_empty(3, (int64_t[]){B, H, Lq}, AS_F32, dev);
    /* the CUDA kernels' turn counters, where the user asked for repeatable sums */
    const bool ordered = dev.type == AS_DEV_CUDA && as_get_deterministic();
    if (ordered) turns = as_empty(1, (int64_t[]){AS_ATTN_BWD_TURNS(B, H, Lq)}, AS_I32, dev);
    if (!t[0] || !t[1] || !t[2] || (want_bias && !t[3]) || !di || (ordered && !turns)) goto done;
    as_attn_bwd_params bp = {
        .f = {.B = B, .H = H, .Hkv = Hkv, .Lq = Lq, .Lk = Lk, .D = D, .Dv = Dv,
              .q = as_attention_operand(q), .k = as_attention_operand(k),
              .v = as_attention_operand(v), .causal = causal,
              .scale = scale, .dropout = dropout,
              .seed = seed, .out = as_data(out), .out_dtype = out->dtype,
              .out_stride = {out->stride[0], out->stride[1], out->stride[2]}, .lse = as_data(lse)},
        .dout = as_attention_operand(g),
        .dq = as_data(t[0]), .dk = as_data(t[1]), .dv = as_data(t[2]), .dkv_dtype = kvt,
        .dbias = t[3] ? as_data(t[3]) : NULL,
        .di = as_data(di),
        .dq_turns = turns ? as_data(turns) : NULL,
    };
    if (mask) bp.f.mask = as_attention_operand(mask);
    if (as_k_flash_bwd(fn, dev, &bp, &last_bwd_backend)) goto done;
    for (int i = 0; i < 4; i++)
        if (want[i]) gi[i] = t[i], t[i] = NULL;
    rc = 0;
done:
    for (int i = 0; i < 4; i++) as_release(t[i]);
    as_release(gf), as_release(di), as_release(turns);
    return rc;
}

/* The output, (B, H, Lq, Dv).  On a GPU it is written as (B, Lq, H, Dv) and
 * returned as that tensor's (B, H, Lq, Dv) view, as PyTorch's SDPA does: a
 * model's head merge (permute + reshape to (B, Lq, H Dv)) is then a view, not
 * a copy.  The CPU's kernels write dense (B, H, Lq, Dv). */
static as_tensor *flash_out(int64_t B, int64_t H, int64_t Lq, int64_t Dv, as_dtype dt, as_device dev)
{
    if (dev.type == AS_DEV_CPU) return as_empty(4, (int64_t[]){B, H, Lq, Dv}, dt, dev);
    as_tensor *blhd = as_empty(4, (int64_t[]){B, Lq, H, Dv}, dt, dev);
    as_tensor *out = blhd ? as_transpose(blhd, 1, 2) : NULL;
    as_release(blhd);
    return out;
}

/* The forward; lse_out non-NULL: the row log-sum-exps come back there and
 * nothing is recorded (as_flash_attention_lse). */
static as_tensor *flash_forward(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask,
                                const as_attention_opts *opts, bool training, as_tensor **lse_out)
{
    const char *fn = lse_out ? FN "_lse" : FN;
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (as_attention_check(fn, q, k, v, mask, &o)) return NULL;
    as_device dev = as_tensor_device(q);
    if (dev.type == AS_DEV_CPU && as_attention_check_cpu_kernel(fn, q, k, v, mask)) return NULL;
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Dv = v->shape[3];
    if (k->shape[2] > INT32_MAX - 1) {
        as_error_set("%s: sizes past 2^31 are more than this kernel indexes", fn);
        return NULL;
    }
    const as_tensor *in[4] = {q, k, v, mask};
    /* with a fused backward on this device the forward keeps its row
     * statistics for it; without one, the node is an error (as_autograd_guard) */
    bool fused_bwd = !lse_out && as_autograd_needed(4, in) && as_k_has_flash_bwd(dev);
    as_tensor *out = flash_out(B, H, Lq, Dv, q->dtype, dev), *lse = NULL;
    if (!out) return NULL;
    if ((fused_bwd || lse_out) && !(lse = as_empty(3, (int64_t[]){B, H, Lq}, AS_F32, dev))) {
        as_release(out);
        return NULL;
    }
    as_attn_params p = {
        .B = B, .H = H, .Hkv = k->shape[1], .Lq = Lq, .Lk = k->shape[2], .D = D, .Dv = Dv,
        .q = as_attention_operand(q), .k = as_attention_operand(k), .v = as_attention_operand(v),
        .causal = o.causal,
        .scale = (float)as_attention_scale(o.scale, D),
        .out = as_data(out), .out_dtype = out->dtype,
        .out_stride = {out->stride[0], out->stride[1], out->stride[2]},
        .lse = lse ? as_data(lse) : NULL,
    };
    if (mask) p.mask = as_attention_operand(mask);
    if (training && o.dropout > 0) p.dropout = (float)o.dropout;
    if ((p.dropout > 0 && as_attention_dropout_seed(&p.seed)) || as_k_flash(fn, dev, &p, &last_backend)) {
        as_release(out), as_release(lse);
        return NULL;
    }
    if (lse_out) {
        *lse_out = lse;
        return as_autograd_guard(fn, out, 4, in);
    }
    if (!fused_bwd) {
        as_release(lse);
        return as_autograd_guard(FN, out, 4, in);
    }
    as_grad_scope s = as_grad_begin(4, in);
    as_node *n = as_grad_end(s, FN, flash_backward, &out, 4, in);
    if (n) {
        as_node_scalars(n)[0] = p.scale;
        as_node_scalars(n)[1] = p.dropout;
        as_node_ints(n)[0] = (int64_t)p.seed;
        as_node_ints(n)[1] = p.causal;
        as_node_ints(n)[2] = mask != NULL;
        const as_tensor *keep[6] = {q, k, v, mask, out, lse};
        for (int i = 0; i < 6; i++)
            if (keep[i] && as_node_save(n, i, keep[i])) { /* out of memory: out (and n) go */
                as_release(out), out = NULL;
                break;
            }
    }
    as_release(lse);
    return out;
}

as_tensor *as_flash_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                              const as_tensor *mask, const as_attention_opts *opts, bool training)
{
    return flash_forward(q, k, v, mask, opts, training, NULL);
}

as_tensor *as_flash_attention_lse(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask,
                                  const as_attention_opts *opts, as_tensor **lse)
{
    *lse = NULL;
    as_tensor *out = flash_forward(q, k, v, mask, opts, false, lse);
    if (!out) { /* the guard failed after the kernel: lse was handed over */
        as_release(*lse);
        *lse = NULL;
    }
    return out;
}

int as_flash_attention_backward(const as_tensor *dout, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                const as_tensor *mask, const as_tensor *out, const as_tensor *lse,
                                const as_attention_opts *opts, as_tensor **dq, as_tensor **dk, as_tensor **dv)
{
    const char *fn = FN "_backward";
    *dq = *dk = *dv = NULL;
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (as_attention_check(fn, q, k, v, mask, &o)) return -1;
    as_device dev = as_tensor_device(q);
    if (dev.type == AS_DEV_CPU && as_attention_check_cpu_kernel(fn, q, k, v, mask)) return -1;
    if (!as_k_has_flash_bwd(dev)) {
        as_error_set("%s: no fused backward on %s", fn, as_device_name(dev));
        return -1;
    }
    int64_t want_o[4] = {q->shape[0], q->shape[1], q->shape[2], v->shape[3]};
    const as_tensor *chk[3] = {out, lse, dout};
    const char *names[3] = {"out", "lse", "dout"};
    for (int i = 0; i < 3; i++) {
        const as_tensor *t = chk[i];
        int nd = i == 1 ? 3 : 4;
        bool ok = t && t->ndim == nd && memcmp(t->shape, want_o, sizeof(int64_t) * (size_t)nd) == 0 &&
                  as_device_equal(as_tensor_device(t), dev) && (i != 1 || t->dtype == AS_F32) &&
                  (i == 1 || t->dtype == AS_F32 || t->dtype == AS_F16 || t->dtype == AS_BF16);
        if (!ok) {
            char s1[128], s2[128];
            as_error_set("%s: %s must be %s %s on q's device, got %s %s", fn, names[i], i == 1 ? "float32" : "float",
                         as_shape_str(s1, sizeof s1, nd, want_o), t ? as_dtype_name(t->dtype) : "nothing",
                         t ? as_shape_str(s2, sizeof s2, t->ndim, t->shape) : "");
            return -1;
        }
    }
    /* the kernel reads out and lse as dense arrays */
    as_tensor *oc = as_contiguous(out), *lc = oc ? as_contiguous(lse) : NULL;
    as_tensor *gi[4] = {NULL, NULL, NULL, NULL};
    bool want[4] = {true, true, true, false};
    bool prev = as_set_grad_enabled(false);
    int rc = lc ? flash_bwd_run(fn, q, k, v, mask, oc, lc, dout, o.causal, (float)as_attention_scale(o.scale, q->shape[3]),
                                0.0f, 0, want, false, gi)
                : -1;
    as_set_grad_enabled(prev);
    as_release(oc), as_release(lc);
    if (rc) return -1;
    *dq = gi[0], *dk = gi[1], *dv = gi[2];
    return 0;
}
