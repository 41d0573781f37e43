# Makefile - the mail trio: smtpmail, popserver, mailclient.
#
#   make          build the programs (-Wall -Wextra -Werror -O2)
#   make run      start both servers on 127.0.0.1 and run mailclient against them
#   make test     build an ASan+UBSan variant and run the whole test suite
#   make bench    the benchmark (see README.md, Performance)
#   make torture  the crash-torture test, long run
#   make fuzz     the libFuzzer harnesses, FUZZ_SECONDS each (clang)
#   make clean

CC      ?= cc
CFLAGS  ?= -O2
WARN    = -Wall -Wextra -Werror
SANFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
           -fno-sanitize-recover=undefined
PYTHON  ?= python3

# Every program whose source is present (each .c builds alone).
PROGS   = $(basename $(wildcard smtpmail.c popserver.c mailclient.c))
ASAN    = $(addprefix build/asan/,$(PROGS))

SMTP_PORT ?= 2525
POP3_PORT ?= 1100
FUZZ_SECONDS ?= 60

.PHONY: all test run bench torture fuzz clean

all: $(PROGS)

%: %.c
	$(CC) $(WARN) $(CFLAGS) -o $@ $<

build/asan/%: %.c
	@mkdir -p build/asan
	$(CC) $(WARN) $(SANFLAGS) -o $@ $<

# The suite runs against the sanitizer build; MAIL_BIN tells it where that is.
test: $(ASAN)
	MAIL_BIN=build/asan $(PYTHON) tests/run.py

# The newcomer's command: servers on loopback with the sample accounts in
# user.txt and the spool users/, the client in the foreground; the trap
# stops both servers (by PID) however the client ends, Ctrl-C included.
run: all
	@set -e; \
	./smtpmail -l 127.0.0.1 $(SMTP_PORT) 2>>smtpmail.log & smtp=$$!; \
	./popserver -l 127.0.0.1 $(POP3_PORT) 2>>popserver.log & pop=$$!; \
	trap 'kill $$smtp $$pop 2>/dev/null; wait $$smtp $$pop 2>/dev/null' EXIT INT TERM; \
	sleep 0.3; \
	echo "smtpmail on 127.0.0.1:$(SMTP_PORT), popserver on 127.0.0.1:$(POP3_PORT)" \
	     "(logs: smtpmail.log, popserver.log); accounts: alice/alicepw, bob/bobpw"; \
	./mailclient 127.0.0.1 $(SMTP_PORT) $(POP3_PORT) || true

clean:
	rm -rf $(PROGS) build smtpmail.log popserver.log tests/__pycache__
