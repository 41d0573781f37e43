/*
 * mailclient.c - the interactive terminal client of the mail trio: it sends
 * mail over SMTP (RFC 5321) and lists, reads and deletes it over POP3
 * (RFC 1939). It never touches the spool: it works with smtpmail and
 * popserver, and with any other RFC-compliant server.
 *
 * Usage: mailclient [-v] [-h] [-t seconds] server [smtp_port [pop3_port]]
 *   server      an IPv4 or IPv6 address or a host name (each address is tried)
 *   smtp_port   default 2525; pop3_port default 1100
 *   -v          show the whole SMTP/POP3 dialogue on stderr: "C: ..." what the
 *               client sends, "S: ..." what the server answers (PASS as ****),
 *               control bytes and invalid UTF-8 as \xNN (log_escape)
 *   -t seconds  the longest wait for a connection or a server reply (default 30)
 *   -h          this help
 *
 * It asks for the username and the password (not echoed on a terminal), keeps
 * them, then shows the menu again and again:
 *   1. Manage Mail  the list (Sl. No., sender, received "YYYY-MM-DD : HH : MM"
 *                   in local time, subject); "Enter mail no. to see: " shows a
 *                   mail ("-1": back to the menu); then 'd' deletes it (DELE,
 *                   QUIT) and any other key keeps it; either way the list comes
 *                   again, fetched afresh (the menu once the mailbox is
 *                   empty). The received time is the first Received line's
 *                   date (RFC 5321 4.4), else the Date header, else the
 *                   assignment's "Received: <date> : <hour> : <minute>" as
 *                   written; "?" if none can be read.
 *   2. Send Mail    From:, To: (one address or several, comma-separated),
 *                   Subject: (at most 50 characters), the body, a line "."
 *   3. Quit
 *
 * SMTP: greeting, EHLO (HELO if refused), MAIL, RCPT per recipient, DATA,
 * From/To/Subject/Date/Message-ID, the body dot-stuffed, ".", QUIT.
 * POP3: greeting, USER, PASS, CAPA, STAT, TOP n 0 (RETR n without TOP),
 * RETR n, DELE n, QUIT. One POP3 session per list-read-key cycle, ended with
 * QUIT before the menu comes back: the mailbox lock is never held at the menu.
 *
 * Messages: "Incorrect format", "Mail sent successfully",
 * "Error in sending mail: <the server's reply line>",
 * "Cannot connect to <server>:<port>: <reason>", "Login failed: <reply>",
 * "Error in reading mail: <reply>", "No mails in your mailbox.",
 * "Mail no. out of range, give again", "Mail deleted.".
 *
 * Input: lines of any length (getline). Blank lines before From:, To: and
 * Subject: are skipped, and so is one blank line right after Subject: (the
 * separator the assignment shows); the body is the rest up to the line ".".
 * A body line over 998 octets is sent as several lines (RFC 5322 2.1.1); CR
 * bytes in the body are dropped. End of input at any prompt ends the program
 * (exit 0). Server text and mail are shown with control characters (C0, DEL,
 * C1) and bytes that are not UTF-8 as '?': no escape sequence reaches the
 * terminal. On a terminal the key after a mail is one raw keypress.
 *
 * Limits: a typed mail 25 MiB; a server reply line 4096 octets; a line of a
 * mail shown 1 MiB (longer: a note instead); each wait for the server -t.
 *
 * Exit codes: 0 quit or end of input, 1 out of memory, 2 bad usage; killed
 * by SIGINT/SIGTERM as usual, after restoring the terminal.
 *
 * Where to look: menu[] is the table of options, menu_loop the loop. Send
 * Mail: opt_send_mail -> read_mail, check_mail (check_headers,
 * parse_address_list), smtp_send (smtp_hello, smtp_envelope, send_headers,
 * send_body). Manage Mail: opt_manage_mail -> pop_open, read_one
 * (list_mails -> list_row -> summary_line, received_text -> parse_date,
 * parse_received_stamp; choose_mail, show_mail, delete_mail), pop_close.
 * Server text reaches the screen only through show_text; the terminal
 * modes: tty_set, ask_key.
 */
#define _POSIX_C_SOURCE 200809L

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netdb.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- limits */

enum {
	IO_BUF_SIZE = 16384,	/* socket input and output buffers */
	LOG_LINE_MAX = 1024,	/* one log line, truncated past this */
	CMD_LINE_MAX = 512,	/* RFC 5321 4.5.3.1.4: a command line, 512 octets */
	REPLY_LINE_MAX = 4096,	/* RFC 5321 4.5.3.1.5, RFC 2449 4: 512; be lenient */
	DATA_LINE_MAX = 1 << 20,	/* a line of RETR/TOP output; longer: not shown */
	MAIL_TEXT_MAX = 25 << 20,	/* a typed mail; smtpmail's default SIZE */
	SUBJECT_MAX = 50,	/* the assignment: subject at most 50 characters */
	FIELD_MAX = 1000,	/* RFC 5322 2.1.1: 998 characters a line */
	TEXT_LINE_MAX = 998,	/* RFC 5322 2.1.1, RFC 5321 4.5.3.1.6: a body line */
	HOST_MAX = 256,		/* RFC 5321 4.5.3.1.2: a domain, 255 octets */
	DEFAULT_TIMEOUT = 30,	/* seconds: connect and each reply */
	COL_NUMBER = 7,		/* list columns: "Sl. No." */
	COL_FROM = 24,
	COL_RECEIVED = 20,	/* "YYYY-MM-DD : HH : MM" */
	COL_SUBJECT = 22	/* the row fits 80 columns */
};

/* ---------------------------------------------------------------- types */

/* The command line: set once in main, read everywhere. */
static struct config {
	const char *server;
	const char *smtp_port;
	const char *pop_port;
	int timeout;		/* seconds */
} cfg = { NULL, "2525", "1100", DEFAULT_TIMEOUT };

/* Bytes with their length: message text may hold NUL (no strlen on it). */
struct buf {
	char *p;
	size_t len, cap;
};

/* The user's side: the credentials kept for POP3 and the stdin line reader. */
struct client {
	char *username, *password;
	char *line;		/* the last line read, without its line end */
	size_t len;		/* its length */
	size_t cap;		/* getline's buffer size */
};

/* What a menu handler wants next (NEXT_LIST: Manage Mail's list again). */
enum next { NEXT_MENU, NEXT_EXIT, NEXT_LIST };

/* A typed mail once checked: addresses normalised, "a@b, c@d" for To. */
struct mail {
	struct buf from, to, subject, body;	/* body: lines each ending in LF */
	const char *why;	/* the format error, or NULL */
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

static const char *progname = "mailclient";

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

/* dialogue_line - with -v, head (such as "C: ") and line[len] as one log
 * line. The bytes go to log_text with their length, so a NUL or a control
 * byte from the server shows escaped instead of cutting the line short. */
static void dialogue_line(const char *head, const char *line, size_t len)
{
	char text[LOG_LINE_MAX];
	size_t n = strlen(head);

	if (!verbose)
		return;
	if (len > sizeof text - n)
		len = sizeof text - n;
	memcpy(text, head, n);
	memcpy(text + n, line, len);
	log_text(text, n + len);
}

/* dialogue - with -v, one line of the protocol dialogue: "C: ..." or "S: ..." */
static void dialogue(char who, const char *line, size_t len)
{
	const char head[] = { who, ':', ' ', '\0' };

	dialogue_line(head, line, len);
}

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

/* ---------------------------------------------------------------- bytes and text */

/*
 * buf_add - append n bytes and keep the text NUL-terminated. It refuses to
 * grow past MAIL_TEXT_MAX, so no typed mail can exhaust memory; it returns
 * -1, with nothing added, then and when memory runs out.
 */
static int buf_add(struct buf *b, const void *data, size_t n)
{
	if (n > MAIL_TEXT_MAX - b->len)
		return -1;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (!(p = realloc(b->p, cap)))
			return -1;
		b->p = p;
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';	/* text fields can be used as C strings */
	return 0;
}

/* buf_free - release a buffer and leave it empty, ready for reuse */
static void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

/* trim - skip spaces and tabs at both ends of s[*len]. It returns the new
 * start and shortens *len; the text itself is not changed. */
static const char *trim(const char *s, size_t *len)
{
	while (*len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		(*len)--;
	}
	while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
		(*len)--;
	return s;
}

/* next_line - the line of text at *pos, without its LF, into line and len,
 * and *pos past it. It returns -1 when no line is left. */
static int next_line(const struct buf *text, size_t *pos, const char **line, size_t *len)
{
	const char *lf;

	if (*pos >= text->len)
		return -1;
	*line = text->p + *pos;
	lf = memchr(*line, '\n', text->len - *pos);
	*len = lf ? (size_t)(lf - *line) : text->len - *pos;
	*pos += *len + 1;
	return 0;
}

/* blank - whether s[len] holds nothing but spaces and tabs */
static int blank(const char *s, size_t len)
{
	trim(s, &len);
	return len == 0;
}

/* has_control - whether s[len] holds a control byte (NUL, CR, ESC, DEL ...).
 * TAB does not count: it is ordinary white space in a header line. */
static int has_control(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
			return 1;
	return 0;
}

/* utf8_chars - how many characters s[len] shows as on the screen. A stray
 * byte counts as one, since show_text prints it as one '?'. */
static size_t utf8_chars(const char *s, size_t len)
{
	size_t n = 0;
	int safe;

	for (size_t i = 0; i < len; n++)
		i += char_len((const unsigned char *)s + i, len - i, &safe);
	return n;
}

/*
 * show_text - print s[len] on stdout with each control character or stray
 * byte as '?'. A mail and a server's reply are someone else's text: shown
 * as they are, escape sequences in them (ESC, CSI, OSC ...) could drive the
 * terminal. TAB and well-formed UTF-8 are kept.
 */
static void show_text(const char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		int safe;
		size_t n = char_len((const unsigned char *)s + i, len - i, &safe);

		if (safe)
			fwrite(s + i, 1, n, stdout);
		else
			putchar('?');
		i += n;
	}
}

/* show_error - print "<what>: <text>" on a line of its own. The text may
 * come from the server, so it goes through show_text. */
static void show_error(const char *what, const char *text)
{
	printf("%s: ", what);
	show_text(text, strlen(text));
	putchar('\n');
}

/* ---------------------------------------------------------------- the terminal */

/* The terminal's settings before tty_set changed them. The signal handler
 * restores them too, so they are static; tty_changed says they differ. */
static struct termios tty_saved;
static volatile sig_atomic_t tty_changed;

/* tty_set - clear the local flags in clear and set those in set on stdin's
 * terminal: ECHO off for a password, ICANON off too for one raw key. It
 * returns -1 when stdin is not a terminal; the caller then reads a line. */
static int tty_set(tcflag_t clear, tcflag_t set)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &tty_saved) < 0)
		return -1;
	t = tty_saved;
	t.c_lflag &= ~clear;
	t.c_lflag |= set;
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	tty_changed = 1;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) < 0) {
		tty_changed = 0;
		return -1;
	}
	return 0;
}

/* tty_restore - put the terminal back as it was before tty_set */
static void tty_restore(void)
{
	if (tty_changed && tcsetattr(STDIN_FILENO, TCSANOW, &tty_saved) < 0)
		log_msg("cannot restore the terminal: %s", strerror(errno));
	tty_changed = 0;
}

/* on_fatal_signal - restore the terminal, then die of the signal as usual,
 * so the shell sees the real cause and gets back a terminal that echoes */
static void on_fatal_signal(int sig)
{
	if (tty_changed)
		(void)tcsetattr(STDIN_FILENO, TCSANOW, &tty_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---------------------------------------------------------------- input: lines and keys */

/* read_input - one line of stdin, of any length (getline), without its LF
 * and a CR before it. It returns -1 at the end of input. */
static int read_input(struct client *cl)
{
	ssize_t n;

	fflush(stdout);
	n = getline(&cl->line, &cl->cap, stdin);
	if (n < 0)
		return -1;
	cl->len = (size_t)n;
	if (cl->len > 0 && cl->line[cl->len - 1] == '\n')
		cl->len--;
	if (cl->len > 0 && cl->line[cl->len - 1] == '\r')
		cl->len--;	/* typed or pasted with CRLF */
	cl->line[cl->len] = '\0';
	return 0;
}

/* ask - print a prompt and read the answer; -1 at the end of input */
static int ask(struct client *cl, const char *prompt)
{
	fputs(prompt, stdout);
	return read_input(cl);
}

/* ask_secret - as ask, but without echo when stdin is a terminal. ECHONL
 * still echoes the newline, so the next text starts on a line of its own;
 * the terminal is restored on every path. */
static int ask_secret(struct client *cl, const char *prompt)
{
	int r;

	(void)tty_set(ECHO, ECHONL);	/* before the prompt: no early key echoed */
	fputs(prompt, stdout);
	r = read_input(cl);
	tty_restore();
	return r;
}

/* ask_key - wait for one key: one raw keypress on a terminal (the
 * assignment's getchar, no Enter needed), else the first character of a
 * line. It returns the key, or EOF at the end of input. */
static int ask_key(struct client *cl, const char *prompt)
{
	int ch;

	if (tty_set(ICANON | ECHO, 0) == 0) {
		fputs(prompt, stdout);
		fflush(stdout);
		ch = getchar();
		if (ch == tty_saved.c_cc[VEOF])
			ch = EOF;	/* Ctrl-D means the end, raw or not */
		/* One key: the rest of a sequence (an arrow key sends "ESC [ A")
		 * must not start the next answer; stdin is unbuffered on a tty. */
		if (tcflush(STDIN_FILENO, TCIFLUSH) < 0 && verbose)
			log_msg("tcflush: %s", strerror(errno));
		tty_restore();
		if (ch != EOF && isprint(ch))
			putchar(ch);	/* show the key pressed */
		putchar('\n');
		return ch;
	}
	fputs(prompt, stdout);
	if (read_input(cl) < 0)
		return EOF;
	return cl->len > 0 ? (unsigned char)cl->line[0] : '\n';
}

/*
 * ask_credential - one of the two start prompts, asked again while the
 * answer is empty or holds a space or a control byte: user.txt splits its
 * lines at white space, so no name or password of an account holds one. It
 * returns a copy, or NULL at the end of input (or, errno ENOMEM, when
 * memory runs out).
 */
static char *ask_credential(struct client *cl, const char *prompt, int secret)
{
	for (;;) {
		int r = secret ? ask_secret(cl, prompt) : ask(cl, prompt);

		if (r < 0)
			return NULL;
		if (cl->len > 0 && !has_control(cl->line, cl->len)
		    && !memchr(cl->line, ' ', cl->len))
			return strdup(cl->line);
	}
}

/* ---------------------------------------------------------------- input: the typed mail */

/* next_header - the next line that is not blank. The assignment's layout
 * has blank lines between the header lines, so any number are skipped before
 * each one. It returns -1 when no line is left. */
static int next_header(const struct buf *text, size_t *pos, const char **line, size_t *len)
{
	while (next_line(text, pos, line, len) == 0)
		if (!blank(*line, *len))
			return 0;
	return -1;
}

/* header_value - if line is "<name>: <value>" (the name in any case, spaces
 * allowed around both), the value without its outer spaces into value and
 * vlen. It returns -1 if the line is not that header. */
static int header_value(const char *name, const char *line, size_t len,
			const char **value, size_t *vlen)
{
	size_t n = strlen(name);

	line = trim(line, &len);
	if (len < n || strncasecmp(line, name, n) != 0)
		return -1;
	line += n;
	len -= n;
	line = trim(line, &len);
	if (len == 0 || line[0] != ':')
		return -1;
	len--;
	*value = trim(line + 1, &len);
	*vlen = len;
	return 0;
}

/*
 * parse_address - "X @ Y" appended to out as "X@Y". The assignment writes
 * "<username> @ <domain_name>", so spaces around the parts are allowed.
 * Inside them a space, a control byte, '"', '<', '>' or ',' would break the
 * SMTP path <X@Y> or the To: list, so they make it -1, as does an empty part.
 */
static int parse_address(const char *s, size_t len, struct buf *out)
{
	const char *at;
	const char *local, *domain;
	size_t nlocal, ndomain;

	s = trim(s, &len);
	at = memchr(s, '@', len);
	if (!at)
		return -1;
	nlocal = (size_t)(at - s);
	ndomain = len - nlocal - 1;
	local = trim(s, &nlocal);
	domain = trim(at + 1, &ndomain);
	if (nlocal == 0 || ndomain == 0 || memchr(domain, '@', ndomain))
		return -1;
	for (size_t i = 0; i < nlocal + ndomain; i++) {
		char ch = i < nlocal ? local[i] : domain[i - nlocal];

		if (ch == ' ' || ch == '<' || ch == '>' || ch == ',' || ch == '"'
		    || (unsigned char)ch < 0x20 || ch == 0x7f)
			return -1;
	}
	if (buf_add(out, local, nlocal) < 0 || buf_add(out, "@", 1) < 0
	    || buf_add(out, domain, ndomain) < 0)
		return -1;
	return 0;
}

/* parse_address_list - one address or several, comma-separated, appended
 * to out as "a@b, c@d": the To: header's form, which smtp_envelope splits
 * again. It returns -1 if any address is malformed. */
static int parse_address_list(const char *s, size_t len, struct buf *out)
{
	const char *end = s + len;

	for (;;) {
		const char *comma = memchr(s, ',', (size_t)(end - s));
		size_t n = comma ? (size_t)(comma - s) : (size_t)(end - s);

		if (parse_address(s, n, out) < 0)
			return -1;
		if (!comma)
			return 0;
		if (buf_add(out, ", ", 2) < 0)
			return -1;
		s = comma + 1;
	}
}

/* check_headers - the From, To and Subject lines, in that order, into m;
 * *pos ends past the Subject line. It returns NULL, or what is wrong in
 * words the user sees after "Incorrect format". */
static const char *check_headers(const struct buf *text, size_t *pos, struct mail *m)
{
	const char *line, *value;
	size_t len, vlen;

	if (next_header(text, pos, &line, &len) < 0
	    || header_value("From", line, len, &value, &vlen) < 0)
		return "the first line must be \"From: user@domain\"";
	if (parse_address(value, vlen, &m->from) < 0)
		return "the From: address must be of the form user@domain";
	if (next_header(text, pos, &line, &len) < 0
	    || header_value("To", line, len, &value, &vlen) < 0)
		return "the second line must be \"To: user@domain\"";
	if (parse_address_list(value, vlen, &m->to) < 0)
		return "each To: address must be of the form user@domain";
	if (next_header(text, pos, &line, &len) < 0
	    || header_value("Subject", line, len, &value, &vlen) < 0)
		return "the third line must be \"Subject: text\"";
	if (utf8_chars(value, vlen) > SUBJECT_MAX)
		return "the subject has more than 50 characters";
	if (has_control(value, vlen) || buf_add(&m->subject, value, vlen) < 0)
		return "the subject holds control characters";
	return NULL;
}

/* add_without_cr - append s[len] to b without its CR bytes. The lines are
 * sent with CRLF and a bare CR is not allowed (RFC 5321 2.3.8); dropping
 * them here, before dot-stuffing, also means "\r." cannot end the data. */
static int add_without_cr(struct buf *b, const char *s, size_t len)
{
	const char *end = s + len;

	while (s < end) {
		const char *cr = memchr(s, '\r', (size_t)(end - s));
		size_t n = cr ? (size_t)(cr - s) : (size_t)(end - s);

		if (buf_add(b, s, n) < 0)
			return -1;
		s += cr ? n + 1 : n;
	}
	return buf_add(b, "", 0);	/* an empty body is "" too */
}

/* check_mail - split the typed text into a mail: the header lines, then the
 * body after one optional blank line. m->why says what is wrong, or is NULL. */
static void check_mail(const struct buf *text, struct mail *m)
{
	size_t pos = 0, skip, len;
	const char *line;

	m->why = check_headers(text, &pos, m);
	if (m->why)
		return;
	skip = pos;	/* one blank line after Subject: is the separator */
	if (next_line(text, &skip, &line, &len) == 0 && blank(line, len))
		pos = skip;
	if (add_without_cr(&m->body, text->p + pos, text->len - pos) < 0)
		m->why = "out of memory";
}

/*
 * read_mail - the typed lines up to the line "." (not kept), each ending in
 * LF. A mail longer than MAIL_TEXT_MAX is still read to its "." so that the
 * rest of it is not taken for menu choices; it returns 1 then. It returns -1
 * at the end of input, else 0.
 */
static int read_mail(struct client *cl, struct buf *text)
{
	int too_long = 0;

	for (;;) {
		if (read_input(cl) < 0)
			return -1;
		if (cl->len == 1 && cl->line[0] == '.')
			return too_long;
		if (!too_long && (buf_add(text, cl->line, cl->len) < 0
				  || buf_add(text, "\n", 1) < 0))
			too_long = 1;
	}
}

/* mail_free - release a mail's fields */
static void mail_free(struct mail *m)
{
	buf_free(&m->from);
	buf_free(&m->to);
	buf_free(&m->subject);
	buf_free(&m->body);
}

/* ---------------------------------------------------------------- network */

/* connect_bounded - connect fd to sa, waiting at most the timeout: a plain
 * connect to a host that drops packets waits for minutes. It returns -1,
 * errno set, on failure. */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int flags = fcntl(fd, F_GETFL), err = 0, n;
	socklen_t errlen = sizeof err;

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -1;
	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return -1;
	while ((n = poll(&p, 1, cfg.timeout * 1000)) < 0 && errno == EINTR)
		;
	if (n == 0)
		errno = ETIMEDOUT;
	if (n <= 0)
		return -1;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0)
		return -1;
	errno = err;
	return err ? -1 : 0;
}

/* dial - connect to cfg.server:port, trying each of its addresses in turn
 * (a host name may have IPv6 and IPv4 ones). It returns the socket, or -1
 * after printing "Cannot connect to <server>:<port>: <reason>". */
static int dial(const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	const char *why = "no address";
	int fd = -1, err = getaddrinfo(cfg.server, port, &hints, &res);

	if (err != 0)
		why = err == EAI_SYSTEM ? strerror(errno) : gai_strerror(err);
	for (ai = err ? NULL : res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0) {
			why = strerror(errno);
		} else if (connect_bounded(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			why = strerror(errno);
			close_fd(fd, "connection");
			fd = -1;
		}
	}
	if (err == 0)
		freeaddrinfo(res);
	if (fd >= 0 && verbose)
		log_msg("connected to %s port %s", cfg.server, port);
	if (fd < 0)
		printf(strchr(cfg.server, ':') ? "Cannot connect to [%s]:%s: %s\n"
		       : "Cannot connect to %s:%s: %s\n", cfg.server, port, why);
	return fd;
}

/* io_text - what went wrong, in words, for a read that gave no line. For
 * IO_ERROR errno is still the one of the failed call. */
static const char *io_text(enum io_status st)
{
	switch (st) {
	case IO_TOO_LONG:
		return "reply line too long";
	case IO_EOF:
		return "connection closed by the server";
	case IO_TIMEOUT:
		return "timed out waiting for the server";
	default:
		return errno == ECONNRESET ? "connection reset by the server"
		       : "connection lost";
	}
}

/* send_line - queue one protocol line and its CRLF, shown with -v. A write
 * error is not reported here: the next read fails, and the user sees the
 * connection lost. */
static void send_line(struct conn *c, const char *line, size_t len)
{
	dialogue('C', line, len);
	conn_write(c, line, len);
	conn_write(c, "\r\n", 2);
}

/* send_vcmd - format a command line and queue it. A line that would pass
 * CMD_LINE_MAX with its CRLF is not sent at all, since a cut command could
 * mean something else: it returns -1. PASS's argument never reaches the log. */
static int send_vcmd(struct conn *c, const char *fmt, va_list ap)
{
	char line[CMD_LINE_MAX - 2];	/* and CRLF */
	int n = vsnprintf(line, sizeof line, fmt, ap);

	if (n < 0 || (size_t)n >= sizeof line)
		return -1;	/* a caller's bug or an overlong argument */
	if (strncmp(line, "PASS ", 5) == 0) {
		dialogue('C', "PASS ****", 9);	/* never show the password */
		conn_write(c, line, (size_t)n);
		conn_write(c, "\r\n", 2);
		return 0;
	}
	send_line(c, line, (size_t)n);
	return 0;
}

/* send_cmd - send_vcmd with the arguments given here */
static int send_cmd(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = send_vcmd(c, fmt, ap);
	va_end(ap);
	return r;
}

/* ---------------------------------------------------------------- SMTP (RFC 5321) */

/* An SMTP connection and its last reply. */
struct smtp {
	struct conn c;
	char line[REPLY_LINE_MAX];	/* the reply's last line, or what went wrong */
	int code;			/* its code; 0: no reply (the connection is gone) */
	int in_ehlo;			/* reading the EHLO reply: note its keywords */
	int ehlo_8bit;			/* EHLO listed 8BITMIME */
};

/* reply_code - the code of an SMTP reply line "DDD", "DDD text" or
 * "DDD-text" (RFC 5321 4.2), or 0 if the line is not a reply */
static int reply_code(const char *line, size_t len)
{
	if (len < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1])
	    || !isdigit((unsigned char)line[2]) || line[0] < '2' || line[0] > '5')
		return 0;
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return 0;
	return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

/* smtp_reply - read one whole reply: "DDD-" lines continue it, and the code
 * of the last line counts (RFC 5321 4.2.1). It returns that code, or 0 when
 * no reply came; s->line then says why. */
static int smtp_reply(struct smtp *s)
{
	size_t len;
	int crlf;

	for (;;) {
		enum io_status st = conn_read_line(&s->c, s->line, sizeof s->line, &len, &crlf);

		if (st != IO_OK) {
			snprintf(s->line, sizeof s->line, "%s", io_text(st));
			return s->code = 0;
		}
		dialogue('S', s->line, len);
		if (!(s->code = reply_code(s->line, len))) {
			snprintf(s->line, sizeof s->line, "bad reply from the server");
			return 0;
		}
		if (s->in_ehlo && len >= 12 && strncasecmp(s->line + 4, "8BITMIME", 8) == 0
		    && (len == 12 || s->line[12] == ' '))
			s->ehlo_8bit = 1;	/* RFC 5321 4.1.1.1, RFC 6152: a keyword line */
		if (len == 3 || s->line[3] == ' ')
			return s->code;
	}
}

/* smtp_expect - read the reply; 0 if its code is in class (2 for 2xx, 3 for
 * 3xx), else -1 */
static int smtp_expect(struct smtp *s, int class)
{
	return smtp_reply(s) / 100 == class ? 0 : -1;
}

/* smtp_cmd - send a command line and read its reply; 0 if its code is in
 * class. A line too long to send counts as refused, with no reply. */
static int smtp_cmd(struct smtp *s, int class, const char *fmt, const char *arg)
{
	if (send_cmd(&s->c, fmt, arg) < 0) {
		snprintf(s->line, sizeof s->line, "line too long for SMTP");
		s->code = 0;	/* nothing sent: no reply to wait for */
		return -1;
	}
	return smtp_expect(s, class);
}

/* local_name - our name for EHLO (RFC 5321 4.1.1.1): the host name if it is
 * a domain, else the address literal of our end of the socket. A bare name
 * such as "laptop" is no domain, and a strict server refuses it. */
static void local_name(int fd, char *out, size_t cap)
{
	static const char ldh[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789-.";
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char addr[HOST_MAX];

	if (gethostname(out, cap) == 0 && memchr(out, '\0', cap) && strchr(out, '.')
	    && out[0] != '.' && out[strspn(out, ldh)] == '\0')
		return;	/* RFC 5321 4.1.2: a Domain: letters, digits, '-', '.' */
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0
	    || getnameinfo((struct sockaddr *)&ss, len, addr, sizeof addr, NULL, 0,
			   NI_NUMERICHOST) != 0)
		snprintf(out, cap, "[127.0.0.1]");
	else	/* RFC 5321 4.1.3: address literals */
		snprintf(out, cap, ss.ss_family == AF_INET6 ? "[IPv6:%s]" : "[%s]", addr);
}

/* smtp_hello - read the greeting, then say EHLO, or HELO when the server
 * refuses EHLO with a 5xx: an older server knows only HELO (RFC 5321 3.2). */
static int smtp_hello(struct smtp *s)
{
	char name[HOST_MAX + 16];
	int r;

	if (smtp_expect(s, 2) < 0)
		return -1;
	local_name(s->c.fd, name, sizeof name);
	s->in_ehlo = 1;
	r = smtp_cmd(s, 2, "EHLO %s", name);
	s->in_ehlo = 0;
	if (r == 0)
		return 0;
	if (s->code / 100 != 5)
		return -1;	/* 4xx or no reply: HELO would not help */
	s->ehlo_8bit = 0;
	return smtp_cmd(s, 2, "HELO %s", name);
}

/* has_8bit - whether the text holds a byte over 127, which asks for
 * BODY=8BITMIME and the MIME headers */
static int has_8bit(const struct buf *b)
{
	for (size_t i = 0; i < b->len; i++)
		if ((unsigned char)b->p[i] > 127)
			return 1;
	return 0;
}

/*
 * smtp_envelope - MAIL FROM, then one RCPT TO for each address of
 * "a@b, c@d". The first refusal ends it (RFC 5321 3.3): the user is told,
 * and no recipient gets a mail the others miss. BODY=8BITMIME is declared
 * only when EHLO offered it (RFC 6152).
 */
static int smtp_envelope(struct smtp *s, const struct mail *m)
{
	const char *p = m->to.p;

	if (smtp_cmd(s, 2, s->ehlo_8bit && (has_8bit(&m->body) || has_8bit(&m->subject))
		     ? "MAIL FROM:<%s> BODY=8BITMIME" : "MAIL FROM:<%s>", m->from.p) < 0)
		return -1;
	while (*p) {
		size_t n = strcspn(p, ",");
		char rcpt[CMD_LINE_MAX];

		if (n >= sizeof rcpt)
			n = sizeof rcpt - 1;	/* send_cmd refuses it anyway */
		memcpy(rcpt, p, n);
		rcpt[n] = '\0';
		if (smtp_cmd(s, 2, "RCPT TO:<%s>", rcpt) < 0)
			return -1;
		p += n;
		p += strspn(p, ", ");
	}
	return 0;
}

/* message_id - a "Message-ID: <seconds.nanoseconds.pid@domain>" line,
 * unique (RFC 5322 3.6.4): two clients differ in the pid, and one client's
 * mails in the time. */
static void message_id(char *out, size_t cap, const char *from)
{
	struct timespec ts;
	const char *at = strrchr(from, '@');

	if (clock_gettime(CLOCK_REALTIME, &ts) < 0) {
		ts.tv_sec = time(NULL);	/* the pid and the second still tell apart */
		ts.tv_nsec = 0;
	}
	snprintf(out, cap, "Message-ID: <%lld.%09ld.%ld@%s>", (long long)ts.tv_sec,
		 (long)ts.tv_nsec, (long)getpid(), at ? at + 1 : "localhost");
}

/* send_to_header - "To: a@b, c@d", folded before 78 columns (RFC 5322
 * 2.1.1), each folded line going on with a space (2.2.3): a long list of
 * recipients stays readable and under 998 octets a line. */
static void send_to_header(struct conn *c, const char *to)
{
	struct buf line = { 0 };
	size_t col = 3;

	if (buf_add(&line, "To:", 3) < 0)
		return;
	while (*to) {
		size_t n = strcspn(to, ",");

		if (col > 3 && col + n + 2 > 78) {
			send_line(c, line.p, line.len);	/* ends in ",": fold here */
			line.len = 0;
			col = 0;
		}
		buf_add(&line, " ", 1);
		buf_add(&line, to, n);
		col += n + 1;
		to += n;
		if (*to == ',' && buf_add(&line, ",", 1) == 0)
			col++;
		to += strspn(to, ", ");
	}
	send_line(c, line.p, line.len);
	buf_free(&line);
}

/* send_field - one header line "<name><value>", of any length */
static void send_field(struct conn *c, const char *name, const char *value)
{
	struct buf line = { 0 };

	if (buf_add(&line, name, strlen(name)) == 0
	    && buf_add(&line, value, strlen(value)) == 0)
		send_line(c, line.p, line.len);
	buf_free(&line);
}

/* send_headers - From, To and Subject as typed (normalised), Date and
 * Message-ID (RFC 5322 3.6: Date and From are required), the MIME headers
 * when the body has 8-bit text (taken as UTF-8), then the blank line. */
static void send_headers(struct conn *c, const struct mail *m)
{
	char line[FIELD_MAX];
	time_t now = time(NULL);
	struct tm tm;

	send_field(c, "From: ", m->from.p);
	send_to_header(c, m->to.p);
	send_field(c, "Subject: ", m->subject.p);
	/* RFC 5322 3.3: "Mon, 23 Nov 2026 09:03:00 +0100" (C locale: English names) */
	if (localtime_r(&now, &tm)
	    && strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S %z", &tm) > 0)
		send_line(c, line, strlen(line));
	message_id(line, sizeof line, m->from.p);
	send_line(c, line, strlen(line));
	if (has_8bit(&m->body)) {	/* RFC 2045 5.2: else it means US-ASCII */
		send_line(c, "MIME-Version: 1.0", 17);
		send_line(c, "Content-Type: text/plain; charset=UTF-8", 39);
		send_line(c, "Content-Transfer-Encoding: 8bit", 31);	/* RFC 2045 6.2 */
	}
	send_line(c, "", 0);
}

/* piece_len - how much of a body line fits on one line of the message: all
 * of it up to TEXT_LINE_MAX octets (RFC 5322 2.1.1: "MUST be no more than
 * 998 characters"), else that much cut back to the start of a UTF-8
 * character, so that no character is split over two lines. */
static size_t piece_len(const char *line, size_t len)
{
	size_t n = TEXT_LINE_MAX;

	if (len <= n)
		return len;
	while (n > TEXT_LINE_MAX - 3 && ((unsigned char)line[n] & 0xc0) == 0x80)
		n--;
	return n;
}

/* send_data_line - one line of the message. A leading '.' gets another one
 * (RFC 5321 4.5.2), so no line of the text can end the data. */
static void send_data_line(struct conn *c, const char *line, size_t len)
{
	int stuff = len > 0 && line[0] == '.';

	dialogue_line(stuff ? "C: ." : "C: ", line, len);
	if (stuff)
		conn_write(c, ".", 1);
	conn_write(c, line, len);
	conn_write(c, "\r\n", 2);
}

/* send_body - the body lines (check_mail took the CRs out), a longer one
 * broken into lines of at most TEXT_LINE_MAX octets, then the line ".". */
static void send_body(struct conn *c, const struct buf *body)
{
	size_t pos = 0, len, n;
	const char *line;

	while (next_line(body, &pos, &line, &len) == 0)
		do {
			n = piece_len(line, len);
			send_data_line(c, line, n);
			line += n;
			len -= n;
		} while (len > 0);
	send_line(c, ".", 1);
}

/* smtp_transaction - the envelope, DATA and the message. It returns 0 once
 * the server has taken the mail: a 2xx after the final ".". */
static int smtp_transaction(struct smtp *s, const struct mail *m)
{
	if (smtp_envelope(s, m) < 0 || smtp_cmd(s, 3, "DATA", NULL) < 0)
		return -1;
	send_headers(&s->c, m);
	send_body(&s->c, &m->body);
	return smtp_expect(s, 2);
}

/* smtp_send - deliver a checked mail over SMTP and tell the user how it
 * went, then end the session with QUIT while the server still answers. */
static void smtp_send(const struct mail *m)
{
	struct smtp *s = malloc(sizeof *s);
	int fd;

	if (!s) {
		puts("Error in sending mail: out of memory");
		return;
	}
	if ((fd = dial(cfg.smtp_port)) < 0) {
		free(s);
		return;
	}
	memset(s, 0, sizeof *s);
	if (conn_init(&s->c, fd, cfg.timeout) < 0)
		snprintf(s->line, sizeof s->line, "%s", strerror(errno));
	else if (smtp_hello(s) == 0 && smtp_transaction(s, m) == 0)
		s->line[0] = '\0';
	if (s->line[0])
		show_error("Error in sending mail", s->line);
	else
		puts("Mail sent successfully");
	if (s->code > 0 && s->code != 421 && send_cmd(&s->c, "QUIT") == 0)
		smtp_reply(s);	/* RFC 5321 4.1.1.10; after a 421 the server
				 * has closed (3.8). The reply changes nothing. */
	close_fd(fd, "connection");
	free(s);
}

/* ---------------------------------------------------------------- POP3 (RFC 1939) */

/* A POP3 session: the connection, its last status line, and what CAPA and
 * STAT told. */
struct pop {
	struct conn c;
	char line[REPLY_LINE_MAX];	/* the last status line, or what went wrong */
	char *data;			/* one line of a multi-line response */
	int alive;			/* the server still answers: QUIT is worth sending */
	int has_top;			/* CAPA listed TOP (RFC 2449 6.1) */
	long count;			/* STAT: messages in the maildrop */
};

/* pop_status - read a status line: 0 for "+OK", -1 for "-ERR" or no answer.
 * The indicators are upper case (RFC 1939 3); any other line means the peer
 * does not speak POP3, and the session is given up. */
static int pop_status(struct pop *p)
{
	size_t len;
	int crlf;
	enum io_status st = conn_read_line(&p->c, p->line, sizeof p->line, &len, &crlf);

	if (st != IO_OK) {
		snprintf(p->line, sizeof p->line, "%s", io_text(st));
		p->alive = 0;
		return -1;
	}
	dialogue('S', p->line, len);
	if (strncmp(p->line, "+OK", 3) == 0 && (len == 3 || p->line[3] == ' '))
		return 0;
	if (strncmp(p->line, "-ERR", 4) != 0 || (len > 4 && p->line[4] != ' ')) {
		snprintf(p->line, sizeof p->line, "bad reply from the server");
		p->alive = 0;
	}
	return -1;
}

/* pop_cmd - send a command and read its status line; 0 for +OK, else -1 */
static int pop_cmd(struct pop *p, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = send_vcmd(&p->c, fmt, ap);
	va_end(ap);
	if (r < 0) {
		snprintf(p->line, sizeof p->line, "line too long for POP3");
		return -1;
	}
	return pop_status(p);
}

/* Called for each line of a multi-line response. Non-zero stops the calls,
 * but the rest is still read, so the session stays in step. */
typedef int (*line_fn)(void *arg, const char *line, size_t len);

/* pop_multiline - pass each line after a +OK, up to the line ".", to each
 * with its leading '.' removed (RFC 1939 3). A line too long to hold comes
 * as a note. It returns -1 if the session died. */
static int pop_multiline(struct pop *p, line_fn each, void *arg)
{
	int stop = 0;

	for (;;) {
		size_t len;
		int crlf;
		enum io_status st = conn_read_line(&p->c, p->data, DATA_LINE_MAX, &len, &crlf);
		const char *line = p->data;

		if (st == IO_TOO_LONG) {
			line = "[a line too long to show]";
			len = strlen(line);
		} else if (st != IO_OK) {
			snprintf(p->line, sizeof p->line, "%s", io_text(st));
			p->alive = 0;
			return -1;
		} else if (len == 1 && line[0] == '.') {
			return 0;
		} else if (len > 0 && line[0] == '.') {
			line++;
			len--;
		}
		dialogue('S', line, len);
		if (!stop && each)
			stop = each(arg, line, len);
	}
}

/* capa_line - note TOP among the capabilities (RFC 2449 5): the list then
 * fetches only each mail's headers */
static int capa_line(void *arg, const char *line, size_t len)
{
	struct pop *p = arg;

	if (len >= 3 && strncasecmp(line, "TOP", 3) == 0 && (len == 3 || line[3] == ' '))
		p->has_top = 1;
	return 0;
}

/* pop_stat - the number of messages, from "+OK nn mm" (RFC 1939 5) */
static int pop_stat(struct pop *p)
{
	char *end;

	if (pop_cmd(p, "STAT") < 0)
		return -1;
	errno = 0;
	p->count = strtol(p->line + 3, &end, 10);
	if (errno || end == p->line + 3 || p->count < 0) {
		snprintf(p->line, sizeof p->line, "bad STAT reply from the server");
		return -1;
	}
	return 0;
}

/* pop_login - the greeting, USER and PASS (RFC 1939 7). On failure it
 * prints why: "Login failed" when the server refused, "Error in reading
 * mail" when it stopped answering. */
static int pop_login(struct pop *p, const struct client *cl)
{
	if (pop_status(p) < 0) {
		show_error("Error in reading mail", p->line);
		return -1;
	}
	if (pop_cmd(p, "USER %s", cl->username) < 0
	    || pop_cmd(p, "PASS %s", cl->password) < 0) {
		show_error(p->alive ? "Login failed" : "Error in reading mail", p->line);
		return -1;
	}
	return 0;
}

/* pop_open - connect, log in, learn the capabilities and the count. It
 * returns -1 after printing why; pop_close still frees what was set up. */
static int pop_open(struct pop *p, const struct client *cl)
{
	int fd;

	memset(p, 0, sizeof *p);
	p->c.fd = -1;
	if (!(p->data = malloc(DATA_LINE_MAX))) {
		puts("Error in reading mail: out of memory");
		return -1;
	}
	if ((fd = dial(cfg.pop_port)) < 0)
		return -1;
	if (conn_init(&p->c, fd, cfg.timeout) < 0) {
		printf("Error in reading mail: %s\n", strerror(errno));
		return -1;
	}
	p->alive = 1;
	if (pop_login(p, cl) < 0)
		return -1;
	/* CAPA's -ERR is no failure: an RFC 1939-only server has no CAPA, and
	 * the list then uses RETR instead of TOP. */
	if (pop_cmd(p, "CAPA") == 0)
		(void)pop_multiline(p, capa_line, p);
	if (!p->alive || pop_stat(p) < 0) {
		show_error("Error in reading mail", p->line);
		return -1;
	}
	return 0;
}

/* pop_close - QUIT if the server still answers (RFC 1939 6), then close and
 * free; a second call does nothing. It returns 0 only when QUIT was answered
 * +OK, because only then are the deletions done. */
static int pop_close(struct pop *p)
{
	int r = -1;

	if (p->alive)
		r = pop_cmd(p, "QUIT");
	if (p->c.fd >= 0)
		close_fd(p->c.fd, "connection");
	free(p->data);
	p->data = NULL;
	p->c.fd = -1;
	p->alive = 0;
	return r;
}

/* ---------------------------------------------------------------- the menu: Manage Mail's list */

/* The few headers the list shows, unfolded, each cut at FIELD_MAX: a row
 * shows far less, so nothing of use is lost. */
struct summary {
	char from[FIELD_MAX], subject[FIELD_MAX], received[FIELD_MAX], date[FIELD_MAX];
	char *field;		/* the header being read (a folded one goes on), or NULL */
	int in_body;		/* past the blank line after the headers */
};

/* field_add - append s[len] to a field, cut at FIELD_MAX - 1 octets */
static void field_add(char *field, const char *s, size_t len)
{
	size_t have = strlen(field);

	if (len > FIELD_MAX - 1 - have)
		len = FIELD_MAX - 1 - have;
	memcpy(field + have, s, len);
	field[have + len] = '\0';
}

/* summary_line - take From, Subject, the first Received and Date from a
 * header line; a folded line goes on the header before it (RFC 5322 2.2.3).
 * It returns 1 at the blank line, as the body is not needed. */
static int summary_line(void *arg, const char *line, size_t len)
{
	static const char *const names[] = { "From:", "Subject:", "Received:", "Date:" };
	struct summary *sm = arg;
	char *fields[] = { sm->from, sm->subject, sm->received, sm->date };

	if (sm->in_body || len == 0) {
		sm->in_body = 1;
		return 1;	/* the headers are over */
	}
	if (line[0] == ' ' || line[0] == '\t') {
		if (sm->field)
			field_add(sm->field, line, len);
		return 0;
	}
	sm->field = NULL;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		size_t n = strlen(names[i]);

		if (len >= n && strncasecmp(line, names[i], n) == 0 && fields[i][0] == '\0') {
			sm->field = fields[i];
			field_add(sm->field, line + n, len - n);
			break;
		}
	}
	return 0;
}

/* days_from_civil - the days since 1970-01-01 of a proleptic Gregorian date.
 * POSIX has no timegm, and mktime would take the date as local time. */
static long long days_from_civil(long long y, int m, int d)
{
	long long era, yoe, doy;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* zone_offset - a zone "+hhmm"/"-hhmm" or an obsolete name (RFC 5322 4.3)
 * in seconds east of UTC. Other names count as UTC, as 4.3 says of the
 * military zones. */
static long zone_offset(const char *z)
{
	static const struct { const char *name; int hours; } names[] = {
		{"EST", -5}, {"EDT", -4}, {"CST", -6}, {"CDT", -5},
		{"MST", -7}, {"MDT", -6}, {"PST", -8}, {"PDT", -7},
	};

	if ((z[0] == '+' || z[0] == '-') && strspn(z + 1, "0123456789") >= 4) {
		long v = ((z[1] - '0') * 10 + (z[2] - '0')) * 3600L
			 + ((z[3] - '0') * 10 + (z[4] - '0')) * 60L;

		return z[0] == '-' ? -v : v;
	}
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strncasecmp(z, names[i].name, 3) == 0)
			return names[i].hours * 3600L;
	return 0;
}

/* parse_date - an RFC 5322 3.3 date-time "[Mon, ]23 Nov 2026 09:03[:00]
 * +0000" to seconds since the epoch. It returns -1 if s is not one. */
static int parse_date(const char *s, time_t *out)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	char mon[4], zone[8] = "+0000";
	int day, year, hour, min, sec = 0, used = 0;
	const char *m;

	while (*s == ' ' || *s == '\t')
		s++;
	if (isalpha((unsigned char)*s) && strchr(s, ','))
		s = strchr(s, ',') + 1;	/* the optional day of the week */
	/* The field widths keep every number within an int: sscanf's overflow
	 * is undefined behaviour. */
	if (sscanf(s, "%2d %3s %4d %2d:%2d%n", &day, mon, &year, &hour, &min, &used) != 5)
		return -1;
	s += used;
	if (*s == ':' && sscanf(s, ":%2d%n", &sec, &used) == 1)
		s += used;
	(void)sscanf(s, " %7s", zone);	/* no zone: zone stays +0000, UTC */
	for (m = months; *m && strncasecmp(m, mon, 3) != 0; m += 3)
		;
	if (!*m || strlen(mon) != 3 || day < 1 || day > 31 || hour < 0 || hour > 23
	    || min < 0 || min > 59 || sec < 0 || sec > 60 || year < 0 || year > 9999)
		return -1;
	if (year < 100)
		year += year < 50 ? 2000 : 1900;	/* RFC 5322 4.3: obsolete years */
	*out = (time_t)(days_from_civil(year, (int)((m - months) / 3) + 1, day) * 86400
			+ hour * 3600 + min * 60 + sec - zone_offset(zone));
	return 0;
}

/* A piece of a date as typed: a run of letters or a run of digits. */
struct date_piece {
	const char *s;
	size_t len;
	int digits;		/* digits, not letters */
};

/* name_number - 1 + the index of the English name that s[len] spells, whole
 * or cut to three letters or more ("Nov", "Sept", "November"), in any case;
 * 0 if it spells none */
static int name_number(const char *const *names, int count, const char *s, size_t len)
{
	for (int i = 0; len >= 3 && i < count; i++)
		if (len <= strlen(names[i]) && strncasecmp(s, names[i], len) == 0)
			return i + 1;
	return 0;
}

/* date_pieces - split a date into at most max pieces at spaces, tabs and the
 * marks ",-/.", the ways people write dates. It returns the count, or -1 for
 * any other byte or too many pieces. */
static int date_pieces(const char *s, size_t len, struct date_piece *piece, int max)
{
	int n = 0;

	for (size_t i = 0; i < len;) {
		size_t start = i;
		int digits = isdigit((unsigned char)s[i]) != 0;

		if (s[i] != '\0' && strchr(" \t,-/.", s[i])) {
			i++;
			continue;
		}
		while (i < len && (digits ? isdigit((unsigned char)s[i])
				   : isalpha((unsigned char)s[i])))
			i++;
		if (i == start || n == max)
			return -1;
		piece[n++] = (struct date_piece){ s + start, i - start, digits };
	}
	return n;
}

/* piece_number - the value of a piece of min..max digits, or -1 */
static int piece_number(const struct date_piece *p, size_t min, size_t max)
{
	int v = 0;

	if (!p->digits || p->len < min || p->len > max)
		return -1;
	for (size_t i = 0; i < p->len; i++)
		v = v * 10 + (p->s[i] - '0');
	return v;
}

/* date_valid - whether day d exists in month m (1..12) of year y (1..9999),
 * leap years by the Gregorian rule */
static int date_valid(int y, int m, int d)
{
	static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);

	return y >= 1 && m >= 1 && m <= 12 && d >= 1
	       && d <= days[m - 1] + (m == 2 && leap);
}

/*
 * date_of - the day, month and year of a date in three pieces, into tm.
 * With a month's name the four-digit number is the year and the other the
 * day, in any order ("29 Nov 2026", "Nov 29, 2026"). With numbers only the
 * year comes first ("2026-11-29") or last, after the day, in the order of
 * "29 Nov 2026" ("29/11/2026"); the month never comes first, since 11/12
 * could be either. It returns -1 for anything else.
 */
static int date_of(const struct date_piece *p, struct tm *tm)
{
	static const char *const months[] = { "january", "february", "march",
		"april", "may", "june", "july", "august", "september", "october",
		"november", "december" };
	int named = !p[0].digits ? 0 : !p[1].digits ? 1 : !p[2].digits ? 2 : -1;
	int y, m, d;

	if (named >= 0) {
		const struct date_piece *a = &p[named == 0 ? 1 : 0];	/* the numbers, */
		const struct date_piece *b = &p[named == 2 ? 1 : 2];	/* in order */
		int a_is_year = a->len == 4;

		m = name_number(months, 12, p[named].s, p[named].len);
		y = piece_number(a_is_year ? a : b, 4, 4);
		d = piece_number(a_is_year ? b : a, 1, 2);
	} else {
		int year_first = p[0].len == 4;

		y = piece_number(&p[year_first ? 0 : 2], 4, 4);
		m = piece_number(&p[1], 1, 2);
		d = piece_number(&p[year_first ? 2 : 0], 1, 2);
	}
	if (!date_valid(y, m, d))
		return -1;
	tm->tm_year = y - 1900;
	tm->tm_mon = m - 1;
	tm->tm_mday = d;
	return 0;
}

/* clock_number - the hour or the minute between start and end: one or two
 * digits with spaces around, at most max; -1 if it is not that */
static int clock_number(const char *start, const char *end, int max)
{
	size_t len = (size_t)(end - start);
	const char *s = trim(start, &len);
	struct date_piece p = { s, len, len > 0 && strspn(s, "0123456789") >= len };
	int v = piece_number(&p, 1, 2);

	return v <= max ? v : -1;
}

/*
 * parse_received_stamp - the assignment's Received value "<date> : <hour> :
 * <minute>" (" 29 Nov 2026 : 14 : 05") into tm's date, hour and minute; the
 * rest of tm is zero. A weekday's name may come first. The server wrote the
 * local time of its clock with no zone, so the time is taken as it stands.
 * It returns -1 if s is not of that form or the date does not exist.
 */
static int parse_received_stamp(const char *s, struct tm *tm)
{
	static const char *const weekdays[] = { "monday", "tuesday", "wednesday",
		"thursday", "friday", "saturday", "sunday" };
	const char *c1 = strchr(s, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	struct date_piece p[4];
	int n, first = 0;

	if (!c2 || strchr(c2 + 1, ':'))
		return -1;
	memset(tm, 0, sizeof *tm);
	tm->tm_hour = clock_number(c1 + 1, c2, 23);
	tm->tm_min = clock_number(c2 + 1, c2 + 1 + strlen(c2 + 1), 59);
	n = date_pieces(s, (size_t)(c1 - s), p, 4);
	if (n == 4 && !p[0].digits && name_number(weekdays, 7, p[0].s, p[0].len))
		first = 1;	/* the weekday adds nothing to the date */
	if (n - first != 3 || tm->tm_hour < 0 || tm->tm_min < 0)
		return -1;
	return date_of(p + first, tm);
}

/*
 * received_text - when the mail was received, "YYYY-MM-DD : HH : MM" in
 * local time. The first Received line's date, after its last ';' (RFC 5321
 * 4.4), says when the server took it; the Date header comes next. A mailbox
 * kept as the assignment describes has neither, but a Received line
 * "<date> : <hour> : <minute>" of the server's clock, shown as it stands.
 * "?" stands for none of them.
 */
static void received_text(const struct summary *sm, char *out, size_t cap)
{
	const char *semi = strrchr(sm->received, ';');
	time_t t;
	struct tm tm;
	int known;

	if ((semi && parse_date(semi + 1, &t) == 0) || parse_date(sm->date, &t) == 0)
		known = localtime_r(&t, &tm) != NULL;
	else
		known = parse_received_stamp(sm->received, &tm) == 0;
	if (!known || strftime(out, cap, "%Y-%m-%d : %H : %M", &tm) == 0)
		snprintf(out, cap, "?");
}

/* field_trim - a field without the spaces and tabs at its ends, in place */
static char *field_trim(char *f)
{
	size_t len = strlen(f);
	char *s = (char *)trim(f, &len);

	s[len] = '\0';
	return s;
}

/* address_of - the address in a From value: what is inside <...> if there
 * is that, else all of it; "?" for nothing */
static const char *address_of(char *from)
{
	char *lt = strrchr(from, '<'), *gt = lt ? strchr(lt, '>') : NULL;

	if (lt && gt) {
		*gt = '\0';
		from = lt + 1;
	}
	from = field_trim(from);
	return from[0] ? from : "?";
}

/* print_cell - s cut to width characters, "..." marking a cut, then with
 * pad spaces up to width, so that the columns stay aligned */
static void print_cell(const char *s, size_t width, int pad)
{
	size_t len = strlen(s), chars = utf8_chars(s, len), shown, end = 0;
	size_t keep = chars <= width ? chars : width - 3;
	int safe;

	for (shown = 0; shown < keep; shown++)	/* end: the byte after keep characters */
		end += char_len((const unsigned char *)s + end, len - end, &safe);
	show_text(s, end);
	if (chars > width)
		fputs("...", stdout);
	for (shown = chars < width ? chars : width; pad && shown < width; shown++)
		putchar(' ');
}

/* print_row - one row of the list, the columns two spaces apart */
static void print_row(const char *num, const char *from, const char *when,
		      const char *subject)
{
	print_cell(num, COL_NUMBER, 1);
	fputs("  ", stdout);
	print_cell(from, COL_FROM, 1);
	fputs("  ", stdout);
	print_cell(when, COL_RECEIVED, 1);
	fputs("  ", stdout);
	print_cell(subject, COL_SUBJECT, 0);
	putchar('\n');
}

/* list_row - fetch one mail's headers and print its row. TOP n 0 sends only
 * the headers; without TOP, or when TOP is refused after all, RETR does. */
static int list_row(struct pop *p, long n)
{
	struct summary *sm = calloc(1, sizeof *sm);
	char when[64], num[24];
	int r = -1, ok;

	if (!sm) {
		snprintf(p->line, sizeof p->line, "out of memory");
		return -1;
	}
	ok = p->has_top && pop_cmd(p, "TOP %ld 0", n) == 0;
	if (!ok && p->alive) {
		p->has_top = 0;	/* no TOP (or refused after all): RETR instead */
		ok = pop_cmd(p, "RETR %ld", n) == 0;
	}
	if (ok && pop_multiline(p, summary_line, sm) == 0) {
		snprintf(num, sizeof num, "%ld", n);
		received_text(sm, when, sizeof when);
		print_row(num, address_of(sm->from), when, field_trim(sm->subject));
		r = 0;
	}
	free(sm);
	return r;
}

/* list_mails - the list: a heading row, then one row per mail */
static int list_mails(struct pop *p)
{
	print_row("Sl. No.", "From", "Received", "Subject");
	for (long n = 1; n <= p->count; n++)
		if (list_row(p, n) < 0)
			return -1;
	return 0;
}

/* ---------------------------------------------------------------- the menu: Manage Mail */

/* choose_mail - ask "Enter mail no. to see: " until the answer is -1 or a
 * number in 1..count, into *n. What is no number is asked again; a number
 * out of range gets the assignment's message. -1 at the end of input. */
static int choose_mail(struct client *cl, long count, long *n)
{
	for (;;) {
		const char *s;
		size_t len;
		char *end;

		if (ask(cl, "Enter mail no. to see: ") < 0)
			return -1;
		len = cl->len;
		s = trim(cl->line, &len);
		if (len == 0)
			continue;	/* not a number: ask again */
		errno = 0;
		*n = strtol(s, &end, 10);
		if (end != s + len)
			continue;
		if (*n == -1 || (errno == 0 && *n >= 1 && *n <= count))
			return 0;
		puts("Mail no. out of range, give again");
	}
}

/* show_line - one line of a mail on the screen, through show_text */
static int show_line(void *arg, const char *line, size_t len)
{
	(void)arg;
	show_text(line, len);
	putchar('\n');
	return 0;
}

/* show_mail - RETR n: the whole mail, headers and body, between two marks */
static int show_mail(struct pop *p, long n)
{
	if (pop_cmd(p, "RETR %ld", n) < 0)
		return -1;
	printf("\n----- mail no. %ld -----\n", n);
	if (pop_multiline(p, show_line, NULL) < 0)
		return -1;
	printf("----- end of mail no. %ld -----\n", n);
	return 0;
}

/* delete_mail - DELE n, then QUIT. "Mail deleted." waits for QUIT's +OK:
 * the server removes the mail only in the UPDATE state (RFC 1939 6). */
static void delete_mail(struct pop *p, long n)
{
	if (pop_cmd(p, "DELE %ld", n) < 0) {
		show_error("Error in deleting mail", p->line);
		pop_close(p);
	} else if (pop_close(p) < 0) {
		show_error("Error in deleting mail", p->line);
	} else {
		puts("Mail deleted.");
	}
}

/* read_one - the list, the choice, the mail, then the key. It returns
 * NEXT_MENU after -1, NEXT_EXIT at the end of input, and NEXT_LIST after
 * any key ('d' deletes first), since the list then comes again. */
static enum next read_one(struct client *cl, struct pop *p)
{
	long n;
	int key;

	if (p->count == 0) {
		puts("No mails in your mailbox.");
		return NEXT_MENU;
	}
	if (list_mails(p) < 0) {
		show_error("Error in reading mail", p->line);
		return NEXT_MENU;
	}
	if (choose_mail(cl, p->count, &n) < 0)
		return NEXT_EXIT;
	if (n == -1)
		return NEXT_MENU;
	if (show_mail(p, n) < 0) {
		show_error("Error in reading mail", p->line);
		return NEXT_MENU;
	}
	key = ask_key(cl, "Press d to delete this mail, any other key to see the list: ");
	if (key == EOF)
		return NEXT_EXIT;
	if (key == 'd')
		delete_mail(p, n);	/* closes the session: QUIT makes it real */
	return NEXT_LIST;
}

/*
 * opt_manage_mail - menu 1. Each list-read-key cycle is one POP3 session,
 * ended with QUIT before the list comes again or the menu does: the list is
 * always fresh, and the mailbox lock is never held while the user reads.
 */
static enum next opt_manage_mail(struct client *cl)
{
	for (;;) {
		struct pop *p = malloc(sizeof *p);
		enum next next;

		if (!p) {
			puts("Error in reading mail: out of memory");
			return NEXT_MENU;
		}
		next = pop_open(p, cl) < 0 ? NEXT_MENU : read_one(cl, p);
		pop_close(p);	/* after 'd' delete_mail has closed it already */
		free(p);
		if (next != NEXT_LIST)
			return next;
	}
}

/* ---------------------------------------------------------------- the menu: Send Mail */

/* opt_send_mail - menu 2: read the whole mail up to ".", check it, and send
 * it over SMTP only if it is well formed */
static enum next opt_send_mail(struct client *cl)
{
	struct buf text = { 0 };
	struct mail m = { 0 };
	int r;

	puts("Type the mail: a line \"From: user@domain\", a line \"To: user@domain\"\n"
	     "(several addresses: separated by commas), a line \"Subject: text\" (at most\n"
	     "50 characters), then the body; end it with a line with only \".\".");
	r = read_mail(cl, &text);
	if (r < 0) {
		buf_free(&text);
		return NEXT_EXIT;
	}
	if (r > 0)
		m.why = "the mail is too long";
	else
		check_mail(&text, &m);
	buf_free(&text);
	if (m.why)
		printf("Incorrect format\n  (%s)\n", m.why);
	else
		smtp_send(&m);
	mail_free(&m);
	return NEXT_MENU;
}

/* ---------------------------------------------------------------- the menu: the table and the loop */

/* opt_quit - menu 3: leave the loop; main frees what is left */
static enum next opt_quit(struct client *cl)
{
	(void)cl;
	return NEXT_EXIT;
}

/* opt_unknown - anything else typed at the menu: say what is allowed */
static enum next opt_unknown(struct client *cl)
{
	(void)cl;
	puts("Invalid option, choose 1, 2 or 3");
	return NEXT_MENU;
}

/*
 * The menu is a table of options, as the servers' commands[] is a table of
 * verbs: what is typed, the text shown for it, and the handler that runs.
 * The last row, with no key, catches everything else.
 */
static const struct menu_option {
	const char *key;
	const char *text;
	enum next (*handler)(struct client *cl);
} menu[] = {
	{ "1", "Manage Mail", opt_manage_mail },
	{ "2", "Send Mail", opt_send_mail },
	{ "3", "Quit", opt_quit },
	{ NULL, NULL, opt_unknown },
};

/* choose_option - the row of what was typed (spaces around it ignored) */
static const struct menu_option *choose_option(const char *line, size_t len)
{
	const struct menu_option *opt;
	const char *choice = trim(line, &len);

	for (opt = menu; opt->key; opt++)
		if (len == strlen(opt->key) && memcmp(choice, opt->key, len) == 0)
			break;
	return opt;
}

/* menu_loop - show the menu and run the chosen option's handler, until one
 * of them says to stop (Quit, or the end of input anywhere) */
static void menu_loop(struct client *cl)
{
	for (;;) {
		const struct menu_option *opt;

		putchar('\n');
		for (opt = menu; opt->key; opt++)
			printf("%s. %s\n", opt->key, opt->text);
		if (ask(cl, "Enter option: ") < 0)
			return;
		if (choose_option(cl->line, cl->len)->handler(cl) == NEXT_EXIT)
			return;
	}
}

/* ---------------------------------------------------------------- options and main */

/* usage - the synopsis on out; it returns code, for main to return */
static int usage(FILE *out, int code)
{
	fprintf(out, "usage: %s [-v] [-h] [-t seconds] server [smtp_port [pop3_port]]\n"
		"  server      IPv4 or IPv6 address or host name of the mail server\n"
		"  smtp_port   SMTP port (default 2525), pop3_port POP3 port (default 1100)\n"
		"  -v          show the SMTP/POP3 dialogue on stderr\n"
		"  -t seconds  longest wait for the server (default %d)\n"
		"  -h          this help\n", progname, DEFAULT_TIMEOUT);
	return code;
}

/* port_valid - whether s is a decimal port 1..65535 */
static int port_valid(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	return isdigit((unsigned char)s[0]) && *end == '\0' && errno == 0
	       && v >= 1 && v <= 65535;
}

/* parse_options - fill cfg from the command line. It returns -1 on bad
 * usage and 1 for -h, which main turns into the usage text. */
static int parse_options(int argc, char **argv)
{
	int opt;
	char *end;

	while ((opt = getopt(argc, argv, "vht:")) != -1) {
		switch (opt) {
		case 'v':
			verbose = 1;
			break;
		case 'h':
			return 1;
		case 't':
			errno = 0;
			cfg.timeout = (int)strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || cfg.timeout < 1 || cfg.timeout > 3600)
				return -1;
			break;
		default:
			return -1;
		}
	}
	if (optind >= argc || argc - optind > 3)
		return -1;
	cfg.server = argv[optind];
	if (argc - optind > 1)
		cfg.smtp_port = argv[optind + 1];
	if (argc - optind > 2)
		cfg.pop_port = argv[optind + 2];
	return port_valid(cfg.smtp_port) && port_valid(cfg.pop_port) ? 0 : -1;
}

/* catch_signals - restore the terminal on the way out of a fatal signal.
 * SIGPIPE is ignored: a server that closes early makes a write fail, and
 * the user is told, instead of the client dying. */
static void catch_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	struct sigaction sa = { .sa_handler = on_fatal_signal };

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		if (sigaction(sigs[i], &sa, NULL) < 0)
			log_msg("sigaction %d: %s", sigs[i], strerror(errno));
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		log_msg("cannot ignore SIGPIPE: %s", strerror(errno));
}

/* main - the options, the two start prompts, then the menu until Quit */
int main(int argc, char **argv)
{
	struct client cl = { 0 };
	int r = parse_options(argc, argv);

	if (r != 0)
		return r > 0 ? usage(stdout, 0) : usage(stderr, 2);
	catch_signals();
	/* On a terminal, read only what is asked for: ask_key's one key leaves
	 * nothing of the next keys in stdio's buffer (a pipe stays buffered). */
	if (isatty(STDIN_FILENO) && setvbuf(stdin, NULL, _IONBF, 0) != 0)
		log_msg("cannot unbuffer stdin");
	tzset();	/* local time for Date: and the list */
	cl.username = ask_credential(&cl, "Username: ", 0);
	cl.password = cl.username ? ask_credential(&cl, "Password: ", 1) : NULL;
	if (cl.password)
		menu_loop(&cl);
	else if (errno == ENOMEM)
		r = 1;
	if (feof(stdin))
		putchar('\n');	/* end of input: leave the shell prompt on a new line */
	free(cl.username);
	free(cl.password);
	free(cl.line);
	return r;
}
