/* wasm86 benchmark guest: count the primes below N by trial division, the classic way.
 * Usage: isprime N   (prints the count, so the work cannot be optimised away)
 * Built static for i386: i686-linux-gnu-gcc -O2 -static (images/build.sh bench). */
#include <stdio.h>
#include <stdlib.h>

static __attribute__((noinline)) int isPrime(int n)
{
	int d;
	if (n < 2)
		return 0;
	for (d = 2; d * d <= n; d++)
		if (n % d == 0)
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	int n, count = 0, limit;
	if (argc != 2 || (limit = atoi(argv[1])) < 2) {
		fprintf(stderr, "usage: isprime N (N >= 2)\n");
		return 2;
	}
	for (n = 2; n < limit; n++)
		count += isPrime(n);
	printf("%d\n", count);
	return 0;
}
