# Makefile - the mail trio: smtpmail, popserver, mailclient.
#
#   make          build the programs (-Wall -Wextra -O2)
#   make run      start both servers on 127.0.0.1 and run mailclient against them
#   make test     build an ASan+UBSan variant and run the whole test suite
#   make bench    the benchmark (tests/README.md "Performance")
#   make torture  the crash-torture test, long run
#   make fuzz     the libFuzzer harnesses, FUZZ_SECONDS each (clang)
#   make clean

CC      ?= cc
CFLAGS  ?= -O2
WARN    = -Wall -Wextra
# Warnings are errors only in the builds the tests and CI use: a newer
# compiler with new warnings must not refuse to build the hand-in.
WERROR  = -Werror
SANFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
           -fno-sanitize-recover=undefined
PYTHON  ?= python3
# smtpmail's MX lookup (res_nquery, dn_expand, dn_skipname) is in glibc's
# libc since 2.34. An older glibc, or macOS, keeps it in libresolv:
# make LDLIBS=-lresolv
LDLIBS  ?=

# Every program whose source is present (each .c builds alone).
PROGS   = $(basename $(wildcard smtpmail.c popserver.c mailclient.c))
ASAN    = $(addprefix build/asan/,$(PROGS))

SMTP_PORT ?= 2525
POP3_PORT ?= 1100
FUZZ_SECONDS ?= 60

.PHONY: all test run bench torture fuzz clean

all: $(PROGS)

%: %.c
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

build/asan/%: %.c
	@mkdir -p build/asan
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(SANFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

# The suite runs against the sanitizer build; MAIL_BIN tells it where that is.
test: $(ASAN)
	MAIL_BIN=build/asan $(PYTHON) tests/run.py

# The newcomer's command: both servers on loopback with the sample accounts
# of user.txt and the spool users/, then the client in the foreground once
# both listen; tests/run-servers.sh says how it starts and stops them.
run: all
	@sh tests/run-servers.sh $(SMTP_PORT) $(POP3_PORT)

clean:
	rm -rf $(PROGS) build smtpmail.log popserver.log tests/__pycache__

# ---------------------------------------------------------------- proof
# bench: tests/bench.c (C, -O2) starts the -O2 servers itself on free ports;
# torture: the sanitizer servers under SIGKILL; fuzz: libFuzzer (clang).
TORTURE_SECONDS ?= 300
FUZZ_CC    = clang
FUZZ_FLAGS = -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
             -fno-sanitize-recover=undefined

build/bench: tests/bench.c
	@mkdir -p build
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) -O2 $(LDFLAGS) -o $@ tests/bench.c $(LDLIBS)

# The POP3 figures are also ratios to the popserver of BENCH_BASE (the commit
# before the POP3 speed-ups), built from git each time; without
# git history the bench runs without it.
BENCH_BASE ?= 1038e320d66880a4fe986b3c2018de6254c8bf9b

bench: build/bench smtpmail popserver
	@rm -rf build/base; \
	if git cat-file -e '$(BENCH_BASE):popserver.c' 2>/dev/null; then \
	    mkdir -p build/base && git show '$(BENCH_BASE):popserver.c' >build/base/popserver.c \
	    && $(CC) $(CPPFLAGS) $(WARN) -O2 $(LDFLAGS) -o build/base/popserver \
	           build/base/popserver.c $(LDLIBS); \
	else echo "bench: no $(BENCH_BASE) in git: no base popserver"; fi
	./build/bench -B . $$(test -x build/base/popserver && echo "-b build/base/popserver")

torture: build/asan/smtpmail build/asan/popserver
	MAIL_BIN=build/asan $(PYTHON) tests/torture.py --seconds $(TORTURE_SECONDS)

build/fuzz/fuzz_smtp: tests/fuzz/fuzz_smtp.c tests/fuzz/fuzz_driver.h smtpmail.c
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(CPPFLAGS) $(WARN) $(WERROR) $(FUZZ_FLAGS) -Dmain=smtpmail_main $(LDFLAGS) \
	    -o $@ tests/fuzz/fuzz_smtp.c $(LDLIBS)

build/fuzz/fuzz_pop: tests/fuzz/fuzz_pop.c tests/fuzz/fuzz_driver.h popserver.c
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(CPPFLAGS) $(WARN) $(WERROR) $(FUZZ_FLAGS) -Dmain=popserver_main $(LDFLAGS) \
	    -o $@ tests/fuzz/fuzz_pop.c $(LDLIBS)

build/fuzz/fuzz_mbox: tests/fuzz/fuzz_mbox.c popserver.c
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(CPPFLAGS) $(WARN) $(WERROR) $(FUZZ_FLAGS) -Dmain=popserver_main $(LDFLAGS) \
	    -o $@ tests/fuzz/fuzz_mbox.c $(LDLIBS)

# New inputs go to build/fuzz/corpus-*, findings to build/fuzz/*-crash-*;
# keep a finding under tests/fuzz/regress/ (make test replays them).
fuzz: build/fuzz/fuzz_smtp build/fuzz/fuzz_pop build/fuzz/fuzz_mbox
	@mkdir -p build/fuzz/corpus-smtp build/fuzz/corpus-pop build/fuzz/corpus-mbox
	build/fuzz/fuzz_smtp -max_total_time=$(FUZZ_SECONDS) -close_fd_mask=2 \
	    -dict=tests/fuzz/smtp.dict -artifact_prefix=build/fuzz/smtp- \
	    build/fuzz/corpus-smtp tests/fuzz/seeds/smtp
	build/fuzz/fuzz_pop -max_total_time=$(FUZZ_SECONDS) -close_fd_mask=2 \
	    -dict=tests/fuzz/pop3.dict -artifact_prefix=build/fuzz/pop- \
	    build/fuzz/corpus-pop tests/fuzz/seeds/pop
	build/fuzz/fuzz_mbox -max_total_time=$(FUZZ_SECONDS) -close_fd_mask=2 \
	    -artifact_prefix=build/fuzz/mbox- build/fuzz/corpus-mbox tests/fuzz/seeds/mbox
