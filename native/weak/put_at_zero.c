/* A put at zero writes nothing.
 *
 * Mirrors src/PageCore/PageArena.Refs.cs PutPage (TryPutFromTwo, then PutFrom: PutUnlessLast, the last put's flag
 * check, TryPutLast) against the two stores that publish a count on a 0 counter: PageRef.Unfreeze (a frozen page's
 * owner, UnfreezeRefs) and PageRef.SetAllocated (an allocation, PrepNewPage), both release stores
 * (src/PageCore/Descriptors/PageRef.cs).
 *
 * Threads: the owner unfreezes page P (frozen at 0) with count 2, and allocates page Q (free, count 0) with count 1; a
 * misused put (a stale holder's, the misuse checked mode exists for) runs put_page on P and on Q at any moment.
 *
 * Invariant: a refused put leaves the counter exactly as it was: when the put on a page was refused, the page ends
 * with the count its owner stored; when it was not (it came after the owner's store and took one of its references:
 * misuse that no check can tell from a real put), it ends one lower. Never anything else.
 *
 * LEGACY: src/PageCore/Legacy/LegacyPutAtZero.cs: decrement (0 -> -1), see the negative result, then add the reference
 * back. The owner's release store of 2 (or 1) lands between the two; the undo raises it to 3 (or 2): the page ends one
 * reference too high and is never freed, and the report names the wrong party. Any model, SC included.
 */
#include "weak.h"

#define ALLOC 1 /* PageFlags.AllocatedHead */

struct page {
	atomic_int count; /* RefCount */
	atomic_uint flags;
};

static struct page p = { 0, ALLOC }; /* allocated and frozen by its owner */
static struct page q = { 0, 0 };     /* free */
static int refused_p, refused_q, freed_p, freed_q;

/* PutPage; returns 1 freed, 0 live, -1 refused. */
static int put_page(struct page *d)
{
#ifdef LEGACY
	int now = IL_ADD(d->count, -1);
	if (now >= 0)
		return now == 0;
	IL_ADD(d->count, 1); /* the undo, after the window */
	return -1;
#else
	int seen = IL_CAS(d->count, 1, 2); /* TryPutFromTwo */
	if (seen == 2)
		return 0;
	while (true) { /* PutFrom */
		enum ref_put r = put_unless_last(&d->count, seen);
		if (r == PUT_LIVE)
			return 0;
		if (r == PUT_UNDERFLOW)
			return -1; /* RefPut.Underflow: refused before any write */
		if ((VREAD(d->flags) & ALLOC) == 0)
			return -1;
		if (IL_CAS(d->count, 0, 1) == 1) /* TryPutLast */
			return 1;
		seen = VREAD(d->count);
	}
#endif
}

static void *owner(void *arg)
{
	VWRITE(p.count, 2); /* UnfreezeRefs(P, 2) */
	PLAIN_ST(q.flags, ALLOC); /* PrepNewPage(Q) */
	VWRITE(q.count, 1);     /* SetAllocated */
	return NULL;
}

static void *misuser(void *arg)
{
	int r = put_page(&p);
	refused_p = r < 0;
	freed_p = r == 1;
	r = put_page(&q);
	refused_q = r < 0;
	freed_q = r == 1;
	return NULL;
}

int main(void)
{
	pthread_t o, m;
	SPAWN(o, owner);
	SPAWN(m, misuser);
	JOIN(o);
	JOIN(m);
	assert(!freed_p); /* the owner's two references: a stale put takes one at most */
	assert(atomic_load(&p.count) == (refused_p ? 2 : 1));
	assert(atomic_load(&q.count) == (refused_q ? 1 : 0));
	assert(refused_q || freed_q); /* a put that Q's count took was its last */
	return 0;
}
