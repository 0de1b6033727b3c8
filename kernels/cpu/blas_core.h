/* The OpenBLAS core (kernel set) for this CPU.  Debian's OpenBLAS 0.3.21
 * picks its core from the CPU model number at load time and falls back to
 * its slowest kernels on CPUs newer than itself ("Prescott" on a Xeon of
 * 2023: a fifth of the speed).  as_blas_core_init, part of as_init, reads
 * the CPU's features instead and, when OpenBLAS chose a weaker core than
 * they allow, switches it; docs/design.md ("The BLAS core") says how and
 * why this way. */
#ifndef AS_BLAS_CORE_H
#define AS_BLAS_CORE_H

/* CPU features that decide the core (as_cpu_blas_features) */
enum {
    AS_CPUF_AVX2_FMA = 1,    /* AVX2 and FMA, with the OS saving YMM */
    AS_CPUF_AVX512 = 2,      /* AVX-512 F, BW, VL and DQ, with the OS saving ZMM */
    AS_CPUF_AVX512_BF16 = 4, /* AVX512_BF16 */
    AS_CPUF_AMD = 8          /* vendor AMD */
};
unsigned as_cpu_blas_features(void);
/* The features as words ("avx2 fma avx512 avx512_bf16"), for reports. */
const char *as_cpu_feature_names(unsigned features);

/* The best core for features among those the library has (has(name): 1 when
 * it does); NULL: leave OpenBLAS's own choice.  Pure, for tests. */
const char *as_blas_pick_core(unsigned features, int (*has)(const char *name));
/* How capable a core's kernels are: 0 SSE ... 4 Cooperlake, 5 newer ones
 * this table knows; -1 for a name it does not know (then OpenBLAS is
 * trusted: it may know the CPU better than this table). */
int as_blas_core_rank(const char *name);

/* The core to switch to from OpenBLAS's own choice own: as_blas_pick_core's
 * when it ranks above own, else NULL.  Pure, for tests. */
const char *as_blas_core_upgrade(const char *own, unsigned features, int (*has)(const char *name));
/* 1 when the linked OpenBLAS holds the kernels of core name. */
int as_blas_core_available(const char *name);

/* Once, before any BLAS call (as_init): keeps a user's OPENBLAS_CORETYPE,
 * else switches to as_blas_core_upgrade's core, if any. */
void as_blas_core_init(void);
/* The same, every time: for tests, with no BLAS call in flight. */
void as_blas_core_select(void);

typedef struct {
    const char *config;   /* openblas_get_config(): version, build options */
    const char *core;     /* openblas_get_corename() now */
    const char *openblas; /* the core OpenBLAS chose by itself at load */
    const char *by;       /* "OPENBLAS_CORETYPE", "attnswap" or "OpenBLAS" */
    const char *note;     /* why no switch happened, or "" */
} as_blas_core_info;
void as_blas_core_get(as_blas_core_info *info);

#endif
