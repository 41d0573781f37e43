#!/usr/bin/env python3
"""torture.py - crash torture: SIGKILL the servers' sessions mid-work, then
audit the spool. Also the full-filesystem checks.

    MAIL_BIN=build/asan python3 tests/torture.py --seconds 300   # make torture

run(): several SMTP senders (a unique X-Torture-Id per message; the ids that
got 250 are recorded, with the exact bytes sent) and POP3 sessions that read
messages (RETR or TOP, learning their ids), DELE some at random and end with
QUIT (or RSET + QUIT, or by dropping the connection), while a killer sends
SIGKILL to random session children of the two servers this run started
(processes whose parent is one of those two PIDs, found in /proc; a pidfd is
taken and the parent checked again before the signal, so no other process
can be hit). Afterwards one more message goes to every mailbox and audit()
checks, per mailbox:
  - the file ends with a complete record;
  - every record is well-formed: Return-Path then Received first, CRLF line
    ends only, every line starting with "." stuffed, and its content equal to
    what the sender sent;
  - every message that got 250 is there exactly once, unless a POP3 session
    that deleted it got +OK to QUIT (then it is gone), or the QUIT's answer
    was lost in a kill (then 0 or 1 times);
  - nothing is duplicated; nothing refused (4xx/5xx) or unknown is there; a
    message whose 250 was lost in a kill is there at most once.
The servers' logs must hold no sanitizer report.

run(..., fsync_every=N): the same, with both servers under the failfs shim
(tests/shim/failfs.c): one fsync of a mailbox in N fails (EIO), and the
shim keeps the ground truth of durability (per file, the size the last
successful fsync covered) and logs every injected failure with the ids of
the records it left undurable. The killer also SIGKILLs the holders of the
write lock (byte 1 of a mymailbox.state) and of the commit lock (byte 2),
found in /proc/locks: the committers. The POP3 readers always read the
newest messages too (those at risk). The audit adds:
  - no message that got 250 is named by a failed fsync (250 = durable);
  - no message read over POP3 (RETR/TOP) is named by a failed fsync, at
    any time, in that mailbox: a POP3 session never shows mail that is not
    yet durable, whatever became of its SMTP session (see audit_durability);
  - the shim reported no problem of its own, and named every record
    (report["fsync"] counts the failures, the named ones, the kills).
A message that got 451 must not be there (report["refused_kept"] counts
them too). A spoiler meanwhile does what other programs and the system do
to the spool (report["spoils"]): in both modes it takes and drops the
dotlock mymailbox.lock as mutt_dotlock does; without failing fsyncs it
deletes a mailbox's state file or renames another file over it; with them
it steps the servers' wall clock (the shim's FAILFS_CLOCK_FILE) by up to
two hours either way.

full_disk_smtp() and pop_update_fails(): a full filesystem (a 1 MiB tmpfs
mounted for the purpose, we are root; else RLIMIT_FSIZE) gives 452/552 and
leaves no partial record; a POP3 update that cannot write its new file
leaves the mailbox exactly as it was and answers
"-ERR some deleted messages not removed".
"""
import argparse
import collections
import glob
import hashlib
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ACCOUNTS, HOSTNAME, SANITIZER_ENV, SANITIZER_RE,  # noqa: E402
                     Server, binary, build_shim, free_port)

USERS = [login for login, _ in ACCOUNTS]
PASSWORDS = dict(ACCOUNTS)
IO_TIMEOUT = 15          # any one socket operation
ID_HEADER = b"X-Torture-Id: "


class ProtocolError(Exception):
    """The server answered something unexpected (or closed mid-reply)."""


# ---------------------------------------------------------------- small clients

class Line:
    """A socket with a CRLF line reader; every wait bounded by IO_TIMEOUT."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ProtocolError("connection closed")
            self.buf += chunk
            if len(self.buf) > 1 << 20 and b"\r\n" not in self.buf:
                raise ProtocolError("line too long")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def smtp_reply(self):
        """The code of one (multi-line) SMTP reply."""
        for _ in range(100):
            line = self.line()
            if len(line) < 3 or not line[:3].isdigit():
                raise ProtocolError("bad reply %r" % line)
            if line[3:4] != b"-":
                self.last = line
                return int(line[:3])
        raise ProtocolError("endless reply")

    def smtp(self, text):
        self.send(text.encode("latin-1") + b"\r\n")
        return self.smtp_reply()

    def pop(self, text):
        """Send a POP3 command; its status line (bytes)."""
        self.send(text.encode("latin-1") + b"\r\n")
        return self.line()

    def multiline(self):
        """The body of a POP3 multi-line answer, still stuffed, lines joined by CRLF."""
        lines = []
        for _ in range(10 ** 7):
            line = self.line()
            if line == b".":
                return b"\r\n".join(lines) + b"\r\n" if lines else b""
            lines.append(line)
        raise ProtocolError("endless answer")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- messages

def make_message(rnd, mid):
    """A message (CRLF lines, unstuffed) with awkward lines: ".", "..", ".x"."""
    size = rnd.choice([rnd.randint(100, 2000)] * 14 + [rnd.randint(2000, 60000)] * 5
                      + [rnd.randint(200000, 600000)])
    lines = [b"From: <torture@example.org>", b"Subject: torture " + mid.encode(),
             ID_HEADER + mid.encode(), b""]
    total = 0
    while total < size:
        kind = rnd.random()
        if kind < 0.05:
            line = rnd.choice([b".", b"..", b".x", b"...y", b""])
        else:
            n = rnd.randint(0, 200)
            piece = bytes(rnd.choice(b"abcdefghij .-xyz:") for _ in range(min(n, 60)))
            line = (piece * (n // 60 + 1))[:n]
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def stuff(message):
    """The message dot-stuffed for the wire (RFC 5321 4.5.2), final dot added."""
    out = [b"." + line if line.startswith(b".") else line
           for line in message.split(b"\r\n")[:-1]]
    return b"\r\n".join(out) + b"\r\n.\r\n"


def unstuff(record_lines):
    return [line[1:] if line.startswith(b".") else line for line in record_lines]


def digest(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the ledger

class Ledger:
    """What the clients know: sent, acknowledged, refused, deleted."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {}                                  # id -> (recipients, digest)
        self.acked = set()                              # got 250
        self.refused = set()                            # got 4xx/5xx after DATA
        self.deleted_ok = collections.defaultdict(set)  # user -> ids, QUIT +OK
        self.deleted_maybe = collections.defaultdict(set)  # QUIT answer lost
        self.errors = []                                # seen by the clients
        self.kills = collections.Counter()
        self.spoils = collections.Counter()
        self.sessions = collections.Counter()
        self.seen_pop = set()                           # (mailbox, id) read over POP3
        self.queue_ids = {}                             # id -> the server's, from its reply

    def note(self, **counts):
        with self.lock:
            self.sessions.update(counts)

    def error(self, text):
        with self.lock:
            self.errors.append(text)


# ---------------------------------------------------------------- workers

def smtp_transaction(conn, rnd, ledger, mid):
    """One message: MAIL, RCPT(s), DATA; the ledger learns the outcome."""
    rcpts = rnd.sample(USERS, rnd.choice([1, 1, 1, 2, 3]))
    message = make_message(rnd, mid)
    if conn.smtp("MAIL FROM:<torture@example.org>") != 250:
        conn.smtp("RSET")
        return
    for user in rcpts:
        if conn.smtp("RCPT TO:<%s@%s>" % (user, HOSTNAME)) != 250:
            conn.smtp("RSET")
            return
    if conn.smtp("DATA") != 354:
        return
    with ledger.lock:
        ledger.sent[mid] = (frozenset(rcpts), digest(message))
    conn.send(stuff(message))
    code = conn.smtp_reply()
    with ledger.lock:
        (ledger.acked if code == 250 else ledger.refused).add(mid)
        ledger.queue_ids[mid] = conn.last.split()[-1].decode("latin-1")


def sender(ctx, n):
    """An SMTP client: sessions of 1-5 messages until told to stop."""
    rnd = random.Random(ctx.seed * 1000 + n)
    seq = 0
    while not ctx.stop.is_set():
        conn = None
        try:
            conn = Line(rnd.choice(ctx.smtps).port)
            if conn.smtp_reply() != 220 or conn.smtp("EHLO torture.example") != 250:
                raise ProtocolError("no greeting")
            for _ in range(rnd.randint(1, 5)):
                seq += 1
                smtp_transaction(conn, rnd, ctx.ledger, "s%d-%d" % (n, seq))
                if ctx.stop.is_set():
                    break
            conn.smtp("QUIT")
            ctx.ledger.note(smtp_sessions=1)
        except (OSError, ProtocolError):
            ctx.ledger.note(smtp_broken=1)
        finally:
            if conn:
                conn.close()


def message_id_of(text):
    for line in text.split(b"\r\n"):
        if line.startswith(ID_HEADER):
            return line[len(ID_HEADER):].decode("latin-1")
        if line == b"":
            break
    return None


def check_retrieved(ctx, mid, body):
    """A RETR's content must be what was sent (after the trace lines)."""
    lines = unstuff(body.split(b"\r\n")[:-1])
    start = trace_end(lines)
    with ctx.ledger.lock:
        sent = ctx.ledger.sent.get(mid)
    if start is None or sent is None:
        ctx.ledger.error("RETR of %s: malformed or unknown message" % mid)
    elif digest(b"\r\n".join(lines[start:]) + b"\r\n") != sent[1]:
        ctx.ledger.error("RETR of %s: content differs from what was sent" % mid)


def pop_pick(conn, ctx, rnd, count, user):
    """Read a few messages (RETR or TOP) and DELE them; their ids. With
    ctx.newest, the last two are always read: the freshest mail is the
    mail at risk of being shown before it is durable."""
    picked = []
    nums = rnd.sample(range(1, count + 1), min(count, rnd.randint(1, 4)))
    if ctx.newest:
        nums = sorted(set(nums) | {count, max(1, count - 1)})
    for num in nums:
        retr = rnd.random() < 0.5
        status = conn.pop("RETR %d" % num if retr else "TOP %d 0" % num)
        if not status.startswith(b"+OK"):
            ctx.ledger.error("RETR/TOP %d: %r" % (num, status))
            continue
        body = conn.multiline()
        mid = message_id_of(body.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
        if mid is None:
            continue        # the final marker messages of an earlier run, or none
        with ctx.ledger.lock:
            ctx.ledger.seen_pop.add((user, mid))
        if ctx.newest and rnd.random() < 0.5:
            continue        # read, kept: later sessions read it again
        if retr:
            check_retrieved(ctx, mid, body)
        if conn.pop("DELE %d" % num).startswith(b"+OK"):
            picked.append(mid)
    return picked


def pop_session(ctx, rnd, user):
    """One POP3 session: log in, delete some, then QUIT, RSET+QUIT or drop."""
    conn = Line(rnd.choice(ctx.pops).port)
    deleted = []
    try:
        if not conn.line().startswith(b"+OK") or not conn.pop("USER " + user).startswith(b"+OK"):
            raise ProtocolError("no greeting")
        status = conn.pop("PASS " + PASSWORDS[user])
        if not status.startswith(b"+OK"):
            ctx.ledger.note(pop_busy=1)     # [IN-USE]: another session has it
            return
        stat = conn.pop("STAT").split()
        count = int(stat[1]) if len(stat) > 1 and stat[0] == b"+OK" else 0
        deleted = pop_pick(conn, ctx, rnd, count, user) if count else []
        ending = rnd.random()
        if ending < 0.1:
            ctx.ledger.note(pop_dropped=1)  # no QUIT: nothing may be deleted
            return
        if ending < 0.2:
            conn.pop("RSET")
            deleted = []
        status = conn.pop("QUIT")
        with ctx.ledger.lock:
            done = ctx.ledger.deleted_ok if status.startswith(b"+OK") else ctx.ledger.deleted_maybe
            done[user].update(deleted)
        deleted = []
        ctx.ledger.note(pop_quit=1)
    except (OSError, ProtocolError):
        with ctx.ledger.lock:   # the QUIT (if sent) may or may not have worked
            ctx.ledger.deleted_maybe[user].update(deleted)
        ctx.ledger.note(pop_broken=1)
    finally:
        conn.close()


def popper(ctx, n):
    """A POP3 client: sessions on random mailboxes until told to stop."""
    rnd = random.Random(ctx.seed * 1000 + 500 + n)
    while not ctx.stop.is_set():
        try:
            pop_session(ctx, rnd, rnd.choice(USERS))
        except OSError:
            ctx.ledger.note(pop_broken=1)
        ctx.stop.wait(rnd.uniform(0, 0.05))


def children_of(ppid):
    """PIDs whose parent is ppid, from /proc."""
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and parent_of(int(name)) == ppid:
            kids.append(int(name))
    return kids


def parent_of(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def kill_child(pid, server_pid):
    """SIGKILL pid only if it is (still) a child of server_pid: via a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if parent_of(pid) != server_pid:
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def lock_files(spool):
    """(major, minor, inode) of every mymailbox.state in the spool."""
    keys = set()
    for path in glob.glob(os.path.join(spool, "*", "mymailbox.state")):
        try:
            st = os.stat(path)
        except OSError:
            continue
        keys.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    return keys


def lock_holders(keys):
    """{pid: byte}: the holders (not the waiters) of byte 2 (the commit
    lock) or else byte 1 (the write lock) of those files, from /proc/locks
    lines like "1: POSIX  ADVISORY  WRITE 4242 fe:00:1234 1 1"."""
    holders = {}
    try:
        with open("/proc/locks") as f:
            lines = f.read(1 << 22).splitlines()
    except OSError:
        return holders
    for line in lines:
        fields = line.split()
        if len(fields) != 8 or fields[1] != "POSIX":
            continue    # a waiter ("->"), a flock or an OFD lock
        try:
            major, minor, ino = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(ino))
            pid, lo = int(fields[4]), int(fields[6])
            hi = None if fields[7] == "EOF" else int(fields[7])
        except ValueError:
            continue
        for byte in (2, 1):
            if key in keys and lo <= byte and (hi is None or byte <= hi):
                holders[pid] = max(byte, holders.get(pid, 0))
    return holders


def kill_lock_holder(ctx):
    """SIGKILL a session child of our servers that holds a commit or write
    lock, if one shows up within 30 ms; (prog, byte) or None."""
    servers = {server.proc.pid: server.prog for server in ctx.smtps + ctx.pops}
    keys = lock_files(ctx.spool)
    deadline = time.time() + 0.03
    while keys and time.time() < deadline:
        for pid, byte in lock_holders(keys).items():
            ppid = parent_of(pid)
            if ppid in servers and kill_child(pid, ppid):
                return servers[ppid], byte
        time.sleep(0.001)
    return None


def killer(ctx):
    """SIGKILL a random session child of our servers at random moments;
    with ctx.lock_kills, half the time a holder of a mailbox lock."""
    rnd = random.Random(ctx.seed * 1000 + 999)
    while not ctx.stop.wait(rnd.uniform(0.02, 0.25)):
        if ctx.lock_kills and rnd.random() < 0.5:
            hit = kill_lock_holder(ctx)
            if hit:
                with ctx.ledger.lock:
                    ctx.ledger.kills[hit[0]] += 1
                    ctx.ledger.kills["commit-lock" if hit[1] == 2 else "write-lock"] += 1
            continue
        server = rnd.choice(ctx.smtps + ctx.pops)
        kids = children_of(server.proc.pid)
        if kids and kill_child(rnd.choice(kids), server.proc.pid):
            with ctx.ledger.lock:
                ctx.ledger.kills[server.prog] += 1


def spoiler(ctx, actions):
    """What other hands do to the spool, at random moments, among actions:
    the state file deleted or replaced, the dotlock taken and dropped, the
    clock stepped (the shim's clock file)."""
    rnd = random.Random(ctx.seed * 1000 + 777)
    clock = os.path.join(ctx.top, "clock")
    while not ctx.stop.wait(rnd.uniform(0.05, 0.3)):
        box = os.path.join(ctx.spool, rnd.choice(USERS), "mymailbox")
        what = rnd.choice(actions)
        try:
            if what == "delete":
                os.unlink(box + ".state")
            elif what == "replace":
                with open(box + ".junk", "wb") as f:
                    f.write(b"not a state\n" * rnd.randint(0, 20))
                os.rename(box + ".junk", box + ".state")
            elif what == "dotlock":
                fd = os.open(box + ".lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, b"%d\n" % os.getpid())
                os.close(fd)
                time.sleep(rnd.uniform(0.005, 0.05))
                os.unlink(box + ".lock")
            else:
                with open(clock + ".new", "w") as f:
                    f.write("%d\n" % rnd.randint(-7200, 7200))
                os.rename(clock + ".new", clock)
        except OSError:
            continue
        with ctx.ledger.lock:
            ctx.ledger.spoils[what] += 1


# ---------------------------------------------------------------- the audit

def trace_end(lines):
    """Index of the first line after Return-Path and Received (folded); None if absent."""
    if len(lines) < 2 or not lines[0].startswith(b"Return-Path: <") \
            or not lines[1].startswith(b"Received: from "):
        return None
    i = 2
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return i


def check_record(record, user, ledger, problems):
    """One record (without its ".\\r\\n"): well-formed, content as sent; its id."""
    if b"\r" in record.replace(b"\r\n", b"") or b"\n" in record.replace(b"\r\n", b""):
        problems.append("%s: a record with a bare CR or LF" % user)
    lines = record.split(b"\r\n")[:-1]
    for line in lines:
        if line.startswith(b".") and not line.startswith(b".."):
            problems.append("%s: an unstuffed line %r" % (user, line[:40]))
            break
    plain = unstuff(lines)
    start = trace_end(plain)
    if start is None:
        problems.append("%s: record without Return-Path/Received: %r" % (user, record[:80]))
        return None
    mid = message_id_of(b"\r\n".join(plain[start:]) + b"\r\n")
    sent = ledger.sent.get(mid)
    if sent is None:
        if mid is not None and not mid.startswith("final-"):
            problems.append("%s: unknown message %s" % (user, mid))
        return mid
    if digest(b"\r\n".join(plain[start:]) + b"\r\n") != sent[1]:
        problems.append("%s: message %s differs from what was sent" % (user, mid))
    return mid


def audit_mailbox(spool, user, ledger, problems, present=None):
    """Check one mailbox against the ledger; how many records. With
    present (a dict: the fsync-failure mode) the ids found are put there,
    and a refused message found is counted there too."""
    try:
        with open(os.path.join(spool, user, "mymailbox"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    if data and not data.endswith(b"\r\n.\r\n"):
        problems.append("%s: the mailbox does not end with a complete record" % user)
    records = data.split(b"\r\n.\r\n")[:-1] if data else []
    seen = collections.Counter(check_record(r + b"\r\n", user, ledger, problems)
                               for r in records)
    for mid, count in seen.items():
        if count > 1:
            problems.append("%s: message %s stored %d times" % (user, mid, count))
        if mid in ledger.refused:
            if present is not None:
                present["refused_kept"] = present.get("refused_kept", 0) + 1
            problems.append("%s: message %s was refused but is stored (%s)"
                            % (user, mid, ledger.queue_ids.get(mid)))
        if mid in ledger.deleted_ok[user]:
            problems.append("%s: message %s deleted (+OK QUIT) but still there" % (user, mid))
    for mid in ledger.acked:
        if user in ledger.sent[mid][0] and not seen[mid] \
                and mid not in ledger.deleted_ok[user] and mid not in ledger.deleted_maybe[user]:
            problems.append("%s: message %s (%s) got 250 but is lost"
                            % (user, mid, ledger.queue_ids.get(mid)))
    if present is not None:
        present.setdefault("ids", set()).update(seen)
    return len(records)


def final_delivery(port, tries=1):
    """One more message to every mailbox (it trims a crashed tail); must get
    250, within tries (a failed fsync may refuse one)."""
    for _ in range(tries):
        if final_once(port):
            return True
    return False


def final_once(port):
    conn = Line(port)
    try:
        codes = [conn.smtp_reply(), conn.smtp("EHLO final.example"),
                 conn.smtp("MAIL FROM:<>")]
        codes += [conn.smtp("RCPT TO:<%s@%s>" % (u, HOSTNAME)) for u in USERS]
        codes.append(conn.smtp("DATA"))
        conn.send(stuff(ID_HEADER + b"final-%d\r\n\r\nlast one\r\n" % time.time_ns()))
        codes.append(conn.smtp_reply())
        conn.smtp("QUIT")
        return codes == [220, 250, 250] + [250] * len(USERS) + [354, 250]
    finally:
        conn.close()


# ---------------------------------------------------------------- a run

class Context:
    def __init__(self, seed):
        self.seed = seed
        self.stop = threading.Event()
        self.ledger = Ledger()
        self.smtp = self.pop = None
        self.smtps, self.pops = [], []     # every front end's (hosts)
        self.spool = self.top = None
        self.newest = self.lock_kills = False     # the fsync-failure mode


def setup_dir(prefix):
    """A throwaway directory with user.txt and an empty spool."""
    top = tempfile.mkdtemp(prefix=prefix)
    spool = os.path.join(top, "users")
    os.mkdir(spool)
    with open(os.path.join(top, "user.txt"), "w") as f:
        for login, password in ACCOUNTS:
            f.write("%s %s\n" % (login, password))
    return top, spool, os.path.join(top, "user.txt")


def shim_env(top, seed, every):
    """The shim's variables for a run in top: one mailbox fsync in every fails."""
    state = os.path.join(top, "failfs-state")
    os.mkdir(state)
    return {"LD_PRELOAD": build_shim(top), "FAILFS_FSYNC_RANDOM": str(every),
            "FAILFS_SEED": str(seed), "FAILFS_STATE": state, "FAILFS_FAIL_MS": "50",
            "FAILFS_CLOCK_FILE": os.path.join(top, "clock"),
            "FAILFS_LOG": os.path.join(top, "failfs.log")}


def host_env(top, host, env):
    """env for the servers of simulated host number host: the shim gives
    them their own boot id and host name (tests/shim/failfs.c)."""
    boot = os.path.join(top, "boot-id-%d" % host)
    with open(boot, "w") as f:
        f.write("%08x-0000-4000-8000-%012x\n" % (host + 1, random.getrandbits(48)))
    return dict(env, FAILFS_BOOT_ID_FILE=boot, FAILFS_HOSTNAME="host%d.torture" % host)


def start_servers(ctx, top, spool, userfile, env=None, hosts=1):
    """A smtpmail and a popserver on the spool for each of hosts front ends
    (more than one: each told by the shim it runs on a machine of its own)."""
    common = ["-d", spool, "-u", userfile, "-l", "127.0.0.1", "-t", "30"]
    ctx.spool = spool
    for host in range(hosts):
        host_vars = host_env(top, host, env) if hosts > 1 else env
        for prog, extra in (("smtpmail", ["-n", HOSTNAME]), ("popserver", ["-w", "0"])):
            server = Server(prog, common + extra, top, free_port(), host_vars)
            (ctx.smtps if prog == "smtpmail" else ctx.pops).append(server)
    ctx.smtp, ctx.pop = ctx.smtps[0], ctx.pops[0]


def read_fail_log(path):
    """The shim's log: the ids its failed fsyncs named, counts, and the
    shim's own problems (an ERROR line, a FAIL line too long)."""
    counts = {"failures": 0, "named": 0, "records": 0, "unnamed": 0}
    failed, problems = set(), []
    for line in read_bytes(path).decode("latin-1").splitlines():
        fields = line.split()
        if fields[:1] != ["FAIL"] or len(fields) < 6:
            problems.append("failfs: " + line[:200])
            continue
        box, ids = fields[5][1:], fields[6:]     # "@login": the mailbox's owner
        if not fields[5].startswith("@"):
            problems.append("failfs: no mailbox owner: " + line[:200])
        if "+" in ids:
            problems.append("failfs: a FAIL line too long, ids left out")
        named = [i for i in ids if i not in ("?", "+")]
        counts["failures"] += 1
        counts["named"] += bool(named)
        counts["records"] += len(named)
        counts["unnamed"] += ids.count("?")
        failed.update((box, mid) for mid in named)
    return failed, counts, problems


def audit_durability(ledger, failed, problems):
    """250 and POP3 against the shim's failed fsyncs. Both sets hold
    (mailbox, id) pairs: a message whose session was killed half-way
    through a delivery to several mailboxes may be durable in one and cut
    back in another. A message shown over POP3 is checked whatever became
    of its session (250, 4xx, or killed before any reply: an orphan)."""
    for mid in sorted(ledger.acked & {mid for _, mid in failed}):
        problems.append("message %s got 250, but a failed fsync covered it" % mid)
    for box, mid in sorted(ledger.seen_pop & failed):
        status = ("acked" if mid in ledger.acked else
                  "refused" if mid in ledger.refused else "orphan")
        problems.append("message %s (%s) was shown over POP3 from %s's mailbox, but a failed"
                        " fsync covered it there" % (mid, status, box))


def stop_servers(ctx, problems):
    """Stop both (by PID); a sanitizer report in a log is a problem."""
    for server in ctx.smtps + ctx.pops or [ctx.smtp, ctx.pop]:
        if server is None:
            continue
        code = server.stop()
        if code != 0:
            problems.append("%s exited %s after SIGTERM" % (server.prog, code))
        found = SANITIZER_RE.search(server.log())
        if found:
            report = server.log()[max(0, found.start() - 200):][:4000]
            problems.append("%s: sanitizer report:\n%s" % (server.prog, report))


def run(seconds, senders=4, poppers=2, seed=None, say=None, fsync_every=None, hosts=1):
    """The torture run; returns a dict: counts and "problems" (empty: passed).
    fsync_every=N: one mailbox fsync in N fails (see the top of the file);
    hosts=2: two front ends (a smtpmail and a popserver each) on the one
    spool, each told by the shim that it is another machine."""
    seed = seed if seed is not None else int(time.time())
    ctx = Context(seed)
    top, spool, userfile = setup_dir("torture-")
    ctx.top = top
    problems = []
    records = 0
    present = {} if fsync_every else None
    try:
        env = shim_env(top, seed, fsync_every) if fsync_every else None
        if hosts > 1 and env is None:
            env = {"LD_PRELOAD": build_shim(top)}
        ctx.newest = ctx.lock_kills = bool(fsync_every)
        start_servers(ctx, top, spool, userfile, env, hosts)
        threads = [threading.Thread(target=sender, args=(ctx, n)) for n in range(senders)]
        threads += [threading.Thread(target=popper, args=(ctx, n)) for n in range(poppers)]
        threads.append(threading.Thread(target=killer, args=(ctx,)))
        # A state file deleted while an fsync fails can let POP3 show what
        # that fsync covered (DESIGN.md "What is not promised"): with failing
        # fsyncs the spoiler takes the dotlock and steps the clock only.
        actions = os.environ.get("TORTURE_SPOILS", "dotlock clock" if fsync_every
                                 else "delete replace dotlock").split()
        threads.append(threading.Thread(target=spoiler, args=(ctx, actions)))
        for t in threads:
            t.start()
        deadline = time.time() + seconds
        while time.time() < deadline:
            time.sleep(min(5, max(0.1, deadline - time.time())))
            if say:
                l = ctx.ledger
                say("%5.0fs left: %d acked, %d kills" % (max(0, deadline - time.time()),
                                                        len(l.acked), sum(l.kills.values())))
        ctx.stop.set()
        for t in threads:
            t.join(4 * IO_TIMEOUT)
            if t.is_alive():
                problems.append("a client thread did not stop")
        if not final_delivery(ctx.smtp.port, 20 if fsync_every else 1):
            problems.append("the final delivery did not get 250")
        records = sum(audit_mailbox(spool, u, ctx.ledger, problems, present) for u in USERS)
    finally:
        stop_servers(ctx, problems)
    l = ctx.ledger
    problems += l.errors
    fsync = None
    if fsync_every:
        failed, fsync, shim_problems = read_fail_log(os.path.join(top, "failfs.log"))
        problems += shim_problems
        audit_durability(l, failed, problems)
        if not fsync["named"]:
            problems.append("no failed fsync covered a message: the run proved nothing")
        fsync.update(every=fsync_every, pop_seen=len(l.seen_pop),
                     refused_kept=present.get("refused_kept", 0),
                     failed_kept=len({mid for _, mid in failed} & present.get("ids", set())))
    report = {
        "seed": seed, "seconds": seconds, "sent": len(l.sent), "acked": len(l.acked),
        "refused": len(l.refused), "unknown": len(l.sent) - len(l.acked) - len(l.refused),
        "deleted_ok": sum(len(s) for s in l.deleted_ok.values()),
        "deleted_maybe": sum(len(s) for s in l.deleted_maybe.values()),
        "kills": dict(l.kills), "spoils": dict(l.spoils), "sessions": dict(l.sessions),
        "records": records, "hosts": hosts,
        "problems": problems, "dir": top, "fsync": fsync,
    }
    if not problems:
        shutil.rmtree(top, ignore_errors=True)
    return report


# ---------------------------------------------------------------- a full filesystem

class SmallFs:
    """A 1 MiB tmpfs mounted on a temp directory (root only); .mounted says if
    it worked. close() unmounts it, always."""

    def __init__(self, size="1m"):
        self.path = tempfile.mkdtemp(prefix="torture-fs-")
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size,
                              "tmpfs", self.path], capture_output=True, text=True)
        self.mounted = run.returncode == 0

    def fill(self):
        """Write a filler file until the filesystem is full; its path."""
        path = os.path.join(self.path, "filler")
        with open(path, "wb", buffering=0) as f:
            for _ in range(100000):
                try:
                    f.write(b"f" * 4096)
                except OSError:
                    break
        return path

    def close(self):
        if self.mounted:
            for _ in range(50):
                if subprocess.run(["umount", self.path], capture_output=True).returncode == 0:
                    self.mounted = False
                    break
                time.sleep(0.1)
            if self.mounted:
                subprocess.run(["umount", "-l", self.path], capture_output=True)
                self.mounted = False
        shutil.rmtree(self.path, ignore_errors=True)


class LimitedServer(Server):
    """harness.Server, started with RLIMIT_FSIZE (the fallback when no tmpfs).
    SIGXFSZ is set to ignored before exec (an ignored signal stays ignored
    across exec), so a write past the limit fails with EFBIG - a full disk -
    even in a program that does not ignore SIGXFSZ itself (popserver)."""

    def __init__(self, prog, args, cwd, port, fsize):
        self.prog, self.port, self.cwd = prog, port, cwd
        self.log_path = os.path.join(cwd, "%s-%d.log" % (prog, port))
        self.log_file = open(self.log_path, "ab")
        env = dict(os.environ, **SANITIZER_ENV)

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self.proc = subprocess.Popen([binary(prog)] + list(args) + [str(port)],
                                     cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=self.log_file,
                                     env=env, preexec_fn=limit)
        self.wait_listening()


def send_one(port, user, message):
    """One SMTP transaction; the final reply code (or that of the step that failed)."""
    conn = Line(port)
    try:
        if conn.smtp_reply() != 220:
            return 0
        for step, want in (("EHLO fs.example", 250), ("MAIL FROM:<fs@example.org>", 250),
                           ("RCPT TO:<%s@%s>" % (user, HOSTNAME), 250), ("DATA", 354)):
            code = conn.smtp(step)
            if code != want:
                return code
        conn.send(stuff(message))
        code = conn.smtp_reply()
        conn.smtp("QUIT")
        return code
    finally:
        conn.close()


def body(size, tag):
    """A message of about size bytes, its id tag in a header."""
    line = b"x" * 98
    return ID_HEADER + tag.encode() + b"\r\n\r\n" + (line + b"\r\n") * (size // 100)


def pop_delete_first(port, user):
    """POP3: log in, DELE 1, QUIT; the QUIT status line (or the first failure)."""
    conn = Line(port)
    try:
        for cmd in (None, "USER " + user, "PASS " + PASSWORDS[user], "DELE 1"):
            status = conn.line() if cmd is None else conn.pop(cmd)
            if not status.startswith(b"+OK"):
                return status
        return conn.pop("QUIT")
    finally:
        conn.close()


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


class FsCase:
    """A spool on a full-able filesystem: a 1 MiB tmpfs if we can mount one,
    else an ordinary directory and RLIMIT_FSIZE on the server under test."""

    def __init__(self):
        self.top, _, self.userfile = setup_dir("torture-fs-")
        self.fs = SmallFs()
        self.spool = os.path.join(self.fs.path if self.fs.mounted else self.top, "users2")
        os.mkdir(self.spool)
        self.servers, self.problems = [], []
        self.mode = "1 MiB tmpfs" if self.fs.mounted else "RLIMIT_FSIZE"

    def start(self, prog, fsize=None):
        args = ["-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1", "-t", "30"]
        args += ["-n", HOSTNAME] if prog == "smtpmail" else ["-w", "0"]
        if fsize is None:
            server = Server(prog, args, self.top, free_port())
        else:
            server = LimitedServer(prog, args, self.top, free_port(), fsize)
        self.servers.append(server)
        return server

    def mailbox(self, user):
        return os.path.join(self.spool, user, "mymailbox")

    def close(self):
        """Stop the servers (sanitizer reports are problems), unmount, remove."""
        ctx = Context(0)
        for server in self.servers:
            ctx.smtp, ctx.pop = server, None
            stop_servers(ctx, self.problems)
        self.fs.close()
        shutil.rmtree(self.top, ignore_errors=True)


def full_disk_smtp():
    """A full filesystem: 452/552 and no partial record, for a failure while
    spooling the data and for one while appending; then mail flows again."""
    case = FsCase()
    p = case.problems
    try:
        fsize = None if case.fs.mounted else 256 * 1024
        first, append_fail = (2000, 600000) if case.fs.mounted else (100000, 200000)
        port = case.start("smtpmail", fsize).port
        if send_one(port, "alice", body(first, "first")) != 250:
            p.append("the first message did not get 250")
        before = read_bytes(case.mailbox("alice"))
        for size, what in ((2000000, "spooling the data"), (append_fail, "appending")):
            code = send_one(port, "alice", body(size, what))
            if code not in (452, 552):
                p.append("full filesystem while %s: got %s, not 452/552" % (what, code))
            if read_bytes(case.mailbox("alice")) != before:
                p.append("full filesystem while %s: the mailbox changed" % what)
        if send_one(port, "alice", body(1000, "after")) != 250:
            p.append("a small message after the failures did not get 250")
        after = read_bytes(case.mailbox("alice"))
        if not after.startswith(before) or after.count(b"\r\n.\r\n") != 2 \
                or not after.endswith(b"\r\n.\r\n"):
            p.append("after the failures the mailbox is not the old one plus one record")
    finally:
        case.close()
    return case.mode, p


def pop_update_fails():
    """A POP3 update that cannot write mymailbox.new: -ERR, mailbox as it was;
    with room again the same update works."""
    case = FsCase()
    p = case.problems
    try:
        smtp = case.start("smtpmail")
        for i in range(3):
            if send_one(smtp.port, "bob", body(150000, "keep-%d" % i)) != 250:
                p.append("setup message %d did not get 250" % i)
        before = read_bytes(case.mailbox("bob"))
        filler = case.fs.fill() if case.fs.mounted else None
        pop = case.start("popserver", None if filler else 100 * 1024)
        status = pop_delete_first(pop.port, "bob")
        if not status.startswith(b"-ERR") or b"some deleted messages not removed" not in status:
            p.append("QUIT with an update that cannot be written: %r" % status)
        if read_bytes(case.mailbox("bob")) != before:
            p.append("the failed update changed the mailbox")
        if os.path.exists(case.mailbox("bob") + ".new"):
            p.append("the failed update left mymailbox.new behind")
        if filler:
            os.unlink(filler)
        else:
            pop = case.start("popserver")
        status = pop_delete_first(pop.port, "bob")
        first_end = before.find(b"\r\n.\r\n") + 5
        if not status.startswith(b"+OK") or read_bytes(case.mailbox("bob")) != before[first_end:]:
            p.append("with room again, DELE 1 + QUIT did not remove exactly message 1: %r" % status)
    finally:
        case.close()
    return case.mode, p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--poppers", type=int, default=2)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--hosts", type=int, default=1,
                    help="front ends (smtpmail + popserver) on the one spool, each told it "
                         "runs on a machine of its own")
    ap.add_argument("--fsync-every", type=int, metavar="N",
                    help="fail one mailbox fsync in N (the failfs shim) and kill lock holders")
    args = ap.parse_args()
    report = run(args.seconds, args.senders, args.poppers, args.seed,
                 say=lambda text: print("torture: " + text, flush=True),
                 fsync_every=args.fsync_every, hosts=args.hosts)
    for key in ("seed", "hosts", "seconds", "sent", "acked", "refused", "unknown", "deleted_ok",
                "deleted_maybe", "kills", "spoils", "sessions", "records", "fsync"):
        print("%-14s %s" % (key, report[key]))
    for text in report["problems"][:50]:
        print("PROBLEM: " + text)
    failed = bool(report["problems"])
    for check in (full_disk_smtp, pop_update_fails):
        mode, problems = check()
        print("%s (%s): %s" % (check.__name__, mode, "ok" if not problems else "FAILED"))
        for text in problems:
            print("PROBLEM: " + text)
        failed = failed or bool(problems)
    print("torture: %s" % ("FAILED (run dir kept: %s)" % report["dir"] if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
