/* The C# memory operations of PageCore, as C11 atomics for GenMC (native/weak/run-weak.sh).
 *
 * The mapping (dotnet/runtime docs/design/specs/Memory-model.md):
 *   Volatile.Read(ref x)            VREAD(x)       an acquire load
 *   Volatile.Write(ref x, v)        VWRITE(x, v)   a release store
 *   a plain field access            PLAIN_*(x)     a relaxed access: every plain field these clients share is read by
 *                                                  another thread in some execution, and a racing plain access is
 *                                                  modelled as relaxed (never as a C non-atomic, whose race is UB)
 *   Interlocked.MemoryBarrier()     IL_FENCE()     atomic_thread_fence(seq_cst)
 *   Interlocked.X(...)              IL_*(...)      a seq_cst read-modify-write. The .NET memory model gives every
 *                                                  Interlocked method "full-fence semantics": no earlier access is
 *                                                  observable after it and no later one before it. A C11 seq_cst RMW
 *                                                  alone does not order a later acquire load of another location after
 *                                                  its store (store buffering stays allowed under RC11 and IMM), so by
 *                                                  default each IL_* is fence(seq_cst); RMW(seq_cst); fence(seq_cst).
 *                                                  -DINTERLOCKED_BARE drops the two fences: the bare C11 mapping, for
 *                                                  the informational runs that show which protocols lean on the fence.
 * The IL_* helpers return what the C# method returns: CompareExchange and Exchange the old value, Increment, Decrement
 * and Add the new value, And and Or the old value.
 */
#ifndef PAGECORE_WEAK_H
#define PAGECORE_WEAK_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <genmc.h>

#define VREAD(x) atomic_load_explicit(&(x), memory_order_acquire)
#define VWRITE(x, v) atomic_store_explicit(&(x), (v), memory_order_release)
#define PLAIN_LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define PLAIN_ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define IL_FENCE() atomic_thread_fence(memory_order_seq_cst)

#ifdef INTERLOCKED_BARE
#define IL_PRE() ((void)0)
#define IL_POST() ((void)0)
#else
#define IL_PRE() atomic_thread_fence(memory_order_seq_cst)
#define IL_POST() atomic_thread_fence(memory_order_seq_cst)
#endif

/* Interlocked.CompareExchange(ref x, desired, expected): the value found. */
#define IL_CAS(x, desired, expected)                                                                   \
	({                                                                                             \
		__typeof__(expected) __e = (expected);                                                 \
		IL_PRE();                                                                              \
		atomic_compare_exchange_strong_explicit(&(x), &__e, (desired), memory_order_seq_cst,   \
							memory_order_seq_cst);                         \
		IL_POST();                                                                             \
		__e;                                                                                   \
	})
/* Interlocked.Exchange(ref x, v): the value found. */
#define IL_XCHG(x, v)                                                                                  \
	({                                                                                             \
		IL_PRE();                                                                              \
		__auto_type __o = atomic_exchange_explicit(&(x), (v), memory_order_seq_cst);           \
		IL_POST();                                                                             \
		__o;                                                                                   \
	})
/* Interlocked.Add(ref x, v) (Increment: v = 1, Decrement: v = -1): the new value. */
#define IL_ADD(x, v)                                                                                   \
	({                                                                                             \
		IL_PRE();                                                                              \
		__auto_type __o = atomic_fetch_add_explicit(&(x), (v), memory_order_seq_cst);          \
		IL_POST();                                                                             \
		__o + (v);                                                                             \
	})
/* Interlocked.And / Interlocked.Or: the value found. */
#define IL_AND(x, v)                                                                                   \
	({                                                                                             \
		IL_PRE();                                                                              \
		__auto_type __o = atomic_fetch_and_explicit(&(x), (v), memory_order_seq_cst);          \
		IL_POST();                                                                             \
		__o;                                                                                   \
	})
#define IL_OR(x, v)                                                                                    \
	({                                                                                             \
		IL_PRE();                                                                              \
		__auto_type __o = atomic_fetch_or_explicit(&(x), (v), memory_order_seq_cst);           \
		IL_POST();                                                                             \
		__o;                                                                                   \
	})

/* PageRef.PutUnlessLast's outcomes (RefPut). */
enum ref_put { PUT_LIVE, PUT_LAST, PUT_UNDERFLOW };

/* PageRef.PutUnlessLast: CAS v -> v - 1 while v >= 2, going on from whatever value won a lost race. PUT_LIVE when it
 * dropped one; else nothing was written: PUT_LAST when it found 1 (the caller decides whether it may take the last
 * reference), PUT_UNDERFLOW when it found 0 or less (a put at zero, refused). */
static inline enum ref_put put_unless_last(atomic_int *count, int v)
{
	while (v > 1) {
		int s = IL_CAS(*count, v - 1, v);
		if (s == v)
			return PUT_LIVE;
		v = s;
	}
	return v == 1 ? PUT_LAST : PUT_UNDERFLOW;
}

/* A spin that waits for a condition other threads make true (SpinWait loops): the execution continues only where it
 * holds. GenMC's assume: the iterations that found it false wrote nothing, so dropping them loses no behaviour (their
 * failed Interlocked operations were full fences, which can only forbid executions). */
#define AWAIT(cond) __VERIFIER_assume(cond)

#define SPAWN(t, f) pthread_create(&(t), NULL, (f), NULL)
#define JOIN(t) pthread_join((t), NULL)

#endif
