"""relay.py - what the relay tests share.

A RelayTest is a MailTest (harness.py) with two smtpmail instances in
mind: A, which relays for its authenticated users (its spool is the
MailTest's, domain a.example), and B, which receives (its own spool and
user.txt, domain b.example). Next to them run small servers of the test's
own, in Python's standard library, on loopback ports the test picks:

  ScriptedSMTP  answers each command as the test scripted it and records
                every transaction (greeting, EHLO, MAIL, RCPTs, data)
  Tarpit        accepts connections and never says a word
  Closer        accepts and closes at once (a dead destination that can
                count the connections made to it)

Messages can go through A by AUTH (send_auth, smtplib) or be put straight
into A's queue (queue_job: the .msg and .env files of
DESIGN.md "The queue"), so the runner can be tested without the intake. Every wait is
bounded (wait_for); every process is stopped by PID in tearDown.
"""
import contextlib
import fcntl
import os
import smtplib
import socket
import socketserver
import threading
import time

from harness import MailTest, Server, free_port

A_DOMAIN, B_DOMAIN = "a.example", "b.example"
A_HOST, B_HOST = "mx.a.example", "mx.b.example"
# Second-scale retries: the backoff 1 to 2 s, the lifetime and the delay
# notice far beyond any test that does not set its own.
FAST = ("-B", "1:2", "-E", "600", "-W", "300")


def wait_for(predicate, timeout=10.0, step=0.05):
    """Poll predicate until it returns something true (returned), or give
    up after timeout seconds (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(step)


# ---------------------------------------------------------------- the queue's files

def queue_dir(spool):
    return os.path.join(spool, ".queue")


def queue_ids(spool):
    """The ids of the queued messages (each <id>.env), sorted."""
    try:
        names = os.listdir(queue_dir(spool))
    except FileNotFoundError:
        return []
    return sorted(n[:-4] for n in names if n.endswith(".env") and not n.startswith("."))


def wire(data):
    """data (bytes, LF or CRLF lines) as it goes on the wire after DATA:
    CRLF lines, dot-stuffed, no final ".\\r\\n"."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


def unstuff(data):
    """The wire form back to the message's lines (CRLF kept)."""
    return b"".join(l[1:] if l.startswith(b".") else l
                    for l in data.splitlines(keepends=True))


def queue_job(spool, ident, sender, rcpts, data, arrived=None, auth="alice",
              states=None):
    """Put one message into spool's queue as the intake does: <ident>.msg
    (data in wire form, our Received line not added) and <ident>.env;
    rcpts are addresses, states (optional) their .env fields after the
    address, e.g. "deferred 1 0 0 - -". Returns the .msg bytes."""
    d = queue_dir(spool)
    os.makedirs(d, mode=0o700, exist_ok=True)
    msg = wire(data)
    with open(os.path.join(d, ident + ".msg"), "wb") as f:
        f.write(msg)
    lines = ["smtpmail-queue 1", "arrived %d" % (arrived or int(time.time())),
             "from " + sender, "auth " + auth, "client 127.0.0.1", "notice 0"]
    for i, r in enumerate(rcpts):
        lines.append("rcpt %s %s" % (r, states[i] if states else "pending 0 0 0 - -"))
    with open(os.path.join(d, ident + ".env"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return msg


def read_env(spool, ident):
    """<ident>.env as a dict: the header fields, and "rcpt": a list of
    dicts (address, state, attempts, next, last, remote, reply); None when
    the job is gone."""
    try:
        with open(os.path.join(queue_dir(spool), ident + ".env")) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    env = {"rcpt": []}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(" ")
        if key != "rcpt":
            env[key] = value
            continue
        f = value.split(" ", 6)
        env["rcpt"].append(dict(address=f[0], state=f[1], attempts=int(f[2]),
                                next=int(f[3]), last=int(f[4]), remote=f[5],
                                reply=f[6] if len(f) > 6 else ""))
    return env


def runner_pid(spool):
    """The pid in <spool>/.queue/.runner, or None."""
    try:
        with open(os.path.join(queue_dir(spool), ".runner")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def mailbox_locked(spool, login):
    """Hold login's mailbox write lock (DESIGN.md "Locking": byte 1 of
    mymailbox.state) for the with block, as another delivery would."""
    os.makedirs(os.path.join(spool, login), exist_ok=True)
    fd = os.open(os.path.join(spool, login, "mymailbox.state"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1)
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1)
        os.close(fd)


def lock_waiter(pid):
    """Whether process pid waits for an fcntl lock: /proc/locks marks a
    blocked request with "->"."""
    with open("/proc/locks") as f:
        return any(p[1] == "->" and p[5] == str(pid)
                   for p in (line.split() for line in f) if len(p) > 5)


# ---------------------------------------------------------------- scripted servers

class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Base:
    """A loopback server run in a thread; stop() closes it."""

    def __init__(self, handler):
        self.server = _Listener(("127.0.0.1", 0), handler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def count(self):
        with self.lock:
            self.connections += 1

    def route(self, domain):
        """The -R option that sends domain's mail here."""
        return "%s=[127.0.0.1]:%d" % (domain, self.port)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class _TarpitHandler(socketserver.BaseRequestHandler):
    def handle(self):
        owner = self.server.owner
        owner.count()
        self.request.settimeout(0.2)
        while not owner.stopping.is_set():
            try:
                if not self.request.recv(4096):
                    return
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return


class Tarpit(_Base):
    """Accepts and never answers (until stopped)."""

    def __init__(self):
        self.stopping = threading.Event()
        super().__init__(_TarpitHandler)

    def stop(self):
        self.stopping.set()
        super().stop()


class _CloserHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.owner.count()
        self.request.close()


class Closer(_Base):
    """Accepts and closes at once, counting the connections."""

    def __init__(self):
        super().__init__(_CloserHandler)


class Transaction:
    """What one SMTP session to a ScriptedSMTP did."""

    def __init__(self):
        self.helo = None        # the EHLO or HELO line
        self.mail = None        # the MAIL line
        self.rcpts = []         # (RCPT line's address, the reply given)
        self.data = None        # the data, wire form, without ".\r\n"
        self.data_reply = None
        self.quit = False
        self.commands = []      # every command line, in order
        self.session = 0        # which connection (1, 2, ...) it came on

    def accepted(self):
        """The recipients whose RCPT got a 2xx, when the data got one too."""
        if not self.data_reply or not self.data_reply.startswith("2"):
            return []
        return [a for a, r in self.rcpts if r.startswith("2")]


def _address(line):
    start, end = line.find("<"), line.find(">")
    return line[start + 1:end] if 0 <= start < end else ""


class _ScriptedHandler(socketserver.StreamRequestHandler):
    timeout = 30

    def say(self, text):
        if isinstance(text, tuple):     # (seconds, reply): a slow answer
            self.server.owner.stopping.wait(text[0])
            text = text[1]
        if text is None:        # hang: say nothing until the peer goes
            owner = self.server.owner
            while not owner.stopping.is_set():
                owner.stopping.wait(0.1)
            raise ConnectionError("stopped")
        self.wfile.write(text.encode("latin-1") + b"\r\n")

    def handle(self):
        owner = self.server.owner
        owner.count()
        t = Transaction()
        t.session = owner.connections
        with owner.lock:
            owner.transactions.append(t)
        try:
            self.say(owner.reply("GREETING"))
            while True:
                line = self.rfile.readline(4096)
                if not line:
                    return
                line = line.decode("latin-1").rstrip("\r\n")
                if not line.upper().startswith("MAIL"):
                    t.commands.append(line)
                verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    t.helo = line
                    self.say(owner.reply(verb))
                elif verb == "MAIL":
                    if t.mail is not None:      # a second transaction on the session
                        t = owner.next_transaction(t)
                    t.mail = line
                    t.commands.append(line)
                    self.say(owner.reply("MAIL"))
                elif verb == "RCPT":
                    reply = owner.reply("RCPT")
                    t.rcpts.append((_address(line), reply or ""))
                    self.say(reply)
                elif verb == "DATA":
                    reply = owner.reply("DATA")
                    self.say(reply)
                    if reply and reply.startswith("354"):
                        self.read_data(t)
                        t.data_reply = owner.reply("DOT")
                        self.say(t.data_reply)
                elif verb == "QUIT":
                    t.quit = True
                    self.say(owner.reply("QUIT"))
                    return
                else:
                    self.say(owner.reply(verb))
        except (ConnectionError, OSError):
            return

    def read_data(self, t):
        chunks = []
        while True:
            line = self.rfile.readline(1 << 20)
            if not line or line == b".\r\n":
                break
            chunks.append(line)
        t.data = b"".join(chunks)


class ScriptedSMTP(_Base):
    """An SMTP server whose replies the test gives: script maps a command
    ("GREETING", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "DOT" for the
    reply to the final dot, "QUIT", "RSET", ...) to a reply line, or to a
    list of them used in turn (the last one repeats), or to None: say
    nothing (a tarpit at that point), or to (seconds, reply): say it late.
    Each MAIL starts a Transaction (several may share a session). Multi-line replies: lines joined by
    "\\r\\n". Every session is kept in self.transactions."""

    DEFAULT = {
        "GREETING": "220 scripted.example ESMTP",
        "EHLO": "250-scripted.example\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
                "250 PIPELINING",
        "HELO": "250 scripted.example",
        "MAIL": "250 2.1.0 ok",
        "RCPT": "250 2.1.5 ok",
        "DATA": "354 go ahead",
        "DOT": "250 2.0.0 queued",
        "QUIT": "221 2.0.0 bye",
        "RSET": "250 2.0.0 ok",
        "NOOP": "250 2.0.0 ok",
    }

    def __init__(self, **script):
        self.script = dict(self.DEFAULT, **script)
        self.used = {}
        self.transactions = []
        self.stopping = threading.Event()
        super().__init__(_ScriptedHandler)

    def reply(self, key):
        with self.lock:
            r = self.script.get(key, "502 5.5.1 not scripted")
            if isinstance(r, list):
                i = self.used.get(key, 0)
                self.used[key] = i + 1
                return r[min(i, len(r) - 1)]
            return r

    def next_transaction(self, t):
        """A new Transaction on the session of t (the same greeting)."""
        n = Transaction()
        n.helo, n.session = t.helo, t.session
        with self.lock:
            self.transactions.append(n)
        return n

    def delivered(self):
        """Every (recipient, data) accepted, over all sessions."""
        with self.lock:
            return [(a, t.data) for t in self.transactions for a in t.accepted()]

    def stop(self):
        self.stopping.set()
        super().stop()


# ---------------------------------------------------------------- the tests' base

class RelayTest(MailTest):
    """A MailTest with A (the MailTest's spool and user.txt) and B (its own),
    and the scripted servers it started, all stopped in tearDown."""

    b_accounts = (("bob", "bobpw"), ("dave", "davepw"))

    def setUp(self):
        super().setUp()
        self.b_spool = os.path.join(self.dir, "b-users")
        self.b_userfile = os.path.join(self.dir, "b-user.txt")
        os.mkdir(self.b_spool)
        with open(self.b_userfile, "w") as f:
            for login, password in self.b_accounts:
                f.write("%s %s\n" % (login, password))
        self.fakes = []
        self.runners = []

    def tearDown(self):
        for fake in self.fakes:
            fake.stop()
        super().tearDown()

    def fake(self, cls=ScriptedSMTP, **script):
        """A scripted server (or Tarpit, Closer), stopped in tearDown."""
        f = cls(**script)
        self.fakes.append(f)
        return f

    def start_a(self, *args, routes=(), fast=True, **kw):
        """A: relays (-o) for a.example's users, routes given as -R values;
        kw as MailTest.start's (port=)."""
        extra = []
        for r in routes:
            extra += ["-R", r]
        return self.start("smtpmail", "-n", A_HOST, "-o", "-D", A_DOMAIN,
                          *(FAST if fast else ()), *extra, *args, **kw)

    def start_b(self, *args):
        """B: receives for b.example into its own spool; the route to it."""
        b = self.start("smtpmail", "-d", self.b_spool, "-u", self.b_userfile,
                       "-l", "127.0.0.1", "-n", B_HOST, "-D", B_DOMAIN, *args,
                       common=False)
        b.route_to = "%s=[127.0.0.1]:%d" % (B_DOMAIN, b.port)
        return b

    def runner(self, *args, routes=(), fast=True, spool=None):
        """smtpmail -q on A's spool in the foreground: a Server without a
        port (it does not listen), stopped by PID in tearDown. The log's
        "queue runner" line says it started."""
        extra = []
        for r in routes:
            extra += ["-R", r]
        args = ("-d", spool or self.spool, "-u", self.userfile, "-n", A_HOST,
                "-o", "-D", A_DOMAIN) + (FAST if fast else ()) + tuple(extra) + args + ("-q",)
        server = RunnerProcess(args, self.dir)
        self.servers.append(server)
        return server

    def b_mailbox(self, login):
        try:
            with open(os.path.join(self.b_spool, login, "mymailbox"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def b_records(self, login):
        data = self.b_mailbox(login)
        return [p + b"\r\n" for p in data.split(b"\r\n.\r\n")[:-1]] if data else []

    def queue(self):
        return queue_ids(self.spool)

    def listing(self):
        """smtpmail -p on A's spool: its output."""
        import subprocess
        from harness import binary
        run = subprocess.run([binary("smtpmail"), "-d", self.spool, "-u", self.userfile,
                              "-p"], capture_output=True, text=True, timeout=30)
        return run.stdout


class RunnerProcess(Server):
    """smtpmail -q: a Server that waits for its "queue runner" log line
    instead of "listening" (and gets no port argument)."""

    def __init__(self, args, cwd):
        import subprocess
        from harness import SANITIZER_ENV, binary
        self.prog, self.port, self.cwd = "smtpmail", 0, cwd
        self.log_path = os.path.join(cwd, "runner-%d.log" % free_port())
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary("smtpmail")] + list(args), cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=self.log_file,
                                     env=dict(os.environ, **SANITIZER_ENV))
        self.wait_started()

    def wait_started(self, timeout=10):
        if not wait_for(lambda: "queue runner" in self.log() or self.proc.poll() is not None,
                        timeout):
            raise AssertionError("the runner did not start:\n" + self.log())


def children(pid):
    """The pids whose parent is pid (Linux /proc)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return found


def descendants(pid):
    """Every process under pid, children first found first."""
    found, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            found.append(c)
            todo.append(c)
    return found


def send_auth(port, sender, rcpts, data, login="alice", password="alicepw"):
    """One message through the server at port after AUTH (smtplib); the
    refused recipients (smtplib's dict); raises on a refused message."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.ehlo("client.a.example")
        s.login(login, password)
        return s.sendmail(sender, rcpts, data)


def message(subject="test", body="hello\r\n", extra=""):
    """A small message's bytes."""
    return ("From: alice@a.example\r\nTo: bob@b.example\r\nSubject: %s\r\n%s\r\n%s"
            % (subject, extra, body)).encode("utf-8")
