"""popserver's process model: SIGINT ends it cleanly, SIGPIPE is
ignored, a killed session deletes nothing, and running out of descriptors
at accept() neither spins nor loses the pending connection.
"""
import os
import re
import resource
import signal
import socket
import subprocess
import time

from harness import Raw, Server, SANITIZER_ENV, binary, free_port, POP_GREETING
from test_pop import PopTest, make_record


def cpu_seconds(pid):
    """User plus system CPU time of process pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GroupServer(Server):
    """A popserver in a session of its own, so that a signal to its process
    group reaches only it and its children."""

    def __init__(self, args, cwd, port):
        self.prog, self.port, self.cwd = "popserver", port, cwd
        self.log_path = os.path.join(cwd, "popserver-%d.log" % port)
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary("popserver")] + list(args) + [str(port)],
                                     cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=self.log_file,
                                     start_new_session=True,
                                     env=dict(os.environ, **SANITIZER_ENV))
        self.wait_listening()


class Process(PopTest):

    def setUp(self):
        super().setUp()
        self.recs = [make_record([b"message %d" % i]) for i in range(3)]
        self.put("alice", *[r for r, m in self.recs])
        self.pop()

    def session_pid(self, login):
        """The PID of the session child that logged login in (from the log)."""
        found = re.findall(r"popserver\[(\d+)\]: login %s from \S+ ok" % login,
                           self.server.log())
        self.assertTrue(found, self.server.log())
        return int(found[-1])

    def test_sigint_ends_cleanly(self):
        r = self.raw("alice")
        r.cmd("DELE 1")
        self.server.proc.send_signal(signal.SIGINT)
        deadline = time.time() + 5
        while "stopping" not in self.server.log() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("stopping: 1 session(s) still running", self.server.log())
        with self.assertRaises(OSError):   # no longer listening
            Raw(self.server.port, timeout=2).close()
        # The running session is allowed to finish.
        self.assertEqual(r.cmd("QUIT"), "+OK 1 messages deleted, goodbye")
        r.close()
        self.assertEqual(self.server.proc.wait(10), 0)
        self.assertEqual(self.mailbox("alice"), self.recs[1][0] + self.recs[2][0])

    def test_ctrl_c_to_the_group_lets_the_session_finish(self):
        """A Ctrl-C in the server's terminal reaches the whole process group:
        the parent stops accepting, the session ignores it and finishes."""
        server = GroupServer(("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1",
                              "-w", "50"), self.dir, free_port())
        self.servers.append(server)
        self.server = server
        r = self.raw("alice")
        r.cmd("DELE 2")
        os.killpg(server.proc.pid, signal.SIGINT)   # parent and child, as a terminal does
        deadline = time.time() + 5
        while "stopping" not in server.log() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("stopping: 1 session(s) still running", server.log())
        self.assertTrue(r.cmd("STAT").startswith("+OK 2 "))   # still served
        self.assertEqual(r.cmd("QUIT"), "+OK 1 messages deleted, goodbye")
        r.close()
        self.assertEqual(server.proc.wait(10), 0)
        self.assertEqual(self.mailbox("alice"), self.recs[0][0] + self.recs[2][0])
        self.assertNotIn("killed by signal", server.log())

    def test_sigpipe_and_sigxfsz_ignored(self):
        """A write error (a gone client, a file-size limit while writing
        mymailbox.new) must be an error to handle, not a death."""
        with open("/proc/%d/status" % self.server.proc.pid) as f:
            mask = int([l for l in f if l.startswith("SigIgn:")][0].split()[1], 16)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            self.assertTrue(mask & (1 << (sig - 1)), signal.Signals(sig).name)

    def test_killed_session_deletes_nothing(self):
        r = self.raw("alice")
        r.cmd("DELE 1")
        r.cmd("DELE 3")
        os.kill(self.session_pid("alice"), signal.SIGKILL)   # our server's child
        self.assertTrue(r.closed())
        r.close()
        self.assertEqual(self.mailbox("alice"), b"".join(r for r, m in self.recs))
        with self.raw("alice") as again:   # the lock died with the process
            self.assertTrue(again.cmd("STAT").startswith("+OK 3 "))
            again.cmd("QUIT")
        self.assertIn("killed by signal 9", self.server.log())

    def test_client_gone_mid_retr_sigpipe_ignored(self):
        big, _ = make_record([b"p" * 998] * 8000)   # 8 MB: far more than buffers
        self.put("alice", big)
        for attempt in range(6):
            r = self.raw("alice")
            r.send("RETR 1\r\n")
            if attempt % 2:
                r.line()   # the +OK, then go while the record streams
            r.close()
            time.sleep(0.2)
        with self.raw("alice") as r:   # the server and the mailbox are fine
            self.assertTrue(r.cmd("STAT").startswith("+OK 1 "))
            r.cmd("QUIT")
        deadline = time.time() + 5
        while self.server.log().count("session ended without QUIT") < 6 \
                and time.time() < deadline:
            time.sleep(0.05)
        log = self.server.log()
        self.assertNotIn("killed by signal", log)
        self.assertEqual(log.count("session ended without QUIT"), 6, log)

    def test_out_of_descriptors_at_accept_does_not_spin(self):
        pid = self.server.proc.pid
        used = {int(fd) for fd in os.listdir("/proc/%d/fd" % pid)}
        lowest_free = min(set(range(len(used) + 1)) - used)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
        except (OSError, AttributeError) as e:
            self.skipTest("cannot lower the server's descriptor limit: %r" % e)
        try:
            client = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
            time.sleep(0.3)
            before = cpu_seconds(pid)
            time.sleep(1.0)
            spent = cpu_seconds(pid) - before
            self.assertLess(spent, 0.3, "the accept loop spins")
            log = self.server.log()
            self.assertIn("accept: Too many open files; pausing", log)
            self.assertLess(log.count("accept: Too many open files"), 5)   # rate-limited
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        r = Raw.__new__(Raw)   # the pending connection is served after all
        r.sock, r.buf = client, b""
        with r:
            self.assertRegex(r.line(), POP_GREETING)
            r.cmd("QUIT")
