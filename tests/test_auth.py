"""Authentication on both servers, and -i (one session on standard input and
output). smtpmail: AUTH (RFC 4954) with CRAM-MD5 (RFC 2195), PLAIN (RFC 4616)
and LOGIN, by smtplib and curl and over raw sockets (initial responses, "=",
"*", bad base64, the order rules, a wrong password's 535 after the growing
delay), -a submission and "with ESMTPA". popserver: APOP by poplib (RFC 1939
section 7), AUTH CRAM-MD5 and PLAIN (RFC 5034) over raw sockets, failures
counted and delayed as a wrong PASS. No password, nor its base64, in any -v
log. -i over a socketpair and over pipes, the peer's address, the exit
status, the log kept out of the dialogue, the descriptors' flags restored."""
import base64
import fcntl
import hashlib
import hmac
import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import time
import unittest

from harness import (HOSTNAME, POP_GREETING, SANITIZER_ENV, SANITIZER_RE, Raw, binary)
from test_abuse import OTHER, raw_from, wait_no_children
from test_smtp_process import wait_sessions_over
from test_smtp import SmtpTest

EHLO_AUTH = "250-AUTH CRAM-MD5 PLAIN LOGIN"
STAMP_RE = re.compile(r"<(\d+)\.\d+@([^<>\s]+)>")
MESSAGE = b"Subject: auth test\r\n\r\nhello\r\n.\r\n"


def b64(data):
    """base64 text of data (str or bytes)."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def plain(user, password, authzid=""):
    """An RFC 4616 PLAIN message, base64."""
    return b64("%s\0%s\0%s" % (authzid, user, password))


def cram(challenge_b64, user, password):
    """The RFC 2195 response to a challenge, both base64."""
    challenge = base64.b64decode(challenge_b64)
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return b64("%s %s" % (user, digest)), challenge


def secrets_of(password):
    """The forms a password could reach a log in: plain, base64, in PLAIN."""
    return [password, b64(password), plain("alice", password), b64("alice"),
            b64("\0alice\0" + password)[:12]]


class SmtpAuth(SmtpTest):
    """AUTH against smtpmail -v -w 0 (no delay), over raw sockets, smtplib."""

    def setUp(self):
        super().setUp()
        self.server = self.start_smtp("-v", "-w", "0")

    def test_ehlo_offers_auth_and_smtplib_picks_cram_md5(self):
        c = self.connect(self.server, greet=None)
        c.send("EHLO client.example\r\n")
        self.assertIn(EHLO_AUTH, c.reply())
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=10) as s:
            s.ehlo("client.example")
            self.assertEqual(s.login("alice", "alicepw")[0], 235)
            s.sendmail("alice@x.example", ["bob@x.example"], MESSAGE[:-3])
        log = self.server.log()
        self.assertIn("< AUTH CRAM-MD5\n", log)      # smtplib's first choice
        self.assertIn("127.0.0.1: authenticated alice by CRAM-MD5", log)
        rec = self.records("bob")
        self.assertEqual(len(rec), 1)
        self.assertIn(b"with ESMTPA id", rec[0])       # RFC 3848: ESMTP + AUTH

    def test_cram_md5_raw(self):
        c = self.connect(self.server)
        line = c.cmd("AUTH CRAM-MD5")
        self.assertTrue(line.startswith("334 "), line)
        response, challenge = cram(line[4:], "alice", "alicepw")
        m = STAMP_RE.fullmatch(challenge.decode())
        self.assertIsNotNone(m, challenge)
        self.assertEqual(m.group(2), HOSTNAME)
        self.assertEqual(c.cmd(response), "235 2.7.0 Authentication successful")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "503 5.5.1 Already authenticated")
        other = self.connect(self.server)              # a fresh challenge
        line2 = other.cmd("AUTH CRAM-MD5")
        self.assertNotEqual(line2, line)
        self.assertEqual(other.cmd(response), "535 5.7.8 Authentication credentials invalid")
        self.assertEqual(other.cmd("AUTH CRAM-MD5 " + response),
                         "501 5.5.4 CRAM-MD5 takes no initial response")

    def test_plain_initial_response_continuation_and_authzid(self):
        c = self.connect(self.server)
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "235 2.7.0 Authentication successful")
        c = self.connect(self.server)
        self.assertEqual(c.cmd("AUTH PLAIN"), "334 ")
        self.assertEqual(c.cmd(plain("Alice", "alicepw", "alice")),
                         "235 2.7.0 Authentication successful")
        c = self.connect(self.server)                  # nobody acts for another
        self.assertEqual(c.cmd("auth plain " + plain("alice", "alicepw", "bob")),
                         "535 5.7.8 Authentication credentials invalid")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("nobody", "alicepw")),
                         "535 5.7.8 Authentication credentials invalid")

    def test_login_with_and_without_initial_response(self):
        c = self.connect(self.server)
        self.assertEqual(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6")     # Username:
        self.assertEqual(c.cmd(b64("alice")), "334 UGFzc3dvcmQ6")     # Password:
        self.assertEqual(c.cmd(b64("alicepw")), "235 2.7.0 Authentication successful")
        c = self.connect(self.server)
        self.assertEqual(c.cmd("AUTH LOGIN " + b64("bob")), "334 UGFzc3dvcmQ6")
        self.assertEqual(c.cmd(b64("bobpw")), "235 2.7.0 Authentication successful")

    def test_equals_is_an_empty_response(self):
        c = self.connect(self.server)
        # RFC 4954 4: "=" is a response of no bytes, which PLAIN cannot take
        self.assertEqual(c.cmd("AUTH PLAIN ="), "535 5.7.8 Authentication credentials invalid")
        self.assertEqual(c.cmd("AUTH LOGIN ="), "334 UGFzc3dvcmQ6")
        self.assertEqual(c.cmd("="), "535 5.7.8 Authentication credentials invalid")
        self.assertEqual(c.cmd("AUTH PLAIN"), "334 ")
        self.assertEqual(c.cmd("="), "535 5.7.8 Authentication credentials invalid")

    def test_cancel_and_bad_base64(self):
        c = self.connect(self.server)
        for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
            self.assertTrue(c.cmd("AUTH " + mech).startswith("334"), mech)
            self.assertEqual(c.cmd("*"), "501 5.7.0 Authentication cancelled", mech)
        self.assertEqual(c.cmd("AUTH LOGIN " + b64("alice")), "334 UGFzc3dvcmQ6")
        self.assertEqual(c.cmd("*"), "501 5.7.0 Authentication cancelled")
        for bad in ("!!!!", "AGFs=aWNl", "AGFsaWNlAGFsaWNlcHc", "Zh=="):
            self.assertEqual(c.cmd("AUTH PLAIN " + bad), "501 5.5.2 Cannot decode response", bad)
        self.assertEqual(c.cmd("AUTH PLAIN"), "334 ")
        self.assertEqual(c.cmd("not base64"), "501 5.5.2 Cannot decode response")
        # none of that was a login: a MAIL still works without one (no -a),
        # and the next AUTH is taken
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "235 2.7.0 Authentication successful")

    def test_order_syntax_and_helo_dialect(self):
        c = self.connect(self.server, greet=None)
        self.assertEqual(c.cmd("AUTH PLAIN"), "503 Send HELO or EHLO first")
        self.assertEqual(c.cmd("EHLO client.example"), "250 HELP")
        self.assertEqual(c.cmd("AUTH"), "501 5.5.4 Syntax: AUTH mechanism [initial-response]")
        self.assertEqual(c.cmd("AUTH PLAIN a= b="),
                         "501 5.5.4 Syntax: AUTH mechanism [initial-response]")
        self.assertEqual(c.cmd("AUTH XOAUTH2"), "504 5.5.4 Unrecognized authentication type")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example> AUTH=<>"),
                         "250 2.1.0 <a@b.example>... Sender ok")   # RFC 4954 5
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "503 5.5.1 Mail transaction in progress")
        self.assertEqual(c.cmd("RCPT TO:<bob@x.example>"), "250 2.1.5 <bob@x.example>... Recipient ok")
        self.assertEqual(c.cmd("AUTH PLAIN"), "503 5.5.1 Mail transaction in progress")
        # after HELO: taken (lenient), answered in the assignment's dialect
        c = self.connect(self.server, greet="HELO client.example")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "wrong")),
                         "535 Authentication credentials invalid")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "235 Authentication successful")
        self.assertEqual(self.transaction(c, "alice@x.example", ["bob@x.example"],
                                          MESSAGE, enhanced=False)[:6], "250 OK")
        self.assertIn(b"with ESMTPA id", self.records("bob")[0])

    def test_no_credential_in_the_log(self):
        c = self.connect(self.server)
        c.cmd("AUTH PLAIN " + plain("alice", "alicepw"))
        c = self.connect(self.server)
        c.cmd("AUTH PLAIN " + plain("alice", "wrongpw1"))
        c.cmd("AUTH PLAIN")
        c.cmd(plain("alice", "wrongpw2"))
        c.cmd("AUTH LOGIN " + b64("alice"))
        c.cmd(b64("wrongpw3"))
        response, _ = cram(c.cmd("AUTH CRAM-MD5")[4:], "alice", "wrongpw4")
        c.cmd(response)
        c.cmd("AUTH PLAIN x")                       # bad base64: masked too
        c.cmd("QUIT")
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=10) as s:
            s.login("bob", "bobpw")
        log = self.server.log()
        for password in ("alicepw", "bobpw", "wrongpw1", "wrongpw2", "wrongpw3", "wrongpw4"):
            for secret in secrets_of(password):
                self.assertNotIn(secret, log, password)
        self.assertNotIn(response, log)
        self.assertIn("< AUTH PLAIN ****", log)
        self.assertIn("< AUTH LOGIN ****", log)
        self.assertIn("< ****", log)
        self.assertIn("127.0.0.1: authentication of alice by PLAIN failed", log)


class SmtpPenalty(SmtpTest):
    """A wrong password waits -w, doubled per failure; the session's count
    reaches the parent (its note on the pipe), as popserver's wrong PASS does."""

    def wrong(self, c):
        start = time.time()
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "nope")),
                         "535 5.7.8 Authentication credentials invalid")
        return time.time() - start

    def test_535_after_a_growing_delay(self):
        server = self.start_smtp("-w", "100")
        c = self.connect(server)
        times = [self.wrong(c) for _ in range(2)]          # 100, 200 ms
        self.assertGreater(times[0], 0.09, times)
        self.assertGreater(times[1], 0.19, times)
        start = time.time()                                 # a right one: no delay
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "235 2.7.0 Authentication successful")
        self.assertLess(time.time() - start, 0.09)
        c.cmd("QUIT")
        self.assertTrue(c.closed())
        # the two failures count for the address (100 ms * 2^2), once the
        # parent has the session's note (its worker's penalty report);
        # another address not
        self.assertTrue(wait_sessions_over(server))
        with raw_from(server.port, OTHER) as c:
            c.reply()
            c.cmd("EHLO client.example")
            self.assertLess(self.wrong(c), 0.35)
        c = self.connect(server)
        self.assertGreater(self.wrong(c), 0.39)


class Submission(SmtpTest):
    """-a: MAIL only after AUTH, only from the login's own address; curl."""

    def setUp(self):
        super().setUp()
        self.server = self.start_smtp("-a", "-w", "0", "-v")

    def test_mail_needs_auth_and_an_own_sender(self):
        c = self.connect(self.server)
        self.assertEqual(c.cmd("MAIL FROM:<alice@x.example>"), "530 5.7.0 Authentication required")
        self.assertEqual(c.cmd("RCPT TO:<bob@x.example>"), "503 5.5.1 Need MAIL command")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "235 2.7.0 Authentication successful")
        self.assertEqual(c.cmd("MAIL FROM:<bob@x.example>"),
                         "553 5.7.1 Sender address not owned by alice")
        self.assertEqual(c.cmd("MAIL FROM:<alicex@x.example>"),
                         "553 5.7.1 Sender address not owned by alice")
        self.assertEqual(c.cmd("MAIL FROM:<>"), "250 2.1.0 <>... Sender ok")
        self.assertEqual(c.cmd("RSET"), "250 2.0.0 OK")
        reply = self.transaction(c, "ALICE@elsewhere.example", ["bob@x.example"], MESSAGE)
        msg_id = self.accepted_id(reply)
        self.assertRecord(self.records("bob")[0], "ALICE@elsewhere.example", "bob@x.example",
                          msg_id, b"Subject: auth test\r\n\r\nhello\r\n", proto="ESMTPA")
        c = self.connect(self.server, greet="HELO client.example")
        self.assertEqual(c.cmd("MAIL FROM:<alice@x.example>"), "530 Authentication required")

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_curl_plain_and_login(self):
        path = os.path.join(self.dir, "message.txt")
        with open(path, "wb") as f:
            f.write(b"Subject: by curl\r\n\r\nhello\r\n")
        for mech in ("PLAIN", "LOGIN"):
            run = subprocess.run(["curl", "-sS", "--max-time", "20",
                                  "smtp://127.0.0.1:%d" % self.server.port,
                                  "--mail-from", "alice@x.example", "--mail-rcpt", "bob@x.example",
                                  "--user", "alice:alicepw", "--login-options", "AUTH=" + mech,
                                  "-T", path], capture_output=True, text=True, timeout=30)
            self.assertEqual(run.returncode, 0, mech + run.stderr)
            self.assertIn("authenticated alice by %s" % mech, self.server.log())
        run = subprocess.run(["curl", "-sS", "--max-time", "20",
                              "smtp://127.0.0.1:%d" % self.server.port,
                              "--mail-from", "alice@x.example", "--mail-rcpt", "bob@x.example",
                              "--user", "alice:nope", "--login-options", "AUTH=PLAIN",
                              "-T", path], capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 67, run.stderr)     # curl: login denied
        records = self.records("bob")
        self.assertEqual(len(records), 2)
        for rec in records:
            self.assertIn(b"with ESMTPA id", rec)
        self.assertNotIn("alicepw", self.server.log())


class PopAuth(SmtpTest):
    """APOP and AUTH against popserver -v -a 0."""

    def setUp(self):
        super().setUp()
        self.pop = self.start_pop("-v", "-w", "0")
        os.mkdir(os.path.join(self.spool, "alice"))
        with open(self.mailbox_path("alice"), "wb") as f:
            f.write(b"Subject: one\r\n\r\nfirst\r\n.\r\n")

    def greet(self):
        r = Raw(self.pop.port)
        self.clients.append(r)
        greeting = r.line()
        self.assertRegex(greeting, POP_GREETING)
        return r, STAMP_RE.search(greeting).group(0)

    def test_greeting_stamps_differ_and_capa_lists_sasl(self):
        (r1, s1), (r2, s2) = self.greet(), self.greet()
        self.assertNotEqual(s1, s2)
        r1.send("CAPA\r\n")
        self.assertEqual(r1.line(), "+OK capability list follows")
        caps = []
        while caps[-1:] != ["."]:
            caps.append(r1.line())
        self.assertIn("SASL CRAM-MD5 PLAIN", caps)

    def test_poplib_apop(self):
        p = poplib.POP3("127.0.0.1", self.pop.port, timeout=10)
        self.assertTrue(p.apop("alice", "alicepw").startswith(b"+OK maildrop has 1 messages"))
        self.assertEqual(p.retr(1)[1], [b"Subject: one", b"", b"first"])
        p.quit()
        p = poplib.POP3("127.0.0.1", self.pop.port, timeout=10)
        with self.assertRaisesRegex(poplib.error_proto, r"-ERR \[AUTH\] invalid user name"):
            p.apop("alice", "wrong")
        with self.assertRaisesRegex(poplib.error_proto, r"-ERR \[AUTH\] invalid user name"):
            p.apop("nobody", "alicepw")
        p.close()
        r, stamp = self.greet()                # any case of hex; APOP after USER
        digest = hashlib.md5((stamp + "alicepw").encode()).hexdigest().upper()
        self.assertEqual(r.cmd("USER bob"), "+OK send PASS")
        self.assertEqual(r.cmd("APOP alice %s" % digest), "+OK maildrop has 1 messages (23 octets)")
        self.assertEqual(r.cmd("APOP alice %s" % digest), "-ERR command not valid in this state")
        log = self.pop.log()
        self.assertIn("login alice from 127.0.0.1 by APOP ok: 1 messages", log)
        self.assertIn("login alice from 127.0.0.1 by APOP failed", log)
        self.assertIn("< APOP alice ****", log)
        self.assertNotIn(digest.lower(), log.lower())

    def test_auth_cram_md5_and_plain(self):
        r, _ = self.greet()
        line = r.cmd("AUTH CRAM-MD5")
        self.assertTrue(line.startswith("+ "), line)
        response, challenge = cram(line[2:], "alice", "alicepw")
        self.assertIsNotNone(STAMP_RE.fullmatch(challenge.decode()))
        self.assertEqual(r.cmd(response), "+OK maildrop has 1 messages (23 octets)")
        r.cmd("QUIT")
        r, _ = self.greet()
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "+OK maildrop has 1 messages (23 octets)")
        r.cmd("QUIT")
        r, _ = self.greet()
        self.assertEqual(r.cmd("auth plain"), "+ ")
        self.assertEqual(r.cmd(plain("alice", "alicepw")), "+OK maildrop has 1 messages (23 octets)")
        log = self.pop.log()
        self.assertIn("login alice from 127.0.0.1 by AUTH CRAM-MD5 ok", log)
        self.assertIn("login alice from 127.0.0.1 by AUTH PLAIN ok", log)

    def test_cancel_bad_base64_and_unknown_mechanisms(self):
        r, _ = self.greet()
        for mech in ("PLAIN", "CRAM-MD5"):
            self.assertTrue(r.cmd("AUTH " + mech).startswith("+ "))
            self.assertEqual(r.cmd("*"), "-ERR authentication cancelled")
        self.assertEqual(r.cmd("AUTH PLAIN !!!!"), "-ERR invalid base64")
        self.assertEqual(r.cmd("AUTH LOGIN"), "-ERR unsupported authentication mechanism")
        self.assertEqual(r.cmd("AUTH"), "-ERR too many errors")     # the third bad one
        self.assertTrue(r.closed())
        r, _ = self.greet()
        self.assertEqual(r.cmd("AUTH CRAM-MD5 abcd"), "-ERR CRAM-MD5 takes no initial response")
        self.assertEqual(r.cmd("AUTH PLAIN ="), "-ERR [AUTH] invalid user name or password")
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "+OK maildrop has 1 messages (23 octets)")

    def test_failures_count_and_close_as_a_wrong_pass(self):
        r, stamp = self.greet()
        self.assertEqual(r.cmd("APOP alice " + "0" * 32), "-ERR [AUTH] invalid user name or password")
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice", "nope")),
                         "-ERR [AUTH] invalid user name or password")
        response, _ = cram(r.cmd("AUTH CRAM-MD5")[2:], "alice", "nope")
        self.assertEqual(r.cmd(response), "-ERR [AUTH] invalid user name or password")
        self.assertTrue(r.closed())                      # three wrong passwords

    def test_no_credential_in_the_log(self):
        r, stamp = self.greet()
        r.cmd("AUTH PLAIN " + plain("alice", "wrongpw1"))
        r.cmd("AUTH PLAIN")
        r.cmd(plain("alice", "wrongpw2"))
        r.close()
        r, stamp = self.greet()
        response, _ = cram(r.cmd("AUTH CRAM-MD5")[2:], "alice", "alicepw")
        r.cmd(response)
        r.cmd("QUIT")
        r, stamp = self.greet()
        r.cmd("USER alice")
        r.cmd("PASS alicepw")
        r.cmd("QUIT")
        log = self.pop.log()
        for password in ("alicepw", "wrongpw1", "wrongpw2"):
            for secret in secrets_of(password):
                self.assertNotIn(secret, log, password)
        self.assertNotIn(response, log)
        self.assertIn("< AUTH PLAIN ****", log)
        self.assertIn("< ****", log)


class PopPenalty(SmtpTest):
    """APOP and AUTH failures wait -a, doubled, across sessions."""

    def test_delay_grows_across_mechanisms_and_sessions(self):
        pop = self.start_pop("-w", "100")
        with Raw(pop.port) as r:
            r.line()
            times = []
            for command in ("APOP alice " + "0" * 32, "AUTH PLAIN " + plain("alice", "x")):
                start = time.time()
                self.assertEqual(r.cmd(command), "-ERR [AUTH] invalid user name or password")
                times.append(time.time() - start)
            r.cmd("QUIT")
            self.assertTrue(r.closed())
        self.assertGreater(times[0], 0.09, times)
        self.assertGreater(times[1], 0.19, times)
        self.assertTrue(wait_no_children(pop))  # the parent has the session's note
        with Raw(pop.port) as r:               # two failures before: 100 * 2^2
            r.line()
            start = time.time()
            r.cmd("AUTH PLAIN " + plain("alice", "x"))
            self.assertGreater(time.time() - start, 0.39)


class Inetd(SmtpTest):
    """-i: one session on standard input and output, the inetd convention."""

    def run_server(self, prog, args, stdin, stdout, env=None, stderr=None):
        """Start prog -i with the test's spool; returns the process."""
        log = stderr if stderr is not None else open(os.path.join(self.dir, prog + "-i.log"), "ab")
        cmd = [binary(prog), "-i", "-d", self.spool, "-u", self.userfile] + list(args)
        full_env = dict(os.environ, **SANITIZER_ENV)
        for name in ("TCPREMOTEIP", "REMOTE_HOST", "REMOTE_ADDR"):
            full_env.pop(name, None)
        full_env.update(env or {})
        return subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=log, env=full_env,
                                cwd=self.dir)

    def log_of(self, prog):
        with open(os.path.join(self.dir, prog + "-i.log"), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        self.assertIsNone(SANITIZER_RE.search(text), text)
        return text

    def test_smtp_over_a_socketpair(self):
        ours, theirs = socket.socketpair()
        proc = self.run_server("smtpmail", ["-n", HOSTNAME, "-w", "0"], theirs, theirs)
        theirs.close()
        c = Raw.__new__(Raw)
        c.sock, c.buf = ours, b""
        ours.settimeout(10)
        self.clients.append(c)
        self.assertEqual(c.reply(), ["220 %s Service ready" % HOSTNAME])
        self.assertIn(EHLO_AUTH, (c.send("EHLO client.example\r\n"), c.reply())[1])
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "nope")),
                         "535 5.7.8 Authentication credentials invalid")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alicepw")),
                         "235 2.7.0 Authentication successful")
        self.accepted_id(self.transaction(c, "alice@x.example", ["bob@x.example"], MESSAGE))
        self.assertEqual(c.cmd("QUIT"), "221 2.0.0 %s closing connection" % HOSTNAME)
        # Exit status means success or failure only: a wrong password is no
        # failure of the server (with no parent, -i keeps no penalty).
        self.assertEqual(proc.wait(10), 0)
        rec = self.records("bob")[0]
        self.assertIn(b"Received: from client.example (unknown)\r\n", rec)
        self.assertIn(b"with ESMTPA id", rec)
        self.assertIn("connection from unknown", self.log_of("smtpmail"))
        self.assertIn("unknown: authentication of alice by PLAIN failed", self.log_of("smtpmail"))

    def test_smtp_over_pipes_peer_from_the_environment(self):
        for env, shown in (({"TCPREMOTEIP": "192.0.2.7"}, b"([192.0.2.7])"),
                           ({"REMOTE_HOST": "2001:db8::5"}, b"([IPv6:2001:db8::5])"),
                           ({"REMOTE_HOST": "evil.example\r\nX: y"}, b"(unknown)")):
            read_end, write_end = os.pipe()       # the server's stdin
            proc = self.run_server("smtpmail", ["-n", HOSTNAME], read_end,
                                   subprocess.PIPE, env=env)
            os.write(write_end, b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n"
                     b"RCPT TO:<bob@x.example>\r\nDATA\r\n" + MESSAGE + b"QUIT\r\n")
            os.close(write_end)
            out = proc.stdout.read()
            proc.stdout.close()
            self.assertEqual(proc.wait(10), 0)
            self.assertIn(b"250 2.0.0 OK Message accepted", out)
            self.assertTrue(out.endswith(b"221 2.0.0 %s closing connection\r\n"
                                         % HOSTNAME.encode()), out[-200:])
            # the descriptor it shared with us is blocking again
            self.assertEqual(fcntl.fcntl(read_end, fcntl.F_GETFL) & os.O_NONBLOCK, 0)
            os.close(read_end)
            self.assertIn(b"Received: from client.example " + shown, self.records("bob")[-1])

    def test_smtp_on_an_accepted_tcp_socket(self):
        """inetd's way: getpeername wins over the variables, and an
        IPv4-mapped address of a dual-stack socket (systemd's) is IPv4."""
        try:
            listener = socket.socket(socket.AF_INET6)
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind(("::", 0))
        except OSError:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
        with listener:
            listener.listen(1)
            client = socket.create_connection(("127.0.0.1", listener.getsockname()[1]), 10)
            accepted, _ = listener.accept()
        proc = self.run_server("smtpmail", ["-n", HOSTNAME], accepted, accepted,
                               env={"TCPREMOTEIP": "192.0.2.9"})
        accepted.close()
        c = Raw.__new__(Raw)
        c.sock, c.buf = client, b""
        self.clients.append(c)
        c.reply()
        c.cmd("EHLO client.example")
        self.accepted_id(self.transaction(c, "a@b.example", ["bob@x.example"], MESSAGE))
        c.cmd("QUIT")
        self.assertEqual(proc.wait(10), 0)
        self.assertIn(b"Received: from client.example ([127.0.0.1])", self.records("bob")[0])

    def test_pop_over_a_socketpair_with_apop_and_over_pipes(self):
        body = b"Subject: one\r\n\r\n" + b"x" * 100000 + b"\r\n"   # past a pipe's buffer
        os.mkdir(os.path.join(self.spool, "alice"))
        with open(self.mailbox_path("alice"), "wb") as f:
            f.write(body + b".\r\n")
        ours, theirs = socket.socketpair()
        proc = self.run_server("popserver", ["-w", "0"], theirs, theirs)
        theirs.close()
        r = Raw.__new__(Raw)
        r.sock, r.buf = ours, b""
        ours.settimeout(10)
        self.clients.append(r)
        greeting = r.line()
        self.assertRegex(greeting, POP_GREETING)
        digest = hashlib.md5((STAMP_RE.search(greeting).group(0) + "alicepw").encode()).hexdigest()
        self.assertTrue(r.cmd("APOP alice " + digest).startswith("+OK maildrop has 1"))
        self.assertEqual(r.cmd("QUIT"), "+OK popserver goodbye")
        self.assertEqual(proc.wait(10), 0)
        proc = self.run_server("popserver", ["-w", "0"], subprocess.PIPE, subprocess.PIPE)
        out, _ = proc.communicate(b"USER alice\r\nPASS nope\r\nUSER alice\r\nPASS alicepw\r\n"
                                  b"RETR 1\r\nDELE 1\r\nQUIT\r\n", timeout=20)
        self.assertEqual(proc.returncode, 0)            # success, a wrong password or not
        retr = b"+OK %d octets\r\n" % len(body) + body + b".\r\n"
        self.assertTrue(retr in out, out[:300])
        self.assertTrue(out.endswith(b"+OK 1 messages deleted, goodbye\r\n"), out[-100:])
        self.assertEqual(self.mailbox("alice"), b"")
        self.assertIn("login alice from unknown failed", self.log_of("popserver"))
        self.assertIn("login alice from unknown ok", self.log_of("popserver"))

    def test_log_kept_out_of_the_dialogue_and_limits_apply(self):
        # inetd's way: standard error is the connection too
        ours, theirs = socket.socketpair()
        proc = self.run_server("smtpmail", ["-n", HOSTNAME, "-t", "1", "-v"], theirs, theirs,
                               stderr=theirs)
        theirs.close()
        ours.settimeout(10)
        data = b""
        while True:
            chunk = ours.recv(65536)
            if not chunk:
                break
            data += chunk
        ours.close()
        self.assertEqual(proc.wait(10), 0)
        # no log line, only the greeting and -t's 421 (a limit applies)
        self.assertEqual(data, b"220 %s Service ready\r\n421 %s Timeout, closing "
                         b"connection\r\n" % (HOSTNAME.encode(), HOSTNAME.encode()))


if __name__ == "__main__":
    unittest.main()
