// Replays a fragmentation trace of `pagecore-bench --fragmentation --trace FILE` on LLFree-C (github.com/luhsra/llfree-c,
// built beside the project by llfree-fragmentation.sh; none of its code is in this repository) and prints the same row
// as the C# replay: failed allocations by order, free frames after, order-9 blocks allocatable, their share.
//
// One thread, one core slot: LLFree's two-class classing (small frames, huge frames) with a reservation per class, the
// configuration its README calls simple. A free names the order and the class LLFree returned for its allocation.
#include "llfree.h"
#include "llfree_inner.h" // the struct llfree itself, so that it can live on the stack

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALLOC_FLAG 0x80000000u

static void *aligned(size_t size)
{
	void *p = aligned_alloc(LLFREE_CACHE_SIZE, (size + LLFREE_CACHE_SIZE - 1) / LLFREE_CACHE_SIZE * LLFREE_CACHE_SIZE);
	if (!p) {
		fprintf(stderr, "llfree_replay: out of memory for %zu bytes of metadata\n", size);
		exit(1);
	}
	memset(p, 0, size);
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: llfree_replay TRACE\n");
		return 64;
	}
	FILE *f = fopen(argv[1], "rb");
	if (!f) {
		perror(argv[1]);
		return 66;
	}
	char magic[8];
	uint64_t pages, count;
	if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "PCFRAG01", 8) != 0 || fread(&pages, 8, 1, f) != 1 ||
	    fread(&count, 8, 1, f) != 1) {
		fprintf(stderr, "llfree_replay: %s is not a PCFRAG01 trace\n", argv[1]);
		return 65;
	}
	uint32_t *trace = malloc(count * sizeof(uint32_t));
	if (!trace || fread(trace, sizeof(uint32_t), count, f) != count) {
		fprintf(stderr, "llfree_replay: %s is truncated\n", argv[1]);
		return 65;
	}
	fclose(f);

	llfree_classing_t classing = llfree_classing_simple(1);
	llfree_meta_size_t m = llfree_metadata_size(&classing, pages);
	llfree_meta_t meta = { .local = aligned(m.local), .trees = aligned(m.trees), .lower = aligned(m.lower) };
	llfree_t ll;
	if (!llfree_is_ok(llfree_init(&ll, pages, LLFREE_INIT_FREE, meta, &classing))) {
		fprintf(stderr, "llfree_replay: llfree_init failed for %llu frames\n", (unsigned long long)pages);
		return 1;
	}

	uint64_t allocs = 0;
	for (uint64_t i = 0; i < count; i++)
		allocs += (trace[i] & ALLOC_FLAG) != 0;
	uint64_t *frame = malloc(allocs * sizeof(uint64_t)); // frame of allocation n, or UINT64_MAX when it failed or was freed
	uint8_t *order_of = malloc(allocs);
	uint8_t *class_of = malloc(allocs); // the class LLFree gave the frame (a demotion can change it): its put names it
	long failed[10] = { 0 };
	uint64_t n = 0;
	for (uint64_t i = 0; i < count; i++) {
		uint32_t r = trace[i];
		if (r & ALLOC_FLAG) {
			uint8_t order = (uint8_t)(r & 0xF);
			llfree_result_t res = llfree_get(&ll, frame_id_none(), llfree_simple_request(1, order, 0));
			order_of[n] = order;
			class_of[n] = res.class;
			frame[n] = llfree_is_ok(res) ? res.frame.value : UINT64_MAX;
			if (!llfree_is_ok(res))
				failed[order]++;
			n++;
		} else if (frame[r] != UINT64_MAX) {
			if (!llfree_is_ok(llfree_put(&ll, frame_id(frame[r]), llreq(order_of[r], class_of[r], ll_some(0))))) {
				fprintf(stderr, "llfree_replay: put of frame %llu order %u failed\n", (unsigned long long)frame[r],
					order_of[r]);
				return 1;
			}
			frame[r] = UINT64_MAX;
		}
	}

	llfree_validate(&ll);
	llfree_drain(&ll);
	size_t free_frames = llfree_stats(&ll).free_frames;
	size_t huge = 0;
	while (llfree_is_ok(llfree_get(&ll, frame_id_none(), llfree_simple_request(1, 9, 0))))
		huge++;

	printf("| LLFree-C (simple classing, one core) | %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld | %zu | %zu | %.1f %% |\n", failed[0],
	       failed[1], failed[2], failed[3], failed[4], failed[5], failed[6], failed[7], failed[8], failed[9], free_frames,
	       huge, free_frames ? 100.0 * (double)(huge * 512) / (double)free_frames : 0.0);
	return 0;
}
