/* Fused exact attention forward on CUDA: FlashAttention-2 (Dao 2023).
 * Takes the parameter block the CPU kernel takes (kernels/common/as_attention.h),
 * with every pointer in it a device pointer, and gives the same results:
 * masks, causal alignment (key j visible to query i iff j <= i + Lk - Lq),
 * GQA, dropout with the same keep hash, rows that see nothing give zeros.
 * See docs/cuda_flash.md for the design. */
#ifndef AS_CUDA_ATTENTION_FLASH_H
#define AS_CUDA_ATTENTION_FLASH_H

#ifdef __cplusplus
extern "C" {
#endif

#include "as_attention.h"

/* 0 on success, else a cudaError_t value; launches on `stream` (a
 * cudaStream_t passed as void*), no sync.  Trusts the caller for shapes and
 * dtypes as the CPU kernel does (H a multiple of Hkv, out_dtype = q's). */
int as_cuda_flash_attention(const as_attn_params *p, void *stream);

/* Which path it would take: "flash/mma" (tensor cores: q, k, v all F16 or
 * all BF16, D = Dv in {64, 128}, unit last stride, 16-byte aligned rows,
 * Lq, Lk <= 2^30); on a compute capability 9.0 device with the sm_90a
 * kernels built, for no mask, bias or dropout and rows long enough (see
 * use_wgmma), "flash/wgmma-ws-persist" or "flash/wgmma-ws" (TMA, a producer
 * warpgroup, on one CTA an SM or one a tile) or, where TMA refuses the strides
 * and the rows are long enough for it, "flash/wgmma"; "flash/tf32x3" or "flash/simt-f32" (float32 q, k, v, D = Dv in
 * {64, 128}, unit last strides) or "flash/cuda-f32" (everything else: one
 * warp a query row). */
const char *as_cuda_flash_path(const as_attn_params *p);

/* The backward (FlashAttention-2, Algorithm 2) of a forward that wrote
 * p->f.lse: dq, dk, dv (and dbias) as as_attn_bwd_params says, with p->di
 * as scratch.  0 on success, else a cudaError_t value; launches on `stream`,
 * no sync. */
int as_cuda_flash_attention_backward(const as_attn_bwd_params *p, void *stream);

/* Which path it takes: "flash-bwd/wgmma" (a compute capability 9.0 device,
 * the sm_90a kernels built: plain attention, no mask, bias or dropout, a
 * positive scale, D = Dv in {64, 128}, operands TMA accepts), "flash-bwd/mma"
 * (tensor cores: q, k, v, out and dO all F16 or all BF16, D = Dv in
 * {64, 128}, unit last strides, 16-byte aligned rows) or "flash-bwd/cuda-f32"
 * (everything else). */
const char *as_cuda_flash_bwd_path(const as_attn_bwd_params *p);

/* Tests and benchmarks: -1 never takes flash-bwd/wgmma (the mma path on a
 * Hopper card; ATTNSWAP_FLASH_BWD=mma in the environment does the same),
 * 0 the automatic choice.  Returns 1 when the device can run the wgmma
 * backward, 0 when not, -1 for any other mode. */
int as_cuda_flash_force_bwd(int mode);

/* Tests and benchmarks: query rows per CTA on the mma path, 64 or 128;
 * 0 goes back to the automatic choice.  Returns -1 for any other value. */
int as_cuda_flash_force_block_m(int block_m);

/* Tests and benchmarks: 1 takes the wgmma kernel whenever it can, 2 its
 * warp-specialised variant ("flash/wgmma-ws": TMA loads by a producer
 * warpgroup) whenever it can, 3 that one on the persistent grid
 * ("flash/wgmma-ws-persist"), 4 that with the overlap across tiles
 * ("flash/wgmma-xt"), -1 never, 0 the automatic choice.  Returns 1
 * when the current device can run them, 0 when not, -1 for any other mode. */
int as_cuda_flash_force_wgmma(int mode);

/* Tests and benchmarks: float32 on the CUDA cores (flash/simt-f32) when 1,
 * on the tensor cores (flash/tf32x3) where the card and the operands allow
 * when 0, the default or the environment's choice (ATTNSWAP_FLASH_F32=tf32x3
 * or simt) when -1.
 * Returns 1 when the current device can run flash/tf32x3, 0 when not, -1
 * for any other mode. */
int as_cuda_flash_force_f32_simt(int mode);

#ifdef __cplusplus
}
#endif

#endif
