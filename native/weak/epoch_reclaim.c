/* Epochs: the reader's announce, the reclaim bound, and a deferred free.
 *
 * Mirrors src/PageCore/Epochs/EpochDomain.cs Enter/Announce (an acquire load of the global epoch, then
 * Interlocked.Exchange into the reader's slot; the default, symmetric form) and Exit (release store of 0), and
 * src/PageCore/Epochs/EpochDomain.Reclaim.cs Defer/NextTag (Interlocked.Increment of the global epoch after the caller's
 * unlink), SafeBound (the limit: an acquire load of the global epoch first; then OldestAnnounced: ScanFence =
 * Interlocked.MemoryBarrier, then acquire loads of the slots; the bound is min(limit, oldest)) and Pass (take the item,
 * then check its tag against the bound, then run it). The unlink and the reader's lookup are
 * src/PageCore/Epochs/PageCacheIndex.cs's: Rewrite's Interlocked.CompareExchange of the bucket, TryGet's Volatile.Read
 * of it inside the section, then plain reads of the node. The ConcurrentQueue of deferred items is one slot: a release
 * store to enqueue (its Volatile.Write of the slot's sequence number), an acquire load and a CAS to dequeue.
 *
 * Threads: a reader enters, looks the node X up and reads it, and leaves; an updater unlinks X and defers its free; a
 * reclaimer runs one pass, which frees X (its contents overwritten: the node is recycled) if its tag is within the bound.
 *
 * Invariant: no reader reads X after X was freed (a reader that found X reads it whole: the grace period covers it).
 *
 * LEGACY: src/PageCore/Legacy/LegacyEpochReclaim.cs: the bound from the slots only (OldestAnnounced, no limit term),
 * computed once before the items are taken. The reclaimer scans and sees no reader (bound = infinity); the reader enters
 * and loads X; the updater unlinks X and defers it; the reclaimer takes X and frees it while the reader reads it. No
 * check ever compared X's tag with a bound computed after X was deferred. Any model, SC included.
 */
#include "weak.h"

#define NONE 0x7fffffffffffffffL

static atomic_long epoch = 1;  /* the global epoch */
static atomic_long slot;       /* the reader's slot: 0 outside a section, else the epoch it announced */
static atomic_int bucket = 1;  /* 1: the bucket names node X; 0: X was unlinked */
static atomic_int x_key = 42;  /* X's contents (Key), overwritten when X is recycled */
static atomic_long queue;      /* the deferred queue: 0 or the tag of X's deferred free */

static void *reader(void *arg)
{
	long e = VREAD(epoch); /* Announce */
	IL_XCHG(slot, e);
	if (VREAD(bucket) == 1)
		assert(PLAIN_LD(x_key) == 42); /* a node found inside the section is never recycled under the reader */
	VWRITE(slot, 0L); /* Exit */
	return NULL;
}

static void *updater(void *arg)
{
	if (IL_CAS(bucket, 0, 1) == 1) { /* Rewrite: the bucket no longer names X */
		long tag = IL_ADD(epoch, 1L); /* Defer: NextTag */
		VWRITE(queue, tag);           /* Enqueue */
	}
	return NULL;
}

/* OldestAnnounced: the scan fence, then the slots. */
static long oldest_announced(void)
{
	IL_FENCE();
	long e = VREAD(slot);
	return e != 0 ? e : NONE;
}

static void *reclaimer(void *arg)
{
#ifdef LEGACY
	long safe = oldest_announced(); /* once, before the loop: every item deferred later is judged by it */
	long t = VREAD(queue);          /* TryPeek */
	if (t != 0 && t <= safe && IL_CAS(queue, 0L, t) == t)
		PLAIN_ST(x_key, -1); /* Run: X recycled */
#else
	long limit = VREAD(epoch); /* SafeBound: the limit first */
	long oldest = oldest_announced();
	long safe = limit < oldest ? limit : oldest;
	long t = VREAD(queue); /* Pass: TryDequeue, then the check */
	if (t != 0 && IL_CAS(queue, 0L, t) == t) {
		if (t <= safe)
			PLAIN_ST(x_key, -1); /* Run: X recycled */
		/* else Hold: a later pass checks it against its own bound */
	}
#endif
	return NULL;
}

int main(void)
{
	pthread_t r, u, c;
	SPAWN(r, reader);
	SPAWN(u, updater);
	SPAWN(c, reclaimer);
	JOIN(r);
	JOIN(u);
	JOIN(c);
	return 0;
}
