/* submission.c - one program of a faulty submission for the grading kit's
 * own tests: it runs tests/faulty/mailpair.py (a server) or
 * tests/faulty/client.py (the client) with the fault the test chose. The
 * test writes the submission's smtpmail.c, popserver.c and mailclient.c as
 *
 *     #define SCRIPT "/abs/path/tests/faulty/mailpair.py"
 *     #define ROLE "smtp"            (smtp, pop3 or client)
 *     #define FAULT "nul-pad"        ("" for none)
 *     #include "/abs/path/tests/faulty/submission.c"
 *
 * so that grade.sh builds it with `cc -o smtpmail smtpmail.c` as it builds
 * a student's file. A server is called as the assignment says (one port)
 * and keeps its mail in the current directory (<user>/mymailbox). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char *args[16];
	int n = 0;

	args[n++] = "python3";
	args[n++] = SCRIPT;
	if (strcmp(ROLE, "client") == 0) {
		/* The client's arguments as given: host, ports. */
		for (int i = 1; i < argc && n < 12; i++)
			args[n++] = argv[i];
	} else {
		if (argc < 2) {
			fprintf(stderr, "usage: %s port\n", argv[0]);
			return 2;
		}
		/* A student's log line: lost at exec unless stdout is line-buffered. */
		printf("%s server starting on port %s\n", ROLE, argv[1]);
		args[n++] = argv[1];
		args[n++] = argv[1];
		args[n++] = "--only";
		args[n++] = ROLE;
		args[n++] = "--spool";
		args[n++] = ".";
	}
	if (FAULT[0] != '\0') {
		args[n++] = "--fault";
		args[n++] = FAULT;
	}
	args[n] = NULL;
	execvp(args[0], args);
	perror("python3");
	return 1;
}
