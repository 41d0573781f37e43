/*
 * bench.c - the load generator behind `make bench` (tests/README.md "Performance").
 *
 * usage: bench [-B bindir] [-b base-popserver] [-T tmpdir] [-L logdir]
 *              [-S host:port] [-P host:port] [-d spool] [-t seconds]
 *              [-p smtp,pop,memory,accounts,relay] [-k] [-h]
 *
 * With no -S/-P it starts bindir/smtpmail and bindir/popserver (-B, default
 * ".") on 127.0.0.1, on free ports, with a throwaway spool and user file in a
 * new directory under tmpdir (-T, default /tmp), and stops them at the end.
 * Their logs go to that directory too (the filesystem measured: each
 * delivery appends a log line, as with `make run`), or to -L logdir.
 * -b starts a second popserver, the base (`make bench` builds the one of
 * BENCH_BASE), on the same spool, and the POP3 figures are measured on both,
 * interleaved, and given as ratios. -p runs only the parts named (all
 * five by default; the table leaves the others empty). -k keeps the
 * directory.
 * -S and -P measure a server already running instead; it must know the
 * accounts bench0 .. bench9, benchmem, pop10k, pop5m, pop100k (password
 * benchpw) and, for the POP3 mailboxes and the verification, its spool
 * must be given with -d (DESIGN.md layout); without it those parts are
 * skipped and say so.
 *
 * It prints one table:
 *   raw      2 KiB append+fsync records/s in the spool's directory: 1
 *            process on 1 file, and 10 processes on 10 files (aggregate);
 *   SMTP     messages/s and p50/p99 transaction time of 1, 10 and 50
 *            concurrent sessions (one process each) sending 2 KiB messages
 *            for -t seconds (default 3), on one persistent connection each
 *            or on a new connection per message (as MTAs and smtp-source
 *            do), with and without PIPELINING, to the bench's own null
 *            server (null_serve: accepts and discards, like Postfix's
 *            smtp-sink) and then to smtpmail, into one mailbox or spread
 *            over 10. Each smtpmail rate is given as a ratio to the null
 *            server's, measured just before in the same pattern, and on a
 *            persistent connection to the raw rate measured around it;
 *   POP3     messages/s and MB/s (10^6 bytes of message data) retrieving a
 *            mailbox of 10,000 x 2.4 KB one RETR at a time and 32 RETRs
 *            in one write (RFC 2449 PIPELINING), and one of 20 x 5 MiB;
 *            login time (PASS to +OK, which indexes the mailbox) on
 *            100,000 x 2 KiB. With -b each also for the base popserver and
 *            as a ratio. The mailboxes are written directly in the
 *            DESIGN.md record format;
 *   memory   VmHWM (peak resident set) of the smtpmail session process
 *            after receiving a 20 MB message, and of the popserver session
 *            process after sending it back; read from /proc/<pid>/status
 *            before QUIT (the session process: the server's only child, or
 *            the one that logged the connection: smtpmail keeps idle ones);
 *   accounts user.txt of 100,000 accounts against one of 2, the account
 *            looked up the big file's last, each file served by a
 *            smtpmail and a popserver of its own (only with the bench's
 *            own servers): a RCPT in a session, a POP3 session (login,
 *            STAT, QUIT) and its PASS alone, medians of interleaved
 *            rounds, and the ratios; the time to read the 100,000 again
 *            after a change, in a session (the next RCPT) and in the
 *            parent (the next POP3 session), less their usual time;
 *   relay    queued-and-delivered messages/s from one smtpmail (A, -o, the
 *            client trusted by -N, a -R route to B) to another (B), as a
 *            ratio to A's local delivery in the same run: 10 sessions send
 *            2 KiB messages for -t seconds to a local address of A, then
 *            the same to an address at B; the relay rate counts from the
 *            first message sent until A's queue is empty and every message
 *            is in B's mailbox (only with the bench's own servers);
 *   verify   every message that got 250 is in its mailbox exactly once and
 *            byte-exact after unstuffing; the 20 MB one comes back intact.
 *
 * Exit: 0 all verified; 1 a failure (lost, duplicated or corrupt message,
 * refused transaction, server error); 2 usage. Targets missed are reported
 * but are not failures (it is a benchmark).
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#define _GNU_SOURCE			/* sched_setaffinity (accounts: pin_one_cpu) */

#include <sys/types.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <poll.h>
#ifdef __linux__
#include <sched.h>
#include <sys/sendfile.h>
#include <sys/vfs.h>
#endif

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- limits */

enum {
	MSG_SIZE = 2048,		/* measured: 2 KiB messages */
	MAILBOXES = 10,			/* measured: spread over 10 mailboxes */
	RAW_PROCS = 10,			/* measured: 10 processes on 10 files */
	MAX_SESSIONS = 50,		/* measured: 1, 10 and 50 sessions */
	CELLS = 36,			/* 3 x sessions, 2 x connections, 2 x
					 * pipelining, 3 x null / 1 / 10 mailboxes */
	SLOTS = 1 << 18,		/* transactions recorded per cell */
	POP_SMALL_COUNT = 10000,	/* measured: 10,000 x 2.4 KB */
	POP_SMALL_SIZE = 2400,
	POP_DEPTH = 32,			/* RETRs in one write, pipelined */
	POP_ROUNDS = 7,			/* each retrieval this often, median kept */
	POP_LARGE_COUNT = 20,		/* measured: 20 x 5 MiB */
	POP_LARGE_SIZE = 5 << 20,
	LOGIN_COUNT = 100000,		/* measured: login on 100,000 messages */
	LOGIN_RUNS = 5,			/* login timed this often, median kept */
	ACCT_BIG = 100000,		/* measured: user.txt of 100,000 accounts against 2 */
	ACCT_RCPT_BLOCK = 100,		/* RCPTs in one transaction (smtpmail's most) */
	ACCT_RCPT_BLOCKS = 21,		/* blocks per user file, interleaved, median kept */
	ACCT_LOGINS = 201,		/* POP3 sessions per user file, interleaved */
	ACCT_RELOADS = 7,		/* reloads timed, median kept */
	ACCT_ABSENT = 15,		/* RCPTs to no login a session (smtpmail allows 20 errors) */
	ACCT_ABSENT_SESSIONS = 14,	/* sessions of those per user file */
	RELAY_SESSIONS = 10,		/* relay: sessions sending to A at once */
	RELAY_DRAIN_S = 120,		/* relay: the longest wait for A's queue to empty */
	RETR_SECONDS = 20,		/* a retrieval stops after this (bench bounded) */
	RAW_CELL_MS = 1000,		/* the raw rate measured again around a cell */
	BIG_SIZE = 20000000,		/* measured: the 20 MB message */
	CLIENT_BUF = 256 * 1024,	/* a client's input buffer */
	LINE_MAX_LEN = 1024,		/* one reply line kept (the rest dropped) */
	REPLY_LINES_MAX = 100,		/* lines of one multi-line SMTP reply */
	IO_TIMEOUT_S = 60,		/* any single read or write */
	START_TIMEOUT_MS = 10000,	/* a server's "listening" line */
	STOP_TIMEOUT_MS = 15000,	/* a server's exit after SIGTERM */
	PATH_LEN = 4096,
	LINE_CHARS = 78,		/* body line length of generated messages */
	CELL_SECONDS = 3,		/* default length of one SMTP cell */
	NULL_CONNS = 256,		/* the null server's connections at once */
	NULL_IN = 16384,		/* its input buffer per connection */
	NULL_OUT = 1024			/* its output buffer per connection */
};

#define BIG_ID UINT64_C(0xffff000000000001)
#define PASSWORD "benchpw"
#define HOSTNAME "bench.local"
#define ACCT_LAST "acct099999"		/* the account looked up: the big file's last */

/* ---------------------------------------------------------------- types */

struct endpoint {
	char host[256];
	char port[16];
	struct sockaddr_storage sa;	/* host:port resolved, at the first connect */
	socklen_t salen;		/* 0: not yet */
};

/* One server we started (pid 0: external or none). */
struct server {
	pid_t pid;
	char log[PATH_LEN];
};

/* One SMTP transaction as a session process recorded it. */
struct sample {
	uint64_t id;
	uint32_t usec;		/* MAIL sent (a new connection: connect) .. final reply */
	int16_t code;		/* the final reply code; 0: connection lost */
	uint8_t box;
	uint8_t pad;
};

/* Shared with the worker processes (MAP_SHARED). */
struct shared {
	long count[MAX_SESSIONS];
	long raw[RAW_PROCS];
	struct sample s[SLOTS];
};

struct client {
	int fd;
	size_t pos, len;	/* unread input is buf[pos .. len) */
	char buf[CLIENT_BUF];
};

/* Where a cell's sessions send: the null server, or smtpmail into one
 * mailbox or spread over ten. */
enum target { TO_NULL, TO_ONE, TO_TEN };

struct cell {
	int sessions, per_message, pipelining;	/* per_message: a new connection each */
	enum target to;
	double raw;		/* smtpmail, persistent: the matching raw rate around it */
	double null_rate;	/* smtpmail: the null server's rate in the same pattern */
	long accepted, refused;
	double seconds, p50_ms, p99_ms;
};

/* One POP3 retrieval, repeated POP_ROUNDS times: medians and the range. */
struct retrieval {
	double rate, mbs;	/* messages/s and MB/s, medians */
	double lo, hi;		/* the lowest and highest messages/s */
	long done;		/* the fewest messages retrieved within RETR_SECONDS */
};

/* Every figure of the table; [0] our popserver, [1] the base (-b). */
struct results {
	double raw1, raw10;		/* records/s */
	struct cell cells[CELLS];
	struct retrieval small[2][2];	/* [server][0: one RETR at a time, 1: POP_DEPTH] */
	struct retrieval large;
	double login_s[2], login_lo[2], login_hi[2], loop_mbs;
	/* accounts, [0] 2 accounts, [1] ACCT_BIG: microseconds, medians */
	double acct_rcpt[2], acct_session[2], acct_pass[2];
	double acct_absent[2], acct_present[2];	/* RCPT to no login, and to one, in turn */
	double acct_reload_session, acct_reload_parent;	/* milliseconds */
	int ran_accounts;
	/* relay: messages/s into A's mailbox, and queued at A and in B's mailbox */
	double relay_local, relay_rate, relay_local_s, relay_s;
	long relay_local_n, relay_n, relay_arrived;
	int ran_relay;
	long smtp_idle, smtp_hwm, pop_idle, pop_hwm;	/* KiB; -1 unknown */
	int ran_smtp, ran_pop;		/* the parts run (-p) */
	long records;			/* records verified */
	char load_start[64], load_end[64];	/* /proc/loadavg: others on the machine */
};

struct idset {
	uint64_t *id;
	unsigned char *seen;
	size_t n, cap;
};

static struct {
	const char *bindir, *tmpbase, *spool_arg, *logdir, *base_pop;
	const char *parts;	/* -p: the parts to run */
	int cell_seconds, keep;
	struct endpoint smtp, pop, null, base;
	int have_smtp, have_pop;	/* -S / -P given */
	char dir[PATH_LEN], spool[PATH_LEN], userfile[PATH_LEN];
	int have_spool;
	struct server smtpd, popd, nulld, based;
	struct server acct_smtpd[2], acct_popd[2];	/* accounts: 2, ACCT_BIG */
	struct server relay_ad, relay_bd;	/* relay: A and B */
	struct endpoint relay_a;		/* relay: where the sessions send */
	pid_t parent;
	struct shared *sh;
	struct idset accepted;
	int failures;		/* anything wrong: exit 1 */
	int lost;		/* verification: lost, duplicated, corrupt */
} B;

/* ---------------------------------------------------------------- small helpers */

/* fatal - report, stop our servers (atexit) and exit 1 */
static void fatal(const char *fmt, ...)
{
	va_list ap;

	fputs("bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* problem - a failure that does not stop the run: counted, exit 1 at the end */
static void problem(const char *fmt, ...)
{
	va_list ap;

	B.failures++;
	fputs("bench: FAIL: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* now_us - monotonic microseconds */
static int64_t now_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		fatal("clock_gettime: %s", strerror(errno));
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* sleep_ms - sleep a few milliseconds */
static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* path_join - "<a>/<b>" into out, or fatal */
static void path_join(char *out, const char *a, const char *b)
{
	int n = snprintf(out, PATH_LEN, "%s/%s", a, b);

	if (n < 0 || n >= PATH_LEN)
		fatal("path too long: %s/%s", a, b);
}

/* close_fd - close a descriptor; a failure is reported (nothing else to do) */
static void close_fd(int fd)
{
	if (close(fd) < 0)
		fprintf(stderr, "bench: close: %s\n", strerror(errno));
}

/* xmalloc - malloc or fatal */
static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		fatal("out of memory (%zu bytes)", n);
	return p;
}

/* find - the first occurrence of pat[plen] in buf[len] (memmem is not POSIX.1-2008) */
static const char *find(const char *buf, size_t len, const char *pat, size_t plen)
{
	const char *p = buf, *end = buf + len;

	while (plen > 0 && (size_t)(end - p) >= plen
	       && (p = memchr(p, pat[0], (size_t)(end - p) - plen + 1)) != NULL) {
		if (memcmp(p, pat, plen) == 0)
			return p;
		p++;
	}
	return NULL;
}

/* cmp_u32 - qsort order for latencies */
static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* cmp_u64 - qsort order for ids */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* ---------------------------------------------------------------- messages */

/*
 * gen_message - the 2 KiB (or any size >= 256) message with this id, CRLF
 * lines, no line starting with '.', so the bytes on the wire are the bytes
 * of the message. Deterministic: the verifier regenerates it from the id.
 */
static void gen_message(char *buf, size_t size, uint64_t id)
{
	int h = snprintf(buf, size, "From: <bench@localhost>\r\nTo: <bench@localhost>\r\n"
			 "Subject: bench %016" PRIx64 "\r\nX-Bench-Id: %016" PRIx64
			 "\r\n\r\n", id, id);
	size_t pos = (size_t)h, line = 0;

	if (h < 0 || (size_t)h + 2 > size)
		fatal("message size %zu too small", size);
	while (size - pos > LINE_CHARS + 2 + 1) {	/* full lines, >= 2 bytes left */
		for (size_t col = 0; col < LINE_CHARS; col++)
			buf[pos + col] = (char)('a' + (id * 7 + line * 13 + col) % 26);
		memcpy(buf + pos + LINE_CHARS, "\r\n", 2);
		pos += LINE_CHARS + 2;
		line++;
	}
	for (size_t col = 0; pos + col < size - 2; col++)
		buf[pos + col] = (char)('A' + (id + col) % 26);
	memcpy(buf + size - 2, "\r\n", 2);
}

/* ---------------------------------------------------------------- client I/O */

/* send_all - write n bytes or fail (-1) */
static int send_all(int fd, const void *data, size_t n)
{
	const char *p = data;

	while (n > 0) {
		ssize_t k = write(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* client_fill - read more input; -1 on EOF, error, timeout or a full buffer */
static int client_fill(struct client *c)
{
	ssize_t n;

	if (c->pos == c->len) {
		c->pos = c->len = 0;
	} else if (c->pos > 0) {
		memmove(c->buf, c->buf + c->pos, c->len - c->pos);
		c->len -= c->pos;
		c->pos = 0;
	}
	if (c->len == sizeof c->buf)
		return -1;
	do
		n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -1;
	c->len += (size_t)n;
	return 0;
}

/* client_line - the next line without CRLF (truncated to cap - 1); -1 on error */
static int client_line(struct client *c, char *line, size_t cap)
{
	for (;;) {
		char *start = c->buf + c->pos;
		char *lf = memchr(start, '\n', c->len - c->pos);

		if (lf) {
			size_t n = (size_t)(lf - start), keep;

			c->pos += n + 1;
			if (n > 0 && start[n - 1] == '\r')
				n--;
			keep = n < cap - 1 ? n : cap - 1;
			memcpy(line, start, keep);
			line[keep] = '\0';
			return 0;
		}
		if (client_fill(c) < 0)	/* ends: a full buffer fails */
			return -1;
	}
}

/* client_take - consume n bytes: into dst if not NULL; the last 5 kept in tail */
static int client_take(struct client *c, char *dst, size_t n, char tail[5])
{
	while (n > 0) {
		size_t k;

		if (c->pos == c->len && client_fill(c) < 0)
			return -1;
		k = c->len - c->pos < n ? c->len - c->pos : n;
		if (dst) {
			memcpy(dst, c->buf + c->pos, k);
			dst += k;
		}
		for (size_t i = k > 5 ? k - 5 : 0; i < k; i++) {
			memmove(tail, tail + 1, 4);
			tail[4] = c->buf[c->pos + i];
		}
		c->pos += k;
		n -= k;
	}
	return 0;
}

/* endpoint_resolve - host:port into ep->sa, once (a new connection per
 * message must not pay for getaddrinfo each time); -1 on failure */
static int endpoint_resolve(struct endpoint *ep)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;

	if (ep->salen > 0)
		return 0;
	if (getaddrinfo(ep->host, ep->port, &hints, &res) != 0)
		return -1;
	if (res->ai_addrlen <= sizeof ep->sa) {
		memcpy(&ep->sa, res->ai_addr, res->ai_addrlen);
		ep->salen = res->ai_addrlen;
	}
	freeaddrinfo(res);
	return ep->salen > 0 ? 0 : -1;
}

/* client_connect - a blocking TCP connection with bounded reads and writes */
static int client_connect(struct client *c, struct endpoint *ep)
{
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	int one = 1;

	c->pos = c->len = 0;
	c->fd = -1;
	if (endpoint_resolve(ep) < 0)
		return -1;
	c->fd = socket(ep->sa.ss_family, SOCK_STREAM, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&ep->sa, ep->salen) < 0
	    || setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0
	    || setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0
	    || setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
		if (c->fd >= 0)
			close_fd(c->fd);
		c->fd = -1;
		return -1;
	}
	return 0;
}

/* client_close - close the connection */
static void client_close(struct client *c)
{
	if (c->fd >= 0 && close(c->fd) < 0)
		fprintf(stderr, "bench: close: %s\n", strerror(errno));
	c->fd = -1;
}

/* ---------------------------------------------------------------- SMTP client */

/* smtp_reply - read one (multi-line) reply; its code, -1 if the connection failed */
static int smtp_reply(struct client *c)
{
	char line[LINE_MAX_LEN];

	for (int i = 0; i < REPLY_LINES_MAX; i++) {
		if (client_line(c, line, sizeof line) < 0 || strlen(line) < 3
		    || !isdigit((unsigned char)line[0]))
			return -1;
		if (line[3] != '-')
			return atoi(line);
	}
	return -1;
}

/* smtp_step - send one command line, return the reply code */
static int smtp_step(struct client *c, const char *line)
{
	if (send_all(c->fd, line, strlen(line)) < 0)
		return -1;
	return smtp_reply(c);
}

/* smtp_open - connect, read the greeting, EHLO; 0, the code of the reply
 * that refused (a 421 greeting at smtpmail's -c), or -1: no connection */
static int smtp_open(struct client *c, struct endpoint *ep)
{
	int code;

	if (client_connect(c, ep) < 0)
		return -1;
	if ((code = smtp_reply(c)) == 220
	    && (code = smtp_step(c, "EHLO bench.client\r\n")) == 250)
		return 0;
	client_close(c);
	return code;
}

/* smtp_bye - QUIT, its 221, then the server's close: the server closes
 * first, so TIME_WAIT stays on its side and the bench's ports do not run out */
static void smtp_bye(struct client *c)
{
	if (smtp_step(c, "QUIT\r\n") == 221)
		for (c->pos = c->len = 0; client_fill(c) == 0; c->pos = c->len)
			;
	client_close(c);
}

/* smtp_envelope - MAIL, RCPT, DATA, one at a time or pipelined (RFC 2920); 354 if ok */
static int smtp_envelope(struct client *c, const char *rcpt, size_t size, int pipelining)
{
	char mail[128], to[128], cmds[300];
	int m, r, d;

	snprintf(mail, sizeof mail, "MAIL FROM:<bench@localhost> SIZE=%zu\r\n", size);
	snprintf(to, sizeof to, "RCPT TO:<%s@" HOSTNAME ">\r\n", rcpt);
	if (!pipelining) {
		if ((m = smtp_step(c, mail)) != 250)
			return m;
		if ((r = smtp_step(c, to)) != 250)
			return r;
		return smtp_step(c, "DATA\r\n");
	}
	snprintf(cmds, sizeof cmds, "%s%sDATA\r\n", mail, to);
	if (send_all(c->fd, cmds, strlen(cmds)) < 0)
		return -1;
	m = smtp_reply(c);
	r = m < 0 ? -1 : smtp_reply(c);
	d = r < 0 ? -1 : smtp_reply(c);
	if (m < 0 || r < 0 || d < 0)
		return -1;
	return m != 250 ? m : r != 250 ? r : d;
}

/* smtp_send - one transaction of msg (its ".\r\n" included in len); final code */
static int smtp_send(struct client *c, const char *rcpt, const char *msg, size_t len,
		     int pipelining)
{
	int code = smtp_envelope(c, rcpt, len - 3, pipelining);

	if (code < 0)
		return -1;
	if (code != 354) {
		if (smtp_step(c, "RSET\r\n") < 0)
			return -1;
		return code;
	}
	if (send_all(c->fd, msg, len) < 0)
		return -1;
	return smtp_reply(c);
}

/* smtp_message - one message on a connection of its own, as MTAs and
 * smtp-source send: connect, EHLO, the transaction, QUIT; the final reply
 * code, or the one that refused the connection */
static int smtp_message(struct client *c, struct endpoint *ep, const char *rcpt,
			const char *msg, size_t len, int pipelining)
{
	int code = smtp_open(c, ep);

	if (code != 0)
		return code;
	code = smtp_send(c, rcpt, msg, len, pipelining);
	if (code > 0)
		smtp_bye(c);
	else
		client_close(c);
	return code;
}

/* ---------------------------------------------------------------- POP3 client */

/* pop_ok - read one status line; 0 if +OK (text in line), -1 otherwise */
static int pop_ok(struct client *c, char *line, size_t cap)
{
	if (client_line(c, line, cap) < 0)
		return -1;
	return strncmp(line, "+OK", 3) == 0 ? 0 : -1;
}

/* pop_cmd - send one command line and read its status line */
static int pop_cmd(struct client *c, const char *cmd, char *line, size_t cap)
{
	if (send_all(c->fd, cmd, strlen(cmd)) < 0)
		return -1;
	return pop_ok(c, line, cap);
}

/* pop_login - connect to ep and log in as user; *pass_us = PASS .. +OK; -1
 * on failure */
static int pop_login(struct client *c, struct endpoint *ep, const char *user,
		     int64_t *pass_us)
{
	char line[LINE_MAX_LEN], cmd[128];
	int64_t t0;

	if (client_connect(c, ep) < 0)
		return -1;
	snprintf(cmd, sizeof cmd, "USER %s\r\n", user);
	if (pop_ok(c, line, sizeof line) < 0 || pop_cmd(c, cmd, line, sizeof line) < 0) {
		client_close(c);
		return -1;
	}
	t0 = now_us();
	if (pop_cmd(c, "PASS " PASSWORD "\r\n", line, sizeof line) < 0) {
		fprintf(stderr, "bench: POP3 login %s: %s\n", user, line);
		client_close(c);
		return -1;
	}
	if (pass_us)
		*pass_us = now_us() - t0;
	return 0;
}

/* pop_quit - QUIT and close */
static void pop_quit(struct client *c)
{
	char line[LINE_MAX_LEN];

	if (pop_cmd(c, "QUIT\r\n", line, sizeof line) < 0)
		problem("POP3 QUIT: %s", line);
	client_close(c);
}

/* pop_list - LIST: the n message sizes into sizes[] (allocated); count or -1 */
static long pop_list(struct client *c, long **sizes)
{
	char line[LINE_MAX_LEN];
	long n = 0, cap = 1024;

	*sizes = xmalloc((size_t)cap * sizeof **sizes);
	if (pop_cmd(c, "LIST\r\n", line, sizeof line) < 0)
		return -1;
	for (long i = 0; i <= 10 * (long)LOGIN_COUNT; i++) {
		long num, size;

		if (client_line(c, line, sizeof line) < 0)
			return -1;
		if (strcmp(line, ".") == 0)
			return n;
		if (sscanf(line, "%ld %ld", &num, &size) != 2 || num != n + 1)
			return -1;
		if (n == cap) {
			cap *= 2;
			*sizes = realloc(*sizes, (size_t)cap * sizeof **sizes);
			if (!*sizes)
				fatal("out of memory");
		}
		(*sizes)[n++] = size;
	}
	return -1;
}

/*
 * pop_retr_read - the reply to RETR of a message of size bytes (no stuffed
 * lines): its +OK line, then exactly size bytes + ".\r\n" (into dst if not
 * NULL), the end checked.
 */
static int pop_retr_read(struct client *c, long size, char *dst)
{
	char line[LINE_MAX_LEN], tail[5] = { 0 };

	if (pop_ok(c, line, sizeof line) < 0 || client_take(c, dst, (size_t)size + 3, tail) < 0)
		return -1;
	return memcmp(tail, "\r\n.\r\n", 5) == 0 ? 0 : -1;
}

/* pop_retr - RETR num, one command, and its reply (pop_retr_read) */
static int pop_retr(struct client *c, long num, long size, char *dst)
{
	char cmd[64];

	snprintf(cmd, sizeof cmd, "RETR %ld\r\n", num);
	if (send_all(c->fd, cmd, strlen(cmd)) < 0)
		return -1;
	return pop_retr_read(c, size, dst);
}

/* pop_retr_batch - RETR first .. first + n - 1 in one write (RFC 2449
 * PIPELINING), then their replies */
static int pop_retr_batch(struct client *c, long first, long n, const long *sizes)
{
	char cmds[POP_DEPTH * 24];
	size_t len = 0;

	for (long i = 0; i < n && i < POP_DEPTH; i++)
		len += (size_t)snprintf(cmds + len, sizeof cmds - len, "RETR %ld\r\n", first + i);
	if (send_all(c->fd, cmds, len) < 0)
		return -1;
	for (long i = 0; i < n && i < POP_DEPTH; i++)
		if (pop_retr_read(c, sizes[first - 1 + i], NULL) < 0)
			return -1;
	return 0;
}

/* ---------------------------------------------------------------- servers */

/* free_port - a loopback port that was free a moment ago */
static void free_port(char *out, size_t cap)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0
	    || getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		fatal("free port: %s", strerror(errno));
	snprintf(out, cap, "%u", (unsigned)ntohs(sa.sin_port));
	if (close(fd) < 0)
		fatal("close: %s", strerror(errno));
}

/* log_has - does the server's log contain word yet? */
static int log_has(const char *path, const char *word)
{
	char buf[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	close_fd(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return strstr(buf, word) != NULL;
}

/* spawn - fork and exec argv with stdout and stderr into log; the pid */
static pid_t spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();

	if (pid < 0)
		fatal("fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		int null = open("/dev/null", O_RDONLY);

		if (fd < 0 || null < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0
		    || dup2(null, 0) < 0)
			_exit(127);
		execv(argv[0], argv);
		dprintf(2, "bench: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

/* server_start - run one of our servers and wait for its "listening" line */
static void server_start(struct server *srv, char *const argv[], const char *name)
{
	int status;

	path_join(srv->log, B.logdir ? B.logdir : B.dir, name);
	srv->pid = spawn(argv, srv->log);
	for (int waited = 0; waited < START_TIMEOUT_MS; waited += 20) {
		if (log_has(srv->log, "listening"))
			return;
		if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
			srv->pid = 0;
			fatal("%s exited at start; see %s", argv[0], srv->log);
		}
		sleep_ms(20);
	}
	fatal("%s did not start listening; see %s", argv[0], srv->log);
}

/* server_stop - SIGTERM, a bounded wait, then SIGKILL; by PID only */
static void server_stop(struct server *srv)
{
	int status;

	if (srv->pid <= 0)
		return;
	if (kill(srv->pid, SIGTERM) < 0)
		fprintf(stderr, "bench: kill %ld: %s\n", (long)srv->pid, strerror(errno));
	for (int waited = 0; waited < STOP_TIMEOUT_MS; waited += 20) {
		if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
			srv->pid = 0;
			return;
		}
		sleep_ms(20);
	}
	if (kill(srv->pid, SIGKILL) < 0 || waitpid(srv->pid, &status, 0) < 0)
		fprintf(stderr, "bench: cannot stop %ld: %s\n", (long)srv->pid, strerror(errno));
	srv->pid = 0;
}

/* start_smtpmail - our smtpmail on 127.0.0.1, size limit over the 20 MB test */
static void start_smtpmail(void)
{
	char bin[PATH_LEN];
	char *argv[] = { bin, "-d", B.spool, "-u", B.userfile, "-n", HOSTNAME,
			 "-l", "127.0.0.1", "-s", "104857600", "-c", "200",
			 "-t", "120", B.smtp.port, NULL };

	path_join(bin, B.bindir, "smtpmail");
	snprintf(B.smtp.host, sizeof B.smtp.host, "127.0.0.1");
	free_port(B.smtp.port, sizeof B.smtp.port);
	server_start(&B.smtpd, argv, "smtpmail.log");
}

/* start_pop - a popserver binary on 127.0.0.1, a free port, into srv and ep */
static void start_pop(const char *bin, struct server *srv, struct endpoint *ep,
		      const char *log)
{
	char *argv[] = { (char *)bin, "-d", B.spool, "-u", B.userfile, "-l", "127.0.0.1",
			 "-c", "200", "-t", "120", ep->port, NULL };

	snprintf(ep->host, sizeof ep->host, "127.0.0.1");
	free_port(ep->port, sizeof ep->port);
	server_start(srv, argv, log);
}

/* start_popserver - our popserver, and the base (-b) beside it */
static void start_popserver(void)
{
	char bin[PATH_LEN];

	path_join(bin, B.bindir, "popserver");
	start_pop(bin, &B.popd, &B.pop, "popserver.log");
	if (B.base_pop)
		start_pop(B.base_pop, &B.based, &B.base, "popserver-base.log");
}

/* ---------------------------------------------------------------- the null SMTP server */

/*
 * The null server: what the load generator reaches when a delivery costs
 * nothing. Like Postfix's smtp-sink, one process serves every connection
 * from a poll loop, says 250 to every command (EHLO offers PIPELINING),
 * 354 to DATA, reads the data to its final "." line and drops it; so a new
 * connection costs it an accept, not a fork. Every smtpmail figure is also
 * a ratio to it, measured in the same run and the same pattern.
 */
struct null_conn {
	int fd;			/* -1: a free slot */
	int in_data;		/* between the 354 and the final "." line */
	int matched;		/* DATA: bytes of CRLF "." CRLF just seen */
	int quit;		/* close once the 221 is out */
	size_t in_len, out_len;
	char in[NULL_IN], out[NULL_OUT];
};

/* null_reply - queue a reply (null_input keeps room for the longest) */
static void null_reply(struct null_conn *nc, const char *text)
{
	size_t n = strlen(text);

	if (n <= sizeof nc->out - nc->out_len) {
		memcpy(nc->out + nc->out_len, text, n);
		nc->out_len += n;
	}
}

/* null_command - the reply to one command line (its verb is enough) */
static void null_command(struct null_conn *nc, const char *line, size_t len)
{
	char verb[5] = "";

	for (size_t i = 0; i < 4 && i < len; i++)
		verb[i] = (char)toupper((unsigned char)line[i]);
	if (strcmp(verb, "EHLO") == 0) {
		null_reply(nc, "250-null.bench\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n"
			   "250 8BITMIME\r\n");
	} else if (strcmp(verb, "DATA") == 0) {
		null_reply(nc, "354 End data with <CR><LF>.<CR><LF>\r\n");
		nc->in_data = 1;
		nc->matched = 2;	/* DATA starts at a line start: CRLF seen */
	} else if (strcmp(verb, "QUIT") == 0) {
		null_reply(nc, "221 2.0.0 Bye\r\n");
		nc->quit = 1;
	} else {
		null_reply(nc, "250 2.0.0 Ok\r\n");	/* HELO, MAIL, RCPT, RSET, NOOP ... */
	}
}

/* null_data - drop the data from in[p]; where its final "." line ends, or
 * in_len if it goes on */
static size_t null_data(struct null_conn *nc, size_t p)
{
	static const char end[] = "\r\n.\r\n";

	for (; p < nc->in_len; p++) {
		char ch = nc->in[p];

		if (ch == end[nc->matched])
			nc->matched++;
		else
			nc->matched = ch == '\r';
		if (nc->matched == 5) {
			null_reply(nc, "250 2.0.0 Ok: queued\r\n");
			nc->in_data = 0;
			return p + 1;
		}
	}
	return p;
}

/* null_input - answer every complete command line and the data that came */
static void null_input(struct null_conn *nc)
{
	size_t p = 0;

	while (p < nc->in_len && !nc->quit && sizeof nc->out - nc->out_len >= 128) {
		const char *lf;

		if (nc->in_data) {
			p = null_data(nc, p);
			continue;
		}
		if (!(lf = memchr(nc->in + p, '\n', nc->in_len - p))) {
			if (p == 0 && nc->in_len == sizeof nc->in) {
				null_reply(nc, "500 5.5.0 Line too long\r\n");
				p = nc->in_len;
			}
			break;
		}
		null_command(nc, nc->in + p, (size_t)(lf - (nc->in + p)));
		p = (size_t)(lf - nc->in) + 1;
	}
	memmove(nc->in, nc->in + p, nc->in_len - p);
	nc->in_len -= p;
}

/* null_flush - write what is queued; -1 if the connection failed */
static int null_flush(struct null_conn *nc)
{
	while (nc->out_len > 0) {
		ssize_t k = write(nc->fd, nc->out, nc->out_len);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN)
			return 0;	/* poll waits for POLLOUT */
		if (k <= 0)
			return -1;
		memmove(nc->out, nc->out + k, nc->out_len - (size_t)k);
		nc->out_len -= (size_t)k;
	}
	return 0;
}

/* null_step - the connection is ready: read, answer; -1 when it is over */
static int null_step(struct null_conn *nc)
{
	if (null_flush(nc) < 0)
		return -1;
	if (nc->out_len == 0 && !nc->quit) {
		ssize_t k = read(nc->fd, nc->in + nc->in_len, sizeof nc->in - nc->in_len);

		if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
			return -1;
		nc->in_len += k > 0 ? (size_t)k : 0;
	}
	null_input(nc);
	if (null_flush(nc) < 0)
		return -1;
	return nc->quit && nc->out_len == 0 ? -1 : 0;
}

/* null_accept - take every waiting connection there is a free slot for */
static void null_accept(int lfd, struct null_conn *conns)
{
	static const char greeting[] = "220 null.bench ESMTP\r\n";

	for (int i = 0; i < NULL_CONNS; i++) {
		int one = 1, fd;

		if (conns[i].fd >= 0)
			continue;
		if ((fd = accept(lfd, NULL, NULL)) < 0)
			return;	/* EAGAIN: none waiting */
		if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0
		    || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
			close_fd(fd);
			continue;
		}
		conns[i].fd = fd;
		conns[i].in_data = conns[i].quit = 0;
		conns[i].in_len = conns[i].out_len = 0;
		null_reply(&conns[i], greeting);
		if (null_flush(&conns[i]) < 0) {
			close_fd(fd);
			conns[i].fd = -1;
		}
	}
}

/* null_serve - the null server's loop, in a child of the bench, until SIGTERM */
static void null_serve(int lfd)
{
	static struct null_conn conns[NULL_CONNS];
	struct pollfd pfd[NULL_CONNS + 1];
	int slot[NULL_CONNS + 1];

	for (int i = 0; i < NULL_CONNS; i++)
		conns[i].fd = -1;
	for (;;) {
		int n = 1;

		for (int i = 0; i < NULL_CONNS; i++)
			if (conns[i].fd >= 0) {
				pfd[n] = (struct pollfd){ .fd = conns[i].fd,
					.events = conns[i].out_len ? POLLOUT : POLLIN };
				slot[n++] = i;
			}
		/* All slots taken: new connections wait in the backlog. */
		pfd[0] = (struct pollfd){ .fd = lfd, .events = n <= NULL_CONNS ? POLLIN : 0 };
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		for (int j = 1; j < n; j++)
			if (pfd[j].revents && null_step(&conns[slot[j]]) < 0) {
				close_fd(conns[slot[j]].fd);
				conns[slot[j]].fd = -1;
			}
		if (pfd[0].revents & POLLIN)
			null_accept(lfd, conns);
	}
}

/* start_null - the null server on 127.0.0.1, a free port */
static void start_null(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0
	    || listen(lfd, 1024) < 0 || getsockname(lfd, (struct sockaddr *)&sa, &len) < 0
	    || fcntl(lfd, F_SETFL, O_NONBLOCK) < 0)
		fatal("null server: %s", strerror(errno));
	snprintf(B.null.host, sizeof B.null.host, "127.0.0.1");
	snprintf(B.null.port, sizeof B.null.port, "%u", (unsigned)ntohs(sa.sin_port));
	if ((B.nulld.pid = fork()) < 0)
		fatal("fork: %s", strerror(errno));
	if (B.nulld.pid == 0)
		null_serve(lfd);
	close_fd(lfd);
}

/* rm_entry - nftw callback: remove one file or (emptied) directory */
static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	if (remove(path) < 0)
		fprintf(stderr, "bench: remove %s: %s\n", path, strerror(errno));
	return 0;
}

/* cleanup - atexit: stop our servers, remove the throwaway directory */
static void cleanup(void)
{
	if (getpid() != B.parent)
		return;
	server_stop(&B.smtpd);
	server_stop(&B.popd);
	server_stop(&B.based);
	server_stop(&B.nulld);
	for (int i = 0; i < 2; i++) {
		server_stop(&B.acct_smtpd[i]);
		server_stop(&B.acct_popd[i]);
	}
	server_stop(&B.relay_ad);
	server_stop(&B.relay_bd);
	if (B.dir[0] && !B.keep && nftw(B.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
		fprintf(stderr, "bench: cannot remove %s\n", B.dir);
	else if (B.dir[0] && B.keep)
		fprintf(stderr, "bench: kept %s\n", B.dir);
}

/* ---------------------------------------------------------------- /proc */

/* proc_read - the start of /proc/<pid>/<name>, NUL-terminated; -1 if gone */
static int proc_read(long pid, const char *name, char *buf, size_t cap)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "/proc/%ld/%s", pid, name);
	if ((fd = open(path, O_RDONLY)) < 0)
		return -1;
	n = read(fd, buf, cap - 1);
	close_fd(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

/* proc_parent - the parent pid of pid from /proc/<pid>/stat; -1 if gone */
static long proc_parent(long pid)
{
	char buf[1024], *p;
	long ppid = -1;

	if (proc_read(pid, "stat", buf, sizeof buf) < 0)
		return -1;
	p = strrchr(buf, ')');	/* the command name may hold spaces and ')' */
	if (!p || sscanf(p + 1, " %*c %ld", &ppid) != 1)
		return -1;
	return ppid;
}

/* only_child - the single child process of server pid; -1 if none or several */
static long only_child(pid_t server)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	long found = -1;
	int count = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL) {
		long pid = isdigit((unsigned char)e->d_name[0]) ? atol(e->d_name) : 0;

		if (pid > 0 && proc_parent(pid) == (long)server) {
			found = pid;
			count++;
		}
	}
	closedir(d);
	return count == 1 ? found : -1;
}

/* proc_kib - a "Name:  N kB" field of /proc/<pid>/status; -1 if unreadable */
static long proc_kib(long pid, const char *field)
{
	char buf[4096], *p;

	if (proc_read(pid, "status", buf, sizeof buf) < 0)
		return -1;
	p = strstr(buf, field);
	return p ? atol(p + strlen(field)) : -1;
}

/* log_last_session - the pid of the last "connection from" line in the
 * last 64 KiB of a server's log; -1 if none */
static long log_last_session(const char *log)
{
	static char buf[65536 + 1];
	char *p, *last = NULL;
	off_t size;
	ssize_t n = -1;
	int fd = open(log, O_RDONLY);

	if (fd < 0)
		return -1;
	if ((size = lseek(fd, 0, SEEK_END)) >= 0)
		n = pread(fd, buf, sizeof buf - 1, size > 65536 ? size - 65536 : 0);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	for (p = buf; (p = strstr(p, "]: connection from ")) != NULL; p++)
		last = p;
	while (last && last > buf && isdigit((unsigned char)last[-1]))
		last--;
	return last ? atol(last) : -1;
}

/* session_hwm - VmHWM (KiB) of the server's session process: its one child,
 * or, among several (smtpmail's pool keeps idle ones), the one that logged
 * the last connection (its peak then includes its earlier sessions');
 * -1 if unknown */
static long session_hwm(const struct server *srv)
{
	for (int tries = 0; srv->pid > 0 && tries < 100; tries++) {
		long child = only_child(srv->pid);

		if (child < 0 && (child = log_last_session(srv->log)) > 0
		    && proc_parent(child) != (long)srv->pid)
			child = -1;
		if (child > 0)
			return proc_kib(child, "VmHWM:");
		sleep_ms(20);	/* a previous session may still be exiting */
	}
	return -1;
}

/* ---------------------------------------------------------------- raw append+fsync */

/* raw_worker - append 2 KiB records with fsync to one file until the deadline */
static long raw_worker(int k, int64_t deadline)
{
	char path[PATH_LEN], name[32], rec[MSG_SIZE];
	long n = 0;
	int fd;

	snprintf(name, sizeof name, "raw%d", k);
	path_join(path, B.dir, name);
	memset(rec, 'r', sizeof rec);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	while (now_us() < deadline) {
		if (send_all(fd, rec, sizeof rec) < 0 || fsync(fd) < 0) {
			close_fd(fd);
			return -1;
		}
		n++;
	}
	if (close(fd) < 0 || unlink(path) < 0)
		return -1;
	return n;
}

/* gate_wait - a worker blocks until the parent closes the start pipe */
static void gate_wait(int gate[2])
{
	char ch;

	close_fd(gate[1]);
	while (read(gate[0], &ch, 1) < 0 && errno == EINTR)
		;
	close_fd(gate[0]);
}

/* wait_workers - reap n worker processes; how many failed */
static int wait_workers(const pid_t *pids, int n)
{
	int bad = 0, status;

	for (int i = 0; i < n; i++)
		if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status)
		    || WEXITSTATUS(status) != 0)
			bad++;
	return bad;
}

/* raw_rate - records/s of nprocs processes appending+fsyncing, one file each,
 * for ms milliseconds */
static double raw_rate(int nprocs, int ms)
{
	pid_t pids[RAW_PROCS];
	int gate[2];
	int64_t t0;
	long total = 0;

	if (pipe(gate) < 0)
		fatal("pipe: %s", strerror(errno));
	for (int k = 0; k < nprocs; k++) {
		if ((pids[k] = fork()) < 0)
			fatal("fork: %s", strerror(errno));
		if (pids[k] == 0) {
			gate_wait(gate);
			B.sh->raw[k] = raw_worker(k, now_us() + (int64_t)ms * 1000);
			_exit(B.sh->raw[k] < 0);
		}
	}
	close_fd(gate[0]);
	t0 = now_us();
	close_fd(gate[1]);
	if (wait_workers(pids, nprocs) > 0)
		fatal("raw append+fsync failed in %s", B.dir);
	for (int k = 0; k < nprocs; k++)
		total += B.sh->raw[k];
	return total / ((now_us() - t0) / 1e6);
}

/* ---------------------------------------------------------------- SMTP cells */

/* cell_id - a message id unique in the run: cell, session, sequence */
static uint64_t cell_id(int cell, int k, long j)
{
	return ((uint64_t)cell << 40) | ((uint64_t)k << 24) | (uint64_t)j;
}

/* cell_endpoint - where a cell's sessions send */
static struct endpoint *cell_endpoint(const struct cell *cl)
{
	return cl->to == TO_NULL ? &B.null : &B.smtp;
}

/* smtp_worker - session k of a cell: transactions until the deadline, on
 * one connection or on a new one each */
static int smtp_worker(const struct cell *cl, int cellno, int k, int64_t deadline)
{
	long cap = SLOTS / cl->sessions, j;
	struct sample *out = B.sh->s + (long)k * cap;
	static struct client c;
	char msg[MSG_SIZE + 3], rcpt[32];

	if (!cl->per_message && smtp_open(&c, cell_endpoint(cl)) != 0)
		return -1;
	for (j = 0; j < cap && now_us() < deadline; j++) {
		int box = cl->to == TO_TEN ? (int)((k + j) % MAILBOXES) : 0;
		int64_t t0;

		out[j].id = cell_id(cellno, k, j);
		out[j].box = (uint8_t)box;
		gen_message(msg, MSG_SIZE, out[j].id);
		memcpy(msg + MSG_SIZE, ".\r\n", 3);
		snprintf(rcpt, sizeof rcpt, "bench%d", box);
		t0 = now_us();
		out[j].code = (int16_t)(cl->per_message
					? smtp_message(&c, cell_endpoint(cl), rcpt, msg, sizeof msg,
						       cl->pipelining)
					: smtp_send(&c, rcpt, msg, sizeof msg, cl->pipelining));
		out[j].usec = (uint32_t)(now_us() - t0);
		B.sh->count[k] = j + 1;
		if (out[j].code <= 0)
			return -1;
	}
	if (!cl->per_message)
		smtp_bye(&c);
	return 0;
}

/* cell_collect - after a cell: rate, percentiles, accepted ids remembered */
static void cell_collect(struct cell *cl)
{
	long cap = SLOTS / cl->sessions, n = 0;
	uint32_t *lat = xmalloc(SLOTS * sizeof *lat);

	for (int k = 0; k < cl->sessions; k++)
		for (long j = 0; j < B.sh->count[k]; j++) {
			const struct sample *s = &B.sh->s[(long)k * cap + j];

			if (s->code != 250) {
				if (cl->refused++ < 10)
					problem("transaction %016" PRIx64 " got %d", s->id, s->code);
				else
					B.failures++;
				continue;
			}
			lat[n++] = s->usec;
			if (cl->to == TO_NULL)
				continue;	/* stored nowhere: nothing to verify */
			if (B.accepted.n == B.accepted.cap) {
				B.accepted.cap = B.accepted.cap ? 2 * B.accepted.cap : 65536;
				B.accepted.id = realloc(B.accepted.id, B.accepted.cap * sizeof(uint64_t));
				if (!B.accepted.id)
					fatal("out of memory");
			}
			B.accepted.id[B.accepted.n++] = s->id;
		}
	cl->accepted = n;
	qsort(lat, (size_t)n, sizeof *lat, cmp_u32);
	cl->p50_ms = n ? lat[n / 2] / 1000.0 : 0;
	cl->p99_ms = n ? lat[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] / 1000.0 : 0;
	free(lat);
}

/* run_cell - the sessions of one cell, started together, for -t seconds */
static void run_cell(struct cell *cl, int cellno)
{
	pid_t pids[MAX_SESSIONS];
	int gate[2], bad;
	int64_t t0;

	memset(B.sh->count, 0, sizeof B.sh->count);
	if (pipe(gate) < 0)
		fatal("pipe: %s", strerror(errno));
	for (int k = 0; k < cl->sessions; k++) {
		if ((pids[k] = fork()) < 0)
			fatal("fork: %s", strerror(errno));
		if (pids[k] == 0) {
			gate_wait(gate);
			_exit(smtp_worker(cl, cellno, k,
					  now_us() + (int64_t)B.cell_seconds * 1000000) < 0);
		}
	}
	close_fd(gate[0]);
	t0 = now_us();
	close_fd(gate[1]);
	if ((bad = wait_workers(pids, cl->sessions)) > 0)
		problem("%d of %d sessions failed", bad, cl->sessions);
	cl->seconds = (now_us() - t0) / 1e6;
	cell_collect(cl);
}

/* ---------------------------------------------------------------- POP3 measurements */

/* trace_lines - the Return-Path and Received lines smtpmail would prepend */
static int trace_lines(char *out, size_t cap, const char *login, uint64_t id)
{
	int n = snprintf(out, cap, "Return-Path: <bench@localhost>\r\n"
			 "Received: from bench.client ([127.0.0.1])\r\n"
			 "\tby " HOSTNAME " (smtpmail) with SMTP id B%016" PRIx64 "\r\n"
			 "\tfor <%s@" HOSTNAME ">; Mon, 23 Nov 2026 09:00:00 +0000\r\n",
			 id, login);

	if (n < 0 || (size_t)n >= cap)
		fatal("trace line too long");
	return n;
}

/* build_mailbox - write login's mailbox directly: count records of size bytes */
static void build_mailbox(const char *login, long count, size_t size)
{
	char dir[PATH_LEN], path[PATH_LEN], trace[512];
	char *msg = xmalloc(size);
	FILE *f;

	path_join(dir, B.spool, login);
	path_join(path, dir, "mymailbox");
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		fatal("mkdir %s: %s", dir, strerror(errno));
	if (!(f = fopen(path, "w")) || setvbuf(f, NULL, _IOFBF, 1 << 20) != 0)
		fatal("%s: %s", path, strerror(errno));
	for (long i = 0; i < count; i++) {
		uint64_t id = ((uint64_t)0xfe << 40) | ((uint64_t)size << 20) | (uint64_t)i;
		int t = trace_lines(trace, sizeof trace, login, id);

		gen_message(msg, size, id);
		if (fwrite(trace, 1, (size_t)t, f) != (size_t)t
		    || fwrite(msg, 1, size, f) != size || fwrite(".\r\n", 1, 3, f) != 3)
			fatal("write %s: %s", path, strerror(errno));
	}
	if (fflush(f) != 0 || fsync(fileno(f)) < 0 || fclose(f) != 0)
		fatal("write %s: %s", path, strerror(errno));
	free(msg);
}

/* One retrieval of a whole mailbox. */
struct pass {
	double rate, mbs;
	long done;		/* messages retrieved within RETR_SECONDS */
};

/* pop_retrieve_all - log in to ep, LIST, RETR every message, depth at a
 * time (at most RETR_SECONDS); -1 on failure */
static int pop_retrieve_all(struct endpoint *ep, const char *login, long expect, int depth,
			    struct pass *out)
{
	static struct client c;
	long *sizes = NULL, n, i, k;
	double bytes = 0;
	int64_t t0, stop;

	if (pop_login(&c, ep, login, NULL) < 0)
		return -1;
	n = pop_list(&c, &sizes);
	if (n != expect) {
		problem("POP3 %s: LIST gave %ld messages, expected %ld", login, n, expect);
		free(sizes);
		client_close(&c);
		return -1;
	}
	t0 = now_us();
	stop = t0 + (int64_t)RETR_SECONDS * 1000000;
	for (i = 0; i < n && now_us() < stop; i += k) {
		k = n - i < depth ? n - i : depth;
		if ((depth == 1 ? pop_retr(&c, i + 1, sizes[i], NULL)
		     : pop_retr_batch(&c, i + 1, k, sizes)) < 0) {
			problem("POP3 %s: RETR %ld failed or malformed", login, i + 1);
			break;
		}
		for (long j = i; j < i + k; j++)
			bytes += (double)sizes[j];
	}
	out->done = i;
	out->rate = out->done / ((now_us() - t0) / 1e6);
	out->mbs = bytes / 1e6 / ((now_us() - t0) / 1e6);
	free(sizes);
	pop_quit(&c);
	return 0;
}

/* loop_sender - child: accept one connection, send it the whole file at path */
static int loop_sender(int lfd, const char *path)
{
	int fd = open(path, O_RDONLY), s = accept(lfd, NULL, NULL);
	struct stat st;
	off_t off = 0;

	if (fd < 0 || s < 0 || fstat(fd, &st) < 0)
		return -1;
	while (off < st.st_size) {
#ifdef __linux__
		ssize_t k = sendfile(s, fd, &off, (size_t)(st.st_size - off));
#else
		char buf[65536];
		ssize_t k = pread(fd, buf, sizeof buf, off);

		if (k > 0 && send_all(s, buf, (size_t)k) < 0)
			k = -1;
		off += k > 0 ? k : 0;
#endif
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
	}
	return close(s) < 0 || close(fd) < 0 ? -1 : 0;
}

/* loopback_mbs - the reference for RETR: MB/s of sendfile of pop5m's mailbox
 * (20 x 5 MiB) to a reader on a loopback TCP connection, no POP3 */
static double loopback_mbs(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	char dir[PATH_LEN], path[PATH_LEN];
	struct endpoint ep = { .host = "127.0.0.1" };
	static struct client c;
	double bytes = 0;
	int64_t t0;
	int status, lfd = socket(AF_INET, SOCK_STREAM, 0);
	pid_t pid = -1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	path_join(dir, B.spool, "pop5m");
	path_join(path, dir, "mymailbox");
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1) < 0
	    || getsockname(lfd, (struct sockaddr *)&sa, &len) < 0 || (pid = fork()) < 0)
		fatal("loopback reference: %s", strerror(errno));
	if (pid == 0)
		_exit(loop_sender(lfd, path) < 0);
	close_fd(lfd);
	snprintf(ep.port, sizeof ep.port, "%u", (unsigned)ntohs(sa.sin_port));
	if (client_connect(&c, &ep) < 0)
		fatal("loopback reference: connect: %s", strerror(errno));
	t0 = now_us();
	for (c.pos = c.len = 0; client_fill(&c) == 0; c.pos = c.len)
		bytes += (double)(c.len - c.pos);
	bytes /= (now_us() - t0) / 1e6;
	client_close(&c);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		problem("loopback reference: the sender failed");
	return bytes / 1e6;
}

/* pop_login_time - seconds from PASS to its +OK on login's mailbox at ep; -1 */
static double pop_login_time(struct endpoint *ep, const char *login)
{
	static struct client c;
	int64_t t;

	if (pop_login(&c, ep, login, &t) < 0) {
		problem("POP3 login %s failed", login);
		return -1;
	}
	pop_quit(&c);
	return t / 1e6;
}

/* ---------------------------------------------------------------- memory (the 20 MB message) */

/* mem_smtp - send the 20 MB message to benchmem; VmHWM of the session before QUIT */
static long mem_smtp(const char *msg, long *idle_kib)
{
	static struct client c;
	long hwm;
	int code;

	if (smtp_open(&c, &B.smtp) != 0)
		fatal("cannot connect to smtpmail");
	*idle_kib = session_hwm(&B.smtpd);
	code = smtp_send(&c, "benchmem", msg, (size_t)BIG_SIZE + 3, 1);
	hwm = session_hwm(&B.smtpd);
	if (code != 250)	/* a 250 is verified through POP3 in mem_pop */
		problem("20 MB message got %d", code);
	smtp_bye(&c);
	return hwm;
}

/* mem_pop - retrieve it back, check it byte for byte; VmHWM of the session */
static long mem_pop(const char *msg, long *idle_kib)
{
	static struct client c;
	long *sizes = NULL, hwm, n;
	char *got;

	if (pop_login(&c, &B.pop, "benchmem", NULL) < 0)
		fatal("cannot log in to popserver as benchmem");
	*idle_kib = session_hwm(&B.popd);
	if ((n = pop_list(&c, &sizes)) != 1) {
		problem("benchmem holds %ld messages, expected 1", n);
		free(sizes);
		return -1;
	}
	got = xmalloc((size_t)sizes[0] + 3);
	if (sizes[0] < BIG_SIZE || pop_retr(&c, 1, sizes[0], got) < 0
	    || memcmp(got + sizes[0] - BIG_SIZE, msg, BIG_SIZE) != 0
	    || memcmp(got, "Return-Path: ", 13) != 0) {
		problem("the 20 MB message did not come back byte-exact");
		B.lost++;
	}
	hwm = session_hwm(&B.popd);
	free(got);
	free(sizes);
	pop_quit(&c);
	return hwm;
}

/* ---------------------------------------------------------------- verification */

/* read_file - the whole file into a malloc'd buffer; NULL if missing */
static char *read_file(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	size_t got = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0)
		fatal("fstat %s: %s", path, strerror(errno));
	buf = xmalloc((size_t)st.st_size);
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n <= 0)
			fatal("read %s: %s", path, n < 0 ? strerror(errno) : "short");
		got += (size_t)n;
	}
	close_fd(fd);
	*len = got;
	return buf;
}

/* unstuff - copy a record's lines, one leading '.' dropped from each; new length */
static size_t unstuff(char *dst, const char *src, size_t len)
{
	size_t out = 0, i = 0;

	while (i < len) {
		const char *lf = memchr(src + i, '\n', len - i);
		size_t end = lf ? (size_t)(lf - src) + 1 : len;

		if (src[i] == '.')
			i++;
		memcpy(dst + out, src + i, end - i);
		out += end - i;
		i = end;
	}
	return out;
}

/* skip_trace - past "Return-Path:" and "Received:" (with folded lines); NULL if absent */
static const char *skip_trace(const char *rec, const char *end)
{
	const char *p = rec, *lf;

	if (end - p < 13 || memcmp(p, "Return-Path: ", 13) != 0
	    || !(lf = memchr(p, '\n', (size_t)(end - p))))
		return NULL;
	p = lf + 1;
	if (end - p < 10 || memcmp(p, "Received: ", 10) != 0)
		return NULL;
	for (int i = 0; i < 64 && (lf = memchr(p, '\n', (size_t)(end - p))); i++) {
		p = lf + 1;
		if (p >= end || (*p != ' ' && *p != '\t'))
			return p;
	}
	return NULL;
}

/* check_record - one record: trace lines, id known and not seen, bytes exact */
static void check_record(const char *rec, size_t len, char *scratch, const char *box)
{
	const char *body = skip_trace(rec, rec + len), *tag;
	char expect[MSG_SIZE];
	uint64_t id, *hit;
	size_t n;

	if (!body) {
		problem("%s: record without Return-Path/Received", box);
		return;
	}
	n = unstuff(scratch, body, len - (size_t)(body - rec));
	tag = find(scratch, n, "X-Bench-Id: ", 12);
	if (!tag || sscanf(tag + 12, "%16" SCNx64, &id) != 1) {
		problem("%s: record without X-Bench-Id", box);
		return;
	}
	hit = bsearch(&id, B.accepted.id, B.accepted.n, sizeof id, cmp_u64);
	if (!hit) {
		problem("%s: message %016" PRIx64 " stored but never acknowledged", box, id);
		return;
	}
	if (B.accepted.seen[hit - B.accepted.id]++)
		problem("%s: message %016" PRIx64 " stored twice", box, id);
	gen_message(expect, MSG_SIZE, id);
	if (n != MSG_SIZE || memcmp(scratch, expect, MSG_SIZE) != 0)
		problem("%s: message %016" PRIx64 " differs from what was sent", box, id);
}

/* verify_box - split one mailbox into records and check each */
static long verify_box(int box)
{
	char name[32], dir[PATH_LEN], path[PATH_LEN];
	size_t len = 0, pos = 0;
	long records = 0;
	char *data, *scratch;

	snprintf(name, sizeof name, "bench%d", box);
	path_join(dir, B.spool, name);
	path_join(path, dir, "mymailbox");
	if (!(data = read_file(path, &len)))
		return 0;
	scratch = xmalloc(len);
	while (pos < len) {
		const char *end = find(data + pos, len - pos, "\r\n.\r\n", 5);

		if (!end) {
			problem("%s: ends with a partial record", path);
			break;
		}
		check_record(data + pos, (size_t)(end - (data + pos)) + 2, scratch, name);
		records++;
		pos = (size_t)(end - data) + 5;
	}
	free(scratch);
	free(data);
	return records;
}

/* verify_all - every acknowledged message exactly once; how many records */
static long verify_all(void)
{
	long records = 0, missing = 0;
	int before = B.failures;

	qsort(B.accepted.id, B.accepted.n, sizeof(uint64_t), cmp_u64);
	B.accepted.seen = calloc(B.accepted.n ? B.accepted.n : 1, 1);
	if (!B.accepted.seen)
		fatal("out of memory");
	for (int box = 0; box < MAILBOXES; box++)
		records += verify_box(box);
	for (size_t i = 0; i < B.accepted.n; i++)
		if (!B.accepted.seen[i] && missing++ < 10)
			problem("message %016" PRIx64 " got 250 but is not stored",
				B.accepted.id[i]);
	free(B.accepted.seen);
	B.lost += B.failures - before;
	return records;
}

/* ---------------------------------------------------------------- relay (A to B) */

/* relay_files - a spool and a user file (bench0) under B.dir, named after who */
static void relay_files(const char *who, char *spool, char *userfile)
{
	char name[64];
	FILE *f = NULL;

	snprintf(name, sizeof name, "relay-%s", who);
	path_join(spool, B.dir, name);
	snprintf(name, sizeof name, "relay-%s.txt", who);
	path_join(userfile, B.dir, name);
	if (mkdir(spool, 0700) < 0 || !(f = fopen(userfile, "w")))
		fatal("%s: %s", spool, strerror(errno));
	fprintf(f, "bench0 " PASSWORD "\n");
	if (fclose(f) != 0)
		fatal("%s: %s", userfile, strerror(errno));
}

/* relay_servers - B (receives for b.bench) and A (relays for 127.0.0.1 as
 * a trusted network, a route of b.bench to B, second-scale retries) */
static void relay_servers(char *a_spool, char *b_spool)
{
	char bin[PATH_LEN], a_users[PATH_LEN], b_users[PATH_LEN], b_port[16], route[64];
	char *b_argv[] = { bin, "-d", b_spool, "-u", b_users, "-n", "b.bench", "-l", "127.0.0.1",
			   "-D", "b.bench", "-c", "200", b_port, NULL };
	char *a_argv[] = { bin, "-d", a_spool, "-u", a_users, "-n", "a.bench", "-l", "127.0.0.1",
			   "-D", "a.bench", "-o", "-N", "127.0.0.1/32", "-R", route, "-B", "1:2",
			   "-c", "200", B.relay_a.port, NULL };

	path_join(bin, B.bindir, "smtpmail");
	relay_files("a", a_spool, a_users);
	relay_files("b", b_spool, b_users);
	free_port(b_port, sizeof b_port);
	snprintf(route, sizeof route, "b.bench=[127.0.0.1]:%s", b_port);
	server_start(&B.relay_bd, b_argv, "relay-b.log");
	snprintf(B.relay_a.host, sizeof B.relay_a.host, "127.0.0.1");
	free_port(B.relay_a.port, sizeof B.relay_a.port);
	server_start(&B.relay_ad, a_argv, "relay-a.log");
}

/* relay_worker - session k: messages from bench0@a.bench to rcpt on one
 * connection until the deadline; their count in B.sh->count[k] */
static int relay_worker(int k, const char *rcpt, int64_t deadline)
{
	static struct client c;
	char msg[MSG_SIZE + 3], to[128];
	long j;

	snprintf(to, sizeof to, "RCPT TO:<%s>\r\n", rcpt);
	if (smtp_open(&c, &B.relay_a) != 0)
		return -1;
	for (j = 0; now_us() < deadline; j++) {
		gen_message(msg, MSG_SIZE, ((uint64_t)0xfe << 40) | ((uint64_t)k << 24) | (uint64_t)j);
		memcpy(msg + MSG_SIZE, ".\r\n", 3);
		if (smtp_step(&c, "MAIL FROM:<bench0@a.bench>\r\n") != 250 || smtp_step(&c, to) != 250
		    || smtp_step(&c, "DATA\r\n") != 354 || send_all(c.fd, msg, sizeof msg) < 0
		    || smtp_reply(&c) != 250)
			return -1;
		B.sh->count[k] = j + 1;
	}
	smtp_bye(&c);
	return 0;
}

/* relay_send - RELAY_SESSIONS sessions to rcpt for -t seconds; the
 * messages accepted, the seconds in *seconds */
static long relay_send(const char *rcpt, double *seconds)
{
	pid_t pids[RELAY_SESSIONS];
	int gate[2], bad;
	int64_t t0;
	long n = 0;

	memset(B.sh->count, 0, sizeof B.sh->count);
	if (pipe(gate) < 0)
		fatal("pipe: %s", strerror(errno));
	for (int k = 0; k < RELAY_SESSIONS; k++) {
		if ((pids[k] = fork()) < 0)
			fatal("fork: %s", strerror(errno));
		if (pids[k] == 0) {
			gate_wait(gate);
			_exit(relay_worker(k, rcpt, now_us() + (int64_t)B.cell_seconds * 1000000) < 0);
		}
	}
	close_fd(gate[0]);
	t0 = now_us();
	close_fd(gate[1]);
	if ((bad = wait_workers(pids, RELAY_SESSIONS)) > 0)
		problem("relay: %d of %d sessions failed", bad, RELAY_SESSIONS);
	*seconds = (now_us() - t0) / 1e6;
	for (int k = 0; k < RELAY_SESSIONS; k++)
		n += B.sh->count[k];
	return n;
}

/* queued - the messages in spool's queue (its <id>.env files) */
static long queued(const char *spool)
{
	char dir[PATH_LEN];
	struct dirent *e;
	DIR *d;
	long n = 0;

	path_join(dir, spool, ".queue");
	if (!(d = opendir(dir)))
		return 0;
	while ((e = readdir(d)))
		n += strlen(e->d_name) > 4 && strcmp(e->d_name + strlen(e->d_name) - 4, ".env") == 0;
	closedir(d);
	return n;
}

/* box_records - the records in the mailbox of login under spool */
static long box_records(const char *spool, const char *login)
{
	char dir[PATH_LEN], path[PATH_LEN];
	size_t len;
	long n = 0;
	char *data;

	path_join(dir, spool, login);
	path_join(path, dir, "mymailbox");
	if (!(data = read_file(path, &len)))
		return 0;
	for (const char *p = data; (p = find(p, len - (size_t)(p - data), "\r\n.\r\n", 5)); p += 5)
		n++;
	free(data);
	return n;
}

/* phase_relay - A's local delivery, then the same load relayed to B: the
 * relay rate counts until the queue is empty and B has every message */
static void phase_relay(struct results *r)
{
	char a_spool[PATH_LEN], b_spool[PATH_LEN];
	int64_t t0, end;

	relay_servers(a_spool, b_spool);
	fprintf(stderr, "bench: relay: %d sessions into A's mailbox ...\n", RELAY_SESSIONS);
	r->relay_local_n = relay_send("bench0@a.bench", &r->relay_local_s);
	r->relay_local = r->relay_local_n / r->relay_local_s;
	fprintf(stderr, "bench: relay: %d sessions through A to B ...\n", RELAY_SESSIONS);
	t0 = now_us();
	r->relay_n = relay_send("bench0@b.bench", &r->relay_s);
	end = t0 + (int64_t)RELAY_DRAIN_S * 1000000;
	while ((queued(a_spool) > 0 || box_records(b_spool, "bench0") < r->relay_n)
	       && now_us() < end)
		sleep_ms(20);
	r->relay_s = (now_us() - t0) / 1e6;
	r->relay_rate = r->relay_n / r->relay_s;
	r->relay_arrived = box_records(b_spool, "bench0");
	if (r->relay_arrived != r->relay_n || queued(a_spool) > 0) {
		problem("relay: %ld sent, %ld in B's mailbox, %ld still queued", r->relay_n,
			r->relay_arrived, queued(a_spool));
		B.lost = 1;
	}
	if (box_records(a_spool, "bench0") != r->relay_local_n) {
		problem("relay: %ld sent to A's mailbox, %ld there", r->relay_local_n,
			box_records(a_spool, "bench0"));
		B.lost = 1;
	}
	server_stop(&B.relay_ad);
	server_stop(&B.relay_bd);
}

/* print_relay - the relay part of the table */
static void print_relay(const struct results *r)
{
	if (!r->ran_relay) {
		printf("\nRelay: skipped (-p, or servers given with -S/-P)\n");
		return;
	}
	printf("\nRelay, A to B (%d sessions, 2 KiB messages; A delivers through its queue"
	       " runner)\n", RELAY_SESSIONS);
	printf("  %-34s %10.0f   (%ld in %.1f s)\n", "A, local delivery: messages/s",
	       r->relay_local, r->relay_local_n, r->relay_local_s);
	printf("  %-34s %10.0f   (%ld in %.1f s, %ld arrived at B)\n",
	       "A to B, queued and delivered", r->relay_rate, r->relay_n, r->relay_s,
	       r->relay_arrived);
	printf("  %-34s %10.2f\n", "ratio to local delivery",
	       r->relay_local > 0 ? r->relay_rate / r->relay_local : 0);
}

/* ---------------------------------------------------------------- report */

/* load_average - the first three fields of /proc/loadavg ("?" elsewhere) */
static void load_average(char *out, size_t cap)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double a, b, c;

	if (f && fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
		snprintf(out, cap, "%.2f %.2f %.2f", a, b, c);
	else
		snprintf(out, cap, "?");
	if (f)
		fclose(f);
}

/* machine - CPU count, CPU model and the temp directory's filesystem */
static void machine(char *out, size_t cap)
{
	char line[256], model[128] = "unknown CPU", fs[32] = "unknown fs";
	FILE *f = fopen("/proc/cpuinfo", "r");
#ifdef __linux__
	struct statfs sfs;
	static const struct { long magic; const char *name; } fstypes[] = {
		{ 0xEF53, "ext4" }, { 0x01021994, "tmpfs" }, { 0x58465342, "xfs" },
		{ 0x9123683E, "btrfs" }, { 0x794c7630, "overlayfs" }, { 0x65735546, "fuse" }
	};

	if (statfs(B.dir, &sfs) == 0)
		for (size_t i = 0; i < sizeof fstypes / sizeof fstypes[0]; i++)
			if ((long)sfs.f_type == fstypes[i].magic)
				snprintf(fs, sizeof fs, "%s", fstypes[i].name);
#endif
	for (int i = 0; f && i < 10000 && fgets(line, sizeof line, f); i++) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) == 0 && colon) {
			snprintf(model, sizeof model, "%s", colon + 2);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	}
	if (f)
		fclose(f);
	snprintf(out, cap, "%ld CPUs (%s), %s on %s", sysconf(_SC_NPROCESSORS_ONLN),
		 model, B.dir, fs);
}

/* target - one line of the target summary */
static void target(const char *what, int met, const char *fmt, ...)
{
	va_list ap;

	printf("  %-7s %-58s ", met ? "met" : "MISSED", what);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* cell_rate - messages/s of one cell */
static double cell_rate(const struct cell *c)
{
	return c->seconds > 0 ? c->accepted / c->seconds : 0;
}

/* print_cells - the SMTP part of the table */
static void print_cells(const struct cell *cells, int n)
{
	static const char *const to[] = { "null", "1 mailbox", "10 mailboxes" };

	printf("\nSMTP, 2 KiB messages, %d s per cell; vs null: over the null server's rate "
	       "(it accepts and\ndiscards) measured just before in the same pattern; raw/s "
	       "(persistent only): the raw\nrate (1 or 10 processes), the mean of %d ms just "
	       "before and %d ms just after the cell\n", B.cell_seconds, RAW_CELL_MS,
	       RAW_CELL_MS);
	printf("  %-11s %4s %-4s %-12s %7s %7s %7s %7s %7s %6s %7s\n", "connection", "sess",
	       "pipe", "server", "msgs/s", "p50 ms", "p99 ms", "vs null", "raw/s", "vs raw",
	       "refused");
	for (int i = 0; i < n; i++) {
		const struct cell *c = &cells[i];
		double rate = cell_rate(c);

		printf("  %-11s %4d %-4s %-12s %7.0f %7.2f %7.2f", c->per_message ? "per message"
		       : "persistent", c->sessions, c->pipelining ? "yes" : "no", to[c->to], rate,
		       c->p50_ms, c->p99_ms);
		if (c->to == TO_NULL)
			printf("%33ld\n", c->refused);
		else if (c->per_message)
			printf(" %6.2fx %22ld\n", c->null_rate > 0 ? rate / c->null_rate : 0,
			       c->refused);
		else
			printf(" %6.2fx %7.0f %5.2fx %7ld\n", c->null_rate > 0 ? rate / c->null_rate
			       : 0, c->raw, c->raw > 0 ? rate / c->raw : 0, c->refused);
	}
}

/* ---------------------------------------------------------------- the run */

/* setup - the throwaway directory, spool, user file, shared memory */
static void setup(void)
{
	char tmpl[PATH_LEN];
	FILE *f;
	static const char *extra[] = { "benchmem", "pop10k", "pop5m", "pop100k" };

	path_join(tmpl, B.tmpbase, "mailbench-XXXXXX");
	if (!mkdtemp(tmpl))
		fatal("mkdtemp %s: %s", tmpl, strerror(errno));
	snprintf(B.dir, sizeof B.dir, "%s", tmpl);
	path_join(B.spool, B.dir, "users");
	path_join(B.userfile, B.dir, "user.txt");
	if (mkdir(B.spool, 0700) < 0 || !(f = fopen(B.userfile, "w")))
		fatal("%s: %s", B.dir, strerror(errno));
	for (int i = 0; i < MAILBOXES; i++)
		fprintf(f, "bench%d " PASSWORD "\n", i);
	for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
		fprintf(f, "%s " PASSWORD "\n", extra[i]);
	if (fclose(f) != 0)
		fatal("%s: %s", B.userfile, strerror(errno));
	B.sh = mmap(NULL, sizeof *B.sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		    -1, 0);
	if (B.sh == MAP_FAILED)
		fatal("mmap: %s", strerror(errno));
}

/* endpoint_parse - "host:port" */
static int endpoint_parse(struct endpoint *ep, const char *arg)
{
	const char *colon = strrchr(arg, ':');

	if (!colon || colon == arg || (size_t)(colon - arg) >= sizeof ep->host
	    || strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof ep->port)
		return -1;
	memcpy(ep->host, arg, (size_t)(colon - arg));
	ep->host[colon - arg] = '\0';
	snprintf(ep->port, sizeof ep->port, "%s", colon + 1);
	return 0;
}

/* usage - the synopsis on out; exit with code */
static void usage(FILE *out, int code)
{
	fprintf(out, "usage: bench [-B bindir] [-b base-popserver] [-T tmpdir] [-L logdir]"
		" [-S host:port]\n             [-P host:port] [-d spool] [-t seconds]"
		" [-p smtp,pop,memory,accounts,relay] [-k] [-h]\n");
	exit(code);
}

/* options - parse the command line into B */
static void options(int argc, char **argv)
{
	int ch;

	B.bindir = ".";
	B.tmpbase = "/tmp";
	B.cell_seconds = CELL_SECONDS;
	B.parts = "smtp,pop,memory,accounts,relay";
	while ((ch = getopt(argc, argv, "B:b:T:L:S:P:d:t:p:kh")) != -1) {
		if (ch == 'B')
			B.bindir = optarg;
		else if (ch == 'b')
			B.base_pop = optarg;
		else if (ch == 'p')
			B.parts = optarg;
		else if (ch == 'L')
			B.logdir = optarg;
		else if (ch == 'T')
			B.tmpbase = optarg;
		else if (ch == 'S' && endpoint_parse(&B.smtp, optarg) == 0)
			B.have_smtp = 1;
		else if (ch == 'P' && endpoint_parse(&B.pop, optarg) == 0)
			B.have_pop = 1;
		else if (ch == 'd')
			B.spool_arg = optarg;
		else if (ch == 't' && (B.cell_seconds = atoi(optarg)) > 0 && B.cell_seconds < 100)
			continue;
		else if (ch == 'k')
			B.keep = 1;
		else
			usage(ch == 'h' ? stdout : stderr, ch == 'h' ? 0 : 2);
	}
	if (optind != argc)
		usage(stderr, 2);
}


/* cell_index - where the cell of these parameters is in results.cells */
static int cell_index(int sessions, int per_message, int pipelining, enum target to)
{
	int s = sessions == 1 ? 0 : sessions == 10 ? 1 : 2;

	return ((s * 2 + per_message) * 2 + pipelining) * 3 + (int)to;
}

/* measure_cell - one SMTP cell; smtpmail on a persistent connection between
 * two short raw measurements (the disk of a shared VM drifts) */
static void measure_cell(struct cell *c, int cellno)
{
	static const char *const to[] = { "the null server", "1 mailbox", "10 mailboxes" };
	int procs = c->to == TO_TEN ? RAW_PROCS : 1, raw = c->to != TO_NULL && !c->per_message;

	fprintf(stderr, "bench: SMTP %d session(s), %s, pipelining %s, %s ...\n", c->sessions,
		c->per_message ? "a connection per message" : "persistent",
		c->pipelining ? "yes" : "no", to[c->to]);
	if (raw)
		c->raw = raw_rate(procs, RAW_CELL_MS);
	run_cell(c, cellno);
	if (raw)
		c->raw = (c->raw + raw_rate(procs, RAW_CELL_MS)) / 2;
}

/* phase_raw_smtp - the raw limits and the SMTP cells: for each pattern the
 * null server first, then smtpmail into 1 and into 10 mailboxes */
static void phase_raw_smtp(struct results *r)
{
	static const int sessions[] = { 1, 10, MAX_SESSIONS };

	fprintf(stderr, "bench: raw append+fsync ...\n");
	r->raw1 = raw_rate(1, B.cell_seconds * 1000);
	r->raw10 = raw_rate(RAW_PROCS, B.cell_seconds * 1000);
	for (int si = 0; si < 3; si++)
		for (int pm = 0; pm < 2; pm++)
			for (int pl = 0; pl < 2; pl++)
				for (int to = TO_NULL; to <= TO_TEN; to++) {
					int n = cell_index(sessions[si], pm, pl, to);
					struct cell *c = &r->cells[n];

					*c = (struct cell){ .sessions = sessions[si],
							    .per_message = pm,
							    .pipelining = pl, .to = to };
					if (to != TO_NULL)
						c->null_rate = cell_rate(&r->cells[n - to]);
					measure_cell(c, n + 1);
				}
}

/* cmp_double - qsort order for the rounds' figures */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* median - the median of n figures (sorted in place), and their range */
static double median(double *v, int n, double *lo, double *hi)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	if (lo)
		*lo = v[0];
	if (hi)
		*hi = v[n - 1];
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* summarize - POP_ROUNDS passes into medians and a range */
static void summarize(const struct pass *p, struct retrieval *out)
{
	double rate[POP_ROUNDS], mbs[POP_ROUNDS];

	out->done = p[0].done;
	for (int i = 0; i < POP_ROUNDS; i++) {
		rate[i] = p[i].rate;
		mbs[i] = p[i].mbs;
		out->done = p[i].done < out->done ? p[i].done : out->done;
	}
	out->rate = median(rate, POP_ROUNDS, &out->lo, &out->hi);
	out->mbs = median(mbs, POP_ROUNDS, NULL, NULL);
}

/* pop_small - pop10k, one RETR at a time and POP_DEPTH at once, on our
 * popserver and the base, interleaved round by round */
static void pop_small(struct results *r, int servers)
{
	struct endpoint *ep[2] = { &B.pop, &B.base };
	struct pass p[2][2][POP_ROUNDS];

	memset(p, 0, sizeof p);
	for (int round = 0; round < POP_ROUNDS; round++)
		for (int d = 0; d < 2; d++)
			for (int sv = 0; sv < servers; sv++)
				if (pop_retrieve_all(ep[sv], "pop10k", POP_SMALL_COUNT,
						     d ? POP_DEPTH : 1, &p[sv][d][round]) < 0)
					problem("POP3 retrieval of pop10k failed");
	for (int sv = 0; sv < servers; sv++)
		for (int d = 0; d < 2; d++)
			summarize(p[sv][d], &r->small[sv][d]);
}

/* pop_logins - login on pop100k, LOGIN_RUNS times, interleaved */
static void pop_logins(struct results *r, int servers)
{
	struct endpoint *ep[2] = { &B.pop, &B.base };
	double t[2][LOGIN_RUNS];

	for (int i = 0; i < LOGIN_RUNS; i++)
		for (int sv = 0; sv < servers; sv++)
			t[sv][i] = pop_login_time(ep[sv], "pop100k");
	for (int sv = 0; sv < servers; sv++)
		r->login_s[sv] = median(t[sv], LOGIN_RUNS, &r->login_lo[sv], &r->login_hi[sv]);
}

/* phase_pop - the POP3 figures (the mailboxes are built in the spool) */
static void phase_pop(struct results *r)
{
	struct pass large[POP_ROUNDS];
	int servers = B.based.pid > 0 ? 2 : 1;

	fprintf(stderr, "bench: building POP3 mailboxes ...\n");
	build_mailbox("pop10k", POP_SMALL_COUNT, POP_SMALL_SIZE);
	build_mailbox("pop5m", POP_LARGE_COUNT, POP_LARGE_SIZE);
	build_mailbox("pop100k", LOGIN_COUNT, MSG_SIZE);
	fprintf(stderr, "bench: POP3 retrieval and login%s ...\n",
		servers == 2 ? ", and the base popserver's" : "");
	pop_small(r, servers);
	memset(large, 0, sizeof large);
	for (int round = 0; round < POP_ROUNDS; round++)
		if (pop_retrieve_all(&B.pop, "pop5m", POP_LARGE_COUNT, 1, &large[round]) < 0)
			problem("POP3 retrieval of pop5m failed");
	summarize(large, &r->large);
	r->loop_mbs = loopback_mbs();
	pop_logins(r, servers);
}

/* phase_memory - the 20 MB message in through SMTP and out through POP3 */
static void phase_memory(struct results *r)
{
	char *msg = xmalloc((size_t)BIG_SIZE + 3);

	fprintf(stderr, "bench: 20 MB message ...\n");
	gen_message(msg, BIG_SIZE, BIG_ID);
	memcpy(msg + BIG_SIZE, ".\r\n", 3);
	r->smtp_hwm = mem_smtp(msg, &r->smtp_idle);
	if (B.have_pop)
		r->pop_hwm = r->pop_idle = -1;
	else
		r->pop_hwm = mem_pop(msg, &r->pop_idle);
	free(msg);
}

/* ---------------------------------------------------------------- accounts (user.txt at scale) */

/* acct_file - a user file of n generated accounts, "acctNNNNNN benchpw" a
 * line, whose last is ACCT_LAST whatever n is: both files answer the same
 * lookups, one from 2 accounts, the other from ACCT_BIG */
static void acct_file(const char *path, long n)
{
	FILE *f = fopen(path, "w");

	if (!f)
		fatal("%s: %s", path, strerror(errno));
	for (long i = 0; i < n; i++)
		fprintf(f, "acct%06ld " PASSWORD "\n", i == n - 1 ? (long)ACCT_BIG - 1 : i);
	if (fclose(f) != 0)
		fatal("%s: %s", path, strerror(errno));
}

/* touch_back - give path the time of day secs_ago seconds ago: a new
 * version to the servers, and not a fresh one (a version younger than a
 * second they read once more a second later) */
static void touch_back(const char *path, int secs_ago)
{
	struct timespec ts[2];

	if (clock_gettime(CLOCK_REALTIME, &ts[0]) < 0)
		fatal("clock_gettime: %s", strerror(errno));
	ts[0].tv_sec -= secs_ago;
	ts[1] = ts[0];
	if (utimensat(AT_FDCWD, path, ts, 0) < 0)
		fatal("utimensat %s: %s", path, strerror(errno));
}

/* acct_servers - a smtpmail and a popserver on userfile, at ep[0], ep[1] */
static void acct_servers(int k, const char *userfile, const char *spool, struct endpoint ep[2])
{
	char smtp_bin[PATH_LEN], pop_bin[PATH_LEN], smtp_log[64], pop_log[64];
	char *smtp_argv[] = { smtp_bin, "-d", (char *)spool, "-u", (char *)userfile,
			      "-n", HOSTNAME, "-l", "127.0.0.1", "-t", "120", ep[0].port, NULL };
	char *pop_argv[] = { pop_bin, "-d", (char *)spool, "-u", (char *)userfile,
			     "-l", "127.0.0.1", "-t", "120", ep[1].port, NULL };

	path_join(smtp_bin, B.bindir, "smtpmail");
	path_join(pop_bin, B.bindir, "popserver");
	snprintf(smtp_log, sizeof smtp_log, "smtpmail-accounts%d.log", k);
	snprintf(pop_log, sizeof pop_log, "popserver-accounts%d.log", k);
	for (int i = 0; i < 2; i++) {
		snprintf(ep[i].host, sizeof ep[i].host, "127.0.0.1");
		free_port(ep[i].port, sizeof ep[i].port);
	}
	server_start(&B.acct_smtpd[k], smtp_argv, smtp_log);
	server_start(&B.acct_popd[k], pop_argv, pop_log);
}

/* fine_us - monotonic microseconds, to the nanosecond: a lookup's round
 * trip is some 20 us */
static double fine_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		fatal("clock_gettime: %s", strerror(errno));
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* rcpt_us - one RCPT to ACCT_LAST in the open session c (MAIL given): microseconds, -1 */
static double rcpt_us(struct client *c)
{
	double t0 = fine_us();

	if (smtp_step(c, "RCPT TO:<" ACCT_LAST "@" HOSTNAME ">\r\n") != 250)
		return -1;
	return fine_us() - t0;
}

/* pop_session_us - a POP3 session as ACCT_LAST, login, STAT and QUIT:
 * microseconds, and the PASS alone in *pass_us; -1 */
static double pop_session_us(struct endpoint *ep, double *pass_us)
{
	static struct client c;
	char line[LINE_MAX_LEN];
	int64_t t0 = now_us(), pass;

	if (pop_login(&c, ep, ACCT_LAST, &pass) < 0)
		return -1;
	if (pop_cmd(&c, "STAT\r\n", line, sizeof line) < 0)
		problem("POP3 STAT: %s", line);
	pop_quit(&c);
	*pass_us = (double)pass;
	return (double)(now_us() - t0);
}

/* acct_rcpts - RCPTs on both smtpmails, one by one in turn, in
 * transactions of ACCT_RCPT_BLOCK: the medians */
static void acct_rcpts(struct results *r, struct client *c[2])
{
	static double t[2][ACCT_RCPT_BLOCKS * ACCT_RCPT_BLOCK];
	int n = 0;

	for (int b = 0; b < ACCT_RCPT_BLOCKS; b++) {
		for (int k = 0; k < 2; k++)
			if (smtp_step(c[k], "MAIL FROM:<bench@localhost>\r\n") != 250)
				fatal("accounts: MAIL refused");
		for (int i = 0; i < ACCT_RCPT_BLOCK; i++, n++)
			for (int k = 0; k < 2; k++)
				if ((t[k][n] = rcpt_us(c[k])) < 0)
					fatal("accounts: RCPT refused");
		for (int k = 0; k < 2; k++)
			if (smtp_step(c[k], "RSET\r\n") != 250)
				fatal("accounts: RSET refused");
	}
	for (int k = 0; k < 2; k++)
		r->acct_rcpt[k] = median(t[k], n, NULL, NULL);
}

/* acct_absent - RCPTs to logins that do not exist and to ACCT_LAST in
 * turn, in sessions of their own (each absent one is an error): medians */
static void acct_absent(struct results *r, struct endpoint *smtp[2])
{
	static double absent[2][ACCT_ABSENT * ACCT_ABSENT_SESSIONS];
	static double present[2][ACCT_ABSENT * ACCT_ABSENT_SESSIONS];
	static struct client c;
	char cmd[128];
	int n = 0;

	for (int s = 0; s < ACCT_ABSENT_SESSIONS; s++, n += ACCT_ABSENT)
		for (int k = 0; k < 2; k++) {
			if (smtp_open(&c, smtp[k]) != 0
			    || smtp_step(&c, "MAIL FROM:<bench@localhost>\r\n") != 250)
				fatal("accounts: cannot open a SMTP session");
			for (int i = 0; i < ACCT_ABSENT; i++) {
				double t0 = fine_us();

				snprintf(cmd, sizeof cmd, "RCPT TO:<nobody%d@" HOSTNAME ">\r\n", i);
				if (smtp_step(&c, cmd) != 550)
					fatal("accounts: RCPT to no login not refused");
				absent[k][n + i] = fine_us() - t0;
				if ((present[k][n + i] = rcpt_us(&c)) < 0)
					fatal("accounts: RCPT refused");
			}
			smtp_bye(&c);
		}
	for (int k = 0; k < 2; k++) {
		r->acct_absent[k] = median(absent[k], n, NULL, NULL);
		r->acct_present[k] = median(present[k], n, NULL, NULL);
	}
}

/* pin_one_cpu - run on one CPU only (the servers started now inherit
 * it), so that every round trip is a switch on that CPU: a wake-up on the
 * other, from its idle state, costs more than a lookup, and which server
 * got it would decide the ratio; restore: back to *saved. Linux only. */
static void pin_one_cpu(int restore)
{
#ifdef __linux__
	static cpu_set_t saved;
	static int pinned;
	cpu_set_t one;

	if (restore) {
		if (pinned && sched_setaffinity(0, sizeof saved, &saved) < 0)
			problem("sched_setaffinity: %s", strerror(errno));
		pinned = 0;
		return;
	}
	if (sched_getaffinity(0, sizeof saved, &saved) < 0)
		return;
	CPU_ZERO(&one);
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &saved)) {
			CPU_SET(cpu, &one);
			break;
		}
	pinned = sched_setaffinity(0, sizeof one, &one) == 0;
#else
	(void)restore;
#endif
}

/* acct_logins - POP3 sessions on both popservers, interleaved: the medians */
static void acct_logins(struct results *r, struct endpoint *pop[2])
{
	static double t[2][ACCT_LOGINS], pass[2][ACCT_LOGINS];

	for (int i = 0; i < ACCT_LOGINS; i++)
		for (int k = 0; k < 2; k++)
			if ((t[k][i] = pop_session_us(pop[k], &pass[k][i])) < 0)
				fatal("accounts: POP3 login at %s:%s failed", pop[k]->host,
				      pop[k]->port);
	for (int k = 0; k < 2; k++) {
		r->acct_session[k] = median(t[k], ACCT_LOGINS, NULL, NULL);
		r->acct_pass[k] = median(pass[k], ACCT_LOGINS, NULL, NULL);
	}
}

/* acct_reloads - the big file changed (its time only) before a RCPT in
 * a running session, whose process then reads it again, and before a
 * POP3 session, whose parent does: each less its usual time, medians */
static void acct_reloads(struct results *r, const char *big, struct endpoint *pop,
			 struct client *c)
{
	double in_session[ACCT_RELOADS], in_parent[ACCT_RELOADS], pass;

	if (smtp_step(c, "MAIL FROM:<bench@localhost>\r\n") != 250)
		fatal("accounts: MAIL refused");
	for (int i = 0; i < ACCT_RELOADS; i++) {
		touch_back(big, 100 + 2 * i);
		in_session[i] = (rcpt_us(c) - r->acct_rcpt[1]) / 1000;
		touch_back(big, 101 + 2 * i);
		in_parent[i] = (pop_session_us(pop, &pass) - r->acct_session[1]) / 1000;
		if (in_session[i] < -1000 || in_parent[i] < -1000)
			fatal("accounts: a lookup after a change failed");
	}
	if (smtp_step(c, "RSET\r\n") != 250)
		problem("accounts: RSET refused");
	r->acct_reload_session = median(in_session, ACCT_RELOADS, NULL, NULL);
	r->acct_reload_parent = median(in_parent, ACCT_RELOADS, NULL, NULL);
}

/* phase_accounts - the accounts figures, on servers of their own */
static void phase_accounts(struct results *r)
{
	char files[2][PATH_LEN], spools[2][PATH_LEN];
	struct endpoint ep[2][2];	/* [2 or ACCT_BIG][smtpmail, popserver] */
	struct endpoint *smtp[2] = { &ep[0][0], &ep[1][0] }, *pop[2] = { &ep[0][1], &ep[1][1] };
	static struct client sessions[2];
	struct client *c[2] = { &sessions[0], &sessions[1] };

	fprintf(stderr, "bench: accounts, 2 and %d ...\n", (int)ACCT_BIG);
	/* Spools of their own: a session's end must not hold up the next
	 * session's login, on the other server, on the same mailbox's lock. */
	path_join(spools[0], B.dir, "accounts-users-2");
	path_join(spools[1], B.dir, "accounts-users-100k");
	path_join(files[0], B.dir, "accounts-2.txt");
	path_join(files[1], B.dir, "accounts-100k.txt");
	for (int k = 0; k < 2; k++)
		if (mkdir(spools[k], 0700) < 0)
			fatal("%s: %s", spools[k], strerror(errno));
	acct_file(files[0], 2);
	acct_file(files[1], ACCT_BIG);
	pin_one_cpu(0);
	for (int k = 0; k < 2; k++) {
		touch_back(files[k], 200);
		acct_servers(k, files[k], spools[k], ep[k]);
		if (smtp_open(c[k], smtp[k]) != 0)
			fatal("accounts: cannot open a SMTP session");
	}
	acct_rcpts(r, c);
	acct_absent(r, smtp);
	acct_logins(r, pop);
	acct_reloads(r, files[1], pop[1], c[1]);
	for (int k = 0; k < 2; k++) {
		smtp_bye(c[k]);
		server_stop(&B.acct_smtpd[k]);
		server_stop(&B.acct_popd[k]);
	}
	pin_one_cpu(1);
}

/* print_small - one row of the 10,000-message retrieval, with the base's */
static void print_small(const struct results *r, int d, int servers)
{
	const struct retrieval *a = &r->small[0][d], *b = &r->small[1][d];

	printf("  %-16s %5d %8.0f %6.0f-%-6.0f %6.1f", "10,000 x 2.4 KB", d ? POP_DEPTH : 1,
	       a->rate, a->lo, a->hi, a->mbs);
	if (servers == 2)
		printf(" %8.0f %6.0f-%-6.0f %6.2fx", b->rate, b->lo, b->hi,
		       b->rate > 0 ? a->rate / b->rate : 0);
	printf("%s\n", a->done < POP_SMALL_COUNT ? " (time cap hit)" : "");
}

/* print_pop_memory - the POP3 and memory parts of the table */
static void print_pop_memory(const struct results *r)
{
	int servers = B.based.pid > 0 ? 2 : 1;

	printf("\nPOP3 retrieval (LIST, then RETR one at a time or %d in one write; MB = 10^6 "
	       "bytes;\nmedian and range of %d rounds%s)\n", POP_DEPTH, POP_ROUNDS,
	       servers == 2 ? ", popserver and the base interleaved" : "");
	if (!r->ran_pop) {
		printf("  skipped: %s\n", B.have_spool ? "not asked for (-p)"
		       : "no spool (-d) to build the mailboxes in");
	} else {
		printf("  %-16s %5s %8s %-13s %6s", "mailbox", "RETRs", "msgs/s", " range", "MB/s");
		if (servers == 2)
			printf(" %8s %-13s %7s", "base", " range", "vs base");
		printf("\n");
		print_small(r, 0, servers);
		print_small(r, 1, servers);
		printf("  %-16s %5d %8.1f %6.0f-%-6.0f %6.0f%s\n", "20 x 5 MiB", 1, r->large.rate,
		       r->large.lo, r->large.hi, r->large.mbs,
		       r->large.done < POP_LARGE_COUNT ? " (time cap hit)" : "");
		printf("  %-37s %6.0f\n", "reference: loopback sendfile", r->loop_mbs);
		printf("  login (PASS to +OK), 100,000 x 2 KiB, median of %d: %.3f s (%.3f-%.3f)",
		       LOGIN_RUNS, r->login_s[0], r->login_lo[0], r->login_hi[0]);
		if (servers == 2)
			printf(", base %.3f s (%.3f-%.3f)", r->login_s[1], r->login_lo[1],
			       r->login_hi[1]);
		printf("\n");
	}
	printf("\nMemory: VmHWM (peak RSS, KiB) of the session process, 20 MB message\n");
	printf("  %-34s %10s %10s\n", "", "idle", "after");
	printf("  %-34s %10ld %10ld\n", "smtpmail, after receiving it", r->smtp_idle,
	       r->smtp_hwm);
	printf("  %-34s %10ld %10ld\n", "popserver, after sending it", r->pop_idle,
	       r->pop_hwm);
	printf("  (idle: just after the greeting/login; -1: not measurable, external server)\n");
}

/* print_accounts - the accounts part of the table */
static void print_accounts(const struct results *r)
{
	printf("\nAccounts: user.txt of 2 and of 100,000 accounts, the last one looked up;"
	       " all on one CPU\n");
	if (!r->ran_accounts) {
		printf("  skipped: %s\n", B.have_smtp || B.have_pop ? "external servers (-S, -P)"
		       : "not asked for (-p)");
		return;
	}
	printf("  %-44s %10s %10s %7s\n", "(medians)", "2", "100,000", "ratio");
	printf("  %-44s %10.1f %10.1f %6.2fx\n", "RCPT in a session, us (2,100, in turn)",
	       r->acct_rcpt[0], r->acct_rcpt[1], r->acct_rcpt[1] / r->acct_rcpt[0]);
	printf("  %-44s %10.1f %10.1f %6.2fx\n", "RCPT to no such login, us (210)",
	       r->acct_absent[0], r->acct_absent[1], r->acct_absent[1] / r->acct_absent[0]);
	printf("  %-44s %10.1f %10.1f %6.2fx\n", "  and to the last account between them, us",
	       r->acct_present[0], r->acct_present[1], r->acct_present[1] / r->acct_present[0]);
	printf("  %-44s %10.1f %10.1f %6.2fx\n", "POP3 login+STAT+QUIT, us (201, in turn)",
	       r->acct_session[0], r->acct_session[1], r->acct_session[1] / r->acct_session[0]);
	printf("  %-44s %10.1f %10.1f %6.2fx\n", "  of which PASS to +OK, us", r->acct_pass[0],
	       r->acct_pass[1], r->acct_pass[1] / r->acct_pass[0]);
	printf("  reading 100,000 accounts again after a change (median of %d, less the "
	       "usual time):\n    in a session, at its next RCPT: %.1f ms; in the parent, "
	       "before the next POP3 session: %.1f ms\n", ACCT_RELOADS,
	       r->acct_reload_session, r->acct_reload_parent);
}

/* ratio_pair - a smtpmail cell over the null server's rate, or over its raw
 * rate, for 10 sessions, without and with PIPELINING */
static void ratio_pair(const struct results *r, int per_message, enum target to, int raw,
		       double out[2])
{
	for (int pl = 0; pl < 2; pl++) {
		const struct cell *c = &r->cells[cell_index(10, per_message, pl, to)];
		double base = raw ? c->raw : c->null_rate;

		out[pl] = base > 0 ? cell_rate(c) / base : 0;
	}
}

/* print_targets - the performance targets (tests/README.md), met or missed (SMTP: the better of
 * with and without PIPELINING, both shown) */
static void print_targets(const struct results *r)
{
	double a[2], b[2], c[2];
	long rss = r->smtp_hwm > r->pop_hwm ? r->smtp_hwm : r->pop_hwm;
	const struct retrieval *one = r->small[0], *base = r->small[1];

	ratio_pair(r, 1, TO_ONE, 0, a);
	ratio_pair(r, 0, TO_ONE, 1, b);
	ratio_pair(r, 1, TO_TEN, 0, c);
	printf("\nTargets (performance)\n");
	if (r->ran_smtp)
		target("SMTP 10 sessions, per message, 1 mailbox >= 0.6x null", a[0] >= 0.6 || a[1] >= 0.6,
	       "%.2fx / %.2fx (without / with PIPELINING)", a[0], a[1]);
	if (r->ran_smtp)
		target("SMTP 10 sessions, persistent, 1 mailbox >= 1.0x raw 1",
		       b[0] >= 1 || b[1] >= 1, "%.2fx / %.2fx", b[0], b[1]);
	if (r->ran_smtp)
		target("SMTP 10 sessions, per message, 10 mailboxes >= 0.45x null",
		       c[0] >= 0.45 || c[1] >= 0.45, "%.2fx / %.2fx", c[0], c[1]);
	if (r->ran_pop && B.based.pid > 0) {
		target("POP3 10,000 x 2.4 KB, 32 RETRs at once >= 2x base",
		       one[1].rate >= 2 * base[1].rate, "%.2fx", one[1].rate / base[1].rate);
		/* "Not slower": within 5%, less than the rounds' usual spread */
		target("POP3 10,000 x 2.4 KB, one RETR at a time not slower",
		       one[0].rate >= 0.95 * base[0].rate, "%.2fx base", one[0].rate / base[0].rate);
	}
	if (r->ran_pop) {
		target("POP3 >= 1 GB/s on 5 MiB messages", r->large.mbs >= 1000,
		       "%.2f GB/s", r->large.mbs / 1000);
		target("login on 100,000 messages <= 0.1 s",
		       r->login_s[0] >= 0 && r->login_s[0] <= 0.1, "%.3f s", r->login_s[0]);
	}
	if (rss >= 0)
		target("session peak RSS <= 2 MiB (20 MB message)", rss <= 2048, "%ld KiB", rss);
	if (r->ran_accounts) {
		double rcpt = r->acct_rcpt[1] / r->acct_rcpt[0];
		double login = r->acct_session[1] / r->acct_session[0];

		printf("\nTargets (accounts)\n");
		target("RCPT, 100,000 accounts <= 1.2x 2", rcpt <= 1.2, "%.2fx", rcpt);
		target("POP3 login+STAT+QUIT, 100,000 accounts <= 1.2x 2", login <= 1.2, "%.2fx",
		       login);
	}
}

/* report - the whole table on stdout */
static void report(const struct results *r)
{
	char where[PATH_LEN + 256];

	machine(where, sizeof where);
	printf("\nmail trio benchmark: %s\n", where);
	printf("load average (1, 5, 15 min) at start: %s, at end: %s\n", r->load_start,
	       r->load_end);
	if (r->ran_smtp) {
		printf("\nRaw limit, same directory: 2 KiB append+fsync records/s, %d s each\n",
		       B.cell_seconds);
		printf("  %-34s %10.0f\n", "1 process, 1 file", r->raw1);
		printf("  %-34s %10.0f\n", "10 processes, 10 files (total)", r->raw10);
		print_cells(r->cells, CELLS);
	} else {
		printf("\nRaw limit and SMTP: skipped (-p)\n");
	}
	print_pop_memory(r);
	print_accounts(r);
	print_relay(r);
	if (B.have_spool)
		printf("\nVerification: %zu messages acknowledged with 250, %ld records in "
		       "the 10 mailboxes: %s\n", B.accepted.n, r->records,
		       B.lost ? "FAILED" : "each present once, byte-exact");
	else
		printf("\nVerification: skipped (no spool given with -d)\n");
	print_targets(r);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static struct results r;

	options(argc, argv);
	B.parent = getpid();
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fatal("signal: %s", strerror(errno));
	setup();
	if (atexit(cleanup) != 0)
		fatal("atexit");
	load_average(r.load_start, sizeof r.load_start);
	B.have_spool = B.spool_arg || !(B.have_smtp || B.have_pop);
	if (B.spool_arg)
		snprintf(B.spool, sizeof B.spool, "%s", B.spool_arg);
	start_null();
	if (!B.have_smtp)
		start_smtpmail();
	if (!B.have_pop)
		start_popserver();
	if ((r.ran_smtp = strstr(B.parts, "smtp") != NULL))
		phase_raw_smtp(&r);
	if ((r.ran_pop = B.have_spool && strstr(B.parts, "pop")))
		phase_pop(&r);
	if ((r.ran_accounts = !B.have_smtp && !B.have_pop && strstr(B.parts, "accounts")))
		phase_accounts(&r);
	if ((r.ran_relay = !B.have_smtp && !B.have_pop && strstr(B.parts, "relay")))
		phase_relay(&r);
	if (strstr(B.parts, "memory"))
		phase_memory(&r);
	else
		r.smtp_idle = r.smtp_hwm = r.pop_idle = r.pop_hwm = -1;
	if (B.have_spool)
		r.records = verify_all();
	load_average(r.load_end, sizeof r.load_end);
	report(&r);
	return B.failures ? 1 : 0;
}
