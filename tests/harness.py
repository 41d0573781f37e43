"""harness.py - what every test module shares.

A MailTest gets a throwaway directory with its own user.txt and spool;
start_smtp()/start_pop() run the real binaries (the sanitizer build that
`make test` makes, or MAIL_BIN) on a free loopback port, and tearDown stops
exactly the processes the test started, by PID, and fails the test if a
sanitizer reported anything in their logs.
"""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, os.environ.get("MAIL_BIN", "build/asan"))
ACCOUNTS = [("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw")]
HOSTNAME = "mx.test.example"
# The trace lines that start every record smtpmail writes. A partial tail
# that starts with them is a crashed append of smtpmail's (DESIGN.md), which
# the next delivery cuts back; any other tail is mail written by another
# hand, which is kept and served.
TRACE = (b"Return-Path: <crash@example.org>\r\nReceived: from c ([127.0.0.1])\r\n"
         b"\tby mx.test.example (smtpmail) with SMTP id CRASH\r\n")
# popserver's greeting: RFC 1939 section 7's APOP timestamp <pid.clock@host>
# after the words, a new one each session.
POP_GREETING = r"^\+OK POP3 server ready <\d+\.\d+@[^<>\s]+>$"
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:|"
                          r"SUMMARY: UndefinedBehaviorSanitizer")
SANITIZER_ENV = {
    "ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1:log_path=stderr",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


# The commit state at the start of mymailbox.state (the shared block
# "commit" of smtpmail.c and popserver.c, DESIGN.md "The commit state"):
# magic, boot id, host name, dev, ino, size, durable, syncing, appending,
# kept (the last four steps'), epoch, and an FNV-1a check of all that, in
# native order.
STATE = struct.Struct("=8s16s32sQQqqqqqqqqQQ")
STATE_FIELDS = ["magic", "boot", "host", "dev", "ino", "size", "durable", "syncing",
                "appending", "kept0", "kept1", "kept2", "kept3", "epoch", "check"]
STATE_MAGIC = b"mtcmt05\0"


def boot_id():
    """The system's boot id as the servers read it (16 bytes)."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return bytes.fromhex(f.read().strip().replace("-", ""))


def state_check(packed):
    """FNV-1a over a packed state but its last 8 bytes (the check)."""
    h = 14695981039346656037
    for b in packed[:-8]:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def read_state(path):
    """The commit state in the state file at path, as a dict."""
    with open(path, "rb") as f:
        return dict(zip(STATE_FIELDS, STATE.unpack(f.read(STATE.size))))


def write_state(path, **fields):
    """Write a commit state with a valid check: fields over those already
    there (or over a fresh one for this boot with nothing under way)."""
    try:
        state = read_state(path)
    except (OSError, struct.error):
        state = dict(zip(STATE_FIELDS, (STATE_MAGIC, boot_id(), socket.gethostname().encode()[:31],
                                        0, 0, 0, 0, -1, -1, 0, 0, 0, 0, 1, 0)))
    state.update(fields)
    packed = STATE.pack(*[state[n] for n in STATE_FIELDS])
    state["check"] = state_check(packed)
    with open(path, "wb") as f:
        f.write(STATE.pack(*[state[n] for n in STATE_FIELDS]))


SHIM_SRC = os.path.join(ROOT, "tests", "shim", "failfs.c")


def build_shim(directory):
    """Compile the failfs shim (tests/shim/failfs.c, which makes chosen file
    system calls fail) into directory; its path."""
    shim = os.path.join(directory, "failfs.so")
    run = subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O1", "-Wall",
                          "-Wextra", "-Werror", "-o", shim, SHIM_SRC, "-ldl"],
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise RuntimeError("cannot build the shim:\n" + run.stderr)
    return shim


def proc_state(pid):
    """The state letter of process pid (R, S, T, Z ...), None if there is
    none (Linux /proc/<pid>/stat: the field after the command's ")")."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def gone(pid):
    """True if pid no longer runs (a zombie waiting for its parent counts
    as gone)."""
    return proc_state(pid) in (None, "Z")


def binary(name):
    return os.path.join(BIN, name)


def free_port():
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process of ours: started, waited for, stopped by PID.
    env: more environment variables, e.g. the failfs shim's (LD_PRELOAD and
    its settings). gcc's sanitizer runtime is a shared library that wants to
    come first in the library list; a preloaded shim does not need that
    order, so the check is then turned off (verify_asan_link_order=0): the
    runtime still comes right after the shim and intercepts what it passes
    on."""

    def __init__(self, prog, args, cwd, port, env=None):
        self.prog, self.port, self.cwd = prog, port, cwd
        self.log_path = os.path.join(cwd, "%s-%d.log" % (prog, port))
        self.log_file = open(self.log_path, "ab")
        full = dict(os.environ, **SANITIZER_ENV)
        if env and "LD_PRELOAD" in env:
            full["ASAN_OPTIONS"] += ":verify_asan_link_order=0"
        full.update(env or {})
        self.proc = subprocess.Popen([binary(prog)] + list(args) + [str(port)],
                                     cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=self.log_file,
                                     env=full)
        self.wait_listening()

    def wait_listening(self, timeout=10):
        """Wait for the server's "listening" log line (or its early death)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "listening" in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError("%s exited %s at start:\n%s"
                                     % (self.prog, self.proc.returncode, self.log()))
            time.sleep(0.02)
        raise AssertionError("%s did not start listening:\n%s" % (self.prog, self.log()))

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL if it will not go; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


class Raw:
    """A raw line-oriented client: send bytes, read CRLF lines and replies."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def line(self):
        """One line without its CRLF; '' at EOF (then self.eof is True)."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                self.eof = True
                return rest.decode("latin-1")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def reply(self):
        """An SMTP reply, multi-line included: the list of its lines."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        """Send one command line (CRLF added); return the last reply line."""
        self.send(text + "\r\n")
        return self.reply()[-1]

    def closed(self, timeout=5):
        """True if the server closes the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class MailTest(unittest.TestCase):
    """A test with its own directory, user.txt, spool and servers."""

    accounts = ACCOUNTS

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailtest-")
        self.spool = os.path.join(self.dir, "users")
        self.userfile = os.path.join(self.dir, "user.txt")
        os.mkdir(self.spool)
        with open(self.userfile, "w") as f:
            for login, password in self.accounts:
                f.write("%s %s\n" % (login, password))
        self.servers = []

    def tearDown(self):
        problems = []
        for server in self.servers:
            server.stop()
            found = SANITIZER_RE.search(server.log())
            if found:
                problems.append("%s log:\n%s" % (server.prog, server.log()))
        if not problems:
            shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            self.fail("sanitizer report:\n" + "\n".join(problems))

    def start(self, prog, *args, port=None, common=True):
        if common:
            args = ("-d", self.spool, "-u", self.userfile, "-l", "127.0.0.1") + args
        for attempt in range(3):
            # A port free a moment ago may be taken by a parallel test
            # class in between: then try another one (never a given port).
            try:
                server = Server(prog, args, self.dir, port or free_port())
                break
            except AssertionError as e:
                if port or attempt == 2 or "Address already in use" not in str(e):
                    raise
        self.servers.append(server)
        return server

    def start_smtp(self, *args, **kw):
        return self.start("smtpmail", "-n", HOSTNAME, *args, **kw)

    def start_pop(self, *args, **kw):
        return self.start("popserver", *args, **kw)

    def announce_append(self, login, offset):
        """Write login's commit state as smtpmail leaves it when it dies in
        an append that began at offset: only such a tail is cut back."""
        st = os.stat(self.mailbox_path(login))
        write_state(self.mailbox_path(login) + ".state", dev=st.st_dev, ino=st.st_ino,
                    size=offset, durable=offset, syncing=-1, appending=offset)

    def mailbox_path(self, login):
        return os.path.join(self.spool, login, "mymailbox")

    def mailbox(self, login):
        """The raw bytes of a mailbox (b"" if it does not exist)."""
        try:
            with open(self.mailbox_path(login), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def records(self, login):
        """The mailbox split into records, each without its ".\\r\\n" end."""
        data = self.mailbox(login)
        if not data:
            return []
        self.assertTrue(data.endswith(b"\r\n.\r\n"), "mailbox ends mid-record")
        return [part + b"\r\n" for part in data.split(b"\r\n.\r\n")[:-1]]


class ShimBuild:
    """A mixin for a MailTest class: the failfs shim, built once for the
    class (cls.shim), and servers started with it preloaded."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.build_dir = tempfile.mkdtemp(prefix="failfs-")
        try:
            cls.shim = build_shim(cls.build_dir)
        except RuntimeError:
            shutil.rmtree(cls.build_dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.build_dir, ignore_errors=True)
        super().tearDownClass()

    def start_shim(self, prog, args, **failures):
        """prog with args, the shim preloaded and failures (its variables) set."""
        server = Server(prog, args, self.dir, free_port(), dict(failures, LD_PRELOAD=self.shim))
        self.servers.append(server)
        return server
