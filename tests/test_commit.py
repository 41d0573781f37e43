"""Group commit: what the commit state in mymailbox.lock may and may not do
(README, "Design": group commit). The state is written here by hand, as a
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

The state's layout (smtpmail.c, shared block "commit"): magic[8], boot_ms,
dev, ino, size, durable, syncing, kept, epoch: nine 8-byte fields, native
order.
"""
import os
import struct
import time
import unittest

from harness import TRACE, MailTest, Raw
from test_pop import make_record

STATE = struct.Struct("=8sqQQqqqqQ")
MAGIC = b"mtcmt03\0"


def boot_stamp_ms():
    """smtpmail's boot_stamp(): real-time clock less monotonic, in ms."""
    real = time.clock_gettime(time.CLOCK_REALTIME)
    mono = time.clock_gettime(time.CLOCK_MONOTONIC)
    return int((real - mono) * 1000)


class CommitState(MailTest):
    def setUp(self):
        super().setUp()
        self.smtp = self.start_smtp()
        self.pop = self.start_pop("-a", "0")

    def deliver(self, rcpts, body):
        with Raw(self.smtp.port) as c:
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
        with open(self.mailbox_path(login) + ".lock", "rb") as f:
            return list(STATE.unpack(f.read(STATE.size)))

    def set_state(self, login, **fields):
        names = ["magic", "boot_ms", "dev", "ino", "size", "durable", "syncing", "kept",
                 "epoch"]
        values = self.state(login)
        for name, value in fields.items():
            values[names.index(name)] = value
        with open(self.mailbox_path(login) + ".lock", "r+b") as f:
            f.write(STATE.pack(*values))

    def test_state_after_deliveries(self):
        self.assertTrue(self.deliver(["alice"], b"one").startswith("250"))
        self.assertTrue(self.deliver(["alice"], b"two").startswith("250"))
        magic, boot, dev, ino, size, durable, syncing, kept, epoch = self.state("alice")
        st = os.stat(self.mailbox_path("alice"))
        self.assertEqual((magic, dev, ino), (MAGIC, st.st_dev, st.st_ino))
        self.assertEqual((size, durable, syncing), (st.st_size, st.st_size, -1))
        self.assertLess(abs(boot - boot_stamp_ms()), 2000)

    def test_stale_state_of_another_boot_cuts_nothing(self):
        # After a reboot the state may say anything: here that nothing is
        # durable and an fsync was under way. All the mail is kept.
        for body in (b"one", b"two", b"three"):
            self.assertTrue(self.deliver(["alice"], body).startswith("250"))
        self.set_state("alice", boot_ms=boot_stamp_ms() - 3600 * 1000, durable=0,
                       syncing=100)
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

    def test_mail_appended_by_hand_is_shown(self):
        self.assertTrue(self.deliver(["alice"], b"one").startswith("250"))
        by_hand, _ = make_record([b"Subject: by hand", b"", b"by hand"])
        with open(self.mailbox_path("alice"), "ab") as f:
            f.write(by_hand)
        self.assertEqual(self.pop_bodies("alice"), ["one", "by hand"])
        st = os.stat(self.mailbox_path("alice"))
        self.assertEqual(self.state("alice")[4:7], [st.st_size, st.st_size, -1])

    def test_several_recipients_committed_together(self):
        self.assertTrue(self.deliver(["alice", "bob", "carol"], b"all").startswith("250"))
        for login in ("alice", "bob", "carol"):
            st = os.stat(self.mailbox_path(login))
            self.assertEqual(self.state(login)[4:7], [st.st_size, st.st_size, -1], login)
            self.assertEqual(self.pop_bodies(login), ["all"])


if __name__ == "__main__":
    unittest.main()
