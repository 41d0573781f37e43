#!/bin/sh
# run-servers.sh - what `make run` does, from the directory that holds the
# programs, user.txt and users/:
#
#   sh tests/run-servers.sh smtp_port pop3_port
#
# Starts smtpmail and popserver on 127.0.0.1 (their logs are appended to
# smtpmail.log and popserver.log) and waits, at most 5 s each, for their
# "listening" lines. If one does not start, its log lines are shown, the
# other is stopped and the client is never run: exit 1. Otherwise mailclient
# runs in the foreground; however it ends (menu 3, end of input, Ctrl-C)
# both servers are stopped by PID and the exit status is 0 (the client's own
# status if it failed).

smtp_port=${1:?usage: run-servers.sh smtp_port pop3_port}
pop_port=${2:?usage: run-servers.sh smtp_port pop3_port}
smtp=
pop=

# stop - stop the servers we started, by PID, and wait for them: none
# outlives this script, whichever way it ends. It runs from the EXIT trap.
# shellcheck disable=SC2317
stop() {
	trap - EXIT
	for pid in $smtp $pop; do
		kill "$pid" 2>/dev/null
	done
	for pid in $smtp $pop; do
		wait "$pid" 2>/dev/null
	done
}

# started prog pid port - wait for prog's own "listening" line (the logs
# are appended to, so the line must carry this pid); 1 if the server exits
# first or stays silent, after showing its log lines.
started() {
	tries=0
	while [ "$tries" -lt 50 ]; do
		grep -qF "$1[$2]: listening" "$1.log" 2>/dev/null && return 0
		grep -qF "$1[$2]: cannot" "$1.log" 2>/dev/null && break
		kill -0 "$2" 2>/dev/null || break
		sleep 0.1
		tries=$((tries + 1))
	done
	echo "make run: $1 did not start on 127.0.0.1 port $3 (log: $1.log):" >&2
	lines=$(grep -F "$1[$2]:" "$1.log" 2>/dev/null | tail -n 5)
	[ -n "$lines" ] || lines=$(tail -n 5 "$1.log" 2>/dev/null)
	printf '%s\n' "$lines" >&2
	return 1
}

trap stop EXIT
# Ctrl-C is one of the normal ways out; the EXIT trap then stops the
# servers. The newline takes the shell prompt off the client's prompt line.
trap 'echo; exit 0' INT
trap 'exit 129' HUP
trap 'exit 143' TERM

./smtpmail -l 127.0.0.1 "$smtp_port" 2>>smtpmail.log &
smtp=$!
./popserver -l 127.0.0.1 "$pop_port" 2>>popserver.log &
pop=$!
started smtpmail "$smtp" "$smtp_port" || exit 1
started popserver "$pop" "$pop_port" || exit 1

echo "smtpmail on 127.0.0.1:$smtp_port, popserver on 127.0.0.1:$pop_port" \
	"(logs: smtpmail.log, popserver.log); accounts: alice/alicepw, bob/bobpw"

# On a terminal the client gets a process group of its own, the terminal's
# foreground one: a Ctrl-C then reaches only the client, not make, which
# would otherwise die of the signal and end `make run` with status 130.
if [ -t 0 ]; then
	set -m
fi
./mailclient 127.0.0.1 "$smtp_port" "$pop_port"
status=$?
set +m
# 130: the client died of the Ctrl-C (SIGINT), a normal way out (dash runs
# the INT trap itself; other shells come here).
if [ "$status" -eq 130 ]; then
	echo
	status=0
fi
exit "$status"
