"""Group commit: what the commit state in mymailbox.state may and may not do
(DESIGN.md "The commit protocol"). The state is written here by hand, as a
crash, a reboot or a killed committer would leave it, and both servers are
then driven over the wire:

- a stale state (another boot) never cuts mail: it starts again from "what
  is there is durable";
- an fsync announced and never settled (its process died) is taken as
  failed: popserver does not show what it covered, and the next delivery
  cuts it back (its sender had no 250) and is itself delivered;
- mail appended by hand in place is shown at the next POP3 login (popserver
  commits it);
- a delivery to several mailboxes commits to all of them.

The state's layout: harness.STATE (DESIGN.md "The commit state").
"""
import fcntl
import os
import signal
import struct
import threading
import time
import unittest

from harness import (HOSTNAME, STATE, STATE_MAGIC, TRACE, MailTest, Raw, ShimBuild, boot_id,
                     proc_state, read_state, write_state)
from test_pop import make_record


class Servers(MailTest):
    """Both servers, and the commit state read and written by hand."""

    def setUp(self):
        super().setUp()
        self.smtp = self.start_smtp()
        self.pop = self.start_pop("-w", "0")

    def deliver(self, rcpts, body, timeout=10):
        with Raw(self.smtp.port, timeout=timeout) as c:
            c.reply()
            c.cmd("EHLO client.example")
            c.cmd("MAIL FROM:<s@example.org>")
            for r in rcpts:
                self.assertTrue(c.cmd("RCPT TO:<%s@x.example>" % r).startswith("250"))
            self.assertTrue(c.cmd("DATA").startswith("354"))
            c.send(b"Subject: %s\r\n\r\n%s\r\n.\r\n" % (body, body))
            last = c.reply()[-1]
            c.cmd("QUIT")
        return last

    def pop_bodies(self, login):
        """What a POP3 session shows: the last line of every message."""
        with Raw(self.pop.port) as r:
            r.line()
            r.cmd("USER " + login)
            self.assertTrue(r.cmd("PASS %spw" % login).startswith("+OK"))
            count = int(r.cmd("STAT").split()[1])
            bodies = []
            for n in range(1, count + 1):
                self.assertTrue(r.cmd("RETR %d" % n).startswith("+OK"))
                lines = []
                while True:
                    line = r.line()
                    if line == ".":
                        break
                    lines.append(line)
                bodies.append(lines[-1])
            r.cmd("QUIT")
        return bodies

    def state(self, login):
        return read_state(self.mailbox_path(login) + ".state")

    def set_state(self, login, **fields):
        write_state(self.mailbox_path(login) + ".state", **fields)

    def pending(self, login):
        """size, durable, syncing of login's commit state"""
        h = self.state(login)
        return [h["size"], h["durable"], h["syncing"]]



class CommitState(Servers):
    def test_state_after_deliveries(self):
        self.assertTrue(self.deliver(["alice"], b"one").startswith("250"))
        self.assertTrue(self.deliver(["alice"], b"two").startswith("250"))
        h = self.state("alice")
        st = os.stat(self.mailbox_path("alice"))
        self.assertEqual((h["magic"], h["dev"], h["ino"]), (STATE_MAGIC, st.st_dev, st.st_ino))
        self.assertEqual(self.pending("alice"), [st.st_size, st.st_size, -1])
        self.assertEqual((h["appending"], h["boot"]), (-1, boot_id()))

    def test_stale_state_of_another_boot_cuts_nothing(self):
        # After a reboot the state may say anything: here that nothing is
        # durable and an fsync was under way. All the mail is kept.
        for body in (b"one", b"two", b"three"):
            self.assertTrue(self.deliver(["alice"], body).startswith("250"))
        self.set_state("alice", boot=bytes(range(1, 17)), durable=0, syncing=100)
        self.assertTrue(self.deliver(["alice"], b"four").startswith("250"))
        self.assertEqual(self.pop_bodies("alice"), ["one", "two", "three", "four"])
        self.assertNotIn("cutting back", self.smtp.log())

    def test_unsettled_fsync_is_taken_as_failed(self):
        # A committer killed after announcing its fsync: the record it was
        # to cover (appended, never answered 250) is not shown, then cut.
        self.assertTrue(self.deliver(["alice"], b"one").startswith("250"))
        durable = os.path.getsize(self.mailbox_path("alice"))
        with open(self.mailbox_path("alice"), "ab") as f:
            f.write(TRACE + b"Subject: pending\r\n\r\npending\r\n.\r\n")
        size = os.path.getsize(self.mailbox_path("alice"))
        self.set_state("alice", size=size, durable=durable, syncing=size)
        self.assertEqual(self.pop_bodies("alice"), ["one"])
        self.assertTrue(self.deliver(["alice"], b"two").startswith("250"))
        self.assertIn("alice: an fsync failed or was left unsettled: cutting back the %d"
                      " bytes" % (size - durable), self.smtp.log())
        self.assertEqual(self.pop_bodies("alice"), ["one", "two"])

    def test_damaged_state_starts_a_fresh_epoch(self):
        # A state that is not ours starts again with an epoch no waiting
        # session can have noted (nor one less): not 0 again.
        self.assertTrue(self.deliver(["alice"], b"one").startswith("250"))
        old_epoch = self.state("alice")["epoch"]
        with open(self.mailbox_path("alice") + ".state", "r+b") as f:
            f.write(b"\0" * STATE.size)
        self.assertTrue(self.deliver(["alice"], b"two").startswith("250"))
        epoch = self.state("alice")["epoch"]
        self.assertNotIn(epoch, (0, 1, old_epoch, old_epoch + 1))
        self.assertEqual(self.pop_bodies("alice"), ["one", "two"])

    def test_mail_appended_by_hand_is_shown(self):
        self.assertTrue(self.deliver(["alice"], b"one").startswith("250"))
        by_hand, _ = make_record([b"Subject: by hand", b"", b"by hand"])
        with open(self.mailbox_path("alice"), "ab") as f:
            f.write(by_hand)
        self.assertEqual(self.pop_bodies("alice"), ["one", "by hand"])
        st = os.stat(self.mailbox_path("alice"))
        self.assertEqual(self.pending("alice"), [st.st_size, st.st_size, -1])

    def test_several_recipients_committed_together(self):
        self.assertTrue(self.deliver(["alice", "bob", "carol"], b"all").startswith("250"))
        for login in ("alice", "bob", "carol"):
            st = os.stat(self.mailbox_path(login))
            self.assertEqual(self.pending(login), [st.st_size, st.st_size, -1], login)
            self.assertEqual(self.pop_bodies(login), ["all"])


class Interleavings(ShimBuild, Servers):
    """Scripted interleavings and a failing write of the commit state. A
    session is held between its append and its commit by taking the commit
    lock here, then stopped (SIGSTOP: it leaves the lock's queue) while the
    other party runs; the session process is found in /proc/locks, waiting
    for byte 2 of mymailbox.state."""

    def start_shim_smtp(self, **failures):
        args = ("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1", "-n", HOSTNAME)
        return self.start_shim("smtpmail", args, **failures)

    def commit_waiter(self, login, timeout=5):
        """The pid of the process waiting for login's commit lock."""
        ino = os.stat(self.mailbox_path(login) + ".state").st_ino
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open("/proc/locks") as f:
                for line in f:
                    fields = line.split()
                    if (len(fields) == 9 and fields[1] == "->" and fields[7:] == ["2", "2"]
                            and fields[6].endswith(":%d" % ino)):
                        return int(fields[5])
            time.sleep(0.01)
        self.fail("no session came to wait for the commit lock")

    def stop(self, pid, timeout=5):
        """SIGSTOP pid and wait until it is stopped: then it has left the
        lock's queue, and the lock given up here cannot go to it."""
        os.kill(pid, signal.SIGSTOP)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc_state(pid) == "T":
                return
            time.sleep(0.01)
        self.fail("session %d did not stop" % pid)

    def start_delivery(self, body):
        """A delivery to alice up to its final dot; the reply is left unread."""
        c = Raw(self.smtp.port)
        c.reply()
        c.cmd("EHLO client.example")
        c.cmd("MAIL FROM:<s@example.org>")
        self.assertTrue(c.cmd("RCPT TO:<alice@x.example>").startswith("250"))
        self.assertTrue(c.cmd("DATA").startswith("354"))
        c.send(b"Subject: %s\r\n\r\n%s\r\n.\r\n" % (body, body))
        return c

    def held_delivery(self, body):
        """A delivery to alice held between its append and its commit: its
        connection (the reply unread) and its process, stopped (SIGCONT it)."""
        with open(self.mailbox_path("alice") + ".state", "r+b") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX, 1, 2)
            c = self.start_delivery(body)
            pid = self.commit_waiter("alice")
            self.stop(pid)
        return c, pid

    def test_record_deleted_before_its_session_commits(self):
        # The session's record was made durable by popserver's login, shown,
        # and deleted by its owner (truncated in place) before the session
        # took the commit lock: it was delivered, so 250, not a 451 that
        # makes the client send it again.
        self.assertTrue(self.deliver(["alice"], b"one").startswith("250"))
        c, pid = self.held_delivery(b"two")
        try:
            with Raw(self.pop.port) as r:
                r.line()
                r.cmd("USER alice")
                self.assertTrue(r.cmd("PASS alicepw").startswith("+OK"))
                self.assertEqual(r.cmd("STAT").split()[1], "2")
                self.assertTrue(r.cmd("DELE 2").startswith("+OK"))
                self.assertTrue(r.cmd("QUIT").startswith("+OK"))
        finally:
            os.kill(pid, signal.SIGCONT)
        with c:
            self.assertTrue(c.reply()[-1].startswith("250"))
        self.assertEqual(self.pop_bodies("alice"), ["one"])

    def test_rename_that_may_not_last_keeps_only_the_durable(self):
        # A QUIT rewrites the mailbox while a session's record, appended
        # after the login, waits for its fsync; the record is carried into
        # the new file, but the directory's fsync fails: after a crash the
        # old file, where it never was durable, may come back. So no 250.
        self.assertTrue(self.deliver(["alice"], b"one").startswith("250"))
        args = ("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1", "-w", "0")
        pop = self.start_shim("popserver", args, FAILFS_DIR_FSYNC="1")
        with Raw(pop.port) as r:
            r.line()
            r.cmd("USER alice")
            self.assertTrue(r.cmd("PASS alicepw").startswith("+OK"))
            c, pid = self.held_delivery(b"two")
            try:
                self.assertTrue(r.cmd("DELE 1").startswith("+OK"))
                self.assertTrue(r.cmd("QUIT").startswith("+OK"))
            finally:
                os.kill(pid, signal.SIGCONT)
        with c:
            self.assertTrue(c.reply()[-1].startswith("451"))

    def test_commit_state_unwritable_after_the_fsync(self):
        # The fsync succeeded but the commit state could not say so: it
        # stays announced, and the next delivery cuts the record back. So
        # its sender must not have been told 250.
        self.assertTrue(self.deliver(["alice"], b"zero").startswith("250"))
        self.smtp = self.start_shim_smtp(
            FAILFS_SETTLE_ENOSPC=os.path.join(self.dir, "settle-failed"))
        first = self.deliver(["alice"], b"one")
        self.assertTrue(os.path.exists(os.path.join(self.dir, "settle-failed")))
        self.assertTrue(self.deliver(["alice"], b"two").startswith("250"))
        bodies = self.pop_bodies("alice")
        self.assertEqual(bodies.count("one"), 1 if first.startswith("250") else 0,
                         (first, bodies))

    def test_pop3_shows_only_what_stays(self):
        # popserver's login fsync covered mail appended by hand, but the
        # commit state could not be written: the login may be refused, and
        # whatever it showed stays; the hand's mail is never cut.
        self.assertTrue(self.deliver(["alice"], b"zero").startswith("250"))
        by_hand, _ = make_record([b"Subject: by hand", b"", b"by hand"])
        with open(self.mailbox_path("alice"), "ab") as f:
            f.write(by_hand)
        args = ("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1", "-w", "0")
        self.pop = self.start_shim("popserver", args,
                                   FAILFS_SETTLE_ENOSPC=os.path.join(self.dir, "settle"))
        with Raw(self.pop.port) as r:
            r.line()
            r.cmd("USER alice")
            login = r.cmd("PASS alicepw")
        shown = self.pop_bodies("alice") if login.startswith("+OK") else []
        self.assertTrue(os.path.exists(os.path.join(self.dir, "settle")))
        self.assertTrue(self.deliver(["alice"], b"two").startswith("250"))
        after = self.pop_bodies("alice")
        for body in shown:
            self.assertIn(body, after, (shown, after))
        self.assertEqual(after, ["zero", "by hand", "two"])


class ClockSteps(ShimBuild, Servers):
    """The wall clock steps (NTP, date -s, a VM resumed) while an fsync
    fails: the state is of this boot still (its boot id says so), so the
    failed fsync's records are cut and their senders told 451, and every
    reply is true for the deliveries in flight meanwhile."""

    def test_clock_step_during_a_failing_fsync(self):
        self.assertTrue(self.deliver(["alice"], b"zero").startswith("250"))
        clock = os.path.join(self.dir, "clock")
        args = ("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1", "-n", HOSTNAME)
        self.smtp = self.start_shim("smtpmail", args, FAILFS_FSYNC_ONCE=clock + ".failed",
                                    FAILFS_CLOCK_FILE=clock, FAILFS_STEP_ON_FAIL="-7200",
                                    FAILFS_FAIL_MS="300")
        replies = {}

        def one(body):
            replies[body] = self.deliver(["alice"], body)
        threads = [threading.Thread(target=one, args=(b"m%d" % i,)) for i in range(6)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(60)
        self.assertTrue(os.path.exists(clock), "the clock never stepped")
        self.assertIn("451", "".join(replies.values()))   # the failed fsync's own
        self.assertTrue(self.deliver(["alice"], b"after").startswith("250"))
        bodies = self.pop_bodies("alice")
        for body, reply in replies.items():
            want = 1 if reply.startswith("250") else 0
            self.assertEqual(bodies.count(body.decode()), want, (body, reply, bodies))
        self.assertEqual((bodies[0], bodies[-1]), ("zero", "after"))


class StoppedHolder(Servers):
    """The commit lock held past the 30 s wait: a leader stopped in its
    fsync (announced), or a stopped popserver login (nothing announced).
    Held here from the test process; the sessions waiting for it must
    still answer true: 451 with their records taken out again while an
    announced fsync covers them, else 250 after their own fsync."""

    def hold_commit_lock(self, login, announce):
        if announce:    # a leader's record, appended, its fsync announced
            durable = os.path.getsize(self.mailbox_path(login))
            with open(self.mailbox_path(login), "ab") as f:
                f.write(make_record([b"Subject: lead", b"", b"lead"])[0])
            size = os.path.getsize(self.mailbox_path(login))
            self.set_state(login, size=size, durable=durable, syncing=size)
        # Last: closing any descriptor of the file drops our locks on it.
        fd = os.open(self.mailbox_path(login) + ".state", os.O_RDWR)
        self.addCleanup(os.close, fd)
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 2)
        return fd

    def test_commit_lock_held_past_the_wait(self):
        for login in ("alice", "bob"):
            self.assertTrue(self.deliver([login], b"zero").startswith("250"))
        held = {"alice": self.hold_commit_lock("alice", True),
                "bob": self.hold_commit_lock("bob", False)}
        replies = {}

        def one(login, body):
            replies[login, body] = self.deliver([login], body, timeout=80)
        threads = [threading.Thread(target=one, args=(login, b"%s%d" % (login.encode(), i)))
                   for login in held for i in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.1)
        for t in threads:
            t.join(90)
        for fd in held.values():
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 2)    # the holder goes on, or dies
        self.assertTrue(all(r.startswith("451") for (l, _), r in replies.items()
                            if l == "alice"), replies)
        self.assertTrue(all(r.startswith("250") for (l, _), r in replies.items()
                            if l == "bob"), replies)
        for login in held:
            self.assertTrue(self.deliver([login], b"after").startswith("250"))
        self.assertEqual(self.pop_bodies("alice"), ["zero", "after"])
        self.assertEqual(self.pop_bodies("bob"), ["zero", "bob0", "bob1", "after"])


if __name__ == "__main__":
    unittest.main()
