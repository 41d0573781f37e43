"""smtpmail: limits and bad input (RFC 5321 4.5.3), refused logins and
domains, dropped connections, locks, and a write failure rolled back."""
import fcntl
import os
import re
import resource
import socket
import subprocess
import time
import unittest

import harness
from harness import ACCOUNTS, HOSTNAME
from test_smtp import SmtpTest


class Limits(SmtpTest):
    """Line, recipient and size limits; bare LF, NUL; errors; timeouts."""

    def test_overlong_command_line(self):
        c = self.connect(self.start_smtp())
        self.assertEqual(c.cmd("NOOP " + "x" * 505), "250 2.0.0 OK")       # 512 octets with CRLF
        self.assertEqual(c.cmd("NOOP " + "x" * 506), "500 5.5.2 Line too long")
        self.assertEqual(c.cmd("MAIL FROM:<" + "a" * 20000 + "@b>"), "500 5.5.2 Line too long")
        # the rest of the long line was skipped: the session is still in step
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "250 2.1.0 <a@b.example>... Sender ok")

    def test_101st_recipient_452(self):
        c = self.connect(self.start_smtp())
        c.send("MAIL FROM:<a@b.example>\r\n" + "RCPT TO:<alice@x.example>\r\n" * 101)
        self.assertEqual(c.reply(), ["250 2.1.0 <a@b.example>... Sender ok"])
        for i in range(100):
            self.assertEqual(c.reply(), ["250 2.1.5 <alice@x.example>... Recipient ok"], i)
        self.assertEqual(c.reply(), ["452 4.5.3 Too many recipients"])
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send("Subject: many\r\n\r\n.\r\n")
        self.accepted_id(c.reply()[0])
        self.assertEqual(len(self.records("alice")), 1)

    def test_declared_size_over_limit_552_at_once(self):
        c = self.connect(self.start_smtp("-s", "1000"), greet=None)
        c.send("EHLO client.example\r\n")
        self.assertIn("250-SIZE 1000", c.reply())
        too_big = "552 5.3.4 Message size exceeds fixed maximum message size (1000)"
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example> SIZE=1001"), too_big)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example> SIZE=99999999999999999999999999"), too_big)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example> SIZE=1000"), "250 2.1.0 <a@b.example>... Sender ok")

    def test_undeclared_size_over_limit_drained_552(self):
        c = self.connect(self.start_smtp("-s", "1000"))
        line = b"y" * 98 + b"\r\n"                       # 100 octets a line
        last = self.transaction(c, "a@b.example", ["alice@x.example"], line * 10 + b".\r\n")
        self.accepted_id(last)                           # exactly 1000: accepted
        last = self.transaction(c, "a@b.example", ["alice@x.example"], line * 10 + b"z\r\n.\r\n")
        self.assertEqual(last, "552 5.3.4 Message size exceeds fixed maximum message size (1000)")
        # far over: drained to the final dot, the session goes on
        last = self.transaction(c, "a@b.example", ["bob@x.example"], line * 20000 + b".\r\n")
        self.assertEqual(last, "552 5.3.4 Message size exceeds fixed maximum message size (1000)")
        self.assertEqual(c.cmd("NOOP"), "250 2.0.0 OK")
        self.assertEqual(len(self.records("alice")), 1)
        self.assertShortEqual(self.mailbox("bob"), b"")

    def test_bare_lf_command_not_executed(self):
        c = self.connect(self.start_smtp(), greet=None)
        hint = "500 Lines must end in CRLF (use telnet, or nc -C)"     # no EHLO: no codes
        c.send("HELO client.example\n")
        self.assertEqual(c.reply(), [hint])
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "503 Send HELO or EHLO first")

    def test_control_bytes_in_command_500(self):
        c = self.connect(self.start_smtp())
        bad = "500 5.5.2 Syntax error: control character in command"
        self.assertEqual(c.cmd("NOOP a\x00b"), bad)
        self.assertEqual(c.cmd("MAIL FROM:<a\x00@b.example>"), bad)
        self.assertEqual(c.cmd("HELO a\rb"), bad)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "250 2.1.0 <a@b.example>... Sender ok")

    def test_twenty_errors_close_with_421(self):
        c = self.connect(self.start_smtp(), greet=None)
        c.send("BOGUS\r\n" * 20)          # no unread input left: no RST races the 421
        for i in range(20):
            self.assertEqual(c.reply(), ["500 Command unrecognized"], i)     # no EHLO: no codes
        self.assertEqual(c.reply(), ["421 %s Too many errors, closing connection" % HOSTNAME])
        self.assertTrue(c.closed())

    def test_idle_timeout_421(self):
        c = self.connect(self.start_smtp("-t", "1"))
        began = time.time()
        c.sock.settimeout(10)
        self.assertEqual(c.reply(), ["421 4.4.2 %s Timeout, closing connection" % HOSTNAME])
        self.assertLess(time.time() - began, 5)
        self.assertTrue(c.closed())

    def test_command_dripped_slowly_still_times_out(self):
        # a byte every 0.3 s: each read is quick, but the command never ends
        c = self.connect(self.start_smtp("-t", "2"))
        c.sock.setblocking(False)
        began, got = time.time(), b""
        while time.time() - began < 8:
            time.sleep(0.3)
            try:
                got += c.sock.recv(4096)
            except BlockingIOError:
                pass
            if b"\r\n" in got:
                break
            try:
                c.sock.send(b"N")
            except OSError:
                break                                    # closed after the 421
        c.sock.setblocking(True)
        c.sock.settimeout(5)
        if b"\r\n" not in got:
            got += c.sock.recv(4096)
        self.assertEqual(got, b"421 4.4.2 %s Timeout, closing connection\r\n" % HOSTNAME.encode())
        self.assertLess(time.time() - began, 4.5)       # -t 2 for the whole line
        self.assertTrue(c.closed())

    def test_timeout_mid_data_stores_nothing(self):
        c = self.connect(self.start_smtp("-t", "1"))
        c.cmd("MAIL FROM:<a@b.example>")
        c.cmd("RCPT TO:<alice@x.example>")
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send("Subject: never finished\r\n\r\nhalf")
        self.assertEqual(c.reply(), ["421 4.4.2 %s Timeout, closing connection" % HOSTNAME])
        self.assertTrue(c.closed())
        self.assertShortEqual(self.mailbox("alice"), b"")


class FsizeServer(harness.Server):
    """A harness Server whose process runs under RLIMIT_FSIZE (a write failure)."""

    def __init__(self, args, cwd, port, fsize):
        self.prog, self.port, self.cwd = "smtpmail", port, cwd
        self.log_path = os.path.join(cwd, "smtpmail-%d.log" % port)
        self.log_file = open(self.log_path, "ab")

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        self.proc = subprocess.Popen([harness.binary("smtpmail")] + list(args) + [str(port)],
                                     cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=self.log_file, preexec_fn=limit,
                                     env=dict(os.environ, **harness.SANITIZER_ENV))
        self.wait_listening()


class Safety(SmtpTest):
    """Bad logins, relaying, dropped connections, locks, rollback."""

    accounts = [("../x", "pw"), ("a/b", "pw")] + ACCOUNTS

    def test_path_logins_skipped_and_refused(self):
        server = self.start_smtp()
        before = self.spool_entries()
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")
        for rcpt in ("../x@x.example", "a/b@x.example", "../../etc@x.example", "nobody@x.example"):
            self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt), "550 5.1.1 No such user", rcpt)
        self.assertEqual(c.cmd("RCPT TO:<postmaster>"), "250 2.1.5 <postmaster>... Recipient ok")
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send("hi\r\n.\r\n")
        self.accepted_id(c.reply()[0])
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        log = server.log()
        self.assertIn("user.txt:1: invalid login skipped", log)
        self.assertIn("user.txt:2: invalid login skipped", log)
        # only alice's mailbox appeared (postmaster: the first valid account)
        new = set(self.spool_entries()) - set(before)
        self.assertEqual(new, {"users/alice", "users/alice/mymailbox", "users/alice/mymailbox.state"})
        self.assertFalse(os.path.exists(os.path.join(self.dir, "x")))

    def test_relaying_denied_with_D(self):
        c = self.connect(self.start_smtp("-D", "x.example", "-D", "Other.Example"))
        c.cmd("MAIL FROM:<a@elsewhere.example>")
        for rcpt in ("alice@x.example", "bob@X.EXAMPLE", "carol@other.example", "postmaster"):
            self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt), "250 2.1.5 <%s>... Recipient ok" % rcpt)
        for rcpt in ("alice@evil.example", "alice@x.example.evil", "alice@[127.0.0.1]"):
            self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt), "550 5.7.1 Relaying denied", rcpt)
        self.assertEqual(c.cmd("RCPT TO:<nobody@x.example>"), "550 5.1.1 No such user")

    def child_fds(self, server, marker):
        """The fd link targets of the session child that logged marker (Linux)."""
        m = re.search(r"smtpmail\[(\d+)\]: %s" % re.escape(marker), server.log())
        self.assertIsNotNone(m, server.log())
        fd_dir = "/proc/%s/fd" % m.group(1)
        targets = []
        for fd in os.listdir(fd_dir):
            try:
                targets.append(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                pass
        return targets

    def test_disconnect_mid_data_leaves_no_trace(self):
        server = self.start_smtp()
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")
        c.cmd("RCPT TO:<alice@x.example>")
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send(b"z" * 70 + b"\r\n" * 1 + (b"q" * 1000 + b"\r\n") * 300)   # past 64 KiB: spilled
        deadline = time.time() + 10
        temp = []
        # Seen between its mkstemp and its unlink, the file still has its
        # name: look again until it is gone from the spool (bounded).
        while time.time() < deadline and not (temp and temp[0].endswith("(deleted)")):
            if os.path.isdir("/proc/self/fd"):
                temp = [t for t in self.child_fds(server, "connection from") if ".smtpmail-" in t]
            else:
                break
            time.sleep(0.05)
        if os.path.isdir("/proc/self/fd"):
            self.assertEqual(len(temp), 1)
            self.assertTrue(temp[0].endswith("(deleted)"), temp[0])   # unlinked at once
        self.assertEqual(os.listdir(self.spool), [])
        c.close()
        deadline = time.time() + 10
        while time.time() < deadline and "connection lost during DATA" not in server.log():
            time.sleep(0.05)
        self.assertIn("connection lost during DATA: nothing stored", server.log())
        self.assertEqual(os.listdir(self.spool), [])
        self.assertShortEqual(self.mailbox("alice"), b"")

    def test_waits_for_the_write_lock(self):
        server = self.start_smtp()
        os.makedirs(os.path.join(self.spool, "alice"))
        lock = os.open(self.mailbox_path("alice") + ".state", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(lock, fcntl.LOCK_EX, 1, 1)          # DESIGN.md: byte 1, the write lock
            c = self.connect(server)
            c.cmd("MAIL FROM:<a@b.example>")
            c.cmd("RCPT TO:<alice@x.example>")
            c.cmd("DATA")
            c.send("locked\r\n.\r\n")
            c.sock.settimeout(1.0)
            with self.assertRaises((socket.timeout, TimeoutError)):
                c.line()                                     # no reply while we hold it
            self.assertShortEqual(self.mailbox("alice"), b"")
            fcntl.lockf(lock, fcntl.LOCK_UN, 1, 1)
            c.sock.settimeout(10)
            self.accepted_id(c.line())
        finally:
            os.close(lock)
        self.assertTrue(self.records("alice")[0].endswith(b"\r\nlocked\r\n"))

    def test_locks_taken_in_sorted_login_order(self):
        # We hold bob's write lock; the RCPTs name bob first. In sorted order
        # the server takes alice's lock first, then waits for bob's: while it
        # waits, alice's lock must be taken (by it), so our try fails.
        server = self.start_smtp()
        for login in ("alice", "bob"):
            os.makedirs(os.path.join(self.spool, login))
        bob = os.open(self.mailbox_path("bob") + ".state", os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, bob)
        fcntl.lockf(bob, fcntl.LOCK_EX, 1, 1)
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")
        c.cmd("RCPT TO:<bob@x.example>")
        c.cmd("RCPT TO:<alice@x.example>")
        c.cmd("DATA")
        c.send("ordered\r\n.\r\n")
        alice_path = self.mailbox_path("alice") + ".state"
        deadline, held = time.time() + 10, False
        while time.time() < deadline and not held:
            fd = os.open(alice_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1)
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1)
                time.sleep(0.05)
            except OSError:
                held = True                              # the server holds alice's
            finally:
                os.close(fd)
        self.assertTrue(held, "alice's write lock not taken before bob's")
        self.assertShortEqual(self.mailbox("alice"), b"")   # nothing written yet
        fcntl.lockf(bob, fcntl.LOCK_UN, 1, 1)
        self.accepted_id(c.reply()[-1])
        for login in ("alice", "bob"):
            self.assertTrue(self.records(login)[0].endswith(b"\r\nordered\r\n"), login)

    def test_write_failure_rolls_back_every_mailbox(self):
        port = harness.free_port()
        server = FsizeServer(("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1",
                              "-n", HOSTNAME), self.dir, port, fsize=65536)
        self.servers.append(server)
        os.makedirs(os.path.join(self.spool, "bob"))
        old = (b"Return-Path: <o@b>\r\nSubject: old\r\n\r\n" + b"o" * 64000 + b"\r\n.\r\n")
        with open(self.mailbox_path("bob"), "wb") as f:
            f.write(old)
        c = self.connect(server)
        body = (b"w" * 78 + b"\r\n") * 40                   # 3200 bytes: bob passes 64 KiB
        # alice sorts first: appended, then rolled back when bob fails
        last = self.transaction(c, "a@b.example", ["bob@x.example", "alice@x.example"], body + b".\r\n")
        self.assertEqual(last, "452 4.3.1 Insufficient system storage")
        self.assertShortEqual(self.mailbox("bob"), old)
        self.assertShortEqual(self.mailbox("alice"), b"")
        # the session and the server go on
        self.accepted_id(self.transaction(c, "a@b.example", ["alice@x.example"], b"small\r\n.\r\n"))
        self.assertEqual(len(self.records("alice")), 1)
        self.assertIn("delivery of", server.log())


if __name__ == "__main__":
    unittest.main()
