"""smtpmail: the pool of reusable session processes (DESIGN.md "Process model").

A connection goes to an idle worker if there is one, else to a new process,
so the pool grows with demand; beyond POOL_SPARE (8) idle workers are
dismissed; a worker exits after POOL_MAX_USE (100) sessions. Shown here
over real sockets against the real binary: sequential sessions share one
process, until it retires; nothing of one session (transaction, HELO, AUTH,
the penalty delay) reaches the next one in the same process, and message ids
stay distinct; more persistent sessions than spare workers are all greeted;
-c refuses at its limit with idle workers around; SIGTERM drains a session
mid-DATA and dismisses idle workers at once; a worker killed by SIGKILL frees
its slot; the descriptors of a worker are the same after 50 sessions.

Which process served a session: the pid of its "connection from" log line.
"""
import os
import re
import signal
import socket
import time
import unittest

from harness import HOSTNAME, gone
from test_abuse import OTHER, BUSY_SMTP, raw_from
from test_auth import plain
from test_smtp import SmtpTest
from test_smtp_process import children_of, wait_sessions_over

POOL_SPARE = 8
POOL_MAX_USE = 100
GREETING = "220 %s Service ready" % HOSTNAME
WRONG = "535 5.7.8 Authentication credentials invalid"


def session_pids(server):
    """The pid of each session so far, in order (its "connection from" line)."""
    return [int(p) for p in re.findall(r"smtpmail\[(\d+)\]: connection from ", server.log())]


def fd_table(pid):
    """{descriptor: what it refers to} of a process (Linux /proc)."""
    path = "/proc/%d/fd" % pid
    return {fd: os.readlink(os.path.join(path, fd)) for fd in os.listdir(path)}


def kill_if_ours(pid, port):
    """SIGKILL pid if it is still the smtpmail worker of the server on port
    (a test's own, by PID; its pid not yet reused by another process)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
        if not gone(pid) and argv[0].endswith(b"smtpmail") and str(port).encode() in argv:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


class Pool(SmtpTest):
    """Reuse, growth, shrinking and the limits with a pool."""

    def quick(self, server, source="127.0.0.1"):
        """One short session from source: greeting, QUIT, the close seen
        (so that its process has told the parent it is idle)."""
        with raw_from(server.port, source) as c:
            self.assertEqual(c.line(), GREETING)
            c.cmd("QUIT")
            self.assertTrue(c.closed())

    def held(self, server, n):
        """n sessions, greeted, left open."""
        clients = [self.raw(server.port) for _ in range(n)]
        for c in clients:
            self.assertEqual(c.line(), GREETING)
        return clients

    def test_sequential_sessions_served_by_one_process(self):
        server = self.start_smtp()
        for i in range(20):
            c = self.connect(server)
            self.accepted_id(self.transaction(c, "a@b.example", ["alice@x.example"],
                                              b"message %d\r\n.\r\n" % i))
            c.cmd("QUIT")
            self.assertTrue(c.closed())
        pids = session_pids(server)
        self.assertEqual(len(pids), 20)
        self.assertEqual(len(set(pids)), 1, pids)           # one worker, reused
        self.assertEqual(len(self.records("alice")), 20)
        self.assertEqual(list(children_of(server.proc.pid)), pids[:1])

    def test_a_worker_retires_after_its_hundredth_session(self):
        # POOL_MAX_USE: a fresh process now and then bounds what any leak
        # could gather; the 101st session goes to a new process, served.
        server = self.start_smtp()
        for _ in range(POOL_MAX_USE + 1):
            self.quick(server)
        pids = session_pids(server)
        self.assertEqual(len(pids), POOL_MAX_USE + 1)
        self.assertEqual(len(set(pids[:POOL_MAX_USE])), 1, set(pids))
        self.assertNotEqual(pids[-1], pids[0])
        deadline = time.monotonic() + 10
        while not gone(pids[0]) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(gone(pids[0]), "the retired worker still runs")

    def test_grows_past_the_spare_workers_then_shrinks(self):
        server = self.start_smtp("-c", "20", "-C", "20")
        self.quick(server)                                   # one idle worker
        clients = self.held(server, POOL_SPARE + 4)          # all greeted at once
        workers = set(session_pids(server))
        self.assertEqual(len(workers), POOL_SPARE + 4)       # grew by 11 new ones
        for c in clients:
            c.cmd("QUIT")
            self.assertTrue(c.closed())
        self.assertTrue(wait_sessions_over(server))
        deadline = time.time() + 10                          # the 4 beyond spare exit
        while time.time() < deadline and len(children_of(server.proc.pid)) > POOL_SPARE:
            time.sleep(0.05)
        idle = set(children_of(server.proc.pid))
        self.assertEqual(len(idle), POOL_SPARE)
        before = len(session_pids(server))
        again = self.held(server, POOL_SPARE)                # the idle ones serve them
        self.assertEqual(set(session_pids(server)[before:]), idle)
        for c in again:
            c.cmd("QUIT")

    def test_session_limit_with_idle_workers(self):
        server = self.start_smtp("-c", "2", "-C", "2")
        for _ in range(3):
            self.quick(server)
        self.held(server, 2)                                 # idle workers do not count
        with raw_from(server.port) as c:
            self.assertEqual(c.line(), BUSY_SMTP)
        self.assertIn("refused 127.0.0.1: 2 sessions (-c)", server.log())

    def test_per_address_limit_with_idle_workers(self):
        server = self.start_smtp("-c", "4", "-C", "1")
        self.quick(server)
        self.quick(server)
        self.held(server, 1)
        with raw_from(server.port) as c:
            self.assertEqual(c.line(), BUSY_SMTP)
        with raw_from(server.port, OTHER) as c:                # another address: served
            self.assertEqual(c.line(), GREETING)
        self.assertIn("refused 127.0.0.1: 1 sessions from this address (-C)", server.log())


class Isolation(SmtpTest):
    """Two sessions in the same process (-c 1: there is only one worker)."""

    def wrong(self, c, enhanced=True):
        """One wrong password: the seconds its 535 took."""
        start = time.time()
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "nope")),
                         WRONG if enhanced else WRONG.replace("5.7.8 ", ""))
        return time.time() - start

    def test_nothing_of_a_session_reaches_the_next_in_the_same_process(self):
        server = self.start_smtp("-c", "1", "-a", "-w", "100")
        c = self.connect(server)
        self.assertLess(self.wrong(c), 0.19)                 # 100 ms: no penalty yet
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "235 2.7.0 Authentication successful")
        first = self.accepted_id(self.transaction(c, "alice@x.example", ["bob@x.example"],
                                                  b"first\r\n.\r\n"))
        c.cmd("MAIL FROM:<alice@x.example>")                 # a transaction left open
        c.cmd("RCPT TO:<carol@x.example>")
        c.cmd("QUIT")
        self.assertTrue(c.closed())

        c = self.raw(server.port)
        self.assertEqual(c.line(), GREETING)
        # neither the last one's EHLO (its dialect: enhanced codes) nor its HELO name
        self.assertEqual(c.cmd("MAIL FROM:<alice@x.example>"), "503 Send HELO or EHLO first")
        self.assertEqual(c.cmd("HELO second.example"), "250 OK Hello second.example")
        self.assertEqual(c.cmd("RCPT TO:<bob@x.example>"), "503 Need MAIL command")
        self.assertEqual(c.cmd("DATA"), "503 Need MAIL command")
        self.assertEqual(c.cmd("MAIL FROM:<alice@x.example>"),   # no AUTH of the last one
                         "530 Authentication required")
        # the address's penalty: the last session's one wrong password (2^1)
        self.assertGreater(self.wrong(c, enhanced=False), 0.19)
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("bob", "bobpw")),
                         "235 Authentication successful")
        second = self.accepted_id(self.transaction(c, "bob@x.example", ["bob@x.example"],
                                                   b"second\r\n.\r\n", enhanced=False),
                                  enhanced=False)
        c.cmd("QUIT")
        self.assertTrue(c.closed())

        with raw_from(server.port, OTHER) as c:              # another address: no penalty
            self.assertEqual(c.line(), GREETING)
            c.cmd("EHLO third.example")
            self.assertLess(self.wrong(c), 0.19)
            c.cmd("QUIT")
            self.assertTrue(c.closed())
        pids = session_pids(server)
        self.assertEqual(len(pids), 3)
        self.assertEqual(len(set(pids)), 1, pids)            # one process served all three
        # the ids differ in the pid and count part, not only in the clock
        self.assertNotEqual(first.split(".", 1)[1], second.split(".", 1)[1])
        records = self.records("bob")
        self.assertEqual(len(records), 2)
        self.assertRecord(records[0], "alice@x.example", "bob@x.example", first, b"first\r\n",
                          proto="ESMTPA")
        self.assertRecord(records[1], "bob@x.example", "bob@x.example", second, b"second\r\n",
                          helo="second.example", proto="ESMTPA")
        self.assertEqual(self.records("carol"), [])


class Lifecycle(SmtpTest):
    """SIGTERM, SIGKILL of a worker, descriptors across sessions."""

    def test_sigterm_drains_a_session_mid_data_idle_workers_exit_at_once(self):
        server = self.start_smtp("-c", "10", "-C", "10")
        others = [self.raw(server.port) for _ in range(3)]
        for o in others:
            self.assertEqual(o.line(), GREETING)
        # forked while the three are busy: it must not hold their socketpairs
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")
        c.cmd("RCPT TO:<alice@x.example>")
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send("before the signal\r\n")
        for o in others:
            o.cmd("QUIT")
            self.assertTrue(o.closed())                      # three idle workers
        self.assertEqual(len(set(session_pids(server))), 4)
        server.proc.terminate()
        deadline = time.time() + 5
        while time.time() < deadline and "stopping" not in server.log():
            time.sleep(0.05)
        self.assertIn("stopping: 1 session(s) still running", server.log())
        with self.assertRaises(OSError):                     # no longer accepting
            raw_from(server.port).line()
        deadline = time.time() + 5                           # idle ones gone at once
        while time.time() < deadline and len(children_of(server.proc.pid)) > 1:
            time.sleep(0.05)
        self.assertEqual(len(children_of(server.proc.pid)), 1)
        c.send("after it\r\n.\r\n")
        self.accepted_id(c.reply()[-1])
        c.cmd("QUIT")
        self.assertEqual(server.proc.wait(5), 0)
        self.assertEqual(len(self.records("alice")), 1)

    def test_worker_killed_mid_session_frees_its_slot(self):
        server = self.start_smtp("-c", "1")
        self.quick_session(server)
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")
        worker = session_pids(server)[-1]
        os.kill(worker, signal.SIGKILL)
        self.assertTrue(c.closed())
        deadline = time.time() + 5
        while time.time() < deadline and "killed by signal 9" not in server.log():
            time.sleep(0.05)
        self.assertIn("session %d killed by signal 9" % worker, server.log())
        c = self.connect(server)                             # -c 1: the slot is free
        self.accepted_id(self.transaction(c, "a@b.example", ["alice@x.example"], b"x\r\n.\r\n"))
        c.cmd("QUIT")
        self.assertTrue(c.closed())
        idle = session_pids(server)[-1]
        os.kill(idle, signal.SIGKILL)                        # an idle one, once dead...
        deadline = time.time() + 5
        while time.time() < deadline and children_of(server.proc.pid).get(idle, "Z") != "Z":
            time.sleep(0.02)
        c = self.connect(server)                             # ...is not handed the next
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        deadline = time.time() + 5                           # reaped
        while time.time() < deadline and idle in children_of(server.proc.pid):
            time.sleep(0.05)
        self.assertNotIn(idle, children_of(server.proc.pid))

    def test_parent_killed_idle_workers_exit_busy_one_finishes(self):
        server = self.start_smtp("-c", "10", "-C", "10")
        clients = []
        for _ in range(3):                                   # workers A, B, C, forked in turn
            clients.append(self.raw(server.port))
            self.assertEqual(clients[-1].line(), GREETING)
        workers = session_pids(server)
        self.assertEqual(len(set(workers)), 3)
        for pid in workers:                                  # never left behind by this test
            self.addCleanup(kill_if_ours, pid, server.port)
        for c in clients[:2]:                                # A and B idle; C (which a fork
            c.cmd("QUIT")                                    # keeping copies of A's and B's
            self.assertTrue(c.closed())                      # socketpairs would be) busy
        busy = clients[2]
        self.assertEqual(busy.cmd("HELO c.example"), "250 OK Hello c.example")
        server.proc.kill()
        server.proc.wait(5)
        deadline = time.time() + 10                          # the idle ones see their socketpair close
        while time.time() < deadline and not all(gone(pid) for pid in workers[:2]):
            time.sleep(0.05)
        self.assertTrue(all(gone(pid) for pid in workers[:2]), workers)
        with socket.socket() as s:                           # nobody keeps the port
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", server.port))
            s.listen()
        self.accepted_id(self.transaction(busy, "a@b.example", ["alice@x.example"],
                                          b"after the parent\r\n.\r\n", enhanced=False),
                         enhanced=False)                     # the busy session goes on
        self.assertEqual(busy.cmd("QUIT"), "221 %s closing connection" % HOSTNAME)
        deadline = time.time() + 10                          # then its worker exits too
        while time.time() < deadline and not gone(workers[2]):
            time.sleep(0.05)
        self.assertTrue(gone(workers[2]))
        self.assertEqual(len(self.records("alice")), 1)

    def quick_session(self, server):
        c = self.connect(server)
        c.cmd("QUIT")
        self.assertTrue(c.closed())

    def test_no_descriptor_left_behind_across_50_sessions(self):
        server = self.start_smtp("-c", "1", "-w", "0")
        tables = []
        for i in range(50):
            c = self.connect(server)
            if i % 2:
                self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "nope")), WRONG)
            self.accepted_id(self.transaction(c, "a@b.example", ["alice@x.example", "bob@x.example"],
                                              b"x\r\n.\r\n"))
            c.cmd("MAIL FROM:<a@b.example>")                 # and one left open
            c.cmd("QUIT")
            self.assertTrue(c.closed())
            if i in (0, 49):
                tables.append(fd_table(session_pids(server)[-1]))
        self.assertEqual(len(set(session_pids(server))), 1)
        self.assertEqual(tables[0], tables[1])
        self.assertEqual(len(self.records("bob")), 50)


if __name__ == "__main__":
    unittest.main()
