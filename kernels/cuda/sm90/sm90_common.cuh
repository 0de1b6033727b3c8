/* What the sm_90a kernels share (attention_flash_wgmma.cu, the forward;
 * attention_flash_bwd_wgmma.cu, the backward): wgmma descriptors and fences,
 * mbarriers, named barriers, TMA loads, and on the host the TMA maps of the
 * (B, heads, L, D) operands.  Built for sm_90a only (CMakeLists.txt). */
#ifndef AS_CUDA_SM90_COMMON_CUH
#define AS_CUDA_SM90_COMMON_CUH

#include <cuda.h>
#include <cudaTypedefs.h>

#include "../attention_flash_common.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AS_WGMMA_BODY 1
#endif

namespace as_flash {

#ifdef AS_WGMMA_BODY
static __device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo)
{
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) |
           ((uint64_t)(sbo >> 4) << 32) | (1ull << 62); /* 62-63: 1 = 128-byte swizzle */
}
static __device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
/* cp.async wrote through the generic proxy; wgmma reads through the async one */
static __device__ __forceinline__ void proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
/* the registers of an async wgmma are read / written only after the wait */
template <int N>
static __device__ __forceinline__ void reg_fence(float (&r)[N])
{
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
static __device__ __forceinline__ void reg_fence(uint32_t (&r)[N][4])
{
#pragma unroll
    for (int i = 0; i < N; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) asm volatile("" : "+r"(r[i][j])::"memory");
}

/* mbarriers and the tensor memory accelerator (the warp-specialised kernel) */
static __device__ __forceinline__ void mbar_init(uint32_t bar, int count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
static __device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
/* every consumer thread arrives (count 256): one elected thread under a branch
 * or a predicate makes ptxas serialise the wgmma around it (C7513) */
static __device__ __forceinline__ void mbar_arrive(uint32_t bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/* named barriers among the 256 consumer threads (ids 1, 2; 0 is __syncthreads),
 * predicated inside the asm (no C++ branch near the wgmma) */
static __device__ __forceinline__ void named_sync_if(int id, bool on)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %1, 0;\n@p bar.sync %0, 256;\n}\n" ::"r"(id), "r"((int)on) : "memory");
}
static __device__ __forceinline__ void named_arrive_if(int id, bool on)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %1, 0;\n@p bar.arrive %0, 256;\n}\n" ::"r"(id), "r"((int)on) : "memory");
}
/* until the phase of this parity completes; the loop stays inside the asm, so
 * ptxas sees straight-line code around the wgmma that follow */
static __device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity)
{
    asm volatile("{\n.reg .pred P1;\nLAB_WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
                 "@P1 bra DONE;\nbra LAB_WAIT;\nDONE:\n}\n" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}
static __device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap *map, int c0, int c1, int c2, int c3,
                                         uint32_t bar)
{
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
                 : "memory");
}

/* dst[box at c0..c3] += the smem tile src (float32 add), by TMA; its reads of
 * src complete by bulk_wait_read, its writes by bulk_wait */
static __device__ __forceinline__ void tma_reduce_add(const CUtensorMap *map, uint32_t src, int c0, int c1, int c2,
                                               int c3)
{
    asm volatile("cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group"
                 " [%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(reinterpret_cast<uint64_t>(map)),
                 "r"(src), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
                 : "memory");
}
static __device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
static __device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
static __device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

#endif /* AS_WGMMA_BODY */

/* (B, heads, L, D) with element strides s0, s1, s2, 1 as a TMA map of 64-column
 * boxes of `rows` rows, 128-byte swizzle; false when the driver will not (a
 * broadcast stride, a layout it rejects): the caller takes another kernel */
bool make_map(CUtensorMap *m, const as_attn_operand &o, int64_t B, int64_t heads, int64_t L, int D, int rows,
              bool f16);
/* a contiguous float32 (B, heads, L, D) as a TMA map of 32-column boxes of `rows` rows
 * (128 bytes, 128-byte swizzle): the backward's dQ, reduced into */
bool make_f32_map(CUtensorMap *m, float *data, int64_t B, int64_t heads, int64_t L, int D, int rows);

} // namespace as_flash

#endif
