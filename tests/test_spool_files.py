"""Hostile and failing spool files. A FIFO or a symbolic link where a
mailbox, its lock file or a user's directory should be is refused at once by
both servers, and nothing outside the spool is touched. When the disk fails
a POP3 update, the reply says what became of the mailbox: a directory fsync
that fails after the rename (the messages are gone: +OK), a full disk
(deleting the last messages still works, in place; anything else: -ERR and
nothing deleted). The failures are injected with the LD_PRELOAD shim
tests/shim/failfs.c, built for the class (harness.ShimBuild).
"""
import os
import time
import unittest

from harness import HOSTNAME, MailTest, Raw, ShimBuild
from test_pop import make_record

QUICK = 3.0        # seconds: "at once", far below the 30 s lock wait
SMTP_451 = "451 4.3.0 Local error in processing, try again later"


class SpoolTest(MailTest):
    """MailTest plus a delivery and a POP3 login that must both end quickly."""

    def setUp(self):
        super().setUp()
        self.smtp = self.start_smtp("-t", "10")
        self.pop = self.start_pop("-w", "0", "-t", "10")
        self.outside = os.path.join(self.dir, "outside")
        os.mkdir(self.outside)

    def userdir(self, login):
        return os.path.join(self.spool, login)

    def deliver(self, *rcpts):
        """One message to rcpts; the reply to the data, and how long it took."""
        with Raw(self.smtp.port, timeout=10) as c:
            c.reply()
            c.cmd("EHLO client.example")
            c.cmd("MAIL FROM:<s@example.org>")
            for r in rcpts:
                self.assertTrue(c.cmd("RCPT TO:<%s@x.example>" % r).startswith("250"))
            self.assertTrue(c.cmd("DATA").startswith("354"))
            started = time.monotonic()
            c.send(b"Subject: probe\r\n\r\nprobe\r\n.\r\n")
            last = c.reply()[-1]
            took = time.monotonic() - started
            c.cmd("QUIT")
        return last, took

    def login(self, login):
        """USER and PASS; the reply to PASS, and how long it took. A server
        that hangs fails the test through the socket's time-out."""
        with Raw(self.pop.port, timeout=10) as r:
            r.line()
            r.cmd("USER " + login)
            started = time.monotonic()
            reply = r.cmd("PASS %spw" % login)
            took = time.monotonic() - started
            if reply.startswith("+OK"):
                r.cmd("QUIT")
            else:
                self.assertTrue(r.closed())
        return reply, took

    def assertRefusedQuickly(self, login, pop_reply):
        reply, took = self.login(login)
        self.assertEqual(reply, pop_reply)
        self.assertLess(took, QUICK)
        last, took = self.deliver(login)
        self.assertEqual(last, SMTP_451)
        self.assertLess(took, QUICK)

    def assertOutsideUntouched(self, before=()):
        self.assertEqual(sorted(os.listdir(self.outside)), sorted(before))


class Fifos(SpoolTest):
    """A FIFO is never opened for waiting: both servers answer at once."""

    def test_fifo_mailbox(self):
        os.mkdir(self.userdir("alice"))
        os.mkfifo(self.mailbox_path("alice"))
        self.assertRefusedQuickly("alice", "-ERR [SYS/PERM] mailbox is not a regular file")
        # No session was left holding the locks: a delivery right after a
        # login attempt is answered at once too, and bob is served.
        self.assertEqual(self.login("alice")[0],
                         "-ERR [SYS/PERM] mailbox is not a regular file")
        last, took = self.deliver("alice")
        self.assertEqual((last, took < QUICK), (SMTP_451, True))
        self.assertTrue(self.deliver("bob")[0].startswith("250"))
        for server in (self.smtp, self.pop):
            self.assertIn("alice/mymailbox: not a regular file with one link: refused",
                          server.log())
        os.unlink(self.mailbox_path("alice"))
        self.assertTrue(self.deliver("alice")[0].startswith("250"))
        self.assertTrue(self.login("alice")[0].startswith("+OK maildrop has 1 messages"))

    def test_fifo_lock_file(self):
        os.mkdir(self.userdir("alice"))
        os.mkfifo(self.mailbox_path("alice") + ".state")
        self.assertRefusedQuickly("alice", "-ERR [SYS/PERM] state file is not a regular file")
        for server in (self.smtp, self.pop):
            self.assertIn("alice/mymailbox.state: not a regular file with one link: refused",
                          server.log())
        self.assertFalse(os.path.exists(self.mailbox_path("alice")))


class Links(SpoolTest):
    """Only the spool path the administrator gave is followed."""

    def test_symlinked_user_directory(self):
        os.symlink(self.outside, self.userdir("alice"))
        self.assertRefusedQuickly("alice", "-ERR [SYS/PERM] mailbox directory is a symbolic link")
        # All or nothing: bob, in the same transaction, gets nothing either.
        self.assertEqual(self.deliver("alice", "bob")[0], SMTP_451)
        self.assertEqual(self.mailbox("bob"), b"")
        self.assertOutsideUntouched()
        # Mail put where the link points is not served, nor locked.
        record, _ = make_record([b"not alice's"])
        with open(os.path.join(self.outside, "mymailbox"), "wb") as f:
            f.write(record)
        self.assertEqual(self.login("alice")[0],
                         "-ERR [SYS/PERM] mailbox directory is a symbolic link")
        self.assertOutsideUntouched(["mymailbox"])
        with open(os.path.join(self.outside, "mymailbox"), "rb") as f:
            self.assertEqual(f.read(), record)
        for server in (self.smtp, self.pop):
            self.assertIn("/alice: a symbolic link: refused", server.log())

    def test_user_directory_not_a_directory(self):
        with open(self.userdir("alice"), "wb") as f:
            f.write(b"a file")
        self.assertRefusedQuickly("alice",
                                  "-ERR [SYS/PERM] mailbox directory is not a directory")
        self.assertIn("/alice: not a directory: refused", self.pop.log())

    def test_symlinked_mailbox(self):
        os.mkdir(self.userdir("alice"))
        target = os.path.join(self.outside, "file")
        record, _ = make_record([b"someone else's"])
        with open(target, "wb") as f:
            f.write(record)
        os.symlink(target, self.mailbox_path("alice"))
        self.assertRefusedQuickly("alice", "-ERR [SYS/PERM] mailbox is a symbolic link")
        with open(target, "rb") as f:
            self.assertEqual(f.read(), record)
        self.assertOutsideUntouched(["file"])

    def test_symlinked_lock_file(self):
        os.mkdir(self.userdir("alice"))
        os.symlink(os.path.join(self.outside, "lock"), self.mailbox_path("alice") + ".state")
        self.assertRefusedQuickly("alice", "-ERR [SYS/PERM] state file is a symbolic link")
        self.assertOutsideUntouched()   # the dangling link was not created through
        self.assertFalse(os.path.exists(self.mailbox_path("alice")))


# ---------------------------------------------------------------- disk failures

class DiskFailures(ShimBuild, MailTest):
    """POP3 updates on a failing disk: the reply matches the mailbox after."""

    def setUp(self):
        super().setUp()
        pairs = [make_record([b"message %d" % i]) for i in range(4)]
        self.recs = [stored for stored, _ in pairs]
        self.sizes = [len(unstuffed) for _, unstuffed in pairs]
        os.mkdir(os.path.join(self.spool, "alice"))
        self.put(*self.recs)

    def put(self, *records):
        with open(self.mailbox_path("alice"), "wb") as f:
            f.write(b"".join(records))

    def start_with(self, prog, **failures):
        args = ("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1")
        args += ("-w", "0") if prog == "popserver" else ("-n", HOSTNAME)
        return self.start_shim(prog, args, **failures)

    def pop_with(self, **failures):
        return self.start_with("popserver", **failures)

    def session(self, server, *commands):
        """Log in as alice, send commands, QUIT; the replies, QUIT's last."""
        with Raw(server.port) as r:
            r.line()
            r.cmd("USER alice")
            self.assertTrue(r.cmd("PASS alicepw").startswith("+OK"))
            return [r.cmd(c) for c in commands + ("QUIT",)]

    def test_directory_fsync_fails_after_the_rename(self):
        server = self.pop_with(FAILFS_DIR_FSYNC="1")
        replies = self.session(server, "DELE 1", "DELE 3")
        # The rename took effect: the messages are gone, and +OK says so
        # (RFC 1939: the reply describes the mailbox as it is).
        self.assertEqual(replies[-1], "+OK 2 messages deleted, goodbye")
        self.assertEqual(self.mailbox("alice"), self.recs[1] + self.recs[3])
        self.assertFalse(os.path.exists(self.mailbox_path("alice") + ".new"))
        log = server.log()
        self.assertIn("alice: update: the fsync of the directory failed (Input/output "
                      "error): the messages are removed, but the removal may not "
                      "survive a crash", log)
        self.assertIn("logout alice: 0 retrieved, 2 deleted", log)
        self.assertEqual(self.session(server, "STAT")[0],
                         "+OK 2 %d" % (self.sizes[1] + self.sizes[3]))

    def test_conversion_with_failing_directory_fsync(self):
        hand = b"From: a@x\nSubject: by hand\n\nhello\n"
        converted = b"From: a@x\r\nSubject: by hand\r\n\r\nhello\r\n.\r\n"
        warning = ("alice/mymailbox: converted, but the fsync of its directory failed "
                   "(Input/output error): the conversion may not survive a crash")
        # popserver serves it: a crash could only bring back the same mail.
        self.put(hand)
        pop = self.pop_with(FAILFS_DIR_FSYNC="1")
        self.assertEqual(self.session(pop, "STAT")[0], "+OK 1 %d" % (len(converted) - 3))
        self.assertEqual(self.mailbox("alice"), converted)
        self.assertIn(warning, pop.log())
        # smtpmail does not append to a file whose name may not last: 451.
        self.put(hand)
        smtp = self.start_with("smtpmail", FAILFS_DIR_FSYNC="1")
        with Raw(smtp.port) as c:
            c.reply()
            c.cmd("HELO client.example")
            c.cmd("MAIL FROM:<s@example.org>")
            c.cmd("RCPT TO:<alice@x.example>")
            c.cmd("DATA")
            c.send(b"Subject: new\r\n\r\nnew\r\n.\r\n")
            self.assertEqual(c.reply()[-1], "451 Local error in processing, try again later")
        self.assertEqual(self.mailbox("alice"), converted)
        self.assertIn(warning, smtp.log())

    def test_full_disk(self):
        server = self.pop_with(FAILFS_ENOSPC="/mymailbox.new")
        ino = os.stat(self.mailbox_path("alice")).st_ino
        # A message in the middle: the rest must be copied, and cannot be.
        self.assertEqual(self.session(server, "DELE 2")[-1],
                         "-ERR some deleted messages not removed")
        self.assertEqual(self.mailbox("alice"), b"".join(self.recs))
        self.assertFalse(os.path.exists(self.mailbox_path("alice") + ".new"))
        self.assertIn("alice: update failed: No space left on device", server.log())
        # The last messages: cut off in place, no copy needed.
        self.assertEqual(self.session(server, "DELE 4", "DELE 3")[-1],
                         "+OK 2 messages deleted, goodbye")
        self.assertEqual(self.mailbox("alice"), self.recs[0] + self.recs[1])
        self.assertEqual(os.stat(self.mailbox_path("alice")).st_ino, ino)
        # Mail that arrived during the session follows the last message:
        # that deletion needs a copy, so it is refused, and nothing changes.
        new, _ = make_record([b"arrived"])
        with Raw(server.port) as r:
            r.line()
            r.cmd("USER alice")
            r.cmd("PASS alicepw")
            with open(self.mailbox_path("alice"), "ab") as f:
                f.write(new)
            r.cmd("DELE 2")
            self.assertEqual(r.cmd("QUIT"), "-ERR some deleted messages not removed")
        self.assertEqual(self.mailbox("alice"), self.recs[0] + self.recs[1] + new)
        # Everything: the mailbox is emptied in place.
        self.assertEqual(self.session(server, "DELE 1", "DELE 2", "DELE 3")[-1],
                         "+OK 3 messages deleted, goodbye")
        self.assertEqual(self.mailbox("alice"), b"")
        self.assertEqual(os.stat(self.mailbox_path("alice")).st_ino, ino)


if __name__ == "__main__":
    unittest.main()
