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
    RUN("core allocator alloc + free (order 0)", pcn_loop_core(a, n));
    RUN("PTE fragment alloc + free (16 per page)", pcn_loop_frag(a, n));
    pcn_arena_destroy(a);
    return rc == 1 ? 0 : 1;
}
