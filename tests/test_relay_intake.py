"""Relay intake (DESIGN.md "The queue"): who may relay, and what a session
does with mail for other hosts. Relay off: 550 as before. On (-o -D): an
authenticated session, or a client in a trusted network (-N), with its own
sender, may name any domain; anyone else gets 550 5.7.1, whatever the trick
(%-hacks, user@remote@local, quoted local parts, source routes, bang paths,
address literals). At DATA the message is queued (<id>.msg and <id>.env,
durable, under the job lock) and the local recipients delivered, all or
nothing: a failing fsync of the queue gives 451 with nothing queued and no
mailbox changed. A full queue (-Z, or free space under twice -s) refuses
relay recipients with 452 and nobody else. 100 Received lines: 554 5.4.6.
The session wakes the runner named in .queue/.runner, and only a live one.
mailclient sends to a remote address through a relaying server.

Most sessions run under -i over a socketpair: no runner starts there, so
the queue stays as the session left it, and -p shows it."""
import os
import re
import socket
import subprocess
import sys
import time

from harness import (HOSTNAME, SANITIZER_ENV, SANITIZER_RE, MailTest, Raw, ShimBuild,
                     binary, free_port, gone)
from relay import lock_waiter, mailbox_locked, wait_for
from test_auth import plain
from test_client import ClientTest

LOCAL = "a.example"
REMOTE = "b.example"
ACCEPTED_RE = re.compile(r"^250 2\.0\.0 OK Message accepted for delivery as (\S+)$")
DENIED = "550 5.7.1 Relaying denied"
FULL = "452 4.3.1 Insufficient system storage"
LOOP = "554 5.4.6 Too many Received lines: a mail loop"
LOCAL_ERROR = "451 4.3.0 Local error in processing, try again later"
DATE = r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000"
# A message as it goes on the wire: a dot line (stuffed), 8-bit text, a
# line of 998 octets, and the final dot.
BODY = (b"From: alice@a.example\r\nSubject: out\r\n\r\nhello\r\n..leading dot\r\n"
        b"caf\xc3\xa9 \xff\r\n" + b"x" * 998 + b"\r\n")
MESSAGE = BODY + b".\r\n"


class RelayTest(MailTest):
    """smtpmail -o -D a.example sessions: over -i (session()) or a listening
    server (listening()). Every -i process is stopped by PID and its log
    checked for sanitizer reports."""

    relay_args = ("-o", "-D", LOCAL)

    def setUp(self):
        super().setUp()
        self.procs = []
        self.clients = []
        self.queue = os.path.join(self.spool, ".queue")
        self.ilog = os.path.join(self.dir, "smtpmail-i.log")

    def tearDown(self):
        for c in self.clients:
            c.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log = self.log_i()
        super().tearDown()
        self.assertIsNone(SANITIZER_RE.search(log), log)

    def log_i(self):
        try:
            with open(self.ilog, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def session(self, *args, peer="127.0.0.1", env=None, relay_args=None):
        """smtpmail -i over a socketpair (the client's address peer), past
        the greeting and EHLO; the Raw client."""
        ours, theirs = socket.socketpair()
        full = dict(os.environ, **SANITIZER_ENV)
        for name in ("TCPREMOTEIP", "REMOTE_HOST", "REMOTE_ADDR"):
            full.pop(name, None)
        if peer:
            full["TCPREMOTEIP"] = peer
        if env and "LD_PRELOAD" in env:
            full["ASAN_OPTIONS"] += ":verify_asan_link_order=0"
        full.update(env or {})
        cmd = [binary("smtpmail"), "-i", "-d", self.spool, "-u", self.userfile,
               "-n", HOSTNAME, "-w", "0"]
        cmd += list(self.relay_args if relay_args is None else relay_args) + list(args)
        with open(self.ilog, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=theirs, stdout=theirs, stderr=log, env=full,
                                    cwd=self.dir)
        theirs.close()
        self.procs.append(proc)
        c = Raw.__new__(Raw)
        c.sock, c.buf = ours, b""
        ours.settimeout(15)
        self.clients.append(c)
        self.assertEqual(c.reply(), ["220 %s Service ready" % HOSTNAME])
        self.assertEqual(c.cmd("EHLO client.example"), "250 HELP")
        return c

    def listening(self, *args):
        """A listening smtpmail with the relay options and args; a Raw
        client past EHLO comes from connect()."""
        return self.start_smtp("-w", "0", *(self.relay_args + args))

    def connect(self, server):
        c = Raw(server.port)
        self.clients.append(c)
        self.assertEqual(c.reply(), ["220 %s Service ready" % HOSTNAME])
        self.assertEqual(c.cmd("EHLO client.example"), "250 HELP")
        return c

    def login(self, c, user="alice"):
        self.assertEqual(c.cmd("AUTH PLAIN " + plain(user, user + "pw")),
                         "235 2.7.0 Authentication successful")

    def send(self, c, sender, rcpts, data=MESSAGE):
        """MAIL, the RCPTs (each must be 250), DATA, data; the last reply."""
        self.assertEqual(c.cmd("MAIL FROM:<%s>" % sender), "250 2.1.0 <%s>... Sender ok" % sender)
        for r in rcpts:
            self.assertEqual(c.cmd("RCPT TO:<%s>" % r), "250 2.1.5 <%s>... Recipient ok" % r)
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send(data)
        return c.reply()[-1]

    def queued(self):
        """The names in the queue directory but the runner's lock file."""
        try:
            return sorted(n for n in os.listdir(self.queue) if n != ".runner")
        except FileNotFoundError:
            return []

    def queue_file(self, name):
        with open(os.path.join(self.queue, name), "rb") as f:
            return f.read()

    def command(self, *args):
        """smtpmail with a queue command (-p, -x id); its CompletedProcess."""
        return subprocess.run([binary("smtpmail"), "-d", self.spool, "-u", self.userfile]
                              + list(args), capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, **SANITIZER_ENV), stdin=subprocess.DEVNULL)


class WhoMayRelay(RelayTest):
    """The relay decision at RCPT, over real sockets: never an open relay."""

    def test_relay_off(self):
        server = self.start_smtp("-w", "0", "-D", LOCAL)
        c = self.connect(server)
        self.login(c)
        self.assertEqual(c.cmd("MAIL FROM:<alice@a.example>"), "250 2.1.0 <alice@a.example>... Sender ok")
        self.assertEqual(c.cmd("RCPT TO:<bob@b.example>"), DENIED)
        self.assertEqual(c.cmd("RCPT TO:<bob@a.example>"), "250 2.1.5 <bob@a.example>... Recipient ok")
        self.assertIn("relay from <alice@a.example> to <bob@b.example> denied: relaying is off",
                      server.log())

    def tricks(self, c, authenticated):
        """Every open-relay checker's trick: none may be taken for relaying."""
        cases = [
            ("<bob@b.example>", "250" if authenticated else DENIED),
            ("bob@b.example", "250" if authenticated else DENIED),
            ("<bob@B.EXAMPLE.>", "250" if authenticated else DENIED),
            # RFC 5321 4.1.2: the route is ignored, the final domain decides.
            ("<@a.example:bob@b.example>", "250" if authenticated else DENIED),
            ("<@a.example,@mx.a.example:bob@b.example>", "250" if authenticated else DENIED),
            ("<@b.example:carol@a.example>", "250"),
            # Local addresses that name another host: local, and no account.
            ("<bob%b.example@a.example>", "550 5.1.1 No such user"),
            ("<b.example!bob@a.example>", "550 5.1.1 No such user"),
            ("<bob@b.example@a.example>", "501 5.1.3 Bad address syntax"),
            ('<"bob@b.example"@a.example>', "501 5.1.3 Bad address syntax"),
            ("<bob@[192.0.2.1]>", DENIED),
            ("<bob@[IPv6:2001:db8::1]>", DENIED),
        ]
        for arg, want in cases:
            with self.subTest(rcpt=arg, authenticated=authenticated):
                got = c.cmd("RCPT TO:" + arg)
                self.assertTrue(got.startswith(want), got)

    def test_open_relay_tricks(self):
        server = self.listening()
        c = self.connect(server)
        self.assertEqual(c.cmd("MAIL FROM:<alice@a.example>"), "250 2.1.0 <alice@a.example>... Sender ok")
        self.tricks(c, False)
        # The transaction has one recipient, carol (the route to her was
        # ignored): DATA gives her the message, and nothing is queued.
        self.assertEqual(c.cmd("DATA").split()[0], "354")
        c.send(MESSAGE)
        self.assertIsNotNone(ACCEPTED_RE.match(c.reply()[-1]))
        self.assertEqual(len(self.records("carol")), 1)
        self.assertEqual(self.queued(), [])
        self.assertEqual([n for n in os.listdir(self.spool) if n != ".queue"], ["carol"])
        c2 = self.connect(server)
        self.login(c2)
        self.assertEqual(c2.cmd("MAIL FROM:<alice@a.example>"), "250 2.1.0 <alice@a.example>... Sender ok")
        self.tricks(c2, True)
        self.assertEqual(c2.cmd("QUIT").split()[0], "221")
        log = server.log()
        self.assertIn("127.0.0.1: relay from <alice@a.example> to <bob@b.example> denied: "
                      "not authenticated, and not from a trusted network (-N)", log)
        self.assertIn("relay from <alice@a.example> to <bob@[192.0.2.1]> denied: "
                      "an address literal", log)
        self.assertIn("relay from <alice@a.example> to <bob@b.example> allowed: "
                      "authenticated as alice", log)
        self.assertEqual(self.queued(), [])

    def test_sender_must_be_the_login_s_own(self):
        server = self.listening()
        c = self.connect(server)
        self.login(c)
        for sender, want in (("bob@a.example", DENIED), ("alice@b.example", DENIED),
                             ("alice@A.EXAMPLE", "250"), ("", "250"),
                             ("alicex@a.example", DENIED)):
            with self.subTest(sender=sender):
                replies = [c.cmd("MAIL FROM:<%s>" % sender), c.cmd("RCPT TO:<bob@b.example>"),
                           c.cmd("RSET")]
                self.assertEqual(replies[0].split()[0], "250")
                self.assertTrue(replies[1].startswith(want), replies[1])
        self.assertIn("denied: the sender is not the login's own address", server.log())
        self.assertIn("denied: the sender is not in a local domain", server.log())

    def test_trusted_network(self):
        server = self.listening("-N", "10.0.0.0/8", "-N", "127.0.0.0/8")
        c = self.connect(server)
        for sender, want in (("carol@a.example", "250"), ("", "250"),
                             ("nobody@a.example", DENIED), ("carol@b.example", DENIED)):
            with self.subTest(sender=sender):
                replies = [c.cmd("MAIL FROM:<%s>" % sender), c.cmd("RCPT TO:<bob@b.example>"),
                           c.cmd("RSET")]
                self.assertEqual(replies[0].split()[0], "250")
                self.assertTrue(replies[1].startswith(want), replies[1])
        self.assertIn("relay from <carol@a.example> to <bob@b.example> allowed: trusted network",
                      server.log())
        other = self.listening("-N", "127.0.0.2/32", "-N", "::1")
        c = self.connect(other)
        self.assertEqual(c.cmd("MAIL FROM:<carol@a.example>").split()[0], "250")
        self.assertEqual(c.cmd("RCPT TO:<bob@b.example>"), DENIED)

    def test_relay_needs_local_domains(self):
        run = subprocess.run([binary("smtpmail"), "-o", "-d", self.spool, "-u", self.userfile,
                              str(0)], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, **SANITIZER_ENV), stdin=subprocess.DEVNULL)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("-o needs -D", run.stderr)

    def test_queue_limit_within_what_a_scan_reads(self):
        # The runner reads at most 10000 envelopes a scan: a larger -Z would
        # queue mail that no scan sees while the first 10000 wait.
        for value, status in (("10000", 0), ("10001", 2)):
            run = subprocess.run([binary("smtpmail"), "-Z", value, "-d", self.spool, "-u",
                                  self.userfile, "-p"], capture_output=True, text=True,
                                 timeout=30, env=dict(os.environ, **SANITIZER_ENV),
                                 stdin=subprocess.DEVNULL)
            self.assertEqual(run.returncode, status, run.stderr)


class Queueing(RelayTest):
    """DATA with relay recipients: the queue's files, -p, -x, the limits."""

    def test_mixed_local_and_remote(self):
        c = self.session()
        self.login(c)
        self.assertEqual(c.cmd("MAIL FROM:<alice@a.example>"), "250 2.1.0 <alice@a.example>... Sender ok")
        for r in ("carol@a.example", "bob@b.example", "dave@c.example", "bob@B.example"):
            self.assertEqual(c.cmd("RCPT TO:<%s>" % r), "250 2.1.5 <%s>... Recipient ok" % r)
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send(MESSAGE)
        qid = ACCEPTED_RE.match(c.reply()[-1]).group(1)
        self.assertEqual(self.queued(), [qid + ".env", qid + ".msg"])
        # Delivered locally, with the same id.
        self.assertEqual(len(self.records("carol")), 1)
        self.assertIn(("with ESMTPA id %s" % qid).encode(), self.records("carol")[0])
        # The .msg: our Received line (ESMTPA, no "for" with two recipients),
        # then the data as it came on the wire, without the final dot.
        msg = self.queue_file(qid + ".msg")
        self.assertEqual(os.stat(os.path.join(self.queue, qid + ".msg")).st_mode & 0o777, 0o600)
        received = re.match((r"Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n"
                             r"\tby mx\.test\.example \(smtpmail\) with ESMTPA id %s; %s\r\n"
                             % (re.escape(qid), DATE)).encode(), msg)
        self.assertIsNotNone(received, msg[:300])
        self.assertEqual(msg[received.end():], BODY)
        env = self.queue_file(qid + ".env").decode()
        self.assertRegex(env, r"^smtpmail-queue 1\narrived \d+\nfrom alice@a\.example\n"
                              r"auth alice\nclient 127\.0\.0\.1\nnotice 0\n"
                              r"rcpt bob@b\.example pending 0 0 0 - -\n"
                              r"rcpt dave@c\.example pending 0 0 0 - -\n$")
        listing = self.command("-p")
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertRegex(listing.stdout, r"(?m)^%s  .*  <alice@a\.example>  \(alice\)$" % re.escape(qid))
        self.assertIn("    <bob@b.example>  pending  attempts 0\n", listing.stdout)
        self.assertIn("    <dave@c.example>  pending  attempts 0\n", listing.stdout)
        self.assertIn("1 message in the queue", listing.stdout)
        removed = self.command("-x", qid)
        self.assertEqual(removed.returncode, 0, removed.stderr)
        self.assertEqual(self.queued(), [])
        self.assertIn("0 messages in the queue", self.command("-p").stdout)
        self.assertEqual(len(self.records("carol")), 1)
        log = self.log_i()
        self.assertIn("queued %s from <alice@a.example> for bob@b.example,... (2 recipients)"
                      % qid, log)
        self.assertIn("delivered %s from <alice@a.example> to carol" % qid, log)

    def test_sigterm_while_queueing_waits_for_the_reply(self):
        """The parent's last-resort SIGTERM, come while a message is being
        queued (here: the local mailbox's lock is waited for), ends the
        session only after the client has its 250: a queued message whose
        client heard nothing would be sent, and sent again on its retry."""
        import signal
        c = self.session()
        self.login(c)
        with mailbox_locked(self.spool, "carol"):
            c.cmd("MAIL FROM:<alice@a.example>")
            c.cmd("RCPT TO:<carol@a.example>")
            c.cmd("RCPT TO:<bob@b.example>")
            c.cmd("DATA")
            c.send(MESSAGE)
            self.assertTrue(wait_for(lambda: lock_waiter(self.procs[-1].pid), 10),
                            "the session does not wait for carol's mailbox")
            self.assertEqual(len([n for n in self.queued() if n.endswith(".env")]), 1)
            self.procs[-1].send_signal(signal.SIGTERM)     # pending: held meanwhile
        self.assertRegex(c.line(), ACCEPTED_RE)
        self.assertEqual(self.procs[-1].wait(10), -signal.SIGTERM)
        self.assertEqual(len([n for n in self.queued() if n.endswith(".env")]), 1)
        self.assertEqual(len(self.records("carol")), 1)

    def test_trusted_client_one_recipient_large_message(self):
        # Past the memory buffer: the message spills to a temp file, and is
        # queued from there. One recipient: the Received line names it.
        body = b"Subject: big\r\n\r\n" + b"".join(b"..line %d " % i + b"y" * 900 + b"\r\n"
                                                   for i in range(300))
        for peer in ("192.0.2.7", "::ffff:192.0.2.8"):
            with self.subTest(peer=peer):
                c = self.session("-N", "192.0.2.0/24", peer=peer)
                qid = ACCEPTED_RE.match(self.send(c, "carol@a.example", ["bob@b.example"],
                                                  body + b".\r\n")).group(1)
                msg = self.queue_file(qid + ".msg")
                self.assertTrue(msg.startswith(b"Received: from client.example ([%s%s])\r\n"
                                               % (b"IPv6:" if ":" in peer else b"",
                                                  peer.encode())), msg[:200])
                self.assertIn(b" with ESMTP id %s\r\n\tfor <bob@b.example>; " % qid.encode(), msg)
                self.assertTrue(msg.endswith(b"\r\n" + body), len(msg))
                env = self.queue_file(qid + ".env").decode()
                self.assertIn("\nauth -\nclient %s\n" % peer, env)
        c = self.session("-N", "192.0.2.0/24", peer="192.0.3.7")
        self.assertEqual(c.cmd("MAIL FROM:<carol@a.example>").split()[0], "250")
        self.assertEqual(c.cmd("RCPT TO:<bob@b.example>"), DENIED)

    def test_recipient_limit_counts_both_kinds(self):
        c = self.session()
        self.login(c)
        rcpts = ["carol@a.example"] * 50 + ["r%d@b.example" % i for i in range(50)]
        self.assertEqual(c.cmd("MAIL FROM:<alice@a.example>").split()[0], "250")
        for r in rcpts:
            self.assertEqual(c.cmd("RCPT TO:<%s>" % r).split()[0], "250", r)
        self.assertEqual(c.cmd("RCPT TO:<r99@b.example>"), "452 4.5.3 Too many recipients")
        self.assertEqual(c.cmd("RCPT TO:<bob@a.example>"), "452 4.5.3 Too many recipients")
        self.assertEqual(c.cmd("DATA").split()[0], "354")
        c.send(MESSAGE)
        qid = ACCEPTED_RE.match(c.reply()[-1]).group(1)
        self.assertEqual(self.queue_file(qid + ".env").decode().count("\nrcpt "), 50)
        self.assertEqual(len(self.records("carol")), 1)

    def test_queue_full_by_count(self):
        c = self.session("-Z", "1")
        self.login(c)
        self.assertIsNotNone(ACCEPTED_RE.match(self.send(c, "alice@a.example", ["bob@b.example"])))
        c = self.session("-Z", "1")
        self.login(c)
        self.assertEqual(c.cmd("MAIL FROM:<alice@a.example>").split()[0], "250")
        self.assertEqual(c.cmd("RCPT TO:<bob@b.example>"), FULL)
        self.assertEqual(c.cmd("RCPT TO:<carol@a.example>").split()[0], "250")
        self.assertEqual(c.cmd("DATA").split()[0], "354")
        c.send(MESSAGE)
        self.assertIsNotNone(ACCEPTED_RE.match(c.reply()[-1]))
        self.assertEqual(len(self.queued()), 2)     # still the first message alone
        self.assertEqual(len(self.records("carol")), 1)
        self.assertIn("refused for now: the queue holds 1 messages (-Z)", self.log_i())

    def test_queue_full_by_space(self):
        # -s 1 TiB: twice that is free on no test machine.
        c = self.session("-s", str(1 << 40))
        self.login(c)
        self.assertEqual(c.cmd("MAIL FROM:<alice@a.example>").split()[0], "250")
        self.assertEqual(c.cmd("RCPT TO:<bob@b.example>"), FULL)
        self.assertEqual(c.cmd("RCPT TO:<carol@a.example>").split()[0], "250")
        self.assertIn("bytes free on the spool, under twice -s", self.log_i())


class Loops(RelayTest):
    """RFC 5321 6.3: 100 Received lines or more is a loop, for every message."""

    def hops(self, n, name="Received"):
        return b"".join(b"%s: from h%d.example by h%d.example; Mon, 7 Dec 2026 06:00:00 +0000\r\n"
                        % (name.encode(), i, i + 1) for i in range(n))

    def test_received_lines(self):
        c = self.session()
        self.login(c)
        end = b"Subject: loop\r\n\r\nbody\r\n"
        for data, rcpts, want in (
                (self.hops(100) + end, ["carol@a.example"], LOOP),
                (self.hops(99) + end, ["carol@a.example"], "250"),
                (self.hops(60, "received ") + self.hops(40) + end, ["carol@a.example"], LOOP),
                (self.hops(10) + end + self.hops(120), ["carol@a.example"], "250"),
                (self.hops(100) + end, ["bob@b.example", "carol@a.example"], LOOP)):
            with self.subTest(lines=data.count(b"\r\n"), rcpts=rcpts):
                got = self.send(c, "alice@a.example", rcpts, data + b".\r\n")
                self.assertTrue(got.startswith(want), got)
        self.assertEqual(len(self.records("carol")), 2)
        self.assertEqual(self.queued(), [])
        self.assertIn("100 or more Received lines (a mail loop)", self.log_i())


class DiskFailures(ShimBuild, RelayTest):
    """A failing disk under the queue: the reply says what became of it."""

    def fail_with(self, rcpts, **failures):
        """A message from alice to rcpts with the shim's failures; its reply."""
        c = self.session(env=dict(failures, LD_PRELOAD=self.shim))
        self.login(c)
        return self.send(c, "alice@a.example", rcpts)

    def test_queue_fsync_fails(self):
        self.assertEqual(self.fail_with(["carol@a.example", "bob@b.example"],
                                        FAILFS_FSYNC=".msg"), LOCAL_ERROR)
        self.assertEqual(self.queued(), [])
        self.assertEqual(self.mailbox("carol"), b"")
        self.assertIn("cannot be queued: Input/output error", self.log_i())

    def test_queue_disk_full(self):
        self.assertEqual(self.fail_with(["carol@a.example", "bob@b.example"],
                                        FAILFS_ENOSPC=".msg"), FULL)
        self.assertEqual(self.queued(), [])
        self.assertEqual(self.mailbox("carol"), b"")

    def test_queue_directory_fsync_fails(self):
        self.assertEqual(self.fail_with(["bob@b.example"], FAILFS_DIR_FSYNC="1"), LOCAL_ERROR)
        self.assertEqual(self.queued(), [])

    def test_local_failure_takes_the_queued_message_out(self):
        self.assertEqual(self.fail_with(["carol@a.example", "bob@b.example"],
                                        FAILFS_FSYNC="/mymailbox"), LOCAL_ERROR)
        self.assertEqual(self.queued(), [])
        self.assertEqual(self.records("carol"), [])
        self.assertRegex(self.log_i(), r"queue: \S+ withdrawn\n")


class Wake(RelayTest):
    """After the 250 the session wakes the runner that holds .queue/.runner."""

    RUNNER = r"""
import fcntl, os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
if sys.argv[3] == "lock":
    fcntl.lockf(fd, fcntl.LOCK_EX)
elif sys.argv[3] == "claim":    # a delivery's claim: one byte past the runner's
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 5)
os.write(fd, b"%d\n" % os.getpid())
signal.signal(signal.SIGUSR2, lambda *a: open(sys.argv[2], "w").close())
print("ready", flush=True)
time.sleep(30)
"""

    def fake_runner(self, mode):
        """A process that plays the runner: it writes its pid into .runner
        and holds the runner's lock ("lock"), a delivery's claim on another
        byte ("claim"), or none; the file "woken" appears on its SIGUSR2."""
        os.makedirs(self.queue, mode=0o700, exist_ok=True)
        woken = os.path.join(self.dir, "woken")
        proc = subprocess.Popen([sys.executable, "-c", self.RUNNER,
                                 os.path.join(self.queue, ".runner"), woken,
                                 mode], stdout=subprocess.PIPE)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait()))
        self.assertEqual(proc.stdout.readline(), b"ready\n")
        return proc, woken

    def test_runner_woken(self):
        proc, woken = self.fake_runner("lock")
        c = self.session()
        self.login(c)
        self.assertIsNotNone(ACCEPTED_RE.match(self.send(c, "alice@a.example", ["bob@b.example"])))
        deadline = time.time() + 10
        while not os.path.exists(woken) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(woken), "the runner was not woken")

    def assert_not_woken(self, mode):
        proc, woken = self.fake_runner(mode)
        c = self.session()
        self.login(c)
        self.assertIsNotNone(ACCEPTED_RE.match(self.send(c, "alice@a.example", ["bob@b.example"])))
        self.assertEqual(c.cmd("QUIT").split()[0], "221")
        self.procs[-1].wait(10)
        time.sleep(0.3)
        self.assertFalse(os.path.exists(woken))
        self.assertFalse(gone(proc.pid))

    def test_dead_runner_not_signalled(self):
        # A pid in .runner with no lock held: the runner died, and the pid
        # may be another process's now. SIGUSR2 would end it.
        self.assert_not_woken("none")

    def test_claim_is_no_runner(self):
        # The runner died and a delivery it started still holds its claim
        # on another byte of .runner: the pid there is still not signalled.
        self.assert_not_woken("claim")


class Mailclient(ClientTest):
    """mailclient sends to any address through a relaying smtpmail: it
    authenticates, and leaves the decision to the server. A route to a dead
    port keeps the message in the queue whatever a runner does with it."""

    def setUp(self):
        MailTest.setUp(self)
        self.clients = []
        self.smtp = self.start_smtp("-w", "0", "-o", "-D", LOCAL, "-B", "3600:3600",
                                    "-R", "b.example=[127.0.0.1]:%d" % free_port())
        self.pop = self.start_pop("-a", "50")

    def test_send_to_a_remote_address(self):
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@a.example", "To: bob@b.example, carol@a.example",
                           "Subject: out", "to the world", "."])
        self.assertEqual(len(self.records("carol")), 1)
        queue = os.path.join(self.spool, ".queue")
        envs = [n for n in os.listdir(queue) if n.endswith(".env")]
        self.assertEqual(len(envs), 1)
        with open(os.path.join(queue, envs[0])) as f:
            self.assertRegex(f.read(), r"\nfrom alice@a\.example\nauth alice\n(.|\n)*"
                                       r"\nrcpt bob@b\.example ")
        # Another's address as the sender: the server refuses, the user is told.
        self.send_mail(c, ["From: bob@a.example", "To: bob@b.example", "Subject: s", "x", "."],
                       expect="Error in sending mail: 550 5.7.1 Relaying denied\n")
        self.quit(c)
