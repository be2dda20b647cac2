/* A freed block held by a per-CPU cache refuses every get.
 *
 * Mirrors src/PageCore/PageArena.Refs.cs TryGetPageUnlessZero (TryGetFromOne / TryGetUnlessZeroFrom, then
 * IsAllocatedAfterGet: an acquire load of the flags after the add, and UndoSpeculativeGet -> PutFrom), PutPage, and
 * src/PageCore/PageArena.Free.cs FreeVia's cached fast path (a plain flag test, an acquire load of the count == 1, a
 * plain store of Cached, the push), FreeUncached (PutTestZero), and a cache giving the block back
 * (src/PageCore/PageArena.Caches.cs ReleaseCachedToCore: TryPutLast, else ReleaseCachedShared: a plain |= Released,
 * then PutTestZero(guess 2); FreeReleasedCached).
 *
 * Threads: the owner frees its block (count 1, flags AllocatedHead) into its cache, then tells the world it freed it
 * (a release store: whatever hands the knowledge of a free on), then drains its cache (the block goes back to the shared
 * allocator). A speculative getter learns (acquire load) whether the block was freed, runs get_page_unless_zero on it,
 * and puts what it got.
 *
 * Invariant: a getter that knew the block was freed never gets it (a get succeeds only on a block that was allocated
 * while the getter held its reference); no put is refused (a holder whose put is the last one on a released block reads
 * Released, published by the cache's fully ordered put); the block goes back to the allocator exactly once, count 0.
 *
 * LEGACY: src/PageCore/Legacy/LegacyCachedGets.cs TryGetPageUnlessZero: add-unless-zero on the count alone. A cached
 * block keeps the cache's reference (count 1), so the get raises 1 -> 2 on a block its owner already freed and reports a
 * live page. No second thread is even needed; any model.
 */
#include "weak.h"

#define ALLOC 1u    /* PageFlags.AllocatedHead */
#define CACHED 16u  /* PageFlags.Cached */
#define RELEASED 64u /* PageFlags.Released */

static atomic_int count = 1;
static atomic_uint flags = ALLOC;
static atomic_int freed;       /* the owner's word that it freed the block (release store) */
static int owner_frees, getter_frees, getter_refused, getter_got, getter_knew;

/* PutFrom: 1 freed, 0 live, -1 refused. */
static int put_from(int seen)
{
	while (true) {
		enum ref_put r = put_unless_last(&count, seen);
		if (r == PUT_LIVE)
			return 0;
		if (r == PUT_UNDERFLOW)
			return -1;
		unsigned f = VREAD(flags);
		if ((f & (ALLOC | RELEASED)) == 0)
			return -1; /* a put that would take the cache's own reference */
		if (IL_CAS(count, 0, 1) == 1) {
			PLAIN_ST(flags, 0); /* FreeReleasedCached or FreeBlock: back to the allocator */
			return 1;
		}
		seen = VREAD(count);
	}
}

/* PutTestZero(guess): 1 freed (the caller frees), 0 live, -1 refused. */
static int put_test_zero(int guess)
{
	int v = IL_CAS(count, guess - 1, guess);
	if (v == guess)
		return guess == 1;
	while (true) { /* PutTestZeroFrom */
		enum ref_put r = put_unless_last(&count, v);
		if (r == PUT_LIVE)
			return 0;
		if (r == PUT_UNDERFLOW)
			return -1;
		if (IL_CAS(count, 0, 1) == 1)
			return 1;
		v = VREAD(count);
	}
}

static void *owner(void *arg)
{
	bool cached = false;
	/* FreeVia: the cached fast path needs the caller to be the only holder. */
	if (PLAIN_LD(flags) == ALLOC && VREAD(count) == 1) {
		PLAIN_ST(flags, CACHED); /* then the push into the magazine (owner-only) */
		cached = true;
	} else if (put_test_zero(1) == 1) { /* FreeUncached */
		PLAIN_ST(flags, 0);
		owner_frees++;
	}
	VWRITE(freed, 1);

	if (cached) { /* Drain: EmptyMagazine -> ReleaseCachedToCore */
		if (IL_CAS(count, 0, 1) == 1) {
			PLAIN_ST(flags, 0);
			owner_frees++;
		} else {
			PLAIN_ST(flags, PLAIN_LD(flags) | RELEASED); /* ReleaseCachedShared */
			int r = put_test_zero(2);
			assert(r >= 0); /* "a cached block had refcount 0" */
			if (r == 1) {
				PLAIN_ST(flags, 0);
				owner_frees++;
			}
		}
	}
	return NULL;
}

static void *getter(void *arg)
{
	getter_knew = VREAD(freed);
	int v = IL_CAS(count, 2, 1);
	if (v != 1) {
		while (true) {
			if (v <= 0)
				return NULL;
			int s = IL_CAS(count, v + 1, v);
			if (s == v)
				break;
			v = s;
		}
	}
#ifndef LEGACY
	if ((VREAD(flags) & ALLOC) == 0) { /* IsAllocatedAfterGet || UndoSpeculativeGet */
		int r = put_from(VREAD(count));
		getter_refused += r < 0;
		getter_frees += r == 1;
		return NULL;
	}
#endif
	getter_got = 1;
	int seen = IL_CAS(count, 1, 2); /* PutPage */
	if (seen != 2) {
		int r = put_from(seen);
		getter_refused += r < 0;
		getter_frees += r == 1;
	}
	return NULL;
}

int main(void)
{
	pthread_t o, g;
	SPAWN(o, owner);
	SPAWN(g, getter);
	JOIN(o);
	JOIN(g);
	assert(!(getter_knew && getter_got)); /* a freed block refused the get */
	assert(getter_refused == 0);
	assert(owner_frees + getter_frees == 1);
	assert(atomic_load(&count) == 0);
	return 0;
}
