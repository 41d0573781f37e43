"""smtpmail and popserver together over one spool: what smtplib sends,
poplib fetches back byte for byte (plus the Return-Path and Received lines
smtpmail prepends); a crashed tail is repaired by the next delivery;
concurrent deliveries and deleting POP3 sessions lose and duplicate nothing.
"""
import os
import poplib
import random
import re
import smtplib
import threading
import time

from harness import HOSTNAME, TRACE, MailTest, binary

CRLF = b"\r\n"


def message(subject, body_lines):
    """A message as smtplib sends it: CRLF lines, ending in CRLF."""
    head = [b"From: sender@example.org", b"To: alice@example.com",
            b"Subject: " + subject]
    return b"".join(l + CRLF for l in head + [b""] + body_lines)


def strip_trace(lines):
    """The retrieved lines without smtpmail's Return-Path and Received."""
    assert lines[0].startswith(b"Return-Path: <"), lines[0]
    assert lines[1].startswith(b"Received: from "), lines[1]
    i = 2
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    assert b"by " + HOSTNAME.encode() in b"".join(lines[1:i])
    return lines[i:]


class CrossTest(MailTest):
    def setUp(self):
        super().setUp()
        # Not skipped silently: the cross tests need both programs.
        self.assertTrue(os.path.exists(binary("smtpmail")), "smtpmail not built")
        self.smtp = self.start_smtp()
        self.pop = self.start_pop("-w", "50")

    def send(self, msg, to=("alice@example.com",), sender="sender@example.org"):
        with smtplib.SMTP("127.0.0.1", self.smtp.port, timeout=60) as s:
            s.sendmail(sender, list(to), msg)

    def fetch_all(self, login="alice", delete=False):
        """Every message of login as (uidl, lines, octets)."""
        p = poplib.POP3("127.0.0.1", self.pop.port, timeout=60)
        p.user(login)
        p.pass_(login + "pw")
        out = []
        uids = dict(l.split() for l in p.uidl()[1])
        sizes = dict(map(int, l.split()) for l in p.list()[1])
        for n in range(1, p.stat()[0] + 1):
            resp, lines, octets = p.retr(n)
            # LIST's size is what RETR delivered: unstuffed, CRLF included.
            assert octets == sizes[n] == sum(len(l) + 2 for l in lines), n
            out.append((uids[str(n).encode()], lines, octets))
            if delete:
                p.dele(n)
        p.quit()
        return out


class RoundTrip(CrossTest):
    """smtplib -> smtpmail -> mymailbox -> popserver -> poplib."""

    def test_text_dots_8bit_long_lines(self):
        body = [b"plain line", b".", b"..x", b".leading", b"...", b"",
                "8-bit: h\u00e9llo w\u00f6rld \u20ac".encode("utf-8"),
                bytes(range(0x80, 0x100)),
                b"L" * 998, b"tab\there", b"last line"]
        msg = message(b"round trip", body)
        self.send(msg)
        [(uid, lines, octets)] = self.fetch_all()
        self.assertEqual(b"".join(l + CRLF for l in strip_trace(lines)), msg)
        self.assertEqual(octets, sum(len(l) + 2 for l in lines))
        self.assertRegex(uid, rb"^[0-9a-f]{16}$")

    def test_ten_megabyte_message(self):
        body = [(b"%06d " % i) + b"z" * 92 for i in range(100000)]
        body[10] = b"."
        body[20] = b"..y"
        msg = message(b"big", body)
        self.assertGreater(len(msg), 10 * 1000 * 1000)
        self.send(msg)
        [(uid, lines, octets)] = self.fetch_all()
        self.assertEqual(b"".join(l + CRLF for l in strip_trace(lines)), msg)

    def test_several_messages_and_recipients(self):
        msgs = [message(b"m%d" % i, [b"body %d" % i]) for i in range(5)]
        for m in msgs:
            self.send(m, to=("alice@example.com", "bob@example.com"))
        for login in ("alice", "bob"):
            got = self.fetch_all(login, delete=(login == "bob"))
            self.assertEqual([b"".join(l + CRLF for l in strip_trace(g[1])) for g in got],
                             msgs)
            self.assertEqual(len(set(g[0] for g in got)), 5)
        self.assertEqual(self.mailbox("bob"), b"")
        self.assertEqual(len(self.records("alice")), 5)

    def test_crashed_tail_repaired_by_next_delivery(self):
        first = message(b"first", [b"one"])
        self.send(first)
        offset = os.path.getsize(self.mailbox_path("alice"))
        with open(self.mailbox_path("alice"), "ab") as f:
            f.write(TRACE + b"Subject: half\r\n\r\nhal")   # a crashed append of smtpmail's
        self.announce_append("alice", offset)
        got = self.fetch_all()
        self.assertEqual(len(got), 1)   # only the complete record is served
        second = message(b"second", [b"two", b"."])
        self.send(second)
        self.assertTrue(self.mailbox("alice").endswith(b"\r\n.\r\n"))
        self.assertNotIn(b"crash@example.org", self.mailbox("alice"))
        got = self.fetch_all()
        self.assertEqual([b"".join(l + CRLF for l in strip_trace(g[1])) for g in got],
                         [first, second])
        self.assertEqual(got[0][0], self.fetch_all()[0][0])   # UIDL stable

    def test_repair_during_a_session(self):
        first = message(b"first", [b"one"])
        self.send(first)
        offset = os.path.getsize(self.mailbox_path("alice"))
        with open(self.mailbox_path("alice"), "ab") as f:
            f.write(TRACE + b"\r\npart")   # a crashed append of smtpmail's
        self.announce_append("alice", offset)
        p = poplib.POP3("127.0.0.1", self.pop.port, timeout=30)
        p.user("alice")
        p.pass_("alicepw")
        second = message(b"second", [b"two"])
        self.send(second)   # trims the tail after N, appends
        p.dele(1)
        self.assertTrue(p.quit().startswith(b"+OK"))
        got = self.fetch_all()
        self.assertEqual([b"".join(l + CRLF for l in strip_trace(g[1])) for g in got],
                         [second])
        self.assertNotIn(b"crash@example.org", self.mailbox("alice"))

    def test_delivery_while_session_open_is_kept(self):
        self.send(message(b"old", [b"old"]))
        p = poplib.POP3("127.0.0.1", self.pop.port, timeout=30)
        p.user("alice")
        p.pass_("alicepw")
        self.send(message(b"new", [b"new"]))   # write lock is free: delivered
        self.assertEqual(p.stat()[0], 1)
        p.dele(1)
        p.quit()
        got = self.fetch_all()
        self.assertEqual(len(got), 1)
        self.assertEqual(strip_trace(got[0][1])[-1], b"new")


    def test_mailbox_replaced_during_a_session(self):
        """An editor saves by renaming a new file over the old one: the
        session's index then describes a file that is not the mailbox any
        more, and its update must not drop what was delivered to the new one."""
        self.send(message(b"one", [b"one"]))
        self.send(message(b"two", [b"two"]))
        p = poplib.POP3("127.0.0.1", self.pop.port, timeout=30)
        p.user("alice")
        p.pass_("alicepw")
        path = self.mailbox_path("alice")
        with open(path, "rb") as f:
            data = f.read()
        with open(path + ".edit", "wb") as f:
            f.write(data)
        os.rename(path + ".edit", path)
        self.send(message(b"three", [b"three"]))   # 250: into the new file
        p.dele(1)
        with self.assertRaises(poplib.error_proto):
            p.quit()                               # -ERR: nothing deleted
        got = self.fetch_all()
        self.assertEqual([strip_trace(g[1])[-1] for g in got], [b"one", b"two", b"three"])


class Concurrency(CrossTest):
    """Deliveries and deleting POP3 sessions at once: nothing lost or doubled."""

    SENDERS, PER_SENDER = 4, 75   # 300 messages

    def sender(self, k, errors):
        try:
            with smtplib.SMTP("127.0.0.1", self.smtp.port, timeout=60) as s:
                for i in range(self.PER_SENDER):
                    tag = b"T%d-%d" % (k, i)
                    s.sendmail("s@example.org", ["alice@example.com"],
                               message(b"tag " + tag, [b"X-Tag " + tag, b"."]))
        except Exception as e:   # reported by the test
            errors.append(repr(e))

    def popper(self, seed, stop, taken, errors):
        rnd = random.Random(seed)
        for _ in range(2000):   # bounded; normally ends on stop
            done = stop.is_set()
            try:
                p = poplib.POP3("127.0.0.1", self.pop.port, timeout=60)
                p.user("alice")
                try:
                    p.pass_("alicepw")
                except poplib.error_proto as e:
                    if b"[IN-USE]" not in e.args[0]:
                        errors.append(repr(e))
                    p.close()
                    time.sleep(0.01)
                    continue
                mine = []
                for n in range(1, p.stat()[0] + 1):
                    if rnd.random() < 0.5:
                        lines = p.retr(n)[1]
                        mine.append(re.search(rb"X-Tag (\S+)", b"\n".join(lines)).group(1))
                        p.dele(n)
                if p.quit().startswith(b"+OK"):
                    taken.extend(mine)
            except Exception as e:   # reported by the test
                errors.append(repr(e))
                return
            if done:
                return

    def test_no_loss_no_duplicates(self):
        errors, taken, stop = [], [], threading.Event()
        senders = [threading.Thread(target=self.sender, args=(k, errors))
                   for k in range(self.SENDERS)]
        poppers = [threading.Thread(target=self.popper, args=(k, stop, taken, errors))
                   for k in range(2)]
        for t in senders + poppers:
            t.start()
        for t in senders:
            t.join(120)
        stop.set()
        for t in poppers:
            t.join(60)
        self.assertEqual(errors, [])
        rest = [re.search(rb"X-Tag (\S+)", b"\n".join(g[1])).group(1)
                for g in self.fetch_all()]
        every = taken + rest
        self.assertGreater(len(taken), 0)
        self.assertEqual(len(every), len(set(every)), "duplicates")
        self.assertEqual(sorted(every), sorted(b"T%d-%d" % (k, i) for k in range(self.SENDERS)
                                               for i in range(self.PER_SENDER)))
