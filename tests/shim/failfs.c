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
 *
 * A sanitizer build needs its runtime first in the library list: run it
 * with ASAN_OPTIONS=verify_asan_link_order=0 (gcc's shared libasan), or
 * preload the runtime before this shim.
 */
#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* fail_write - 1 (errno ENOSPC) if a write into fd is to fail */
static int fail_write(int fd)
{
	const char *suffix = getenv("FAILFS_ENOSPC");

	if (!suffix || !*suffix || !path_ends(fd, suffix))
		return 0;
	errno = ENOSPC;
	return 1;
}

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
	if (fail)
		errno = EIO;
	return fail;
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

int fsync(int fd)
{
	static int (*real)(int);

	if (!real)
		*(void **)&real = next("fsync");
	return fail_sync(fd) ? -1 : real(fd);
}

int fdatasync(int fd)
{
	static int (*real)(int);

	if (!real)
		*(void **)&real = next("fdatasync");
	return fail_sync(fd) ? -1 : real(fd);
}
