/* The OpenBLAS core choice (kernels/cpu/blas_core.c): the pure choice on
 * every kind of CPU, then the switch itself in this process.  The test
 * starts itself again under OPENBLAS_CORETYPE=Prescott so that OpenBLAS
 * loads with its weakest x86-64 kernels whatever this CPU is; it checks that
 * the user's setting is kept, then selects again as an unset variable would
 * and checks the core attnswap switched to and products against a naive
 * loop on odd shapes, transposed operands included. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_test.h"
#include "attnswap/info.h"
#include "blas_core.h"
#include "cpu_kernels.h"

static int has_all(const char *name) { return name != NULL; }
static int has_no_bf16(const char *name) { return strcmp(name, "Cooperlake") != 0; }
static int has_no_zen(const char *name) { return strcmp(name, "Zen") != 0; }
static int has_none(const char *name) { return name == NULL; }

static int same(const char *a, const char *b) { return a && b ? !strcmp(a, b) : a == b; }

static void test_pick(void)
{
    enum { A2 = AS_CPUF_AVX2_FMA, A5 = AS_CPUF_AVX2_FMA | AS_CPUF_AVX512, BF = AS_CPUF_AVX512_BF16, AMD = AS_CPUF_AMD };
    CHECK(same(as_blas_pick_core(0, has_all), NULL));        /* SSE only: OpenBLAS's choice */
    CHECK(same(as_blas_pick_core(AMD, has_all), NULL));
    CHECK(same(as_blas_pick_core(A2, has_all), "Haswell"));
    CHECK(same(as_blas_pick_core(A2 | AMD, has_all), "Zen"));
    CHECK(same(as_blas_pick_core(A2 | AMD, has_no_zen), "Haswell"));
    CHECK(same(as_blas_pick_core(A5, has_all), "SkylakeX"));
    CHECK(same(as_blas_pick_core(A5 | BF, has_all), "Cooperlake"));
    CHECK(same(as_blas_pick_core(A5 | BF, has_no_bf16), "SkylakeX")); /* a build without Cooperlake */
    CHECK(same(as_blas_pick_core(A5 | BF | AMD, has_all), "Cooperlake")); /* Zen 4 */
    CHECK(same(as_blas_pick_core(A5 | BF, has_none), NULL));

    CHECK(as_blas_core_rank("Prescott") < as_blas_core_rank("Sandybridge"));
    CHECK(as_blas_core_rank("Sandybridge") < as_blas_core_rank("Haswell"));
    CHECK(as_blas_core_rank("Haswell") == as_blas_core_rank("Zen"));
    CHECK(as_blas_core_rank("Zen") < as_blas_core_rank("SkylakeX"));
    CHECK(as_blas_core_rank("SkylakeX") < as_blas_core_rank("Cooperlake"));
    CHECK(as_blas_core_rank("Cooperlake") < as_blas_core_rank("SapphireRapids"));
    CHECK(as_blas_core_rank("NewCore2031") == -1 && as_blas_core_rank(NULL) == -1);

    /* upgrades only: from the fallback, never past a core as good or unknown */
    CHECK(same(as_blas_core_upgrade("Prescott", A5 | BF, has_all), "Cooperlake"));
    CHECK(same(as_blas_core_upgrade("Haswell", A5, has_all), "SkylakeX"));
    CHECK(same(as_blas_core_upgrade("Prescott", A2 | AMD, has_all), "Zen"));
    CHECK(same(as_blas_core_upgrade("Zen", A2 | AMD, has_all), NULL));
    CHECK(same(as_blas_core_upgrade("Haswell", A2 | AMD, has_all), NULL));
    CHECK(same(as_blas_core_upgrade("Cooperlake", A5, has_all), NULL));
    CHECK(same(as_blas_core_upgrade("SapphireRapids", A5 | BF, has_all), NULL));
    CHECK(same(as_blas_core_upgrade("NewCore2031", A5 | BF, has_all), NULL));
    CHECK(same(as_blas_core_upgrade("Prescott", 0, has_all), NULL));

    CHECK(same(as_cpu_feature_names(0), "sse"));
    CHECK(same(as_cpu_feature_names(A5 | BF | AMD), "avx2 fma avx512 avx512_bf16"));
}

/* C = op(A) op(B) through as_cpu_sgemm against a double-precision loop. */
static void check_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K)
{
    float *A = malloc(sizeof(float) * (size_t)(M * K + 1)), *B = malloc(sizeof(float) * (size_t)(K * N + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * N + 1));
    for (int64_t i = 0; i < M * K; i++) A[i] = as_test_randf();
    for (int64_t i = 0; i < K * N; i++) B[i] = as_test_randf();
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    as_cpu_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
    double worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
                                                 (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
            double d = fabs(s - C[i * N + j]);
            if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
        }
    CHECK(worst <= 1e-5 * (double)K + 1e-6);
    if (worst > 1e-5 * (double)K + 1e-6)
        fprintf(stderr, "sgemm ta=%d tb=%d %lldx%lldx%lld: max error %g\n", ta, tb, (long long)M, (long long)N,
                (long long)K, worst);
    free(A), free(B), free(C);
}

static void test_switch(void)
{
    as_blas_core_info b;
    as_blas_core_get(&b);
    /* a user's OPENBLAS_CORETYPE stands (as_init ran with it set) */
    CHECK(same(b.core, "Prescott"));
    CHECK(same(b.by, "OPENBLAS_CORETYPE"));
    /* as if it had not been set: attnswap's choice for this CPU */
    unsetenv("OPENBLAS_CORETYPE");
    as_blas_core_select();
    as_blas_core_get(&b);
    const char *want = as_blas_pick_core(as_cpu_blas_features(), as_blas_core_available);
    CHECK(same(b.openblas, "Prescott"));
    CHECK(getenv("OPENBLAS_CORETYPE") == NULL); /* no child inherits the switch */
    if (want) {
        CHECK(same(b.core, want));
        CHECK(same(b.by, "attnswap"));
        CHECK(same(b.note, ""));
    } else {
        CHECK(same(b.core, "Prescott"));
        CHECK(same(b.by, "OpenBLAS"));
    }
    printf("core %s -> %s (by %s%s%s)\n", b.openblas, b.core, b.by, *b.note ? ": " : "", b.note);
    for (int r = 0; r < 12; r++)
        check_sgemm((int)as_test_randint(0, 1), (int)as_test_randint(0, 1), as_test_randint(1, 97),
                    as_test_randint(1, 131), as_test_randint(1, 300));
    check_sgemm(0, 0, 257, 129, 513); /* split across threads, beyond one kernel block */
    check_sgemm(1, 1, 67, 301, 255);
    /* the report reads the same */
    as_runtime_info i;
    as_runtime_info_get(&i);
    CHECK(same(i.blas_core, b.core) && same(i.blas_core_by, b.by) && strstr(i.blas, "OpenBLAS") != NULL);
    char buf[1024];
    CHECK(as_runtime_info_describe(buf, sizeof buf) < (int)sizeof buf && strstr(buf, b.core) != NULL);
    CHECK(as_runtime_info_describe(buf, 8) > 8 && strlen(buf) == 7); /* truncated, terminated */
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *c = getenv("OPENBLAS_CORETYPE");
    if (!c || strcmp(c, "Prescott") != 0) { /* OpenBLAS reads it when it loads: start again */
        setenv("OPENBLAS_CORETYPE", "Prescott", 1);
        execv("/proc/self/exe", argv);
        perror("test_blas_core: execv");
        return 1;
    }
    test_pick();
    test_switch();
    return as_test_report("test_blas_core");
}
