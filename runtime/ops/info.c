/* as_runtime_info (attnswap/info.h): what this process runs on, gathered
 * from the layers that decide it. */
#include "attnswap/info.h"

#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "attention_flash.h"
#include "attnswap/cuda.h"
#include "attnswap/ops.h"
#include "blas_core.h"
#include "cpu_kernels.h"

/* CPUID leaves 0x80000002-4 hold the brand string, 48 bytes. */
static const char *cpu_brand(void)
{
    static char brand[49];
#if defined(__x86_64__) || defined(__i386__)
    unsigned r[12] = {0};
    if (!brand[0] && __get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002u + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
        memcpy(brand, r, 48);
        brand[48] = '\0';
    }
#endif
    const char *b = brand;
    while (*b == ' ') b++;
    return b;
}

void as_runtime_info_get(as_runtime_info *out)
{
    as_blas_core_info b;
    as_blas_core_get(&b);
    out->cpu = cpu_brand();
    out->cpu_features = as_cpu_feature_names(as_cpu_blas_features());
    out->blas = b.config;
    out->blas_core = b.core;
    out->blas_core_by = b.by;
    out->blas_core_openblas = b.openblas;
    out->blas_note = b.note;
    out->threads = as_get_num_threads();
    out->attention_isa = as_cpu_flash_isa_name();
    out->cpu_gemm = as_cpu_sgemm_own_name();
    out->cuda_built = as_cuda_built();
    out->cuda_devices = as_cuda_device_count();
    out->deterministic = as_get_deterministic();
    out->f32_matmul = as_get_float32_matmul_precision();
}

int as_runtime_info_describe(char *buf, size_t size)
{
    as_runtime_info i;
    as_runtime_info_get(&i);
    char core[256];
    if (!strcmp(i.blas_core_by, "attnswap"))
        snprintf(core, sizeof core, "%s (chosen by attnswap from the CPU's features; OpenBLAS alone: %s)",
                 i.blas_core, i.blas_core_openblas);
    else if (!strcmp(i.blas_core_by, "OPENBLAS_CORETYPE"))
        snprintf(core, sizeof core, "%s (OPENBLAS_CORETYPE)", i.blas_core);
    else
        snprintf(core, sizeof core, "%s (OpenBLAS's own choice%s%s)", i.blas_core, *i.blas_note ? "; " : "",
                 i.blas_note);
    char cuda[64];
    if (!i.cuda_built) snprintf(cuda, sizeof cuda, "not built");
    else snprintf(cuda, sizeof cuda, "%d device%s", i.cuda_devices, i.cuda_devices == 1 ? "" : "s");
    return snprintf(buf, size,
                    "cpu:           %s (%s)\n"
                    "blas:          %s\n"
                    "blas core:     %s\n"
                    "threads:       %d (OpenMP; OpenBLAS one thread inside)\n"
                    "attention isa: %s (CPU flash kernels, maps and row kernels)\n"
                    "cpu gemm:      %s%s\n"
                    "cuda:          %s\n"
                    "deterministic: %s\n"
                    "f32 matmul:    %s (%s)\n",
                    *i.cpu ? i.cpu : "unknown", i.cpu_features, i.blas, core, i.threads, i.attention_isa, i.cpu_gemm,
                    strcmp(i.cpu_gemm, "OpenBLAS") ? " (float32 products of 48 rows and up; OpenBLAS the rest)" : "", cuda,
                    i.deterministic ? "on" : "off", i.f32_matmul,
                    !strcmp(i.f32_matmul, "high") ? "large CUDA products in 3xTF32" : "SGEMM everywhere");
}
