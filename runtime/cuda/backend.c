/* CUDA's backend table (runtime/base/backend.h): kernels/cuda, cuBLAS and
 * the caching allocator behind the runtime's one door.  as_init registers
 * it; a build without CUDA registers a table that only says so. */
#include "cuda_backend.h"

#include "attnswap/cuda.h"

#ifndef ATTNSWAP_HAVE_CUDA

static const as_backend cuda_backend = {.name = "cuda", .use = as_cuda_use};

#else

#include "attention_flash_cuda.h"
#include "cuda_kernels.h"
#include "optim_cuda.h"

static int cuda_flash(const char *fn, const as_attn_params *p)
{
    return as_cuda_check(fn, as_cuda_flash_attention(p, as_cuda_current_stream()));
}

static int cuda_flash_bwd(const char *fn, const as_attn_bwd_params *p)
{
    return as_cuda_check(fn, as_cuda_flash_attention_backward(p, as_cuda_current_stream()));
}

static int cuda_scale_list(const as_list_item *it, int n, double s) { return as_cuda_scale_list(it, n, (float)s); }

static const as_backend cuda_backend = {
    .name = "cuda",
    .use = as_cuda_use,
    .check = as_cuda_check,
    .alloc = as_cuda_alloc,
    .free = as_cuda_free,
    .copy = as_cuda_device_copy,
    .fill = as_cuda_fill,
    .binary = as_cuda_binary,
    .unary = as_cuda_unary,
    .clamp = as_cuda_clamp,
    .where = as_cuda_where,
    .reduce_rows = as_cuda_reduce_rows,
    .reduce_rows_i64 = as_cuda_reduce_rows_i64,
    .softmax_rows = as_cuda_softmax_rows,
    .softmax_bwd_rows = as_cuda_softmax_bwd_rows,
    .xent_rows = as_cuda_xent_rows,
    .xent_bwd_rows = as_cuda_xent_bwd_rows,
    .norm_bwd_rows = as_cuda_norm_bwd_rows,
    .layer_norm_rows = as_cuda_layer_norm_rows,
    .rms_norm_rows = as_cuda_rms_norm_rows,
    .norm_rows_16 = as_cuda_norm_rows_16,
    .entmax_rows = as_cuda_entmax_rows,
    .gather_rows = as_cuda_gather_rows,
    .triangle = as_cuda_triangle,
    .scatter_add_rows = as_cuda_scatter_add_rows,
    .gemm = as_cuda_gemm,
    .flash = cuda_flash,
    .flash_path = as_cuda_flash_path,
    .flash_bwd_path = as_cuda_flash_bwd_path,
    .flash_bwd = cuda_flash_bwd,
    .sgd_step = as_cuda_sgd_step,
    .adamw_step = as_cuda_adamw_step,
    .sumsq_list = as_cuda_sumsq_list,
    .scale_list = cuda_scale_list,
};

#endif

void as_cuda_backend_register(void) { as_backend_register(AS_DEV_CUDA, &cuda_backend); }
