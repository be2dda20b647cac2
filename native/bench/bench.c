/* The C reference's own benchmark: ns per operation of each hot path, single thread. */
#include "pagecore_native.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

#define RUN(name, call)                                                         \
    do {                                                                        \
        double best = 1e18;                                                     \
        for (int r = 0; r < 5; r++) {                                           \
            double t0 = now_ns();                                               \
            call;                                                               \
            double per = (now_ns() - t0) / (double)n;                           \
            if (per < best) best = per;                                         \
        }                                                                       \
        printf("| %-40s | %8.2f ns |\n", name, best);                          \
    } while (0)

int main(int argc, char **argv) {
    const int64_t n = argc > 1 ? atoll(argv[1]) : 20000000;
    if (n <= 0) {
        fprintf(stderr, "usage: pagecore-native-bench [operations per path, default 20000000]\n");
        return 64;
    }
    int32_t rc = 1;
    pcn_arena *a = pcn_arena_create(1u << 16);
    if (!a) {
        fprintf(stderr, "pagecore-native-bench: out of memory\n");
        return 1;
    }
    printf("| C reference path (best of 5, %lld ops each) | time/op |\n|---|---|\n", (long long)n);
    uint32_t page = pcn_core_alloc(a); /* refcount 1: the benchmark's own reference */
    RUN("get_page_unless_zero + put_page (PFN)", pcn_loop_get_put_page(a, page, n));
    RUN("  the same on a bare counter", pcn_loop_get_put(&rc, n));
    RUN("per-thread cache alloc + free (order 0)", pcn_loop_cache(a, n));
    RUN("  the same, TLS via __tls_get_addr", pcn_loop_cache_gd(a, n));
    int64_t hits0, frees0, hits1, frees1;
    pcn_cache_counts(&hits0, &frees0);
    RUN("  the same with the C# API's checks", pcn_loop_cache_checked(a, n));
    pcn_cache_counts(&hits1, &frees1);
    if (hits1 - hits0 != 5 * n || frees1 - frees0 != 5 * n) {
        /* a check refused a correct block, or the loop fell off the magazine: its figure would be of another path */
        fprintf(stderr, "pagecore-native-bench: the checked cache loop left the magazine path (%lld hits, %lld frees of %lld)\n",
                (long long)(hits1 - hits0), (long long)(frees1 - frees0), (long long)(5 * n));
        pcn_arena_destroy(a);
        return 1;
    }
    RUN("core allocator alloc + free (order 0)", pcn_loop_core(a, n));
    RUN("PTE fragment alloc + free (16 per page)", pcn_loop_frag(a, n));
    pcn_arena_destroy(a);
    return rc == 1 ? 0 : 1;
}
