#!/bin/bash
# grade.sh - grade a folder of mail-assignment submissions with the kit.
#
#   tests/grade.sh [-o dir] [-t seconds] [-k 'kit options'] [-c 'client args']
#                  [-C] [-n] [-p 'smtp_port pop3_port'] DIR...
#
# Each DIR holds one submission: smtpmail.c, popserver.c and mailclient.c.
# For each, in a temporary directory: build the three with cc (a failure is
# a row, not a crash); lay out the assignment's directory (user.txt with the
# accounts alice/alicepw and bob/bobpw, one subdirectory per user); start
# ./smtpmail <port> and ./popserver <port> there, exactly as the assignment
# says; run tests/conform.py against them, driving ./mailclient on a pty;
# stop everything it started; print one CSV row on stdout:
#
#   submission,build,assignment,rfc,robust,extra,client,notes
#
# A score is passed/run ("-": not run); notes name the failed checks and
# what went wrong around them. Per submission, <dir of -o>/<name>/ keeps
# build-*.txt, smtpmail.log, popserver.log, kit.txt (the kit's table, with
# each check's source), kit.json and client.txt (what the client showed).
#
# Isolation: when `unshare -rn` works (user and network namespaces), each
# submission runs in a network namespace of its own whose only interface is
# loopback, so the servers (which listen on every address, as the
# assignment's start-up gives them no address) are reachable from nowhere
# else, and ports 2525 and 1100 are free. Otherwise, or with -n, they run in
# the host's network on free ports, listening on all its addresses while
# they are graded. See tests/GRADING.md.
#
#   -o dir      keep each submission's logs in dir/<name>/ (default: a new
#               temporary directory, named on stderr at the end)
#   -t seconds  the time limit per submission (default 300)
#   -k options  more options for conform.py, split at spaces
#               (e.g. -k '--level assignment,rfc --timeout 5')
#   -c args     how the client is called (default '{host} {smtp} {pop3}')
#   -C          do not drive the client
#   -n          no network namespace
#   -p ports    the SMTP and POP3 ports (default 2525 1100 in a namespace,
#               free ones otherwise)
#
# Exit status: 0 when every row was printed, 2 on bad usage.

here=$(cd "$(dirname "$0")" && pwd)
kit=$here/conform.py
CC=${CC:-cc}
ACCOUNTS="alice:alicepw bob:bobpw"

# ---------------------------------------------------------------- inner
# grade.sh --inner work out client_args ports kit_options: one submission's
# servers, kit and client, inside the namespace when there is one. It writes
# out/kit.json, out/notes and out/pids (the process groups it started).

stop_group() {
	kill -TERM -- "-$1" 2>/dev/null || return 0
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		kill -0 -- "-$1" 2>/dev/null || return 0
		sleep 0.2
	done
	kill -KILL -- "-$1" 2>/dev/null
}

inner() {
	work=$1 out=$2 client=$3 ports=$4
	shift 4
	if [ "$ports" = ns ]; then
		ip link set lo up 2>/dev/null || python3 -c '
import fcntl, socket, struct
s = socket.socket()
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))'
		ports=${GRADE_PORTS:-2525 1100}
	fi
	# shellcheck disable=SC2086  # two words: the ports
	set -- $ports "$@"
	smtp_port=$1 pop_port=$2
	shift 2
	srv=$work/server
	for account in $ACCOUNTS; do
		printf '%s %s\n' "${account%%:*}" "${account#*:}" >>"$srv/user.txt"
		mkdir -p "$srv/${account%%:*}"
	done
	: >"$out/notes"
	pids=
	for prog in smtpmail:$smtp_port popserver:$pop_port; do
		(cd "$srv" && exec setsid "./${prog%%:*}" "${prog#*:}" \
			</dev/null >"$out/${prog%%:*}.log" 2>&1) &
		pids="$pids $!"
		echo "$!" >>"$out/pids"
	done
	users=
	for account in $ACCOUNTS; do
		users="$users --user $account"
	done
	if [ -n "$client" ]; then
		set -- --client "$srv/mailclient $client" --client-log "$out/client.txt" "$@"
	fi
	# shellcheck disable=SC2086
	python3 "$kit" --smtp "127.0.0.1:$smtp_port" --pop3 "127.0.0.1:$pop_port" $users \
		--wait 5 --budget "$((GRADE_TIME - 20))" --json --report "$out/kit.txt" "$@" \
		>"$out/kit.json" 2>"$out/kit.err"
	# shellcheck disable=SC2086
	set -- $pids
	for prog in smtpmail popserver; do
		if ! kill -0 "$1" 2>/dev/null; then
			wait "$1"
			echo "$prog exited (status $?) before the kit ended" >>"$out/notes"
		fi
		shift
	done
	for pid in $pids; do
		stop_group "$pid"
	done
}

if [ "$1" = --inner ]; then
	shift
	inner "$@"
	exit 0
fi

# ---------------------------------------------------------------- outer

usage() {
	sed -n '3,4p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

out_dir='' limit=300 kit_opts='' client_args='{host} {smtp} {pop3}' ns=yes ports=
while getopts o:t:k:c:Cnp: opt; do
	case $opt in
	o) out_dir=$OPTARG ;;
	t) limit=$OPTARG ;;
	k) kit_opts=$OPTARG ;;
	c) client_args=$OPTARG ;;
	C) client_args= ;;
	n) ns= ;;
	p) ports=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage
case $limit in '' | *[!0-9]*) usage ;; esac
[ "$limit" -ge 30 ] || { echo "grade.sh: -t needs at least 30 seconds" >&2; exit 2; }
export GRADE_TIME=$limit GRADE_PORTS=$ports

# The namespaces: user+net+pid (whatever a submission leaves behind dies
# with it), else user+net, else none.
wrap='' pidns=
if [ -n "$ns" ]; then
	if unshare -rnpf --kill-child true 2>/dev/null; then
		wrap="unshare -rnpf --kill-child" pidns=yes
	elif unshare -rn true 2>/dev/null; then
		wrap="unshare -rn"
	else
		echo "grade.sh: unshare -rn does not work here: the servers run in the host's" \
			"network, listening on all its addresses while graded" >&2
	fi
fi
if [ -z "$out_dir" ]; then
	out_dir=$(mktemp -d "${TMPDIR:-/tmp}/grade.XXXXXX") || exit 1
	announce=yes
fi
mkdir -p "$out_dir" || exit 1

# row name build notes_file json: one CSV row from the kit's JSON (if any).
row() {
	python3 - "$@" <<'EOF'
import csv, json, sys
name, build, notes_file, path = sys.argv[1:5]
notes = []
levels = ("assignment", "rfc", "robust", "extra", "client")
try:
    kit = json.load(open(path))
except (OSError, ValueError):
    kit = None
    if path != "/nonexistent":
        notes = ["the kit left no report (see kit.err)"]
try:
    notes += [l.strip() for l in open(notes_file) if l.strip()]
except OSError:
    pass
fields = [name, build]
if kit is None:
    fields += ["-"] * len(levels)
else:
    for level in levels:
        s = kit["score"].get(level)
        fields.append("%d/%d" % (s["passed"], s["passed"] + s["failed"]) if s else "-")
    failed = [c["name"] for c in kit["checks"] if c["result"] == "fail"
              and not c["reason"].startswith("not run:")]
    not_run = len([c for c in kit["checks"] if c["reason"].startswith("not run:")])
    if not_run:
        notes.insert(0, "%d checks not run (out of time)" % not_run)
    if failed:
        notes.insert(0, "failed: " + " ".join(failed))
fields.append("; ".join(notes))
csv.writer(sys.stdout, lineterminator="\n").writerow(fields)
EOF
}

# free_ports: two loopback ports that were free a moment ago.
free_ports() {
	python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'
}

# build source binary log: cc, bounded in time. CC may carry flags
# (CC='gcc -std=gnu99'), so it is split at spaces.
build() {
	# shellcheck disable=SC2086
	timeout 120 $CC -o "$2" "$1" >"$3" 2>&1
}

# grade dir: build, run, print the row.
grade() {
	dir=${1%/}
	name=$(basename "$dir")
	out=$out_dir/$name
	rm -rf "$out"
	mkdir -p "$out"
	work=$(mktemp -d "${TMPDIR:-/tmp}/grade-work.XXXXXX") || return 1
	mkdir "$work/server"
	broken='' notes=
	for prog in smtpmail popserver mailclient; do
		if [ ! -f "$dir/$prog.c" ]; then
			broken="$broken $prog.c"
			notes="$notes; $prog.c missing"
		elif ! build "$dir/$prog.c" "$work/server/$prog" "$out/build-$prog.txt"; then
			broken="$broken $prog.c"
			first=$(grep -m 1 -i 'error' "$out/build-$prog.txt" | sed "s|^$dir/||")
			notes="$notes; $prog.c: ${first:-cc failed}"
		fi
	done
	printf '%s\n' "${notes#; }" | tr ';' '\n' | sed 's/^ //' >"$out/notes"
	case $broken in
	*smtpmail.c* | *popserver.c*)
		row "$name" "failed:$broken" "$out/notes" /nonexistent
		rm -rf "$work"
		return
		;;
	esac
	client=$client_args
	case $broken in *mailclient.c*) client= ;; esac
	run_ports=ns
	[ -n "$wrap" ] || run_ports=${ports:-$(free_ports)}
	# shellcheck disable=SC2086
	timeout -k 5 "$limit" $wrap bash "$0" --inner "$work" "$out" "$client" "$run_ports" \
		$kit_opts 2>"$out/grade.err"
	status=$?
	cat "$out/notes" >"$out/notes.all" 2>/dev/null
	if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
		echo "stopped after the time limit of $limit s" >>"$out/notes.all"
	fi
	# Without a PID namespace, nothing it started outlives it (by process group).
	if [ -z "$pidns" ] && [ -f "$out/pids" ]; then
		while read -r pid; do
			stop_group "$pid"
		done <"$out/pids"
	fi
	build=ok
	[ -z "$broken" ] || build="failed:$broken"
	row "$name" "$build" "$out/notes.all" "$out/kit.json"
	rm -rf "$work"
}

echo "submission,build,assignment,rfc,robust,extra,client,notes"
for dir in "$@"; do
	if [ -d "$dir" ]; then
		grade "$dir"
	else
		row "$(basename "$dir")" "not a directory" /nonexistent /nonexistent
	fi
done
[ -z "$announce" ] || echo "grade.sh: logs in $out_dir" >&2
exit 0
