/* wasm86 benchmark guest: writes BYTES bytes of deterministic, text-like pseudo-random data
 * (words from a fixed vocabulary with a skewed distribution, punctuation and line breaks) to
 * stdout: the input of the gzip workload. The same BYTES always gives the same bytes.
 * Usage: gen BYTES */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const words[] = {
	"the", "of", "and", "to", "a", "in", "is", "it", "that", "was", "for", "on", "are", "with",
	"as", "be", "at", "one", "have", "this", "from", "by", "hot", "word", "but", "what", "some",
	"we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how",
	"said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about",
	"many", "then", "them", "write", "would", "like", "so", "these", "her", "long", "make",
	"thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did",
	"number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call",
	"first", "who", "may", "down", "side", "been", "now", "find", "processor", "interrupt",
	"emulator", "register", "segment", "descriptor", "paging", "kernel", "busybox", "serial",
	"benchmark", "instruction", "translation", "lookaside", "buffer", "deterministic",
};

static unsigned long long state = 0x2545F4914F6CDD1DULL;

static unsigned next(void)
{
	/* xorshift64* */
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return (unsigned)((state * 0x2545F4914F6CDD1DULL) >> 32);
}

int main(int argc, char **argv)
{
	static char buf[1 << 16];
	long total, done = 0;
	size_t len = 0, col = 0;
	const size_t nwords = sizeof words / sizeof words[0];
	if (argc != 2 || (total = atol(argv[1])) < 0) {
		fprintf(stderr, "usage: gen BYTES\n");
		return 2;
	}
	while (done < total) {
		unsigned r = next();
		/* skewed: small indices (common words) are much more likely */
		size_t i = (size_t)(((unsigned long long)(r & 0xFFFF) * (r & 0xFFFF) >> 16) * nwords >> 16);
		const char *w = words[i];
		char tmp[32];
		size_t n = strlen(w);
		memcpy(tmp, w, n);
		if (col == 0)
			tmp[0] = (char)(tmp[0] - 'a' + 'A');
		r >>= 16;
		if ((r & 31) == 0)
			tmp[n++] = ',';
		if ((r & 63) == 1) {
			tmp[n++] = '.';
			if ((r & 0x700) == 0) {
				tmp[n++] = '\n';
				col = 0;
			}
		}
		if (n && tmp[n - 1] != '\n') {
			col += n + 1;
			if (col > 72) {
				tmp[n++] = '\n';
				col = 0;
			} else {
				tmp[n++] = ' ';
			}
		}
		if ((long)n > total - done)
			n = (size_t)(total - done);
		if (len + n > sizeof buf) {
			if (fwrite(buf, 1, len, stdout) != len)
				return 1;
			len = 0;
		}
		memcpy(buf + len, tmp, n);
		len += n;
		done += (long)n;
	}
	if (fwrite(buf, 1, len, stdout) != len)
		return 1;
	return fflush(stdout) ? 1 : 0;
}
