/* What this build and process run on, for reports: as.config() and
 * `attnswap-run --version`.  The strings are static, valid for the life of
 * the process; call after as_init (which settles the BLAS core). */
#ifndef AS_INFO_H
#define AS_INFO_H

#include <stddef.h>

typedef struct {
    const char *cpu;                /* the CPU's brand string, "" when unknown */
    const char *cpu_features;       /* those that choose kernels: "avx2 fma avx512 avx512_bf16" */
    const char *blas;               /* openblas_get_config(): version and build options */
    const char *blas_core;          /* openblas_get_corename(): the kernels sgemm runs */
    const char *blas_core_by;       /* "attnswap", "OPENBLAS_CORETYPE" or "OpenBLAS" */
    const char *blas_core_openblas; /* OpenBLAS's own choice when it loaded */
    const char *blas_note;          /* why attnswap kept OpenBLAS's choice, or "" */
    int threads;                    /* as_get_num_threads() */
    const char *attention_isa;      /* the CPU flash kernel's path: avx512, avx2, scalar */
    const char *cpu_gemm;           /* large float32 products: "attnswap-avx512" or "OpenBLAS" */
    int cuda_built;                 /* 1: this build has the CUDA backend */
    int cuda_devices;               /* devices visible */
    int deterministic;              /* as_get_deterministic() */
    const char *f32_matmul;         /* as_get_float32_matmul_precision() */
} as_runtime_info;

void as_runtime_info_get(as_runtime_info *info);
/* The same as lines "name: value", into buf (always terminated); returns the
 * length it wanted, as snprintf. */
int as_runtime_info_describe(char *buf, size_t size);

#endif
