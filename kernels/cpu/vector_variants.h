/* Kernels built once per vector ISA.  Debian's gcc compiles for the x86-64
 * baseline (SSE2, four float lanes), and there the compute-bound maps and
 * row kernels (an exp, a polynomial or a division an element) ran at a
 * fraction of the machine's speed: GELU 2.2x and the sigmoid 10x slower than
 * with AVX-512's sixteen lanes (docs/performance.md, v0.16).
 *
 * AS_VECTOR_VARIANTS(name, params, args) compiles the body of name##_impl
 * (static, always inlined, void) three times: for AVX-512, for AVX2 and for
 * the baseline.  It defines name##_pick(), which returns the one for the path
 * the flash kernels run (attention_flash.c: the best the CPU has,
 * ATTNSWAP_FLASH_ISA, or as_cpu_flash_force_isa in tests), so a kernel with
 * an OpenMP loop picks once, outside the loop: the loop's outlined body would
 * be compiled for the baseline.
 *
 * -std=c11 forbids contracting a * b + c into an FMA and gcc keeps a float
 * sum's order without -ffast-math, so the variants differ in vector width
 * only; the exp they call is the flash path's (within 2 ulp of each other).
 * tests/c/test_vector_variants.c checks each against float64. */
#ifndef AS_CPU_VECTOR_VARIANTS_H
#define AS_CPU_VECTOR_VARIANTS_H

#include "attention_flash.h"

#define AS_VECTOR_IMPL static inline __attribute__((always_inline))

/* 2 for the AVX-512 path, 1 for AVX2, 0 for the portable one. */
int as_cpu_vector_level(void);

#ifdef AS_CPU_FLASH_X86
#define AS_VECTOR_VARIANTS(name, params, args)                                                           \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))) static void name##_avx512 params { \
        name##_impl args;                                                                                \
    }                                                                                                    \
    __attribute__((target("avx2,fma"))) static void name##_avx2 params { name##_impl args; }           \
    static void name##_base params { name##_impl args; }                                                 \
    typedef void(*name##_fn) params;                                                                     \
    static name##_fn name##_pick(void)                                                                   \
    {                                                                                                    \
        int level = as_cpu_vector_level();                                                               \
        return level == 2 ? name##_avx512 : level == 1 ? name##_avx2 : name##_base;                      \
    }
#else
#define AS_VECTOR_VARIANTS(name, params, args)                                                           \
    static void name##_base params { name##_impl args; }                                                 \
    typedef void(*name##_fn) params;                                                                     \
    static name##_fn name##_pick(void) { return name##_base; }
#endif

#endif
