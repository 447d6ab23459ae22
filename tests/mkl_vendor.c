/* Emulates the other CPU vendor for MKL (tests and benchmarks/determinism_harness.py only).
 *
 * MKL decides "Intel or not" once, through these two exported service functions; preloaded
 * (LD_PRELOAD) they answer GRAPHQA_MKL_INTEL=1 (Intel) or 0 (not Intel). MKL honours the
 * Intel-only reproducibility branches (MKL_CBWR=AVX2) only when they say Intel, which is how a
 * lock written on one vendor's machine missed on the other's (issue 20). */
#include <stdlib.h>

static int answer(void) {
    const char *v = getenv("GRAPHQA_MKL_INTEL");
    return v != NULL && v[0] == '1';
}

int mkl_serv_intel_cpu_true(void) { return answer(); }
int mkl_serv_intel_cpu(void) { return answer(); }
