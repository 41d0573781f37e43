#!/usr/bin/env python3
"""conform.py - the grading kit: a black-box conformance suite for an SMTP
receiver and a POP3 server written to the course's mail assignment (RFC
821/5321, RFC 1939), and for its interactive mail client.

    tests/conform.py --smtp 127.0.0.1:2525 --pop3 127.0.0.1:1100 \\
                     --user alice:alicepw --user bob:bobpw
    tests/conform.py ... --level assignment,rfc       # a subset by level
    tests/conform.py ... --only smtp-noop,pop-rset    # a subset by name
    tests/conform.py ... --json                       # for scripts
    tests/conform.py ... --client './mailclient {host} {smtp} {pop3}'
    tests/conform.py --list                           # every check and its source

It only talks to the servers: it sends mail over SMTP, each message marked
with a token of this run in its Subject, reads it back over POP3, and deletes
the mail it sent. It never reads the server's files. Every wait is bounded
(--timeout for each reply, --check-timeout for a whole check): a hung server
fails that check and the kit moves on.

Levels: assignment (the assignment's dialogue and words), rfc (RFC 5321 and
RFC 1939 core behaviour), robust (hostile or unusual input), extra
(extensions; a feature not offered is skipped only where the RFC makes it
optional), client (with --client: the client on a pseudo-terminal). Exit
status: 0 when every selected assignment and rfc check passed (a skip is no
failure), 1 otherwise, 2 on bad usage. Python 3 standard library only. How
to read the results: tests/GRADING.md.
"""
import argparse
import base64
import csv
import io
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

LEVELS = ("assignment", "rfc", "robust", "extra", "client")
GATE = ("assignment", "rfc")      # the levels the exit status depends on
HELO_NAME = "grader.example.org"
MAX_LINE = 1 << 20                # the longest line the kit reads
MAX_MESSAGE = 16 << 20            # the largest response the kit reads
MAX_SCREEN = 4 << 20              # the most a client may print
BODY = [b"This is a test mail.", b"How are you doing?"]   # the assignment's
# The menu by meaning: three numbered options to read, to send, to leave
# (the assignment's "1. Manage Mail 2. Send Mail 3. Quit" among them); the
# exact words are a check of their own (client-menu-words).
MENU_RE = (r"1\s*[.):\-]?[^\n]*?(?:manage|mail|inbox|read|view|check|receive)[\s\S]*?"
           r"2\s*[.):\-]?[^\n]*?(?:send|compose|write|new)[\s\S]*?"
           r"3\s*[.):\-]?[^\n]*?(?:quit|exit|log\s*out|close|end|leave|bye)")
MENU_WORDS_RE = r"manage\s*mail[\s\S]*send\s*mail[\s\S]*quit"
NUMBER_PROMPT_RE = r"enter\s+mail\s+n(?:o\.?|umber)\s*to\s+see"


# ------------------------------------------------------------ results

class Fail(Exception):
    """The check fails; the message says why, with the reply seen."""


class Closed(Fail):
    """The server closed the connection."""


class Timeout(Fail):
    """No answer within the timeout."""


class NotRun(Fail):
    """The check could not judge its requirement: a step before it failed
    (that step's own check reports it)."""


class NotFound(Fail):
    """The message looked for is not in the mailbox (or is there twice)."""


class Skip(Exception):
    """The check does not apply: an optional feature is not offered."""


def show(data, width=72):
    """A line as printable ASCII (other bytes as \\xNN), cut to width."""
    if isinstance(data, bytes):
        data = data.decode("latin-1")
    text = "".join(c if " " <= c <= "~" else "\\x%02x" % ord(c) for c in data)
    return text if len(text) <= width else text[:width - 3] + "..."


def quote(command):
    """A command as a reason shows it; a password never shows."""
    if command.upper().startswith("PASS "):
        command = command[:5] + "****"
    return "'%s'" % show(command, 40)


# ------------------------------------------------------------ connections

DEFECTS = {   # a formatting defect the kit reads through, and what it is called
    "nul": "replies carry NUL bytes",
    "nospace": "no space after the code",
    "nocrlf": "replies lack CRLF",
    "noend": "a multi-line response lacks its '.' line",
    "listform": "LIST lines are not 'n size'",
}


def split_replies(line, pattern):
    """Replies that came in one read without line ends, apart."""
    parts = re.split(pattern, line)
    return [p for p in parts if p.strip()] or [line]


class Line:
    """A TCP connection read line by line; every wait ends within timeout.
    It reads leniently, at the assignment's level, and notes each defect it
    reads through in defects (the checks of those defects report them; no
    other check fails because of them): NUL bytes around a line (the
    classic send(fd, buf, sizeof buf)) are dropped; a line ends at LF, at
    the end of the stream, or after silence seconds without more data."""

    def __init__(self, addr, timeout, what, silence=0.5, learned=None):
        self.timeout, self.silence = timeout, silence
        # What the kit learned of this server so far (shared by its
        # connections): once it is known to send no line ends, a shorter
        # silence ends a reply, so that the run stays fast.
        self.learned = set() if learned is None else learned
        if "nocrlf" in self.learned:
            self.silence = min(silence, 0.05)
        self.buf = b""
        self.queued = []          # lines split from one read without line ends
        self.unended = False      # the last line read had no line end
        self.bare_lf = False      # some line ended in LF without CR
        self.crlf = True          # the last line read ended in CRLF
        self.eof = False          # the server closed its side
        self.defects = set()      # the keys of DEFECTS read through
        self.listform = b""       # a LIST line not of the form "n size"
        try:
            self.sock = socket.create_connection(addr, timeout=timeout)
        except OSError as e:
            raise Fail("cannot connect to the %s server at %s port %d: %s"
                       % (what, addr[0], addr[1], e.strerror or e)) from None

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Closed("the connection broke while sending (%s)" % (e.strerror or e)) from None

    def pending(self):
        """True if part of a line (not only NULs) waits in the buffer."""
        return bool(self.buf.strip(b"\0"))

    def fill(self, what, deadline, idle_end=None):
        """Read once more into buf. False when the line must end without an
        LF (the stream ended, or silence after part of a line); None when
        idle_end seconds passed with nothing pending."""
        last = time.monotonic()
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise Timeout("no answer %s within %gs" % (what, self.timeout))
            quiet = idle_end
            if self.pending():
                # Inside a long response (idle_end) a server that does end
                # its lines may pause between two writes: a longer silence.
                quiet = self.silence
                if idle_end is not None and "nocrlf" not in self.learned:
                    quiet = max(self.silence, idle_end)
            wait = left if quiet is None else min(left, max(0.01, last + quiet - now))
            self.sock.settimeout(wait)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                if quiet is not None and time.monotonic() - last >= quiet:
                    return False if self.pending() else None
                continue
            except OSError as e:
                raise Closed("the connection broke %s (%s)" % (what, e.strerror or e)) from None
            if not chunk:
                self.eof = True
                if self.pending():
                    return False
                raise Closed("the server closed the connection %s" % what)
            self.buf += chunk
            return True

    def line(self, what, idle_end=None):
        """The next line without its line end; Closed or Timeout if none.
        With idle_end: None after that many seconds of silence between lines."""
        if self.queued:
            return self.queued.pop(0)
        deadline = time.monotonic() + self.timeout
        while True:
            ended = True
            while b"\n" not in self.buf:
                if len(self.buf) > MAX_LINE:
                    raise Fail("a line of over %d octets %s" % (MAX_LINE, what))
                if self.eof:
                    if self.pending():
                        ended = False
                        break
                    raise Closed("the server closed the connection %s" % what)
                got = self.fill(what, deadline, idle_end)
                if got is None:
                    return None
                if got is False:
                    ended = False
                    break
            if ended:
                raw, self.buf = self.buf.split(b"\n", 1)
            else:
                raw, self.buf = self.buf, b""
                self.defects.add("nocrlf")
                self.learned.add("nocrlf")
                self.silence = min(self.silence, 0.05)
            if ended and self.unended and raw.strip(b"\0") in (b"", b"\r"):
                # The line end of a line that silence already ended (written
                # late, in a write of its own): not a line of its own.
                self.unended = False
                continue
            self.unended = not ended
            line = raw.strip(b"\0")
            if line != raw:
                self.defects.add("nul")
            self.crlf = ended and line.endswith(b"\r")
            if self.crlf:
                return line[:-1].rstrip(b"\0")
            if line.endswith(b"\r"):      # CR, then silence
                line = line[:-1]
            if not line and raw:
                continue                   # nothing but NULs: no line at all
            if ended:
                self.bare_lf = True
            return line

    def split(self, line, pattern):
        """line, or its first reply if several came in one read without
        line ends (pipelined commands; the others are read next)."""
        if not self.unended or line is None:
            return line
        parts = split_replies(line, pattern)
        self.queued = parts[1:] + self.queued
        return parts[0]

    def closes(self, wait=None):
        """True if the server closes the connection within wait seconds."""
        if self.queued:
            return False
        if self.eof:
            return True
        deadline = time.monotonic() + (self.timeout if wait is None else wait)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            self.buf += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Reply:
    """One SMTP reply: its code and its lines."""

    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[-1][:3])

    def __str__(self):
        return "'%s'" % show(self.lines[-1])

    def words(self):
        """The text after the code and any RFC 3463 status code, in lower
        case with spaces squeezed: what the assignment's words are matched on."""
        line = self.lines[-1]
        text = line[4:] if line[3:4] in (" ", "-") else line[3:]
        text = re.sub(r"^\d\.\d{1,3}\.\d{1,3}(?: |$)", "", text)
        return " ".join(text.split()).lower()


REPLY_RE = re.compile(r"\d{3}")


class SMTP(Line):
    """An SMTP session: connected and greeted."""

    def __init__(self, kit):
        super().__init__(kit.smtp, kit.timeout, "SMTP", kit.silence, kit.learned_smtp)
        kit.conns.append(self)
        self.greeting = self.reply("(the greeting)")

    def reply(self, what):
        """One reply, multi-line included (RFC 5321 4.2.1)."""
        lines = []
        while True:
            text = self.split(self.line(what), rb"(?<=[^\d\s])(?=[2-5]\d\d(?:[ <-]|[A-Za-z]))|"
                                                rb"(?<=\s)(?=[2-5]\d\d[ -])").decode("latin-1")
            if not REPLY_RE.match(text) or (lines and text[:3] != lines[0][:3]):
                raise Fail("not an SMTP reply %s: '%s'" % (what, show(text)))
            if text[3:4] not in ("", " ", "-"):
                self.defects.add("nospace")     # RFC 5321 4.2: code SP text
            lines.append(text)
            if text[3:4] != "-" or len(lines) > 200:
                return Reply(lines)

    def cmd(self, text):
        self.send(text.encode("latin-1") + b"\r\n")
        return self.reply("to " + quote(text))

    def expect(self, text, *codes):
        """A command whose reply must have one of codes."""
        r = self.cmd(text)
        if r.code not in codes:
            raise Fail("%s got %s (expected %s)" % (quote(text), r, "/".join(map(str, codes))))
        return r

    def quit(self):
        """QUIT and close; the session is over whatever the reply."""
        try:
            self.cmd("QUIT")
        except Fail:
            pass
        self.close()


class POP3(Line):
    """A POP3 session: connected and greeted with +OK."""

    def __init__(self, kit):
        super().__init__(kit.pop3, kit.timeout, "POP3", kit.silence, kit.learned_pop3)
        kit.conns.append(self)
        ok, self.greeting = self.status("(the greeting)")
        if not ok:
            raise Fail("the POP3 greeting is '%s'" % show(self.greeting))

    def status(self, what):
        line = self.split(self.line(what), rb"(?=\+OK|-ERR)").decode("latin-1")
        if line.startswith("+OK"):
            return True, line
        if line.startswith("-ERR"):
            return False, line
        raise Fail("neither +OK nor -ERR %s: '%s'" % (what, show(line)))

    def cmd(self, text):
        self.send(text.encode("latin-1") + b"\r\n")
        return self.status("to " + quote(text))

    def ok(self, text):
        good, line = self.cmd(text)
        if not good:
            raise Fail("%s got '%s'" % (quote(text), show(line)))
        return line

    def err(self, text, why):
        """A command that must be refused; why says what +OK would mean."""
        good, line = self.cmd(text)
        if good:
            raise Fail("%s got '%s' (%s)" % (quote(text), show(line), why))
        return line

    def multi(self, what, strict=False, count=None):
        """The lines of a multi-line response up to its "." line, unstuffed.
        strict: only a "." line between CRLFs ends it (RFC 1939 3), unless
        the server already ended a line with a bare LF (it knows no CRLF)."""
        lines, size = [], 0
        loose = not strict or self.bare_lf or "nocrlf" in self.defects
        while True:
            after_crlf = self.crlf
            # A server may pause inside a long response: only a longer
            # silence than between the parts of a line ends it.
            idle = max(self.silence * 4, 2.0)
            if count is not None and len(lines) >= count:
                idle = 0.1              # all the lines STAT announced are here
            line = self.line(what, idle_end=idle)
            if line is None:            # silence where the "." line belongs
                self.defects.add("noend")
                self.learned.add("noend")
                return lines
            if line == b"." and (loose or (after_crlf and self.crlf)):
                return lines
            lines.append(line[1:] if line.startswith(b".") else line)
            size += len(line) + 2
            if size > MAX_MESSAGE:
                raise Fail("a response of over %d octets %s" % (MAX_MESSAGE, what))

    def listing(self):
        """LIST: [(number, size)]. Once the server is known to leave out the
        "." line, STAT first says how many lines to wait for."""
        count = None
        if "noend" in self.learned:
            good, line = self.cmd("STAT")
            m = re.match(r"\+OK (\d+)", line) if good else None
            count = int(m.group(1)) if m else None
        self.ok("LIST")
        out = []
        for line in self.multi("in the LIST listing", count=count):
            # Read leniently: the number first; the size, if any, last
            # (-1 if none). pop-list-size reports a line of another form.
            m = re.match(rb"\s*(\d+)\b(.*)$", line)
            if not m:
                raise Fail("a LIST line that does not start with its number: '%s'" % show(line))
            if not re.fullmatch(rb"\d+ \d+", line):
                self.defects.add("listform")
                self.listform = line
            size = re.search(rb"(\d+)\D*$", m.group(2))
            out.append((int(m.group(1)), int(size.group(1)) if size else -1))
        return out

    def retr(self, n, strict=False):
        self.ok("RETR %d" % n)
        return self.multi("in message %d" % n, strict)

    def quit(self):
        """QUIT and close: (+OK?, the reply line or the failure)."""
        try:
            result = self.cmd("QUIT")
        except Fail as e:
            result = (False, str(e))
        self.close()
        return result


def stuff(lines):
    """Message lines as DATA sends them: dot-stuffed, CRLF, the final dot."""
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


def find_run(lines, want):
    """Where the lines want appear one after the other in lines, or -1."""
    for i in range(len(lines) - len(want) + 1):
        if lines[i:i + len(want)] == want:
            return i
    return -1


def unfold(lines):
    """Header-like lines with their continuation lines joined (RFC 5322 2.2.3)."""
    out = []
    for line in lines:
        if out and line[:1] in (b" ", b"\t"):
            out[-1] += b" " + line.strip()
        else:
            out.append(line)
    return out


# ------------------------------------------------------------ the kit

FORMS = {   # HELO, MAIL, RCPT, DATA as each source writes them
    "assignment": ("HELO %s", "MAIL FROM: <%s>", "RCPT TO: %s", "DATA"),
    "rfc": ("HELO %s", "MAIL FROM:<%s>", "RCPT TO:<%s>", "DATA"),
    "lower": ("helo %s", "mail from:<%s>", "rcpt to:<%s>", "data"),
}


class Kit:
    """What the checks share: the servers, the accounts, this run's token,
    the mail sent (to delete it) and results computed once."""

    def __init__(self, args):
        self.smtp, self.pop3 = args.smtp, args.pop3
        self.users = args.user
        self.domain = args.domain
        self.timeout, self.grace, self.silence = args.timeout, args.grace, args.silence
        self.spool = args.spool
        self.learned_smtp, self.learned_pop3 = set(), set()
        self.smtp_check = False   # the running check judges the SMTP server
        self.hung = {}            # "SMTP"/"POP3": why it is taken as hung
        self.current = ""         # the name of the running check
        self.senders = args.senders
        self.client_cmd, self.settle = args.client, args.settle
        self.token = "k" + os.urandom(4).hex()
        self.memo, self.memo_lock = {}, threading.Lock()
        self.sent = set()         # (user index, tag) of mail to delete
        self.conns = []           # the connections of the running check
        self.terminal = None      # the client under test, once started
        self.client_state = {}

    def addr(self, i):
        """User i's address; a login that is an address already is kept."""
        user = self.users[i % len(self.users)][0]
        return user if "@" in user else "%s@%s" % (user, self.domain)

    @property
    def sender(self):
        return self.addr(0)

    def key(self, tag):
        """The mark of one message of this run: in its Subject."""
        return "%s.%s." % (self.token, tag)

    def message(self, tag, body, to=None):
        """A message as the assignment types it: From, To, Subject, then
        (RFC 5322) an empty line and the body; lines not stuffed."""
        head = ["From: " + self.sender, "To: " + (to or self.addr(0)),
                "Subject: conform " + self.key(tag)]
        return [h.encode() for h in head] + [b""] + list(body)

    def once(self, name, compute):
        """compute() the first time, its result (or failure) after that."""
        with self.memo_lock:
            if name not in self.memo:
                try:
                    self.memo[name] = (True, compute())
                except (Fail, Skip) as e:
                    self.memo[name] = (False, e)
            done, value = self.memo[name]
        if not done:
            raise type(value)(str(value))
        return value

    def need_users(self, n):
        if len(self.users) < n:
            raise Skip("needs %d accounts (--user)" % n)

    # -- SMTP

    def transaction(self, s, tag, body=None, to=(0,), form="rfc", helo=True, accept=(250,),
                    keep=False):
        """One mail transaction on session s; the reply to the final dot.
        The mail is deleted after the check, unless keep (other checks read
        it: it goes at the end of the run)."""
        helo_f, mail_f, rcpt_f, data_f = FORMS[form]
        if helo:
            s.expect(helo_f % HELO_NAME, 250)
        s.expect(mail_f % self.sender, 250)
        for i in to:
            s.expect(rcpt_f % self.addr(i), 250, 251)
        s.expect(data_f, 354)
        if not keep:
            self.sent.update((i, tag) for i in to)
        s.send(stuff(self.message(tag, BODY if body is None else body,
                                  ", ".join(self.addr(i) for i in to))))
        r = s.reply("to the end of the data")
        if r.code not in accept:
            raise Fail("the end of the data got %s" % r)
        return r

    def send(self, tag, body=None, to=(0,), form="rfc", accept=(250,), keep=False, prereq=False):
        """Deliver one message in a session of its own; the final reply.
        prereq: a POP3 check's mail, whose failure to arrive the SMTP checks
        report (this check is then not run)."""
        if prereq and "SMTP" in self.hung:
            raise NotRun("not run: " + self.hung["SMTP"])
        try:
            s = SMTP(self)
        except Fail as e:
            if prereq:
                raise NotRun("not reached: the mail could not be sent: %s" % e) from None
            raise
        try:
            r = self.transaction(s, tag, body, to, form, accept=accept, keep=keep)
        except Fail as e:
            s.close()
            if prereq:
                raise NotRun("not reached: the mail could not be sent: %s" % e) from None
            raise
        s.quit()
        return r

    # -- POP3

    def login(self, i=0, wait=None):
        """A POP3 session of user i. A -ERR at PASS is tried again for up to
        grace seconds: a session that just ended may still hold the lock."""
        user, password = self.users[i]
        deadline = time.monotonic() + (self.grace if wait is None else wait)
        while True:
            p = POP3(self)
            p.ok("USER " + user)
            good, line = p.cmd("PASS " + password)
            if good:
                return p
            p.close()
            if time.monotonic() >= deadline:
                raise Fail("PASS for %s got '%s'" % (user, show(line)))
            time.sleep(0.1)

    def fetch(self, i, tag, strict=False, p=None):
        """The messages of user i that carry tag's key: [(number, lines)]."""
        key = self.key(tag).encode()
        return [(n, lines) for n, lines in self.mailbox(i, strict, p)
                if any(key in line for line in lines)]

    def mailbox(self, i, strict=False, p=None):
        """Every message of user i: [(number, lines)]. A message that runs on
        into the next response (a "." line not stuffed) ends the reading.
        In an SMTP check, a POP3 server that cannot be read makes the check
        not run: the POP3 checks report that."""
        try:
            if "POP3" in self.hung and p is None:
                raise NotRun("not run: " + self.hung["POP3"])
            return self.read_mailbox(i, strict, p)
        except NotRun:
            raise
        except Fail as e:
            if not self.smtp_check:
                raise
            raise NotRun("not reached: the mailbox could not be read over POP3 to see the "
                         "mail: %s" % e) from None

    def read_mailbox(self, i, strict, p):
        own = p is None
        p = p or self.login(i)
        found = []
        for n, _ in p.listing():
            try:
                found.append((n, p.retr(n, strict)))
            except Fail:
                if not found:
                    raise
                break
        if own:
            p.quit()
        return found

    def find(self, i, tag, strict=False):
        """The one message of user i with tag's key: (number, lines); waits
        up to grace seconds for it to appear."""
        deadline = time.monotonic() + self.grace
        while True:
            found = self.fetch(i, tag, strict)
            if len(found) > 1:
                raise NotFound("the message is in %s's mailbox %d times (numbers %s)"
                           % (self.users[i][0], len(found), ", ".join(str(n) for n, _ in found)))
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                raise NotFound("the message is not in %s's mailbox (POP3 LIST/RETR)"
                               % self.users[i][0])
            time.sleep(0.1)

    def spooled(self, i, tag):
        """The message with tag's key in user i's mailbox file(s) under
        --spool (messages separated by "." lines, as the assignment stores
        them): its lines, or None."""
        key = self.key(tag).encode()
        folder = os.path.join(self.spool, self.users[i][0])
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return None
        for name in names:
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    data = f.read(MAX_MESSAGE)
            except OSError:
                continue
            if key not in data:
                continue
            message = []
            for line in data.split(b"\n"):
                line = line.rstrip(b"\r")
                if line == b".":
                    if any(key in l for l in message):
                        return message
                    message = []
                else:
                    message.append(line)
            return message
        return None

    def stored(self, i, tag):
        """The message with tag's key as user i received it, for the SMTP
        checks: (where, lines). With --spool the mailbox file is read first,
        so that an SMTP check does not depend on the POP3 server; else, or
        if the file does not have it, POP3 (waiting up to grace seconds)."""
        if self.spool:
            deadline = time.monotonic() + self.grace
            while True:
                msg = self.spooled(i, tag)
                if msg is not None:
                    return "the mailbox file", msg
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            try:
                found = self.fetch(i, tag)
            except Fail as e:
                raise Fail("the message is not in %s's mailbox file under %s (nor could POP3 "
                           "be read: %s)" % (self.users[i][0], self.spool, e)) from None
            if len(found) != 1:
                raise Fail("the message is not in %s's mailbox file under %s, and %d times "
                           "over POP3" % (self.users[i][0], self.spool, len(found)))
            return "RETR %d" % found[0][0], found[0][1]
        try:
            n, msg = self.find(i, tag)
        except NotFound:
            raise
        except Fail as e:
            # The POP3 server's own checks report this; the SMTP check cannot judge.
            raise NotRun("not reached: the mailbox could not be read over POP3 to see the "
                         "mail: %s" % e) from None
        return "RETR %d" % n, msg

    def cleanup(self, everything=False):
        """Delete the mail sent since the last cleanup (or all of this run's)."""
        sent, self.sent = self.sent, set()
        keys = {}
        for i, tag in sent:
            keys.setdefault(i, []).append(self.key(tag).encode())
        if everything:
            keys = {i: [self.token.encode()] for i in range(len(self.users))}
        for i, wanted in keys.items():
            try:
                self.delete_matching(i, wanted)
            except Fail:
                pass

    def delete_matching(self, i, wanted):
        numbers = [n for n, lines in self.mailbox(i)
                   if any(w in line for line in lines for w in wanted)]
        if numbers:
            p = self.login(i)
            for n in numbers:
                p.cmd("DELE %d" % n)
            p.quit()


# ------------------------------------------------------------ the checks

CHECKS = []


class Check:
    def __init__(self, name, level, source, fn):
        self.name, self.level, self.source, self.fn = name, level, source, fn


def check(name, level, source):
    """Register fn as a check; it returns a reason (or None) when it passes,
    raises Fail or Skip otherwise."""
    def register(fn):
        CHECKS.append(Check(name, level, source, fn))
        return fn
    return register


# ---- assignment: the example dialogue, step by step

DIALOGUE = ("greeting", "helo", "mail", "rcpt", "data", "end", "quit", "closed")


def dialogue(kit, upto):
    """The assignment's example session on a connection of its own, up to
    the step upto: {step: reply}. A step before upto that fails makes the
    check not run (that step's own check reports it)."""
    steps = {}
    tag = dialogue_tag(kit)
    s = SMTP(kit)
    try:
        steps["greeting"] = s.greeting
        for name, text, code in (("helo", "HELO " + HELO_NAME, 250),
                                 ("mail", "MAIL FROM: <%s>" % kit.sender, 250),
                                 ("rcpt", "RCPT TO: %s" % kit.addr(0), 250),
                                 ("data", "DATA", 354)):
            if upto in steps:
                return steps
            r = steps[name] = s.cmd(text)
            if r.code != code and name != upto:
                raise NotRun("not reached: %s got %s" % (quote(text), r))
        if upto == "data":
            return steps
        kit.sent.add((0, tag))
        s.send(stuff(kit.message(tag, BODY)))
        r = steps["end"] = s.reply("to the end of the data")
        if upto == "end":
            s.quit()        # a mail stored only at QUIT is still stored
            return steps
        if r.code != 250:
            raise NotRun("not reached: the end of the data got %s" % r)
        steps["quit"] = s.cmd("QUIT")
        steps["closed"] = s.closes()
        return steps
    finally:
        s.close()


def dialogue_tag(kit):
    """The mark of the dialogue's mail: one per check, so that even mail
    kept (--keep) is found once."""
    return "dialogue-" + kit.current


def step(kit, name):
    return dialogue(kit, name)[name]


def words(kit, name, code, pattern, expected, steps=None):
    """A step of the dialogue: its code, then the assignment's words."""
    r = (steps or dialogue(kit, name))[name]
    if r.code != code:
        raise Fail("%s (expected %d)" % (r, code))
    if not re.search(pattern, r.words()):
        raise Fail("%s: not the assignment's words (%s)" % (r, expected))
    return str(r)


@check("smtp-greeting", "assignment", 'assignment: "220 <domain name> Service Ready"')
def smtp_greeting(kit):
    return words(kit, "greeting", 220, r"service ready", "220 <domain> Service ready")


@check("smtp-helo", "assignment", 'assignment: "HELO iitkgp.edu" / "250 OK Hello iitkgp.edu"')
def smtp_helo(kit):
    return words(kit, "helo", 250, r"^ok\b|\bhello\b", "250 OK Hello <domain>")


@check("smtp-mail", "assignment",
       'assignment: "MAIL FROM: <ag@iitkgp.edu>" / "250 <ag@iitkgp.edu>... Sender ok"')
def smtp_mail(kit):
    return words(kit, "mail", 250, r"^ok\b|sender ok", "250 <addr>... Sender ok, or 250 OK ...")


@check("smtp-rcpt", "assignment",
       'assignment: "RCPT TO: gb@iitkgp.edu" / "250 root... Recipient ok"')
def smtp_rcpt(kit):
    # The words alone prove nothing: the mail must reach that recipient.
    steps = dialogue(kit, "end")
    reason = words(kit, "rcpt", 250, r"^ok\b|recipient ok",
                   "250 <addr>... Recipient ok, or 250 OK ...", steps)
    if steps["end"].code != 250:
        raise NotRun("not reached: the end of the data got %s" % steps["end"])
    where, _ = kit.stored(0, dialogue_tag(kit))
    return "%s; the mail reached %s (%s)" % (reason, kit.users[0][0], where)


@check("smtp-data", "assignment",
       'assignment: "354 Start mail input; end with <CRLF>.<CRLF>" or "354 Enter mail, end with "." ..."')
def smtp_data(kit):
    return words(kit, "data", 354, r"mail input|enter mail|end with",
                 "354 Start mail input; ... or 354 Enter mail, end with ...")


@check("smtp-end-of-data", "assignment", 'assignment: "250 OK Message accepted for delivery"')
def smtp_end_of_data(kit):
    return words(kit, "end", 250, r"^ok\b|accepted", "250 OK Message accepted for delivery")


@check("smtp-quit", "assignment",
       'assignment: "221 <domain> Service closing transmission channel"; RFC 5321 4.1.1.10')
def smtp_quit(kit):
    steps = dialogue(kit, "closed")
    reason = words(kit, "quit", 221, r"closing", "221 <domain> closing connection", steps)
    if not steps["closed"]:
        raise Fail("%s, but the connection stayed open %gs" % (reason, kit.timeout))
    return reason + ", then closed"


@check("smtp-unknown-user", "assignment", 'assignment: "550 No such user" on RCPT')
def smtp_unknown_user(kit):
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    s.expect("MAIL FROM: <%s>" % kit.sender, 250)
    r = s.cmd("RCPT TO: no-such-user-%s@%s" % (kit.token, kit.domain))
    s.quit()
    if r.code != 550:
        raise Fail("an unknown user got %s (expected 550)" % r)
    if "no such user" not in r.words():
        raise Fail("%s: not the assignment's words (550 No such user)" % r)
    return str(r)


def delivered(kit):
    """The assignment's example mail, if the dialogue delivered it:
    (where it was read, its lines)."""
    r = step(kit, "end")
    if r.code != 250:
        raise NotRun("not reached: the end of the data got %s" % r)
    return kit.stored(0, dialogue_tag(kit))


@check("delivery", "assignment",
       "assignment: the mail is appended to the user's mymailbox; read back over POP3")
def delivery(kit):
    n, msg = delivered(kit)
    user, domain = (re.escape(x.encode()) for x in kit.sender.split("@"))
    for field, pattern in (("From", rb"^from:\s*<?\s*%s\s*@\s*%s" % (user, domain)),
                           ("To", rb"^to:\s*<?\s*%s\s*@\s*%s" % (user, domain)),
                           ("Subject", rb"^subject:.*" + re.escape(kit.key(dialogue_tag(kit)).encode()))):
        if not any(re.match(pattern, line, re.I) for line in msg):
            raise Fail("%s has no %s: line as sent" % (n, field))
    if find_run(msg, BODY) < 0:
        raise Fail("%s lacks the body as sent (%s)" % (n, " / ".join(show(l) for l in BODY)))
    return "%s: From, To, Subject and the body as sent" % n


@check("received-line", "assignment", 'assignment: "Note the added Received line"; RFC 5321 4.4')
def received_line(kit):
    n, msg = delivered(kit)
    for line in unfold(msg):
        if line.lower().startswith(b"received:"):
            if re.search(rb"\d{1,2}\s*:\s*\d{2}", line):
                return "'%s'" % show(line)
            raise Fail("a Received line without a time: '%s'" % show(line))
    raise Fail("%s has no Received: line" % n)


BODY_DOT = [b"The next line is a single dot.", b".", b"The line after the dot."]


@check("dot-line", "assignment",
       'assignment: body lines survive; RFC 5321 4.5.2 and RFC 1939 3: a "." line travels as ".."')
def dot_line(kit):
    kit.send("dot-line", BODY_DOT, form="assignment")
    n, msg = kit.find(0, "dot-line")
    if find_run(msg, BODY_DOT) >= 0:
        return "a body line '.' came back as '.'"
    at = find_run(msg, BODY_DOT[:1])
    nxt = msg[at + 1] if 0 <= at < len(msg) - 1 else None
    if at < 0:
        raise Fail("RETR %d lacks the line before the '.' line" % n)
    if nxt == BODY_DOT[2]:
        raise Fail("the body line '.' was lost (RETR %d)" % n)
    if nxt is None:
        raise Fail("RETR %d ends at the body line '.' (not stuffed, or the message cut there)" % n)
    raise Fail("after the line before the dot, RETR %d has '%s' (expected '.')" % (n, show(nxt)))


@check("smtp-concurrent", "assignment",
       'assignment: "All servers ... are TCP concurrent servers"')
def smtp_concurrent(kit):
    first = SMTP(kit)
    try:
        first.expect("HELO " + HELO_NAME, 250)
        try:
            second = SMTP(kit)
        except Timeout:
            raise Fail("a second connection got no greeting within %gs while the first was "
                       "open: not a concurrent server" % kit.timeout) from None
        kit.transaction(second, "concurrent-2")
        second.quit()
        kit.transaction(first, "concurrent-1", helo=False)
    finally:
        first.quit()
    kit.stored(0, "concurrent-1")
    kit.stored(0, "concurrent-2")
    return "two sessions open at once, both delivered"


@check("pop-greeting", "assignment", 'assignment: "+OK POP3 server ready" (any +OK greeting)')
def pop_greeting(kit):
    p = POP3(kit)
    p.quit()
    return "'%s'" % show(p.greeting)


@check("pop-login", "assignment", 'assignment: "USER and PASS ... +OK"; RFC 1939 7')
def pop_login(kit):
    for i in range(len(kit.users)):
        p = kit.login(i, wait=0)
        p.ok("STAT")
        p.quit()
    return "USER/PASS +OK for %s" % ", ".join(u for u, _ in kit.users)


@check("pop-bad-login", "assignment",
       'assignment: "+OK or -ERR is returned as appropriate"; RFC 1939 7')
def pop_bad_login(kit):
    user = kit.users[0][0]
    for name, password in ((user, "wrong-" + kit.token), ("no-such-user-" + kit.token, "x")):
        p = POP3(kit)
        good, line = p.cmd("USER " + name)
        if good:
            good, line = p.cmd("PASS " + password)
        p.close()
        if good:
            raise Fail("USER %s with a wrong password got '%s'" % (name, show(line)))
    return "a wrong password and an unknown user both get -ERR"


@check("pop-quit-deletes", "assignment",
       'assignment: "When the client issues the QUIT command ... the messages are deleted"')
def pop_quit_deletes(kit):
    kit.send("quit-a", prereq=True)
    kit.send("quit-b", prereq=True)
    n, _ = kit.find(0, "quit-a")
    p = kit.login(0)
    p.ok("DELE %d" % n)
    good, line = p.quit()
    if not good:
        raise Fail("QUIT after DELE got '%s'" % show(line))
    if kit.fetch(0, "quit-a"):
        raise Fail("DELE %d and QUIT '%s', but the message is still there" % (n, show(line)))
    kit.find(0, "quit-b")
    return "DELE, QUIT '%s': gone; the other message kept" % show(line, 40)


@check("pop-goodbye", "assignment",
       'assignment: at QUIT the server "sends the message goodbye ... and closes the connection"')
def pop_goodbye(kit):
    p = kit.login(0)
    good, line = p.cmd("QUIT")
    closed = p.closes()
    rest = p.buf.decode("latin-1")
    p.close()
    if not good:
        raise Fail("QUIT got '%s'" % show(line))
    if "goodbye" not in (line + rest).lower():
        raise Fail("QUIT got '%s', without the word goodbye" % show(line))
    if not closed:
        raise Fail("QUIT got '%s', but the connection stayed open %gs" % (show(line), kit.timeout))
    return "'%s', then closed" % show(line)


@check("pop-lock", "assignment",
       'assignment: "the POP3 server ... acquires an exclusive-access lock"; RFC 1939 4: -ERR if not')
def pop_lock(kit):
    user, password = kit.users[0]
    first = kit.login(0)
    second = POP3(kit)
    try:
        good, line = second.cmd("USER " + user)
        if good:
            good, line = second.cmd("PASS " + password)
    except Timeout:
        raise Fail("a second session's login got no answer within %gs while the first holds "
                   "the mailbox (RFC 1939: -ERR at once)" % kit.timeout) from None
    finally:
        second.close()
    if good:
        raise Fail("a second session of %s got '%s' while the first holds the mailbox"
                   % (user, show(line)))
    first.ok("STAT")
    good, quit_line = first.quit()
    if not good:
        raise Fail("the first session's QUIT got '%s'" % show(quit_line))
    kit.login(0).quit()
    return "the second session got '%s'; free again after QUIT" % show(line, 50)


@check("pop-concurrent", "assignment",
       'assignment: "multiple users connecting to the same mail server to access their mailboxes"')
def pop_concurrent(kit):
    kit.need_users(2)
    first = kit.login(0)
    try:
        try:
            second = kit.login(1)
        except Timeout:
            raise Fail("a second user's session got no answer within %gs while the first was "
                       "open: not a concurrent server" % kit.timeout) from None
        second.ok("STAT")
        second.quit()
        first.ok("STAT")
    finally:
        first.quit()
    return "two users' sessions open at once"


# ---- rfc: RFC 5321

@check("smtp-rfc-syntax", "rfc", 'RFC 5321 4.1.2: "MAIL FROM:<path>", "RCPT TO:<path>"')
def smtp_rfc_syntax(kit):
    kit.send("rfc-syntax")
    n, msg = kit.stored(0, "rfc-syntax")
    if find_run(msg, BODY) < 0:
        raise Fail("%s lacks the body as sent" % n)
    return "MAIL FROM:<...>, RCPT TO:<...>: delivered"


@check("smtp-sequence", "rfc",
       "RFC 5321 3.3 and 4.1.4: RCPT before MAIL gets 503; DATA before RCPT gets 503 or 554")
def smtp_sequence(kit):
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    seen = [s.expect("RCPT TO:<%s>" % kit.addr(0), 503)]
    seen.append(s.expect("DATA", 503, 554))
    s.expect("MAIL FROM:<%s>" % kit.sender, 250)
    seen.append(s.expect("DATA", 503, 554))
    s.expect("RSET", 250)
    s.quit()
    return "RCPT, DATA, DATA: %s" % ", ".join(str(r.code) for r in seen)


@check("smtp-unknown-command", "rfc", "RFC 5321 4.2.4: an unrecognised command gets 500")
def smtp_unknown_command(kit):
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    r = s.expect("FROBNICATE now", 500, 502)
    s.expect("RSET", 250)
    s.quit()
    return str(r)


@check("smtp-rset", "rfc", "RFC 5321 4.1.1.5: RSET aborts the transaction, 250")
def smtp_rset(kit):
    s = SMTP(kit)
    try:
        s.expect("HELO " + HELO_NAME, 250)
        s.expect("MAIL FROM:<%s>" % kit.sender, 250)
        s.expect("RCPT TO:<%s>" % kit.addr(0), 250)
        r = s.expect("RSET", 250)
        after = s.cmd("DATA")
        if after.code not in (503, 554):
            raise Fail("DATA after RSET got %s (the transaction was not cleared)" % after)
        kit.transaction(s, "rset", helo=False)
    finally:
        s.quit()
    kit.stored(0, "rset")
    return "%s; DATA after it %s; a new transaction delivered" % (r, after)


@check("smtp-noop", "rfc", "RFC 5321 4.1.1.9: NOOP gets 250")
def smtp_noop(kit):
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    r = s.expect("NOOP", 250)
    s.quit()
    return str(r)


@check("smtp-case", "rfc", "RFC 5321 2.4: verbs are not case sensitive")
def smtp_case(kit):
    s = SMTP(kit)
    try:
        kit.transaction(s, "case", form="lower")
    finally:
        s.quit()
    kit.stored(0, "case")
    return "helo, mail from:, rcpt to:, data: delivered"


@check("smtp-two-messages", "rfc", "RFC 5321 3.3: several transactions in one session")
def smtp_two_messages(kit):
    s = SMTP(kit)
    try:
        kit.transaction(s, "two-1")
        kit.transaction(s, "two-2", helo=False)
    finally:
        s.quit()
    kit.stored(0, "two-1")
    kit.stored(0, "two-2")
    return "both delivered"


@check("smtp-two-recipients", "rfc", "RFC 5321 3.3: one message, several RCPTs")
def smtp_two_recipients(kit):
    kit.need_users(2)
    kit.send("two-rcpt", to=(0, 1))
    kit.stored(0, "two-rcpt")
    kit.stored(1, "two-rcpt")
    return "in both mailboxes"


@check("smtp-250-stored", "rfc",
       "RFC 5321 6.1: with 250 the server takes responsibility: the mail is stored before QUIT")
def smtp_250_stored(kit):
    s = SMTP(kit)
    try:
        r = kit.transaction(s, "stored")
        try:
            kit.stored(0, "stored")
        except NotRun:
            raise
        except Fail as e:
            s.quit()
            late = " (it is there after QUIT)" if kit.fetch(0, "stored") else ""
            raise Fail("%s, but %gs later, the session still open: %s%s"
                       % (r, kit.grace, e, late)) from None
    finally:
        s.close()
    return "in the mailbox while the session is still open"


BODY_DOTS = [b".leading dot", b"..two leading dots", b"no dot"]


def dots(kit, prereq=False):
    """The message with lines starting with "." (sent once), as POP3 gives
    it back. prereq: for a POP3 check, a mail SMTP did not take makes it
    not run."""
    def send():
        kit.send("dots", BODY_DOTS, keep=True)
        return True
    try:
        kit.once("dots", send)
    except NotRun:
        raise
    except Fail as e:
        if prereq:
            raise NotRun("not reached: the mail could not be sent: %s" % e) from None
        raise
    return kit.find(0, "dots")


@check("smtp-dot-unstuff", "rfc", 'RFC 5321 4.5.2: the server removes the leading "." it was sent')
def smtp_dot_unstuff(kit):
    n, msg = dots(kit)
    if find_run(msg, [b"." + l for l in BODY_DOTS[:2]]) >= 0:
        raise Fail("'..leading dot' came back: SMTP kept the stuffing dot (RETR %d)" % n)
    if find_run(msg, BODY_DOTS) < 0 and find_run(msg, [l[1:] for l in BODY_DOTS[:2]]) < 0:
        raise Fail("RETR %d lacks the lines that start with '.'" % n)
    return "'..leading dot' stored as '.leading dot'"


@check("pop-dot-stuff", "rfc", 'RFC 1939 3: a line starting with "." is byte-stuffed in RETR')
def pop_dot_stuff(kit):
    n, msg = dots(kit, prereq=True)
    if find_run(msg, [l[1:] for l in BODY_DOTS[:2]]) >= 0:
        raise Fail("RETR %d sent '.leading dot' unstuffed: the client sees 'leading dot'" % n)
    if find_run(msg, BODY_DOTS) < 0 and find_run(msg, [b"." + l for l in BODY_DOTS[:2]]) < 0:
        raise Fail("RETR %d lacks the lines that start with '.'" % n)
    return "'.leading dot' sent as '..leading dot'"


@check("smtp-crlf", "rfc", "RFC 5321 4.2: every reply line ends in CRLF")
def smtp_crlf(kit):
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    s.expect("MAIL FROM:<%s>" % kit.sender, 250)
    s.expect("RSET", 250)
    s.cmd("QUIT")
    s.close()
    if s.bare_lf or "nocrlf" in s.defects:
        raise Fail("replies lack CRLF: a reply line ended in %s"
                   % ("a bare LF" if s.bare_lf else "no line end (silence, or the close)"))
    return "greeting, HELO, MAIL, RSET, QUIT: CRLF"


@check("pop-crlf", "rfc", "RFC 1939 3: responses and their lines end in CRLF")
def pop_crlf(kit):
    kit.send("crlf", prereq=True)
    n, _ = kit.find(0, "crlf")
    p = kit.login(0)
    p.ok("STAT")
    p.listing()
    p.retr(n)
    p.quit()
    if p.bare_lf or "nocrlf" in p.defects:
        raise Fail("replies lack CRLF: a line ended in %s (greeting, USER, PASS, STAT, LIST or "
                   "RETR)" % ("a bare LF" if p.bare_lf else "no line end"))
    return "greeting, USER, PASS, STAT, LIST, RETR, QUIT: CRLF"


def short_sessions(kit):
    """A short SMTP and a short POP3 session (each as far as it gets), for
    the checks of how replies are written: the connections."""
    conns = []
    try:
        s = SMTP(kit)
        conns.append(s)
        s.cmd("HELO " + HELO_NAME)
        s.cmd("MAIL FROM:<%s>" % kit.sender)
        s.cmd("RSET")
        s.cmd("QUIT")
    except Fail:
        pass
    try:
        p = kit.login(0)
        conns.append(p)
        p.cmd("STAT")
        p.cmd("QUIT")
    except Fail:
        pass
    for c in conns:
        c.close()
    if not conns:
        raise NotRun("not reached: neither server could be talked to")
    return conns


@check("reply-nul", "rfc", "RFC 5321 4.2 and RFC 1939 3: replies are lines of text, "
       "without NUL bytes (send() of the whole buffer)")
def reply_nul(kit):
    bad = [c for c in short_sessions(kit) if "nul" in c.defects]
    if bad:
        raise Fail("replies carry NUL bytes (%s)" % ", ".join(type(c).__name__ for c in bad))
    return "no NUL byte around the replies"


@check("smtp-reply-space", "rfc", "RFC 5321 4.2: a reply is the code, a space (or a hyphen), "
       "then the text")
def smtp_reply_space(kit):
    s = SMTP(kit)
    seen = [s.greeting, s.cmd("HELO " + HELO_NAME), s.cmd("MAIL FROM:<%s>" % kit.sender),
            s.cmd("RSET")]
    s.quit()
    for r in seen:
        for line in r.lines:
            if line[3:4] not in ("", " ", "-"):
                raise Fail("no space after the code: '%s'" % show(line))
    return "greeting, HELO, MAIL, RSET: the code, then a space"


@check("pop-multiline-end", "rfc", 'RFC 1939 3: a multi-line response ends with a "." line')
def pop_multiline_end(kit):
    kit.send("multiline-end", prereq=True)
    n, _ = kit.find(0, "multiline-end")
    p = kit.login(0)
    p.listing()
    listing_ends = "noend" not in p.defects
    p.retr(n)
    p.quit()
    if "noend" in p.defects:
        raise Fail("%s never ends with a '.' line (silence after its last line)"
                   % ("RETR %d" % n if listing_ends else "LIST"))
    return "LIST and RETR %d end with '.'" % n


# ---- rfc: RFC 1939

@check("pop-sequence", "rfc",
       "RFC 1939 3-4: a command not valid in the state gets -ERR (STAT, PASS first; USER later)")
def pop_sequence(kit):
    user, password = kit.users[0]
    p = POP3(kit)
    p.err("STAT", "STAT before login")
    p.err("PASS " + password, "PASS before USER")
    p.ok("USER " + user)
    p.ok("PASS " + password)
    p.err("USER " + user, "USER after login")
    p.ok("STAT")
    p.quit()
    return "STAT and PASS before USER, USER after login: -ERR; the session goes on"


@check("pop-bad-number", "rfc", "RFC 1939 5: a message number that does not exist gets -ERR")
def pop_bad_number(kit):
    p = kit.login(0)
    for text in ("RETR 0", "RETR 999999", "LIST 999999", "DELE 999999", "RETR x"):
        p.err(text, "no such message")
    p.ok("STAT")
    p.quit()
    return "RETR 0, RETR/LIST/DELE 999999, RETR x: -ERR"


@check("pop-stat", "rfc", 'RFC 1939 5: STAT is "+OK count octets", as LIST adds up')
def pop_stat(kit):
    kit.send("stat", prereq=True)
    kit.find(0, "stat")
    p = kit.login(0)
    line = p.ok("STAT")
    listing = p.listing()
    p.quit()
    m = re.match(r"\+OK (\d+) (\d+)", line)
    if not m:
        raise Fail("STAT got '%s' (not '+OK count octets')" % show(line))
    count, octets = int(m.group(1)), int(m.group(2))
    if "listform" in p.defects:
        octets = sum(s for _, s in listing)     # pop-list-size reports LIST's form
    if (count, octets) != (len(listing), sum(s for _, s in listing)):
        raise Fail("STAT says %d messages, %d octets; LIST %d messages, %d octets"
                   % (count, octets, len(listing), sum(s for _, s in listing)))
    return "'%s' matches LIST" % show(line)


@check("pop-list-size", "rfc", "RFC 1939 5: LIST gives each message's exact size, as RETR sends it")
def pop_list_size(kit):
    dots(kit, prereq=True)
    p = kit.login(0)
    listing = p.listing()
    if not listing:
        p.quit()
        raise Fail("LIST shows no message")
    if "listform" in p.defects:
        p.quit()
        raise Fail("LIST lines are not 'n size': '%s'" % show(p.listform))
    for n, size in listing:
        lines = p.retr(n)
        octets = sum(len(l) + 2 for l in lines)
        stuffed = octets + sum(1 for l in lines if l.startswith(b"."))
        if size not in (octets, stuffed):
            p.quit()
            raise Fail("LIST says message %d has %d octets; RETR sent %d (CRLF counted)"
                       % (n, size, octets))
        one = p.ok("LIST %d" % n)
        if not re.match(r"\+OK %d %d\b" % (n, size), one):
            p.quit()
            raise Fail("'LIST %d' got '%s'; the listing says '%d %d'" % (n, show(one), n, size))
    p.quit()
    return "%d messages: LIST, LIST n and RETR agree" % len(listing)


@check("pop-uidl", "rfc", "RFC 1939 7 (optional): UIDL ids unique, the same in every session")
def pop_uidl(kit):
    kit.send("uidl-a", prereq=True)
    kit.send("uidl-b", prereq=True)
    na, _ = kit.find(0, "uidl-a")
    nb, _ = kit.find(0, "uidl-b")
    p = kit.login(0)
    good, line = p.cmd("UIDL")
    if not good:
        p.quit()
        raise Skip("UIDL not offered: '%s'" % show(line))
    ids = uidl_map(p)
    p.quit()
    if len(set(ids.values())) != len(ids):
        raise Fail("UIDL gives the same id to two messages")
    for n, uid in ids.items():
        if not re.fullmatch(rb"[\x21-\x7e]{1,70}", uid):
            raise Fail("message %d's id '%s' is not 1-70 characters 0x21-0x7E" % (n, show(uid)))
    p = kit.login(0)
    again = uidl_map(p, ok=True)
    p.ok("DELE %d" % na)
    p.quit()
    if again != ids:
        raise Fail("the ids changed between two sessions")
    p = kit.login(0)
    after = uidl_map(p, ok=True)
    p.quit()
    if ids[nb] not in after.values():
        raise Fail("message %d's id changed when another message was deleted" % nb)
    return "%d ids, stable across sessions and a deletion" % len(ids)


def uidl_map(p, ok=False):
    if ok:
        p.ok("UIDL")
    out = {}
    for line in p.multi("in the UIDL listing"):
        m = re.match(rb"(\d+) (\S+)$", line)
        if not m:
            raise Fail("a UIDL line that is not 'n id': '%s'" % show(line))
        out[int(m.group(1))] = m.group(2)
    return out


@check("pop-dele", "rfc",
       "RFC 1939 5: DELE marks; the number stays taken (-ERR), other numbers unchanged, STAT less one")
def pop_dele(kit):
    kit.send("dele-a", prereq=True)
    kit.send("dele-b", prereq=True)
    na, _ = kit.find(0, "dele-a")
    nb, _ = kit.find(0, "dele-b")
    p = kit.login(0)
    before = p.ok("STAT").split()
    size_b = p.ok("LIST %d" % nb)
    p.ok("DELE %d" % na)
    after = p.ok("STAT").split()
    for text in ("LIST %d" % na, "RETR %d" % na, "DELE %d" % na):
        p.err(text, "the message is marked as deleted")
    if p.ok("LIST %d" % nb) != size_b:
        raise Fail("message %d's LIST line changed after DELE %d" % (nb, na))
    p.quit()
    if len(before) < 2 or len(after) < 2 or not (before[1].isdigit() and after[1].isdigit()) \
            or int(after[1]) != int(before[1]) - 1:
        raise Fail("STAT before DELE '%s', after '%s' (one fewer expected)"
                   % (" ".join(before), " ".join(after)))
    return "marked: LIST/RETR/DELE of it -ERR, STAT one fewer, the others unchanged"


@check("pop-rset", "rfc", "RFC 1939 5: RSET unmarks; nothing is deleted at QUIT")
def pop_rset(kit):
    kit.send("rset", prereq=True)
    n, _ = kit.find(0, "rset")
    p = kit.login(0)
    p.ok("DELE %d" % n)
    line = p.ok("RSET")
    p.ok("LIST %d" % n)
    good, quit_line = p.quit()
    if not good:
        raise Fail("QUIT got '%s'" % show(quit_line))
    if not kit.fetch(0, "rset"):
        raise Fail("DELE %d, RSET '%s', QUIT: the message is gone" % (n, show(line)))
    return "DELE, RSET, QUIT: kept"


@check("pop-drop-keeps", "rfc",
       "RFC 1939 6: a session that ends without QUIT does not enter UPDATE: nothing deleted")
def pop_drop_keeps(kit):
    kit.send("drop", prereq=True)
    n, _ = kit.find(0, "drop")
    p = kit.login(0)
    p.ok("DELE %d" % n)
    p.close()
    try:
        q = kit.login(0)
    except Fail as e:
        raise Fail("after a dropped session: %s" % e) from None
    found = kit.fetch(0, "drop", p=q)
    q.quit()
    if not found:
        raise Fail("DELE %d, then the connection dropped without QUIT: the message is gone" % n)
    return "DELE, then a dropped connection: kept"


@check("pop-noop", "rfc", "RFC 1939 5: NOOP gets +OK")
def pop_noop(kit):
    p = kit.login(0)
    line = p.ok("NOOP")
    p.quit()
    return "'%s'" % show(line)


@check("pop-case", "rfc", "RFC 1939 3: keywords are case-insensitive")
def pop_case(kit):
    user, password = kit.users[0]
    p = POP3(kit)
    p.ok("user " + user)
    p.ok("pass " + password)
    line = p.ok("stat")
    p.listing()
    p.ok("Noop")
    p.cmd("quit")
    p.close()
    return "user, pass, stat, Noop: '%s'" % show(line, 30)


@check("pop-quit-auth", "rfc", "RFC 1939 4: QUIT before login gets +OK and the connection closes")
def pop_quit_auth(kit):
    p = POP3(kit)
    line = p.ok("QUIT")
    closed = p.closes()
    p.close()
    if not closed:
        raise Fail("QUIT got '%s', but the connection stayed open" % show(line))
    return "'%s', then closed" % show(line)


# ---- robust

@check("smtp-long-line", "robust",
       "RFC 5321 4.5.3.1.4: a 5000-octet command line: one reply, the session stays in step")
def smtp_long_line(kit):
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    r = s.cmd("MAIL FROM:<%s@%s>" % ("x" * 5000, kit.domain))
    try:
        after = s.cmd("RSET")
    except Closed:
        s.close()
        if r.code < 400:
            raise Fail("the long line got %s, then the server closed the connection" % r) from None
        SMTP(kit).quit()
        return "%s, then closed; a new session works" % r
    s.quit()
    if after.code != 250:
        raise Fail("the long line got %s, then RSET got %s: it was read as several commands"
                   % (r, after))
    return "%s; RSET then 250" % r


@check("smtp-long-data-line", "robust",
       "RFC 5321 4.5.3.1.6: a 10000-octet data line is delivered whole or the mail refused")
def smtp_long_data_line(kit):
    long_line = b"long " + b"0123456789" * 1000
    r = kit.send("long-data", [long_line, b"end"], accept=range(200, 600))
    if r.code != 250:
        return "refused: %s" % r
    n, msg = kit.stored(0, "long-data")
    if find_run(msg, [long_line, b"end"]) < 0:
        lengths = ", ".join(str(len(l)) for l in msg[-4:])
        raise Fail("250, but the long line came back changed (last line lengths %s)" % lengths)
    return "delivered whole"


@check("pop-long-line", "robust",
       "RFC 2449 4: a 3000-octet command line: one -ERR, the session stays in step")
def pop_long_line(kit):
    p = kit.login(0)
    p.cmd("LIST " + "9" * 3000)
    try:
        line = p.ok("STAT")
    except Closed:
        p.close()
        kit.login(0).quit()
        return "closed after the long line; a new session works"
    p.quit()
    if not re.match(r"\+OK \d+ \d+", line):
        raise Fail("STAT after the long line got '%s': out of step" % show(line))
    return "answered once; STAT then '%s'" % show(line, 30)


def delivered_exactly(kit, tag, body, what):
    r = kit.send(tag, body, accept=range(200, 600))
    if r.code != 250:
        return "refused: %s" % r
    n, msg = kit.stored(0, tag)
    if find_run(msg, body) < 0:
        raise Fail("250, but the %s came back changed in %s" % (what, n))
    return "delivered byte for byte"


@check("smtp-8bit", "robust", "RFC 6152: 8-bit text is delivered as sent (or the mail refused)")
def smtp_8bit(kit):
    body = ["caf\u00e9 na\u00efve \u20ac \u00fc".encode("utf-8"), bytes(range(0x80, 0x100))]
    return delivered_exactly(kit, "8bit", body, "8-bit lines")


@check("smtp-nul", "robust", "RFC 5321 4.1.1.4: a NUL byte in the data is kept (or the mail refused)")
def smtp_nul(kit):
    return delivered_exactly(kit, "nul", [b"before a NUL \x00 after it", b"end"], "line with a NUL")


@check("smtp-pipelining", "robust",
       "RFC 5321 2.1 and RFC 2920: commands sent in one write are each answered, in order")
def smtp_pipelining(kit):
    s = SMTP(kit)
    try:
        s.send(("HELO %s\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                % (HELO_NAME, kit.sender, kit.addr(0))).encode())
        codes = [s.reply("to a pipelined command").code for _ in range(4)]
        if codes != [250, 250, 250, 354]:
            raise Fail("HELO, MAIL, RCPT, DATA in one write got %s" % codes)
        kit.sent.add((0, "pipelining"))
        s.send(stuff(kit.message("pipelining", BODY)) + b"QUIT\r\n")
        codes += [s.reply("to the pipelined end of data").code, s.reply("to QUIT").code]
        if codes[4:] != [250, 221]:
            raise Fail("the data and QUIT in one write got %s" % codes[4:])
    finally:
        s.close()
    kit.stored(0, "pipelining")
    return "250 250 250 354, then 250 221; delivered"


@check("pop-pipelining", "robust", "RFC 2449 6.6: commands sent in one write are each answered")
def pop_pipelining(kit):
    user, password = kit.users[0]
    p = POP3(kit)
    p.send(("USER %s\r\nPASS %s\r\nSTAT\r\nNOOP\r\nQUIT\r\n" % (user, password)).encode())
    lines = [p.status("to a pipelined command") for _ in range(5)]
    p.close()
    if not all(good for good, _ in lines) or not re.match(r"\+OK \d+ \d+", lines[2][1]):
        raise Fail("USER, PASS, STAT, NOOP, QUIT in one write got %s"
                   % " / ".join(show(line, 30) for _, line in lines))
    return "five +OK in order"


SMUGGLING = [("lf-dot-lf", b"\n.\n"), ("lf-dot-crlf", b"\n.\r\n"), ("crlf-dot-lf", b"\r\n.\n"),
             ("cr-dot-cr", b"\r.\r"), ("cr-dot-crlf", b"\r.\r\n")]


def smuggling(kit, name, fake):
    """Data with a fake end followed by commands, then the real end and QUIT
    in one write: one reply to the data, then 221 (or a refusal and a close)."""
    tag = "smuggle-" + name
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    s.expect("MAIL FROM:<%s>" % kit.sender, 250)
    s.expect("RCPT TO:<%s>" % kit.addr(0), 250)
    s.expect("DATA", 354)
    kit.sent.add((0, tag))
    head = stuff(kit.message(tag, []))[:-3]
    s.send(head + b"before the fake end" + fake + b"RSET\r\nMAIL FROM:<smuggled@example.org>\r\n"
           b"after the fake end\r\n.\r\nQUIT\r\n")
    replies, closed = [], False
    while len(replies) < 10:
        try:
            replies.append(s.reply("to the data"))
        except Closed:
            closed = True
            break
        except Timeout:
            break
        if replies[-1].code == 221:
            break
    s.close()
    codes = [r.code for r in replies]
    shown = fake.decode().replace("\r", "<CR>").replace("\n", "<LF>")
    if not replies:
        raise Fail("no reply to the data within %gs" % kit.timeout)
    if len(codes) > 2 or (len(codes) == 2 and codes[1] != 221) or \
            (len(codes) == 1 and not (closed and codes[0] >= 400)):
        raise Fail("%s ended the data: replies %s (the commands after it ran)"
                   % (shown, " ".join(map(str, codes))))
    if codes[0] != 250:
        return "refused: %s" % replies[0]
    n, msg = kit.find(0, tag, strict=True)
    if not any(b"after the fake end" in line for line in msg):
        raise Fail("250, but RETR %d lacks the text after %s: the message was cut there" % (n, shown))
    return "%s kept inside the message" % shown


def register_smuggling(name, fake):
    shown = fake.decode().replace("\r", "<CR>").replace("\n", "<LF>")
    check("smuggle-" + name, "robust",
          "RFC 5321 4.1.1.4 and 2.3.8: only <CRLF>.<CRLF> ends the data, not %s" % shown)(
        lambda kit: smuggling(kit, name, fake))


for _name, _fake in SMUGGLING:
    register_smuggling(_name, _fake)


@check("smtp-drop-mid-data", "robust",
       "RFC 5321 3.8: a connection lost inside DATA aborts the transaction: nothing stored")
def smtp_drop_mid_data(kit):
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    s.expect("MAIL FROM:<%s>" % kit.sender, 250)
    s.expect("RCPT TO:<%s>" % kit.addr(0), 250)
    s.expect("DATA", 354)
    kit.sent.add((0, "dropped"))
    s.send(stuff(kit.message("dropped", [b"a message cut short"]))[:-3])
    s.close()
    time.sleep(kit.grace)
    if kit.spool and kit.spooled(0, "dropped") is not None:
        raise Fail("the client vanished inside DATA, yet the message is in the mailbox file")
    found = kit.fetch(0, "dropped") if not kit.spool else []
    if found:
        raise Fail("the client vanished inside DATA, yet message %d was stored" % found[0][0])
    return "nothing stored %gs later" % kit.grace


@check("smtp-many-senders", "robust",
       "assignment: concurrent servers; every one of --senders (20) sessions at once is delivered")
def smtp_many_senders(kit):
    count = kit.senders
    wait = max(2 * kit.timeout, 10)
    barrier = threading.Barrier(count, timeout=wait)
    errors = []

    def sender(k):
        try:
            s = SMTP(kit)
            barrier.wait()
            kit.transaction(s, "many-%d" % k, to=(k % len(kit.users),))
            s.quit()
        except (Fail, threading.BrokenBarrierError) as e:
            errors.append("sender %d: %s" % (k, str(e) or "not all %d greeted within %gs"
                                             % (count, wait)))

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(wait + kit.timeout * 6)
    if errors:
        raise Fail("%d of %d failed; %s" % (len(errors), count, sorted(errors)[0]))
    for i in range(min(count, len(kit.users))):
        keys = [line for _, msg in kit.mailbox(i) for line in msg
                if line.lower().startswith(b"subject:")]
        for k in range(i, count, len(kit.users)):
            times = sum(1 for line in keys if kit.key("many-%d" % k).encode() in line)
            if times != 1:
                raise Fail("sender %d's message is in the mailbox %d times" % (k, times))
    return "%d sessions at once: each message stored once" % count


# ---- extra

def ehlo(kit):
    """EHLO once: (reply, {keyword: parameters})."""
    def run():
        s = SMTP(kit)
        r = s.cmd("EHLO " + HELO_NAME)
        s.quit()
        if r.code != 250:
            raise Fail("EHLO got %s" % r)
        ext = {}
        for line in r.lines[1:]:
            parts = line[4:].split()
            if parts:
                ext[parts[0].upper()] = parts[1:]
        return r, ext
    return kit.once("ehlo", run)


def extension(kit, name):
    try:
        _, ext = ehlo(kit)
    except Fail as e:
        raise Skip("no EHLO, so no %s: %s" % (name, e)) from None
    if name not in ext:
        raise Skip("EHLO does not offer %s" % name)
    return ext[name]


@check("smtp-ehlo", "extra", "RFC 5321 4.1.1.1: EHLO gets 250 and the extensions")
def smtp_ehlo(kit):
    r, ext = ehlo(kit)
    return "%s; extensions: %s" % (r.code, " ".join(sorted(ext)) or "none")


@check("smtp-size", "extra", "RFC 1870 6.1: MAIL with SIZE= over the limit gets 552")
def smtp_size(kit):
    params = extension(kit, "SIZE")
    if not params or not params[0].isdigit() or int(params[0]) == 0:
        raise Skip("SIZE offered without a limit")
    s = SMTP(kit)
    s.expect("EHLO " + HELO_NAME, 250)
    r = s.expect("MAIL FROM:<%s> SIZE=%d" % (kit.sender, int(params[0]) + 1), 552)
    s.quit()
    return "SIZE %s: %s" % (params[0], r)


@check("smtp-enhanced-codes", "extra",
       "RFC 2034 3: after EHLO the replies carry RFC 3463 codes of the reply's class")
def smtp_enhanced_codes(kit):
    extension(kit, "ENHANCEDSTATUSCODES")
    s = SMTP(kit)
    s.expect("EHLO " + HELO_NAME, 250)
    seen = [s.cmd("MAIL FROM:<%s>" % kit.sender), s.cmd("RCPT TO:<%s>" % kit.addr(0)),
            s.cmd("RCPT TO:<no-such-user-%s@%s>" % (kit.token, kit.domain)), s.cmd("RSET"),
            s.cmd("QUIT")]
    s.close()
    for r in seen:
        if not re.match(r"\d{3}[ -]%s\.\d{1,3}\.\d{1,3}( |$)" % str(r.code)[0], r.lines[-1]):
            raise Fail("%s carries no status code of its class" % r)
    return "MAIL, RCPT, RCPT unknown, RSET, QUIT: codes %s" % " ".join(
        r.lines[-1][4:].split()[0] for r in seen)


@check("smtp-8bitmime", "extra", "RFC 6152: MAIL ... BODY=8BITMIME, the 8-bit mail delivered")
def smtp_8bitmime(kit):
    extension(kit, "8BITMIME")
    body = ["8BITMIME caf\u00e9 \u20ac".encode("utf-8")]
    s = SMTP(kit)
    try:
        s.expect("EHLO " + HELO_NAME, 250)
        s.expect("MAIL FROM:<%s> BODY=8BITMIME" % kit.sender, 250)
        s.expect("RCPT TO:<%s>" % kit.addr(0), 250)
        s.expect("DATA", 354)
        kit.sent.add((0, "8bitmime"))
        s.send(stuff(kit.message("8bitmime", body)))
        r = s.reply("to the end of the data")
        if r.code != 250:
            raise Fail("the end of the data got %s" % r)
    finally:
        s.quit()
    n, msg = kit.find(0, "8bitmime")
    if find_run(msg, body) < 0:
        raise Fail("the 8-bit line came back changed in RETR %d" % n)
    return "BODY=8BITMIME accepted, delivered byte for byte"


@check("smtp-vrfy", "extra", "RFC 5321 4.5.1 and 3.5.3: VRFY gets 250, 251 or 252")
def smtp_vrfy(kit):
    s = SMTP(kit)
    s.expect("HELO " + HELO_NAME, 250)
    r = s.expect("VRFY " + kit.users[0][0], 250, 251, 252)
    s.quit()
    return str(r)


@check("smtp-auth", "extra", "RFC 4954 (if offered): AUTH PLAIN 235 with the password, 535 without")
def smtp_auth(kit):
    mechanisms = [m.upper() for m in extension(kit, "AUTH")]
    if "PLAIN" not in mechanisms:
        raise Skip("AUTH without PLAIN: %s" % " ".join(mechanisms))
    user, password = kit.users[0]
    seen = []
    for pw, code in ((password, 235), ("wrong-" + kit.token, 535)):
        s = SMTP(kit)
        s.expect("EHLO " + HELO_NAME, 250)
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        seen.append(s.expect("AUTH PLAIN " + token, code))
        s.quit()
    return "%s; wrong password %s" % tuple(seen)


def capa(kit):
    def run():
        p = POP3(kit)
        good, line = p.cmd("CAPA")
        if not good:
            p.quit()
            raise Fail("CAPA got '%s'" % show(line))
        caps = [c.decode("latin-1") for c in p.multi("in the CAPA list")]
        p.quit()
        return caps
    return kit.once("capa", run)


@check("pop-capa", "extra", "RFC 2449 5: CAPA lists the capabilities")
def pop_capa(kit):
    return "; ".join(capa(kit))


@check("pop-top", "extra", "RFC 1939 7: TOP n k: the headers, the empty line, k body lines")
def pop_top(kit):
    kit.send("top", [b"first body line", b"second body line"], prereq=True)
    n, full = kit.find(0, "top")
    if b"" not in full:
        raise Fail("RETR %d has no empty line after the headers" % n)
    head = full.index(b"") + 1
    p = kit.login(0)
    good, line = p.cmd("TOP %d 0" % n)
    if not good:
        p.quit()
        raise Fail("TOP %d 0 got '%s'" % (n, show(line)))
    top0 = p.multi("in TOP")
    p.ok("TOP %d 1" % n)
    top1 = p.multi("in TOP")
    p.quit()
    if top0 != full[:head] or top1 != full[:head + 1]:
        raise Fail("TOP %d 0 gave %d lines, TOP %d 1 %d; the headers and the empty line are %d"
                   % (n, len(top0), n, len(top1), head))
    return "TOP n 0 and TOP n 1 as RETR's first %d and %d lines" % (head, head + 1)


@check("pop-auth", "extra", "RFC 5034 (if offered): AUTH PLAIN gets +OK")
def pop_auth(kit):
    try:
        caps = capa(kit)
    except Fail as e:
        raise Skip("no CAPA, so no SASL: %s" % e) from None
    sasl = [c for c in caps if c.upper().startswith("SASL")]
    if not sasl or "PLAIN" not in sasl[0].upper().split():
        raise Skip("CAPA offers no SASL PLAIN")
    user, password = kit.users[0]
    p = POP3(kit)
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    line = p.ok("AUTH PLAIN " + token)
    p.ok("STAT")
    p.quit()
    return "'%s'" % show(line)


# ---- client: the mailclient on a pseudo-terminal

class Terminal:
    """The client under test on a pseudo-terminal; every wait is bounded."""

    def __init__(self, argv, timeout, cwd, settle):
        self.master, slave = os.openpty()
        try:
            self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                         cwd=cwd, start_new_session=True)
        except OSError as e:
            os.close(self.master)
            raise Fail("cannot start %s: %s" % (argv[0], e.strerror or e)) from None
        finally:
            os.close(slave)
        self.timeout, self.quiet = timeout, settle
        self.out = b""
        self.mark = 0          # expect() looks at the output after this

    def pump(self, wait):
        """Read what is there: True if some came, None if none, False at the end."""
        ready, _, _ = select.select([self.master], [], [], max(0, wait))
        if not ready:
            return None
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            chunk = b""
        self.out += chunk
        if len(self.out) > MAX_SCREEN:
            raise Fail("the client printed over %d octets (a loop?)" % MAX_SCREEN)
        return bool(chunk)

    def text(self, start=None):
        """The output since the mark, line ends as "\\n"."""
        out = self.out[self.mark if start is None else start:]
        return out.decode("utf-8", "replace").replace("\r\n", "\n")

    def tail(self):
        return show(self.text()[-160:].replace("\n", " | "), 160)

    def expect(self, pattern, what):
        """Wait until pattern (a regex, any case) shows after the mark."""
        rx = re.compile(pattern, re.I)
        deadline = time.monotonic() + self.timeout
        while True:
            m = rx.search(self.text())
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("%s: not shown within %gs; the client showed: %s"
                              % (what, self.timeout, self.tail()))
            if self.pump(min(left, 0.2)) is False:
                m = rx.search(self.text())
                if m:
                    return m
                self.proc.poll()
                raise Closed("%s: the client ended (status %s); it showed: %s"
                             % (what, self.proc.returncode, self.tail()))

    def settle(self):
        """Read until the client has been silent for a while (--settle)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            got = self.pump(self.quiet)
            if not got:
                return

    def type(self, *lines):
        """Type lines (each with Enter); the mark moves to here first, so
        that what expect() sees next is the answer, after the echo."""
        self.settle()
        self.mark = len(self.out)
        for line in lines:
            data = line.encode("utf-8") + b"\n"
            while data:
                _, ready, _ = select.select([], [self.master], [], self.timeout)
                if not ready:
                    raise Timeout("the client does not read its input")
                data = data[os.write(self.master, data):]
                self.pump(0)

    def close(self):
        try:
            os.killpg(self.proc.pid, 9)     # its group: it has a session of its own
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        os.close(self.master)


def client_check(name, source):
    """A step of the one client session, in order; a step that leaves the
    client in an unknown state stops the steps after it."""
    def register(fn):
        def run(kit):
            if kit.client_state.get("broken"):
                raise NotRun("not reached: %s failed" % kit.client_state["broken"])
            try:
                return fn(kit, kit.terminal)
            except Fail as e:
                if not getattr(e, "soft", False) and not isinstance(e, NotRun):
                    kit.client_state["broken"] = name
                raise
        return check(name, "client", source)(run)
    return register


def soft(reason):
    """A failure after which the client is back in a known state."""
    e = Fail(reason)
    e.soft = True
    return e


def client_user(kit):
    return len(kit.users) - 1


def back_to_menu(t, what):
    t.expect(MENU_RE, what + ", then the menu again")


@client_check("client-start", 'assignment: "first ask for the username and password ... 1. Manage '
              'Mail 2. Send Mail 3. Quit"')
def client_start(kit, t):
    kit.cleanup(everything=True)
    argv = shlex.split(kit.client_cmd.replace("{host}", kit.smtp[0])
                       .replace("{smtp}", str(kit.smtp[1])).replace("{pop3}", str(kit.pop3[1])))
    if argv and "/" in argv[0]:
        argv[0] = os.path.abspath(argv[0])     # the client runs in a directory of its own
    kit.terminal = t = Terminal(argv, kit.timeout, kit.client_cwd, kit.settle)
    user, password = kit.users[client_user(kit)]
    t.expect(r"\S", "a prompt for the username")
    t.type(user)
    t.type(password)
    t.expect(MENU_RE, "the menu (1. Manage Mail, 2. Send Mail, 3. Quit)")
    kit.client_state["menu"] = t.text()
    return "asked for the login, showed the menu"


@client_check("client-menu-words", 'assignment: the menu\'s words "1. Manage Mail 2. Send Mail '
              '3. Quit"')
def client_menu_words(kit, t):
    shown = kit.client_state.get("menu", "")
    if not re.search(MENU_WORDS_RE, shown, re.I):
        menu = [l.strip() for l in shown.split("\n") if re.match(r"\s*[123]\s*[.):\-]", l)]
        raise soft("the menu is not in the assignment's words: '%s'"
                   % show(" | ".join(menu) or shown[-80:]))
    return "'Manage Mail', 'Send Mail', 'Quit'"


def client_mail(kit, to, subject, body):
    me = kit.addr(client_user(kit))
    return ["From: " + me, "To: " + to, "Subject: " + subject] + body + ["."]


CLIENT_BODY = ["Hello from the grading kit.", "Second line of the mail."]
SEND_RESULT_RE = r"mail sent successfully|error in sending mail[^\n]*|incorrect format"


@client_check("client-send", 'assignment: option 2, the mail typed; "Mail sent successfully"')
def client_send(kit, t):
    me = kit.addr(client_user(kit))
    t.type("2")
    t.type(*client_mail(kit, me, kit.key("ca"), CLIENT_BODY))
    said = t.expect(SEND_RESULT_RE, "Mail sent successfully").group(0)
    back_to_menu(t, "after sending")
    if not said.lower().startswith("mail sent"):
        raise soft("the client said '%s'" % show(said))
    n, msg = kit.stored(client_user(kit), "ca")
    if find_run(msg, [line.encode() for line in CLIENT_BODY]) < 0:
        raise soft("sent, but %s lacks the body as typed" % n)
    kit.client_state["sent"] = True
    return "'Mail sent successfully'; the mail is in the mailbox"


def credited_rejection(kit, what):
    """A rejection proves something only if a valid mail was accepted."""
    if not kit.client_state.get("sent"):
        raise NotRun("%s, but a valid mail was not sent either (client-send): no credit" % what)


@client_check("client-incorrect-format", 'assignment: "The format for the From and To fields '
              'must be X@Y ... Incorrect format"')
def client_incorrect_format(kit, t):
    t.type("2")
    t.type(*client_mail(kit, "nobody-at-" + kit.domain, kit.key("cx"),
                        ["a mail with a bad To: field"]))
    said = t.expect(SEND_RESULT_RE, "Incorrect format").group(0)
    back_to_menu(t, "after a bad mail")
    if said.lower() != "incorrect format":
        raise soft("a To: without @ got '%s'" % show(said))
    credited_rejection(kit, "'Incorrect format'")
    return "'Incorrect format', then the menu"


@client_check("client-send-error", 'assignment: "Error in sending mail: <Actual SMTP reply>" '
              '(550 for an unknown user)')
def client_send_error(kit, t):
    t.type("2")
    t.type(*client_mail(kit, "no-such-user-%s@%s" % (kit.token, kit.domain),
                        kit.key("cy"), ["to nobody"]))
    said = t.expect(SEND_RESULT_RE, "Error in sending mail: 550 ...").group(0)
    back_to_menu(t, "after a refused mail")
    if not said.lower().startswith("error in sending mail") or "550" not in said:
        raise soft("an unknown recipient got '%s'" % show(said))
    credited_rejection(kit, "'%s'" % show(said.strip()))
    return "'%s'" % show(said.strip())


@client_check("client-list", 'assignment: option 1: "Sl. No. <Sender\'s email id> <When received, '
              'in date : hour : minute> <Subject>", then "Enter mail no. to see:"')
def client_list(kit, t):
    me = client_user(kit)
    if not kit.client_state.get("sent"):
        # client-send reports its own failure: the list is judged on mail
        # the kit sends.
        kit.send("ca", [line.encode() for line in CLIENT_BODY], to=(me,), keep=True,
                 prereq=True)
    kit.send("cb", to=(me,), keep=True, prereq=True)
    t.type("1")
    t.expect(NUMBER_PROMPT_RE, "the list and 'Enter mail no. to see:'")
    kit.client_state["at_prompt"] = True
    listing = t.text()
    numbers = {}
    for tag in ("ca", "cb"):
        rows = [l for l in listing.split("\n") if kit.key(tag) in l]
        if not rows:
            raise soft("the list lacks the mail with Subject '%s'" % kit.key(tag))
        m = re.match(r"\s*(\d+)", rows[0])
        if not m:
            raise soft("the row '%s' does not start with its Sl. No." % show(rows[0]))
        numbers[tag] = int(m.group(1))
        if tag == "ca":
            sender = kit.addr(me) if kit.client_state.get("sent") else kit.sender
            user, domain = sender.split("@")
            if not re.search(r"%s\s*@\s*%s" % (re.escape(user), re.escape(domain)), rows[0]):
                raise soft("the row '%s' lacks the sender %s" % (show(rows[0]), sender))
            if not re.search(r"\d{1,2}\s*:\s*\d{2}", rows[0]):
                raise soft("the row '%s' lacks the time received" % show(rows[0]))
    kit.client_state["numbers"] = numbers
    if numbers["ca"] >= numbers["cb"]:
        raise soft("the older mail has Sl. No. %d, the newer %d" % (numbers["ca"], numbers["cb"]))
    return "both mails listed (Sl. No. %d and %d) with sender, time and subject" % (
        numbers["ca"], numbers["cb"])


@client_check("client-out-of-range", 'assignment: "Mail no. out of range, give again"')
def client_out_of_range(kit, t):
    t.type("9999")
    said = t.expect(r"[^\n]*out of range[^\n]*|" + NUMBER_PROMPT_RE, "Mail no. out of range, give again")
    if "out of range" not in said.group(0).lower():
        raise soft("9999 got no 'Mail no. out of range, give again'")
    t.expect(NUMBER_PROMPT_RE, "'Enter mail no. to see:' again")
    return "'%s'" % show(said.group(0).strip())


@client_check("client-read", 'assignment: "that mail (the entire content including From, To, '
              'Subject, Received, and message body) is shown"')
def client_read(kit, t):
    numbers = kit.client_state.get("numbers")
    if not numbers:
        raise NotRun("not reached: the list showed no numbers")
    t.type(str(numbers["ca"]))
    t.expect(re.escape(CLIENT_BODY[-1]), "the mail's body")
    t.settle()
    shown = t.text()
    missing = [what for what, rx in (("From:", r"^\s*from:"), ("To:", r"^\s*to:"),
                                     ("Subject:", r"^\s*subject:"), ("Received", r"received"),
                                     ("the first body line", re.escape(CLIENT_BODY[0])))
               if not re.search(rx, shown, re.I | re.M)]
    kit.client_state["read"] = True     # the client waits for the key now
    if missing:
        raise soft("the mail shown lacks %s" % ", ".join(missing))
    return "From, To, Subject, Received and the body shown"


@client_check("client-delete", 'assignment: "If the character is \'d\', the mail is deleted"; '
              '-1 goes back to the menu')
def client_delete(kit, t):
    me = client_user(kit)
    if not kit.client_state.get("read"):
        if kit.client_state.get("at_prompt"):
            t.type("-1")                    # from the number prompt to the menu
            back_to_menu(t, "-1")
        raise NotRun("not reached: no mail was shown to delete (client-read)")
    t.type("d")
    t.expect(NUMBER_PROMPT_RE, "the list again after 'd'")
    listing = t.text()
    t.type("-1")
    back_to_menu(t, "-1")
    if kit.key("ca") in listing:
        raise soft("the list after 'd' still shows the mail")
    deadline = time.monotonic() + kit.grace
    while kit.fetch(me, "ca"):
        if time.monotonic() > deadline:
            raise soft("after 'd' and -1 the mail is still in the mailbox (POP3)")
        time.sleep(0.1)
    if not kit.fetch(me, "cb"):
        raise soft("after 'd' the other mail is gone too")
    return "'d' deleted it (gone over POP3), the list came back, -1 the menu"


@client_check("client-quit", 'assignment: "3. Quit : Quits the program"')
def client_quit(kit, t):
    t.type("3")
    deadline = time.monotonic() + kit.timeout
    while t.proc.poll() is None and time.monotonic() < deadline:
        t.pump(0.1)
    if t.proc.poll() is None:
        raise Fail("option 3: the client still runs after %gs" % kit.timeout)
    return "ended with status %d" % t.proc.returncode


# ------------------------------------------------------------ running

def run_check(kit, c, check_timeout):
    """One check in a thread of its own, bounded in time: its result row."""
    box = {}

    def target():
        try:
            box["reason"] = c.fn(kit) or ""
            box["result"] = "pass"
        except Skip as e:
            box.update(result="skip", reason=str(e))
        except NotRun as e:
            box.update(result="not-run", reason=str(e))
        except Fail as e:
            box.update(result="fail", reason=str(e))
        except Exception as e:     # a bug of the kit's, shown as such
            box.update(result="fail", reason="kit error: %r" % e)
            traceback.print_exc()

    started = time.monotonic()
    kit.current = c.name
    kit.smtp_check = c.name.startswith(("smtp-", "smuggle-")) or \
        c.name in ("delivery", "received-line", "dot-line")
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(check_timeout)
    if thread.is_alive():
        box = {"result": "fail", "reason": "did not finish within %gs" % check_timeout}
    # A connection a failed check left open (a POP3 session holds its
    # mailbox's lock) must not spoil the next check.
    conns, kit.conns = kit.conns, []
    tolerated = set()
    for conn in conns:
        conn.close()
        tolerated |= conn.defects
    return {"name": c.name, "level": c.level, "result": box["result"],
            "reason": box["reason"], "source": c.source,
            "seconds": round(time.monotonic() - started, 2),
            "tolerated": sorted(tolerated)}


HANG_RE = re.compile(r"no answer .*within|did not finish within")


def silent_servers(kit, wait=3):
    """{"SMTP"/"POP3": why} for each server that accepts a connection but
    sends no greeting within wait seconds (a connection refused is no hang:
    it fails at once)."""
    hung = {}
    for name, addr in (("SMTP", kit.smtp), ("POP3", kit.pop3)):
        try:
            sock = socket.create_connection(addr, timeout=wait)
        except OSError:
            continue
        try:
            sock.settimeout(wait)
            sock.recv(1)
        except socket.timeout:
            hung[name] = ("the %s server stopped answering (no greeting within %gs after "
                          "three checks in a row got no answer)" % (name, wait))
        except OSError:
            pass
        finally:
            sock.close()
    return hung


def needs(c, hung):
    """The reason check c cannot run with the servers in hung, or None."""
    if c.name.startswith("pop-"):
        return hung.get("POP3")
    if c.level == "client":
        return None
    return hung.get("SMTP")


def usage_error(text):
    sys.stderr.write("conform.py: %s\n" % text)
    raise SystemExit(2)


def run_all(args, kit, chosen, stream=None):
    """Every chosen check in turn, the mail of each deleted after it; each
    result also written to stream (a JSON line, flushed) as it comes, so a
    kit that is killed leaves every check it finished."""
    results = []
    started = time.monotonic()
    streak = 0        # checks in a row that got no answer in time
    for c in chosen:
        left = args.budget - (time.monotonic() - started) if args.budget else None
        if streak >= 3:
            # A server that hangs would make every later check wait out its
            # timeout: once it does not even greet, the checks that need it
            # are not run.
            kit.hung = silent_servers(kit, min(3, kit.timeout))
            streak = 0
        if left is not None and left <= 1:
            result = {"name": c.name, "level": c.level, "result": "not-run",
                      "reason": "not run: the --budget of %gs is spent" % args.budget,
                      "source": c.source, "seconds": 0, "tolerated": []}
        elif needs(c, kit.hung):
            result = {"name": c.name, "level": c.level, "result": "not-run",
                      "reason": "not run: " + needs(c, kit.hung),
                      "source": c.source, "seconds": 0, "tolerated": []}
        else:
            # The budget bounds the check too: it ends before the budget does.
            limit = args.check_timeout if left is None else min(args.check_timeout, left)
            result = run_check(kit, c, limit)
            streak = streak + 1 if result["result"] == "fail" and \
                HANG_RE.search(result["reason"]) else 0
            if not args.keep:
                kit.cleanup()
        results.append(result)
        if stream:
            stream.write(json.dumps(result) + "\n")
            stream.flush()
        if not args.json and not args.csv and sys.stderr.isatty():
            sys.stderr.write("%s %s\n" % (result["result"], c.name))
    return results


def select_checks(args):
    levels = args.level.split(",") if args.level else list(LEVELS)
    for level in levels:
        if level not in LEVELS:
            usage_error("no level %r (levels: %s)" % (level, ", ".join(LEVELS)))
    names = {c.name for c in CHECKS}
    only = set(args.only.split(",")) if args.only else None
    skip = set(args.skip.split(",")) if args.skip else set()
    for name in sorted((only or set()) | skip):
        if name not in names:
            usage_error("no check %r (see --list)" % name)
    chosen = [c for c in CHECKS if c.level in levels and (only is None or c.name in only)
              and c.name not in skip]
    if not args.client:
        chosen = [c for c in chosen if c.level != "client"]
    elif any(c.level == "client" for c in chosen):
        # The client's steps build on each other: all of them or none.
        chosen = [c for c in chosen if c.level != "client"] + \
                 [c for c in CHECKS if c.level == "client"]
    return chosen


RESULT_KEYS = {"pass": "passed", "fail": "failed", "skip": "skipped", "not-run": "not_run"}


def score(results):
    out = {}
    for r in results:
        s = out.setdefault(r["level"], {"passed": 0, "failed": 0, "skipped": 0, "not_run": 0})
        s[RESULT_KEYS[r["result"]]] += 1
    return out


def causes(results):
    """The root causes behind the results, grouped, most checks first: the
    defects read through ("replies lack CRLF: 31 checks") and the kinds of
    failure ("no answer within 10s: 5 checks"); then the names failed."""
    groups = {}
    for r in results:
        for d in r.get("tolerated", []):
            groups.setdefault("%s (read through)" % DEFECTS.get(d, d), set()).add(r["name"])
        if r["result"] not in ("fail", "not-run"):
            continue
        reason = r["reason"]
        m = re.search(r"cannot connect to the (\w+) server at \S+ port (\d+)", reason)
        if m:
            key = "nothing listened on %s port %s" % m.groups()
        elif re.search(r"no answer .*within|did not finish within", reason):
            key = "no answer in time (a hang)"
        elif "closed the connection" in reason or "connection broke" in reason:
            key = "the server closed the connection"
        elif r["result"] == "not-run" and ("budget" in reason or "time limit" in reason):
            key = "not run: out of time"
        elif r["result"] == "not-run" and "stopped answering" in reason:
            key = reason[len("not run: "):].split(" (")[0]
        elif r["result"] == "not-run":
            key = "not run: a step before failed"
        else:
            key = "same reason: " + reason
        groups.setdefault(key, set()).add(r["name"])
    # A reason shared by a few checks is a root cause; alone, it is just a failure.
    groups = {k: v for k, v in groups.items() if not k.startswith("same reason: ") or len(v) >= 3}
    groups = {(k[len("same reason: "):] if k.startswith("same reason: ") else k): v
              for k, v in groups.items()}
    notes = ["%s: %d check%s" % (k, len(v), "" if len(v) == 1 else "s")
             for k, v in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    failed = [r["name"] for r in results if r["result"] == "fail"]
    if failed:
        notes.append("failed: " + " ".join(failed))
    return notes


def score_text(s):
    """passed/run (a skip or a check not run is left out), "-" if none."""
    return "%d/%d" % (s["passed"], s["passed"] + s["failed"]) if s else "-"


def print_table(results, scores, ok, out, verbose=False):
    width = max([len(r["name"]) for r in results] + [5])
    out.write("%-*s  %-10s  %-6s %s\n" % (width, "check", "level", "result", "reason"))
    for r in results:
        out.write("%-*s  %-10s  %-6s %s\n" % (width, r["name"], r["level"], r["result"], r["reason"]))
        if verbose:
            out.write("%-*s  from %s\n" % (width + 20, "", r["source"]))
    parts = []
    for level in LEVELS:
        if level in scores:
            s = scores[level]
            extra = ["%d %s" % (s[k], w) for k, w in (("skipped", "skipped"),
                                                       ("not_run", "not run")) if s.get(k)]
            parts.append("%s %s%s" % (level, score_text(s),
                                      " (%s)" % ", ".join(extra) if extra else ""))
    out.write("score: %s\n" % ", ".join(parts))
    out.write("result: %s\n" % ("PASS: every assignment and rfc check passed" if ok else
                                "FAIL: an assignment or rfc check failed"))


def csv_row(results, scores):
    fields = [score_text(scores.get(level)) for level in LEVELS]
    fields.append(str(sum(1 for r in results if r["result"] == "not-run")))
    fields.append("; ".join(causes(results)))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def address(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("host:port expected, not %r" % text)
    return host.strip("[]"), int(port)


def account(text):
    user, sep, password = text.partition(":")
    if not user or not sep:
        raise argparse.ArgumentTypeError("user:password expected, not %r" % text)
    return user, password


def wait_for(addrs, seconds):
    """Wait up to seconds for every address to accept connections."""
    deadline = time.monotonic() + seconds
    for addr in addrs:
        while time.monotonic() < deadline:
            try:
                socket.create_connection(addr, timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="conform.py", description="Black-box conformance kit for an SMTP receiver and a "
        "POP3 server (the mail assignment, RFC 5321, RFC 1939). See tests/GRADING.md.")
    ap.add_argument("--smtp", type=address, metavar="HOST:PORT", help="the SMTP server")
    ap.add_argument("--pop3", type=address, metavar="HOST:PORT", help="the POP3 server")
    ap.add_argument("--user", type=account, action="append", default=[], metavar="USER:PASSWORD",
                    help="an account on both servers; give two for the checks that need two")
    ap.add_argument("--domain", default="localhost", help="the domain of the addresses (localhost)")
    ap.add_argument("--level", help="only these levels, comma-separated: " + ",".join(LEVELS))
    ap.add_argument("--only", help="only these checks, comma-separated (see --list)")
    ap.add_argument("--skip", help="not these checks, comma-separated")
    ap.add_argument("--timeout", type=float, default=10, help="the longest wait for a reply (10 s)")
    ap.add_argument("--check-timeout", type=float, default=120,
                    help="the longest a whole check may take (120 s)")
    ap.add_argument("--grace", type=float, default=2,
                    help="how long mail may take to show up, or a lock to go (2 s)")
    ap.add_argument("--budget", type=float, default=0,
                    help="stop starting checks after this many seconds (0: no limit)")
    ap.add_argument("--silence", type=float, default=0.5,
                    help="silence that ends a reply sent without a line end (0.5 s)")
    ap.add_argument("--spool", metavar="DIR",
                    help="the servers' directory: DIR/<user>/ holds the mailbox file; the SMTP "
                         "checks look there for the mail before asking POP3")
    ap.add_argument("--stream", metavar="FILE",
                    help="append each check's result to FILE as a JSON line as it finishes")
    ap.add_argument("--senders", type=int, default=20, help="concurrent senders (20)")
    ap.add_argument("--wait", type=float, default=0,
                    help="first wait up to this many seconds for both servers to listen")
    ap.add_argument("--client", metavar="COMMAND",
                    help="also drive this client on a pty; {host}, {smtp}, {pop3} are replaced")
    ap.add_argument("--settle", type=float, default=0.25,
                    help="the client's silence taken as waiting for input (0.25 s)")
    ap.add_argument("--client-cwd", help="the client's working directory (a temporary one)")
    ap.add_argument("--client-log", help="write what the client showed to this file")
    ap.add_argument("--keep", action="store_true", help="keep the mail the kit sent")
    ap.add_argument("--json", action="store_true", help="JSON on stdout instead of the table")
    ap.add_argument("--csv", action="store_true",
                    help="one CSV row on stdout: the score per level (%s), the failed checks"
                         % ", ".join(LEVELS))
    ap.add_argument("--report", help="also write the table to this file")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="show each check's source")
    args = ap.parse_args(argv)
    if not args.list and (not args.smtp or not args.pop3 or not args.user):
        ap.error("--smtp, --pop3 and at least one --user are needed")
    if args.senders < 1 or args.timeout <= 0:
        ap.error("--senders and --timeout must be positive")
    return args


class Stopped(Exception):
    """SIGTERM, SIGHUP (a closed terminal) or SIGINT: stop at once."""


def on_signal(signum, frame):
    raise Stopped(signum)


def main(argv):
    args = parse_args(argv)
    if args.list:
        for c in CHECKS:
            print("%-24s %-10s %s" % (c.name, c.level, c.source))
        return 0
    chosen = select_checks(args)
    if args.wait:
        wait_for([args.smtp, args.pop3], args.wait)
    kit = Kit(args)
    own_cwd = None
    if args.client:
        own_cwd = kit.client_cwd = args.client_cwd or tempfile.mkdtemp(prefix="conform-client-")
    stream = None
    if args.stream:
        stream = open(args.stream, "a")
        stream.write(json.dumps({"plan": [{"name": c.name, "level": c.level} for c in chosen],
                                 "token": kit.token}) + "\n")
        stream.flush()
    stopped = None
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        results = run_all(args, kit, chosen, stream)
    except Stopped as e:
        # The client and the temporary directory go with the kit; the
        # results so far are in the stream; no more talk with the servers.
        stopped = e.args[0]
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if stream:
            stream.close()
        if kit.terminal:
            kit.terminal.close()
            if args.client_log:
                with open(args.client_log, "wb") as f:
                    f.write(kit.terminal.out)
        if not args.keep and stopped is None:
            kit.cleanup(everything=True)
        if own_cwd and not args.client_cwd:
            shutil.rmtree(own_cwd, ignore_errors=True)
    if stopped is not None:
        sys.stderr.write("conform.py: stopped by signal %d\n" % stopped)
        return 128 + stopped
    return report(args, kit, results)


def report(args, kit, results):
    """The table, JSON or CSV row on stdout (and --report); the exit status."""
    scores = score(results)
    ok = not any(r["result"] in ("fail", "not-run") and r["level"] in GATE for r in results)
    if args.report:
        with open(args.report, "w") as f:
            print_table(results, scores, ok, f, verbose=True)
    if args.json:
        json.dump({"token": kit.token, "smtp": "%s:%d" % args.smtp, "pop3": "%s:%d" % args.pop3,
                   "checks": results, "score": scores, "ok": ok}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.csv:
        sys.stdout.write(csv_row(results, scores))
    else:
        print_table(results, scores, ok, sys.stdout, args.verbose)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
