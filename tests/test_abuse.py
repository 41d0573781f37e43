"""Both servers under abuse by their clients: one address cannot take every
slot (-C), a burst of short sessions is never refused below -c, a client
that trickles (SMTP DATA under the minimum rate -r, POP3 CAPA without ever
logging in, -L) or keeps a session busy for ever (-T) is cut off while a
client from another address (127.0.0.2; Linux routes all of 127.0.0.0/8 to
lo) is served, and a wrong password's delay grows with the failures of the
client's address across sessions, and not for another address.

Every wait is bounded; the options are small so that it runs in seconds.
"""
import os
import socket
import threading
import time

from harness import HOSTNAME, Raw, POP_GREETING
from test_pop import PopTest, make_record
from test_smtp import SmtpTest
from test_smtp_process import children_of, wait_sessions_over

BINARIES = ("smtpmail", "popserver")
OTHER = "127.0.0.2"
BUSY_SMTP = "421 %s too many connections, try again later" % HOSTNAME
BUSY_POP = "-ERR [SYS/TEMP] too many connections"


def raw_from(port, source="127.0.0.1", timeout=10):
    """A Raw client whose connection comes from the loopback address source."""
    r = Raw.__new__(Raw)
    r.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0))
    r.buf = b""
    return r


def first_line(port, source="127.0.0.1"):
    """Connect from source, return the greeting (or refusal) line, close."""
    with raw_from(port, source) as r:
        return r.line()


def wait_greeted(port, source, ready, seconds):
    """Connect from source again and again (every 0.1 s, for at most seconds)
    until the first line starts with ready; returns (the client, when) or
    (None, None)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        r = raw_from(port, source)
        if r.line().startswith(ready):
            return r, time.time()
        r.close()
        time.sleep(0.1)
    return None, None


def wait_no_children(server, seconds=10):
    """Until every session process of server has been reaped (so that the
    parent has read their notes: the parent drains the pipe before it reaps)."""
    deadline = time.time() + seconds
    while time.time() < deadline and children_of(server.proc.pid):
        time.sleep(0.05)
    return not children_of(server.proc.pid)


def drip(clients, data, every, seconds):
    """A thread that sends each client one byte of data every `every` s (for
    at most `seconds`) until its connection fails; returns the thread."""
    def run():
        alive, end = list(clients), time.time() + seconds
        for i in range(len(data)):
            if not alive or time.time() > end:
                return
            for c in list(alive):
                try:
                    c.sock.sendall(data[i:i + 1])
                except OSError:
                    alive.remove(c)
            time.sleep(every)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def burst(port, busy, quit_line, threads=3, sessions=40):
    """threads clients, each opening `sessions` short sessions one after the
    other (greeting, QUIT, reply, close): how many were refused."""
    refused, errors = [], []

    def run():
        try:
            for _ in range(sessions):
                with raw_from(port) as r:
                    if r.line() == busy:
                        refused.append(1)
                        continue
                    r.send(quit_line)
                    r.line()
        except OSError as e:      # reported by the test
            errors.append(repr(e))
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return len(refused), errors


class SmtpLimits(SmtpTest):
    """smtpmail: -C per address, and no 421 below -c under a burst."""

    def test_per_address_limit_other_address_served_logged_once_per_burst(self):
        server = self.start_smtp("-c", "4", "-C", "2")
        held = [raw_from(server.port) for _ in range(2)]
        self.clients.extend(held)
        for c in held:
            self.assertEqual(c.line(), "220 %s Service ready" % HOSTNAME)
        for _ in range(3):                      # one burst: three refusals
            self.assertEqual(first_line(server.port), BUSY_SMTP)
        other = raw_from(server.port, OTHER)    # another address still gets in
        self.clients.append(other)
        self.assertEqual(other.line(), "220 %s Service ready" % HOSTNAME)
        self.assertEqual(other.cmd("QUIT"), "221 %s closing connection" % HOSTNAME)
        note = "refused 127.0.0.1: 2 sessions from this address (-C)"
        self.assertEqual(server.log().count(note), 1, server.log()[-1500:])
        held[0].cmd("QUIT")                     # a slot of 127.0.0.1 frees
        again, _ = wait_greeted(server.port, "127.0.0.1", "220", 5)
        self.assertIsNotNone(again)
        self.clients.append(again)
        self.assertEqual(first_line(server.port), BUSY_SMTP)   # a new burst
        self.assertEqual(server.log().count(note), 2)

    def test_burst_of_short_sessions_never_refused_below_the_limit(self):
        # Three clients at -c 4, each reconnecting the moment it has the 221:
        # sessions that are over must not count, though their processes are
        # still exiting (slowly, under the sanitizers).
        server = self.start_smtp("-c", "4", "-C", "4")
        refused, errors = burst(server.port, BUSY_SMTP, "QUIT\r\n")
        self.assertEqual(errors, [])
        self.assertEqual(refused, 0, server.log()[-1500:])
        self.assertTrue(wait_sessions_over(server))


class HeldPopTest(PopTest):
    """PopTest whose test may keep clients in self.held: they are closed
    before the server stops (it would give their sessions 10 s)."""

    held = ()

    def tearDown(self):
        for c in self.held:
            c.close()
        super().tearDown()


class PopLimits(HeldPopTest):
    """popserver: -C per address, and no -ERR busy below -c under a burst."""

    def test_per_address_limit_other_address_served(self):
        self.pop("-c", "4", "-C", "2")
        port = self.server.port
        self.held = held = [raw_from(port) for _ in range(2)]
        for c in held:
            self.assertRegex(c.line(), POP_GREETING)
        self.assertEqual(first_line(port), BUSY_POP)
        self.assertEqual(first_line(port), BUSY_POP)
        with raw_from(port, OTHER) as other:
            self.assertRegex(other.line(), POP_GREETING)
            other.cmd("USER alice")
            self.assertTrue(other.cmd("PASS alicepw").startswith("+OK"))
            other.cmd("QUIT")
        log = self.server.log()
        self.assertEqual(log.count("refused 127.0.0.1: 2 sessions from this address (-C)"), 1, log)

    def test_burst_of_short_sessions_never_refused_below_the_limit(self):
        self.pop("-c", "4", "-C", "4")
        refused, errors = burst(self.server.port, BUSY_POP, "QUIT\r\n")
        self.assertEqual(errors, [])
        self.assertEqual(refused, 0, self.server.log()[-1500:])
        self.assertTrue(wait_no_children(self.server))


class SmtpSlowClients(SmtpTest):
    """smtpmail: the minimum data rate in DATA (-r) and the lifetime (-T)."""

    def test_data_dripper_cut_off_other_address_served(self):
        # Two drippers take both slots, one byte every 0.25 s: each byte
        # comes well within -t 2, but 4 bytes/s is far under -r 1000, so the
        # DATA deadline (2 s, plus 1 ms a byte) ends them after about 2 s.
        server = self.start_smtp("-c", "2", "-C", "2", "-t", "2", "-r", "1000")
        drippers = []
        for k in range(2):
            c = raw_from(server.port)
            self.clients.append(c)
            self.assertTrue(c.line().startswith("220"))
            c.cmd("EHLO drip.example")
            self.transaction_start(c, "drip%d@x.example" % k)
            drippers.append(c)
        start = time.time()
        thread = drip(drippers, b"Subject: slow\r\n\r\n" + b"x" * 60, 0.25, 20)
        self.assertEqual(first_line(server.port, OTHER), BUSY_SMTP)   # both slots held
        other, served_at = wait_greeted(server.port, OTHER, "220", 8)
        self.assertIsNotNone(other, "no slot freed within 8 s")
        self.clients.append(other)
        other.cmd("EHLO fast.example")
        self.accepted_id(self.transaction(other, "fast@y.example", ["alice@x.example"],
                                          b"Subject: fast\r\n\r\nfast\r\n.\r\n"))
        self.assertLess(served_at - start, 8)    # the drip alone would last 20 s
        for c in drippers:
            self.assertEqual(c.line(), "421 4.4.2 %s Timeout, closing connection" % HOSTNAME)
            self.assertTrue(c.closed())
        thread.join(25)
        records = self.records("alice")
        self.assertEqual(len(records), 1)       # the drippers stored nothing
        self.assertIn(b"fast", records[0])
        self.assertEqual(server.log().count("the data came too slowly (-r bytes/s)"), 2)

    def transaction_start(self, c, sender):
        self.assertTrue(c.cmd("MAIL FROM:<%s>" % sender).startswith("250"))
        self.assertTrue(c.cmd("RCPT TO:<alice@x.example>").startswith("250"))
        self.assertTrue(c.cmd("DATA").startswith("354"))

    def test_a_fast_message_is_not_cut(self):
        # 200 KB at once: far above -r, whatever -t.
        server = self.start_smtp("-t", "2", "-r", "100000")
        c = self.connect(server)
        body = b"Subject: big\r\n\r\n" + b"y" * 998 + b"\r\n"
        self.accepted_id(self.transaction(c, "a@b.example", ["bob@x.example"],
                                          body * 200 + b".\r\n"))

    def test_lifetime_ends_a_busy_session(self):
        server = self.start_smtp("-t", "5", "-T", "2")
        c = self.connect(server)
        start, last = time.time(), ""
        while time.time() - start < 8:
            c.send("NOOP\r\n")
            last = c.line()
            if not last.startswith("250"):
                break
            time.sleep(0.3)
        self.assertEqual(last, "421 4.4.2 %s Timeout, closing connection" % HOSTNAME)
        self.assertLess(time.time() - start, 4)
        self.assertTrue(c.closed())
        self.assertIn("the session lasted its -T seconds", server.log())


class PopSlowClients(HeldPopTest):
    """popserver: the login deadline (-L) and the lifetime (-T)."""

    def test_capa_without_login_cut_off_other_address_served(self):
        self.put("alice", make_record([b"hello"])[0])
        self.pop("-c", "2", "-C", "2", "-L", "2")
        port = self.server.port
        self.held = drippers = [raw_from(port) for _ in range(2)]
        for c in drippers:
            self.assertRegex(c.line(), POP_GREETING)
        start, stop = time.time(), threading.Event()

        def capa():                              # CAPA every 0.4 s, never a login
            alive = list(drippers)
            while alive and not stop.is_set() and time.time() - start < 20:
                for c in list(alive):
                    try:
                        c.send("CAPA\r\n")
                        while c.line() not in (".", ""):
                            pass
                        if getattr(c, "eof", False):
                            alive.remove(c)
                    except OSError:
                        alive.remove(c)
                time.sleep(0.4)
        t = threading.Thread(target=capa, daemon=True)
        t.start()
        self.assertEqual(first_line(port, OTHER), BUSY_POP)
        other, served_at = wait_greeted(port, OTHER, "+OK", 8)
        self.assertIsNotNone(other, "no slot freed within 8 s")
        with other:
            other.cmd("USER alice")
            self.assertTrue(other.cmd("PASS alicepw").startswith("+OK maildrop has 1"))
            other.cmd("QUIT")
        stop.set()
        t.join(10)
        self.assertLess(served_at - start, 8)   # CAPA alone would go on for 20 s
        for c in drippers:
            self.assertTrue(c.closed(1))
        self.assertEqual(self.server.log().count("no login within -L seconds"), 2)

    def test_lifetime_closes_without_update(self):
        rec = make_record([b"keep me"])[0]
        self.put("alice", rec)
        self.pop("-T", "2")
        r = self.raw("alice")
        self.assertTrue(r.cmd("DELE 1").startswith("+OK"))
        start = time.time()
        while time.time() - start < 8:
            r.send("NOOP\r\n")
            if r.line() != "+OK":
                break
            time.sleep(0.3)
        self.assertTrue(r.closed())
        self.assertLess(time.time() - start, 4)
        r.close()
        self.assertEqual(self.mailbox("alice"), rec)      # RFC 1939: no update
        self.assertTrue(wait_no_children(self.server))
        self.assertIn("the session lasted its -T seconds", self.server.log())


class Penalty(HeldPopTest):
    """The wrong-password delay doubles with the failures of the address,
    across its sessions, and with its parallel sessions; not for others."""

    def wrong(self, r):
        """One wrong PASS: the seconds its answer took."""
        r.cmd("USER alice")
        start = time.time()
        self.assertEqual(r.cmd("PASS nope"), "-ERR [AUTH] invalid user name or password")
        return time.time() - start

    def test_penalty_grows_across_sessions_not_for_another_address(self):
        self.pop("-w", "100")
        port = self.server.port
        with raw_from(port) as r:                       # 100, 200, 400 ms
            r.line()
            times = [self.wrong(r) for _ in range(3)]
            self.assertTrue(r.closed())                 # the third closes
        self.assertGreater(times[1], 0.19, times)
        self.assertGreater(times[2], 0.39, times)
        self.assertTrue(wait_no_children(self.server))  # its note is read
        with raw_from(port) as r:                       # 3 failures: 100 * 2^3 ms
            r.line()
            self.assertGreater(self.wrong(r), 0.79)
            r.cmd("USER alice")
            start = time.time()
            self.assertTrue(r.cmd("PASS alicepw").startswith("+OK"))   # no delay
            self.assertLess(time.time() - start, 0.5)
            r.cmd("QUIT")
        with raw_from(port, OTHER) as r:                # another address: 100 ms
            r.line()
            self.assertLess(self.wrong(r), 0.6)
            r.cmd("QUIT")

    def test_parallel_sessions_of_an_address_escalate(self):
        self.pop("-w", "100")
        port = self.server.port
        self.held = [raw_from(port) for _ in range(3)]
        for r in self.held:
            r.line()
        with raw_from(port) as r:                       # 3 others live: 800 ms
            r.line()
            self.assertGreater(self.wrong(r), 0.79)
        with raw_from(port, OTHER) as r:
            r.line()
            self.assertLess(self.wrong(r), 0.6)
