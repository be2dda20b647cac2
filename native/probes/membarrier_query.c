/* Asks the kernel, from C, what ProcessBarrier.QueryMembarrier (src/PageCore/Arena/ProcessBarrier.cs) asks it through
 * a P/Invoke, with the system's own headers for the syscall number and the commands: MEMBARRIER_CMD_QUERY, then
 * MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED. A test builds and runs it and compares the answers. Linux only.
 * Prints one line: "nr=N query=MASK register=RC expedited=0|1". */
#include <linux/membarrier.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	long mask = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
	long reg = -1;
	if (mask >= 0 && (mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		reg = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0);
	printf("nr=%d query=%ld register=%ld expedited=%d\n", (int)__NR_membarrier, mask, reg,
	       mask >= 0 && (mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED) && reg == 0);
	return 0;
}
