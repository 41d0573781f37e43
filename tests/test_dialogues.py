"""test_dialogues: the golden dialogues of tests/dialogues/*.txt, replayed
against the real servers (the syntax is in tests/dialogues/README).

Every file is one test, test_<name>, made from the directory listing: a new
file is a new test. A failure names the file and line, the line expected
and the line received. The servers' logs are checked for sanitizer reports
by MailTest.tearDown. Runner checks that the runner itself can fail."""
import os
import re
import socket
import unittest
from collections import namedtuple

from harness import HOSTNAME, MailTest, Raw

HERE = os.path.dirname(os.path.abspath(__file__))
DIALOGUES = os.path.join(HERE, "dialogues")
SERVERS = ("smtpmail", "popserver")
QUIET = 0.3     # seconds the server must stay silent after a session's last line

# What each {name} in an S: line matches.
S_PATTERNS = {
    "host": re.escape(HOSTNAME),
    "id": r"[A-Za-z0-9._-]+",
    "date": r"[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}",
    "n": r"\d+",
    "any": r".*",
    "stamp": r"<\d+\.\d+@[^<>\s]+>",
    "tab": r"\t",
}
# What each {name} in a C: line sends; {N*text} sends text N times.
C_ESCAPES = {"tab": b"\t", "cr": b"\r", "lf": b"\n"}
PLACEHOLDER = re.compile(r"\{([a-z]+|(\d+)\*([^{}]+))\}")
SERVER_LINE = re.compile(r"#\s*server:\s*(\S+)\s*$")
DIALOGUE_LINE = re.compile(r"(C|C\+|C-|S):(?: (.*))?$")
EOF = "{eof}"
CLOSED = "<connection closed>"    # what receive() reports at the end

Session = namedtuple("Session", "server where steps")
# kind: "send" (data: bytes, flush: write now) or "expect" (data: a regex,
# None for the end of the connection).
Step = namedtuple("Step", "kind where text data flush")


class DialogueError(AssertionError):
    """A dialogue file that cannot be read as the README says."""


def wire(text):
    """text as the str Raw.line() returns for its UTF-8 bytes."""
    return text.encode("utf-8").decode("latin-1")


def s_regex(text, where):
    """The compiled pattern of an S: line's text."""
    parts, pos = [], 0
    for m in PLACEHOLDER.finditer(text):
        if m.group(1) not in S_PATTERNS:
            raise DialogueError("%s: {%s} is not an S: pattern" % (where, m.group(1)))
        parts += [re.escape(wire(text[pos:m.start()])), S_PATTERNS[m.group(1)]]
        pos = m.end()
    parts.append(re.escape(wire(text[pos:])))
    return re.compile("".join(parts), re.DOTALL)


def c_bytes(text, where):
    """The bytes a C: line's text stands for (its line end not included)."""
    out, pos = b"", 0
    for m in PLACEHOLDER.finditer(text):
        out += text[pos:m.start()].encode("utf-8")
        if m.group(2):
            out += int(m.group(2)) * m.group(3).encode("utf-8")
        elif m.group(1) in C_ESCAPES:
            out += C_ESCAPES[m.group(1)]
        else:
            raise DialogueError("%s: {%s} is not a C: escape" % (where, m.group(1)))
        pos = m.end()
    return out + text[pos:].encode("utf-8")


def make_step(kind, text, where):
    """One Step from a C:, C+:, C-: or S: line."""
    if kind == "S":
        return Step("expect", where, text, None if text == EOF else s_regex(text, where), False)
    end = b"" if kind == "C-" else b"\r\n"
    return Step("send", where, text, c_bytes(text, where) + end, kind == "C")


def parse(text, name):
    """The sessions of a dialogue file; DialogueError on a malformed line."""
    sessions = []
    for lineno, line in enumerate(text.split("\n"), 1):
        where = "%s line %d" % (name, lineno)
        server = SERVER_LINE.match(line)
        if server:
            if server.group(1) not in SERVERS:
                raise DialogueError("%s: unknown server %r" % (where, server.group(1)))
            sessions.append(Session(server.group(1), where, []))
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = DIALOGUE_LINE.match(line)
        if not m:
            raise DialogueError("%s: not a C:, C+:, C-:, S: or # line: %r" % (where, line))
        if not sessions:
            raise DialogueError("%s: a dialogue line before the first '# server:'" % where)
        steps = sessions[-1].steps
        if steps and steps[-1].text == EOF and steps[-1].kind == "expect":
            raise DialogueError("%s: a line after 'S: %s' (start a new '# server:')"
                                % (where, EOF))
        steps.append(make_step(m.group(1), m.group(2) or "", where))
    if not sessions:
        raise DialogueError("%s: no '# server:' line" % name)
    return sessions


class DialogueTest(MailTest):
    """Replays dialogues; each server is started on first use and kept for
    the rest of the file, so a later session sees what an earlier one did."""

    def setUp(self):
        super().setUp()
        self.started = {}

    def replay(self, text, name):
        for session in parse(text, name):
            self.run_session(session)

    def replay_file(self, path):
        with open(path, encoding="utf-8") as f:
            self.replay(f.read(), os.path.relpath(path, HERE))

    def server(self, name):
        if name not in self.started:
            start = self.start_smtp if name == "smtpmail" else self.start_pop
            self.started[name] = start()
        return self.started[name]

    def run_session(self, session):
        """One connection: held C+:/C-: bytes go out with the next C: line,
        or before the next S: line is read, in one write."""
        client = Raw(self.server(session.server).port)
        try:
            held, last = b"", None
            for step in session.steps:
                if step.kind == "send":
                    held += step.data
                    if step.flush:
                        held = self.send(client, held, step)
                    continue
                held = self.send(client, held, step)
                self.expect(client, step)
                last = step
            self.send(client, held, session)
            if last is None or last.data is not None:
                self.expect_quiet(client, session)
        finally:
            client.close()

    def send(self, client, data, step):
        """Write data (if any) in one write; returns the empty held buffer."""
        if data:
            try:
                client.send(data)
            except OSError as e:
                self.fail("%s: cannot send (%s): the server closed the connection?"
                          % (step.where, e))
        return b""

    def receive(self, client):
        """(the next server line, None), or (None, why there is none)."""
        client.eof = False
        try:
            line = client.line()
        except (socket.timeout, TimeoutError):
            return None, "<nothing within %g s>" % client.sock.gettimeout()
        except ConnectionResetError:
            return None, CLOSED
        if client.eof:
            return None, "<connection closed after %r, no CRLF>" % line if line else CLOSED
        return line, None

    def expect(self, client, step):
        """The server's next line matches step, or the connection ends if
        step is S: {eof}. A missing line never matches, not even {any}."""
        line, why = self.receive(client)
        if step.data is None:
            ok = why == CLOSED
        else:
            ok = line is not None and step.data.fullmatch(line)
        if not ok:
            self.mismatch(step, why or line)

    def mismatch(self, step, got):
        self.fail("%s\n  expected: S: %s\n  received: %s" % (step.where, step.text, got))

    def expect_quiet(self, client, session):
        """After a session's last line, nothing more from the server."""
        extra = client.buf
        client.sock.settimeout(QUIET)
        try:
            extra += client.sock.recv(65536)
        except (socket.timeout, TimeoutError, ConnectionResetError):
            pass
        if extra:
            self.fail("%s: the server sent more than the dialogue shows: %r"
                      % (session.where, extra[:200]))


def dialogue_files():
    try:
        names = sorted(f for f in os.listdir(DIALOGUES) if f.endswith(".txt"))
    except FileNotFoundError:
        names = []
    return [os.path.join(DIALOGUES, n) for n in names]


class Dialogues(DialogueTest):
    """One test per tests/dialogues/*.txt, added below."""

    def test_files_present(self):
        names = [os.path.basename(p) for p in dialogue_files()]
        for want in ("assignment.txt", "ehlo_pipelining.txt", "pop3_session.txt",
                     "smtp_auth.txt", "pop3_auth.txt"):
            self.assertIn(want, names)


def add_dialogue_tests(cls):
    for path in dialogue_files():
        stem = os.path.basename(path)[:-len(".txt")]

        def test(self, path=path):
            self.replay_file(path)
        test.__doc__ = "dialogues/%s" % os.path.basename(path)
        setattr(cls, "test_" + re.sub(r"\W", "_", stem), test)


add_dialogue_tests(Dialogues)


class Runner(DialogueTest):
    """The runner can fail: patterns, parse errors, and wrong dialogues
    replayed against a real server."""

    def test_s_patterns(self):
        self.assertTrue(s_regex("+OK ready {stamp}", "t").fullmatch("+OK ready <8.1795@vm.example>"))
        self.assertFalse(s_regex("+OK ready {stamp}", "t").fullmatch("+OK ready <8.17a95@vm>"))
        self.assertFalse(s_regex("+OK ready {stamp}", "t").fullmatch("+OK ready"))
        r = s_regex("+OK {n} octets, {id} at {date}{tab}{any}", "t")
        self.assertTrue(r.fullmatch("+OK 232 octets, 6B0C.34D6.1 at "
                                    "Sun, 29 Nov 2026 14:47:57 +0000\tand more"))
        self.assertFalse(r.fullmatch("+OK 23x octets, 6B0C.34D6.1 at "
                                     "Sun, 29 Nov 2026 14:47:57 +0000\t"))
        self.assertFalse(s_regex("220 {host} ready", "t").fullmatch("220 other.example ready"))
        self.assertFalse(s_regex("1 {id}", "t").fullmatch("1 ab cd"))
        self.assertFalse(s_regex("+OK", "t").fullmatch("+OK "))
        self.assertFalse(s_regex("a.b", "t").fullmatch("axb"))
        self.assertRaisesRegex(DialogueError, "not an S: pattern", s_regex, "{lf}", "t")

    def test_c_escapes(self):
        self.assertEqual(c_bytes("NOOP {3*ab}{tab}{cr}{lf}", "t"), b"NOOP ababab\t\r\n")
        self.assertEqual(make_step("C", "QUIT", "t").data, b"QUIT\r\n")
        self.assertEqual(make_step("C-", "QUIT", "t").data, b"QUIT")
        self.assertTrue(make_step("C", "", "t").flush)
        self.assertFalse(make_step("C+", "", "t").flush)
        self.assertRaisesRegex(DialogueError, "not a C: escape", c_bytes, "{host}", "t")

    def test_parse_errors(self):
        for text, message in (("S: 220 x\n", "before the first"),
                              ("# server: imapd\n", "unknown server"),
                              ("# server: smtpmail\nX: 1\n", "line 2: not a C:"),
                              ("# server: smtpmail\nS: {eof}\nC: QUIT\n", "line 3: a line after"),
                              ("# only a comment\n", "no '# server:'")):
            self.assertRaisesRegex(DialogueError, message, parse, text, "t")

    def assertReplayFails(self, text, *pieces):
        with self.assertRaises(AssertionError) as caught:
            self.replay(text, "t")
        for piece in pieces:
            self.assertIn(piece, str(caught.exception))

    def test_wrong_line_fails(self):
        self.assertReplayFails("# server: smtpmail\nS: 220 {host} Service ready\n"
                               "C: NOOP\nS: 250 Not OK\n",
                               "t line 4", "expected: S: 250 Not OK",
                               "received: 250 OK")

    def test_missing_and_extra_lines_fail(self):
        self.assertReplayFails("# server: smtpmail\nS: 220 {host} Service ready\n"
                               "C: EHLO client.example\nS: 250-{host} Hello client.example\n",
                               "the server sent more", "250-SIZE")
        self.assertReplayFails("# server: smtpmail\nS: 220 {host} Service ready\n"
                               "C: QUIT\nS: 221 {any}\nS: {any}\n",
                               "t line 5", "received: <connection closed>")
        self.assertReplayFails("# server: smtpmail\nS: 220 {host} Service ready\n"
                               "C: NOOP\nS: {eof}\n",
                               "t line 4", "expected: S: {eof}", "received: 250 OK")


if __name__ == "__main__":
    unittest.main()
