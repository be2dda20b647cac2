/* The magazine hand-over (src/PageCore/PerCpu/PageCaches.cs) under a weak memory model, checked with GenMC:
 *   genmc --imm -- native/models/magazine_steal.c                      symmetric form: verifies (exit 0)
 *   genmc --imm -- -DNO_REMOTE_BARRIER native/models/magazine_steal.c  asymmetric form whose process-wide barrier
 *                                                                      ran nothing on the owner's CPU: caught (exit 42)
 * The owner pops the one cached block inside its side of the handshake (EnterAsymmetric / EnterSymmetric, LeaveOwner);
 * the stealer takes it inside its side (AnnounceSteal, then a Busy check, as PageCaches.Drain). Checked: the block is
 * never handed out twice.
 *
 * NO_REMOTE_BARRIER is the asymmetric form where Interlocked.MemoryBarrierProcessWide is the runtime's mprotect
 * fallback: a TLB shootdown that is a fence on the stealer's CPU (the system call) and nothing on the owner's (arm64's
 * broadcast TLBI; x64 with INVLPGB). The owner's release store of Busy and its acquire load of StealPending then
 * reorder (store buffering), both sides read the other's flag as 0, and both take the block. Where the barrier does
 * run on the owner's CPU (expedited membarrier) it acts as the owner's fence below, which is the symmetric model. */
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>

#define NO_PAGE 0
#define BLOCK 7

static atomic_int busy;          /* MagazineHot.Busy: written by the owner */
static atomic_int steal_pending; /* MagazineHot.StealPending: written by the stealer */
static atomic_int top = BLOCK;   /* the magazine's one cached block (owner-only data, unless stolen) */
static int owner_got, stealer_got;

static void *owner(void *arg)
{
	atomic_store_explicit(&busy, 1, memory_order_release);
#ifndef NO_REMOTE_BARRIER
	atomic_thread_fence(memory_order_seq_cst); /* EnterSymmetric: Interlocked.MemoryBarrier */
#endif
	if (atomic_load_explicit(&steal_pending, memory_order_acquire) == 0) {
		owner_got = atomic_load_explicit(&top, memory_order_relaxed);
		atomic_store_explicit(&top, NO_PAGE, memory_order_relaxed);
	}
	atomic_store_explicit(&busy, 0, memory_order_release); /* LeaveOwner */
	return NULL;
}

static void *stealer(void *arg)
{
	atomic_store_explicit(&steal_pending, 1, memory_order_release); /* AnnounceSteal */
	atomic_thread_fence(memory_order_seq_cst); /* the stealer's own fence (the syscall, or Interlocked.MemoryBarrier) */
	if (atomic_load_explicit(&busy, memory_order_acquire) == 0) {
		stealer_got = atomic_load_explicit(&top, memory_order_relaxed);
		atomic_store_explicit(&top, NO_PAGE, memory_order_relaxed);
	}
	atomic_store_explicit(&steal_pending, 0, memory_order_release);
	return NULL;
}

int main(void)
{
	pthread_t o, s;
	pthread_create(&o, NULL, owner, NULL);
	pthread_create(&s, NULL, stealer, NULL);
	pthread_join(o, NULL);
	pthread_join(s, NULL);
	assert(!(owner_got == BLOCK && stealer_got == BLOCK)); /* one block, two owners */
	return 0;
}
