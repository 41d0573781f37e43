/*
 * smtpmail - a forking SMTP receiver (RFC 5321) that delivers into the spool
 *
 * Usage and options: help_text, just below the includes (smtpmail -h
 * prints it, and README shows it: one text, checked by tests/test_help.py).
 *
 * Commands: HELO, EHLO, AUTH, MAIL FROM:, RCPT TO:, DATA, RSET, NOOP, QUIT,
 * VRFY and HELP; EXPN, TURN, ETRN, STARTTLS, BDAT, SEND, SOML and SAML are
 * known but answered 502. Verbs ignore case. EHLO offers SIZE, 8BITMIME,
 * PIPELINING, ENHANCEDSTATUSCODES and AUTH CRAM-MD5 PLAIN LOGIN (RFC 4954,
 * checked against user.txt: "235 2.7.0 Authentication successful", a wrong
 * password "535 5.7.8 Authentication credentials invalid" after the -w
 * delay; mail after AUTH says "with ESMTPA" in its Received line).
 *
 * Replies come in two dialects, chosen by the client's greeting. After
 * HELO (the assignment's and RFC 821's command), and before any greeting,
 * they are the assignment's words, with no enhanced codes:
 *   "220 <host> Service ready", "250 OK Hello <domain>",
 *   "250 <addr>... Sender ok", "250 <addr>... Recipient ok",
 *   "354 Enter mail, end with "." on a line by itself",
 *   "250 OK Message accepted for delivery as <id>",
 *   "221 <host> closing connection", "550 No such user",
 *   "503 Need MAIL command".
 * After EHLO the same words carry an RFC 3463 enhanced code (RFC 2034):
 * "250 2.1.0 <addr>... Sender ok", "250 2.1.5 <addr>... Recipient ok",
 * "250 2.0.0 OK Message accepted for delivery as <id>", "221 2.0.0 <host>
 * closing connection", "550 5.1.1 No such user", "503 5.5.1 Need MAIL
 * command", and so on; the replies to HELO and EHLO never carry one.
 * A command out of order gets 503, a bad argument 501.
 *
 * Delivery (DESIGN.md): the data is stored as CRLF lines, dot-stuffed, after
 * a Return-Path and a Received line; the write locks are taken in sorted
 * login order, then every mailbox is appended, all or nothing, under an
 * fcntl lock on the mailbox itself (mutt's and procmail's) and never while
 * another program holds the dotlock mymailbox.lock. Group commit makes it
 * durable: one fsync under a mailbox's commit lock covers every record
 * appended before it began, and a failed one cuts back all that it covered
 * (DESIGN.md "The commit protocol"). A 250 after DATA means the message is
 * on disk in every mailbox; any other reply, that it is in none.
 *
 * Relay (-o, DESIGN.md "The queue"): a session that authenticated, or a
 * client in a -N network, may name recipients in other domains; anyone
 * else gets "550 5.7.1 Relaying denied" for them. Such a message is
 * queued in <spool>/.queue before the 250, all or nothing together with
 * its local recipients, and the queue runner delivers it: MX lookup or a
 * -R route, SMTP to the next host, retries with a growing backoff, and a
 * delivery report (RFC 3464) into the sender's own mailbox on failure.
 *
 * Limits (RFC 5321 4.5.3): command line 512 octets, local part 64, domain
 * 255, path 256, 100 recipients, 20 errors a session, -s bytes a message;
 * 100 Received lines make a loop (RFC 5321 6.3: 554 5.4.6).
 *
 * Process model (DESIGN.md "Process model"): the parent accepts and hands
 * each connection to an idle session process (a worker, reused: the pool
 * block), or forks a new one; beyond POOL_SPARE idle workers are
 * dismissed. Only live sessions count against -c and -C: a session that is
 * over says so in a note on a pipe, with its wrong passwords, and finished
 * children are reaped before any refusal.
 * SIGTERM or SIGINT: stop accepting, dismiss idle workers, give running
 * sessions 10 s to end, then SIGTERM them (a delivery under way finishes or
 * rolls back first); sessions ignore SIGINT, so a Ctrl-C to the process
 * group does not cut them short.
 * SIGPIPE and SIGXFSZ are ignored. When accept() runs out of descriptors it
 * is retried every 100 ms, and logged once.
 * With -o (and not -i) the parent also forks a keeper before it accepts:
 * the keeper runs the queue runner, starts it again when it ends (10 s
 * apart at most), and stops it when the parent stops (after the sessions)
 * or is gone. The runner (run_queue; -q runs it alone) holds the lock of
 * .queue/.runner, scans the queue, and forks delivery processes: each
 * takes up to 16 messages for one domain over one connection, 20 of them
 * at once, 2 connecting to one domain.
 *
 * Exit status: 0 success, non-zero failure: 0 after SIGTERM or SIGINT (and
 * with -i after the session), 1 when it cannot listen or serve or a queue
 * command (-q -p -F -x) fails, 2 on bad usage. A session's wrong passwords reach the parent only in its note on
 * the pipe, which adds them to the client address's penalty; with -i there
 * is no parent, and a wrong password waits -w, doubled within the session.
 *
 * Where to look: commands[] is the table, dispatch checks a row's states and
 * argument rule, out_of_order picks the 503; HELO/EHLO: cmd_helo, cmd_ehlo
 * -> greet; MAIL: cmd_mail, check_mail; RCPT: cmd_rcpt, check_rcpt ->
 * find_mailbox; AUTH: cmd_auth, check_auth -> sasl_auth, auth_answer;
 * DATA: cmd_data -> receive_data -> scan_data, store_byte;
 * delivery: deliver -> deliver_local -> lock_all (lock_one),
 * open_for_append (mailbox_lock, tidy_mailbox, commit_prepare),
 * append_record, then commit_one (group commit; commit_alone and
 * settle_unknown when the state cannot tell) or commit_all, release_all;
 * replies and their dialect: reply, code_len; the state: set_state; a
 * session: smtp_session -> session_step; the accept loop: serve -> admit
 * -> start_session -> the pool's reuse_worker (hand_off) or fork_session
 * (run_child, next_connection); the notes: session_over -> drain_over ->
 * note_over; -i: serve_inetd.
 * relay intake: check_rcpt -> relay_check (relay_refusal, queue_room),
 * cmd_data -> loop_check, deliver -> queue_message, queue_release
 * (queue_wake -> runner_holder) or queue_withdraw; relay delivery:
 * run_queue -> runner_step -> queue_sweep (what crashes left), scan_queue
 * (queue_names, due_add), start_due -> start_delivery (order_fill) ->
 * deliver_order -> destination (find_targets, connect_destination ->
 * open_session), transaction (send_envelope, send_data), record
 * (apply_outcomes -> settle, report_failed, notice_delay, job_done);
 * reports: report_deliver -> report_compose, report_store; the keeper:
 * runner_start, keeper, runner_end; -p, -F, -x: queue_command.
 */
#define _POSIX_C_SOURCE 200809L

#include <sys/types.h>
#include <sys/stat.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <dirent.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <resolv.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
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
	"usage: smtpmail [-d spool] [-u userfile] [-n hostname] [-l address]\n"
	"                [-s maxbytes] [-c maxsessions] [-C perclient] [-t seconds]\n"
	"                [-r bytes/s] [-T seconds] [-D domain]... [-a] [-w msec] [-i]\n"
	"                [-v] [-h] [-o] [-N network]... [-R domain=host[:port]]...\n"
	"                [-B min:max] [-E seconds] [-W seconds] [-Z count] [port]\n"
	"       smtpmail [-d spool] [-u userfile] [-n hostname] -q | -p | -F | -x id\n"
	"\n"
	"  port            TCP port to listen on (2525)\n"
	"  -d spool        mail goes to <spool>/<login>/mymailbox (users if that\n"
	"                  directory exists, else the user file's directory)\n"
	"  -u userfile     the accounts, \"<login> <password>\" a line (user.txt)\n"
	"  -n hostname     the name in the greeting and trace lines (gethostname)\n"
	"  -l address      listen on this address only (every IPv4 and IPv6 address)\n"
	"  -s maxbytes     the largest message, as stored (26214400: 25 MiB)\n"
	"  -c maxsessions  sessions at once; past it \"421 ... try again later\" (100)\n"
	"  -C perclient    sessions at once from one client address (half of -c)\n"
	"  -t seconds      timeout for a command line and each read in DATA (300)\n"
	"  -r bytes/s      the least data rate in DATA after -t seconds; 0: none (500)\n"
	"  -T seconds      the longest a session may last, then \"421 4.4.2\" (3600)\n"
	"  -D domain       a local domain, repeatable (16 at most); other domains then\n"
	"                  get \"550 5.7.1 Relaying denied\" (default: any domain)\n"
	"  -a              submission (RFC 6409): MAIL only after AUTH, and only from\n"
	"                  the login's own address or <>\n"
	"  -w msec         the wait before a wrong password's 535, doubled for each\n"
	"                  recent failure of the client's address, up to 15 s (1000)\n"
	"  -i              one session on standard input and output (inetd, stunnel)\n"
	"  -v              log the whole dialogue, never a password\n"
	"  -h              this help on stdout\n"
	"\n"
	"Relay: mail for other hosts is queued in <spool>/.queue, then delivered.\n"
	"  -o              relay for AUTH sessions and -N networks; needs -D (off)\n"
	"  -N net/prefix   a network that may relay without AUTH, repeatable (none)\n"
	"  -R dom=host[:port]  dom's mail to host, or to [address]:port, with no MX\n"
	"                  lookup; \"*=...\" every domain's (a smarthost); repeatable\n"
	"  -B min:max      seconds between tries, growing with age (300:4000)\n"
	"  -E seconds      return mail not delivered by then to its sender (432000)\n"
	"  -W seconds      tell the sender a mail is delayed, after (14400)\n"
	"  -Z count        messages the queue holds, 1-10000; past it \"452 4.3.1\"\n"
	"                  (10000)\n"
	"  -q              run the queue runner alone (with -i); SIGTERM ends it\n"
	"  -p              print the queue\n"
	"  -F              have the queue runner try every message now\n"
	"  -x id           remove message id from the queue\n"
	"\n"
	"Exit status: 0 success, 1 cannot listen or serve, or a queue command\n"
	"failed (-p -F -x: no such message, no runner), 2 bad usage.\n";

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
	COMMAND_LINE_MAX = 512,	/* RFC 5321 4.5.3.1.4: 512 octets with the CRLF */
	REPLY_LINE_MAX = 512,	/* RFC 5321 4.5.3.1.5: 512 octets with the CRLF */
	LOCAL_PART_MAX = 64,	/* RFC 5321 4.5.3.1.1: 64 octets */
	DOMAIN_MAX = 255,	/* RFC 5321 4.5.3.1.2: 255 octets */
	SMTP_PATH_MAX = 256,	/* RFC 5321 4.5.3.1.3: 256 octets with the <> */
	RECIPIENTS_MAX = 100,	/* RFC 5321 4.5.3.1.8: at least 100 recipients */
	ERRORS_MAX = 20,	/* error replies before "421 4.7.0", as Postfix */
	DOMAINS_MAX = 16,	/* -D options */
	HOSTNAME_MAX = 255,	/* -n / gethostname: a domain */
	SPILL_MEM = 65536,	/* DATA kept in memory up to this, then a temp file */
	TRACE_MAX = 2048,	/* Return-Path + Received lines of one record */
	ID_MAX = 64,		/* a message id */
	DEFAULT_MAX_SIZE = 25 * 1024 * 1024,	/* -s: 25 MiB */
	DEFAULT_SESSIONS = 100,	/* -c */
	DEFAULT_TIMEOUT = 300,	/* -t: RFC 5321 4.5.3.2.7 asks 5 minutes */
	DEFAULT_MIN_RATE = 500,	/* -r, bytes/s in DATA: Postfix's smtpd_min_data_rate */
	DEFAULT_LIFETIME = 3600,	/* -T: 25 MiB then needs 7.3 KB/s at least */
	DEFAULT_PENALTY_MS = 1000,	/* -w, ms: as popserver's -w */
	TRUSTED_MAX = 16,	/* -N networks */
	ROUTES_MAX = 16,	/* -R routes */
	QUEUE_RCPTS_MAX = RECIPIENTS_MAX,	/* the recipients of one queued message */
	REPLY_TEXT_MAX = 512,	/* a remote reply kept in the queue: one line */
	TARGETS_MAX = 16,	/* the addresses tried for one destination */
	RELAY_PROCS_MAX = 20,	/* delivery processes of the runner at once */
	RELAY_PER_DEST = 2,	/* of them, to one destination domain */
	DEFAULT_BACKOFF_MIN = 300,	/* -B: Postfix's minimal_backoff_time */
	DEFAULT_BACKOFF_MAX = 4000,	/* -B: Postfix's maximal_backoff_time */
	DEFAULT_QUEUE_LIFETIME = 5 * 86400,	/* -E: 5 days, as Postfix */
	DEFAULT_NOTICE_AFTER = 4 * 3600,	/* -W: 4 hours, as Postfix's delay_warning_time */
	DEFAULT_QUEUE_MAX = 10000	/* -Z: messages in the queue, and its most: what a scan reads */
};

/* ---------------------------------------------------------------- types */

/* The configuration: set by main from the options, or by a fuzz harness. */
/* A network allowed to relay without AUTH (-N), as Postfix's mynetworks. */
struct network {
	int family;		/* AF_INET or AF_INET6 */
	unsigned char addr[16];	/* network byte order */
	int prefix;		/* leading bits that must match */
};

/* A static route (-R): a domain's mail goes to host:port, with no MX lookup. */
struct route {
	char domain[DOMAIN_MAX + 1];	/* a domain, or "*" for every domain (a smarthost) */
	char host[DOMAIN_MAX + 1];	/* a host name, or the address inside [ ] */
	char port[6];		/* "25" unless given */
	int literal;		/* [address]: that address, no lookup at all */
};

/* What smtpmail is asked to do: serve, or one queue command and exit. */
enum queue_mode { QM_SERVE, QM_RUNNER, QM_PRINT, QM_FLUSH, QM_REMOVE };

struct config {
	const char *spool;	/* -d */
	const char *userfile;	/* -u */
	const char *hostname;	/* -n, else gethostname() */
	const char *listen;	/* -l; NULL: every address */
	const char *port;
	unsigned long long max_size;	/* -s, bytes of message data */
	int max_sessions;	/* -c */
	int max_per_client;	/* -C; 0: half of -c, at least 1 */
	int timeout;		/* -t, seconds */
	int min_rate;		/* -r, bytes/s in DATA; 0: none */
	int lifetime;		/* -T, seconds a session may last */
	const char *domains[DOMAINS_MAX];	/* -D; none: any domain is local */
	int ndomains;
	int submission;		/* -a: MAIL only after AUTH, from the login's address */
	int penalty_ms;		/* -w: the wait before a wrong password's answer */
	int inetd;		/* -i: one session on standard input and output */
	int relay;		/* -o: relay for authenticated sessions and -N */
	struct network trusted[TRUSTED_MAX];	/* -N: may relay without AUTH */
	int ntrusted;
	struct route routes[ROUTES_MAX];	/* -R: where a domain's mail goes */
	int nroutes;
	int backoff_min, backoff_max;	/* -B, seconds between tries */
	int queue_lifetime;	/* -E, seconds before a queued message fails */
	int notice_after;	/* -W, seconds before the delay notice */
	int queue_max;		/* -Z, messages in the queue */
	enum queue_mode queue_mode;	/* -q, -p, -F, -x: a queue command, no listening */
	const char *remove_id;	/* -x */
};

/* The protocol state (RFC 5321 4.1.4). The states are listed in protocol
 * order, which out_of_order relies on; only set_state changes them. One
 * list makes both the enum and the names -v logs (state_names), so that
 * the two cannot drift apart. */
#define SMTP_STATES(X) X(START) X(GREETED) X(MAIL) X(RCPT) X(DATA) X(QUIT)
#define STATE_ENUM(name) ST_##name,
#define STATE_NAME(name) #name,
enum state { SMTP_STATES(STATE_ENUM) };

/* One distinct recipient mailbox of the transaction. */
struct rcpt {
	char login[LOGIN_MAX + 1];	/* as spelled in user.txt */
	char given[SMTP_PATH_MAX];	/* the address as the client gave it */
	int dir_fd, lock_fd, box_fd;	/* during delivery, else -1 */
	off_t start;		/* where our record starts: the size before our append */
	off_t end;		/* where our record ends (append_record) */
	struct stat box_stat;	/* the mailbox's status, to tell it from a replacement */
	uint64_t epoch;		/* the commit epoch we appended in (commit_prepare) */
	char id[ID_MAX];	/* the message's id, in our record's trace lines */
};

/* Where the end-of-data scan stands on the wire (DESIGN.md "Line ends"):
 * at the start of a line, after a '.' there, after ".\r", inside a line,
 * or past the final dot. */
enum wire { W_BOL, W_DOT, W_DOT_CR, W_TEXT, W_END };

/* The stored message: memory up to SPILL_MEM, then an unlinked temp file. */
struct spill {
	char *mem;		/* SPILL_MEM bytes, allocated at the first DATA */
	size_t len;		/* bytes in mem not yet written to fd */
	int fd;			/* the temp file, or -1 */
	unsigned long long size;	/* message bytes stored */
	int too_big;		/* over cfg.max_size: drain, store nothing */
	int error;		/* errno of a failed temp-file write, or 0 */
	enum wire wire;		/* position on the wire (raw CRLF lines) */
	int cr_pending;		/* a CR that may start a raw CRLF */
	int line_start;		/* at the start of a stored line: stuff a '.' */
};

/* A queued recipient's state (DESIGN.md "The queue"): pending and deferred
 * wait for a try; delivered and failed are final. */
enum rcpt_state { RS_PENDING, RS_DEFERRED, RS_DELIVERED, RS_FAILED };

/* One recipient of a queued message, as its .env line has it. */
struct job_rcpt {
	char address[SMTP_PATH_MAX];	/* without the <> */
	enum rcpt_state state;
	int attempts;
	long long next_try, last_try;	/* unix seconds; 0: never */
	char remote[DOMAIN_MAX + 1];	/* the host that gave the last reply, or "" */
	char reply[REPLY_TEXT_MAX + 1];	/* the last reply, one line, or "" */
};

/* A queued message's envelope: <spool>/.queue/<id>.env in memory. */
struct job {
	char id[ID_MAX];
	long long arrived;	/* unix seconds, when its 250 was decided */
	char from[SMTP_PATH_MAX];	/* the reverse-path without <>; "" for <> */
	char auth[LOGIN_MAX + 1];	/* the login that sent it, or "-" (-N) */
	char client[ADDR_TEXT_MAX];	/* the client's address */
	int notice;		/* 1 once the delay notice was written */
	int nrcpt;
	struct job_rcpt rcpt[QUEUE_RCPTS_MAX];
};

static struct config cfg = {
	.spool = NULL, .userfile = "user.txt", .hostname = "localhost",
	.port = "2525", .max_size = DEFAULT_MAX_SIZE,
	.max_sessions = DEFAULT_SESSIONS, .timeout = DEFAULT_TIMEOUT,
	.min_rate = DEFAULT_MIN_RATE, .lifetime = DEFAULT_LIFETIME,
	.penalty_ms = DEFAULT_PENALTY_MS,
	.backoff_min = DEFAULT_BACKOFF_MIN, .backoff_max = DEFAULT_BACKOFF_MAX,
	.queue_lifetime = DEFAULT_QUEUE_LIFETIME, .notice_after = DEFAULT_NOTICE_AFTER,
	.queue_max = DEFAULT_QUEUE_MAX
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

static const char *progname = "smtpmail";

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

/* >>> shared: pool - session processes reused for one session after another (smtpmail.c) */

/* The parent hands each accepted connection to an idle worker over a
 * socketpair (SCM_RIGHTS), or forks a new one (DESIGN.md "Process model"). */
enum {
	POOL_SPARE = 8,		/* idle workers kept for reuse; more are dismissed */
	POOL_MAX_USE = 100	/* sessions a worker serves, then exits (Postfix's max_use) */
};

/* What the parent sends a worker with a connection (SCM_RIGHTS). */
struct handoff {
	int pause_ms;		/* the session's wait before a wrong password's answer */
	char peer[ADDR_TEXT_MAX];	/* the client's address */
};

/* A buffer for one descriptor's SCM_RIGHTS message, aligned for cmsghdr. */
union fd_control {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int))];
};

/* hand_off - send connection fd, with the client's address and the
 * session's pause, to a worker on its socketpair; 0, or -1 */
static int hand_off(int sock, int fd, const char *peer, int pause_ms)
{
	struct handoff h;
	union fd_control ctl;
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof h };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			      .msg_controllen = sizeof ctl.buf };
	struct cmsghdr *cm;
	ssize_t n;

	memset(&h, 0, sizeof h);
	memset(&ctl, 0, sizeof ctl);
	h.pause_ms = pause_ms;
	(void)snprintf(h.peer, sizeof h.peer, "%s", peer);	/* fits: both ADDR_TEXT_MAX */
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof fd);
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	if ((n = sendmsg(sock, &msg, MSG_NOSIGNAL)) == (ssize_t)sizeof h)
		return 0;
	if (n >= 0)
		errno = EMSGSIZE;	/* a SOCK_SEQPACKET message goes whole or not at all */
	return -1;
}

/* next_connection - in a worker between sessions: wait for the parent's
 * next connection. Its descriptor, with the client's address in peer and
 * the session's pause in *pause_ms; -1 when the parent has closed the
 * socketpair (the worker is dismissed) or it failed. */
static int next_connection(int sock, char *peer, size_t cap, int *pause_ms)
{
	struct handoff h;
	union fd_control ctl;
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof h };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			      .msg_controllen = sizeof ctl.buf };
	struct cmsghdr *cm;
	ssize_t n;
	int fd = -1;

	while ((n = recvmsg(sock, &msg, 0)) < 0 && errno == EINTR)
		;
	if (n < 0)
		log_msg("worker: %s", strerror(errno));
	cm = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS
	    && cm->cmsg_len == CMSG_LEN(sizeof fd))
		memcpy(&fd, CMSG_DATA(cm), sizeof fd);
	if (fd >= 0 && (n != (ssize_t)sizeof h || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))) {
		close_fd(fd, "connection");	/* not the parent's message */
		fd = -1;
	}
	if (fd < 0)
		return -1;
	h.peer[sizeof h.peer - 1] = '\0';
	(void)snprintf(peer, cap, "%s", h.peer);
	*pause_ms = h.pause_ms;
	return fd;
}

/* idle_worker - an idle worker, or NULL; in *count how many there are */
static struct child *idle_worker(struct server *srv, int *count)
{
	struct child *found = NULL;

	*count = 0;
	for (int i = 0; i < srv->nchildren; i++)
		if (srv->children[i].idle) {
			found = &srv->children[i];
			(*count)++;
		}
	return found;
}

/* reuse_worker - hand fd to an idle worker; the worker, or NULL if none
 * took it (one that cannot, which has just died, is dismissed) */
static struct child *reuse_worker(struct server *srv, int fd, const char *peer,
				  int pause_ms)
{
	struct child *c;
	int idle;

	while ((c = idle_worker(srv, &idle)) != NULL) {
		if (hand_off(c->sock, fd, peer, pause_ms) == 0)
			return c;
		log_msg("worker %ld: %s", (long)c->pid, strerror(errno));
		worker_dismiss(c);
	}
	return NULL;
}

/* worker_channel - the socketpair of a new worker, non-blocking at the
 * parent's end sv[0] (the accept loop never blocks); 0, or -1 (out of
 * descriptors: the new process serves one session) */
static int worker_channel(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0 && fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0)
		return 0;
	for (int i = 0; i < 2; i++)
		if (sv[i] >= 0)
			close_fd(sv[i], "socketpair");
	return -1;
}

/* worker_rest - worker c's session is over: it is idle, up to POOL_SPARE
 * of them; beyond, it is dismissed, so that a burst does not leave its
 * processes behind; after its last session (last) it is exiting */
static void worker_rest(struct server *srv, struct child *c, int last)
{
	int idle;

	(void)idle_worker(srv, &idle);
	if (c->sock >= 0 && idle < POOL_SPARE && !last)
		c->idle = 1;
	else
		worker_dismiss(c);
}

/* The pool as the accept loop calls it (struct server's pool). */
static const struct pool_ops worker_pool = {
	.reuse = reuse_worker, .channel = worker_channel, .next = next_connection,
	.rest = worker_rest, .max_use = POOL_MAX_USE
};

/* <<< shared: pool */

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

/* ---------------------------------------------------------------- the session */

/* A session holds the shared struct conn, so its type follows the shared
 * blocks instead of standing with the other types. */
struct session {
	struct conn conn;
	const char *peer;	/* the client's numeric address */
	enum state state;
	int esmtp;		/* EHLO rather than HELO: enhanced codes (RFC 2034)
				 * and "with ESMTP" in the trace (RFC 3848) */
	int errors;		/* 4xx/5xx replies so far */
	int auth_failures;	/* wrong passwords so far: the parent's penalty report */
	int pause_ms;		/* the first wrong password's wait (the parent's penalty) */
	char auth_login[LOGIN_MAX + 1];	/* after AUTH: the account, as in user.txt */
	char helo[DOMAIN_MAX + 1];
	char sender[SMTP_PATH_MAX];	/* "" is the null sender <> */
	struct rcpt rcpts[RECIPIENTS_MAX];	/* distinct mailboxes */
	int nrcpts;		/* distinct mailboxes */
	int accepted;		/* RCPT commands answered 250 */
	char relay[RECIPIENTS_MAX][SMTP_PATH_MAX];	/* recipients to queue (relay_check) */
	int nrelay;
	struct spill spill;
};

/* What a handler gets of its command line (popserver's handlers get a
 * struct args too, with the words its rules parse). */
struct args {
	char *text;		/* the argument, spaces around it dropped; MAIL's and
				 * RCPT's without their FROM: or TO: (dispatch) */
};

/* The names -v logs for the states, from the same list as the enum. */
static const char *const state_names[] = { SMTP_STATES(STATE_NAME) };

/* set_state - change the protocol state. Every change goes through here,
 * so that -v logs each transition and no handler moves the state behind
 * the table's back. */
static void set_state(struct session *s, enum state new)
{
	if (verbose && s->state != new)
		log_msg("state %s -> %s", state_names[s->state], state_names[new]);
	s->state = new;
}

/* ---------------------------------------------------------------- replies */

/* code_len - the length of the RFC 3463 enhanced code that follows a
 * reply's three digits, with its space ("5.5.1 " is 6), or 0 if there is
 * none: a class equal to the reply's first digit (as in every code sent
 * here), then a subject and a detail of 1-3 digits each */
static size_t code_len(const char *line, size_t n)
{
	size_t i = 5;

	if (n < 10 || (line[3] != ' ' && line[3] != '-') || line[4] != line[0])
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t digits = 0;

		if (i >= n || line[i++] != '.')
			return 0;
		while (i < n && isdigit((unsigned char)line[i]) && digits < 3) {
			i++;
			digits++;
		}
		if (digits == 0)
			return 0;
	}
	return i < n && line[i] == ' ' ? i + 1 - 4 : 0;
}

/*
 * reply - send one reply line: formatted, cut to the 512-octet limit (RFC
 * 5321 4.5.3.1.5), CRLF added. The replies are written with their enhanced
 * codes, and this is the one place that drops them when the session does
 * not speak that dialect: RFC 2034 gives them only to a client that said
 * EHLO, and after HELO (the assignment's and RFC 821's command) the replies
 * are the assignment's words. A reply is only queued: conn_fill sends it
 * before the next read, so a pipelining client (RFC 2920) gets its replies
 * in one write. 4xx and 5xx replies count towards the session's error
 * limit, and are logged even without -v: they are what an operator seeks.
 */
static void reply(struct session *s, const char *fmt, ...)
{
	char line[REPLY_LINE_MAX];
	va_list ap;
	size_t len, code;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	len = (size_t)n;
	if (len >= sizeof line - 2)
		len = sizeof line - 3;	/* cut short, but still one line */
	if (!s->esmtp && (code = code_len(line, len)) > 0) {
		memmove(line + 4, line + 4 + code, len - 4 - code + 1);
		len -= code;
	}
	if (line[0] == '4' || line[0] == '5')
		s->errors++;
	if (verbose)
		log_msg("> %s", line);
	else if (line[0] == '4' || line[0] == '5')
		log_msg("%s: refused: %s", s->peer, line);
	memcpy(line + len, "\r\n", 2);
	conn_write(&s->conn, line, len + 2);
}

/* ---------------------------------------------------------------- parsers */

enum addr_error { ADDR_OK, ADDR_SYNTAX, ADDR_LOCAL_LONG, ADDR_DOMAIN_LONG,
		  ADDR_PATH_LONG, ADDR_NO_DOMAIN };

/* The text of each addr_error, for the 501 replies of MAIL and RCPT. */
static const char *const addr_errors[] = {
	"OK", "Bad address syntax", "Local part too long (64 octets at most)",
	"Domain too long (255 octets at most)", "Path too long (256 octets at most)",
	"Address needs a domain"
};

/* local_char - may c appear in an unquoted local part (RFC 5321 4.1.2 atext)? */
static int local_char(unsigned char c)
{
	return c > ' ' && c < 0x7f && !strchr("<>()[]\\,;:@\"", c);
}

/* domain_valid - a domain name or an address literal "[...]" (RFC 5321 4.1.2) */
static int domain_valid(const char *d)
{
	size_t n = strlen(d);

	if (n == 0)
		return 0;
	if (d[0] == '[') {
		for (size_t i = 1; i + 1 < n; i++)
			if (d[i] <= ' ' || d[i] >= 0x7f || strchr("[]\\", d[i]))
				return 0;
		return n > 2 && d[n - 1] == ']';
	}
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)d[i]) && d[i] != '-' && d[i] != '.')
			return 0;
	return d[0] != '.' && d[0] != '-';
}

/*
 * check_address - check a mailbox local@domain against the limits of RFC
 * 5321 4.5.3.1 and its syntax; "" is the null path and fine. A bare local
 * part is ADDR_NO_DOMAIN rather than an error, because RCPT accepts a bare
 * <Postmaster>. Dots in the local part are not checked: "../x" passes here
 * and is refused later as an unknown user, never used as a path.
 */
static enum addr_error check_address(const char *a)
{
	const char *at = strrchr(a, '@');
	size_t local = at ? (size_t)(at - a) : strlen(a);

	if (*a == '\0')
		return ADDR_OK;
	if (local > LOCAL_PART_MAX)
		return ADDR_LOCAL_LONG;
	if (at && strlen(at + 1) > DOMAIN_MAX)
		return ADDR_DOMAIN_LONG;
	if (strlen(a) + 2 > SMTP_PATH_MAX)
		return ADDR_PATH_LONG;
	if (local == 0)
		return ADDR_SYNTAX;
	for (size_t i = 0; i < local; i++)
		if (!local_char((unsigned char)a[i]))
			return ADDR_SYNTAX;
	if (!at)
		return ADDR_NO_DOMAIN;
	return domain_valid(at + 1) ? ADDR_OK : ADDR_SYNTAX;
}

/*
 * parse_path - the path after "FROM:" or "TO:", spaces before it allowed:
 * "<a@b>", "<>", a bare "a@b" (hand-typed, as in the assignment's RCPT TO:),
 * or a source route "<@x,@y:a@b>", whose route is dropped (RFC 5321 4.1.2,
 * appendix C). The address goes to out without its brackets, and *params
 * points at what follows it.
 */
static enum addr_error parse_path(char *arg, char *out, size_t cap, char **params)
{
	enum addr_error e;
	char *end;

	arg += strspn(arg, " ");
	if (*arg == '<') {
		if (!(end = strchr(++arg, '>')) || (end[1] && end[1] != ' '))
			return ADDR_SYNTAX;
		if (*arg == '@' && (!(arg = strchr(arg, ':')) || arg++ > end))
			return ADDR_SYNTAX;
	} else {
		end = arg + strcspn(arg, " ");
		if (end == arg)
			return ADDR_SYNTAX;
	}
	*params = *end ? end + 1 : end;
	*end = '\0';
	*params += strspn(*params, " ");
	if ((e = check_address(arg)) != ADDR_NO_DOMAIN && e != ADDR_OK)
		return e;
	if (strlen(arg) >= cap)	/* cannot happen: check_address saw to it */
		return ADDR_PATH_LONG;
	memcpy(out, arg, strlen(arg) + 1);
	return e;
}

/* after_keyword - arg past its keyword ("FROM:", "TO:", any case), or NULL
 * when arg does not start with it */
static char *after_keyword(char *arg, const char *keyword)
{
	size_t n = strlen(keyword);

	return strncasecmp(arg, keyword, n) == 0 ? arg + n : NULL;
}

/* size_param - the number of RFC 1870's "SIZE=digits"; -1 if it is not a
 * number. A huge number saturates instead of wrapping, so it is refused as
 * too big rather than taken for a small one. */
static int size_param(const char *v, unsigned long long *size)
{
	unsigned long long n = 0;

	if (!*v)
		return -1;
	for (; *v; v++) {
		if (!isdigit((unsigned char)*v))
			return -1;
		n = n > (~0ULL - 9) / 10 ? ~0ULL : n * 10 + (unsigned)(*v - '0');
	}
	*size = n;
	return 0;
}

/* local_domain - may we deliver for this domain? Without -D every domain
 * is local, as in the assignment, whose addresses name the server by any
 * domain or IP address. */
static int local_domain(const char *domain)
{
	if (cfg.ndomains == 0)
		return 1;
	for (int i = 0; i < cfg.ndomains; i++)
		if (strcasecmp(domain, cfg.domains[i]) == 0)
			return 1;
	return 0;
}

/*
 * find_mailbox - the account that gets the mail of local part `local`:
 * postmaster (any case) as DESIGN.md says, else the login of that name in
 * user.txt (any case). Returns 1 when found, 0 when there is no such user,
 * -1 when user.txt cannot be read.
 */
static int find_mailbox(const char *local, struct account *acct)
{
	int r;

	if (strcasecmp(local, "postmaster") == 0) {	/* RFC 5321 4.5.1 */
		r = user_lookup(cfg.userfile, "postmaster", acct);
		return r == 0 ? user_lookup(cfg.userfile, NULL, acct) : r;
	}
	if (!login_valid(local))
		return 0;	/* "../x", "a/b": never a path, never a user */
	return user_lookup(cfg.userfile, local, acct);
}

/* ---------------------------------------------------------------- the stored message */

/* spill_reset - forget the stored message. The temp file was unlinked as
 * soon as it was made, so closing it is all it takes to remove it. */
static void spill_reset(struct spill *sp)
{
	if (sp->fd >= 0 && close(sp->fd) < 0)
		log_msg("close temp file: %s", strerror(errno));
	sp->fd = -1;
	sp->len = 0;
	sp->size = 0;
	sp->too_big = 0;
	sp->error = 0;
	sp->wire = W_BOL;	/* the first DATA line follows a CRLF */
	sp->cr_pending = 0;
	sp->line_start = 1;
}

/* writev_all - write all of iov[0 .. cnt) at the file offset, one writev
 * if the kernel takes it all; after a short write (a signal, a file-size
 * limit reached mid-way) go on from the first byte not written. The iovec
 * array is used up in place. */
static int writev_all(int fd, struct iovec *iov, int cnt)
{
	for (;;) {
		ssize_t k;
		size_t left;

		while (cnt > 0 && iov->iov_len == 0) {
			iov++;
			cnt--;
		}
		if (cnt == 0)
			return 0;
		k = writev(fd, iov, cnt);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k == 0)
				errno = EIO;	/* cannot happen for a regular file */
			return -1;
		}
		for (left = (size_t)k; left > 0 && left >= iov->iov_len; iov++, cnt--)
			left -= iov->iov_len;
		if (left > 0) {	/* k never exceeds what was asked: cnt > 0 */
			iov->iov_base = (char *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
}

/* spill_open - make the temp file in the spool and unlink it at once, so
 * that a dropped connection or a crash leaves nothing behind */
static int spill_open(struct spill *sp)
{
	char path[PATH_TEXT_MAX];
	int n = snprintf(path, sizeof path, "%s/.smtpmail-XXXXXX", cfg.spool);

	if (n < 0 || (size_t)n >= sizeof path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((sp->fd = mkstemp(path)) < 0)
		return -1;
	if (unlink(path) < 0 || fcntl(sp->fd, F_SETFD, FD_CLOEXEC) < 0) {
		log_msg("temp file %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* spill_flush - move the memory buffer into the temp file; a failure is
 * kept in sp->error and answered after the final dot */
static int spill_flush(struct spill *sp)
{
	if ((sp->fd < 0 && spill_open(sp) < 0)
	    || write_all(sp->fd, sp->mem, sp->len) < 0) {
		sp->error = errno ? errno : EIO;
		log_msg("temp file: %s", strerror(sp->error));
		return -1;
	}
	sp->len = 0;
	return 0;
}

/* store - append n message bytes. Past the size limit nothing more is
 * stored, but the data is still read to its end. The sizes are compared by
 * subtraction, so nothing can overflow. */
static void store(struct spill *sp, const char *p, size_t n)
{
	if (sp->too_big || sp->error)
		return;		/* drain to the final dot, then refuse */
	if (n > cfg.max_size - sp->size) {
		sp->too_big = 1;
		return;
	}
	sp->size += n;
	while (n > 0) {
		size_t k = SPILL_MEM - sp->len;

		if (k == 0) {
			if (spill_flush(sp) < 0)
				return;
			continue;
		}
		k = n < k ? n : k;
		memcpy(sp->mem + sp->len, p, k);
		sp->len += k;
		p += k;
		n -= k;
	}
}

/*
 * store_byte - one byte of a DATA line's content (after unstuffing), stored
 * as DESIGN.md says: a raw CRLF ends the DATA line, a bare CR or LF ends a
 * stored line too, each stored line ends in CRLF, and a stored line that
 * starts with '.' gets it doubled. So nothing can forge a record's end.
 */
static void store_byte(struct spill *sp, char b)
{
	if (sp->cr_pending) {
		sp->cr_pending = 0;
		store(sp, "\r\n", 2);
		sp->line_start = 1;
		if (b == '\n') {
			sp->wire = W_BOL;	/* a raw CRLF: a new DATA line */
			return;
		}
	}
	if (b == '\r') {
		sp->cr_pending = 1;
		return;
	}
	if (b == '\n') {
		store(sp, "\r\n", 2);	/* a bare LF */
		sp->line_start = 1;
		return;
	}
	if (sp->line_start && b == '.')
		store(sp, ".", 1);	/* restuff */
	sp->line_start = 0;
	store(sp, &b, 1);
}

/* text_run - how many bytes from p hold neither CR nor LF */
static size_t text_run(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] != '\r' && p[i] != '\n')
		i++;
	return i;
}

/*
 * scan_data - the end-of-data machine over n received bytes, before any
 * rewriting: only CR LF "." CR LF ends DATA (RFC 5321 4.1.1.4; the DATA
 * line counts as the first CRLF). One '.' after a raw CRLF is unstuffed
 * (RFC 5321 4.5.2). Returns the bytes used: it stops after the final dot.
 */
static size_t scan_data(struct spill *sp, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && sp->wire != W_END) {
		char b;

		if (sp->wire == W_TEXT && !sp->cr_pending && !sp->line_start) {
			size_t k = text_run(p + i, n - i);

			store(sp, p + i, k);	/* the fast path: plain text */
			if ((i += k) == n)
				break;
		}
		b = p[i++];
		if (sp->wire == W_BOL && b == '.')
			sp->wire = W_DOT;
		else if (sp->wire == W_DOT && b == '\r')
			sp->wire = W_DOT_CR;
		else if (sp->wire == W_DOT_CR && b == '\n')
			sp->wire = W_END;
		else {
			if (sp->wire == W_DOT_CR)
				store_byte(sp, '\r');	/* ".\rX": the CR is text */
			sp->wire = W_TEXT;
			store_byte(sp, b);
		}
	}
	return i;
}

/* receive_data - read the message up to the final dot. Memory stays
 * bounded whatever the size: past SPILL_MEM the message goes to a file. */
static enum io_status receive_data(struct session *s)
{
	struct conn *c = &s->conn;
	struct spill *sp = &s->spill;

	if (!sp->mem && !(sp->mem = malloc(SPILL_MEM)))
		sp->error = ENOMEM;	/* drained, then 451 */
	/* A minimum data rate, as Postfix's smtpd_min_data_rate: the data must
	 * come within -t, and each byte read buys 1/rate s more, so a client
	 * trickling a byte at a time cannot hold a session (and a slot). No
	 * single read may wait longer than -t either. */
	c->deadline_ms = cfg.min_rate ? now_ms() + c->timeout_ms : 0;
	for (;;) {
		enum io_status st;
		size_t before;

		c->in_pos += scan_data(sp, c->in + c->in_pos, c->in_len - c->in_pos);
		if (sp->wire == W_END)
			break;
		before = c->in_len - c->in_pos;
		if ((st = conn_fill(c)) != IO_OK)
			return st;
		if (cfg.min_rate)
			c->deadline_ms += (long long)(c->in_len - c->in_pos - before) * 1000
					  / cfg.min_rate;
	}
	c->deadline_ms = 0;
	if (sp->fd >= 0 && sp->len > 0 && !sp->too_big && !sp->error)
		spill_flush(sp);
	return IO_OK;
}

/* ---------------------------------------------------------------- delivery (DESIGN.md "Delivery") */

/* message_id - an id unique across processes and time: the seconds, the
 * microseconds, the pid and the process's message count (a pooled process
 * runs many sessions) */
static void message_id(struct session *s, char *id, size_t cap)
{
	static unsigned messages;	/* ids made by this process so far */
	struct timeval tv = { 0, 0 };
	int n;

	(void)s;
	if (gettimeofday(&tv, NULL) < 0)
		tv.tv_sec = time(NULL);	/* pid and count keep it unique */
	n = snprintf(id, cap, "%llX%05lX.%lX.%u", (unsigned long long)tv.tv_sec,
		     (unsigned long)tv.tv_usec, (unsigned long)getpid(), ++messages);
	if (n < 0 || (size_t)n >= cap)	/* cannot happen: at most 49 of 64 */
		log_msg("message id cut short: %s", id);
}

/* trace_lines - the Return-Path and Received lines that a final delivery
 * adds (RFC 5321 4.4): "with SMTP" after HELO, "with ESMTP" after EHLO,
 * "with ESMTPA" after AUTH (RFC 3848); the client's address as a literal,
 * or "unknown" (-i with no address known). Returns their length, or -1 if
 * they do not fit in cap. */
static int trace_lines(struct session *s, const struct rcpt *r, const char *id,
		       const char *date, char *out, size_t cap)
{
	char where[ADDR_TEXT_MAX + 8] = "unknown";
	int n;

	if (strcmp(s->peer, "unknown") != 0)
		(void)snprintf(where, sizeof where, "[%s%s]",	/* fits: peer < ADDR_TEXT_MAX */
			       strchr(s->peer, ':') ? "IPv6:" : "", s->peer);
	n = snprintf(out, cap,
		     "Return-Path: <%s>\r\n"
		     "Received: from %s (%s)\r\n"
		     "\tby %s (smtpmail) with %s id %s\r\n"
		     "\tfor <%s>; %s\r\n",
		     s->sender, s->helo, where, cfg.hostname,
		     s->auth_login[0] ? "ESMTPA" : s->esmtp ? "ESMTP" : "SMTP", id, r->given, date);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* session_held - 1 if a POP3 session holds the mailbox (DESIGN.md
 * "Locking": byte 0 of the state file, from PASS to the session's end) */
static int session_held(int lock_fd)
{
	return byte_held(lock_fd, SESSION_LOCK_BYTE);
}

/*
 * convert_foreign - a mailbox that another hand wrote (the assignment's
 * format) becomes records before we append to it, so that its last message
 * is not run into ours. Not while a POP3 session holds it: the session's
 * snapshot names the file that the conversion replaces. Then the mailbox
 * is opened again. Returns 0, or -1 (the delivery answers 451; also when
 * the conversion's rename may not survive a crash, for an append to the new
 * file could then be lost).
 */
static int convert_foreign(struct rcpt *r, off_t size, off_t end, struct stat *st)
{
	int rc;

	if (session_held(r->lock_fd)) {
		log_msg("%s/mymailbox: written by another hand, and in a POP3 session: later",
			r->login);
		errno = EAGAIN;
		return -1;
	}
	rc = convert_mailbox(r->box_fd, r->dir_fd, r->login, size, end);
	if (rc >= 0)
		commit_replaced(r->lock_fd, size, rc > 0);
	if (rc > 0)
		errno = EIO;
	if (rc != 0)
		return -1;
	close_fd(r->box_fd, "mailbox");	/* it names the file replaced */
	r->box_fd = open_regular(r->dir_fd, r->login, "mymailbox", O_RDWR | O_APPEND, st);
	return r->box_fd < 0 ? -1 : 0;
}

/*
 * tidy_mailbox - make the mailbox end at a record boundary before we
 * append (DESIGN.md): a crashed append of our own is cut back, mail in
 * another format is converted, never cut. Sets r->start, the size to roll
 * back to. Returns 0, or -1.
 */
static int tidy_mailbox(struct rcpt *r, struct stat *st)
{
	off_t end;
	int shape = mailbox_shape(r->box_fd, st->st_size, commit_appending(r->lock_fd, st), &end);

	r->start = st->st_size;
	if (shape == SHAPE_OUR_TAIL) {
		log_msg("trimmed a partial record (%lld bytes)", (long long)(st->st_size - end));
		if (ftruncate(r->box_fd, end) < 0)
			return -1;
		r->start = st->st_size = end;	/* commit_load takes the new size */
		return 0;
	}
	if (shape == SHAPE_FOREIGN) {
		if (convert_foreign(r, st->st_size, end, st) < 0)
			return -1;
		r->start = st->st_size;
	}
	return shape < 0 ? -1 : 0;
}

/* sync_dir - fsync a directory, so that the names in it are durable */
static int sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	if (fd < 0)
		return -1;
	r = fsync(fd);
	return close(fd) < 0 || r < 0 ? -1 : 0;
}

/* sync_new_mailbox - make a new mailbox's name durable: fsync its
 * directory, and the spool too, since user_dir (here or in popserver) may
 * have just made that directory. Done before anything is appended to it,
 * under the write lock: so every record that an fsync of the file makes
 * durable has a durable name, whoever's it is. */
static int sync_new_mailbox(const struct rcpt *r)
{
	return fsync(r->dir_fd) < 0 || sync_dir(cfg.spool) < 0 ? -1 : 0;
}

/* unlock - let one lock byte of r's state file go */
static void unlock(const struct rcpt *r, off_t byte)
{
	if (lock_byte(r->lock_fd, byte, F_UNLCK, 0) < 0)
		log_msg("unlock %s: %s", r->login, strerror(errno));
}

/* state_current - 1 if r's state file is still the one named: a state
 * read from a file that was deleted or replaced since we locked it may be
 * out of date, and must not decide a cut (ESTALE) */
static int state_current(const struct rcpt *r)
{
	if (same_file(r->dir_fd, "mymailbox.state", r->lock_fd))
		return 1;
	log_msg("%s: mymailbox.state was replaced: no cut from the old one", r->login);
	errno = ESTALE;
	return 0;
}

/*
 * commit_cut - under the commit and write locks, when an fsync failed or
 * its process died unsettled: no record that was not durable before may
 * be answered 250 now, whoever appended it, so the mailbox is cut back to
 * its durable size and the epoch moves on: every session whose record was
 * cut finds a new epoch and answers 451. The new epoch is written first;
 * until the cut is durable the fsync stays announced, so if we die or fail
 * half-way, the next holder of the commit lock cuts again. Returns 0 or -1.
 */
static int commit_cut(struct rcpt *r, struct commit_state *h)
{
	off_t cut = h->durable < h->size ? h->durable : h->size;

	if (!state_current(r))
		return -1;

	log_msg("%s: an fsync failed or was left unsettled: cutting back the %lld bytes"
		" appended since the last good one; their deliveries answer 451", r->login,
		(long long)(h->size - cut));
	commit_bump(h, cut);
	if (commit_write(r->lock_fd, h) < 0)
		return -1;
	if (mailbox_lock(r->dir_fd, r->login, r->box_fd) < 0 || ftruncate(r->box_fd, cut) < 0
	    || fsync(r->box_fd) < 0) {
		log_msg("%s: cutting back: %s (the next delivery tries again)", r->login,
			strerror(errno));
		return -1;
	}
	h->size = cut;
	h->syncing = -1;
	return commit_write(r->lock_fd, h);
}

/*
 * commit_prepare - under the write lock, before the append: make the
 * commit state valid (commit_load) and note the epoch our record belongs
 * to. An fsync announced and not settled, while nobody holds the commit
 * lock (we try it without waiting; with several recipients lock_all holds
 * it), was a leader's that died: it is settled first (commit_cut), so that
 * its cut does not take our record with it.
 */
static int commit_prepare(struct rcpt *r, const struct stat *st, int commit_locked)
{
	struct commit_state h;
	int rc = 0;

	r->box_stat = *st;		/* as tidy_mailbox left it */
	if (commit_load(r->lock_fd, r->box_fd, &r->box_stat, &h) < 0)
		return -1;
	if (h.syncing >= 0
	    && (commit_locked || lock_byte(r->lock_fd, COMMIT_LOCK_BYTE, F_WRLCK, 0) == 0)) {
		rc = commit_cut(r, &h);
		r->start = r->box_stat.st_size = h.size;
		if (!commit_locked)
			unlock(r, COMMIT_LOCK_BYTE);
	}
	r->epoch = h.epoch;
	if (rc == 0) {
		/* Announced: only this tail may ever be cut as a crashed append. */
		h.appending = h.size;
		rc = commit_write(r->lock_fd, &h);
	}
	return rc;
}

/* open_for_append - open mymailbox in the user's directory under its write
 * lock, creating it if needed, never through a link and only if it is a
 * regular file with one link (open_regular), and note its size. With
 * O_APPEND each write lands at the end of the file, which under the write
 * lock, once tidy_mailbox is done, is r->start (DESIGN.md "Delivery"):
 * the record goes out in one writev, with no seek. */
static int open_for_append(struct rcpt *r, int commit_locked)
{
	struct stat st;
	int e, tries = 0;

again:
	r->box_fd = open_regular(r->dir_fd, r->login, "mymailbox", O_RDWR | O_APPEND, &st);
	if (r->box_fd < 0 && errno == ENOENT) {
		r->box_fd = open_regular(r->dir_fd, r->login, "mymailbox",
					 O_RDWR | O_APPEND | O_CREAT | O_EXCL, &st);
		if (r->box_fd >= 0 && sync_new_mailbox(r) < 0)
			goto refused;
	}
	if (r->box_fd < 0)
		return -1;
	if (mailbox_lock(r->dir_fd, r->login, r->box_fd) < 0) {
		if (errno == ESTALE && tries++ < STALE_TRIES) {
			close_fd(r->box_fd, "mailbox");	/* replaced: open the new one */
			goto again;
		}
		goto refused;
	}
	if (fstat(r->box_fd, &st) == 0 && tidy_mailbox(r, &st) == 0
	    && commit_prepare(r, &st, commit_locked) == 0)
		return 0;
refused:
	e = errno;
	if (r->box_fd >= 0)
		close_fd(r->box_fd, "mailbox");	/* refused: nothing of ours to cut back */
	r->box_fd = -1;
	errno = e;
	return -1;
}

/* append_spilled - append a message that spilled to the temp file. It is
 * read back SPILL_MEM at a time into the memory buffer; the trace lines
 * (iov[0]) go out with the first chunk and the terminator (iov[2]) with the
 * last, one writev a chunk. */
static int append_spilled(struct spill *sp, int fd, struct iovec iov[3])
{
	size_t end_len = iov[2].iov_len;
	unsigned long long done = 0;

	do {
		size_t k = sp->size - done > SPILL_MEM ? SPILL_MEM : (size_t)(sp->size - done);
		ssize_t got = pread_full(sp->fd, sp->mem, k, (off_t)done);

		if (got != (ssize_t)k) {
			if (got >= 0)
				errno = EIO;	/* short: the temp file shrank */
			return -1;
		}
		done += k;
		iov[1].iov_base = sp->mem;
		iov[1].iov_len = k;
		iov[2].iov_len = done == sp->size ? end_len : 0;
		if (writev_all(fd, iov, 3) < 0)
			return -1;
		iov[0].iov_len = 0;	/* the trace lines are out */
	} while (done < sp->size);
	return 0;
}

/* commit_appended - under the write lock, after our append: note where
 * our record ends, and the mailbox's new size in the commit state (a size
 * that differs from it is another hand's change: commit_load) */
static int commit_appended(struct rcpt *r)
{
	struct commit_state h;

	if (fstat(r->box_fd, &r->box_stat) < 0)
		return -1;
	if (commit_read(r->lock_fd, &h) <= 0) {
		errno = EIO;	/* commit_prepare made it valid, under this lock */
		return -1;
	}
	r->end = h.size = r->box_stat.st_size;	/* we hold the write lock: ours is last */
	h.appending = -1;
	return commit_write(r->lock_fd, &h);
}

/* append_record - append the trace lines, the message and the final "."
 * at r->start (the mailbox is O_APPEND, see open_for_append), and note
 * where our record ends. A message in memory is one writev. A failure
 * part-way leaves a record with no final "." (a partial one, never taken
 * for mail), which roll_back cuts. Not yet durable: see commit_one. */
static int append_record(struct session *s, struct rcpt *r, const char *id,
			 const char *date)
{
	static char end[] = ".\r\n";
	struct spill *sp = &s->spill;
	char trace[TRACE_MAX];
	int n = trace_lines(s, r, id, date, trace, sizeof trace);
	struct iovec iov[3];

	if (n < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	(void)snprintf(r->id, sizeof r->id, "%s", id);
	iov[0].iov_base = trace;
	iov[0].iov_len = (size_t)n;
	iov[1].iov_base = sp->mem;	/* spilled: append_spilled refills it */
	iov[1].iov_len = sp->len;
	iov[2].iov_base = end;
	iov[2].iov_len = sizeof end - 1;
	if ((sp->fd >= 0 ? append_spilled(sp, r->box_fd, iov)
			 : writev_all(r->box_fd, iov, 3)) < 0)
		return -1;
	return commit_appended(r);
}

/* by_login - the qsort order of recipients. Two deliveries that lock in
 * the same order can never deadlock. */
static int by_login(const void *a, const void *b)
{
	return strcmp(((const struct rcpt *)a)->login, ((const struct rcpt *)b)->login);
}

/*
 * lock_one - open r's state file and take its write lock, with several
 * recipients its commit lock first (the order commit_one keeps), bounded.
 * A state file deleted or replaced while we waited (ESTALE) is opened again
 * and locked from the start, a few times at most. On failure the file is
 * closed (which drops whatever we held on it).
 */
static int lock_one(struct rcpt *r, int with_commit)
{
	for (int tries = 0;; tries++) {
		int e;

		if ((r->lock_fd = open_state_file(r->dir_fd, r->login)) < 0)
			return -1;
		if ((!with_commit || lock_state(r->dir_fd, r->lock_fd, COMMIT_LOCK_BYTE, 1) == 0)
		    && lock_state(r->dir_fd, r->lock_fd, WRITE_LOCK_BYTE, 1) == 0)
			return 0;
		e = errno;
		close_fd(r->lock_fd, "state file");
		r->lock_fd = -1;
		errno = e;
		if (e != ESTALE || tries == STALE_TRIES)
			return -1;
	}
}

/* lock_all - take the write lock of every recipient mailbox, in sorted
 * login order (DESIGN.md "Delivery"). With several recipients their
 * commit locks too, each before its write lock (the order commit_one
 * keeps), since their fsyncs are then made under the write locks: the
 * message is committed to all of them or to none (commit_all). */
static int lock_all(struct session *s)
{
	qsort(s->rcpts, (size_t)s->nrcpts, sizeof s->rcpts[0], by_login);
	for (int i = 0; i < s->nrcpts; i++) {
		struct rcpt *r = &s->rcpts[i];

		if ((r->dir_fd = user_dir(cfg.spool, r->login)) < 0
		    || lock_one(r, s->nrcpts > 1) < 0)
			return -1;
	}
	return 0;
}

/* release_all - close the mailboxes and drop the locks (the write lock,
 * and the commit lock where lock_all took it) */
static void release_all(struct session *s)
{
	for (int i = 0; i < s->nrcpts; i++) {
		struct rcpt *r = &s->rcpts[i];

		if (r->box_fd >= 0 && close(r->box_fd) < 0)
			log_msg("close mailbox of %s: %s", r->login, strerror(errno));
		if (r->lock_fd >= 0) {	/* closing would drop the locks too */
			unlock(r, WRITE_LOCK_BYTE);
			if (s->nrcpts > 1)
				unlock(r, COMMIT_LOCK_BYTE);
			close_fd(r->lock_fd, "state file");
		}
		if (r->dir_fd >= 0)
			close_fd(r->dir_fd, "user directory");
		r->dir_fd = r->box_fd = r->lock_fd = -1;
	}
}

/* commit_shrunk - under the write lock, after mymailbox (status st) was
 * cut to size: note the size; nothing durable lies beyond it */
static void commit_shrunk(int lock_fd, const struct stat *st, off_t size)
{
	struct commit_state h;

	if (commit_read(lock_fd, &h) <= 0 || !commit_about(&h, st))
		return;		/* the next commit_load starts it again */
	if (h.durable > size)
		h.durable = size;
	h.size = size;
	(void)commit_write(lock_fd, &h);
}

/*
 * roll_back - after a failed delivery, cut r's mailbox back to r->start,
 * under its write lock: what we appended was never acknowledged.
 * A failed append left a partial record, which a crash could only bring
 * back as a partial record (cut again by tidy_mailbox), so no fsync here;
 * commit_all's rollbacks fsync (commit_undo).
 */
static void roll_back(struct rcpt *r)
{
	if (r->box_fd < 0)
		return;
	if (ftruncate(r->box_fd, r->start) < 0)
		log_msg("rollback of %s: %s", r->login, strerror(errno));
	else
		commit_shrunk(r->lock_fd, &r->box_stat, r->start);
}

enum commit_step {
	COMMIT_DONE,		/* our record is durable: 250 */
	COMMIT_FAILED,		/* it is gone (cut, withdrawn): 451 */
	COMMIT_FSYNC,		/* it is there, not yet durable: an fsync is owed */
	COMMIT_UNKNOWN		/* the state cannot tell (restarted, replaced): settle_unknown */
};

/*
 * commit_fate - what the commit state h says of our record, which ends at
 * r->end in the file whose status is r->box_stat and was appended in epoch
 * r->epoch: COMMIT_DONE durable, COMMIT_FAILED gone, COMMIT_FSYNC there
 * and not durable yet, COMMIT_UNKNOWN the state cannot tell. Every cut,
 * and every replacement of mymailbox by a rename of ours, moves the epoch
 * on and remembers what it kept in our file's offsets (commit_bump): the
 * first of those since our epoch decides, for a record it kept was
 * durable from then on (what happens to it later is its owner's doing).
 * More steps than remembered, a state started again, or a file replaced
 * by another hand in our epoch: ask the files (settle_unknown).
 */
static enum commit_step commit_fate(const struct rcpt *r, const struct commit_state *h)
{
	uint64_t since;

	if (h->epoch == r->epoch && !commit_about(h, &r->box_stat))
		return COMMIT_UNKNOWN;
	if (h->epoch == r->epoch)
		return h->durable >= r->end ? COMMIT_DONE : COMMIT_FSYNC;
	since = h->epoch - r->epoch;	/* a huge number for a fresh epoch */
	if (since <= COMMIT_KEPT)
		return r->end <= h->kept[since - 1] ? COMMIT_DONE : COMMIT_FAILED;
	return COMMIT_UNKNOWN;
}

/* id_line - to out the text that names our message in our trace lines */
static int id_line(const struct rcpt *r, char *out, size_t cap)
{
	int k = snprintf(out, cap, " id %s\r\n", r->id);

	return k < 0 || (size_t)k >= cap ? -1 : k;
}

/* mailbox_holds - 1 if the file now named mymailbox holds our record
 * anywhere (a rewrite moved it): it names our message id. Read in chunks
 * that overlap by the length of what is looked for. */
static int mailbox_holds(const struct rcpt *r)
{
	char buf[MBOX_CHUNK + ID_MAX + 8], want[ID_MAX + 8];
	int k = id_line(r, want, sizeof want), found = 0;
	struct stat st;
	int fd = open_regular(r->dir_fd, r->login, "mymailbox", O_RDONLY, &st);
	ssize_t n;

	for (off_t off = 0; fd >= 0 && k > 0 && !found; off += MBOX_CHUNK) {
		if ((n = pread_full(fd, buf, MBOX_CHUNK + (size_t)k - 1, off)) < k)
			break;
		found = find_bytes(buf, (size_t)n, want, (size_t)k) != NULL;
	}
	if (fd >= 0)
		close_fd(fd, "mailbox");
	return found;
}

/* record_present - 1 if our record still starts at r->start in the file
 * open on box_fd and reaches r->end: its trace lines name our message id,
 * which no other message has */
static int record_present(const struct rcpt *r)
{
	char head[TRACE_MAX], want[ID_MAX + 8];
	int k = id_line(r, want, sizeof want);
	struct stat st;
	ssize_t n;

	if (k < 0 || fstat(r->box_fd, &st) < 0 || st.st_size < r->end)
		return 0;
	n = pread_full(r->box_fd, head, sizeof head, r->start);
	return n > 14 && memcmp(head, "Return-Path: <", 14) == 0
	       && find_bytes(head, (size_t)n, want, (size_t)k) != NULL;
}

/*
 * commit_begin - under the commit and write locks: settle an fsync that
 * its process left unsettled (we hold the commit lock: it died), then look
 * at our record's fate. Not durable yet: the fsync we are about to make is
 * announced (*covered) and COMMIT_FSYNC.
 */
static enum commit_step commit_begin(struct rcpt *r, off_t *covered)
{
	struct commit_state h;
	enum commit_step step;

	if (commit_read(r->lock_fd, &h) <= 0)
		return COMMIT_UNKNOWN;
	if (commit_about(&h, &r->box_stat) && h.syncing >= 0)
		(void)commit_cut(r, &h);
	if ((step = commit_fate(r, &h)) == COMMIT_FSYNC
	    && (*covered = commit_announce(r->lock_fd, &h)) < 0)
		step = COMMIT_FAILED;
	return step;
}

/* commit_end - under the commit and write locks, after our fsync: settle
 * it (commit_synced), or cut back if it failed (commit_cut) */
static enum commit_step commit_end(struct rcpt *r, off_t covered, int synced)
{
	struct commit_state h;
	enum commit_step step;

	if (commit_read(r->lock_fd, &h) <= 0)
		return COMMIT_UNKNOWN;
	if (commit_about(&h, &r->box_stat) && !synced)
		(void)commit_cut(r, &h);
	else if (commit_about(&h, &r->box_stat) && commit_synced(r->lock_fd, &h, covered) < 0)
		return COMMIT_FAILED;	/* still announced: the next one cuts it back */
	step = commit_fate(r, &h);
	return step == COMMIT_FSYNC ? COMMIT_UNKNOWN : step;	/* not covered: ask the file */
}

/* lock_write - take r's write lock (bounded) for a step of commit_one */
static int lock_write(struct rcpt *r)
{
	if (lock_state(r->dir_fd, r->lock_fd, WRITE_LOCK_BYTE, 1) == 0)
		return 0;
	log_msg("%s: write lock: %s", r->login, strerror(errno));
	return -1;
}

/* relock_write - lock_write for commit_alone: a state file replaced since
 * is opened again (our commit lock, if any, is on the old one: let go) */
static int relock_write(struct rcpt *r)
{
	if (lock_state_file(r->dir_fd, r->login, &r->lock_fd, WRITE_LOCK_BYTE, 1) == 0)
		return 0;
	log_msg("%s: write lock: %s", r->login, strerror(errno));
	return -1;
}

/*
 * withdraw - under the write lock, while another session's announced fsync
 * is under way (h): take our record out again, which is possible only while
 * it is the last one in the file. The announced fsync then covers no more
 * than what stays (syncing lowered), so that it settles nothing appended
 * later in our place. Returns 0 (gone: 451 is true), 1 not the last one
 * (try again later), -1 a failure.
 */
static int withdraw(struct rcpt *r, struct commit_state *h)
{
	if (h->size != r->end)
		return 1;
	if (!state_current(r))
		return -1;
	if (mailbox_lock(r->dir_fd, r->login, r->box_fd) < 0 || ftruncate(r->box_fd, r->start) < 0)
		return -1;
	h->size = r->start;
	if (h->syncing > r->start)
		h->syncing = r->start;
	log_msg("%s: the commit lock stayed busy: our record taken out again", r->login);
	return commit_write(r->lock_fd, h);
}

/* take_out - under the write lock, after an fsync of ours failed: cut our
 * record back (through the state when it is valid, which cuts what that
 * fsync covered), else by hand while it is the last one in the file */
static enum commit_step take_out(struct rcpt *r, struct commit_state *h, int valid)
{
	struct stat st;
	off_t durable = h->durable;

	if (valid) {
		/* Covered by an earlier good fsync, ours is durable and stays. */
		(void)commit_cut(r, h);	/* if it fails, the next holder cuts */
		return r->end <= durable ? COMMIT_DONE : COMMIT_FAILED;
	}
	if (fstat(r->box_fd, &st) == 0 && st.st_size == r->end
	    && mailbox_lock(r->dir_fd, r->login, r->box_fd) == 0
	    && ftruncate(r->box_fd, r->start) == 0 && fsync(r->box_fd) == 0)
		return COMMIT_FAILED;
	log_msg("%s: an fsync failed and our record could not be taken out: it may stay",
		r->login);
	return COMMIT_FAILED;
}

/*
 * settle_alone - under the write lock alone: our own fsync on box_fd, open
 * since before our append, shows whether our record reached the disk
 * (Linux reports a writeback error to every descriptor that was open when
 * it happened, once: so not after an fsync of ours failed, fsync_failed);
 * the state then says so, or our record is taken out. The fsync covers the
 * records of others too, so it is announced like a leader's: if we die in
 * it, whoever comes next takes it as failed, as the error was ours to see.
 * We hold the write lock throughout, so no one settles or cuts meanwhile.
 */
static enum commit_step settle_alone(struct rcpt *r, struct commit_state *h, int valid,
				     int fsync_failed)
{
	off_t covered = -1;

	if (!fsync_failed && valid && h->syncing < 0)
		covered = commit_announce(r->lock_fd, h);
	if (fsync_failed || fsync(r->box_fd) < 0)
		return take_out(r, h, valid);
	if (covered >= 0)
		(void)commit_synced(r->lock_fd, h, covered);
	else if (valid && h->durable < h->size) {
		h->durable = h->size;	/* all appended before: we hold the write lock */
		(void)commit_write(r->lock_fd, h);
	}
	return COMMIT_DONE;
}

/* settle_unknown - under the write lock, when the state cannot tell what
 * became of our record (it was started again, or cuts came since): the
 * files themselves can. A mailbox replaced since was rewritten, fsynced,
 * by popserver (or converted): our record is durable if it was carried
 * into the new file, and was cut before if not. In the same file, a record
 * no longer there was cut; one still there is settled by our own fsync
 * (settle_alone). */
static enum commit_step settle_unknown(struct rcpt *r, int fsync_failed)
{
	struct commit_state h;
	int valid = commit_read(r->lock_fd, &h) > 0 && commit_about(&h, &r->box_stat);

	if (!same_file(r->dir_fd, "mymailbox", r->box_fd))
		return mailbox_holds(r) ? COMMIT_DONE : COMMIT_FAILED;
	if (!record_present(r))
		return COMMIT_FAILED;
	return settle_alone(r, &h, valid, fsync_failed);
}

/*
 * commit_alone - settle our record without the commit lock, when it could
 * not be had in time (a leader stopped in a slow fsync, a stopped popserver)
 * or the state file was replaced meanwhile: a reply must be true either
 * way. Under the write lock, which no leader holds during its fsync: a
 * state that knows our record answers from it; a leader's fsync under way
 * that covers it makes us withdraw it (last record first, waiting, bounded,
 * for the later ones to go); else our own fsync decides (settle_alone).
 */
static enum commit_step commit_alone(struct rcpt *r, int fsync_failed)
{
	struct timespec pause = { 0, 100 * 1000 * 1000 };
	enum commit_step step = COMMIT_FAILED;
	struct commit_state h;

	for (int waits = 0; waits < LOCK_WAIT_SECONDS * 10; waits++) {
		int valid, out = -1;

		if (relock_write(r) < 0)
			break;
		valid = commit_read(r->lock_fd, &h) > 0 && commit_about(&h, &r->box_stat);
		if (!valid || (step = commit_fate(r, &h)) == COMMIT_UNKNOWN)
			step = settle_unknown(r, fsync_failed);
		else if (step == COMMIT_FSYNC && (h.syncing < 0 || fsync_failed))
			step = settle_alone(r, &h, 1, fsync_failed);
		else if (step == COMMIT_FSYNC && (out = withdraw(r, &h)) <= 0)
			step = COMMIT_FAILED;
		mailbox_unlock(r->box_fd);
		unlock(r, WRITE_LOCK_BYTE);
		if (out != 1)
			return step;
		(void)nanosleep(&pause, NULL);
	}
	log_msg("%s: cannot settle our record (the mailbox stayed locked): it may stay", r->login);
	return COMMIT_FAILED;
}

/*
 * commit_one - make one recipient's appended record durable by group
 * commit: the write lock is let go at once, so that other sessions append
 * meanwhile; then, one at a time under the commit lock, a session finds
 * its record covered by an earlier fsync (and answers 250 at no cost), or
 * fsyncs for itself and for every record appended before. The fsync runs
 * without the write lock. Returns 0 (250: durable) or -1 (451: not
 * durable, and cut back or never to be shown).
 */
static int commit_one(struct rcpt *r)
{
	enum commit_step step = COMMIT_FAILED;
	off_t covered = 0;
	int synced;

	mailbox_unlock(r->box_fd);
	unlock(r, WRITE_LOCK_BYTE);
	if (lock_state(r->dir_fd, r->lock_fd, COMMIT_LOCK_BYTE, 1) < 0) {
		log_msg("%s: commit lock: %s: settling our record alone", r->login,
			strerror(errno));
		return commit_alone(r, 0) == COMMIT_DONE ? 0 : -1;
	}
	if (lock_write(r) < 0) {
		unlock(r, COMMIT_LOCK_BYTE);	/* replaced, or stuck: settle alone */
		return commit_alone(r, 0) == COMMIT_DONE ? 0 : -1;
	}
	if ((step = commit_begin(r, &covered)) == COMMIT_UNKNOWN)
		step = settle_unknown(r, 0);
	mailbox_unlock(r->box_fd);
	unlock(r, WRITE_LOCK_BYTE);
	if (step == COMMIT_FSYNC) {
		synced = fsync(r->box_fd) == 0;
		if (lock_write(r) < 0) {
			unlock(r, COMMIT_LOCK_BYTE);
			return commit_alone(r, !synced) == COMMIT_DONE ? 0 : -1;
		}
		if ((step = commit_end(r, covered, synced)) == COMMIT_UNKNOWN)
			step = settle_unknown(r, !synced);
		mailbox_unlock(r->box_fd);
		unlock(r, WRITE_LOCK_BYTE);
	}
	unlock(r, COMMIT_LOCK_BYTE);
	return step == COMMIT_DONE ? 0 : -1;
}

/* commit_undo - in commit_all, take our record out of r's mailbox again:
 * cut it back and make the cut durable (the record was complete, so a
 * crash must not bring it back), an fsync announced like any other */
static void commit_undo(struct rcpt *r)
{
	struct commit_state h;
	off_t covered;

	if (r->box_fd < 0)
		return;
	roll_back(r);
	if (commit_read(r->lock_fd, &h) <= 0 || !commit_about(&h, &r->box_stat)
	    || (covered = commit_announce(r->lock_fd, &h)) < 0)
		return;
	if (fsync(r->box_fd) == 0)
		(void)commit_synced(r->lock_fd, &h, covered);
	else
		(void)commit_cut(r, &h);
}

/*
 * commit_all - several recipients: every mailbox fsynced while we hold
 * its commit and write locks (lock_all), so that the message is durable
 * in all of them, or, at the first failure, taken out of all of them
 * again. Returns 0 or -1.
 */
static int commit_all(struct session *s)
{
	struct commit_state h;
	off_t covered;
	int failed = -1, i;

	/* A state that cannot be settled stays announced, and the next
	 * holder of that commit lock cuts our record: a failure like any. */
	for (i = 0; i < s->nrcpts && failed < 0; i++) {
		struct rcpt *r = &s->rcpts[i];

		if (commit_read(r->lock_fd, &h) <= 0
		    || (covered = commit_announce(r->lock_fd, &h)) < 0
		    || fsync(r->box_fd) < 0 || commit_synced(r->lock_fd, &h, covered) < 0
		    || h.durable < r->end)
			failed = i;
	}
	for (i = 0; failed >= 0 && i < s->nrcpts; i++) {
		struct rcpt *r = &s->rcpts[i];

		if (i == failed && commit_read(r->lock_fd, &h) > 0 && commit_about(&h, &r->box_stat))
			(void)commit_cut(r, &h);
		else
			commit_undo(r);
	}
	return failed < 0 ? 0 : -1;
}

/* failure_reply - the 4xx for a failed delivery: a busy mailbox, a full
 * disk or quota, or any other local error (DESIGN.md, the locking table) */
static void failure_reply(struct session *s, int err)
{
	if (err == EINTR || err == EAGAIN)
		reply(s, "451 4.2.0 Mailbox busy, try again later");
	else if (err == ENOSPC || err == EFBIG
#ifdef EDQUOT
		 || err == EDQUOT
#endif
		)
		reply(s, "452 4.3.1 Insufficient system storage");
	else
		reply(s, "451 4.3.0 Local error in processing, try again later");
}

/* log_delivery - one log line per delivered message: its id, sender,
 * recipients and size */
static void log_delivery(struct session *s, const char *id)
{
	char to[LOG_LINE_MAX / 2];
	size_t len = 0;

	to[0] = '\0';
	for (int i = 0; i < s->nrcpts; i++) {
		int n = snprintf(to + len, sizeof to - len, "%s%s", i ? "," : "",
				 s->rcpts[i].login);

		if (n < 0 || (size_t)n >= sizeof to - len)
			break;	/* the list is cut short; the count says all */
		len += (size_t)n;
	}
	log_msg("delivered %s from <%s> to %s (%d mailbox%s), %llu bytes", id,
		s->sender, to, s->nrcpts, s->nrcpts == 1 ? "" : "es", s->spill.size);
}

/* hold_stop - block (hold) or unblock SIGTERM. The parent's last-resort
 * SIGTERM must not stop a delivery between two appends, or between an
 * append and its rollback (all or nothing); held, it takes effect when it
 * is unblocked, after the delivery. Holds nest: a report stored while a
 * relay delivery records its outcome must not let SIGTERM in before that
 * record is saved, so only the outermost release unblocks. */
static void hold_stop(int hold)
{
	static int depth;	/* holds not yet released */
	sigset_t set;

	if (hold && depth++ > 0)
		return;		/* held already */
	if (!hold && (depth == 0 || --depth > 0))
		return;		/* not held, or an outer hold goes on */
	if (sigemptyset(&set) < 0 || sigaddset(&set, SIGTERM) < 0
	    || sigprocmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL) < 0)
		log_msg("sigprocmask: %s", strerror(errno));
}

static int queue_message(struct session *s, const char *id, const char *date);
static void queue_withdraw(int fd, const char *id);
static void queue_release(struct session *s, int fd, const char *id);

/* deliver_local - the message appended to every local recipient's
 * mailbox and committed, all or nothing (DESIGN.md "Delivery"); 0, or -1
 * with errno, and then it is in none. SIGTERM is held from the first
 * append to the end: a stop between two appends would break the rule. */
static int deliver_local(struct session *s, const char *id, const char *date)
{
	int failed = lock_all(s) < 0, err = failed ? errno : 0;

	hold_stop(1);
	for (int i = 0; !failed && i < s->nrcpts; i++) {
		if (open_for_append(&s->rcpts[i], s->nrcpts > 1) < 0
		    || append_record(s, &s->rcpts[i], id, date) < 0) {
			err = errno;
			failed = 1;
		}
	}
	for (int i = 0; failed && i < s->nrcpts; i++)
		(s->nrcpts > 1 ? commit_undo : roll_back)(&s->rcpts[i]);
	if (!failed && (s->nrcpts == 1 ? commit_one(&s->rcpts[0]) : commit_all(s)) < 0) {
		err = EIO;
		failed = 1;
	}
	release_all(s);
	hold_stop(0);
	errno = err;
	return failed ? -1 : 0;
}

/* deliver - DESIGN.md "Delivery" steps 2-4: the message goes into every
 * mailbox or into none, and only then is the client told which. With
 * relay recipients it is queued first (DESIGN.md "The queue"), and taken
 * out again if the local delivery fails: all or nothing, both ways. */
static void deliver(struct session *s)
{
	char id[ID_MAX], date[64];
	time_t now = time(NULL);
	struct tm tm;
	int job_fd = -1, err;

	message_id(s, id, sizeof id);
	if (!gmtime_r(&now, &tm)	/* RFC 5322 3.3 date-time */
	    || !strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm))
		(void)snprintf(date, sizeof date, "Thu, 01 Jan 1970 00:00:00 +0000");
	if (s->nrelay > 0) {	/* SIGTERM held from the queueing to the reply */
		hold_stop(1);
		job_fd = queue_message(s, id, date);
	}
	if ((s->nrelay > 0 && job_fd < 0) || deliver_local(s, id, date) < 0) {
		err = errno;
		if (job_fd >= 0)
			queue_withdraw(job_fd, id);
		if (s->nrelay > 0)
			hold_stop(0);
		log_msg("delivery of %s failed: %s", id, strerror(err));
		failure_reply(s, err);
		return;
	}
	if (s->nrcpts > 0)
		log_delivery(s, id);
	reply(s, "250 2.0.0 OK Message accepted for delivery as %s", id);
	if (job_fd >= 0)
		queue_release(s, job_fd, id);	/* and the hold ends */
}

/* ---------------------------------------------------------------- relay: the queue (DESIGN.md "The queue") */

/*
 * Mail for other hosts waits in <spool>/.queue: a login never starts with
 * '.', so no account can own that name. A message is two files: <id>.msg,
 * the data as it goes on the wire (written once), and <id>.env, its
 * envelope with each recipient's state (rewritten whole, by job_save).
 * Whoever changes a job holds the fcntl lock on its .msg (job_lock).
 */

static const char *const rcpt_state_names[] = {
	[RS_PENDING] = "pending", [RS_DEFERRED] = "deferred",
	[RS_DELIVERED] = "delivered", [RS_FAILED] = "failed"
};

/* rcpt_waiting - 1 if r still waits for a try (pending or deferred), 0
 * when it is final (delivered or failed) */
static int rcpt_waiting(const struct job_rcpt *r)
{
	return r->state == RS_PENDING || r->state == RS_DEFERRED;
}

/* rcpt_domain - the domain of r's address: what follows its last '@', as
 * relay_check decided (RFC 5321 4.1.2: the domain is the last part) */
static const char *rcpt_domain(const struct job_rcpt *r)
{
	const char *at = strrchr(r->address, '@');

	return at ? at + 1 : "";
}

/* queue_dir - "<spool>/.queue", made (0700) if it is missing; 0, or -1
 * (logged) */
static int queue_dir(char *path, size_t size)
{
	if (spool_path(path, size, cfg.spool, ".queue", NULL) < 0) {
		log_msg("queue: %s: %s", cfg.spool, strerror(errno));
		return -1;
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		log_msg("queue: mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* job_path - "<spool>/.queue/<id><suffix>"; 0, or -1 if too long */
static int job_path(char *path, size_t size, const char *id, const char *suffix)
{
	int n = snprintf(path, size, "%s/.queue/%s%s", cfg.spool, id, suffix);

	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* job_id_valid - 1 if id can name a queued message: it came from our own
 * ids, which use only letters, digits, '.' and '-', and never start with
 * '.' (so "-x ../x" names nothing outside the queue) */
static int job_id_valid(const char *id)
{
	size_t len = strlen(id);

	return len > 0 && len < ID_MAX && id[0] != '.'
	       && strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			     "0123456789.-") == len;
}

/* job_lock - open <id>.msg and take the write lock on all of it (wait:
 * bounded by lock_wait, else fail at once when busy); the descriptor
 * holding it, or -1 */
static int job_lock(const char *id, int wait)
{
	struct flock whole = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char path[PATH_TEXT_MAX];
	int fd;

	if (job_path(path, sizeof path, id, ".msg") < 0)
		return -1;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	if (fcntl(fd, F_SETLK, &whole) == 0
	    || (wait && (errno == EAGAIN || errno == EACCES) && lock_wait(fd, &whole) == 0))
		return fd;
	close_fd(fd, "job lock");
	return -1;
}

/*
 * job_unlink - remove a job's files, the envelope first: the runner looks
 * only for envelopes, so a crash half way leaves a .msg without one, which
 * the runner's sweep removes later, never an envelope without its data.
 * Then the directory is fsynced, so that a crash cannot bring the names
 * back. The caller holds the job lock. 0, or -1 (logged, errno set).
 */
static int job_unlink(const char *id)
{
	static const char *const suffixes[] = { ".env", ".env.tmp", ".msg" };
	char path[PATH_TEXT_MAX], dir[PATH_TEXT_MAX];
	int failed = 0;

	for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++)
		if (job_path(path, sizeof path, id, suffixes[i]) < 0
		    || (unlink(path) < 0 && errno != ENOENT)) {
			failed = errno;
			log_msg("queue: %s%s: cannot remove it: %s", id, suffixes[i], strerror(errno));
			if (i == 0)
				break;	/* an envelope that stays keeps its data */
		}
	if (queue_dir(dir, sizeof dir) < 0 || sync_dir(dir) < 0) {
		failed = errno;
		log_msg("queue: %s: fsync of the queue directory: %s", id, strerror(errno));
	}
	errno = failed;
	return failed ? -1 : 0;
}

/* reply_clean - a reply kept on one line: controls become spaces, at most
 * REPLY_TEXT_MAX bytes */
static void reply_clean(char *out, size_t size, const char *in)
{
	size_t i;

	for (i = 0; i + 1 < size && i < REPLY_TEXT_MAX && in[i]; i++)
		out[i] = (unsigned char)in[i] < 0x20 || in[i] == 0x7f ? ' ' : in[i];
	out[i] = '\0';
}

/* env_rcpt - parse one "rcpt" line's fields (after "rcpt ") into r; 0, or -1 */
static int env_rcpt(const char *line, struct job_rcpt *r)
{
	char state[16], remote[DOMAIN_MAX + 1];
	int used = 0;
	size_t i;

	if (sscanf(line, "%255s %15s %d %lld %lld %255s %n", r->address, state, &r->attempts,
		   &r->next_try, &r->last_try, remote, &used) < 6 || used == 0)
		return -1;
	for (i = 0; i < sizeof rcpt_state_names / sizeof rcpt_state_names[0]; i++)
		if (strcmp(state, rcpt_state_names[i]) == 0)
			break;
	if (i == sizeof rcpt_state_names / sizeof rcpt_state_names[0] || r->attempts < 0)
		return -1;
	r->state = (enum rcpt_state)i;
	(void)snprintf(r->remote, sizeof r->remote, "%s", strcmp(remote, "-") ? remote : "");
	reply_clean(r->reply, sizeof r->reply, strcmp(line + used, "-") ? line + used : "");
	return 0;
}

/* env_line - apply one line of a .env to job; 0, or -1 when it is not one
 * of ours */
static int env_line(char *line, struct job *job)
{
	char *value = strchr(line, ' ');

	if (!value)
		value = line + strlen(line);
	else
		*value++ = '\0';
	if (strcmp(line, "arrived") == 0)
		return sscanf(value, "%lld", &job->arrived) == 1 ? 0 : -1;
	if (strcmp(line, "notice") == 0)
		return sscanf(value, "%d", &job->notice) == 1 ? 0 : -1;
	if (strcmp(line, "from") == 0)
		return snprintf(job->from, sizeof job->from, "%s", value) < (int)sizeof job->from ? 0 : -1;
	if (strcmp(line, "auth") == 0)
		return snprintf(job->auth, sizeof job->auth, "%s", value) < (int)sizeof job->auth ? 0 : -1;
	if (strcmp(line, "client") == 0)
		return snprintf(job->client, sizeof job->client, "%s", value) < (int)sizeof job->client ? 0 : -1;
	if (strcmp(line, "rcpt") == 0 && job->nrcpt < QUEUE_RCPTS_MAX)
		return env_rcpt(value, &job->rcpt[job->nrcpt++]);
	return -1;
}

/* job_load - read <id>.env into job; 0, or -1 (logged: a job we cannot
 * read is left where it is, never dropped) */
static int job_load(const char *id, struct job *job)
{
	char path[PATH_TEXT_MAX], line[SMTP_PATH_MAX + DOMAIN_MAX + REPLY_TEXT_MAX + 128];
	FILE *f;
	int bad = 0, n = 0;

	memset(job, 0, sizeof *job);
	if (job_path(path, sizeof path, id, ".env") < 0 || !(f = fopen(path, "re"))) {
		log_msg("queue: %s: %s", id, strerror(errno));
		return -1;
	}
	(void)snprintf(job->id, sizeof job->id, "%s", id);
	while (!bad && fgets(line, sizeof line, f)) {
		size_t len = strlen(line);

		if (len == 0 || line[len - 1] != '\n')
			bad = 1;	/* too long, or the file ends inside a line */
		else if (line[--len] = '\0', n++ == 0)
			bad = strcmp(line, "smtpmail-queue 1") != 0;
		else
			bad = env_line(line, job) < 0;
	}
	if (ferror(f) || n == 0 || job->nrcpt == 0)
		bad = 1;
	if (fclose(f) != 0)
		bad = 1;
	if (bad)
		log_msg("queue: %s: the envelope cannot be read: left alone", id);
	return bad ? -1 : 0;
}

/* env_text - job as its .env text, into buf; the length, or -1 if it does
 * not fit */
static int env_text(const struct job *job, char *buf, size_t size)
{
	size_t used = 0;
	int i, n;

	n = snprintf(buf, size, "smtpmail-queue 1\narrived %lld\nfrom %s\nauth %s\nclient %s\n"
		     "notice %d\n", job->arrived, job->from, job->auth, job->client, job->notice);
	for (i = 0; n >= 0 && (size_t)n < size - used && i < job->nrcpt; i++) {
		const struct job_rcpt *r = &job->rcpt[i];

		used += (size_t)n;
		n = snprintf(buf + used, size - used, "rcpt %s %s %d %lld %lld %s %s\n",
			     r->address, rcpt_state_names[r->state], r->attempts, r->next_try,
			     r->last_try, r->remote[0] ? r->remote : "-",
			     r->reply[0] ? r->reply : "-");
	}
	if (n < 0 || (size_t)n >= size - used)
		return -1;
	return (int)(used + (size_t)n);
}

/* job_save - write job's .env whole: a temp file, fsync, rename over the
 * old one, fsync the directory. 0 when it is durable; -1 (logged) when
 * not, and then the old .env (or none) is still what a restart reads. */
static int job_save(const struct job *job)
{
	static char text[QUEUE_RCPTS_MAX * (SMTP_PATH_MAX + REPLY_TEXT_MAX + DOMAIN_MAX + 96)
			 + 1024];
	char tmp[PATH_TEXT_MAX], path[PATH_TEXT_MAX], dir[PATH_TEXT_MAX];
	int len = env_text(job, text, sizeof text), fd = -1, ok = 0;

	if (len >= 0 && job_path(tmp, sizeof tmp, job->id, ".env.tmp") == 0
	    && job_path(path, sizeof path, job->id, ".env") == 0
	    && queue_dir(dir, sizeof dir) == 0
	    && (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600)) >= 0)
		ok = write_all(fd, text, (size_t)len) == 0 && fsync(fd) == 0;
	if (fd >= 0 && close(fd) < 0)
		ok = 0;
	if (ok)
		ok = rename(tmp, path) == 0 && sync_dir(dir) == 0;
	if (!ok) {
		log_msg("queue: %s: the envelope cannot be saved: %s", job->id, strerror(errno));
		if (fd >= 0)
			(void)unlink(tmp);
	}
	return ok ? 0 : -1;
}

/* job_print - one queued message as -p lists it, mailq's layout: the id,
 * the arrival, the sender, then each recipient with its state */
static void job_print(const struct job *job)
{
	char when[64];
	time_t t = (time_t)job->arrived;
	struct tm tm;
	int i;

	if (!localtime_r(&t, &tm) || !strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm))
		(void)snprintf(when, sizeof when, "%lld", job->arrived);
	printf("%s  %s  <%s>  (%s)\n", job->id, when, job->from, job->auth);
	for (i = 0; i < job->nrcpt; i++) {
		const struct job_rcpt *r = &job->rcpt[i];

		printf("    <%s>  %s  attempts %d", r->address, rcpt_state_names[r->state],
		       r->attempts);
		if (rcpt_waiting(r)) {
			t = (time_t)r->next_try;
			if (r->next_try && localtime_r(&t, &tm)
			    && strftime(when, sizeof when, "%H:%M:%S", &tm))
				printf("  next %s", when);
		}
		if (r->reply[0])
			printf("  (%s%s%s)", r->remote, r->remote[0] ? ": " : "", r->reply);
		printf("\n");
	}
}

/*
 * queue_names - the ids of the queue's files whose names end in suffix
 * (".env": the messages the runner sees; ".msg": every message, one being
 * queued or withdrawn right now too), at most max of them, copied into ids
 * unless ids is NULL (then only counted). Their count, or -1 (logged) when
 * the queue cannot be read. The listing, the runner's scans and sweeps and
 * the -Z check all read the directory through this one function.
 */
static int queue_names(const char *suffix, char (*ids)[ID_MAX], int max)
{
	char dir[PATH_TEXT_MAX], id[ID_MAX];
	size_t suffix_len = strlen(suffix);
	struct dirent *e;
	DIR *d;
	int n = 0;

	if (queue_dir(dir, sizeof dir) < 0 || !(d = opendir(dir))) {
		log_msg("queue: %s: %s", cfg.spool, strerror(errno));
		return -1;
	}
	while (n < max && (errno = 0, e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (len <= suffix_len || len - suffix_len >= ID_MAX
		    || strcmp(e->d_name + len - suffix_len, suffix) != 0)
			continue;
		memcpy(id, e->d_name, len - suffix_len);
		id[len - suffix_len] = '\0';
		if (!job_id_valid(id))
			continue;
		if (ids)
			memcpy(ids[n], id, sizeof id);
		n++;
	}
	if (n < max && errno) {	/* readdir's NULL was an error, not the end */
		log_msg("queue: readdir %s: %s", dir, strerror(errno));
		n = -1;
	}
	if (closedir(d) < 0)
		log_msg("queue: closedir: %s", strerror(errno));
	return n;
}

/* queue_print - -p: list the queue on stdout; 0, or 1 when it cannot be read */
static int queue_print(void)
{
	static char ids[DEFAULT_QUEUE_MAX][ID_MAX];
	static struct job job;
	int n = queue_names(".env", ids, DEFAULT_QUEUE_MAX), i;

	if (n < 0)
		return 1;
	for (i = 0; i < n; i++)
		if (job_load(ids[i], &job) == 0)
			job_print(&job);
	printf("%d message%s in the queue\n", n, n == 1 ? "" : "s");
	return fflush(stdout) == 0 ? 0 : 1;
}

/* queue_remove - -x id: take one message out of the queue, after waiting
 * for whoever is working on it; 0, or 1 (said on stderr) */
static int queue_remove(const char *id)
{
	int fd;

	if (!job_id_valid(id) || (fd = job_lock(id, 1)) < 0) {
		fprintf(stderr, "%s: no message %s in the queue\n", progname, id);
		return 1;
	}
	if (job_unlink(id) < 0) {
		fprintf(stderr, "%s: %s: %s\n", progname, id, strerror(errno));
		close_fd(fd, "job lock");
		return 1;
	}
	close_fd(fd, "job lock");
	log_msg("queue: %s removed (-x)", id);
	return 0;
}

static int run_queue(int foreground);	/* relay: the runner */
static int queue_flush(void);

/* queue_command - -q, -p, -F or -x: do it, and give main its exit status */
static int queue_command(void)
{
	switch (cfg.queue_mode) {
	case QM_PRINT: return queue_print();
	case QM_REMOVE: return queue_remove(cfg.remove_id);
	case QM_RUNNER: return run_queue(1);
	case QM_FLUSH: return queue_flush();
	case QM_SERVE: break;
	}
	return 2;	/* main serves instead */
}

/* queue_received - our Received line for a queued message (RFC 5321 4.4),
 * in trace_lines' words but without the Return-Path (the last hop adds
 * it), and with "for" only when there is one recipient: a list would show
 * every recipient the others (Bcc). Its length, or -1 if it does not fit. */
static int queue_received(const struct session *s, const char *id, const char *date,
			  char *out, size_t cap)
{
	char where[ADDR_TEXT_MAX + 8] = "unknown", to[SMTP_PATH_MAX + 16] = "";
	int n;

	if (strcmp(s->peer, "unknown") != 0)
		(void)snprintf(where, sizeof where, "[%s%s]",	/* fits: peer < ADDR_TEXT_MAX */
			       strchr(s->peer, ':') ? "IPv6:" : "", s->peer);
	if (s->nrelay == 1)
		(void)snprintf(to, sizeof to, "\r\n\tfor <%s>", s->relay[0]);	/* fits */
	n = snprintf(out, cap, "Received: from %s (%s)\r\n\tby %s (smtpmail) with %s id %s%s; %s\r\n",
		     s->helo, where, cfg.hostname,
		     s->auth_login[0] ? "ESMTPA" : s->esmtp ? "ESMTP" : "SMTP", id, to, date);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* queue_data - write our Received line and the stored message (CRLF lines,
 * dot-stuffed, no final dot: what goes on the wire after DATA) to fd */
static int queue_data(struct session *s, int fd, char *received, size_t len)
{
	struct spill *sp = &s->spill;
	struct iovec iov[3];

	iov[0].iov_base = received;
	iov[0].iov_len = len;
	iov[1].iov_base = sp->mem;	/* spilled: append_spilled refills it */
	iov[1].iov_len = sp->len;
	iov[2].iov_base = received;	/* no final dot */
	iov[2].iov_len = 0;
	return sp->fd >= 0 ? append_spilled(sp, fd, iov) : writev_all(fd, iov, 3);
}

/* queue_envelope - <id>.env for the session's relay recipients, all
 * pending and due at once (job_save makes it durable, and with the fsync of
 * the directory the .msg's name too) */
static int queue_envelope(const struct session *s, const char *id)
{
	static struct job job;

	memset(&job, 0, sizeof job);
	(void)snprintf(job.id, sizeof job.id, "%s", id);
	job.arrived = (long long)time(NULL);
	memcpy(job.from, s->sender, sizeof job.from);
	(void)snprintf(job.auth, sizeof job.auth, "%s", s->auth_login[0] ? s->auth_login : "-");
	(void)snprintf(job.client, sizeof job.client, "%s", s->peer);
	for (int i = 0; i < s->nrelay; i++) {
		memcpy(job.rcpt[i].address, s->relay[i], sizeof job.rcpt[i].address);
		job.rcpt[i].state = RS_PENDING;
	}
	job.nrcpt = s->nrelay;
	return job_save(&job);
}

/*
 * queue_withdraw - take a message that queue_message wrote out of the
 * queue again, when its reply is not 250 (job_unlink), then let the job
 * lock (fd) go. An envelope that cannot be removed is logged: that
 * message may be sent although the client was told it was not.
 */
static void queue_withdraw(int fd, const char *id)
{
	int ok = job_unlink(id) == 0;

	log_msg("queue: %s withdrawn%s", id, ok ? "" : ", but a crash may bring it back");
	close_fd(fd, "job lock");
}

/*
 * queue_message - DATA with relay recipients: write <id>.msg (made new,
 * 0600, its job lock taken at once, so the runner cannot send it before
 * our reply is certain), fsync it, then <id>.env (job_save). The first
 * time a process queues, the spool is fsynced too: queue_dir may have just
 * made .queue, whose own name must last. Returns the descriptor that holds
 * the job lock, for queue_release or queue_withdraw; or -1 (errno set)
 * with nothing left in the queue.
 */
static int queue_message(struct session *s, const char *id, const char *date)
{
	static int spool_synced;	/* this process made .queue's name durable */
	struct flock whole = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char path[PATH_TEXT_MAX], dir[PATH_TEXT_MAX], received[TRACE_MAX];
	int len = queue_received(s, id, date, received, sizeof received), fd, e;

	if (!job_id_valid(id) || len < 0) {
		log_msg("queue: %s: not a queue id, or its Received line is too long", id);
		errno = EINVAL;
		return -1;
	}
	if (queue_dir(dir, sizeof dir) < 0 || job_path(path, sizeof path, id, ".msg") < 0)
		return -1;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		log_msg("queue: %s: %s", path, strerror(errno));
		return -1;
	}
	if (fcntl(fd, F_SETLK, &whole) == 0 && queue_data(s, fd, received, (size_t)len) == 0
	    && fsync(fd) == 0 && queue_envelope(s, id) == 0
	    && (spool_synced || (spool_synced = sync_dir(cfg.spool) == 0)))
		return fd;
	e = errno;
	log_msg("queue: %s cannot be queued: %s", id, strerror(e));
	queue_withdraw(fd, id);
	errno = e;
	return -1;
}

static pid_t runner_holder(void);	/* relay: the runner */

/* queue_wake - tell the runner that mail is waiting (SIGUSR2). No runner:
 * it reads the queue when it starts. */
static void queue_wake(void)
{
	pid_t pid = runner_holder();

	if (pid <= 0) {
		if (verbose)
			log_msg("queue: no runner to wake: it scans the queue when it starts");
		return;
	}
	if (kill(pid, SIGUSR2) < 0)
		log_msg("queue: waking the runner (pid %ld): %s", (long)pid, strerror(errno));
}

/*
 * queue_release - after the 250 of a queued message: the reply goes out,
 * the job lock goes, the runner is woken, and only then does deliver's
 * hold on SIGTERM end. The message is sent whatever happens next, so a
 * session ended before its 250 is on the way would have a client send it
 * again. A client that does not take the reply holds a stopping server
 * no longer than the grace time.
 */
static void queue_release(struct session *s, int fd, const char *id)
{
	int timeout_ms = s->conn.timeout_ms;

	if (s->conn.timeout_ms > STOP_GRACE_SECONDS * 1000)
		s->conn.timeout_ms = STOP_GRACE_SECONDS * 1000;
	(void)conn_flush(&s->conn);
	s->conn.timeout_ms = timeout_ms;
	log_msg("queued %s from <%s> for %s%s (%d recipient%s), %llu bytes", id, s->sender,
		s->relay[0], s->nrelay > 1 ? ",..." : "", s->nrelay, s->nrelay == 1 ? "" : "s",
		s->spill.size);
	close_fd(fd, "job lock");
	queue_wake();
	hold_stop(0);
}

/* ---------------------------------------------------------------- relay: who may relay */

/* Relaying is for the authenticated and the trusted networks only (RFC
 * 5321 3.6.2: no open relay), checked when RCPT names another domain. */

static int own_address(const struct session *s, const char *sender);

/* RFC 5321 6.3: a message with this many Received lines is in a loop. */
enum { HOPS_MAX = 100 };

/* prefix_match - 1 if the first bits bits of a and b are the same */
static int prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
	int whole = bits / 8, rest = bits % 8;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));

	return memcmp(a, b, (size_t)whole) == 0
	       && (rest == 0 || ((a[whole] ^ b[whole]) & mask) == 0);
}

/*
 * peer_trusted - 1 if the client's numeric address lies in a -N network.
 * A scope ("%eth0") is dropped, and an IPv4-mapped IPv6 address (how a
 * dual-stack socket shows an IPv4 client, RFC 4291 2.5.5.2) counts as the
 * IPv4 address it holds. "unknown" (-i with no address) is never trusted.
 */
static int peer_trusted(const char *peer)
{
	static const unsigned char v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	char text[ADDR_TEXT_MAX];
	unsigned char addr[16];
	size_t len = strcspn(peer, "%");
	int family = AF_INET;

	if (len >= sizeof text)
		return 0;
	memcpy(text, peer, len);
	text[len] = '\0';
	if (inet_pton(AF_INET, text, addr) != 1) {
		if (inet_pton(AF_INET6, text, addr) != 1)
			return 0;
		family = AF_INET6;
		if (memcmp(addr, v4_mapped, sizeof v4_mapped) == 0) {
			memmove(addr, addr + 12, 4);
			family = AF_INET;
		}
	}
	for (int i = 0; i < cfg.ntrusted; i++)
		if (cfg.trusted[i].family == family
		    && prefix_match(addr, cfg.trusted[i].addr, cfg.trusted[i].prefix))
			return 1;
	return 0;
}

/*
 * sender_refusal - why the session's sender may not send to other hosts,
 * or NULL when it may. The null sender <> may (its mail gets no report).
 * After AUTH only the login's own address in a local domain may: nobody
 * sends in another's name. From a trusted network without AUTH, an
 * account's address in a local domain: a report must have a mailbox to go
 * to, and reports never leave this host.
 */
static const char *sender_refusal(const struct session *s)
{
	const char *at = strrchr(s->sender, '@');
	char local[LOCAL_PART_MAX + 1];
	struct account acct;
	int found;

	if (!s->sender[0])
		return NULL;
	if (!at || !local_domain(at + 1))
		return "the sender is not in a local domain";
	if (s->auth_login[0])
		return own_address(s, s->sender) ? NULL : "the sender is not the login's own address";
	if ((size_t)(at - s->sender) >= sizeof local)
		return "the sender is no account";	/* cannot happen: check_address */
	memcpy(local, s->sender, (size_t)(at - s->sender));
	local[at - s->sender] = '\0';
	found = find_mailbox(local, &acct);
	secret_wipe(&acct, sizeof acct);
	return found == 1 ? NULL : "the sender is no account";
}

/* relay_refusal - why this session may not relay to addr, or NULL: relay
 * must be on (-o), the session authenticated or its client trusted (-N),
 * the sender its own (sender_refusal), the domain a name: an address
 * literal has no MX to look up (RFC 5321 5.1 leaves literals to local
 * policy) */
static const char *relay_refusal(const struct session *s, const char *addr)
{
	if (!cfg.relay)
		return "relaying is off (no -o)";
	if (!s->auth_login[0] && !peer_trusted(s->peer))
		return "not authenticated, and not from a trusted network (-N)";
	if (strrchr(addr, '@')[1] == '[')
		return "an address literal";
	return sender_refusal(s);
}

enum queue_room { QUEUE_ROOM, QUEUE_FULL, QUEUE_UNREADABLE };

/*
 * queue_room - may one more message be queued? Not when the queue holds
 * -Z messages, nor when the spool's free space is under twice the largest
 * message (-s): what is taken in must still fit, and its reports too. Why
 * not goes to why. The sizes are compared in blocks, so nothing overflows.
 */
static enum queue_room queue_room(char *why, size_t size)
{
	struct statvfs fs;
	unsigned long long need, have;
	int n = queue_names(".msg", NULL, cfg.queue_max);	/* one being queued counts */

	if (n < 0 || statvfs(cfg.spool, &fs) < 0) {
		(void)snprintf(why, size, "the queue cannot be read: %s", strerror(errno));
		return QUEUE_UNREADABLE;
	}
	if (n >= cfg.queue_max) {
		(void)snprintf(why, size, "the queue holds %d messages (-Z)", n);
		return QUEUE_FULL;
	}
	if (fs.f_frsize == 0)
		fs.f_frsize = 1;
	need = (2 * cfg.max_size + fs.f_frsize - 1) / fs.f_frsize;
	have = (unsigned long long)fs.f_bavail;
	if (have < need) {
		(void)snprintf(why, size, "%llu bytes free on the spool, under twice -s",
			       have * (unsigned long long)fs.f_frsize);
		return QUEUE_FULL;
	}
	return QUEUE_ROOM;
}

/*
 * relay_check - RCPT of a recipient in another domain: take it for the
 * queue, or refuse it. Anyone who may not relay gets 550, so the server is
 * never an open relay; a full queue gets 452 (RFC 5321 4.2.3, RFC 3463
 * X.3.1), for this recipient only. Each decision is one log line. Returns
 * 0 (take it) or -1 (answered).
 */
static int relay_check(struct session *s, const char *addr)
{
	const char *why = relay_refusal(s, addr);
	char room[160];
	enum queue_room r;

	if (why) {
		log_msg("%s: relay from <%s> to <%s> denied: %s", s->peer, s->sender, addr, why);
		reply(s, "550 5.7.1 Relaying denied");
		return -1;
	}
	/* The message is queued once, whatever its recipients: when an earlier
	 * recipient of this transaction found room, the queue is not read again. */
	if (s->nrelay == 0 && (r = queue_room(room, sizeof room)) != QUEUE_ROOM) {
		log_msg("%s: relay from <%s> to <%s> refused for now: %s", s->peer, s->sender,
			addr, room);
		reply(s, r == QUEUE_FULL ? "452 4.3.1 Insufficient system storage"
		      : "451 4.3.0 Local error in processing, try again later");
		return -1;
	}
	log_msg("%s: relay from <%s> to <%s> allowed: %s%s", s->peer, s->sender, addr,
		s->auth_login[0] ? "authenticated as " : "trusted network",
		s->auth_login);
	return 0;
}

/* relay_add - a recipient that relay_check took joins the transaction's
 * queue list; one named twice is queued once (the domain in any case) */
static void relay_add(struct session *s, const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t local = (size_t)(at - addr);

	for (int i = 0; i < s->nrelay; i++)
		if (strncmp(s->relay[i], addr, local + 1) == 0
		    && strcasecmp(s->relay[i] + local + 1, at + 1) == 0)
			return;
	memcpy(s->relay[s->nrelay++], addr, strlen(addr) + 1);
}

/* is_received - does a header line (its first n bytes) start a Received
 * field? The name in any case, blanks allowed before the colon (RFC 5322
 * 4.5.7, the obsolete syntax a receiver must take) */
static int is_received(const char *head, size_t n)
{
	size_t i = 8;

	if (n < i || strncasecmp(head, "Received", i) != 0)
		return 0;
	while (i < n && (head[i] == ' ' || head[i] == '\t'))
		i++;
	return i < n && head[i] == ':';
}

/* stored_read - up to n bytes of the stored message from off: from the
 * temp file when it spilled, else from memory; the count, or -1 */
static ssize_t stored_read(struct spill *sp, char *buf, size_t n, unsigned long long off)
{
	if (sp->fd >= 0)
		return pread_full(sp->fd, buf, n, (off_t)off);
	if (off > sp->len)
		return 0;
	if (n > sp->len - off)
		n = sp->len - off;
	memcpy(buf, sp->mem + off, n);
	return (ssize_t)n;
}

/* received_count - the Received fields in the stored message's header
 * section (to its first empty line), counted up to limit; -1 if the stored
 * message cannot be read */
static int received_count(struct spill *sp, int limit)
{
	char buf[4096], head[16];
	size_t head_len = 0;
	unsigned long long off = 0;
	int count = 0;

	while (off < sp->size) {
		ssize_t got = stored_read(sp, buf, sizeof buf, off);

		if (got <= 0)
			return -1;
		for (ssize_t i = 0; i < got; i++) {
			if (buf[i] != '\n') {
				if (head_len < sizeof head)
					head[head_len++] = buf[i];
				continue;
			}
			if (head_len <= 1)	/* "\r\n": the header section ends */
				return count;
			if ((count += is_received(head, head_len)) == limit)
				return count;
			head_len = 0;
		}
		off += (unsigned long long)got;
	}
	return count;
}

/* loop_check - RFC 5321 6.3: a message with 100 or more Received lines is
 * in a mail loop, and is refused (554 5.4.6), whoever it is for. Returns 0
 * (deliver it), or -1 (answered). */
static int loop_check(struct session *s)
{
	int n = received_count(&s->spill, HOPS_MAX);

	if (n < 0) {
		log_msg("%s: the stored message cannot be read: %s", s->peer, strerror(errno));
		failure_reply(s, EIO);
		return -1;
	}
	if (n < HOPS_MAX)
		return 0;
	log_msg("%s: message from <%s> refused: %d or more Received lines (a mail loop)",
		s->peer, s->sender, HOPS_MAX);
	reply(s, "554 5.4.6 Too many Received lines: a mail loop");
	return -1;
}

/* ---------------------------------------------------------------- relay: where to (DNS) */

/* A domain's mail goes where a -R route says, else to its MX hosts (RFC
 * 5321 5.1), each tried at every address, in order. */

/* One address to try for a destination, and the host name it came from. */
struct target {
	char host[DOMAIN_MAX + 1];	/* the MX (or route) host, for logs and Remote-MTA */
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

/* What find_targets found: addresses to try, a reason to try again later,
 * or a reason to give up on the recipients now. */
enum where { WHERE_OK, WHERE_DEFER, WHERE_FAIL };

/* One find_targets call: the targets so far, what went wrong, and the one
 * log line that tells it all. */
struct lookup {
	struct target *t;
	size_t max, n;
	char *status, *why;	/* find_targets' status and why */
	size_t status_size, why_size;
	char log[LOG_LINE_MAX];
	size_t log_len;
};

/* route_find - the -R route for domain: its own (case does not matter,
 * RFC 5321 2.4), else the "*" route, else NULL: use the MX */
static const struct route *route_find(const char *domain)
{
	const struct route *star = NULL;
	int i;

	for (i = 0; i < cfg.nroutes; i++) {
		if (strcasecmp(cfg.routes[i].domain, domain) == 0)
			return &cfg.routes[i];
		if (!star && strcmp(cfg.routes[i].domain, "*") == 0)
			star = &cfg.routes[i];
	}
	return star;
}

/* lookup_note - append printf-style text to the lookup's log line (cut
 * when it is full: the line is for people, the targets are what count) */
__attribute__((format(printf, 2, 3)))
static void lookup_note(struct lookup *lk, const char *fmt, ...)
{
	size_t room = sizeof lk->log - lk->log_len;
	va_list ap;
	int n;

	if (room <= 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(lk->log + lk->log_len, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		lk->log_len += (size_t)n < room ? (size_t)n : room - 1;
}

/* lookup_end - no targets: the enhanced code (RFC 3463) and a sentence
 * saying why, for the caller's status and why; returns what */
__attribute__((format(printf, 4, 5)))
static enum where lookup_end(struct lookup *lk, enum where what, const char *code,
			     const char *fmt, ...)
{
	va_list ap;

	(void)snprintf(lk->status, lk->status_size, "%s", code);
	va_start(ap, fmt);
	(void)vsnprintf(lk->why, lk->why_size, fmt, ap);
	va_end(ap);
	lk->n = 0;
	return what;
}

/* target_add - one more address of host, unless the list is full; 1 if it
 * was added */
static int target_add(struct lookup *lk, const char *host, const struct sockaddr *sa,
		      socklen_t len)
{
	struct target *t = &lk->t[lk->n];
	char text[ADDR_TEXT_MAX];

	if (lk->n >= lk->max || len > (socklen_t)sizeof t->addr)
		return 0;
	(void)snprintf(t->host, sizeof t->host, "%s", host);
	memset(&t->addr, 0, sizeof t->addr);
	memcpy(&t->addr, sa, len);
	t->addr_len = len;
	lk->n++;
	addr_text(sa, len, text, sizeof text);
	lookup_note(lk, " %s", text);
	return 1;
}

/* route_addresses - a route host's addresses from getaddrinfo (so that
 * /etc/hosts counts, as it should for our own configuration), IPv6 first,
 * then IPv4, each with port; 0, or getaddrinfo's error */
static int route_addresses(struct lookup *lk, const char *host, const char *port, int numeric)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | (numeric ? AI_NUMERICHOST : 0) };
	static const int families[] = { AF_INET6, AF_INET };
	struct addrinfo *list, *a;
	size_t f;
	int err = getaddrinfo(host, port, &hints, &list);

	if (err != 0)
		return err;
	for (f = 0; f < sizeof families / sizeof families[0]; f++)
		for (a = list; a; a = a->ai_next)
			if (a->ai_family == families[f])
				(void)target_add(lk, host, a->ai_addr, a->ai_addrlen);
	freeaddrinfo(list);
	return 0;
}

/* route_targets - the addresses of a -R route: its [address] as it is,
 * or its host's addresses. A host that cannot be resolved defers (4.4.3,
 * RFC 3463: directory server failure): a route is our own configuration,
 * which can be mended before the queue lifetime ends. */
static enum where route_targets(struct lookup *lk, const struct route *r)
{
	int err;

	lookup_note(lk, " route %s%s%s:%s", r->literal ? "[" : "", r->host,
		    r->literal ? "]" : "", r->port);
	err = route_addresses(lk, r->host, r->port, r->literal);
	if (err == 0 && lk->n > 0)
		return WHERE_OK;
	return lookup_end(lk, WHERE_DEFER, "4.4.3", "the route's host %s has no address: %s",
			  r->host, err ? gai_strerror(err) : "none usable");
}

/* The MX lookup speaks to the resolver directly: getaddrinfo cannot tell
 * a name that does not exist from a server that did not answer, and that
 * difference is a bounce or a retry. */
enum {
	SMTP_PORT = 25,		/* RFC 5321 4.5.4.2: MX hosts listen on port 25 */
	MX_HOSTS_MAX = 32,	/* the best MX records of a domain that we keep */
	DNS_REPLY_MAX = 65535,	/* the largest DNS message (RFC 1035 4.2.2, over TCP) */
	DNS_HEADER_LEN = 12,	/* RFC 1035 4.1.1 */
	DNS_RR_FIXED_LEN = 10,	/* RFC 1035 4.1.3: type, class, TTL, RDLENGTH */
	DNS_BUDGET_MS = 60000,	/* no more MX hosts looked up after this long */
	/* res_h_errno's values, 4.3BSD's numbers in every resolver; netdb.h
	 * names them (HOST_NOT_FOUND, NO_DATA) only beyond POSIX */
	RES_HOST_NOT_FOUND = 1, RES_NO_DATA = 4
};

/* What one query said: records of its type, none of them (NODATA), no
 * such name (NXDOMAIN), or no answer to trust (SERVFAIL, a timeout, a
 * refusal, a reply that does not parse): try again later. */
enum dns_status { DNS_FOUND, DNS_NODATA, DNS_NXDOMAIN, DNS_TEMP };

/* One reply, and where reading its answer section stands. */
struct dns_reply {
	unsigned char msg[DNS_REPLY_MAX];
	int len;
	const unsigned char *at;	/* the next answer record */
	int left;			/* answer records not read yet */
};

/* One MX record (RFC 1035 3.3.9). */
struct mx_host {
	int pref;			/* lower is tried first */
	char host[DOMAIN_MAX + 1];	/* "" or ".": the null MX of RFC 7505 */
};

static struct __res_state resolver;	/* our own: res_nquery, never the global _res */
static pid_t resolver_pid;	/* the process that ran res_ninit on it; 0: none */

/* resolver_ready - res_ninit once in each process: a delivery process
 * forked by the runner drops its copy of the parent's state and reads
 * resolv.conf afresh; 0, or -1 (logged) */
static int resolver_ready(void)
{
	pid_t me = getpid();

	if (resolver_pid == me)
		return 0;
	if (resolver_pid != 0)
		res_nclose(&resolver);
	resolver_pid = 0;
	memset(&resolver, 0, sizeof resolver);
	if (res_ninit(&resolver) != 0) {
		log_msg("where: res_ninit failed: %s", strerror(errno));
		return -1;
	}
	resolver_pid = me;
	return 0;
}

/* get16 - a 16-bit number in network order (RFC 1035 2.3.2) */
static unsigned get16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* dns_answers - check r's header and skip its question section: r->at is
 * then the first answer record; 0, or -1 when the reply does not parse */
static int dns_answers(struct dns_reply *r)
{
	const unsigned char *eom = r->msg + r->len, *p = r->msg + DNS_HEADER_LEN;
	unsigned questions;
	int skip;

	if (r->len < DNS_HEADER_LEN)
		return -1;
	for (questions = get16(r->msg + 4); questions > 0; questions--) {
		skip = dn_skipname(p, eom);
		if (skip < 0 || eom - (p + skip) < 4)	/* QTYPE and QCLASS follow */
			return -1;
		p += skip + 4;
	}
	r->at = p;
	r->left = (int)get16(r->msg + 6);
	return 0;
}

/* dns_record - the next answer record of r: its type (0 for a class other
 * than IN), data and data length; 1, 0 at the end, -1 when it does not
 * parse */
static int dns_record(struct dns_reply *r, unsigned *type, const unsigned char **data,
		      unsigned *len)
{
	const unsigned char *eom = r->msg + r->len, *p;
	int skip;

	if (r->left == 0)
		return 0;
	skip = dn_skipname(r->at, eom);
	if (skip < 0 || eom - (r->at + skip) < DNS_RR_FIXED_LEN)
		return -1;
	p = r->at + skip;
	*type = get16(p + 2) == ns_c_in ? get16(p) : 0;
	*len = get16(p + 8);
	*data = p + DNS_RR_FIXED_LEN;
	if ((size_t)(eom - *data) < *len)
		return -1;
	r->at = *data + *len;
	r->left--;
	return 1;
}

/* dns_query - ask for name's records of type into r, positioned at the
 * first answer; what the resolver said */
static enum dns_status dns_query(const char *name, int type, struct dns_reply *r)
{
	if (resolver_ready() < 0)
		return DNS_TEMP;
	r->len = res_nquery(&resolver, name, ns_c_in, type, r->msg, (int)sizeof r->msg);
	if (r->len < 0)
		return resolver.res_h_errno == RES_HOST_NOT_FOUND ? DNS_NXDOMAIN
		       : resolver.res_h_errno == RES_NO_DATA ? DNS_NODATA : DNS_TEMP;
	if (r->len > (int)sizeof r->msg || dns_answers(r) < 0) {
		log_msg("where: %s: a reply that does not parse", name);
		return DNS_TEMP;
	}
	return DNS_FOUND;
}

/* shuffle_below - a number below bound (> 0), to spread mail among MX hosts
 * of equal preference (RFC 5321 5.1); xorshift64, seeded once in each
 * process from the clock and the pid: fair enough, and no secret */
static unsigned shuffle_below(unsigned bound)
{
	static uint64_t state;
	static pid_t seeded;
	struct timespec ts;

	if (seeded != getpid()) {
		seeded = getpid();
		if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
			ts.tv_nsec = ts.tv_sec = 0;
		state = ((uint64_t)ts.tv_nsec << 24 ^ (uint64_t)ts.tv_sec ^ (uint64_t)seeded << 44) | 1;
	}
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	return (unsigned)(state % bound);
}

/* mx_keep - add one MX record to mx[0..*n), or, when MX_HOSTS_MAX are
 * kept, put it in place of the worst one if it is better */
static void mx_keep(struct mx_host *mx, size_t *n, int pref, const char *host)
{
	size_t i, worst = 0;

	if (*n < MX_HOSTS_MAX)
		worst = (*n)++;
	else {
		for (i = 1; i < MX_HOSTS_MAX; i++)
			if (mx[i].pref > mx[worst].pref)
				worst = i;
		if (mx[worst].pref <= pref)
			return;
	}
	mx[worst].pref = pref;
	(void)snprintf(mx[worst].host, sizeof mx[worst].host, "%s", host);
}

/* mx_collect - domain's MX records into mx[0..*n); DNS_NODATA also when
 * the answer holds none (only a CNAME, say) */
static enum dns_status mx_collect(const char *domain, struct mx_host *mx, size_t *n)
{
	static struct dns_reply r;
	char host[DOMAIN_MAX + 1];
	const unsigned char *data;
	unsigned type, len;
	enum dns_status st = dns_query(domain, ns_t_mx, &r);
	int got;

	*n = 0;
	if (st != DNS_FOUND)
		return st;
	while ((got = dns_record(&r, &type, &data, &len)) > 0) {
		if (type != ns_t_mx)
			continue;
		if (len < 3 || dn_expand(r.msg, r.msg + r.len, data + 2, host, sizeof host) < 0) {
			got = -1;
			break;
		}
		mx_keep(mx, n, (int)get16(data), host);
	}
	if (got < 0) {
		log_msg("where: %s: an MX reply that does not parse", domain);
		return DNS_TEMP;
	}
	return *n > 0 ? DNS_FOUND : DNS_NODATA;
}

/* mx_sort - mx in order of preference, lowest first, and shuffled among
 * equal preferences (RFC 5321 5.1: "randomize them to spread the load") */
static void mx_sort(struct mx_host *mx, size_t n)
{
	struct mx_host swap;
	size_t i, j, run;

	for (i = 1; i < n; i++)		/* insertion sort: n is small */
		for (j = i; j > 0 && mx[j - 1].pref > mx[j].pref; j--) {
			swap = mx[j];
			mx[j] = mx[j - 1];
			mx[j - 1] = swap;
		}
	for (i = 0; i < n; i += run) {	/* Fisher-Yates within each run of equals */
		for (run = 1; i + run < n && mx[i + run].pref == mx[i].pref; run++)
			continue;
		for (j = run; j > 1; j--) {
			size_t k = i + shuffle_below((unsigned)j);

			swap = mx[i + j - 1];
			mx[i + j - 1] = mx[k];
			mx[k] = swap;
		}
	}
}

/* same_host - 1 if two host names are the same: case does not matter
 * (RFC 5321 2.4), nor a final dot */
static int same_host(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	la -= la > 0 && a[la - 1] == '.';
	lb -= lb > 0 && b[lb - 1] == '.';
	return la == lb && strncasecmp(a, b, la) == 0;
}

/* mx_drop_self - RFC 5321 5.1: when we are one of the MX hosts, drop us
 * and every host of the same or a higher preference value (sending to them
 * could only come back here); 1 if we were found */
static int mx_drop_self(struct mx_host *mx, size_t *n)
{
	size_t i, kept = 0;
	int own = -1;

	for (i = 0; i < *n; i++)
		if (same_host(mx[i].host, cfg.hostname) && (own < 0 || mx[i].pref < own))
			own = mx[i].pref;
	if (own < 0)
		return 0;
	for (i = 0; i < *n; i++)
		if (mx[i].pref < own)
			mx[kept++] = mx[i];
	*n = kept;
	return 1;
}

/* mx_drop_null - drop the "." hosts (RFC 7505's null MX, which names no
 * host); 1 if every one was such, so the domain accepts no mail at all */
static int mx_drop_null(struct mx_host *mx, size_t *n)
{
	size_t i, kept = 0;

	for (i = 0; i < *n; i++)
		if (!same_host(mx[i].host, ""))
			mx[kept++] = mx[i];
	if (kept == 0)
		return 1;
	*n = kept;
	return 0;
}

/* rr_target - an A or AAAA record's address, port 25, as one more target
 * of host; 1 if the record was such an address (added, or not when the
 * list is full) */
static int rr_target(struct lookup *lk, const char *host, unsigned type,
		     const unsigned char *data, unsigned len)
{
	struct sockaddr_in6 in6;
	struct sockaddr_in in;

	if (type == ns_t_aaaa && len == sizeof in6.sin6_addr) {
		memset(&in6, 0, sizeof in6);
		in6.sin6_family = AF_INET6;
		in6.sin6_port = htons(SMTP_PORT);
		memcpy(&in6.sin6_addr, data, len);
		(void)target_add(lk, host, (struct sockaddr *)&in6, sizeof in6);
		return 1;
	}
	if (type == ns_t_a && len == sizeof in.sin_addr) {
		memset(&in, 0, sizeof in);
		in.sin_family = AF_INET;
		in.sin_port = htons(SMTP_PORT);
		memcpy(&in.sin_addr, data, len);
		(void)target_add(lk, host, (struct sockaddr *)&in, sizeof in);
		return 1;
	}
	return 0;
}

/* host_address_type - host's addresses of one type (ns_t_aaaa or ns_t_a)
 * added to lk's targets; what the query said */
static enum dns_status host_address_type(struct lookup *lk, const char *host, int type)
{
	static struct dns_reply r;
	const unsigned char *data;
	unsigned rtype, len;
	enum dns_status st = dns_query(host, type, &r);
	int got, found = 0;

	if (st != DNS_FOUND)
		return st;
	while ((got = dns_record(&r, &rtype, &data, &len)) > 0)
		if ((int)rtype == type)	/* a CNAME on the way is skipped */
			found |= rr_target(lk, host, rtype, data, len);
	if (got < 0 && !found) {
		log_msg("where: %s: an address reply that does not parse", host);
		return DNS_TEMP;
	}
	return found ? DNS_FOUND : DNS_NODATA;
}

/* host_targets - one mail host's addresses, IPv6 (AAAA) first, then IPv4
 * (A), as targets; DNS_FOUND if it has any, DNS_TEMP if a lookup got no
 * answer, else DNS_NXDOMAIN (no such host, or no address) */
static enum dns_status host_targets(struct lookup *lk, const struct mx_host *mx)
{
	enum dns_status v6, v4;

	lookup_note(lk, " %d %s", mx->pref, mx->host);
	v6 = host_address_type(lk, mx->host, ns_t_aaaa);
	v4 = host_address_type(lk, mx->host, ns_t_a);
	if (v6 == DNS_TEMP || v4 == DNS_TEMP)
		lookup_note(lk, " (%s: no answer)", v6 == DNS_TEMP ? "AAAA" : "A");
	if (v6 == DNS_FOUND || v4 == DNS_FOUND)
		return DNS_FOUND;
	if (v6 == DNS_TEMP || v4 == DNS_TEMP)
		return DNS_TEMP;
	lookup_note(lk, " (%s)", v4 == DNS_NXDOMAIN ? "NXDOMAIN" : "no address");
	return DNS_NXDOMAIN;
}

/* mx_hosts - domain's mail hosts into mx[0..*n), in the order to try
 * them: its MX records (RFC 5321 5.1), or itself when it has none (the
 * implicit MX). WHERE_OK, or the lookup's end when there is nowhere to go. */
static enum where mx_hosts(struct lookup *lk, const char *domain, struct mx_host *mx, size_t *n)
{
	enum dns_status st = mx_collect(domain, mx, n);

	if (st == DNS_NXDOMAIN)	/* RFC 3463 X.4.4: unable to route */
		return lookup_end(lk, WHERE_FAIL, "5.4.4", "%s does not exist (NXDOMAIN)", domain);
	if (st == DNS_TEMP)	/* RFC 3463 X.4.3: directory server failure */
		return lookup_end(lk, WHERE_DEFER, "4.4.3", "the MX lookup of %s got no answer",
				  domain);
	if (st == DNS_NODATA) {
		lookup_note(lk, " no MX: implicit");
		mx[0].pref = 0;
		(void)snprintf(mx[0].host, sizeof mx[0].host, "%s", domain);
		*n = 1;
		return WHERE_OK;
	}
	lookup_note(lk, " MX");
	if (mx_drop_null(mx, n))	/* RFC 7505 3: null MX, RFC 3463 X.1.10 */
		return lookup_end(lk, WHERE_FAIL, "5.1.10", "null MX: %s accepts no mail", domain);
	mx_sort(mx, *n);
	if (mx_drop_self(mx, n))
		lookup_note(lk, " (we, %s, are one: %zu better)", cfg.hostname, *n);
	if (*n == 0)	/* RFC 5321 5.1; RFC 3463 X.4.6: routing loop */
		return lookup_end(lk, WHERE_FAIL, "5.4.6",
				  "mail for %s loops back to us (%s is its best MX)", domain,
				  cfg.hostname);
	return WHERE_OK;
}

/* mx_targets - the addresses of domain's mail hosts, host by host in
 * order, until max of them are found */
static enum where mx_targets(struct lookup *lk, const char *domain)
{
	static struct mx_host mx[MX_HOSTS_MAX];
	long long give_up = now_ms() + DNS_BUDGET_MS;	/* a resolver that times out
							 * takes 10 s a query */
	size_t n = 0, i;
	enum where found = mx_hosts(lk, domain, mx, &n);
	int temp = 0;

	if (found != WHERE_OK)
		return found;
	for (i = 0; i < n && lk->n < lk->max; i++) {
		if (now_ms() > give_up) {
			lookup_note(lk, " (out of time)");
			temp = 1;
			break;
		}
		temp |= host_targets(lk, &mx[i]) == DNS_TEMP;
	}
	if (lk->n > 0)
		return WHERE_OK;
	if (temp)
		return lookup_end(lk, WHERE_DEFER, "4.4.3",
				  "the address lookup of %s's mail hosts got no answer", domain);
	return lookup_end(lk, WHERE_FAIL, "5.4.4", "no mail host of %s has an address", domain);
}

/* literal_targets - a domain that is an address literal (RFC 5321 4.1.3:
 * "[192.0.2.1]" or "[IPv6:2001:db8::1]"): that address, port 25 */
static enum where literal_targets(struct lookup *lk, const char *domain)
{
	char text[DOMAIN_MAX + 1];
	const char *start = domain + 1;
	size_t len = strlen(start);

	if (strncasecmp(start, "IPv6:", 5) == 0)
		start += 5, len -= 5;
	if (len == 0 || start[len - 1] != ']' || len > sizeof text) {
		lookup_note(lk, " bad literal");
		return lookup_end(lk, WHERE_FAIL, "5.1.2", "%s is not an address", domain);
	}
	memcpy(text, start, len - 1);
	text[len - 1] = '\0';
	lookup_note(lk, " literal");
	if (route_addresses(lk, text, "25", 1) == 0 && lk->n > 0)
		return WHERE_OK;
	return lookup_end(lk, WHERE_FAIL, "5.1.2", "%s is not an address", domain);
}

/* find_targets - the addresses to try for domain's mail, in order, at most
 * max (and TARGETS_MAX) into t, their count in *n. On WHERE_DEFER or
 * WHERE_FAIL there are none, status gets the enhanced code ("4.4.3",
 * "5.1.10", "5.4.4", "5.4.6") and why a sentence. Logged on one line. */
static enum where find_targets(const char *domain, struct target *t, size_t max, size_t *n,
			       char *status, size_t status_size, char *why, size_t why_size)
{
	struct lookup lk = { .t = t, .max = max < TARGETS_MAX ? max : TARGETS_MAX,
			     .status = status, .status_size = status_size,
			     .why = why, .why_size = why_size };
	const struct route *r = route_find(domain);
	enum where what;

	if (lk.max == 0)	/* the caller's mistake: mail must not bounce for it */
		what = lookup_end(&lk, WHERE_DEFER, "4.4.3", "no room for a single address");
	else if (r)
		what = route_targets(&lk, r);
	else if (domain[0] == '[')
		what = literal_targets(&lk, domain);
	else
		what = mx_targets(&lk, domain);
	*n = lk.n;
	if (what == WHERE_OK)
		log_msg("where: %s:%s", domain, lk.log);
	else
		log_msg("where: %s:%s %s: %s %s", domain, lk.log,
			what == WHERE_DEFER ? "deferred" : "failed", status, why);
	return what;
}

/* ---------------------------------------------------------------- relay: reports (RFC 3464) */

/* A recipient that fails, or waits too long, is reported to the sender,
 * in the sender's own mailbox: reports never go over the network. */

enum report_kind { REPORT_FAILED, REPORT_DELAYED };

enum {
	REPORT_HEADERS_MAX = 65536,	/* the original header section quoted, at most */
	STATUS_TEXT_MAX = 16		/* "5.123.123" and its NUL */
};

/* A report as it is being written: a growing buffer; a failed allocation
 * is remembered, and the report is then not stored (the caller retries). */
struct report_text {
	char *p;
	size_t len, cap;
	int failed;
};

/* What one report says: the job, the recipients it is about (rcpt[which[i]]),
 * failed or delayed, who reports, the original header section (unstuffed
 * CRLF lines), the time and the new message's Message-ID. */
struct report {
	const struct job *job;
	const int *which;
	int n;
	enum report_kind kind;
	const char *reporting_mta;
	const char *headers;
	size_t headers_len;
	long long now;
	const char *message_id;
};

/* rt_add - append n bytes to the report text */
static void rt_add(struct report_text *rt, const char *p, size_t n)
{
	if (rt->failed)
		return;
	if (n > rt->cap - rt->len) {
		size_t cap = rt->cap ? rt->cap : 4096;
		char *bigger;

		while (cap - rt->len < n && cap < ((size_t)-1) / 2)
			cap *= 2;
		if (cap - rt->len < n || !(bigger = realloc(rt->p, cap))) {
			rt->failed = 1;
			return;
		}
		rt->p = bigger;
		rt->cap = cap;
	}
	memcpy(rt->p + rt->len, p, n);
	rt->len += n;
}

/* rt_printf - append formatted text to the report text */
__attribute__((format(printf, 2, 3)))
static void rt_printf(struct report_text *rt, const char *fmt, ...)
{
	char line[2 * (REPLY_TEXT_MAX + SMTP_PATH_MAX)];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line)
		rt->failed = 1;	/* cannot happen: every piece is bounded */
	else
		rt_add(rt, line, (size_t)n);
}

/* rt_free - let the report text go */
static void rt_free(struct report_text *rt)
{
	free(rt->p);
	rt->p = NULL;
	rt->len = rt->cap = 0;
}

/* report_date - unix seconds as an RFC 5322 3.3 date-time, in UTC */
static void report_date(long long when, char *out, size_t size)
{
	time_t t = (time_t)when;
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, size, "%a, %d %b %Y %H:%M:%S +0000", &tm))
		(void)snprintf(out, size, "Thu, 01 Jan 1970 00:00:00 +0000");
}

/* ascii_only - text for a report's fields: RFC 3464 2.1.1 wants them in
 * US-ASCII, and a remote's reply may hold any byte, so every byte that is
 * not printable ASCII becomes '?' */
static void ascii_only(char *out, size_t size, const char *in)
{
	size_t i;

	for (i = 0; i + 1 < size && in[i]; i++)
		out[i] = (unsigned char)in[i] < 0x20 || (unsigned char)in[i] > 0x7e ? '?' : in[i];
	out[i] = '\0';
}

/* digits_at - how many digits (at most max) start s */
static size_t digits_at(const char *s, size_t max)
{
	size_t i = 0;

	while (i < max && isdigit((unsigned char)s[i]))
		i++;
	return i;
}

/*
 * reply_status - the RFC 3463 status of a recipient from its reply text
 * ("550 5.1.1 no such user" gives "5.1.1"): the enhanced code after the
 * three digits when there is one (class 2, 4 or 5, subject and detail of
 * 1-3 digits), else one made from the reply code's class (RFC 3464 2.3.4
 * asks for a status whatever the reply), else from the kind of report.
 */
static void reply_status(const char *reply, enum report_kind kind, char *status, size_t size)
{
	const char *e = reply + 4;
	size_t subject, detail;

	if (digits_at(reply, 3) == 3 && (reply[3] == ' ' || reply[3] == '-')
	    && strchr("245", e[0]) && e[0] && e[1] == '.'
	    && (subject = digits_at(e + 2, 3)) > 0 && e[2 + subject] == '.'
	    && (detail = digits_at(e + 3 + subject, 3)) > 0
	    && (e[3 + subject + detail] == ' ' || e[3 + subject + detail] == '\0')
	    && 3 + subject + detail < size) {
		memcpy(status, e, 3 + subject + detail);
		status[3 + subject + detail] = '\0';
	} else if (digits_at(reply, 3) == 3 && (reply[0] == '4' || reply[0] == '5'))
		(void)snprintf(status, size, "%c.0.0", reply[0]);
	else
		(void)snprintf(status, size, "%s", kind == REPORT_FAILED ? "5.0.0" : "4.0.0");
}

/* What a status means, in plain words for the sender (RFC 3463 and the
 * codes this relay gives itself: RFC 7505 null MX, RFC 5321 6.3 loops). */
static const struct status_words {
	const char *status;	/* a whole status, or "class.subject." for the rest */
	const char *words;
} status_words[] = {
	{ "5.1.1", "The address does not exist there: no such user." },
	{ "5.1.2", "The domain of the address does not exist." },
	{ "5.1.10", "The domain of the address accepts no mail (null MX)." },
	{ "5.4.4", "The domain of the address does not exist, or has no mail server." },
	{ "5.4.6", "The mail went round in a loop: it would have come back here." },
	{ "4.4.7", "It could not be delivered in time." },
	{ "5.4.7", "It could not be delivered in time." },
	{ "5.2.2", "The recipient's mailbox is full." },
	{ "5.3.4", "The message is too big for the receiving server." },
	{ "5.2.3", "The message is too big for the receiving server." },
	{ "5.7.", "The receiving server does not accept mail from you (its policy)." },
	{ "5.1.", "The address was refused." },
	{ "5.2.", "The recipient's mailbox cannot take mail." },
	{ "5.4.", "The receiving server could not be reached." },
	{ "4.4.", "The receiving server could not be reached yet." },
	{ "4.2.", "The recipient's mailbox is busy or full for now." },
	{ "4.", "The receiving server asked to try again later." },
	{ "5.", "The receiving server refused it." },
};

/* status_meaning - the plain words for a status: an exact entry first,
 * then the first prefix that fits */
static const char *status_meaning(const char *status)
{
	size_t i, count = sizeof status_words / sizeof status_words[0];

	for (i = 0; i < count; i++)
		if (strcmp(status, status_words[i].status) == 0)
			return status_words[i].words;
	for (i = 0; i < count; i++) {
		const char *w = status_words[i].status;

		if (w[strlen(w) - 1] == '.' && strncmp(status, w, strlen(w)) == 0)
			return status_words[i].words;
	}
	return "It could not be delivered.";
}

/* duration_text - seconds for people: "5 days", "4 hours", "90 seconds"
 * (the largest unit that divides it) */
static void duration_text(long long seconds, char *out, size_t size)
{
	static const struct { long long size; const char *name; } units[] = {
		{ 86400, "day" }, { 3600, "hour" }, { 60, "minute" }, { 1, "second" }
	};
	size_t i = 0;

	while (i + 1 < sizeof units / sizeof units[0]
	       && (seconds < units[i].size || seconds % units[i].size != 0))
		i++;
	(void)snprintf(out, size, "%lld %s%s", seconds / units[i].size, units[i].name,
		       seconds / units[i].size == 1 ? "" : "s");
}

/* report_rcpt_words - one recipient in the human-readable part: the
 * address, what it means, and who said what */
static void report_rcpt_words(struct report_text *rt, const struct report *rp,
			      const struct job_rcpt *r)
{
	char status[STATUS_TEXT_MAX], reply[REPLY_TEXT_MAX + 1], remote[DOMAIN_MAX + 1];
	char span[64];

	reply_status(r->reply, rp->kind, status, sizeof status);
	ascii_only(reply, sizeof reply, r->reply);
	ascii_only(remote, sizeof remote, r->remote);
	rt_printf(rt, "  <%s>\r\n    %s\r\n", r->address, status_meaning(status));
	if (strcmp(status + 1, ".4.7") == 0) {	/* RFC 3463 X.4.7: the lifetime ran out */
		duration_text(cfg.queue_lifetime, span, sizeof span);
		rt_printf(rt, "    It was tried for %s; the mail system has given up.\r\n", span);
	}
	if (reply[0] && remote[0])
		rt_printf(rt, "    The mail server %s answered:\r\n    %s\r\n", remote, reply);
	else if (reply[0])
		rt_printf(rt, "    The mail system here (%s) said:\r\n    %s\r\n",
			  rp->reporting_mta, reply);
	rt_add(rt, "\r\n", 2);
}

/* header_subject - the original Subject field's value, as written (the
 * first line of it), into out; "" when there is none */
static void header_subject(const char *headers, size_t len, char *out, size_t size)
{
	size_t pos = 0;

	out[0] = '\0';
	while (pos < len) {
		const char *line = headers + pos, *end = memchr(line, '\n', len - pos);
		size_t n = end ? (size_t)(end - line) : len - pos;

		pos += n + 1;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (n >= 8 && strncasecmp(line, "Subject:", 8) == 0) {
			line += 8;
			n -= 8;
			while (n > 0 && (*line == ' ' || *line == '\t'))
				line++, n--;
			(void)snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), line);
			ascii_only(out, size, out);
			return;
		}
	}
}

/* report_words - the human-readable part (RFC 3464 2: "a human-readable
 * explanation"), in plain words: what happened to which recipient, why,
 * and what the sender may do */
static void report_words(struct report_text *rt, const struct report *rp)
{
	char when[64], subject[128];
	int i;

	rt_printf(rt, "This is the mail system at %s.\r\n\r\n", rp->reporting_mta);
	if (rp->kind == REPORT_FAILED)
		rt_printf(rt, "Your message could not be delivered to %s below. It will\r\n"
			  "not be tried again.\r\n\r\n",
			  rp->n == 1 ? "the recipient" : "the recipients");
	else {
		report_date(rp->job->arrived + cfg.queue_lifetime, when, sizeof when);
		rt_printf(rt, "Your message has not yet been delivered to %s below. It is\r\n"
			  "still being tried, until %s.\r\n"
			  "You do not need to do anything. If it cannot be delivered by then,\r\n"
			  "you will get another report.\r\n\r\n",
			  rp->n == 1 ? "the recipient" : "the recipients", when);
	}
	for (i = 0; i < rp->n; i++)
		report_rcpt_words(rt, rp, &rp->job->rcpt[rp->which[i]]);
	report_date(rp->job->arrived, when, sizeof when);
	header_subject(rp->headers, rp->headers_len, subject, sizeof subject);
	if (subject[0])
		rt_printf(rt, "Your message was sent on %s,\r\nwith the subject \"%s\".\r\n",
			  when, subject);
	else
		rt_printf(rt, "Your message was sent on %s,\r\nwith no subject.\r\n", when);
	rt_add(rt, "Its header lines are attached below.\r\n", 38);
}

/* mta_open - what goes before a Remote-MTA's name: "" for a host name,
 * "[" or "[IPv6:" for an address (a -R route to [address]), so that the
 * field reads as an address literal of RFC 5321 4.1.3, not as a name */
static const char *mta_open(const char *remote)
{
	unsigned char bin[16];

	if (inet_pton(AF_INET, remote, bin) == 1)
		return "[";
	return inet_pton(AF_INET6, remote, bin) == 1 ? "[IPv6:" : "";
}

/* report_status_fields - the machine-readable part (RFC 3464 2.2, 2.3):
 * the per-message fields, then one block per recipient */
static void report_status_fields(struct report_text *rt, const struct report *rp)
{
	char when[64], status[STATUS_TEXT_MAX], reply[REPLY_TEXT_MAX + 1];
	char remote[DOMAIN_MAX + 1];
	int i;

	report_date(rp->job->arrived, when, sizeof when);
	rt_printf(rt, "Reporting-MTA: dns; %s\r\nArrival-Date: %s\r\n", rp->reporting_mta, when);
	for (i = 0; i < rp->n; i++) {
		const struct job_rcpt *r = &rp->job->rcpt[rp->which[i]];

		reply_status(r->reply, rp->kind, status, sizeof status);
		rt_printf(rt, "\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n",
			  r->address, rp->kind == REPORT_FAILED ? "failed" : "delayed", status);
		ascii_only(remote, sizeof remote, r->remote);
		if (remote[0])	/* RFC 3464 2.3.5: the MTA that gave the reply */
			rt_printf(rt, "Remote-MTA: dns; %s%s%s\r\n", mta_open(remote), remote,
				  *mta_open(remote) ? "]" : "");
		ascii_only(reply, sizeof reply, r->reply);
		if (reply[0])	/* RFC 3464 2.3.6: smtp; the reply as it came */
			rt_printf(rt, "Diagnostic-Code: smtp; %s\r\n", reply);
		report_date(r->last_try ? r->last_try : rp->now, when, sizeof when);
		rt_printf(rt, "Last-Attempt-Date: %s\r\n", when);
		report_date(rp->job->arrived + cfg.queue_lifetime, when, sizeof when);
		if (rp->kind == REPORT_DELAYED)	/* RFC 3464 2.3.8 */
			rt_printf(rt, "Will-Retry-Until: %s\r\n", when);
	}
}

/* report_boundary - a multipart boundary found nowhere in the parts nor
 * in the original headers (RFC 2046 5.1.1: it must not occur in what it
 * encloses) */
static void report_boundary(const struct report *rp, const struct report_text *parts,
			    int count, char *out, size_t size)
{
	for (unsigned tries = 0;; tries++) {
		int clash = 0;

		/* RFC 2046 5.1.1: 70 characters at most; a cut one is checked too */
		if (snprintf(out, size, "=_report_%lld_%u_%s", rp->now, tries, rp->job->id) < 0)
			out[0] = '\0';
		clash = find_bytes(rp->headers, rp->headers_len, out, strlen(out)) != NULL;
		for (int i = 0; i < count && !clash; i++)
			clash = parts[i].len > 0
				&& find_bytes(parts[i].p, parts[i].len, out, strlen(out)) != NULL;
		if (!clash)
			return;
	}
}

/* has_8bit - whether any byte of p[0..n) is not ASCII */
static int has_8bit(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] > 0x7f)
			return 1;
	return 0;
}

/* report_top - the report's own header section (RFC 3464 2, RFC 6522 3:
 * multipart/report; RFC 3834 5: Auto-Submitted, so that no robot answers) */
static void report_top(struct report_text *rt, const struct report *rp, const char *boundary)
{
	char when[64];

	report_date(rp->now, when, sizeof when);
	rt_printf(rt, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\nTo: <%s>\r\n",
		  cfg.hostname, rp->job->from);
	rt_printf(rt, "Subject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\n",
		  rp->kind == REPORT_FAILED ? "Undelivered Mail Returned to Sender"
		  : "Delayed Mail (still being retried)", when, rp->message_id);
	rt_printf(rt, "MIME-Version: 1.0\r\nContent-Type: multipart/report;"
		  " report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n"
		  "Auto-Submitted: auto-replied\r\n\r\n"
		  "This is a MIME-encapsulated message.\r\n\r\n", boundary);
}

/*
 * report_compose - the whole report (unstuffed CRLF lines) into out: the
 * header section, then the three parts of RFC 3464 2 / RFC 6522 3: the
 * human-readable text, message/delivery-status, and text/rfc822-headers
 * holding the original message's header section. 0, or -1 (out of memory).
 */
static int report_compose(const struct report *rp, struct report_text *out)
{
	struct report_text parts[2] = { { 0 }, { 0 } };
	char boundary[70 + 1];
	int failed;

	report_words(&parts[0], rp);
	report_status_fields(&parts[1], rp);
	report_boundary(rp, parts, 2, boundary, sizeof boundary);
	report_top(out, rp, boundary);
	rt_printf(out, "--%s\r\nContent-Description: Notification\r\n"
		  "Content-Type: text/plain; charset=us-ascii\r\n\r\n", boundary);
	rt_add(out, parts[0].p, parts[0].len);
	rt_printf(out, "\r\n--%s\r\nContent-Description: Delivery report\r\n"
		  "Content-Type: message/delivery-status\r\n\r\n", boundary);
	rt_add(out, parts[1].p, parts[1].len);
	rt_printf(out, "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
		  "Content-Type: text/rfc822-headers\r\n%s\r\n", boundary,
		  has_8bit(rp->headers, rp->headers_len) ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	rt_add(out, rp->headers, rp->headers_len);
	rt_printf(out, "\r\n--%s--\r\n", boundary);
	failed = out->failed || parts[0].failed || parts[1].failed;
	rt_free(&parts[0]);
	rt_free(&parts[1]);
	return failed ? -1 : 0;
}

/*
 * original_headers - the header section of the queued message <id>.msg
 * (CRLF lines, dot-stuffed, our Received line first), unstuffed, into
 * out: every line up to the empty one that ends it, or to the end of a
 * message that has no body; at most REPORT_HEADERS_MAX bytes, cut at a
 * line's end. 0, or -1 (logged) when it cannot be read.
 */
static int original_headers(const char *id, struct report_text *out)
{
	char path[PATH_TEXT_MAX];
	char *buf = malloc(REPORT_HEADERS_MAX);
	ssize_t got = -1;
	int fd = -1;

	if (buf && job_path(path, sizeof path, id, ".msg") == 0
	    && (fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) >= 0)
		got = pread_full(fd, buf, REPORT_HEADERS_MAX, 0);
	if (got < 0)
		log_msg("report: %s.msg: %s", id, buf ? strerror(errno) : "out of memory");
	if (fd >= 0)
		close_fd(fd, "queued message");
	for (size_t pos = 0; got > 0 && pos < (size_t)got;) {
		const char *line = buf + pos, *lf = memchr(line, '\n', (size_t)got - pos);
		size_t n = lf ? (size_t)(lf - line) + 1 : 0;

		if (n == 0 || (n <= 2 && (line[0] == '\r' || line[0] == '\n')))
			break;	/* a line cut by the limit, or the empty line */
		if (line[0] == '.')	/* RFC 5321 4.5.2: the stuffed dot goes */
			line++, n--;
		rt_add(out, line, n);
		pos = (size_t)(lf - buf) + 1;
	}
	free(buf);
	return got < 0 || out->failed ? -1 : 0;
}

/* stuffed - text (CRLF lines) as a record holds it: a line that starts
 * with '.' gets it doubled (DESIGN.md "Record format") */
static void stuffed(const struct report_text *text, struct report_text *out)
{
	for (size_t pos = 0; pos < text->len;) {
		const char *line = text->p + pos, *lf = memchr(line, '\n', text->len - pos);
		size_t n = lf ? (size_t)(lf - line) + 1 : text->len - pos;

		if (line[0] == '.')
			rt_add(out, ".", 1);
		rt_add(out, line, n);
		pos += n;
	}
}

/* report_owner - the account whose mailbox gets a report on job: the
 * login that sent it, else the sender's local part when its domain is
 * ours (a trusted network's client). 1 found, 0 nobody here, -1 user.txt
 * cannot be read. */
static int report_owner(const struct job *job, struct account *acct)
{
	char local[LOCAL_PART_MAX + 1];
	const char *at = strrchr(job->from, '@');
	size_t n = at ? (size_t)(at - job->from) : 0;

	if (job->auth[0] && strcmp(job->auth, "-") != 0)
		return find_mailbox(job->auth, acct);
	if (!at || n == 0 || n > LOCAL_PART_MAX || !local_domain(at + 1))
		return 0;
	memcpy(local, job->from, n);
	local[n] = '\0';
	return find_mailbox(local, acct);
}

/* report_trace - the record's trace lines (RFC 5321 4.4), in the shape of
 * a delivery's: Return-Path <>, as a report's sender is null (RFC 3464 2,
 * RFC 5321 4.5.5); a Received line "from ... by <host> (smtpmail) with",
 * as tail_is_ours knows our crashed appends, whose " id <id>" ends a
 * line, as record_present and mailbox_holds look for it */
static int report_trace(const struct rcpt *r, const char *to, long long now, char *out,
			size_t size)
{
	char when[64];
	int n;

	report_date(now, when, sizeof when);
	n = snprintf(out, size, "Return-Path: <>\r\nReceived: from %s (the delivery report)\r\n"
		     "\tby %s (smtpmail) with local id %s\r\n\tfor <%s>; %s\r\n",
		     cfg.hostname, cfg.hostname, r->id, to, when);
	return n < 0 || (size_t)n >= size ? -1 : n;
}

/* report_append - under r's write lock (open_for_append done): the trace
 * lines, the stuffed report and the final "." in one writev, as
 * append_record does for a message, then the commit state noted */
static int report_append(struct rcpt *r, const char *to, const struct report_text *body,
			 long long now)
{
	static char end[] = ".\r\n";
	char trace[TRACE_MAX];
	int n = report_trace(r, to, now, trace, sizeof trace);
	struct iovec iov[3];

	if (n < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	iov[0].iov_base = trace;
	iov[0].iov_len = (size_t)n;
	iov[1].iov_base = body->p;
	iov[1].iov_len = body->len;
	iov[2].iov_base = end;
	iov[2].iov_len = sizeof end - 1;
	if (writev_all(r->box_fd, iov, 3) < 0)
		return -1;
	return commit_appended(r);
}

/*
 * report_store - the stuffed report into acct's mailbox as a delivery
 * stores a message (DESIGN.md "Delivery"): lock_all, open_for_append, the
 * append, commit_one, release_all; a failed append is rolled back. 0
 * only when the record is durable.
 */
static int report_store(const struct account *acct, const char *to,
			const struct report_text *body, long long now)
{
	static struct session s;	/* only its recipient table is used */
	struct rcpt *r = &s.rcpts[0];
	int rc = -1;

	memset(r, 0, sizeof *r);
	memcpy(r->login, acct->login, sizeof r->login);
	r->dir_fd = r->lock_fd = r->box_fd = -1;
	s.nrcpts = 1;
	message_id(&s, r->id, sizeof r->id);
	hold_stop(1);	/* as deliver: no SIGTERM between the append and its end */
	if (lock_all(&s) == 0 && open_for_append(r, 0) == 0) {
		if (report_append(r, to, body, now) == 0)
			rc = commit_one(r) == 0 ? 0 : (errno = EIO, -1);
		else
			roll_back(r);
	}
	if (rc < 0)
		log_msg("report: into %s/mymailbox: %s", r->login, strerror(errno));
	release_all(&s);
	hold_stop(0);
	return rc;
}

/*
 * report_deliver - one RFC 3464 report about job's recipients
 * rcpt[which[0 .. n)] into the sender's own mailbox (job->auth's, or the
 * local part of job->from when its domain is ours). Never for the null
 * sender (RFC 5321 4.5.5: no report on a report, so no loop), and never
 * over the network. 0 when it is durably stored or not needed; -1 when
 * not stored: the caller keeps the job as it was and tries again later.
 * A sender with no account here (removed since) gets none: logged, 0.
 */
static int report_deliver(const struct job *job, const int *which, int n, enum report_kind kind,
			  const char *reporting_mta)
{
	struct report_text headers = { 0 }, text = { 0 }, body = { 0 };
	struct report rp = { job, which, n, kind, reporting_mta ? reporting_mta : cfg.hostname,
			     NULL, 0, (long long)time(NULL), NULL };
	char message_id_text[ID_MAX + HOSTNAME_MAX + 16], rid[ID_MAX];
	struct account acct;
	int found, rc = -1;

	if (!job->from[0] || n <= 0)
		return 0;
	for (int i = 0; i < n; i++)
		if (which[i] < 0 || which[i] >= job->nrcpt) {
			log_msg("report: %s: no recipient %d", job->id, which[i]);
			return -1;
		}
	if ((found = report_owner(job, &acct)) <= 0) {
		log_msg("report: %s: no mailbox here for <%s>%s", job->id, job->from,
			found < 0 ? ": the account list cannot be read (later)" : ": none written");
		return found < 0 ? -1 : 0;
	}
	message_id(NULL, rid, sizeof rid);
	(void)snprintf(message_id_text, sizeof message_id_text, "%s@%s", rid, cfg.hostname);
	rp.message_id = message_id_text;
	if (original_headers(job->id, &headers) == 0) {
		rp.headers = headers.p ? headers.p : "";
		rp.headers_len = headers.len;
		if (report_compose(&rp, &text) == 0 && (stuffed(&text, &body), !body.failed))
			rc = report_store(&acct, job->from, &body, rp.now);
	}
	if (rc == 0)
		log_msg("report: %s: %s, %d recipient%s, into %s/mymailbox", job->id,
			kind == REPORT_FAILED ? "failed" : "delayed", n, n == 1 ? "" : "s", acct.login);
	rt_free(&headers);
	rt_free(&text);
	rt_free(&body);
	return rc;
}

/* ---------------------------------------------------------------- relay: the SMTP client */

/* A delivery process speaks SMTP to one destination for one message, and
 * records each recipient's outcome before it says QUIT. */

/* RFC 5321 4.5.3.2: how long the client waits for each reply, in seconds;
 * the connection itself gets Postfix's smtp_connect_timeout. */
enum {
	CONNECT_TIMEOUT = 30,
	GREETING_TIMEOUT = 300,	/* 4.5.3.2.1: the initial 220, 5 minutes */
	MAIL_TIMEOUT = 300,	/* 4.5.3.2.2: MAIL, 5 minutes (EHLO and HELO too) */
	RCPT_TIMEOUT = 300,	/* 4.5.3.2.3: RCPT, 5 minutes */
	DATA_TIMEOUT = 120,	/* 4.5.3.2.4: DATA, 2 minutes */
	BLOCK_TIMEOUT = 180,	/* 4.5.3.2.5: each block of the data, 3 minutes */
	DOT_TIMEOUT = 600,	/* 4.5.3.2.6: the final dot, 10 minutes */
	QUIT_TIMEOUT = 10,	/* QUIT's reply changes nothing: a short wait */
	REPLY_LINES_MAX = 100,	/* the lines of one multi-line reply, at most */
	REPLY_READ_MAX = 8192,	/* a reply line read, with its CRLF: see reply_read */
	BATCH_MAX = 16		/* jobs one delivery process carries, one after the other */
};

/* How a delivery process ends; the runner reads it from the exit status:
 * DOWN, no address of the destination answered (it is left alone for a
 * while). */
enum { DELIVERY_DONE = 0, DELIVERY_DOWN = 3 };

/* A reply of the remote, or one of ours standing for it. */
struct smtp_reply {
	int code;		/* 200..599 */
	int local;		/* ours (a connection failure, a time-out), not the remote's */
	char text[REPLY_TEXT_MAX + 1];	/* "<code> <enhanced> <text>", lines joined */
};

/* The connection to one address of the destination, and what it offers. */
struct remote {
	struct conn conn;	/* conn.fd: -1 when there is no connection */
	const char *host;	/* the MX or route host; NULL before any */
	int lost;		/* a read or a write failed: the session cannot go on */
	int esmtp, size, eightbit, pipelining;	/* EHLO worked; what it offered */
	unsigned long long size_max;	/* SIZE's value; 0: no limit given */
};

/* What the runner asks of a delivery process: these jobs' recipients at
 * one domain (flush: whether due or not); down: defer them, no connection. */
struct order {
	char domain[DOMAIN_MAX + 1];
	char ids[BATCH_MAX][ID_MAX];
	int flush[BATCH_MAX];
	int n;
	int down;
};

/* One delivery: a job's recipients at one domain, and each one's reply. */
struct trip {
	struct job job;		/* as loaded when the delivery began */
	const char *domain;
	int which[QUEUE_RCPTS_MAX];	/* the recipients, indexes into job.rcpt */
	int n;
	struct smtp_reply got[QUEUE_RCPTS_MAX];	/* got[k]: rcpt[which[k]]'s reply */
	int msg_fd;		/* <id>.msg */
	unsigned long long msg_size;
	int eightbit;		/* the data has a byte over 127 (RFC 6152) */
	char remote[DOMAIN_MAX + 1];	/* the host that gave the replies, or "" */
};

/* local_reply - a reply of our own into r: its code, then the words */
static void local_reply(struct smtp_reply *r, int code, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(r->text, sizeof r->text, "%d ", code);

	va_start(ap, fmt);
	if (n < 0 || vsnprintf(r->text + n, sizeof r->text - (size_t)n, fmt, ap) < 0)
		r->text[0] = '\0';
	va_end(ap);
	r->code = code;
	r->local = 1;
	reply_clean(r->text, sizeof r->text, r->text);
}

/* reply_code - the code of a reply line (RFC 5321 4.2: three digits, then
 * a space, a hyphen, or the end), or -1 */
static int reply_code(const char *line, size_t len)
{
	if (len < 3 || (len > 3 && line[3] != ' ' && line[3] != '-'))
		return -1;
	for (int i = 0; i < 3; i++)
		if (!isdigit((unsigned char)line[i]))
			return -1;
	return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

/* reply_add - one line of a reply into r: the first gives the code, every
 * line adds its text; 0, or -1 if it is no reply line or its code is not
 * the first one's */
static int reply_add(struct smtp_reply *r, const char *line, size_t len, int first)
{
	int code = reply_code(line, len);
	size_t used;

	if (code < 200 || code > 599 || (!first && code != r->code))
		return -1;
	if (first) {
		r->code = code;
		(void)snprintf(r->text, sizeof r->text, "%d", code);
	}
	used = strlen(r->text);
	if (len > 4 && used < REPLY_TEXT_MAX)
		(void)snprintf(r->text + used, sizeof r->text - used, " %.*s", (int)(len - 4),
			       line + 4);
	return 0;
}

/*
 * reply_read - the remote's next reply, waiting at most timeout seconds
 * for each line; 0, or -1 with r holding a 451 of ours saying why. RFC
 * 5321 4.5.3.1.5 bounds a reply line at 512 octets, but servers send
 * longer texts, and a line skipped unread could be the last one of the
 * reply (a 250 to the final dot waited past would send the message
 * twice): so lines up to REPLY_READ_MAX are read (the text kept is cut at
 * REPLY_TEXT_MAX), and a longer one ends the session as no SMTP.
 */
static int reply_read(struct remote *m, int timeout, struct smtp_reply *r)
{
	char line[REPLY_READ_MAX];
	size_t len;
	int crlf;

	m->conn.timeout_ms = timeout * 1000;
	r->local = 0;
	for (int i = 0; i < REPLY_LINES_MAX; i++) {
		enum io_status st = conn_read_line(&m->conn, line, sizeof line, &len, &crlf);

		if (st == IO_TOO_LONG) {
			local_reply(r, 451, "4.5.0 %s: a reply line too long (over %d octets)",
				    m->host, (int)REPLY_READ_MAX);
			m->lost = 1;	/* out of step with it */
			return -1;
		}
		if (st != IO_OK) {
			local_reply(r, 451, "4.4.2 %s: %s", m->host, st == IO_TIMEOUT
				    ? "no reply in time" : "the connection was lost");
			m->lost = 1;
			return -1;
		}
		if (reply_add(r, line, len, i == 0) < 0)
			break;
		if (len == 3 || line[3] == ' ') {
			reply_clean(r->text, sizeof r->text, r->text);
			if (verbose)
				log_msg("%s: < %s", m->host, r->text);
			return 0;
		}
	}
	local_reply(r, 451, "4.5.0 %s: a reply that is not SMTP", m->host);
	m->lost = 1;	/* out of step with it */
	return -1;
}

/* command - one command line for the remote, buffered: it goes out with
 * the next read (conn_fill sends first), so pipelined commands go together */
static int command(struct remote *m, const char *fmt, ...)
{
	char line[COMMAND_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line - 2)
		return -1;	/* cannot happen: a path is 256 octets at most */
	if (verbose)
		log_msg("%s: > %s", m->host, line);
	memcpy(line + n, "\r\n", 2);
	if (conn_write(&m->conn, line, (size_t)n + 2) < 0) {
		m->lost = 1;
		return -1;
	}
	return 0;
}

/* exchange - one command, then its reply; 0 when the reply came */
static int exchange(struct remote *m, int timeout, struct smtp_reply *r, const char *verb)
{
	if (command(m, "%s %s", verb, cfg.hostname) < 0) {
		local_reply(r, 451, "4.4.2 %s: the connection was lost", m->host);
		return -1;
	}
	return reply_read(m, timeout, r);
}

/* tcp_connect - a socket connected to t, within CONNECT_TIMEOUT; the
 * descriptor, or -1 with why saying what failed */
static int tcp_connect(const struct target *t, struct smtp_reply *why)
{
	struct pollfd p = { .events = POLLOUT };
	socklen_t len = sizeof(int);
	int err = 0, n;

	p.fd = socket(t->addr.ss_family, SOCK_STREAM, 0);
	if (p.fd < 0 || fcntl(p.fd, F_SETFD, FD_CLOEXEC) < 0
	    || fcntl(p.fd, F_SETFL, O_NONBLOCK) < 0)
		err = errno;
	else if (connect(p.fd, (const struct sockaddr *)&t->addr, t->addr_len) == 0)
		return p.fd;
	else if ((err = errno) == EINPROGRESS) {
		while ((n = poll(&p, 1, CONNECT_TIMEOUT * 1000)) < 0 && errno == EINTR)
			;
		err = n == 0 ? ETIMEDOUT : n < 0 ? errno : 0;
		if (n > 0 && getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err == 0)
			return p.fd;
	}
	local_reply(why, 451, "4.4.1 %s: connect: %s", t->host, strerror(err));
	if (p.fd >= 0)
		close_fd(p.fd, "connection");
	return -1;
}

/* names_us - 1 if a greeting or an EHLO reply names our own host first:
 * the route or the MX leads back here (RFC 5321 5.1: no mail loop) */
static int names_us(const struct smtp_reply *r)
{
	const char *name = strlen(r->text) > 4 ? r->text + 4 : "";
	size_t len = strcspn(name, " ");

	return len > 0 && len == strlen(cfg.hostname) && strncasecmp(name, cfg.hostname, len) == 0;
}

/* keyword - 1 if the word at p is kw, whole */
static int keyword(const char *p, const char *kw)
{
	size_t len = strlen(kw);

	return strncasecmp(p, kw, len) == 0 && (p[len] == ' ' || p[len] == '\0');
}

/* ehlo_offers - what an EHLO reply offers: RFC 1870 SIZE (and its limit),
 * RFC 6152 8BITMIME, RFC 2920 PIPELINING. Its lines are joined by spaces
 * in the text, so each keyword follows a space. */
static void ehlo_offers(struct remote *m, const char *text)
{
	const char *p = text;

	m->esmtp = 1;
	while ((p = strchr(p, ' ')) != NULL) {
		p++;
		if (keyword(p, "8BITMIME"))
			m->eightbit = 1;
		else if (keyword(p, "PIPELINING"))
			m->pipelining = 1;
		else if (keyword(p, "SIZE") && (m->size = 1) && p[4] == ' ')
			m->size_max = strtoull(p + 5, NULL, 10);
	}
}

/* How the opening of a session went. */
enum opening { OPEN_OK, OPEN_NEXT, OPEN_LOOP, OPEN_REFUSED };

/* open_session - the greeting, then EHLO, or HELO after a 5xx to EHLO
 * (RFC 5321 4.1.4, 3.2). OPEN_NEXT: try the next address (no 220, a 421,
 * a 4xx, the connection lost: r says why); OPEN_LOOP: the remote is us;
 * OPEN_REFUSED: a 5xx to HELO too, which ends the delivery */
static enum opening open_session(struct remote *m, struct smtp_reply *r)
{
	int ehlo;

	if (reply_read(m, GREETING_TIMEOUT, r) < 0 || r->code != 220)
		return OPEN_NEXT;
	if (names_us(r))
		return OPEN_LOOP;
	if (exchange(m, MAIL_TIMEOUT, r, "EHLO") < 0)
		return OPEN_NEXT;
	ehlo = r->code / 100 == 2;
	if (!ehlo && r->code / 100 == 5 && exchange(m, MAIL_TIMEOUT, r, "HELO") < 0)
		return OPEN_NEXT;
	if (r->code / 100 != 2)
		return r->code / 100 == 5 ? OPEN_REFUSED : OPEN_NEXT;
	if (names_us(r))
		return OPEN_LOOP;
	if (ehlo)
		ehlo_offers(m, r->text);
	return OPEN_OK;
}

/* all_get - every recipient of the trip not decided yet gets reply r; a
 * recipient refused for good already (a 5xx to its RCPT) keeps that */
static void all_get(struct trip *t, const struct smtp_reply *r, int keep_refused)
{
	for (int k = 0; k < t->n; k++)
		if (!keep_refused || t->got[k].code / 100 != 5)
			t->got[k] = *r;
}

/* mail_command - MAIL, with SIZE (RFC 1870) and BODY=8BITMIME (RFC 6152)
 * when the remote offers them */
static int mail_command(const struct trip *t, struct remote *m)
{
	char params[64] = "";

	if (m->size)
		(void)snprintf(params, sizeof params, " SIZE=%llu", t->msg_size);
	if (t->eightbit && m->eightbit)
		(void)snprintf(params + strlen(params), sizeof params - strlen(params),
			       " BODY=8BITMIME");
	return command(m, "MAIL FROM:<%s>%s", t->job.from, params);
}

/* envelope_command - the i-th command of the envelope: 0 MAIL, 1..n
 * RCPT, n + 1 DATA */
static int envelope_command(const struct trip *t, struct remote *m, int i)
{
	if (i == 0)
		return mail_command(t, m);
	if (i <= t->n)
		return command(m, "RCPT TO:<%s>", t->job.rcpt[t->which[i - 1]].address);
	return command(m, "DATA");
}

/* envelope_reply - read the i-th command's reply into its place: MAIL's
 * and DATA's into r[0] and r[1], a RCPT's into its recipient's got */
static int envelope_reply(struct trip *t, struct remote *m, int i, struct smtp_reply r[2])
{
	if (i == 0)
		return reply_read(m, MAIL_TIMEOUT, &r[0]);
	if (i <= t->n)
		return reply_read(m, RCPT_TIMEOUT, &t->got[i - 1]);
	return reply_read(m, DATA_TIMEOUT, &r[1]);
}

/* accepted_count - the recipients whose RCPT got a 2xx */
static int accepted_count(const struct trip *t)
{
	int n = 0;

	for (int k = 0; k < t->n; k++)
		n += t->got[k].code / 100 == 2;
	return n;
}

/* envelope_send - the commands 0..last; with PIPELINING all at once,
 * then the replies in order (RFC 2920 3.1), else each after the one
 * before was answered, stopping after a refused MAIL, and before DATA
 * when no recipient was accepted. 0, or -1 when the connection failed
 * (why then says how) */
static int envelope_send(struct trip *t, struct remote *m, struct smtp_reply r[2],
			 struct smtp_reply **why)
{
	int last = t->n + 1, i;

	for (i = 0; m->pipelining && i <= last; i++)
		if (envelope_command(t, m, i) < 0)
			return -1;
	for (i = 0; i <= last; i++) {
		if (!m->pipelining && i == last && accepted_count(t) == 0)
			return 0;
		if (!m->pipelining && envelope_command(t, m, i) < 0)
			return -1;
		if (envelope_reply(t, m, i, r) < 0) {
			*why = i == 0 ? &r[0] : i <= t->n ? &t->got[i - 1] : &r[1];
			return -1;
		}
		if (!m->pipelining && i == 0 && r[0].code / 100 != 2)
			return 0;
	}
	return 0;
}

/*
 * send_envelope - MAIL, each RCPT, DATA. Each RCPT reply decides its
 * recipient (RFC 5321 3.3); a refused MAIL or DATA decides them all. The
 * number of recipients to send the data for (DATA got its 354), 0 when
 * there are none (each got its reply), or -1 when the connection failed
 * (each recipient not refused for good got a 451 of ours).
 */
static int send_envelope(struct trip *t, struct remote *m)
{
	struct smtp_reply r[2] = { { .code = 0 }, { .code = 0 } }, lost, *why = NULL;
	int accepted;

	for (int k = 0; k < t->n; k++)
		t->got[k].code = 0;
	if (envelope_send(t, m, r, &why) < 0) {
		if (!why)
			local_reply(why = &lost, 451, "4.4.2 %s: the connection was lost", m->host);
		all_get(t, why, 1);
		return -1;
	}
	if (r[0].code / 100 != 2) {
		all_get(t, &r[0], 0);
		return 0;
	}
	accepted = accepted_count(t);
	if (accepted == 0 && r[1].code == 354) {	/* a 354 with no recipient: send no data */
		if (conn_write(&m->conn, ".\r\n", 3) < 0 || reply_read(m, DOT_TIMEOUT, &r[1]) < 0)
			return -1;
		return 0;
	}
	if (r[1].code != 354)
		for (int k = 0; k < t->n; k++)
			if (t->got[k].code / 100 == 2)
				t->got[k] = r[1];
	return r[1].code == 354 ? accepted : 0;
}

/* send_data - the .msg bytes (already CRLF lines, dot-stuffed), then the
 * final ".\r\n"; the reply to it decides every accepted recipient. 0, or
 * -1 (r holds why) */
static int send_data(struct trip *t, struct remote *m, struct smtp_reply *r)
{
	char buf[IO_BUF_SIZE];
	off_t done = 0;
	ssize_t n;
	char last = '\n';

	m->conn.timeout_ms = BLOCK_TIMEOUT * 1000;
	while ((n = pread(t->msg_fd, buf, sizeof buf, done)) > 0) {
		if (conn_write(&m->conn, buf, (size_t)n) < 0)
			break;
		done += n;
		last = buf[n - 1];
	}
	if (n < 0) {
		local_reply(r, 451, "4.3.0 the queued message cannot be read: %s", strerror(errno));
		m->lost = 1;	/* the connection is closed without the dot */
		return -1;
	}
	/* SIGTERM waits from the final dot until the outcome is on disk
	 * (record): a stop between the remote's 250 and our record of it
	 * would send the message again. */
	hold_stop(1);
	if ((last != '\n' && conn_write(&m->conn, "\r\n", 2) < 0)
	    || conn_write(&m->conn, ".\r\n", 3) < 0) {
		local_reply(r, 451, "4.4.2 %s: the connection was lost", m->host);
		return -1;
	}
	return reply_read(m, DOT_TIMEOUT, r);
}

/* transaction - one mail transaction on an open session: the envelope,
 * the data, and each recipient's reply in t->got */
static void transaction(struct trip *t, struct remote *m)
{
	struct smtp_reply r;

	if (m->size_max && t->msg_size > m->size_max) {
		local_reply(&r, 552, "5.3.4 the message (%llu bytes) is larger than %s takes (%llu)",
			    t->msg_size, m->host, m->size_max);
		all_get(t, &r, 0);	/* RFC 1870 6: do not send it */
		return;
	}
	if (send_envelope(t, m) <= 0)
		return;
	(void)send_data(t, m, &r);
	for (int k = 0; k < t->n; k++)
		if (t->got[k].code / 100 == 2)
			t->got[k] = r;
}

/* remote_close - QUIT (its reply matters little), then close */
static void remote_close(struct remote *m)
{
	struct smtp_reply r;

	if (m->conn.fd < 0)
		return;
	if (!m->lost && command(m, "QUIT") == 0)
		(void)reply_read(m, QUIT_TIMEOUT, &r);
	close_fd(m->conn.fd, "connection");
	m->conn.fd = -1;
}

/* session_reset - the open session takes one more transaction: RSET (RFC
 * 5321 4.1.1.5) got its 250; 0, or -1 (the session is given up) */
static int session_reset(struct remote *m)
{
	struct smtp_reply r;

	if (m->lost || command(m, "RSET") < 0 || reply_read(m, MAIL_TIMEOUT, &r) < 0
	    || r.code != 250) {
		m->lost = 1;
		return -1;
	}
	return 0;
}

/*
 * connect_destination - a session with the first of the destination's
 * addresses that greets and takes EHLO or HELO, left open in m (QUIT comes
 * after the records). A connection failure, no 220, a 421 or a 4xx to
 * EHLO move on to the next (RFC 5321 5.1). Else r says why: OPEN_NEXT,
 * none answered; OPEN_LOOP, it is this host; OPEN_REFUSED, a 5xx to HELO.
 */
static enum opening connect_destination(struct remote *m, const char *domain,
					const struct target *tg, size_t n, struct smtp_reply *r)
{
	enum opening o = OPEN_NEXT;

	local_reply(r, 451, "4.4.3 %s: no address to try", domain);
	for (size_t i = 0; i < n && o == OPEN_NEXT; i++) {
		int fd = tcp_connect(&tg[i], r);

		m->host = tg[i].host;
		if (fd < 0)
			continue;
		if (conn_init(&m->conn, fd, MAIL_TIMEOUT) < 0) {
			local_reply(r, 451, "4.3.0 socket: %s", strerror(errno));
			close_fd(fd, "connection");
			continue;
		}
		m->lost = m->esmtp = m->size = m->eightbit = m->pipelining = 0;
		m->size_max = 0;
		if ((o = open_session(m, r)) != OPEN_OK)
			remote_close(m);
	}
	if (o == OPEN_LOOP)
		local_reply(r, 550, "5.4.6 %s: %s leads back to this host (%s): a mail loop",
			    domain, m->host, cfg.hostname);
	return o;
}

/* destination - where domain's mail goes (find_targets), and a session
 * there (connect_destination); not OPEN_OK: r says why (a DNS failure or
 * deferral: OPEN_REFUSED, no connection was tried) */
static enum opening destination(const char *domain, struct remote *m, struct smtp_reply *r)
{
	static struct target tg[TARGETS_MAX];
	char status[16], why[REPLY_TEXT_MAX];
	size_t n = 0;
	enum where w = find_targets(domain, tg, TARGETS_MAX, &n, status, sizeof status, why,
				    sizeof why);

	if (w == WHERE_OK)
		return connect_destination(m, domain, tg, n, r);
	local_reply(r, w == WHERE_FAIL ? 550 : 451, "%s %s", status, why);
	return OPEN_REFUSED;
}

/* backoff - the wait before the next try of a message that arrived at
 * arrived: its age, within -B's minimum and maximum (Postfix's rule: the
 * older the message, the rarer the tries) */
static long long backoff(long long arrived, long long now)
{
	long long age = now - arrived;

	return age < cfg.backoff_min ? cfg.backoff_min : age > cfg.backoff_max ? cfg.backoff_max
	       : age;
}

/* settle - rcpt r of job got reply g (from remote, "" for ours); tried:
 * it counts as an attempt (a deferral without one keeps the last reply
 * that was given, which says more). A 2xx delivers it, a 5xx fails it, a
 * 4xx defers it, or fails it with 4.4.7 once the message is older than
 * -E. 1 when it failed now, else 0. */
static int settle(const struct job *job, struct job_rcpt *r, const struct smtp_reply *g,
		  const char *remote, int tried, long long now)
{
	r->attempts += tried;
	if (tried)
		r->last_try = now;
	if (tried || !r->reply[0]) {
		(void)snprintf(r->remote, sizeof r->remote, "%s", g->local ? "" : remote);
		reply_clean(r->reply, sizeof r->reply, g->text);
	}
	r->next_try = 0;
	if (g->code / 100 == 2) {
		r->state = RS_DELIVERED;
		return 0;
	}
	if (g->code / 100 == 4 && now - job->arrived >= cfg.queue_lifetime) {
		struct smtp_reply expired;

		local_reply(&expired, 451, "4.4.7 not delivered in %d seconds, the queue's lifetime;"
			    " the last reply: %s", cfg.queue_lifetime, r->reply);
		reply_clean(r->reply, sizeof r->reply, expired.text);
		r->remote[0] = '\0';
		r->state = RS_FAILED;
		return 1;
	}
	r->state = g->code / 100 == 5 ? RS_FAILED : RS_DEFERRED;
	if (r->state == RS_DEFERRED)
		r->next_try = now + backoff(job->arrived, now);
	return r->state == RS_FAILED;
}

/* log_outcome - one line per recipient and attempt */
static void log_outcome(const struct job *job, const struct job_rcpt *r, int tried)
{
	if (tried)
		log_msg("relay: %s <%s>: %s%s%s, attempt %d: %s", job->id, r->address,
			rcpt_state_names[r->state], r->remote[0] ? " by " : "", r->remote,
			r->attempts, r->reply);
	else
		log_msg("relay: %s <%s>: %s without a try (its destination did not answer a"
			" moment ago); last reply: %s", job->id, r->address,
			rcpt_state_names[r->state], r->reply);
}

/* report_failed - the report of the recipients failed now; 0, or -1 when
 * it could not be stored: they are then put back as they were, to be
 * tried again after the backoff (a failure is never dropped unreported) */
static int report_failed(struct job *job, const int *failed, int nfailed,
			 const struct job_rcpt *before, long long now)
{
	if (nfailed == 0 || report_deliver(job, failed, nfailed, REPORT_FAILED, cfg.hostname) == 0)
		return 0;
	log_msg("relay: %s: the failure report cannot be stored: tried again later", job->id);
	for (int i = 0; i < nfailed; i++) {
		struct job_rcpt *r = &job->rcpt[failed[i]];

		*r = before[i];
		r->next_try = now + backoff(job->arrived, now);
	}
	return -1;
}

/* notice_delay - RFC 3464's "delayed" report, once, when the message has
 * waited -W seconds and recipients still wait */
static void notice_delay(struct job *job, long long now)
{
	int which[QUEUE_RCPTS_MAX], n = 0;

	if (job->notice || now - job->arrived < cfg.notice_after)
		return;
	for (int i = 0; i < job->nrcpt; i++)
		if (rcpt_waiting(&job->rcpt[i]))
			which[n++] = i;
	if (n > 0 && report_deliver(job, which, n, REPORT_DELAYED, cfg.hostname) == 0) {
		job->notice = 1;
		log_msg("relay: %s: delay notice written", job->id);
	}
}

/* job_done - every recipient is final: remove the job (job_unlink) */
static int job_done(const struct job *job)
{
	for (int i = 0; i < job->nrcpt; i++)
		if (rcpt_waiting(&job->rcpt[i]))
			return 0;
	if (job_unlink(job->id) < 0) {
		log_msg("relay: %s: cannot remove the finished job: %s", job->id, strerror(errno));
		return -1;
	}
	log_msg("relay: %s: done, removed from the queue", job->id);
	return 1;
}

/* apply_outcomes - the trip's replies into job (loaded afresh under the
 * lock); the recipients that failed now into failed[], their states
 * before into before[]; how many */
static int apply_outcomes(const struct trip *t, struct job *job, int tried, int *failed,
			  struct job_rcpt *before, long long now)
{
	int nfailed = 0;

	for (int k = 0; k < t->n; k++) {
		int i = t->which[k];
		struct job_rcpt *r = &job->rcpt[i];
		struct job_rcpt old = *r;

		if (i >= job->nrcpt || strcmp(r->address, t->job.rcpt[i].address) != 0
		    || !rcpt_waiting(r))
			continue;	/* -x and a new message of the same id, or decided meanwhile */
		if (settle(job, r, &t->got[k], t->remote, tried, now)) {
			before[nfailed] = old;
			failed[nfailed++] = i;
		}
		log_outcome(job, r, tried);
	}
	return nfailed;
}

/* record - the outcome of the trip on disk, under the job lock: each
 * recipient's state, the report of those failed now, the delay notice;
 * the job removed when every recipient is final */
static void record(const struct trip *t, int tried)
{
	static struct job job;
	static struct job_rcpt before[QUEUE_RCPTS_MAX];
	int failed[QUEUE_RCPTS_MAX], nfailed, lock = job_lock(t->job.id, 1);
	long long now = (long long)time(NULL);

	if (lock < 0 || job_load(t->job.id, &job) < 0) {
		log_msg("relay: %s: the job is gone or busy: its outcome is not recorded", t->job.id);
		if (lock >= 0)
			close_fd(lock, "job lock");
		return;
	}
	hold_stop(1);	/* a report stored and its job not saved would come again */
	nfailed = apply_outcomes(t, &job, tried, failed, before, now);
	(void)report_failed(&job, failed, nfailed, before, now);
	notice_delay(&job, now);
	if (job_done(&job) == 0 && job_save(&job) < 0)
		log_msg("relay: %s: the outcome is not saved: the recipients are tried again",
			job.id);
	hold_stop(0);
	close_fd(lock, "job lock");
}

/* trip_open - the trip of job id to domain: the recipients there that
 * wait (and are due, unless flush), and the message's data; 0, or -1 when
 * there is nothing to do */
static int trip_open(struct trip *t, const char *id, const char *domain, int flush)
{
	char path[PATH_TEXT_MAX], buf[IO_BUF_SIZE];
	long long now = (long long)time(NULL);
	int lock = job_lock(id, 1), loaded;
	struct stat st;
	ssize_t got;

	loaded = lock >= 0 && job_load(id, &t->job) == 0;
	if (lock >= 0)
		close_fd(lock, "job lock");
	if (!loaded)
		return -1;
	t->domain = domain;
	t->n = 0;
	for (int i = 0; i < t->job.nrcpt; i++) {
		const struct job_rcpt *r = &t->job.rcpt[i];

		if (rcpt_waiting(r) && (flush || r->next_try <= now)
		    && strcasecmp(rcpt_domain(r), domain) == 0)
			t->which[t->n++] = i;
	}
	if (t->n == 0 || job_path(path, sizeof path, id, ".msg") < 0
	    || (t->msg_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return -1;
	if (fstat(t->msg_fd, &st) < 0) {
		close_fd(t->msg_fd, "message");
		return -1;
	}
	t->msg_size = (unsigned long long)st.st_size;
	t->eightbit = 0;
	for (off_t off = 0; !t->eightbit && (got = pread(t->msg_fd, buf, sizeof buf, off)) > 0;
	     off += got)
		for (ssize_t i = 0; i < got && !t->eightbit; i++)
			t->eightbit = (unsigned char)buf[i] > 127;
	if (got < 0) {	/* the job waits for the next scan, untouched */
		log_msg("relay: %s: the queued message cannot be read: %s", id, strerror(errno));
		close_fd(t->msg_fd, "message");
		return -1;
	}
	return 0;
}

static int claim(const char *id, const char *domain);	/* relay: the runner */

/*
 * deliver_order - in a delivery process: each job of the order, its
 * recipients at the order's domain, one job after the other on one
 * session (a cache of one connection, as Postfix keeps). Each outcome is
 * recorded before the next job and before QUIT. A job another process
 * claims, or with nothing due, is skipped; when the session is lost, the
 * jobs not reached yet wait for the next scan. The exit status:
 * DELIVERY_DOWN when no address answered, else DELIVERY_DONE.
 */
static int deliver_order(const struct order *o)
{
	static struct trip t;
	struct remote m = { .conn = { .fd = -1 } };
	enum opening state = OPEN_NEXT;
	struct smtp_reply why;
	int asked = 0;

	if (o->down)
		local_reply(&why, 451, "4.4.1 %s did not answer a moment ago: not tried now",
			    o->domain);
	for (int k = 0; k < o->n; k++) {
		if (claim(o->ids[k], o->domain) < 0
		    || trip_open(&t, o->ids[k], o->domain, o->flush[k]) < 0)
			continue;
		if (!o->down && !asked++)
			state = destination(o->domain, &m, &why);
		else if (!o->down && state == OPEN_OK && session_reset(&m) < 0) {
			close_fd(t.msg_fd, "message");
			break;
		}
		(void)snprintf(t.remote, sizeof t.remote, "%.*s", (int)DOMAIN_MAX,
			       m.host ? m.host : "");
		if (!o->down && state == OPEN_OK)
			transaction(&t, &m);
		else
			all_get(&t, &why, 0);
		record(&t, !o->down);
		hold_stop(0);
		close_fd(t.msg_fd, "message");
		if ((!o->down && state == OPEN_NEXT) || (state == OPEN_OK && m.lost))
			break;
	}
	remote_close(&m);
	return !o->down && asked && state == OPEN_NEXT ? DELIVERY_DOWN : DELIVERY_DONE;
}

/* ---------------------------------------------------------------- relay: the runner */

/* The runner is one process per spool: it picks due jobs, starts delivery
 * processes within the limits, and retries with a growing backoff. */

enum {
	DUE_MAX = 4096,		/* (job, domain) pairs one scan lines up; the rest wait */
	OWED_MAX = 64,		/* jobs a flush found busy, flushed when free */
	KNOWN_SLOTS = 2 * DEFAULT_QUEUE_MAX,	/* the ids read since the last full scan */
	DOWN_MAX = 64,		/* destinations remembered as down */
	DELIVERY_GRACE_SECONDS = 5,	/* a stopping runner's wait for its deliveries */
	RESTART_SECONDS = 10,	/* the listening parent restarts the runner this often at most */
	SCAN_MAX_SECONDS = 60,	/* the runner scans the queue at least once a minute */
	ORPHAN_SECONDS = 3600,	/* a file a crash left must be this old to go (a session
				   may be queueing it right now) */
	SWEEP_SECONDS = 600	/* the runner looks for such files this often */
};

/* A delivery process of the runner's. */
struct delivery {
	pid_t pid;
	char ids[BATCH_MAX][ID_MAX];	/* the jobs of its order */
	int nids;
	char domain[DOMAIN_MAX + 1];
	int connecting;		/* it may connect (not a deferral of a down destination) */
};

/* A job's recipients at one domain, due now, found by a scan. */
struct due {
	char id[ID_MAX];
	char domain[DOMAIN_MAX + 1];
	long long due;		/* the earliest next try among them */
	int flush;		/* found by a flush: tried whatever their next try */
	int started;
};

/* A destination that did not answer, left alone until a time. */
struct down {
	char domain[DOMAIN_MAX + 1];
	long long until;	/* unix seconds; 0: a free entry */
};

/* The runner's state. */
struct runner {
	struct delivery procs[RELAY_PROCS_MAX];
	int nprocs;
	struct due *due;	/* DUE_MAX entries */
	int ndue;
	struct down down[DOWN_MAX];
	char owed[OWED_MAX][ID_MAX];	/* jobs a flush could not lock; "": free */
	long long next_scan;	/* unix seconds */
	long long last_scan_ms;
	int rescan;		/* a delivery ended: scan again soon */
	long long next_sweep;	/* unix seconds: queue_sweep's next turn */
};

/* The runner's signals (SIGTERM, SIGINT in the foreground, SIGUSR1 flush,
 * SIGUSR2 scan, SIGCHLD), noted by runner_signal for the loop. */
static volatile sig_atomic_t runner_stop, runner_flush, runner_scan, runner_reap;

/* <spool>/.queue/.runner, open in the runner and its deliveries: the
 * runner's write lock on its byte 0 says that it runs, and each delivery
 * claims its (job, domain) with a lock on another byte (claim). */
static int runner_fd = -1;

/* runner_signal - note the signal; the loop does the work */
static void runner_signal(int sig)
{
	if (sig == SIGCHLD)
		runner_reap = 1;
	else if (sig == SIGUSR1)
		runner_flush = 1;
	else if (sig == SIGUSR2)
		runner_scan = 1;
	else
		runner_stop = 1;
}

/* runner_path - "<spool>/.queue/.runner"; 0, or -1 */
static int runner_path(char *path, size_t size)
{
	return job_path(path, size, ".runner", "");
}

/* Where an FNV-1a hash starts; fnv1a carries it on. */
static const uint32_t FNV_OFFSET = 2166136261u;

/* fnv1a - the FNV-1a hash h carried on over text, folded to lower case
 * when fold is set (a domain matches in any case, RFC 5321 2.4): the
 * runner's hash of ids and domains */
static uint32_t fnv1a(uint32_t h, const char *text, int fold)
{
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		h = (h ^ (uint32_t)(fold ? tolower(*p) : *p)) * 16777619u;
	return h;
}

/*
 * claim - in a delivery process: take the lock that says "this job's mail
 * to domain is being delivered" (a byte of .runner named by a hash of the
 * two), so that no second delivery of it starts, even from a runner started
 * after this one's died. 0, or -1 when another process has it.
 */
static int claim(const char *id, const char *domain)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1 };
	uint32_t h = fnv1a(fnv1a(fnv1a(FNV_OFFSET, id, 0), "@", 0), domain, 1);

	fl.l_start = 1 + (off_t)(h & 0x3fffffff);
	return runner_fd < 0 || fcntl(runner_fd, F_SETLK, &fl) == 0 ? 0 : -1;
}

/* runner_lock - open .runner and take the runner's lock, write our pid
 * into it; 0, or -1 after saying why (another runner: its pid) */
static int runner_lock(void)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1 };
	char path[PATH_TEXT_MAX], dir[PATH_TEXT_MAX], pid[32];
	int n;

	if (queue_dir(dir, sizeof dir) < 0 || runner_path(path, sizeof path) < 0
	    || (runner_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		fprintf(stderr, "%s: the queue runner's lock file: %s\n", progname, strerror(errno));
		return -1;
	}
	if (fcntl(runner_fd, F_SETLK, &fl) < 0) {
		if ((errno == EAGAIN || errno == EACCES) && fcntl(runner_fd, F_GETLK, &fl) == 0)
			fprintf(stderr, "%s: a queue runner is already running (pid %ld)\n",
				progname, (long)fl.l_pid);
		else
			fprintf(stderr, "%s: %s: %s\n", progname, path, strerror(errno));
		close_fd(runner_fd, "runner lock");
		runner_fd = -1;
		return -1;
	}
	n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(runner_fd, 0) < 0 || pwrite(runner_fd, pid, (size_t)n, 0) != n)
		log_msg("queue runner: %s: %s", path, strerror(errno));
	return 0;
}

/* runner_signals - catch the runner's signals, blocked except while it
 * waits; *wait_mask: the mask to wait with. In the foreground (-q) SIGINT
 * stops it; started by the listening parent it ignores SIGINT, as the
 * sessions do (the parent stops it). */
static int runner_signals(int foreground, sigset_t *wait_mask)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGCHLD };
	struct sigaction sa = { .sa_handler = runner_signal };
	sigset_t block;

	if (sigemptyset(&sa.sa_mask) < 0 || sigemptyset(&block) < 0)
		return -1;
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		if (sigaddset(&block, sigs[i]) < 0)
			return -1;
	if (sigprocmask(SIG_BLOCK, &block, wait_mask) < 0)
		return -1;
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		if (sigs[i] == SIGINT && !foreground) {
			if (signal(SIGINT, SIG_IGN) == SIG_ERR)
				return -1;
		} else if (sigaction(sigs[i], &sa, NULL) < 0) {
			return -1;
		}
		if (sigdelset(wait_mask, sigs[i]) < 0)
			return -1;
	}
	return 0;
}

/* down_until - until when domain is down; 0 when it is not */
static long long down_until(const struct runner *rn, const char *domain, long long now)
{
	for (int i = 0; i < DOWN_MAX; i++)
		if (rn->down[i].until > now && strcasecmp(rn->down[i].domain, domain) == 0)
			return rn->down[i].until;
	return 0;
}

/* down_mark - domain did not answer: leave it alone for -B's minimum (a
 * free entry, else the one that ends first, is reused) */
static void down_mark(struct runner *rn, const char *domain, long long now)
{
	struct down *slot = &rn->down[0];

	for (int i = 0; i < DOWN_MAX; i++) {
		if (rn->down[i].until > now && strcasecmp(rn->down[i].domain, domain) == 0) {
			slot = &rn->down[i];
			break;
		}
		if (rn->down[i].until < slot->until)
			slot = &rn->down[i];
	}
	(void)snprintf(slot->domain, sizeof slot->domain, "%s", domain);
	slot->until = now + cfg.backoff_min;
	log_msg("queue runner: %s did not answer: left alone for %d s", domain, cfg.backoff_min);
}

/* delivering - the deliveries to domain under way: all, and connecting */
static int delivering(const struct runner *rn, const char *id, const char *domain,
		      int *connecting)
{
	int same = 0;

	*connecting = 0;
	for (int i = 0; i < rn->nprocs; i++) {
		if (strcasecmp(rn->procs[i].domain, domain) != 0)
			continue;
		*connecting += rn->procs[i].connecting;
		for (int k = 0; id && k < rn->procs[i].nids; k++)
			same += strcmp(rn->procs[i].ids[k], id) == 0;
	}
	return same;
}

/* owed - whether a flush still owes job id a try; with set 1 note that it
 * does (a job busy when the flush came), with set 0 that it no longer does */
static int owed(struct runner *rn, const char *id, int set)
{
	char (*free_slot)[ID_MAX] = NULL;

	for (int i = 0; i < OWED_MAX; i++) {
		if (strcmp(rn->owed[i], id) == 0) {
			if (set == 0)
				rn->owed[i][0] = '\0';
			return 1;
		}
		if (!rn->owed[i][0] && !free_slot)
			free_slot = &rn->owed[i];
	}
	if (set == 1 && free_slot)
		(void)snprintf(*free_slot, ID_MAX, "%s", id);
	return 0;
}

/* lined_up - whether the first kept entries of the due list hold job id's
 * domain already */
static int lined_up(const struct runner *rn, int kept, const char *id, const char *domain)
{
	for (int i = 0; i < kept; i++)
		if (strcmp(rn->due[i].id, id) == 0 && strcasecmp(rn->due[i].domain, domain) == 0)
			return 1;
	return 0;
}

/* due_add - line up job's recipients at the domain of rcpt[first], the
 * first of them still waiting. They go into the due list when the
 * earliest next try among them has come (or on a flush), unless the first
 * kept entries hold them already; else that next try may move *earliest,
 * the time of the next scan, up. */
static void due_add(struct runner *rn, int kept, const struct job *job, int first, int flush,
		    long long now, long long *earliest)
{
	const char *domain = rcpt_domain(&job->rcpt[first]);
	long long due = -1;
	struct due *d;

	for (int i = first; i < job->nrcpt; i++) {
		const struct job_rcpt *r = &job->rcpt[i];

		if (rcpt_waiting(r) && strcasecmp(rcpt_domain(r), domain) == 0
		    && (due < 0 || r->next_try < due))
			due = r->next_try;
	}
	if (!flush && due > now) {
		if (due < *earliest)
			*earliest = due;
		return;
	}
	if (lined_up(rn, kept, job->id, domain))
		return;
	if (rn->ndue == DUE_MAX || strlen(domain) > DOMAIN_MAX) {
		rn->rescan = 1;	/* more than a scan can line up: the rest after these */
		return;
	}
	d = &rn->due[rn->ndue++];
	memset(d, 0, sizeof *d);
	(void)snprintf(d->id, sizeof d->id, "%s", job->id);
	(void)snprintf(d->domain, sizeof d->domain, "%s", domain);
	d->due = due;
	d->flush = flush;
}

/* first_of_domain - 1 if rcpt[i] is waiting and the first waiting one of
 * its domain (each domain of a job is lined up once) */
static int first_of_domain(const struct job *job, int i)
{
	const char *domain = rcpt_domain(&job->rcpt[i]);

	if (!rcpt_waiting(&job->rcpt[i]))
		return 0;
	for (int j = 0; j < i; j++)
		if (rcpt_waiting(&job->rcpt[j]) && strcasecmp(rcpt_domain(&job->rcpt[j]), domain) == 0)
			return 0;
	return 1;
}

/* by_due - qsort: the longest waiting first */
static int by_due(const void *a, const void *b)
{
	const struct due *x = a, *y = b;

	return x->due < y->due ? -1 : x->due > y->due;
}

/* known - whether a scan read job id since the last full one (add: note
 * that it did); reset: forget every id. A session's wake-up reads only the
 * jobs not known: new mail, not the whole queue each time. */
static int known(const char *id, int add, int reset)
{
	static char ids[KNOWN_SLOTS][ID_MAX];
	uint32_t h;
	size_t i;

	if (reset) {
		memset(ids, 0, sizeof ids);
		return 0;
	}
	h = fnv1a(FNV_OFFSET, id, 0);
	for (size_t probe = 0; probe < KNOWN_SLOTS; probe++) {
		i = (h + probe) % KNOWN_SLOTS;
		if (strcmp(ids[i], id) == 0)
			return 1;
		if (!ids[i][0]) {
			if (add)
				(void)snprintf(ids[i], ID_MAX, "%s", id);
			return 0;
		}
	}
	return 0;	/* full: cannot be, queue_names gives half as many */
}

/* job_file_age - seconds since <id><suffix> last changed (0 for a time
 * in the future); -1 when there is no such file */
static long long job_file_age(const char *id, const char *suffix, long long now)
{
	char path[PATH_TEXT_MAX];
	struct stat st;

	if (job_path(path, sizeof path, id, suffix) < 0 || lstat(path, &st) < 0) {
		if (errno != ENOENT)
			log_msg("queue: %s%s: %s", id, suffix, strerror(errno));
		return -1;
	}
	return now > (long long)st.st_mtime ? now - (long long)st.st_mtime : 0;
}

/*
 * sweep_leftover - remove <id><suffix> if a crash left it: a .msg without
 * its .env (the intake died between the two files, or a removal between
 * its unlinks), or a .env.tmp (job_save cut short). Such a .msg is never
 * sent and would count against -Z for ever. Only files ORPHAN_SECONDS old
 * are taken, and only under the job lock: a session holds that lock from
 * the moment it makes the .msg until its reply, a delivery while it
 * records, and the age covers the instant between open and lock.
 */
static void sweep_leftover(const char *id, const char *suffix, long long now)
{
	int envelope = strcmp(suffix, ".env.tmp") == 0, lock;
	long long age = job_file_age(id, suffix, now);

	if (age < ORPHAN_SECONDS || (!envelope && job_file_age(id, ".env", now) >= 0))
		return;
	lock = job_lock(id, 0);
	if (lock < 0 && (!envelope || job_file_age(id, ".msg", now) >= 0))
		return;	/* someone is working on it */
	if (envelope || job_file_age(id, ".env", now) < 0) {	/* its .env did not come meanwhile */
		char path[PATH_TEXT_MAX];

		if (envelope ? job_path(path, sizeof path, id, suffix) < 0 || unlink(path) < 0
			     : job_unlink(id) < 0)
			log_msg("queue: %s%s: cannot remove it: %s", id, suffix, strerror(errno));
		else
			log_msg("queue: %s%s: left by a crash %lld seconds ago: removed", id,
				suffix, age);
	}
	if (lock >= 0)
		close_fd(lock, "job lock");
}

/* queue_sweep - remove what crashes left in the queue (sweep_leftover):
 * the runner does it when it starts, on a flush and every SWEEP_SECONDS */
static void queue_sweep(struct runner *rn)
{
	static const char *const suffixes[] = { ".msg", ".env.tmp" };
	static char ids[DEFAULT_QUEUE_MAX][ID_MAX];
	long long now = (long long)time(NULL);

	rn->next_sweep = now + SWEEP_SECONDS;
	for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
		int n = queue_names(suffixes[k], ids, DEFAULT_QUEUE_MAX);

		for (int i = 0; i < n; i++)
			sweep_leftover(ids[i], suffixes[k], now);
	}
}

/*
 * scan_queue - read the queue and line up, per domain, the recipients due
 * now. A job that someone else has locked is passed over: a session may
 * still be deciding its reply, or a delivery recording its outcome. The
 * next scan is set for when the next recipient falls due, but within -B's
 * minimum and a minute, and at least a second away. What a flush lined up
 * and could not start yet stays lined up, and a job that was busy when the
 * flush came is flushed when a scan finds it free. With fresh set (a
 * session's wake-up) only the jobs not known are read, and what is lined
 * up stays.
 */
static void scan_queue(struct runner *rn, int flush, int fresh)
{
	static char ids[DEFAULT_QUEUE_MAX][ID_MAX];
	static struct job job;
	long long now = (long long)time(NULL);
	long long wait = cfg.backoff_min < SCAN_MAX_SECONDS ? cfg.backoff_min : SCAN_MAX_SECONDS;
	long long earliest = now + wait;
	int n = queue_names(".env", ids, DEFAULT_QUEUE_MAX), kept = fresh ? rn->ndue : 0;

	for (int i = 0; !fresh && i < rn->ndue; i++)
		if (rn->due[i].flush)
			rn->due[kept++] = rn->due[i];
	rn->ndue = kept;
	if (!fresh) {
		(void)known(NULL, 0, 1);
		rn->rescan = 0;
		rn->last_scan_ms = now_ms();
	}
	for (int k = 0; k < n; k++) {
		int lock, loaded, flushed = flush || owed(rn, ids[k], -1);

		if (fresh && known(ids[k], 0, 0))
			continue;
		if ((lock = job_lock(ids[k], 0)) < 0) {
			if (flushed) {
				(void)owed(rn, ids[k], 1);
				rn->rescan = 1;
			}
			continue;
		}
		loaded = job_load(ids[k], &job) == 0;
		close_fd(lock, "job lock");
		(void)owed(rn, ids[k], 0);
		(void)known(ids[k], 1, 0);
		for (int i = 0; loaded && i < job.nrcpt; i++)
			if (first_of_domain(&job, i))
				due_add(rn, kept, &job, i, flushed, now, &earliest);
	}
	qsort(rn->due, (size_t)rn->ndue, sizeof rn->due[0], by_due);
	if (earliest <= now)
		earliest = now + 1;
	if (!fresh || earliest < rn->next_scan)
		rn->next_scan = earliest;
}

/* delivery_child - in a new delivery process: the runner's signals back
 * to their defaults (SIGUSR1 and SIGUSR2 ignored: they are the runner's),
 * then the order; exits with its status */
static void delivery_child(const struct order *o, const sigset_t *mask)
{
	static const int defaults[] = { SIGTERM, SIGCHLD };
	static const int ignored[] = { SIGINT, SIGUSR1, SIGUSR2 };

	for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
		if (signal(defaults[i], SIG_DFL) == SIG_ERR)
			log_msg("delivery signals: %s", strerror(errno));
	for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
		if (signal(ignored[i], SIG_IGN) == SIG_ERR)
			log_msg("delivery signals: %s", strerror(errno));
	if (sigprocmask(SIG_SETMASK, mask, NULL) < 0)
		log_msg("delivery signals: %s", strerror(errno));
	exit(deliver_order(o));
}

/* order_fill - the order that starts at due[first]: it and the next due
 * entries of its domain not under way, BATCH_MAX at most, marked started */
static void order_fill(struct runner *rn, int first, int down, struct order *o)
{
	int connecting;

	memset(o, 0, sizeof *o);
	(void)snprintf(o->domain, sizeof o->domain, "%s", rn->due[first].domain);
	o->down = down;
	for (int i = first; i < rn->ndue && o->n < BATCH_MAX; i++) {
		struct due *d = &rn->due[i];

		if (d->started || strcasecmp(d->domain, o->domain) != 0
		    || (i > first && delivering(rn, d->id, d->domain, &connecting)))
			continue;
		(void)snprintf(o->ids[o->n], ID_MAX, "%s", d->id);
		o->flush[o->n++] = d->flush;
		d->started = 1;
	}
}

/* start_delivery - a delivery process for the order that starts at
 * due[first]; 0, or -1 (logged; its entries wait again) */
static int start_delivery(struct runner *rn, int first, int down, const sigset_t *mask)
{
	static struct order o;
	struct delivery *p = &rn->procs[rn->nprocs];
	pid_t pid;

	order_fill(rn, first, down, &o);
	if ((pid = fork()) == 0)
		delivery_child(&o, mask);
	if (pid < 0) {
		log_msg("queue runner: fork: %s", strerror(errno));
		for (int i = first; i < rn->ndue; i++)
			for (int k = 0; k < o.n; k++)
				if (strcmp(rn->due[i].id, o.ids[k]) == 0
				    && strcasecmp(rn->due[i].domain, o.domain) == 0)
					rn->due[i].started = 0;
		return -1;
	}
	p->pid = pid;
	memcpy(p->ids, o.ids, sizeof p->ids);
	p->nids = o.n;
	(void)snprintf(p->domain, sizeof p->domain, "%s", o.domain);
	p->connecting = !down;
	rn->nprocs++;
	return 0;
}

/*
 * start_due - start deliveries from the due list, longest waiting first,
 * within RELAY_PROCS_MAX at once and RELAY_PER_DEST connecting to one
 * domain; a domain that is down gets its recipients deferred without a
 * connection (no retry storm). What cannot start now, or is being
 * delivered already (a flush during a delivery), waits for a delivery to
 * end.
 */
static void start_due(struct runner *rn, const sigset_t *mask)
{
	long long now = (long long)time(NULL);
	int kept = 0;

	for (int i = 0; i < rn->ndue; i++) {
		struct due *d = &rn->due[i];
		int connecting, down = down_until(rn, d->domain, now) > 0;

		if (!d->started && rn->nprocs < RELAY_PROCS_MAX
		    && !delivering(rn, d->id, d->domain, &connecting)
		    && (down || connecting < RELAY_PER_DEST))
			(void)start_delivery(rn, i, down, mask);
	}
	for (int i = 0; i < rn->ndue; i++) {
		struct due *d = &rn->due[i];

		if (!d->started)	/* when a delivery of it is under way: after that one */
			rn->due[kept++] = *d;
	}
	rn->ndue = kept;
}

/* reap_deliveries - collect the deliveries that ended. A delivery that
 * found no address of its destination answering marks that destination
 * down, so that its other jobs are deferred without a connection. */
static void reap_deliveries(struct runner *rn)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		for (int i = 0; i < rn->nprocs; i++) {
			if (rn->procs[i].pid != pid)
				continue;
			if (WIFEXITED(status) && WEXITSTATUS(status) == DELIVERY_DOWN)
				down_mark(rn, rn->procs[i].domain, (long long)time(NULL));
			else if (WIFSIGNALED(status))
				log_msg("queue runner: delivery %ld of %s killed by signal %d",
					(long)pid, rn->procs[i].ids[0], WTERMSIG(status));
			rn->procs[i] = rn->procs[--rn->nprocs];
			rn->rescan = 1;
			break;
		}
}

/* stop_deliveries - SIGTERM to every delivery (one between the final dot
 * and its record finishes that first), then SIGKILL after the grace time */
static void stop_deliveries(struct runner *rn)
{
	long long end = now_ms() + DELIVERY_GRACE_SECONDS * 1000LL;

	for (int i = 0; i < rn->nprocs; i++)
		if (kill(rn->procs[i].pid, SIGTERM) < 0)
			log_msg("kill %ld: %s", (long)rn->procs[i].pid, strerror(errno));
	while (rn->nprocs > 0 && now_ms() < end) {
		struct timespec tick = { 0, 20 * 1000 * 1000 };

		nanosleep(&tick, NULL);
		reap_deliveries(rn);
	}
	for (int i = 0; i < rn->nprocs; i++) {
		log_msg("queue runner: delivery %ld of %s killed", (long)rn->procs[i].pid,
			rn->procs[i].ids[0]);
		if (kill(rn->procs[i].pid, SIGKILL) < 0 || waitpid(rn->procs[i].pid, NULL, 0) < 0)
			log_msg("delivery %ld: %s", (long)rn->procs[i].pid, strerror(errno));
	}
	rn->nprocs = 0;
}

/* runner_wait - sleep until a signal or the next scan (a second at most
 * when a delivery ended and the queue should be read again) */
static void runner_wait(const struct runner *rn, const sigset_t *wait_mask)
{
	long long now = (long long)time(NULL);
	long long left = rn->next_scan - now;
	struct timespec ts;

	if (rn->rescan && left > 1)
		left = 1;
	ts.tv_sec = (time_t)(left > 0 ? left : 0);
	ts.tv_nsec = left > 0 ? 0 : 50 * 1000 * 1000;
	if (!runner_stop && !runner_flush && !runner_scan && !runner_reap
	    && pselect(0, NULL, NULL, NULL, &ts, wait_mask) < 0 && errno != EINTR)
		log_msg("queue runner: pselect: %s", strerror(errno));
}

/* runner_step - one turn of the loop: collect, scan when it is time, start */
static void runner_step(struct runner *rn, const sigset_t *mask)
{
	int flush = runner_flush;

	if (runner_reap) {
		runner_reap = 0;
		reap_deliveries(rn);
	}
	if (flush) {
		runner_flush = 0;
		memset(rn->down, 0, sizeof rn->down);	/* a flush tries every destination */
		log_msg("queue runner: flush");
	}
	if (flush || (long long)time(NULL) >= rn->next_sweep)
		queue_sweep(rn);
	if (flush || (long long)time(NULL) >= rn->next_scan
	    || (rn->rescan && now_ms() - rn->last_scan_ms >= 1000)) {
		runner_scan = 0;
		scan_queue(rn, flush, 0);
	} else if (runner_scan) {	/* a session queued mail: read what is new */
		runner_scan = 0;
		scan_queue(rn, 0, 1);
	}
	start_due(rn, mask);
}

/*
 * run_queue - the queue runner, until SIGTERM (or SIGINT in the
 * foreground: -q): one per spool (.runner's lock). Exit status 0, or 1
 * when another runner runs or it cannot start.
 */
static int run_queue(int foreground)
{
	static struct due due[DUE_MAX];
	static struct runner rn;
	sigset_t mask, wait_mask;

	rn.due = due;
	if (runner_lock() < 0)
		return 1;
	if (runner_signals(foreground, &wait_mask) < 0) {
		log_msg("queue runner: signals: %s", strerror(errno));
		return 1;
	}
	mask = wait_mask;
	log_msg("queue runner started (pid %ld) on %s", (long)getpid(), cfg.spool);
	runner_scan = 1;
	while (!runner_stop) {
		runner_step(&rn, &mask);
		runner_wait(&rn, &wait_mask);
	}
	stop_deliveries(&rn);
	if (ftruncate(runner_fd, 0) < 0)	/* no stale pid for the sessions to wake */
		log_msg("queue runner: .runner: %s", strerror(errno));
	close_fd(runner_fd, "runner lock");
	log_msg("queue runner stopped");
	return 0;
}

/*
 * runner_holder - the pid of the running runner: the owner of the lock on
 * byte 0 of .runner (F_GETLK), not the pid written in the file, which a
 * runner that died leaves behind and another process may have by now;
 * and not a delivery's claim on another byte. 0 when none runs, -1 when
 * .runner cannot be read (logged).
 */
static pid_t runner_holder(void)
{
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_len = 1 };
	char path[PATH_TEXT_MAX];
	int fd;

	if (runner_path(path, sizeof path) < 0)
		return -1;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
		if (errno == ENOENT)
			return 0;
		log_msg("queue: %s: %s", path, strerror(errno));
		return -1;
	}
	if (fcntl(fd, F_GETLK, &fl) < 0) {
		log_msg("queue: %s: %s", path, strerror(errno));
		fl.l_type = F_UNLCK;
	}
	close_fd(fd, "runner lock");
	return fl.l_type == F_WRLCK && fl.l_pid > 0 ? fl.l_pid : 0;
}

/* queue_flush - -F: tell the running runner to flush (SIGUSR1); 0, or 1
 * when none runs */
static int queue_flush(void)
{
	pid_t pid = runner_holder();

	if (pid > 0 && kill(pid, SIGUSR1) < 0) {
		fprintf(stderr, "%s: queue runner %ld: %s\n", progname, (long)pid, strerror(errno));
		return 1;
	}
	if (pid > 0) {
		printf("queue runner %ld: flushing the queue\n", (long)pid);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	fprintf(stderr, "%s: no queue runner is running on %s\n", progname, cfg.spool);
	return 1;
}

/* keeper_signals - set up the keeper's signals. SIGTERM and SIGCHLD are
 * noted as the runner's are, and blocked except while it waits with
 * *wait_mask; SIGINT, SIGUSR1 and SIGUSR2 are ignored (they are meant for
 * the sessions' parent or the runner). *orig gets the mask before, which
 * the runner starts with. */
static int keeper_signals(sigset_t *wait_mask, sigset_t *orig)
{
	struct sigaction sa = { .sa_handler = runner_signal };
	sigset_t block;

	if (sigemptyset(&sa.sa_mask) < 0 || sigemptyset(&block) < 0
	    || sigaddset(&block, SIGTERM) < 0 || sigaddset(&block, SIGCHLD) < 0
	    || sigprocmask(SIG_BLOCK, &block, orig) < 0)
		return -1;
	*wait_mask = *orig;
	if (sigdelset(wait_mask, SIGTERM) < 0 || sigdelset(wait_mask, SIGCHLD) < 0
	    || sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGCHLD, &sa, NULL) < 0
	    || signal(SIGINT, SIG_IGN) == SIG_ERR || signal(SIGUSR1, SIG_IGN) == SIG_ERR
	    || signal(SIGUSR2, SIG_IGN) == SIG_ERR)
		return -1;
	return 0;
}

/* keeper_fork - the runner, in a new process; its pid, or -1 */
static pid_t keeper_fork(const sigset_t *old_mask)
{
	pid_t pid = fork();

	if (pid == 0) {
		if (signal(SIGTERM, SIG_DFL) == SIG_ERR || signal(SIGCHLD, SIG_DFL) == SIG_ERR
		    || sigprocmask(SIG_SETMASK, old_mask, NULL) < 0)
			exit(1);
		exit(run_queue(0));
	}
	if (pid < 0)
		log_msg("queue runner: fork: %s", strerror(errno));
	return pid;
}

/*
 * keeper - the process the listening parent starts with -o: it keeps one
 * runner going, starting it again when it ends, RESTART_SECONDS apart at
 * most; on SIGTERM, or when the listening parent is gone, it stops the
 * runner and exits. (A process of its own keeps the parent's accept loop,
 * shared with popserver, as it is.)
 */
static void keeper(pid_t parent)
{
	sigset_t old, wait_mask;
	long long started = 0;
	pid_t runner = -1;
	int status;

	if (keeper_signals(&wait_mask, &old) < 0)
		exit(1);
	while (!runner_stop && getppid() == parent) {
		struct timespec second = { 1, 0 };

		if (runner < 0 && now_ms() - started >= RESTART_SECONDS * 1000LL) {
			started = now_ms();
			runner = keeper_fork(&old);
		}
		if (!runner_stop && !runner_reap
		    && pselect(0, NULL, NULL, NULL, &second, &wait_mask) < 0 && errno != EINTR)
			log_msg("queue runner keeper: pselect: %s", strerror(errno));
		runner_reap = 0;
		if (runner > 0 && waitpid(runner, &status, WNOHANG) == runner) {
			log_msg("queue runner %ld ended (%s %d): started again within %d s",
				(long)runner, WIFSIGNALED(status) ? "signal" : "status",
				WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
				(int)RESTART_SECONDS);
			runner = -1;
		}
	}
	if (runner > 0 && (kill(runner, SIGTERM) < 0 || waitpid(runner, &status, 0) < 0))
		log_msg("queue runner %ld: %s", (long)runner, strerror(errno));
	exit(0);
}

/* runner_start - in the listening parent (-o, not -i): the keeper, which
 * keeps the queue runner going; its pid, or -1 (logged: the server then
 * serves, and mail waits in the queue for a runner) */
static pid_t runner_start(const int *fds, int nfds)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == 0) {
		for (int i = 0; i < nfds; i++)	/* the keeper takes no connections */
			close_fd(fds[i], "listening socket");
		keeper(parent);
	}
	if (pid < 0)
		log_msg("queue runner: fork: %s", strerror(errno));
	return pid;
}

/* runner_end - after serve: stop the keeper, and so the runner */
static void runner_end(pid_t keeper_pid)
{
	if (keeper_pid <= 0)
		return;
	if (kill(keeper_pid, SIGTERM) < 0 || waitpid(keeper_pid, NULL, 0) < 0)
		log_msg("queue runner keeper %ld: %s", (long)keeper_pid, strerror(errno));
}

/* ---------------------------------------------------------------- command handlers */

/* timed_out - a wait ran out: log which limit it was, and say so (RFC 5321
 * 4.5.3.2.7: the 421 reply) */
static void timed_out(struct session *s)
{
	long long now = now_ms();
	const struct conn *c = &s->conn;

	log_msg("%s: %s", s->peer, c->hard_end_ms && now >= c->hard_end_ms
		? "the session lasted its -T seconds"
		: s->state == ST_DATA && c->deadline_ms && now >= c->deadline_ms
		? "the data came too slowly (-r bytes/s)" : "no input for -t seconds");
	reply(s, "421 4.4.2 %s Timeout, closing connection", cfg.hostname);
}

/* The handlers run in protocol order. Each one can trust its input: the
 * table has checked the state and the argument rule (see dispatch), and a
 * check_<verb> function sends the 501 or 550 of a semantic check. */

/* reset_transaction - forget the sender, the recipients and the data, as
 * RSET, HELO, EHLO and the end of DATA must (RFC 5321 4.1.1.5, 4.1.4) */
static void reset_transaction(struct session *s)
{
	s->sender[0] = '\0';
	s->nrcpts = 0;
	s->nrelay = 0;
	s->accepted = 0;
	spill_reset(&s->spill);
	if (s->state != ST_START && s->state != ST_QUIT)
		set_state(s, ST_GREETED);
}

/* check_helo - the client's name must fit a domain (RFC 5321 4.5.3.1.2).
 * Replies to HELO and EHLO carry no enhanced code (RFC 2034 3). */
static int check_helo(struct session *s, const char *arg)
{
	if (strcspn(arg, " ") > DOMAIN_MAX) {
		reply(s, "501 Domain name too long");
		return -1;
	}
	return 0;
}

/* greet - note the client's name and dialect, and start afresh: HELO and
 * EHLO both reset a transaction under way (RFC 5321 4.1.4) */
static void greet(struct session *s, const char *arg, int esmtp)
{
	size_t n = strcspn(arg, " ");

	memcpy(s->helo, arg, n);
	s->helo[n] = '\0';
	s->esmtp = esmtp;
	if (s->state == ST_START)
		set_state(s, ST_GREETED);
	reset_transaction(s);
}

/* cmd_helo - HELO domain (RFC 5321 4.1.1.1) */
static void cmd_helo(struct session *s, const struct args *a)
{
	if (check_helo(s, a->text) != 0)
		return;
	greet(s, a->text, 0);
	reply(s, "250 OK Hello %s", s->helo);
}

/* cmd_ehlo - EHLO domain: the greeting line, then one line per extension */
static void cmd_ehlo(struct session *s, const struct args *a)
{
	if (check_helo(s, a->text) != 0)
		return;
	greet(s, a->text, 1);
	reply(s, "250-%s Hello %s", cfg.hostname, s->helo);
	reply(s, "250-SIZE %llu", cfg.max_size);	/* RFC 1870 */
	reply(s, "250-8BITMIME");			/* RFC 6152 */
	reply(s, "250-PIPELINING");			/* RFC 2920 */
	reply(s, "250-ENHANCEDSTATUSCODES");		/* RFC 2034 */
	reply(s, "250-AUTH CRAM-MD5 PLAIN LOGIN");	/* RFC 4954, strongest first */
	reply(s, "250 HELP");
}

/*
 * check_auth - AUTH mechanism [initial-response] (RFC 4954 4): once a
 * session, a mechanism that is offered, at most one word more. Returns the
 * mechanism (*initial the response, or NULL), or -1 after the reply.
 */
static int check_auth(struct session *s, char *arg, char **initial)
{
	char *save = NULL, *name = strtok_r(arg, " ", &save);
	int mech = mech_find(name);

	*initial = strtok_r(NULL, " ", &save);
	if (s->auth_login[0])
		reply(s, "503 5.5.1 Already authenticated");	/* RFC 4954 4 */
	else if (strtok_r(NULL, " ", &save))
		reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
	else if (mech < 0)
		reply(s, "504 5.5.4 Unrecognized authentication type");	/* RFC 4954 6 */
	else
		return mech;
	return -1;
}

/* auth_answer - the reply to the end of an AUTH exchange (RFC 4954 4, 6).
 * A wrong password is answered after the penalty's delay and counts, as
 * popserver's wrong PASS does. */
static void auth_answer(struct session *s, const struct sasl *a, enum mech mech,
			enum auth_result r)
{
	const char *how = mech_names[mech];

	if (r == AUTH_OK) {
		memcpy(s->auth_login, a->acct.login, sizeof s->auth_login);
		log_msg("%s: authenticated %s by %s", s->peer, s->auth_login, how);
		reply(s, "235 2.7.0 Authentication successful");
	} else if (r == AUTH_WRONG) {
		log_msg("%s: authentication of %s by %s failed", s->peer,
			a->name[0] ? a->name : "?", how);
		auth_pause(s->pause_ms, s->auth_failures++);
		reply(s, "535 5.7.8 Authentication credentials invalid");
	} else if (r == AUTH_TIMEOUT || r == AUTH_LOST) {
		if (r == AUTH_TIMEOUT)
			timed_out(s);
		else
			log_msg("%s: connection closed during AUTH", s->peer);
		set_state(s, ST_QUIT);
	} else {
		reply(s, r == AUTH_UNASKED ? "501 5.5.4 CRAM-MD5 takes no initial response"
		      : r == AUTH_CANCELLED ? "501 5.7.0 Authentication cancelled"
		      : r == AUTH_BAD_BASE64 ? "501 5.5.2 Cannot decode response"
		      : r == AUTH_TOO_LONG ? "500 5.5.2 Line too long"
		      : "454 4.7.0 Temporary authentication failure");	/* user.txt */
	}
}

/* cmd_auth - AUTH (RFC 4954): the SASL exchange, then its answer. EHLO
 * offers it; after HELO it is taken too, answered in that dialect. */
static void cmd_auth(struct session *s, const struct args *a)
{
	struct sasl x = { .c = &s->conn, .prompt = "334 ", .userfile = cfg.userfile,
			  .host = cfg.hostname };
	char *initial = NULL;
	int mech = check_auth(s, a->text, &initial);

	if (mech < 0)
		return;
	auth_answer(s, &x, (enum mech)mech, sasl_auth(&x, (enum mech)mech, initial));
	secret_wipe(&x, sizeof x);
}

/*
 * mail_params - check MAIL's ESMTP parameters: SIZE (RFC 1870), BODY (RFC
 * 6152) and AUTH (RFC 4954 5); a message announced as bigger than the
 * limit is refused now, before the client sends it.
 */
static int mail_params(struct session *s, char *p)
{
	char *save = NULL;

	for (char *t = strtok_r(p, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		unsigned long long size;

		if (strncasecmp(t, "SIZE=", 5) == 0) {
			if (size_param(t + 5, &size) < 0) {
				reply(s, "501 5.5.4 Bad SIZE parameter");
				return -1;
			}
			if (size > cfg.max_size) {
				reply(s, "552 5.3.4 Message size exceeds fixed maximum message size (%llu)",
				      cfg.max_size);
				return -1;
			}
		} else if (strncasecmp(t, "AUTH=", 5) == 0 && t[5]) {
			/* RFC 4954 5: who first submitted it; nothing is relayed
			 * here, so it is taken and not passed on */
		} else if (strcasecmp(t, "BODY=7BIT") != 0 && strcasecmp(t, "BODY=8BITMIME") != 0) {
			reply(s, "555 5.5.4 Unsupported parameter %.64s", t);
			return -1;
		}
	}
	return 0;
}

/* own_address - may the authenticated user send as sender? Its local
 * part is the login (any case), or it is the null sender <> */
static int own_address(const struct session *s, const char *sender)
{
	size_t n = strcspn(sender, "@");

	return !*sender || (n == strlen(s->auth_login)
			    && strncasecmp(sender, s->auth_login, n) == 0);
}

/* check_mail - the reverse-path (RFC 5321 4.1.1.2) into sender, and its
 * parameters; a bad one is answered here and the command goes no further.
 * Under -a (submission, RFC 6409 4.3, 6.1) only after AUTH, and only from
 * the user's own address. */
static int check_mail(struct session *s, char *arg, char *sender, size_t cap)
{
	char *params = NULL;
	enum addr_error e;

	if (cfg.submission && !s->auth_login[0]) {
		reply(s, "530 5.7.0 Authentication required");	/* RFC 4954 6 */
		return -1;
	}
	if ((e = parse_path(arg, sender, cap, &params)) != ADDR_OK) {
		reply(s, "501 5.1.7 %s", addr_errors[e]);
		return -1;
	}
	if (cfg.submission && !own_address(s, sender)) {
		reply(s, "553 5.7.1 Sender address not owned by %s", s->auth_login);
		return -1;
	}
	return mail_params(s, params);
}

/* cmd_mail - MAIL FROM:<path> [params]: a transaction begins */
static void cmd_mail(struct session *s, const struct args *a)
{
	char sender[SMTP_PATH_MAX];

	if (check_mail(s, a->text, sender, sizeof sender) != 0)
		return;
	memcpy(s->sender, sender, strlen(sender) + 1);
	set_state(s, ST_MAIL);
	reply(s, "250 2.1.0 <%s>... Sender ok", s->sender);
}

/* known_user - the account of addr's local part; a user.txt that cannot
 * be read is a temporary failure (451), an unknown user a permanent one */
static int known_user(struct session *s, const char *addr, struct account *acct)
{
	char local[LOCAL_PART_MAX + 1];
	size_t n = strcspn(addr, "@");	/* check_address bounds it */
	int found;

	memcpy(local, addr, n);
	local[n] = '\0';
	found = find_mailbox(local, acct);
	if (found < 0)
		reply(s, "451 4.3.0 Cannot read the account list, try again later");
	else if (found == 0)
		reply(s, "550 5.1.1 No such user");
	return found == 1 ? 0 : -1;
}

/*
 * check_rcpt - everything that can refuse a recipient (RFC 5321 4.1.1.3),
 * in this order: the path's syntax, parameters (none are offered), the
 * recipient limit, a domain that is not ours, an unknown user. When it
 * passes, addr holds the address and acct its account.
 */
static int check_rcpt(struct session *s, char *arg, char *addr, size_t cap,
		      struct account *acct)
{
	char *params = NULL;
	enum addr_error e = parse_path(arg, addr, cap, &params);

	if (e == ADDR_NO_DOMAIN && strcasecmp(addr, "postmaster") == 0)
		e = ADDR_OK;	/* RFC 5321 4.1.1.3: <Postmaster> */
	if (e != ADDR_OK || *addr == '\0') {
		reply(s, "501 5.1.3 %s", addr_errors[e == ADDR_OK ? ADDR_SYNTAX : e]);
		return -1;
	}
	if (*params) {
		reply(s, "555 5.5.4 Unsupported parameter %.64s", params);
		return -1;
	}
	if (s->accepted >= RECIPIENTS_MAX) {
		reply(s, "452 4.5.3 Too many recipients");	/* RFC 5321 4.5.3.1.10 */
		return -1;
	}
	if (strchr(addr, '@') && !local_domain(strrchr(addr, '@') + 1)) {
		acct->login[0] = '\0';	/* no account: a recipient to relay */
		return relay_check(s, addr);
	}
	return known_user(s, addr, acct);
}

/* add_rcpt - a mailbox joins the transaction; one named twice (alice and
 * Alice) is delivered to once */
static void add_rcpt(struct session *s, const struct account *acct, const char *given)
{
	struct rcpt *r = &s->rcpts[s->nrcpts];

	if (!acct->login[0]) {	/* relay_check took it: queued at DATA */
		relay_add(s, given);
		return;
	}
	for (int i = 0; i < s->nrcpts; i++)
		if (strcmp(s->rcpts[i].login, acct->login) == 0)
			return;
	memcpy(r->login, acct->login, sizeof r->login);
	memcpy(r->given, given, strlen(given) + 1);
	r->dir_fd = r->lock_fd = r->box_fd = -1;
	s->nrcpts++;
}

/* cmd_rcpt - RCPT TO:<path>: one more recipient */
static void cmd_rcpt(struct session *s, const struct args *a)
{
	char addr[SMTP_PATH_MAX];
	struct account acct;

	if (check_rcpt(s, a->text, addr, sizeof addr, &acct) != 0)
		return;
	add_rcpt(s, &acct, addr);
	s->accepted++;
	set_state(s, ST_RCPT);
	reply(s, "250 2.1.5 <%s>... Recipient ok", addr);
}

/*
 * cmd_data - DATA (RFC 5321 4.1.1.4): receive the message to its final dot,
 * then deliver it or say why not. A message over the size limit is read to
 * the end anyway, so that the session stays in step with the client.
 */
static void cmd_data(struct session *s, const struct args *a)
{
	enum io_status st;

	(void)a;
	reply(s, "354 Enter mail, end with \".\" on a line by itself");
	set_state(s, ST_DATA);
	st = receive_data(s);
	if (st == IO_TIMEOUT)
		timed_out(s);
	s->conn.deadline_ms = 0;
	if (st != IO_OK) {
		log_msg("%s: %s during DATA: nothing stored", s->peer,
			st == IO_TIMEOUT ? "timeout" : "connection lost");
		set_state(s, ST_QUIT);
		return;
	}
	if (verbose)
		log_msg("< (message data, %llu bytes stored)", s->spill.size);
	if (s->spill.too_big)
		reply(s, "552 5.3.4 Message size exceeds fixed maximum message size (%llu)",
		      cfg.max_size);
	else if (s->spill.error)
		failure_reply(s, s->spill.error);
	else if (loop_check(s) == 0)
		deliver(s);
	reset_transaction(s);
}

/* cmd_rset - RSET (RFC 5321 4.1.1.5) */
static void cmd_rset(struct session *s, const struct args *a)
{
	(void)a;
	reset_transaction(s);
	reply(s, "250 2.0.0 OK");
}

/* cmd_noop - NOOP, whose argument is ignored (RFC 5321 4.1.1.9) */
static void cmd_noop(struct session *s, const struct args *a)
{
	(void)a;
	reply(s, "250 2.0.0 OK");
}

/* cmd_quit - QUIT (RFC 5321 4.1.1.10): the session loop ends after it */
static void cmd_quit(struct session *s, const struct args *a)
{
	(void)a;
	reply(s, "221 2.0.0 %s closing connection", cfg.hostname);
	set_state(s, ST_QUIT);
}

/* cmd_vrfy - VRFY never tells which accounts exist (RFC 5321 3.5.3, 7.3).
 * The code is 2.0.0, since RFC 3463's X.5.2 would mean a syntax error. */
static void cmd_vrfy(struct session *s, const struct args *a)
{
	(void)a;
	reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
}

/* cmd_help - HELP (RFC 5321 4.1.1.8) */
static void cmd_help(struct session *s, const struct args *a)
{
	(void)a;
	reply(s, "214 2.0.0 Commands: HELO EHLO AUTH MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
}

/* cmd_not_implemented - a verb we know but do not offer (RFC 5321 4.2.4) */
static void cmd_not_implemented(struct session *s, const struct args *a)
{
	(void)a;
	reply(s, "502 5.5.1 Command not implemented");
}

/* cmd_unknown - any other verb: the table's catch-all last row */
static void cmd_unknown(struct session *s, const struct args *a)
{
	(void)a;
	reply(s, "500 5.5.1 Command unrecognized");
}

/* ---------------------------------------------------------------- the table */

#define IN(st) (1u << (st))
/* Every state a command line can come in: in ST_DATA the lines are the
 * message's, and after ST_QUIT nothing more is read. */
#define ANY_STATE (IN(ST_START) | IN(ST_GREETED) | IN(ST_MAIL) | IN(ST_RCPT))

/* What a command's argument must be. MAIL's and RCPT's start with a
 * keyword, which dispatch takes off before the handler sees the path. */
enum arg_rule { ARGS_ANY, ARGS_NONE, ARGS_SOME, ARGS_FROM, ARGS_TO };

struct command {
	const char *verb;	/* NULL: the catch-all last row */
	void (*handler)(struct session *s, const struct args *a);
	unsigned states;	/* IN() bits: the states it may come in */
	enum arg_rule args;	/* the rule its argument must follow */
	const char *syntax;	/* the 501 reply when the argument breaks it */
	const char *late;	/* the 503 reply when the command's step is done */
};

static const struct command commands[] = {
	{ "HELO", cmd_helo, ANY_STATE, ARGS_SOME, "501 Syntax: HELO hostname", NULL },
	{ "EHLO", cmd_ehlo, ANY_STATE, ARGS_SOME, "501 Syntax: EHLO hostname", NULL },
	/* RFC 4954 4: not inside a transaction */
	{ "AUTH", cmd_auth, IN(ST_GREETED), ARGS_SOME,
	  "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
	  "503 5.5.1 Mail transaction in progress" },
	{ "MAIL", cmd_mail, IN(ST_GREETED), ARGS_FROM,
	  "501 5.5.4 Syntax: MAIL FROM:<address>", "503 5.5.1 Sender already specified" },
	{ "RCPT", cmd_rcpt, IN(ST_MAIL) | IN(ST_RCPT), ARGS_TO,
	  "501 5.5.4 Syntax: RCPT TO:<address>", NULL },
	{ "DATA", cmd_data, IN(ST_RCPT), ARGS_NONE, "501 5.5.4 Syntax: DATA", NULL },
	{ "RSET", cmd_rset, ANY_STATE, ARGS_NONE, "501 5.5.4 Syntax: RSET", NULL },
	{ "NOOP", cmd_noop, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "QUIT", cmd_quit, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "VRFY", cmd_vrfy, ANY_STATE, ARGS_SOME, "501 5.5.4 Syntax: VRFY <address>", NULL },
	{ "HELP", cmd_help, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "EXPN", cmd_not_implemented, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "TURN", cmd_not_implemented, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "ETRN", cmd_not_implemented, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "STARTTLS", cmd_not_implemented, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "BDAT", cmd_not_implemented, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "SEND", cmd_not_implemented, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "SOML", cmd_not_implemented, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ "SAML", cmd_not_implemented, ANY_STATE, ARGS_ANY, NULL, NULL },
	{ NULL, cmd_unknown, ANY_STATE, ARGS_ANY, NULL, NULL }
};

/* missing_step - the 503 for a command that comes too early: it names the
 * step the session has not taken yet (RFC 5321 4.1.4) */
static const char *missing_step(enum state st)
{
	if (st == ST_START)
		return "503 5.5.1 Send HELO or EHLO first";
	if (st == ST_GREETED)
		return "503 5.5.1 Need MAIL command";
	return "503 5.5.1 Need RCPT command";
}

/*
 * out_of_order - the 503 for a command its row does not allow now. The
 * states run in protocol order, so a state below the first one the row
 * allows means the command came too early, and the session is told what it
 * lacks; a state above it means the command's step is done (MAIL inside a
 * transaction), and the row says so.
 */
static const char *out_of_order(const struct command *cmd, enum state st)
{
	unsigned first = cmd->states & (0u - cmd->states);	/* its lowest bit */

	return IN(st) > first && cmd->late ? cmd->late : missing_step(st);
}

/* args_ok - does the argument follow the row's rule? For MAIL and RCPT,
 * *arg moves past the keyword, so that the handler gets the path alone. */
static int args_ok(enum arg_rule rule, char **arg)
{
	char *rest;

	switch (rule) {
	case ARGS_ANY:
		return 1;
	case ARGS_NONE:
		return **arg == '\0';
	case ARGS_SOME:
		return **arg != '\0';
	case ARGS_FROM:
	case ARGS_TO:
		break;
	}
	rest = after_keyword(*arg, rule == ARGS_FROM ? "FROM:" : "TO:");
	if (rest)
		*arg = rest;
	return rest != NULL;
}

/*
 * dispatch - split a command line into verb and argument, find the verb's
 * row (any case), and run its handler only if the row's state and argument
 * rule hold; otherwise the row's 503 or 501 is the answer. Spaces around
 * the argument are dropped: hand-typed commands often have them.
 */
static void dispatch(struct session *s, char *line)
{
	size_t n = strcspn(line, " ");
	char *arg = line + n;
	const struct command *cmd = commands;

	if (*arg)
		*arg++ = '\0';
	arg += strspn(arg, " ");
	for (size_t k = strlen(arg); k > 0 && arg[k - 1] == ' ';)
		arg[--k] = '\0';
	while (cmd->verb && strcasecmp(cmd->verb, line) != 0)
		cmd++;
	if (!(cmd->states & IN(s->state)))
		reply(s, "%s", out_of_order(cmd, s->state));
	else if (!args_ok(cmd->args, &arg))
		reply(s, "%s", cmd->syntax);
	else
		cmd->handler(s, &(struct args){ .text = arg });
}

/* ---------------------------------------------------------------- the session loop */

/* has_control - does a command hold a NUL or another control byte? A TAB
 * is allowed; anything else would end up in logs and trace lines. */
static int has_control(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (((unsigned char)line[i] < ' ' && line[i] != '\t') || line[i] == 0x7f)
			return 1;
	return 0;
}

/*
 * session_step - read one command line and answer it. A line that is too
 * long, ends in a bare LF or holds control bytes is answered 500 and not
 * run: a bare LF most often means a client that is not speaking SMTP, and
 * the hint tells a person at a terminal how to send CRLF.
 */
static void session_step(struct session *s)
{
	char line[COMMAND_LINE_MAX];
	size_t len = 0;
	int crlf = 0, secret;
	enum io_status st;

	/* RFC 5321 4.5.3.2.7: the whole command within the timeout, so that a
	 * client dripping a byte at a time cannot hold a session for ever. */
	s->conn.deadline_ms = now_ms() + s->conn.timeout_ms;
	st = conn_read_line(&s->conn, line, sizeof line, &len, &crlf);
	s->conn.deadline_ms = 0;	/* DATA sets its own: receive_data */
	if (st == IO_EOF || st == IO_ERROR) {
		log_msg("%s: connection closed%s", s->peer,
			s->state == ST_MAIL || s->state == ST_RCPT ? " mid-transaction" : "");
		set_state(s, ST_QUIT);
		return;
	}
	if (st == IO_TIMEOUT) {
		timed_out(s);
		set_state(s, ST_QUIT);
		return;
	}
	secret = line[secret_start(line)] != '\0';	/* AUTH's response */
	if (st == IO_OK)
		log_client(line);
	if (st == IO_TOO_LONG)
		reply(s, "500 5.5.2 Line too long");	/* RFC 5321 4.5.3.1.4 */
	else if (!crlf)
		reply(s, "500 5.5.2 Lines must end in CRLF (use telnet, or nc -C)");
	else if (has_control(line, len))
		reply(s, "500 5.5.2 Syntax error: control character in command");
	else
		dispatch(s, line);
	if (secret)
		forget_secret(&s->conn, line, sizeof line);
}

/*
 * smtp_session - one SMTP session, read from in and written to out (one
 * socket, or -i's two descriptors), from the greeting to QUIT, a lost
 * connection, a timeout or too many errors. It returns instead of exiting
 * (a fuzz harness calls it in a loop), and closes in and out and frees
 * everything. The configuration comes from cfg; the first wrong password
 * waits pause_ms (the address's penalty). It returns the wrong passwords
 * that AUTH saw, which the note that says the session is over has told
 * the parent (session_over), or -1 if the session could not start.
 */
static int smtp_session(int in, int out, const char *peer, int pause_ms)
{
	struct session *s = calloc(1, sizeof *s);
	int failures;

	log_msg("connection from %s", peer);
	if (!s || conn_init(&s->conn, in, cfg.timeout) < 0) {
		log_msg("%s: cannot start a session: %s", peer, strerror(errno));
		free(s);
		close_fd(in, "connection");
		if (out != in)
			close_fd(out, "connection");
		return -1;
	}
	s->conn.out_fd = out;
	s->pause_ms = pause_ms;
	/* However busy the client keeps it, a session ends after -T seconds. */
	s->conn.hard_end_ms = now_ms() + cfg.lifetime * 1000LL;
	s->peer = peer;
	s->spill.fd = -1;
	spill_reset(&s->spill);
	reply(s, "220 %s Service ready", cfg.hostname);
	while (s->state != ST_QUIT) {
		session_step(s);
		if (s->state != ST_QUIT && s->errors >= ERRORS_MAX) {
			reply(s, "421 4.7.0 %s Too many errors, closing connection",
			      cfg.hostname);
			set_state(s, ST_QUIT);
		}
	}
	conn_flush(&s->conn);
	session_over(s->auth_failures);
	spill_reset(&s->spill);
	if (s->spill.mem)	/* the next session's malloc may get it back */
		secret_wipe(s->spill.mem, SPILL_MEM);
	free(s->spill.mem);
	failures = s->auth_failures;
	secret_wipe(s->conn.in, sizeof s->conn.in);	/* it held AUTH's lines */
	free(s);
	close_fd(in, "connection");
	if (out != in)
		close_fd(out, "connection");
	return failures;
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

/* number_arg - a decimal option value in [min, max], or -1 when it is not
 * one; every number option is bounded, so no later arithmetic overflows */
static long long number_arg(const char *v, long long min, long long max)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno || end == v || *end || n < min || n > max)
		return -1;
	return n;
}

/* bad_value - refuse an option value: say why, print the usage, exit 2 */
static void bad_value(int opt, const char *v)
{
	fprintf(stderr, "%s: bad value for -%c: %s\n", progname, opt, v);
	usage(stderr, 0);
	exit(2);
}

/* network_arg - parse -N's "address/prefix" (a bare address is the one
 * host) into net; 0, or -1 when it is not one */
static int network_arg(const char *v, struct network *net)
{
	char text[ADDR_TEXT_MAX];
	const char *slash = strchr(v, '/');
	size_t len = slash ? (size_t)(slash - v) : strlen(v);
	long long prefix;

	if (len == 0 || len >= sizeof text)
		return -1;
	memcpy(text, v, len);
	text[len] = '\0';
	net->family = strchr(text, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(net->family, text, net->addr) != 1)
		return -1;
	prefix = net->family == AF_INET6 ? 128 : 32;
	if (slash)
		prefix = number_arg(slash + 1, 0, prefix);
	net->prefix = (int)prefix;
	return prefix < 0 ? -1 : 0;
}

/* route_arg - parse -R's "domain=host[:port]" or "domain=[address]:port"
 * into r; 0, or -1 when it is not one. The port is 25 when none is given. */
static int route_arg(const char *v, struct route *r)
{
	const char *eq = strchr(v, '='), *host, *rest;
	unsigned char bin[16];
	size_t len;

	if (!eq || eq == v || (size_t)(eq - v) > DOMAIN_MAX)
		return -1;
	memcpy(r->domain, v, (size_t)(eq - v));
	r->domain[eq - v] = '\0';
	host = eq + 1;
	r->literal = host[0] == '[';
	if (r->literal) {
		rest = strchr(++host, ']');
		if (!rest)
			return -1;
		len = (size_t)(rest++ - host);
	} else {
		rest = strchr(host, ':');	/* a host name has no ':' */
		len = rest ? (size_t)(rest - host) : strlen(host);
		rest = host + len;
	}
	if (len == 0 || len > DOMAIN_MAX || (*rest && (*rest != ':' || number_arg(rest + 1, 1, 65535) < 0)))
		return -1;
	memcpy(r->host, host, len);
	r->host[len] = '\0';
	if (r->literal && inet_pton(strchr(r->host, ':') ? AF_INET6 : AF_INET, r->host, bin) != 1)
		return -1;
	return snprintf(r->port, sizeof r->port, "%s", *rest ? rest + 1 : "25") < 0 ? -1 : 0;
}

/* backoff_arg - parse -B's "min:max" seconds, 1 <= min <= max */
static int backoff_arg(const char *v)
{
	const char *colon = strchr(v, ':');
	char min[16];
	long long lo, hi;

	if (!colon || colon == v || (size_t)(colon - v) >= sizeof min)
		return -1;
	memcpy(min, v, (size_t)(colon - v));
	min[colon - v] = '\0';
	lo = number_arg(min, 1, 604800);
	hi = number_arg(colon + 1, 1, 604800);
	if (lo < 0 || hi < lo)
		return -1;
	cfg.backoff_min = (int)lo;
	cfg.backoff_max = (int)hi;
	return 0;
}

/* relay_option - apply one of the relay options (-o -N -R -B -E -W -Z -q -p
 * -F -x) to cfg; 0, or -1 when its value is bad */
static int relay_option(int opt, const char *v)
{
	long long n = 0;

	switch (opt) {
	case 'o': cfg.relay = 1; break;
	case 'N':
		if (cfg.ntrusted == TRUSTED_MAX)
			return -1;
		return network_arg(v, &cfg.trusted[cfg.ntrusted++]);
	case 'R':
		if (cfg.nroutes == ROUTES_MAX)
			return -1;
		return route_arg(v, &cfg.routes[cfg.nroutes++]);
	case 'B': return backoff_arg(v);
	case 'E': n = number_arg(v, 1, 365 * 86400LL); cfg.queue_lifetime = (int)n; break;
	case 'W': n = number_arg(v, 1, 365 * 86400LL); cfg.notice_after = (int)n; break;
	case 'Z': n = number_arg(v, 1, DEFAULT_QUEUE_MAX); cfg.queue_max = (int)n; break;
	case 'q': cfg.queue_mode = QM_RUNNER; break;
	case 'p': cfg.queue_mode = QM_PRINT; break;
	case 'F': cfg.queue_mode = QM_FLUSH; break;
	case 'x': cfg.queue_mode = QM_REMOVE; cfg.remove_id = v; break;
	}
	return n < 0 ? -1 : 0;
}

/* set_option - apply one option to cfg */
static void set_option(int opt, const char *v)
{
	long long n = 0;

	switch (opt) {
	case 'd': cfg.spool = v; break;
	case 'u': cfg.userfile = v; break;
	case 'n':
		if (!*v || strlen(v) > HOSTNAME_MAX)
			bad_value(opt, v);
		cfg.hostname = v;
		break;
	case 'l': cfg.listen = v; break;
	case 'v': verbose = 1; break;
	case 'h': usage(stdout, 1); exit(0);
	case 'a': cfg.submission = 1; break;
	case 'i': cfg.inetd = 1; break;
	case 'w': n = number_arg(v, 0, 60000); cfg.penalty_ms = (int)n; break;
	case 's': n = number_arg(v, 1, 1LL << 40); cfg.max_size = (unsigned long long)n; break;
	case 'c': n = number_arg(v, 1, 100000); cfg.max_sessions = (int)n; break;
	case 'C': n = number_arg(v, 1, 100000); cfg.max_per_client = (int)n; break;
	case 't': n = number_arg(v, 1, 86400); cfg.timeout = (int)n; break;
	case 'r': n = number_arg(v, 0, 1000000000); cfg.min_rate = (int)n; break;
	case 'T': n = number_arg(v, 1, 604800); cfg.lifetime = (int)n; break;
	case 'D':
		if (cfg.ndomains == DOMAINS_MAX || strlen(v) > DOMAIN_MAX)
			bad_value(opt, v);
		cfg.domains[cfg.ndomains++] = v;
		break;
	case 'o': case 'N': case 'R': case 'B': case 'E': case 'W': case 'Z':
	case 'q': case 'p': case 'F': case 'x':
		if (relay_option(opt, v) < 0)
			bad_value(opt, v);
		break;
	default: usage(stderr, 0); exit(2);
	}
	if (n < 0)
		bad_value(opt, v);
}

/* parse_options - the options, then the optional port; without -n the
 * hostname is gethostname()'s */
static void parse_options(int argc, char **argv)
{
	static char host[HOSTNAME_MAX + 1];
	int opt;

	cfg.hostname = NULL;
	while ((opt = getopt(argc, argv, "d:u:n:l:s:c:C:t:r:T:D:w:aivhoN:R:B:E:W:Z:qpFx:")) != -1)
		set_option(opt, optarg);
	if (cfg.relay && cfg.ndomains == 0) {
		fprintf(stderr, "%s: -o needs -D: relaying must know the local domains\n",
			progname);
		exit(2);
	}
	if (argc - optind > 1) {
		usage(stderr, 0);
		exit(2);
	}
	if (optind < argc) {
		if (number_arg(argv[optind], 1, 65535) < 0)
			bad_value('p', argv[optind]);
		cfg.port = argv[optind];
	}
	if (!cfg.hostname)	/* no -n */
		cfg.hostname = gethostname(host, sizeof host - 1) == 0 && host[0]
			       ? host : "localhost";
}

/* main - parse the options, listen, and serve until SIGTERM or SIGINT;
 * with -i, serve the one session on standard input and output */
int main(int argc, char **argv)
{
	static char busy[REPLY_LINE_MAX];
	static char spool_dir[PATH_TEXT_MAX];
	struct server srv = { .busy_line = busy, .session = smtp_session, .pool = &worker_pool };
	pid_t keeper_pid;
	int status;

	parse_options(argc, argv);
	srv.userfile = cfg.userfile;
	if (cfg.inetd && inetd_stderr() < 0)
		return 1;	/* the log would go to the client */
	cfg.spool = spool_choose(cfg.spool, cfg.userfile, spool_dir, sizeof spool_dir);
	if (!cfg.spool)
		return 1;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR	/* a write error is an error, not death */
	    || signal(SIGXFSZ, SIG_IGN) == SIG_ERR) {	/* a file-size limit: EFBIG, then 452 */
		log_msg("signals: %s", strerror(errno));
		return 1;
	}
	if (cfg.queue_mode != QM_SERVE)
		return queue_command();
	if (cfg.inetd)
		return serve_inetd(smtp_session, cfg.penalty_ms);
	srv.userfile = cfg.userfile;
	srv.penalty_ms = cfg.penalty_ms;
	/* Cannot be cut short: the hostname is at most 255 octets. It stands
	 * for the greeting, so it carries no enhanced code (RFC 2034). */
	(void)snprintf(busy, sizeof busy,
		       "421 %s too many connections, try again later\r\n", cfg.hostname);
	srv.max_children = cfg.max_sessions;
	/* Postfix's smtpd_client_connection_count_limit: half the sessions */
	srv.max_per_peer = cfg.max_per_client ? cfg.max_per_client
			   : cfg.max_sessions > 1 ? cfg.max_sessions / 2 : 1;
	srv.nfds = listen_on(cfg.listen, cfg.port, srv.fds);
	if (srv.nfds == 0)
		return 1;
	keeper_pid = cfg.relay ? runner_start(srv.fds, srv.nfds) : -1;
	status = serve(&srv);
	runner_end(keeper_pid);	/* after the sessions: it may still wake the runner */
	return status;
}
