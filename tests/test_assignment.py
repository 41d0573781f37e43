"""The assignment, literally: its directory layout, its dialogue, its
hand-written mailboxes and its user.txt, against the real servers.

The servers run from a directory laid out as the assignment says (user.txt
and one subdirectory per user, nothing else) and get only
"-l 127.0.0.1 <port>" (our tests listen on loopback only); their logs are
kept outside that directory so the layout stays exactly the assignment's.
"""
import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import types

from harness import (MailTest, write_state, Raw, SANITIZER_ENV, Server, binary,
                     free_port)
from test_client import KEY_PROMPT, MENU, Client, close_clients

HOST = socket.gethostname()      # no -n: the servers name themselves so
LAYOUT = "(assignment layout: <login>/mymailbox next to user.txt)"
LOG_RE = re.compile(r"^\S+ (?:smtpmail|popserver)\[\d+\]: (.*)$")
BOM = b"\xef\xbb\xbf"


class LoggedElsewhere(Server):
    """A harness Server whose log lives in logdir, not in its working
    directory; it joins owner (the test's list) before it is waited for,
    so tearDown stops it even when it never starts listening."""

    def __init__(self, prog, args, cwd, port, logdir, owner):
        self.prog, self.port, self.cwd = prog, port, cwd
        self.log_path = os.path.join(logdir, "%s-%d.log" % (prog, port))
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary(prog)] + list(args) + [str(port)],
                                     cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=self.log_file,
                                     env=dict(os.environ, **SANITIZER_ENV))
        owner.append(self)
        self.wait_listening()


def log_messages(text):
    """The messages of a server log, without the time and program[pid] prefix."""
    out = []
    for line in text.splitlines():
        m = LOG_RE.match(line)
        out.append(m.group(1) if m else line)
    return out


def count_lines(server, word):
    return sum(1 for line in server.log().splitlines() if word in line)


def handwritten(messages, eol=b"\n", final_dot=True, bom=False):
    """A mailbox in the assignment's format: the messages' lines, a "." line
    between messages and (final_dot) after the last one."""
    out = BOM if bom else b""
    for i, lines in enumerate(messages):
        out += b"".join(line + eol for line in lines)
        if final_dot or i < len(messages) - 1:
            out += b"." + eol
    return out


def message(tag, body):
    """One message as the assignment stores it: no blank line before the body."""
    return [b"From: a@x", b"To: gb@x", b"Subject: " + tag,
            b"Received: 29 Nov 2026 : 14 : 05"] + body


THREE = [message(b"s1", [b"body of s1"]),
         message(b"s2", [b"body of s2", b"second line of s2"]),
         message(b"s3", [b"body of s3", b"", b"after a blank line in s3"])]


class AssignmentTest(MailTest):
    """A MailTest whose servers run in the assignment's layout: user.txt and
    ag/, gb/ in one directory (self.dir), logs in a sibling directory."""

    users = b"ag agpw\ngb gbpw\n"
    logins = ("ag", "gb")

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="assigntest-")
        self.dir = os.path.join(self.root, "mail")
        self.logdir = os.path.join(self.root, "logs")
        os.mkdir(self.dir)
        os.mkdir(self.logdir)
        self.spool = self.dir
        self.userfile = os.path.join(self.dir, "user.txt")
        with open(self.userfile, "wb") as f:
            f.write(self.users)
        for login in self.logins:
            os.mkdir(os.path.join(self.dir, login))
        self.servers, self.clients = [], []

    def tearDown(self):
        problems = close_clients(self.clients)
        super().tearDown()
        if problems:
            self.fail("sanitizer report from mailclient:\n" + "\n".join(problems))
        shutil.rmtree(self.root, ignore_errors=True)

    def serve(self, prog, *args, cwd=None):
        """prog started from cwd (the layout) with only -l 127.0.0.1 and args."""
        return LoggedElsewhere(prog, ("-l", "127.0.0.1") + args, cwd or self.dir,
                               free_port(), self.logdir, self.servers)

    def both(self, cwd=None):
        return self.serve("smtpmail", cwd=cwd), self.serve("popserver", cwd=cwd)

    def smtp_send(self, smtp, rcpt, subject, body, helo=True):
        """One mail by smtplib, greeting with HELO (or EHLO)."""
        msg = ("From: ag@iitkgp.edu\r\nTo: %s\r\nSubject: %s\r\n\r\n%s\r\n"
               % (rcpt, subject, body))
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as s:
            s.helo("iitkgp.edu") if helo else s.ehlo("iitkgp.edu")
            self.assertEqual(s.sendmail("ag@iitkgp.edu", [rcpt], msg.encode()), {})

    def pop_session(self, pop, login, password):
        p = poplib.POP3("127.0.0.1", pop.port, timeout=10)
        try:
            p.user(login)
            p.pass_(password)
        except poplib.error_proto as e:
            p.close()
            self.fail("POP3 login %s/%s refused: %s" % (login, password, e))
        return p

    def pop_messages(self, pop, login, password, dele=()):
        """[(LIST size, RETR lines)] of a mailbox (STAT checked against LIST);
        the numbers in dele are deleted before QUIT."""
        p = self.pop_session(pop, login, password)
        try:
            count, total = p.stat()
            listing = p.list()[1]
            self.assertEqual(len(listing), count, "STAT and LIST disagree")
            sizes = [int(entry.split()[1]) for entry in listing]
            self.assertEqual(sum(sizes), total, "STAT size is not the sum of LIST")
            got = [(size, p.retr(n)[1]) for n, size in enumerate(sizes, 1)]
            for n in dele:
                p.dele(n)
        finally:
            reply = p.quit()
        self.assertTrue(reply.startswith(b"+OK"), reply)
        return got


# ---------------------------------------------------------------- 1. spool choice

class SpoolChoice(AssignmentTest):
    """Without -d: users/ if it exists, else the directory of the user file."""

    def spool_lines(self, server):
        return [m for m in log_messages(server.log()) if m.startswith("spool")]

    def deliver_and_read(self, smtp, pop, path):
        self.smtp_send(smtp, "gb@iitkgp.edu", "where", "which spool")
        with open(path, "rb") as f:
            self.assertIn(b"\r\nwhich spool\r\n", f.read())
        got = self.pop_messages(pop, "gb", "gbpw")
        self.assertEqual(len(got), 1, "popserver reads another spool than smtpmail")

    def test_users_directory_wins(self):
        os.mkdir(os.path.join(self.dir, "users"))
        smtp, pop = self.both()
        for server in (smtp, pop):
            self.assertEqual(self.spool_lines(server), ["spool: users"], server.prog)
        self.deliver_and_read(smtp, pop, os.path.join(self.dir, "users", "gb", "mymailbox"))
        self.assertFalse(os.path.exists(self.mailbox_path("gb")))

    def test_users_directory_wins_over_a_user_file_elsewhere(self):
        cwd = os.path.join(self.root, "cwd")
        os.makedirs(os.path.join(cwd, "users"))
        smtp = self.serve("smtpmail", "-u", self.userfile, cwd=cwd)
        pop = self.serve("popserver", "-u", self.userfile, cwd=cwd)
        for server in (smtp, pop):
            self.assertEqual(self.spool_lines(server), ["spool: users"], server.prog)
        self.deliver_and_read(smtp, pop, os.path.join(cwd, "users", "gb", "mymailbox"))

    def test_assignment_layout_without_users_directory(self):
        smtp, pop = self.both()
        for server in (smtp, pop):
            self.assertEqual(self.spool_lines(server), ["spool: . " + LAYOUT], server.prog)
        self.deliver_and_read(smtp, pop, self.mailbox_path("gb"))
        self.assertEqual(sorted(os.listdir(self.dir)), ["ag", "gb", "user.txt"])

    def test_spool_next_to_a_user_file_elsewhere(self):
        cwd = os.path.join(self.root, "cwd")
        os.mkdir(cwd)
        smtp = self.serve("smtpmail", "-u", self.userfile, cwd=cwd)
        pop = self.serve("popserver", "-u", self.userfile, cwd=cwd)
        for server in (smtp, pop):
            lines = self.spool_lines(server)
            self.assertEqual(len(lines), 1, "%s: %r" % (server.prog, lines))
            self.assertTrue(lines[0].startswith("spool: %s (assignment layout: " % self.dir),
                            "%s: %r" % (server.prog, lines))
        self.deliver_and_read(smtp, pop, self.mailbox_path("gb"))
        self.assertEqual(os.listdir(cwd), [])

    def start_fails(self, prog, args, cwd):
        """Run prog expecting it to give up at start; (exit status, log)."""
        log_path = os.path.join(self.logdir, "%s-fail-%d.log" % (prog, time.time_ns()))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([binary(prog), "-l", "127.0.0.1"] + args
                                    + [str(free_port())], cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log,
                                    env=dict(os.environ, **SANITIZER_ENV))
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return proc.returncode, text

    def test_unusable_spool_is_an_error_at_start(self):
        empty = os.path.join(self.root, "empty")
        os.mkdir(empty)
        missing = os.path.join(self.root, "missing")
        cases = [(["-d", missing], self.dir, "spool %s: No such file or directory" % missing),
                 (["-d", self.userfile], self.dir, "spool %s: Not a directory" % self.userfile),
                 (["-u", os.path.join(missing, "user.txt")], empty,
                  "spool %s: No such file or directory" % missing)]
        for prog in ("smtpmail", "popserver"):
            for args, cwd, want in cases:
                status, text = self.start_fails(prog, args, cwd)
                where = "%s %s:\n%s" % (prog, " ".join(args), text)
                self.assertNotIn("listening", text, "started anyway: " + where)
                self.assertEqual(status, 1, where)
                # the reason is strerror's text; its case is the system's
                self.assertIn(want.lower(), [m.lower() for m in log_messages(text)], where)
        self.assertEqual(os.listdir(empty), [])


# ---------------------------------------------------------------- 2. the dialogue

class Dialogue(AssignmentTest):
    """The assignment's SMTP session typed verbatim, and its replies."""

    BODY = ["From: ag@iitkgp.edu", "To: gb@iitkgp.edu", "Subject: Test mail",
            "This is a test mail.", "How are you doing?"]

    def assignment_session(self, smtp):
        """The session of the assignment, each reply checked as it arrives."""
        with Raw(smtp.port) as c:
            self.assertEqual(c.reply(), ["220 %s Service ready" % HOST])
            self.assertEqual(c.cmd("HELO iitkgp.edu"), "250 OK Hello iitkgp.edu")
            self.assertEqual(c.cmd("MAIL FROM: <ag@iitkgp.edu>"),
                             "250 <ag@iitkgp.edu>... Sender ok")
            self.assertIn(c.cmd("RCPT TO: gb@iitkgp.edu"),
                          ("250 gb@iitkgp.edu... Recipient ok",
                           "250 <gb@iitkgp.edu>... Recipient ok"))
            self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
            c.send("".join(line + "\r\n" for line in self.BODY) + ".\r\n")
            accepted = c.reply()
            self.assertEqual(len(accepted), 1, accepted)
            self.assertTrue(accepted[0].startswith("250 OK Message accepted for delivery"),
                            accepted)
            self.assertEqual(c.cmd("QUIT"), "221 %s closing connection" % HOST)
            self.assertTrue(c.closed())

    def test_dialogue_byte_for_byte(self):
        smtp = self.serve("smtpmail")
        self.assignment_session(smtp)
        data = self.mailbox("gb")
        self.assertIn(b"\r\n".join(line.encode() for line in self.BODY) + b"\r\n.\r\n", data)
        self.assertEqual(sorted(os.listdir(self.dir)), ["ag", "gb", "user.txt"])

    def test_unknown_recipient_after_helo(self):
        smtp = self.serve("smtpmail")
        with Raw(smtp.port) as c:
            c.reply()
            self.assertEqual(c.cmd("HELO iitkgp.edu"), "250 OK Hello iitkgp.edu")
            self.assertEqual(c.cmd("MAIL FROM: <ag@iitkgp.edu>"),
                             "250 <ag@iitkgp.edu>... Sender ok")
            self.assertEqual(c.cmd("RCPT TO: nobody@iitkgp.edu"), "550 No such user")
            self.assertEqual(c.cmd("RCPT TO: <nobody@iitkgp.edu>"), "550 No such user")
            c.cmd("QUIT")

    def test_ehlo_keeps_enhanced_codes(self):
        smtp = self.serve("smtpmail")
        with Raw(smtp.port) as c:
            c.reply()
            self.assertTrue(c.cmd("EHLO iitkgp.edu").startswith("250 "))
            self.assertEqual(c.cmd("MAIL FROM:<ag@iitkgp.edu>"),
                             "250 2.1.0 <ag@iitkgp.edu>... Sender ok")
            self.assertEqual(c.cmd("RCPT TO:<nobody@iitkgp.edu>"), "550 5.1.1 No such user")
            self.assertEqual(c.cmd("RCPT TO:<gb@iitkgp.edu>"),
                             "250 2.1.5 <gb@iitkgp.edu>... Recipient ok")
            self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
            c.send("Subject: e\r\n\r\nx\r\n.\r\n")
            self.assertTrue(c.reply()[-1].startswith(
                "250 2.0.0 OK Message accepted for delivery"))
            self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOST)

    def test_pop3_and_mailclient_see_the_mail(self):
        smtp, pop = self.both()
        self.assignment_session(smtp)
        (size, lines), = self.pop_messages(pop, "gb", "gbpw")
        self.assertEqual(size, sum(len(line) + 2 for line in lines))
        self.assertEqual(lines[-5:], [line.encode() for line in self.BODY])
        c = Client(types.SimpleNamespace(dir=self.logdir, clients=self.clients),
                   "127.0.0.1", smtp.port, pop.port)
        c.login("gb", "gbpw")
        c.line("1")
        rows = c.expect("Enter mail no. to see: ").split("\n")
        self.assertTrue(any(re.match(r"^1 +ag@iitkgp\.edu +.*Test mail$", r) for r in rows),
                        rows)
        c.line("1")
        self.assertIn("\nThis is a test mail.\nHow are you doing?\n", c.expect(KEY_PROMPT))
        c.send("x")
        c.expect("Enter mail no. to see: ")
        c.line("-1")
        c.expect(MENU)
        c.line("3")
        self.assertEqual(c.exit_code(), 0)
        self.assertEqual(len(self.pop_messages(pop, "gb", "gbpw")), 1)   # read, not deleted


# ---------------------------------------------------------------- 3. hand-written mailboxes

class HandWritten(AssignmentTest):
    """gb/mymailbox written by hand in the assignment's format is mail."""

    def check_served(self, pop, want):
        """POP3 shows exactly the messages want (lists of lines), sizes right."""
        got = self.pop_messages(pop, "gb", "gbpw")
        self.assertEqual(len(got), len(want), "STAT: %d messages, wrote %d; got %r"
                         % (len(got), len(want), [lines[:4] for _, lines in got]))
        for n, ((size, lines), lines_want) in enumerate(zip(got, want), 1):
            self.assertEqual(lines, lines_want, "message %d" % n)
            self.assertEqual(size, sum(len(line) + 2 for line in lines),
                             "LIST size of message %d is not its octets" % n)
        return got

    def check_on_disk(self, messages):
        data = self.mailbox("gb")
        for lines in messages:
            for line in lines[4:]:
                self.assertIn(line, data, "a hand-written body line is gone from the file")

    def round_trip(self, data, messages, helo=True):
        """Serve, deliver one more, delete the first: nothing else lost."""
        with open(self.mailbox_path("gb"), "wb") as f:
            f.write(data)
        smtp, pop = self.both()
        self.check_served(pop, messages)
        self.smtp_send(smtp, "gb@iitkgp.edu", "new one", "fresh body", helo=helo)
        got = self.pop_messages(pop, "gb", "gbpw")
        self.assertEqual([lines for _, lines in got[:-1]], messages,
                         "old messages changed by a delivery (%d messages now)" % len(got))
        new = got[-1][1]
        self.assertIn(b"Subject: new one", new)
        self.assertEqual(new[-1], b"fresh body")
        self.check_on_disk(messages)
        self.pop_messages(pop, "gb", "gbpw", dele=(1,))
        self.check_served(pop, messages[1:] + [new])
        self.check_on_disk(messages[1:])
        self.assertNotIn(messages[0][4], self.mailbox("gb"))
        return pop

    def test_a_lf_with_final_dot(self):
        self.round_trip(handwritten(THREE), THREE)

    def test_b_crlf_without_final_dot(self):
        self.round_trip(handwritten(THREE, eol=b"\r\n", final_dot=False), THREE, helo=False)

    def test_c_lf_last_message_without_dot(self):
        self.round_trip(handwritten(THREE, final_dot=False), THREE)

    def test_d_utf8_bom(self):
        self.round_trip(handwritten(THREE, bom=True), THREE, helo=False)

    def test_e_long_line_and_dot_lines(self):
        long_line = b"long line of s1 " + b"x" * 1484
        messages = [message(b"s1", [long_line]),
                    message(b"s2", [b".hidden", b"..two dots", b"after the dot lines"]),
                    message(b"s3", [b"body of s3"])]
        self.assertGreater(len(long_line), 1000)
        pop = self.round_trip(handwritten(messages), messages)
        with Raw(pop.port) as c:            # on the wire, dot-stuffed (RFC 1939 3)
            c.line()
            self.assertTrue(c.cmd("USER gb").startswith("+OK"))
            self.assertTrue(c.cmd("PASS gbpw").startswith("+OK"))
            self.assertTrue(c.cmd("RETR 1").startswith("+OK"))
            wire = []
            while not wire or wire[-1] != ".":
                wire.append(c.line())
                self.assertFalse(getattr(c, "eof", False), wire)
            self.assertEqual(wire[4:7], ["..hidden", "...two dots", "after the dot lines"])
            c.cmd("QUIT")


# ---------------------------------------------------------------- 4. smtpmail's own crashed tail

class CrashedTail(AssignmentTest):
    """A partial record that smtpmail itself started is still cut back."""

    def trace(self, sender, msg_id):
        return ("Return-Path: <%s>\r\nReceived: from client.example ([127.0.0.1])\r\n"
                "\tby %s (smtpmail) with SMTP id %s\r\n\tfor <gb@iitkgp.edu>; "
                "Sat, 29 Nov 2026 14:05:00 +0000\r\n" % (sender, HOST, msg_id)).encode()

    def test_partial_record_trimmed(self):
        complete = self.trace("a@b", "AAAA0001") + b"Subject: old\r\n\r\nold body\r\n.\r\n"
        partial = self.trace("half@b", "AAAA0002") + b"Subject: cut off\r\n\r\npartial bo"
        with open(self.mailbox_path("gb"), "wb") as f:
            f.write(complete + partial)
        # smtpmail announced that append in the state file before it died:
        # only an announced tail is cut (a saved copy appended by hand is mail).
        st = os.stat(self.mailbox_path("gb"))
        write_state(self.mailbox_path("gb") + ".state", dev=st.st_dev, ino=st.st_ino,
                    size=len(complete), durable=len(complete), appending=len(complete))
        smtp, pop = self.both()
        self.smtp_send(smtp, "gb@iitkgp.edu", "new one", "fresh body")
        data = self.mailbox("gb")
        self.assertTrue(data.startswith(complete), data[:300])
        self.assertNotIn(b"cut off", data)
        self.assertNotIn(b"partial bo", data)
        self.assertTrue(data.endswith(b"\r\nfresh body\r\n.\r\n"), data[-300:])
        self.assertIn("trimmed a partial record", smtp.log())
        got = self.pop_messages(pop, "gb", "gbpw")
        self.assertEqual([lines[-1] for _, lines in got], [b"old body", b"fresh body"])


# ---------------------------------------------------------------- 5. user.txt

class UserFile(AssignmentTest):
    """user.txt as people write it: BOM, CRLF, duplicates, bad lines."""

    def rcpt(self, smtp, addr):
        """The reply to RCPT TO:<addr> in a session of its own."""
        with Raw(smtp.port) as c:
            c.reply()
            c.cmd("HELO iitkgp.edu")
            c.cmd("MAIL FROM:<ag@iitkgp.edu>")
            last = c.cmd("RCPT TO:<%s>" % addr)
            c.cmd("QUIT")
        return last

    def login_ok(self, pop, login, password):
        """True if USER/PASS succeed (a session of its own)."""
        p = poplib.POP3("127.0.0.1", pop.port, timeout=10)
        try:
            p.user(login)
            p.pass_(password)
            p.quit()
            return True
        except poplib.error_proto:
            return False
        finally:
            p.close()

    def write_users(self, data):
        """Rewrite user.txt; its mtime moves on even within one second."""
        before = os.stat(self.userfile).st_mtime
        with open(self.userfile, "wb") as f:
            f.write(data)
        os.utime(self.userfile, (before + 5, before + 5))

    def check_accounts(self, smtp, pop):
        for login in ("ag", "gb"):
            reply = self.rcpt(smtp, login + "@iitkgp.edu")
            self.assertTrue(reply.startswith("250"), "RCPT %s: %s" % (login, reply))
            self.assertTrue(self.login_ok(pop, login, login + "pw"),
                            "POP3 login %s refused" % login)
        self.smtp_send(smtp, "ag@iitkgp.edu", "to ag", "first account")
        self.assertIn(b"\r\nfirst account\r\n", self.mailbox("ag"))
        self.assertEqual(len(self.pop_messages(pop, "ag", "agpw")), 1)
        for server in (smtp, pop):
            self.assertNotIn("invalid login", server.log(), server.prog)

    def test_a_bom_ignored(self):
        self.write_users(BOM + b"ag agpw\ngb gbpw\n")
        self.check_accounts(*self.both())

    def test_b_crlf_line_ends(self):
        self.write_users(b"ag agpw\r\ngb gbpw\r\n")
        self.check_accounts(*self.both())

    def test_c_duplicate_login_first_wins_warned_once(self):
        os.mkdir(os.path.join(self.dir, "bob"))
        self.write_users(b"bob one\nBOB two\ngb gbpw\n")
        smtp = self.serve("smtpmail")
        pop = self.serve("popserver", "-w", "50")
        for _ in range(5):
            reply = self.rcpt(smtp, "bob@iitkgp.edu")
            self.assertTrue(reply.startswith("250"), "RCPT bob: " + reply)
        for login, password, ok in (("bob", "one", True), ("BOB", "one", True),
                                    ("bob", "two", False), ("BOB", "two", False),
                                    ("bob", "one", True)):
            self.assertEqual(self.login_ok(pop, login, password), ok,
                             "POP3 login %s/%s should %s" % (login, password,
                                                             "work" if ok else "fail"))
        for server in (smtp, pop):
            self.assertEqual(count_lines(server, "duplicate login"), 1,
                             "%s: want one \"duplicate login\" warning for 5 lookups:\n%s"
                             % (server.prog, server.log()))

    def test_d_invalid_line_warned_once_per_change(self):
        self.write_users(b"ag agpw\nbad/login pw\ngb gbpw\n")
        smtp = self.serve("smtpmail")
        pop = self.serve("popserver", "-w", "50")
        for _ in range(5):
            reply = self.rcpt(smtp, "gb@iitkgp.edu")
            self.assertTrue(reply.startswith("250"), "RCPT gb: " + reply)
            self.assertTrue(self.login_ok(pop, "gb", "gbpw"), "POP3 login gb refused")
        for server in (smtp, pop):
            self.assertEqual(count_lines(server, "invalid login"), 1,
                             "%s: want one \"invalid login\" warning for 5 lookups:\n%s"
                             % (server.prog, server.log()))
        self.write_users(b"ag agpw\nbad/login pw\ngb gbpw\ncarol carolpw\n")
        reply = self.rcpt(smtp, "carol@iitkgp.edu")
        self.assertTrue(reply.startswith("250"), "RCPT carol (added): " + reply)
        self.assertTrue(self.login_ok(pop, "gb", "gbpw"), "POP3 login gb refused")
        for server in (smtp, pop):
            self.assertEqual(count_lines(server, "invalid login"), 2,
                             "%s: want one more warning after user.txt changed:\n%s"
                             % (server.prog, server.log()))

    def test_e_nul_byte_line_skipped_alone(self):
        """A NUL byte in a line makes that line invalid, not the next one."""
        self.write_users(b"gb gbpw\ncarol\0x carolpw\nag agpw\n")
        smtp, pop = self.both()
        self.assertTrue(self.rcpt(smtp, "ag@iitkgp.edu").startswith("250"))
        self.assertTrue(self.login_ok(pop, "ag", "agpw"))
        self.assertIn("user.txt:2: NUL byte, skipped", smtp.log())

    def test_f_user_file_given_with_u_is_the_one_checked(self):
        """-u names the file that is read and checked; a FIFO called user.txt in
        the working directory is never opened (it would block the server)."""
        other = os.path.join(self.logdir, "accounts.txt")
        with open(other, "wb") as f:
            f.write(b"ag agpw\nbad/login pw\ngb gbpw\n")
        os.unlink(self.userfile)
        os.mkfifo(self.userfile)
        smtp = self.serve("smtpmail", "-u", other)
        pop = self.serve("popserver", "-u", other, "-w", "50")
        self.assertTrue(self.rcpt(smtp, "gb@iitkgp.edu").startswith("250"))
        self.assertTrue(self.login_ok(pop, "gb", "gbpw"))
        for server in (smtp, pop):
            self.assertIn("accounts.txt:2: invalid login skipped", server.log(), server.prog)

    def test_g_user_file_that_is_a_fifo_refused_at_once(self):
        os.unlink(self.userfile)
        os.mkfifo(self.userfile)
        smtp = self.serve("smtpmail")
        started = time.time()
        reply = self.rcpt(smtp, "gb@iitkgp.edu")
        self.assertLess(time.time() - started, 5)
        self.assertTrue(reply.startswith("451"), reply)
        self.assertIn("not a regular file", smtp.log())

