"""Delivery of queued mail: the queue runner and its SMTP client.

Messages are put into A's queue as the intake leaves them (relay.queue_job)
and A's runner (smtpmail -q, or the one A's listening parent starts with -o)
delivers them to B (a real smtpmail) or to a scripted server that answers
each command as the test says and records each transaction. Retries run on
second-scale settings (-B); every wait is bounded.
"""
import os
import signal
import subprocess
import time

from harness import binary, free_port
from relay import (A_HOST, Closer, RelayTest, Tarpit, descendants, queue_job, read_env,
                   runner_pid, send_auth, wait_for, wire)


def body(subject="relay test"):
    """A message with what must cross unchanged: dot lines, 8-bit text, a
    998-octet line (RFC 5321 4.5.3.1.6), an empty line at the end."""
    return (b"From: alice@a.example\r\nTo: bob@b.example\r\nSubject: " + subject.encode()
            + b"\r\n\r\n.\r\n..two dots\r\n.leading dot\r\nJos\xc3\xa9 na\xefve \xff\r\n"
            + b"x" * 998 + b"\r\n\r\n")


class DeliveryTest(RelayTest):
    """Helpers: the queue emptied, a job's recipients in a state."""

    def queue_empty(self, timeout=15):
        self.assertTrue(wait_for(lambda: not self.queue(), timeout),
                        "the queue did not empty:\n" + self.listing())

    def state_of(self, ident, address):
        env = read_env(self.spool, ident)
        if env is None:
            return None
        return next((r for r in env["rcpt"] if r["address"] == address), None)

    def wait_state(self, ident, address, state, timeout=10):
        found = wait_for(lambda: (self.state_of(ident, address) or {}).get("state") == state,
                         timeout)
        self.assertTrue(found, "%s <%s> never %s:\n%s" % (ident, address, state,
                                                         self.listing()))
        return self.state_of(ident, address)


class Arrives(DeliveryTest):
    """Issue test 3: alice@A to bob@B arrives byte for byte; one transaction
    per domain."""

    def test_byte_identical_at_b(self):
        b = self.start_b()
        wire = queue_job(self.spool, "M1", "alice@a.example", ["bob@b.example"], body())
        self.start_a(routes=[b.route_to])
        self.queue_empty()
        records = self.b_records("bob")
        self.assertEqual(len(records), 1)
        # B's record: its own trace lines, then the data exactly as A sent it
        self.assertTrue(records[0].endswith(b"\r\n" + wire), records[0][:400])
        self.assertIn(b"Return-Path: <alice@a.example>", records[0])
        self.assertIn(b"by " + b"mx.b.example", records[0])
        self.assertIn("relay: M1 <bob@b.example>: delivered", self.servers[-1].log())

    def test_through_a_by_auth(self):
        """The whole path: AUTH at A, A's queue, A's runner woken by the
        session at once (a minute before it would look by itself), B."""
        b = self.start_b()
        a = self.start_a("-B", "600:600", routes=[b.route_to])
        wait_for(lambda: runner_pid(self.spool), 10)
        data = body("through A")
        send_auth(a.port, "alice@a.example", ["bob@b.example"], data)
        self.queue_empty(10)
        records = self.b_records("bob")
        self.assertEqual(len(records), 1)
        # B's trace lines, then A's Received line (after AUTH: ESMTPA), then
        # the data as alice sent it
        self.assertRegex(records[0], rb"^Return-Path: <alice@a.example>\r\n"
                         rb"Received: from mx.a.example \(\[127.0.0.1\]\)\r\n"
                         rb"\tby mx.b.example \(smtpmail\) with ESMTP id [^\r]*\r\n\t[^\r]*\r\n"
                         rb"Received: from client.a.example \(\[127.0.0.1\]\)\r\n"
                         rb"\tby mx.a.example \(smtpmail\) with ESMTPA id [^\r]*\r\n"
                         rb"\tfor <bob@b.example>; [^\r]*\r\n")
        self.assertTrue(records[0].endswith(b"\r\n" + wire(data)), records[0][:600])

    def test_one_transaction_per_domain(self):
        fake = self.fake()
        queue_job(self.spool, "M2", "alice@a.example",
                  ["bob@b.example", "carol@B.example", "dave@b.example"], body())
        self.runner(routes=[fake.route("b.example")])
        self.queue_empty()
        self.assertEqual(len(fake.transactions), 1)
        t = fake.transactions[0]
        self.assertEqual([a for a, _ in t.rcpts],
                         ["bob@b.example", "carol@B.example", "dave@b.example"])
        self.assertEqual(t.helo, "EHLO " + A_HOST)
        # offered: SIZE and BODY=8BITMIME (the data has 8-bit bytes)
        self.assertRegex(t.mail, r"^MAIL FROM:<alice@a.example> SIZE=\d+ BODY=8BITMIME$")
        self.assertTrue(t.quit)

    def test_jobs_share_a_session(self):
        """Messages due for one domain go one after the other on one
        session (RSET between), each recorded; QUIT once at the end."""
        fake = self.fake()
        for i in range(3):
            queue_job(self.spool, "S%d" % i, "alice@a.example", ["bob@b.example"],
                      body("shared %d" % i))
        self.runner(routes=[fake.route("b.example")])
        self.queue_empty()
        self.assertEqual(fake.connections, 1)
        self.assertEqual(len(fake.delivered()), 3)
        self.assertEqual(sum(c == "RSET" for t in fake.transactions for c in t.commands), 2)
        self.assertEqual(sum(t.quit for t in fake.transactions), 1)

    def test_helo_when_ehlo_refused_and_no_extensions(self):
        fake = self.fake(EHLO="502 5.5.1 no EHLO here", HELO="250 old.example")
        queue_job(self.spool, "M3", "alice@a.example", ["bob@b.example"], b"Subject: x\r\n\r\nhi\r\n")
        self.runner(routes=[fake.route("b.example")])
        self.queue_empty()
        t = fake.transactions[0]
        self.assertEqual(t.commands[:2], ["EHLO " + A_HOST, "HELO " + A_HOST])
        self.assertEqual(t.mail, "MAIL FROM:<alice@a.example>")   # no SIZE, no BODY


class Retries(DeliveryTest):
    """Issue tests 4 and 5: each RCPT reply decides its recipient; a 4xx is
    tried again, once delivered never again."""

    def test_451_then_250_exactly_one_copy(self):
        fake = self.fake(RCPT=["451 4.2.0 mailbox busy", "250 2.1.5 ok"])
        queue_job(self.spool, "R1", "alice@a.example", ["bob@b.example"], body())
        self.runner("-B", "2:2", routes=[fake.route("b.example")])
        r = self.wait_state("R1", "bob@b.example", "deferred")
        self.assertEqual(r["attempts"], 1)
        self.assertEqual(r["reply"], "451 4.2.0 mailbox busy")
        self.assertGreater(r["next"], time.time())
        listing = self.listing()
        self.assertIn("<bob@b.example>  deferred  attempts 1", listing)
        self.assertIn("451 4.2.0 mailbox busy", listing)
        self.queue_empty()
        self.assertEqual(len(fake.delivered()), 1)
        self.assertEqual(len(fake.transactions), 2)

    def test_250_550_451_in_one_transaction(self):
        fake = self.fake(RCPT=["250 2.1.5 ok", "550 5.1.1 no such user", "451 4.3.0 later",
                               "250 2.1.5 ok"])
        queue_job(self.spool, "R2", "alice@a.example",
                  ["x@b.example", "y@b.example", "z@b.example"], body())
        self.runner("-B", "1:1", routes=[fake.route("b.example")])
        self.queue_empty()
        first, second = fake.transactions
        self.assertEqual([a for a, _ in first.rcpts], ["x@b.example", "y@b.example", "z@b.example"])
        self.assertEqual([a for a, _ in second.rcpts], ["z@b.example"])   # x not again
        self.assertEqual(sorted(a for a, _ in fake.delivered()), ["x@b.example", "z@b.example"])
        reports = self.records("alice")
        self.assertEqual(len(reports), 1)
        self.assertIn(b"y@b.example", reports[0])
        self.assertNotIn(b"Final-Recipient: rfc822; x@b.example", reports[0])

    def test_too_big_for_the_remote_is_not_sent(self):
        """RFC 1870 6: a message over the SIZE the remote gave is not sent;
        it fails at once (5.3.4) and the sender gets a report."""
        fake = self.fake(EHLO="250-small.example\r\n250 SIZE 100")
        queue_job(self.spool, "Z1", "alice@a.example", ["bob@b.example"], body())
        self.runner(routes=[fake.route("b.example")])
        self.queue_empty()
        self.assertEqual(fake.transactions[0].mail, None)
        reports = self.records("alice")
        self.assertEqual(len(reports), 1)
        self.assertIn(b"Status: 5.3.4", reports[0])

    def test_data_refused_decides_all(self):
        fake = self.fake(DOT="554 5.6.0 content rejected")
        queue_job(self.spool, "R3", "alice@a.example", ["x@b.example", "y@b.example"], body())
        self.runner(routes=[fake.route("b.example")])
        self.queue_empty()
        self.assertEqual(len(fake.transactions), 1)
        self.assertEqual(len(self.records("alice")), 1)


    def test_long_reply_line_is_read(self):
        """RFC 5321 4.5.3.1.5 bounds a reply line at 512 octets, but
        servers send longer ones; a 250 of 700 octets to the final dot is
        read as a 250 (not waited past for 10 minutes, then sent again)."""
        fake = self.fake(DOT="250 2.0.0 queued " + "x" * 700)
        queue_job(self.spool, "L1", "alice@a.example", ["bob@b.example"], body())
        self.runner(routes=[fake.route("b.example")])
        self.queue_empty(10)
        self.assertEqual(len(fake.delivered()), 1)
        self.assertEqual(len(fake.transactions), 1)

    def test_endless_reply_line_defers_at_once(self):
        """A reply line past any bound is no SMTP: the recipient is deferred
        with our 451 at once, not after RCPT's 5-minute time-out."""
        fake = self.fake(RCPT="250 " + "y" * 20000)
        queue_job(self.spool, "L2", "alice@a.example", ["bob@b.example"], body())
        self.runner("-B", "600:600", routes=[fake.route("b.example")])
        r = self.wait_state("L2", "bob@b.example", "deferred", timeout=10)
        self.assertRegex(r["reply"], r"^451 4\.5\.0 .*too long")
        self.assertFalse(any(t.data for t in fake.transactions), "data sent")


class Crashes(DeliveryTest):
    """Issue test 8: a delivery process killed before the remote's final
    reply delivers later; killed after it, at most once more. Every
    process of A killed with 50 messages queued: after a restart all 50
    arrive, none twice."""

    def delivery_pid(self, runner):
        pids = wait_for(lambda: descendants(runner.proc.pid), 10)
        self.assertTrue(pids, "no delivery process")
        return pids[0]

    def test_killed_before_the_final_reply(self):
        fake = self.fake(DOT=[None, "250 2.0.0 ok"])
        queue_job(self.spool, "K1", "alice@a.example", ["bob@b.example"], body())
        runner = self.runner("-B", "1:1", routes=[fake.route("b.example")])
        self.assertTrue(wait_for(lambda: fake.transactions and fake.transactions[0].data, 10))
        os.kill(self.delivery_pid(runner), signal.SIGKILL)
        self.queue_empty()
        self.assertGreaterEqual(len(fake.transactions), 2)
        self.assertTrue(fake.transactions[-1].accepted())

    def test_killed_after_the_final_reply(self):
        fake = self.fake(QUIT=[None, "221 bye"])
        queue_job(self.spool, "K2", "alice@a.example", ["bob@b.example"], body())
        runner = self.runner("-B", "1:1", routes=[fake.route("b.example")])
        self.assertTrue(wait_for(lambda: fake.transactions and fake.transactions[0].quit, 10))
        os.kill(self.delivery_pid(runner), signal.SIGKILL)
        self.queue_empty()
        self.assertIn(len(fake.delivered()), (1, 2))

    def test_every_process_killed_with_50_queued(self):
        dead = self.fake(Closer)
        for i in range(50):
            queue_job(self.spool, "C%02d" % i, "alice@a.example", ["bob@b.example"],
                      body("message %02d" % i))
        a = self.start_a(routes=["b.example=[127.0.0.1]:%d" % dead.port])
        self.assertTrue(wait_for(lambda: dead.connections > 0, 10))
        for pid in [a.proc.pid] + descendants(a.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        a.proc.wait(10)
        self.assertEqual(len(self.queue()), 50)
        b = self.start_b()
        self.start_a(routes=[b.route_to])
        self.queue_empty(40)
        records = self.b_records("bob")
        subjects = sorted(r.split(b"Subject: ")[1].split(b"\r\n")[0] for r in records)
        self.assertEqual(subjects, [b"message %02d" % i for i in range(50)])


class NoStorm(DeliveryTest):
    """Issue tests 9 and 10: no retry storm after a restart, and a tarpit
    does not hold up mail to others."""

    def test_200_deferred_to_a_dead_destination(self):
        dead = self.fake(Closer)
        now = int(time.time())
        for i in range(200):
            queue_job(self.spool, "S%03d" % i, "alice@a.example", ["bob@b.example"],
                      b"Subject: storm\r\n\r\nhi\r\n", arrived=now - 60,
                      states=["deferred 3 %d %d - 451 4.4.1 earlier" % (now, now - 30)])
        self.runner("-B", "30:60", routes=["b.example=[127.0.0.1]:%d" % dead.port])

        def all_deferred_later():
            envs = [read_env(self.spool, "S%03d" % i) for i in range(200)]
            return all(e and e["rcpt"][0]["next"] > now for e in envs)
        self.assertTrue(wait_for(all_deferred_later, 30), self.listing()[:2000])
        # RELAY_PER_DEST connections, the others deferred without one
        self.assertLessEqual(dead.connections, 2)
        self.assertGreaterEqual(dead.connections, 1)
        envs = [read_env(self.spool, "S%03d" % i)["rcpt"][0] for i in range(200)]
        self.assertEqual(sum(r["attempts"] == 4 for r in envs), dead.connections)
        # deferred without a try: the last reply a remote gave is kept
        self.assertEqual(sum(r["reply"] == "451 4.4.1 earlier" for r in envs),
                         200 - dead.connections)

    def test_tarpit_does_not_delay_other_mail(self):
        tarpit = self.fake(Tarpit)
        fake = self.fake()
        queue_job(self.spool, "T1", "alice@a.example", ["slow@tarpit.example"], body())
        queue_job(self.spool, "T2", "alice@a.example",
                  ["quick@b.example", "slow2@tarpit.example"], body())
        started = time.monotonic()
        self.runner(routes=[tarpit.route("tarpit.example"), fake.route("b.example")])
        self.assertTrue(wait_for(lambda: len(fake.delivered()) == 1, 5),
                        "mail to b.example waited for the tarpit")
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(fake.delivered()[0][0], "quick@b.example")
        self.assertGreaterEqual(tarpit.connections, 1)


class Loop(DeliveryTest):
    """Issue test 12, second half: a route back to A itself is a mail loop:
    a 5.4.6 report, and no second connection."""

    def test_route_back_to_itself(self):
        port = free_port()
        queue_job(self.spool, "L1", "alice@a.example", ["bob@b.example"], body())
        a = self.start_a(routes=["b.example=[127.0.0.1]:%d" % port], port=port)
        self.queue_empty()
        reports = self.records("alice")
        self.assertEqual(len(reports), 1)
        self.assertIn(b"Status: 5.4.6", reports[0])
        self.assertEqual(a.log().count("relay: L1 <bob@b.example>"), 1)


class Steering(DeliveryTest):
    """Issue test 13: the listing, flush by -F and by SIGUSR1, removal; the
    runner alone; one runner per spool."""

    def smtpmail(self, *args):
        return subprocess.run([binary("smtpmail"), "-d", self.spool, "-u", self.userfile]
                              + list(args), capture_output=True, text=True, timeout=30)

    def deferred_job(self, fake, ident):
        """Queue ident and wake the runner as a session does (SIGUSR2: a
        scan; with -B 600 it would not look again for a minute)."""
        queue_job(self.spool, ident, "alice@a.example", ["bob@b.example"], body())
        os.kill(runner_pid(self.spool), signal.SIGUSR2)
        self.wait_state(ident, "bob@b.example", "deferred")
        self.assertEqual(len(fake.transactions), 1)

    def test_flush_by_option_and_by_signal(self):
        fake = self.fake(RCPT=["451 4.3.0 try later", "451 4.3.0 try later", "250 ok"])
        runner = self.runner("-B", "600:600", routes=[fake.route("b.example")])
        self.deferred_job(fake, "F1")
        self.assertIn("deferred", self.listing())
        run = self.smtpmail("-F")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertTrue(wait_for(lambda: len(fake.transactions) == 2, 2), "-F: no attempt")
        self.wait_state("F1", "bob@b.example", "deferred")
        self.assertEqual(runner_pid(self.spool), runner.proc.pid)
        os.kill(runner.proc.pid, signal.SIGUSR1)
        self.assertTrue(wait_for(lambda: len(fake.transactions) == 3, 2), "SIGUSR1: no attempt")
        self.queue_empty(5)

    def test_remove(self):
        fake = self.fake(RCPT="451 4.3.0 try later")
        self.runner("-B", "600:600", routes=[fake.route("b.example")])
        self.deferred_job(fake, "X1")
        run = self.smtpmail("-x", "X1")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(self.queue(), [])
        self.assertIn("0 messages in the queue", self.listing())

    def test_one_runner_per_spool(self):
        runner = self.runner()
        run = self.smtpmail("-q")
        self.assertEqual(run.returncode, 1)
        self.assertIn("a queue runner is already running (pid %d)" % runner.proc.pid,
                      run.stderr)
        runner.stop()
        run = self.smtpmail("-F")
        self.assertEqual(run.returncode, 1)
        self.assertIn("no queue runner is running", run.stderr)

    def test_listening_parent_restarts_its_runner(self):
        a = self.start_a()
        first = wait_for(lambda: runner_pid(self.spool), 10)
        self.assertTrue(first)
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (runner_pid(self.spool) or first) != first
                          and runner_pid(self.spool), 15)
        self.assertTrue(second, "the runner was not started again:\n" + a.log())
        self.assertEqual(a.stop(), 0)
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d" % second), 10),
                        "the runner outlived its server")


class Orphans(DeliveryTest):
    """Files a crash left in the queue: a .msg without its .env (the intake
    died between the two, or a removal between its two unlinks) and a
    stale .env.tmp (job_save cut short). The runner removes those older
    than an hour that nobody holds the job lock on, when it starts and on
    a flush; younger or locked ones stay (a session may be queueing them)."""

    HOUR_AGO = 2 * 3600

    def leftover(self, name, old=True):
        path = os.path.join(self.spool, ".queue", name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "wb") as f:
            f.write(wire(body()))
        if old:
            then = time.time() - self.HOUR_AGO
            os.utime(path, (then, then))
        return path

    def test_removed_at_start_and_on_flush(self):
        import fcntl
        fake = self.fake(RCPT="451 4.3.0 try later")
        queue_job(self.spool, "J1", "alice@a.example", ["bob@b.example"], body())
        gone = [self.leftover("O1.msg"), self.leftover("J1.env.tmp"),
                self.leftover("O4.env.tmp")]
        kept = [self.leftover("O2.msg", old=False), self.leftover("O3.msg")]
        with open(kept[1], "r+b") as held:
            fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            runner = self.runner("-B", "600:600", routes=[fake.route("b.example")])
            self.wait_state("J1", "bob@b.example", "deferred")
            self.assertTrue(wait_for(lambda: not any(map(os.path.exists, gone)), 5),
                            runner.log())
            self.assertTrue(all(map(os.path.exists, kept)), runner.log())
        self.assertIn("O1.msg: left by a crash", runner.log())
        self.assertEqual(self.queue(), ["J1"])
        late = self.leftover("O5.msg")
        run = subprocess.run([binary("smtpmail"), "-d", self.spool, "-F"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertTrue(wait_for(lambda: not os.path.exists(late), 5), runner.log())
        self.assertFalse(os.path.exists(kept[1]), "no longer locked, it goes on a flush")
        self.assertTrue(os.path.exists(kept[0]))
        self.assertTrue(os.path.exists(os.path.join(self.spool, ".queue", "J1.msg")))
