/* The shared allocator's bitfield claim and release, and the small/huge Dekker handshake.
 *
 * Mirrors src/PageCore/Allocator/FrameAllocator.cs: TryClaimInWord (status read, word read, CAS of the run, then
 * ClaimStands), ClearBit (the order-0 free, Interlocked.And), TryAllocHuge's GroupLooksFree + TryClaimChunk (CAS of the
 * status Normal -> Huge, then AllWordsClear, rollback by a release store) and ReleaseChunk (release store of Normal).
 * One chunk of one word and two pages stands for the chunk of eight words and 512 pages.
 *
 * Threads: two small claimers of an order-0 page (each owns the page it claimed, then frees it) and one huge claimer
 * (owns the whole chunk, then frees it).
 *
 * Invariant (A1): a page is in at most one block at a time. Each owner writes its id into the page's owner word
 * (relaxed: the page's contents, written by whoever owns it) and reads it back before it frees; reading another id
 * means another claim stood at the same time. After the joins the word and the status are free again.
 *
 * LEGACY: the claim as a plain read-modify-write (read the word, store word | bit) instead of the CAS: the form a
 * count-free bitfield must not take. Two interleavings break it: two small claimers read the word clear and both store
 * the bit (lost update, any model); and the small claimer's relaxed store waits in a store buffer while its acquire
 * load of the status reads Normal, and the huge claimer's CAS and acquire load of the word read it clear (store
 * buffering: RC11 and IMM; TSO too). Both claims stand; the page has two owners.
 */
#include "weak.h"

#define NORMAL 0
#define HUGE 1

static atomic_ulong word;    /* _bits[0]: bit i set = page i in use */
static atomic_int status;    /* _status[0] */
static atomic_int owner[2];  /* the pages' contents: the id of whoever owns the page */

static void own(int page, int id)
{
	PLAIN_ST(owner[page], id);
	assert(PLAIN_LD(owner[page]) == id); /* nobody else owns it meanwhile */
}

/* FrameAllocator.ClaimStands for word 0 of a Normal chunk (HeadOnly is not modelled). */
static bool claim_stands(void)
{
	return VREAD(status) == NORMAL;
}

/* TryClaimInWord(word 0, order 0) and, when it stood, the owner's use and ClearBit. */
static void *small(void *arg)
{
	int id = (int)(long)arg;
	if (VREAD(status) == HUGE)
		return NULL;
	unsigned long v = VREAD(word);
	while (true) {
		unsigned long free = ~v & 3UL;
		if (free == 0)
			return NULL;
		unsigned long mask = free & -free;
#ifdef LEGACY
		v = PLAIN_LD(word);
		if (v & mask)
			continue;
		PLAIN_ST(word, v | mask);
#else
		unsigned long seen = IL_CAS(word, v | mask, v);
		if (seen != v) {
			v = seen; /* lost a race for this word: retry on the value that won */
			continue;
		}
#endif
		if (claim_stands()) {
			int page = mask == 1 ? 0 : 1;
			own(page, id);
			IL_AND(word, ~mask); /* ClearBit: the free */
			return NULL;
		}
		IL_AND(word, ~mask); /* the handshake saw Huge: take the bit back */
		return NULL;
	}
}

/* TryAllocHuge of the one chunk: GroupLooksFree, TryClaimChunk; then the owner's use and ReleaseChunk. */
static void *huge(void *arg)
{
	if (VREAD(status) != NORMAL || VREAD(word) != 0)
		return NULL; /* GroupLooksFree */
	if (IL_CAS(status, HUGE, NORMAL) != NORMAL)
		return NULL;
	if (VREAD(word) != 0) { /* AllWordsClear failed: a small claim stands or is in flight */
		VWRITE(status, NORMAL);
		return NULL;
	}
	own(0, 3);
	own(1, 3);
	VWRITE(status, NORMAL); /* ReleaseChunk */
	return NULL;
}

int main(void)
{
	pthread_t a, b, h;
	pthread_create(&a, NULL, small, (void *)1L);
	pthread_create(&b, NULL, small, (void *)2L);
	pthread_create(&h, NULL, huge, NULL);
	JOIN(a);
	JOIN(b);
	JOIN(h);
	assert(atomic_load(&word) == 0 && atomic_load(&status) == NORMAL);
	return 0;
}
