/* The C reference of PageCore's hot paths (C11 atomics). Each function mirrors one C# path, algorithm for algorithm, so
 * the benchmarks can set the C# figure next to the C one in the same run. Not a second implementation to use: the
 * arena here is a minimal one (descriptors + a bitfield), enough for the paths measured. */
#ifndef PAGECORE_NATIVE_H
#define PAGECORE_NATIVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* get_page_unless_zero: CAS add-unless-zero, guessing 1 first as PageRef.TryGetUnlessZero does. Returns 1 when taken. */
int pcn_get_unless_zero(int32_t *refcount);

/* put_page: one fully ordered decrement; returns 1 when it took the count to 0. */
int pcn_put(int32_t *refcount);

/* A minimal arena: pages descriptors and a bitfield allocator for order 0 (one CAS per claim, as FrameAllocator). */
typedef struct pcn_arena pcn_arena;
pcn_arena *pcn_arena_create(uint32_t pages);
void pcn_arena_destroy(pcn_arena *a);

/* The core allocator's order-0 path: claim a bit by CAS, set the descriptor, refcount 1 (release store). */
uint32_t pcn_core_alloc(pcn_arena *a);
/* The free: put (to 0), clear the descriptor, release the bit (fetch-and). */
void pcn_core_free(pcn_arena *a, uint32_t pfn);

/* get_page_unless_zero / put_page on a PFN, as the C# API takes them: the PFN checked against the arena (-1 when out
 * of range), its descriptor found, then the transition; the put that takes the count to 0 frees the page (returns 1). */
int pcn_get_page_unless_zero(pcn_arena *a, uint32_t pfn);
int pcn_put_page(pcn_arena *a, uint32_t pfn);

/* The per-thread magazine's hit path (orders 0): pop/push without atomics, the page keeping the cache's reference. */
uint32_t pcn_cache_alloc(pcn_arena *a);
void pcn_cache_free(pcn_arena *a, uint32_t pfn);
/* The same, with the thread's magazine found through __tls_get_addr once per operation (the global-dynamic TLS model),
 * as CoreCLR's JIT finds a [ThreadStatic] on linux-x64: the C figure at the runtime's price for a thread-local. */
uint32_t pcn_cache_alloc_gd(pcn_arena *a);
void pcn_cache_free_gd(pcn_arena *a, uint32_t pfn);

/* The page-table fragment allocator: claim an index with one fetch-and-add on the cache word, count fragments in their
 * own counter, free the page-table page when the count reaches 0. Returns (page << 8) | index. */
uint32_t pcn_frag_alloc(pcn_arena *a);
void pcn_frag_free(pcn_arena *a, uint32_t frag);

/* Benchmark loops: n operations each, timed by the caller (BenchmarkDotNet through P/Invoke, or bench.c). */
void pcn_loop_get_put(int32_t *refcount, int64_t n);
void pcn_loop_get_put_page(pcn_arena *a, uint32_t pfn, int64_t n);
void pcn_loop_cache(pcn_arena *a, int64_t n);
void pcn_loop_cache_gd(pcn_arena *a, int64_t n);
/* pcn_loop_cache with the work the C# API does around the magazine on the same path: the order checked against the
 * arena's limit, hit and free counters, the popped block's flags checked (check_new_page), the freed PFN checked against
 * the arena and its flags and order checked (an allocated head of that order). */
void pcn_loop_cache_checked(pcn_arena *a, int64_t n);
/* The calling thread's magazine counters (only the checked loop counts): lets a caller see that every operation of
 * pcn_loop_cache_checked passed its checks and stayed on the magazine path. */
void pcn_cache_counts(int64_t *hits, int64_t *frees);
void pcn_loop_core(pcn_arena *a, int64_t n);
void pcn_loop_frag(pcn_arena *a, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
