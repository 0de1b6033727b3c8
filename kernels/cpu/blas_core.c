/* The OpenBLAS core for this CPU (blas_core.h).  OpenBLAS built with
 * DYNAMIC_ARCH (Debian's is) holds one kernel set per CPU family and picks
 * one in its load-time constructor: OPENBLAS_CORETYPE if set, else from the
 * CPU's model number, which a release older than the CPU does not know.
 * Here the choice is made again from the CPU's features, which every later
 * CPU keeps, and applied through the library's own entry points
 * gotoblas_dynamic_quit/_init (exported by its DYNAMIC_ARCH builds): the
 * same code path OPENBLAS_CORETYPE takes at load, run once more before any
 * BLAS call.  Looked up with dlsym, so a build without them (another BLAS
 * layout, a static or single-core OpenBLAS) only reports why nothing
 * changed.  docs/design.md ("The BLAS core") compares the other ways. */
#define _GNU_SOURCE
#include "blas_core.h"

#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

unsigned as_cpu_blas_features(void)
{
    unsigned f = 0;
#if defined(__x86_64__) || defined(__i386__)
    /* __builtin_cpu_supports also checks that the OS saves the wide
     * registers (XGETBV), which forcing a core by name would not */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= AS_CPUF_AVX2_FMA;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        f |= AS_CPUF_AVX512;
    if ((f & AS_CPUF_AVX512) && __builtin_cpu_supports("avx512bf16")) f |= AS_CPUF_AVX512_BF16;
    if (__builtin_cpu_is("amd")) f |= AS_CPUF_AMD;
#endif
    return f;
}

const char *as_cpu_feature_names(unsigned f)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "%s%s%s%s", f & AS_CPUF_AVX2_FMA ? "avx2 fma " : "",
             f & AS_CPUF_AVX512 ? "avx512 " : "", f & AS_CPUF_AVX512_BF16 ? "avx512_bf16 " : "",
             f & (AS_CPUF_AVX2_FMA | AS_CPUF_AVX512) ? "" : "sse ");
    buf[strlen(buf) - 1] = '\0'; /* the last space */
    return buf;
}

const char *as_blas_pick_core(unsigned f, int (*has)(const char *name))
{
    /* Cooperlake is SkylakeX plus bf16 kernels (sbgemm): the same sgemm */
    if ((f & AS_CPUF_AVX512_BF16) && has("Cooperlake")) return "Cooperlake";
    if ((f & AS_CPUF_AVX512) && has("SkylakeX")) return "SkylakeX";
    if (f & (AS_CPUF_AVX2_FMA | AS_CPUF_AVX512)) {
        if ((f & AS_CPUF_AMD) && has("Zen")) return "Zen";
        if (has("Haswell")) return "Haswell";
    }
    return NULL;
}

int as_blas_core_rank(const char *name)
{
    /* the names openblas_get_corename gives on x86-64 */
    static const struct {
        const char *name;
        int rank;
    } ranks[] = {
        {"Katmai", 0},      {"Coppermine", 0}, {"Northwood", 0},  {"Prescott", 0},    {"Banias", 0},
        {"Atom", 0},        {"Core2", 0},      {"Penryn", 0},     {"Dunnington", 0},  {"Nehalem", 0},
        {"Athlon", 0},      {"Opteron", 0},    {"Opteron_SSE3", 0}, {"Barcelona", 0}, {"Nano", 0},
        {"Bobcat", 0},      {"Sandybridge", 1}, {"Bulldozer", 1}, {"Piledriver", 1},  {"Steamroller", 1},
        {"Excavator", 1},   {"Haswell", 2},    {"Zen", 2},        {"SkylakeX", 3},    {"Cooperlake", 4},
        {"SapphireRapids", 5},
    };
    if (!name) return -1;
    for (size_t i = 0; i < sizeof ranks / sizeof ranks[0]; i++)
        if (!strcmp(name, ranks[i].name)) return ranks[i].rank;
    return -1;
}

const char *as_blas_core_upgrade(const char *own, unsigned f, int (*has)(const char *name))
{
    const char *want = as_blas_pick_core(f, has);
    int have = as_blas_core_rank(own);
    /* an unknown name may be a core newer than this table: trust OpenBLAS */
    return want && have >= 0 && have < as_blas_core_rank(want) ? want : NULL;
}

static as_blas_core_info info = {"", "", "", "OpenBLAS", "not initialised (as_init)"};
static char own[32], reason[160];
static void *lib; /* the OpenBLAS we link, for dlsym (RTLD_DEFAULT is NULL) */
static int lib_opened;

static void open_lib(void)
{
    /* the very library cblas_sgemm resolves to, whatever loaded it; else
     * RTLD_DEFAULT (OpenBLAS linked statically into the program) */
    Dl_info di;
    if (lib_opened) return;
    lib_opened = 1;
    if (dladdr((void *)openblas_get_corename, &di) && di.dli_fname)
        lib = dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD);
}

/* A DYNAMIC_ARCH OpenBLAS holds gotoblas_<NAME> for each core it has. */
int as_blas_core_available(const char *name)
{
    char sym[48] = "gotoblas_";
    size_t n = strlen(sym);
    for (const char *p = name; *p && n + 1 < sizeof sym; p++) sym[n++] = (char)toupper((unsigned char)*p);
    sym[n] = '\0';
    open_lib();
    return dlsym(lib, sym) != NULL;
}

/* OpenBLAS's first blas_memory_alloc runs gotoblas_dynamic_init under its
 * allocation lock, and each worker thread its load-time constructor started
 * makes that first call when it begins to run.  Twice under `ctest -j2`, a
 * process running a one-line script died in gotoblas_dynamic_init (+584:
 * calling through the kernel table, read back NULL after it was checked), so
 * a second thread unset the table meanwhile: a late worker's init raced
 * reselect's quit/init, or the destructor's quit at exit.  One allocation
 * here, under that lock, makes the first call ours; the workers' skip the
 * init.  (Not reproduced on demand; the fix costs one pooled buffer.) */
static void settle_memory_init(void)
{
    void *(*alloc)(int);
    void (*release)(void *);
    *(void **)&alloc = dlsym(lib, "blas_memory_alloc");
    *(void **)&release = dlsym(lib, "blas_memory_free");
    if (!alloc || !release) return;
    void *p = alloc(0);
    if (p) release(p);
}

/* Runs OpenBLAS's core selection again with OPENBLAS_CORETYPE=core for it
 * to read (set only for the call: no child process inherits it). */
static void reselect(void (*quit)(void), void (*init)(void), const char *core)
{
    setenv("OPENBLAS_CORETYPE", core, 1);
    quit();
    init();
    unsetenv("OPENBLAS_CORETYPE");
}

void as_blas_core_select(void)
{
    info.by = "OpenBLAS";
    snprintf(own, sizeof own, "%s", openblas_get_corename());
    info.openblas = own;
    info.note = "";
    reason[0] = '\0';
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user && *user) {
        info.by = "OPENBLAS_CORETYPE"; /* OpenBLAS read it at load: the user's word stands */
        return;
    }
    unsigned f = as_cpu_blas_features();
    const char *want = as_blas_core_upgrade(own, f, as_blas_core_available);
    if (!want) {
        if (as_blas_core_rank(own) < 0)
            snprintf(reason, sizeof reason, "OpenBLAS chose %s, a core this table does not know", own);
        else if (!as_blas_pick_core(f, as_blas_core_available))
            snprintf(reason, sizeof reason, "no better core in this OpenBLAS for this CPU (%s)",
                     as_cpu_feature_names(f));
        info.note = reason[0] ? reason : ""; /* else OpenBLAS knew this CPU */
        return;
    }
    void (*quit)(void), (*init)(void);
    dlerror();
    *(void **)&quit = dlsym(lib, "gotoblas_dynamic_quit");
    *(void **)&init = dlsym(lib, "gotoblas_dynamic_init");
    if (!quit || !init) {
        const char *e = dlerror();
        snprintf(reason, sizeof reason, "cannot switch %s to %s: %s", own, want,
                 e ? e : "gotoblas_dynamic_init not exported");
        info.note = reason;
        return;
    }
    settle_memory_init();
    reselect(quit, init, want);
    const char *now = openblas_get_corename();
    if (as_blas_core_rank(now) < as_blas_core_rank(own)) { /* it did not know the name after all */
        snprintf(reason, sizeof reason, "OpenBLAS took %s for %s: kept %s", now, want, own);
        info.note = reason;
        reselect(quit, init, own);
        return;
    }
    info.by = "attnswap";
}

void as_blas_core_init(void)
{
    static int done;
    if (done) return;
    done = 1;
    as_blas_core_select();
}

void as_blas_core_get(as_blas_core_info *out)
{
    *out = info;
    out->config = openblas_get_config();
    out->core = openblas_get_corename();
    if (!*out->openblas) out->openblas = out->core;
}
