/*
 * fuzz_pop.c - libFuzzer harness: arbitrary bytes as the client's side of
 * one POP3 session, run through popserver's own pop_session().
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Dmain=popserver_main \
 *         -o build/fuzz/fuzz_pop tests/fuzz/fuzz_pop.c         (make fuzz)
 *   build/fuzz/fuzz_pop -dict=tests/fuzz/pop3.dict CORPUS tests/fuzz/seeds/pop
 *   build/fuzz/fuzz_pop tests/fuzz/regress/pop/FILE...          (replay)
 *
 * Before every input alice's mailbox is written afresh: four records (a
 * stuffed line, an empty body, a long line, 8-bit and NUL bytes) and a
 * partial tail, so every TRANSACTION path and the QUIT update are reachable
 * with "USER alice\r\nPASS alicepw\r\n" (in the seeds and the dictionary);
 * bob has no mailbox. Auth delay 0, idle timeout 1 s.
 */
#include "../../popserver.c"
#include "fuzz_driver.h"

static const char fuzz_mailbox[] =
	"Return-Path: <a@example.org>\r\n"
	"Received: from c ([192.0.2.1])\r\n\tby mx (smtpmail) with SMTP id 1\r\n"
	"\tfor <alice@mx>; Mon, 23 Nov 2026 09:00:00 +0000\r\n"
	"Subject: one\r\n\r\nbody line\r\n..stuffed\r\n...two\r\nend\r\n.\r\n"
	"Return-Path: <>\r\nReceived: from d ([192.0.2.2])\r\n\r\n.\r\n"
	"Return-Path: <b@example.org>\r\nReceived: from e ([192.0.2.3])\r\n"
	"Subject: three\r\n\r\n"
	"0123456789012345678901234567890123456789012345678901234567890123456789"
	"0123456789012345678901234567890123456789012345678901234567890123456789"
	"\r\n\r\n\r\n.\r\n"
	"Return-Path: <c@example.org>\r\nReceived: from f ([192.0.2.4])\r\n"
	"X: \xe9\xff\x00\x01\r\n\r\nlast\r\n.\r\n"
	"Return-Path: <partial@example.org>\r\nReceived: fr";

/* fuzz_reset_mailbox - alice's mailbox as above; bob's removed */
static void fuzz_reset_mailbox(void)
{
	char path[PATH_TEXT_MAX];
	int fd;

	if (spool_path(path, sizeof path, fuzz_spool, "alice", NULL) < 0
	    || (mkdir(path, 0700) < 0 && errno != EEXIST)
	    || spool_path(path, sizeof path, fuzz_spool, "alice", "mymailbox") < 0
	    || (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0)
		abort();
	if (write(fd, fuzz_mailbox, sizeof fuzz_mailbox - 1) != (ssize_t)sizeof fuzz_mailbox - 1
	    || close(fd) < 0)
		abort();
	if (spool_path(path, sizeof path, fuzz_spool, "bob", "mymailbox") == 0)
		unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;

	if (!ready) {
		fuzz_dirs("fuzz-pop");
		cfg.spool = fuzz_spool;
		cfg.userfile = fuzz_userfile;
		cfg.timeout = 1;
		ready = 1;
	}
	fuzz_reset_mailbox();
	fuzz_session(pop_session, data, size);
	return 0;
}
