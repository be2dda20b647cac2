/* The C reference of PageCore's hot paths. See include/pagecore_native.h. Memory orders are written out: acquire on
 * the loads that pair with releases, acq_rel (full) on the read-modify-writes, as the C# code's Interlocked (full
 * fence) and Volatile (acquire/release). */
#include "pagecore_native.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define FLAG_ALLOCATED 1u
#define FLAG_CACHED 8u
#define FLAG_PAGETABLE 4u
#define MAG_CAP 64
#define FRAGS 16u

/* The hot paths are inlined into the exported functions and into the loops (the C# side's are inlined by the JIT), and
 * the library is built with -fno-semantic-interposition, so no call goes through the PLT: C at its best. */
#define HOT static inline __attribute__((always_inline))
#define COLD static __attribute__((noinline))

typedef struct {
    _Atomic uint32_t flags;
    _Atomic int32_t refcount;
    int32_t mapcount;
    _Atomic int32_t frag_count;
    uint64_t compound;
    uint8_t order, compound_order;
    uint16_t reserved;
    int32_t lock;
    uint32_t next, prev, gen, priv;
    uint64_t index, mapping;
} pcn_desc; /* PageDescriptor's layout, field for field */
_Static_assert(sizeof(pcn_desc) == 64, "a descriptor is 64 bytes, as PageDescriptor");

struct pcn_arena {
    pcn_desc *desc;
    _Atomic uint64_t *bits;
    uint32_t pages;
    uint32_t words;
    uint32_t order_limit; /* PageArena's _orderLimit: the orders an allocation may ask for (0..10) */
    _Atomic uint32_t hint;
    _Alignas(128) _Atomic uint64_t frag_cache; /* (page + 1) << 32 | next index */
};

typedef struct {
    _Atomic int busy;          /* the owner's hand-over flag (PageCaches' Busy): set around every pop/push */
    _Atomic int steal_pending; /* a stealer's request (PageCaches' StealPending) */
    const pcn_arena *owner;    /* the arena this thread's magazine serves (PageCaches.ThreadMagazine's owner check) */
    uint32_t count;
    int64_t hits, frees;       /* the meter's counters, as MagazineHot's Hits0/Frees0 (the checked form counts) */
    uint32_t slots[MAG_CAP];
} pcn_magazine;

/* initial-exec: one segment-relative access (fs: on x86-64, tpidr_el0 on arm64), the cheapest thread-local there is:
 * glibc's malloc finds its tcache this way. */
static _Thread_local pcn_magazine t_magazine __attribute__((tls_model("initial-exec")));

/* global-dynamic: every access calls ld.so's __tls_get_addr. This is how CoreCLR's JIT reaches a [ThreadStatic] on
 * linux-x64 (one direct call to __tls_get_addr per access; only NativeAOT gets a segment-relative access), so the
 * "_gd" functions measure the same algorithm with the thread-local found at the runtime's price. */
static _Thread_local pcn_magazine t_magazine_gd __attribute__((tls_model("global-dynamic")));

/* One __tls_get_addr call per operation, as the JIT makes one per [ThreadStatic] read: the empty asm hides the address
 * from the optimiser, so it is neither hoisted out of a loop nor recomputed inside the operation. */
HOT pcn_magazine *magazine_gd(void) {
    pcn_magazine *m = &t_magazine_gd;
    __asm__ volatile("" : "+r"(m));
    return m;
}

HOT int get_unless_zero(_Atomic int32_t *rc) {
    int32_t expected = 1; /* the common case: only the owner holds it */
    while (!atomic_compare_exchange_weak_explicit(rc, &expected, expected + 1, memory_order_acq_rel, memory_order_acquire)) {
        if (expected == 0) {
            return 0;
        }
    }
    return 1;
}

HOT int put(_Atomic int32_t *rc) {
    return atomic_fetch_sub_explicit(rc, 1, memory_order_acq_rel) == 1;
}

int pcn_get_unless_zero(int32_t *refcount) {
    return get_unless_zero((_Atomic int32_t *)refcount);
}

int pcn_put(int32_t *refcount) {
    return put((_Atomic int32_t *)refcount);
}

pcn_arena *pcn_arena_create(uint32_t pages) {
    pcn_arena *a = aligned_alloc(128, sizeof(pcn_arena));
    if (!a) {
        return NULL;
    }
    memset(a, 0, sizeof *a);
    a->pages = pages;
    a->words = (pages + 63) / 64;
    a->order_limit = 11;
    a->desc = aligned_alloc(64, (size_t)pages * sizeof(pcn_desc));
    a->bits = aligned_alloc(64, (size_t)a->words * sizeof(uint64_t));
    if (!a->desc || !a->bits) {
        free(a->desc);
        free((void *)a->bits);
        free(a);
        return NULL;
    }
    memset(a->desc, 0, (size_t)pages * sizeof(pcn_desc));
    for (uint32_t w = 0; w < a->words; w++) {
        atomic_init(&a->bits[w], 0);
    }
    return a;
}

void pcn_arena_destroy(pcn_arena *a) {
    if (a) {
        free(a->desc);
        free((void *)a->bits);
        free(a);
    }
}

HOT uint32_t core_alloc(pcn_arena *a) {
    uint32_t start = atomic_load_explicit(&a->hint, memory_order_relaxed);
    for (uint32_t i = 0; i < a->words; i++) {
        uint32_t w = (start + i) % a->words;
        uint64_t word = atomic_load_explicit(&a->bits[w], memory_order_acquire);
        while (~word) {
            int bit = __builtin_ctzll(~word);
            if (atomic_compare_exchange_weak_explicit(&a->bits[w], &word, word | (1ull << bit), memory_order_acq_rel, memory_order_acquire)) {
                uint32_t p = w * 64 + (uint32_t)bit;
                pcn_desc *d = &a->desc[p];
                atomic_store_explicit(&d->flags, FLAG_ALLOCATED, memory_order_relaxed);
                d->order = 0;
                atomic_store_explicit(&d->refcount, 1, memory_order_release); /* published by the release store */
                if (w != start) {
                    atomic_store_explicit(&a->hint, w, memory_order_relaxed);
                }
                return p;
            }
        }
    }
    return UINT32_MAX;
}

/* put_page: the put that takes the count to 0 frees the page (descriptor cleared, bit released); returns 1 then. */
HOT int core_free(pcn_arena *a, uint32_t p) {
    pcn_desc *d = &a->desc[p];
    if (!put(&d->refcount)) {
        return 0; /* someone else still holds it */
    }
    atomic_store_explicit(&d->flags, 0, memory_order_relaxed);
    atomic_fetch_and_explicit(&a->bits[p / 64], ~(1ull << (p % 64)), memory_order_acq_rel);
    return 1;
}

/* The PFN-based forms, as PageArena.TryGetPageUnlessZero / PutPage take them: the PFN checked against the arena
 * (the C# side throws; here -1), its descriptor found, then the counter transition. */
HOT int page_get_unless_zero(pcn_arena *a, uint32_t pfn) {
    if (__builtin_expect(pfn >= a->pages, 0)) {
        return -1;
    }
    return get_unless_zero(&a->desc[pfn].refcount);
}

HOT int page_put(pcn_arena *a, uint32_t pfn) {
    if (__builtin_expect(pfn >= a->pages, 0)) {
        return -1;
    }
    return core_free(a, pfn);
}

int pcn_get_page_unless_zero(pcn_arena *a, uint32_t pfn) {
    return page_get_unless_zero(a, pfn);
}

int pcn_put_page(pcn_arena *a, uint32_t pfn) {
    return page_put(a, pfn);
}

uint32_t pcn_core_alloc(pcn_arena *a) {
    return core_alloc(a);
}

void pcn_core_free(pcn_arena *a, uint32_t p) {
    core_free(a, p);
}

/* The magazine's miss: a thread's first use in this arena (the owner check fails) or an empty magazine: refill half a
 * magazine from the core. Called inside the owner's busy window. */
COLD uint32_t magazine_refill(pcn_arena *a, pcn_magazine *m) {
    if (m->owner != a) {
        if (m->count != 0) {
            return UINT32_MAX; /* one arena per thread in this reference; the C# side keeps a list */
        }
        m->owner = a;
    }
    for (uint32_t i = 0; i < MAG_CAP / 2; i++) {
        uint32_t p = core_alloc(a);
        if (p == UINT32_MAX) {
            break;
        }
        atomic_store_explicit(&a->desc[p].flags, FLAG_CACHED, memory_order_relaxed);
        m->slots[m->count++] = p;
    }
    return m->count == 0 ? UINT32_MAX : m->slots[--m->count];
}

/* A block a magazine handed out is not a cached block of order 0 (check_new_page's bad_page). Never taken here. */
COLD uint32_t bad_cached_page(pcn_arena *a, uint32_t p) {
    (void)a;
    (void)p;
    return UINT32_MAX;
}

/* The magazine's pop and push. checks = 0: the algorithm alone. checks = 1: with the work the C# API does around it on
 * the same path (PageArena.AllocVia / FreeVia), so that a C# figure can be set against C doing the same work: the
 * order checked against the arena's limit, the hit and free counters, check_new_page's flag test on the popped block,
 * the freed PFN checked against the arena, and the free's test that the block is an allocated head of that order.
 * Both are inlined with a constant `checks`, so each loop is compiled with its own branches only. */
HOT uint32_t magazine_alloc(pcn_arena *a, pcn_magazine *m, const int checks, const uint32_t order) {
    if (checks && __builtin_expect(order >= a->order_limit, 0)) {
        return UINT32_MAX;
    }
    /* The owner's side of the steal handshake: two plain stores and a load (the stealer pays a process-wide barrier). */
    atomic_store_explicit(&m->busy, 1, memory_order_relaxed);
    if (atomic_load_explicit(&m->steal_pending, memory_order_acquire)) {
        atomic_store_explicit(&m->busy, 0, memory_order_release);
        return core_alloc(a);
    }
    uint32_t p;
    if (__builtin_expect(m->owner == a && m->count != 0, 1)) {
        p = m->slots[--m->count];
    } else {
        p = magazine_refill(a, m);
    }
    atomic_store_explicit(&m->busy, 0, memory_order_release);
    if (p == UINT32_MAX) {
        return core_alloc(a);
    }
    pcn_desc *d = &a->desc[p];
    if (checks) {
        m->hits++;
        if (__builtin_expect(atomic_load_explicit(&d->flags, memory_order_relaxed) != FLAG_CACHED, 0)) {
            return bad_cached_page(a, p);
        }
    }
    /* the cache's reference becomes the caller's: no refcount write, only the flags (the owner's plain store) */
    atomic_store_explicit(&d->flags, FLAG_ALLOCATED, memory_order_relaxed);
    return p;
}

HOT void magazine_free(pcn_arena *a, pcn_magazine *m, uint32_t p, const int checks, const uint32_t order) {
    if (checks && __builtin_expect(p >= a->pages, 0)) {
        return; /* the C# side throws */
    }
    pcn_desc *d = &a->desc[p];
    if (m->owner == a && atomic_load_explicit(&d->refcount, memory_order_acquire) == 1
        && (!checks || (atomic_load_explicit(&d->flags, memory_order_relaxed) == FLAG_ALLOCATED && d->order == order))) {
        atomic_store_explicit(&d->flags, FLAG_CACHED, memory_order_relaxed); /* the caller's reference stays: the cache's */
        if (checks) {
            m->frees++;
        }
        atomic_store_explicit(&m->busy, 1, memory_order_relaxed);
        if (!atomic_load_explicit(&m->steal_pending, memory_order_acquire) && m->count < MAG_CAP) {
            m->slots[m->count++] = p;
            atomic_store_explicit(&m->busy, 0, memory_order_release);
            return;
        }
        atomic_store_explicit(&m->busy, 0, memory_order_release);
        atomic_store_explicit(&d->flags, FLAG_ALLOCATED, memory_order_relaxed);
    }
    core_free(a, p);
}

uint32_t pcn_cache_alloc(pcn_arena *a) {
    return magazine_alloc(a, &t_magazine, 0, 0);
}

void pcn_cache_free(pcn_arena *a, uint32_t p) {
    magazine_free(a, &t_magazine, p, 0, 0);
}

uint32_t pcn_cache_alloc_gd(pcn_arena *a) {
    return magazine_alloc(a, magazine_gd(), 0, 0);
}

void pcn_cache_free_gd(pcn_arena *a, uint32_t p) {
    magazine_free(a, magazine_gd(), p, 0, 0);
}

HOT uint32_t frag_alloc(pcn_arena *a) {
    for (;;) {
        uint64_t claimed = atomic_fetch_add_explicit(&a->frag_cache, 1, memory_order_acq_rel);
        uint32_t index = (uint32_t)claimed;
        uint32_t page1 = (uint32_t)(claimed >> 32);
        if (page1 != 0 && index < FRAGS) {
            if (index == FRAGS - 1) {
                uint64_t seen = claimed + 1; /* the last fragment: the cache lets go of the page */
                atomic_compare_exchange_strong_explicit(&a->frag_cache, &seen, 0, memory_order_acq_rel, memory_order_acquire);
            }
            return ((page1 - 1) << 8) | index;
        }
        if (page1 != 0) {
            uint64_t seen = claimed + 1; /* exhausted: retire it so a new page can be cached */
            atomic_compare_exchange_strong_explicit(&a->frag_cache, &seen, 0, memory_order_acq_rel, memory_order_acquire);
            continue;
        }
        uint32_t p = core_alloc(a);
        if (p == UINT32_MAX) {
            return UINT32_MAX;
        }
        pcn_desc *d = &a->desc[p];
        atomic_fetch_or_explicit(&d->flags, FLAG_PAGETABLE, memory_order_relaxed);
        atomic_store_explicit(&d->frag_count, (int32_t)FRAGS, memory_order_relaxed);
        uint64_t empty = claimed + 1;
        uint64_t word = ((uint64_t)(p + 1) << 32) | 1;
        if (!atomic_compare_exchange_strong_explicit(&a->frag_cache, &empty, word, memory_order_acq_rel, memory_order_acquire)) {
            atomic_store_explicit(&d->frag_count, 1, memory_order_release); /* another page won: this one serves one */
        }
        return p << 8;
    }
}

HOT void frag_free(pcn_arena *a, uint32_t frag) {
    uint32_t p = frag >> 8;
    pcn_desc *d = &a->desc[p];
    if (atomic_fetch_sub_explicit(&d->frag_count, 1, memory_order_acq_rel) == 1) {
        atomic_fetch_and_explicit(&d->flags, ~FLAG_PAGETABLE, memory_order_relaxed);
        core_free(a, p);
    }
}

uint32_t pcn_frag_alloc(pcn_arena *a) {
    return frag_alloc(a);
}

void pcn_frag_free(pcn_arena *a, uint32_t frag) {
    frag_free(a, frag);
}

/* Every put's result is consumed, as put_page consumes it (the last put frees the page): a put whose result is dropped
 * compiles to a bare "lock sub" that nothing waits for, which no real put is. */
static _Atomic int64_t last_puts;

void pcn_loop_get_put(int32_t *refcount, int64_t n) {
    _Atomic int32_t *rc = (_Atomic int32_t *)refcount;
    for (int64_t i = 0; i < n; i++) {
        get_unless_zero(rc);
        if (__builtin_expect(put(rc), 0)) {
            atomic_fetch_add_explicit(&last_puts, 1, memory_order_relaxed); /* never here: the caller holds a reference */
        }
    }
}

void pcn_loop_get_put_page(pcn_arena *a, uint32_t pfn, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        page_get_unless_zero(a, pfn);
        if (__builtin_expect(page_put(a, pfn) != 0, 0)) {
            atomic_fetch_add_explicit(&last_puts, 1, memory_order_relaxed); /* never here: the caller holds a reference */
        }
    }
}

void pcn_loop_cache(pcn_arena *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        magazine_free(a, &t_magazine, magazine_alloc(a, &t_magazine, 0, 0), 0, 0);
    }
}

void pcn_cache_counts(int64_t *hits, int64_t *frees) {
    *hits = t_magazine.hits;
    *frees = t_magazine.frees;
}

void pcn_loop_cache_checked(pcn_arena *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        magazine_free(a, &t_magazine, magazine_alloc(a, &t_magazine, 1, 0), 1, 0);
    }
}

void pcn_loop_cache_gd(pcn_arena *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t p = magazine_alloc(a, magazine_gd(), 0, 0);
        magazine_free(a, magazine_gd(), p, 0, 0);
    }
}

void pcn_loop_core(pcn_arena *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        core_free(a, core_alloc(a));
    }
}

void pcn_loop_frag(pcn_arena *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        frag_free(a, frag_alloc(a));
    }
}
