"""mailclient's logins: the password never crosses the wire in clear
against our servers (SMTP AUTH CRAM-MD5 on a submission server, POP3 APOP),
AUTH CRAM-MD5 to a POP3 server without APOP, the clear fallbacks said once,
and a POP3 server down at the start.

A recording proxy sits between the client and each real server: it relays
the bytes and keeps them, and the test looks for the password in every
form it could take there (as it is, and in base64 at each alignment).
"""
import base64
import hashlib
import hmac
import socket
import threading

from harness import MailTest
from test_client import MENU, Client, ClientTest, FakeServer

PASSWORD = "correct-horse-battery"      # long enough for every base64 alignment


def clear_forms(secret):
    """The secret as bytes, and the base64 text any stream holding it would
    carry, whatever bytes come before it (the part decided by the secret alone)."""
    forms = [secret]
    for k in range(3):
        text = base64.b64encode(b"\0" * k + secret)
        start = -(-k // 3) * 4                  # the first group made of secret bytes only
        end = (k + len(secret)) // 3 * 4       # the last whole group
        forms.append(text[start:end])
    return [f for f in forms if len(f) >= 8]


class Recorder:
    """A TCP relay to 127.0.0.1:port that keeps every byte, both ways.
    Bounded: at most `sessions` connections, each socket with a timeout."""

    def __init__(self, port, sessions):
        self.port, self.seen = port, bytearray()
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(15)
        self.listen_port = self.sock.getsockname()[1]
        self.threads = []
        self.thread = threading.Thread(target=self.run, args=(sessions,), daemon=True)
        self.thread.start()

    def run(self, sessions):
        for _ in range(sessions):
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.port), timeout=15)
            down.settimeout(15)
            for a, b in ((down, up), (up, down)):
                t = threading.Thread(target=self.pump, args=(a, b), daemon=True)
                t.start()
                self.threads.append(t)

    def pump(self, src, dst):
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                with self.lock:
                    self.seen += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        self.thread.join(10)
        for t in self.threads:
            t.join(10)


class NoClearPassword(ClientTest):
    """Against smtpmail -a and popserver, through recording proxies."""

    accounts = MailTest.accounts + [("dave", PASSWORD)]

    def setUp(self):
        MailTest.setUp(self)
        self.clients = []
        self.smtp = self.start_smtp("-a", "-w", "50")
        self.pop = self.start_pop("-w", "50")

    def test_send_and_read_with_no_password_on_the_wire(self):
        smtp = Recorder(self.smtp.port, 2)      # the check before the mail, the mail
        pop = Recorder(self.pop.port, 4)        # the login checked, list, mail, list
        for r in (smtp, pop):
            self.addCleanup(r.close)
        c = self.client("-v", smtp_port=smtp.listen_port, pop_port=pop.listen_port)
        c.login("dave", PASSWORD)
        self.send_mail(c, ["From: dave@h", "To: dave@h", "Subject: safe", "x", "."])
        c.line("1")
        c.expect("Enter mail no. to see: ")
        c.line("1")
        self.assertIn("Subject: safe", c.expect("any other key to see the list: "))
        c.send("x")
        c.expect("Enter mail no. to see: ")
        c.line("-1")
        c.expect(MENU)
        self.quit(c)
        self.assertIn(b"with ESMTPA", self.mailbox("dave"))
        smtp.close()
        pop.close()
        self.assertIn(b"AUTH CRAM-MD5\r\n", smtp.seen)
        self.assertIn(b"APOP dave ", pop.seen)
        self.assertNotIn(b"PASS", pop.seen)
        err = c.stderr().encode()
        for wire in (smtp.seen, pop.seen, err, c.raw):
            for form in clear_forms(PASSWORD.encode()):
                self.assertNotIn(form, wire)
        for shown in (b"C: APOP dave ****\n", b"C: AUTH CRAM-MD5\n", b"C: ****\n"):
            self.assertIn(shown, err)
        self.assertNotIn(b"Note: the server offers no", c.raw)

    def test_pop_down_at_the_start_then_smtp_refuses_the_password(self):
        # the client goes on to the menu; the submission server says 535
        # before the mail is typed, and the password is asked for again
        port = self.dead_port()
        c = self.client(pop_port=port)
        c.expect("Username: ")
        c.line("dave")
        c.expect("Password: ")
        c.line("wrong")
        self.assertEqual(c.expect(MENU), "\nCannot connect to 127.0.0.1:%d: Connection refused\n"
                                         "The password was not checked.\n\n%s" % (port, MENU))
        c.line("2")
        seen = c.expect("Password: ")
        self.assertIn("Login failed: 535 5.7.8 Authentication credentials invalid\n", seen)
        self.assertNotIn("Type the mail", seen)
        c.line(PASSWORD)
        c.expect('with only ".".\n')
        for line in ["From: dave@h", "To: dave@h", "Subject: s", "x", "."]:
            c.line(line)
        c.expect("Mail sent successfully")
        self.quit(c)
        self.assertEqual(len(self.records("dave")), 1)


class OtherMechanisms(ClientTest):
    """Servers that offer less: POP3 AUTH CRAM-MD5 without APOP; SMTP with
    PLAIN and LOGIN only, where the password goes in clear, said once."""

    def fake(self, greeting, answers, then=()):
        server = FakeServer(greeting, answers, then)
        self.addCleanup(server.close)
        return server

    def test_pop_auth_cram_md5_when_there_is_no_apop(self):
        challenge = b"<1896.697170952@pop.example>"
        capa = "+OK\r\nSASL PLAIN CRAM-MD5\r\nTOP\r\nUIDL\r\n.\r\n"
        s = self.fake("+OK no timestamp here\r\n",
                      [capa, "+ " + base64.b64encode(challenge).decode() + "\r\n",
                       "+OK in\r\n", "+OK bye\r\n"])
        c = self.client("-v", user="bob", pop_port=s.port)
        self.quit(c)
        s.thread.join(10)
        digest = hmac.new(b"bobpw", challenge, hashlib.md5).hexdigest()
        self.assertEqual(s.got, ["CAPA", "AUTH CRAM-MD5",
                                 base64.b64encode(b"bob " + digest.encode()).decode(), "QUIT"])
        self.assertIn("C: ****\n", c.stderr())
        self.assertNotIn("Note: the server offers no", c.text)

    def test_smtp_plain_then_login_in_clear_said_once(self):
        def data(f):
            while f.readline() not in (b".\r\n", b""):
                pass
            return "250 queued\r\n"
        ehlo = "250-x\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n"
        tail = ["250 ok\r\n", "250 ok\r\n", "354 go\r\n", data, "221 bye\r\n"]
        plain = [ehlo, "235 ok\r\n"] + tail
        login = [ehlo.replace(" PLAIN", ""), "334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n",
                 "235 ok\r\n"] + tail
        quit_ = ["221 bye\r\n"]
        s = self.fake("220 hi\r\n", quit_, then=[("220 hi\r\n", plain), ("220 hi\r\n", quit_),
                                                  ("220 hi\r\n", login)])
        c = self.client("-v", user="alice", smtp_port=s.port)
        for subject in ("plain", "login"):
            self.send_mail(c, ["From: alice@h", "To: bob@h", "Subject: " + subject, "x", "."])
        self.quit(c)
        s.thread.join(10)
        auth = [g for g in s.got if g.startswith("AUTH")]
        self.assertEqual(auth, ["AUTH PLAIN " + base64.b64encode(b"\0alice\0alicepw").decode(),
                                "AUTH LOGIN"])
        at = s.got.index("AUTH LOGIN")
        self.assertEqual(s.got[at + 1:at + 3], [base64.b64encode(b"alice").decode(),
                                                base64.b64encode(b"alicepw").decode()])
        self.assertEqual(c.text.count("Note: the server offers no CRAM-MD5 or APOP: the "
                                      "password crosses the network in clear.\n"), 1)
        err = c.stderr()
        self.assertIn("C: AUTH PLAIN ****\n", err)
        for form in clear_forms(b"alicepw"):
            self.assertNotIn(form.decode(), err)
