"""`make run` in a throwaway copy of the repository (its logs never land in
the real tree): both servers start and are waited for, the client runs, and
however the client ends both servers are gone; a server that cannot listen
stops everything before the client starts, with its log lines shown."""
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import ROOT, free_port, gone

# The copy builds its own programs with the plain `make` (see run.py).
BINARIES = ()

SOURCES = ["Makefile", "user.txt", "tests/run-servers.sh"] + [
    p + ".c" for p in ("smtpmail", "popserver", "mailclient")]
PROGS = ("smtpmail", "popserver")
# A run ends in well under this: at most 5 s of waiting for each server,
# then the client and the stop. Short enough that a hung run fails the
# test, not the whole class at run.py's CLASS_TIMEOUT.
RUN_TIMEOUT = 20


def make_env():
    """The environment without what an outer make passes down (its jobserver
    descriptors are not ours)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


class MakeRun(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="makerun-")
        os.mkdir(os.path.join(cls.dir, "tests"))
        os.mkdir(os.path.join(cls.dir, "users"))
        for name in SOURCES:
            shutil.copy(os.path.join(ROOT, name), os.path.join(cls.dir, name))
        build = subprocess.run(["make", "-s", "all"], cwd=cls.dir, env=make_env(),
                               capture_output=True, text=True, timeout=300)
        if build.returncode != 0:
            shutil.rmtree(cls.dir)
            raise AssertionError("make all failed:\n" + build.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        self.addCleanup(self.kill_leftovers)

    def fresh_logs(self):
        """No log lines of an earlier run: the PIDs read back are this run's."""
        self.kill_leftovers()
        for prog in PROGS:
            try:
                os.unlink(self.log_path(prog))
            except FileNotFoundError:
                pass

    def log_path(self, prog):
        return os.path.join(self.dir, prog + ".log")

    def log(self, prog):
        try:
            with open(self.log_path(prog)) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def pid(self, prog):
        """The PID of the one prog that logged its "listening" line, or None."""
        pids = {int(line.split("[", 1)[1].split("]", 1)[0])
                for line in self.log(prog).splitlines() if "]: listening on" in line}
        self.assertLessEqual(len(pids), 1, self.log(prog))
        return pids.pop() if pids else None

    def kill_leftovers(self):
        """After a failed test: no server of ours is left running."""
        for prog in PROGS:
            pid = self.pid(prog)
            if pid and not gone(pid):
                os.kill(pid, signal.SIGKILL)

    def assertStopped(self, prog):
        """prog listened, then was stopped by its SIGTERM (it logged its
        stop) and is gone, within a bounded wait."""
        pid = self.pid(prog)
        self.assertIsNotNone(pid, "%s never listened:\n%s" % (prog, self.log(prog)))
        deadline = time.time() + 10
        while not gone(pid) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(gone(pid), "%s[%d] still running" % (prog, pid))
        self.assertIn("%s[%d]: stopping" % (prog, pid), self.log(prog))

    def make_run(self, stdin, smtp_port, pop_port):
        """`make run` with stdin piped: (exit status, stdout, stderr)."""
        self.fresh_logs()
        proc = subprocess.Popen(["make", "-s", "run", "SMTP_PORT=%d" % smtp_port,
                                 "POP3_PORT=%d" % pop_port], cwd=self.dir, env=make_env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(stdin.encode(), timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: make and below
            proc.communicate()
            self.fail("make run did not end within %d s" % RUN_TIMEOUT)
        return proc.returncode, out.decode(), err.decode()

    def test_quit_stops_both_servers(self):
        smtp_port, pop_port = free_port(), free_port()
        code, out, err = self.make_run("alice\nalicepw\n3\n", smtp_port, pop_port)
        self.assertEqual(code, 0, out + err)
        self.assertIn("smtpmail on 127.0.0.1:%d, popserver on 127.0.0.1:%d"
                      % (smtp_port, pop_port), out)
        self.assertIn("Username: ", out)
        self.assertIn("3. Quit", out)
        for prog in PROGS:
            self.assertStopped(prog)

    def test_end_of_input_stops_both_servers(self):
        code, out, err = self.make_run("alice\nalicepw\n", free_port(), free_port())
        self.assertEqual(code, 0, out + err)
        self.assertIn("3. Quit", out)
        for prog in PROGS:
            self.assertStopped(prog)

    def test_taken_port_stops_the_other_server(self):
        for taken, other in (("smtpmail", "popserver"), ("popserver", "smtpmail")):
            with self.subTest(taken=taken), socket.socket() as holder:
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                port = holder.getsockname()[1]
                ports = (port, free_port()) if taken == "smtpmail" else (free_port(), port)
                code, out, err = self.make_run("alice\nalicepw\n3\n", *ports)
                self.assertNotEqual(code, 0, out + err)
                self.assertIn("%s did not start on 127.0.0.1 port %d" % (taken, port), err)
                self.assertIn("cannot listen on 127.0.0.1 port %d" % port, err)
                self.assertNotIn("Username:", out)  # the client never ran
                self.assertIsNone(self.pid(taken))
                self.assertStopped(other)

    def test_ctrl_c_on_a_terminal(self):
        smtp_port, pop_port = free_port(), free_port()
        self.fresh_logs()
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session of its own, the pty its terminal
            try:
                os.chdir(self.dir)
                os.execvpe("make", ["make", "-s", "run", "SMTP_PORT=%d" % smtp_port,
                                    "POP3_PORT=%d" % pop_port], make_env())
            finally:
                os._exit(127)
        try:
            screen = self.converse(fd, [(b"Username: ", b"alice\n"), (b"Password: ", b"alicepw\n"),
                                        (b"Enter option: ", b"\x03")])
        finally:
            os.close(fd)  # on a failure: a hangup for whatever still runs there
            code = self.wait_exit(pid)
        self.assertEqual(code, 0, screen)
        for prog in PROGS:
            self.assertStopped(prog)

    def converse(self, fd, steps, timeout=RUN_TIMEOUT):
        """Answer each prompt as it shows on the terminal; the whole output
        once the terminal closes (all within timeout)."""
        screen, seen, deadline = b"", 0, time.time() + timeout
        while time.time() < deadline:
            if steps and steps[0][0] in screen[seen:]:
                os.write(fd, steps.pop(0)[1])
                seen = len(screen)  # a prompt answered does not match twice
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: every holder of the terminal is gone
                    chunk = b""
                if not chunk:
                    return screen.decode("utf-8", "replace")
                screen += chunk
        self.fail("terminal still open after %ds:\n%r" % (timeout, screen))

    def wait_exit(self, pid, timeout=10):
        """The exit status of our child make, within a bounded wait (then
        killed, and reaped, and the test fails)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.killpg(pid, signal.SIGKILL)  # pty.fork made it a session leader
        os.waitpid(pid, 0)
        self.fail("make run still running %ds after the terminal closed" % timeout)


if __name__ == "__main__":
    unittest.main()
