/* The per-CPU depot: a batch published in a slot word, taken whole.
 *
 * Mirrors src/PageCore/PerCpu/PageCaches.Slow.cs Spill (the batch's links written with plain stores to
 * PageDescriptor.Next), PushDepot (an acquire load of the slot == 0, then TryPublishBatch: CAS from 0, a full fence),
 * PopDepot (an acquire load of the slot != 0, then TakeBatch: Interlocked.Exchange with 0) and UnchainBatch (plain loads
 * of the links, each cleared by a plain store, and the "chain was corrupted" check).
 *
 * Threads: a spilling thread chains blocks 0 -> 1 (the word: count 2, first PFN + 1) and publishes the batch; two
 * refilling threads each try to take it.
 *
 * Invariant: a batch is taken by at most one taker, and the taker finds the whole chain the publisher wrote (never the
 * links of the blocks' earlier life). Block 0's link held 0 (end of chain) from its earlier life.
 *
 * LEGACY: the batch published by a plain store of the slot word after the links (no CAS, no fence: the relaxed store
 * the hot path was once tempted to use, since a slot read 0 just before). The store may become visible before the links
 * (RC11 and IMM; not SC, and not x86-TSO, whose stores stay in order): a taker reads the word, follows block 0's old
 * link (0), finds one block where the word says two, and hits "the chain was corrupted" (or hands the second block out
 * while its old holder still has it).
 */
#include "weak.h"

static atomic_long slot;        /* one depot slot: 0 or (count << 32) | (first PFN + 1) */
static atomic_uint next[2];     /* PageDescriptor.Next of blocks 0 and 1: PFN + 1 of the next block, 0 at the end */
static int taken[3];            /* blocks each taker got (thread-local counts, read after the joins) */

static void *spiller(void *arg)
{
	PLAIN_ST(next[0], 2); /* block 0 -> block 1 */
	PLAIN_ST(next[1], 0);
	long word = (2L << 32) | 1;
#ifdef LEGACY
	PLAIN_ST(slot, word);
#else
	if (VREAD(slot) == 0)
		assert(IL_CAS(slot, word, 0L) == 0); /* the only publisher: an empty slot stays empty until it publishes */
#endif
	return NULL;
}

static void *taker(void *arg)
{
	int id = (int)(long)arg;
	if (VREAD(slot) == 0)
		return NULL;
	long word = IL_XCHG(slot, 0L);
	if (word == 0)
		return NULL;
	int n = (int)(word >> 32);
	unsigned link = (unsigned)word;
	int i = 0;
	for (; i < n && link != 0; i++) { /* UnchainBatch */
		unsigned p = link - 1;
		link = PLAIN_LD(next[p]);
		PLAIN_ST(next[p], 0);
	}
	assert(i == n); /* "a per-CPU batch of N blocks held only i: the chain was corrupted" */
	taken[id] = i;
	return NULL;
}

int main(void)
{
	pthread_t s, t1, t2;
	SPAWN(s, spiller);
	pthread_create(&t1, NULL, taker, (void *)1L);
	pthread_create(&t2, NULL, taker, (void *)2L);
	JOIN(s);
	JOIN(t1);
	JOIN(t2);
	assert(taken[1] == 0 || taken[2] == 0); /* one taker per batch */
	assert(taken[1] + taken[2] + ((atomic_load(&slot) >> 32) & 0xffff) == 2); /* both blocks somewhere, once */
	return 0;
}
