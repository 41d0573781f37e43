"""mailclient: the interactive client, driven through a pseudo-terminal
against the real smtpmail and popserver.

Client (below) runs the binary on a pty, waits for expected text with a
timeout and types keystrokes; every wait is bounded. The user-facing words
are checked exactly as the assignment gives them.
"""
import base64
import calendar
import email.utils
import fcntl
import os
import poplib
import re
import select
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from email.message import EmailMessage

from harness import (HOSTNAME, MailTest, SANITIZER_ENV, SANITIZER_RE, binary, free_port)

MENU = "1. Manage Mail\n2. Send Mail\n3. Quit\nEnter option: "
KEY_PROMPT = "Press d to delete, r to see the source, any other key to see the list: "
NUMBER_PROMPT = "Enter mail no. to see: "
# Makes the pty the client's controlling terminal (the client is a session
# leader, start_new_session), so that a typed Ctrl-C is a SIGINT, then runs it.
CTTY_SHIM = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
             "os.execv(sys.argv[1], sys.argv[1:])")
TABLE_HEAD = ("Sl. No.  From                      Received              Subject")


class Client:
    """mailclient on a pseudo-terminal (or on pipes with tty=False). size
    (rows, columns) sets the window size (TIOCSWINSZ; a new pty has none,
    and the client then pages nothing); ctty makes the pty the client's
    controlling terminal, so that a typed Ctrl-C is a SIGINT."""

    def __init__(self, test, *args, tty=True, env=None, size=None, ctty=False):
        self.err_path = os.path.join(test.dir, "client-%d.err" % len(test.clients))
        err = open(self.err_path, "wb")
        environ = dict(os.environ, **SANITIZER_ENV)
        environ.update(env or {})
        if tty:
            self.master, self.slave = os.openpty()
            stdin = stdout = self.slave
            if size:
                self.resize(*size)
        else:
            rd, self.master = os.pipe()
            self.out_rd, wr = os.pipe()
            stdin, stdout, self.slave = rd, wr, None
        argv = [binary("mailclient")] + [str(a) for a in args]
        if ctty:
            argv = [sys.executable, "-c", CTTY_SHIM] + argv
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err,
                                     env=environ, start_new_session=True)
        err.close()
        if not tty:
            os.close(rd)
            os.close(wr)
        self.tty = tty
        self.raw = b""      # everything the terminal showed
        self.pos = 0        # expect() has consumed the text up to here
        test.clients.append(self)

    def _read(self, timeout):
        """Read what output is there, waiting at most timeout: True if some
        came, None if none yet, False at the end."""
        fd = self.master if self.tty else self.out_rd
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return False
        self.raw += chunk
        return True if chunk else False

    @property
    def text(self):
        """All output so far, line ends as "\\n"."""
        return self.raw.decode("utf-8", "replace").replace("\r\n", "\n")

    def expect(self, want, timeout=10):
        """Wait until want (a string) appears after the last match; return the
        text from the last match to the end of this one."""
        deadline = time.time() + timeout
        while True:
            text = self.text
            at = text.find(want, self.pos)
            if at >= 0:
                seen, self.pos = text[self.pos:at + len(want)], at + len(want)
                return seen
            if time.time() > deadline or self._read(min(0.2, max(0, deadline - time.time()))) is False:
                if want in self.text[self.pos:]:
                    continue
                raise AssertionError("did not see %r; the client showed:\n%s"
                                     % (want, text[self.pos:][-3000:]))

    def send(self, data):
        """Type data; long input goes in pieces while the output is drained."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        for i in range(0, len(data), 512):
            view = data[i:i + 512]
            while view:
                _, ready, _ = select.select([], [self.master], [], 10)
                if not ready:
                    raise AssertionError("the client does not read its input")
                view = view[os.write(self.master, view):]
            self._read(0)

    def line(self, text=""):
        self.send(text + "\n")

    def resize(self, rows, cols):
        """Set the window size, as a terminal emulator does."""
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def eof(self):
        """End of input: Ctrl-D at a line start on a tty, closing the pipe otherwise."""
        if self.tty:
            self.send(b"\x04")
        else:
            os.close(self.master)
            self.master = None

    def login(self, user="bob", password="bobpw"):
        self.expect("Username: ")
        self.line(user)
        self.expect("Password: ")
        self.line(password)
        self.expect(MENU)

    def exit_code(self, timeout=10):
        """Wait for the client to end (reading its output meanwhile)."""
        deadline = time.time() + timeout
        while self.proc.poll() is None and time.time() < deadline:
            self._read(0.05)
        if self.proc.poll() is None:
            raise AssertionError("client still running; it showed:\n" + self.text[-2000:])
        while self._read(0.05) is True and len(self.raw) < 10_000_000:
            pass
        return self.proc.returncode

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.master, self.slave, getattr(self, "out_rd", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def close_clients(clients):
    """Close every client; the stderr of those a sanitizer complained in."""
    problems = []
    for c in clients:
        c.close()
        if SANITIZER_RE.search(c.stderr()):
            problems.append(c.stderr())
    return problems


class ClientTest(MailTest):
    """A MailTest with the two real servers and mailclient sessions."""

    def setUp(self):
        super().setUp()
        self.clients = []
        self.smtp = self.start_smtp()
        self.pop = self.start_pop("-w", "50")

    def tearDown(self):
        problems = close_clients(self.clients)
        super().tearDown()
        if problems:
            self.fail("sanitizer report from mailclient:\n" + "\n".join(problems))

    def client(self, *args, tty=True, user=None, smtp_port=None, pop_port=None, **kw):
        """A client logged in as user (None: only started); kw: Client's."""
        c = Client(self, *args, "127.0.0.1", smtp_port or self.smtp.port,
                   pop_port or self.pop.port, tty=tty, **kw)
        if user:
            c.login(user, user + "pw")
        return c

    def send_mail(self, c, lines, expect="Mail sent successfully"):
        """Menu 2, the mail typed line by line, then the outcome message."""
        c.line("2")
        c.expect('with only ".".\n')
        for line in lines:
            c.line(line)
        seen = c.expect(expect)
        c.expect(MENU)
        return seen

    def send_refused(self, c, expect):
        """Menu 2 when the SMTP server does not greet: the error comes before
        the mail is typed, and the menu again."""
        c.line("2")
        seen = c.expect(expect)
        self.assertNotIn("Type the mail", seen)
        self.assertEqual(c.expect(MENU), "\n" + MENU)

    def inject(self, sender, rcpt, subject, body):
        """A mail delivered by smtplib (not by the client)."""
        msg = "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s" % (sender, rcpt, subject, body)
        with smtplib.SMTP("127.0.0.1", self.smtp.port, timeout=10) as s:
            s.sendmail(sender, [rcpt], msg.encode())

    def quit(self, c):
        c.line("3")
        self.assertEqual(c.exit_code(), 0)

    def put(self, login, *records):
        """Records written into the spool by hand (CRLF lines, ".\r\n" after each)."""
        os.makedirs(os.path.join(self.spool, login), exist_ok=True)
        with open(self.mailbox_path(login), "wb") as f:
            f.write("".join(r + ".\r\n" for r in records).encode())

    def subjects(self, login):
        """The Subject of each record in a mailbox, in order."""
        return [re.search(rb"\r\nSubject: (.*?)\r\n", r).group(1).decode()
                for r in self.records(login)]

    def bodies(self, login):
        """Each record's body (after the first blank line), CRLF kept, unstuffed."""
        out = []
        for rec in self.records(login):
            body = rec.split(b"\r\n\r\n", 1)[1]
            out.append(b"".join(l[1:] if l.startswith(b".") else l
                                for l in body.splitlines(keepends=True)))
        return out

    def dead_port(self):
        """A loopback port nobody listens on."""
        return free_port()


class Start(ClientTest):
    """Usage, the start prompts, the menu, the terminal, end of input."""

    def test_usage_errors_exit_2(self):
        for args in ([], ["-x", "127.0.0.1"], ["127.0.0.1", "notaport"],
                     ["127.0.0.1", "25", "0"], ["a", "1", "2", "3"], ["-t", "0", "h"]):
            run = subprocess.run([binary("mailclient")] + args, capture_output=True,
                                 text=True, timeout=10, stdin=subprocess.DEVNULL)
            self.assertEqual(run.returncode, 2, args)
            self.assertIn("usage: mailclient [-v] [-h]", run.stderr)
            self.assertEqual(run.stdout, "")

    def test_help_exits_0(self):
        run = subprocess.run([binary("mailclient"), "-h"], capture_output=True,
                             text=True, timeout=10)
        self.assertEqual(run.returncode, 0)
        self.assertIn("usage: mailclient [-v] [-h] [-t seconds] server [smtp_port [pop3_port]]\n",
                      run.stdout)
        for word in ("default 2525", "default 1100", "-t seconds  longest wait"):
            self.assertIn(word, run.stdout)

    def test_prompts_menu_and_quit(self):
        c = self.client()
        c.expect("Username: ")
        c.line("bob")
        c.expect("Password: ")
        c.line("bobpw")
        self.assertEqual(c.expect(MENU), "\n\n" + MENU)
        self.quit(c)

    def test_password_not_echoed_and_terminal_restored(self):
        with open(self.userfile, "a") as f:
            f.write("dave s3cretpw\n")
        c = self.client()
        c.expect("Username: ")
        c.line("dave")
        c.expect("Password: ")
        self.assertFalse(termios.tcgetattr(c.slave)[3] & termios.ECHO)
        c.line("s3cretpw")
        c.expect(MENU)
        self.assertNotIn("s3cretpw", c.text)
        self.assertIn("dave", c.text)                   # the username is echoed
        self.assertTrue(termios.tcgetattr(c.slave)[3] & termios.ECHO)
        self.quit(c)

    def test_signal_at_password_prompt_restores_terminal(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            c = self.client()
            c.expect("Username: ")
            c.line("bob")
            c.expect("Password: ")     # echo is off before the prompt shows
            self.assertFalse(termios.tcgetattr(c.slave)[3] & termios.ECHO)
            c.proc.send_signal(sig)
            self.assertEqual(c.exit_code(), -sig)
            self.assertTrue(termios.tcgetattr(c.slave)[3] & termios.ECHO, sig)

    def test_invalid_options_show_the_menu_again(self):
        c = self.client(user="bob")
        for typed in ("4", "", "x", "12", "1 2", "0"):
            c.line(typed)
            self.assertEqual(c.expect(MENU), typed + "\nInvalid option, choose 1, 2 or 3\n\n" + MENU)
        c.line(" 3 ")       # spaces around a choice are fine
        self.assertEqual(c.exit_code(), 0)

    def test_eof_at_username_password_and_menu(self):
        for steps in ([], ["bob"], ["bob", "bobpw"]):
            c = self.client()
            for typed, prompt in zip(steps, ["Username: ", "Password: "]):
                c.expect(prompt)
                c.line(typed)
            c.expect(MENU if len(steps) == 2 else ["Username: ", "Password: "][len(steps)])
            started = time.time()
            c.eof()
            self.assertEqual(c.exit_code(5), 0, steps)
            self.assertLess(time.time() - started, 5)

    def test_empty_username_asked_again(self):
        c = self.client()
        c.expect("Username: ")
        c.line("")
        c.expect("Username: ")
        c.line("bob")
        c.expect("Password: ")
        c.eof()
        self.assertEqual(c.exit_code(), 0)

    def test_pipe_stdin_whole_session(self):
        self.inject("alice@example.org", "bob@example.org", "Piped", "via a pipe\r\n")
        c = self.client(tty=False)
        c.send("bob\nbobpw\n1\n1\nx\n-1\n2\nFrom: bob@h\nTo: alice@h\nSubject: s\nhi\n.\n3\n")
        self.assertEqual(c.exit_code(), 0)
        out = c.text
        self.assertIn("Username: Password: \n" + MENU, out)
        self.assertNotIn("bobpw", out)
        self.assertIn("via a pipe\n", out)
        self.assertIn(KEY_PROMPT + TABLE_HEAD, out)    # a line for the key: list again
        self.assertIn("Mail sent successfully\n", out)
        self.assertEqual(self.bodies("alice"), [b"hi\r\n"])
        self.assertEqual(len(self.records("bob")), 1)

    def test_pipe_huge_lines(self):
        big = "y" * 300_000
        c = self.client(tty=False)
        c.send("bob\nbobpw\n" + "9" * 200_000 + "\n2\nFrom: bob@h\nTo: alice@h\n"
               "Subject: big\n" + big + "\n.\n3\n")
        self.assertEqual(c.exit_code(20), 0)
        self.assertIn("Invalid option, choose 1, 2 or 3\n", c.text)
        self.assertIn("Mail sent successfully\n", c.text)
        # RFC 5322 2.1.1: no line over 998 octets; the long one is broken
        self.assertEqual(self.bodies("alice"), [b"".join(
            big[i:i + 998].encode() + b"\r\n" for i in range(0, len(big), 998))])

    def test_long_utf8_line_broken_between_characters(self):
        line = ".x" + "é" * 1200             # 2402 octets, starts with a dot
        c = self.client(tty=False)
        c.send("alice\nalicepw\n2\nFrom: alice@h\nTo: bob@h\nSubject: long\n"
               + line + "\n.\n3\n")
        self.assertEqual(c.exit_code(20), 0)
        body = self.records("bob")[0].split(b"\r\n\r\n", 1)[1]
        pieces = body.split(b"\r\n")[:-1]
        self.assertGreater(len(pieces), 2)
        for piece in pieces:
            self.assertLessEqual(len(piece), 999)    # 998 + a stuffed dot
            piece.decode("utf-8")                   # never cut inside a character
        self.assertEqual(self.bodies("bob"), [b"".join(p + b"\r\n" for p in
                                                       [pieces[0][1:]] + pieces[1:])])
        self.assertEqual(b"".join([pieces[0][1:]] + pieces[1:]), line.encode())

    def test_cr_before_dot_does_not_end_the_data(self):
        # a CR is dropped before dot-stuffing: "\r." must not become the end
        c = self.client(tty=False)
        c.send("alice\nalicepw\n2\nFrom: alice@h\nTo: bob@h\nSubject: cr\n"
               "\r.\nRSET\n\r.x\na\rb\nend\n.\n3\n")
        self.assertEqual(c.exit_code(), 0)
        self.assertIn("Mail sent successfully\n", c.text)
        self.assertEqual(self.bodies("bob"), [b".\r\nRSET\r\n.x\r\nab\r\nend\r\n"])

    def test_pipe_eof_everywhere_exits_0(self):
        typed = "bob\nbobpw\n2\nFrom: bob@h\nTo: alice@h\nSubject: s\nbody\n"
        for cut in range(0, len(typed) + 1, 7):
            run = subprocess.run([binary("mailclient"), "127.0.0.1", str(self.smtp.port),
                                  str(self.pop.port)], input=typed[:cut], capture_output=True,
                                 text=True, timeout=10, env=dict(os.environ, **SANITIZER_ENV))
            self.assertEqual(run.returncode, 0, typed[:cut])
            self.assertNotRegex(run.stderr, SANITIZER_RE)
        self.assertEqual(self.mailbox("alice"), b"")


class SendMail(ClientTest):
    """Menu 2: the typed format, the SMTP dialogue, the stored result."""

    def test_send_stored_with_headers(self):
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@mx.test.example", "To: bob@mx.test.example",
                           "Subject: Lab assignment", "This is the first week after midsem.",
                           "Let us give them something interesting.", "."])
        recs = self.records("bob")
        self.assertEqual(len(recs), 1)
        head, body = recs[0].split(b"\r\n\r\n", 1)
        self.assertRegex(head, rb"^Return-Path: <alice@mx.test.example>\r\nReceived: from ")
        self.assertIn(b"\r\nFrom: alice@mx.test.example\r\nTo: bob@mx.test.example\r\n"
                      b"Subject: Lab assignment\r\nDate: ", head)
        self.assertRegex(head, rb"\r\nDate: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
                               rb"[A-Z][a-z][a-z] \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n")
        self.assertRegex(head, rb"\r\nMessage-ID: <[^@>\s]+@mx.test.example>$")
        self.assertEqual(body, b"This is the first week after midsem.\r\n"
                               b"Let us give them something interesting.\r\n")
        self.quit(c)

    def test_assignment_layout_spaces_and_blank_lines(self):
        c = self.client(user="alice")
        self.send_mail(c, ["", "From:   alice  @  mx.test.example", "",
                           "To: bob @ mx.test.example", "", "Subject:  Spaced out  ", "",
                           "body after the separator", "", "second paragraph", "."])
        head, body = self.records("bob")[0].split(b"\r\n\r\n", 1)
        self.assertIn(b"From: alice@mx.test.example\r\nTo: bob@mx.test.example\r\n"
                      b"Subject: Spaced out\r\n", head)
        self.assertEqual(body, b"body after the separator\r\n\r\nsecond paragraph\r\n")

    def test_dot_lines_round_trip(self):
        c = self.client(user="alice")
        lines = [".x", "..", "...", ". ", "a.", ".hidden", ""]
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: dots"] + lines + ["."])
        self.assertEqual(self.bodies("bob"), ["".join(l + "\r\n" for l in lines).encode()])
        self.assertIn(b"\r\n..x\r\n...\r\n....\r\n", self.mailbox("bob"))   # stuffed on disk

    def test_empty_body_and_empty_subject(self):
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: nothing", "."])
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject:", "x", "."])
        self.assertEqual(self.bodies("bob"), [b"", b"x\r\n"])
        self.assertIn(b"\r\nSubject: \r\n", self.records("bob")[1])

    def test_8bit_body_labelled_utf8(self):
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: s", "caf\u00e9", "."])
        self.send_mail(c, ["From: alice@h", "To: carol@h", "Subject: s", "plain", "."])
        head, body = self.records("bob")[0].split(b"\r\n\r\n", 1)
        self.assertIn(b"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8"
                      b"\r\nContent-Transfer-Encoding: 8bit", head)   # RFC 2045
        self.assertEqual(body, "caf\u00e9\r\n".encode())
        self.assertNotIn(b"MIME-Version", self.records("carol")[0])

    def test_long_body(self):
        lines = ["%03d " % i + chr(ord("a") + i % 26) * 296 for i in range(200)]
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: long"] + lines + ["."])
        self.assertEqual(self.bodies("bob"), ["".join(l + "\r\n" for l in lines).encode()])

    def test_several_recipients(self):
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@h", "To: bob@h, carol @ h ,alice@h",
                           "Subject: all", "to everyone", "."])
        for login in ("alice", "bob", "carol"):
            recs = self.records(login)
            self.assertEqual(len(recs), 1, login)
            self.assertIn(b"\r\nTo: bob@h, carol@h, alice@h\r\n", recs[0])
            self.assertTrue(recs[0].endswith(b"\r\n\r\nto everyone\r\n"))

    def test_many_recipients_to_header_folded(self):
        to = ", ".join(["bob@mx.test.example"] * 12)
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@h", "To: " + to, "Subject: fold", "x", "."])
        head = self.records("bob")[0].split(b"\r\n\r\n")[0]
        to_field = re.search(rb"\r\nTo:(.*?)\r\n(?=[^ ])", head, re.S).group(1)
        self.assertIn(b"\r\n ", to_field)      # folded (RFC 5322 2.2.3)
        for line in head.split(b"\r\n"):
            self.assertLessEqual(len(line), 78)
        self.assertEqual(to_field.replace(b"\r\n", b"").strip(), to.encode())

    def test_incorrect_format(self):
        c = self.client(user="alice")
        bad = [
            ["To: bob@h", "From: alice@h", "Subject: order"],        # wrong order
            ["From: alice@h", "Subject: s", "To: bob@h"],
            ["From: alice@h", "To: bob@h"],                           # no subject
            ["Subject: s"],
            [],
            ["From: alice", "To: bob@h", "Subject: s"],               # not X@Y
            ["From: alice@h", "To: bob", "Subject: s"],
            ["From: @h", "To: bob@h", "Subject: s"],
            ["From: alice@", "To: bob@h", "Subject: s"],
            ["From: al ice@h", "To: bob@h", "Subject: s"],
            ["From: alice@h", "To: bob@h@x", "Subject: s"],
            ["From: alice@h", "To: bob@h,", "Subject: s"],
            ["From: alice@h", "To: bob@h, , carol@h", "Subject: s"],
            ["From: alice@h", "To: <bob@h>", "Subject: s"],
            ["From alice@h", "To: bob@h", "Subject: s"],
            ["From: alice@h", "To: bob@h", "Subject: " + "x" * 51],  # over 50
        ]
        for lines in bad:
            seen = self.send_mail(c, lines + ["body line", "."], expect="Incorrect format\n")
            self.assertNotIn("Mail sent", seen, lines)
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: " + "y" * 50, "."])
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: " + "é" * 50, "."])
        self.assertEqual(len(self.records("bob")), 2)   # only the last two
        self.assertEqual(self.mailbox("carol"), b"")

    def test_unknown_recipient(self):
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@h", "To: bob@h, nobody@h", "Subject: s", "x", "."],
                       expect="Error in sending mail: 550 5.1.1 No such user\n")
        self.assertEqual(self.mailbox("bob"), b"")
        self.quit(c)

    def test_smtp_server_down(self):
        # found out before the mail is typed, not after
        port = self.dead_port()
        c = self.client(user="alice", smtp_port=port)
        self.send_refused(c, "Cannot connect to 127.0.0.1:%d: Connection refused\n" % port)
        self.quit(c)

    def test_swapped_ports_say_what_answered(self):
        c = self.client(user="alice", smtp_port=self.pop.port, pop_port=self.smtp.port)
        # popserver's greeting ends with its APOP timestamp <pid.clock@host>
        c.line("2")
        seen = c.expect(MENU)
        self.assertRegex(seen, r"^2\nError in sending mail: expected an SMTP greeting \(220\), "
                               r"got: \+OK POP3 server ready <\d+\.\d+@[^>]+>\n\n1\. Manage Mail")
        self.assertNotIn("Type the mail", seen)
        c.line("1")
        self.assertEqual(c.expect(MENU), "1\nError in reading mail: expected a POP3 greeting "
                         "(+OK), got: 220 %s Service ready\n\n%s" % (HOSTNAME, MENU))
        self.quit(c)

    def test_eof_at_each_send_mail_line(self):
        # Ctrl-D while typing drops the mail and the menu comes again; at the
        # menu it ends the client
        lines = ["From: alice@h", "To: bob@h", "Subject: s", "body"]
        c = self.client(user="alice")
        for n in range(len(lines) + 1):
            c.line("2")
            c.expect('with only ".".\n')
            for line in lines[:n]:
                c.line(line)
            c.eof()
            self.assertTrue(c.expect(MENU).endswith("Mail not sent.\n\n" + MENU))
        c.eof()
        self.assertEqual(c.exit_code(5), 0)
        self.assertEqual(self.mailbox("bob"), b"")

    def test_ctrl_c_while_typing_drops_the_mail(self):
        c = self.client(user="alice", ctty=True)
        for typed in ([], ["From: alice@h", "To: bob@h", "Subject: s", "half a bo"]):
            c.line("2")
            c.expect('with only ".".\n')
            for line in typed:
                c.line(line)
            c.send("\x03")                  # Ctrl-C, from the terminal: SIGINT
            self.assertIn("Mail not sent.\n", c.expect(MENU))
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: after", "x", "."])
        self.assertEqual(len(self.records("bob")), 1)
        self.assertIn(b"Subject: after", self.records("bob")[0])
        c.send("\x03")                      # at the menu it ends the client, as before
        self.assertEqual(c.exit_code(), -signal.SIGINT)
        self.assertTrue(termios.tcgetattr(c.slave)[3] & termios.ECHO)

    def test_ctrl_c_right_after_a_line_drops_the_mail(self):
        """A line, then Ctrl-C a moment later: the Ctrl-C may come between
        the client's check of its flag and its read of the line it saw. The
        read must not wait for ever for a line the Ctrl-C threw away (the
        old client hung so in about one run in ten of this test)."""
        c = self.client(user="alice", ctty=True)
        for i in range(60):
            c.line("2")
            c.expect('with only ".".\n')
            c.send("From: alice@h\n")
            time.sleep(i % 10 * 0.0002)         # the Ctrl-C a little later each time
            c.send("\x03")
            self.assertIn("Mail not sent.\n", c.expect(MENU))
        self.assertEqual(self.records("bob"), [])
        self.quit(c)

    def test_verbose_shows_the_dialogue(self):
        c = self.client("-v", user="alice")
        self.send_mail(c, ["From: alice@h", "To: alice@h", "Subject: s", ".dot", "."])
        c.line("1")
        c.expect("Enter mail no. to see: ")
        c.line("-1")
        c.expect(MENU)
        self.quit(c)
        err = c.stderr()
        for want in ("S: 220 ", "C: EHLO ", "S: 250-", "C: MAIL FROM:<alice@h>",
                     "C: RCPT TO:<alice@h>", "C: DATA", "S: 354 ", "C: Subject: s", "C: ..dot",
                     "C: .\n", "S: 250 2.0.0", "C: QUIT", "S: 221 ",
                     "C: AUTH CRAM-MD5", "S: 334 ", "C: ****", "S: 235 2.7.0",
                     "S: +OK", "C: APOP alice ****", "C: CAPA", "C: STAT",
                     "C: TOP 1 0", "S: Subject: s", "C: QUIT"):
            self.assertIn(want, err)
        self.assertNotIn("alicepw", err)
        self.assertNotIn("S: ", c.text)         # the dialogue is on stderr only


class ManageMail(ClientTest):
    """Menu 1: list, read, delete, with the mailbox checked on disk."""

    def test_send_list_read_delete(self):
        c = self.client(user="bob")
        self.send_mail(c, ["From: alice@mx.test.example", "To: bob@mx.test.example",
                           "Subject: First", "one", ".x", "..", "."])
        self.assertEqual(len(self.records("bob")), 1)       # on disk at once
        self.assertEqual(self.bodies("bob"), [b"one\r\n.x\r\n..\r\n"])
        self.send_mail(c, ["From: carol@mx.test.example", "To: bob@mx.test.example",
                           "Subject: Second", "two", "."])
        self.assertEqual(len(self.records("bob")), 2)
        before = self.mailbox("bob")
        c.line("1")
        listing = c.expect("Enter mail no. to see: ")
        rows = listing.split("\n")
        self.assertEqual(rows[1], TABLE_HEAD)
        self.assertRegex(rows[2], r"^1        alice@mx.test.example     "
                                  r"\d{4}-\d\d-\d\d : \d\d : \d\d  First$")
        self.assertRegex(rows[3], r"^2        carol@mx.test.example     "
                                  r"\d{4}-\d\d-\d\d : \d\d : \d\d  Second$")
        when = time.strftime("%Y-%m-%d : %H : ", time.localtime())
        self.assertIn(when, rows[2])
        c.line("1")
        shown = c.expect(KEY_PROMPT)
        self.assertRegex(shown, r"----- mail no. 1 -----\nFrom: alice@mx.test.example\n"
                                r"To: bob@mx.test.example\nSubject: First\n"
                                r"Received: \d{4}-\d\d-\d\d : \d\d : \d\d\nDate: \w\w\w, ")
        self.assertIn(rows[2][35:55], shown)            # the list's time
        self.assertIn("\n\none\n.x\n..\n----- end of mail no. 1 -----\n", shown)
        self.assertNotIn("Return-Path", shown)
        c.send("r")                                     # the source, as stored
        source = c.expect(KEY_PROMPT)
        self.assertIn("r\n\n----- source of mail no. 1 -----\nReturn-Path: "
                      "<alice@mx.test.example>\nReceived: from ", source)
        self.assertIn("\nMessage-ID: <", source)
        self.assertIn("\n\none\n.x\n..\n----- end of mail no. 1 -----\n", source)
        self.assertEqual(self.mailbox("bob"), before)   # reading deletes nothing
        c.send("x")                                     # any other key: the list again
        again = c.expect("Enter mail no. to see: ")
        self.assertIn(TABLE_HEAD, again)
        self.assertIn("Second", again)
        c.line("2")
        c.expect(KEY_PROMPT)
        c.send("d")                 # deleted at once, then the list afresh
        listing = c.expect("Enter mail no. to see: ")
        self.assertEqual(listing.split("\n")[:3], ["d", "Mail deleted.", TABLE_HEAD])
        self.assertIn("First", listing)
        self.assertNotIn("Second", listing)
        recs = self.records("bob")
        self.assertEqual(len(recs), 1)
        self.assertIn(b"Subject: First", recs[0])
        c.line("1")
        c.expect(KEY_PROMPT)
        c.send("d")                 # the last one: the list is empty, the menu
        self.assertEqual(c.expect(MENU), "d\nMail deleted.\nNo mails in your mailbox.\n\n"
                         + MENU)
        self.assertEqual(self.records("bob"), [])
        c.line("1")
        c.expect("No mails in your mailbox.\n\n" + MENU)
        self.quit(c)

    def test_delete_over_a_pipe_then_the_list_again(self):
        for subject in ("one", "two", "three"):
            self.inject("alice@h", "bob@h", subject, subject + "\r\n")
        c = self.client(tty=False)
        c.send("bob\nbobpw\n1\n2\nd\n-1\n3\n")
        self.assertEqual(c.exit_code(), 0)
        out = c.text
        self.assertIn(KEY_PROMPT + "Mail deleted.\n" + TABLE_HEAD, out)
        after = out.split("Mail deleted.\n", 1)[1]
        self.assertRegex(after, r"\n1 +alice@h .* one\n2 +alice@h .* three\n"
                                r"Enter mail no. to see: \n")
        self.assertNotIn(" two\n", after)
        self.assertEqual([b.decode() for b in self.bodies("bob")], ["one\r\n", "three\r\n"])

    def test_raw_c1_and_stray_bytes_shown_as_question_marks(self):
        body = b"a\x9b31mb \x1b[2J \x1b]0;t\x07 c\xe9d \xc3\xa9 \xed\xa0\x80 \xe2\x82\xac\r\n"
        msg = b"From: alice@h\r\nTo: bob@h\r\nSubject: raw \x9b2J \xff x\r\n\r\n" + body
        with smtplib.SMTP("127.0.0.1", self.smtp.port, timeout=10) as s:
            s.sendmail("alice@h", ["bob@h"], msg)
        c = self.client(user="bob")
        c.line("1")
        self.assertIn("  raw ?2J ? x\n", c.expect("Enter mail no. to see: "))
        c.line("1")
        self.assertIn("\na?31mb ?[2J ?]0;t? c?d \u00e9 ??? \u20ac\n", c.expect(KEY_PROMPT))
        c.send("x")
        c.expect("Enter mail no. to see: ")
        c.line("-1")
        c.expect(MENU)
        self.quit(c)
        for byte in (b"\x9b", b"\x1b", b"\x07", b"\xff", b"\xe9"):
            self.assertNotIn(byte, c.raw)

    def test_empty_mailbox(self):
        c = self.client(user="carol")
        c.line("1")
        self.assertEqual(c.expect(MENU), "1\nNo mails in your mailbox.\n\n" + MENU)
        self.quit(c)

    def test_number_prompt(self):
        self.inject("alice@h", "bob@h", "only one", "x\r\n")
        c = self.client(user="bob")
        c.line("1")
        c.expect("Enter mail no. to see: ")
        for typed in ("2", "0", "-2", "99999999999999999999999"):
            c.line(typed)
            self.assertEqual(c.expect("Enter mail no. to see: "),
                             typed + "\nMail no. out of range, give again\nEnter mail no. to see: ")
        for typed in ("abc", "1x", "one", "+1", "1.0", "0x1", "- 1", "--1"):
            c.line(typed)
            self.assertEqual(c.expect("Enter mail no. to see: "),
                             typed + "\nPlease enter a number (-1 for the menu)\n"
                             "Enter mail no. to see: ")
        c.line("")                  # an empty line: only the prompt again
        self.assertEqual(c.expect("Enter mail no. to see: "), "\nEnter mail no. to see: ")
        c.line("001")               # a plain integer
        self.assertIn("Subject: only one\n", c.expect(KEY_PROMPT))
        c.send("x")
        c.expect("Enter mail no. to see: ")
        c.line(" -1 ")
        c.expect(MENU)
        self.assertEqual(len(self.records("bob")), 1)
        self.quit(c)

    def test_list_fetched_afresh(self):
        self.inject("alice@h", "bob@h", "early", "1\r\n")
        c = self.client(user="bob")
        c.line("1")
        c.expect("Enter mail no. to see: ")
        c.line("1")
        c.expect(KEY_PROMPT)
        self.inject("carol@h", "bob@h", "late arrival", "2\r\n")
        c.send(" ")
        listing = c.expect("Enter mail no. to see: ")
        self.assertIn("late arrival", listing)
        self.assertIn("\n2        carol@h ", listing)
        c.line("-1")
        c.expect(MENU)
        self.assertEqual(len(self.records("bob")), 2)
        self.quit(c)

    def test_c1_controls_in_a_mail_shown_as_question_marks(self):
        self.inject("alice@h", "bob@h", "c1 \u009b2J here", "a\u009b31mb \u00e9\u0085\r\n")
        c = self.client(user="bob")
        c.line("1")
        self.assertIn("  c1 ?2J here", c.expect("Enter mail no. to see: "))
        c.line("1")
        self.assertIn("\na?31mb \u00e9?\n", c.expect(KEY_PROMPT))
        c.send("x")
        c.expect("Enter mail no. to see: ")
        c.line("-1")
        c.expect(MENU)
        self.assertNotIn("\u009b", c.text)
        self.quit(c)

    def test_long_fields_truncated_in_columns(self):
        sender = "a" * 40 + "@example.org"
        subject = "S" * 50
        self.inject(sender, "bob@h", subject, "x\r\n")
        self.inject("b@h", "bob@h", "short", "x\r\n")
        c = self.client(user="bob")
        c.line("1")
        rows = c.expect("Enter mail no. to see: ").split("\n")
        self.assertEqual(rows[2][:9 + 24], "1        " + "a" * 21 + "...")
        self.assertEqual(rows[2].index(" : "), rows[3].index(" : "))
        self.assertTrue(rows[2].endswith("S" * 19 + "..."))
        c.line("1")
        self.assertIn("Subject: " + subject + "\n", c.expect(KEY_PROMPT))
        c.send("q")
        c.expect("Enter mail no. to see: ")
        c.line("-1")
        self.quit(c)

    def test_wrong_password_asked_again(self):
        # caught at the start by a POP3 login, before any mail is typed
        c = self.client()
        c.expect("Username: ")
        c.line("bob")
        c.expect("Password: ")
        for typo in ("wrongpw", "bobpwx"):
            c.line(typo)
            self.assertRegex(c.expect("Password: "),
                             r"^\nLogin failed: -ERR \[AUTH\] \S.*\nPassword: $")
        c.line("bobpw")
        self.assertEqual(c.expect(MENU), "\n\n" + MENU)
        c.line("1")
        c.expect("No mails in your mailbox.\n\n" + MENU)     # the right one is kept
        self.quit(c)
        self.assertEqual(c.text.count("Login failed"), 2)

    def test_three_wrong_passwords_end_the_client(self):
        c = self.client(tty=False)
        c.send("bob\nx1\nx2\nx3\n2\n")
        self.assertEqual(c.exit_code(), 3)
        self.assertEqual(c.text.count("Login failed: -ERR [AUTH] "), 3)
        self.assertEqual(c.text.count("Password: "), 3)
        self.assertNotIn("Enter option", c.text)

    def test_pop_server_down(self):
        port = self.dead_port()
        c = self.client(user="bob", pop_port=port)
        c.line("1")
        self.assertEqual(c.expect(MENU), "1\nCannot connect to 127.0.0.1:%d: "
                                         "Connection refused\n\n%s" % (port, MENU))
        self.quit(c)

    def test_eof_at_number_and_key(self):
        self.inject("alice@h", "bob@h", "keep me", "x\r\n")
        for at_key in (False, True):
            c = self.client(user="bob")
            c.line("1")
            c.expect("Enter mail no. to see: ")
            if at_key:
                c.line("1")
                c.expect(KEY_PROMPT)
            c.eof()
            self.assertEqual(c.exit_code(5), 0)
            self.assertEqual(len(self.records("bob")), 1)    # nothing deleted

    def test_arrow_key_is_one_key(self):
        self.inject("alice@h", "bob@h", "stays", "x\r\n")
        c = self.client(user="bob")
        c.line("1")
        c.expect("Enter mail no. to see: ")
        c.line("1")
        c.expect(KEY_PROMPT)
        c.send("\x1b[A")            # cursor up: ESC [ A, one key, not "d"
        listing = c.expect("Enter mail no. to see: ")
        self.assertTrue(listing.startswith("\n" + TABLE_HEAD + "\n1  "), listing)
        self.assertIn("  stays\n", listing)
        c.line("-1")                 # not "[A-1": the rest of the key is gone
        self.assertEqual(c.expect(MENU), "-1\n\n" + MENU)
        self.assertEqual(len(self.records("bob")), 1)
        self.quit(c)

    def test_other_key_deletes_nothing(self):
        self.inject("alice@h", "bob@h", "stays", "x\r\n")
        before = self.mailbox("bob")
        c = self.client(user="bob")
        for key in ("D", "\n", "q"):
            c.line("1")
            c.expect("Enter mail no. to see: ")
            c.line("1")
            c.expect(KEY_PROMPT)
            c.send(key)
            c.expect("Enter mail no. to see: ")
            c.line("-1")
            c.expect(MENU)
        self.assertEqual(self.mailbox("bob"), before)
        self.quit(c)



def row(num, sender, when, subject):
    """One row of the list as the client prints it (the columns 7, 24, 20)."""
    return "%-7s  %-24s  %-20s  %s" % (num, sender, when, subject)


class AssignmentMailbox(ClientTest):
    """Records as the assignment stores them, "Received: <date> : <hour> :
    <minute>" and no Date header, put into the spool by hand (CRLF lines,
    ".\r\n" after each) and served by the real popserver."""

    def listing(self, env=None):
        """Log in as bob (TZ XYZ-05:30 unless env says), list, back to the
        menu, quit; the rows of the list."""
        c = Client(self, "127.0.0.1", self.smtp.port, self.pop.port,
                   env=env or {"TZ": "XYZ-05:30"})
        c.login("bob", "bobpw")
        c.line("1")
        rows = c.expect("Enter mail no. to see: ").split("\n")
        c.line("-1")
        c.expect(MENU)
        self.quit(c)
        self.assertEqual(rows[1], TABLE_HEAD)
        return rows[2:-1]

    def test_date_taken_from_the_received_line(self):
        # The assignment's own layout (no blank line before the body), then
        # other spellings of the date; the time is the server's clock as
        # written, so the client's zone (UTC+05:30 here) does not move it.
        self.put("bob",
                 "From: alice@h\r\nTo: bob@h\r\nSubject: as assigned\r\n"
                 "Received: 29 Nov 2026 : 14 : 05\r\nthe body\r\n",
                 "From: carol@h\r\nTo: bob@h\r\nSubject: iso\r\n"
                 "Received: 2026-12-01 : 9 : 07\r\n\r\nx\r\n",
                 "From: dave@h\r\nTo: bob@h\r\nSubject: weekday\r\n"
                 "Received:  Tue, 1 Dec 2026 : 23 : 59 \r\n\r\nx\r\n",
                 "From: erin@h\r\nTo: bob@h\r\nSubject: day first\r\n"
                 "Received: 29/02/2028 : 00 : 00\r\n\r\nx\r\n")
        self.assertEqual(self.listing(), [
            row(1, "alice@h", "2026-11-29 : 14 : 05", "as assigned"),
            row(2, "carol@h", "2026-12-01 : 09 : 07", "iso"),
            row(3, "dave@h", "2026-12-01 : 23 : 59", "weekday"),
            row(4, "erin@h", "2028-02-29 : 00 : 00", "day first")])

    def test_read_and_delete_such_a_record(self):
        record = ("From: alice@h\r\nTo: bob@h\r\nSubject: as assigned\r\n"
                  "Received: 29 Nov 2026 : 14 : 05\r\nline one\r\n..dot\r\n")
        self.put("bob", record, record.replace("as assigned", "second"))
        c = self.client(user="bob")
        c.line("1")
        self.assertIn(row(2, "alice@h", "2026-11-29 : 14 : 05", "second"),
                      c.expect("Enter mail no. to see: "))
        c.line("1")
        self.assertIn("\nSubject: as assigned\nReceived: 2026-11-29 : 14 : 05\n\n"
                      "line one\n.dot\n----- end of mail no. 1 -----\n", c.expect(KEY_PROMPT))
        c.send("r")
        self.assertIn("\nSubject: as assigned\nReceived: 29 Nov 2026 : 14 : 05\n"
                      "line one\n.dot\n----- end of mail no. 1 -----\n", c.expect(KEY_PROMPT))
        c.send("d")
        self.assertIn(row(1, "alice@h", "2026-11-29 : 14 : 05", "second") + "\n",
                      c.expect("Enter mail no. to see: "))
        c.line("-1")
        c.expect(MENU)
        self.quit(c)
        self.assertEqual(len(self.records("bob")), 1)

    def test_a_date_header_that_parses_comes_first(self):
        stamp = "Received: 29 Nov 2026 : 14 : 05\r\n"
        self.put("bob",
                 "From: a@h\r\nSubject: dated\r\nDate: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
                 + stamp + "\r\nx\r\n",
                 "From: b@h\r\nSubject: bad date\r\nDate: someday\r\n" + stamp + "\r\nx\r\n")
        self.assertEqual(self.listing(), [
            row(1, "a@h", "2026-11-30 : 13 : 30", "dated"),
            row(2, "b@h", "2026-11-29 : 14 : 05", "bad date")])

    def test_received_lines_that_do_not_read_show_question_marks(self):
        lines = ["31 Nov 2026 : 14 : 05", "29 Nov 2026 : 24 : 00", "29 Nov 2026 : 14 : 60",
                 "29 Nov 2026 14:05", "29 Nov 2026 : 14", "Someday 29 Nov 2026 : 1 : 2",
                 "29 Nov 26 : 14 : 05"]
        self.put("bob", *("From: a@h\r\nSubject: s%d\r\nReceived: %s\r\n\r\nx\r\n" % (i, l)
                          for i, l in enumerate(lines)))
        self.assertEqual(self.listing(),
                         [row(i + 1, "a@h", "?", "s%d" % i) for i in range(len(lines))])

def as_bytes(text):
    """What a fake server sends: str as UTF-8, bytes (any octets) as they are."""
    return text if isinstance(text, bytes) else text.encode()


class FakeServer:
    """A scripted server for what the real ones never do: answer lines in
    turn to each client line, or stay silent. Bounded: one connection."""

    def __init__(self, greeting, answers, then=()):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.got = []
        sessions = [(greeting, answers)] + list(then)   # one per connection
        self.thread = threading.Thread(target=self.run_all, args=(sessions,), daemon=True)
        self.thread.start()

    def run_all(self, sessions):
        for greeting, answers in sessions:
            self.run(greeting, answers)

    def run(self, greeting, answers):
        self.sock.settimeout(15)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(15)
            f = conn.makefile("rb")
            if greeting is None:
                time.sleep(5)           # a server that never answers
                return
            conn.sendall(as_bytes(greeting))
            for answer in answers:
                line = f.readline()
                if not line:
                    return
                self.got.append(line.decode().rstrip("\r\n"))
                if callable(answer):
                    answer = answer(f)
                conn.sendall(as_bytes(answer))

    def close(self):
        self.sock.close()
        self.thread.join(10)


class OtherServers(ClientTest):
    """Correct against any RFC-compliant server: HELO fallback, multi-line
    replies, no CAPA/TOP, silent servers time out."""

    def fake(self, greeting, answers, then=()):
        server = FakeServer(greeting, answers, then)
        self.addCleanup(server.close)
        return server

    def fake_smtp(self, greeting, answers):
        """An SMTP fake: first the check before the mail is typed (the
        greeting, QUIT), then the session that sends it."""
        return self.fake(greeting, ["221 bye\r\n"], then=[(greeting, answers)])

    def test_helo_fallback_and_multiline_greeting(self):
        def data(f):
            while f.readline() not in (b".\r\n", b""):
                pass
            return "250 queued\r\n"
        s = self.fake_smtp("220-first line\r\n220-second\r\n220 ready\r\n",
                           ["502 5.5.1 no EHLO here\r\n", "250 hi\r\n", "250 ok\r\n",
                            "250 ok\r\n", "354 go\r\n", data, "221 bye\r\n"])
        c = self.client(user="alice", smtp_port=s.port)
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: s", "x", "."])
        self.quit(c)
        s.thread.join(10)
        self.assertEqual([g.split()[0] for g in s.got],
                         ["QUIT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "From:", "QUIT"])

    def test_smtp_error_reply_line_shown_whole(self):
        s = self.fake_smtp("220 x\r\n", ["250-x\r\n250 SIZE 10\r\n",
                                         "451-4.3.0 first\r\n451 4.3.0 Try again later\r\n",
                                         "221 bye\r\n"])
        c = self.client(user="alice", smtp_port=s.port)
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: s", "x", "."],
                       expect="Error in sending mail: 451 4.3.0 Try again later\n")
        self.quit(c)

    def test_server_text_cannot_drive_the_terminal(self):
        smtp = self.fake("554 5.3.2 \x1b[2J\x1b]0;owned\x07 \u009b31m go away\r\n",
                         ["221 bye\r\n"])
        busy = ("+OK hi\r\n", ["-ERR no CAPA\r\n", "+OK\r\n",
                                "-ERR [SYS/TEMP] \x1b[31mno such user\r\n", "+OK bye\r\n"])
        pop = self.fake(*busy, then=[busy])      # the check at the start, then menu 1
        c = self.client(user="alice", smtp_port=smtp.port, pop_port=pop.port)
        self.send_refused(c, "Error in sending mail: 554 5.3.2 ?[2J?]0;owned? ?31m go away\n")
        c.line("1")
        c.expect("Login failed: -ERR [SYS/TEMP] ?[31mno such user\n")
        c.expect(MENU)
        self.quit(c)
        self.assertNotIn("\x1b", c.text)

    def test_8bitmime_only_from_the_ehlo_keyword(self):
        def data(f):
            while f.readline() not in (b".\r\n", b""):
                pass
            return "250 queued\r\n"
        for greeting, ehlo, param in (
                ("220-8BITMIME in the greeting\r\n220 hi\r\n", "250-x\r\n250 8BITMIMEX\r\n", ""),
                ("220 hi\r\n", "250-x\r\n250-8bitmime\r\n250 SIZE 100\r\n", " BODY=8BITMIME")):
            s = self.fake_smtp(greeting, [ehlo, "250 ok\r\n", "250 ok\r\n", "354 go\r\n",
                                          data, "221 bye\r\n"])
            c = self.client(user="alice", smtp_port=s.port)
            self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: s", "caf\u00e9", "."])
            self.quit(c)
            s.thread.join(10)
            self.assertEqual(s.got[2], "MAIL FROM:<alice@h>" + param)

    def test_smtp_greeting_refused(self):
        s = self.fake("554 5.3.2 go away\r\n", ["221 bye\r\n"])
        c = self.client(user="alice", smtp_port=s.port)
        self.send_refused(c, "Error in sending mail: 554 5.3.2 go away\n")
        self.quit(c)
        s.thread.join(10)
        self.assertEqual(s.got, ["QUIT"])

    def test_servers_closing_early(self):
        smtp = self.fake_smtp("220 hello\r\n", [""])  # reads EHLO, then closes
        pop = self.fake("+OK hello\r\n", [""],        # reads CAPA, then closes
                        then=[("+OK hello\r\n", [""])])
        c = self.client(user="alice", smtp_port=smtp.port, pop_port=pop.port)
        self.assertIn("Error in reading mail: connection closed by the server\n"
                      "The password was not checked.\n", c.text)
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: s", "x", "."],
                       expect="Error in sending mail: connection closed by the server\n")
        c.line("1")
        c.expect("Error in reading mail: connection closed by the server\n\n" + MENU)
        self.quit(c)

    def test_silent_servers_time_out(self):
        smtp, pop = self.fake(None, []), self.fake(None, [])
        c = self.client("-t", "1", user="alice", smtp_port=smtp.port, pop_port=pop.port)
        started = time.time()
        self.send_refused(c, "Error in sending mail: timed out waiting for the server\n")
        c.line("1")
        c.expect("Error in reading mail: timed out waiting for the server\n\n" + MENU)
        self.assertLess(time.time() - started, 8)
        self.quit(c)

    def test_pop_without_capa_or_top(self):
        # RFC 1939 alone: no CAPA, so RETR for the headers; no UIDL, so the
        # mail is read and deleted by its number; a session per step
        mail = ("Received: from x\r\n\tby y; Tue, 1 Dec 2026 10:20:30 +0000\r\n"
                "From: Alice Example <alice@h>\r\nSubject:\r\n folded subject\r\n\r\n"
                "..stuffed\r\nbody\r\n.\r\n")
        login = ["-ERR what is CAPA?\r\n", "+OK\r\n", "+OK\r\n", "+OK 1 99\r\n"]
        no_uidl = "-ERR what is UIDL?\r\n"
        s = self.fake("+OK the login checked\r\n", login[:3] + ["+OK bye\r\n"],
                      then=[("+OK whatever you like\r\n",
                             login + ["+OK\r\n" + mail, no_uidl, "+OK bye\r\n"]),
                            ("+OK 2\r\n", login + [no_uidl, "+OK\r\n" + mail, "+OK bye\r\n"]),
                            ("+OK 3\r\n", login + [no_uidl, "+OK\r\n", "+OK bye\r\n"]),
                            ("+OK 4\r\n", ["-ERR no\r\n", "+OK\r\n", "+OK\r\n",
                                           "+OK 0 0\r\n", "+OK bye\r\n"])])
        c = Client(self, "127.0.0.1", self.smtp.port, s.port, env={"TZ": "UTC"})
        c.login("bob", "bobpw")
        c.line("1")
        rows = c.expect("Enter mail no. to see: ").split("\n")
        self.assertEqual(rows[2], "1        Alice Example             2026-12-01 : 10 : 20  "
                                  "folded subject")
        c.line("1")
        self.assertIn("From: Alice Example <alice@h>\nSubject: folded subject\n"
                      "Received: 2026-12-01 : 10 : 20\n\n.stuffed\nbody\n----- end",
                      c.expect(KEY_PROMPT))
        c.send("d")
        c.expect("Mail deleted.\nNo mails in your mailbox.\n\n" + MENU)
        self.quit(c)
        s.thread.join(10)
        # no APOP timestamp, no CAPA, so no SASL: USER and PASS, said once
        self.assertEqual(c.text.count("Note: the server offers no CRAM-MD5 or APOP: "
                                      "the password crosses the network in clear.\n"), 1)
        session = ["CAPA", "USER bob", "PASS bobpw", "STAT"]
        self.assertEqual(s.got, session[:3] + ["QUIT"]                      # the check
                         + session + ["RETR 1", "UIDL 1", "QUIT"]           # the list
                         + session + ["UIDL 1", "RETR 1", "QUIT"]           # the mail
                         + session + ["UIDL 1", "DELE 1", "QUIT"]           # d
                         + session + ["QUIT"])                              # the list again

    def test_failed_update_reported_and_mail_still_listed(self):
        mail = "From: a@h\r\nSubject: keep\r\n\r\nbody\r\n.\r\n"
        login = ["-ERR no CAPA\r\n", "+OK\r\n", "+OK\r\n", "+OK 1 40\r\n"]
        no_uidl = "-ERR no UIDL\r\n"
        listing = login + ["+OK\r\n" + mail, no_uidl, "+OK bye\r\n"]
        s = self.fake("+OK hi\r\n", login[:3] + ["+OK bye\r\n"],
                      then=[("+OK hi\r\n", listing),
                            ("+OK hi\r\n", login + [no_uidl, "+OK\r\n" + mail, "+OK bye\r\n"]),
                            ("+OK hi\r\n", login + [no_uidl, "+OK marked\r\n",
                                                    "-ERR some deleted messages not removed\r\n"]),
                            ("+OK hi\r\n", listing)])
        c = self.client(user="bob", pop_port=s.port)
        c.line("1")
        c.expect("Enter mail no. to see: ")
        c.line("1")
        c.expect(KEY_PROMPT)
        c.send("d")         # RFC 1939 6: -ERR to QUIT, so nothing was deleted
        listing = c.expect("Enter mail no. to see: ")
        self.assertTrue(listing.startswith(
            "d\nError in deleting mail: -ERR some deleted messages not removed\n"
            + TABLE_HEAD + "\n1        a@h  "), listing)
        c.line("-1")
        c.expect(MENU)
        self.quit(c)
        s.thread.join(10)
        self.assertEqual(s.got[21:27], ["STAT", "UIDL 1", "DELE 1", "QUIT", "CAPA", "USER bob"])

    def test_one_command_at_a_time_even_with_pipelining(self):
        # RFC 2920 is optional: the client waits for each reply (DATA's text aside)
        early = []
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)

        def serve():
            listener.settimeout(15)
            conn, _ = listener.accept()         # the check before the mail is typed
            with conn:
                conn.sendall(b"220 hi\r\n")
                conn.settimeout(15)
                if conn.recv(100) == b"QUIT\r\n":
                    conn.sendall(b"221 bye\r\n")
            conn, _ = listener.accept()
            conn.settimeout(15)
            with conn:
                conn.sendall(b"220-hi\r\n220 there\r\n")
                buf, in_data = b"", False
                replies = iter([b"250-x\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                                b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
                                b"250 queued\r\n", b"221 bye\r\n"])
                while True:
                    while b"\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    line, buf = buf.split(b"\r\n", 1)
                    if in_data and line != b".":
                        continue
                    in_data = False
                    time.sleep(0.1)         # a pipelining client would send on meanwhile
                    ready, _, _ = select.select([conn], [], [], 0)
                    if buf or ready:
                        early.append(line)
                    reply = next(replies)
                    in_data = reply.startswith(b"354")
                    conn.sendall(reply)
        server = threading.Thread(target=serve, daemon=True)
        server.start()
        c = self.client(user="alice", smtp_port=listener.getsockname()[1])
        self.send_mail(c, ["From: alice@h", "To: bob@h, carol@h", "Subject: s", "x", "."])
        self.quit(c)
        server.join(10)
        self.assertEqual(early, [])

    def test_received_date_in_local_time(self):
        self.inject("alice@h", "bob@h", "tz", "x\r\n")
        stamp = re.search(rb"; (.*)\r\n", self.mailbox("bob")).group(1).decode()
        when = email.utils.parsedate_tz(stamp)
        utc = calendar.timegm(when[:9]) - when[9]
        local = time.gmtime(utc + 5 * 3600 + 1800)      # TZ XYZ-05:30 is UTC+05:30
        c = Client(self, "127.0.0.1", self.smtp.port, self.pop.port,
                   env={"TZ": "XYZ-05:30"})
        c.login("bob", "bobpw")
        c.line("1")
        rows = c.expect("Enter mail no. to see: ").split("\n")
        self.assertIn(time.strftime("%Y-%m-%d : %H : %M", local), rows[2])
        c.line("-1")
        c.expect(MENU)
        self.quit(c)

    def test_ipv6_address_and_host_name(self):
        smtp6 = self.start("smtpmail", "-n", "mx6", "-d", self.spool, "-u", self.userfile,
                           "-l", "::1", common=False)
        c = Client(self, "::1", smtp6.port, self.pop.port)
        c.login("alice", "alicepw")
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: six", "x", "."])
        c.line("1")
        c.expect("Cannot connect to [::1]:%d: Connection refused\n" % self.pop.port)
        self.quit(c)
        self.assertIn(b"Subject: six", self.mailbox("bob"))
        c = Client(self, "localhost", self.smtp.port, self.pop.port)
        c.login("bob", "bobpw")
        c.line("1")
        self.assertIn("Subject", c.expect("Enter mail no. to see: "))
        c.line("-1")
        c.expect(MENU)
        self.quit(c)


def drip(data, interval, ready, delay=0):
    """A server that waits delay seconds, then sends data one byte every
    interval seconds: a listening socket (its port appended to ready) and
    the thread that serves it once."""
    sock = socket.create_server(("127.0.0.1", 0))
    ready.append(sock.getsockname()[1])

    def serve():
        sock.settimeout(15)
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        time.sleep(delay)
        with conn:
            for byte in data:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return      # the client gave up: the point of the test
                time.sleep(interval)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, thread


class ClaimingPop:
    """A POP3 server that claims count mails and makes up the headers of
    each on demand (TOP n 0, UIDL n); it serves `sessions` connections one
    after the other and notes every command."""

    def __init__(self, count, sessions=2):
        self.count, self.got = count, []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.run, args=(sessions,), daemon=True)
        self.thread.start()

    def answer(self, cmd):
        verb, _, arg = cmd.partition(" ")
        n = arg.split(" ")[0]
        return {"CAPA": "+OK\r\nTOP\r\nUIDL\r\n.\r\n",
                "STAT": "+OK %d 0\r\n" % self.count,
                "TOP": "+OK\r\nFrom: x@h\r\nSubject: mail %s\r\n\r\n.\r\n" % n,
                "UIDL": "+OK %s id%s\r\n" % (n, n)}.get(verb, "+OK\r\n")

    def run(self, sessions):
        self.sock.settimeout(15)
        for _ in range(sessions):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as f:
                conn.settimeout(15)
                conn.sendall(b"+OK a billion mails\r\n")
                for line in f:
                    cmd = line.decode().rstrip("\r\n")
                    self.got.append(cmd)
                    conn.sendall(self.answer(cmd).encode())
                    if cmd == "QUIT":
                        break

    def close(self):
        self.sock.close()
        self.thread.join(10)


def gmail_style():
    """A mail as Gmail sends one: multipart/mixed holding a
    multipart/alternative (text/plain in base64, text/html) and a PDF."""
    msg = EmailMessage()
    msg["From"] = "Gm\u00e4il User <gmail.user@example.org>"
    msg["To"] = "bob@h"
    msg["Subject"] = "Gmail-style: r\u00e9sum\u00e9 and report \u2713 attached"
    msg["Date"] = "Mon, 23 Nov 2026 13:15:40 +0000"
    msg.set_content("Hello Bob,\n\nthe r\u00e9sum\u00e9 is below, the report attached.\n"
                    "\u20ac 42\n", cte="base64")
    msg.add_alternative("<html><body><p>Hello <b>Bob</b>,</p><p>the r\u00e9sum\u00e9 "
                        "is below</p></body></html>\n", subtype="html")
    msg.add_attachment(bytes(range(256)) * 40, maintype="application", subtype="pdf",
                       filename="report.pdf")
    return msg


class RealMail(ClientTest):
    """Mail as it really arrives: MIME parts, encoded headers, HTML, wide
    and narrow windows, one time zone; the source one key away."""

    def open_mail(self, c, n, size=None):
        c.line("1")
        listing = c.expect(NUMBER_PROMPT)
        c.line(str(n))
        return listing, c.expect(KEY_PROMPT)

    def test_multipart_with_attachment(self):
        with smtplib.SMTP("127.0.0.1", self.smtp.port, timeout=10) as s:
            s.send_message(gmail_style())
        self.assertIn(b"\r\nSubject: Gmail-style: =?utf-8?b?", self.records("bob")[0])
        c = self.client(user="bob", size=(40, 120), env={"TZ": "XYZ-05:30"})
        listing, mail = self.open_mail(c, 1)
        self.assertIn("\n1        Gm\u00e4il User                ", listing)   # the name
        self.assertTrue(listing.split("\n")[2].endswith(
            "  Gmail-style: r\u00e9sum\u00e9 and report \u2713 attached"), listing)
        self.assertIn("\nFrom: Gm\u00e4il User <gmail.user@example.org>\nTo: bob@h\n"
                      "Subject: Gmail-style: r\u00e9sum\u00e9 and report \u2713 attached\n", mail)
        # the reader's time zone (UTC+05:30 here), as the list has it
        self.assertIn("\nDate: Mon, 23 Nov 2026 18:45:40 +0530\n", mail)
        self.assertIn("\nReceived: " + listing.split("\n")[2][35:55] + "\n", mail)
        self.assertIn("\n\nHello Bob,\n\nthe r\u00e9sum\u00e9 is below, the report attached.\n"
                      "\u20ac 42\n\nAttachment: report.pdf (application/pdf, 10.0 KiB)\n"
                      "----- end of mail no. 1 -----\n", mail)
        self.assertNotRegex(mail, r"[A-Za-z0-9+/]{40}")             # no base64
        self.assertNotIn("<", mail.replace("<gmail.user@example.org>", ""))   # no HTML
        self.assertNotIn("--More--", mail)
        c.send("r")                     # the source: every part as it came, paged
        source = c.expect("--More--")
        self.assertIn("----- source of mail no. 1 -----\nReturn-Path: ", source)
        self.assertIn("\nSubject: Gmail-style: =?utf-8?b?", source)
        # the key's line, then a screenful: 39 rows and the last one for --More--
        self.assertEqual(source.count("\n"), 1 + 39)
        c.send("q")
        c.expect(KEY_PROMPT)
        c.send("x")
        c.expect(NUMBER_PROMPT)
        c.line("-1")
        self.quit(c)

    def test_encoded_subjects(self):
        b64 = lambda text, cs: base64.b64encode(text.encode(cs)).decode()
        subjects = [
            ("=?ISO-8859-1?Q?Caf=E9_cr=E8me?=", "Caf\u00e9 cr\u00e8me"),
            ("=?iso-8859-1?b?%s?=" % b64("D\u00e9j\u00e0 vu", "latin-1"), "D\u00e9j\u00e0 vu"),
            ("=?UTF-8?Q?=E2=82=AC_100_?= =?UTF-8?Q?for_you?=", "\u20ac 100 for you"),
            ("=?utf-8?B?%s?=" % b64("Gr\u00fc\u00dfe aus K\u00f6ln \u2713", "utf-8"),
             "Gr\u00fc\u00dfe aus K\u00f6ln \u2713"),
            ("Re: =?utf-8?q?caf=C3=A9?= time", "Re: caf\u00e9 time"),
            ("=?UTF-8?Q?split_caf=C3?=\r\n =?UTF-8?Q?=A9?=", "split caf\u00e9"),  # folded, split
            ("=?ISO-8859-15?Q?=A4uro?=", "\u20acuro"),
            ("=?x-unknown?Q?kept?= and =?utf-8?Q?bad word?=", "kept and =?utf-8?Q?bad word?="),
        ]
        self.put("bob", *("From: =?utf-8?q?J=C3=B6rg?= <joerg@h>\r\nTo: bob@h\r\n"
                          "Subject: %s\r\n\r\nx\r\n" % raw for raw, _ in subjects))
        c = self.client(user="bob", size=(40, 120))
        listing, mail = self.open_mail(c, 1)
        rows = listing.split("\n")[2:-1]
        self.assertEqual([r[57:] for r in rows], [want for _, want in subjects])
        self.assertTrue(all(r[9:33] == "%-24s" % "J\u00f6rg" for r in rows), rows)
        self.assertIn("\nFrom: J\u00f6rg <joerg@h>\nTo: bob@h\nSubject: Caf\u00e9 cr\u00e8me\n", mail)
        c.send("x")
        c.expect(NUMBER_PROMPT)
        c.line("-1")
        self.quit(c)

    def test_html_only_mail(self):
        html = ("<!DOCTYPE html><html><head><title>T</title><style>p {color: red}</style>"
                "</head><body><p>Caf=E9 &amp; cr&#232;me</p><script>alert(1)</script>\r\n"
                "<ul><li>one</li><li>two</li></ul>Line<br>break &#8364; &#x263A; &bogus;\r\n"
                "<p>spaced   =\r\n   out</p></body></html>\r\n")
        self.put("bob", "From: a@h\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
                        "Content-Type: text/html; charset=\"iso-8859-1\"\r\n"
                        "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + html)
        c = self.client(user="bob")
        _, mail = self.open_mail(c, 1)
        self.assertIn("Subject: html\n\nCaf\u00e9 & cr\u00e8me\n\n- one\n- two\n\nLine\n"
                      "break \u20ac \u263a &bogus;\n\nspaced out\n----- end of mail no. 1", mail)
        for word in ("color", "alert", "<", "=E9", "T\n"):
            self.assertNotIn(word, mail)
        c.send("x")
        c.expect(NUMBER_PROMPT)
        c.line("-1")
        self.quit(c)

    def test_latin1_terminal(self):
        # the text in the terminal's charset: a locale made for the test
        loc = os.path.join(self.dir, "locale")
        os.mkdir(loc)
        made = subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1",
                               os.path.join(loc, "en_US.iso88591")],
                              capture_output=True, timeout=30) if shutil.which("localedef") else None
        if not made or not os.path.isdir(os.path.join(loc, "en_US.iso88591")):
            self.skipTest("localedef cannot make an ISO-8859-1 locale here")
        self.inject("alice@h", "bob@h", "caf\u00e9 \u20ac5", "na\u00efve \u2713\r\n")
        c = Client(self, "127.0.0.1", self.smtp.port, self.pop.port,
                   env={"LOCPATH": loc, "LC_ALL": "en_US.iso88591"})
        c.login("bob", "bobpw")
        self.open_mail(c, 1)
        self.assertIn(b"  caf\xe9 EUR5\r\n", c.raw)           # the list: EUR for the euro
        self.assertIn(b"\nSubject: caf\xe9 EUR5\r\n", c.raw)
        self.assertIn(b"\nna\xefve ?\r\n", c.raw)              # no check mark in Latin-1
        self.assertNotIn(b"\xc3", c.raw)                         # no UTF-8 at all
        c.send("x")
        c.expect(NUMBER_PROMPT)
        c.line("-1")
        self.quit(c)

    def test_list_columns_follow_the_window(self):
        subject = "".join(chr(ord("a") + i % 26) for i in range(50))
        self.inject("alice@h", "bob@h", subject, "x\r\n")
        for size, shown in (((24, 120), subject), ((24, 80), subject[:19] + "..."),
                            (None, subject[:19] + "...")):
            c = self.client(user="bob", size=size)
            c.line("1")
            rows = c.expect(NUMBER_PROMPT).split("\n")
            self.assertEqual(rows[1], TABLE_HEAD)
            self.assertEqual(rows[2][57:], shown)
            self.assertLess(len(rows[2]), (size or (0, 80))[1])
            c.line("-1")
            self.quit(c)


class Paging(ClientTest):
    """The pager: a screenful, --More--, space, Enter, q; the list too, a
    session per screenful."""

    def test_long_mail(self):
        self.inject("alice@h", "bob@h", "sixty", "".join("line %02d\r\n" % i
                                                        for i in range(1, 61)))
        c = self.client(user="bob", size=(24, 80))
        c.line("1")
        c.expect(NUMBER_PROMPT)
        c.line("1")
        page = c.expect("--More--")
        self.assertEqual(page.count("\n"), 24)     # the typed "1", then 23 rows of mail
        self.assertIn("\n----- mail no. 1 -----\nFrom: alice@h\nTo: bob@h\nSubject: sixty\n", page)
        self.assertTrue(page.endswith("\nline 16\n--More--"), page)
        c.send(" ")                     # a screenful more
        page = c.expect("--More--")
        self.assertTrue(page.startswith("\r        \rline 17\n"), page)
        self.assertTrue(page.endswith("\nline 39\n--More--"), page)
        c.send("\r")                    # Enter: one line more
        self.assertEqual(c.expect("--More--"), "\r        \rline 40\n--More--")
        c.send("q")                     # enough: the key prompt
        self.assertEqual(c.expect(KEY_PROMPT), "\r        \r" + KEY_PROMPT)
        c.send("x")
        c.expect(NUMBER_PROMPT)
        c.line("-1")
        self.quit(c)
        self.assertNotIn("line 41", c.text)

    def test_500_mails(self):
        self.put("bob", *("From: a@h\r\nSubject: m%03d\r\n\r\nbody %d\r\n" % (i, i)
                          for i in range(1, 501)))
        c = self.client(user="bob", size=(24, 80))
        started = time.time()
        c.line("1")
        page = c.expect("--More--")
        rows = page.split("\n")
        self.assertEqual(rows[1], TABLE_HEAD)
        self.assertEqual([r[57:] for r in rows[2:-1]], ["m%03d" % i for i in range(1, 23)])
        c.send(" ")
        rows = c.expect("--More--").replace("\r        \r", "").split("\n")
        self.assertEqual([r[57:] for r in rows[:-1]], ["m%03d" % i for i in range(23, 46)])
        c.send("q")                     # the prompt at once: no 455 rows to wait for
        c.expect(NUMBER_PROMPT)
        self.assertLess(time.time() - started, 8)
        c.line("500")                   # any number of the mailbox, shown or not
        self.assertIn("\nSubject: m500\n", c.expect(KEY_PROMPT))
        c.send("d")
        c.expect("Mail deleted.\n")
        c.expect("--More--")
        c.send("q")
        c.expect(NUMBER_PROMPT)     # keys typed before it are dropped, as after any key
        c.line("-1")
        self.quit(c)
        self.assertEqual(len(self.records("bob")), 499)
        self.assertEqual(self.subjects("bob")[-1], "m499")

    def test_a_billion_mails_reach_the_prompt(self):
        pop = ClaimingPop(1_000_000_000, sessions=2)     # the login checked, the list
        self.addCleanup(pop.close)
        c = self.client(user="bob", pop_port=pop.port, size=(10, 80))
        c.line("1")
        rows = c.expect("--More--").split("\n")
        self.assertEqual(rows[-2][57:], "mail 8")
        c.send("q")
        c.expect(NUMBER_PROMPT)
        c.line("-1")
        self.quit(c)
        pop.thread.join(10)
        self.assertEqual([g for g in pop.got if g.startswith("TOP")],
                         ["TOP %d 0" % n for n in range(1, 9)])
        self.assertEqual(pop.got[-1], "QUIT")


class Sessions(ClientTest):
    """No session, and no lock, while the user thinks; a mail found again
    by its UIDL; every reply bounded by -t; a slow server said so."""

    def pop_session(self):
        p = poplib.POP3("127.0.0.1", self.pop.port, timeout=10)
        p.user("bob")
        p.pass_("bobpw")        # -ERR [IN-USE] would raise here
        return p

    def test_another_client_while_the_user_thinks(self):
        self.inject("alice@h", "bob@h", "shared", "x\r\n")
        c = self.client(user="bob")
        c.line("1")
        c.expect(NUMBER_PROMPT)
        p = self.pop_session()          # while the first sits at the prompt
        self.assertEqual(p.stat()[0], 1)
        p.quit()
        c.line("1")
        c.expect(KEY_PROMPT)
        p = self.pop_session()          # while it shows the mail
        self.assertEqual(p.stat()[0], 1)
        p.quit()
        c.send("x")
        c.expect(NUMBER_PROMPT)
        c.line("-1")
        self.quit(c)

    def test_mail_found_again_by_uidl(self):
        for subject in ("one", "two", "three", "four"):
            self.inject("alice@h", "bob@h", subject, subject + "\r\n")
        c = self.client(user="bob")
        c.line("1")
        c.expect(NUMBER_PROMPT)
        p = self.pop_session()
        p.dele(1)                       # the numbering moves under the list
        p.quit()
        c.line("3")                     # the list's 3: "three", now number 2
        self.assertIn("\nSubject: three\n", c.expect(KEY_PROMPT))
        p = self.pop_session()
        p.dele(1)                       # and again while it is read
        p.quit()
        c.send("d")                     # deletes "three" (now number 1), not number 3
        self.assertIn("d\nMail deleted.\n", c.expect(NUMBER_PROMPT))
        self.assertEqual(self.subjects("bob"), ["four"])
        c.line("1")
        c.expect(KEY_PROMPT)
        p = self.pop_session()
        p.dele(1)                       # gone before the key
        p.quit()
        self.inject("alice@h", "bob@h", "five", "5\r\n")
        c.send("d")
        self.assertIn("d\nMail no. 1 is no longer in the mailbox.\n", c.expect(NUMBER_PROMPT))
        self.assertEqual(self.subjects("bob"), ["five"])
        c.line("-1")
        self.quit(c)

    def test_dripping_servers_bounded_by_t(self):
        ports = []
        pop = drip(b"+OK dripping one byte at a time, slowly\r\n", 0.3, ports)
        smtp = drip(b"220 dripping one byte at a time, slowly\r\n", 0.3, ports)
        for sock, _ in (pop, smtp):
            self.addCleanup(sock.close)
        c = self.client("-t", "1", user="bob", pop_port=ports[0], smtp_port=ports[1])
        for typed, error in (("1", "Error in reading mail"), ("2", "Error in sending mail")):
            started = time.time()
            c.line(typed)
            c.expect(error + ": timed out waiting for the server\n", timeout=12)
            self.assertLess(time.time() - started, 3)     # the greeting would take 12 s
            c.expect(MENU)
        self.quit(c)

    def test_slow_server_says_connecting(self):
        ports = []
        sock, thread = drip(b"220 slow\r\n221 bye\r\n", 0, ports, delay=1)
        self.addCleanup(sock.close)
        c = self.client(user="alice", smtp_port=ports[0])
        c.line("2")
        seen = c.expect('with only ".".\n')
        self.assertIn("2\nconnecting to 127.0.0.1:%d...\nType the mail" % ports[0], seen)
        c.eof()
        c.expect("Mail not sent.\n")
        c.expect(MENU)
        self.quit(c)
