"""smtpmail: the process model - the session limit, 100 concurrent senders,
SIGTERM, the command line, IPv6 trace lines, no zombies."""
import os
import re
import smtplib
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import HOSTNAME
from test_smtp import SmtpTest


def children_of(pid):
    """{child pid: state letter} of pid's children (Linux /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found[int(entry)] = fields[0]
    return found


class Concurrency(SmtpTest):
    """More sessions than -c; 100 senders at once."""

    def test_past_the_session_limit_421_others_served(self):
        server = self.start_smtp("-c", "2")
        a, b = self.connect(server), self.connect(server)
        third = self.raw(server.port)
        self.assertEqual(third.line(), "421 4.3.2 %s too many connections, try again later" % HOSTNAME)
        self.assertTrue(third.closed())
        self.accepted_id(self.transaction(a, "a@b.example", ["alice@x.example"], b"from a\r\n.\r\n"))
        self.accepted_id(self.transaction(b, "b@b.example", ["alice@x.example"], b"from b\r\n.\r\n"))
        a.cmd("QUIT")
        self.assertTrue(a.closed())
        # a slot is free once the parent has reaped the child
        deadline, greeting = time.time() + 10, ""
        while time.time() < deadline:
            c = self.raw(server.port)
            greeting = c.line()
            if greeting.startswith("220"):
                break
            c.close()
            time.sleep(0.1)
        self.assertEqual(greeting, "220 %s Service ready" % HOSTNAME)
        self.assertEqual(len(self.records("alice")), 2)

    def test_hundred_concurrent_senders_all_stored_once(self):
        server = self.start_smtp()
        n = 100
        start = threading.Barrier(n, timeout=30)
        errors = []

        def send(i):
            try:
                start.wait()
                with smtplib.SMTP("127.0.0.1", server.port, "client.example", timeout=60) as s:
                    rcpt = ["alice@x.example", "bob@x.example", "carol@x.example"][i % 3]
                    refused = s.sendmail("s%d@y.example" % i, [rcpt, "alice@x.example"],
                                         "Subject: n%d\r\n\r\nmarker-%d-end\r\n" % (i, i))
                    if refused:
                        errors.append((i, refused))
            except Exception as e:          # reported below, with its number
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(errors, [])
        seen = {}
        for login in ("alice", "bob", "carol"):
            for rec in self.records(login):
                for m in re.findall(rb"marker-(\d+)-end", rec):
                    seen.setdefault(login, []).append(int(m))
        self.assertEqual(sorted(seen["alice"]), list(range(n)))       # everyone wrote alice
        self.assertEqual(sorted(seen["bob"]), [i for i in range(n) if i % 3 == 1])
        self.assertEqual(sorted(seen["carol"]), [i for i in range(n) if i % 3 == 2])
        # Sessions exit when their clients quit (under ASan, the leak check at
        # exit takes a while); each is a zombie only until the parent's
        # SIGCHLD handling. Once none runs, none may be left a zombie.
        deadline = time.time() + 60
        while time.time() < deadline and any(
                state != "Z" for state in children_of(server.proc.pid).values()):
            time.sleep(0.1)
        time.sleep(0.5)
        self.assertEqual(children_of(server.proc.pid), {})


class Lifecycle(SmtpTest):
    """SIGTERM, the command line, IPv6."""

    def test_sigterm_lets_the_session_finish_then_exit_0(self):
        server = self.start_smtp()
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")
        c.cmd("RCPT TO:<alice@x.example>")
        server.proc.terminate()
        deadline = time.time() + 5
        while time.time() < deadline and "stopping" not in server.log():
            time.sleep(0.05)
        self.assertIn("stopping: 1 session(s) still running", server.log())
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        self.accepted_id(self.transaction_tail(c))
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        server.proc.wait(10)
        self.assertEqual(server.stop(), 0)
        self.assertEqual(len(self.records("alice")), 1)

    def transaction_tail(self, c):
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send("during shutdown\r\n.\r\n")
        return c.reply()[-1]

    def test_sigint_idle_exit_0(self):
        server = self.start_smtp()
        server.proc.send_signal(2)
        self.assertEqual(server.proc.wait(10), 0)
        self.assertEqual(server.stop(), 0)

    def run_bin(self, *args):
        return subprocess.run([harness.binary("smtpmail")] + list(args), capture_output=True,
                              text=True, timeout=20, cwd=self.dir,
                              env=dict(os.environ, **harness.SANITIZER_ENV))

    def test_usage(self):
        usage = ("usage: smtpmail [-d spool] [-u userfile] [-n hostname] [-l address] [-s maxbytes]"
                 " [-c maxsessions] [-t seconds] [-D domain]... [-v] [-h] [port]\n")
        run = self.run_bin("-h")
        self.assertEqual((run.returncode, run.stdout), (0, usage))
        for bad in (["-x"], ["-s", "abc"], ["-c", "0"], ["-t", "-1"], ["1", "2"], ["port"],
                    ["-s"]):
            run = self.run_bin(*bad)
            self.assertEqual(run.returncode, 2, bad)
            self.assertTrue(run.stderr.endswith(usage), (bad, run.stderr))
            self.assertEqual(run.stdout, "")

    def test_cannot_bind_exit_1(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            run = self.run_bin("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1", str(port))
        self.assertEqual(run.returncode, 1)
        self.assertIn("cannot listen on 127.0.0.1 port %d: Address already in use" % port, run.stderr)

    def test_ipv6_client_in_trace_line(self):
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback")
        server = self.start("smtpmail", "-d", self.spool, "-u", self.userfile, "-l", "::1",
                            "-n", HOSTNAME, common=False)
        with smtplib.SMTP("::1", server.port, "v6.example", timeout=10) as s:
            s.sendmail("a@b.example", ["bob@x.example"], "Subject: v6\r\n\r\nhi\r\n")
        self.assertIn(b"Received: from v6.example ([IPv6:::1])\r\n", self.records("bob")[0])

    def test_verbose_logs_dialogue(self):
        server = self.start_smtp("-v")
        c = self.connect(server)
        self.accepted_id(self.transaction(c, "a@b.example", ["carol@x.example"], b"v\r\n.\r\n"))
        c.cmd("QUIT")
        c.closed()
        log = server.log()
        for text in ("connection from 127.0.0.1", "< EHLO client.example",
                     "> 250 2.1.0 <a@b.example>... Sender ok", "state GREETED -> MAIL",
                     "delivered "):
            self.assertIn(text, log)


if __name__ == "__main__":
    unittest.main()
