/*
 * mailclient.c - the interactive terminal client of the mail trio: it sends
 * mail over SMTP (RFC 5321) and lists, reads and deletes it over POP3
 * (RFC 1939). It never touches the spool: it works with smtpmail and
 * popserver, and with any other RFC-compliant server.
 *
 * Usage and options: help_text, just below the includes (mailclient -h
 * prints it, and README shows it: one text, checked by tests/test_help.py).
 * -v writes control bytes and invalid UTF-8 as \xNN (log_escape), and
 * every secret (PASS, APOP's digest, AUTH's responses) as ****.
 *
 * It asks for the username and the password. The password is not echoed
 * on a terminal, and neither is what is typed while it is checked, which
 * is then dropped. It checks them with a POP3 login and QUIT, and says
 * "checking the password..." when that takes more than a moment. A refused
 * password is asked for again, 3 tries in all. When the server cannot be
 * reached, they stay unchecked ("The password was not checked.") until a
 * server takes them: the POP3 login of 1, or the SMTP AUTH before a mail
 * is typed at 2. A password refused there is asked for again there. The
 * client keeps them, then shows the menu again and again:
 *
 *   1. Manage Mail  shows the list, a screenful at a time on a terminal.
 *                   A row has the Sl. No.; the sender (the From's display
 *                   name, else its address, else Return-Path's); when it
 *                   was received, "YYYY-MM-DD : HH : MM" in local time; and
 *                   the subject, decoded. The subject column takes the
 *                   window's width, and a narrow window gets narrower
 *                   columns, so that no row wraps; wide characters count
 *                   two columns. At "--More--" the keys are space, Enter
 *                   and q. Each page takes the window's size of the moment,
 *                   wrapped lines counted.
 *                   "Enter mail no. to see: " shows the mail ("-1" goes
 *                   back to the menu): From, To, Cc, Subject, Received and
 *                   Date in the reader's time zone, then every text part in
 *                   order, decoded, and paged. Of an alternative it shows
 *                   the plain part, else the HTML part's text. Each
 *                   attachment gets a line where it stands. An enclosed
 *                   mail (forwarded, a digest's, a bounce's) is ruled off
 *                   with its From, Date and Subject and its text. A
 *                   bounce's report is shown as text, with the headers it
 *                   returns (From, To, Date, Subject). format=flowed lines
 *                   are joined, and an HTML table gets a line for each row.
 *                   Then 'r' shows the mail's source, 'd' deletes it, and
 *                   any other key keeps it. The list comes again, fetched
 *                   afresh, or the menu once the mailbox is empty.
 *                   The received time is the first Received line's date
 *                   (RFC 5321 4.4), else the Date header, else the
 *                   assignment's "Received: <date> : <hour> : <minute>" as
 *                   written, and "?" if none can be read.
 *   2. Send Mail    first checks that the SMTP server greets. When no
 *                   server has taken the password yet, it also checks it
 *                   by AUTH, and a refused one is asked for again. Then it
 *                   asks for From:, To: (one address or several,
 *                   comma-separated), Subject: (at most 50 characters, sent
 *                   as RFC 2047 encoded words when not ASCII), and the body
 *                   up to a line ".". Ctrl-D or Ctrl-C drop the mail and
 *                   bring the menu back. A mail that could not be sent (no
 *                   reply, a 4xx, the password refused) is kept, and the
 *                   next 2 offers to send it again (s) or to save it in a
 *                   file (f).
 *   3. Quit
 *
 * Logins take the strongest way the server offers. SMTP uses AUTH CRAM-MD5
 * when EHLO lists AUTH with it, else PLAIN, else LOGIN, and no login when
 * no AUTH is offered (RFC 4954, 2195, 4616). POP3 uses APOP when the
 * greeting has a timestamp, else AUTH CRAM-MD5 when CAPA's SASL lists it
 * (RFC 5034), else USER and PASS. When the password is sent as it is
 * (PASS, PLAIN, LOGIN), the user is told so once a run.
 * SMTP: greeting, EHLO (HELO if refused), AUTH, MAIL, RCPT per recipient,
 * DATA, From/To/Subject/Date/Message-ID, the body dot-stuffed, ".", QUIT.
 * Before the mail is typed, a session of greeting and QUIT only, with EHLO
 * and AUTH between while the password is unchecked.
 * POP3: greeting, APOP (or CAPA, then AUTH or USER and PASS), CAPA, STAT.
 * Then, for each screenful of the list, TOP n 0 (RETR n without TOP) and
 * UIDL n; for the mail, UIDL n (the whole UIDL list if the numbering
 * moved) and RETR; for 'd', UIDL and DELE; then QUIT. Each of these is a
 * session of its own, ended with QUIT before the client waits for the
 * user, so the mailbox lock is never held while the user reads or thinks.
 * MIME: RFC 2045-2047 (base64, quoted-printable, encoded words), RFC 2231
 * parameters, RFC 2046 5.1.5 (a digest's parts are mails), RFC 3676
 * (format=flowed); charsets converted to UTF-8 by iconv, then to the
 * terminal's; widths by wcwidth in a UTF-8 locale (C.UTF-8 when the
 * user's is not), else a table of the wide blocks.
 *
 * Messages: "Incorrect format", "Mail sent successfully",
 * "Error in sending mail: <the server's reply line>" (or "expected <what>,
 * got: <line>" from a server that speaks something else),
 * "Cannot connect to <server>:<port>: <reason>", "connecting to
 * <server>:<port>..." (when it takes more than a moment), "Login failed:
 * <reply>", "Error in reading mail: <reply>", "No mails in your mailbox.",
 * "Mail no. out of range, give again", "Please enter a number (-1 for the
 * menu)", "Mail deleted.", "Mail no. <n> is no longer in the mailbox.",
 * "Mail not sent.", "The server refused the recipient: <address>",
 * "checking the password...", "The password was refused 3 times: the
 * client ends.", "The mail is kept: choose 2 to send it again or to save
 * it in a file.", "Mail saved in <file>.", "Cannot save the mail in
 * <file>: <reason>".
 *
 * Input: lines of any length (getline). Blank lines before From:, To: and
 * Subject: are skipped, and so is one blank line right after Subject: (the
 * separator the assignment shows); the body is the rest up to the line ".".
 * A body line over 998 octets is sent as several lines (RFC 5322 2.1.1); CR
 * bytes in the body are dropped. End of input at any other prompt ends the
 * program (exit 0). Server text and mail are shown with control characters
 * (C0, DEL, C1), bidi controls (U+061C, U+200E, U+200F, U+202A..U+202E,
 * U+2066..U+2069), U+2028, U+2029 and bytes that are not UTF-8 as '?': no
 * escape sequence reaches the terminal, and no text shows reordered. On a
 * terminal the key after a mail and the pager's key are one raw keypress.
 *
 * Limits: a typed mail 25 MiB; a mail read 25 MiB (the rest not shown); a
 * server reply line 4096 octets; a line of a mail 1 MiB (longer: a note
 * instead); MIME parts 64 listed, multiparts and enclosed mails 8 deep;
 * each reply -t.
 *
 * Exit codes: 0 quit or end of input, 1 out of memory, 2 bad usage, 3 the
 * password refused 3 times at the start. SIGINT and SIGTERM kill it as
 * usual, after the terminal is restored.
 *
 * Where to look: menu[] is the table of options, menu_loop the loop. The
 * start: ask_password, login_check -> pop_check (checking, pop_connect,
 * pop_login), secret_done. Sessions: smtp_open and smtp_close; pop_open
 * (pop_connect, pop_login, pop_capa, pop_stat) and pop_close. Logins:
 * smtp_auth (smtp_cram, smtp_login), pop_login (pop_apop, pop_cram,
 * pop_pass); secrets go out only through send_secret. Send
 * Mail: opt_send_mail -> send_kept (save_mail), smtp_probe
 * (smtp_login_check), read_mail, check_typed_mail (check_headers,
 * parse_address_list), smtp_send (smtp_open, smtp_hello, smtp_envelope,
 * send_headers -> send_subject, send_body), keep_mail. Manage Mail:
 * opt_manage_mail -> list_mails (list_page -> pop_open, list_row ->
 * row_of -> sender_of, received_text, add_row -> list_columns; page_text),
 * choose_mail, read_one (fetch_mail -> pop_locate; show_mail ->
 * view_headers, view_body -> view_entity (view_multipart, view_enclosed,
 * view_text -> entity_text -> unflow, html_to_text; attachment_line);
 * show_source; delete_mail). Server text reaches the screen only through
 * show_text; widths: char_width, line_rows; the terminal: tty_set,
 * read_key, the pager (pager_line, pager_more).
 */
/* POSIX 2008 with the XSI part, for wcwidth (the columns a character takes) */
#define _XOPEN_SOURCE 700

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <netdb.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <langinfo.h>
#include <limits.h>
#include <locale.h>
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
#include <wchar.h>


/* The usage and every option, printed by -h (the synopsis alone, on
 * stderr, after bad usage). README's copy must equal it; its "default 30"
 * is DEFAULT_TIMEOUT. */
static const char help_text[] =
	"usage: mailclient [-v] [-h] [-t seconds] server [smtp_port [pop3_port]]\n"
	"\n"
	"  server      an IPv4 or IPv6 address or a host name of the mail server\n"
	"  smtp_port   the SMTP port (default 2525)\n"
	"  pop3_port   the POP3 port (default 1100)\n"
	"  -v          show the whole SMTP/POP3 dialogue on stderr: \"C: \" what the\n"
	"              client sends, \"S: \" what the server answers (secrets as ****)\n"
	"  -t seconds  longest wait for a connection or a whole server reply\n"
	"              (default 30); a long reply gets a second more a 1000 octets\n"
	"  -h          this help on stdout\n"
	"\n"
	"Exit status: 0 quit or end of input, 1 out of memory, 2 bad usage, 3 the\n"
	"password refused 3 times at the start.\n";

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
	DEFAULT_TIMEOUT = 30,	/* seconds: connect and each whole reply */
	LOGIN_TRIES = 3,	/* passwords the start-up check asks for */
	RATE_MIN = 1000,	/* octets a second a multi-line reply must keep up past -t */
	MOMENT_MS = 500,	/* a connection slower than this says "connecting to" */
	CHECKING_MS = 800,	/* a password check slower than this says
				 * "checking the password..."; it is later
				 * than "connecting to", so that the two
				 * never mix */
	COL_NUMBER = 7,		/* list columns: "Sl. No." */
	COL_FROM = 24,
	COL_RECEIVED = 20,	/* "YYYY-MM-DD : HH : MM" */
	COL_SUBJECT_MIN = 10,	/* the subject takes the rest: 22 in 80 columns */
	COL_FROM_MIN = 8,	/* a narrow window: From this narrow, */
	COL_DATE = 10,		/* Received only its date "YYYY-MM-DD", */
	COL_NUMBER_MIN = 3,	/* "No." for "Sl. No." */
	LIST_BATCH = 100,	/* rows a session fetches when nobody pages */
	HEAD_MAX = 256 << 10,	/* the header section the list reads of a mail */
	UID_MAX = 71,		/* RFC 1939 7: a unique-id, 1 to 70 characters */
	SHOWN_MAX = 200,	/* an unexpected reply, quoted in the error */
	CHARSET_MAX = 48,	/* a charset name (RFC 2978: at most 40) */
	TYPE_MAX = 128,		/* a media type "type/subtype" (RFC 6838 4.2: 127) */
	MIME_PARTS = 64,	/* parts of a mail listed; more are counted */
	MIME_KIDS = 64,		/* body parts of one multipart looked at */
	MIME_DEPTH = 8		/* multiparts and enclosed mails inside each other */
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

struct mail;

/* The user's side: the credentials kept for POP3 and the stdin line reader. */
struct client {
	char *username, *password;
	int checked;		/* a server took the password (POP3 login, SMTP AUTH) */
	struct mail *kept;	/* a typed mail that could not be sent, or NULL */
	char *line;		/* the last line read, without its line end */
	size_t len;		/* its length */
	size_t cap;		/* getline's buffer size */
};

/* What a menu handler wants next (NEXT_LIST: Manage Mail's list again). */
enum next { NEXT_MENU, NEXT_EXIT, NEXT_LIST };

/* The screen: its size, learned again before each list and mail (the
 * window may have been resized meanwhile), and its charset, learned once. */
static struct screen {
	int cols, rows;		/* TIOCGWINSZ; 80 x 24 when not known */
	int paging;		/* stdin and stdout are a terminal of known size */
	int convert;		/* the terminal's charset is not UTF-8: text */
	iconv_t to_term;	/* goes through this conversion from UTF-8 */
	locale_t wide;		/* a UTF-8 locale for wcwidth; 0: none found */
} scr = { 80, 24, 0, 0, NULL, (locale_t)0 };

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

/* text_line - the line of s[size] at *pos, without its LF, into line and
 * len, and *pos past it (never past size). It returns -1 when no line is
 * left. */
static int text_line(const char *s, size_t size, size_t *pos, const char **line, size_t *len)
{
	const char *lf;

	if (*pos >= size)
		return -1;
	*line = s + *pos;
	lf = memchr(*line, '\n', size - *pos);
	*len = lf ? (size_t)(lf - *line) : size - *pos;
	*pos += *len + (lf != NULL);
	return 0;
}

/* next_line - text_line over a buffer */
static int next_line(const struct buf *text, size_t *pos, const char **line, size_t *len)
{
	return text_line(text->p, text->len, pos, line, len);
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

/* show_converted - one UTF-8 character in the terminal's charset, or '?'
 * when that charset has no such character */
static void show_converted(const char *ch, size_t n)
{
	char out[16], *in = (char *)ch, *o = out;
	size_t left = n, room = sizeof out;

	if (iconv(scr.to_term, &in, &left, &o, &room) == (size_t)-1
	    || iconv(scr.to_term, NULL, NULL, &o, &room) == (size_t)-1)
		putchar('?');
	else
		fwrite(out, 1, sizeof out - room, stdout);
	(void)iconv(scr.to_term, NULL, NULL, NULL, NULL);	/* the initial state */
}

/*
 * show_text - print s[len] on stdout with each control character or stray
 * byte as '?'. A mail and a server's reply are someone else's text, and if
 * they were shown as they are, escape sequences in them (ESC, CSI, OSC ...)
 * could drive the terminal. The bidi controls and the line and paragraph
 * separators are shown as '?' too, as the log escapes them (log_hidden),
 * because U+202E would make "gnp.exe" read "exe.png". TAB and other
 * well-formed UTF-8 are kept. A terminal in another charset gets the
 * characters converted.
 */
static void show_text(const char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		int safe;
		size_t n = char_len((const unsigned char *)s + i, len - i, &safe);

		if (!safe || log_hidden((const unsigned char *)s + i, n))
			putchar('?');
		else if (n > 1 && scr.convert)
			show_converted(s + i, n);
		else
			fwrite(s + i, 1, n, stdout);
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
 * terminal, starting from the user's settings. ECHO goes off for a
 * password, and ICANON too for one raw key. It returns -1 when stdin is
 * not a terminal, and the caller then reads a line. */
static int tty_set(tcflag_t clear, tcflag_t set)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || (!tty_changed && tcgetattr(STDIN_FILENO, &tty_saved) < 0))
		return -1;	/* changed already: tty_saved holds the user's settings */
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

/* read_key's answer when stdin is no terminal (EOF is -1) */
#define NO_TTY (-2)

/* Set by Ctrl-C while a mail is typed: the mail is not sent. */
static volatile sig_atomic_t interrupted;

/* Whether stdout is a terminal, learned once: the signal handler asks. */
static int stdout_tty;

/* on_fatal_signal - restore the terminal, then die of the signal as usual,
 * so the shell sees the real cause and gets back a terminal that echoes;
 * after Ctrl-C (the terminal shows "^C") a line end, so that the shell's
 * prompt starts a line of its own */
static void on_fatal_signal(int sig)
{
	if (tty_changed)
		(void)tcsetattr(STDIN_FILENO, TCSANOW, &tty_saved);
	if ((sig == SIGINT || sig == SIGQUIT) && stdout_tty) {
		ssize_t shown = write(STDOUT_FILENO, "\n", 1);

		(void)shown;	/* nothing to be done if it fails */
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* on_interrupt - note a Ctrl-C that comes while a mail is typed. The read
 * under way then fails with EINTR, which ends it. */
static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

/*
 * typing_mode - while on, Ctrl-C no longer makes the terminal throw away
 * what was typed (NOFLSH). A line that wait_line saw is then still there
 * for the read that follows, however late the Ctrl-C comes. Turned off, it
 * restores the user's settings, and after a Ctrl-C it throws away the
 * typed-ahead input, as the terminal itself would have done.
 */
static void typing_mode(int on)
{
	struct termios t;

	if (!isatty(STDIN_FILENO))
		return;
	if (!on) {
		tty_restore();
		if (interrupted && tcflush(STDIN_FILENO, TCIFLUSH) < 0 && verbose)
			log_msg("tcflush: %s", strerror(errno));
		return;
	}
	if (tty_changed || tcgetattr(STDIN_FILENO, &tty_saved) < 0)
		return;
	t = tty_saved;
	t.c_lflag |= NOFLSH;
	tty_changed = 1;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) < 0)
		tty_changed = 0;
}

/*
 * catch_interrupt - while on, Ctrl-C only sets interrupted. On a terminal
 * SIGINT is then blocked except inside wait_line and the read after it
 * (read_typed_line), and the terminal keeps its input (typing_mode).
 * Turned off, Ctrl-C ends the program again, as at the menu. SIGINT is
 * unblocked before that handler comes back, so a late one that was
 * pending only sets the flag.
 */
static void catch_interrupt(int on)
{
	struct sigaction sa = { .sa_handler = on ? on_interrupt : on_fatal_signal };
	sigset_t block;

	sigemptyset(&sa.sa_mask);
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	if (on) {
		interrupted = 0;
		if (sigaction(SIGINT, &sa, NULL) < 0)
			log_msg("sigaction SIGINT: %s", strerror(errno));
	}
	typing_mode(on);
	if (isatty(STDIN_FILENO) && sigprocmask(on ? SIG_BLOCK : SIG_UNBLOCK, &block, NULL) < 0)
		log_msg("sigprocmask: %s", strerror(errno));	/* a pipe: getline gets EINTR */
	if (!on && sigaction(SIGINT, &sa, NULL) < 0)
		log_msg("sigaction SIGINT: %s", strerror(errno));
}

/* wait_line - wait until stdin has a line or Ctrl-C comes; SIGINT is let
 * in only inside pselect. It waits only on a terminal, where stdin is
 * unbuffered, because a pipe's line may already be in stdio's buffer. It
 * returns -1 after Ctrl-C. */
static int wait_line(void)
{
	sigset_t mask;
	fd_set in;

	if (!isatty(STDIN_FILENO) || sigprocmask(SIG_SETMASK, NULL, &mask) < 0)
		return interrupted ? -1 : 0;
	sigdelset(&mask, SIGINT);
	fflush(stdout);
	while (!interrupted) {
		FD_ZERO(&in);
		FD_SET(STDIN_FILENO, &in);
		if (pselect(STDIN_FILENO + 1, &in, NULL, NULL, NULL, &mask) > 0 || errno != EINTR)
			return 0;	/* a line, or an error for getline to find */
	}
	return -1;
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

/*
 * read_typed_line - read a line of the mail being typed. It returns -1
 * after Ctrl-C or at the end of input. wait_line lets SIGINT in while
 * nothing is typed. The read itself runs with SIGINT let in too, so that a
 * Ctrl-C is seen the moment the read ends. The read cannot wait for ever,
 * because it starts only once wait_line saw a line, and the terminal keeps
 * that line even if a Ctrl-C comes in between (typing_mode's NOFLSH). The
 * flag is checked again after the read.
 */
static int read_typed_line(struct client *cl)
{
	sigset_t intr, old;
	int r;

	if (wait_line() < 0)
		return -1;
	if (sigemptyset(&intr) < 0 || sigaddset(&intr, SIGINT) < 0
	    || sigprocmask(SIG_UNBLOCK, &intr, &old) < 0)
		return read_input(cl);	/* as on a pipe */
	r = interrupted ? -1 : read_input(cl);
	if (sigprocmask(SIG_SETMASK, &old, NULL) < 0)
		log_msg("sigprocmask: %s", strerror(errno));
	return interrupted ? -1 : r;
}

/* ask - print a prompt and read the answer; -1 at the end of input */
static int ask(struct client *cl, const char *prompt)
{
	fputs(prompt, stdout);
	return read_input(cl);
}

/* ask_secret - as ask, but without echo when stdin is a terminal. ECHONL
 * still echoes the newline, so the next text starts on a line of its own.
 * The echo stays off, the newline's too, until secret_done: a key typed
 * while the password is checked must not show either. */
static int ask_secret(struct client *cl, const char *prompt)
{
	int r;

	(void)tty_set(ECHO, ECHONL);	/* before the prompt: no early key echoed */
	fputs(prompt, stdout);
	r = read_input(cl);
	(void)tty_set(ECHO | ECHONL, 0);
	return r;
}

/* secret_done - the password's prompt is over (checked, or not to be):
 * what was typed meanwhile is dropped (it may be the password again, typed
 * ahead), then the terminal echoes as before */
static void secret_done(void)
{
	if (tty_changed && tcflush(STDIN_FILENO, TCIFLUSH) < 0 && verbose)
		log_msg("tcflush: %s", strerror(errno));
	tty_restore();
}

/* on_checking - on SIGALRM, say that the check of a password takes more
 * than a moment, because a server waits up to 15 s before it answers a
 * wrong one. It uses only write(2), which is safe in a signal handler. */
static void on_checking(int sig)
{
	static const char text[] = "checking the password...\n";
	ssize_t shown = write(STDOUT_FILENO, text, sizeof text - 1);

	(void)sig;
	(void)shown;	/* nothing to be done if it fails */
}

/* checking - while on, a timer says "checking the password..." once
 * CHECKING_MS have gone by; off stops it. The signal disturbs nothing,
 * because it is set with SA_RESTART and the waits of the conn block go on
 * after EINTR. */
static void checking(int on)
{
	struct itimerval t = { { 0, 0 }, { 0, on ? CHECKING_MS * 1000 : 0 } };
	struct sigaction sa = { .sa_handler = on_checking, .sa_flags = SA_RESTART };

	sigemptyset(&sa.sa_mask);
	fflush(stdout);	/* what came before shows before it */
	if (on && sigaction(SIGALRM, &sa, NULL) < 0)
		log_msg("sigaction SIGALRM: %s", strerror(errno));
	if (setitimer(ITIMER_REAL, &t, NULL) < 0)
		log_msg("setitimer: %s", strerror(errno));
	if (!on)
		fflush(stdout);
}

/* read_key - show prompt, then wait for one raw keypress on the terminal
 * (the assignment's getchar: no Enter needed, not echoed). It returns the
 * key, EOF at the end of input, or NO_TTY, having shown nothing, when
 * stdin is no terminal. */
static int read_key(const char *prompt)
{
	int ch;

	if (tty_set(ICANON | ECHO, 0) < 0)
		return NO_TTY;
	fputs(prompt, stdout);	/* after tty_set: no early key is echoed */
	fflush(stdout);
	ch = getchar();
	if (ch == tty_saved.c_cc[VEOF])
		ch = EOF;	/* Ctrl-D means the end, raw or not */
	/* The answer is one key. The rest of a sequence (an arrow key sends
	 * "ESC [ A") must not start the next answer; stdin is unbuffered on
	 * a tty. */
	if (tcflush(STDIN_FILENO, TCIFLUSH) < 0 && verbose)
		log_msg("tcflush: %s", strerror(errno));
	tty_restore();
	return ch;
}

/* ask_key - wait for one key: one raw keypress on a terminal, else the
 * first character of a line. It returns the key, or EOF at the end of
 * input. */
static int ask_key(struct client *cl, const char *prompt)
{
	int ch = read_key(prompt);

	if (ch != NO_TTY) {
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
 * ask_credential - one of the two start prompts. It is asked again while
 * the answer is empty or holds a space or a control byte, because user.txt
 * splits its lines at white space, so no name or password of an account
 * holds one. It returns a copy, or NULL at the end of input, or NULL with
 * errno ENOMEM when memory runs out.
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

/* ask_password - ask "Password: " without echo, into cl->password, after
 * wiping the old one. The echo stays off until secret_done, which the
 * check of the password calls. It returns -1 at the end of input, or when
 * memory runs out. */
static int ask_password(struct client *cl)
{
	char *password = ask_credential(cl, "Password: ", 1);

	if (!password) {
		secret_done();
		return -1;
	}
	if (cl->password) {
		secret_wipe(cl->password, strlen(cl->password));
		free(cl->password);
	}
	cl->password = password;
	cl->checked = 0;
	return 0;
}

/* ---------------------------------------------------------------- the screen: size, charset, pager */

/*
 * screen_charset - learn the terminal's charset from the locale (LC_ALL,
 * LC_CTYPE, LANG). Mail text is UTF-8 inside the client, and is converted
 * for a terminal in another charset. The C locale says ASCII but mostly
 * means that no locale was set, so its terminal is taken as UTF-8, as
 * Python does (PEP 538). LC_CTYPE goes back to "C" at once, so that
 * isalpha and the like keep their ASCII meaning in the parsers.
 */
static void screen_charset(void)
{
	char codeset[CHARSET_MAX] = "", name[CHARSET_MAX + 16];

	if (setlocale(LC_CTYPE, ""))
		snprintf(codeset, sizeof codeset, "%s", nl_langinfo(CODESET));
	(void)setlocale(LC_CTYPE, "C");
	if (!codeset[0] || strcasecmp(codeset, "UTF-8") == 0 || strcasecmp(codeset, "UTF8") == 0
	    || strcmp(codeset, "ANSI_X3.4-1968") == 0)
		return;
	snprintf(name, sizeof name, "%s//TRANSLIT", codeset);	/* glibc: e for \u00e9 */
	scr.to_term = iconv_open(name, "UTF-8");
	if (scr.to_term == (iconv_t)-1)
		scr.to_term = iconv_open(codeset, "UTF-8");
	scr.convert = scr.to_term != (iconv_t)-1;
}

/* is_utf8 - whether a codeset name is UTF-8's */
static int is_utf8(const char *codeset)
{
	return strcasecmp(codeset, "UTF-8") == 0 || strcasecmp(codeset, "UTF8") == 0;
}

/* screen_widths - find a UTF-8 locale for wcwidth, which knows how many
 * columns a character takes. The user's own locale (LC_ALL, LC_CTYPE,
 * LANG) is taken when it is UTF-8, else C.UTF-8 (glibc 2.35 and musl have
 * it built in), else en_US's. Without any, char_width falls back on a
 * table of the wide blocks. A terminal in another charset needs none,
 * because char_width counts 1 for each of its characters. */
static void screen_widths(void)
{
	static const char *const names[] = { "", "C.UTF-8", "C.utf8", "en_US.UTF-8" };

	for (size_t i = 0; !scr.convert && i < sizeof names / sizeof names[0]; i++) {
		locale_t loc = newlocale(LC_CTYPE_MASK, names[i], (locale_t)0);

		if (loc != (locale_t)0 && is_utf8(nl_langinfo_l(CODESET, loc))) {
			scr.wide = loc;
			return;
		}
		if (loc != (locale_t)0)
			freelocale(loc);
	}
}

/* screen_size - the window's size (TIOCGWINSZ), and whether to page: only
 * when stdin and stdout are a terminal whose size is known */
static void screen_size(void)
{
	struct winsize ws;
	int known = isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0
		    && ws.ws_col > 0 && ws.ws_row > 0;

	scr.cols = known ? ws.ws_col : 80;
	scr.rows = known ? ws.ws_row : 24;
	scr.paging = known && scr.rows >= 3 && isatty(STDIN_FILENO);
}

/* code_point - the code point of the well-formed UTF-8 character s[n] */
static unsigned long code_point(const unsigned char *s, size_t n)
{
	unsigned long cp = n == 1 ? s[0] : s[0] & (0x7f >> n);

	for (size_t i = 1; i < n; i++)
		cp = cp << 6 | (s[i] & 0x3f);
	return cp;
}

/* table_width - the columns of cp when no UTF-8 locale can be had: 0 for
 * the common combining marks and zero-width characters, 2 for the East
 * Asian wide and full-width blocks (Unicode UAX #11), else 1 */
static int table_width(unsigned long cp)
{
	static const struct { unsigned long lo, hi; int width; } ranges[] = {
		{ 0x0300, 0x036f, 0 }, { 0x200b, 0x200f, 0 }, { 0x20d0, 0x20ff, 0 },
		{ 0xfe00, 0xfe0f, 0 }, { 0x1100, 0x115f, 2 }, { 0x2e80, 0x303e, 2 },
		{ 0x3041, 0x33ff, 2 }, { 0x3400, 0x4dbf, 2 }, { 0x4e00, 0x9fff, 2 },
		{ 0xa000, 0xa4cf, 2 }, { 0xac00, 0xd7a3, 2 }, { 0xf900, 0xfaff, 2 },
		{ 0xfe30, 0xfe4f, 2 }, { 0xff00, 0xff60, 2 }, { 0xffe0, 0xffe6, 2 },
		{ 0x1f300, 0x1f64f, 2 }, { 0x1f900, 0x1f9ff, 2 }, { 0x20000, 0x3fffd, 2 },
	};

	for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
		if (cp >= ranges[i].lo && cp <= ranges[i].hi)
			return ranges[i].width;
	return 1;
}

/*
 * char_width - the columns the character s[n] takes on the screen, as
 * show_text prints it. A character shown as '?' takes 1. So does any
 * character on a terminal in another charset, because conversion maps
 * characters mostly one for one. Otherwise the width is wcwidth's in a
 * UTF-8 locale (2 for CJK, 0 for a combining mark), or table_width's when
 * there is no such locale. The parsers must keep the C locale, so the
 * UTF-8 one is taken up (uselocale) only for this call.
 */
static int char_width(const unsigned char *s, size_t n, int safe)
{
	unsigned long cp;
	locale_t before;
	int w;

	if (n == 1 || !safe || scr.convert || log_hidden(s, n))
		return 1;
	cp = code_point(s, n);
	if (scr.wide == (locale_t)0)
		return table_width(cp);
	before = uselocale(scr.wide);
	w = wcwidth((wchar_t)cp);
	if (before != (locale_t)0)
		(void)uselocale(before);
	return w < 0 ? 1 : w;
}

/* text_width - the columns s[len] takes (no TAB in it: add_flat made it a
 * space) */
static size_t text_width(const char *s, size_t len)
{
	size_t cols = 0, n;
	int safe;

	for (size_t i = 0; i < len; i += n) {
		n = char_len((const unsigned char *)s + i, len - i, &safe);
		cols += (size_t)char_width((const unsigned char *)s + i, n, safe);
	}
	return cols;
}

/*
 * line_rows - the screen rows a line of text takes in a window scr.cols
 * wide, counted as a terminal wraps it. A character that does not fit in
 * what is left of a row goes to the next row, so a wide one may leave the
 * last column empty. A TAB goes on to the next multiple of 8 columns, but
 * never past the last one. A line that fills a row exactly takes that row
 * only.
 */
static int line_rows(const char *s, size_t len)
{
	size_t cols = (size_t)scr.cols, col = 0, n;
	long rows = 1;
	int safe;

	for (size_t i = 0; i < len && rows < INT_MAX; i += n) {
		const unsigned char *c = (const unsigned char *)s + i;
		size_t w;

		n = char_len(c, len - i, &safe);
		w = c[0] == '\t' ? 8 - col % 8 : (size_t)char_width(c, n, safe);
		if (c[0] == '\t' && col + w >= cols)
			w = col < cols - 1 ? cols - 1 - col : 0;
		else if (col + w > cols) {
			rows++;
			col = 0;
		}
		col += w;
	}
	return (int)rows;
}

/* A pager of the client's own, as more(1). It shows a screenful, then
 * "--More--", and waits for a key: space for the next screenful, Enter for
 * one more line, q to stop. */
struct pager {
	int room;		/* screen rows left before --More-- */
	int fresh;		/* just after a key: the next line shows, however tall */
	int stopped;		/* q: show no more */
};

/* pager_start - a pager for one list or mail, the screen's size learned anew */
static void pager_start(struct pager *pg)
{
	screen_size();
	pg->room = scr.paging ? scr.rows - 1 : INT_MAX;	/* the last row: --More-- */
	pg->fresh = 1;
	pg->stopped = 0;
}

/* pager_more - "--More--" and a key, then the prompt is wiped. The
 * window's size is read again: one resized meanwhile (SIGWINCH, which the
 * client leaves ignored) gets its next page at its new size, so no line
 * scrolls away unseen. It returns 0 when the user wants no more (q, or
 * the end of input). */
static int pager_more(struct pager *pg)
{
	for (;;) {
		int key = read_key("--More--");

		fputs("\r        \r", stdout);
		screen_size();
		if (key == ' ' || key == '\n' || key == '\r') {
			pg->room = key == ' ' ? scr.rows - 1 : 1;
			pg->fresh = 1;
			return 1;
		}
		if (key == 'q' || key == 'Q' || key == EOF || key == NO_TTY) {
			pg->stopped = 1;
			return 0;
		}
	}
}

/* pager_line - one line of text through show_text, after --More-- when
 * it does not fit on the screen. It returns -1 once the user said q. */
static int pager_line(struct pager *pg, const char *s, size_t len)
{
	int rows = line_rows(s, len);

	if (pg->stopped || (scr.paging && rows > pg->room && !pg->fresh && !pager_more(pg)))
		return -1;
	show_text(s, len);
	putchar('\n');
	pg->room = rows < pg->room ? pg->room - rows : 0;
	pg->fresh = 0;
	return 0;
}

/* page_text - each line of text through the pager, until q */
static void page_text(struct pager *pg, const struct buf *text)
{
	size_t pos = 0, len;
	const char *line;

	while (next_line(text, &pos, &line, &len) == 0)
		if (pager_line(pg, line, len) < 0)
			return;
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

/* check_typed_mail - split the typed text into a mail: the header lines, then the
 * body after one optional blank line. m->why says what is wrong, or is NULL. */
static void check_typed_mail(const struct buf *text, struct mail *m)
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
 * at the end of input (Ctrl-D) or after Ctrl-C, else 0.
 */
static int read_mail(struct client *cl, struct buf *text)
{
	int too_long = 0;

	for (;;) {
		if (read_typed_line(cl) < 0)
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

/* say_connecting - say "connecting to <server>:<port>...", once per dial,
 * when the server takes more than a moment, so that the user knows why
 * nothing happens. */
static void say_connecting(const char *port, int *told)
{
	if (*told)
		return;
	printf(strchr(cfg.server, ':') ? "connecting to [%s]:%s...\n"
	       : "connecting to %s:%s...\n", cfg.server, port);
	fflush(stdout);
	*told = 1;
}

/* wait_fd - poll fd for events at most ms milliseconds (a signal does not
 * shorten the wait); > 0 ready, 0 not yet, -1 error */
static int wait_fd(int fd, short events, long long ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	long long end = now_ms() + ms;
	int n;

	while ((n = poll(&p, 1, (int)(ms > 0 ? ms : 0))) < 0 && errno == EINTR)
		ms = end - now_ms();
	return n;
}

/* connect_bounded - connect fd to sa, waiting at most the timeout: a plain
 * connect to a host that drops packets waits for minutes. Past a moment it
 * says so. It returns -1, errno set, on failure. */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len,
			   const char *port, int *told)
{
	int flags = fcntl(fd, F_GETFL), err = 0, n;
	socklen_t errlen = sizeof err;
	long long end = now_ms() + cfg.timeout * 1000LL;

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -1;
	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return -1;
	if ((n = wait_fd(fd, POLLOUT, MOMENT_MS)) == 0) {
		say_connecting(port, told);
		n = wait_fd(fd, POLLOUT, end - now_ms());
	}
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
 * (a host name may have IPv6 and IPv4 ones). A server slow to connect or
 * to greet gets "connecting to ...". It returns the socket, or -1 after
 * printing "Cannot connect to <server>:<port>: <reason>". */
static int dial(const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	const char *why = "no address";
	int fd = -1, told = 0, err = getaddrinfo(cfg.server, port, &hints, &res);

	if (err != 0)
		why = err == EAI_SYSTEM ? strerror(errno) : gai_strerror(err);
	for (ai = err ? NULL : res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0) {
			why = strerror(errno);
		} else if (connect_bounded(fd, ai->ai_addr, ai->ai_addrlen, port, &told) < 0) {
			why = strerror(errno);
			close_fd(fd, "connection");
			fd = -1;
		}
	}
	if (err == 0)
		freeaddrinfo(res);
	if (fd >= 0 && verbose)
		log_msg("connected to %s port %s", cfg.server, port);
	if (fd >= 0 && wait_fd(fd, POLLIN, MOMENT_MS) == 0)
		say_connecting(port, &told);	/* the greeting is slow to come */
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

/* unexpected - line[len] is no reply of the protocol spoken, so it is
 * rewritten as "expected <want>, got: <the line>". A client pointed at the
 * wrong port (the POP3 one for SMTP, say) then tells what it found there. */
static void unexpected(char *line, size_t cap, size_t len, const char *want)
{
	char got[SHOWN_MAX];

	snprintf(got, sizeof got, "%.*s", (int)(len < sizeof got ? len : sizeof got - 1), line);
	snprintf(line, cap, "expected %s, got: %s", want, got);
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
 * mean something else: it returns -1. Lines with a secret go through
 * send_secret instead. */
static int send_vcmd(struct conn *c, const char *fmt, va_list ap)
{
	char line[CMD_LINE_MAX - 2];	/* and CRLF */
	int n = vsnprintf(line, sizeof line, fmt, ap);

	if (n < 0 || (size_t)n >= sizeof line)
		return -1;	/* a caller's bug or an overlong argument */
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

/* ---------------------------------------------------------------- secrets: passwords, digests, SASL */

/* The SASL mechanisms (RFC 4422) the client speaks, as bits of what a
 * server offers. The client takes the strongest one, because CRAM-MD5
 * sends a digest, while PLAIN and LOGIN send the password itself. */
enum { SASL_CRAM_MD5 = 1, SASL_PLAIN = 2, SASL_LOGIN = 4 };

/* send_secret - as send_cmd, for a line that holds a secret: -v shows
 * shown instead ("PASS ****"), and the formatted line is wiped at once */
static int send_secret(struct conn *c, const char *shown, const char *fmt, ...)
{
	char line[CMD_LINE_MAX - 2];
	va_list ap;
	int n, ok;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	ok = n >= 0 && (size_t)n < sizeof line;
	if (ok) {
		dialogue('C', shown, strlen(shown));
		conn_write(c, line, (size_t)n);
		conn_write(c, "\r\n", 2);
	}
	secret_wipe(line, sizeof line);
	return ok ? 0 : -1;
}

/* forget_sent - once the reply to a secret came (so it was sent), wipe the
 * output buffer that still holds its bytes */
static void forget_sent(struct conn *c)
{
	if (c->out_len == 0)
		secret_wipe(c->out, sizeof c->out);
}

/* clear_note - tell the user, once per run, that the password is about to
 * cross the network as it is (USER/PASS, PLAIN, LOGIN), because the server
 * offers nothing better. */
static void clear_note(void)
{
	static int told;

	if (!told)
		puts("Note: the server offers no CRAM-MD5 or APOP: the password crosses "
		     "the network in clear.");
	told = 1;
}

/* cram_response - put in out[cap], in base64, the CRAM-MD5 response to the
 * challenge that text holds in base64 (RFC 2195): "<user> <hex HMAC-MD5 of
 * the challenge keyed with the password>". Only the digest leaves, never
 * the password. It returns -1 if text is not base64. */
static int cram_response(const struct client *cl, const char *text, char *out, size_t cap)
{
	unsigned char challenge[REPLY_LINE_MAX], d[16];
	char hex[33], answer[CMD_LINE_MAX];
	size_t n;
	int k, r = -1;

	if (base64_decode(text, strlen(text), challenge, sizeof challenge, &n) < 0)
		return -1;
	hmac_md5(cl->password, strlen(cl->password), challenge, n, d);
	md5_hex(d, hex);
	k = snprintf(answer, sizeof answer, "%s %s", cl->username, hex);
	if (k > 0 && (size_t)k < sizeof answer)
		r = base64_encode(answer, (size_t)k, out, cap) < 0 ? -1 : 0;
	secret_wipe(d, sizeof d);
	secret_wipe(hex, sizeof hex);
	secret_wipe(answer, sizeof answer);
	return r;
}

/* plain_response - put in out[cap], in base64, the PLAIN response "NUL user
 * NUL password" (RFC 4616). It has no authorization identity, so the user
 * acts as itself. It returns -1 if the response is too long. */
static int plain_response(const struct client *cl, char *out, size_t cap)
{
	char msg[CMD_LINE_MAX];
	size_t u = strlen(cl->username), p = strlen(cl->password);
	int r = -1;

	if (u + p + 2 <= sizeof msg) {
		msg[0] = '\0';
		memcpy(msg + 1, cl->username, u);
		msg[u + 1] = '\0';
		memcpy(msg + u + 2, cl->password, p);
		r = base64_encode(msg, u + p + 2, out, cap) < 0 ? -1 : 0;
	}
	secret_wipe(msg, sizeof msg);
	return r;
}

/* apop_digest - RFC 1939 7: the hex MD5 of the greeting's timestamp
 * followed by the password */
static void apop_digest(const struct client *cl, const char *stamp, char hex[33])
{
	struct md5 m;
	unsigned char d[16];

	md5_init(&m);
	md5_update(&m, stamp, strlen(stamp));
	md5_update(&m, cl->password, strlen(cl->password));
	md5_final(&m, d);
	md5_hex(d, hex);
	secret_wipe(d, sizeof d);
}

/* ---------------------------------------------------------------- SMTP (RFC 5321) */

/* An SMTP connection and its last reply. */
struct smtp {
	struct conn c;
	char line[REPLY_LINE_MAX];	/* the reply's last line, or what went wrong */
	int code;			/* its code; 0: no reply (the connection is gone) */
	int in_ehlo;			/* reading the EHLO reply: note its keywords */
	int ehlo_8bit;			/* EHLO listed 8BITMIME */
	int auth;			/* the SASL_ mechanisms EHLO's AUTH listed */
	const char *want;		/* the reply awaited, for a line that is none */
	char refused[CMD_LINE_MAX];	/* the recipient RCPT TO was refused for */
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

/* has_word - whether the space-separated list s[len] holds word (any case) */
static int has_word(const char *s, size_t len, const char *word)
{
	size_t w = strlen(word), i = 0;

	while (i < len) {
		size_t k = 0;

		while (i + k < len && s[i + k] != ' ')
			k++;
		if (k == w && strncasecmp(s + i, word, w) == 0)
			return 1;
		i += k + 1;
	}
	return 0;
}

/* ehlo_keyword - note what an EHLO reply line "250-KEYWORD params" offers
 * (RFC 5321 4.1.1.1): 8BITMIME (RFC 6152), AUTH and its mechanisms (RFC
 * 4954 3) */
static void ehlo_keyword(struct smtp *s, const char *line, size_t len)
{
	if (len < 4)
		return;
	line += 4;
	len -= 4;
	if (len >= 8 && strncasecmp(line, "8BITMIME", 8) == 0 && (len == 8 || line[8] == ' '))
		s->ehlo_8bit = 1;
	if (len > 5 && strncasecmp(line, "AUTH ", 5) == 0)
		s->auth = (has_word(line + 5, len - 5, "CRAM-MD5") ? SASL_CRAM_MD5 : 0)
			  | (has_word(line + 5, len - 5, "PLAIN") ? SASL_PLAIN : 0)
			  | (has_word(line + 5, len - 5, "LOGIN") ? SASL_LOGIN : 0);
}

/* smtp_reply_lines - read the lines of one reply. "DDD-" lines continue
 * it, and the code of the last line counts (RFC 5321 4.2.1). It returns
 * that code, or 0 when no reply came, and s->line then says why. */
static int smtp_reply_lines(struct smtp *s)
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
			unexpected(s->line, sizeof s->line, len,
				   s->want ? s->want : "an SMTP reply (a 3-digit code)");
			return 0;
		}
		if (s->in_ehlo)
			ehlo_keyword(s, s->line, len);
		if (len == 3 || s->line[3] == ' ')
			return s->code;
	}
}

/* smtp_reply - read one whole reply, within -t from now: a server that
 * drips a byte at a time gains nothing */
static int smtp_reply(struct smtp *s)
{
	int code;

	s->c.deadline_ms = now_ms() + s->c.timeout_ms;
	code = smtp_reply_lines(s);
	s->c.deadline_ms = 0;	/* sending the mail waits as long as it goes on */
	return code;
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

/* smtp_hello - say EHLO, or HELO when the server refuses EHLO with a
 * 5xx: an older server knows only HELO (RFC 5321 3.2). */
static int smtp_hello(struct smtp *s)
{
	char name[HOST_MAX + 16];
	int r;

	local_name(s->c.fd, name, sizeof name);
	s->in_ehlo = 1;
	r = smtp_cmd(s, 2, "EHLO %s", name);
	s->in_ehlo = 0;
	if (r == 0)
		return 0;
	if (s->code / 100 != 5)
		return -1;	/* 4xx or no reply: HELO would not help */
	s->ehlo_8bit = 0;
	s->auth = 0;
	return smtp_cmd(s, 2, "HELO %s", name);
}

/* smtp_secret - send the line head text, text a secret (send_secret), and
 * read the reply; 0 if its code is in class */
static int smtp_secret(struct smtp *s, int class, const char *shown, const char *head,
		       const char *text)
{
	int r;

	if (send_secret(&s->c, shown, "%s%s", head, text) < 0) {
		snprintf(s->line, sizeof s->line, "line too long for SMTP");
		s->code = 0;
		return -1;
	}
	r = smtp_expect(s, class);
	forget_sent(&s->c);
	return r;
}

/* smtp_cram - log in by AUTH CRAM-MD5 (RFC 4954, RFC 2195). The server's
 * 334 carries the challenge. A challenge that is not base64 is cancelled
 * with "*". */
static int smtp_cram(struct smtp *s, const struct client *cl)
{
	char answer[CMD_LINE_MAX];
	const char *text;
	int r;

	if (smtp_cmd(s, 3, "AUTH CRAM-MD5", NULL) < 0)
		return -1;
	text = strlen(s->line) > 4 ? s->line + 4 : "";	/* "334 <base64>" */
	if (cram_response(cl, text, answer, sizeof answer) < 0) {
		(void)smtp_cmd(s, 5, "*", NULL);	/* RFC 4954 4: cancel */
		if (s->code)
			snprintf(s->line, sizeof s->line, "bad CRAM-MD5 challenge from the server");
		return -1;
	}
	r = smtp_secret(s, 2, "****", "", answer);
	secret_wipe(answer, sizeof answer);
	return r;
}

/* smtp_login - AUTH LOGIN: the name, then the password, each in base64
 * after the server's 334 */
static int smtp_login(struct smtp *s, const struct client *cl)
{
	char text[CMD_LINE_MAX];
	int r = -1;

	if (smtp_cmd(s, 3, "AUTH LOGIN", NULL) < 0)
		return -1;
	if (base64_encode(cl->username, strlen(cl->username), text, sizeof text) >= 0
	    && smtp_secret(s, 3, "****", "", text) == 0
	    && base64_encode(cl->password, strlen(cl->password), text, sizeof text) >= 0)
		r = smtp_secret(s, 2, "****", "", text);
	else if (s->code == 0 || s->code / 100 == 3)
		snprintf(s->line, sizeof s->line, "password too long for SMTP");
	secret_wipe(text, sizeof text);
	return r;
}

/* smtp_auth - log in with the strongest mechanism EHLO offered (RFC 4954):
 * CRAM-MD5, else PLAIN (with the initial response), else LOGIN. A server
 * that offers none of them gets the mail without AUTH. */
static int smtp_auth(struct smtp *s, const struct client *cl)
{
	char text[CMD_LINE_MAX];
	int r;

	if (s->auth & SASL_CRAM_MD5)
		return smtp_cram(s, cl);
	if (!s->auth)
		return 0;
	clear_note();
	if (!(s->auth & SASL_PLAIN))
		return smtp_login(s, cl);
	if (plain_response(cl, text, sizeof text) < 0) {
		snprintf(s->line, sizeof s->line, "password too long for SMTP");
		return -1;
	}
	r = smtp_secret(s, 2, "AUTH PLAIN ****", "AUTH PLAIN ", text);
	secret_wipe(text, sizeof text);
	return r;
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

	if (smtp_cmd(s, 2, s->ehlo_8bit && has_8bit(&m->body)
		     ? "MAIL FROM:<%s> BODY=8BITMIME" : "MAIL FROM:<%s>", m->from.p) < 0)
		return -1;
	while (*p) {
		size_t n = strcspn(p, ",");
		char rcpt[CMD_LINE_MAX];

		if (n >= sizeof rcpt)
			n = sizeof rcpt - 1;	/* send_cmd refuses it anyway */
		memcpy(rcpt, p, n);
		rcpt[n] = '\0';
		if (smtp_cmd(s, 2, "RCPT TO:<%s>", rcpt) < 0) {
			memcpy(s->refused, rcpt, n + 1);	/* named to the user */
			return -1;
		}
		p += n;
		p += strspn(p, ", ");
	}
	return 0;
}

/* message_id_line - a "Message-ID: <seconds.nanoseconds.pid@domain>" line.
 * It must be unique (RFC 5322 3.6.4): two clients differ in the pid, and
 * one client's mails differ in the time. */
static void message_id_line(char *out, size_t cap, const char *from)
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

/* send_to_header - send "To: a@b, c@d", folded before 78 columns (RFC 5322
 * 2.1.1), each folded line going on with a space (2.2.3). A long list of
 * recipients then stays readable, and under 998 octets a line. */
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

/* RFC 2047 2: an encoded word is at most 75 characters; 42 octets make 56
 * of base64, so "Subject: =?UTF-8?B?...?=" stays under 78 (RFC 5322 2.1.1). */
#define WORD_OCTETS 42

/* word_octets - how much of s[len] goes into one encoded word: at most
 * WORD_OCTETS octets, of whole UTF-8 characters, because RFC 2047 5 splits
 * no character between two words. */
static size_t word_octets(const char *s, size_t len)
{
	size_t n = 0;
	int safe;

	while (n < len) {
		size_t c = char_len((const unsigned char *)s + n, len - n, &safe);

		if (n + c > WORD_OCTETS)
			break;
		n += c;
	}
	return n;
}

/* send_subject - "Subject: <text>": as typed when it is ASCII, else as
 * RFC 2047 encoded words in UTF-8 and base64 ("B"), a folded line each.
 * The white space between two encoded words is no part of the text (6.2),
 * so the subject decodes back to what was typed. */
static void send_subject(struct conn *c, const struct buf *subject)
{
	struct buf line = { 0 };
	size_t pos = 0;

	if (!has_8bit(subject)) {
		send_field(c, "Subject: ", subject->p);
		return;
	}
	buf_add(&line, "Subject:", 8);
	while (pos < subject->len) {
		size_t n = word_octets(subject->p + pos, subject->len - pos);
		char b64[4 * WORD_OCTETS / 3 + 8];

		if (base64_encode(subject->p + pos, n, b64, sizeof b64) < 0)
			break;	/* cannot be: b64 holds WORD_OCTETS encoded */
		if (line.len > 8) {
			send_line(c, line.p, line.len);	/* fold: the next word on a line of its own */
			line.len = 0;
		}
		buf_add(&line, " =?UTF-8?B?", 11);
		buf_add(&line, b64, strlen(b64));
		buf_add(&line, "?=", 2);
		pos += n;
	}
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
	send_subject(c, &m->subject);
	/* RFC 5322 3.3: "Mon, 23 Nov 2026 09:03:00 +0100" (C locale: English names) */
	if (localtime_r(&now, &tm)
	    && strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S %z", &tm) > 0)
		send_line(c, line, strlen(line));
	message_id_line(line, sizeof line, m->from.p);
	send_line(c, line, strlen(line));
	if (has_8bit(&m->body)) {	/* RFC 2045 5.2: else it means US-ASCII */
		send_line(c, "MIME-Version: 1.0", 17);
		send_line(c, "Content-Type: text/plain; charset=UTF-8", 39);
		send_line(c, "Content-Transfer-Encoding: 8bit", 31);	/* RFC 2045 6.2 */
	}
	send_line(c, "", 0);
}

/* piece_len - how much of a body line fits on one line of the message.
 * That is all of it up to TEXT_LINE_MAX octets (RFC 5322 2.1.1: "MUST be
 * no more than 998 characters"). A longer line is cut at that length, moved
 * back to the start of a UTF-8 character, so that no character is split
 * over two lines. */
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

/* send_body - the body lines (check_typed_mail took the CRs out), a longer one
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

/* smtp_close - send QUIT while the server still answers (RFC 5321
 * 4.1.1.10), then close and free. After a 421 the server has closed the
 * connection already (3.8). The reply to QUIT changes nothing. */
static void smtp_close(struct smtp *s)
{
	if (s->code > 0 && s->code != 421 && send_cmd(&s->c, "QUIT") == 0)
		smtp_reply(s);
	close_fd(s->c.fd, "connection");
	free(s);
}

/* smtp_open - connect and read the greeting (RFC 5321 3.1). It returns the
 * session, or NULL after telling the user why. */
static struct smtp *smtp_open(void)
{
	struct smtp *s = calloc(1, sizeof *s);
	int fd;

	if (!s) {
		puts("Error in sending mail: out of memory");
		return NULL;
	}
	if ((fd = dial(cfg.smtp_port)) < 0) {
		free(s);
		return NULL;
	}
	s->want = "an SMTP greeting (220)";
	if (conn_init(&s->c, fd, cfg.timeout) < 0)
		snprintf(s->line, sizeof s->line, "%s", strerror(errno));
	else if (smtp_expect(s, 2) == 0) {
		s->want = NULL;
		return s;
	}
	show_error("Error in sending mail", s->line);
	smtp_close(s);
	return NULL;
}

/* SMTP's reply to a password it does not take (RFC 4954 6). */
#define AUTH_REFUSED 535

/* smtp_login_check - learn whether the server takes the password, by the
 * greeting, EHLO, AUTH when offered, and QUIT. It returns 0 when it takes
 * it (or asks for none), 1 when it refused it, and -1 when the session
 * failed; the user was told. */
static int smtp_login_check(struct client *cl)
{
	struct smtp *s = smtp_open();
	int r;

	if (!s)
		return -1;
	checking(1);
	r = smtp_hello(s) == 0 && smtp_auth(s, cl) == 0 ? 0 : s->code == AUTH_REFUSED ? 1 : -1;
	checking(0);
	if (r == 0 && s->auth)
		cl->checked = 1;
	if (r != 0)
		show_error(r > 0 ? "Login failed" : "Error in sending mail", s->line);
	smtp_close(s);
	return r;
}

/*
 * smtp_probe - before the mail is typed, see that the SMTP server greets,
 * then QUIT. A server that is down, or is no SMTP server, is then found
 * out now, not after the whole mail was typed. No session stays open while
 * the user types, because a server may drop an idle one (RFC 5321
 * 4.5.3.2.7). A password that no server has taken yet, because POP3 was
 * down at the start or SMTP refused it since, is checked by an AUTH now
 * too. A refused one is asked for again, LOGIN_TRIES times at most. It
 * returns -1 after telling the user.
 */
static int smtp_probe(struct client *cl)
{
	struct smtp *s;

	for (int tries = 1; !cl->checked; tries++) {
		int r = smtp_login_check(cl);

		secret_done();	/* after a password asked again below */
		if (r <= 0)
			return r;
		if (tries == LOGIN_TRIES || ask_password(cl) < 0)
			return -1;
	}
	if (!(s = smtp_open()))
		return -1;
	smtp_close(s);
	return 0;
}

/* smtp_send - deliver a checked mail over SMTP, logged in when the server
 * offers AUTH. It tells the user how it went, naming a refused recipient,
 * then ends the session with QUIT while the server still answers. It
 * returns 0 once sent, else the failed reply's code, or -1 when there was
 * no reply. */
static int smtp_send(struct client *cl, const struct mail *m)
{
	struct smtp *s = smtp_open();
	int code;

	if (!s)
		return -1;
	if (smtp_hello(s) == 0 && smtp_auth(s, cl) == 0 && smtp_transaction(s, m) == 0) {
		puts("Mail sent successfully");
		smtp_close(s);
		return 0;
	}
	show_error("Error in sending mail", s->line);
	if (s->refused[0])
		show_error("The server refused the recipient", s->refused);
	code = s->code ? s->code : -1;
	if (code == AUTH_REFUSED)
		cl->checked = 0;	/* the next send asks for the password */
	smtp_close(s);
	return code;
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
	int has_uidl;			/* CAPA listed UIDL: 1, did not: 0, no CAPA: -1 */
	int capa;			/* CAPA before login: +OK 1, -ERR 0, not asked -1 */
	int cram;			/* CAPA's SASL listed CRAM-MD5 (RFC 5034) */
	int in_sasl;			/* a "+ " continuation answers too (AUTH) */
	int refused;			/* the login's -ERR blames the credentials */
	long count;			/* STAT: messages in the maildrop */
	const char *want;		/* the status line awaited, for a line that is none */
};

/* Set when the latest POP3 login was refused for its credentials: Manage
 * Mail then asks for the password again. */
static int login_refused;

/* pop_status - read a status line. It returns 0 for "+OK", -1 for "-ERR"
 * or no answer, and during AUTH 1 for a challenge "+ text". The indicators
 * are upper case (RFC 1939 3), so any other line means that the peer does
 * not speak POP3, and the session is given up. -t bounds the whole line,
 * so a server that drips a byte at a time gains nothing. */
static int pop_status(struct pop *p)
{
	size_t len;
	int crlf;
	enum io_status st;

	p->c.deadline_ms = now_ms() + p->c.timeout_ms;
	st = conn_read_line(&p->c, p->line, sizeof p->line, &len, &crlf);
	p->c.deadline_ms = 0;
	if (st != IO_OK) {
		snprintf(p->line, sizeof p->line, "%s", io_text(st));
		p->alive = 0;
		return -1;
	}
	dialogue('S', p->line, len);
	if (strncmp(p->line, "+OK", 3) == 0 && (len == 3 || p->line[3] == ' '))
		return 0;
	if (p->in_sasl && p->line[0] == '+' && (len == 1 || p->line[1] == ' '))
		return 1;	/* RFC 5034 4: a challenge */
	if (strncmp(p->line, "-ERR", 4) != 0 || (len > 4 && p->line[4] != ' ')) {
		unexpected(p->line, sizeof p->line, len, p->want ? p->want : "+OK or -ERR");
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

/* pop_lines - pop_multiline's loop. The whole response must come within
 * -t, and one more second for every RATE_MIN octets that came: a long
 * mail takes its time while a dripping server does not. */
static int pop_lines(struct pop *p, line_fn each, void *arg)
{
	long long start = now_ms();
	size_t got = 0;
	int stop = 0;

	for (;;) {
		size_t len;
		int crlf;
		enum io_status st;
		const char *line = p->data;

		p->c.deadline_ms = start + p->c.timeout_ms + (long long)(got / RATE_MIN) * 1000;
		st = conn_read_line(&p->c, p->data, DATA_LINE_MAX, &len, &crlf);
		got += len + 2;
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

/* pop_multiline - pass each line after a +OK, up to the line ".", to each
 * with its leading '.' removed (RFC 1939 3). A line too long to hold comes
 * as a note. It returns -1 if the session died. */
static int pop_multiline(struct pop *p, line_fn each, void *arg)
{
	int r = pop_lines(p, each, arg);

	p->c.deadline_ms = 0;
	return r;
}

/* capa_line - note whether the capabilities list TOP and UIDL (RFC 2449
 * 5): with them the list fetches only each mail's headers, and finds
 * mails by UIDL. Also note whether SASL lists CRAM-MD5, the login that
 * sends no password. */
static int capa_line(void *arg, const char *line, size_t len)
{
	struct pop *p = arg;

	if (len > 5 && strncasecmp(line, "SASL ", 5) == 0
	    && has_word(line + 5, len - 5, "CRAM-MD5"))
		p->cram = 1;

	if (len >= 3 && strncasecmp(line, "TOP", 3) == 0 && (len == 3 || line[3] == ' '))
		p->has_top = 1;
	if (len >= 4 && strncasecmp(line, "UIDL", 4) == 0 && (len == 4 || line[4] == ' '))
		p->has_uidl = 1;
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

/* pop_secret - send a line with a secret (send_secret) and read the
 * status line; 0 for +OK */
static int pop_secret(struct pop *p, const char *shown, const char *fmt, const char *a,
		      const char *b)
{
	int r;

	if (send_secret(&p->c, shown, fmt, a, b) < 0) {
		snprintf(p->line, sizeof p->line, "line too long for POP3");
		return -1;
	}
	r = pop_status(p);
	forget_sent(&p->c);
	return r;
}

/* greeting_stamp - APOP's timestamp in the greeting (RFC 1939 7). It is a
 * msg-id with an '@', from the greeting's '<' to the next '>'. stamp is
 * "" when there is none. */
static void greeting_stamp(const char *line, char *stamp, size_t cap)
{
	const char *open = strchr(line, '<'), *close = open ? strchr(open, '>') : NULL;

	stamp[0] = '\0';
	if (close && memchr(open, '@', (size_t)(close - open)) && (size_t)(close - open) < cap - 1)
		snprintf(stamp, cap, "%.*s", (int)(close - open + 1), open);
}

/* pop_apop - APOP name digest (RFC 1939 7): the password never leaves */
static int pop_apop(struct pop *p, const struct client *cl, const char *stamp)
{
	char hex[33], shown[CMD_LINE_MAX];
	int r;

	apop_digest(cl, stamp, hex);
	snprintf(shown, sizeof shown, "APOP %s ****", cl->username);
	r = pop_secret(p, shown, "APOP %s %s", cl->username, hex);
	secret_wipe(hex, sizeof hex);
	return r;
}

/* pop_cram - log in by AUTH CRAM-MD5 (RFC 5034, RFC 2195). The challenge
 * comes in a "+ " line, and the answer is a digest. A challenge that is
 * not base64 is cancelled with "*". */
static int pop_cram(struct pop *p, const struct client *cl)
{
	char answer[CMD_LINE_MAX];
	int r;

	p->in_sasl = 1;
	r = pop_cmd(p, "AUTH CRAM-MD5");
	p->in_sasl = 0;
	if (r != 1)
		return -1;	/* refused, or +OK with no exchange at all */
	if (cram_response(cl, p->line[1] ? p->line + 2 : "", answer, sizeof answer) < 0) {
		if (pop_cmd(p, "*") < 0 && p->alive)
			snprintf(p->line, sizeof p->line, "bad CRAM-MD5 challenge from the server");
		return -1;
	}
	r = pop_secret(p, "****", "%s%s", "", answer);
	secret_wipe(answer, sizeof answer);
	return r;
}

/* pop_pass - USER and PASS (RFC 1939 7), the password in clear */
static int pop_pass(struct pop *p, const struct client *cl)
{
	clear_note();
	if (pop_cmd(p, "USER %s", cl->username) < 0)
		return -1;
	return pop_secret(p, "PASS ****", "PASS %s%s", cl->password, "");
}

/* pop_capa - ask CAPA (RFC 2449). It returns -1 only when the session
 * died, because a server of RFC 1939 alone says -ERR, and that is no
 * failure. */
static int pop_capa(struct pop *p)
{
	p->has_top = p->cram = 0;
	if (pop_cmd(p, "CAPA") == 0) {
		p->has_uidl = 0;
		p->capa = 1;
		(void)pop_multiline(p, capa_line, p);
	} else if (p->capa < 0) {
		p->capa = 0;
	}
	return p->alive ? 0 : -1;
}

/* pop_login - read the greeting, then log in the strongest way the server
 * offers: APOP when the greeting has a timestamp, else AUTH CRAM-MD5 when
 * CAPA lists it, else USER and PASS. On failure it prints why. It prints
 * "Login failed" when the server refused, and "Error in reading mail" when
 * the server stopped answering or is no POP3 server. p->refused says
 * whether the refusal was for the credentials, and not for a response
 * code such as [IN-USE] (RFC 2449 8). */
static int pop_login(struct pop *p, const struct client *cl)
{
	char stamp[REPLY_LINE_MAX];
	int r;

	p->want = "a POP3 greeting (+OK)";
	if (pop_status(p) < 0) {
		show_error("Error in reading mail", p->line);
		return -1;
	}
	p->want = NULL;
	greeting_stamp(p->line, stamp, sizeof stamp);
	if (stamp[0])
		r = pop_apop(p, cl, stamp);
	else if ((r = pop_capa(p)) == 0)
		r = p->cram ? pop_cram(p, cl) : pop_pass(p, cl);
	if (r == 0)
		return 0;
	p->refused = p->alive && (strncmp(p->line, "-ERR [", 6) != 0
				  || strncasecmp(p->line, "-ERR [AUTH]", 11) == 0);
	login_refused = p->refused;
	show_error(p->alive ? "Login failed" : "Error in reading mail", p->line);
	return -1;
}

/* pop_connect - connect and set up the session, logged in to nothing yet.
 * It returns -1 after telling the user why. Either way pop_close may be
 * called, because what is set up is recorded in *p from the start. */
static int pop_connect(struct pop *p)
{
	int fd;

	memset(p, 0, sizeof *p);
	p->c.fd = -1;
	p->has_uidl = -1;
	p->capa = -1;
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
	return 0;
}

/* pop_close - QUIT if the server still answers (RFC 1939 6), then close
 * the connection and free the line buffer; a second call does nothing.
 * It returns 0 only when QUIT was answered +OK, because only then are the
 * deletions done. After a failure p->line still says why. */
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

/* pop_open - connect, log in, learn the capabilities and the count. A
 * screen holds the session only as long as it needs it, because the
 * mailbox stays locked while it lasts, and ends it with pop_close, as
 * smtp_open and smtp_close do for SMTP. It returns -1 after telling the
 * user why, with the session already closed. */
static int pop_open(struct pop *p, const struct client *cl)
{
	if (pop_connect(p) < 0 || pop_login(p, cl) < 0) {
		pop_close(p);
		return -1;
	}
	/* CAPA is asked again after the login, which may change what is
	 * offered (RFC 2449 5). A server that refused CAPA before the login
	 * speaks RFC 1939 alone: the list then uses RETR instead of TOP, and
	 * tries UIDL. */
	if ((p->capa != 0 && pop_capa(p) < 0) || pop_stat(p) < 0) {
		show_error("Error in reading mail", p->line);
		pop_close(p);
		return -1;
	}
	return 0;
}

/* pop_uidl - ask "UIDL n" (RFC 1939 7) and put mail n's unique-id into
 * uid[UID_MAX]. It returns -1 when the server refused, or the reply is
 * malformed. */
static int pop_uidl(struct pop *p, long n, char *uid)
{
	const char *s = p->line + 3;
	size_t k;

	if (pop_cmd(p, "UIDL %ld", n) < 0)
		return -1;
	s += strspn(s, " ");
	s += strspn(s, "0123456789");
	s += strspn(s, " ");
	k = strcspn(s, " ");
	if (k == 0 || k >= UID_MAX)
		return -1;
	memcpy(uid, s, k);
	uid[k] = '\0';
	return 0;
}

/* A search of the UIDL listing for one unique-id. */
struct uid_search {
	const char *uid;
	long found;		/* its number, 0 while not found */
};

/* uid_line - one "n uid" line of the listing: note n if uid is the one */
static int uid_line(void *arg, const char *line, size_t len)
{
	struct uid_search *us = arg;
	const char *sp = memchr(line, ' ', len);
	size_t k = strlen(us->uid);

	if (!sp || (size_t)(line + len - sp - 1) != k || memcmp(sp + 1, us->uid, k) != 0)
		return 0;
	us->found = strtol(line, NULL, 10);
	return 1;
}

/* pop_find_uid - the number the mail with this unique-id has now, from
 * the whole UIDL listing; 0 when it is gone, -1 when the session failed */
static long pop_find_uid(struct pop *p, const char *uid)
{
	struct uid_search us = { uid, 0 };

	if (pop_cmd(p, "UIDL") < 0 || pop_multiline(p, uid_line, &us) < 0)
		return -1;
	return us.found > 0 && us.found <= p->count ? us.found : 0;
}

/*
 * pop_locate - the number in this session of the mail the user chose as
 * n. The user chose it from a list, or read it, in an earlier session, and
 * others may have deleted mail since. So when its unique-id is known
 * (uid), the mail is found by that, because a unique-id stays the same
 * across sessions (RFC 1939 7). Without one, or from a server without
 * UIDL, the number is n. On success uid holds the mail's unique-id ("" when
 * the server has none). It returns the number, 0 when the mail is gone,
 * or -1 when the session failed.
 */
static long pop_locate(struct pop *p, long n, char *uid)
{
	char now[UID_MAX];

	if (p->has_uidl == 0 || n > p->count || pop_uidl(p, n, now) < 0) {
		if (!p->alive)
			return -1;
		if (!uid[0])
			return n <= p->count ? n : 0;	/* by number, as RFC 1939 alone allows */
		return pop_find_uid(p, uid);
	}
	if (!uid[0])
		memcpy(uid, now, UID_MAX);
	else if (strcmp(uid, now) != 0)
		return pop_find_uid(p, uid);	/* the numbering moved */
	return n;
}

/* ---------------------------------------------------------------- MIME: headers, encodings, charsets */

/* A MIME entity (RFC 2045 2.4), a mail or one of its body parts: its
 * header section and its body, inside the text of the mail (LF lines). */
struct entity {
	const char *head, *body;
	size_t hlen, blen;
};

/* is_field - whether a line starts a header field: a name of printable
 * US-ASCII characters but ':', then ':' (RFC 5322 2.2) */
static int is_field(const char *line, size_t len)
{
	size_t i = 0;

	while (i < len && line[i] > ' ' && line[i] < 0x7f && line[i] != ':')
		i++;
	return i > 0 && i < len && line[i] == ':';
}

/* entity_split - s[len] into its header section and its body. The headers
 * end at the first empty line (RFC 5322 2.1), or, leniently, before the
 * first line that is no header field: the assignment's stored format has
 * the body right after its Received line. */
static void entity_split(const char *s, size_t len, struct entity *e)
{
	size_t pos = 0, end = 0, n;
	const char *line;

	e->head = s;
	while (text_line(s, len, &pos, &line, &n) == 0) {
		if (n == 0) {
			e->hlen = end;
			e->body = s + pos;
			e->blen = len - pos;
			return;
		}
		if (!is_field(line, n) && (end == 0 || (line[0] != ' ' && line[0] != '\t')))
			break;
		end = pos;
	}
	e->hlen = end;
	e->body = s + end;
	e->blen = len - end;
}

/* header_get - put into out, NUL-terminated, the value of the first header
 * field called name (in any case) in head[hlen]. The value is unfolded: the
 * line break before a continuation line's white space is removed (RFC 5322
 * 2.2.3). It returns -1 when there is no such field, and out is then "". */
static int header_get(const char *head, size_t hlen, const char *name, struct buf *out)
{
	size_t pos = 0, len, n = strlen(name);
	const char *line;
	int found = 0;

	out->len = 0;
	while (text_line(head, hlen, &pos, &line, &len) == 0) {
		if (found && (len == 0 || (line[0] != ' ' && line[0] != '\t')))
			break;
		if (found)
			buf_add(out, line, len);
		else if (len > n && line[n] == ':' && strncasecmp(line, name, n) == 0) {
			found = 1;
			buf_add(out, line + n + 1, len - n - 1);
		}
	}
	buf_add(out, "", 0);
	return found ? 0 : -1;
}

/* hex_value - the value of a hex digit, or -1 */
static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* decode_b64 - base64 (RFC 2045 6.8) onto out, up to the first '=';
 * line ends and other bytes that are no digit are skipped, as 6.8 says */
static void decode_b64(const char *s, size_t len, struct buf *out)
{
	char chunk[1024];
	size_t n = 0;
	unsigned long acc = 0;
	int bits = 0;

	for (size_t i = 0; i < len && s[i] != '='; i++) {
		int v = base64_value(s[i]);

		if (v < 0)
			continue;
		acc = (acc << 6 | (unsigned long)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			chunk[n++] = (char)(acc >> bits & 0xff);
		}
		if (n == sizeof chunk) {
			buf_add(out, chunk, n);
			n = 0;
		}
	}
	buf_add(out, chunk, n);
}

/* decode_qp - decode quoted-printable (RFC 2045 6.7) onto out. "=XX" is
 * that octet, and '=' at the end of a line, white space after it allowed,
 * joins the line to the next. In a header's encoded word (RFC 2047 4.2)
 * '_' is a space. */
static void decode_qp(const char *s, size_t len, int header, struct buf *out)
{
	char chunk[1024];
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (c == '=' && i + 2 < len && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
			c = (char)(hex_value(s[i + 1]) << 4 | hex_value(s[i + 2]));
			i += 2;
		} else if (c == '=') {
			size_t j = i + 1;

			while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r'))
				j++;
			if (j >= len || s[j] == '\n') {
				i = j;	/* a soft line break: nothing is added */
				continue;
			}
		} else if (c == '_' && header) {
			c = ' ';
		}
		chunk[n++] = c;
		if (n == sizeof chunk) {
			buf_add(out, chunk, n);
			n = 0;
		}
	}
	buf_add(out, chunk, n);
}

/* charset_plain - whether text in charset is kept as it is. That is so for
 * UTF-8 itself, and for US-ASCII, whose 8-bit bytes (a mailer's mistake)
 * are then taken as UTF-8 too. It is so when there is no charset, or when
 * the name is not a charset name: only letters, digits and "-_.:" make a
 * name, so that nothing odd reaches iconv_open. */
static int charset_plain(const char *cs)
{
	static const char name[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				   "0123456789-_.:";
	size_t n = strlen(cs);

	return n == 0 || n >= CHARSET_MAX || cs[strspn(cs, name)] != '\0'
	       || strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "UTF8") == 0
	       || strcasecmp(cs, "US-ASCII") == 0 || strcasecmp(cs, "ASCII") == 0;
}

/* to_utf8 - convert s[len] from charset to UTF-8 (iconv) onto out. A byte
 * that is no character in that charset becomes '?'. Text in a charset
 * that iconv does not know is kept as it is, which is safe because
 * show_text shows what is not UTF-8 as '?'. */
static void to_utf8(const char *charset, const char *s, size_t len, struct buf *out)
{
	char chunk[4096], *in = (char *)s, *o;
	size_t room;
	iconv_t cd;

	if (len == 0)
		return;
	if (charset_plain(charset) || (cd = iconv_open("UTF-8", charset)) == (iconv_t)-1) {
		buf_add(out, s, len);
		return;
	}
	while (len > 0) {
		size_t r;

		o = chunk;
		room = sizeof chunk;
		r = iconv(cd, &in, &len, &o, &room);
		buf_add(out, chunk, sizeof chunk - room);
		if (r == (size_t)-1 && errno != E2BIG) {
			buf_add(out, "?", 1);	/* EILSEQ, or EINVAL: cut short */
			in++;
			len--;
		}
	}
	o = chunk;
	room = sizeof chunk;
	if (iconv(cd, NULL, NULL, &o, &room) != (size_t)-1)	/* back to the initial state */
		buf_add(out, chunk, sizeof chunk - room);
	iconv_close(cd);
}

/* An RFC 2047 encoded word: "=?charset?B?text?=" or "=?charset?Q?text?=". */
struct word {
	char charset[CHARSET_MAX];
	char enc;		/* 'B' or 'Q' */
	const char *text;
	size_t tlen;
	size_t len;		/* of the whole word */
};

/* encoded_word - whether s[len] starts with an encoded word (RFC 2047 2),
 * into w. Its text holds no '?' and no white space; a language after the
 * charset ("utf-8*en", RFC 2231 5) is dropped. */
static int encoded_word(const char *s, size_t len, struct word *w)
{
	size_t i = 2, t, e;

	if (len < 8 || s[0] != '=' || s[1] != '?')
		return 0;
	while (i < len && s[i] != '?')
		i++;
	if (i + 2 >= len || s[i + 2] != '?' || i - 2 >= CHARSET_MAX || i == 2)
		return 0;
	w->enc = (char)toupper((unsigned char)s[i + 1]);
	t = i + 3;
	for (e = t; e < len && s[e] != '?'; e++)
		if (s[e] == ' ' || s[e] == '\t')
			return 0;
	if ((w->enc != 'B' && w->enc != 'Q') || e + 1 >= len || s[e + 1] != '=')
		return 0;
	snprintf(w->charset, sizeof w->charset, "%.*s", (int)(i - 2), s + 2);
	w->charset[strcspn(w->charset, "*")] = '\0';
	w->text = s + t;
	w->tlen = e - t;
	w->len = e + 2;
	return 1;
}

/* A run of encoded words in one charset, decoded but not yet converted: a
 * character split across two words (a mailer's mistake, but a common one)
 * comes out whole when the run is converted at once. */
struct run {
	struct buf bytes;
	char charset[CHARSET_MAX];
};

/* run_flush - convert the run onto out and empty it */
static void run_flush(struct run *r, struct buf *out)
{
	to_utf8(r->charset, r->bytes.p, r->bytes.len, out);
	r->bytes.len = 0;
}

/* decode_words - header text with its encoded words (RFC 2047) decoded and
 * converted to UTF-8, onto out, NUL-terminated. White space between two
 * encoded words goes (6.2); whatever is no encoded word stays as it is. */
static void decode_words(const char *s, size_t len, struct buf *out)
{
	struct run r = { { NULL, 0, 0 }, "" };
	struct word w;
	int after_word = 0;

	for (size_t i = 0; i < len;) {
		size_t ws = i;

		while (after_word && ws < len && (s[ws] == ' ' || s[ws] == '\t'))
			ws++;
		if (ws > i && encoded_word(s + ws, len - ws, &w))
			i = ws;
		if (encoded_word(s + i, len - i, &w)) {
			if (strcasecmp(r.charset, w.charset) != 0)
				run_flush(&r, out);
			memcpy(r.charset, w.charset, sizeof r.charset);
			if (w.enc == 'B')
				decode_b64(w.text, w.tlen, &r.bytes);
			else
				decode_qp(w.text, w.tlen, 1, &r.bytes);
			i += w.len;
			after_word = 1;
			continue;
		}
		run_flush(&r, out);
		buf_add(out, s + i++, 1);
		after_word = 0;
	}
	run_flush(&r, out);
	buf_add(out, "", 0);
	buf_free(&r.bytes);
}

/* A parameter of a header field, "name[*section][*]=value" (RFC 2045 5.1,
 * RFC 2231). */
struct param {
	const char *name, *value;
	size_t nlen, vlen;
	int quoted;		/* the value was a quoted string: '\' escapes */
	int section;		/* RFC 2231 3: the continuation's number; -1: none */
	int extended;		/* RFC 2231 4: a trailing '*': charset'language'%XX */
};

/* skip_space - the index of the first byte at or after i that is no space or TAB */
static size_t skip_space(const char *s, size_t len, size_t i)
{
	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	return i;
}

/* param_token - point p at the value at s[i], and return the index past
 * it. The value is a quoted string, without its quotes, or else what comes
 * before the next ';', with its spaces trimmed, because a mailer may not
 * have quoted a name with spaces. */
static size_t param_token(const char *s, size_t len, size_t i, struct param *p)
{
	p->quoted = i < len && s[i] == '"';
	p->value = s + i + p->quoted;
	if (p->quoted) {
		for (i++; i < len && s[i] != '"'; i++)
			if (s[i] == '\\' && i + 1 < len)
				i++;
		p->vlen = (size_t)(s + i - p->value);
		return i < len ? i + 1 : i;
	}
	while (i < len && s[i] != ';')
		i++;
	p->vlen = (size_t)(s + i - p->value);
	p->value = trim(p->value, &p->vlen);
	return i;
}

/* param_section - split "name*3*" into the name, the section and the
 * extended mark (RFC 2231 3, 4) */
static void param_section(struct param *p)
{
	const char *star = memchr(p->name, '*', p->nlen);
	size_t i;

	p->section = -1;
	p->extended = 0;
	if (!star)
		return;
	i = (size_t)(star - p->name) + 1;
	p->extended = p->name[p->nlen - 1] == '*';
	if (i < p->nlen && isdigit((unsigned char)p->name[i]))
		for (p->section = 0; i < p->nlen && isdigit((unsigned char)p->name[i])
		     && p->section < 1000; i++)
			p->section = p->section * 10 + (p->name[i] - '0');
	p->nlen = (size_t)(star - p->name);
}

/* next_param - the parameter after the next ';' of a header value, from
 * *pos; *pos moves past it. It returns -1 when none is left. */
static int next_param(const char *s, size_t len, size_t *pos, struct param *p)
{
	size_t i = *pos;

	while (i < len && s[i] != ';')
		i++;
	if (i >= len)
		return -1;
	i = skip_space(s, len, i + 1);
	p->name = s + i;
	while (i < len && s[i] != '=' && s[i] != ';' && s[i] != ' ' && s[i] != '\t')
		i++;
	p->nlen = (size_t)(s + i - p->name);
	i = skip_space(s, len, i);
	p->value = s + i;
	p->vlen = 0;
	p->quoted = 0;
	if (i < len && s[i] == '=')
		i = param_token(s, len, skip_space(s, len, i + 1), p);
	*pos = i;
	param_section(p);
	return 0;
}

/* add_unquoted - a parameter's value onto out, a quoted string's '\'
 * escapes undone (RFC 5322 3.2.4) */
static void add_unquoted(struct buf *out, const struct param *p)
{
	for (size_t i = 0; i < p->vlen; i++) {
		if (p->quoted && p->value[i] == '\\' && i + 1 < p->vlen)
			i++;
		buf_add(out, p->value + i, 1);
	}
}

/* ext_add - one RFC 2231 segment onto bytes: an extended one ("name*=",
 * "name*0*=") is %XX-encoded, and the first of them starts with
 * "charset'language'", the charset going into charset */
static void ext_add(struct buf *bytes, const struct param *p, char *charset)
{
	const char *v = p->value, *q1, *q2;
	size_t len = p->vlen;

	if (!p->extended) {
		add_unquoted(bytes, p);
		return;
	}
	q1 = p->section <= 0 ? memchr(v, '\'', len) : NULL;
	q2 = q1 ? memchr(q1 + 1, '\'', len - (size_t)(q1 + 1 - v)) : NULL;
	if (q2) {
		snprintf(charset, CHARSET_MAX, "%.*s", (int)(q1 - v < CHARSET_MAX ? q1 - v : 0), v);
		len -= (size_t)(q2 + 1 - v);
		v = q2 + 1;
	}
	for (size_t i = 0; i < len; i++) {
		char c = v[i];

		if (c == '%' && i + 2 < len && hex_value(v[i + 1]) >= 0
		    && hex_value(v[i + 2]) >= 0) {
			c = (char)(hex_value(v[i + 1]) << 4 | hex_value(v[i + 2]));
			i += 2;
		}
		buf_add(bytes, &c, 1);
	}
}

/*
 * param_value - put in out, as UTF-8, the parameter name of a header value
 * (Content-Type, Content-Disposition). RFC 2231's "name*=", or its
 * continuations "name*0=", "name*1*=" ..., come first when present. Else
 * the plain "name=" is taken, and an RFC 2047 word in it is decoded too,
 * because many mailers send one. It returns -1 when there is no such
 * parameter.
 */
static int param_value(const char *s, size_t len, const char *name, struct buf *out)
{
	struct buf plain = { 0 }, ext = { 0 };
	char charset[CHARSET_MAX] = "";
	struct param p;
	size_t pos = 0, n = strlen(name);
	int next = 0, have_plain = 0, have_ext = 0;

	out->len = 0;
	while (next_param(s, len, &pos, &p) == 0) {
		if (p.nlen != n || strncasecmp(p.name, name, n) != 0)
			continue;
		if (p.section < 0 && !p.extended && !have_plain) {
			have_plain = 1;
			add_unquoted(&plain, &p);
		} else if (p.section < 0 ? p.extended && !have_ext : p.section == next) {
			ext_add(&ext, &p, charset);
			have_ext = 1;
			next = p.section < 0 ? INT_MAX : next + 1;
		}
	}
	if (have_ext)
		to_utf8(charset, ext.p, ext.len, out);
	else if (have_plain)
		decode_words(plain.p, plain.len, out);
	buf_add(out, "", 0);
	buf_free(&plain);
	buf_free(&ext);
	return have_ext || have_plain ? 0 : -1;
}

/* entity_param - parameter param of header field in e, as param_value */
static int entity_param(const struct entity *e, const char *field, const char *param,
			struct buf *out)
{
	struct buf value = { 0 };
	int r = -1;

	if (header_get(e->head, e->hlen, field, &value) == 0)
		r = param_value(value.p, value.len, param, out);
	else
		out->len = 0;
	buf_free(&value);
	return r;
}

/* entity_type - put e's media type, in lower case, into type. When e has
 * no Content-Type, or a malformed one, the type is dflt: "text/plain"
 * (RFC 2045 5.2), or "message/rfc822" in a digest (RFC 2046 5.1.5). */
static void entity_type(const struct entity *e, const char *dflt, char *type, size_t cap)
{
	struct buf v = { 0 };
	const char *s;
	size_t len;

	snprintf(type, cap, "%s", dflt);
	if (header_get(e->head, e->hlen, "Content-Type", &v) == 0 && v.p) {
		len = strcspn(v.p, ";");
		s = trim(v.p, &len);
		if (len > 2 && len < cap && memchr(s, '/', len) && !memchr(s, ' ', len)) {
			for (size_t i = 0; i < len; i++)
				type[i] = (char)tolower((unsigned char)s[i]);
			type[len] = '\0';
		}
	}
	buf_free(&v);
}

/* header_text - header field name of e, unfolded, trimmed and its encoded
 * words decoded, into out (NUL-terminated); -1 when there is none */
static int header_text(const struct entity *e, const char *name, struct buf *out)
{
	struct buf raw = { 0 };
	size_t len;
	const char *s;
	int r = header_get(e->head, e->hlen, name, &raw);

	len = raw.len;
	s = trim(raw.p, &len);
	out->len = 0;
	decode_words(s, len, out);
	buf_free(&raw);
	return r;
}

/* transfer_encoding - e's Content-Transfer-Encoding (RFC 2045 6): 'b' for
 * base64, 'q' for quoted-printable, 0 for 7bit, 8bit, binary or none */
static int transfer_encoding(const struct entity *e)
{
	struct buf cte = { 0 };
	const char *s = "";
	size_t len = 0;
	int r = 0;

	if (header_get(e->head, e->hlen, "Content-Transfer-Encoding", &cte) == 0) {
		len = cte.len;
		s = trim(cte.p, &len);
	}
	if (len == 6 && strncasecmp(s, "base64", 6) == 0)
		r = 'b';
	else if (len == 16 && strncasecmp(s, "quoted-printable", 16) == 0)
		r = 'q';
	buf_free(&cte);
	return r;
}

/* entity_decode - put e's body onto out with its Content-Transfer-Encoding
 * (RFC 2045 6) undone: base64 and quoted-printable are decoded, and 7bit,
 * 8bit and binary are taken as they are. */
static void entity_decode(const struct entity *e, struct buf *out)
{
	int cte = transfer_encoding(e);

	if (cte == 'b')
		decode_b64(e->body, e->blen, out);
	else if (cte == 'q')
		decode_qp(e->body, e->blen, 0, out);
	else
		buf_add(out, e->body, e->blen);
}

/* ---------------------------------------------------------------- MIME: the parts of a mail */

/* A body part that is no multipart, with its media type. */
struct part {
	struct entity e;
	char type[TYPE_MAX];
};

/* delimiter - whether a line is "--boundary" (RFC 2046 5.1.1: white space
 * may follow), *last set when it is the close delimiter "--boundary--" */
static int delimiter(const char *line, size_t len, const char *boundary, size_t blen, int *last)
{
	if (len < blen + 2 || line[0] != '-' || line[1] != '-'
	    || memcmp(line + 2, boundary, blen) != 0)
		return 0;
	line += blen + 2;
	len -= blen + 2;
	*last = len >= 2 && line[0] == '-' && line[1] == '-';
	if (*last) {
		line += 2;
		len -= 2;
	}
	return strspn(line, " \t\r") >= len;
}

/* mime_split - put the body parts of a multipart e into kids, at most max
 * of them. A part is the text between two delimiter lines, without the
 * line end before the second one, which belongs to the delimiter (RFC 2046
 * 5.1.1). The preamble and the epilogue are dropped. When the close
 * delimiter is missing, the last part ends where e ends. */
static int mime_split(const struct entity *e, const char *boundary, struct entity *kids, int max)
{
	size_t pos = 0, start = 0, len, blen = strlen(boundary);
	const char *line;
	int n = 0, open = 0, last = 0;

	while (n < max && text_line(e->body, e->blen, &pos, &line, &len) == 0) {
		size_t at = (size_t)(line - e->body);

		if (!delimiter(line, len, boundary, blen, &last))
			continue;
		if (open)
			entity_split(e->body + start, at > start ? at - start - 1 : 0, &kids[n++]);
		if (last)
			return n;
		open = 1;
		start = pos;
	}
	if (open && n < max)
		entity_split(e->body + start, e->blen - start, &kids[n++]);
	return n;
}

/* alternative - which of a multipart/alternative's parts to show (RFC 2046
 * 5.1.4): the first text/plain one, else the first */
static int alternative(const struct entity *kids, int n)
{
	char type[TYPE_MAX];

	for (int i = 0; i < n; i++) {
		entity_type(&kids[i], "text/plain", type, sizeof type);
		if (strcmp(type, "text/plain") == 0)
			return i;
	}
	return 0;
}

/* is_attachment - whether a part is meant as a file, not to be read in
 * the mail: Content-Disposition "attachment" (RFC 2183 2.2). A part with
 * no disposition, or "inline", is shown where it stands even when it
 * names a file, as mutt does. */
static int is_attachment(const struct entity *e)
{
	struct buf v = { 0 };
	int r = 0;

	if (header_get(e->head, e->hlen, "Content-Disposition", &v) == 0) {
		size_t len = v.len;
		const char *s = trim(v.p, &len);

		r = len >= 10 && strncasecmp(s, "attachment", 10) == 0;
	}
	buf_free(&v);
	return r;
}

/* ---------------------------------------------------------------- HTML to text */

/* utf8_put - code point cp as UTF-8 onto out; '?' for none (NUL, a
 * surrogate, past U+10FFFF) */
static void utf8_put(struct buf *out, unsigned long cp)
{
	char b[4];
	size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;

	if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
		buf_add(out, "?", 1);
		return;
	}
	if (n == 1) {
		b[0] = (char)cp;
	} else {
		for (size_t i = n - 1; i > 0; i--, cp >>= 6)
			b[i] = (char)(0x80 | (cp & 0x3f));
		b[0] = (char)((0xf00 >> n & 0xff) | cp);	/* 110xxxxx, 1110xxxx, 11110xxx */
	}
	buf_add(out, b, n);
}

/* char_ref - the code point of a numeric reference "#233" or "#xE9" (n
 * octets, without '&' and ';'); 0 for none */
static unsigned long char_ref(const char *s, size_t n)
{
	int hex = n > 1 && (s[1] == 'x' || s[1] == 'X');
	unsigned long cp = 0;

	if (n < 2 || s[0] != '#' || n > 10)
		return 0;
	for (size_t i = 1 + (size_t)hex; i < n; i++) {
		int v = hex ? hex_value(s[i]) : isdigit((unsigned char)s[i]) ? s[i] - '0' : -1;

		if (v < 0)
			return 0;
		cp = cp * (hex ? 16 : 10) + (unsigned long)v;
	}
	return cp;
}

/* html_entity - put on out the character that the reference at s[i]
 * ("&amp;", "&#233;", "&#xe9;") stands for, and return the index past it.
 * A reference it does not know is kept as it is. */
static size_t html_entity(const char *s, size_t len, size_t i, struct buf *out)
{
	static const struct { const char *name; unsigned long cp; } names[] = {
		{ "amp", '&' }, { "lt", '<' }, { "gt", '>' }, { "quot", '"' },
		{ "apos", '\'' }, { "nbsp", ' ' }, { "copy", 0xa9 }, { "reg", 0xae },
		{ "euro", 0x20ac }, { "hellip", 0x2026 }, { "ndash", 0x2013 },
		{ "mdash", 0x2014 }, { "lsquo", 0x2018 }, { "rsquo", 0x2019 },
		{ "ldquo", 0x201c }, { "rdquo", 0x201d }, { "bull", 0x2022 },
	};
	const char *name = s + i + 1;
	const char *semi = memchr(name, ';', len - i - 1 < 12 ? len - i - 1 : 12);
	size_t n = semi ? (size_t)(semi - name) : 0;
	unsigned long cp = char_ref(name, n);

	for (size_t k = 0; semi && !cp && k < sizeof names / sizeof names[0]; k++)
		if (strlen(names[k].name) == n && strncmp(name, names[k].name, n) == 0)
			cp = names[k].cp;
	if (!cp) {
		buf_add(out, "&", 1);
		return i + 1;
	}
	utf8_put(out, cp);
	return i + n + 2;
}

/* find_ci - the index of needle in s[len] from from on, in any case; len
 * when it is not there */
static size_t find_ci(const char *s, size_t len, size_t from, const char *needle)
{
	size_t n = strlen(needle);

	for (size_t i = from; i + n <= len; i++)
		if (strncasecmp(s + i, needle, n) == 0)
			return i;
	return len;
}

/* in_list - whether word is one of the words of list, space-separated */
static int in_list(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; n > 0 && (p = strstr(p, word)); p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

/* line_start - whether nothing but white space follows the last line end
 * of text (or there is no text yet) */
static int line_start(const struct buf *text)
{
	size_t i = text->len;

	while (i > 0 && (text->p[i - 1] == ' ' || text->p[i - 1] == '\t'))
		i--;
	return i == 0 || text->p[i - 1] == '\n';
}

/*
 * html_tag - put on out the line breaks that the tag at s[i] ('<') makes:
 * an empty line around a paragraph, a line end after a line or a row of
 * cells, " | " between two cells of a row, "- " before a list item, and
 * nothing for other tags. Comments are dropped, and so is what script,
 * style, head and title hold. It returns the index past the tag. A '<'
 * that starts no tag is kept as text.
 */
static size_t html_tag(const char *s, size_t len, size_t i, struct buf *out)
{
	char name[16];
	size_t j = i + 1, n = 0;
	const char *gt;
	int closing = j < len && s[j] == '/';

	if (len - i >= 4 && strncmp(s + i, "<!--", 4) == 0)
		return (j = find_ci(s, len, i + 4, "-->")) < len ? j + 3 : len;
	for (j += (size_t)closing; j < len && n < sizeof name - 1 && isalnum((unsigned char)s[j]); j++)
		name[n++] = (char)tolower((unsigned char)s[j]);
	name[n] = '\0';
	if (n == 0 && (j >= len || (s[j] != '!' && s[j] != '?'))) {
		buf_add(out, "<", 1);
		return i + 1;
	}
	gt = memchr(s + j, '>', len - j);
	j = gt ? (size_t)(gt - s) + 1 : len;
	if (!closing && in_list("script style head title", name)) {
		char end[20];

		snprintf(end, sizeof end, "</%s", name);
		j = find_ci(s, len, j, end);
		gt = memchr(s + j, '>', len - j);
		return gt ? (size_t)(gt - s) + 1 : len;
	}
	if (!closing && in_list("td th", name) && !line_start(out))
		buf_add(out, " | ", 3);	/* a cell after another one on its row */
	else if (in_list("p h1 h2 h3 h4 h5 h6 table ul ol blockquote hr", name))
		buf_add(out, "\n\n", 2);
	else if (in_list("br div dt dd pre", name) || (!closing && strcmp(name, "tr") == 0))
		buf_add(out, "\n", 1);	/* a row of cells: a line of its own */
	else if (!closing && strcmp(name, "li") == 0)
		buf_add(out, "\n- ", 3);
	return j;
}

/* tidy_lines - the lines of text onto out, each trimmed, its runs of
 * spaces made one; no empty line first or last, none twice in a row */
static void tidy_lines(const struct buf *text, struct buf *out)
{
	size_t pos = 0, len;
	const char *line;
	int blank_before = 1;	/* none at the start */

	while (next_line(text, &pos, &line, &len) == 0) {
		line = trim(line, &len);
		if (len == 0) {
			if (!blank_before)
				buf_add(out, "\n", 1);
			blank_before = 1;
			continue;
		}
		for (size_t i = 0; i < len; i++)
			if (line[i] != ' ' || line[i - 1] != ' ')	/* line[0] is no space */
				buf_add(out, line + i, 1);
		buf_add(out, "\n", 1);
		blank_before = 0;
	}
	while (out->len >= 2 && out->p[out->len - 1] == '\n' && out->p[out->len - 2] == '\n')
		out->len--;
}

/* html_to_text - the text of an HTML part (shown when a mail has no plain
 * text): tags off, character references decoded, white space run together
 * as a browser does, lines where blocks end */
static void html_to_text(const char *s, size_t len, struct buf *out)
{
	struct buf t = { 0 };

	for (size_t i = 0; i < len;) {
		if (s[i] == '<') {
			i = html_tag(s, len, i, &t);
		} else if (s[i] == '&') {
			i = html_entity(s, len, i, &t);
		} else {
			char c = s[i] && strchr(" \t\r\n\f", s[i]) ? ' ' : s[i];

			buf_add(&t, &c, 1);
			i++;
		}
	}
	tidy_lines(&t, out);
	buf_free(&t);
}

/* quote_depth - the '>' that start a line of flowed text (RFC 3676 4.5),
 * and the line past them and past the space that stuffs it (4.4) */
static size_t quote_depth(const char **line, size_t *len)
{
	size_t depth = 0;

	while (depth < *len && (*line)[depth] == '>')
		depth++;
	*line += depth;
	*len -= depth;
	if (*len > 0 && **line == ' ') {
		(*line)++;
		(*len)--;
	}
	return depth;
}

/*
 * unflow - put format=flowed text (RFC 3676) on out as the lines a reader
 * sees. A line that ends in a space is soft, and the next line of the same
 * quote depth goes on after it (4.2). With DelSp=yes that space is removed
 * (4.3). The signature line "-- " stays hard (4.3). Quoted lines keep
 * their depth as "> " marks.
 */
static void unflow(const char *s, size_t size, int delsp, struct buf *out)
{
	size_t pos = 0, len, depth, open_depth = 0;
	const char *line;
	int open = 0;	/* a soft line waits for the rest of its paragraph */

	while (text_line(s, size, &pos, &line, &len) == 0) {
		depth = quote_depth(&line, &len);
		if (open && depth != open_depth)
			buf_add(out, "\n", 1);	/* 4.5: another depth ends the paragraph */
		if (!open || depth != open_depth)
			for (size_t i = 0; i < depth; i++)
				buf_add(out, i + 1 < depth ? ">" : "> ", i + 1 < depth ? 1 : 2);
		open = len > 0 && line[len - 1] == ' ' && !(len == 3 && memcmp(line, "-- ", 3) == 0);
		open_depth = depth;
		buf_add(out, line, open && delsp ? len - 1 : len);
		if (!open)
			buf_add(out, "\n", 1);
	}
	if (open)
		buf_add(out, "\n", 1);
}

/* flowed - whether a text part is format=flowed, *delsp set for DelSp=yes */
static int flowed(const struct part *pt, int *delsp)
{
	struct buf v = { 0 };
	int r = entity_param(&pt->e, "Content-Type", "format", &v) == 0
		&& strcasecmp(v.p, "flowed") == 0;

	*delsp = r && entity_param(&pt->e, "Content-Type", "delsp", &v) == 0
		 && strcasecmp(v.p, "yes") == 0;
	buf_free(&v);
	return r;
}

/* entity_text - put a text part on out as UTF-8. Its transfer encoding is
 * undone and it is converted from its charset (RFC 2046 4.1.2). HTML has
 * its tags stripped, and format=flowed text has its lines joined. Every
 * line ends in LF, the last one too. */
static void entity_text(const struct part *pt, struct buf *out)
{
	struct buf data = { 0 }, utf8 = { 0 }, cs = { 0 }, lines = { 0 };
	int delsp;

	entity_decode(&pt->e, &data);
	(void)entity_param(&pt->e, "Content-Type", "charset", &cs);
	to_utf8(cs.p ? cs.p : "", data.p, data.len, &utf8);
	if (strcmp(pt->type, "text/html") == 0)
		html_to_text(utf8.p, utf8.len, out);
	else if (strcmp(pt->type, "text/plain") == 0 && flowed(pt, &delsp)) {
		add_without_cr(&lines, utf8.p ? utf8.p : "", utf8.len);
		unflow(lines.p ? lines.p : "", lines.len, delsp, out);
	} else
		add_without_cr(out, utf8.p ? utf8.p : "", utf8.len);
	if (out->len > 0 && out->p[out->len - 1] != '\n')
		buf_add(out, "\n", 1);
	buf_free(&data);
	buf_free(&utf8);
	buf_free(&cs);
	buf_free(&lines);
}

/* ---------------------------------------------------------------- the menu: Manage Mail's list */

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
 * digits with spaces around them, at most max. It returns -1 if the text
 * is not that. */
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
 * received_text - when the mail was received, as "YYYY-MM-DD : HH : MM" in
 * local time, from the values of its first Received and its Date header.
 * The Received line's date, after its last ';' (RFC 5321 4.4), says when
 * the server took the mail, so it comes first; the Date header comes next.
 * A mailbox kept as the assignment describes has neither. It has a
 * Received line "<date> : <hour> : <minute>" of the server's clock
 * instead, which is shown as it stands. "?" means that none of them could
 * be read.
 */
static void received_text(const char *received, const char *date, char *out, size_t cap)
{
	const char *semi = strrchr(received, ';');
	time_t t;
	struct tm tm;
	int known;

	if ((semi && parse_date(semi + 1, &t) == 0) || parse_date(date, &t) == 0)
		known = localtime_r(&t, &tm) != NULL;
	else
		known = parse_received_stamp(received, &tm) == 0;
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

/* unquote - a display name without the quotes of a quoted string and its
 * '\' escapes (RFC 5322 3.2.4), in place */
static char *unquote(char *name)
{
	size_t len, o = 0;

	name = field_trim(name);
	len = strlen(name);

	if (len >= 2 && name[0] == '"' && name[len - 1] == '"') {
		name[len - 1] = '\0';
		name++;
	}
	for (size_t i = 0; name[i]; i++)
		if (name[i] != '\\' || !name[i + 1] || (name[i + 1] != '"' && name[i + 1] != '\\'))
			name[o++] = name[i];
		else
			name[o++] = name[++i];
	name[o] = '\0';
	return field_trim(name);
}

/*
 * sender_of - who a mail is from, for the list. That is the display name
 * of its From ("Ann Lee" of "Ann Lee <ann@x>", RFC 5322 3.4), or the
 * comment that an older mailer puts after the address ("bbb@ddd.com (John
 * Doe)", RFC 822 6.1). Without a name it is the address. With no From at
 * all it is the envelope sender of the Return-Path line (RFC 5321 4.4),
 * and "?" when there is none.
 */
static const char *sender_of(char *from, char *return_path)
{
	char *lt = strrchr(from, '<'), *gt = lt ? strchr(lt, '>') : NULL;
	char *open = strchr(from, '('), *close = open ? strrchr(open, ')') : NULL, *name;

	if (lt && gt) {
		*gt = '\0';
		*lt = '\0';
		if (*(name = unquote(from)))
			return name;
		from = lt + 1;
	} else if (open && close) {
		*close = '\0';
		if (*(name = field_trim(open + 1)))
			return name;
		*open = '\0';
	}
	from = field_trim(from);
	if (!from[0] && (lt = strchr(return_path, '<')) && (gt = strchr(lt, '>'))) {
		*gt = '\0';	/* "<>": a bounce's null sender is no name */
		from = field_trim(lt + 1);
	}
	return from[0] ? from : "?";
}

/* add_flat - s[len] onto out as one line: a line end or a TAB (a decoded
 * header may hold them) becomes a space */
static void add_flat(struct buf *out, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i] == '\n' || s[i] == '\r' || s[i] == '\t' ? ' ' : s[i];

		buf_add(out, &c, 1);
	}
}

/* add_cell - s cut to width columns, "..." marking a cut, then with pad
 * spaces up to width, onto row: the columns stay aligned however wide
 * the characters are (width is 3 at least) */
static void add_cell(struct buf *row, const char *s, size_t width, int pad)
{
	size_t len = strlen(s), total = text_width(s, len), used = 0, end = 0;
	size_t room = total <= width ? width : width - 3;
	int safe;

	while (end < len) {
		size_t n = char_len((const unsigned char *)s + end, len - end, &safe);
		size_t w = (size_t)char_width((const unsigned char *)s + end, n, safe);

		if (used + w > room)
			break;	/* end: the byte after what fits */
		used += w;
		end += n;
	}
	add_flat(row, s, end);
	if (total > width) {
		buf_add(row, "...", 3);
		used += 3;
	}
	for (; pad && used < width; used++)
		buf_add(row, " ", 1);
}

/* The widths of the list's columns, in screen columns. */
struct columns {
	size_t num, from, when, subject;
};

/* shrink - take a column down to small when the row is still over by
 * *over columns: all or nothing, so that it shows a whole date or name */
static void shrink(size_t *width, size_t small, long *over)
{
	if (*over > 0 && *width > small) {
		*over -= (long)(*width - small);
		*width = small;
	}
}

/* list_columns - the widths of the columns in a window scr.cols wide. A
 * row is one column shorter than the window, so that no terminal wraps it.
 * Sl. No. takes 7, From 24, Received 20 (the assignment's "YYYY-MM-DD :
 * HH : MM"), and the subject the rest, which is 22 in 80 columns. A
 * narrower window first takes From down to 8, then Received to its date,
 * then Sl. No. to "No.". */
static void list_columns(struct columns *c)
{
	long room = scr.cols - 1 - 3 * 2 - COL_SUBJECT_MIN;
	long over = COL_NUMBER + COL_FROM + COL_RECEIVED - room;

	c->num = COL_NUMBER;
	c->from = COL_FROM;
	c->when = COL_RECEIVED;
	shrink(&c->from, COL_FROM_MIN, &over);
	shrink(&c->when, COL_DATE, &over);
	shrink(&c->num, COL_NUMBER_MIN, &over);
	c->subject = COL_SUBJECT_MIN + (size_t)(over < 0 ? -over : 0);
}

/* add_row - one row of the list onto rows, the columns two spaces apart
 * (list_columns); a window too narrow even for the smallest columns gets
 * the row cut at its width */
static void add_row(struct buf *rows, const char *num, const char *from, const char *when,
		    const char *subject)
{
	struct buf row = { 0 };
	struct columns c;
	char date[COL_RECEIVED + 1];

	list_columns(&c);
	snprintf(date, sizeof date, "%.*s", (int)c.when, when);	/* the date first */
	add_cell(&row, c.num < strlen(num) && strcmp(num, "Sl. No.") == 0 ? "No." : num,
		 c.num, 1);
	buf_add(&row, "  ", 2);
	add_cell(&row, from, c.from, 1);
	buf_add(&row, "  ", 2);
	add_cell(&row, date, c.when, 1);
	buf_add(&row, "  ", 2);
	add_cell(&row, subject, c.subject, 0);
	if (row.p && text_width(row.p, row.len) > (size_t)scr.cols - 1 && scr.cols > 4)
		add_cell(rows, row.p, (size_t)scr.cols - 1, 0);
	else if (row.p)
		buf_add(rows, row.p, row.len);
	buf_add(rows, "\n", 1);
	buf_free(&row);
}

/* What the lines of a multi-line response go into: keep_lines's argument. */
struct keep {
	struct buf *text;	/* the lines, each with LF */
	size_t max;		/* the most to keep */
	int head_only;		/* stop at the empty line after the headers */
	int cut;		/* some was left out: over max */
};

/* keep_lines - one line of a mail into k->text; 1 (no more) past the
 * headers when only they are wanted, or once k->max is reached */
static int keep_lines(void *arg, const char *line, size_t len)
{
	struct keep *k = arg;

	if (k->head_only && len == 0)
		return 1;
	if (len + 1 > k->max - k->text->len || buf_add(k->text, line, len) < 0
	    || buf_add(k->text, "\n", 1) < 0) {
		k->cut = 1;
		return 1;
	}
	return 0;
}

/* The list as shown: the count, and the unique-ids of the rows fetched,
 * so that a mail chosen by its row is found again in a later session. */
struct listing {
	long count;		/* STAT, in the latest session */
	long rows;		/* rows fetched: uid[0 .. rows - 1] */
	long cap;
	char (*uid)[UID_MAX];	/* "" when not known */
};

/* listing_note - note row n's unique-id (after the rows before it) */
static void listing_note(struct listing *ls, long n, const char *uid)
{
	if (n > ls->cap) {
		long cap = ls->cap ? ls->cap * 2 : 64;
		char (*p)[UID_MAX];

		while (cap < n)
			cap *= 2;
		if (!(p = realloc(ls->uid, (size_t)cap * sizeof *p)))
			return;	/* that row is then found by its number */
		ls->uid = p;
		ls->cap = cap;
	}
	for (; ls->rows < n; ls->rows++)
		ls->uid[ls->rows][0] = '\0';
	snprintf(ls->uid[n - 1], UID_MAX, "%s", uid);
}

/* row_of - mail n's row from its headers, onto rows: the sender
 * (sender_of), when it was received, the subject, decoded (RFC 2047) */
static void row_of(struct buf *rows, long n, const struct buf *head)
{
	struct entity e;
	struct buf from = { 0 }, subject = { 0 }, received = { 0 }, date = { 0 }, path = { 0 };
	char when[64], num[24];

	entity_split(head->p ? head->p : "", head->len, &e);
	header_text(&e, "From", &from);
	header_get(e.head, e.hlen, "Return-Path", &path);
	header_text(&e, "Subject", &subject);
	header_get(e.head, e.hlen, "Received", &received);
	header_get(e.head, e.hlen, "Date", &date);
	snprintf(num, sizeof num, "%ld", n);
	received_text(received.p ? received.p : "", date.p ? date.p : "", when, sizeof when);
	add_row(rows, num, sender_of(from.p ? from.p : "", path.p ? path.p : ""), when,
		subject.p ? subject.p : "");
	buf_free(&path);
	buf_free(&from);
	buf_free(&subject);
	buf_free(&received);
	buf_free(&date);
}

/* list_row - fetch mail n's headers and its unique-id, and add its row.
 * TOP n 0 sends only the headers; without TOP, or when TOP is refused
 * after all, RETR does (the body is read and dropped). */
static int list_row(struct pop *p, struct listing *ls, long n, struct buf *rows)
{
	struct buf head = { 0 };
	struct keep k = { &head, HEAD_MAX, 1, 0 };
	char uid[UID_MAX] = "";
	int ok = p->has_top && pop_cmd(p, "TOP %ld 0", n) == 0;

	if (!ok && p->alive) {
		p->has_top = 0;	/* no TOP (or refused after all): RETR instead */
		ok = pop_cmd(p, "RETR %ld", n) == 0;
	}
	ok = ok && pop_multiline(p, keep_lines, &k) == 0;
	if (ok)
		row_of(rows, n, &head);
	buf_free(&head);
	if (ok && p->has_uidl != 0 && pop_uidl(p, n, uid) < 0)
		p->has_uidl = 0;	/* none (RFC 1939 says it is optional) */
	if (ok)
		listing_note(ls, n, uid);
	return ok && p->alive ? 0 : -1;
}

/* list_page - in one session, put rows first .. first + k - 1 onto rows
 * (fewer at the end of the mailbox), then QUIT. It returns -1 after
 * saying why. */
static int list_page(const struct client *cl, struct listing *ls, long first, long k,
		     struct buf *rows)
{
	struct pop p;
	int r = 0;

	if (pop_open(&p, cl) < 0)
		return -1;
	ls->count = p.count;
	for (long n = first; r == 0 && n <= p.count && n - first < k; n++)
		r = list_row(&p, ls, n, rows);
	if (r < 0)
		show_error("Error in reading mail", p.line);
	pop_close(&p);
	return r;
}

/*
 * list_mails - show the heading and a row per mail, a screenful at a time.
 * Each screenful is fetched in a session of its own and shown once that
 * session has ended, so no session (and no lock) waits at "--More--". A
 * server that claims a billion mails then costs one screenful at a time.
 * Without a pager, a session fetches LIST_BATCH rows. It returns the count,
 * or -1 after an error was shown; for 0 it has said "No mails in your
 * mailbox.".
 */
static long list_mails(const struct client *cl, struct listing *ls)
{
	struct buf rows = { 0 };
	struct pager pg;
	long next = 1;
	int r;

	pager_start(&pg);
	ls->rows = 0;
	do {
		long k = scr.paging ? pg.room - (next == 1) : LIST_BATCH;

		rows.len = 0;
		if (next == 1)
			add_row(&rows, "Sl. No.", "From", "Received", "Subject");
		if ((r = list_page(cl, ls, next, k > 0 ? k : 1, &rows)) < 0 || ls->count == 0)
			break;
		page_text(&pg, &rows);
		next += k > 0 ? k : 1;
	} while (next <= ls->count && !pg.stopped && (pg.room > 0 || pager_more(&pg)));
	buf_free(&rows);
	if (r == 0 && ls->count == 0 && next == 1)
		puts("No mails in your mailbox.");
	return r < 0 ? -1 : ls->count;
}

/* ---------------------------------------------------------------- the menu: reading a mail */

/* A mail the user chose: its number in the list, its unique-id (once
 * known; "" from a server without UIDL) and its text as RETR sent it. */
struct view {
	long n;
	char uid[UID_MAX];
	struct buf raw;		/* LF lines, unstuffed */
	int cut;		/* over MAIL_TEXT_MAX: the rest was left out */
};

/* add_field - "<name>: <value>" and a line end onto out */
static void add_field(struct buf *out, const char *name, const char *value, size_t len)
{
	buf_add(out, name, strlen(name));
	buf_add(out, ": ", 2);
	add_flat(out, value, len);
	buf_add(out, "\n", 1);
}

/* local_date - t as an RFC 5322 3.3 date in the reader's time zone */
static int local_date(time_t t, char *out, size_t cap)
{
	struct tm tm;

	if (!localtime_r(&t, &tm) || strftime(out, cap, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
		return -1;
	return 0;
}

/* view_date - the Date field of e, in the reader's time zone when it
 * reads as a date, else as written */
static void view_date(const struct entity *e, struct buf *out)
{
	struct buf v = { 0 };
	char when[64];
	time_t t;

	header_get(e->head, e->hlen, "Date", &v);
	if (v.len > 0 && parse_date(v.p, &t) == 0 && local_date(t, when, sizeof when) == 0)
		add_field(out, "Date", when, strlen(when));
	else if (v.len > 0) {
		const char *d = trim(v.p, &v.len);

		add_field(out, "Date", d, v.len);
	}
	buf_free(&v);
}

/* view_headers - the header lines the assignment names, decoded: From, To
 * (and Cc) and Subject. Then come Received, as the list has it, and the
 * sender's Date, both in the reader's time zone. Only these are shown,
 * because the source view has all the lines as they came. */
static void view_headers(const struct entity *top, struct buf *out)
{
	static const char *const names[] = { "From", "To", "Cc", "Subject" };
	struct buf v = { 0 }, received = { 0 };
	char when[64];

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (header_text(top, names[i], &v) == 0)
			add_field(out, names[i], v.p, v.len);
	header_get(top->head, top->hlen, "Received", &received);
	header_get(top->head, top->hlen, "Date", &v);
	received_text(received.p ? received.p : "", v.p ? v.p : "", when, sizeof when);
	if (strcmp(when, "?") != 0)
		add_field(out, "Received", when, strlen(when));
	view_date(top, out);
	buf_free(&v);
	buf_free(&received);
}

/* size_text - a size for people: "300 bytes", "12.5 KiB", "3.1 MiB" */
static void size_text(size_t n, char *out, size_t cap)
{
	if (n < 1024)
		snprintf(out, cap, "%zu bytes", n);
	else if (n < 1024 * 1024)
		snprintf(out, cap, "%.1f KiB", (double)n / 1024);
	else
		snprintf(out, cap, "%.1f MiB", (double)n / (1024 * 1024));
}

/* attachment_line - put "Attachment: <name> (<type>, <size>)" onto out for
 * a part that is not shown as text. The size is what the part decodes to. */
static void attachment_line(const struct part *pt, struct buf *out)
{
	struct buf name = { 0 }, data = { 0 };
	char size[64];

	if ((entity_param(&pt->e, "Content-Disposition", "filename", &name) < 0
	     && entity_param(&pt->e, "Content-Type", "name", &name) < 0) || name.len == 0) {
		name.len = 0;
		buf_add(&name, "(no name)", 9);
	}
	entity_decode(&pt->e, &data);
	size_text(data.len, size, sizeof size);
	buf_add(out, "Attachment: ", 12);
	add_flat(out, name.p, name.len);
	buf_add(out, " (", 2);
	buf_add(out, pt->type, strlen(pt->type));
	buf_add(out, ", ", 2);
	buf_add(out, size, strlen(size));
	buf_add(out, ")\n", 2);
	buf_free(&name);
	buf_free(&data);
}

/* shown_as_text - whether a part of this type is meant to be read: any
 * text type, and the reports of a bounce or a read receipt (RFC 3464 2.1,
 * RFC 8098 3.1), which are lines of fields written for people too */
static int shown_as_text(const char *type)
{
	return strncmp(type, "text/", 5) == 0
	       || in_list("message/delivery-status message/global-delivery-status "
			  "message/disposition-notification message/global-disposition-notification",
			  type);
}

/* What the view of a mail's body has put out so far: the kind of the last
 * thing, so that a text is set apart from what is around it by an empty
 * line while attachment lines stand together, and the parts counted. */
enum shown { SHOWN_NONE, SHOWN_TEXT, SHOWN_LINE };

struct body_view {
	struct buf *out;
	enum shown last;
	int texts;		/* texts shown: none means "(no text in this mail)" */
	int parts;		/* parts shown or listed, at most MIME_PARTS */
	int more;		/* parts past MIME_PARTS: counted, not listed */
};

static void view_entity(struct body_view *bv, const struct entity *e, const char *dflt,
			int depth);

/* view_next - an empty line before the next thing shown, unless it is the
 * first or an attachment line right after another one */
static void view_next(struct body_view *bv, enum shown next)
{
	if (bv->last == SHOWN_TEXT || (bv->last == SHOWN_LINE && next == SHOWN_TEXT))
		buf_add(bv->out, "\n", 1);
	bv->last = next;
}

/* all_space - whether s[len] is white space and line ends only */
static int all_space(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!strchr(" \t\r\n", s[i]) || s[i] == '\0')
			return 0;
	return 1;
}

/* view_text - a text part where it stands, without the empty lines at its
 * start and its end (the empty line between parts sets it apart); one
 * with nothing in it but white space is left out */
static void view_text(struct body_view *bv, const struct part *pt)
{
	struct buf text = { 0 };
	size_t start = 0, end = 0, pos = 0, len;
	const char *line;
	int found = 0;

	entity_text(pt, &text);
	while (next_line(&text, &pos, &line, &len) == 0) {
		if (all_space(line, len))
			continue;
		if (!found)
			start = (size_t)(line - text.p);
		found = 1;
		end = pos;	/* past the last line with text */
	}
	if (found) {
		view_next(bv, SHOWN_TEXT);
		buf_add(bv->out, text.p + start, end - start);
		bv->texts++;
	}
	buf_free(&text);
}

/*
 * view_enclosed - show a mail inside the mail (message/rfc822: a forwarded
 * mail, a digest's member, the returned mail of a bounce), ruled off. It
 * shows the enclosed mail's From, Date and Subject, then its body as a
 * mail's body is shown. RFC 2046 5.2.1 allows no transfer encoding on it
 * but 7bit, 8bit and binary, but one that is there is undone all the same.
 */
static void view_enclosed(struct body_view *bv, const struct entity *e, int depth)
{
	static const char rule[] = "----- enclosed mail -----\n";
	static const char end[] = "----- end of enclosed mail -----\n";
	struct buf data = { 0 }, v = { 0 };
	struct entity inner;

	if (transfer_encoding(e)) {
		entity_decode(e, &data);	/* a copy only then, not one a level */
		entity_split(data.p ? data.p : "", data.len, &inner);
	} else
		entity_split(e->body, e->blen, &inner);
	view_next(bv, SHOWN_TEXT);
	buf_add(bv->out, rule, sizeof rule - 1);
	if (header_text(&inner, "From", &v) == 0)
		add_field(bv->out, "From", v.p, v.len);
	view_date(&inner, bv->out);
	if (header_text(&inner, "Subject", &v) == 0)
		add_field(bv->out, "Subject", v.p, v.len);
	bv->texts++;
	view_entity(bv, &inner, "text/plain", depth + 1);
	buf_add(bv->out, end, sizeof end - 1);
	bv->last = SHOWN_TEXT;
	buf_free(&data);
	buf_free(&v);
}

/*
 * view_enclosed_headers - show the header section of a mail that comes
 * without a body, ruled off like an enclosed mail. A delivery report's
 * text/rfc822-headers part is one: the headers of the mail it reports on
 * (RFC 6522 4). Only its From, To, Date and Subject are shown, decoded,
 * not every trace line as it came; the source view has them all.
 */
static void view_enclosed_headers(struct body_view *bv, const struct entity *e)
{
	static const char rule[] = "----- enclosed headers -----\n";
	static const char end[] = "----- end of enclosed headers -----\n";
	static const char *const names[] = { "From", "To", "Cc" };
	struct buf data = { 0 }, v = { 0 };
	struct entity inner;

	entity_decode(e, &data);
	entity_split(data.p ? data.p : "", data.len, &inner);
	view_next(bv, SHOWN_TEXT);
	buf_add(bv->out, rule, sizeof rule - 1);
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (header_text(&inner, names[i], &v) == 0)
			add_field(bv->out, names[i], v.p, v.len);
	view_date(&inner, bv->out);
	if (header_text(&inner, "Subject", &v) == 0)
		add_field(bv->out, "Subject", v.p, v.len);
	buf_add(bv->out, end, sizeof end - 1);
	bv->texts++;
	bv->last = SHOWN_TEXT;
	buf_free(&data);
	buf_free(&v);
}

/* view_multipart - show the body parts of a multipart in order (RFC 2046
 * 5.1). Of an alternative only the chosen part is shown, and a digest's
 * parts are mails by default (5.1.5). It returns -1 when there is no body
 * part, because there is no boundary or none was found. */
static int view_multipart(struct body_view *bv, const struct entity *e, const char *type,
			  int depth)
{
	struct entity kids[MIME_KIDS];
	struct buf boundary = { 0 };
	int n = 0;

	if (entity_param(e, "Content-Type", "boundary", &boundary) == 0 && boundary.len > 0)
		n = mime_split(e, boundary.p, kids, MIME_KIDS);
	buf_free(&boundary);
	if (n == 0)
		return -1;
	if (strcmp(type, "multipart/alternative") == 0)
		view_entity(bv, &kids[alternative(kids, n)], "text/plain", depth + 1);
	else
		for (int i = 0; i < n; i++)
			view_entity(bv, &kids[i], strcmp(type, "multipart/digest") == 0
				    ? "message/rfc822" : "text/plain", depth + 1);
	return 0;
}

/* is_mail - whether a media type is a whole mail (RFC 2046 5.2.1, RFC 6532 3.5) */
static int is_mail(const char *type)
{
	return strcmp(type, "message/rfc822") == 0 || strcmp(type, "message/global") == 0;
}

/*
 * view_entity - show e where it stands in the body. A multipart shows its
 * parts in turn, and an enclosed mail is ruled off. A text meant to be read
 * (no Content-Disposition, or inline) is shown; anything else gets a line
 * that lists it. MIME_DEPTH bounds the nesting of multiparts and mails
 * alike, and deeper ones are only listed. A multipart without any part is
 * taken as text, and one with nothing in it is left out.
 */
static void view_entity(struct body_view *bv, const struct entity *e, const char *dflt,
			int depth)
{
	struct part pt = { *e, "" };
	int nested = depth < MIME_DEPTH && !is_attachment(e);

	entity_type(e, dflt, pt.type, sizeof pt.type);
	if (nested && strncmp(pt.type, "multipart/", 10) == 0) {
		if (view_multipart(bv, e, pt.type, depth) == 0 || all_space(e->body, e->blen))
			return;
		snprintf(pt.type, sizeof pt.type, "text/plain");
	}
	if (bv->parts >= MIME_PARTS) {
		bv->more++;
		return;
	}
	bv->parts++;
	if (nested && is_mail(pt.type))
		view_enclosed(bv, e, depth);
	else if (!is_attachment(e) && strcmp(pt.type, "text/rfc822-headers") == 0)
		view_enclosed_headers(bv, e);
	else if (!is_attachment(e) && shown_as_text(pt.type))
		view_text(bv, &pt);
	else {
		view_next(bv, SHOWN_LINE);
		attachment_line(&pt, bv->out);
	}
}

/* view_body - put the body of a mail onto out: every text in order, a
 * line for each attachment where it stands, and enclosed mails ruled off.
 * "(no text in this mail)" comes first when nothing is there to read, and
 * "(and N parts more)" last when parts past MIME_PARTS were not listed. */
static void view_body(const struct entity *top, struct buf *out)
{
	struct buf body = { 0 };
	struct body_view bv = { &body, SHOWN_NONE, 0, 0, 0 };
	char more[64];

	view_entity(&bv, top, "text/plain", 0);
	if (bv.texts == 0)
		buf_add(out, "(no text in this mail)\n", 23);
	if (bv.texts == 0 && body.len > 0)
		buf_add(out, "\n", 1);
	buf_add(out, body.p, body.len);
	snprintf(more, sizeof more, "(and %d parts more)\n", bv.more);
	if (bv.more > 0)
		buf_add(out, more, strlen(more));
	buf_free(&body);
}

/* show_mail - the mail as the reader wants it, through the pager: the
 * headers, the text decoded and in the terminal's charset, the parts */
static void show_mail(const struct view *v)
{
	struct buf out = { 0 };
	struct entity top;
	struct pager pg;
	char mark[64];

	snprintf(mark, sizeof mark, "\n----- mail no. %ld -----\n", v->n);
	buf_add(&out, mark, strlen(mark));
	entity_split(v->raw.p, v->raw.len, &top);
	view_headers(&top, &out);
	buf_add(&out, "\n", 1);
	view_body(&top, &out);
	if (v->cut)
		buf_add(&out, "[the rest of the mail is not shown: over 25 MiB]\n", 49);
	snprintf(mark, sizeof mark, "----- end of mail no. %ld -----\n", v->n);
	buf_add(&out, mark, strlen(mark));
	pager_start(&pg);
	page_text(&pg, &out);
	buf_free(&out);
}

/* show_source - the mail as it came, through the pager: every header as
 * written, every part encoded (the assignment's "entire content") */
static void show_source(const struct view *v)
{
	struct buf out = { 0 };
	struct pager pg;
	char mark[64];

	snprintf(mark, sizeof mark, "\n----- source of mail no. %ld -----\n", v->n);
	buf_add(&out, mark, strlen(mark));
	buf_add(&out, v->raw.p, v->raw.len);
	snprintf(mark, sizeof mark, "----- end of mail no. %ld -----\n", v->n);
	buf_add(&out, mark, strlen(mark));
	pager_start(&pg);
	page_text(&pg, &out);
	buf_free(&out);
}

/* gone - the mail the user chose is no longer there: another session
 * deleted it since the list was fetched */
static void gone(long n)
{
	printf("Mail no. %ld is no longer in the mailbox.\n", n);
}

/* fetch_mail - in one session, find the chosen mail (by its unique-id when
 * the list had it), RETR it whole, and QUIT, so that the user reads it
 * with no session open. It returns 0, 1 when the mail is gone, or -1
 * after an error. */
static int fetch_mail(const struct client *cl, struct view *v)
{
	struct pop p;
	struct keep k = { &v->raw, MAIL_TEXT_MAX, 0, 0 };
	long m;
	int r = -1;

	if (pop_open(&p, cl) < 0)
		return -1;
	m = pop_locate(&p, v->n, v->uid);
	if (m == 0)
		r = 1;
	else if (m < 0 || pop_cmd(&p, "RETR %ld", m) < 0
		 || pop_multiline(&p, keep_lines, &k) < 0)
		show_error("Error in reading mail", p.line);
	else
		r = 0;
	pop_close(&p);
	v->cut = k.cut;
	buf_add(&v->raw, "", 0);	/* an empty mail is "" too */
	if (r == 1)
		gone(v->n);
	return r;
}

/* delete_mail - in one session, find the mail again, DELE it, and QUIT.
 * The mail is found by its unique-id, because the numbers may have moved
 * since it was read; a server without UIDL is asked by its number.
 * "Mail deleted." waits for QUIT's +OK, because the server removes the
 * mail only then (RFC 1939 6). */
static void delete_mail(const struct client *cl, struct view *v)
{
	struct pop p;
	long m;

	if (pop_open(&p, cl) < 0)
		return;
	m = pop_locate(&p, v->n, v->uid);
	if (m == 0)
		gone(v->n);
	else if (m < 0 || pop_cmd(&p, "DELE %ld", m) < 0 || pop_close(&p) < 0)
		show_error("Error in deleting mail", p.line);
	else
		puts("Mail deleted.");
	pop_close(&p);
}

/* ---------------------------------------------------------------- the menu: Manage Mail */

/* plain_integer - whether s[len] is an integer as people write one: an
 * optional '-' and digits, nothing else ("+1", "1.0", "0x1" are not) */
static int plain_integer(const char *s, size_t len)
{
	size_t sign = len > 0 && s[0] == '-';

	return len > sign && strspn(s + sign, "0123456789") == len - sign;
}

/* choose_mail - ask "Enter mail no. to see: " until the answer is -1 or a
 * number in 1..count, into *n. An empty line is asked again, what is no
 * number gets a hint, a number out of range the assignment's message. -1
 * at the end of input. */
static int choose_mail(struct client *cl, long count, long *n)
{
	for (;;) {
		const char *s;
		size_t len;

		if (ask(cl, "Enter mail no. to see: ") < 0)
			return -1;
		len = cl->len;
		s = trim(cl->line, &len);
		if (len == 0)
			continue;
		if (!plain_integer(s, len)) {
			puts("Please enter a number (-1 for the menu)");
			continue;
		}
		errno = 0;
		*n = strtol(s, NULL, 10);
		if (*n == -1 || (errno == 0 && *n >= 1 && *n <= count))
			return 0;
		puts("Mail no. out of range, give again");
	}
}

/* read_one - fetch mail n, show it, then ask for the key: 'r' shows its
 * source and asks again, and 'd' deletes it. It returns NEXT_LIST for the
 * list to come again, NEXT_MENU after an error, and NEXT_EXIT at the end
 * of input. */
static enum next read_one(struct client *cl, const struct listing *ls, long n)
{
	struct view v = { n, "", { 0 }, 0 };
	int key, r;

	if (n <= ls->rows)
		memcpy(v.uid, ls->uid[n - 1], UID_MAX);
	if ((r = fetch_mail(cl, &v)) != 0) {
		buf_free(&v.raw);
		return r > 0 ? NEXT_LIST : NEXT_MENU;
	}
	show_mail(&v);
	while ((key = ask_key(cl, "Press d to delete, r to see the source, "
			      "any other key to see the list: ")) == 'r')
		show_source(&v);
	if (key == 'd')
		delete_mail(cl, &v);
	buf_free(&v.raw);
	return key == EOF ? NEXT_EXIT : NEXT_LIST;
}

/* ask_again - "Password: " after a refusal, for the next session to use;
 * -1 at the end of input */
static int ask_again(struct client *cl)
{
	int r = ask_password(cl);

	secret_done();
	return r;
}

/*
 * opt_manage_mail - menu 1: the list, the choice, the mail, the key, and
 * then the list again, fetched afresh. Each step that talks to the server
 * is a POP3 session of its own, ended with QUIT before the client waits
 * for the user. So the mailbox lock is never held while the user reads or
 * thinks, and another client can read the same mailbox meanwhile. When the
 * server refuses the password (it could not be checked at the start, or it
 * changed since), the password is asked for again, LOGIN_TRIES times in
 * all.
 */
static enum next opt_manage_mail(struct client *cl)
{
	struct listing ls = { 0 };
	enum next next;
	int tries = 0;

	do {
		long n, count;

		login_refused = 0;
		if ((count = list_mails(cl, &ls)) >= 0)
			cl->checked = 1;	/* the server took the password */
		if (count < 0 && login_refused && ++tries < LOGIN_TRIES)
			next = ask_again(cl) < 0 ? NEXT_EXIT : NEXT_LIST;
		else if (count <= 0)
			next = NEXT_MENU;
		else if (choose_mail(cl, ls.count, &n) < 0)
			next = NEXT_EXIT;
		else
			next = n == -1 ? NEXT_MENU : read_one(cl, &ls, n);
	} while (next == NEXT_LIST);
	free(ls.uid);
	return next;
}

/* ---------------------------------------------------------------- the menu: Send Mail */

/* typed_text - the mail as it was typed: From, To, Subject, an empty line,
 * the body; -1 when memory runs out */
static int typed_text(const struct mail *m, struct buf *text)
{
	return buf_add(text, "From: ", 6) == 0 && buf_add(text, m->from.p, m->from.len) == 0
	       && buf_add(text, "\nTo: ", 5) == 0 && buf_add(text, m->to.p, m->to.len) == 0
	       && buf_add(text, "\nSubject: ", 10) == 0
	       && buf_add(text, m->subject.p, m->subject.len) == 0
	       && buf_add(text, "\n\n", 2) == 0 && buf_add(text, m->body.p, m->body.len) == 0
	       ? 0 : -1;
}

/* write_file - text into a new file name (never one that is there, never
 * through a symbolic link), written whole and closed; 0, or an errno */
static int write_file(const char *name, const struct buf *text)
{
	int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600), err = 0;

	if (fd < 0)
		return errno;
	for (size_t done = 0; !err && done < text->len;) {
		ssize_t n = write(fd, text->p + done, text->len - done);

		if (n > 0)
			done += (size_t)n;
		else if (n == 0 || errno != EINTR)
			err = n == 0 ? EIO : errno;
	}
	if (close(fd) < 0 && !err)
		err = errno;
	return err;
}

/* save_mail - the mail as it was typed into a new file the user names. It
 * returns 0 once saved, -1 after saying why not. */
static int save_mail(struct client *cl, const struct mail *m)
{
	struct buf text = { 0 };
	int err;

	if (ask(cl, "Save the mail in the file: ") < 0 || cl->len == 0) {
		puts("Mail not saved.");
		return -1;
	}
	err = typed_text(m, &text) < 0 ? ENOMEM : write_file(cl->line, &text);
	buf_free(&text);
	if (err) {
		printf("Cannot save the mail in %s: %s\n", cl->line, strerror(err));
		return -1;
	}
	printf("Mail saved in %s.\n", cl->line);
	return 0;
}

/* keep_mail - keep the typed mail after a send that failed where a later
 * one may not: no reply (the server is down), a 4xx, or the password
 * refused. Menu 2 then offers to send it again or to save it. A refusal
 * of the mail itself (5xx) drops it, because sending it again would fail
 * again. */
static void keep_mail(struct client *cl, struct mail *m, int code)
{
	if ((code > 0 && code / 100 == 5 && code != AUTH_REFUSED) || !(cl->kept = malloc(sizeof *m)))
		return;
	*cl->kept = *m;
	memset(m, 0, sizeof *m);	/* the kept copy owns the text now */
	puts("The mail is kept: choose 2 to send it again or to save it in a file.");
}

/* drop_kept - forget the kept mail */
static void drop_kept(struct client *cl)
{
	if (cl->kept)
		mail_free(cl->kept);
	free(cl->kept);
	cl->kept = NULL;
}

/* send_kept - menu 2 while a mail is kept: s sends it again (the server
 * checked first, the password too when no server took it yet), f saves it,
 * any other key drops it for a new one. It returns 1 when a new mail is to
 * be typed, 0 for the menu, -1 at the end of input. */
static int send_kept(struct client *cl)
{
	struct mail *m = cl->kept;
	int key = ask_key(cl, "A mail was not sent: press s to send it again, f to save it in a file,"
			  " any other key to drop it: ");

	if (key == EOF)
		return -1;
	if (key == 's' || key == 'S') {
		struct mail again = *m;	/* taken out: kept anew if it fails again */
		int code;

		free(m);
		cl->kept = NULL;
		code = smtp_probe(cl) < 0 ? -1 : smtp_send(cl, &again);
		if (code != 0)
			keep_mail(cl, &again, code);
		mail_free(&again);
		return 0;
	}
	if ((key == 'f' || key == 'F') && save_mail(cl, m) < 0)
		return 0;	/* kept */
	drop_kept(cl);
	return key == 'f' || key == 'F' ? 0 : 1;
}

/* opt_send_mail - menu 2: see that the SMTP server answers, read the whole
 * mail up to ".", check it, and send it only if it is well formed. Ctrl-D
 * or Ctrl-C while it is typed drop it, and the menu comes back. A mail
 * that could not be sent is kept (keep_mail), and offered first here. */
static enum next opt_send_mail(struct client *cl)
{
	struct buf text = { 0 };
	struct mail m = { 0 };
	int r;

	if (cl->kept && (r = send_kept(cl)) <= 0)
		return r < 0 ? NEXT_EXIT : NEXT_MENU;
	if (smtp_probe(cl) < 0)
		return NEXT_MENU;
	catch_interrupt(1);
	puts("Type the mail: a line \"From: user@domain\", a line \"To: user@domain\"\n"
	     "(several addresses: separated by commas), a line \"Subject: text\" (at most\n"
	     "50 characters), then the body; end it with a line with only \".\".");
	r = read_mail(cl, &text);
	catch_interrupt(0);
	if (r < 0) {
		buf_free(&text);
		printf("%sMail not sent.\n", interrupted ? "\n" : "");
		clearerr(stdin);	/* a terminal reads on after Ctrl-D; a pipe stays at its end */
		return NEXT_MENU;
	}
	if (r > 0)
		m.why = "the mail is too long";
	else
		check_typed_mail(&text, &m);
	buf_free(&text);
	if (m.why)
		printf("Incorrect format\n  (%s)\n", m.why);
	else if ((r = smtp_send(cl, &m)) != 0)
		keep_mail(cl, &m, r);
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

/* ---------------------------------------------------------------- the start: the login checked */

/* pop_check - check the credentials by one POP3 login and QUIT. It returns
 * 0 when the server took them and 1 when it refused them. It returns -1
 * when they could not be checked, because the server is down or busy; the
 * user was told. */
static int pop_check(const struct client *cl)
{
	struct pop p;
	int r = 0;

	checking(1);
	if (pop_connect(&p) < 0 || pop_login(&p, cl) < 0)
		r = p.refused ? 1 : -1;
	checking(0);
	if (r < 0)
		puts("The password was not checked.");
	pop_close(&p);
	return r;
}

/* login_check - at the start, log in to the POP3 server once, so that a
 * mistyped password is caught before a mail is typed; a refused one is
 * asked for again, LOGIN_TRIES times in all. A server that cannot be
 * reached is no reason to stop: the SMTP server may be all there is. It
 * returns 0 to go on to the menu, -1 at the end of input, 1 when every
 * password was refused. */
static int login_check(struct client *cl)
{
	for (int tries = 1;; tries++) {
		int r = pop_check(cl);

		secret_done();
		cl->checked = r == 0;
		if (r <= 0)
			return 0;
		if (tries == LOGIN_TRIES)
			return 1;
		if (ask_password(cl) < 0)
			return -1;
	}
}

/* ---------------------------------------------------------------- options and main */

/* usage - print help_text on out: all of it for -h (code 0), and after
 * bad usage only its synopsis, the lines before the first blank one. It
 * returns code, for main to return. */
static int usage(FILE *out, int code)
{
	const char *blank = strstr(help_text, "\n\n");
	size_t len = code == 0 || !blank ? strlen(help_text) : (size_t)(blank + 1 - help_text);

	if (fwrite(help_text, 1, len, out) != len || fflush(out) != 0)
		return 1;	/* -h > /dev/full: the help did not get out */
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
	int r = parse_options(argc, argv), checked = -1;

	if (r != 0)
		return r > 0 ? usage(stdout, 0) : usage(stderr, 2);
	catch_signals();
	/* On a terminal, read only what is asked for: ask_key's one key leaves
	 * nothing of the next keys in stdio's buffer (a pipe stays buffered). */
	if (isatty(STDIN_FILENO) && setvbuf(stdin, NULL, _IONBF, 0) != 0)
		log_msg("cannot unbuffer stdin");
	tzset();	/* local time for Date:, the list and the mail */
	stdout_tty = isatty(STDOUT_FILENO);
	screen_charset();
	screen_widths();
	cl.username = ask_credential(&cl, "Username: ", 0);
	if (cl.username && ask_password(&cl) == 0)
		checked = login_check(&cl);
	if (checked == 0)
		menu_loop(&cl);
	else	/* 1: every password refused; -1: end of input, or out of memory */
		r = checked > 0 ? 3 : errno == ENOMEM ? 1 : 0;
	if (checked > 0)
		printf("The password was refused %d times: the client ends.\n", LOGIN_TRIES);
	if (feof(stdin))
		putchar('\n');	/* end of input: leave the shell prompt on a new line */
	drop_kept(&cl);
	free(cl.username);
	if (cl.password)
		secret_wipe(cl.password, strlen(cl.password));
	free(cl.password);
	free(cl.line);
	return r;
}
