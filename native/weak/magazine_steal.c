/* The magazine hand-over: the owner's operations against a stealer (Drain).
 *
 * Mirrors src/PageCore/PerCpu/PageCaches.cs PopAsOwner / PushAsOwner with EnterSymmetric (Busy = 1 by a release
 * store, Interlocked.MemoryBarrier, an acquire load of StealPending) or EnterAsymmetric (no fence), PoolPop / PoolPush
 * (plain accesses to the one-entry Top), LeaveOwner (release store of Busy = 0), FreeSlow's way around a stolen
 * magazine (ReleaseCachedToCore); and src/PageCore/PerCpu/PageCaches.Slow.cs Drain(wait: false): AnnounceSteal
 * (release store of StealPending = 1, then the stealer's fence), an acquire load of Busy, EmptyMagazine, and the
 * release store of StealPending = 0. (Moved here from native/models/magazine_steal.c and extended to two operations.)
 *
 * Threads: the owner pops the magazine's one block B and pushes it back (an allocation and a free); the stealer drains
 * the magazine.
 *
 * Invariant: B is never handed out twice: after the joins it is in exactly one place (the magazine's Top, given back
 * by the stealer, or given back by the owner's free when the magazine was stolen), and the owner and the stealer never
 * hold it at once.
 *
 * The fixed form is both of the C# forms. Symmetric: the owner's Interlocked.MemoryBarrier between its store of Busy
 * and its load of StealPending, and the stealer's. Asymmetric with a working process-wide barrier
 * (Interlocked.MemoryBarrierProcessWide, Linux's expedited membarrier): C11 has no such operation, so it is modelled by
 * its effect, a full fence that the barrier runs on the owner's CPU at some instruction boundary of the owner's program,
 * ordered after everything the stealer did before its call (the .NET memory model: "each thread effectively performs a
 * full fence at an arbitrary point synchronized with the process-wide barrier"). Only one placement matters: between
 * the owner's store of Busy and its load of StealPending. Before the store, the owner's load comes after a fence that
 * follows the stealer's store of StealPending, so it reads 1 (an even stronger case); after the load, the fence orders
 * nothing the handshake reads. So the asymmetric form's owner is the symmetric owner with its fence put there by the
 * barrier: the same C11 program.
 *
 * LEGACY: the asymmetric form where the process-wide barrier is the runtime's mprotect fallback on a machine whose TLB
 * shootdown interrupts no other CPU (src/PageCore/Legacy/LegacyHandOver.cs): a fence on the stealer's CPU, nothing on
 * the owner's. Store buffering: the owner's store of Busy = 1 is not yet visible when the stealer loads Busy (0), and
 * the stealer's StealPending = 1 is not yet visible when the owner loads it (0). Both take the magazine and B has two
 * owners. Caught under RC11 and IMM (x86-TSO reorders exactly this too); not under SC.
 */
#include "weak.h"

#define NO_PAGE 0
#define B 7

static atomic_int busy;          /* MagazineHot.Busy */
static atomic_int steal_pending; /* MagazineHot.StealPending */
static atomic_int top = B;       /* MagazineHot.Top(0): owner data, the stealer's while it holds the magazine */
static atomic_int holders;       /* ghost: who holds B right now, bumped with relaxed RMWs (adds no order) */
static int owner_released, stealer_released;

static void hold(void)
{
	int was = atomic_fetch_add_explicit(&holders, 1, memory_order_relaxed);
	assert(was == 0); /* one block, two owners */
}

static void unhold(void)
{
	atomic_fetch_sub_explicit(&holders, 1, memory_order_relaxed);
}

/* EnterSymmetric (fixed) / EnterAsymmetric (legacy). */
static bool enter_owner(void)
{
	VWRITE(busy, 1);
#ifndef LEGACY
	IL_FENCE();
#endif
	return VREAD(steal_pending) == 0;
}

static void *owner(void *arg)
{
	/* PopAsOwner -> PoolPop */
	int got = NO_PAGE;
	if (enter_owner()) {
		got = PLAIN_LD(top);
		if (got != NO_PAGE) {
			hold();
			PLAIN_ST(top, NO_PAGE);
		}
	}
	VWRITE(busy, 0); /* LeaveOwner */
	if (got == NO_PAGE)
		return NULL; /* empty or stolen: the allocation goes around the magazine */

	/* The caller frees B again: PushAsOwner -> PoolPush, else FreeSlow -> ReleaseCachedToCore. */
	bool pushed = false;
	if (enter_owner() && PLAIN_LD(top) == NO_PAGE) {
		unhold();
		PLAIN_ST(top, got);
		pushed = true;
	}
	VWRITE(busy, 0);
	if (!pushed) {
		unhold();
		owner_released = 1;
	}
	return NULL;
}

static void *stealer(void *arg)
{
	VWRITE(steal_pending, 1); /* AnnounceSteal */
	IL_FENCE(); /* symmetric: Interlocked.MemoryBarrier; asymmetric: the process-wide barrier's own fence; legacy: the
		       stealer's local fence (LegacyHandOver.StealerFenceWithoutRemoteBarrier) */
	if (VREAD(busy) == 0) {
		int b = PLAIN_LD(top); /* EmptyMagazine */
		if (b != NO_PAGE) {
			hold();
			PLAIN_ST(top, NO_PAGE);
			unhold();
			stealer_released = 1;
		}
	}
	VWRITE(steal_pending, 0); /* the skip (Busy was seen) and the end of the steal alike */
	return NULL;
}

int main(void)
{
	pthread_t o, s;
	SPAWN(o, owner);
	SPAWN(s, stealer);
	JOIN(o);
	JOIN(s);
	assert((atomic_load(&top) == B) + owner_released + stealer_released == 1); /* B is in exactly one place */
	return 0;
}
