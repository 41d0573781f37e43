"""test_logs.py - no byte from a peer reaches a log as it is unless it is
printable UTF-8: the servers' logs (stderr) and mailclient's -v dialogue.

A log is read on a terminal: ESC [ ... (CSI), a raw 0x9b (CSI to an 8-bit
terminal), its UTF-8 form C2 9B, OSC title strings, bytes that are not
UTF-8 could all act there, and a bidi override or U+2028 could make a line
read as something else. The programs write each byte of such a character
as \\xNN and a backslash as \\\\ (README "Logs and exit status"); printable UTF-8 (José)
stays as it is. Each test sends hostile bytes where a log line shows them,
then reads the log as bytes: it must be strict UTF-8 with no control
character but the line ends, and hold the escaped forms exactly.
"""
import os
import socket
import unicodedata

from harness import MailTest, HOSTNAME
from test_client import ClientTest, FakeServer, MENU

# (what a peer sends, how the log shows it); each piece ends on a whole
# character, so the pieces can be joined with "|" and the results too.
PIECES = [
    (b"Jos\xc3\xa9 \xe2\x82\xac", "Jos\u00e9 \u20ac"),        # printable UTF-8 kept
    (b"\\x41\\", "\\\\x41\\\\"),                                # a backslash doubled
    (b"\x1b[2J\x1b[31m", "\\x1b[2J\\x1b[31m"),                  # C0: ESC [ ... (CSI)
    (b"\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),                # OSC title, BEL
    (b"a\tb\x7f", "a\\x09b\\x7f"),                              # TAB, DEL
    (b"\x9b31m\x85", "\\x9b31m\\x85"),                          # raw C1: CSI, NEL
    (b"\xc2\x9b2J\xc2\x80", "\\xc2\\x9b2J\\xc2\\x80"),          # C1 in UTF-8
    (b"\x80\xbf", "\\x80\\xbf"),                                # lone continuations
    (b"\xc0\xaf\xe0\x80\xaf", "\\xc0\\xaf\\xe0\\x80\\xaf"),     # overlong '/'
    (b"\xe2\x82", "\\xe2\\x82"),                                # truncated sequence
    (b"\xf0\x9f\x98", "\\xf0\\x9f\\x98"),                       # truncated, 4 octets
    (b"\xf5\x80\x80\x80\xff", "\\xf5\\x80\\x80\\x80\\xff"),     # F5 and above
    (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),                       # a surrogate
    (b"\xe2\x80\xaeevil\xe2\x80\xa8", "\\xe2\\x80\\xaeevil\\xe2\\x80\\xa8"),  # RLO, LS
]
RAW = b"|".join(p[0] for p in PIECES)
SHOWN = "|".join(p[1] for p in PIECES)
# One word (no space, no C0, which smtpmail refuses before it looks at a
# command): an EHLO name, an SMTP parameter (echoed in the 555 reply, cut at
# 64 octets); with C0 added, a POP3 USER name (kept for the log up to 64).
WORD_RAW = b"Jos\xc3\xa9\\\x9b\xc2\x9b\x80\xc0\xaf\xf5\xe2\x80\xae\xe2\x82"
WORD_SHOWN = ("Jos\u00e9\\\\\\x9b\\xc2\\x9b\\x80\\xc0\\xaf\\xf5"
              "\\xe2\\x80\\xae\\xe2\\x82")
USER_RAW = WORD_RAW + b"\x1b[2J\x7f\t"
USER_SHOWN = WORD_SHOWN + "\\x1b[2J\\x7f\\x09"
HIDDEN = {"\u061c", "\u200e", "\u200f", "\u2028", "\u2029"} | \
    {chr(c) for c in range(0x202a, 0x202f)} | {chr(c) for c in range(0x2066, 0x206a)}


class LogCheck:
    """check_clean: the bytes of a log hold nothing a terminal would act on."""

    def check_clean(self, data):
        try:
            text = data.decode("utf-8")     # strict: any stray byte fails
        except UnicodeDecodeError as e:
            self.fail("log is not UTF-8 (%s): %r" % (e, data[max(0, e.start - 60):e.end + 20]))
        for line in text.split("\n"):
            for ch in line:
                self.assertFalse(unicodedata.category(ch) == "Cc" or ch in HIDDEN,
                                 "U+%04X in the log line %r" % (ord(ch), line))
        return text


class ServerLogs(LogCheck, MailTest):
    """smtpmail and popserver: commands, a HELO name, a parameter echoed in a
    refusal, a POP3 USER name."""

    def log_bytes(self, server):
        with open(server.log_path, "rb") as f:
            return f.read()

    def smtp_lines(self, server, lines):
        """Send each line, read its reply; then QUIT, and wait for the end."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            f = s.makefile("rb")
            replies = [f.readline()]
            for line in lines + [b"QUIT"]:
                s.sendall(line + b"\r\n")
                while True:
                    reply = f.readline()
                    replies.append(reply)
                    if reply[3:4] != b"-":
                        break
            self.assertEqual(f.read(), b"")     # closed after QUIT: all logged
        return replies

    def test_smtp_verbose_dialogue(self):
        server = self.start_smtp("-v")
        replies = self.smtp_lines(server, [b"NOOP " + RAW, b"EHLO " + WORD_RAW,
                                           b"HELO h\xc2\x9b\xe2\x80\xae.example",
                                           b"NOOP " + b"\x9b" * 500])
        self.assertTrue(replies[1].startswith(b"500 "), replies)   # controls refused
        text = self.check_clean(self.log_bytes(server))
        self.assertIn("]: < NOOP %s\n" % SHOWN, text)
        self.assertIn("]: < EHLO %s\n" % WORD_SHOWN, text)
        self.assertIn("]: > 250-%s Hello %s\n" % (HOSTNAME, WORD_SHOWN), text)
        self.assertIn("]: > 250 OK Hello h\\xc2\\x9b\\xe2\\x80\\xae.example\n", text)
        # 500 octets escaped are 2000: the line is cut to LOG_LINE_MAX (1024
        # with its LF), after a whole escape, and stays one line.
        long = [l for l in text.split("\n") if "]: < NOOP \\x9b" in l]
        self.assertEqual(len(long), 1, text)
        self.assertLessEqual(len(long[0].encode()) + 1, 1024)
        self.assertGreater(len(long[0].encode()) + 1, 1020)
        self.assertRegex(long[0], r"]: < NOOP (\\x9b)+$")

    def test_smtp_refusal_echoes_a_parameter(self):
        server = self.start_smtp()
        replies = self.smtp_lines(server, [b"EHLO x.example",
                                           b"MAIL FROM:<a@x.example> X=" + WORD_RAW])
        self.assertTrue(replies[-2].startswith(b"555 "), replies)
        text = self.check_clean(self.log_bytes(server))
        self.assertIn("127.0.0.1: refused: 555 5.5.4 Unsupported parameter X=%s\n"
                      % WORD_SHOWN, text)

    def test_pop_user_name(self):
        for verbose in ((), ("-v",)):
            with self.subTest(verbose=verbose):
                server = self.start_pop("-w", "10", *verbose)
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                    f = s.makefile("rb")
                    f.readline()
                    for line in (b"USER " + USER_RAW, b"PASS x", b"NOOP " + RAW, b"QUIT"):
                        s.sendall(line + b"\r\n")
                        f.readline()
                    self.assertEqual(f.read(), b"")
                text = self.check_clean(self.log_bytes(server))
                self.assertIn("login %s from 127.0.0.1 failed\n" % USER_SHOWN, text)
                if verbose:
                    self.assertIn("]: < USER %s\n" % USER_SHOWN, text)
                    self.assertIn("]: < NOOP %s\n" % SHOWN, text)

    def test_secret_after_blanks_never_logged(self):
        """A command line that starts with blanks, in any case, still hides
        its secret with -v: " PASS", "\tauth plain", " APOP"."""
        secret = b"s3cretW0rd"
        b64 = b"AGFsaWNlAHMzY3JldFcwcmQ="       # \0alice\0s3cretW0rd
        smtp = self.start_smtp("-v", "-w", "0")
        self.smtp_lines(smtp, [b"EHLO x.example", b" AUTH PLAIN " + b64,
                               b"\tauth plain " + b64, b"  Auth Login " + b64])
        pop = self.start_pop("-v", "-w", "0")
        # One connection a line: popserver closes after three errors.
        for line in (b" PASS " + secret, b"\t pass " + secret,
                     b" apop alice " + secret, b" AUTH PLAIN " + b64):
            with socket.create_connection(("127.0.0.1", pop.port), timeout=10) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(b"USER alice\r\n" + line + b"\r\nQUIT\r\n")
                self.assertEqual(len(f.read().split(b"\r\n")), 4)    # 3 replies, closed
        for server in (smtp, pop):
            log = self.log_bytes(server)
            self.assertNotIn(secret, log)
            self.assertNotIn(b64, log)
            self.assertNotIn(b64[:12], log)
            self.assertIn(b"****", log)


class ClientLog(LogCheck, ClientTest):
    """mailclient -v: what scripted servers send, and what the user typed,
    on stderr escaped; the terminal itself shows '?' (test_client)."""

    def test_verbose_dialogue_escaped(self):
        def data(f):
            while f.readline() not in (b".\r\n", b""):
                pass
            return b"250 ok " + RAW + b"\r\n"
        # mailclient checks the SMTP server (greeting, QUIT) before the mail
        # is typed, then sends it in a second session.
        smtp = FakeServer(b"220 " + RAW + b"\r\n", ["221 bye\r\n"],
                          then=[(b"220 " + RAW + b"\r\n",
                                 [b"250-x " + RAW + b"\r\n250 SIZE 1000\r\n", "250 ok\r\n",
                                  "250 ok\r\n", "354 go\r\n", data,
                                  b"221 \x00nul\x1b[0m\r\n"])])
        # popserver: the login checked at the start, then menu 1; CAPA and
        # USER refused, the second for no fault of the password's
        busy = (b"+OK " + RAW + b"\r\n", [b"-ERR " + RAW + b"\r\n",
                                          b"-ERR [SYS/TEMP] " + RAW + b"\r\n", "+OK bye\r\n"])
        pop = FakeServer(*busy, then=[busy])
        for s in (smtp, pop):
            self.addCleanup(s.close)
        c = self.client("-v", user="alice", smtp_port=smtp.port, pop_port=pop.port)
        self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: s",
                           "Jos\u00e9 \\ \u00c2\u009b", ".x", "."])
        c.line("1")
        c.expect("Login failed: -ERR ")
        c.expect(MENU)
        self.quit(c)
        with open(c.err_path, "rb") as f:
            text = self.check_clean(f.read())
        for want in ("S: 220 " + SHOWN, "S: 250-x " + SHOWN, "S: 250 ok " + SHOWN,
                     "S: 221 \\x00nul\\x1b[0m", "S: +OK " + SHOWN, "S: -ERR " + SHOWN,
                     "C: Jos\u00e9 \\\\ \u00c2\\xc2\\x9b", "C: ..x"):
            self.assertIn("]: %s\n" % want, text)
