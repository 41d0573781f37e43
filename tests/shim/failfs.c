/*
 * failfs.c - an LD_PRELOAD shim that makes chosen file system calls fail,
 * so that tests can show what the servers do when the disk fails them:
 * a full disk, a failed fsync. libc only; Linux (/proc/self/fd).
 *
 *   cc -shared -fPIC -o failfs.so tests/shim/failfs.c -ldl
 *   FAILFS_DIR_FSYNC=1 LD_PRELOAD=./failfs.so ./popserver ...
 *
 * What fails is chosen by the environment, read at each call (so a test
 * sets it for the server it starts); unset, every call goes through:
 *
 *   FAILFS_DIR_FSYNC=1     fsync and fdatasync of a directory: EIO
 *   FAILFS_FSYNC=suffix    fsync and fdatasync of a file whose path ends in
 *                          suffix (e.g. "/mymailbox"): EIO
 *   FAILFS_ENOSPC=suffix   write, writev, pwrite and sendfile into a file
 *                          whose path ends in suffix: ENOSPC, nothing written
 *   FAILFS_FSYNC_RANDOM=N  fsync and fdatasync of a file whose path ends in
 *                          "/mymailbox": EIO one time in N, chosen from
 *   FAILFS_SEED=S          S, the file and its count of syncs (default 1)
 *   FAILFS_FAIL_MS=M       an injected failure returns only after M ms, as
 *                          a real one would after trying the disk: a
 *                          process killed meanwhile dies in a failed sync
 *   FAILFS_SETTLE_ENOSPC=flag  after a successful fsync of a "/mymailbox",
 *                          the process's next write into a file whose path
 *                          ends in "/mymailbox.state" (the commit state that
 *                          settles that fsync): ENOSPC, nothing written;
 *                          once in the whole run (the shim creates flag)
 *
 *   FAILFS_FSYNC_ONCE=flag the first fsync of a "/mymailbox" in the whole
 *                          run: EIO, after FAILFS_FAIL_MS (the shim
 *                          creates flag; later ones go through)
 *   FAILFS_CLOCK_FILE=f    clock_gettime(CLOCK_REALTIME) is ahead by the
 *                          seconds written in file f, while it exists: a
 *                          test steps the clock of every process at once
 *   FAILFS_STEP_ON_FAIL=s  an injected fsync failure writes s into
 *                          FAILFS_CLOCK_FILE before it returns: the clock
 *                          steps while that fsync is under way
 *   FAILFS_BOOT_ID_FILE=f  /proc/sys/kernel/random/boot_id is read from f
 *   FAILFS_HOSTNAME=name   gethostname() gives name: with the one above, a
 *                          server is told it runs on another machine
 *
 * The durability model (the torture test's ground truth), when
 *   FAILFS_STATE=dir       is set: for every file whose path ends in
 *                          "/mymailbox" or "/mymailbox.new" the shim keeps
 *                          dir/<dev>-<ino>, the size that the last successful
 *                          sync covered ("last_ok", the size before the
 *                          real fsync was called), under flock held across
 *                          the real call, so syncs of one file in different
 *                          processes are serialized and the model is exact.
 *                          A truncation below last_ok lowers it.
 *   FAILFS_LOG=file        an injected failure appends one line there:
 *                          "FAIL <pid> <dev>-<ino> <last_ok> <size> @<login> <ids>",
 *                          ids the X-Torture-Id values of every record that
 *                          overlaps [last_ok, size): mail the sync did not
 *                          make durable. A problem of the shim itself is a
 *                          line "ERROR <what> <errno>" (the model is then
 *                          not to be trusted).
 *
 * A sanitizer build needs its runtime first in the library list: run it
 * with ASAN_OPTIONS=verify_asan_link_order=0 (gcc's shared libasan), or
 * preload the runtime before this shim.
 */
#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* next - the libc (or sanitizer) function this shim stands in front of */
static void *next(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (!f)
		abort();	/* a test setup error: fail loudly */
	return f;
}

/* path_ends - 1 if the path of the file open on fd ends in suffix */
static int path_ends(int fd, const char *suffix)
{
	char link[64], path[4096];
	size_t m = strlen(suffix);
	ssize_t n;

	if (snprintf(link, sizeof link, "/proc/self/fd/%d", fd) >= (int)sizeof link)
		return 0;
	n = readlink(link, path, sizeof path - 1);
	if (n < 0)
		return 0;
	path[n] = '\0';
	return (size_t)n >= m && strcmp(path + n - m, suffix) == 0;
}

/* mailbox_login - to out the name of the directory that holds the file
 * open on fd (users/<login>/mymailbox: the login), "?" if unknown */
static void mailbox_login(int fd, char *out, size_t cap)
{
	char link[64], path[4096], *end, *start;
	ssize_t n;

	(void)snprintf(out, cap, "?");
	if (snprintf(link, sizeof link, "/proc/self/fd/%d", fd) >= (int)sizeof link
	    || (n = readlink(link, path, sizeof path - 1)) < 0)
		return;
	path[n] = '\0';
	if (!(end = strrchr(path, '/')) || end == path)
		return;
	*end = '\0';
	start = strrchr(path, '/');
	(void)snprintf(out, cap, "%s", start ? start + 1 : path);
}

static int settle_armed;	/* FAILFS_SETTLE_ENOSPC: a mailbox's fsync just succeeded */

/* fail_settle - 1 if this write into fd is the armed FAILFS_SETTLE_ENOSPC
 * one: the first write into a lock file after the fsync, the first in the
 * run (its flag file did not exist) */
static int fail_settle(int fd)
{
	const char *flag = getenv("FAILFS_SETTLE_ENOSPC");
	int f;

	if (!settle_armed || !flag || !*flag || !path_ends(fd, "/mymailbox.state"))
		return 0;
	settle_armed = 0;
	f = open(flag, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (f < 0)
		return 0;
	(void)close(f);
	return 1;
}

/* fail_write - 1 (errno ENOSPC) if a write into fd is to fail */
static int fail_write(int fd)
{
	const char *suffix = getenv("FAILFS_ENOSPC");

	if (fail_settle(fd)) {
		errno = ENOSPC;
		return 1;
	}
	if (!suffix || !*suffix || !path_ends(fd, suffix))
		return 0;
	errno = ENOSPC;
	return 1;
}

/* fail_once - 1 if this is the FAILFS_FSYNC_ONCE fsync: the first of a
 * mailbox in the run (its flag file did not exist) */
static int fail_once(int fd)
{
	const char *flag = getenv("FAILFS_FSYNC_ONCE");
	int f;

	if (!flag || !*flag || !path_ends(fd, "/mymailbox"))
		return 0;
	f = open(flag, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (f < 0)
		return 0;
	(void)close(f);
	return 1;
}

/* step_clock - FAILFS_STEP_ON_FAIL: write its seconds into FAILFS_CLOCK_FILE */
static void step_clock(void)
{
	const char *step = getenv("FAILFS_STEP_ON_FAIL"), *file = getenv("FAILFS_CLOCK_FILE");
	FILE *f;

	if (!step || !*step || !file || !*file || !(f = fopen(file, "w")))
		return;
	(void)fprintf(f, "%s\n", step);
	(void)fclose(f);
}

static void fail_pause(void);

/* fail_sync - 1 (errno EIO) if an fsync of fd is to fail */
static int fail_sync(int fd)
{
	const char *dirs = getenv("FAILFS_DIR_FSYNC"), *suffix = getenv("FAILFS_FSYNC");
	struct stat st;
	int fail = 0;

	if (dirs && strcmp(dirs, "1") == 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
		fail = 1;
	if (suffix && *suffix && path_ends(fd, suffix))
		fail = 1;
	if (!fail && fail_once(fd)) {
		fail_pause();	/* others append meanwhile */
		step_clock();
		fail_pause();
		fail = 1;
	}
	if (fail)
		errno = EIO;
	return fail;
}

/* ---------------------------------------------------- the durability model */

enum {
	CHUNK = 65536,			/* one read while scanning a mailbox */
	SCAN_BACK = 64 << 20,		/* how far back a record's start is looked for */
	HEAD_MAX = 8192,		/* where a record's X-Torture-Id must be */
	ID_MAX = 80,			/* the longest id named */
	LOG_MAX = 1 << 16,		/* the longest FAIL line */
	STATE_LEN = 4 * 21		/* a state file: four fixed-width numbers */
};

static const char boundary[] = "\r\n.\r\n";	/* a record's end */
static const char id_header[] = "\r\nX-Torture-Id: ";

/* one tracked file while its state file is locked */
struct model {
	int state;			/* the state file, flocked */
	struct stat st;			/* the mailbox, at the call */
	long long born_s, born_ns;	/* its birth time: a reused inode number is a new file */
	long long last_ok, count;	/* the durable size; syncs so far */
};

/* a FAIL line being built */
struct line {
	char buf[LOG_MAX];
	size_t len;
	int full;
};

/* log_text - append text to FAILFS_LOG in one write (O_APPEND: whole lines) */
static void log_text(const char *text, size_t len)
{
	const char *path = getenv("FAILFS_LOG");
	int fd;

	if (!path || !*path)
		return;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write(fd, text, len) != (ssize_t)len)
		(void)0;	/* nowhere left to tell; the test then finds too few lines */
	(void)close(fd);
}

/* log_error - an "ERROR" line: the shim could not keep its model */
static void log_error(const char *what)
{
	char text[256];
	int n = snprintf(text, sizeof text, "ERROR %d %s %d\n", (int)getpid(), what, errno);

	if (n > 0 && n < (int)sizeof text)
		log_text(text, (size_t)n);
}

/* pread_some - pread up to n bytes, restarting after EINTR and short reads;
 * fewer only at the end of the file. -1 on error. */
static ssize_t pread_some(int fd, char *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, void *, size_t, off_t);
	size_t done = 0;

	if (!real)
		*(void **)&real = next("pread");
	while (done < n) {
		ssize_t got = real(fd, buf + done, n - done, off + (off_t)done);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -1;
		if (got == 0)
			break;
		done += (size_t)got;
	}
	return (ssize_t)done;
}

/* tracked - 1 if the model covers the file open on fd */
static int tracked(int fd)
{
	const char *dir = getenv("FAILFS_STATE");

	return dir && *dir && (path_ends(fd, "/mymailbox") || path_ends(fd, "/mymailbox.new"));
}

/* birth - the file's birth time, which tells a new file from an old one
 * whose inode number it reuses; 0 where the file system keeps none */
static void birth(int fd, struct model *m)
{
	struct statx sx;

	m->born_s = m->born_ns = 0;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &sx) == 0 && (sx.stx_mask & STATX_BTIME)) {
		m->born_s = sx.stx_btime.tv_sec;
		m->born_ns = sx.stx_btime.tv_nsec;
	}
}

/* model_open - lock and read the state of the file open on fd. Returns 1,
 * 0 if the file is not tracked, -1 if the model failed (logged). */
static int model_open(int fd, struct model *m)
{
	char path[4096], text[STATE_LEN + 1];
	long long s, ns;
	ssize_t got;

	if (!tracked(fd))
		return 0;
	if (fstat(fd, &m->st) < 0)
		return log_error("fstat"), -1;
	birth(fd, m);
	if (snprintf(path, sizeof path, "%s/%llu-%llu", getenv("FAILFS_STATE"),
		     (unsigned long long)m->st.st_dev, (unsigned long long)m->st.st_ino)
	    >= (int)sizeof path)
		return errno = ENAMETOOLONG, log_error("state path"), -1;
	m->state = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (m->state < 0)
		return log_error("open state"), -1;
	while (flock(m->state, LOCK_EX) < 0)
		if (errno != EINTR) {
			log_error("flock");
			(void)close(m->state);
			return -1;
		}
	m->last_ok = m->count = 0;
	got = pread_some(m->state, text, STATE_LEN, 0);
	text[got > 0 ? got : 0] = '\0';
	if (got > 0 && (sscanf(text, "%lld %lld %lld %lld", &s, &ns, &m->last_ok, &m->count) != 4
			|| s != m->born_s || ns != m->born_ns))
		m->last_ok = m->count = 0;	/* another file had this inode number */
	return 1;
}

/* model_close - write the state back and unlock it */
static void model_close(struct model *m)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);
	char text[STATE_LEN + 1];

	if (!real)
		*(void **)&real = next("pwrite");
	/* Fixed width: every state has the same length, so no truncation. */
	if (snprintf(text, sizeof text, "%20lld %20lld %20lld %20lld\n", m->born_s, m->born_ns,
		     m->last_ok, m->count) != STATE_LEN
	    || real(m->state, text, STATE_LEN, 0) != STATE_LEN)
		log_error("write state");
	if (close(m->state) < 0)
		log_error("close state");
}

/* record_start - where the record holding byte pos starts: pos itself at
 * a record boundary, else just after the last end of record before it;
 * -1 if the file cannot be read */
static off_t record_start(int fd, off_t pos)
{
	static char buf[CHUNK + 4];
	off_t lo = pos;

	for (int i = 0; i < SCAN_BACK / CHUNK && lo > 0; i++) {
		off_t from = lo > CHUNK ? lo - CHUNK : 0;
		size_t want = (size_t)(lo - from) + (lo < pos ? 4 : 0);	/* overlap */
		ssize_t got = pread_some(fd, buf, want, from);

		if (got != (ssize_t)want)
			return -1;
		for (ssize_t k = got - 5; k >= 0; k--)
			if (memcmp(buf + k, boundary, 5) == 0)
				return from + k + 5;
		lo = from;
	}
	return lo == 0 ? 0 : -1;
}

/* next_record - where the record after the one starting at rec starts,
 * or end if that is at or past end; -1 if the file cannot be read */
static off_t next_record(int fd, off_t rec, off_t end)
{
	static char buf[CHUNK + 4];

	for (off_t at = rec; at < end; at += CHUNK) {
		ssize_t got = pread_some(fd, buf, CHUNK + 4, at);
		char *hit;

		if (got < 0)
			return -1;
		hit = memmem(buf, (size_t)got, boundary, 5);
		if (hit && hit - buf < CHUNK)
			return at + (hit - buf) + 5 < end ? at + (hit - buf) + 5 : end;
		if (got < CHUNK + 4)
			break;	/* the end of the file: the record is not complete */
	}
	return end;
}

/* add - append text to the line; a line too long is marked "+" (the test
 * then fails: its model would be incomplete) */
static void add(struct line *l, const char *text, size_t n)
{
	if (l->full || l->len + n + 2 >= sizeof l->buf) {
		if (!l->full && l->len + 3 < sizeof l->buf)
			memcpy(l->buf + l->len, " +", 2), l->len += 2;
		l->full = 1;
		return;
	}
	memcpy(l->buf + l->len, text, n);
	l->len += n;
}

/* find_id - the X-Torture-Id in the got bytes of a record's start in buf,
 * *stop at its end; NULL if the header is not (yet) all there */
static char *find_id(char *buf, ssize_t got, char **stop)
{
	char *head_end = memmem(buf, (size_t)got, "\r\n\r\n", 4);
	char *id = memmem(buf, head_end ? (size_t)(head_end - buf) + 2 : (size_t)got,
			  id_header, sizeof id_header - 1);

	*stop = id ? memmem(id + 2, (size_t)(buf + got - id - 2), "\r\n", 2) : NULL;
	return id && *stop ? id + sizeof id_header - 1 : NULL;
}

/* name_record - add " <id>" for the record at rec: its X-Torture-Id,
 * looked for in its header; "?" if none. A header still being written
 * (another process appends while this one syncs) is waited for briefly. */
static void name_record(int fd, off_t rec, struct line *l)
{
	static char buf[HEAD_MAX + 1];
	struct timespec pause = { 0, 2000000 };
	char *id = NULL, *stop = NULL;

	for (int i = 0; i < 50 && !id; i++) {
		ssize_t got = pread_some(fd, buf, HEAD_MAX, rec);

		if (got < 0)
			got = 0;
		buf[got] = '\0';
		id = find_id(buf, got, &stop);
		if (id || got == HEAD_MAX || memmem(buf, (size_t)got, "\r\n\r\n", 4))
			break;
		(void)nanosleep(&pause, NULL);
	}
	add(l, " ", 1);
	if (!id || !stop || stop - id > ID_MAX || stop == id || memchr(id, ' ', (size_t)(stop - id)))
		add(l, "?", 1);
	else
		add(l, id, (size_t)(stop - id));
}

/* reader - a descriptor that reads the file open on fd: fd itself, or a
 * new one when fd is write-only (*own says to close it) */
static int reader(int fd, int *own)
{
	char link[64];
	int flags = fcntl(fd, F_GETFL);

	*own = 0;
	if (flags >= 0 && (flags & O_ACCMODE) != O_WRONLY)
		return fd;
	if (snprintf(link, sizeof link, "/proc/self/fd/%d", fd) >= (int)sizeof link)
		return -1;
	*own = 1;
	return open(link, O_RDONLY | O_CLOEXEC);
}

/* log_failure - the FAIL line of an injected failure: every record that
 * overlaps [last_ok, size), the mail this sync would have made durable */
static void log_failure(int fd, const struct model *m)
{
	static struct line l;
	char login[256];
	int own, rfd = reader(fd, &own);
	off_t end = m->st.st_size, rec = rfd < 0 ? -1 : record_start(rfd, m->last_ok);
	int n;

	mailbox_login(fd, login, sizeof login);
	n = snprintf(l.buf, sizeof l.buf, "FAIL %d %llu-%llu %lld %lld @%s", (int)getpid(),
		     (unsigned long long)m->st.st_dev, (unsigned long long)m->st.st_ino,
		     m->last_ok, (long long)end, login);

	l.len = n > 0 ? (size_t)n : 0;
	l.full = 0;
	for (int i = 0; rec >= 0 && rec < end && i < 1000000; i++) {
		name_record(rfd, rec, &l);
		rec = next_record(rfd, rec, end);
	}
	if (rec < 0)
		log_error("read mailbox");
	l.buf[l.len++] = '\n';
	log_text(l.buf, l.len);
	if (own && rfd >= 0)
		(void)close(rfd);
}

/* mix - splitmix64's finalizer: a well-spread hash of x */
static uint64_t mix(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* pick_failure - 1 if this sync of a mailbox is to fail
 * (FAILFS_FSYNC_RANDOM): one in N, from the seed, the file and its count */
static int pick_failure(int fd, const struct stat *st, long long count)
{
	const char *every = getenv("FAILFS_FSYNC_RANDOM"), *seed = getenv("FAILFS_SEED");
	long long n = every ? atoll(every) : 0;
	uint64_t h;

	if (n <= 0 || !path_ends(fd, "/mymailbox"))
		return 0;
	h = mix((seed ? (uint64_t)atoll(seed) : 1) ^ mix((uint64_t)st->st_ino
							  ^ mix((uint64_t)count)));
	return h % (uint64_t)n == 0;
}

/* fail_pause - wait FAILFS_FAIL_MS ms, bounded to a second */
static void fail_pause(void)
{
	const char *ms = getenv("FAILFS_FAIL_MS");
	long n = ms ? atol(ms) : 0;
	struct timespec t;

	if (n <= 0)
		return;
	if (n > 1000)
		n = 1000;
	t.tv_sec = n / 1000;
	t.tv_nsec = (n % 1000) * 1000000L;
	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		continue;
}

/* do_sync - fsync or fdatasync (real) through the model: an injected
 * failure is logged and leaves last_ok; a success moves it to the size
 * the file had before the call. The state stays locked across the real
 * call, so a concurrent sync of the same file waits and sees the result. */
static int do_sync(int fd, int (*real)(int))
{
	static long long calls;		/* the count of a file not modelled */
	struct model m;
	int rc, e;

	if (fail_sync(fd))
		return -1;
	if (model_open(fd, &m) <= 0) {
		if (fstat(fd, &m.st) == 0 && pick_failure(fd, &m.st, ((long long)getpid() << 24) + calls++))
			return errno = EIO, -1;
		rc = real(fd);
		settle_armed = rc == 0 && path_ends(fd, "/mymailbox");
		return rc;
	}
	if (m.st.st_size < m.last_ok)
		m.last_ok = m.st.st_size;
	if (pick_failure(fd, &m.st, m.count)) {
		log_failure(fd, &m);
		m.count++;
		model_close(&m);	/* first: a process killed in the pause counted it */
		fail_pause();
		errno = EIO;
		return -1;
	}
	rc = real(fd);
	e = errno;
	if (rc == 0)
		m.last_ok = m.st.st_size;
	m.count++;
	model_close(&m);
	errno = e;
	return rc;
}

/* truncated - after a successful ftruncate to len: what was durable
 * above len is gone, so last_ok falls to len */
static void truncated(struct model *m, int rc, long long len)
{
	if (rc == 0 && len < m->last_ok)
		m->last_ok = len;
	model_close(m);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	static ssize_t (*real)(int, const void *, size_t);

	if (!real)
		*(void **)&real = next("write");
	return fail_write(fd) ? -1 : real(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	static ssize_t (*real)(int, const struct iovec *, int);

	if (!real)
		*(void **)&real = next("writev");
	return fail_write(fd) ? -1 : real(fd, iov, cnt);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);

	if (!real)
		*(void **)&real = next("pwrite");
	return fail_write(fd) ? -1 : real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off64_t);

	if (!real)
		*(void **)&real = next("pwrite64");
	return fail_write(fd) ? -1 : real(fd, buf, n, off);
}

/* sendfile is sendfile64 in a program built with _FILE_OFFSET_BITS=64 */
ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
	static ssize_t (*real)(int, int, off_t *, size_t);

	if (!real)
		*(void **)&real = next("sendfile");
	return fail_write(out) ? -1 : real(out, in, off, n);
}

ssize_t sendfile64(int out, int in, off64_t *off, size_t n)
{
	static ssize_t (*real)(int, int, off64_t *, size_t);

	if (!real)
		*(void **)&real = next("sendfile64");
	return fail_write(out) ? -1 : real(out, in, off, n);
}

/* boot_path - path, or FAILFS_BOOT_ID_FILE in place of the boot id */
static const char *boot_path(const char *path)
{
	const char *boot = getenv("FAILFS_BOOT_ID_FILE");

	if (boot && *boot && strcmp(path, "/proc/sys/kernel/random/boot_id") == 0)
		return boot;
	return path;
}

/* open_via - open or open64 (real): the boot id from FAILFS_BOOT_ID_FILE.
 * O_CREAT is never asked of that path, so the mode argument (ap) is read
 * and passed on only with it. A program may import either name. */
static int open_via(int (*real)(const char *, int, ...), const char *path, int flags,
		    va_list ap)
{
	if (!(flags & O_CREAT))
		return real(boot_path(path), flags);
	return real(path, flags, (mode_t)va_arg(ap, int));
}

int open(const char *path, int flags, ...)
{
	static int (*real)(const char *, int, ...);
	va_list ap;
	int fd;

	if (!real)
		*(void **)&real = next("open");
	va_start(ap, flags);
	fd = open_via(real, path, flags, ap);
	va_end(ap);
	return fd;
}

int open64(const char *path, int flags, ...)
{
	static int (*real)(const char *, int, ...);
	va_list ap;
	int fd;

	if (!real)
		*(void **)&real = next("open64");
	va_start(ap, flags);
	fd = open_via(real, path, flags, ap);
	va_end(ap);
	return fd;
}

/* gethostname - FAILFS_HOSTNAME, if set */
int gethostname(char *name, size_t len)
{
	static int (*real)(char *, size_t);
	const char *given = getenv("FAILFS_HOSTNAME");

	if (!real)
		*(void **)&real = next("gethostname");
	if (!given || !*given)
		return real(name, len);
	if (strlen(given) >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(name, given, strlen(given) + 1);
	return 0;
}

/* clock_gettime - CLOCK_REALTIME ahead by FAILFS_CLOCK_FILE's seconds */
int clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	const char *file = getenv("FAILFS_CLOCK_FILE");
	long long ahead = 0;
	int rc;
	FILE *f;

	if (!real)
		*(void **)&real = next("clock_gettime");
	rc = real(id, ts);
	if (rc == 0 && id == CLOCK_REALTIME && file && *file && (f = fopen(file, "r"))) {
		if (fscanf(f, "%lld", &ahead) != 1)
			ahead = 0;
		(void)fclose(f);
		ts->tv_sec += (time_t)ahead;
	}
	return rc;
}

int fsync(int fd)
{
	static int (*real)(int);

	if (!real)
		*(void **)&real = next("fsync");
	return do_sync(fd, real);
}

int fdatasync(int fd)
{
	static int (*real)(int);

	if (!real)
		*(void **)&real = next("fdatasync");
	return do_sync(fd, real);
}

int ftruncate(int fd, off_t len)
{
	static int (*real)(int, off_t);
	struct model m;
	int rc, e, modelled = model_open(fd, &m) > 0;

	if (!real)
		*(void **)&real = next("ftruncate");
	rc = real(fd, len);
	e = errno;
	if (modelled)
		truncated(&m, rc, len);
	errno = e;
	return rc;
}

/* ftruncate is ftruncate64 in a program built with _FILE_OFFSET_BITS=64 */
int ftruncate64(int fd, off64_t len)
{
	static int (*real)(int, off64_t);
	struct model m;
	int rc, e, modelled = model_open(fd, &m) > 0;

	if (!real)
		*(void **)&real = next("ftruncate64");
	rc = real(fd, len);
	e = errno;
	if (modelled)
		truncated(&m, rc, len);
	errno = e;
	return rc;
}
