/*
 * fuzz_smtp.c - libFuzzer harness: arbitrary bytes as the client's side of
 * one SMTP session, run through smtpmail's own smtp_session().
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Dmain=smtpmail_main \
 *         -o build/fuzz/fuzz_smtp tests/fuzz/fuzz_smtp.c       (make fuzz)
 *   build/fuzz/fuzz_smtp -dict=tests/fuzz/smtp.dict CORPUS tests/fuzz/seeds/smtp
 *   build/fuzz/fuzz_smtp tests/fuzz/regress/smtp/FILE...        (replay)
 *
 * Spool and user file (alice, bob, postmaster) in a throwaway directory,
 * idle timeout 1 s, size limit 1500 bytes so 552 is reachable with small
 * inputs. The mailboxes are removed after each input: runs are independent.
 */
#include "../../smtpmail.c"
#include "fuzz_driver.h"

/* fuzz_forget_mail - remove what the last input delivered */
static void fuzz_forget_mail(void)
{
	static const char *const logins[] = { "alice", "bob", "postmaster" };
	char path[PATH_TEXT_MAX];

	for (size_t i = 0; i < sizeof logins / sizeof logins[0]; i++)
		if (spool_path(path, sizeof path, fuzz_spool, logins[i], "mymailbox") == 0)
			unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;

	if (!ready) {
		fuzz_dirs("fuzz-smtp");
		cfg.spool = fuzz_spool;
		cfg.userfile = fuzz_userfile;
		cfg.hostname = "mx.fuzz.example";
		cfg.timeout = 1;
		cfg.max_size = 1500;
		ready = 1;
	}
	fuzz_session(smtp_session, data, size);
	fuzz_forget_mail();
	return 0;
}
