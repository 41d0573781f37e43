"""smtpmail: the process model - the session limit, 100 concurrent senders,
SIGTERM and SIGINT, ignored signals, accept() out of descriptors, the
command line and its defaults, the log format, IPv6 trace lines, no zombies."""
import calendar
import os
import re
import resource
import signal
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


def tcp_sockets_of(pid):
    """How many TCP sockets pid holds (Linux /proc): a session process holds
    its connection; an idle worker of smtpmail's pool holds none. 0 if pid
    is gone or a zombie."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                inodes.update(line.split()[9] for line in f.read().splitlines()[1:])
        except OSError:
            continue
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return 0
    held = 0
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        held += link.startswith("socket:[") and link[8:-1] in inodes
    return held


def wait_sessions_over(server, seconds=10):
    """Until no session process of server holds a connection any more (so
    that, with smtpmail's pool, every session has sent the parent its note,
    its penalty report: session_over, before the connection is closed);
    forked sessions (popserver) until they have been reaped. True if so."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        kids = children_of(server.proc.pid)
        if server.prog == "popserver" and not kids:
            return True
        if server.prog != "popserver" and not any(tcp_sockets_of(k) for k in kids):
            return True
        time.sleep(0.05)
    return False


def proc_status(pid, field):
    """A field of /proc/<pid>/status, e.g. SigIgn."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def ignored_signals(pid):
    """The set of signal numbers pid ignores (SIG_IGN)."""
    mask = int(proc_status(pid, "SigIgn"), 16)
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def cpu_seconds(pid):
    """User + system CPU time pid has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ShapedServer(harness.Server):
    """A harness Server started with a soft RLIMIT_NOFILE and/or in its own
    session (a process group of its own, so a group signal reaches only it
    and its children)."""

    def __init__(self, args, cwd, port, nofile=None, own_group=False):
        self.prog, self.port, self.cwd = "smtpmail", port, cwd
        self.log_path = os.path.join(cwd, "smtpmail-%d.log" % port)
        self.log_file = open(self.log_path, "ab")

        def limit():
            if nofile:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
        self.proc = subprocess.Popen([harness.binary("smtpmail")] + list(args) + [str(port)],
                                     cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=self.log_file, preexec_fn=limit,
                                     start_new_session=own_group,
                                     env=dict(os.environ, **harness.SANITIZER_ENV))
        self.wait_listening()


class Concurrency(SmtpTest):
    """More sessions than -c; 100 senders at once."""

    def test_past_the_session_limit_421_others_served(self):
        server = self.start_smtp("-c", "2", "-C", "2")   # all from 127.0.0.1
        a, b = self.connect(server), self.connect(server)
        third = self.raw(server.port)
        # in place of the greeting, so without an enhanced code (RFC 2034)
        self.assertEqual(third.line(), "421 %s too many connections, try again later" % HOSTNAME)
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
        server = self.start_smtp("-C", "100")   # all from 127.0.0.1
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
        # Once every session is over, the pool keeps at most POOL_SPARE (8)
        # idle workers; the others exit (slowly, under ASan's leak check), each
        # a zombie only until the parent's SIGCHLD handling: none may be left.
        self.assertTrue(wait_sessions_over(server, 60))
        deadline = time.time() + 60
        while time.time() < deadline and len(children_of(server.proc.pid)) > 8:
            time.sleep(0.1)
        time.sleep(0.5)
        kids = children_of(server.proc.pid)
        self.assertLessEqual(len(kids), 8, kids)
        self.assertEqual(set(kids.values()) - {"S"}, set(), kids)


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
        usage = ("usage: smtpmail [-d spool] [-u userfile] [-n hostname] [-l address]\n"
                 "                [-s maxbytes] [-c maxsessions] [-C perclient] [-t seconds]\n"
                 "                [-r bytes/s] [-T seconds] [-D domain]... [-a] [-w msec] [-i]\n"
                 "                [-v] [-h] [-o] [-N network]... [-R domain=host[:port]]...\n"
                 "                [-B min:max] [-E seconds] [-W seconds] [-Z count] [port]\n"
                 "       smtpmail [-d spool] [-u userfile] [-n hostname] -q | -p | -F | -x id\n")
        run = self.run_bin("-h")
        # -h: the synopsis, a blank line, the options (all of it: test_help)
        self.assertEqual((run.returncode, run.stdout[:len(usage) + 1]), (0, usage + "\n"))
        busy = socket.socket()          # a binary that took a bad value could not listen
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        on_busy = ["-l", "127.0.0.1", str(busy.getsockname()[1])]
        for bad in (["-x"], ["-s", "abc"], ["-c", "0"], ["-t", "-1"], ["1", "2"], ["port"],
                    ["-C", "0"], ["-r", "-1"], ["-T", "0"], ["-w", "x"], ["-w", "60001"],
                    ["-s"], ["-n", "h" * 256] + on_busy, ["-n", ""] + on_busy, ["0"], ["65536"]):
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


class Signals(SmtpTest):
    """Ignored signals, Ctrl-C to the process group, accept() out of descriptors."""

    def shaped(self, **kw):
        server = ShapedServer(("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1",
                               "-n", HOSTNAME), self.dir, harness.free_port(), **kw)
        self.servers.append(server)
        return server

    def test_sigpipe_and_sigxfsz_ignored_sigint_in_sessions(self):
        server = self.start_smtp()
        c = self.connect(server)
        parent = ignored_signals(server.proc.pid)
        self.assertLessEqual({signal.SIGPIPE, signal.SIGXFSZ}, parent)
        self.assertNotIn(signal.SIGTERM, parent)
        kids = list(children_of(server.proc.pid))
        self.assertEqual(len(kids), 1)
        child = ignored_signals(kids[0])
        self.assertLessEqual({signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT}, child)
        self.assertNotIn(signal.SIGTERM, child)      # the parent's last resort works
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)

    def test_ctrl_c_to_the_group_lets_the_session_finish(self):
        server = self.shaped(own_group=True)
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")
        c.cmd("RCPT TO:<alice@x.example>")
        os.killpg(server.proc.pid, signal.SIGINT)   # as a terminal's Ctrl-C: parent and child
        deadline = time.time() + 5
        while time.time() < deadline and "stopping" not in server.log():
            time.sleep(0.05)
        self.assertIn("stopping: 1 session(s) still running", server.log())
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send("after ctrl-c\r\n.\r\n")
        self.accepted_id(c.reply()[-1])
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        self.assertEqual(server.proc.wait(10), 0)
        self.assertTrue(self.records("alice")[0].endswith(b"\r\nafter ctrl-c\r\n"))

    def test_accept_out_of_descriptors_pauses_logs_once_recovers(self):
        # fds 0, 1, 2, the listening socket and the two ends of the pipe on
        # which sessions say they are over: accept() fails with EMFILE
        server = self.shaped(nofile=6)
        c = self.raw(server.port)
        deadline = time.time() + 5
        while time.time() < deadline and "Too many open files" not in server.log():
            time.sleep(0.05)
        used = cpu_seconds(server.proc.pid)
        time.sleep(1.5)
        # a spinning loop would burn about 1.5 s of CPU (and log each try)
        self.assertLess(cpu_seconds(server.proc.pid) - used, 0.3)
        log = server.log()
        self.assertEqual(log.count("accept: Too many open files; pausing 100 ms"), 1, log[-2000:])
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (64, 64))
        self.assertEqual(c.reply(), ["220 %s Service ready" % HOSTNAME])   # the queued one
        self.assertIn("accept: working again", server.log())
        self.assertEqual(c.cmd("EHLO client.example"), "250 HELP")
        self.accepted_id(self.transaction(c, "a@b.example", ["bob@x.example"], b"x\r\n.\r\n"))
        self.assertEqual(len(self.records("bob")), 1)


class Shutdown(SmtpTest):
    """SIGTERM ends a session that will not end by itself: bounded."""

    def test_sigterm_bounded_when_a_session_lingers(self):
        server = self.start_smtp()
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")           # then the client says nothing
        began = time.time()
        server.proc.terminate()
        self.assertEqual(server.proc.wait(30), 0)
        took = time.time() - began
        self.assertGreater(took, 8)                # the 10 s grace was given...
        self.assertLess(took, 20)                  # ...and no more
        self.assertTrue(c.closed(2))
        self.assertRegex(server.log(), r"session \d+ killed by signal 15")
        self.assertEqual(children_of(server.proc.pid), {})


class Defaults(SmtpTest):
    """No options: spool users/, user.txt, the host's name, port 2525; the log."""

    def test_default_spool_userfile_and_hostname(self):
        server = self.start("smtpmail", "-l", "127.0.0.1", common=False)   # cwd: self.dir
        c = self.raw(server.port)
        host = socket.gethostname()
        self.assertEqual(c.reply(), ["220 %s Service ready" % host])
        self.assertEqual(c.cmd("HELO client.example"), "250 OK Hello client.example")
        self.accepted_id(self.transaction(c, "a@b.example", ["carol@x.example"], b"d\r\n.\r\n",
                                          enhanced=False), enhanced=False)
        self.assertEqual(c.cmd("QUIT"), "221 %s closing connection" % host)
        self.assertIn(b"\tby %s (smtpmail) with SMTP id " % host.encode(), self.records("carol")[0])

    def test_default_port_2525(self):
        # Hold 127.0.0.1:2525 (bound, not listening) so smtpmail cannot take
        # it: its message names the port it tried. If someone else holds it,
        # the answer is the same.
        hold = socket.socket()
        self.addCleanup(hold.close)
        try:
            hold.bind(("127.0.0.1", 2525))
        except OSError:
            pass
        proc = subprocess.Popen([harness.binary("smtpmail"), "-d", self.spool, "-u", self.userfile,
                                 "-l", "127.0.0.1"], cwd=self.dir, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, **harness.SANITIZER_ENV))
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:       # the port came free and it listens
            proc.terminate()
            out, err = proc.communicate(timeout=15)
        self.assertRegex(err, r"(cannot listen on|listening on) 127\.0\.0\.1 port 2525\b")

    def test_log_lines_utc_pid_connection_delivery_refusal(self):
        server = self.start_smtp()
        c = self.connect(server)
        c.cmd("MAIL FROM:<a@b.example>")
        self.assertEqual(c.cmd("RCPT TO:<nobody@x.example>"), "550 5.1.1 No such user")
        c.cmd("RCPT TO:<bob@x.example>")
        c.cmd("RCPT TO:<alice@x.example>")
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send("Subject: log\r\n\r\n12345\r\n.\r\n")
        msg_id = self.accepted_id(c.reply()[-1])
        c.cmd("QUIT")
        self.assertTrue(c.closed())
        line_re = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z smtpmail\[(\d+)\]: (.+)$")
        by_pid, now = {}, time.time()
        for line in server.log().splitlines():
            m = line_re.match(line)
            self.assertIsNotNone(m, line)
            stamp = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
            self.assertLess(abs(stamp - now), 120, line)     # UTC, not local time
            by_pid.setdefault(int(m.group(2)), []).append(m.group(3))
        self.assertIn("listening on 127.0.0.1 port %d" % server.port, by_pid[server.proc.pid])
        session = [msgs for pid, msgs in by_pid.items() if pid != server.proc.pid]
        self.assertEqual(len(session), 1)                    # the session child's own pid
        size = len(b"Subject: log\r\n\r\n12345\r\n")
        self.assertEqual(session[0], [
            "connection from 127.0.0.1",
            "127.0.0.1: refused: 550 5.1.1 No such user",
            "delivered %s from <a@b.example> to alice,bob (2 mailboxes), %d bytes" % (msg_id, size)])


if __name__ == "__main__":
    unittest.main()
