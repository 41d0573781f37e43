#!/bin/bash
# grade.sh - grade a folder of mail-assignment submissions with the kit.
#
#   tests/grade.sh [-o dir] [-t seconds] [-b seconds] [-j jobs] [-k 'kit options']
#                  [-c 'client args'] [-C] [-m client] [-r dir] [-n]
#                  [-p 'smtp_port pop3_port'] DIR...
#
# Each DIR holds one submission: smtpmail.c, popserver.c and mailclient.c
# (or a common misnaming of them, such as pop3server.c or smptmail.c, in DIR
# or in one folder inside it: the notes say which file served as which).
# For each, in a temporary directory: build the three with cc (a failure is
# a row, not a crash); lay out the assignment's directory (the submission's
# user.txt if it has one, else the accounts alice/alicepw and bob/bobpw; one
# subdirectory per user); start ./smtpmail <port> and ./popserver <port>
# there, exactly as the assignment says, under limits (CPU time, processes,
# memory); wait until they listen (read from the socket table: no probe
# connection); grade the ports they listen on if not the ones asked; run
# tests/conform.py against them, driving ./mailclient on a pty; stop
# everything it started; print one CSV row on stdout:
#
#   submission,build,assignment,rfc,robust,extra,client,not_run,notes
#
# A score is passed/run (a check skipped or not run is left out; "-": no
# check run at that level); not_run counts the checks that could not run
# (the time limit, a step before them failed); notes give the root causes
# first, grouped, then the failed checks. Per submission, <dir of -o>/<name>/
# keeps build-*.txt, smtpmail.log, popserver.log, kit.jsonl (each check's
# result as it finished: a run stopped half-way keeps what it did), kit.json,
# kit.txt (the table, with each check's source) and client.txt.
#
# A file DIR.grade beside a submission sets things for it alone, one
# "key = value" a line: ports (the ports its servers take, "20000 40000"),
# client (its client's arguments, or none), accounts ("user:password
# user:password"), kit (more kit options).
#
# Isolation: when `unshare -rn` works, each submission runs in namespaces of
# its own (network, and PID and mount where they work) whose only interface
# is loopback, with localhost and 127.0.0.1 resolving as on a host: the
# servers are reachable from nowhere else, ports 2525 and 1100 are free, and
# every process a submission leaves behind dies with its namespace.
# Otherwise, or with -n, they run in the host's network on free ports. See
# tests/GRADING.md. Ctrl-C, a closed terminal or a kill stops everything at
# once and removes every temporary file.
#
#   -o dir      keep each submission's logs in dir/<name>/ (default: a new
#               temporary directory, named on stderr at the end)
#   -t seconds  the time limit per submission (default 300)
#   -b seconds  the time limit per check (default 60)
#   -j jobs     grade this many submissions at once (default 1)
#   -k options  more options for conform.py, split at spaces
#               (e.g. -k '--level assignment,rfc --timeout 5')
#   -c args     how the client is called (default '{host} {smtp} {pop3}')
#   -C          do not drive the client
#   -m program  drive this client (ours, say) instead of the submission's,
#               to grade the submission's servers with a client known good
#   -r dir      grade the submission's client against the servers of dir
#               (smtpmail.c and popserver.c known good, ours say), in a run
#               of its own, instead of against the submission's servers
#   -n          no network namespace
#   -p ports    the SMTP and POP3 ports (default 2525 1100 in a namespace,
#               free ones otherwise)
#
# Limits per submission's servers (environment): GRADE_CPU (CPU seconds per
# process, 30), GRADE_PROCS (processes, 256), GRADE_MEM (KiB of memory per
# process, 1048576).
#
# Exit status: 0 when every row was printed, 2 on bad usage, 130 when stopped.

here=$(cd "$(dirname "$0")" && pwd)
kit=$here/conform.py
CC=${CC:-cc}
DEFAULT_ACCOUNTS="alice:alicepw bob:bobpw"

# Where a misnamed file of each role may be, first the assignment's name.
SMTP_NAMES="smtpmail.c smptmail.c smtp_mail.c smtpserver.c smtp_server.c smtp.c"
POP_NAMES="popserver.c pop3server.c pop3mail.c popmail.c pop_server.c pop3_server.c pop3.c"
CLIENT_NAMES="mailclient.c mail_client.c mailclnt.c client.c"

stop_group() {
	kill -TERM -- "-$1" 2>/dev/null || return 0
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		kill -0 -- "-$1" 2>/dev/null || return 0
		sleep 0.2
	done
	kill -KILL -- "-$1" 2>/dev/null
}

# listeners PGID...: "port pgid" for each TCP socket in LISTEN state held
# by a process of those process groups, read from /proc (no connection is
# made: a server that serves one connection keeps it for the kit).
listeners() {
	python3 - "$@" <<'EOF'
import os, sys
groups = set(sys.argv[1:])
ports = {}
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if len(f) > 9 and f[3] == "0A":
            ports[f[9]] = int(f[1].rsplit(":", 1)[1], 16)
seen = set()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open("/proc/%s/stat" % pid).read()
        pgid = stat[stat.rindex(")") + 2:].split()[2]
        if pgid not in groups:
            continue
        fds = os.listdir("/proc/%s/fd" % pid)
    except (OSError, ValueError, IndexError):
        continue
    for fd in fds:
        try:
            link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
        except OSError:
            continue
        inode = link[8:-1] if link.startswith("socket:[") else None
        if inode in ports and (ports[inode], pgid) not in seen:
            seen.add((ports[inode], pgid))
            print(ports[inode], pgid)
EOF
}

# ---------------------------------------------------------------- inner
# grade.sh --inner work out client ports accounts kit_options: one
# submission's servers, kit and client, inside the namespaces when there
# are. It writes out/kit.jsonl, out/kit.json, out/notes.run and out/pids.

host_like() {
	ip link set lo up 2>/dev/null || python3 -c '
import fcntl, socket, struct
s = socket.socket()
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))'
	# A server that looks its client up (getnameinfo) must find
	# 127.0.0.1 and localhost as on a host, without a DNS server.
	if [ -n "$GRADE_MOUNTNS" ] && ! grep -qE '^127\.0\.0\.1[[:space:]]+(.*[[:space:]])?localhost([[:space:]]|$)' /etc/hosts 2>/dev/null; then
		{
			echo "127.0.0.1 localhost"
			echo "::1 localhost ip6-localhost"
			cat /etc/hosts 2>/dev/null
		} >"$1/hosts"
		mount --bind "$1/hosts" /etc/hosts 2>/dev/null
	fi
}

# start_server name port: in its own process group, line-buffered, under
# the limits; its pid (= its process group) in out/pids.
start_server() {
	(
		cd "$srv" || exit 1
		ulimit -t "${GRADE_CPU:-30}" 2>/dev/null
		ulimit -u "${GRADE_PROCS:-256}" 2>/dev/null
		ulimit -v "${GRADE_MEM:-1048576}" 2>/dev/null
		buffer=
		command -v stdbuf >/dev/null && buffer="stdbuf -oL -eL"
		# shellcheck disable=SC2086
		exec setsid $buffer "./$1" "$2" </dev/null >"$out/$1.log" 2>&1
	) &
	echo "$!" >>"$out/pids"
	eval "pid_$1=\$!"
}

# ports_of pgid: the ports that group listens on, space-separated.
ports_of() {
	printf '%s\n' "$found" | awk -v g="$1" '$2 == g { printf "%s ", $1 }'
}

inner() {
	work=$1 out=$2 client=$3 ports=$4 accounts=$5
	shift 5
	srv=$work/server
	if [ "$ports" = ns ]; then
		host_like "$work"
		ports=${GRADE_PORTS:-2525 1100}
	fi
	# shellcheck disable=SC2086  # two words: the ports
	set -- $ports "$@"
	smtp_port=$1 pop_port=$2
	shift 2
	users=
	if [ -n "$own_users" ]; then
		# The submission's user.txt: a mailbox folder for every user in it.
		awk 'NF >= 2 { print $1 }' "$srv/user.txt" | while read -r login; do
			case $login in */* | . | ..) ;; *) mkdir -p "$srv/$login" ;; esac
		done
	fi
	for account in $accounts; do
		[ -f "$srv/user.txt" ] && [ -n "$own_users" ] ||
			printf '%s %s\n' "${account%%:*}" "${account#*:}" >>"$srv/user.txt"
		mkdir -p "$srv/${account%%:*}"
		users="$users --user $account"
	done
	: >"$out/notes.run"
	pid_smtpmail='' pid_popserver=''
	start_server smtpmail "$smtp_port"
	start_server popserver "$pop_port"
	# Ready when each server listens somewhere or has exited (or after
	# 5 s): read from the socket table.
	found=
	for _ in $(seq 50); do
		found=$(listeners "$pid_smtpmail" "$pid_popserver")
		waiting=
		for pid in $pid_smtpmail $pid_popserver; do
			if [ -z "$(ports_of "$pid")" ] && kill -0 "$pid" 2>/dev/null; then
				waiting=yes
			fi
		done
		[ -n "$waiting" ] || break
		sleep 0.1
	done
	smtp_use=$(pick "$smtp_port" "$(ports_of "$pid_smtpmail")")
	pop_use=$(pick "$pop_port" "$(ports_of "$pid_popserver")")
	if [ "$smtp_use" != "$smtp_port" ] && [ "$pop_use" != "$pop_port" ]; then
		echo "nothing listened on $smtp_port/$pop_port; the servers listened on $smtp_use and $pop_use: graded there" >>"$out/notes.run"
	elif [ "$smtp_use" != "$smtp_port" ]; then
		echo "nothing listened on SMTP port $smtp_port; smtpmail listened on $smtp_use: graded there" >>"$out/notes.run"
	elif [ "$pop_use" != "$pop_port" ]; then
		echo "nothing listened on POP3 port $pop_port; popserver listened on $pop_use: graded there" >>"$out/notes.run"
	elif [ -z "$found" ]; then
		echo "nothing listened on $smtp_port/$pop_port within 5 s" >>"$out/notes.run"
	fi
	if [ -n "$client" ]; then
		mkdir -p "$work/client"
		set -- --client "$client" --client-log "$out/client.txt" \
			--client-cwd "$work/client" "$@"
	fi
	# shellcheck disable=SC2086
	python3 "$kit" --smtp "127.0.0.1:$smtp_use" --pop3 "127.0.0.1:$pop_use" $users \
		--spool "$srv" --budget "$((GRADE_TIME - 15))" --check-timeout "$GRADE_CHECK" \
		--stream "$out/kit.jsonl" --json --report "$out/kit.txt" "$@" \
		>"$out/kit.json" 2>"$out/kit.err"
	for prog in smtpmail popserver; do
		eval "pid=\$pid_$prog"
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			echo "$prog exited (status $?) before the kit ended" >>"$out/notes.run"
		fi
	done
	for pid in $pid_smtpmail $pid_popserver; do
		stop_group "$pid"
	done
}

# pick asked found: the asked port if the server listens there, else the
# first port it listens on, else the asked one.
pick() {
	case " $2 " in *" $1 "*) echo "$1"; return ;; esac
	# shellcheck disable=SC2086  # the ports found, one word each
	set -- "$1" $2
	echo "${2:-$1}"
}

if [ "$1" = --inner ]; then
	shift
	own_users=$GRADE_OWN_USERS
	inner "$@"
	exit 0
fi

# ---------------------------------------------------------------- outer

usage() {
	sed -n '3,4p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

out_dir='' limit=300 check=60 jobs=1 kit_opts='' client_args='{host} {smtp} {pop3}' ns=yes ports=
client_prog='' ref_dir=''
while getopts o:t:b:j:k:c:Cnp:m:r: opt; do
	case $opt in
	o) out_dir=$OPTARG ;;
	t) limit=$OPTARG ;;
	b) check=$OPTARG ;;
	j) jobs=$OPTARG ;;
	k) kit_opts=$OPTARG ;;
	c) client_args=$OPTARG ;;
	C) client_args= ;;
	n) ns= ;;
	p) ports=$OPTARG ;;
	m) client_prog=$OPTARG ;;
	r) ref_dir=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage
for n in "$limit" "$check" "$jobs"; do
	case $n in '' | *[!0-9]*) usage ;; esac
done
[ "$limit" -ge 20 ] || { echo "grade.sh: -t needs at least 20 seconds" >&2; exit 2; }
if [ "$check" -lt 1 ] || [ "$jobs" -lt 1 ]; then
	usage
fi
export GRADE_TIME=$limit GRADE_CHECK=$check GRADE_PORTS=$ports

# The namespaces: user+net+pid+mount (whatever a submission leaves behind
# dies with it; /proc shows its processes; /etc/hosts can be its own), else
# user+net, else none.
wrap=''
if [ -n "$ns" ]; then
	if unshare -rnpfm --kill-child --mount-proc true 2>/dev/null; then
		wrap="unshare -rnpfm --kill-child --mount-proc"
		export GRADE_MOUNTNS=yes
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
# Absolute: the servers' logs are opened after a cd.
out_dir=$(cd "$out_dir" && pwd) || exit 1
# Every temporary file of this run is under one directory, removed at the end.
tmp_root=$(mktemp -d "${TMPDIR:-/tmp}/grade-work.XXXXXX") || exit 1
if [ -n "$client_prog" ]; then
	[ -x "$client_prog" ] || { echo "grade.sh: -m $client_prog: not a program" >&2; exit 2; }
	client_prog=$(cd "$(dirname "$client_prog")" && pwd)/$(basename "$client_prog")
fi

# descendants pid: every process below pid, deepest last.
# shellcheck disable=SC2317  # called from the trap
descendants() {
	python3 - "$1" <<'EOF'
import os, sys
children = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open("/proc/%s/stat" % pid).read()
        children.setdefault(stat[stat.rindex(")") + 2:].split()[1], []).append(pid)
    except (OSError, ValueError, IndexError):
        pass
todo, out = [sys.argv[1]], []
while todo:
    for child in children.get(todo.pop(), []):
        out.append(child)
        todo.append(child)
print(" ".join(out))
EOF
}

# stop_all: every process this run started, at once, and every temporary
# file; on Ctrl-C, a closed terminal (SIGHUP) or a kill.
# shellcheck disable=SC2317  # called from the trap
stop_all() {
	trap '' INT TERM HUP
	# shellcheck disable=SC2046
	kill -KILL $(descendants $$) 2>/dev/null
	for pids in "$out_dir"/*/pids; do
		[ -f "$pids" ] || continue
		while read -r pid; do
			kill -KILL -- "-$pid" 2>/dev/null
		done <"$pids"
	done
	rm -rf "$tmp_root"
	echo "grade.sh: stopped; logs so far in $out_dir" >&2
	exit 130
}
trap stop_all INT TERM HUP

# row name build notes_file jsonl: one CSV row from the kit's streamed
# results (a check planned but never finished counts as not run).
row() {
	python3 - "$here" "$@" <<'EOF'
import csv, json, sys
here, name, build, notes_file, path = sys.argv[1:6]
client_path = sys.argv[6] if len(sys.argv) > 6 else None
sys.path.insert(0, here)
import conform
levels = conform.LEVELS
notes = []


def read(path):
    """The plan and the results of one streamed kit run."""
    plan, results = [], []
    for line in open(path):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "plan" in item:
            plan = item["plan"]
        elif "name" in item:
            results.append(item)
    return plan, results


plan, results = [], []
try:
    plan, results = read(path)
except OSError:
    if path != "/nonexistent":
        notes = ["the kit left no report (see kit.err)"]
if client_path:
    # The client's checks come from its run against the reference servers.
    try:
        more_plan, more = read(client_path)
    except OSError:
        more_plan, more = [], []
        notes.append("the client's run left no report (see ref-client/kit.err)")
    plan = [c for c in plan if c["level"] != "client"] + \
        [c for c in more_plan if c["level"] == "client"]
    results = [r for r in results if r["level"] != "client"] + \
        [r for r in more if r["level"] == "client"]
done = {r["name"] for r in results}
for c in plan:
    if c["name"] not in done:
        results.append({"name": c["name"], "level": c["level"], "result": "not-run",
                        "reason": "not run: the time limit stopped the kit", "tolerated": []})
try:
    given = [l.strip() for l in open(notes_file) if l.strip()]
except OSError:
    given = []
fields = [name, build]
if not results:
    fields += ["-"] * (len(levels) + 1)
    notes += given
else:
    scores = conform.score(results)
    fields += [conform.score_text(scores.get(level)) for level in levels]
    fields.append(str(sum(1 for r in results if r["result"] == "not-run")))
    causes = conform.causes(results)
    failed = [c for c in causes if c.startswith("failed: ")]
    notes += given + [c for c in causes if not c.startswith("failed: ")] + failed
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

# find_source dir names...: the first of names in dir, else in one folder
# inside dir.
find_source() {
	dir=$1
	shift
	for name in "$@"; do
		[ -f "$dir/$name" ] && { echo "$dir/$name"; return; }
	done
	for name in "$@"; do
		for sub in "$dir"/*/; do
			[ -f "$sub$name" ] && { echo "$sub$name"; return; }
		done
	done
}

# setting file key: a value from the submission's settings file.
setting() {
	[ -f "$1" ] || return 0
	sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | tail -n 1
}

# grade dir name: build, run, print the row.
grade() {
	dir=${1%/} name=$2
	out=$out_dir/$name
	rm -rf "$out"
	mkdir -p "$out"
	work=$(mktemp -d "$tmp_root/$name.XXXXXX") || return 1
	mkdir "$work/server"
	settings=$dir.grade
	broken='' notes=
	for prog in smtpmail popserver mailclient; do
		case $prog in
		smtpmail) names=$SMTP_NAMES ;;
		popserver) names=$POP_NAMES ;;
		*) names=$CLIENT_NAMES ;;
		esac
		# shellcheck disable=SC2086
		src=$(find_source "$dir" $names)
		if [ -z "$src" ]; then
			broken="$broken $prog.c"
			notes="$notes; $prog.c missing"
			continue
		fi
		if [ "$src" != "$dir/$prog.c" ]; then
			notes="$notes; $prog built from ${src#"$dir"/}"
		fi
		if ! build "$src" "$work/server/$prog" "$out/build-$prog.txt"; then
			broken="$broken $prog.c"
			first=$(grep -m 1 -i 'error' "$out/build-$prog.txt" | sed "s|^$(dirname "$src")/||")
			notes="$notes; ${src##*/}: ${first:-cc failed}"
		fi
	done
	printf '%s\n' "${notes#; }" | tr ';' '\n' | sed 's/^ //' | grep . >"$out/notes"
	case $broken in
	*smtpmail.c* | *popserver.c*)
		row "$name" "failed:$broken" "$out/notes" /nonexistent
		rm -rf "$work"
		return
		;;
	esac
	# The accounts: the settings file, else the submission's user.txt,
	# else alice and bob.
	accounts=$(setting "$settings" accounts) own_users=
	users_file=$(find_source "$dir" user.txt)
	if [ -z "$accounts" ] && [ -n "$users_file" ]; then
		accounts=$(awk 'NF >= 2 && n < 2 { printf "%s:%s ", $1, $2; n++ }' "$users_file")
		if [ -n "$accounts" ]; then
			cp "$users_file" "$work/server/user.txt"
			own_users=yes
			logins=$(awk 'NF >= 2 && n < 2 { printf "%s%s", (n ? " " : ""), $1; n++ }' "$users_file")
			echo "accounts from ${users_file#"$dir"/}: $logins" >>"$out/notes"
		fi
	fi
	accounts=${accounts:-$DEFAULT_ACCOUNTS}
	client=$(setting "$settings" client)
	client=${client:-$client_args}
	[ "$client" != none ] || client=
	[ -n "$client_args" ] || client=
	client_bin=${client_prog:-$work/server/mailclient}
	case $broken in *mailclient.c*) [ -n "$client_prog" ] || client= ;; esac
	ref_client=
	if [ -n "$ref_dir" ] && [ -n "$client" ] && [ -z "$client_prog" ]; then
		ref_client=$client client=
	fi
	[ -z "$client" ] || client="$client_bin $client"
	sub_ports=$(setting "$settings" ports)
	run_ports=ns
	if [ -n "$wrap" ]; then
		[ -z "$sub_ports" ] || export GRADE_PORTS="$sub_ports"
	else
		run_ports=${sub_ports:-${ports:-$(free_ports)}}
	fi
	extra=$(setting "$settings" kit)
	# In the background, so that a signal is handled at once.
	# shellcheck disable=SC2086
	GRADE_OWN_USERS=$own_users timeout -k 5 "$limit" $wrap bash "$0" --inner "$work" "$out" \
		"$client" "$run_ports" "$accounts" $kit_opts $extra 2>"$out/grade.err" &
	wait $!
	status=$?
	client_jsonl=
	if [ -n "$ref_client" ]; then
		# The submission's client against the reference servers.
		ref=$work/ref
		mkdir -p "$ref/server" "$out/ref-client"
		cp "$tmp_root/ref/smtpmail" "$tmp_root/ref/popserver" "$work/server/mailclient" "$ref/server/"
		[ ! -f "$work/server/user.txt" ] || cp "$work/server/user.txt" "$ref/server/"
		# shellcheck disable=SC2086
		GRADE_OWN_USERS=$own_users timeout -k 5 "$limit" $wrap bash "$0" --inner "$ref" \
			"$out/ref-client" "$ref/server/mailclient $ref_client" "$run_ports" "$accounts" \
			$kit_opts $extra --level client 2>"$out/ref-client/grade.err" &
		wait $!
		client_jsonl=$out/ref-client/kit.jsonl
		echo "the client graded against the servers of $ref_dir" >>"$out/notes"
	fi
	cat "$out/notes" "$out/notes.run" >"$out/notes.all" 2>/dev/null
	if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
		echo "stopped after the time limit of $limit s" >>"$out/notes.all"
	fi
	# Without a PID namespace, nothing it started outlives it (by process group).
	if [ -z "$GRADE_MOUNTNS" ]; then
		cat "$out/pids" "$out/ref-client/pids" 2>/dev/null | while read -r pid; do
			stop_group "$pid"
		done
	fi
	build=ok
	[ -z "$broken" ] || build="failed:$broken"
	# One write: rows of jobs at once do not mix.
	line=$(row "$name" "$build" "$out/notes.all" "$out/kit.jsonl" ${client_jsonl:+"$client_jsonl"})
	printf '%s\n' "$line"
	rm -rf "$work"
}

# The reference servers of -r, built once.
if [ -n "$ref_dir" ]; then
	mkdir "$tmp_root/ref"
	for prog in smtpmail popserver; do
		if ! build "$ref_dir/$prog.c" "$tmp_root/ref/$prog" "$tmp_root/ref/$prog.txt"; then
			echo "grade.sh: -r $ref_dir: $prog.c does not build:" >&2
			cat "$tmp_root/ref/$prog.txt" >&2
			rm -rf "$tmp_root"
			exit 2
		fi
	done
fi

echo "submission,build,assignment,rfc,robust,extra,client,not_run,notes"
used=' '
for dir in "$@"; do
	# Two folders of the same name get two rows and two log folders.
	base=$(basename "${dir%/}")
	name=$base k=1
	while case $used in *" $name "*) true ;; *) false ;; esac; do
		k=$((k + 1))
		name=$base-$k
	done
	used="$used$name "
	if [ ! -d "$dir" ]; then
		row "$name" "not a directory" /nonexistent /nonexistent
		continue
	fi
	grade "$dir" "$name" &
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
		wait -n
	done
done
while [ -n "$(jobs -rp)" ]; do
	wait -n
done
rm -rf "$tmp_root"
[ -z "$announce" ] || echo "grade.sh: logs in $out_dir" >&2
exit 0
