/* wasm86 benchmark guest: a separate static program that does nothing, for the fork/exec
 * loop of /bench/run (busybox's own `true` is a shell builtin and would not exec). */
int main(void)
{
	return 0;
}
