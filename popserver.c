/*
 * popserver - a forking POP3 server (RFC 1939) over the smtpmail spool.
 *
 * Usage and options: help_text, just below the includes (popserver -h
 * prints it, and README shows it: one text, checked by tests/test_help.py).
 * The wrong-password delay is -w, as in smtpmail; its old name -a is still
 * taken, with a warning, for one release.
 *
 * Commands (verbs in any case), RFC 1939, RFC 2449 CAPA, RFC 3206 codes:
 *   AUTHORIZATION  USER name, PASS secret, APOP name digest (RFC 1939 7),
 *                  AUTH CRAM-MD5|PLAIN [response] (RFC 5034), CAPA, QUIT
 *   TRANSACTION    STAT, LIST [n], RETR n, DELE n, NOOP, RSET, TOP n k,
 *                  UIDL [n], CAPA, QUIT
 * Replies: greeting "+OK POP3 server ready <pid.clock@host>" (APOP's
 * timestamp); a wrong password (PASS, APOP, AUTH) "-ERR [AUTH] invalid
 * user name or password" after the -w delay (3 failures close);
 * a mailbox in use "-ERR [IN-USE] mailbox locked by another session";
 * lock timeouts and I/O errors "-ERR [SYS/TEMP] ..."; QUIT "+OK ...
 * goodbye", or "-ERR some deleted messages not removed" when the update
 * fails (the mailbox then stays as it was).
 *
 * The mailbox follows DESIGN.md "Record format": records of CRLF lines,
 * dot-stuffed, each ended by a line ".". At PASS the session lock (byte 0
 * of mymailbox.state) is taken for the whole session. Then, under the
 * commit and write locks (bytes 2 and 1), the end of the last complete and
 * durable record is found, and the records below it are indexed. What
 * smtpmail appended but has not yet fsynced is committed first, or left
 * for the next session.
 *
 * RETR sends a record as it is stored: copied behind its +OK line if it
 * fits the output buffer, else by sendfile. Sizes are counted unstuffed.
 * QUIT with deletions writes mymailbox.new (the kept records plus the mail
 * that arrived meanwhile), fsyncs it and renames it over mymailbox. When
 * the deleted messages end the mailbox and no mail follows them, they are
 * cut off in place instead; nothing is copied, so this works on a full
 * disk. Both ways hold an fcntl lock on mymailbox itself, as mutt and
 * procmail do, and wait while another program holds the dotlock
 * mymailbox.lock. Both are refused if mymailbox.state was replaced since
 * login (DESIGN.md "Locking"). Every file is opened relative to the
 * user's directory, which is never a link, and a link, FIFO or hard-linked
 * file there is refused at once.
 *
 * UIDL: 16 hex digits, stable across sessions and restarts. The id is the
 * FNV-1a hash of smtpmail's trace lines at the record's start, which hold
 * its unique id, and of the record's length. A record without those lines
 * is hashed over all its bytes. Equal hashes still get distinct ids: the
 * k-th copy hashes on over "#k" (trace_len, uidl_unique).
 *
 * Limits: command line 255 octets with CRLF (RFC 2449 section 4); 20 bad
 * commands after login, 3 before, then "-ERR too many errors" and close.
 * Memory per session: the index (20 bytes a message; 8 more while it is
 * built at PASS) plus fixed buffers.
 * Out of descriptors at accept(): pause 100 ms between tries, logged once
 * until an accept works again (trouble).
 *
 * Exit status: 0 success, non-zero failure. It is 0 after SIGTERM or
 * SIGINT, and with -i after the session; 1 when it cannot listen or
 * serve; 2 after bad usage. A session's wrong passwords reach the parent
 * only in its note on the pipe (session_over -> note_over). The parent
 * adds them to the client address's penalty, which doubles the -w delay
 * of that address's later sessions (start_session). With -i there is no
 * parent, so the delay doubles within the session only.
 *
 * Where to look: commands[] is the table, dispatch and check_args enforce
 * it; PASS: cmd_pass -> password_check, logged_in -> login -> snapshot_mailbox
 * (durable_end: group commit), scan_records -> uidl_feed, uidl_unique;
 * RETR: cmd_retr -> send_copy or copy_range; TOP: cmd_top -> top_cut; QUIT:
 * cmd_quit -> update_mailbox -> mail_end, truncate_mailbox or
 * rewrite_mailbox -> write_new, write_kept, then commit_updated; APOP:
 * cmd_apop -> apop_check; AUTH: cmd_auth -> sasl_auth; the session loop:
 * pop_session -> session_step -> run_line -> dispatch; the accept loop:
 * serve; -i: serve_inetd.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64

#include <sys/types.h>
#include <sys/stat.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>
#ifdef __linux__
#include <sys/sendfile.h>
#endif

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The usage and every option, printed by -h (the synopsis alone, on
 * stderr, after bad usage). README's copy must equal it. */
static const char help_text[] =
	"usage: popserver [-d spool] [-u userfile] [-l address] [-c maxsessions]\n"
	"                 [-C perclient] [-t seconds] [-w msec] [-L seconds]\n"
	"                 [-T seconds] [-i] [-v] [-h] [port]\n"
	"\n"
	"  port            TCP port to listen on (1100)\n"
	"  -d spool        the mailboxes <spool>/<login>/mymailbox (as smtpmail)\n"
	"  -u userfile     the accounts, \"<login> <password>\" a line (user.txt)\n"
	"  -l address      listen on this address only (every IPv4 and IPv6 address)\n"
	"  -c maxsessions  sessions at once; past it \"-ERR [SYS/TEMP] ...\" (100)\n"
	"  -C perclient    sessions at once from one client address (half of -c)\n"
	"  -t seconds      timeout for a command line, RFC 1939's autologout (600)\n"
	"  -w msec         the wait before answering a wrong password, doubled for\n"
	"                  each recent failure of the client's address, up to 15 s\n"
	"                  (1000)\n"
	"  -a msec         the old name of -w: still taken, with a warning\n"
	"  -L seconds      the time to log in, then the connection is closed (60)\n"
	"  -T seconds      the longest a session may last, nothing deleted (7200)\n"
	"  -i              one session on standard input and output (inetd, stunnel)\n"
	"  -v              log the whole dialogue, never a password or digest\n"
	"  -h              this help on stdout\n"
	"\n"
	"Exit status: 0 success, 1 cannot listen or serve, 2 bad usage.\n";

/* ---------------------------------------------------------------- limits */

/* >>> shared: limits - the limits of the shared blocks (smtpmail.c, popserver.c) */

enum {
	IO_BUF_SIZE = 16384,	/* socket input and output buffers */
	LOG_LINE_MAX = 1024,	/* one log line, truncated past this */
	LOGIN_MAX = 64,		/* DESIGN.md: a login is 1-64 characters */
	PASSWORD_MAX = 128,
	USERLINE_MAX = 512,	/* one line of user.txt */
	MAX_LISTEN = 8,		/* listening sockets (IPv4 + IPv6 + ...) */
	ADDR_TEXT_MAX = 64,	/* a numeric IPv4/IPv6 address, scope included */
	STOP_GRACE_SECONDS = 10,	/* SIGTERM: how long running sessions may go on */
	ACCEPT_PAUSE_MS = 100,	/* accept() out of descriptors: wait, then retry */
	SLOTS_SPARE = 64,	/* session table entries beyond 2 * -c (server_setup) */
	SLOT_WAIT_MS = 20,	/* at -c, the wait for a session to say it is over */
	PENALTY_SLOTS = 256,	/* addresses whose wrong passwords the parent keeps */
	PENALTY_FORGET_SECONDS = 900,	/* an address's failures count this long */
	PENALTY_MAX_MS = 15000,	/* the wrong-password delay doubles up to this (Dovecot) */
	PENALTY_FAILURES_MAX = 100,	/* an address's wrong passwords counted, at most */
	NOTE_WAIT_MS = 1000,	/* a session's note on a full pipe: the wait for room */
	PATH_TEXT_MAX = 4096,	/* a spool path */
	SESSION_LOCK_BYTE = 0,	/* DESIGN.md: popserver, PASS to session end */
	WRITE_LOCK_BYTE = 1,	/* DESIGN.md: whoever changes or snapshots mymailbox */
	COMMIT_LOCK_BYTE = 2,	/* DESIGN.md: whoever fsyncs mymailbox for others; popserver at login and QUIT */
	LOCK_WAIT_SECONDS = 30,	/* the bounded wait for the write or commit lock */
	DOTLOCK_STALE_SECONDS = 300,	/* an older mymailbox.lock is left over (liblockfile) */
	STALE_TRIES = 3,	/* opening a spool file again after it was replaced */
	COMMIT_KEPT = 4,	/* cuts and replacements the commit state remembers */
	CONVERT_QUIET_MS = 300,	/* no conversion of a file written more recently */
	AUTH_LINE_MAX = 1024,	/* a SASL response line: any valid one fits (RFC 4954 4) */
	STAMP_MAX = 320		/* "<pid.clock@host>", the host 255 octets at most */
};

/* <<< shared: limits */

enum {
	POP_LINE_MAX = 255,	/* RFC 2449 section 4: 255 octets with CRLF */
	REPLY_MAX = 512,	/* RFC 2449 section 4: 512 octets with CRLF */
	ARGS_MAX = 2,		/* RFC 1939: TOP n k has the most, two */
	WORDS_UNLIMITED = 1000,	/* a rule's word count with no limit: PASS's rest of the line */
	ERRORS_MAX = 20,	/* bad commands after login, as Dovecot */
	AUTH_ERRORS_MAX = 3,	/* bad commands before login */
	AUTH_FAILURES_MAX = 3,	/* wrong passwords before the session closes */
	SCAN_CHUNK = 256 * 1024,	/* indexing reads the mailbox in these */
	COPY_CHUNK = 64 * 1024,	/* TOP, and copies without sendfile */
	/* RETR copies a record that fits the output buffer into it, and sends
	 * a larger one by sendfile. Measured (tests/README.md "Performance"),
	 * copying is 1.1-2x faster up to 16 KiB, and 0.5-0.8x as fast past
	 * it. */
	RETR_COPY_MAX = IO_BUF_SIZE,
	TOP_FIRST_READ = 4096	/* TOP's first read; each next one doubles */
};

/* ---------------------------------------------------------------- types */

/* The configuration: set by main from the options, or by a fuzz harness. */
static struct config {
	const char *spool;	/* -d */
	const char *userfile;	/* -u */
	const char *listen;	/* -l; NULL: every address */
	const char *port;
	int max_sessions;	/* -c */
	int max_per_client;	/* -C; 0: half of -c, at least 1 */
	int timeout;		/* -t, seconds; RFC 1939 section 3: >= 10 min */
	int penalty_ms;		/* -w: the wait before a wrong password's answer */
	int login_time;		/* -L, seconds AUTHORIZATION may last */
	int old_penalty_option;	/* -a was given: warn that it is now -w */
	int lifetime;		/* -T, seconds a session may last */
	int inetd;		/* -i: one session on standard input and output */
	const char *hostname;	/* in the APOP and CRAM-MD5 stamps: gethostname() */
} cfg = { .userfile = "user.txt", .port = "1100", .max_sessions = 100, .timeout = 600,
	  .penalty_ms = 1000, .login_time = 60, .lifetime = 7200, .hostname = "localhost" };

/* The protocol state, RFC 1939 section 3; changed only by set_state. One
 * list makes both the enum and the names -v logs (state_names), so that
 * the two cannot drift apart. */
#define POP_STATES(X) X(AUTHORIZATION) X(TRANSACTION) X(UPDATE) X(CLOSED)
#define STATE_ENUM(name) ST_##name,
#define STATE_NAME(name) #name,
enum state { POP_STATES(STATE_ENUM) };

/* The index of the complete records of [0, end), each one as
 * DESIGN.md "Record format" defines it. It takes 20 bytes a message
 * (DESIGN.md "Limits"), because it is kept in three arrays: an array of
 * structs would be padded to 24 bytes or more by alignment. Message i
 * (from 0) is the record [start[i], start[i + 1]), its "." CRLF line
 * included, so start holds count + 1 offsets. */
struct mbox_index {
	off_t *start;
	uint64_t *uidl;		/* its UIDL: see trace_len, uidl_unique */
	uint32_t *dots;		/* its stuffed dots, and MSG_DELETED once DELE marked it */
	size_t count, cap;
	off_t end;		/* N: the end of the last complete record */
};

/* The bit of mbox_index.dots that DELE sets and RSET clears. */
#define MSG_DELETED (UINT32_C(1) << 31)

/* What may follow a verb: each row of commands[] names one of these, and
 * the dispatcher enforces it (check_args) before the handler runs. */
enum arg_rule {
	ARGS_NONE,		/* nothing: STAT, NOOP, RSET, CAPA, QUIT */
	ARGS_NAME,		/* one word: USER name */
	ARGS_LINE,		/* the rest of the line, spaces included: PASS */
	ARGS_MSG,		/* one message number: RETR, DELE */
	ARGS_MSG_OPT,		/* an optional message number: LIST, UIDL */
	ARGS_MSG_LINES,		/* a message number and a line count: TOP */
	ARGS_PAIR,		/* two words: APOP name digest */
	ARGS_AUTH,		/* one or two words: AUTH mechanism [initial-response] */
	ARGS_UNCHECKED		/* whatever: the catch-all row */
};

/* The arguments of one command line, as the handler receives them. */
struct args {
	int argc;		/* how many words followed the verb */
	char *argv[ARGS_MAX];	/* the first ARGS_MAX of them */
	const char *rest;	/* everything after the verb and one space */
	char words[POP_LINE_MAX];	/* a copy of rest, cut into argv */
	size_t msg;		/* the message argv[0] names (from 1), or 0 */
	unsigned long lines;	/* TOP's line count */
};

/* One POP3 session: the connection, where the dialogue is, and after PASS
 * the locked mailbox and its index. */
struct session {
	struct conn *c;
	const char *peer;
	enum state state;
	int errors;		/* bad commands so far */
	int auth_failures;	/* wrong passwords so far */
	int pause_ms;		/* the first wrong password's wait (the parent's penalty) */
	int have_user;		/* USER given; user[] empty if never valid */
	char user[LOGIN_MAX + 1];
	char login[LOGIN_MAX + 1];	/* as spelled in user.txt, after PASS */
	int dirfd;		/* <spool>/<login>, after PASS */
	long long started_ms;	/* now_ms() at the greeting */
	char stamp[STAMP_MAX];	/* the greeting's <pid.clock@host>, for APOP */
	int lockfd;		/* mymailbox.state, held for the session */
	int mboxfd;		/* mymailbox, or -1 when it did not exist */
	struct mbox_index ix;
	size_t retrieved;	/* RETR commands, for the log at QUIT */
};

/* ---------------------------------------------------------------- UTF-8 */

/* >>> shared: utf8 - UTF-8 well-formedness and what may reach a terminal (smtpmail.c, popserver.c, mailclient.c) */

/*
 * char_len - the octets of the character at s[0] (len > 0): the length of a
 * well-formed UTF-8 sequence (RFC 3629 4: no overlong form, no surrogate),
 * else 1 for a stray byte. *safe says whether it may reach a terminal (or
 * a log) as it is. C0 controls but TAB, DEL, the C1 controls U+0080..U+009F
 * and stray bytes may not: a raw 0x9b, for one, is CSI to an 8-bit terminal.
 */
static size_t char_len(const unsigned char *s, size_t len, int *safe)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n = c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;

	*safe = c < 0x80 ? (c >= 0x20 || c == '\t') && c != 0x7f : 0;
	if (n <= 1 || n > len)
		return 1;
	if (c == 0xe0 || c == 0xf0)
		lo = c == 0xe0 ? 0xa0 : 0x90;	/* overlong forms */
	else if (c == 0xed || c == 0xf4)
		hi = c == 0xed ? 0x9f : 0x8f;	/* surrogates, past U+10FFFF */
	if (s[1] < lo || s[1] > hi)
		return 1;
	for (size_t i = 2; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 1;
	*safe = !(c == 0xc2 && s[1] < 0xa0);	/* C1: one character, one '?' */
	return n;
}

/* <<< shared: utf8 */

/* ---------------------------------------------------------------- logging */

static const char *progname = "popserver";

/* >>> shared: log - one line per event on stderr (smtpmail.c, popserver.c, mailclient.c) */

static int verbose;		/* -v: log the whole dialogue too */

/*
 * log_hidden - whether the well-formed character s[n] is one that a log
 * shows escaped although a terminal would print it: U+2028 and U+2029 end
 * a line in some viewers, and the Bidi_Control characters (U+061C, U+200E,
 * U+200F, U+202A..U+202E, U+2066..U+2069) reorder the text after them, so
 * either could make a line read as something it does not say.
 */
static int log_hidden(const unsigned char *s, size_t n)
{
	unsigned cp;

	if (n == 2)
		return s[0] == 0xd8 && s[1] == 0x9c;
	if (n != 3 || s[0] != 0xe2)
		return 0;
	cp = 0x2000u | (unsigned)(s[1] & 0x3f) << 6 | (unsigned)(s[2] & 0x3f);
	return cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x2069);
}

/*
 * log_escape - text[len] as a log may show it, in out[cap] (no NUL added);
 * returns the length. Someone else's text (a command, a reply, a login) can
 * hold escape sequences for the terminal the log is read on, or bytes that
 * fake a second line. Well-formed printable UTF-8 stays as it is (José);
 * each byte of a control character (C0 with TAB, DEL, C1 raw or encoded
 * as C2 80..C2 9F, log_hidden's) and each byte that is not UTF-8 becomes
 * \xNN (lower-case hex), and a backslash \\, so the line reads back
 * unambiguously. Only whole characters and whole escapes are written.
 */
static size_t log_escape(char *out, size_t cap, const char *text, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0, n; i < len; i += n) {
		const unsigned char *s = (const unsigned char *)text + i;
		int safe;

		n = char_len(s, len - i, &safe);
		if (safe && s[0] != '\t' && !log_hidden(s, n)) {
			if (n + (s[0] == '\\') > cap - o)
				break;
			if (s[0] == '\\')
				out[o++] = '\\';
			memcpy(out + o, s, n);
			o += n;
			continue;
		}
		if (4 * n > cap - o)
			break;
		for (size_t j = 0; j < n; j++, o += 4) {
			out[o] = '\\';
			out[o + 1] = 'x';
			out[o + 2] = hex[s[j] >> 4];
			out[o + 3] = hex[s[j] & 0xf];
		}
	}
	return o;
}

/* log_text - one line on stderr: UTC time, program[pid], then text[len]
 * through log_escape; the whole line is at most LOG_LINE_MAX octets. */
static void log_text(const char *text, size_t len)
{
	char line[LOG_LINE_MAX];
	time_t now = time(NULL);
	struct tm tm;
	size_t n = 0;
	int k;

	if (gmtime_r(&now, &tm))
		n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
	k = snprintf(line + n, sizeof line - n, "%s[%ld]: ", progname, (long)getpid());
	if (k > 0)
		n += (size_t)k < sizeof line - n ? (size_t)k : sizeof line - n - 1;
	n += log_escape(line + n, sizeof line - 1 - n, text, len);
	line[n++] = '\n';
	/* One write per line: lines that several processes write at once (a
	 * server's sessions) do not interleave. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;		/* nowhere left to report it */
}

/* log_msg - log_text of the printf-style message; peer text in it is
 * escaped there, so one event stays one readable line */
static void log_msg(const char *fmt, ...)
{
	char text[LOG_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	log_text(text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
}

/* close_fd - close fd; a failure is logged, with what naming the descriptor */
static void close_fd(int fd, const char *what)
{
	if (close(fd) < 0)
		log_msg("close %s: %s", what, strerror(errno));
}

/* <<< shared: log */

/* ---------------------------------------------------------------- buffered socket I/O */

/* >>> shared: conn - buffered socket I/O with deadlines (smtpmail.c, popserver.c, mailclient.c) */

/* A connection: buffered input and output on a non-blocking socket, every
 * wait bounded by timeout_ms, so no peer can hang a session. The output
 * may go to a descriptor of its own (a server's -i on a pair of pipes). */
struct conn {
	int fd;			/* read from, and written to unless out_fd says */
	int out_fd;		/* written to: fd (conn_init), or another one */
	int timeout_ms;		/* the longest wait for the peer, each time */
	long long deadline_ms;	/* now_ms() by which the wait must end; 0: none */
	long long hard_end_ms;	/* now_ms() past which no wait goes: the session's
				 * end, whatever the deadline; 0: none */
	char in[IO_BUF_SIZE];
	size_t in_pos, in_len;	/* unread input is in[in_pos .. in_len) */
	char out[IO_BUF_SIZE];
	size_t out_len;
	int failed;		/* a write failed or timed out: write no more */
};

enum io_status { IO_OK, IO_TOO_LONG, IO_EOF, IO_TIMEOUT, IO_ERROR };

/* conn_init - set up a connection on socket fd (made non-blocking) */
static int conn_init(struct conn *c, int fd, int timeout_seconds)
{
	int flags = fcntl(fd, F_GETFL);

	memset(c, 0, sizeof *c);
	c->fd = c->out_fd = fd;
	c->timeout_ms = timeout_seconds * 1000;
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -1;
	return 0;
}

/* now_ms - a monotonic clock, in milliseconds */
static long long now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		return 0;	/* cannot happen; deadlines then act as plain timeouts */
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* conn_wait - wait, at most the timeout (and not past the deadline or the
 * hard end, if they are set), until fd is ready for events */
static enum io_status conn_wait(struct conn *c, short events)
{
	struct pollfd p = { .fd = events == POLLOUT ? c->out_fd : c->fd, .events = events };

	for (;;) {
		long long now = now_ms();
		long long left = c->deadline_ms ? c->deadline_ms - now : c->timeout_ms;
		int n;

		if (c->hard_end_ms && c->hard_end_ms - now < left)
			left = c->hard_end_ms - now;
		if (left <= 0)
			return IO_TIMEOUT;
		n = poll(&p, 1, left < c->timeout_ms ? (int)left : c->timeout_ms);
		if (n > 0)
			return IO_OK;
		if (n == 0)
			return IO_TIMEOUT;
		if (errno != EINTR)
			return IO_ERROR;
	}
}

/* conn_flush - send everything buffered; after a failure, never write again */
static int conn_flush(struct conn *c)
{
	size_t done = 0;

	while (done < c->out_len && !c->failed) {
		ssize_t n = write(c->out_fd, c->out + done, c->out_len - done);

		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
			 && conn_wait(c, POLLOUT) == IO_OK)
			continue;
		else
			c->failed = 1;
	}
	c->out_len = 0;
	return c->failed ? -1 : 0;
}

/* conn_write - queue n bytes for the peer, sending when the buffer is full */
static int conn_write(struct conn *c, const void *data, size_t n)
{
	const char *p = data;

	while (n > 0 && !c->failed) {
		size_t room = sizeof c->out - c->out_len;
		size_t k = n < room ? n : room;

		memcpy(c->out + c->out_len, p, k);
		c->out_len += k;
		p += k;
		n -= k;
		if (c->out_len == sizeof c->out)
			conn_flush(c);
	}
	return c->failed ? -1 : 0;
}

/*
 * conn_fill - read more input. Pending output is sent first: replies to
 * pipelined commands go out together in one write, and a peer waiting for
 * a reply is never left waiting while we wait for it (no deadlock).
 */
static enum io_status conn_fill(struct conn *c)
{
	if (conn_flush(c) < 0)
		return IO_ERROR;
	if (c->in_pos > 0) {
		memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
		c->in_len -= c->in_pos;
		c->in_pos = 0;
	}
	if (c->in_len == sizeof c->in)
		return IO_TOO_LONG;	/* the caller must consume first */
	for (;;) {
		ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
		enum io_status st;

		if (n > 0) {
			c->in_len += (size_t)n;
			return IO_OK;
		}
		if (n == 0)
			return IO_EOF;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return IO_ERROR;
		if ((st = conn_wait(c, POLLIN)) != IO_OK)
			return st;
	}
}

/*
 * conn_read_line - the next input line, without its line end, NUL-terminated
 * in line[cap]; *len is its length (it may hold NUL bytes) and *crlf says if
 * it ended in CRLF rather than a bare LF. A line that does not fit (with its
 * CR) in cap - 1 bytes is read to its end and dropped: IO_TOO_LONG, and the
 * session stays in step with the peer. So cap is the protocol's line limit
 * counting CRLF: char line[512] takes exactly RFC 5321's 512 octets.
 */
static enum io_status conn_read_line(struct conn *c, char *line, size_t cap,
				     size_t *len, int *crlf)
{
	size_t n = 0;
	int too_long = 0;
	char last = 0;		/* the byte before the LF */

	for (;;) {
		char *start = c->in + c->in_pos;
		size_t avail = c->in_len - c->in_pos;
		char *lf = memchr(start, '\n', avail);
		size_t take = lf ? (size_t)(lf - start) : avail;
		enum io_status st;

		if (take > 0)
			last = start[take - 1];
		if (!too_long && n + take < cap) {
			memcpy(line + n, start, take);
			n += take;
		} else {
			too_long = 1;
		}
		c->in_pos += lf ? take + 1 : take;
		if (lf)
			break;
		if ((st = conn_fill(c)) != IO_OK)
			return st;	/* EOF mid-line: the fragment is dropped */
	}
	*crlf = last == '\r';
	if (*crlf && !too_long)
		n--;
	line[n] = '\0';
	*len = n;
	return too_long ? IO_TOO_LONG : IO_OK;
}

/* <<< shared: conn */

/* ---------------------------------------------------------------- digests and base64 (SASL) */

/* >>> shared: md5 - MD5 (RFC 1321), HMAC-MD5 (RFC 2104), and wiping secrets (smtpmail.c, popserver.c, mailclient.c) */

/* The state of one MD5 computation. */
struct md5 {
	uint32_t h[4];		/* the digest so far: A, B, C, D */
	uint64_t bytes;		/* the message length so far */
	unsigned char block[64];	/* a partial block */
	size_t used;		/* bytes in block */
};

/* secret_wipe - overwrite n bytes of a secret (a password, a key, what it
 * was derived from). A plain memset of memory about to go out of scope may
 * be left out by the compiler; a store through a volatile pointer may not.
 * (explicit_bzero does this too, but only glibc and the BSDs have it.) */
static void secret_wipe(void *p, size_t n)
{
	volatile unsigned char *v = p;

	while (n-- > 0)
		*v++ = 0;
}

/* md5_block - RFC 1321 3.4: fold one 64-byte block into h, in four rounds
 * of 16 steps; step i adds T[i] = floor(2^32 * abs(sin(i + 1))) and turns
 * left by S[i] */
static void md5_block(uint32_t h[4], const unsigned char *p)
{
	static const uint32_t T[64] = {
		0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
		0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
		0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
		0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
		0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
		0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
		0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
		0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
		0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
		0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
		0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391
	};
	static const unsigned char S[16] = { 7, 12, 17, 22, 5, 9, 14, 20,
					     4, 11, 16, 23, 6, 10, 15, 21 };
	uint32_t x[16], a = h[0], b = h[1], c = h[2], d = h[3];

	for (int i = 0; i < 16; i++)	/* the words are little-endian */
		x[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8
		       | (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
	for (int i = 0; i < 64; i++) {
		int round = i / 16;
		uint32_t f = round == 0 ? (b & c) | (~b & d) : round == 1 ? (b & d) | (c & ~d)
			     : round == 2 ? b ^ c ^ d : c ^ (b | ~d);
		int k = round == 0 ? i : round == 1 ? (5 * i + 1) % 16
			: round == 2 ? (3 * i + 5) % 16 : (7 * i) % 16;
		int s = S[round * 4 + i % 4];
		uint32_t sum = a + f + x[k] + T[i];

		a = d;
		d = c;
		c = b;
		b += sum << s | sum >> (32 - s);
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	secret_wipe(x, sizeof x);	/* the block may be a key */
}

/* md5_init - RFC 1321 3.3: the initial digest */
static void md5_init(struct md5 *m)
{
	m->h[0] = 0x67452301;
	m->h[1] = 0xefcdab89;
	m->h[2] = 0x98badcfe;
	m->h[3] = 0x10325476;
	m->bytes = 0;
	m->used = 0;
}

/* md5_update - add n bytes to the message */
static void md5_update(struct md5 *m, const void *data, size_t n)
{
	const unsigned char *p = data;

	m->bytes += n;
	while (n > 0) {
		size_t k = sizeof m->block - m->used < n ? sizeof m->block - m->used : n;

		memcpy(m->block + m->used, p, k);
		m->used += k;
		p += k;
		n -= k;
		if (m->used == sizeof m->block) {
			md5_block(m->h, m->block);
			m->used = 0;
		}
	}
}

/* md5_final - RFC 1321 3.1, 3.2, 3.5: pad with 0x80 and zeros to 56 bytes
 * of a block, add the length in bits (little-endian), and put the digest
 * in out; the state is wiped */
static void md5_final(struct md5 *m, unsigned char out[16])
{
	unsigned char tail[72] = { 0x80 };
	uint64_t bits = m->bytes * 8;
	size_t pad = (m->used < 56 ? 56 : 120) - m->used;

	for (int i = 0; i < 8; i++)
		tail[pad + i] = (unsigned char)(bits >> (8 * i));
	md5_update(m, tail, pad + 8);
	for (int i = 0; i < 16; i++)
		out[i] = (unsigned char)(m->h[i / 4] >> (8 * (i % 4)));
	secret_wipe(m, sizeof *m);
}

/* hmac_md5 - RFC 2104: MD5((K ^ opad) . MD5((K ^ ipad) . text)), where K
 * is the key padded with zeros to 64 bytes, or its MD5 if it is longer;
 * CRAM-MD5 (RFC 2195) sends it as the proof of a password */
static void hmac_md5(const void *key, size_t klen, const void *text, size_t tlen,
		     unsigned char out[16])
{
	unsigned char k[64] = { 0 }, pad[64], inner[16];
	struct md5 m;

	if (klen > sizeof k) {
		md5_init(&m);
		md5_update(&m, key, klen);
		md5_final(&m, k);
	} else if (klen > 0) {
		memcpy(k, key, klen);
	}
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < sizeof pad; i++)
			pad[i] = k[i] ^ (round == 0 ? 0x36 : 0x5c);
		md5_init(&m);
		md5_update(&m, pad, sizeof pad);
		if (round == 0)
			md5_update(&m, text, tlen);
		else
			md5_update(&m, inner, sizeof inner);
		md5_final(&m, round == 0 ? inner : out);
	}
	secret_wipe(k, sizeof k);
	secret_wipe(pad, sizeof pad);
	secret_wipe(inner, sizeof inner);
}

/* md5_hex - a digest as 32 lower-case hex digits (RFC 1939 APOP, RFC 2195) */
static void md5_hex(const unsigned char d[16], char out[33])
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 16; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 0xf];
	}
	out[32] = '\0';
}

/* <<< shared: md5 */

/* >>> shared: base64 - base64 (RFC 4648 section 4), as SASL exchanges carry it (smtpmail.c, popserver.c, mailclient.c) */

static const char base64_digits[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* base64_encode - n bytes as base64 in out[cap], padded with '=' and
 * NUL-terminated; returns the length, or -1 when cap is too small */
static int base64_encode(const void *data, size_t n, char *out, size_t cap)
{
	const unsigned char *p = data;
	size_t o = 0;

	if (n > (cap - 1) / 4 * 3 || cap == 0)
		return -1;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0)
			     | (i + 2 < n ? p[i + 2] : 0);

		out[o++] = base64_digits[v >> 18];
		out[o++] = base64_digits[v >> 12 & 63];
		out[o++] = i + 1 < n ? base64_digits[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? base64_digits[v & 63] : '=';
	}
	out[o] = '\0';
	return (int)o;
}

/* base64_value - the 6 bits of digit c, or -1 when it is none. Ranges, not
 * a search of base64_digits: MIME bodies of megabytes come through here. */
static int base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/*
 * base64_decode - text[len] decoded into out[cap]; *n gets its length.
 * Strict, as RFC 4648 section 3.3 allows and SASL wants: whole groups of
 * four digits, '=' only as the last one or two, nothing else (no spaces,
 * no line ends), and the bits a '=' leaves over must be zero (3.5), so
 * each text decodes from exactly one byte string. Returns 0, or -1.
 */
static int base64_decode(const char *text, size_t len, unsigned char *out, size_t cap,
			 size_t *n)
{
	size_t o = 0;

	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pads = 0;
		uint32_t bits = 0;

		for (int j = 0; j < 4; j++) {
			int last = i + 4 == len;

			v[j] = text[i + j] == '=' && last && j >= 2 ? 0 : base64_value(text[i + j]);
			if (text[i + j] == '=' && v[j] == 0)
				pads++;
			else if (v[j] < 0 || pads > 0)
				return -1;	/* a bad digit, or a digit after '=' */
			bits = bits << 6 | (uint32_t)v[j];
		}
		if ((pads == 2 && (bits & 0xffff)) || (pads == 1 && (bits & 0xff))
		    || 3 - (size_t)pads > cap - o)
			return -1;
		for (int j = 0; j < 3 - pads; j++)
			out[o++] = (unsigned char)(bits >> (16 - 8 * j));
	}
	*n = o;
	return 0;
}

/* <<< shared: base64 */

/* ---------------------------------------------------------------- accounts (user.txt) */

/* >>> shared: accounts - user.txt lookups (smtpmail.c, popserver.c) */

struct account {
	char login[LOGIN_MAX + 1];	/* as spelled in user.txt: names the directory */
	char password[PASSWORD_MAX + 1];
};

/*
 * user.txt is read once into an index (a hash table) and read again only
 * when it changes. The index costs, per account, a 12-byte entry and two
 * to four 4-byte slots of the table, plus the file itself, kept with its
 * lines parsed in place: about 45 bytes an account for 100,000 accounts
 * of 20-byte lines. At the limits below that is about 55 MB, twice that
 * while a new version is read beside the old. A file over a limit is
 * refused with a log line, and the accounts read before stay in use.
 */
enum {
	USERFILE_MAX_BYTES = 32 * 1024 * 1024,
	USERFILE_MAX_LINES = 1000000,
	USERFILE_SETTLE_MS = 1000	/* file times may be this coarse (accounts_load) */
};

/* An account of the index: its login, then its password, each ending with
 * a NUL, at the index's text + at. */
struct account_entry {
	uint32_t hash;		/* account_hash of the login */
	uint32_t at;
	uint32_t lineno;	/* for the warning about a later duplicate */
};

/* One reading of user.txt. */
struct account_index {
	char *text;		/* the file, NUL-terminated; NULL: no index */
	size_t text_len;
	struct account_entry *entries;	/* in the file's order */
	uint32_t count;
	uint32_t *slots;	/* open addressing: 0 free, else an entry's index + 1 */
	uint32_t mask;		/* the number of slots - 1 (a power of two - 1) */
};

/*
 * The accounts of this process. The server's parent reads user.txt before
 * each session (userfile_check), and its session processes inherit the
 * index when they are forked. Every lookup looks with one stat whether
 * the file changed since, and if it did, reads it again in that process:
 * so a pooled worker forked before the change sees it at its next lookup,
 * even in the middle of a session, and a worker that stays idle costs
 * nothing. Retiring the workers instead would tie the accept loop to the
 * accounts, could not reach a session already running, and would cost a
 * fork per worker as well as the reading.
 */
static struct {
	struct account_index index;
	struct stat seen;	/* the version of the file last looked at (zeroed: none) */
	int looked;		/* seen is set */
	int unread;		/* that version could not be read: try again */
	long long settle_at_ms;	/* read that version again at this time of day; 0: never */
} accounts;

/* login_valid - 1-64 of [A-Za-z0-9._-], not starting with '.': never a path */
static int login_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > LOGIN_MAX || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return 0;
	return 1;
}

/*
 * userline_fields - split one line of user.txt in place: "<login>
 * <password>", separated by spaces or tabs; CR LF line ends work too.
 * Returns 1 with *login and *password set for an account, 0 for a blank
 * or comment line, -1 for a line that is not valid, with the reason in *why.
 */
static int userline_fields(char *line, char **login, char **password, const char **why)
{
	char *save = NULL;

	*login = strtok_r(line, " \t\r\n", &save);
	*password = *login ? strtok_r(NULL, " \t\r\n", &save) : NULL;
	if (!*login || (*login)[0] == '#')
		return 0;
	*why = "invalid login skipped";
	if (!login_valid(*login))
		return -1;
	*why = "missing or overlong password, skipped";
	if (!*password || strlen(*password) > PASSWORD_MAX)
		return -1;
	return 1;
}

/* account_hash - FNV-1a of the login in lower case: logins match in any case */
static uint32_t account_hash(const char *login)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)login; *p; p++)
		h = (h ^ (uint32_t)tolower(*p)) * 16777619u;
	return h;
}

/* accounts_drop - forget an index, its passwords wiped first */
static void accounts_drop(struct account_index *ix)
{
	if (ix->text)
		secret_wipe(ix->text, ix->text_len + 1);
	free(ix->text);
	free(ix->entries);
	free(ix->slots);
	memset(ix, 0, sizeof *ix);
}

/* accounts_slot - the slot of login (any case) in the table: its entry's,
 * or the free one where it would go. The probes stop at a free slot; the
 * table at most half full, they are one or two on average, found or not. */
static uint32_t accounts_slot(const struct account_index *ix, const char *login, uint32_t hash)
{
	uint32_t i;

	for (i = hash & ix->mask; ix->slots[i]; i = (i + 1) & ix->mask) {
		const struct account_entry *e = &ix->entries[ix->slots[i] - 1];

		if (e->hash == hash && strcasecmp(ix->text + e->at, login) == 0)
			break;
	}
	return i;
}

/* accounts_add - add the account of line lineno, its password moved to
 * just after its login; a login already there (in any case) is skipped:
 * the first wins, and with report the later one is logged */
static void accounts_add(struct account_index *ix, char *login, const char *password,
			 uint32_t lineno, const char *name, int report)
{
	uint32_t hash = account_hash(login), i = accounts_slot(ix, login, hash);
	size_t n = strlen(login);

	if (ix->slots[i]) {
		if (report)
			log_msg("%s:%u: duplicate login %s (first at line %u), skipped", name,
				(unsigned)lineno, login,
				(unsigned)ix->entries[ix->slots[i] - 1].lineno);
		return;
	}
	memmove(login + n + 1, password, strlen(password) + 1);	/* within the line */
	ix->entries[ix->count].hash = hash;
	ix->entries[ix->count].at = (uint32_t)(login - ix->text);
	ix->entries[ix->count].lineno = lineno;
	ix->slots[i] = ++ix->count;
}

/*
 * accounts_line - one line of user.txt, [line, end), end its LF or the
 * file's end, with the rules of the line-at-a-time reading before: a
 * UTF-8 byte order mark before the first line (Windows editors write one)
 * is not part of the first login; a line longer than USERLINE_MAX - 2
 * bytes, or with a NUL byte, is skipped.
 */
static void accounts_line(struct account_index *ix, char *line, char *end, uint32_t lineno,
			  const char *name, int report)
{
	size_t len = (size_t)(end - line);
	char *text = line, *login, *password;
	const char *why = "line too long, skipped";
	int got = -1;

	if (lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
		text += 3;
	*end = '\0';	/* the LF, or the NUL after the file */
	if (len <= USERLINE_MAX - 2) {
		why = "NUL byte, skipped";
		if (strlen(line) == len)
			got = userline_fields(text, &login, &password, &why);
	}
	if (got == 1)
		accounts_add(ix, login, password, lineno, name, report);
	else if (got < 0 && report)
		log_msg("%s:%u: %s", name, (unsigned)lineno, why);
}

/* accounts_refused - log that the version of name just read is over a
 * limit: with report, or where it leaves no account (-i has no parent);
 * else the parent logs it */
static void accounts_refused(const char *name, const char *what, long long size, int limit,
			     int report)
{
	if (report || !accounts.index.text)
		log_msg("%s: %lld %s, over the limit of %d: refused; %s", name, size, what, limit,
			accounts.index.text ? "the accounts read before stay"
			: "no account works until it is smaller");
}

/* accounts_build - the index of text[len] (NUL-terminated), which it
 * takes over: 0; else, the text wiped and freed, -1 out of memory (logged
 * with say), -2 over USERFILE_MAX_LINES */
static int accounts_build(struct account_index *ix, char *text, size_t len, const char *name,
			  int report, int say)
{
	size_t lines = len > 0 && text[len - 1] != '\n', slots = 2;
	char *line = text, *lf;
	uint32_t lineno = 0;

	for (const char *p = text; (p = memchr(p, '\n', len - (size_t)(p - text))); p++)
		lines++;
	memset(ix, 0, sizeof *ix);
	ix->text = text;
	ix->text_len = len;
	if (lines > USERFILE_MAX_LINES) {
		accounts_drop(ix);
		accounts_refused(name, "lines", (long long)lines, USERFILE_MAX_LINES, report);
		return -2;
	}
	while (slots < 2 * lines)
		slots *= 2;
	ix->mask = (uint32_t)(slots - 1);
	if (!(ix->entries = calloc(lines ? lines : 1, sizeof *ix->entries))
	    || !(ix->slots = calloc(slots, sizeof *ix->slots))) {
		if (say)
			log_msg("%s: %s", name, strerror(ENOMEM));
		accounts_drop(ix);
		return -1;
	}
	while (line < text + len) {
		lf = memchr(line, '\n', len - (size_t)(line - text));
		accounts_line(ix, line, lf ? lf : text + len, ++lineno, name, report);
		line = lf ? lf + 1 : text + len;
	}
	return 0;
}

/* userfile_read - the file name into *text (NUL-terminated, *len bytes)
 * and its fstat into *st: 0; -1 (logged with say) if it cannot be read,
 * -2 if it is over USERFILE_MAX_BYTES. What is appended after the fstat
 * is left for the next reading, which the change of size calls for. */
static int userfile_read(const char *name, struct stat *st, char **text, size_t *len, int say)
{
	/* Non-blocking, so that a FIFO put in its place cannot hang the server. */
	int fd = open(name, O_RDONLY | O_NONBLOCK | O_CLOEXEC), r = 0;
	ssize_t got = 1;

	if (fd < 0) {
		if (say)
			log_msg("cannot open %s: %s", name, strerror(errno));
		return -1;
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		if (say)
			log_msg("cannot read %s: not a regular file, or %s", name,
				strerror(errno));
		r = -1;
	} else if (st->st_size > USERFILE_MAX_BYTES) {
		r = -2;
	} else if (!(*text = malloc((size_t)st->st_size + 1))) {
		if (say)
			log_msg("%s: %s", name, strerror(errno));
		r = -1;
	}
	for (*len = 0; r == 0 && *len < (size_t)st->st_size && got != 0;
	     *len += got > 0 ? (size_t)got : 0)
		if ((got = read(fd, *text + *len, (size_t)st->st_size - *len)) < 0
		    && errno != EINTR) {
			if (say)
				log_msg("read %s: %s", name, strerror(errno));
			secret_wipe(*text, *len);
			free(*text);
			r = -1;
		}
	close_fd(fd, name);	/* read only: a failure loses nothing */
	if (r == 0)
		(*text)[*len] = '\0';
	return r;
}

/* time_of_day_ms - the real-time clock in milliseconds, as file times are */
static long long time_of_day_ms(void)
{
	struct timespec ts = { 0, 0 };

	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		ts.tv_sec = time(NULL);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* same_version - do two stats of user.txt show the same version of it? */
static int same_version(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size
	       && a->st_mtim.tv_sec == b->st_mtim.tv_sec
	       && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/*
 * accounts_load - read user.txt as it is now into the index: 0; -1 if it
 * cannot be read now, -2 if it is refused. With report, the file's
 * problems are logged, and with say, why it cannot be read. A file that
 * is gone, is not a regular file or cannot be read leaves no index: no
 * account works (the lookups say the file is unreadable). A file over a
 * limit is refused, and the index read before stays: one account too many
 * must not shut every other out. A version written less than
 * USERFILE_SETTLE_MS before it was read may yet change with the same size
 * and time stamp (file times are coarse): it is read once more when that
 * time has passed.
 */
static int accounts_load(const char *name, int report, int say)
{
	struct account_index fresh;
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	int r;
	long long mtime_ms;

	memset(&st, 0, sizeof st);
	r = userfile_read(name, &st, &text, &len, say);
	if (r == -2)
		accounts_refused(name, "bytes", (long long)st.st_size, USERFILE_MAX_BYTES, report);
	if (r == 0)
		r = accounts_build(&fresh, text, len, name, report, say);
	accounts.settle_at_ms = 0;
	if (r == -1)
		accounts_drop(&accounts.index);
	if (r < 0)
		return r;
	accounts_drop(&accounts.index);
	accounts.index = fresh;
	mtime_ms = (long long)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
	if (time_of_day_ms() < mtime_ms + USERFILE_SETTLE_MS)
		accounts.settle_at_ms = mtime_ms + USERFILE_SETTLE_MS;
	return 0;
}

/*
 * accounts_refresh - make the index that of user.txt as it is now: one
 * stat, and a reading only if the file changed, or could not be read
 * (tried again at each call, quietly), or a reading is due again
 * (accounts_load). Each version's problems are logged once. Returns 0
 * with an index, -1 without.
 */
static int accounts_refresh(const char *name, int report)
{
	struct stat st;
	int settled = accounts.settle_at_ms != 0 && time_of_day_ms() >= accounts.settle_at_ms;

	if (stat(name, &st) < 0)
		memset(&st, 0, sizeof st);	/* a version too: "none" */
	if (!accounts.looked || !same_version(&st, &accounts.seen)) {
		accounts.looked = 1;
		accounts.seen = st;
		accounts.unread = accounts_load(name, report, 1) == -1;
	} else if (accounts.unread) {
		accounts.unread = accounts_load(name, report, 0) == -1;
	} else if (settled) {
		(void)accounts_load(name, 0, 0);	/* its problems are logged */
	}
	return accounts.index.text ? 0 : -1;
}

/*
 * user_lookup - find login (any case) in user.txt; login NULL: the first
 * account. The index is brought up to date first (accounts_refresh), so
 * an account added while the server runs works at once. When a login is
 * listed twice, the first wins. Returns 1 found (*acct filled), 0 not
 * found, -1 unreadable.
 */
static int user_lookup(const char *userfile, const char *login, struct account *acct)
{
	const struct account_index *ix = &accounts.index;
	uint32_t i;
	const char *at;

	if (accounts_refresh(userfile, 0) < 0)
		return -1;
	if (login) {
		i = accounts_slot(ix, login, account_hash(login));
		if (!ix->slots[i])
			return 0;
		at = ix->text + ix->entries[ix->slots[i] - 1].at;
	} else if (ix->count > 0) {
		at = ix->text + ix->entries[0].at;
	} else {
		return 0;
	}
	memcpy(acct->login, at, strlen(at) + 1);	/* both fit: userline_fields */
	at += strlen(at) + 1;
	memcpy(acct->password, at, strlen(at) + 1);
	return 1;
}

/*
 * userfile_check - the parent's reading of user.txt: the accept loop calls
 * it before each session, so that the session starts with the index of
 * the file as it is, and what is wrong with the file (invalid lines,
 * logins listed twice) is logged once for each version of it, not once
 * per lookup.
 */
static void userfile_check(const char *userfile)
{
	(void)accounts_refresh(userfile, 1);
}

/* <<< shared: accounts */

/* ---------------------------------------------------------------- spool and locks (DESIGN.md) */

/* >>> shared: spool - mailbox paths and fcntl locks, DESIGN.md "Locking" (smtpmail.c, popserver.c) */

/* spool_path - "<spool>/<login>/<name>" (name NULL: the directory); -1 if too long */
static int spool_path(char *out, size_t cap, const char *spool, const char *login,
		      const char *name)
{
	int n = name ? snprintf(out, cap, "%s/%s/%s", spool, login, name)
		     : snprintf(out, cap, "%s/%s", spool, login);

	if (n < 0 || (size_t)n >= cap) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/*
 * user_dir - open the directory <spool>/<login>, creating it (0700) first
 * if it is missing (DESIGN.md: user.txt is the single source of truth; a
 * mkdir only after ENOENT, not on every delivery; EEXIST: another process
 * made it in between). Only the spool path the administrator gave may be
 * followed: <login> is opened with O_NOFOLLOW (a login holds no '/', see
 * login_valid), so a symbolic link put there cannot lead anything out of
 * the spool; every file in it is then opened relative to this descriptor.
 * Returns it, or -1 with errno: ELOOP a link, ENOTDIR anything else that
 * is no directory (both logged).
 */
static int user_dir(const char *spool, const char *login)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	char path[PATH_TEXT_MAX];
	struct stat st;
	int fd;

	if (spool_path(path, sizeof path, spool, login, NULL) < 0)
		return -1;
	fd = open(path, flags);
	if (fd < 0 && errno == ENOENT) {
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			return -1;
		fd = open(path, flags);
	}
	if (fd < 0 && (errno == ENOTDIR || errno == ELOOP)) {
		/* Linux says ENOTDIR for a link too: the log tells them apart. */
		errno = lstat(path, &st) == 0 && S_ISLNK(st.st_mode) ? ELOOP : ENOTDIR;
		log_msg("%s: %s: refused", path,
			errno == ELOOP ? "a symbolic link" : "not a directory");
	}
	return fd;
}

/*
 * open_regular - open name in the user's directory dirfd as every spool
 * file is opened: never through a symbolic link, and non-blocking, so that
 * a FIFO or a device put there cannot hang open(). Before anything else is
 * done with it, it must be a regular file with one link (a hard link could
 * lead a write elsewhere); then its status flags are set to flags, which
 * clears O_NONBLOCK. Returns the descriptor (its status in *st), or -1 with
 * errno: ELOOP a link, EPERM not a regular file with one link (both
 * logged), ENOENT, ...
 */
static int open_regular(int dirfd, const char *login, const char *name, int flags,
			struct stat *st)
{
	int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	int e;

	if (fd < 0) {
		if (errno == ELOOP)
			log_msg("%s/%s: a symbolic link: refused", login, name);
		return -1;
	}
	if (fstat(fd, st) < 0)
		e = errno;
	else if (!S_ISREG(st->st_mode) || st->st_nlink != 1) {
		log_msg("%s/%s: not a regular file with one link: refused", login, name);
		e = EPERM;
	} else if (fcntl(fd, F_SETFL, flags) < 0)	/* F_SETFL ignores the mode, O_CREAT ... */
		e = errno;
	else
		return fd;
	close(fd);	/* nothing was done with it */
	errno = e;
	return -1;
}

/* open_state_file - open mymailbox.state, which holds the fcntl locks of
 * the mailbox and its commit state, in the user's directory dirfd,
 * creating it as needed. It is not "mymailbox.lock": that name is the
 * dotlock of mutt, procmail and mail(1), which they create and delete,
 * and which we honour (mailbox_lock). Keep the descriptor for the whole
 * process: closing any descriptor of the file drops all our fcntl locks
 * on it. */
static int open_state_file(int dirfd, const char *login)
{
	struct stat st;

	return open_regular(dirfd, login, "mymailbox.state", O_RDWR | O_CREAT, &st);
}

/* same_file - 1 if the name in dirfd still names the file open on fd: a
 * lock on a file deleted or replaced since (a script, an editor, a restore)
 * excludes nobody who opens the name now */
static int same_file(int dirfd, const char *name, int fd)
{
	struct stat mine, named;

	if (fstat(fd, &mine) < 0 || fstatat(dirfd, name, &named, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	return mine.st_dev == named.st_dev && mine.st_ino == named.st_ino;
}

/*
 * spool_default - the spool when -d is not given: "users" if that directory
 * exists, else the directory that holds the user file, which is the
 * assignment's layout (one subdirectory per user, next to user.txt). NULL
 * if that directory's name does not fit in dir.
 */
static const char *spool_default(const char *userfile, char *dir, size_t cap)
{
	const char *slash = strrchr(userfile, '/');
	struct stat st;

	if (stat("users", &st) == 0 && S_ISDIR(st.st_mode))
		return "users";
	if (!slash)
		return ".";
	if (slash == userfile)
		return "/";
	if ((size_t)(slash - userfile) >= cap)
		return NULL;
	memcpy(dir, userfile, (size_t)(slash - userfile));
	dir[slash - userfile] = '\0';
	return dir;
}

/*
 * spool_choose - the spool (-d, or spool_default), checked to be a
 * directory we can use: a server that starts but answers every mail with
 * 451 is worse than one that does not start. Logs the choice; NULL after
 * logging why the spool cannot be used.
 */
static const char *spool_choose(const char *given, const char *userfile, char *dir,
				size_t cap)
{
	const char *spool = given ? given : spool_default(userfile, dir, cap);
	struct stat st;

	if (!spool) {
		log_msg("spool next to %s: %s", userfile, strerror(ENAMETOOLONG));
		return NULL;
	}
	if (stat(spool, &st) < 0 || (S_ISDIR(st.st_mode) && access(spool, W_OK | X_OK) < 0)) {
		log_msg("spool %s: %s", spool, strerror(errno));
		return NULL;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_msg("spool %s: %s", spool, strerror(ENOTDIR));
		return NULL;
	}
	if (given || strcmp(spool, "users") == 0)
		log_msg("spool: %s", spool);
	else
		log_msg("spool: %s (assignment layout: <login>/mymailbox next to %s)",
			spool, userfile);
	return spool;
}

/* on_alarm - only interrupts a blocked F_SETLKW (installed without SA_RESTART) */
static void on_alarm(int sig)
{
	(void)sig;
}

/* lock_wait - F_SETLKW on fl, bounded by a LOCK_WAIT_SECONDS alarm (DESIGN.md
 * "Locking": a blocking, bounded wait); -1 with EINTR when the time is up */
static int lock_wait(int fd, struct flock *fl)
{
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	int r, saved;

	if (sigemptyset(&sa.sa_mask) < 0 || sigaction(SIGALRM, &sa, &old) < 0)
		return -1;	/* no bounded wait possible: do not wait at all */
	alarm(LOCK_WAIT_SECONDS);
	r = fcntl(fd, F_SETLKW, fl);
	saved = errno;
	alarm(0);
	if (sigaction(SIGALRM, &old, NULL) < 0)
		log_msg("restore SIGALRM: %s", strerror(errno));
	errno = saved;
	return r;
}

/*
 * lock_byte - take (F_WRLCK) or release (F_UNLCK) one byte of the state file.
 * wait: block at most LOCK_WAIT_SECONDS. Returns 0, or -1 with errno: EAGAIN
 * or EACCES busy (no wait), EINTR the wait timed out, EDEADLK a deadlock.
 * A free lock (the usual case) is taken by one F_SETLK; the alarm and the
 * two sigactions of the bounded wait are paid only when it is busy.
 */
static int lock_byte(int fd, off_t byte, short type, int wait)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = byte,
			    .l_len = 1 };

	int r = fcntl(fd, F_SETLK, &fl);

	if (r == 0 || !wait || type == F_UNLCK || (errno != EAGAIN && errno != EACCES))
		return r;
	return lock_wait(fd, &fl);	/* busy: wait for it, bounded */
}

/* byte_held - 1 if another process holds one byte of the state file
 * open on fd (F_GETLK does not count our own locks), or if it cannot be
 * told */
static int byte_held(int fd, off_t byte)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte,
			    .l_len = 1 };

	return fcntl(fd, F_GETLK, &fl) < 0 || fl.l_type != F_UNLCK;
}

/* mailbox_unlock - let go of mailbox_lock's lock (logged if it fails) */
static void mailbox_unlock(int fd)
{
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	int e = errno;

	if (fcntl(fd, F_SETLK, &fl) < 0)
		log_msg("unlock mymailbox: %s", strerror(errno));
	errno = e;
}

/* lock_state - lock_byte on the state file open on fd in dirfd, then check
 * that it is still the one named (same_file); if not, the byte is let go
 * again and -1 returned with errno ESTALE: open it again and start over */
static int lock_state(int dirfd, int fd, off_t byte, int wait)
{
	if (lock_byte(fd, byte, F_WRLCK, wait) < 0)
		return -1;
	if (same_file(dirfd, "mymailbox.state", fd))
		return 0;
	(void)lock_byte(fd, byte, F_UNLCK, 0);
	errno = ESTALE;
	return -1;
}

/*
 * lock_state_file - open the state file in dirfd when *fd is -1, and take
 * one byte of it (lock_state). A file replaced meanwhile (ESTALE) is
 * closed and the new one opened and locked, STALE_TRIES times at most;
 * closing it drops every lock we held on it, so take only a first lock
 * this way. Returns 0, or -1 with errno (*fd -1 if it could not be opened).
 */
static int lock_state_file(int dirfd, const char *login, int *fd, off_t byte, int wait)
{
	for (int tries = 0;; tries++) {
		if (*fd < 0 && (*fd = open_state_file(dirfd, login)) < 0)
			return -1;
		if (lock_state(dirfd, *fd, byte, wait) == 0)
			return 0;
		if (errno != ESTALE || tries == STALE_TRIES)
			return -1;
		close_fd(*fd, "state file");	/* replaced: lock the new one */
		*fd = -1;
	}
}

/*
 * dotlock_stale - 1 if the dotlock mymailbox.lock in dirfd (status st) may
 * be removed: older than DOTLOCK_STALE_SECONDS (liblockfile's and procmail's
 * rule), or holding the number of a process that no longer runs here, or
 * the lock file of an earlier version of these servers, which held the
 * commit state under that name.
 */
static int dotlock_stale(int dirfd, const struct stat *st)
{
	char text[24] = "";
	int fd = openat(dirfd, "mymailbox.lock", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : pread(fd, text, sizeof text - 1, 0);
	char *end;
	long pid;

	if (fd >= 0)
		(void)close(fd);
	if (time(NULL) - st->st_mtime > DOTLOCK_STALE_SECONDS)
		return 1;
	if (n >= 7 && memcmp(text, "mtcmt0", 6) == 0)
		return 1;
	if (n <= 0)
		return 0;
	text[n] = '\0';
	pid = strtol(text, &end, 10);
	return pid > 1 && (*end == '\n' || *end == '\0') && kill((pid_t)pid, 0) < 0
	       && errno == ESRCH;
}

/* dotlock_held - 1 if another program holds the dotlock mymailbox.lock in
 * dirfd; a stale one is removed (logged) and counts as not held */
static int dotlock_held(int dirfd, const char *login)
{
	struct stat st;

	if (fstatat(dirfd, "mymailbox.lock", &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (!dotlock_stale(dirfd, &st))
		return 1;
	if (unlinkat(dirfd, "mymailbox.lock", 0) == 0 || errno == ENOENT)
		log_msg("%s/mymailbox.lock: stale dotlock removed", login);
	return 0;
}

/*
 * mailbox_lock - before mymailbox (open on fd in dirfd) is changed: take an
 * fcntl lock on the whole of it, as mutt, procmail and Dovecot do, so that
 * they and we exclude each other; check that it is still the file named
 * mymailbox (else ESTALE: open it again); and wait, bounded, while another
 * program holds the dotlock mymailbox.lock. Returns 0, or -1 with errno:
 * EINTR the wait ran out, ESTALE, or another error.
 */
static int mailbox_lock(int dirfd, const char *login, int fd)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	struct timespec pause = { 0, 100 * 1000 * 1000 };
	int tries = LOCK_WAIT_SECONDS * 10;

	for (;;) {
		if (fcntl(fd, F_SETLK, &fl) < 0
		    && ((errno != EAGAIN && errno != EACCES) || lock_wait(fd, &fl) < 0))
			return -1;
		if (!same_file(dirfd, "mymailbox", fd))
			errno = ESTALE;
		else if (!dotlock_held(dirfd, login))
			return 0;
		else
			errno = EINTR;
		mailbox_unlock(fd);
		if (errno == ESTALE || --tries <= 0)
			return -1;
		(void)nanosleep(&pause, NULL);
	}
}

/* <<< shared: spool */

/* >>> shared: commit - what of mymailbox is durable, kept in its state file (smtpmail.c, popserver.c) */

/*
 * Group commit (DESIGN.md "The commit protocol"). smtpmail appends a
 * record under the write lock and lets that lock go; then, one session at a time under the commit
 * lock, an fsync covers every record appended before it began, so sessions
 * that deliver at once share one fsync. What is durable, and so may be
 * answered 250 and shown by POP3, is kept in the first bytes of
 * mymailbox.state (fcntl locks take bytes 0-2 whatever the file holds).
 * It is read and written only under the write lock, and never fsynced: it
 * describes the running system. After a reboot (a new boot id), or when
 * it is damaged, inconsistent or about another file, it starts again from
 * "all that is there is durable", made true by one fsync (commit_restart).
 *
 * An fsync is announced ("syncing") before it starts and settled after it,
 * under the commit lock. Whoever takes the commit lock and finds one still
 * announced knows its process died before it could say how the fsync went,
 * and takes it as failed: on Linux a failed writeback is reported once, and
 * a later fsync may succeed although the pages are lost. A failed fsync
 * cuts the mailbox back to its durable size (smtpmail's commit_cut).
 */
struct commit_state {
	char magic[8];		/* COMMIT_MAGIC */
	unsigned char boot[16];	/* boot_id() of the system that wrote it; zeros: unknown */
	char host[32];		/* host_name() of that system: two front ends share a spool */
	uint64_t dev, ino;	/* the mymailbox it is about */
	int64_t size;		/* its size as the last change under the write lock left it */
	int64_t durable;	/* [0, durable) is on disk: an fsync begun later returned 0 */
	int64_t syncing;	/* -1, or the size an fsync under way covers */
	int64_t appending;	/* -1, or where an append under way began (tidy_mailbox) */
	int64_t kept[COMMIT_KEPT];	/* [i]: what the step that made epoch - i kept (commit_bump) */
	uint64_t epoch;		/* one more at each cut or replacement of mymailbox */
	uint64_t check;		/* state_check() of all the fields above */
};

static const char COMMIT_MAGIC[8] = "mtcmt05";

/*
 * boot_id - what names this boot of the system: on Linux the random
 * /proc/sys/kernel/random/boot_id, new at each boot and untouched by clock
 * steps. Where there is none it stays zeros, "unknown", and a state is
 * then taken to be of this boot: its announced fsyncs are honoured, which
 * after a real reboot cuts at most records that were never answered 250.
 */
static const unsigned char *boot_id(void)
{
	static unsigned char id[16];
	static int done;
	char text[64];
	int fd, n = 0;
	ssize_t len;

	if (done)
		return id;
	done = 1;
	if ((fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC)) < 0)
		return id;
	len = read(fd, text, sizeof text - 1);
	(void)close(fd);
	for (ssize_t i = 0; i < len && n < 32; i++) {
		const char *hex = "0123456789abcdef", *d = memchr(hex, text[i], 16);

		if (d && text[i])
			id[n / 2] = (unsigned char)(id[n / 2] << 4 | (d - hex)), n++;
	}
	if (n != 32)
		memset(id, 0, sizeof id);
	return id;
}

/* fresh_epoch - an epoch for a state that starts from nothing (missing,
 * damaged): the real-time clock in ns, which no session waiting on the
 * mailbox can have noted, nor one less */
static uint64_t fresh_epoch(void)
{
	struct timespec t;

	if (clock_gettime(CLOCK_REALTIME, &t) < 0)
		return (uint64_t)time(NULL) << 32;
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* state_check - an FNV-1a hash of the state but its check field: a state
 * torn by a crash, or written over by another program, does not match */
static uint64_t state_check(const struct commit_state *h)
{
	const unsigned char *p = (const unsigned char *)h;
	uint64_t sum = 14695981039346656037u;

	for (size_t i = 0; i < offsetof(struct commit_state, check); i++)
		sum = (sum ^ p[i]) * 1099511628211u;
	return sum;
}

/* state_consistent - the fields agree with each other: a state that does
 * not is never a reason to cut or to skip an fsync (commit_load) */
static int state_consistent(const struct commit_state *h)
{
	return h->durable >= 0 && h->durable <= h->size && h->kept[0] >= 0
	       && (h->syncing == -1 || (h->syncing >= h->durable && h->syncing <= h->size))
	       && (h->appending == -1 || (h->appending >= 0 && h->appending <= h->size));
}

/* host_name - this system's name (gethostname), cut to what the state
 * holds; "" if it has none */
static const char *host_name(void)
{
	static char name[sizeof ((struct commit_state *)0)->host];
	static int done;
	char full[256];

	if (!done && gethostname(full, sizeof full) == 0) {
		size_t n = strnlen(full, sizeof name - 1);

		memcpy(name, full, n);
		name[n] = '\0';
	}
	done = 1;
	return name;
}

/*
 * same_boot - 1 if h may be trusted as written since this system booted,
 * or by another live host sharing the spool (DESIGN.md
 * "More than one machine"): another host's state is its own, its
 * announced fsync a live leader's or a dead one's, which the commit lock
 * tells, as for ours. 0 only for a state of this host (same name) and
 * another boot: a reboot.
 */
static int same_boot(const struct commit_state *h)
{
	static const unsigned char unknown[16];
	const unsigned char *now = boot_id();

	if (h->host[0] && host_name()[0]
	    && strncmp(h->host, host_name(), sizeof h->host) != 0)
		return 1;
	return memcmp(h->boot, unknown, 16) == 0 || memcmp(now, unknown, 16) == 0
	       || memcmp(h->boot, now, 16) == 0;
}

/* commit_read - read the commit state from the state file: 1 valid (ours,
 * whole, consistent, written since this boot), 0 not (*h then holds what
 * was there, zeroed if it is not ours), -1 a read error */
static int commit_read(int lock_fd, struct commit_state *h)
{
	ssize_t n = pread(lock_fd, h, sizeof *h, 0);

	if (n < 0)
		return -1;
	if ((size_t)n != sizeof *h || memcmp(h->magic, COMMIT_MAGIC, sizeof h->magic) != 0
	    || h->check != state_check(h)) {
		memset(h, 0, sizeof *h);
		return 0;
	}
	return state_consistent(h) && same_boot(h);
}

/* commit_write - write the commit state to the state file */
static int commit_write(int lock_fd, const struct commit_state *h)
{
	struct commit_state out = *h;
	ssize_t n;

	memcpy(out.boot, boot_id(), sizeof out.boot);
	memset(out.host, 0, sizeof out.host);
	memcpy(out.host, host_name(), strlen(host_name()));
	out.check = state_check(&out);
	n = pwrite(lock_fd, &out, sizeof out, 0);
	if (n == (ssize_t)sizeof out)
		return 0;
	if (n >= 0)
		errno = EIO;
	log_msg("commit state: %s", strerror(errno));
	return -1;
}

/* commit_about - 1 if h is about the file whose status is st */
static int commit_about(const struct commit_state *h, const struct stat *st)
{
	return h->dev == (uint64_t)st->st_dev && h->ino == (uint64_t)st->st_ino;
}

/*
 * commit_bump - a cut or a replacement of mymailbox: the epoch moves on,
 * and kept, in the offsets of the file the step was made in, says which
 * records stayed (or were carried): those that end by it. The last
 * COMMIT_KEPT steps are remembered, so that a session waiting through
 * several learns from the first after its own epoch what became of its
 * record: a record kept then was durable, and nothing later may cut it.
 */
static void commit_bump(struct commit_state *h, off_t kept)
{
	memmove(h->kept + 1, h->kept, sizeof h->kept - sizeof h->kept[0]);
	h->kept[0] = kept;
	h->epoch++;
}

/* commit_appending - where an append began that the state file announces
 * for the file whose status is st and that never finished (its process
 * died: the caller holds the write lock), or -1. A state of another boot
 * counts too: what it announced is still the only tail we may cut. */
static off_t commit_appending(int lock_fd, const struct stat *st)
{
	struct commit_state h;

	if (commit_read(lock_fd, &h) < 0 || memcmp(h.magic, COMMIT_MAGIC, sizeof h.magic) != 0
	    || !commit_about(&h, st))
		return -1;
	return h.appending;
}

/*
 * commit_restart - a state not valid, or about another file (a reboot, a
 * first use, a file replaced, a state damaged or written over): no append
 * of ours can be waiting on it, so one fsync makes all of the file durable.
 * If that fsync fails, the state stays invalid with the epoch moved on.
 */
static int commit_restart(int lock_fd, int box_fd, const struct stat *st, struct commit_state *h)
{
	if (memcmp(h->magic, COMMIT_MAGIC, sizeof h->magic) != 0) {
		h->epoch = fresh_epoch();	/* not ours: no epoch a session noted */
		memset(h->kept, 0, sizeof h->kept);
	}			/* ours: epoch and kept still tell of a replacement */
	memcpy(h->magic, COMMIT_MAGIC, sizeof h->magic);
	h->dev = (uint64_t)st->st_dev;
	h->ino = (uint64_t)st->st_ino;
	h->syncing = h->appending = -1;
	if (fsync(box_fd) < 0) {
		int e = errno;

		h->size = 0;
		h->durable = 1;		/* durable > size: still invalid */
		h->epoch++;
		(void)commit_write(lock_fd, h);
		errno = e;
		return -1;
	}
	h->size = h->durable = st->st_size;
	return commit_write(lock_fd, h);
}

/*
 * commit_load - under the write lock, by a process that has the current
 * mymailbox open on box_fd (its status in st): the commit state, made
 * valid. An append that was under way (appending) was a process's that
 * died, since we hold the write lock: its tail stays as it is until
 * smtpmail's tidy_mailbox cuts it (popserver serves the records before it).
 * A size that another hand changed is made durable at once by one fsync,
 * so that no later cut can take what that hand wrote; while an fsync is
 * announced, that could declare durable what the announced one fails to
 * write, so the caller is told to come back (EAGAIN).
 */
static int commit_load(int lock_fd, int box_fd, const struct stat *st, struct commit_state *h)
{
	int valid = commit_read(lock_fd, h);

	if (valid < 0)
		return -1;
	if (!valid || !commit_about(h, st))
		return commit_restart(lock_fd, box_fd, st, h);
	if (h->appending >= 0 && st->st_size > h->appending)
		return 0;	/* a crashed append's tail, which only tidy_mailbox may cut */
	if (h->size == st->st_size && h->appending < 0)
		return 0;
	h->appending = -1;
	if (h->size > st->st_size) {
		/* Shrunk: a cut that died half-way, or a truncation by hand. */
		h->size = st->st_size;
		h->durable = h->durable < h->size ? h->durable : h->size;
		h->syncing = h->syncing < h->size ? h->syncing : h->size;
	} else if (h->size < st->st_size && h->syncing < 0) {
		if (fsync(box_fd) < 0)
			return -1;
		h->size = h->durable = st->st_size;
	} else if (h->size < st->st_size) {
		if (byte_held(lock_fd, COMMIT_LOCK_BYTE)) {
			errno = EAGAIN;		/* a live leader's fsync: come back */
			return -1;
		}
		/* Its leader died (or we hold the commit lock): the growth waits
		 * for the next fsync, and the cut of the dead one's takes it too
		 * (DESIGN.md "What is not promised"). */
		h->size = st->st_size;
	}
	return commit_write(lock_fd, h);
}

/* commit_announce - under the commit and write locks, before an fsync:
 * write down what it will cover (all of the file: no append is half done
 * under the write lock). Returns that size, or -1. */
static off_t commit_announce(int lock_fd, struct commit_state *h)
{
	h->syncing = h->size;
	return commit_write(lock_fd, h) < 0 ? -1 : h->size;
}

/* commit_synced - under the commit and write locks, after that fsync
 * returned 0: [0, covered) is durable, so later sessions skip theirs. If
 * the state cannot be written, *h stays as it was: the fsync stays
 * announced, and the next holder of the commit lock cuts back what it
 * covered, so nobody may count on it. Returns 0 or -1. */
static int commit_synced(int lock_fd, struct commit_state *h, off_t covered)
{
	struct commit_state next = *h;

	if (next.syncing < 0)
		return 0;	/* cut since it was announced: it settles nothing */
	if (covered > next.syncing)
		covered = next.syncing;	/* a record withdrawn since (smtpmail) */
	if (covered > next.size)
		covered = next.size;	/* a crashed append was cut since */
	if (next.durable < covered)
		next.durable = covered;
	next.syncing = -1;
	if (commit_write(lock_fd, &next) < 0)
		return -1;
	*h = next;
	return 0;
}

/*
 * commit_replaced - under the write lock, after mymailbox was replaced by a
 * rename of ours (a conversion, popserver's update): the epoch moves on,
 * and kept says, in the old file's offsets, which records the new file
 * holds, durably: those that end by kept (size: all of them). When the
 * rename may not survive a crash (doubt: its directory's fsync failed),
 * only what was durable in the old file counts, since a crash may bring
 * that file back. A cut in the new file moves the epoch on once more, so a
 * session that finds its epoch one behind knows kept is about its file.
 */
static void commit_replaced(int lock_fd, off_t kept, int doubt)
{
	struct commit_state h;

	if (commit_read(lock_fd, &h) <= 0)
		return;		/* the next commit_load starts it again */
	commit_bump(&h, doubt && h.durable < kept ? h.durable : kept);
	(void)commit_write(lock_fd, &h);
}

/* <<< shared: commit */

/* ---------------------------------------------------------------- listening and the process model */

/* >>> shared: server - listening sockets and the forking accept loop (smtpmail.c, popserver.c) */

/* addr_text - the numeric text of a socket address, for logs and trace lines */
static void addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
	if (getnameinfo(sa, len, out, cap, NULL, 0, NI_NUMERICHOST) != 0)
		(void)snprintf(out, cap, "unknown");	/* cap is ADDR_TEXT_MAX */
}

/* log_listening - one "listening on" line per socket (the harness waits for it) */
static void log_listening(const int *fds, int n, const char *port)
{
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		char where[ADDR_TEXT_MAX] = "?";

		if (getsockname(fds[i], (struct sockaddr *)&ss, &len) == 0)
			addr_text((struct sockaddr *)&ss, len, where, sizeof where);
		log_msg("listening on %s port %s", where, port);
	}
}

/*
 * listen_on - listening sockets on addr (NULL: every IPv4 and IPv6 address)
 * and port. Returns how many (all or nothing); 0 after logging why.
 */
static int listen_on(const char *addr, const char *port, int fds[MAX_LISTEN])
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	char where[ADDR_TEXT_MAX];
	int n = 0, one = 1;
	int err = getaddrinfo(addr, port, &hints, &res);

	if (err != 0) {
		log_msg("cannot listen on %s port %s: %s", addr ? addr : "*", port,
			gai_strerror(err));
		return 0;
	}
	for (ai = res; ai && n < MAX_LISTEN; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);

		if (fd < 0 && (errno == EAFNOSUPPORT || errno == EPROTONOSUPPORT))
			continue;	/* e.g. no IPv6 on this host */
		addr_text(ai->ai_addr, ai->ai_addrlen, where, sizeof where);
		if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
		    || (ai->ai_family == AF_INET6
			&& setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
		    || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0
		    || fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {	/* accept never blocks */
			log_msg("cannot listen on %s port %s: %s", where, port, strerror(errno));
			if (fd >= 0)
				close_fd(fd, "socket");
			while (n > 0)
				close_fd(fds[--n], "socket");
			break;
		}
		fds[n++] = fd;
	}
	freeaddrinfo(res);
	if (n == 0 && !ai)	/* every family unsupported: nothing tried failed */
		log_msg("cannot listen on %s port %s: no usable address", addr ? addr : "*", port);
	log_listening(fds, n, port);
	return n;
}

/* A session process, as the parent sees it. */
struct child {
	pid_t pid;
	int over;		/* its session is over: the process is exiting, or idle */
	int refusal_logged;	/* a refusal of its address is logged (the burst's) */
	char peer[ADDR_TEXT_MAX];	/* the client's address */
	/* A worker of the pool (smtpmail) serves one session after another: */
	int worker;		/* a worker, not a process for one session */
	int sock;		/* a worker's socketpair, the parent's end; -1 once closed */
	int idle;		/* a worker waiting on sock for its next connection */
};

/* What a session process writes on the over pipe when its session is over:
 * one record, atomic (under PIPE_BUF), so the pipe only holds whole ones. */
struct over_note {
	pid_t pid;
	int failures;		/* the session's wrong passwords: the parent adds them to
				 * its address's penalty (this note is their one way there) */
	int last;		/* a worker that exits now (POOL_MAX_USE): not to be reused */
};

/* An address that gave wrong passwords (Dovecot's auth penalty): the parent
 * keeps its failures until PENALTY_FORGET_SECONDS pass without a new one. */
struct penalty {
	char peer[ADDR_TEXT_MAX];	/* "": a free entry */
	int failures;
	long long last_ms;	/* now_ms() of the last failure reported */
};

struct server;
struct child;

/* What a pool of reused session processes does (smtpmail's pool block); a
 * server without one (popserver, not pooled: DESIGN.md "Process model")
 * forks a process per session. */
struct pool_ops {
	/* hand connection fd to an idle worker; the worker, or NULL if none took it */
	struct child *(*reuse)(struct server *srv, int fd, const char *peer, int pause_ms);
	/* the socketpair of a new worker, sv[0] the parent's end; -1: none, the
	 * new process serves one session */
	int (*channel)(int sv[2]);
	/* in a worker after a session: wait for the next connection; its
	 * descriptor, with its peer and pause_ms, or -1: the worker exits */
	int (*next)(int sock, char *peer, size_t cap, int *pause_ms);
	/* worker c's session is over: keep it idle or dismiss it; last: it is
	 * exiting (it served max_use sessions) */
	void (*rest)(struct server *srv, struct child *c, int last);
	int max_use;		/* sessions a worker serves, then exits */
};

/* The accept loop's state. Only the main loop touches it; the signal
 * handler only sets flags, since little else is safe inside a handler. */
struct server {
	int fds[MAX_LISTEN];
	int nfds;
	struct child *children;	/* session processes: live, and over but not reaped */
	int nchildren, slots;	/* in use; the table's size (server_setup) */
	int max_children;	/* -c: live sessions at once */
	int max_per_peer;	/* -C: live sessions from one client address */
	const char *busy_line;	/* sent, CRLF included, past either limit */
	int busy_logged;		/* a refusal at -c is logged; until a session starts */
	/* A session on its connection (read from in, written to out; the same
	 * socket here), whose first wrong password waits pause_ms; it returns
	 * its wrong passwords (its note tells the parent: session_over), or -1
	 * if it could not run. */
	int (*session)(int in, int out, const char *peer, int pause_ms);
	const struct pool_ops *pool;	/* NULL: a process per session */
	int over_pipe[2];	/* a child writes a struct over_note to [1] when its session is over */
	int penalty_ms;		/* -w: the wait before a wrong password's answer, before
				 * the address's penalty doubles it */
	struct penalty penalties[PENALTY_SLOTS];
	const char *userfile;	/* its problems logged once per change */
	int paused;		/* skip the listening sockets one ACCEPT_PAUSE_MS */
	int failing;		/* accept or pselect failing: logged once */
};

/* In a session process, what session_over needs, set by run_child before
 * each session: a session says that it is over from deep inside its own
 * code (smtp_session, session_end), right after its last reply. */
static struct {
	int fd;			/* the over pipe's writing end; -1: no parent (-i, a fuzz harness) */
	int told;		/* the parent has this session's note */
	int last;		/* this session is the process's last (a worker at max_use) */
} over = { .fd = -1 };

static volatile sig_atomic_t got_sigchld, got_stop;

/* on_signal - note the signal; the main loop does the work */
static void on_signal(int sig)
{
	if (sig == SIGCHLD)
		got_sigchld = 1;
	else
		got_stop = 1;
}

/* penalty_delay_ms - the wait before answering a wrong password: base_ms
 * doubled doublings times, up to PENALTY_MAX_MS (never below base_ms) */
static int penalty_delay_ms(int base_ms, int doublings)
{
	long long ms = base_ms;

	for (int i = 0; i < doublings && ms > 0 && ms < PENALTY_MAX_MS; i++)
		ms *= 2;
	return ms > PENALTY_MAX_MS && base_ms < PENALTY_MAX_MS ? PENALTY_MAX_MS : (int)ms;
}

/* penalty_entry - peer's entry in the penalty table, or NULL; with make, a
 * new one when it has none: a free or forgotten entry, else the entry whose
 * last failure is the oldest (the table stays bounded) */
static struct penalty *penalty_entry(struct server *srv, const char *peer, int make)
{
	long long now = now_ms();
	struct penalty *spare = NULL;

	for (int i = 0; i < PENALTY_SLOTS; i++) {
		struct penalty *p = &srv->penalties[i];

		if (p->peer[0] && now - p->last_ms > PENALTY_FORGET_SECONDS * 1000LL)
			p->peer[0] = '\0';	/* forgotten */
		if (p->peer[0] && strcmp(p->peer, peer) == 0)
			return p;
		if (!spare || (spare->peer[0] && (!p->peer[0] || p->last_ms < spare->last_ms)))
			spare = p;
	}
	if (!make)
		return NULL;
	memset(spare, 0, sizeof *spare);
	(void)snprintf(spare->peer, sizeof spare->peer, "%s", peer);	/* fits: both ADDR_TEXT_MAX */
	return spare;
}

/* penalty_add - a session of peer ended after n wrong passwords */
static void penalty_add(struct server *srv, const char *peer, int n)
{
	struct penalty *p = penalty_entry(srv, peer, 1);

	p->failures = p->failures + n < PENALTY_FAILURES_MAX ? p->failures + n
		      : PENALTY_FAILURES_MAX;
	p->last_ms = now_ms();
}

/* worker_dismiss - tell worker c to exit once its session, if any, is
 * over: closing the parent's end of its socketpair is the message */
static void worker_dismiss(struct child *c)
{
	if (c->sock >= 0)
		close_fd(c->sock, "socketpair");
	c->sock = -1;
	c->idle = 0;
}

/* forget_child - a session process ended: free its slot, log an abnormal
 * end. Its wrong passwords came in its note (note_over), not in its exit
 * status, which only says whether it could serve (0) or not. */
static void forget_child(struct server *srv, pid_t pid, int status)
{
	for (int i = 0; i < srv->nchildren; i++)
		if (srv->children[i].pid == pid) {
			worker_dismiss(&srv->children[i]);
			srv->children[i] = srv->children[--srv->nchildren];
			break;
		}
	if (WIFSIGNALED(status))
		log_msg("session %ld killed by signal %d", (long)pid, WTERMSIG(status));
}

/* note_over - child c said its session is over, after failures wrong
 * passwords, which count against its address from now on; a worker is the
 * pool's to keep idle or dismiss (last: it is exiting) */
static void note_over(struct server *srv, struct child *c, int failures, int last)
{
	c->over = 1;
	if (failures > 0)
		penalty_add(srv, c->peer, failures);
	if (c->worker && srv->pool)
		srv->pool->rest(srv, c, last);
}

/* drain_over - take the notes of the children that said their session is over */
static void drain_over(struct server *srv)
{
	struct over_note notes[64];
	ssize_t n;

	while ((n = read(srv->over_pipe[0], notes, sizeof notes)) > 0)
		for (size_t k = 0; k < (size_t)n / sizeof notes[0]; k++)
			for (int i = 0; i < srv->nchildren; i++)
				if (srv->children[i].pid == notes[k].pid && !srv->children[i].over)
					note_over(srv, &srv->children[i], notes[k].failures,
						  notes[k].last);
}

/* reap_children - collect every finished session; never blocks */
static void reap_children(struct server *srv)
{
	pid_t pid;
	int status;

	drain_over(srv);
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		forget_child(srv, pid, status);
}

/* live_sessions - the sessions not over yet; in *same those from peer, and
 * in *logged whether a refusal of peer is logged (set on its sessions) */
static int live_sessions(const struct server *srv, const char *peer, int *same, int *logged)
{
	int live = 0;

	*same = *logged = 0;
	for (int i = 0; i < srv->nchildren; i++) {
		const struct child *c = &srv->children[i];

		if (c->over)
			continue;
		live++;
		if (strcmp(c->peer, peer) == 0) {
			(*same)++;
			*logged |= c->refusal_logged;
		}
	}
	return live;
}

/* mark_refusal_logged - set (or clear) the refusal-logged mark on peer's sessions */
static void mark_refusal_logged(struct server *srv, const char *peer, int logged)
{
	for (int i = 0; i < srv->nchildren; i++)
		if (strcmp(srv->children[i].peer, peer) == 0)
			srv->children[i].refusal_logged = logged;
}

/* refuse_busy - past a limit: one line, best effort, and close */
static void refuse_busy(struct server *srv, int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags >= 0)
		(void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);	/* never block the loop */
	if (write(fd, srv->busy_line, strlen(srv->busy_line)) < 0) {
		/* the client is gone or not reading: closing is all there is to do */
	}
	close_fd(fd, "connection");
}

/*
 * session_over - in a session process, right after its last reply is sent:
 * tell the parent that its slot is free, as soon as the client has that
 * reply (one that connects again at once may still come first: wait_over),
 * and well before this process has exited and been reaped (a sanitizer's
 * exit alone takes milliseconds). The note carries the session's wrong
 * passwords, and is their only way to the parent, so a full pipe is waited
 * on for a while (NOTE_WAIT_MS, twice at most); if it stays full, the slot
 * frees when the parent reaps us, and the failures are logged, not counted.
 * Once only; nothing to do with no parent (-i, a fuzz harness).
 */
static void session_over(int failures)
{
	struct over_note note = { .pid = getpid(), .failures = failures > 0 ? failures : 0,
				  .last = over.last };
	struct pollfd p = { .fd = over.fd, .events = POLLOUT };

	for (int tries = 0; over.fd >= 0 && !over.told && tries < 3; tries++) {
		if (write(over.fd, &note, sizeof note) == (ssize_t)sizeof note)
			over.told = 1;	/* under PIPE_BUF: all of it or nothing */
		else if ((errno != EAGAIN && errno != EINTR) || poll(&p, 1, NOTE_WAIT_MS) < 0)
			break;
	}
	if (over.fd >= 0 && !over.told)
		log_msg("cannot tell the parent that the session is over: %s; %d wrong"
			" passwords not counted", strerror(errno), note.failures);
	over.fd = -1;
}

/* child_signals - in a session: SIGTERM ends it (the parent's last resort
 * after the grace time); SIGINT is ignored, since a Ctrl-C reaches the whole
 * process group and the parent alone decides when sessions stop */
static void child_signals(const sigset_t *mask)
{
	if (signal(SIGCHLD, SIG_DFL) == SIG_ERR || signal(SIGTERM, SIG_DFL) == SIG_ERR
	    || signal(SIGINT, SIG_IGN) == SIG_ERR || sigprocmask(SIG_SETMASK, mask, NULL) < 0)
		log_msg("session signals: %s", strerror(errno));
}

/* child_setup - in a new session process: close what is the parent's: the
 * listening sockets, the reading end of the over pipe, and the workers'
 * socketpairs (a copy here would keep a worker from seeing the parent
 * close its end) */
static void child_setup(struct server *srv)
{
	for (int i = 0; i < srv->nfds; i++)
		close_fd(srv->fds[i], "listening socket");
	for (int i = 0; i < srv->nchildren; i++)
		if (srv->children[i].sock >= 0)
			close_fd(srv->children[i].sock, "socketpair");
	close_fd(srv->over_pipe[0], "pipe");
}

/*
 * run_child - in the new process: the session on fd (its first wrong
 * password waits pause_ms), then exit, 0 or 1 if the session could not
 * run. A worker (sock >= 0) then serves each connection the parent hands
 * it on sock, until the parent closes it. Nothing of one session reaches
 * the next: the session's state is its own allocation, freed at its end,
 * and each starts with the same signal mask and dispositions, no alarm,
 * its own pause, and the same descriptors (a session closes its connection).
 */
static void run_child(struct server *srv, int fd, const char *first, int pause_ms,
		      int sock, const sigset_t *child_mask)
{
	char peer[ADDR_TEXT_MAX];
	int failures, served = 0;

	child_setup(srv);
	(void)snprintf(peer, sizeof peer, "%s", first);	/* fits: both ADDR_TEXT_MAX */
	do {
		over.fd = srv->over_pipe[1];
		over.told = 0;
		/* A fresh process now and then bounds what any leak could gather. */
		over.last = sock >= 0 && ++served >= srv->pool->max_use;
		alarm(0);
		child_signals(child_mask);
		failures = srv->session(fd, fd, peer, pause_ms);
		session_over(failures);		/* if the session has not said so */
		/* A worker goes on only if the parent knows it is free (it has
		 * the note), will not be exiting, and hands it a connection. */
	} while (sock >= 0 && over.told && !over.last
		 && (fd = srv->pool->next(sock, peer, sizeof peer, &pause_ms)) >= 0);
	exit(failures < 0 ? 1 : 0);
}

/* fork_session - a new process for the session on fd: with srv->pool a
 * worker, with a socketpair for the connections to come (out of
 * descriptors for one: a plain session); its entry, or NULL after logging */
static struct child *fork_session(struct server *srv, int fd, const char *peer,
				  int pause_ms, const sigset_t *child_mask)
{
	struct child *c = &srv->children[srv->nchildren];
	int sv[2] = { -1, -1 };
	pid_t pid;

	if (srv->pool && srv->pool->channel(sv) < 0)
		sv[0] = sv[1] = -1;
	if ((pid = fork()) == 0) {
		if (sv[0] >= 0)
			close_fd(sv[0], "socketpair");
		run_child(srv, fd, peer, pause_ms, sv[1], child_mask);
	}
	if (pid < 0)
		log_msg("fork: %s", strerror(errno));
	for (int i = pid < 0 ? 0 : 1; i < 2; i++)
		if (sv[i] >= 0)
			close_fd(sv[i], "socketpair");
	if (pid < 0)
		return NULL;
	memset(c, 0, sizeof *c);
	c->pid = pid;
	c->worker = sv[0] >= 0;
	c->sock = sv[0];
	srv->nchildren++;
	return c;
}

/* start_session - the session on fd: handed to an idle worker, else in a
 * new process; same: the other live sessions of peer */
static void start_session(struct server *srv, int fd, const char *peer, int same,
			  const sigset_t *child_mask)
{
	struct penalty *p = penalty_entry(srv, peer, 0);
	struct child *c = NULL;
	int pause_ms;

	/* Every wrong password of the address's recent sessions doubles the
	 * pause, and so does each of its other live sessions (guessing in
	 * parallel, whose failures are only reported when they end). */
	pause_ms = penalty_delay_ms(srv->penalty_ms, (p ? p->failures : 0) + same);
	if (srv->pool)
		c = srv->pool->reuse(srv, fd, peer, pause_ms);
	if (!c && !(c = fork_session(srv, fd, peer, pause_ms, child_mask))) {
		refuse_busy(srv, fd);
		return;
	}
	mark_refusal_logged(srv, peer, 0);	/* the address's refusal burst, if any, is over */
	srv->busy_logged = 0;
	c->over = c->idle = c->refusal_logged = 0;
	(void)snprintf(c->peer, sizeof c->peer, "%s", peer);	/* fits: both ADDR_TEXT_MAX */
	close_fd(fd, "connection");	/* its session's process has it */
}

/* log_refusal - log why peer is refused, once per burst: past -c until a
 * session starts, past -C until the address gets a session again */
static void log_refusal(struct server *srv, const char *peer, int live, int same,
			int logged)
{
	if (srv->nchildren == srv->slots) {
		if (!srv->busy_logged)
			log_msg("refused %s: %d sessions still exiting; not logging refusals"
				" again until a session starts", peer, srv->nchildren - live);
		srv->busy_logged = 1;
	} else if (same >= srv->max_per_peer && live < srv->max_children) {
		if (!logged)
			log_msg("refused %s: %d sessions from this address (-C); not logging"
				" its refusals again until it gets a session", peer, same);
		mark_refusal_logged(srv, peer, 1);
	} else if (!srv->busy_logged) {
		log_msg("refused %s: %d sessions (-c); not logging refusals again until"
			" a session starts", peer, live);
		srv->busy_logged = 1;
	}
}

/* wait_over - every slot is taken: wait at most SLOT_WAIT_MS for a session
 * to say it is over. A client that reconnects the moment it has its last
 * reply can be here before its old session had the CPU to say so. */
static void wait_over(struct server *srv)
{
	struct pollfd p = { .fd = srv->over_pipe[0], .events = POLLIN };

	if (poll(&p, 1, SLOT_WAIT_MS) > 0)
		drain_over(srv);
}

/*
 * admit - start a session for peer, or refuse it past -c sessions or -C from
 * its address. Only live sessions count: when the table looks full, finished
 * ones are collected first, and at -c a session about to say it is over is
 * waited for a moment (not at -C: one address must not slow the loop down
 * for the others). With a pool, the notes are taken first in any case: a
 * worker that has just become idle is reused, its penalty report counts.
 */
static void admit(struct server *srv, int fd, const char *peer, const sigset_t *child_mask)
{
	int same, logged, live;

	if (srv->pool)
		drain_over(srv);
	live = live_sessions(srv, peer, &same, &logged);
	if (live >= srv->max_children || same >= srv->max_per_peer
	    || srv->nchildren == srv->slots) {
		reap_children(srv);
		live = live_sessions(srv, peer, &same, &logged);
	}
	if (live >= srv->max_children) {
		wait_over(srv);
		live = live_sessions(srv, peer, &same, &logged);
	}
	if (live < srv->max_children && same < srv->max_per_peer && srv->nchildren < srv->slots) {
		start_session(srv, fd, peer, same, child_mask);
		return;
	}
	log_refusal(srv, peer, live, same, logged);
	refuse_busy(srv, fd);	/* after the log line: a test can read it at once */
}

/* trouble - accept or pselect failed in a way that may repeat at once (e.g.
 * EMFILE, ENFILE: the connection stays queued, the socket stays readable):
 * pause instead of spinning, and log it once until an accept works again */
static void trouble(struct server *srv, const char *what, int err)
{
	if (!srv->failing)
		log_msg("%s: %s; pausing %d ms between tries", what, strerror(err),
			(int)ACCEPT_PAUSE_MS);
	srv->failing = 1;
	srv->paused = 1;
}

/* accept_one - take one connection from listening socket lfd */
static void accept_one(struct server *srv, int lfd, const sigset_t *child_mask)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char peer[ADDR_TEXT_MAX];
	int fd = accept(lfd, (struct sockaddr *)&ss, &len);

	if (fd < 0) {
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK
		    && errno != ECONNABORTED)
			trouble(srv, "accept", errno);
		return;
	}
	if (srv->failing)
		log_msg("accept: working again");
	srv->failing = 0;
	addr_text((struct sockaddr *)&ss, len, peer, sizeof peer);
	userfile_check(srv->userfile);
	admit(srv, fd, peer, child_mask);
}

/* stop_sessions - after SIGTERM: let sessions end, at most the grace time */
static void stop_sessions(struct server *srv)
{
	time_t deadline = time(NULL) + STOP_GRACE_SECONDS;

	for (int i = 0; i < srv->nchildren; i++)	/* idle ones exit now, busy ones after */
		worker_dismiss(&srv->children[i]);
	while (srv->nchildren > 0 && time(NULL) < deadline) {
		struct timespec tick = { 0, 50 * 1000 * 1000 };

		nanosleep(&tick, NULL);
		reap_children(srv);
	}
	for (int i = 0; i < srv->nchildren; i++)
		if (kill(srv->children[i].pid, SIGTERM) < 0)	/* by PID: only our own */
			log_msg("kill %ld: %s", (long)srv->children[i].pid, strerror(errno));
	while (srv->nchildren > 0) {	/* SIGTERM ends them: a bounded wait */
		pid_t pid = srv->children[0].pid;
		int status = 0;

		if (waitpid(pid, &status, 0) < 0) {
			if (errno == EINTR)
				continue;
			log_msg("waitpid %ld: %s", (long)pid, strerror(errno));
		}
		forget_child(srv, pid, status);
	}
}

/* server_signals - SIGCHLD, SIGTERM, SIGINT caught by on_signal and blocked
 * but inside pselect; *wait_mask: the mask to wait with (and the sessions'):
 * the old one, with those three unblocked */
static int server_signals(sigset_t *wait_mask)
{
	struct sigaction sa = { .sa_handler = on_signal };
	static const int sigs[] = { SIGCHLD, SIGTERM, SIGINT };
	sigset_t block;

	if (sigemptyset(&sa.sa_mask) < 0 || sigemptyset(&block) < 0)
		return -1;
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		if (sigaction(sigs[i], &sa, NULL) < 0 || sigaddset(&block, sigs[i]) < 0)
			return -1;
	if (sigprocmask(SIG_BLOCK, &block, wait_mask) < 0)
		return -1;
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		if (sigdelset(wait_mask, sigs[i]) < 0)	/* even if inherited blocked */
			return -1;
	return 0;
}

/* wait_ready - pselect on the over pipe and the listening sockets (not
 * those while paused: then at most ACCEPT_PAUSE_MS); signals get through
 * only here */
static int wait_ready(struct server *srv, fd_set *ready, const sigset_t *wait_mask)
{
	struct timespec pause = { 0, ACCEPT_PAUSE_MS * 1000000L };
	int maxfd = srv->over_pipe[0], n;

	FD_ZERO(ready);
	FD_SET(srv->over_pipe[0], ready);
	for (int i = 0; !srv->paused && i < srv->nfds; i++) {
		FD_SET(srv->fds[i], ready);
		if (srv->fds[i] > maxfd)
			maxfd = srv->fds[i];
	}
	n = pselect(maxfd + 1, ready, NULL, NULL, srv->paused ? &pause : NULL, wait_mask);
	srv->paused = 0;
	if (n < 0 && errno != EINTR)
		trouble(srv, "pselect", errno);
	return n;
}

/* server_setup - the session table and the pipe on which children say that
 * their session is over (non-blocking at both ends: no child waits on it,
 * and draining it never blocks the loop). Sessions that are over stay in
 * the table until they are reaped, which under a burst of short sessions
 * takes a while (a sanitizer's exit takes milliseconds), and so do idle
 * workers (POOL_SPARE at most): room for as many again as -c, and
 * SLOTS_SPARE more. */
static int server_setup(struct server *srv)
{
	srv->slots = 2 * srv->max_children + SLOTS_SPARE;
	srv->over_pipe[0] = srv->over_pipe[1] = -1;
	if (!(srv->children = calloc((size_t)srv->slots, sizeof *srv->children))
	    || pipe(srv->over_pipe) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		int flags = fcntl(srv->over_pipe[i], F_GETFL);

		if (flags < 0 || fcntl(srv->over_pipe[i], F_SETFL, flags | O_NONBLOCK) < 0)
			return -1;
	}
	return 0;
}

/* server_cleanup - what server_setup made */
static void server_cleanup(struct server *srv)
{
	for (int i = 0; i < 2; i++)
		if (srv->over_pipe[i] >= 0)
			close_fd(srv->over_pipe[i], "pipe");
	free(srv->children);
}

/*
 * serve - the accept loop: a session per connection until SIGTERM or SIGINT.
 * The three signals stay blocked except inside pselect, which unblocks them
 * atomically: a signal can never slip in between the check and the wait.
 */
static int serve(struct server *srv)
{
	sigset_t wait_mask;
	int same, logged;

	if (server_setup(srv) < 0 || server_signals(&wait_mask) < 0) {
		log_msg("cannot serve: %s", strerror(errno));
		server_cleanup(srv);
		return 1;
	}
	userfile_check(srv->userfile);
	while (!got_stop) {
		fd_set ready;
		int n = wait_ready(srv, &ready, &wait_mask);

		if (got_sigchld) {
			got_sigchld = 0;
			reap_children(srv);
		}
		if (n > 0 && FD_ISSET(srv->over_pipe[0], &ready))
			drain_over(srv);
		for (int i = 0; n > 0 && i < srv->nfds; i++)
			if (FD_ISSET(srv->fds[i], &ready))
				accept_one(srv, srv->fds[i], &wait_mask);
	}
	for (int i = 0; i < srv->nfds; i++)
		close_fd(srv->fds[i], "listening socket");
	drain_over(srv);
	log_msg("stopping: %d session(s) still running", live_sessions(srv, "", &same, &logged));
	stop_sessions(srv);
	server_cleanup(srv);
	return 0;
}

/* socket_peer - the numeric address of the TCP peer of socket fd, an
 * IPv4-mapped IPv6 one as IPv4 (a dual-stack socket's, as systemd's);
 * -1 if fd is no TCP socket (a pipe, a socketpair) */
static int socket_peer(int fd, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_in v4 = { .sin_family = AF_INET };
	socklen_t len = sizeof ss;

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0
	    || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
		return -1;
	if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
		memcpy(&v4.sin_addr, v6->sin6_addr.s6_addr + 12, sizeof v4.sin_addr);
		addr_text((struct sockaddr *)&v4, sizeof v4, out, cap);
	} else {
		addr_text((struct sockaddr *)&ss, len, out, cap);
	}
	return 0;
}

/*
 * inetd_peer - under -i, the client's address: from getpeername on
 * standard input when it is a TCP socket (inetd, systemd's Accept=yes),
 * else from the variable that the superserver set, if it holds a numeric
 * address (TCPREMOTEIP: tcpserver; REMOTE_HOST: stunnel's exec=, whose
 * standard input is a socketpair or a pipe; REMOTE_ADDR), else "unknown"
 */
static void inetd_peer(char *out, size_t cap)
{
	static const char *const vars[] = { "TCPREMOTEIP", "REMOTE_HOST", "REMOTE_ADDR" };
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;

	if (socket_peer(STDIN_FILENO, out, cap) == 0)
		return;
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
		const char *v = getenv(vars[i]);

		if (v && getaddrinfo(v, NULL, &hints, &res) == 0) {
			addr_text(res->ai_addr, res->ai_addrlen, out, cap);
			freeaddrinfo(res);
			return;
		}
	}
	(void)snprintf(out, cap, "unknown");	/* cap is ADDR_TEXT_MAX */
}

/* inetd_stderr - under -i, before anything is logged, keep the log out of
 * the dialogue: inetd (and systemd, unless told otherwise) make standard
 * error the connection itself, where every log line would go to the
 * client. Then, or when it is closed (a later descriptor could become 2),
 * the log goes to /dev/null (README says how to keep it). -1 if it cannot. */
static int inetd_stderr(void)
{
	struct stat err, io;
	int same = 0, null;

	if (fstat(STDERR_FILENO, &err) == 0) {
		if (!S_ISSOCK(err.st_mode) && !S_ISFIFO(err.st_mode))
			return 0;
		for (int fd = STDIN_FILENO; fd <= STDOUT_FILENO; fd++)
			same |= fstat(fd, &io) == 0 && io.st_dev == err.st_dev
				&& io.st_ino == err.st_ino;
		if (!same)
			return 0;
	}
	if ((null = open("/dev/null", O_WRONLY)) < 0)
		return -1;
	if (null != STDERR_FILENO && (dup2(null, STDERR_FILENO) < 0 || close(null) < 0))
		return -1;
	return 0;
}

/*
 * serve_inetd - -i: one session on standard input and output, as inetd,
 * tcpserver, systemd's Accept=yes and stunnel's exec= run a server. It
 * runs on duplicates of 0 and 1, so that those get their file status
 * flags back (a terminal must not stay non-blocking). With no parent to
 * keep a penalty across sessions, a wrong password waits penalty_ms,
 * doubled within the session only. Returns the exit status: 0, or 1 if
 * the session could not run.
 */
static int serve_inetd(int (*session)(int in, int out, const char *peer, int pause_ms),
		       int penalty_ms)
{
	char peer[ADDR_TEXT_MAX];
	int flags[2], fds[2] = { -1, -1 }, failures;

	inetd_peer(peer, sizeof peer);
	for (int i = 0; i < 2; i++)
		if ((flags[i] = fcntl(i, F_GETFL)) < 0 || (fds[i] = dup(i)) < 0
		    || fcntl(fds[i], F_SETFL, flags[i] | O_NONBLOCK) < 0) {
			log_msg("-i: descriptor %d: %s", i, strerror(errno));
			for (int k = 0; k <= i; k++)
				if (fds[k] >= 0)
					close_fd(fds[k], "connection");
			return 1;
		}
	failures = session(fds[0], fds[1], peer, penalty_ms);	/* closes both */
	for (int i = 0; i < 2; i++)
		(void)fcntl(i, F_SETFL, flags[i]);	/* best effort: we are done */
	return failures < 0 ? 1 : 0;
}

/* <<< shared: server */

/* ---------------------------------------------------------------- mailbox files (DESIGN.md "Record format") */

/* >>> shared: mailbox - mailbox files: positioned I/O, record ends, mail in other formats (smtpmail.c, popserver.c) */

enum {
	MBOX_CHUNK = 4096,	/* the scans below read this much at a time */
	TRACE_WINDOW = 2048	/* where smtpmail's trace lines must show */
};

/* What a mailbox holds past its last complete record (DESIGN.md). */
enum mailbox_shape {
	SHAPE_RECORDS,		/* nothing: it is all records */
	SHAPE_OUR_TAIL,		/* the start of a record of ours: a crashed append */
	SHAPE_FOREIGN		/* mail written by another hand: convert, never cut */
};

/* A file written through a buffer, for the conversion below. */
struct file_out {
	int fd;
	size_t len;
	char data[MBOX_CHUNK];
};

/* A file read through a buffer, for the conversion below: the chunk that
 * holds the bytes asked for is read once, however many lines it holds. */
struct file_in {
	int fd;
	off_t base;		/* data[0 .. len) are the file's bytes from base */
	size_t len;
	char data[MBOX_CHUNK];
};

/* pread_full - read up to n bytes at offset off; short only at end of file */
static ssize_t pread_full(int fd, char *buf, size_t n, off_t off)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = pread(fd, buf + done, n - done, off + (off_t)done);

		if (k > 0)
			done += (size_t)k;
		else if (k == 0)
			break;
		else if (errno != EINTR)
			return -1;
	}
	return (ssize_t)done;
}

/* write_all - write n bytes at the file offset, short writes and EINTR included */
static int write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, buf, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k == 0)
				errno = EIO;	/* cannot happen for a regular file */
			return -1;
		}
		buf += k;
		n -= (size_t)k;
	}
	return 0;
}

/*
 * last_record_end - the end of the last complete record among fd's first
 * size bytes: just after its last CRLF "." CRLF, or 0 if there is none.
 * The search goes backwards in bounded chunks, so it costs little however
 * large the mailbox is. Returns -1 if the file cannot be read.
 */
static off_t last_record_end(int fd, off_t size)
{
	static const char mark[] = "\r\n.\r\n";
	char buf[MBOX_CHUNK + 4];
	off_t pos = size;

	while (pos > 0) {
		size_t want = pos > MBOX_CHUNK ? MBOX_CHUNK : (size_t)pos;
		off_t start = pos - (off_t)want;
		size_t more = size - pos < 4 ? (size_t)(size - pos) : 4;
		ssize_t have = pread_full(fd, buf, want + more, start);

		if (have < 0)
			return -1;
		for (size_t i = (size_t)have >= 5 ? (size_t)have - 4 : 0; i-- > 0;)
			if (i < want && memcmp(buf + i, mark, 5) == 0)
				return start + (off_t)i + 5;
		pos = start;
	}
	return 0;
}

/* find_bytes - where the m bytes of needle first occur in hay[0 .. n), or NULL */
static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
	for (size_t i = 0; m <= n && i <= n - m; i++)
		if (memcmp(hay + i, needle, m) == 0)
			return hay + i;
	return NULL;
}

/*
 * tail_is_ours - 1 if the n bytes of a tail (whole: all of it) start the
 * way every record of smtpmail's does, in CR LF lines:
 *
 *	Return-Path: <...>
 *	Received: from ...
 *		by <host> (smtpmail) with ...
 *
 * or with a piece of those lines, cut short by a crash. Only such a tail
 * may be cut back (DESIGN.md); anything else is somebody's mail, even a
 * saved copy of one of our records in LF lines.
 */
static int tail_is_ours(const char *tail, size_t n, int whole)
{
	static const char *const starts[] = { "Return-Path: <", "Received: from ", "\tby " };
	const char *p = tail, *end = tail + n;
	int line;

	for (line = 0; line < 3 && p < end; line++) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		size_t len = lf ? (size_t)(lf - p) : (size_t)(end - p);
		size_t want = strlen(starts[line]);

		if (memcmp(p, starts[line], len < want ? len : want) != 0)
			return 0;	/* not our line, or not at its place */
		if (!lf)
			return whole;	/* cut short inside this line */
		if (lf == p || lf[-1] != '\r')
			return 0;	/* a bare LF: we write CR LF only */
		if (line == 2)
			return find_bytes(p, len, " (smtpmail) with ", 17) != NULL;
		p = lf + 1;
	}
	return whole && p == end;	/* cut short after a whole line */
}

/*
 * mailbox_shape - what fd's first size bytes hold past the last complete
 * record, which goes to *end. A tail is a crashed append of ours only if
 * it starts where the commit state says an append began (announced; -1:
 * none was) and looks like one of our records: a saved copy of a message
 * appended back by hand looks the same, and is mail. A UTF-8 byte order
 * mark at the start (an editor's) makes a hand-written file too. Returns
 * -1 on a read error.
 */
static int mailbox_shape(int fd, off_t size, off_t announced, off_t *end)
{
	char buf[TRACE_WINDOW];
	ssize_t n = pread_full(fd, buf, 3, 0);

	if (n < 0 || (*end = last_record_end(fd, size)) < 0)
		return -1;
	if (n == 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
		return SHAPE_FOREIGN;
	if (*end == size)
		return SHAPE_RECORDS;
	n = pread_full(fd, buf, sizeof buf, *end);
	if (n < 0)
		return -1;
	return *end == announced && tail_is_ours(buf, (size_t)n, *end + n == size)
	       ? SHAPE_OUR_TAIL : SHAPE_FOREIGN;
}

/* out_add - append n bytes to the buffered output file */
static int out_add(struct file_out *o, const char *p, size_t n)
{
	if (n > sizeof o->data - o->len) {
		if (write_all(o->fd, o->data, o->len) < 0)
			return -1;
		o->len = 0;
		if (n > sizeof o->data)
			return write_all(o->fd, p, n);
	}
	memcpy(o->data + o->len, p, n);
	o->len += n;
	return 0;
}

/* in_at - the bytes of the file from off on, as many as the buffer holds
 * (*avail of them, at least 1); NULL at the end of the file or on an error */
static const char *in_at(struct file_in *in, off_t off, size_t *avail)
{
	ssize_t k;

	if (off < in->base || off >= in->base + (off_t)in->len) {
		k = pread_full(in->fd, in->data, sizeof in->data, off);
		if (k == 0)
			errno = EIO;	/* shorter than it was a moment ago */
		if (k <= 0)
			return NULL;
		in->base = off;
		in->len = (size_t)k;
	}
	*avail = in->len - (size_t)(off - in->base);
	return in->data + (off - in->base);
}

/* out_copy - append bytes [off, off + len) of file in */
static int out_copy(struct file_out *o, struct file_in *in, off_t off, off_t len)
{
	while (len > 0) {
		size_t avail;
		const char *p = in_at(in, off, &avail);

		if (!p)
			return -1;
		if ((off_t)avail > len)
			avail = (size_t)len;
		if (out_add(o, p, avail) < 0)
			return -1;
		off += (off_t)avail;
		len -= (off_t)avail;
	}
	return 0;
}

/*
 * line_at - the line of file in that starts at off, which is before size:
 * *text_end is where its text ends (before CR LF, or LF alone, or the end
 * of the file), *next where the next line starts; its first byte goes to
 * *first (-1: an empty line).
 */
static int line_at(struct file_in *in, off_t off, off_t size, off_t *text_end, off_t *next,
		   int *first)
{
	int before = -1;	/* the byte before the chunk: a CR, perhaps */

	*first = -1;
	for (off_t pos = off; pos < size;) {
		size_t avail;
		const char *p = in_at(in, pos, &avail), *lf;

		if (!p)
			return -1;
		if ((off_t)avail > size - pos)
			avail = (size_t)(size - pos);
		if (pos == off)
			*first = (unsigned char)p[0];
		if ((lf = memchr(p, '\n', avail)) != NULL) {
			int cr = lf > p ? lf[-1] == '\r' : before == '\r';

			*next = pos + (lf - p) + 1;
			*text_end = *next - 1 - (cr && *next - 1 > off);
			*first = *text_end > off ? *first : -1;
			return 0;
		}
		before = (unsigned char)p[avail - 1];
		pos += (off_t)avail;
	}
	/* The last line has no LF: a CR just before the end is its line end. */
	*next = size;
	*text_end = size - (before == '\r');
	*first = *text_end > off ? *first : -1;
	return 0;
}

/*
 * convert_lines - write [from, size) of file in as records: a line holding
 * only "." ends a message (the assignment's format), every line ends in
 * CR LF, a line that starts with "." gets another (dot-stuffing), and a
 * message that lacks its "." line gets one. Blank lines before a message
 * (between the "." line and the next headers) are not part of it, so a
 * message of blank lines only is dropped. Returns how many messages were
 * written, or -1.
 */
static long convert_lines(struct file_in *in, off_t from, off_t size, struct file_out *o)
{
	long messages = 0, lines = 0;
	off_t off = from, text_end, next;
	int first;

	for (; off < size; off = next) {
		if (line_at(in, off, size, &text_end, &next, &first) < 0)
			return -1;
		if (first == '.' && text_end == off + 1) {
			if (lines > 0 && out_add(o, ".\r\n", 3) < 0)
				return -1;
			messages += lines > 0;
			lines = 0;
		} else if (lines == 0 && first < 0)
			continue;	/* a blank line before the message */
		else if ((first == '.' && out_add(o, ".", 1) < 0)
			 || out_copy(o, in, off, text_end - off) < 0 || out_add(o, "\r\n", 2) < 0)
			return -1;
		else
			lines++;
	}
	if (lines > 0 && out_add(o, ".\r\n", 3) < 0)
		return -1;
	return messages + (lines > 0);
}

/*
 * write_converted - create mymailbox.new in the user's directory dirfd and
 * write into it the records of fd as they are, then the rest converted (a
 * byte order mark at the start is left out); fsync it. Returns the number
 * of messages converted, or -1.
 */
static long write_converted(int fd, off_t size, off_t end, int dirfd)
{
	struct file_out o = { .len = 0 };
	struct file_in in = { .fd = fd, .len = 0 };
	char bom[3];
	off_t skip = 0;
	long messages = -1;

	if (pread_full(fd, bom, 3, 0) == 3 && memcmp(bom, "\xEF\xBB\xBF", 3) == 0)
		skip = 3;
	/* A leftover file (a crash) that is a link elsewhere must not be followed. */
	if (unlinkat(dirfd, "mymailbox.new", 0) < 0 && errno != ENOENT)
		return -1;
	o.fd = openat(dirfd, "mymailbox.new", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW
		      | O_CLOEXEC, 0600);
	if (o.fd < 0)
		return -1;
	if (end <= skip || out_copy(&o, &in, skip, end - skip) == 0)
		messages = convert_lines(&in, end > skip ? end : skip, size, &o);
	if (messages >= 0 && (write_all(o.fd, o.data, o.len) < 0 || fsync(o.fd) < 0))
		messages = -1;
	if (close(o.fd) < 0)
		messages = -1;
	return messages;
}

/*
 * quiet_size - the size of fd once no other hand has written to it for
 * CONVERT_QUIET_MS (waiting at most twice that), or -1 while it is still
 * being written: a writer that opened the file before the conversion
 * renames a new one over it would go on writing into the old one. Nothing
 * that waits is lost: deliveries answer 451 (busy), popserver serves the
 * records before the text meanwhile. size: the size the caller saw.
 */
static off_t quiet_size(int fd, off_t size)
{
	struct timespec pause = { 0, 50 * 1000 * 1000 }, now;
	struct stat st;

	for (int waited = 0;; waited += 50) {
		long long age_ms;

		if (fstat(fd, &st) < 0 || clock_gettime(CLOCK_REALTIME, &now) < 0)
			return size;	/* cannot tell: as before */
		age_ms = ((long long)now.tv_sec - st.st_mtim.tv_sec) * 1000
			 + (now.tv_nsec - st.st_mtim.tv_nsec) / 1000000;
		if (age_ms >= CONVERT_QUIET_MS || age_ms < 0)	/* < 0: the clock stepped back */
			return st.st_size > size ? st.st_size : size;
		if (waited >= 2 * CONVERT_QUIET_MS)
			return -1;
		(void)nanosleep(&pause, NULL);
	}
}

/*
 * carry_over - after convert_mailbox's rename: what another hand wrote to
 * the old file (fd) while it was converted, from size on, is appended to
 * the new mymailbox as it is (a tail that the next opening converts), so
 * that a writer still at work loses nothing it wrote until then.
 */
static void carry_over(int fd, int dirfd, const char *login, off_t size)
{
	char buf[MBOX_CHUNK];
	struct stat now;
	int out;
	ssize_t n;

	if (fstat(fd, &now) < 0 || now.st_size <= size)
		return;
	out = open_regular(dirfd, login, "mymailbox", O_WRONLY | O_APPEND, &now);
	for (n = out < 0 ? -1 : 1; n > 0; size += n)
		if ((n = pread_full(fd, buf, sizeof buf, size)) > 0
		    && write_all(out, buf, (size_t)n) < 0)
			n = -1;
	if (n < 0 || out < 0 || fsync(out) < 0)
		log_msg("%s/mymailbox: text written during its conversion not carried over: %s",
			login, strerror(errno));
	if (out >= 0)
		close_fd(out, "mailbox");
}

/*
 * convert_mailbox - turn a mailbox written by another hand into records,
 * once and atomically, the way a POP3 update replaces a mailbox: write
 * mymailbox.new in the user's directory dirfd, fsync it, rename it over
 * mymailbox, fsync the directory. The caller holds the write lock, and
 * must open mymailbox again afterwards. Returns 0; -1 when it failed before
 * the rename, which leaves the mailbox as it was; 1 when the rename took
 * effect but the directory's fsync failed: the mailbox is converted, but
 * after a crash it may be the old file again (and be converted again).
 */
static int convert_mailbox(int fd, int dirfd, const char *login, off_t size, off_t end)
{
	long messages = -1;

	if ((size = quiet_size(fd, size)) < 0) {
		log_msg("%s/mymailbox: being written by another hand: converted later", login);
		errno = EAGAIN;
		return -1;
	}
	messages = write_converted(fd, size, end, dirfd);
	if (messages < 0 || renameat(dirfd, "mymailbox.new", dirfd, "mymailbox") < 0) {
		log_msg("%s/mymailbox: cannot convert to records: %s", login, strerror(errno));
		if (unlinkat(dirfd, "mymailbox.new", 0) < 0 && errno != ENOENT)
			log_msg("%s/mymailbox.new: cannot remove: %s", login, strerror(errno));
		return -1;
	}
	log_msg("%s/mymailbox: written by another hand: converted to records "
		"(%ld messages in %lld bytes)", login, messages, (long long)(size - end));
	carry_over(fd, dirfd, login, size);
	if (fsync(dirfd) < 0) {
		log_msg("%s/mymailbox: converted, but the fsync of its directory failed (%s): "
			"the conversion may not survive a crash", login, strerror(errno));
		return 1;
	}
	return 0;
}

/* <<< shared: mailbox */

/* ---------------------------------------------------------------- authentication (SASL) */

/* >>> shared: sasl - passwords and SASL (RFC 4422): CRAM-MD5, PLAIN, LOGIN against user.txt (smtpmail.c, popserver.c) */

/* The mechanisms, strongest first, as the servers offer them. */
enum mech { MECH_CRAM_MD5, MECH_PLAIN, MECH_LOGIN, MECH_COUNT };

static const char *const mech_names[MECH_COUNT] = { "CRAM-MD5", "PLAIN", "LOGIN" };

/* How an AUTH exchange ended. */
enum auth_result {
	AUTH_OK,		/* the account is in sasl.acct */
	AUTH_WRONG,		/* no such account, a wrong password, a malformed answer */
	AUTH_UNASKED,		/* an initial response that CRAM-MD5 does not take */
	AUTH_CANCELLED,		/* the client sent "*" (RFC 4954 4, RFC 5034 4) */
	AUTH_BAD_BASE64,	/* a response that is not base64 */
	AUTH_NO_ACCOUNTS,	/* user.txt cannot be read */
	AUTH_TOO_LONG,		/* a response line over AUTH_LINE_MAX */
	AUTH_TIMEOUT,		/* no response within the timeout */
	AUTH_LOST		/* the connection closed */
};

/* One AUTH exchange: what the server gives it, and what it finds out. */
struct sasl {
	struct conn *c;
	const char *prompt;	/* before a challenge: "334 " (SMTP), "+ " (POP3) */
	const char *userfile;
	const char *host;	/* in the CRAM-MD5 challenge */
	char name[LOGIN_MAX + 1];	/* the login given, for the log ("" if none fits) */
	struct account acct;	/* AUTH_OK: the account */
};

/* secret_equal - compare in time independent of where a and b differ */
static int secret_equal(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	unsigned char diff = na != nb;

	for (size_t i = 0; i < na; i++)
		diff |= (unsigned char)a[i] ^ (unsigned char)(nb ? b[i % nb] : 0);
	return diff == 0;
}

/* auth_pause - before answering a wrong password: the session's pause
 * (pause_ms, which the parent set from the address's penalty) doubled for
 * each wrong one the session already had (Dovecot's auth penalty); a
 * signal does not cut it short */
static void auth_pause(int pause_ms, int failures)
{
	int ms = penalty_delay_ms(pause_ms, failures);
	struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

/* make_stamp - a string no other session gets: "<pid.clock@host>" with the
 * clock in microseconds (RFC 1939 7 APOP's timestamp, RFC 2195's
 * challenge), so that no answer seen on the wire can be replayed */
static void make_stamp(char *out, size_t cap, const char *host)
{
	struct timespec ts = { 0, 0 };

	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		ts.tv_sec = time(NULL);
	(void)snprintf(out, cap, "<%ld.%lld%06ld@%.255s>", (long)getpid(),
		       (long long)ts.tv_sec, ts.tv_nsec / 1000, host);	/* cap is STAMP_MAX */
}

/* mech_find - the mechanism called name (any case), or -1 */
static int mech_find(const char *name)
{
	for (int m = 0; m < MECH_COUNT; m++)
		if (strcasecmp(name, mech_names[m]) == 0)
			return m;
	return -1;
}

/* secret_start - where the secret of a command line starts (its length if
 * it holds none): after "PASS", after APOP's name, after AUTH's mechanism.
 * A line is matched by its first four letters after any blanks, in any
 * case, so " pass\tx" counts too. */
static size_t secret_start(const char *line)
{
	static const struct { const char *verb; int keep; } verbs[] = {
		{ "PASS", 0 }, { "APOP", 1 }, { "AUTH", 1 }
	};
	size_t len = strlen(line), lead = strspn(line, " \t");

	/* Blanks before the verb: a server that skips them still reads the
	 * secret, so the log must hide it just the same. */
	for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++) {
		size_t at = lead + 4;

		if (strncasecmp(line + lead, verbs[v].verb, 4) != 0)
			continue;
		for (int k = 0; k < verbs[v].keep; k++) {
			at += strspn(line + at, " \t");
			at += strcspn(line + at, " \t");
		}
		return line[at + strspn(line + at, " \t")] ? at : len;
	}
	return len;
}

/* log_client - with -v, log a client's command line, but never a secret:
 * "PASS ****", "APOP alice ****", "AUTH PLAIN ****" */
static void log_client(const char *line)
{
	size_t keep = secret_start(line);

	if (!verbose)
		return;
	if (line[keep])
		log_msg("< %.*s ****", (int)keep, line);
	else
		log_msg("< %s", line);
}

/* account_of - the account called name, as the checks want it: 1 found;
 * else 0 not, -1 user.txt unreadable, and *acct holds a made-up password,
 * so that checking it costs the same time (an answer must not tell
 * whether the account exists) */
static int account_of(const char *userfile, const char *name, struct account *acct)
{
	int found = login_valid(name) ? user_lookup(userfile, name, acct) : 0;

	if (found != 1)
		(void)snprintf(acct->password, sizeof acct->password, "not an account");
	return found;
}

/* password_check - does password open the account called name? 1 yes
 * (*acct filled), 0 no, -1 user.txt unreadable */
static int password_check(const char *userfile, const char *name, const char *password,
			  struct account *acct)
{
	int found = account_of(userfile, name, acct);
	int same = secret_equal(password, acct->password);

	return found <= 0 ? found : same;
}

/* digest_equal - is given (hex, any case) digest d? In constant time. */
static int digest_equal(const unsigned char d[16], const char *given)
{
	char want[33], got[33];
	size_t n = strlen(given);
	int same;

	md5_hex(d, want);
	for (size_t i = 0; i < 32; i++)
		got[i] = i < n ? (char)tolower((unsigned char)given[i]) : '\0';
	got[32] = '\0';
	same = n == 32 && secret_equal(got, want);
	secret_wipe(want, sizeof want);
	return same;
}

/* cram_check - RFC 2195: is the response "name digest" the HMAC-MD5 of the
 * challenge keyed with name's password? 1 yes (*acct, name[] filled), 0
 * no, -1 user.txt unreadable */
static int cram_check(const char *userfile, const char *response, const char *challenge,
		      char name[LOGIN_MAX + 1], struct account *acct)
{
	const char *space = strrchr(response, ' ');
	size_t n = space ? (size_t)(space - response) : 0;
	unsigned char d[16];
	int found, same;

	name[0] = '\0';
	if (n > 0 && n <= LOGIN_MAX) {
		memcpy(name, response, n);
		name[n] = '\0';
	}
	found = account_of(userfile, name, acct);
	hmac_md5(acct->password, strlen(acct->password), challenge, strlen(challenge), d);
	same = space && digest_equal(d, space + 1);
	secret_wipe(d, sizeof d);
	return found <= 0 ? found : same;
}

/* plain_check - RFC 4616: is msg[len] "authzid NUL name NUL password" for
 * an account? The authzid must be empty or the name itself: nobody acts
 * for another. 1 yes (*acct, name[] filled), 0 no, -1 unreadable */
static int plain_check(const char *userfile, const unsigned char *msg, size_t len,
		       char name[LOGIN_MAX + 1], struct account *acct)
{
	const unsigned char *nul1 = memchr(msg, '\0', len), *nul2;
	char password[PASSWORD_MAX + 1] = "";
	size_t zlen, nlen, plen;
	int ok;

	name[0] = '\0';
	if (!nul1 || !(nul2 = memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - msg))))
		return 0;	/* malformed: no */
	zlen = (size_t)(nul1 - msg);
	nlen = (size_t)(nul2 - nul1 - 1);
	plen = len - (size_t)(nul2 + 1 - msg);
	if (nlen <= LOGIN_MAX) {
		memcpy(name, nul1 + 1, nlen);
		name[nlen] = '\0';
	}
	if (plen <= PASSWORD_MAX && !memchr(nul2 + 1, '\0', plen))
		memcpy(password, nul2 + 1, plen);
	password[plen <= PASSWORD_MAX ? plen : 0] = '\0';
	ok = password_check(userfile, name, password, acct);
	secret_wipe(password, sizeof password);
	if (ok > 0 && zlen > 0 && (zlen != nlen || strncasecmp((const char *)msg, name, zlen)))
		ok = 0;		/* authorization as someone else */
	return ok;
}

/* sasl_decode - a response as sent (base64, "=" for an empty one, RFC
 * 4954 4) into out[cap]: AUTH_OK, AUTH_CANCELLED for "*", or
 * AUTH_BAD_BASE64 */
static enum auth_result sasl_decode(const char *text, unsigned char *out, size_t cap,
				    size_t *n)
{
	if (strcmp(text, "*") == 0)
		return AUTH_CANCELLED;
	if (strcmp(text, "=") == 0) {
		*n = 0;
		return AUTH_OK;
	}
	return base64_decode(text, strlen(text), out, cap - 1, n) < 0 ? AUTH_BAD_BASE64
	       : AUTH_OK;
}

/*
 * sasl_ask - send a challenge (n bytes, sent in base64 after the prompt),
 * read the client's response line within the timeout and decode it into
 * out[cap], NUL-terminated. -v logs the challenge but not the response;
 * the response's bytes are wiped from the line buffer and the input.
 */
static enum auth_result sasl_ask(struct sasl *a, const char *challenge, size_t n,
				 unsigned char *out, size_t cap, size_t *len)
{
	char line[AUTH_LINE_MAX], text[STAMP_MAX * 2];
	enum auth_result r;
	enum io_status st;
	size_t got;
	int crlf;

	(void)base64_encode(challenge, n, text, sizeof text);	/* fits: n < STAMP_MAX */
	if (verbose)
		log_msg("> %s%s", a->prompt, text);
	if (conn_write(a->c, a->prompt, strlen(a->prompt)) < 0
	    || conn_write(a->c, text, strlen(text)) < 0 || conn_write(a->c, "\r\n", 2) < 0)
		return AUTH_LOST;
	a->c->deadline_ms = now_ms() + a->c->timeout_ms;
	st = conn_read_line(a->c, line, sizeof line, &got, &crlf);
	a->c->deadline_ms = 0;
	if (verbose && st == IO_OK)
		log_msg("< ****");
	r = st == IO_OK ? sasl_decode(line, out, cap, len) : st == IO_TOO_LONG ? AUTH_TOO_LONG
	    : st == IO_TIMEOUT ? AUTH_TIMEOUT : AUTH_LOST;
	if (r == AUTH_OK)
		out[*len] = '\0';
	secret_wipe(line, sizeof line);
	secret_wipe(a->c->in, a->c->in_pos);	/* consumed: the response itself */
	return r;
}

/* sasl_first - the initial response given with AUTH, or asked for with an
 * empty challenge (RFC 4954 4, RFC 5034 4) */
static enum auth_result sasl_first(struct sasl *a, const char *initial, unsigned char *out,
				   size_t cap, size_t *len)
{
	enum auth_result r;

	if (!initial)
		return sasl_ask(a, "", 0, out, cap, len);
	if ((r = sasl_decode(initial, out, cap, len)) == AUTH_OK)
		out[*len] = '\0';
	return r;
}

/* result_of - an AUTH_OK, AUTH_WRONG or AUTH_NO_ACCOUNTS from a check */
static enum auth_result result_of(int checked)
{
	return checked > 0 ? AUTH_OK : checked == 0 ? AUTH_WRONG : AUTH_NO_ACCOUNTS;
}

/* auth_cram - CRAM-MD5 (RFC 2195): the challenge is a fresh stamp; the
 * password never crosses the wire, only a keyed digest of the challenge */
static enum auth_result auth_cram(struct sasl *a, unsigned char *buf, size_t cap)
{
	char challenge[STAMP_MAX];
	enum auth_result r;
	size_t n;

	make_stamp(challenge, sizeof challenge, a->host);
	r = sasl_ask(a, challenge, strlen(challenge), buf, cap, &n);
	if (r != AUTH_OK)
		return r;
	if (memchr(buf, '\0', n))
		return AUTH_WRONG;	/* "name digest" holds no NUL */
	return result_of(cram_check(a->userfile, (char *)buf, challenge, a->name, &a->acct));
}

/* auth_login - LOGIN (draft-murchison-sasl-login): the name, then the
 * password, each asked for with its prompt (the first may come with AUTH) */
static enum auth_result auth_login(struct sasl *a, const char *initial, unsigned char *buf,
				   size_t cap)
{
	enum auth_result r;
	size_t n;

	r = initial ? sasl_first(a, initial, buf, cap, &n)
	    : sasl_ask(a, "Username:", 9, buf, cap, &n);
	if (r != AUTH_OK)
		return r;
	a->name[0] = '\0';
	if (n <= LOGIN_MAX && !memchr(buf, '\0', n))
		memcpy(a->name, buf, n + 1);
	if ((r = sasl_ask(a, "Password:", 9, buf, cap, &n)) != AUTH_OK)
		return r;
	if (memchr(buf, '\0', n) || n > PASSWORD_MAX)
		buf[0] = '\0';	/* cannot be anyone's password */
	return result_of(password_check(a->userfile, a->name, (char *)buf, &a->acct));
}

/*
 * sasl_auth - the exchange of AUTH mechanism [initial-response] (RFC 4954,
 * RFC 5034), up to the outcome, which the caller answers. initial is NULL
 * without one; CRAM-MD5 takes none, for the server speaks first.
 * Every secret of the exchange is wiped before it returns.
 */
static enum auth_result sasl_auth(struct sasl *a, enum mech mech, const char *initial)
{
	unsigned char buf[AUTH_LINE_MAX];
	enum auth_result r;
	size_t n;

	a->name[0] = '\0';
	if (mech == MECH_CRAM_MD5)
		r = initial ? AUTH_UNASKED : auth_cram(a, buf, sizeof buf);
	else if (mech == MECH_LOGIN)
		r = auth_login(a, initial, buf, sizeof buf);
	else if ((r = sasl_first(a, initial, buf, sizeof buf, &n)) == AUTH_OK)
		r = result_of(plain_check(a->userfile, buf, n, a->name, &a->acct));
	secret_wipe(buf, sizeof buf);
	if (r != AUTH_OK)
		secret_wipe(&a->acct, sizeof a->acct);
	return r;
}

/* forget_secret - after a command line that held a secret (secret_start):
 * wipe it from the line buffer and from the input it was read from */
static void forget_secret(struct conn *c, char *line, size_t cap)
{
	secret_wipe(line, cap);
	secret_wipe(c->in, c->in_pos);	/* consumed input only */
}

/* <<< shared: sasl */

/* ---------------------------------------------------------------- file helpers */

/*
 * copy_range - copy bytes [off, off + len) of the mailbox file in to out,
 * as they are. At QUIT out is the new mailbox file and peer is NULL. For
 * RETR out is the client's socket, peer is its connection, and the replies
 * buffered there go out first, so that they precede the mail. On Linux
 * sendfile copies without a pass through user space; where it cannot, a
 * read-write loop does the rest. The socket is non-blocking, so when it is
 * full the copy waits for it, but no longer than the session's timeout.
 */
static int copy_range(int in, off_t off, off_t len, int out, struct conn *peer)
{
	char buf[COPY_CHUNK];

	if (peer && conn_flush(peer) < 0)
		return -1;
#ifdef __linux__
	while (len > 0) {
		ssize_t k = sendfile(out, in, &off, len < SSIZE_MAX ? (size_t)len : SSIZE_MAX);

		if (k > 0)
			len -= k;
		else if (k < 0 && errno == EINTR)
			continue;
		else if (k < 0 && peer && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (conn_wait(peer, POLLOUT) != IO_OK)
				return -1;
		} else if (k < 0 && (errno == EINVAL || errno == ENOSYS))
			break;	/* not for this pair of files: copy by hand */
		else
			return -1;	/* k == 0: the file is shorter than indexed */
	}
#endif
	while (len > 0) {
		size_t want = len < (off_t)sizeof buf ? (size_t)len : sizeof buf;
		ssize_t k = pread_full(in, buf, want, off);

		if (k <= 0 || (peer ? conn_write(peer, buf, (size_t)k)
			       : write_all(out, buf, (size_t)k)) < 0)
			return -1;
		off += k;
		len -= k;
	}
	return 0;
}

/* ---------------------------------------------------------------- replies */

/*
 * vreply - format one reply line and queue it with its CRLF. A reply that
 * would pass RFC 2449's 512 octets is cut short rather than split, so the
 * client still reads one line; with -v it is logged too.
 */
static void vreply(struct session *s, const char *fmt, va_list ap)
{
	char line[REPLY_MAX];
	int n = vsnprintf(line, sizeof line - 2, fmt, ap);

	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof line - 3)
		n = sizeof line - 3;	/* truncated: still one line */
	if (verbose)
		log_msg("> %s", line);
	line[n++] = '\r';
	line[n++] = '\n';
	conn_write(s->c, line, (size_t)n);
}

/* reply - queue one reply line (RFC 1939 section 3: +OK or -ERR, CRLF) */
static void reply(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreply(s, fmt, ap);
	va_end(ap);
}

/* The names -v logs for the states, from the same list as the enum. */
static const char *const state_names[] = { POP_STATES(STATE_NAME) };

/* set_state - change the protocol state; the one place that does, so
 * that -v logs every transition */
static void set_state(struct session *s, enum state new)
{
	if (verbose)
		log_msg("state %s -> %s", state_names[s->state], state_names[new]);
	s->state = new;
}

/*
 * bad - answer a bad command with its -ERR. A client that keeps sending
 * bad commands is likely not a POP3 client at all: past the limit (lower
 * before login) it gets "too many errors" instead, and the session ends.
 */
static void bad(struct session *s, const char *fmt, ...)
{
	int limit = s->state == ST_TRANSACTION ? ERRORS_MAX : AUTH_ERRORS_MAX;
	va_list ap;

	if (++s->errors >= limit) {
		reply(s, "-ERR too many errors");
		log_msg("%s: too many errors, closing", s->peer);
		set_state(s, ST_CLOSED);
		return;
	}
	va_start(ap, fmt);
	vreply(s, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- parsers */

/*
 * parse_number - read a decimal number: digits only, no sign, no spaces
 * (RFC 1939 section 3: message numbers are decimal). It returns 0 with
 * the value in *out, -1 when s is not a number, and -2 when the number is
 * too big for an unsigned long, which callers may treat as "very many".
 */
static int parse_number(const char *s, unsigned long *out)
{
	unsigned long v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (ULONG_MAX - (unsigned long)(*s - '0')) / 10)
			return -2;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	*out = v;
	return 0;
}

/* split_args - cut rest (the line after the verb) into words; rest itself
 * is kept whole for PASS, whose password may hold spaces */
static void split_args(const char *rest, struct args *a)
{
	char *save = NULL, *w;

	a->argc = 0;
	a->rest = rest;
	snprintf(a->words, sizeof a->words, "%s", rest);	/* rest is shorter */
	for (w = strtok_r(a->words, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
		if (a->argc < ARGS_MAX)
			a->argv[a->argc] = w;
		if (a->argc < INT_MAX)
			a->argc++;
	}
}

/* msg_length - the bytes of message i's record, without its "." CRLF line */
static off_t msg_length(const struct mbox_index *ix, size_t i)
{
	return ix->start[i + 1] - ix->start[i] - 3;
}

/* msg_size - message i's POP3 size: its record's length less the stuffed dots */
static off_t msg_size(const struct mbox_index *ix, size_t i)
{
	return msg_length(ix, i) - (off_t)(ix->dots[i] & ~MSG_DELETED);
}

/* msg_deleted - 1 if DELE marked message i */
static int msg_deleted(const struct mbox_index *ix, size_t i)
{
	return (ix->dots[i] & MSG_DELETED) != 0;
}

/*
 * msg_arg - the number of the message that arg names. A number that is not
 * one, names no message or names a deleted one gets its -ERR here, and 0
 * back.
 */
static size_t msg_arg(struct session *s, const char *arg)
{
	unsigned long n = 0;
	int r = parse_number(arg, &n);

	if (r == -1) {
		bad(s, "-ERR invalid message number");
		return 0;
	}
	if (r < 0 || n == 0 || n > s->ix.count) {
		bad(s, "-ERR no such message");
		return 0;
	}
	if (msg_deleted(&s->ix, n - 1)) {
		bad(s, "-ERR message %lu already deleted", n);
		return 0;
	}
	return (size_t)n;
}

/*
 * lines_arg - TOP's line count. A count too big for an unsigned long is
 * more lines than any message has, so it means the whole message.
 */
static int lines_arg(struct session *s, const char *arg, unsigned long *lines)
{
	switch (parse_number(arg, lines)) {
	case -1:
		bad(s, "-ERR invalid number of lines");
		return -1;
	case -2:
		*lines = ULONG_MAX;
	}
	return 0;
}

/*
 * check_args - hold the words after a verb to the row's rule: their count
 * first, then the message number and line count the rule asks for. A
 * violation gets its -ERR here and a non-zero return, so that no handler
 * has to look at a word it was not promised.
 */
static int check_args(struct session *s, enum arg_rule rule, struct args *a)
{
	/* The word counts of each rule, and whether its first word is a message. */
	static const struct { int min, max, msg; } rules[] = {
		[ARGS_NONE] = { 0, 0, 0 },	[ARGS_NAME] = { 1, 1, 0 },
		[ARGS_LINE] = { 1, WORDS_UNLIMITED, 0 },	[ARGS_MSG] = { 1, 1, 1 },
		[ARGS_MSG_OPT] = { 0, 1, 1 },	[ARGS_MSG_LINES] = { 2, 2, 1 },
		[ARGS_PAIR] = { 2, 2, 0 },	[ARGS_AUTH] = { 1, 2, 0 },
		[ARGS_UNCHECKED] = { 0, WORDS_UNLIMITED, 0 }
	};

	a->msg = 0;
	a->lines = 0;
	if (a->argc < rules[rule].min) {
		bad(s, "-ERR missing argument");
		return -1;
	}
	if (a->argc > rules[rule].max) {
		bad(s, "-ERR too many arguments");
		return -1;
	}
	if (rules[rule].msg && a->argc > 0 && !(a->msg = msg_arg(s, a->argv[0])))
		return -1;
	if (rule == ARGS_MSG_LINES)
		return lines_arg(s, a->argv[1], &a->lines);
	return 0;
}

/* totals - how many messages are not marked deleted, and their octets */
static size_t totals(const struct session *s, long long *octets)
{
	size_t n = 0;

	*octets = 0;
	for (size_t i = 0; i < s->ix.count; i++)
		if (!msg_deleted(&s->ix, i)) {
			n++;
			*octets += msg_size(&s->ix, i);
		}
	return n;
}

/* ---------------------------------------------------------------- the mailbox index */

/* FNV-1a, 64 bits: the hash behind the UIDLs (DESIGN.md "POP3") */
#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x100000001b3)

/* fnv1a - continue hash h over n bytes */
static uint64_t fnv1a(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= FNV_PRIME;
	}
	return h;
}

/* names_smtpmail - 1 if the n bytes at p hold " (smtpmail) with ", as the
 * Received line of smtpmail does. It looks for the rare '(' with memchr,
 * which keeps it fast. */
static int names_smtpmail(const char *p, size_t n)
{
	static const char name[] = " (smtpmail) with ";
	const char *q = p, *end = p + n;

	while ((q = memchr(q, '(', (size_t)(end - q))) != NULL) {
		if (q > p && (size_t)(end - q) >= sizeof name - 2
		    && memcmp(q - 1, name, sizeof name - 1) == 0)
			return 1;
		q++;
	}
	return 0;
}

/*
 * trace_len - the length of the trace lines that smtpmail puts at the
 * start of a record (DESIGN.md "POP3"). They are a "Return-Path: <" line,
 * then a "Received: from " field that names smtpmail, with its
 * continuation lines (which start with a tab or a space). Together they
 * must lie within TRACE_WINDOW bytes. p[0, n) is the record's start, or
 * all of the record if whole is set. It returns the length, 0 when the
 * record has no such trace, or -1 when n bytes cannot tell yet (which
 * happens only if !whole and n < TRACE_WINDOW).
 */
static long trace_len(const char *p, size_t n, int whole)
{
	static const char first[] = "Return-Path: <", second[] = "Received: from ";
	long more = whole || n >= TRACE_WINDOW ? 0 : -1;	/* "cannot tell" */
	const char *end = p + n, *field, *lf = memchr(p, '\n', n);
	size_t rest;

	if (memcmp(p, first, n < 14 ? n : 14) != 0)
		return 0;
	if (!lf)
		return more;
	field = lf + 1;
	rest = (size_t)(end - field);
	if (memcmp(field, second, rest < 15 ? rest : 15) != 0)
		return 0;
	for (lf = field; (lf = memchr(lf, '\n', (size_t)(end - lf))) != NULL; lf++) {
		if (lf + 1 == end && !whole)
			return more;	/* the next line may go on with the field */
		if (lf + 1 == end || (lf[1] != '\t' && lf[1] != ' '))
			return lf + 1 - p < TRACE_WINDOW
			       && names_smtpmail(field, (size_t)(lf - field)) ? lf + 1 - p : 0;
	}
	return more;
}

/* How far the UIDL of the record being scanned has got (uidl_feed). */
enum uidl_mode {
	UIDL_HEAD,		/* its first bytes are kept until trace_len can tell */
	UIDL_ALL,		/* no trace: every byte of it is hashed */
	UIDL_TRACE		/* its trace is hashed; only its length is to come */
};

/* The scanner's state between chunks: the record being read. */
struct scan {
	off_t rec_start;	/* file offset of the current record */
	off_t stuffed;		/* its stuffed dots so far */
	uint64_t hash;		/* its hash so far */
	int line_start;		/* the next chunk starts at a line start */
	enum uidl_mode mode;
	size_t head_len;	/* bytes in head */
	char head[TRACE_WINDOW];	/* its first bytes, while mode is UIDL_HEAD */
};

/* scan_start - the state for a scan from offset from, a record start */
static void scan_start(struct scan *sc, off_t from)
{
	sc->rec_start = from;
	sc->stuffed = 0;
	sc->hash = FNV_OFFSET;
	sc->line_start = 1;
	sc->mode = UIDL_HEAD;
	sc->head_len = 0;
}

/* uidl_decide - choose how the record's UIDL is hashed, once trace_len
 * can tell from p[0, n). p holds the record's first bytes, or all of it
 * if whole is set. */
static void uidl_decide(struct scan *sc, const char *p, size_t n, int whole)
{
	long t = trace_len(p, n, whole);

	if (t < 0)
		return;
	sc->mode = t > 0 ? UIDL_TRACE : UIDL_ALL;
	sc->hash = fnv1a(FNV_OFFSET, p, t > 0 ? (size_t)t : n);
}

/*
 * uidl_feed - hash the next n bytes of the current record; last says they
 * are its last ones. When a record starts with smtpmail's trace, only its
 * first bytes are looked at. Those bytes are kept in head only when a
 * chunk ends before trace_len can tell where the trace ends.
 */
static void uidl_feed(struct scan *sc, const char *p, size_t n, int last)
{
	size_t k;

	if (sc->mode == UIDL_HEAD && sc->head_len == 0) {
		k = n < TRACE_WINDOW ? n : TRACE_WINDOW;
		uidl_decide(sc, p, k, last && k == n);
		if (sc->mode == UIDL_HEAD) {
			memcpy(sc->head, p, k);
			sc->head_len = k;
		}
	} else if (sc->mode == UIDL_HEAD) {
		k = n < TRACE_WINDOW - sc->head_len ? n : TRACE_WINDOW - sc->head_len;
		memcpy(sc->head + sc->head_len, p, k);
		sc->head_len += k;
		uidl_decide(sc, sc->head, sc->head_len, last && k == n);
	} else {
		k = 0;
	}
	if (sc->mode == UIDL_ALL)
		sc->hash = fnv1a(sc->hash, p + k, n - k);
}

/* uidl_end - the UIDL of the record that ends at end, before its "." line.
 * It is the hash of the record's trace and its length in decimal, or of
 * all its bytes when it has no trace. */
static uint64_t uidl_end(struct scan *sc, off_t end)
{
	unsigned long long len = (unsigned long long)(end - sc->rec_start);
	char digits[24];
	size_t k = sizeof digits;

	if (sc->mode == UIDL_HEAD)	/* fed nothing yet (an empty record) */
		uidl_decide(sc, sc->head, sc->head_len, 1);
	if (sc->mode != UIDL_TRACE)
		return sc->hash;
	do	/* by hand: snprintf cost 5% of a login */
		digits[--k] = (char)('0' + len % 10);
	while ((len /= 10) > 0);
	return fnv1a(sc->hash, digits + k, sizeof digits - k);
}

/* index_grow - room in the index for twice as many messages (256 at first) */
static int index_grow(struct mbox_index *ix)
{
	size_t cap = ix->cap ? ix->cap * 2 : 256;
	off_t *start;
	uint64_t *uidl;
	uint32_t *dots;

	if (cap >= SIZE_MAX / sizeof *start) {
		errno = ENOMEM;
		return -1;
	}
	if (!(start = realloc(ix->start, (cap + 1) * sizeof *start)))
		return -1;
	ix->start = start;
	if (!(uidl = realloc(ix->uidl, cap * sizeof *uidl)))
		return -1;
	ix->uidl = uidl;
	if (!(dots = realloc(ix->dots, cap * sizeof *dots)))
		return -1;
	ix->dots = dots;
	ix->cap = cap;	/* only now: each array has room for cap */
	return 0;
}

/* index_free - give back the index's memory */
static void index_free(struct mbox_index *ix)
{
	free(ix->start);
	free(ix->uidl);
	free(ix->dots);
	ix->start = NULL;
	ix->uidl = NULL;
	ix->dots = NULL;
	ix->count = ix->cap = 0;
}

/* index_add - append the record that ends (before its "." line) at end.
 * A record with 2^31 stuffed dots or more (6 GiB of dot lines), or a
 * 2^32nd message, does not fit: EFBIG. */
static int index_add(struct mbox_index *ix, struct scan *sc, off_t end)
{
	uint64_t uidl = uidl_end(sc, end);

	if (sc->stuffed >= (off_t)MSG_DELETED || ix->count >= UINT32_MAX) {
		errno = EFBIG;
		return -1;
	}
	if (ix->count == ix->cap && index_grow(ix) < 0)
		return -1;
	ix->start[ix->count] = sc->rec_start;
	ix->start[ix->count + 1] = end + 3;
	ix->uidl[ix->count] = uidl;
	ix->dots[ix->count] = (uint32_t)sc->stuffed;
	ix->count++;
	return 0;
}

/* next_dot_line - index of the next line start >= from holding a '.' (or
 * n). It hops from '.' to '.', which most lines lack (base64 has none), so
 * it needs fewer memchr calls than a hop from line to line would. */
static size_t next_dot_line(const char *buf, size_t n, size_t from, int line_start)
{
	for (size_t i = from; i < n; i++) {
		const char *dot = memchr(buf + i, '.', n - i);

		if (!dot)
			break;
		i = (size_t)(dot - buf);
		if (i == 0 ? line_start : buf[i - 1] == '\n')
			return i;
	}
	return n;
}

/*
 * scan_chunk - find the record ends in buf[0, n), which lies at file
 * offset base. A record ends at a line that is exactly "." CRLF (DESIGN.md
 * "Record format"), and any other line that starts with '.' is stuffed.
 * Only lines that start with '.' matter, so the scan hops from dot to dot
 * with memchr. The bytes also go to uidl_feed, which hashes a record of
 * smtpmail's only as far as its trace lines.
 *
 * It returns how many bytes it consumed, or -1 when out of memory. That is
 * all of them, except when a '.' line is cut by the chunk's end and this
 * is not the last chunk: then it stops before that line, and the caller
 * reads it again with the next chunk. *end is set to the end of the last
 * complete record.
 */
static ssize_t scan_chunk(const char *buf, size_t n, off_t base, int last,
			  struct scan *sc, struct mbox_index *ix, off_t *end)
{
	size_t j = 0, hashed = 0, used = n;

	while ((j = next_dot_line(buf, n, j, sc->line_start)) < n) {
		if (j + 2 >= n) {
			if (!last)
				used = j;	/* decide it with the next chunk */
			break;
		}
		if (buf[j + 1] != '\r' || buf[j + 2] != '\n') {
			sc->stuffed++;
			j++;
			continue;
		}
		uidl_feed(sc, buf + hashed, j - hashed, 1);
		if (index_add(ix, sc, base + (off_t)j) < 0)
			return -1;
		j += 3;
		hashed = j;
		*end = base + (off_t)j;
		scan_start(sc, *end);
	}
	uidl_feed(sc, buf + hashed, used > hashed ? used - hashed : 0, 0);
	if (used > 0)
		sc->line_start = buf[used - 1] == '\n';
	return (ssize_t)used;
}

/*
 * scan_records - index the complete records of [from, to) of fd. It reads
 * SCAN_CHUNK bytes at a time, in one pass, so its memory stays bounded.
 * *end gets the end of the last complete record, or from if there is none;
 * a partial tail is not indexed.
 */
static int scan_records(int fd, off_t from, off_t to, struct mbox_index *ix, off_t *end)
{
	struct scan sc;
	char *buf = malloc(SCAN_CHUNK);
	off_t off = from;
	int rc = 0;

	*end = from;
	if (!buf)
		return -1;
	scan_start(&sc, from);
	while (off < to && rc == 0) {
		size_t want = to - off < SCAN_CHUNK ? (size_t)(to - off) : SCAN_CHUNK;
		ssize_t n = pread_full(fd, buf, want, off);
		ssize_t used;

		if (n <= 0) {
			rc = n < 0 ? -1 : 0;
			break;	/* n == 0: shorter than its size said */
		}
		used = scan_chunk(buf, (size_t)n, off, (size_t)n < want || off + n == to,
				  &sc, ix, end);
		if (used < 0)
			rc = -1;
		if (used <= 0)
			break;	/* 0 only on the last chunk: never loop in place */
		off += used;
	}
	free(buf);
	return rc;
}

/* The hashes uidl_order sorts by: qsort passes no context of its own. */
static const uint64_t *uidl_keys;

/* uidl_order - message numbers by hash, then by place in the file */
static int uidl_order(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	if (uidl_keys[x] != uidl_keys[y])
		return uidl_keys[x] < uidl_keys[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

/*
 * uidl_distinct - 1 if no two messages share a hash, 0 if some do, -1 when
 * out of memory. It uses an open-addressing table of 2n + 1 message
 * numbers (8 bytes a message), which takes linear time where sorting
 * would take n log n.
 */
static int uidl_distinct(const struct mbox_index *ix)
{
	size_t slots = 2 * ix->count + 1;
	uint32_t *t = calloc(slots, sizeof *t);	/* message number + 1; 0: free */
	int distinct = 1;

	if (!t)
		return -1;
	for (size_t i = 0; i < ix->count && distinct; i++) {
		size_t at = (size_t)(ix->uidl[i] % slots);

		while (t[at] != 0 && ix->uidl[t[at] - 1] != ix->uidl[i])
			at = at + 1 < slots ? at + 1 : 0;
		distinct = t[at] == 0;
		t[at] = (uint32_t)i + 1;
	}
	free(t);
	return distinct;
}

/*
 * uidl_unique - make every unique-id name one message. RFC 1939 section 7
 * says a unique-id names one message of the maildrop and persists across
 * sessions. The id is the record's hash, so byte-identical records would
 * share it. smtpmail never writes two such records, because its Received
 * id differs per delivery; they come only from copying by hand. The k-th
 * copy in file order (k >= 1) therefore gets the hash continued over "#k",
 * and the first copy keeps the plain hash. Deleting an earlier copy hands
 * its id to a later, identical one, which costs a client nothing.
 *
 * The messages are sorted only when uidl_distinct finds equal hashes. The
 * sort is on 4-byte message numbers (index_add keeps them below 2^32), so
 * it needs 4 bytes a message, and as much again inside qsort. It returns
 * -1 only when out of memory.
 */
static int uidl_unique(struct mbox_index *ix)
{
	uint32_t *by;
	uint64_t prev = 0;
	unsigned long k = 0;
	int distinct = uidl_distinct(ix);

	if (distinct != 0)
		return distinct < 0 ? -1 : 0;	/* the common case: nothing to do */
	if (!(by = malloc(ix->count * sizeof *by)))
		return -1;
	for (size_t i = 0; i < ix->count; i++)
		by[i] = (uint32_t)i;
	uidl_keys = ix->uidl;
	qsort(by, ix->count, sizeof *by, uidl_order);
	for (size_t i = 0; i < ix->count; i++) {
		uint64_t h = ix->uidl[by[i]];
		char tag[24];
		int n;

		k = i > 0 && h == prev ? k + 1 : 0;
		prev = h;
		if (k > 0 && (n = snprintf(tag, sizeof tag, "#%lu", k)) > 0)
			ix->uidl[by[i]] = fnv1a(h, tag, (size_t)n);
	}
	free(by);
	return 0;
}

/* ---------------------------------------------------------------- AUTHORIZATION (RFC 1939 sections 4, 7) */

/* cmd_user - remember the name for PASS. An unknown name gets +OK too, so
 * that USER cannot be used to find out which accounts exist. */
static void cmd_user(struct session *s, const struct args *a)
{
	const char *name = a->argv[0];

	s->have_user = 1;
	s->user[0] = '\0';
	if (strlen(name) <= LOGIN_MAX)
		memcpy(s->user, name, strlen(name) + 1);
	reply(s, "+OK send PASS");
}

/*
 * open_records - open mymailbox in the user's directory as open_regular
 * does. A link, a FIFO, or a file with more than one link is refused at
 * once, before anything else is done. It returns NULL on success, or the
 * -ERR reply that says why not. When there is no mailbox yet, which means
 * no mail, it returns NULL with s->mboxfd set to -1.
 */
static const char *open_records(struct session *s, struct stat *st)
{
	s->mboxfd = open_regular(s->dirfd, s->login, "mymailbox", O_RDONLY, st);
	if (s->mboxfd >= 0 || errno == ENOENT)
		return NULL;
	if (errno == ELOOP)
		return "-ERR [SYS/PERM] mailbox is a symbolic link";
	if (errno == EPERM)
		return "-ERR [SYS/PERM] mailbox is not a regular file";
	return "-ERR [SYS/TEMP] cannot open mailbox";
}

/*
 * lock_box - take mailbox_lock on a descriptor of mymailbox opened for the
 * purpose, because the lock needs one open for writing and the session's
 * own is read-only. The file must be the one the session has open. It
 * returns the descriptor, and closing it lets the lock go. It returns -1
 * on failure, with errno ESTALE when mymailbox was replaced during the
 * session.
 */
static int lock_box(struct session *s)
{
	struct stat named, ours;
	int fd = open_regular(s->dirfd, s->login, "mymailbox", O_RDWR, &named), e;

	if (fd < 0)
		return -1;
	if (fstat(s->mboxfd, &ours) < 0)
		e = errno;
	else if (ours.st_dev != named.st_dev || ours.st_ino != named.st_ino)
		e = ESTALE;	/* the name now holds another file */
	else if (mailbox_lock(s->dirfd, s->login, fd) < 0)
		e = errno;
	else
		return fd;
	close_fd(fd, "mailbox");
	errno = e;
	return -1;
}

/*
 * records_end - set *size to the end of the last complete record. A
 * mailbox written by another hand, in the assignment's format (LF or CRLF
 * lines, a "." line between messages), is first converted to records,
 * once, so that every message in it is served. A crashed tail of
 * smtpmail's is left for the next delivery to cut. It returns NULL, or
 * the -ERR reply to send.
 */
static const char *records_end(struct session *s, struct stat *st, off_t *size)
{
	const char *err;
	int shape = mailbox_shape(s->mboxfd, st->st_size, commit_appending(s->lockfd, st), size);

	if (shape == SHAPE_FOREIGN) {
		/* A mailbox converted with a rename that may not be durable
		 * (1) is served all the same: a crash would bring back the
		 * same mail, which is then converted again in the same way. */
		int box = lock_box(s), rc = -1;

		if (box >= 0)
			rc = convert_mailbox(s->mboxfd, s->dirfd, s->login, st->st_size, *size);
		if (box >= 0)
			close_fd(box, "mailbox");	/* lets mailbox_lock go */
		if (rc < 0 && errno == EAGAIN)
			return NULL;	/* being written: the records before it are served */
		if (rc < 0)
			return "-ERR [SYS/TEMP] cannot convert mailbox, try again later";
		if (rc >= 0)
			commit_replaced(s->lockfd, st->st_size, rc > 0);
		close_fd(s->mboxfd, "mailbox");	/* it names the file replaced */
		if ((err = open_records(s, st)) != NULL)
			return err;
		if (s->mboxfd < 0)
			return "-ERR [SYS/TEMP] mailbox gone while converting";
		shape = mailbox_shape(s->mboxfd, st->st_size, -1, size);
	}
	return shape < 0 ? "-ERR [SYS/TEMP] cannot read mailbox, try again later" : NULL;
}

/*
 * durable_end - lower *size, the end of the last complete record, to the
 * end of the last durable one (DESIGN.md "The commit protocol"). Mail that
 * is not durable yet, because smtpmail appended it a moment ago or it was
 * added by hand, is committed first: we hold the commit lock, so the fsync
 * is ours to do. If that fsync fails, or an fsync's process died
 * unsettled, the mail is not shown. It stays announced, and smtpmail's
 * next delivery cuts it back; its senders were told 451. To this session
 * it is then mail that came after the snapshot.
 */
static const char *durable_end(struct session *s, off_t *size)
{
	static const char err[] = "-ERR [SYS/TEMP] cannot read mailbox, try again later";
	struct commit_state h;
	struct stat st;
	off_t covered;

	if (fstat(s->mboxfd, &st) < 0 || commit_load(s->lockfd, s->mboxfd, &st, &h) < 0)
		return err;
	if (h.syncing < 0 && h.durable < *size) {
		if ((covered = commit_announce(s->lockfd, &h)) < 0)
			return err;
		if (fsync(s->mboxfd) < 0)
			log_msg("%s: fsync: %s: showing only the mail that was durable before",
				s->login, strerror(errno));
		else
			(void)commit_synced(s->lockfd, &h, covered);	/* else h as before */
	}
	if (h.durable < *size && (*size = last_record_end(s->mboxfd, h.durable)) < 0)
		return err;
	return NULL;
}

/*
 * snapshot_mailbox - open mymailbox under the commit and write locks, and
 * put in *size the end of its last complete and durable record at that
 * moment (DESIGN.md "POP3 session", step 2). The bytes below that end do
 * not change during the session, so the index stays true. It returns NULL
 * on success, else the -ERR reply that says why not.
 */
static const char *snapshot_mailbox(struct session *s, off_t *size)
{
	const char *err;
	struct stat st;

	*size = 0;
	if (lock_state(s->dirfd, s->lockfd, COMMIT_LOCK_BYTE, 1) < 0)
		return "-ERR [SYS/TEMP] mailbox busy, try again later";
	if (lock_state(s->dirfd, s->lockfd, WRITE_LOCK_BYTE, 1) < 0)
		err = "-ERR [SYS/TEMP] mailbox busy, try again later";
	else {
		err = open_records(s, &st);
		if (!err && s->mboxfd >= 0)
			err = records_end(s, &st, size);
		if (!err && s->mboxfd >= 0)
			err = durable_end(s, size);
		if (lock_byte(s->lockfd, WRITE_LOCK_BYTE, F_UNLCK, 0) < 0 && !err)
			err = "-ERR [SYS/TEMP] cannot unlock mailbox";
	}
	if (lock_byte(s->lockfd, COMMIT_LOCK_BYTE, F_UNLCK, 0) < 0 && !err)
		err = "-ERR [SYS/TEMP] cannot unlock mailbox";
	return err;
}

/*
 * lock_session - open the user's directory and the state file in it, and
 * take the session lock (DESIGN.md "POP3 session", step 1). The directory
 * is never opened through a link (user_dir). It returns NULL on success,
 * or the -ERR reply. The reply is [SYS/PERM] for what only the
 * administrator can mend: a link, or a file of the wrong kind.
 */
static const char *lock_session(struct session *s)
{
	if ((s->dirfd = user_dir(cfg.spool, s->login)) < 0)
		return errno == ELOOP ? "-ERR [SYS/PERM] mailbox directory is a symbolic link"
		       : errno == ENOTDIR ? "-ERR [SYS/PERM] mailbox directory is not a directory"
		       : "-ERR [SYS/TEMP] cannot open mailbox";
	s->lockfd = -1;
	if (lock_state_file(s->dirfd, s->login, &s->lockfd, SESSION_LOCK_BYTE, 0) == 0)
		return NULL;
	if (s->lockfd < 0)
		return errno == ELOOP ? "-ERR [SYS/PERM] state file is a symbolic link"
		       : errno == EPERM ? "-ERR [SYS/PERM] state file is not a regular file"
		       : "-ERR [SYS/TEMP] cannot open mailbox";
	/* RFC 2449 section 8.1.2: IN-USE; RFC 3206 section 4: SYS */
	return errno == EAGAIN || errno == EACCES
	       ? "-ERR [IN-USE] mailbox locked by another session"
	       : "-ERR [SYS/TEMP] cannot lock mailbox";
}

/*
 * login - take the session lock, read the size under the write lock, and
 * index the records (DESIGN.md "POP3 session", steps 1 and 2). It returns
 * 0 on success. On failure it has logged why and sent the -ERR, and it
 * returns -1.
 */
static int login(struct session *s)
{
	const char *err;
	off_t size = 0;

	if (!(err = lock_session(s)) && !(err = snapshot_mailbox(s, &size))
	    && (scan_records(s->mboxfd, 0, size, &s->ix, &s->ix.end) < 0
		|| uidl_unique(&s->ix) < 0))
		err = "-ERR [SYS/TEMP] cannot read mailbox, try again later";
	if (err) {
		log_msg("login %s from %s refused: %s (%s)", s->login, s->peer, err + 5,
			strerror(errno));
		reply(s, "%s", err);
		return -1;
	}
	return 0;
}

/* logged_in - a password, APOP or AUTH proved who the client is, and how
 * says which one, for the log. Lock and index the mailbox, and say what
 * is in it. */
static void logged_in(struct session *s, const struct account *acct, const char *how)
{
	long long octets;
	size_t n;

	memcpy(s->login, acct->login, sizeof s->login);
	if (login(s) < 0) {
		set_state(s, ST_CLOSED);
		return;
	}
	log_msg("login %s from %s%s ok: %zu messages", s->login, s->peer, how, s->ix.count);
	set_state(s, ST_TRANSACTION);
	s->c->hard_end_ms = s->started_ms + cfg.lifetime * 1000LL;	/* -L is met */
	n = totals(s, &octets);
	reply(s, "+OK maildrop has %zu messages (%lld octets)", n, octets);
}

/* login_failed - answer a failed login by PASS, APOP or AUTH for name:
 * a wrong password (checked 0), or user.txt unreadable (-1). The answer
 * comes only after a delay, to slow down guessing, and the third failure
 * ends the session. */
static void login_failed(struct session *s, int checked, const char *name, const char *how)
{
	log_msg("login %s from %s%s failed", name[0] ? name : "?", s->peer, how);
	/* Dovecot's auth penalty: the delay doubles with every wrong password
	 * of this address, in its recent and parallel sessions (the pause the
	 * parent gave this session) and in this one. */
	auth_pause(s->pause_ms, s->auth_failures);
	/* RFC 3206 section 5: AUTH; SYS/TEMP when user.txt is unreadable */
	reply(s, checked < 0 ? "-ERR [SYS/TEMP] cannot read accounts"
	      : "-ERR [AUTH] invalid user name or password");
	if (++s->auth_failures >= AUTH_FAILURES_MAX)
		set_state(s, ST_CLOSED);
}

/* cmd_pass - check the password, then lock and index the mailbox */
static void cmd_pass(struct session *s, const struct args *a)
{
	struct account acct;
	int ok;

	/* RFC 1939 section 7: PASS follows a USER command. */
	if (!s->have_user) {
		bad(s, "-ERR USER first");
		return;
	}
	ok = password_check(cfg.userfile, s->user, a->rest, &acct);
	s->have_user = 0;
	if (ok > 0)
		logged_in(s, &acct, "");
	else
		login_failed(s, ok, s->user, "");
	secret_wipe(&acct, sizeof acct);
}

/* apop_check - whether digest is the MD5 of the greeting's stamp followed
 * by name's password (RFC 1939 section 7). It returns 1 if so, with *acct
 * filled, 0 if not, and -1 when user.txt is unreadable. An unknown name
 * costs the same digest, so that the time taken does not tell whether the
 * account exists. */
static int apop_check(const char *stamp, const char *name, const char *digest,
		      struct account *acct)
{
	int found = account_of(cfg.userfile, name, acct), same;
	unsigned char d[16];
	struct md5 m;

	md5_init(&m);
	md5_update(&m, stamp, strlen(stamp));
	md5_update(&m, acct->password, strlen(acct->password));
	md5_final(&m, d);
	same = digest_equal(d, digest);
	secret_wipe(d, sizeof d);
	return found <= 0 ? found : same;
}

/* cmd_apop - APOP name digest (RFC 1939 section 7): a login in which the
 * password never crosses the wire. Taken after a USER too, as if the USER
 * had not been given. */
static void cmd_apop(struct session *s, const struct args *a)
{
	const char *name = strlen(a->argv[0]) <= LOGIN_MAX ? a->argv[0] : "";
	struct account acct;
	int ok = apop_check(s->stamp, name, a->argv[1], &acct);

	s->have_user = 0;
	if (ok > 0)
		logged_in(s, &acct, " by APOP");
	else
		login_failed(s, ok, name, " by APOP");
	secret_wipe(&acct, sizeof acct);
}

/* auth_end - answer an AUTH exchange that did not log in. A lost or timed
 * out connection ends the session. Anything else gets an -ERR that counts
 * as a bad command, except a cancel, because a client may cancel. */
static void auth_end(struct session *s, enum auth_result r)
{
	if (r == AUTH_TIMEOUT || r == AUTH_LOST) {
		log_msg("%s: %s during AUTH", s->peer,
			r == AUTH_TIMEOUT ? "timeout" : "connection lost");
		set_state(s, ST_CLOSED);
	} else if (r == AUTH_CANCELLED) {
		reply(s, "-ERR authentication cancelled");	/* RFC 5034 4 */
	} else {
		bad(s, r == AUTH_BAD_BASE64 ? "-ERR invalid base64"
		    : r == AUTH_TOO_LONG ? "-ERR line too long"
		    : "-ERR CRAM-MD5 takes no initial response");
	}
}

/* cmd_auth - AUTH mechanism [initial-response] (RFC 5034), for CRAM-MD5 or
 * PLAIN. After the exchange ("+ " before each challenge) it answers as to
 * a PASS, so a wrong password waits and counts the same. */
static void cmd_auth(struct session *s, const struct args *a)
{
	struct sasl x = { .c = s->c, .prompt = "+ ", .userfile = cfg.userfile,
			  .host = cfg.hostname };
	int mech = mech_find(a->argv[0]);
	enum auth_result r;
	char how[32];

	if (mech < 0 || mech == MECH_LOGIN) {	/* CAPA's SASL line */
		bad(s, "-ERR unsupported authentication mechanism");
		return;
	}
	s->have_user = 0;
	r = sasl_auth(&x, (enum mech)mech, a->argc > 1 ? a->argv[1] : NULL);
	(void)snprintf(how, sizeof how, " by AUTH %s", mech_names[mech]);	/* fits */
	if (r == AUTH_OK)
		logged_in(s, &x.acct, how);
	else if (r == AUTH_WRONG || r == AUTH_NO_ACCOUNTS)
		login_failed(s, r == AUTH_WRONG ? 0 : -1, x.name, how);
	else
		auth_end(s, r);
	secret_wipe(&x, sizeof x);
}

/* cmd_capa - the capabilities (RFC 2449 sections 5, 6; RFC 3206 section 6;
 * RFC 5034 section 3: SASL and its mechanisms) */
static void cmd_capa(struct session *s, const struct args *a)
{
	static const char *const caps[] = { "USER", "SASL CRAM-MD5 PLAIN", "TOP", "UIDL",
		"RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION popserver" };

	(void)a;
	reply(s, "+OK capability list follows");
	for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
		reply(s, "%s", caps[i]);
	reply(s, ".");
}

/* ---------------------------------------------------------------- TRANSACTION (RFC 1939 section 5) */

/* cmd_stat - the drop listing: count and octets of the messages not deleted */
static void cmd_stat(struct session *s, const struct args *a)
{
	long long octets;
	size_t n = totals(s, &octets);

	(void)a;
	reply(s, "+OK %zu %lld", n, octets);
}

/* cmd_list - one message's size, or a multi-line list of every message's */
static void cmd_list(struct session *s, const struct args *a)
{
	long long octets;
	size_t n;

	if (a->msg) {
		reply(s, "+OK %zu %lld", a->msg, (long long)msg_size(&s->ix, a->msg - 1));
		return;
	}
	n = totals(s, &octets);
	reply(s, "+OK %zu messages (%lld octets)", n, octets);
	for (size_t i = 0; i < s->ix.count && !s->c->failed; i++)
		if (!msg_deleted(&s->ix, i))
			reply(s, "%zu %lld", i + 1, (long long)msg_size(&s->ix, i));
	reply(s, ".");
}

/*
 * send_copy - queue the len bytes of the mailbox at off behind the reply,
 * read straight into the output buffer (len <= RETR_COPY_MAX, which is at
 * most the buffer's size). A small record then leaves in the same write as
 * its +OK line, and pipelined ones leave together. sendfile would cost a
 * write and a TCP segment for each.
 */
static int send_copy(struct session *s, off_t off, size_t len)
{
	struct conn *c = s->c;
	ssize_t k;

	if (len > sizeof c->out - c->out_len && conn_flush(c) < 0)
		return -1;
	if ((k = pread_full(s->mboxfd, c->out + c->out_len, len, off)) < 0)
		return -1;
	if ((size_t)k != len) {
		errno = EIO;	/* the file is shorter than indexed */
		return -1;
	}
	c->out_len += len;
	return 0;
}

/* cmd_retr - send the record as it is stored. It is already dot-stuffed
 * and ends with its "." CRLF line, so no byte needs changing on the way.
 * A small record is copied behind the +OK line, and a large one goes by
 * sendfile. */
static void cmd_retr(struct session *s, const struct args *a)
{
	size_t i = a->msg - 1;
	const off_t *start = s->ix.start;
	off_t len = start[i + 1] - start[i];

	reply(s, "+OK %lld octets", (long long)msg_size(&s->ix, i));
	if ((len <= RETR_COPY_MAX ? send_copy(s, start[i], (size_t)len)
	     : copy_range(s->mboxfd, start[i], len, s->c->out_fd, s->c)) < 0) {
		log_msg("%s: RETR %zu failed: %s", s->login, a->msg, strerror(errno));
		s->c->failed = 1;	/* the reply is cut: the session cannot go on */
		return;
	}
	s->retrieved++;
}

/* The TOP walker's state: where the headers end, how many lines are left. */
struct top_state {
	int in_body;		/* the blank line after the headers was sent */
	unsigned long left;	/* body lines still to send */
	size_t line_len;	/* bytes of the current line so far */
};

/* top_cut - how much of buf[0, n) TOP sends: the headers, the blank line
 * and t->left body lines. *done is set once all of that is out. */
static size_t top_cut(const char *buf, size_t n, struct top_state *t, int *done)
{
	size_t i = 0;

	*done = t->in_body && t->left == 0;
	while (!*done && i < n) {
		const char *lf = memchr(buf + i, '\n', n - i);

		if (!lf) {
			t->line_len += n - i;
			return n;
		}
		t->line_len += (size_t)(lf - (buf + i)) + 1;
		i = (size_t)(lf - buf) + 1;
		if (!t->in_body)
			t->in_body = t->line_len <= 2;	/* CRLF alone: headers end */
		else
			t->left--;
		t->line_len = 0;
		*done = t->in_body && t->left == 0;
	}
	return i;
}

/* cmd_top - send the headers, the blank line and k body lines (RFC 1939
 * section 7), reading in chunks that start small and double */
static void cmd_top(struct session *s, const struct args *a)
{
	struct top_state t = { 0, a->lines, 0 };
	size_t i = a->msg - 1;
	char buf[COPY_CHUNK];
	size_t chunk = TOP_FIRST_READ;	/* small first: TOP n 0 reads a few KiB */
	off_t off, end;
	int done = 0;

	reply(s, "+OK top of message follows");
	for (off = s->ix.start[i], end = off + msg_length(&s->ix, i);
	     off < end && !done && !s->c->failed;) {
		size_t want = end - off < (off_t)chunk ? (size_t)(end - off) : chunk;
		ssize_t n = pread_full(s->mboxfd, buf, want, off);
		size_t k;

		chunk = chunk < sizeof buf / 2 ? chunk * 2 : sizeof buf;
		if (n <= 0) {
			log_msg("%s: TOP: cannot read mailbox", s->login);
			s->c->failed = 1;	/* the reply is cut: end the session */
			return;
		}
		k = top_cut(buf, (size_t)n, &t, &done);
		conn_write(s->c, buf, k);
		off += (off_t)k;
	}
	reply(s, ".");
}

/* cmd_dele - mark a message deleted; only QUIT removes it (RFC 1939
 * section 5), so a session that ends any other way loses nothing */
static void cmd_dele(struct session *s, const struct args *a)
{
	s->ix.dots[a->msg - 1] |= MSG_DELETED;
	reply(s, "+OK message %zu deleted", a->msg);
}

/* cmd_noop - answer +OK; clients use it to keep the session alive */
static void cmd_noop(struct session *s, const struct args *a)
{
	(void)a;
	reply(s, "+OK");
}

/* cmd_rset - unmark every message marked deleted */
static void cmd_rset(struct session *s, const struct args *a)
{
	long long octets;
	size_t n;

	(void)a;
	for (size_t i = 0; i < s->ix.count; i++)
		s->ix.dots[i] &= ~MSG_DELETED;
	n = totals(s, &octets);
	reply(s, "+OK maildrop has %zu messages (%lld octets)", n, octets);
}

/* cmd_uidl - send one message's unique id, or all of them. Each is 16 hex
 * digits that stay the same across sessions (RFC 1939 section 7). */
static void cmd_uidl(struct session *s, const struct args *a)
{
	if (a->msg) {
		reply(s, "+OK %zu %016llx", a->msg,
		      (unsigned long long)s->ix.uidl[a->msg - 1]);
		return;
	}
	reply(s, "+OK unique-id listing follows");
	for (size_t i = 0; i < s->ix.count && !s->c->failed; i++)
		if (!msg_deleted(&s->ix, i))
			reply(s, "%zu %016llx", i + 1, (unsigned long long)s->ix.uidl[i]);
	reply(s, ".");
}

/* ---------------------------------------------------------------- UPDATE (DESIGN.md "POP3 session", step 4) */

/*
 * write_kept - write to out the records of [0, N) that are not deleted,
 * then all that arrived during the session, [N, tail). Adjacent kept
 * records are copied as one range, so a mailbox with few deletions costs
 * few copies.
 */
static int write_kept(struct session *s, int out, off_t tail)
{
	off_t run = 0, run_end = 0;	/* the range of kept records not yet copied */

	for (size_t i = 0; i < s->ix.count; i++) {
		if (msg_deleted(&s->ix, i))
			continue;
		if (run_end != s->ix.start[i]) {
			if (run_end > run
			    && copy_range(s->mboxfd, run, run_end - run, out, NULL) < 0)
				return -1;
			run = s->ix.start[i];
		}
		run_end = s->ix.start[i + 1];
	}
	if (run_end == s->ix.end)
		run_end = tail;		/* the new mail follows on directly */
	if (run_end > run && copy_range(s->mboxfd, run, run_end - run, out, NULL) < 0)
		return -1;
	if (run_end < s->ix.end && tail > s->ix.end
	    && copy_range(s->mboxfd, s->ix.end, tail - s->ix.end, out, NULL) < 0)
		return -1;
	return 0;
}

/*
 * mail_end - set *tail to where the mail to keep ends now. That is the
 * file's size, less a crashed append of smtpmail's that began at or after
 * N, the end of the indexed records; any other tail is mail, and is kept
 * (DESIGN.md "Tails and other hands"). It is also less what an fsync whose
 * process died unsettled covered beyond the durable size. We hold the
 * commit lock, so that fsync is taken as failed, as smtpmail's commit_cut
 * would take it, and *dropped is set to 1.
 */
static int mail_end(struct session *s, off_t *tail, int *dropped)
{
	struct commit_state h;
	struct stat st;
	off_t end;
	int shape;

	/* Bytes below N never changed; what came since is in [N, size). */
	*dropped = 0;
	if (fstat(s->mboxfd, &st) < 0 || st.st_size < s->ix.end
	    || (shape = mailbox_shape(s->mboxfd, st.st_size, commit_appending(s->lockfd, &st),
				   &end)) < 0)
		return -1;
	*tail = shape == SHAPE_OUR_TAIL && end >= s->ix.end ? end : st.st_size;
	if (commit_read(s->lockfd, &h) > 0 && commit_about(&h, &st) && h.syncing >= 0
	    && h.durable < *tail) {
		*tail = h.durable > s->ix.end ? h.durable : s->ix.end;
		*dropped = 1;
	}
	return 0;
}

/* write_new - write mymailbox.new: the kept records and the mail up to
 * tail, fsynced before anything renames it */
static int write_new(struct session *s, off_t tail)
{
	int out, rc = -1;

	/* The file is made afresh, because a mymailbox.new left over by a
	 * crash may be a link to some other file, and that file must not be
	 * truncated and rewritten. */
	if (unlinkat(s->dirfd, "mymailbox.new", 0) < 0 && errno != ENOENT)
		return -1;
	out = openat(s->dirfd, "mymailbox.new", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW
		     | O_CLOEXEC, 0600);
	if (out < 0)
		return -1;
	if (write_kept(s, out, tail) == 0 && fsync(out) == 0)
		rc = 0;
	if (close(out) < 0)
		rc = -1;
	return rc;
}

/*
 * rewrite_mailbox - write mymailbox.new, rename it over mymailbox, and
 * fsync the directory (DESIGN.md "POP3 session", step 4). It returns 0 on
 * success. It returns -1 when nothing changed, because it failed before
 * the rename; mymailbox.new is then removed again. It returns 1 when the
 * rename took effect but the directory's fsync failed: the messages are
 * gone, but their removal may not survive a crash.
 */
static int rewrite_mailbox(struct session *s, off_t tail)
{
	if (write_new(s, tail) < 0
	    || renameat(s->dirfd, "mymailbox.new", s->dirfd, "mymailbox") < 0) {
		log_msg("%s: update failed: %s", s->login, strerror(errno));
		if (unlinkat(s->dirfd, "mymailbox.new", 0) < 0 && errno != ENOENT)
			log_msg("%s: cannot remove mymailbox.new: %s", s->login, strerror(errno));
		return -1;
	}
	if (fsync(s->dirfd) < 0) {
		log_msg("%s: update: the fsync of the directory failed (%s): the messages "
			"are removed, but the removal may not survive a crash", s->login,
			strerror(errno));
		return 1;
	}
	return 0;
}

/*
 * commit_updated - write the commit state after the update. The state then
 * describes mymailbox as it is now, and all of it is durable, because
 * truncate_mailbox and write_new fsynced it. The epoch moves on with
 * kept = tail, as after any replacement (commit_replaced).
 *
 * An smtpmail session whose record ended by tail then answers 250: its
 * record was carried into the new file, or deleted by its owner, who was
 * shown it only because it was durable. A session whose record lay past
 * tail answers 451: that is what an unsettled fsync covered, and mail_end
 * left it out. When the rename may not survive a crash (doubt), only what
 * was durable in the old file is kept.
 */
static void commit_updated(struct session *s, int doubt, off_t tail)
{
	struct commit_state h;
	struct stat st;

	if (commit_read(s->lockfd, &h) < 0
	    || fstatat(s->dirfd, "mymailbox", &st, AT_SYMLINK_NOFOLLOW) < 0) {
		log_msg("%s: commit state: %s", s->login, strerror(errno));
		return;		/* the next commit_load starts it again */
	}
	memcpy(h.magic, COMMIT_MAGIC, sizeof h.magic);
	h.appending = -1;
	h.dev = (uint64_t)st.st_dev;
	h.ino = (uint64_t)st.st_ino;
	/* The new epoch keeps, in the old file's offsets, what lay below
	 * tail: it was carried over, or deleted by its owner, who was shown
	 * it only because it was durable. When the rename may not last, it
	 * keeps only what was durable there (commit_replaced). */
	commit_bump(&h, doubt && h.durable < tail ? h.durable : tail);
	h.size = h.durable = st.st_size;
	h.syncing = -1;
	(void)commit_write(s->lockfd, &h);
}

/* deleted_tail - where the deleted messages start when they are the last
 * ones, that is when every kept message comes before every deleted one
 * (all of them deleted included). It returns -1 otherwise. */
static off_t deleted_tail(const struct session *s)
{
	off_t cut = -1;

	for (size_t i = 0; i < s->ix.count; i++) {
		if (!msg_deleted(&s->ix, i)) {
			if (cut >= 0)
				return -1;	/* a kept message after a deleted one */
		} else if (cut < 0)
			cut = s->ix.start[i];
	}
	return cut;
}

/*
 * truncate_mailbox - remove in place the deleted messages that end the
 * mailbox, when no mail follows them: ftruncate to cut, then fsync, under
 * the write lock. Nothing is copied, so it works on a full disk too. Both
 * the old and the new size end on whole records, so a crash leaves one or
 * the other. It returns what rewrite_mailbox returns.
 */
static int truncate_mailbox(struct session *s, int fd, off_t cut)
{
	int rc = -1;

	if (ftruncate(fd, cut) < 0)
		log_msg("%s: update failed: %s", s->login, strerror(errno));
	else {
		rc = 0;
		if (fsync(fd) < 0) {
			log_msg("%s: update: fsync after the truncation failed (%s): the "
				"messages are removed, but the removal may not survive a "
				"crash", s->login, strerror(errno));
			rc = 1;
		}
	}
	return rc;
}

/* mailbox_replaced - 1 if mymailbox is not the file the session opened
 * (an editor saves by writing a new file and renaming it over the old) */
static int mailbox_replaced(const struct session *s)
{
	struct stat now, ours;

	if (fstat(s->mboxfd, &ours) < 0
	    || fstatat(s->dirfd, "mymailbox", &now, AT_SYMLINK_NOFOLLOW) < 0)
		return 1;	/* cannot tell: do not risk it */
	return now.st_dev != ours.st_dev || now.st_ino != ours.st_ino;
}

/*
 * update_mailbox - remove the deleted messages under the commit and write
 * locks. The commit lock is taken so that no fsync of smtpmail's is under
 * way while the file may be replaced. When the deleted messages are the
 * mailbox's tail and no mail came since, the file is truncated in place;
 * otherwise the kept mail is written to a new file that is renamed over
 * it. It returns 0 on success, -1 when nothing was removed (the failure is
 * logged and mymailbox is as it was), or 1 when the messages were removed
 * but the removal may not survive a crash.
 */
static int update_mailbox(struct session *s)
{
	off_t tail, cut = deleted_tail(s);
	int rc = -1, dropped, in_place, box = -1;

	/* A state file replaced since login (ESTALE) no longer excludes the
	 * deliveries that lock the new one: nothing may be changed then. */
	if (lock_state(s->dirfd, s->lockfd, COMMIT_LOCK_BYTE, 1) < 0
	    || lock_state(s->dirfd, s->lockfd, WRITE_LOCK_BYTE, 1) < 0)
		log_msg("%s: update: cannot lock: %s", s->login, strerror(errno));
	else if (mailbox_replaced(s) || ((box = lock_box(s)) < 0 && errno == ESTALE))
		/* Then our index describes a file that is no longer the mailbox,
		 * and a copy of it would drop what was delivered to the new one. */
		log_msg("%s: update failed: mymailbox was replaced during the session",
			s->login);
	else if (box < 0)	/* busy: another program's lock or dotlock */
		log_msg("%s: update failed: %s", s->login, strerror(errno));
	else if (mail_end(s, &tail, &dropped) < 0)
		log_msg("%s: update failed: %s", s->login, strerror(errno));
	else if ((rc = (in_place = cut >= 0 && tail == s->ix.end) ? truncate_mailbox(s, box, cut)
			: rewrite_mailbox(s, tail)) >= 0)
		commit_updated(s, rc > 0, tail);
	if (box >= 0)
		close_fd(box, "mailbox");	/* lets mailbox_lock go */
	if (lock_byte(s->lockfd, WRITE_LOCK_BYTE, F_UNLCK, 0) < 0
	    || lock_byte(s->lockfd, COMMIT_LOCK_BYTE, F_UNLCK, 0) < 0)
		log_msg("%s: unlock: %s", s->login, strerror(errno));
	return rc;
}

/* cmd_quit - say goodbye; after login, first enter UPDATE and remove the
 * deleted messages (RFC 1939 section 6) */
static void cmd_quit(struct session *s, const struct args *a)
{
	size_t deleted = 0;

	(void)a;
	if (s->state == ST_TRANSACTION) {
		set_state(s, ST_UPDATE);
		for (size_t i = 0; i < s->ix.count; i++)
			deleted += (size_t)msg_deleted(&s->ix, i);
		if (deleted > 0 && update_mailbox(s) < 0) {
			reply(s, "-ERR some deleted messages not removed");
			log_msg("logout %s: %zu retrieved, none deleted (update failed)",
				s->login, s->retrieved);
			set_state(s, ST_CLOSED);
			return;
		}
		log_msg("logout %s: %zu retrieved, %zu deleted", s->login,
			s->retrieved, deleted);
	}
	if (deleted > 0)
		reply(s, "+OK %zu messages deleted, goodbye", deleted);
	else
		reply(s, "+OK popserver goodbye");
	set_state(s, ST_CLOSED);
}

/* ---------------------------------------------------------------- the dispatch table */

/* cmd_unknown - answer a verb no row knows; the table's last row */
static void cmd_unknown(struct session *s, const struct args *a)
{
	(void)a;
	bad(s, "-ERR unknown command");
}

#define IN(st) (1u << (st))
/* Every state a command line can come in: UPDATE and CLOSED read no more. */
#define ANY_STATE (IN(ST_AUTHORIZATION) | IN(ST_TRANSACTION))

/* One row per verb: where it is allowed and what may follow it. The last
 * row catches unknown verbs. In any other state a command is answered
 * "-ERR command not valid in this state" (dispatch): POP3's states do not
 * run in an order that could say more, as SMTP's 503 replies do. */
struct command {
	const char *verb;
	void (*handler)(struct session *s, const struct args *a);
	unsigned states;	/* where it is allowed: IN() bits */
	enum arg_rule args;	/* what may follow the verb */
};

static const struct command commands[] = {
	{ "USER", cmd_user, IN(ST_AUTHORIZATION), ARGS_NAME },
	/* RFC 1939 section 7: a password may hold spaces. */
	{ "PASS", cmd_pass, IN(ST_AUTHORIZATION), ARGS_LINE },
	{ "APOP", cmd_apop, IN(ST_AUTHORIZATION), ARGS_PAIR },
	{ "AUTH", cmd_auth, IN(ST_AUTHORIZATION), ARGS_AUTH },
	{ "CAPA", cmd_capa, ANY_STATE, ARGS_NONE },
	{ "QUIT", cmd_quit, ANY_STATE, ARGS_NONE },
	{ "STAT", cmd_stat, IN(ST_TRANSACTION), ARGS_NONE },
	{ "LIST", cmd_list, IN(ST_TRANSACTION), ARGS_MSG_OPT },
	{ "RETR", cmd_retr, IN(ST_TRANSACTION), ARGS_MSG },
	{ "DELE", cmd_dele, IN(ST_TRANSACTION), ARGS_MSG },
	{ "NOOP", cmd_noop, IN(ST_TRANSACTION), ARGS_NONE },
	{ "RSET", cmd_rset, IN(ST_TRANSACTION), ARGS_NONE },
	{ "TOP", cmd_top, IN(ST_TRANSACTION), ARGS_MSG_LINES },
	{ "UIDL", cmd_uidl, IN(ST_TRANSACTION), ARGS_MSG_OPT },
	{ NULL, cmd_unknown, ANY_STATE, ARGS_UNCHECKED }
};

/*
 * dispatch - find the verb's row (verbs are case-insensitive, RFC 1939
 * section 3), hold the command to the row's state and argument rule, and
 * only then run its handler.
 */
static void dispatch(struct session *s, char *line)
{
	const struct command *cmd = commands;
	char *rest = strchr(line, ' ');
	struct args a;

	if (rest)
		*rest++ = '\0';
	while (cmd->verb && strcasecmp(cmd->verb, line) != 0)
		cmd++;
	split_args(rest ? rest : "", &a);
	if (!(cmd->states & IN(s->state)))
		bad(s, "-ERR command not valid in this state");
	else if (check_args(s, cmd->args, &a) == 0)
		cmd->handler(s, &a);
	if (cmd->args == ARGS_LINE || cmd->args == ARGS_PAIR || cmd->args == ARGS_AUTH)
		secret_wipe(&a, sizeof a);	/* PASS, APOP, AUTH: a copy of a secret */
}

/* ---------------------------------------------------------------- the session */

/* timeout_cause - which limit a wait ran into: -t, -L or -T */
static const char *timeout_cause(const struct session *s)
{
	if (!s->c->hard_end_ms || now_ms() < s->c->hard_end_ms)
		return "timeout";
	return s->state == ST_AUTHORIZATION ? "no login within -L seconds"
	       : "the session lasted its -T seconds";
}

/* session_end - log how the session ended, free the index, and drop the
 * locks. A session that ends without QUIT deletes nothing, and that holds
 * for one ended by the autologout timer too (RFC 1939 section 3). */
static void session_end(struct session *s, enum io_status st)
{
	if (s->state == ST_TRANSACTION)
		log_msg("%s from %s: session ended without QUIT (%s), nothing deleted",
			s->login, s->peer, st == IO_TIMEOUT ? timeout_cause(s)
			: s->c->failed ? "write failed" : "connection lost");
	else if (st == IO_TIMEOUT)
		log_msg("%s: %s", s->peer, timeout_cause(s));
	index_free(&s->ix);
	if (s->mboxfd >= 0)
		close(s->mboxfd);
	if (s->lockfd >= 0)
		close(s->lockfd);	/* drops the session lock */
	if (s->dirfd >= 0)
		close(s->dirfd);
	/* The last reply goes out only now, after the locks are gone: a client
	 * that reconnects the moment it reads +OK must not find them held, nor
	 * this session's slot taken. */
	conn_flush(s->c);
	session_over(s->auth_failures);
}

/* session_conn - set up the buffered connection, read from in and written
 * to out. It returns NULL, after logging why, if it cannot be set up. */
static struct conn *session_conn(int in, int out, const char *peer)
{
	struct conn *c;

	/* RETR sends its +OK line, then the record by sendfile. With Nagle's
	 * algorithm the record would wait for the peer's delayed ACK (40 ms)
	 * of that line. A descriptor that is not a TCP socket (a socketpair
	 * in the fuzzer, -i on pipes) has no such delay, so failing here is
	 * fine. */
	if (setsockopt(out, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int)) < 0
	    && errno != EOPNOTSUPP && errno != ENOTSOCK && errno != ENOPROTOOPT)
		log_msg("%s: TCP_NODELAY: %s", peer, strerror(errno));
	if (!(c = malloc(sizeof *c)) || conn_init(c, in, cfg.timeout) < 0) {
		log_msg("%s: cannot set up the session: %s", peer, strerror(errno));
		free(c);
		return NULL;
	}
	c->out_fd = out;
	return c;
}

/* run_line - log and run one command line. A line that held a secret
 * (PASS, APOP, AUTH's initial response) is wiped afterwards. */
static void run_line(struct session *s, char *line, size_t cap)
{
	int secret = line[secret_start(line)] != '\0';

	log_client(line);
	dispatch(s, line);
	if (secret)
		forget_secret(s->c, line, cap);
}

/* close_io - close a session's descriptors: one socket, or -i's two */
static void close_io(int in, int out)
{
	close(in);
	if (out != in)
		close(out);
}

/* session_step - read one command line and answer it. The whole command
 * must come within the timeout, so that a client dripping a byte at a time
 * cannot hold the mailbox lock for ever; each reply write gets the timeout
 * afresh. Returns IO_OK while the session goes on. */
static enum io_status session_step(struct session *s)
{
	char line[POP_LINE_MAX];
	size_t len;
	int crlf;
	enum io_status st;

	s->c->deadline_ms = now_ms() + s->c->timeout_ms;
	st = conn_read_line(s->c, line, sizeof line, &len, &crlf);
	s->c->deadline_ms = 0;
	if (st == IO_TOO_LONG)
		bad(s, "-ERR line too long");	/* RFC 2449 section 4 */
	else if (st != IO_OK)
		return st;
	else if (memchr(line, '\0', len))
		bad(s, "-ERR syntax error");
	else
		run_line(s, line, sizeof line);
	return IO_OK;
}

/*
 * pop_session - one POP3 session, from the greeting to the close. It reads
 * from in and writes to out: one socket, or -i's two descriptors. Its
 * first wrong password waits pause_ms, the address's penalty. It reads
 * only cfg as global input. It always returns, never exits, and before it
 * returns it closes in and out and frees everything. It returns the
 * number of wrong passwords given, or -1 if the session could not start.
 * The parent learns that number from the note that says the session is
 * over (session_over).
 */
static int pop_session(int in, int out, const char *peer, int pause_ms)
{
	struct session s = { .peer = peer, .state = ST_AUTHORIZATION, .dirfd = -1,
			     .lockfd = -1, .mboxfd = -1, .pause_ms = pause_ms };
	enum io_status st = IO_OK;

	log_msg("connection from %s", peer);
	if (!(s.c = session_conn(in, out, peer))) {
		close_io(in, out);
		return -1;
	}
	/* The whole session ends after -T seconds, and after -L until it has
	 * logged in, however busy the client keeps it, so that a CAPA every
	 * few seconds cannot hold a slot. cmd_pass moves the end to -T. */
	s.started_ms = now_ms();
	s.c->hard_end_ms = s.started_ms + 1000LL * (cfg.login_time < cfg.lifetime
						    ? cfg.login_time : cfg.lifetime);
	make_stamp(s.stamp, sizeof s.stamp, cfg.hostname);	/* RFC 1939 section 7 */
	reply(&s, "+OK POP3 server ready %s", s.stamp);
	while (st == IO_OK && s.state != ST_CLOSED && !s.c->failed)
		st = session_step(&s);
	session_end(&s, st);
	secret_wipe(s.c->in, sizeof s.c->in);	/* it held passwords */
	free(s.c);
	close_io(in, out);
	return s.auth_failures;
}

/* ---------------------------------------------------------------- options and main */

/* usage - print help_text on out: all of it (-h), or only its synopsis,
 * the lines before the first blank one (after bad usage) */
static void usage(FILE *out, int all)
{
	const char *blank = strstr(help_text, "\n\n");
	size_t len = all || !blank ? strlen(help_text) : (size_t)(blank + 1 - help_text);

	if (fwrite(help_text, 1, len, out) != len || fflush(out) != 0)
		exit(1);	/* -h > /dev/full: the help did not get out */
}

/* int_option - a decimal option value in [min, max]; anything else is bad
 * usage, and exits 2 */
static int int_option(const char *s, unsigned long min, unsigned long max)
{
	unsigned long v;

	if (parse_number(s, &v) < 0 || v < min || v > max) {
		fprintf(stderr, "%s: bad number: %s\n", progname, s);
		usage(stderr, 0);
		exit(2);
	}
	return (int)v;
}

/* parse_options - fill cfg from the command line; -h and errors exit. The
 * stamps name the host by gethostname(). */
static void parse_options(int argc, char **argv)
{
	static char host[256];
	int ch;

	while ((ch = getopt(argc, argv, "d:u:l:c:C:t:w:a:L:T:ivh")) != -1) {
		switch (ch) {
		case 'd': cfg.spool = optarg; break;
		case 'u': cfg.userfile = optarg; break;
		case 'l': cfg.listen = optarg; break;
		case 'c': cfg.max_sessions = int_option(optarg, 1, 100000); break;
		case 'C': cfg.max_per_client = int_option(optarg, 1, 100000); break;
		case 't': cfg.timeout = int_option(optarg, 1, 86400); break;
		case 'w': cfg.penalty_ms = int_option(optarg, 0, 60000); break;
		case 'a':	/* the old name of -w: main warns */
			cfg.penalty_ms = int_option(optarg, 0, 60000);
			cfg.old_penalty_option = 1;
			break;
		case 'L': cfg.login_time = int_option(optarg, 1, 86400); break;
		case 'T': cfg.lifetime = int_option(optarg, 1, 604800); break;
		case 'i': cfg.inetd = 1; break;
		case 'v': verbose = 1; break;
		case 'h': usage(stdout, 1); exit(0);
		default: usage(stderr, 0); exit(2);
		}
	}
	if (argc - optind > 1) {
		usage(stderr, 0);
		exit(2);
	}
	if (optind < argc) {
		int_option(argv[optind], 1, 65535);
		cfg.port = argv[optind];
	}
	if (gethostname(host, sizeof host - 1) == 0 && host[0])
		cfg.hostname = host;
}

/* main - read the options, listen, and serve until SIGTERM or SIGINT;
 * with -i, serve the one session on standard input and output */
int main(int argc, char **argv)
{
	struct server srv = { .busy_line = "-ERR [SYS/TEMP] too many connections\r\n",
			      .session = pop_session };
	static char spool_dir[PATH_TEXT_MAX];

	parse_options(argc, argv);
	if (cfg.inetd && inetd_stderr() < 0)
		return 1;	/* the log would go to the client */
	if (cfg.old_penalty_option)	/* logged only now: with -i, not to the client */
		log_msg("-a is now -w: please use -w; -a goes in the next release");
	cfg.spool = spool_choose(cfg.spool, cfg.userfile, spool_dir, sizeof spool_dir);
	if (!cfg.spool)
		return 1;
	srv.userfile = cfg.userfile;
	srv.penalty_ms = cfg.penalty_ms;
	/* A peer that goes away, or a file-size limit hit while writing
	 * mymailbox.new, must be an error to handle (EPIPE, EFBIG), not a death. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR || signal(SIGXFSZ, SIG_IGN) == SIG_ERR) {
		log_msg("cannot ignore SIGPIPE and SIGXFSZ: %s", strerror(errno));
		return 1;
	}
	if (cfg.inetd)
		return serve_inetd(pop_session, cfg.penalty_ms);
	srv.max_children = cfg.max_sessions;
	/* As Postfix's smtpd_client_connection_count_limit: half the sessions */
	srv.max_per_peer = cfg.max_per_client ? cfg.max_per_client
			   : cfg.max_sessions > 1 ? cfg.max_sessions / 2 : 1;
	srv.nfds = listen_on(cfg.listen, cfg.port, srv.fds);
	if (srv.nfds == 0) {
		fprintf(stderr, "%s: cannot listen on port %s\n", progname, cfg.port);
		return 1;
	}
	return serve(&srv);
}
