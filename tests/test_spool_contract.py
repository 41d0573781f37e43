"""The spool contract under other hands (DESIGN.md "The spool contract"):
250 means the message is in the mailbox until its owner deletes it, and
nothing another program does to the files of a user's directory may cost
an acknowledged message or a line written by hand.

- the lock and state file deleted, or replaced by another file, and the
  dotlock mymailbox.lock made and removed the way mutt_dotlock does, all
  while deliveries and POP3 sessions that delete mail run: no message
  answered 250 is lost;
- a dotlock held by another program is waited for, a stale one removed,
  and so is an fcntl lock on mymailbox (mutt's, procmail's);
- a message saved without its final "." line and appended back by hand is
  served as a message, never cut as a crashed append;
- a hand writer appending line by line while deliveries and POP3 logins
  convert the mailbox: every line it wrote is there afterwards.
"""
import fcntl
import os
import socket
import threading
import time

from harness import MailTest, Raw

LOAD_SECONDS = 4        # each load test runs its loops this long at most
DELIVERIES_MAX = 400    # and sends at most this many messages


def deliver(port, body):
    """One message to alice; the final reply (or None if the session broke)."""
    try:
        with Raw(port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            c.cmd("MAIL FROM:<s@example.org>")
            c.cmd("RCPT TO:<alice@x.example>")
            if not c.cmd("DATA").startswith("354"):
                return None
            c.send(b"Subject: " + body + b"\r\n\r\n" + body + b"\r\n.\r\n")
            last = c.reply()[-1]
            c.cmd("QUIT")
            return last
    except (OSError, AssertionError):
        return None


class Attacks(MailTest):
    def setUp(self):
        super().setUp()
        self.smtp = self.start_smtp()
        self.pop = self.start_pop("-w", "0")
        self.stop = threading.Event()
        self.acked, self.deleted = set(), set()

    def deliveries(self):
        for n in range(DELIVERIES_MAX):
            if self.stop.is_set():
                return
            body = b"msg-%05d" % n
            reply = deliver(self.smtp.port, body)
            if reply and reply.startswith("250"):
                self.acked.add(body)

    def pop_deleter(self):
        """Log in over and over; delete the first message of each session."""
        while not self.stop.is_set():
            try:
                with Raw(self.pop.port) as r:
                    r.line()
                    r.cmd("USER alice")
                    if not r.cmd("PASS alicepw").startswith("+OK"):
                        continue
                    if int(r.cmd("STAT").split()[1]) > 0:
                        r.cmd("RETR 1")
                        lines = []
                        while (line := r.line()) != ".":
                            lines.append(line)
                        if r.cmd("DELE 1").startswith("+OK") and \
                                r.cmd("QUIT").startswith("+OK"):
                            self.deleted.add(lines[-1].encode())
                            continue
                    r.cmd("QUIT")
            except (OSError, AssertionError, ValueError, IndexError):
                pass
            time.sleep(0.01)

    def run_load(self, attacker):
        threads = [threading.Thread(target=f) for f in
                   (self.deliveries, self.deliveries, self.pop_deleter, attacker)]
        for t in threads:
            t.start()
        time.sleep(LOAD_SECONDS)
        self.stop.set()
        for t in threads:
            t.join(60)
        self.assertGreater(len(self.acked), 20)
        data = self.mailbox("alice")
        lost = [b for b in self.acked if b not in self.deleted and b"\r\n" + b + b"\r\n" not in data]
        self.assertEqual(lost, [], "%d of %d acknowledged messages lost" %
                         (len(lost), len(self.acked)))

    def test_state_file_deleted_and_replaced(self):
        state = self.mailbox_path("alice") + ".state"

        def attacker():
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    if n % 2:
                        os.unlink(state)
                    else:
                        with open(state + ".tmp", "wb") as f:
                            f.write(b"another program's file\n")
                        os.rename(state + ".tmp", state)
                except OSError:
                    pass
                time.sleep(0.005)
        self.run_load(attacker)

    def test_dotlock_made_and_removed_like_mutt_dotlock(self):
        lock = self.mailbox_path("alice") + ".lock"

        def attacker():
            while not self.stop.is_set():
                try:
                    try:
                        os.unlink(lock)     # mutt_dotlock -f: take it by force
                    except FileNotFoundError:
                        pass
                    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    os.write(fd, b"%d\n" % os.getpid())
                    os.close(fd)
                    time.sleep(0.02)
                    os.unlink(lock)
                except OSError:
                    pass
                time.sleep(0.02)
        self.run_load(attacker)


class Dotlock(MailTest):
    def setUp(self):
        super().setUp()
        self.smtp = self.start_smtp()
        os.makedirs(os.path.dirname(self.mailbox_path("alice")), exist_ok=True)
        self.lock = self.mailbox_path("alice") + ".lock"

    def test_held_dotlock_is_waited_for(self):
        with open(self.lock, "w") as f:
            f.write("%d\n" % os.getpid())      # a live process: held
        threading.Timer(1.5, os.unlink, (self.lock,)).start()
        start = time.monotonic()
        self.assertTrue(deliver(self.smtp.port, b"waited").startswith("250"))
        self.assertGreater(time.monotonic() - start, 1.2)
        self.assertIn(b"\r\nwaited\r\n", self.mailbox("alice"))

    def test_fcntl_lock_on_the_mailbox_is_waited_for(self):
        # mutt and procmail lock mymailbox itself (fcntl, the whole file)
        # while they change it: a delivery must wait for them.
        self.assertTrue(deliver(self.smtp.port, b"first").startswith("250"))
        fd = os.open(self.mailbox_path("alice"), os.O_RDWR)
        self.addCleanup(os.close, fd)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        threading.Timer(1.5, fcntl.lockf, (fd, fcntl.LOCK_UN)).start()
        start = time.monotonic()
        self.assertTrue(deliver(self.smtp.port, b"waited").startswith("250"))
        self.assertGreater(time.monotonic() - start, 1.2)
        self.assertIn(b"\r\nwaited\r\n", self.mailbox("alice"))

    def test_stale_dotlocks_are_removed(self):
        for content, age in ((b"", 3600), (b"999999999\n", 0)):    # old; a dead pid
            with self.subTest(content=content, age=age):
                with open(self.lock, "wb") as f:
                    f.write(content)
                past = time.time() - age
                os.utime(self.lock, (past, past))
                start = time.monotonic()
                self.assertTrue(deliver(self.smtp.port, b"stale").startswith("250"))
                self.assertLess(time.monotonic() - start, 1.0)
                self.assertFalse(os.path.exists(self.lock))
        self.assertIn("mymailbox.lock: stale dotlock removed", self.smtp.log())


class HandWriting(MailTest):
    def test_saved_message_appended_back_is_kept(self):
        # What curl pop3://.../1 saves: our record, unstuffed, and no "."
        # line. Appended back by hand, it is mail, not a crashed append.
        smtp, pop = self.start_smtp(), self.start_pop("-w", "0")
        self.assertTrue(deliver(smtp.port, b"first").startswith("250"))
        saved = self.mailbox("alice")[:-3]
        with open(self.mailbox_path("alice"), "ab") as f:
            f.write(saved)
        self.assertTrue(deliver(smtp.port, b"second").startswith("250"))
        with Raw(pop.port) as r:
            r.line()
            r.cmd("USER alice")
            self.assertTrue(r.cmd("PASS alicepw").startswith("+OK"))
            self.assertEqual(r.cmd("STAT").split()[1], "3")
            r.cmd("QUIT")
        data = self.mailbox("alice")
        self.assertEqual(data.count(b"\r\nfirst\r\n"), 2)
        self.assertNotIn("trimmed", smtp.log())

    def test_hand_writer_loses_no_line(self):
        smtp, pop = self.start_smtp(), self.start_pop("-w", "0")
        self.assertTrue(deliver(smtp.port, b"start").startswith("250"))
        stop = threading.Event()
        written = []

        def writer():
            # echo >> mymailbox, a line at a time, with pauses
            for n in range(400):
                if stop.is_set():
                    return
                line = b"hand line %04d" % n
                with open(self.mailbox_path("alice"), "ab") as f:
                    f.write(line + (b"\n.\n" if n % 10 == 9 else b"\n"))
                written.append(line)
                time.sleep(0.005)

        def logins():
            while not stop.is_set():
                try:
                    with Raw(pop.port) as r:
                        r.line()
                        r.cmd("USER alice")
                        r.cmd("PASS alicepw")
                        r.cmd("QUIT")
                except (OSError, AssertionError):
                    pass

        def deliveries():
            for n in range(200):
                if stop.is_set():
                    return
                deliver(smtp.port, b"d%d" % n)
        threads = [threading.Thread(target=f) for f in (writer, logins, deliveries)]
        for t in threads:
            t.start()
        threads[0].join(LOAD_SECONDS + 10)
        stop.set()
        for t in threads:
            t.join(60)
        data = self.mailbox("alice")
        missing = [l for l in written if l not in data]
        self.assertEqual(missing, [], "%d of %d hand-written lines lost" %
                         (len(missing), len(written)))


if __name__ == "__main__":
    import unittest
    unittest.main()
