/*
 * fuzz_driver.h - what fuzz_smtp.c and fuzz_pop.c share: a throwaway spool
 * and user file, and one session run over a socketpair.
 *
 * The input is the client's side of the session: a peer thread writes it
 * into one end of a socketpair and shuts down its write side (the session
 * then sees EOF), while it drains the replies, so neither side ever blocks
 * on a full socket buffer; the session itself runs on the other end in the
 * calling thread, exactly as a server child runs it, and closes its fd.
 * Included after the program's .c file (compiled with -Dmain=xxx_main).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>

enum { FUZZ_PEER_TIMEOUT_MS = 10000 };	/* no progress this long: give up */

struct fuzz_feed {
	int fd;
	const uint8_t *data;
	size_t size;
};

static char fuzz_dir[256];	/* the throwaway directory */
static char fuzz_spool[300], fuzz_userfile[300];

/* fuzz_rm - remove path and, for a directory, what is in it (depth bounded) */
static void fuzz_rm(const char *path, int depth)
{
	DIR *d = depth < 4 ? opendir(path) : NULL;
	struct dirent *e;
	char sub[600];

	while (d && (e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0
		    && snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub)
			fuzz_rm(sub, depth + 1);
	if (d)
		closedir(d);
	if (remove(path) < 0 && errno != ENOENT)
		fprintf(stderr, "fuzz: remove %s: %s\n", path, strerror(errno));
}

/* fuzz_cleanup - atexit: remove the throwaway directory */
static void fuzz_cleanup(void)
{
	if (fuzz_dir[0])
		fuzz_rm(fuzz_dir, 0);
}

/* fuzz_dirs - once: <tmp>/<name>-XXXXXX with users/ and user.txt (on tmpfs
 * when /dev/shm is there: deliveries fsync, and fsync on tmpfs is free) */
static void fuzz_dirs(const char *name)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	FILE *f;

	snprintf(fuzz_dir, sizeof fuzz_dir, "%s/%s-XXXXXX", base, name);
	if (!mkdtemp(fuzz_dir))
		abort();
	snprintf(fuzz_spool, sizeof fuzz_spool, "%s/users", fuzz_dir);
	snprintf(fuzz_userfile, sizeof fuzz_userfile, "%s/user.txt", fuzz_dir);
	if (mkdir(fuzz_spool, 0700) < 0 || !(f = fopen(fuzz_userfile, "w")))
		abort();
	fputs("# fuzz accounts\nalice alicepw\nbob\tbobpw\npostmaster pmpw\n", f);
	if (fclose(f) != 0)
		abort();
	atexit(fuzz_cleanup);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
}

/* fuzz_peer - the client: write the input, shut down, drain the replies */
static void *fuzz_peer(void *arg)
{
	struct fuzz_feed *f = arg;
	size_t done = 0;
	int wr_open = 1;
	char sink[65536];

	for (;;) {
		struct pollfd p = { .fd = f->fd, .events = POLLIN | (wr_open ? POLLOUT : 0) };
		ssize_t n;

		if (wr_open && done == f->size) {
			shutdown(f->fd, SHUT_WR);
			wr_open = 0;
			continue;
		}
		if (poll(&p, 1, FUZZ_PEER_TIMEOUT_MS) <= 0)
			break;	/* stuck: the session's own timeout ends it */
		if (wr_open && (p.revents & POLLOUT)) {
			n = send(f->fd, f->data + done, f->size - done, MSG_DONTWAIT);
			if (n > 0)
				done += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				wr_open = 0;	/* the session closed: stop writing */
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = recv(f->fd, sink, sizeof sink, MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;	/* the session closed its end */
		}
	}
	return NULL;
}

/* fuzz_session - one session of the program on the input, its wrong
 * passwords answered at once (what the session returns, its wrong
 * passwords, matters only to a server's parent) */
static void fuzz_session(int (*session)(int, int, const char *, int), const uint8_t *data,
			 size_t size)
{
	int sv[2];
	pthread_t t;
	struct fuzz_feed feed;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	feed = (struct fuzz_feed){ .fd = sv[0], .data = data, .size = size };
	if (pthread_create(&t, NULL, fuzz_peer, &feed) != 0)
		abort();
	(void)session(sv[1], sv[1], "192.0.2.1", 0);	/* closes sv[1] */
	pthread_join(t, NULL);
	close(sv[0]);
}
