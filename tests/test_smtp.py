"""smtpmail: commands and replies over raw sockets, the assignment's dialogue,
the two reply dialects (the assignment's words after HELO, RFC 2034 enhanced
codes after EHLO), real clients (smtplib, curl), and the stored records byte
for byte.

The helpers here (SmtpTest) are shared by the other test_smtp_* modules."""
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import unittest

from harness import ACCOUNTS, HOSTNAME, TRACE, MailTest, Raw

DATE_RE = rb"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000"
ACCEPTED_RE = re.compile(r"^250 2\.0\.0 OK Message accepted for delivery as (\S+)$")
HELO_ACCEPTED_RE = re.compile(r"^250 OK Message accepted for delivery as (\S+)$")


class SmtpTest(MailTest):
    """MailTest plus SMTP conveniences. Clients made by raw() and smtp() are
    closed before the servers stop (a server gives open sessions 10 s)."""

    def setUp(self):
        super().setUp()
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        super().tearDown()

    def raw(self, port):
        c = Raw(port)
        self.clients.append(c)
        return c

    def connect(self, server, greet="EHLO client.example"):
        """A Raw client past the greeting (and HELO/EHLO unless greet is None)."""
        c = self.raw(server.port)
        self.assertEqual(c.reply(), ["220 %s Service ready" % HOSTNAME])
        if greet:
            last = c.cmd(greet)
            self.assertTrue(last.startswith("250"), last)
        return c

    def transaction(self, c, sender, rcpts, data, enhanced=True):
        """MAIL, RCPTs, DATA, data (bytes, the final dot included); the last reply.
        enhanced: the session said EHLO, so replies carry RFC 2034 codes."""
        mail, rcpt = ("2.1.0 ", "2.1.5 ") if enhanced else ("", "")
        self.assertEqual(c.cmd("MAIL FROM:<%s>" % sender), "250 %s<%s>... Sender ok" % (mail, sender))
        for r in rcpts:
            self.assertEqual(c.cmd("RCPT TO:<%s>" % r), "250 %s<%s>... Recipient ok" % (rcpt, r))
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send(data)
        return c.reply()[-1]

    def accepted_id(self, line, enhanced=True):
        m = (ACCEPTED_RE if enhanced else HELO_ACCEPTED_RE).match(line)
        self.assertIsNotNone(m, line)
        return m.group(1)

    def trace_re(self, sender, rcpt, msg_id, helo="client.example", proto="ESMTP"):
        """The regex of a record's two trace lines (DESIGN.md)."""
        return (re.escape(("Return-Path: <%s>\r\nReceived: from %s ([127.0.0.1])\r\n"
                           "\tby %s (smtpmail) with %s id %s\r\n\tfor <%s>; "
                           % (sender, helo, HOSTNAME, proto, msg_id, rcpt)).encode())
                + DATE_RE + rb"\r\n")

    def assertRecord(self, record, sender, rcpt, msg_id, body, **kw):
        """record (from records()) is the trace lines + body, exactly. The
        failure message stays short (run.py reads a class's output at its end)."""
        m = re.match(self.trace_re(sender, rcpt, msg_id, **kw), record)
        self.assertIsNotNone(m, "trace lines differ: %r" % record[:400])
        self.assertShortEqual(record[m.end():], body)

    def assertShortEqual(self, got, want):
        """got == want (bytes), reporting only where they first differ."""
        if got != want:
            i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                     min(len(got), len(want)))
            self.fail("differ at byte %d of %d/%d: got %r, want %r" % (
                i, len(got), len(want), got[max(0, i - 40):i + 40], want[max(0, i - 40):i + 40]))

    def spool_entries(self):
        """Every path under the test directory except logs, user.txt and the spool's mail."""
        found = []
        for root, dirs, files in os.walk(self.dir):
            for name in dirs + files:
                found.append(os.path.relpath(os.path.join(root, name), self.dir))
        return sorted(found)


class Commands(SmtpTest):
    """Each command and its reply over a raw socket."""

    def setUp(self):
        super().setUp()
        self.server = self.start_smtp()

    def test_greeting_helo_quit(self):
        c = self.connect(self.server, greet=None)
        self.assertEqual(c.cmd("HELO client.example"), "250 OK Hello client.example")
        self.assertEqual(c.cmd("QUIT"), "221 %s closing connection" % HOSTNAME)
        self.assertTrue(c.closed())

    def test_ehlo_lists_extensions(self):
        c = self.connect(self.server, greet=None)
        c.send("EHLO client.example\r\n")
        self.assertEqual(c.reply(), ["250-%s Hello client.example" % HOSTNAME,
                                     "250-SIZE 26214400", "250-8BITMIME", "250-PIPELINING",
                                     "250-ENHANCEDSTATUSCODES", "250-AUTH CRAM-MD5 PLAIN LOGIN",
                                     "250 HELP"])

    def test_helo_needs_a_domain(self):
        c = self.connect(self.server, greet=None)
        self.assertEqual(c.cmd("HELO"), "501 Syntax: HELO hostname")
        self.assertEqual(c.cmd("EHLO"), "501 Syntax: EHLO hostname")

    def test_mail_and_rcpt_forms(self):
        c = self.connect(self.server)
        for form, addr in [("MAIL FROM:<a@b.example>", "a@b.example"),
                           ("MAIL FROM: <a@b.example>", "a@b.example"),
                           ("MAIL FROM:a@b.example", "a@b.example"),
                           ("MAIL FROM:<>", ""),
                           ("MAIL FROM:<@relay.example,@r2.example:a@b.example>", "a@b.example"),
                           ("MAIL FROM:<a@b.example> BODY=8BITMIME SIZE=100", "a@b.example")]:
            self.assertEqual(c.cmd(form), "250 2.1.0 <%s>... Sender ok" % addr, form)
            self.assertEqual(c.cmd("RSET"), "250 2.0.0 OK")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "250 2.1.0 <a@b.example>... Sender ok")
        for form, addr in [("RCPT TO:<alice@x.example>", "alice@x.example"),
                           ("RCPT TO: <bob@x.example>", "bob@x.example"),
                           ("RCPT TO: carol@x.example", "carol@x.example"),
                           ("RCPT TO:<Postmaster>", "Postmaster"),
                           ("RCPT TO:<ALICE@X.EXAMPLE>", "ALICE@X.EXAMPLE")]:
            self.assertEqual(c.cmd(form), "250 2.1.5 <%s>... Recipient ok" % addr, form)

    def test_syntax_errors_501(self):
        c = self.connect(self.server)
        self.assertEqual(c.cmd("MAIL <a@b.example>"), "501 5.5.4 Syntax: MAIL FROM:<address>")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example"), "501 5.1.7 Bad address syntax")
        self.assertEqual(c.cmd("MAIL FROM:<a b@c>"), "501 5.1.7 Bad address syntax")
        self.assertEqual(c.cmd("MAIL FROM:<nodomain>"), "501 5.1.7 Address needs a domain")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example> SIZE=12x"), "501 5.5.4 Bad SIZE parameter")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example> FOO=1"), "555 5.5.4 Unsupported parameter FOO=1")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "250 2.1.0 <a@b.example>... Sender ok")
        self.assertEqual(c.cmd("RCPT alice@x"), "501 5.5.4 Syntax: RCPT TO:<address>")
        self.assertEqual(c.cmd("RCPT TO:<>"), "501 5.1.3 Bad address syntax")
        self.assertEqual(c.cmd("RCPT TO:<alice>"), "501 5.1.3 Address needs a domain")
        self.assertEqual(c.cmd("RCPT TO:<alice@x.example> NOTIFY=NEVER"),
                         "555 5.5.4 Unsupported parameter NOTIFY=NEVER")
        self.assertEqual(c.cmd("DATA now"), "503 5.5.1 Need RCPT command")

    def test_path_limits_501(self):
        c = self.connect(self.server)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "250 2.1.0 <a@b.example>... Sender ok")
        local64, label = "l" * 64, "d" * 63
        self.assertTrue(c.cmd("RCPT TO:<%s@x.example>" % local64).startswith("550 5.1.1"))
        self.assertEqual(c.cmd("RCPT TO:<%s@x.example>" % ("l" * 65)),
                         "501 5.1.3 Local part too long (64 octets at most)")
        domain256 = ".".join([label] * 4)  # 255 octets
        self.assertEqual(len(domain256), 255)
        self.assertEqual(c.cmd("RCPT TO:<a@%s>" % (domain256 + "x")),
                         "501 5.1.3 Domain too long (255 octets at most)")
        # a 255-octet domain and a 1-octet local part: a 259-octet path
        self.assertEqual(c.cmd("RCPT TO:<abc@%s>" % domain256[:252]),
                         "501 5.1.3 Path too long (256 octets at most)")
        ok = "a@" + domain256[:252]          # 254 + <> = 256 octets: allowed
        self.assertTrue(c.cmd("RCPT TO:<%s>" % ok).startswith("550 5.1.1"))

    def test_wrong_order_503(self):
        c = self.connect(self.server, greet=None)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "503 Send HELO or EHLO first")
        self.assertEqual(c.cmd("HELO client.example"), "250 OK Hello client.example")
        self.assertEqual(c.cmd("RCPT TO:<alice@x.example>"), "503 Need MAIL command")
        self.assertEqual(c.cmd("DATA"), "503 Need MAIL command")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "250 <a@b.example>... Sender ok")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "503 Sender already specified")
        self.assertEqual(c.cmd("DATA"), "503 Need RCPT command")
        # a refused recipient leaves no valid one: DATA is still 503
        self.assertEqual(c.cmd("RCPT TO:<nobody@x.example>"), "550 No such user")
        self.assertEqual(c.cmd("DATA"), "503 Need RCPT command")

    def test_rset_and_helo_reset_the_transaction(self):
        c = self.connect(self.server)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "250 2.1.0 <a@b.example>... Sender ok")
        self.assertEqual(c.cmd("RCPT TO:<alice@x.example>"), "250 2.1.5 <alice@x.example>... Recipient ok")
        self.assertEqual(c.cmd("RSET"), "250 2.0.0 OK")
        self.assertEqual(c.cmd("DATA"), "503 5.5.1 Need MAIL command")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>"), "250 2.1.0 <a@b.example>... Sender ok")
        self.assertEqual(c.cmd("HELO again.example"), "250 OK Hello again.example")
        # after HELO, the assignment's dialect: no enhanced codes
        self.assertEqual(c.cmd("RCPT TO:<alice@x.example>"), "503 Need MAIL command")
        self.assertEqual(c.cmd("RSET x"), "501 Syntax: RSET")

    def test_noop_vrfy_help_expn_unknown(self):
        c = self.connect(self.server)
        self.assertEqual(c.cmd("NOOP"), "250 2.0.0 OK")
        self.assertEqual(c.cmd("NOOP anything"), "250 2.0.0 OK")
        vrfy = "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
        self.assertEqual(c.cmd("VRFY alice"), vrfy)     # exists
        self.assertEqual(c.cmd("VRFY nobody"), vrfy)    # does not: same answer
        self.assertEqual(c.cmd("VRFY"), "501 5.5.4 Syntax: VRFY <address>")
        self.assertEqual(c.cmd("HELP"),
                         "214 2.0.0 Commands: HELO EHLO AUTH MAIL RCPT DATA RSET NOOP QUIT VRFY HELP")
        for verb in ("EXPN staff", "TURN", "ETRN x", "STARTTLS"):
            self.assertEqual(c.cmd(verb), "502 5.5.1 Command not implemented", verb)
        self.assertEqual(c.cmd("XYZZY"), "500 5.5.1 Command unrecognized")
        self.assertEqual(c.cmd(""), "500 5.5.1 Command unrecognized")

    def test_before_any_greeting_no_enhanced_codes(self):
        # RFC 2034: the codes are negotiated by EHLO, so none before it
        c = self.connect(self.server, greet=None)
        self.assertEqual(c.cmd("NOOP"), "250 OK")
        self.assertEqual(c.cmd("VRFY alice"),
                         "252 Cannot VRFY user, but will accept message and attempt delivery")
        self.assertEqual(c.cmd("VRFY"), "501 Syntax: VRFY <address>")
        self.assertEqual(c.cmd("HELP"), "214 Commands: HELO EHLO AUTH MAIL RCPT DATA RSET NOOP QUIT VRFY HELP")
        self.assertEqual(c.cmd("EXPN staff"), "502 Command not implemented")
        self.assertEqual(c.cmd("XYZZY"), "500 Command unrecognized")
        self.assertEqual(c.cmd("RCPT TO:<alice@x.example>"), "503 Send HELO or EHLO first")
        self.assertEqual(c.cmd("QUIT"), "221 %s closing connection" % HOSTNAME)

    def test_verbs_ignore_case(self):
        c = self.connect(self.server, greet=None)
        self.assertEqual(c.cmd("helo client.example"), "250 OK Hello client.example")
        self.assertEqual(c.cmd("mAiL fRoM:<a@b.example>"), "250 <a@b.example>... Sender ok")
        self.assertEqual(c.cmd("rcpt to:<bob@x.example>"), "250 <bob@x.example>... Recipient ok")
        self.assertEqual(c.cmd("data"), '354 Enter mail, end with "." on a line by itself')
        c.send("hi\r\n.\r\n")
        self.accepted_id(c.reply()[-1], enhanced=False)
        self.assertEqual(c.cmd("quit"), "221 %s closing connection" % HOSTNAME)
        self.assertEqual(len(self.records("bob")), 1)

    def test_unknown_user_550(self):
        c = self.connect(self.server)
        c.cmd("MAIL FROM:<a@b.example>")
        self.assertEqual(c.cmd("RCPT TO:<nobody@x.example>"), "550 5.1.1 No such user")
        self.assertEqual(c.cmd("RCPT TO:<alice.x@x.example>"), "550 5.1.1 No such user")
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        self.assertEqual(os.listdir(self.spool), [])

    def test_accounts_reread_while_running(self):
        c = self.connect(self.server)
        c.cmd("MAIL FROM:<a@b.example>")
        self.assertEqual(c.cmd("RCPT TO:<dave@x.example>"), "550 5.1.1 No such user")
        with open(self.userfile, "a") as f:
            f.write("dave davepw\n")
        self.assertEqual(c.cmd("RCPT TO:<dave@x.example>"), "250 2.1.5 <dave@x.example>... Recipient ok")


class Dialogue(SmtpTest):
    """The assignment's example session typed verbatim, a line at a time as at
    a terminal (gb is an account): after HELO every reply is the assignment's
    words, byte for byte, with no enhanced status codes."""

    accounts = ACCOUNTS + [("gb", "gbpw")]
    BODY = ("From: ag@iitkgp.edu\r\nTo: gb@iitkgp.edu\r\nSubject: Test mail\r\n"
            "This is a test mail.\r\nHow are you doing?\r\n")

    def raw_reply(self, c):
        """The next reply line as the server sent it: bytes, CRLF included."""
        while b"\r\n" not in c.buf:
            chunk = c.sock.recv(65536)
            if not chunk:
                break
            c.buf += chunk
        line, sep, c.buf = c.buf.partition(b"\r\n")
        return line + sep

    def say(self, c, line):
        c.send(line + "\r\n")
        return self.raw_reply(c)

    def test_assignment_dialogue_byte_for_byte(self):
        server = self.start_smtp()
        c = self.raw(server.port)
        host = HOSTNAME.encode()
        self.assertEqual(self.raw_reply(c), b"220 " + host + b" Service ready\r\n")
        self.assertEqual(self.say(c, "HELO iitkgp.edu"), b"250 OK Hello iitkgp.edu\r\n")
        self.assertEqual(self.say(c, "MAIL FROM: <ag@iitkgp.edu>"),
                         b"250 <ag@iitkgp.edu>... Sender ok\r\n")
        self.assertEqual(self.say(c, "RCPT TO: gb@iitkgp.edu"),
                         b"250 <gb@iitkgp.edu>... Recipient ok\r\n")
        self.assertEqual(self.say(c, "DATA"),
                         b'354 Enter mail, end with "." on a line by itself\r\n')
        for line in self.BODY.split("\r\n")[:-1]:
            c.send(line + "\r\n")
        accepted = self.say(c, ".")
        m = re.fullmatch(rb"250 OK Message accepted for delivery as (\S+)\r\n", accepted)
        self.assertIsNotNone(m, accepted)
        msg_id = m.group(1).decode()
        self.assertEqual(self.say(c, "QUIT"), b"221 " + host + b" closing connection\r\n")
        self.assertTrue(c.closed())
        records = self.records("gb")
        self.assertEqual(len(records), 1)
        self.assertRecord(records[0], "ag@iitkgp.edu", "gb@iitkgp.edu", msg_id,
                          self.BODY.encode(), helo="iitkgp.edu", proto="SMTP")
        self.assertIn("delivered %s from <ag@iitkgp.edu> to gb" % msg_id, server.log())

    def test_assignment_errors_without_codes(self):
        c = self.raw(self.start_smtp().port)
        self.raw_reply(c)
        self.assertEqual(self.say(c, "MAIL FROM: <ag@iitkgp.edu>"),
                         b"503 Send HELO or EHLO first\r\n")
        self.assertEqual(self.say(c, "HELO iitkgp.edu"), b"250 OK Hello iitkgp.edu\r\n")
        self.assertEqual(self.say(c, "RCPT TO: gb@iitkgp.edu"), b"503 Need MAIL command\r\n")
        self.assertEqual(self.say(c, "MAIL FROM: <ag@iitkgp.edu>"),
                         b"250 <ag@iitkgp.edu>... Sender ok\r\n")
        self.assertEqual(self.say(c, "RCPT TO: nobody@iitkgp.edu"), b"550 No such user\r\n")
        self.assertEqual(self.say(c, "DATA"), b"503 Need RCPT command\r\n")
        self.assertEqual(self.say(c, "RCPT TO: gb"), b"501 Address needs a domain\r\n")


class EhloDialect(SmtpTest):
    """The same dialogue after EHLO: the replies keep their RFC 3463 enhanced
    codes (RFC 2034), except the EHLO reply itself."""

    accounts = ACCOUNTS + [("gb", "gbpw")]

    def test_ehlo_session_keeps_enhanced_codes(self):
        c = self.connect(self.start_smtp(), greet=None)
        self.assertEqual(c.cmd("MAIL FROM: <ag@iitkgp.edu>"), "503 Send HELO or EHLO first")
        c.send("EHLO iitkgp.edu\r\n")
        self.assertEqual(c.reply()[0], "250-%s Hello iitkgp.edu" % HOSTNAME)
        self.assertEqual(c.cmd("RCPT TO: gb@iitkgp.edu"), "503 5.5.1 Need MAIL command")
        self.assertEqual(c.cmd("MAIL FROM: <ag@iitkgp.edu>"),
                         "250 2.1.0 <ag@iitkgp.edu>... Sender ok")
        self.assertEqual(c.cmd("RCPT TO: nobody@iitkgp.edu"), "550 5.1.1 No such user")
        self.assertEqual(c.cmd("RCPT TO: gb@iitkgp.edu"), "250 2.1.5 <gb@iitkgp.edu>... Recipient ok")
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send(Dialogue.BODY + ".\r\n")
        self.accepted_id(c.reply()[-1])
        self.assertEqual(c.cmd("NOOP"), "250 2.0.0 OK")
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        self.assertTrue(c.closed())
        self.assertEqual(len(self.records("gb")), 1)

    def test_helo_after_ehlo_drops_the_codes(self):
        # RFC 5321 4.1.4: a second greeting starts afresh, its dialect too
        c = self.connect(self.start_smtp())
        self.assertEqual(c.cmd("DATA"), "503 5.5.1 Need MAIL command")
        self.assertEqual(c.cmd("HELO iitkgp.edu"), "250 OK Hello iitkgp.edu")
        self.assertEqual(c.cmd("DATA"), "503 Need MAIL command")


class Clients(SmtpTest):
    """Real clients: smtplib (single, multi-recipient, several messages,
    pipelined) and curl."""

    def setUp(self):
        super().setUp()
        self.server = self.start_smtp()

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.example", timeout=10)
        self.clients.append(s)
        return s

    def test_smtplib_single(self):
        s = self.smtp()
        s.ehlo()
        self.assertTrue(s.has_extn("pipelining") and s.has_extn("8bitmime")
                        and s.has_extn("enhancedstatuscodes"))
        self.assertEqual(s.esmtp_features["size"], "26214400")
        refused = s.sendmail("sender@y.example", ["alice@x.example"],
                             "Subject: one\r\n\r\nHello Alice.\r\n")
        self.assertEqual(refused, {})
        s.quit()
        records = self.records("alice")
        self.assertEqual(len(records), 1)
        self.assertTrue(records[0].endswith(b"Subject: one\r\n\r\nHello Alice.\r\n"))

    def test_smtplib_multi_recipient_delivered_once_each(self):
        s = self.smtp()
        refused = s.sendmail("sender@y.example",
                             ["alice@x.example", "bob@x.example", "Alice@x.example",
                              "nobody@x.example", "carol@x.example"],
                             "Subject: many\r\n\r\nTo all.\r\n")
        self.assertEqual(list(refused), ["nobody@x.example"])
        self.assertEqual(refused["nobody@x.example"][0], 550)
        s.quit()
        for login in ("alice", "bob", "carol"):
            records = self.records(login)
            self.assertEqual(len(records), 1, login)   # alice named twice: once
            self.assertIn(("\tfor <%s@x.example>; " % login).encode(), records[0].replace(b"Alice", b"alice"))
            self.assertTrue(records[0].endswith(b"Subject: many\r\n\r\nTo all.\r\n"))

    def test_smtplib_several_messages_on_one_connection(self):
        s = self.smtp()
        for i in range(5):
            self.assertEqual(s.sendmail("s@y.example", ["bob@x.example"],
                                        "Subject: n%d\r\n\r\nbody %d\r\n" % (i, i)), {})
        s.quit()
        records = self.records("bob")
        self.assertEqual(len(records), 5)
        ids = set()
        for i, rec in enumerate(records):
            self.assertTrue(rec.endswith(("Subject: n%d\r\n\r\nbody %d\r\n" % (i, i)).encode()))
            ids.add(re.search(rb" id (\S+)\r\n", rec).group(1))
        self.assertEqual(len(ids), 5)   # every id unique

    def test_fully_pipelined_transaction(self):
        c = self.connect(self.server)
        c.send("MAIL FROM:<p@y.example>\r\nRCPT TO:<alice@x.example>\r\n"
               "RCPT TO:<nobody@x.example>\r\nRCPT TO:<bob@x.example>\r\nDATA\r\n")
        self.assertEqual(c.reply(), ["250 2.1.0 <p@y.example>... Sender ok"])
        self.assertEqual(c.reply(), ["250 2.1.5 <alice@x.example>... Recipient ok"])
        self.assertEqual(c.reply(), ["550 5.1.1 No such user"])
        self.assertEqual(c.reply(), ["250 2.1.5 <bob@x.example>... Recipient ok"])
        self.assertEqual(c.reply(), ['354 Enter mail, end with "." on a line by itself'])
        # the data, a second whole transaction and QUIT in one write
        c.send("Subject: p1\r\n\r\nfirst\r\n.\r\nMAIL FROM:<q@y.example>\r\n"
               "RCPT TO:<alice@x.example>\r\nDATA\r\n")
        self.accepted_id(c.reply()[0])
        self.assertEqual(c.reply(), ["250 2.1.0 <q@y.example>... Sender ok"])
        self.assertEqual(c.reply(), ["250 2.1.5 <alice@x.example>... Recipient ok"])
        self.assertEqual(c.reply(), ['354 Enter mail, end with "." on a line by itself'])
        c.send("Subject: p2\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
        self.accepted_id(c.reply()[0])
        self.assertEqual(c.reply(), ["221 2.0.0 %s closing connection" % HOSTNAME])
        alice = self.records("alice")
        self.assertEqual(len(alice), 2)
        self.assertTrue(alice[0].endswith(b"\r\nfirst\r\n") and alice[1].endswith(b"\r\nsecond\r\n"))
        self.assertEqual(len(self.records("bob")), 1)

    @unittest.skipUnless(shutil.which("curl"), "curl not installed")
    def test_curl_sends_a_message(self):
        with tempfile.NamedTemporaryFile("wb", suffix=".eml", delete=False) as f:
            f.write(b"Subject: via curl\r\n\r\n.leading dot\r\nplain\r\n")
        self.addCleanup(os.unlink, f.name)
        run = subprocess.run(["curl", "-sS", "--max-time", "20",
                              "smtp://127.0.0.1:%d/client.example" % self.server.port,
                              "--mail-from", "c@y.example", "--mail-rcpt", "carol@x.example",
                              "-T", f.name], capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 0, run.stderr)
        records = self.records("carol")
        self.assertEqual(len(records), 1)
        self.assertTrue(records[0].endswith(b"Subject: via curl\r\n\r\n..leading dot\r\nplain\r\n"))


class Store(SmtpTest):
    """The stored mailbox, byte for byte (DESIGN.md record format)."""

    def setUp(self):
        super().setUp()
        self.server = self.start_smtp()

    def test_record_bytes_with_stuffed_dots(self):
        c = self.connect(self.server)
        # on the wire dot-stuffed; ".", ".x" and "..y" lines as the sender meant them
        wire = (b"From: s@y.example\r\nSubject: dots\r\n\r\nline 1\r\n..\r\n..x\r\n...y\r\n"
                b"\tx.\r\n\r\n8bit \xe9\x00nul\r\n.\r\n")
        msg_id = self.accepted_id(self.transaction(c, "s@y.example", ["alice@x.example"], wire))
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        stored = wire[:-3]          # stored exactly as it travels: stuffed
        data = self.mailbox("alice")
        self.assertTrue(data.endswith(b"\r\n.\r\n"))
        self.assertRecord(data[:-3], "s@y.example", "alice@x.example", msg_id, stored)

    def test_null_sender_helo_and_empty_message(self):
        c = self.connect(self.server, greet="HELO old.example")
        msg_id = self.accepted_id(self.transaction(c, "", ["bob@x.example"], b".\r\n",
                                                   enhanced=False), enhanced=False)
        c.cmd("QUIT")
        data = self.mailbox("bob")
        self.assertTrue(data.endswith(b"\r\n.\r\n"))
        self.assertRecord(data[:-3], "", "bob@x.example", msg_id, b"", helo="old.example",
                          proto="SMTP")

    def test_postmaster_goes_to_first_account(self):
        c = self.connect(self.server)
        c.cmd("MAIL FROM:<s@y.example>")
        for form in ("RCPT TO:<postmaster>", "RCPT TO:<POSTMASTER@anything.example>"):
            self.assertTrue(c.cmd(form).startswith("250 2.1.5"), form)
        self.assertEqual(c.cmd("DATA"), '354 Enter mail, end with "." on a line by itself')
        c.send("Subject: pm\r\n\r\nhi\r\n.\r\n")
        self.accepted_id(c.reply()[0])
        c.cmd("QUIT")
        self.assertEqual(len(self.records("alice")), 1)   # first account, once
        self.assertIn(b"\tfor <postmaster>; ", self.records("alice")[0])

    def smuggle(self, variant):
        """Send a message with variant before a smuggled second transaction."""
        c = self.connect(self.server)
        data = (b"Subject: s\r\n\r\nbody" + variant + b"MAIL FROM:<evil@y.example>\r\n"
                b"RCPT TO:<bob@x.example>\r\nDATA\r\nsmuggled\r\n.\r\n")
        last = self.transaction(c, "s@y.example", ["alice@x.example"], data)
        msg_id = self.accepted_id(last)
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        self.assertShortEqual(self.mailbox("bob"), b"")
        records = self.records("alice")
        self.assertEqual(len(records), 1)
        return records[0], msg_id

    def check_smuggle(self, variant, stored_middle):
        record, msg_id = self.smuggle(variant)
        body = (b"Subject: s\r\n\r\n" + stored_middle + b"MAIL FROM:<evil@y.example>\r\n"
                b"RCPT TO:<bob@x.example>\r\nDATA\r\nsmuggled\r\n")
        self.assertRecord(record, "s@y.example", "alice@x.example", msg_id, body)

    def test_smuggling_lf_dot_lf(self):
        self.check_smuggle(b"\n.\n", b"body\r\n..\r\n")

    def test_smuggling_lf_dot_crlf(self):
        self.check_smuggle(b"\n.\r\n", b"body\r\n..\r\n")

    def test_smuggling_crlf_dot_lf(self):
        # after a raw CRLF the '.' is unstuffed, the bare LF splits: an empty line
        self.check_smuggle(b"\r\n.\n", b"body\r\n\r\n")

    def test_smuggling_cr_dot_cr(self):
        self.check_smuggle(b"\r.\r", b"body\r\n..\r\n")

    def test_bare_cr_and_lf_in_data_become_lines(self):
        c = self.connect(self.server)
        data = b"a\rb\nc\r\r\n.d\r\n\n\r\n.\r\n"
        msg_id = self.accepted_id(self.transaction(c, "s@y.example", ["carol@x.example"], data))
        c.cmd("QUIT")
        self.assertRecord(self.records("carol")[0], "s@y.example", "carol@x.example", msg_id,
                          b"a\r\nb\r\nc\r\n\r\nd\r\n\r\n\r\n")

    def test_long_lines_and_spill_to_temp_file(self):
        # 300 KiB: past the 64 KiB memory buffer; one 100 KiB line (data lines are unbounded)
        body = b"Subject: big\r\n\r\n" + b"x" * 100000 + b"\r\n" + (b"." + b"y" * 998 + b"\r\n") * 200
        wire = body.replace(b"\r\n.", b"\r\n..")
        c = self.connect(self.server)
        msg_id = self.accepted_id(self.transaction(c, "s@y.example", ["alice@x.example", "bob@x.example"],
                                                   wire + b".\r\n"))
        c.cmd("QUIT")
        for login in ("alice", "bob"):
            self.assertRecord(self.records(login)[0], "s@y.example", login + "@x.example", msg_id, wire)
        self.assertEqual(sorted(os.listdir(self.spool)), ["alice", "bob"])   # no temp file left

    def test_crashed_tail_is_trimmed(self):
        os.makedirs(os.path.join(self.spool, "alice"))
        good = b"Return-Path: <a@b>\r\nSubject: old\r\n\r\nold\r\n.\r\n"
        with open(self.mailbox_path("alice"), "wb") as f:
            f.write(good + TRACE + b"Subject: cut off")   # a crashed append of ours
        self.announce_append("alice", len(good))
        c = self.connect(self.server)
        msg_id = self.accepted_id(self.transaction(c, "s@y.example", ["alice@x.example"], b"new\r\n.\r\n"))
        c.cmd("QUIT")
        data = self.mailbox("alice")
        self.assertTrue(data.startswith(good))
        self.assertRecord(data[len(good):-3], "s@y.example", "alice@x.example", msg_id, b"new\r\n")
        self.assertTrue(data.endswith(b"\r\n.\r\n"))
        self.assertIn("trimmed a partial record", self.server.log())

    def test_saved_copy_of_our_record_in_lf_lines_is_kept(self):
        """A hand-written LF mailbox whose first message is a saved copy of one
        of smtpmail's records is mail, not a crashed tail of ours."""
        os.makedirs(os.path.join(self.spool, "alice"))
        hand = (b"Return-Path: <bob@example.org>\nReceived: from c.example ([127.0.0.1])\n"
                b"\tby mx.test.example (smtpmail) with SMTP id 1234\n"
                b"\tfor <alice@x.example>; Mon, 23 Nov 2026 09:00:00 +0000\n"
                b"Subject: saved copy\n\nI kept this one.\n.\nSubject: two\n\nsecond\n.\n")
        with open(self.mailbox_path("alice"), "wb") as f:
            f.write(hand)
        c = self.connect(self.server)
        self.accepted_id(self.transaction(c, "s@y.example", ["alice@x.example"], b"new\r\n.\r\n"))
        c.cmd("QUIT")
        records = self.records("alice")
        self.assertEqual(len(records), 3)
        self.assertTrue(records[0].endswith(b"Subject: saved copy\r\n\r\nI kept this one.\r\n"))
        self.assertEqual(records[1], b"Subject: two\r\n\r\nsecond\r\n")
        self.assertNotIn("trimmed", self.server.log())

    def test_hand_written_tail_is_kept(self):
        """A tail that is not smtpmail's own is mail (DESIGN.md): converted
        to records before the append, every byte of its text kept."""
        os.makedirs(os.path.join(self.spool, "alice"))
        good = b"Return-Path: <a@b>\r\nSubject: old\r\n\r\nold\r\n.\r\n"
        hand = b"From: a@x\nSubject: by hand\n.dot line\nlast line, no final dot"
        with open(self.mailbox_path("alice"), "wb") as f:
            f.write(good + hand)
        c = self.connect(self.server)
        msg_id = self.accepted_id(self.transaction(c, "s@y.example", ["alice@x.example"], b"new\r\n.\r\n"))
        c.cmd("QUIT")
        records = self.records("alice")
        self.assertEqual(records[0] + b".\r\n", good)
        self.assertEqual(records[1], b"From: a@x\r\nSubject: by hand\r\n..dot line\r\n"
                                     b"last line, no final dot\r\n")
        self.assertRecord(records[2], "s@y.example", "alice@x.example", msg_id, b"new\r\n")
        self.assertIn("written by another hand: converted to records (1 messages", self.server.log())
        self.assertNotIn("trimmed", self.server.log())

    def test_symlinked_mailbox_refused(self):
        os.makedirs(os.path.join(self.spool, "bob"))
        target = os.path.join(self.dir, "elsewhere")
        with open(target, "wb") as f:
            f.write(b"precious")
        os.symlink(target, self.mailbox_path("bob"))
        c = self.connect(self.server)
        last = self.transaction(c, "s@y.example", ["alice@x.example", "bob@x.example"], b"x\r\n.\r\n")
        self.assertEqual(last, "451 4.3.0 Local error in processing, try again later")
        c.cmd("QUIT")
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"precious")
        self.assertShortEqual(self.mailbox("alice"), b"")   # all or nothing

    def test_hard_linked_mailbox_refused(self):
        os.makedirs(os.path.join(self.spool, "bob"))
        other = os.path.join(self.dir, "other")
        with open(other, "wb") as f:
            f.write(b"Return-Path: <o@b>\r\n\r\nsomeone else's file\r\n.\r\n")
        os.link(other, self.mailbox_path("bob"))
        c = self.connect(self.server)
        last = self.transaction(c, "s@y.example", ["bob@x.example"], b"x\r\n.\r\n")
        self.assertEqual(last, "451 4.3.0 Local error in processing, try again later")
        c.cmd("QUIT")
        with open(other, "rb") as f:
            self.assertEqual(f.read(), b"Return-Path: <o@b>\r\n\r\nsomeone else's file\r\n.\r\n")
        self.assertIn("not a regular file with one link: refused", self.server.log())


if __name__ == "__main__":
    unittest.main()
