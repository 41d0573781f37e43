/*
 * fuzz_mbox.c - libFuzzer harness: arbitrary bytes as a mailbox file that
 * somebody wrote by hand, through the shared mailbox code of popserver.c
 * (the same text as smtpmail.c's): mailbox_shape, then convert_lines, as a
 * server does before it serves or appends to such a mailbox.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Dmain=popserver_main \
 *         -o build/fuzz/fuzz_mbox tests/fuzz/fuzz_mbox.c         (make fuzz)
 *   build/fuzz/fuzz_mbox CORPUS tests/fuzz/seeds/mbox
 *
 * Besides memory errors it checks what the conversion promises (DESIGN.md:
 * no content of a hand-written mailbox is ever lost): the output is
 * records (CR LF lines, a "." line after each, as many as it says), and
 * its lines, unstuffed, are the input's lines that are not "." lines, in
 * order, each without the CR of its line end; only blank lines before a
 * message's first line are left out.
 */
#include "../../popserver.c"

#include <stdint.h>

/* fuzz_file - an unlinked temp file holding the n bytes at p */
static int fuzz_file(const void *p, size_t n)
{
	char path[] = "/tmp/fuzz-mbox-XXXXXX";
	int fd = mkstemp(path);

	if (fd < 0 || unlink(path) < 0 || (n && write_all(fd, p, n) < 0))
		abort();
	return fd;
}

/* expected_text - the input's lines that are not "." lines, each with LF,
 * but the blank lines that come before a message's first line */
static size_t expected_text(const uint8_t *in, size_t n, char *out)
{
	size_t len = 0;
	int in_message = 0;

	for (size_t i = 0; i < n;) {
		const uint8_t *lf = memchr(in + i, '\n', n - i);
		size_t end = lf ? (size_t)(lf - in) : n, text = end;

		if (text > i && in[text - 1] == '\r')
			text--;
		if (text == i + 1 && in[i] == '.')
			in_message = 0;
		else if (in_message || text > i) {
			memcpy(out + len, in + i, text - i);
			len += text - i;
			out[len++] = '\n';
			in_message = 1;
		}
		i = end + 1;
	}
	return len;
}

/* records_text - check out[0 .. n) is records; return their lines, each
 * unstuffed and with LF, and count the records in *records */
static size_t records_text(const char *out, size_t n, char *text, long *records)
{
	size_t len = 0;

	*records = 0;
	for (size_t i = 0; i < n;) {
		const char *lf = memchr(out + i, '\n', n - i);
		size_t end;

		if (!lf || lf == out + i || lf[-1] != '\r')
			abort();	/* every line ends in CR LF */
		end = (size_t)(lf - out) - 1;
		if (end == i + 1 && out[i] == '.')
			++*records;
		else {
			size_t from = i + (out[i] == '.');	/* unstuff */

			if (out[i] == '.' && (end == i + 1 || out[i + 1] != '.') && end != i + 1)
				abort();	/* a lone leading dot: not stuffed */
			memcpy(text + len, out + from, end - from);
			len += end - from;
			text[len++] = '\n';
		}
		i = (size_t)(lf - out) + 1;
	}
	if (n > 0 && (n < 5 || memcmp(out + n - 5, "\r\n.\r\n", 5) != 0))
		abort();	/* ends with its last record's "." line */
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct file_out o = { .len = 0 };
	struct file_in f = { .len = 0 };
	int in = fuzz_file(data, size);
	size_t cap = 3 * size + 8;
	char *out = malloc(cap), *want = malloc(size + 8), *got = malloc(cap);
	off_t end;
	long messages, records;
	ssize_t k;

	if (!out || !want || !got || mailbox_shape(in, (off_t)size, -1, &end) < 0
	    || end < 0 || end > (off_t)size)
		abort();
	o.fd = fuzz_file(NULL, 0);
	f.fd = in;
	messages = convert_lines(&f, 0, (off_t)size, &o);
	if (messages < 0 || write_all(o.fd, o.data, o.len) < 0
	    || (k = pread_full(o.fd, out, cap, 0)) < 0 || (size_t)k >= cap)
		abort();
	if (records_text(out, (size_t)k, got, &records) != expected_text(data, size, want)
	    || memcmp(got, want, expected_text(data, size, want)) != 0 || records != messages)
		abort();
	free(out);
	free(want);
	free(got);
	close(in);
	close(o.fd);
	return 0;
}
