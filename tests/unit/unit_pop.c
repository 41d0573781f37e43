/*
 * unit_pop.c - table-driven unit tests of popserver.c's pure functions:
 * TOP's cut, the record splitter (next_dot_line, scan_chunk, with a chunk
 * boundary anywhere) and the UIDLs (trace_len, uidl_unique), message numbers, the argument splitter, and the
 * shared mailbox code (crashed tails, the conversion of mailboxes written
 * by another hand), and the wrong-password penalty (its delay, and the
 * parent's bounded table).
 *
 *   cc -O1 -g -fsanitize=address,undefined -Wall -Wextra -Werror \
 *      -Dmain=popserver_main -o build/unit/unit_pop tests/unit/unit_pop.c
 *   build/unit/unit_pop [group]         (tests/test_unit.py does this)
 *
 * Expected values come from RFC 1939 and DESIGN.md "Record format", and
 * for the penalty from Dovecot's (doubling, at most 15 s), not from running
 * the code.
 */
#include "../../popserver.c"
#include "unit.h"

#define BYTES(s) s, sizeof s - 1

/* ---------------------------------------------------------------- top_cut */

/* top_feed - what TOP sends of rec for n body lines, fed to top_cut as
 * cmd_top does: a first piece of `first` bytes (0: all), then pieces of
 * `chunk` bytes, until it says done */
static size_t top_feed(const char *rec, size_t len, unsigned long n, size_t first,
		       size_t chunk)
{
	struct top_state t = { 0, n, 0 };
	size_t off = 0, calls = 0;
	int done = 0;

	while (off < len && !done) {
		size_t want = calls++ == 0 && first ? first : chunk;

		if (want > len - off)
			want = len - off;
		off += top_cut(rec + off, want, &t, &done);
	}
	return off;
}

struct top_case {
	const char *name;
	const char *rec;
	size_t len;
	unsigned long lines;
	const char *sent;	/* a prefix of rec */
	size_t sent_len;
};

#define HDR "From: a@b.example\r\nSubject: s\r\n"

static const struct top_case top_cases[] = {
	/* RFC 1939 TOP: the headers, the blank line, then n body lines */
	{ "n=0", BYTES(HDR "\r\nL1\r\nL2\r\n..L3\r\n"), 0, BYTES(HDR "\r\n") },
	{ "n=1", BYTES(HDR "\r\nL1\r\nL2\r\n..L3\r\n"), 1, BYTES(HDR "\r\nL1\r\n") },
	{ "n=2", BYTES(HDR "\r\nL1\r\nL2\r\n..L3\r\n"), 2, BYTES(HDR "\r\nL1\r\nL2\r\n") },
	{ "n=3, all lines", BYTES(HDR "\r\nL1\r\nL2\r\n..L3\r\n"), 3,
	  BYTES(HDR "\r\nL1\r\nL2\r\n..L3\r\n") },
	/* "If the number of lines requested is greater than the number of
	 * lines in the body, the POP3 server sends the entire message." */
	{ "n past the end", BYTES(HDR "\r\nL1\r\nL2\r\n..L3\r\n"), 4,
	  BYTES(HDR "\r\nL1\r\nL2\r\n..L3\r\n") },
	{ "n huge", BYTES(HDR "\r\nL1\r\n"), ULONG_MAX, BYTES(HDR "\r\nL1\r\n") },
	{ "empty body lines count", BYTES(HDR "\r\n\r\n\r\nL3\r\n"), 2, BYTES(HDR "\r\n\r\n\r\n") },
	{ "headers only", BYTES(HDR), 0, BYTES(HDR) },
	{ "empty body", BYTES(HDR "\r\n"), 0, BYTES(HDR "\r\n") },
	{ "empty body, n=5", BYTES(HDR "\r\n"), 5, BYTES(HDR "\r\n") },
	{ "no headers", BYTES("\r\nb1\r\nb2\r\n"), 1, BYTES("\r\nb1\r\n") },
	/* RFC 5322 2.2.3: a folded header line is not the blank line */
	{ "folded header", BYTES("Subject: a\r\n b\r\n\t c\r\n\r\nx\r\n"), 0,
	  BYTES("Subject: a\r\n b\r\n\t c\r\n\r\n") },
	{ "one-letter header lines", BYTES("A\r\nB\r\n\r\nx\r\ny\r\n"), 1,
	  BYTES("A\r\nB\r\n\r\nx\r\n") },
	{ NULL, NULL, 0, 0, NULL, 0 }
};

static void top_one(const struct top_case *c)
{
	char name[128];

	snprintf(name, sizeof name, "%s, whole", c->name);
	unit_long("top_cut", name, (long long)c->sent_len,
		  (long long)top_feed(c->rec, c->len, c->lines, 0, c->len));
	for (size_t k = 1; k <= c->len; k++) {
		snprintf(name, sizeof name, "%s, split at %zu", c->name, k);
		unit_long("top_cut", name, (long long)c->sent_len,
			  (long long)top_feed(c->rec, c->len, c->lines, k, c->len));
	}
	snprintf(name, sizeof name, "%s, byte by byte", c->name);
	unit_long("top_cut", name, (long long)c->sent_len,
		  (long long)top_feed(c->rec, c->len, c->lines, 0, 1));
}

static void group_top_cut(void)
{
	char rec[1200], *p = rec;

	for (const struct top_case *c = top_cases; c->name; c++)
		top_one(c);
	/* a header line longer than any first read, then the blank line */
	p += snprintf(p, 16, "Subject: ");
	memset(p, 'x', 1000);
	p += 1000;
	p += snprintf(p, 16, "\r\n\r\nbody\r\n");
	unit_long("top_cut", "long header, n=0", (long long)(p - rec) - 6,
		  (long long)top_feed(rec, (size_t)(p - rec), 0, 0, 7));
	unit_long("top_cut", "long header, n=1", (long long)(p - rec),
		  (long long)top_feed(rec, (size_t)(p - rec), 1, 0, 7));
}

/* ---------------------------------------------------------------- next_dot_line */

static const struct {
	const char *name;
	const char *buf;
	size_t n, from;
	int line_start;
	size_t want;
} dot_cases[] = {
	{ "dot at a line start", BYTES(".a"), 0, 1, 0 },
	{ "dot, not a line start", BYTES(".a"), 0, 0, 2 },
	{ "second line", BYTES("a\r\n.b"), 0, 1, 3 },
	{ "third line", BYTES("a\r\nb\r\n.c"), 0, 1, 6 },
	{ "dot inside a line", BYTES("a.b\r\nc"), 0, 1, 6 },
	{ "no dot", BYTES("abc"), 0, 1, 3 },
	{ "line start at the end", BYTES("a\r\n"), 0, 1, 3 },
	{ "dot is the last byte", BYTES("a\n."), 0, 1, 2 },
	{ "after LF first", BYTES("\n."), 0, 0, 1 },
	{ "empty", BYTES(""), 0, 1, 0 },
	{ "from the dot itself", BYTES("x\r\n.a\r\n.b"), 3, 1, 3 },
	{ "from past the first dot", BYTES("x\r\n.a\r\n.b"), 4, 1, 7 },
	{ NULL, NULL, 0, 0, 0, 0 }
};

static void group_next_dot_line(void)
{
	for (int i = 0; dot_cases[i].name; i++)
		unit_long("next_dot_line", dot_cases[i].name, (long long)dot_cases[i].want,
			  (long long)next_dot_line(dot_cases[i].buf, dot_cases[i].n,
						   dot_cases[i].from, dot_cases[i].line_start));
}

/* ---------------------------------------------------------------- scan_chunk */

/* ref_fnv_on - FNV-1a 64 as published (prime 2^40 + 2^8 + 0xb3), continued from h */
static uint64_t ref_fnv_on(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * UINT64_C(1099511628211);
	return h;
}

/* ref_fnv - FNV-1a 64 from its offset basis */
static uint64_t ref_fnv(const char *p, size_t n)
{
	return ref_fnv_on(UINT64_C(14695981039346656037), p, n);
}

/* ref_uidl - a record's UIDL by the rule of DESIGN.md "POP3", given the
 * length of its trace (0: none): FNV-1a of the trace, then of the
 * record's length in decimal; without a trace FNV-1a of the whole record */
static uint64_t ref_uidl(const char *p, size_t len, size_t trace)
{
	char digits[32];

	if (!trace)
		return ref_fnv(p, len);
	snprintf(digits, sizeof digits, "%zu", len);
	return ref_fnv_on(ref_fnv(p, trace), digits, strlen(digits));
}

/* smtpmail's trace lines (DESIGN.md "POP3"): a Return-Path line, then a
 * Received field naming smtpmail, its continuation lines included */
#define TRACE_SMTP "Return-Path: <a@b.example>\r\nReceived: from c.example ([192.0.2.1])\r\n" \
	"\tby mx.example (smtpmail) with ESMTP id 17A3.1F.1\r\n\tfor <u@mx.example>; " \
	"Mon, 23 Nov 2026 09:00:00 +0000\r\n"
#define TRACE_FOLDED "Return-Path: <>\r\nReceived: from d ([IPv6:2001:db8::1])\r\n" \
	"\tby mx (smtpmail) with SMTP id 2\r\n\tfor <u@mx>;\r\n Mon, 23 Nov 2026\r\n"

/* A mailbox (DESIGN.md "Record format"): records of CRLF lines, stuffed,
 * each ended by the line "."; the size excludes the stuffed dots. trace
 * is the length of the record's trace lines by that rule, 0: none. */
struct rec {
	const char *bytes;
	size_t len;
	long stuffed;
	size_t trace;
};

static const struct rec recs[] = {
	{ BYTES("Return-Path: <a@b>\r\nSubject: x\r\n\r\nhello\r\n..dot\r\n"), 1, 0 },
	{ BYTES("Subject: y\r\n\r\n..\r\n...\r\nx.\r\n"), 2, 0 },
	{ BYTES("\r\n"), 0, 0 },
	{ BYTES("To: c@d\r\n\r\n.. \r\n.\t\r\n"), 2, 0 },	/* dot lines, not "." CRLF */
	{ BYTES(TRACE_SMTP "Subject: s\r\n\r\nbody\r\n..dot\r\n"), 1, sizeof TRACE_SMTP - 1 },
	/* the same trace and length, another body: the same hash */
	{ BYTES(TRACE_SMTP "Subject: t\r\n\r\nBODY\r\n..DOT\r\n"), 1, sizeof TRACE_SMTP - 1 },
	/* a continuation line may start with a space (RFC 5322 2.2.3) */
	{ BYTES(TRACE_FOLDED "X: y\r\n\r\n"), 0, sizeof TRACE_FOLDED - 1 },
	{ BYTES(TRACE_SMTP), 0, sizeof TRACE_SMTP - 1 },	/* an empty message */
	/* another server's Received line: all bytes hashed */
	{ BYTES("Return-Path: <a@b>\r\nReceived: from x by y with SMTP id 3\r\n\tfor <c@d>\r\n"
		"\r\nbody\r\n"), 0, 0 },
	/* smtpmail named outside the Received field */
	{ BYTES("Return-Path: <a@b>\r\nReceived: from x ([192.0.2.1])\r\n"
		"X-Note: by h (smtpmail) with SMTP id 4\r\n\r\nb\r\n"), 0, 0 },
	/* Received not right after Return-Path */
	{ BYTES("Return-Path: <a@b>\r\nSubject: s\r\nReceived: from x ([192.0.2.1])\r\n"
		"\tby h (smtpmail) with SMTP id 5\r\n\r\nb\r\n"), 0, 0 },
};
enum { NRECS = sizeof recs / sizeof recs[0] };

/* scan_mem - index file[0, total) as scan_records does a file, the chunk
 * sizes given: first, then chunk (first 0: chunk throughout) */
static void scan_mem(const char *file, size_t total, size_t first, size_t chunk,
		     struct mbox_index *ix, off_t *end)
{
	static struct scan sc;	/* 2 KiB and more: not on the stack */
	size_t off = 0;

	scan_start(&sc, 0);
	*end = 0;
	ix->count = 0;
	while (off < total) {
		size_t want = off == 0 && first ? first : chunk;
		ssize_t used;

		if (want > total - off)
			want = total - off;
		used = scan_chunk(file + off, want, (off_t)off, off + want == total, &sc, ix, end);
		if (used <= 0)
			break;	/* as scan_records: never loop in place */
		off += (size_t)used;
	}
}

/* scan_verify - the index against recs[0, nrec) laid out from offset 0 */
static void scan_verify(const char *how, const struct mbox_index *ix, off_t end,
			int nrec)
{
	char name[160];
	off_t off = 0;

	unit_long("scan_chunk count", how, nrec, (long long)ix->count);
	for (int i = 0; i < nrec && (size_t)i < ix->count; i++) {
		snprintf(name, sizeof name, "%s, record %d", how, i + 1);
		unit_long("scan_chunk offset", name, (long long)off, (long long)ix->start[i]);
		unit_long("scan_chunk length", name, (long long)recs[i].len,
			  (long long)msg_length(ix, (size_t)i));
		unit_long("scan_chunk size", name, (long long)recs[i].len - recs[i].stuffed,
			  (long long)msg_size(ix, (size_t)i));
		unit_check(!msg_deleted(ix, (size_t)i), "scan_chunk deleted", name, "not deleted",
			   "deleted");
		unit_check(ix->uidl[i] == ref_uidl(recs[i].bytes, recs[i].len, recs[i].trace),
			   "scan_chunk uidl", name, recs[i].trace ? "FNV-1a of trace and length"
			   : "FNV-1a of the record", "another hash");
		off += (off_t)recs[i].len + 3;
	}
	unit_long("scan_chunk end", how, (long long)off, (long long)end);
}

/* scan_file - recs[0, nrec) and a tail; every way of cutting it in chunks */
static void scan_file(const char *label, int nrec, const char *tail, size_t tail_len)
{
	char file[2048], how[160];
	size_t total = 0;
	struct mbox_index ix = { NULL, NULL, NULL, 0, 0, 0 };
	off_t end;

	for (int i = 0; i < nrec; i++) {
		if (total + recs[i].len + 3 + tail_len > sizeof file)
			abort();	/* the table outgrew the buffer */
		memcpy(file + total, recs[i].bytes, recs[i].len);
		memcpy(file + total + recs[i].len, ".\r\n", 3);
		total += recs[i].len + 3;
	}
	memcpy(file + total, tail, tail_len);
	total += tail_len;
	/* scan_records reads at least 3 bytes a chunk but at the end (its
	 * chunks are SCAN_CHUNK): every chunk size from 3 up */
	for (size_t c = 3; c <= total + 1; c++) {
		snprintf(how, sizeof how, "%s, chunks of %zu", label, c);
		scan_mem(file, total, 0, c, &ix, &end);
		scan_verify(how, &ix, end, nrec);
	}
	for (size_t k = 3; k < total; k++) {
		snprintf(how, sizeof how, "%s, split at %zu", label, k);
		scan_mem(file, total, k, total, &ix, &end);
		scan_verify(how, &ix, end, nrec);
	}
	index_free(&ix);
}

static void group_scan_chunk(void)
{
	/* the hash the UIDLs use, against FNV's published test vectors */
	unit_check(ref_fnv("", 0) == UINT64_C(0xcbf29ce484222325), "ref_fnv", "\"\"", "", "");
	unit_check(ref_fnv("a", 1) == UINT64_C(0xaf63dc4c8601ec8c), "ref_fnv", "a", "", "");
	unit_check(fnv1a(FNV_OFFSET, "foobar", 6) == UINT64_C(0x85944171f73967e8), "fnv1a",
		   "foobar", "0x85944171f73967e8", "another hash");

	scan_file("all records", NRECS, "", 0);
	/* a crashed append's partial tail is not a record (DESIGN.md) */
	scan_file("partial tail", NRECS, BYTES("Return-Path: <c@d>\r\npart"));
	scan_file("tail ends in a dot line start", 2, BYTES("x\r\n."));
	scan_file("tail ends in dot CR", 2, BYTES("x\r\n.\r"));
	scan_file("tail is a stuffed line", 1, BYTES("..\r\n"));
	scan_file("no complete record", 0, BYTES("Return-Path: <c@d>\r\nSubject: z\r\n"));
	scan_file("one record", 1, "", 0);
}

/* ---------------------------------------------------------------- UIDLs */

/* long_trace - a record whose trace lines are tlen bytes (a long sender
 * fills them out), then a body or none, and its "." line; its length */
static size_t long_trace(char *out, size_t tlen, int with_body)
{
	static const char rest[] = ">\r\nReceived: from c ([192.0.2.1])\r\n"
		"\tby mx (smtpmail) with SMTP id 9\r\n", body[] = "Subject: w\r\n\r\nbody\r\n.\r\n";
	size_t fill = tlen - 14 - (sizeof rest - 1);

	memcpy(out, "Return-Path: <", 14);
	memset(out + 14, 'x', fill);
	memcpy(out + 14 + fill, rest, sizeof rest - 1);
	if (!with_body) {
		memcpy(out + tlen, ".\r\n", 3);
		return tlen;
	}
	memcpy(out + tlen, body, sizeof body - 1);
	return tlen + sizeof body - 1 - 3;	/* the "." line is not the record's */
}

/* group_uidl_window - DESIGN.md "POP3": the trace must take less than 2048 bytes;
 * a longer one is no trace, and the whole record is hashed. With a body
 * and without, chunk ends around the window's edge. */
static void group_uidl_window(void)
{
	static const size_t chunks[] = { 3, 5, 64, 1000, 2046, 2047, 2048, 2049, 4096, 16384 };
	static const struct { size_t tlen; int body; size_t trace; } lay[] = {
		{ 2047, 1, 2047 }, { 2048, 1, 0 }, { 2047, 0, 2047 }, { 2048, 0, 0 }
	};
	static char file[16384];
	static struct scan sc;
	struct mbox_index ix = { NULL, NULL, NULL, 0, 0, 0 };
	size_t at[4], len[4], total = 0;
	char how[64];

	for (int r = 0; r < 4; r++) {
		at[r] = total;
		len[r] = long_trace(file + total, lay[r].tlen, lay[r].body);
		total += len[r] + 3;
	}
	for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
		size_t off = 0;
		off_t end = 0;

		scan_start(&sc, 0);
		ix.count = 0;
		while (off < total) {
			size_t want = chunks[c] < total - off ? chunks[c] : total - off;
			ssize_t used = scan_chunk(file + off, want, (off_t)off, off + want == total,
						  &sc, &ix, &end);

			if (used <= 0)
				break;
			off += (size_t)used;
		}
		unit_long("uidl window count", "4 records", 4, (long long)ix.count);
		for (int r = 0; r < 4 && ix.count == 4; r++) {
			snprintf(how, sizeof how, "%zu-byte trace, %s, chunks of %zu", lay[r].tlen,
				 lay[r].body ? "a body" : "no body", chunks[c]);
			unit_check(ix.uidl[r] == ref_uidl(file + at[r], len[r], lay[r].trace),
				   "uidl window", how, lay[r].trace ? "hash of trace and length"
				   : "hash of the whole record", "another hash");
		}
	}
	index_free(&ix);
}

static const struct {
	const char *name, *p;
	size_t n;
	int whole;
	long want;
} trace_cases[] = {
	{ "no trace", BYTES("From: a@b\r\n\r\nx\r\n"), 1, 0 },
	{ "cut in Return-Path", BYTES("Return-Pa"), 0, -1 },
	{ "cut in Return-Path, whole", BYTES("Return-Pa"), 1, 0 },
	{ "cut in Received", BYTES("Return-Path: <a@b>\r\nRecei"), 0, -1 },
	/* the next line could go on with the field: cannot tell yet */
	{ "the trace, nothing after", BYTES(TRACE_SMTP), 0, -1 },
	{ "the trace, nothing after, whole", BYTES(TRACE_SMTP), 1, sizeof TRACE_SMTP - 1 },
	{ "the trace, a header after", BYTES(TRACE_SMTP "S"), 0, sizeof TRACE_SMTP - 1 },
	{ "the trace, a continuation after", BYTES(TRACE_SMTP " x"), 0, -1 },
	{ "the trace, a continuation after, whole", BYTES(TRACE_SMTP " x"), 1, 0 },
	{ NULL, NULL, 0, 0, 0 }
};

/* group_trace_len - where trace_len can tell and what it says */
static void group_trace_len(void)
{
	for (int i = 0; trace_cases[i].name; i++)
		unit_long("trace_len", trace_cases[i].name, trace_cases[i].want,
			  trace_len(trace_cases[i].p, trace_cases[i].n, trace_cases[i].whole));
}

/* group_uidl_unique - RFC 1939 7: distinct ids; the k-th later copy of a
 * hash (file order) hashes on over "#k", the first keeps its own */
static void group_uidl_unique(void)
{
	uint64_t h[5] = { 11, 22, 11, 11, 33 }, a = 11;
	struct mbox_index ix = { NULL, h, NULL, 5, 5, 0 };

	unit_long("uidl_unique", "copies", 0, uidl_unique(&ix));
	unit_check(h[0] == 11 && h[1] == 22 && h[4] == 33, "uidl_unique", "copies",
		   "the first copy and the others keep theirs", "changed");
	unit_check(h[2] == ref_fnv_on(a, BYTES("#1")), "uidl_unique", "copies",
		   "the second copy: hash over #1", "another");
	unit_check(h[3] == ref_fnv_on(a, BYTES("#2")), "uidl_unique", "copies",
		   "the third copy: hash over #2", "another");
	h[0] = 5, h[1] = 4, h[2] = 3;
	ix.count = 3;
	unit_long("uidl_unique", "distinct", 0, uidl_unique(&ix));
	unit_check(h[0] == 5 && h[1] == 4 && h[2] == 3, "uidl_unique", "distinct",
		   "unchanged", "changed");
	ix.count = 0;
	unit_long("uidl_unique", "empty", 0, uidl_unique(&ix));
}

/* ---------------------------------------------------------------- parse_number */

static const struct {
	const char *name, *s;
	int rc;
	unsigned long v;
} number_cases[] = {
	/* RFC 1939 section 3: message numbers are decimal */
	{ "one", "1", 0, 1 },
	{ "two digits", "42", 0, 42 },
	{ "leading zeros", "007", 0, 7 },
	{ "many leading zeros", "00000000000000000000000000000001", 0, 1 },
	{ "zero", "0", 0, 0 },	/* a number; msg_arg refuses it: no message 0 */
	{ "empty", "", -1, 0 },
	{ "plus", "+1", -1, 0 },
	{ "minus", "-1", -1, 0 },
	{ "leading space", " 1", -1, 0 },
	{ "trailing space", "1 ", -1, 0 },
	{ "letters after", "1a", -1, 0 },
	{ "letters", "one", -1, 0 },
	{ "decimal point", "1.0", -1, 0 },
	{ "hex", "0x1", -1, 0 },
	{ "huge", "123456789012345678901234567890", -2, 0 },
#if ULONG_MAX == 18446744073709551615UL
	{ "ULONG_MAX", "18446744073709551615", 0, ULONG_MAX },
	{ "ULONG_MAX + 1", "18446744073709551616", -2, 0 },
	{ "ULONG_MAX + 10", "18446744073709551625", -2, 0 },
#elif ULONG_MAX == 4294967295UL
	{ "ULONG_MAX", "4294967295", 0, ULONG_MAX },
	{ "ULONG_MAX + 1", "4294967296", -2, 0 },
	{ "ULONG_MAX + 10", "4294967305", -2, 0 },
#endif
	{ NULL, NULL, 0, 0 }
};

static void group_parse_number(void)
{
	for (int i = 0; number_cases[i].name; i++) {
		unsigned long v = 99;
		int rc = parse_number(number_cases[i].s, &v);

		unit_long("parse_number", number_cases[i].name, number_cases[i].rc, rc);
		if (rc == 0 && number_cases[i].rc == 0) {
			char e[32], g[32];

			snprintf(e, sizeof e, "%lu", number_cases[i].v);
			snprintf(g, sizeof g, "%lu", v);
			unit_check(v == number_cases[i].v, "parse_number value",
				   number_cases[i].name, e, g);
		}
	}
}

/* ---------------------------------------------------------------- split_args */

static const struct {
	const char *name, *rest;
	int argc;
	const char *argv0, *argv1;
} args_cases[] = {
	{ "none", "", 0, NULL, NULL },
	{ "one", "1", 1, "1", NULL },
	{ "two", "1 10", 2, "1", "10" },
	/* RFC 1939 section 3 separates by a single space; more are tolerated */
	{ "two, two spaces", "1  10", 2, "1", "10" },
	{ "trailing space", "1 ", 1, "1", NULL },
	{ "three", "a b c", 3, "a", "b" },
	{ "pass phrase", "my secret words", 3, "my", "secret" },
	{ NULL, NULL, 0, NULL, NULL }
};

static void args_one(const char *name, const char *rest, int argc, const char *argv0,
		     const char *argv1)
{
	struct args a;

	memset(&a, 0, sizeof a);
	split_args(rest, &a);
	unit_long("split_args argc", name, argc, a.argc);
	unit_check(a.rest == rest, "split_args rest", name, "the line itself", "a copy");
	if (argc >= 1 && a.argc >= 1)
		unit_str("split_args argv[0]", name, argv0, a.argv[0]);
	if (argc >= 2 && a.argc >= 2)
		unit_str("split_args argv[1]", name, argv1, a.argv[1]);
}

static void group_split_args(void)
{
	char longest[POP_LINE_MAX];

	for (int i = 0; args_cases[i].name; i++)
		args_one(args_cases[i].name, args_cases[i].rest, args_cases[i].argc,
			 args_cases[i].argv0, args_cases[i].argv1);
	/* the longest rest a command line can carry: one word, not cut */
	memset(longest, 'w', sizeof longest - 1);
	longest[sizeof longest - 1] = '\0';
	args_one("longest word", longest, 1, longest, NULL);
}

/* ---------------------------------------------------------------- the penalty */

struct delay_case {
	const char *name;
	int base_ms, doublings, expected;
};

static const struct delay_case delay_cases[] = {
	{ "no failure: -a", 1000, 0, 1000 },
	{ "one: doubled", 1000, 1, 2000 },
	{ "three", 1000, 3, 8000 },
	{ "four: 16 s, capped at 15", 1000, 4, 15000 },
	{ "a hundred: capped", 1000, 100, 15000 },
	{ "small -a", 100, 3, 800 },
	{ "1 ms, many", 1, 40, 15000 },
	{ "-a 0: never a delay", 0, 50, 0 },
	{ "-a at the cap", 15000, 2, 15000 },
	{ "-a over the cap is kept", 20000, 3, 20000 },
	{ NULL, 0, 0, 0 }
};

static void group_penalty_delay(void)
{
	for (const struct delay_case *c = delay_cases; c->name; c++)
		unit_long("penalty_delay_ms", c->name, c->expected,
			  penalty_delay_ms(c->base_ms, c->doublings));
}

/* group_penalty_table - the parent's table: per address, capped, forgotten
 * after PENALTY_FORGET_SECONDS, bounded (the oldest entry makes room) */
static void group_penalty_table(void)
{
	static struct server srv;
	char addr[ADDR_TEXT_MAX];
	struct penalty *p;

	penalty_add(&srv, "192.0.2.1", 3);
	penalty_add(&srv, "192.0.2.1", 2);
	p = penalty_entry(&srv, "192.0.2.1", 0);
	unit_long("penalty_add", "adds up", 5, p ? p->failures : -1);
	unit_check(penalty_entry(&srv, "192.0.2.2", 0) == NULL, "penalty_entry",
		   "another address", "none", "an entry");
	penalty_add(&srv, "192.0.2.1", 500);
	unit_long("penalty_add", "capped", PENALTY_FAILURES_MAX, p ? p->failures : -1);
	if (p)
		p->last_ms = now_ms() - PENALTY_FORGET_SECONDS * 1000LL - 1;
	unit_check(penalty_entry(&srv, "192.0.2.1", 0) == NULL, "penalty_entry",
		   "forgotten after 15 minutes", "none", "an entry");
	for (int i = 0; i < PENALTY_SLOTS; i++) {	/* fill it; 10.0.0.7 is oldest */
		snprintf(addr, sizeof addr, "10.0.%d.%d", i / 256, i % 256);
		penalty_add(&srv, addr, 1);
		srv.penalties[i].last_ms = now_ms() - (i == 7 ? 60000 : 1000);
	}
	penalty_add(&srv, "198.51.100.1", 1);
	unit_check(penalty_entry(&srv, "198.51.100.1", 0) != NULL, "penalty_add",
		   "a full table takes one more", "an entry", "none");
	unit_check(penalty_entry(&srv, "10.0.0.7", 0) == NULL, "penalty_add",
		   "the oldest makes room", "gone", "kept");
	unit_check(penalty_entry(&srv, "10.0.0.8", 0) != NULL, "penalty_add",
		   "the others stay", "kept", "gone");
}

/* ---------------------------------------------------------------- main */

/* ---------------------------------------------------------------- mailbox shapes and conversion */

/* The shared block "mailbox": which tails are smtpmail's own crashed
 * appends (DESIGN.md: only those may be cut), and how a mailbox written by
 * another hand (the assignment's format) becomes records. */
static const struct {
	const char *name, *tail;
	size_t len;
	int whole, ours;
} tail_cases[] = {
	{ "whole trace", BYTES("Return-Path: <a@b>\r\nReceived: from x ([1.2.3.4])\r\n"
			       "\tby h (smtpmail) with SMTP id 1\r\n\tfor <c@d>; date\r\nbody"), 1, 1 },
	{ "trace, more to come", BYTES("Return-Path: <a@b>\r\nReceived: from x ([1.2.3.4])\r\n"
				       "\tby h (smtpmail) with ESMTP id 1\r\n"), 0, 1 },
	{ "cut in Return-Path", BYTES("Return-Pa"), 1, 1 },
	{ "cut in Return-Path, more to come", BYTES("Return-Pa"), 0, 0 },
	{ "cut after Return-Path", BYTES("Return-Path: <a@b>\r\n"), 1, 1 },
	{ "cut in Received", BYTES("Return-Path: <a@b>\r\nRecei"), 1, 1 },
	{ "cut in the by line", BYTES("Return-Path: <a@b>\r\nReceived: from x\r\n\tby h (smt"), 1, 1 },
	{ "another header second", BYTES("Return-Path: <a@b>\r\nSubject: x\r\n"), 1, 0 },
	{ "a fourth line", BYTES("Return-Path: <a@b>\r\nReceived: from x\r\n\tby h\r\nX: y"), 1, 0 },
	{ "bare LF", BYTES("Return-Path: <a@b>\nReceived: from x\n"), 1, 0 },
	{ "the assignment's format", BYTES("From: a@x\nTo: b@y\nSubject: s\n"), 1, 0 },
	{ "a saved copy in LF lines", BYTES("Return-Path: <a@b>\nReceived: from x ([1.2.3.4])\n"
					    "\tby h (smtpmail) with SMTP id 1\n\nbody\n"), 1, 0 },
	{ "our lines, no name in the by line", BYTES("Return-Path: <a@b>\r\nReceived: from x\r\n"
						     "\tby h with SMTP\r\n"), 1, 0 },
	{ "the name in a later line", BYTES("Return-Path: <a@b>\r\nSubject: x (smtpmail) with\r\n"),
	  1, 0 },
	{ "cut in the first byte", BYTES("R"), 1, 1 },
	{ "another server's trace", BYTES("Return-Path: <a@b>\r\nReceived: from x by y with SMTP\r\n"
					  "\tid 1\r\nSubject: s\r\n\r\nbody\r\n"), 1, 0 },
	{ NULL, NULL, 0, 0, 0 }
};

/* temp_file - an unlinked temp file holding n bytes of p; -1 on failure */
static int temp_file(const char *p, size_t n)
{
	char path[] = "/tmp/unit-mbox-XXXXXX";
	int fd = mkstemp(path);

	if (fd < 0 || unlink(path) < 0 || (n && write_all(fd, p, n) < 0))
		return -1;
	return fd;
}

static const struct {
	const char *name, *in;
	size_t in_len;
	const char *out;
	size_t out_len;
	long messages;
} convert_cases[] = {
	{ "LF, final dot", BYTES("a\nb\n.\nc\n.\n"), BYTES("a\r\nb\r\n.\r\nc\r\n.\r\n"), 2 },
	{ "LF, no final dot", BYTES("a\n.\nc\n"), BYTES("a\r\n.\r\nc\r\n.\r\n"), 2 },
	{ "CRLF, no final dot", BYTES("a\r\n.\r\nc\r\n"), BYTES("a\r\n.\r\nc\r\n.\r\n"), 2 },
	{ "no line end at all", BYTES("last line"), BYTES("last line\r\n.\r\n"), 1 },
	{ "dot line cut at its CR", BYTES("a\n.\r"), BYTES("a\r\n.\r\n"), 1 },
	{ "a line starting with a dot", BYTES(".x\n..y\n"), BYTES("..x\r\n...y\r\n.\r\n"), 1 },
	{ "empty messages dropped", BYTES(".\n.\na\n.\n.\n"), BYTES("a\r\n.\r\n"), 1 },
	{ "a bare CR is text", BYTES("a\rb\n"), BYTES("a\rb\r\n.\r\n"), 1 },
	{ "blank lines only", BYTES("\n\n.\n"), BYTES(""), 0 },
	{ "blank lines between messages", BYTES("S: a\n\nbody a\n.\n\nS: b\n\nbody b\n.\n\n"),
	  BYTES("S: a\r\n\r\nbody a\r\n.\r\nS: b\r\n\r\nbody b\r\n.\r\n"), 2 },
	{ "nothing", BYTES(""), BYTES(""), 0 },
	{ NULL, NULL, 0, NULL, 0, 0 }
};

/* convert_one - convert_lines on in; the output and the message count */
static void convert_one(const char *name, const char *in, size_t in_len, const char *out,
			size_t out_len, long messages)
{
	struct file_out o = { .len = 0 };
	struct file_in f = { .len = 0 };
	int fd = temp_file(in, in_len);
	char *got = malloc(out_len + 64);
	long n;
	ssize_t k;

	f.fd = fd;
	o.fd = temp_file(NULL, 0);
	n = fd < 0 || o.fd < 0 || !got ? -2 : convert_lines(&f, 0, (off_t)in_len, &o);
	unit_long("convert_lines", name, messages, n);
	if (n >= 0 && write_all(o.fd, o.data, o.len) == 0) {
		k = pread_full(o.fd, got, out_len + 64, 0);
		unit_bytes("convert_lines", name, out, out_len, got, k < 0 ? 0 : (size_t)k);
	}
	free(got);
	if (fd >= 0)
		close(fd);
	if (o.fd >= 0)
		close(o.fd);
}

/* convert_long_lines - lines longer than a chunk, with the CR of the
 * CR LF as the last byte of a chunk */
static void convert_long_lines(void)
{
	size_t n = 3 * MBOX_CHUNK;
	char *in = malloc(n + 2), *out = malloc(n + 5);

	if (!in || !out)
		abort();
	memset(in, 'x', n);
	memcpy(in + MBOX_CHUNK - 1, "\r\n", 2);	/* CR ends the first chunk */
	in[n - 1] = '\n';
	memcpy(out, in, MBOX_CHUNK + 1);
	memcpy(out + MBOX_CHUNK + 1, in + MBOX_CHUNK + 1, n - MBOX_CHUNK - 2);
	memcpy(out + n - 1, "\r\n.\r\n", 5);
	convert_one("CR at a chunk's end, long lines", in, n, out, n + 4, 1);
	free(in);
	free(out);
}

static const struct {
	const char *name, *file;
	size_t len;
	int shape;
	long end;
	long announced;		/* where the state says an append began */
} shape_cases[] = {
	{ "empty", BYTES(""), SHAPE_RECORDS, 0, -1 },
	{ "records", BYTES("a\r\n.\r\nb\r\n.\r\n"), SHAPE_RECORDS, 12, -1 },
	{ "our crashed tail", BYTES("a\r\n.\r\nReturn-Path: <x@y>\r\nRec"), SHAPE_OUR_TAIL, 6, 6 },
	{ "a saved record, unannounced", BYTES("a\r\n.\r\nReturn-Path: <x@y>\r\nRec"),
	  SHAPE_FOREIGN, 6, -1 },
	{ "announced elsewhere", BYTES("a\r\n.\r\nReturn-Path: <x@y>\r\nRec"), SHAPE_FOREIGN, 6, 0 },
	{ "a hand-written tail", BYTES("a\r\n.\r\nFrom: x@y\r\nbody"), SHAPE_FOREIGN, 6, -1 },
	{ "LF only", BYTES("a\n.\n"), SHAPE_FOREIGN, 0, -1 },
	{ "byte order mark", BYTES("\xEF\xBB\xBF" "a\r\n.\r\n"), SHAPE_FOREIGN, 9, -1 },
	{ NULL, NULL, 0, 0, 0, 0 }
};

static void group_mailbox(void)
{
	for (int i = 0; tail_cases[i].name; i++)
		unit_long("tail_is_ours", tail_cases[i].name, tail_cases[i].ours,
			  tail_is_ours(tail_cases[i].tail, tail_cases[i].len, tail_cases[i].whole));
	for (int i = 0; convert_cases[i].name; i++)
		convert_one(convert_cases[i].name, convert_cases[i].in, convert_cases[i].in_len,
			    convert_cases[i].out, convert_cases[i].out_len,
			    convert_cases[i].messages);
	convert_long_lines();
	for (int i = 0; shape_cases[i].name; i++) {
		int fd = temp_file(shape_cases[i].file, shape_cases[i].len);
		off_t end = -1;
		int shape = fd < 0 ? -2 : mailbox_shape(fd, (off_t)shape_cases[i].len,
							  (off_t)shape_cases[i].announced, &end);

		unit_long("mailbox_shape", shape_cases[i].name, shape_cases[i].shape, shape);
		unit_long("mailbox_shape end", shape_cases[i].name, shape_cases[i].end, (long)end);
		if (fd >= 0)
			close(fd);
	}
}

/* ---------------------------------------------------------------- logins: APOP, CRAM-MD5, PLAIN */

/* The RFCs' own examples: RFC 1939 section 7 (APOP), RFC 2195 section 2
 * (CRAM-MD5), RFC 4616 section 4 (PLAIN). */
#define APOP_STAMP "<1896.697170952@dbc.mtview.ca.us>"
#define CRAM_CHALLENGE "<1896.697170952@postoffice.reston.mci.net>"

static void apop_cases(void)
{
	static const struct {
		const char *name, *user, *digest;
		int ok;
	} c[] = {
		{ "RFC 1939", "mrose", "c4c9334bac560ecc979e58001b3e22fb", 1 },
		{ "upper-case hex", "mrose", "C4C9334BAC560ECC979E58001B3E22FB", 1 },
		{ "login in another case", "MRose", "c4c9334bac560ecc979e58001b3e22fb", 1 },
		{ "one digit wrong", "mrose", "c4c9334bac560ecc979e58001b3e22fc", 0 },
		{ "31 digits", "mrose", "c4c9334bac560ecc979e58001b3e22f", 0 },
		{ "33 digits", "mrose", "c4c9334bac560ecc979e58001b3e22fbb", 0 },
		{ "another's password", "tim", "c4c9334bac560ecc979e58001b3e22fb", 0 },
		{ "no such user", "nobody", "c4c9334bac560ecc979e58001b3e22fb", 0 },
		{ "not a login", "../mrose", "c4c9334bac560ecc979e58001b3e22fb", 0 },
	};
	struct account acct;

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
		unit_long("apop_check", c[i].name, c[i].ok,
			  apop_check(APOP_STAMP, c[i].user, c[i].digest, &acct));
	(void)apop_check(APOP_STAMP, "MRose", "c4c9334bac560ecc979e58001b3e22fb", &acct);
	unit_str("apop_check", "the account as spelled in user.txt", "mrose", acct.login);
}

static void cram_cases(void)
{
	static const struct {
		const char *name, *response;
		int ok;
		const char *who;
	} c[] = {
		{ "RFC 2195", "tim b913a602c7eda7a495b4e6e7334d3890", 1, "tim" },
		{ "login in another case", "TIM b913a602c7eda7a495b4e6e7334d3890", 1, "TIM" },
		{ "one digit wrong", "tim b913a602c7eda7a495b4e6e7334d3891", 0, "tim" },
		{ "no digest", "tim ", 0, "tim" },
		{ "no space", "timb913a602c7eda7a495b4e6e7334d3890", 0, "" },
		{ "another user", "mrose b913a602c7eda7a495b4e6e7334d3890", 0, "mrose" },
		{ "empty", "", 0, "" },
	};
	unsigned char dec[64];
	char name[LOGIN_MAX + 1];
	struct account acct;
	size_t n = 0;

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		unit_long("cram_check", c[i].name, c[i].ok,
			  cram_check(cfg.userfile, c[i].response, CRAM_CHALLENGE, name, &acct));
		unit_str("cram_check name", c[i].name, c[i].who, name);
	}
	/* RFC 2195's response as it travels, base64 */
	unit_long("base64_decode", "RFC 2195 response", 0,
		  base64_decode("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw", 48, dec,
				sizeof dec - 1, &n));
	dec[n] = '\0';
	unit_long("cram_check", "RFC 2195, from base64", 1,
		  cram_check(cfg.userfile, (char *)dec, CRAM_CHALLENGE, name, &acct));
	unit_long("cram_check", "another challenge", 0,
		  cram_check(cfg.userfile, (char *)dec, "<1.2@x>", name, &acct));
}

static void plain_cases(void)
{
	static const struct {
		const char *name, *msg;
		size_t len;
		int ok;
	} c[] = {
		{ "RFC 4616: no authzid", BYTES("\0tim\0tanstaaftanstaaf"), 1 },
		{ "authzid the same login", BYTES("tim\0tim\0tanstaaftanstaaf"), 1 },
		{ "authzid in another case", BYTES("TIM\0tim\0tanstaaftanstaaf"), 1 },
		{ "RFC 4616: acting for another", BYTES("Ursel\0Kurt\0xipj3plmq"), 0 },
		{ "authzid another account", BYTES("mrose\0tim\0tanstaaftanstaaf"), 0 },
		{ "wrong password", BYTES("\0tim\0tanstaaf"), 0 },
		{ "password with a NUL", BYTES("\0tim\0tanstaaftanstaaf\0"), 0 },
		{ "no second NUL", BYTES("\0tim"), 0 },
		{ "no NUL", BYTES("tim tanstaaftanstaaf"), 0 },
		{ "empty", BYTES(""), 0 },
		{ "empty password", BYTES("\0tim\0"), 0 },
	};
	char name[LOGIN_MAX + 1];
	struct account acct;

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
		unit_long("plain_check", c[i].name, c[i].ok,
			  plain_check(cfg.userfile, (const unsigned char *)c[i].msg, c[i].len,
				      name, &acct));
}

static void secret_cases(void)
{
	static const struct {
		const char *line;
		long shown;	/* secret_start: the part -v may log */
	} c[] = {
		{ "PASS secret", 4 }, { "pass   two words", 4 }, { "PASS\tsecret", 4 },
		{ "PASS", 4 }, { "APOP mrose c4c9", 10 }, { "APOP mrose", 10 },
		{ "AUTH PLAIN AGFs", 10 }, { "AUTH CRAM-MD5", 13 }, { "auth login dGlt", 10 },
		{ "USER mrose", 10 }, { "NOOP x", 6 }, { "", 0 },
		{ " PASS secret", 5 }, { "\t pass secret", 6 }, { "  AUTH PLAIN AGFs", 12 },
		{ " apop mrose c4c9", 11 }, { "   ", 3 },
	};
	static const struct {
		const char *a, *b;
		int same;
	} eq[] = {
		{ "pw", "pw", 1 }, { "pw", "pW", 0 }, { "", "", 1 }, { "pw", "pwx", 0 },
		{ "pwx", "pw", 0 }, { "", "x", 0 }, { "x", "", 0 },
	};

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
		unit_long("secret_start", c[i].line, c[i].shown, (long)secret_start(c[i].line));
	for (size_t i = 0; i < sizeof eq / sizeof eq[0]; i++)
		unit_long("secret_equal", eq[i].a, eq[i].same, secret_equal(eq[i].a, eq[i].b));
}

static void mech_cases(void)
{
	unsigned char out[16];
	size_t n = 9;
	char stamp[STAMP_MAX], host[300];

	unit_long("mech_find", "cram-md5", MECH_CRAM_MD5, mech_find("cram-md5"));
	unit_long("mech_find", "PLAIN", MECH_PLAIN, mech_find("PLAIN"));
	unit_long("mech_find", "Login", MECH_LOGIN, mech_find("Login"));
	unit_long("mech_find", "XOAUTH2", -1, mech_find("XOAUTH2"));
	unit_long("sasl_decode", "*", AUTH_CANCELLED, sasl_decode("*", out, sizeof out, &n));
	unit_long("sasl_decode", "=", AUTH_OK, sasl_decode("=", out, sizeof out, &n));
	unit_long("sasl_decode", "= is empty", 0, (long)n);
	unit_long("sasl_decode", "AGE=", AUTH_OK, sasl_decode("AGE=", out, sizeof out, &n));
	unit_bytes("sasl_decode", "AGE=", "\0a", 2, (char *)out, n);
	unit_long("sasl_decode", "@@@@", AUTH_BAD_BASE64, sasl_decode("@@@@", out, sizeof out, &n));
	unit_long("sasl_decode", "**", AUTH_BAD_BASE64, sasl_decode("**", out, sizeof out, &n));
	memset(host, 'h', sizeof host - 1);
	host[sizeof host - 1] = '\0';
	make_stamp(stamp, sizeof stamp, host);	/* a host cut to 255 octets */
	unit_long("make_stamp", "ends in >", '>', stamp[strlen(stamp) - 1]);
	unit_long("make_stamp", "host cut to 255", 255,
		  (long)(strlen(stamp) - (size_t)(strchr(stamp, '@') + 2 - stamp)));
}

static void group_logins(void)
{
	FILE *f = fopen("unit-users.txt", "w");

	if (!f || fputs("tim tanstaaftanstaaf\nmrose tanstaaf\n", f) < 0 || fclose(f) != 0)
		abort();
	cfg.userfile = "unit-users.txt";
	apop_cases();
	cram_cases();
	plain_cases();
	secret_cases();
	mech_cases();
	cfg.userfile = "no-such-file.txt";	/* unreadable: -1, never a login */
	{
		char name[LOGIN_MAX + 1];
		struct account acct;

		unit_long("apop_check", "no user.txt", -1,
			  apop_check(APOP_STAMP, "mrose", "c4c9334bac560ecc979e58001b3e22fb", &acct));
		unit_long("cram_check", "no user.txt", -1,
			  cram_check(cfg.userfile, "tim b913a602c7eda7a495b4e6e7334d3890",
				     CRAM_CHALLENGE, name, &acct));
		unit_long("plain_check", "no user.txt", -1,
			  plain_check(cfg.userfile, (const unsigned char *)"\0tim\0tanstaaftanstaaf",
				      21, name, &acct));
	}
}

static const struct unit_group groups[] = {
	{ "top_cut", group_top_cut },
	{ "next_dot_line", group_next_dot_line },
	{ "scan_chunk", group_scan_chunk },
	{ "trace_len", group_trace_len },
	{ "uidl_window", group_uidl_window },
	{ "uidl_unique", group_uidl_unique },
	{ "parse_number", group_parse_number },
	{ "split_args", group_split_args },
	{ "mailbox", group_mailbox },
	{ "penalty_delay", group_penalty_delay },
	{ "penalty_table", group_penalty_table },
	{ "logins", group_logins },
	{ NULL, NULL }
};

int main(int argc, char **argv)
{
	return unit_main(argc, argv, groups);
}
