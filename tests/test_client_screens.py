"""mailclient's screens: what a person sees of a mail, on any terminal.

Golden screens: each mail of tests/screens/*.eml is delivered through
smtpmail, then read with mailclient on a pty at 80x24 and 40x15; every
screen it stops at (the list, each --More--, the key prompt) is rendered by
Screen, a small terminal (wrap at the last column, wide characters two
columns, scrolling), and compared with tests/screens/<mail>.<size>.txt,
files reviewed by hand. The time a mail was received (the list, the
Received line) is masked, as it changes from run to run.

    GOLDEN_UPDATE=1 MAIL_BIN=build/asan python3 tests/run.py test_client_screens

writes the files anew instead of comparing (review the diff before any
commit). The other tests here drive what a golden file cannot show: a
window resized between two pages, keys typed ahead of a password check, a
password that could not be checked, the recipient a server refused, and a
non-ASCII Subject typed in the client.
"""
import base64
import codecs
import email.utils
import glob
import os
import re
import smtplib
import socket
import time
import unicodedata

from test_client import Client, ClientTest, KEY_PROMPT, MENU, NUMBER_PROMPT

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "screens")
SIZES = ((24, 80), (15, 40))
# What the client waits at: the pager's prompt, the key after a mail, the
# number prompt after the list.
STOPS = ("--More--", KEY_PROMPT, NUMBER_PROMPT)
RECEIVED_RE = re.compile(r"\d{4}-\d\d-\d\d( : \d\d : \d\d)?")
# The bidi controls (Unicode's Bidi_Control) and the line and paragraph
# separators: none may reach the terminal.
HIDDEN = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"


def char_width(ch):
    """The columns a terminal gives ch: 2 for East Asian wide and full-width
    characters, 0 for combining marks, else 1 (what wcwidth says)."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Me", "Mn"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


class Screen:
    """A terminal of rows x cols as xterm behaves without escape sequences:
    a character that does not fit in what is left of a row goes to the
    next (a character in the last column leaves the wrap pending), a line
    feed at the bottom scrolls, TAB goes to the next multiple of 8. Any
    other control character is noted in bad: the client must send none."""

    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols
        self.grid = [[" "] * cols for _ in range(rows)]
        self.y = self.x = 0          # x == cols: a wrap is pending
        self.wraps = 0               # rows the terminal wrapped
        self.bad = []
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def resize(self, rows, cols):
        """As a terminal emulator does: the bottom rows kept, cut or padded."""
        keep = self.grid[max(0, self.y + 1 - rows):self.y + 1]
        self.grid = [(r + [" "] * cols)[:cols] for r in keep]
        self.grid += [[" "] * cols for _ in range(rows - len(self.grid))]
        self.y = len(keep) - 1
        self.rows, self.cols, self.x = rows, cols, min(self.x, cols - 1)

    def line_feed(self):
        if self.y == self.rows - 1:
            self.grid = self.grid[1:] + [[" "] * self.cols]
        else:
            self.y += 1

    def put(self, ch):
        w = char_width(ch)
        if w == 0:
            return
        if self.x + w > self.cols:
            self.x = 0
            self.line_feed()
            self.wraps += 1
        self.grid[self.y][self.x] = ch
        if w == 2:
            self.grid[self.y][self.x + 1] = ""     # the right half of a wide one
        self.x += w

    def feed(self, data):
        for ch in self.decoder.decode(data):
            if ch == "\r":
                self.x = 0
            elif ch == "\n":
                self.line_feed()
            elif ch == "\t":
                self.x = min(self.cols - 1, self.x // 8 * 8 + 8)
            elif ch == "\x07":
                pass
            elif ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0 or ch in HIDDEN:
                self.bad.append(ch)
            else:
                self.put(ch)

    def text(self):
        return "\n".join("".join(r).rstrip() for r in self.grid)


class Viewer:
    """A client on a pty with a Screen fed from everything it shows."""

    def __init__(self, test, rows, cols, **kw):
        self.c = test.client(user="bob", size=(rows, cols), env={"TZ": "UTC", "LC_ALL": "C.UTF-8"},
                             **kw)
        self.screen = Screen(rows, cols)
        self.fed = 0

    def catch_up(self):
        self.screen.feed(self.c.raw[self.fed:])
        self.fed = len(self.c.raw)

    def stop(self, timeout=10):
        """Wait for the next place the client waits at; which one it is,
        and the screen then (the received times masked)."""
        deadline = time.time() + timeout
        while True:
            text = self.c.text
            found = [(text.find(s, self.c.pos), s) for s in STOPS if text.find(s, self.c.pos) >= 0]
            if found:
                at, stop = min(found)
                self.c.pos = at + len(stop)
                break
            if time.time() > deadline or self.c._read(0.2) is False:
                raise AssertionError("no prompt; the client showed:\n" + text[self.c.pos:][-3000:])
        time.sleep(0.05)                    # anything after the prompt would be a fault
        self.c._read(0)
        self.catch_up()
        return stop, RECEIVED_RE.sub(lambda m: "YYYY-MM-DD : hh : mm"[:len(m.group(0))],
                                     self.screen.text())

    def resize(self, rows, cols):
        self.catch_up()
        self.c.resize(rows, cols)
        self.screen.resize(rows, cols)


def corpus():
    return sorted(glob.glob(os.path.join(CORPUS, "*.eml")))


def deliver(port, path):
    """One mail of the corpus through smtpmail, CRLF lines, the envelope
    sender its From's address (or ivy@example.org for a mail without)."""
    with open(path, "rb") as f:
        data = f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    sender = re.search(r"(?mi)^From:(.*)$", head)
    sender = email.utils.parseaddr(sender.group(1))[1] if sender else "ivy@example.org"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.sendmail(sender, ["bob@example.org"], data, mail_options=["BODY=8BITMIME"])


class GoldenScreens(ClientTest):
    """Each mail of the corpus at 80x24 and 40x15, screen by screen."""

    accounts = [("alice", "alicepw"), ("bob", "bobpw")]

    def read_all(self, rows, cols):
        """The screens of the list and of each mail, by name."""
        v = Viewer(self, rows, cols)
        got = {}
        v.c.line("1")
        stop, screen = v.stop()
        self.assertEqual(stop, NUMBER_PROMPT)       # the whole list fits on a screen
        self.assertEqual(v.screen.wraps, 0, "a row of the list wrapped:\n" + screen)
        got["list"] = [screen]
        for n, path in enumerate(corpus(), 1):
            v.c.line(str(n))
            pages = []
            while True:
                stop, screen = v.stop()
                pages.append(screen)
                if stop != "--More--":
                    break
                v.c.send(" ")
            self.assertEqual(stop, KEY_PROMPT)
            got[os.path.basename(path)[:-4]] = pages
            v.c.send("x")
            self.assertEqual(v.stop()[0], NUMBER_PROMPT)
        v.c.line("-1")
        v.c.expect(MENU)
        self.quit(v.c)
        self.assertEqual(v.screen.bad, [], "control characters reached the terminal")
        self.assertFalse(set(HIDDEN) & set(v.c.text), "a bidi control reached the terminal")
        return got

    def test_golden_screens(self):
        for path in corpus():
            deliver(self.smtp.port, path)
        for rows, cols in SIZES:
            got = self.read_all(rows, cols)
            for name, pages in got.items():
                text = "".join("=== %s at %dx%d, screen %d of %d ===\n%s\n"
                               % (name, cols, rows, i, len(pages), page)
                               for i, page in enumerate(pages, 1))
                golden = os.path.join(CORPUS, "%s.%dx%d.txt" % (name, cols, rows))
                if os.environ.get("GOLDEN_UPDATE"):
                    with open(golden, "w", encoding="utf-8") as f:
                        f.write(text)
                    continue
                with self.subTest(golden=os.path.basename(golden)):
                    with open(golden, encoding="utf-8") as f:
                        self.assertEqual(text, f.read())


class Resize(ClientTest):
    """SIGWINCH between two pages: the next page takes the new size."""

    def test_resize_between_pages_loses_no_line(self):
        lines = ["line %02d of the long mail" % i for i in range(1, 76)]
        self.inject("alice@h", "bob@h", "seventy-five", "".join(l + "\r\n" for l in lines))
        v = Viewer(self, 30, 100, ctty=True)     # its terminal: SIGWINCH reaches it
        v.c.line("1")
        self.assertEqual(v.stop()[0], NUMBER_PROMPT)
        v.c.line("1")
        stop, screen = v.stop()
        self.assertEqual(stop, "--More--")
        seen = set(re.findall(r"line \d\d of", screen))
        v.resize(15, 60)                    # the window shrinks at --More--
        pages = 0
        while stop == "--More--" and pages < 20:
            v.c.send(" ")
            stop, screen = v.stop()
            pages += 1
            # each page fits the new window: what it shows is all on screen
            seen |= set(re.findall(r"line \d\d of", screen))
        self.assertEqual(stop, KEY_PROMPT)
        self.assertEqual(seen, {"line %02d of" % i for i in range(1, 76)})
        self.assertGreaterEqual(pages, 4)   # 14 rows a page at 60x15
        v.c.send("x")
        v.stop()
        v.c.line("-1")
        self.quit(v.c)


class WideText(ClientTest):
    """Chinese subjects in the list: two columns a character, every row on
    screen once, none wrapped, at 80x24 and in a 60x20 window."""

    def test_forty_chinese_subjects_all_listed(self):
        words = "\u5173\u4e8e\u4e0b\u5468\u4f1a\u8bae\u5b89\u6392\u7684\u901a\u77e5"
        self.put("bob", *("From: =?UTF-8?B?5p2O5piO?= <li@h>\r\nSubject: =?UTF-8?B?%s?=\r\n"
                          "\r\nx\r\n" % base64.b64encode(("%02d " % i + words * 3).encode()).decode()
                          for i in range(1, 41)))
        for rows, cols in ((24, 80), (20, 60)):
            v = Viewer(self, rows, cols)
            v.c.line("1")
            seen, pages = set(), 0
            while pages < 10:
                stop, screen = v.stop()
                seen |= set(re.findall(r"^\d+ +\u674e\u660e +\S+ +(\d\d) ", screen, re.M))
                pages += 1
                if stop != "--More--":
                    break
                v.c.send(" ")
            self.assertEqual(stop, NUMBER_PROMPT)
            self.assertEqual(seen, {"%02d" % i for i in range(1, 41)})
            self.assertEqual(v.screen.wraps, 0, "a row wrapped at %dx%d" % (cols, rows))
            v.c.line("-1")
            self.quit(v.c)


class Login(ClientTest):
    """The password at the start: no echo until its check is over, keys
    typed meanwhile dropped, "checking" said, a word before exit 3, a line
    end after Ctrl-C; one that could not be checked asked for again."""

    def test_typeahead_password_never_shown(self):
        slow = self.start_pop("-w", "1500")     # a wrong password waits 1.5 s
        c = self.client(pop_port=slow.port)
        c.expect("Username: ")
        c.line("bob")
        c.expect("Password: ")
        c.line("wrongpw")
        time.sleep(0.7)                     # the check is under way
        c.line("bobpw")                     # typed ahead, as a hurried user does
        c.expect("checking the password...\n")
        c.expect("Login failed: ")
        c.expect("Password: ")
        time.sleep(0.5)
        c._read(0)
        self.assertNotIn("Enter option", c.text)    # the typed-ahead one was dropped
        c.line("bobpw")
        c.expect(MENU)
        self.quit(c)
        self.assertNotIn("wrongpw", c.text)
        self.assertNotIn("bobpw", c.text)

    def test_closing_words_and_line_ends(self):
        c = self.client(tty=False)
        c.send("bob\nx1\nx2\nx3\n")
        self.assertEqual(c.exit_code(), 3)
        self.assertTrue(c.text.endswith("The password was refused 3 times: the client ends.\n"),
                        c.text)
        c = self.client(user="bob", ctty=True)
        c.send("\x03")                      # Ctrl-C at the menu
        self.assertEqual(c.exit_code(), -2)
        self.assertTrue(c.text.endswith("Enter option: ^C\n"), c.text[-100:])

    def test_unchecked_password_asked_again_and_the_mail_kept(self):
        c = self.client(pop_port=self.dead_port())
        c.expect("Username: ")
        c.line("bob")
        c.expect("Password: ")
        c.line("bobpwx")                    # a typo nobody could check
        c.expect("The password was not checked.\n")
        c.expect(MENU)
        c.line("2")                         # checked now, before the mail is typed
        seen = c.expect("Password: ")
        self.assertIn("Login failed: 535 ", seen)
        self.assertNotIn("Type the mail", seen)
        c.line("bobpw")
        c.expect('with only ".".\n')
        for line in ("From: bob@h", "To: alice@h", "Subject: kept", "typed once"):
            c.line(line)
        port = self.smtp.port
        self.smtp.stop()                    # the server goes down meanwhile
        self.servers.remove(self.smtp)
        c.line(".")
        c.expect("The mail is kept: choose 2 to send it again or to save it in a file.\n")
        c.expect(MENU)
        c.line("2")                         # still down: kept again
        c.expect("any other key to drop it: ")
        c.send("s")
        self.assertIn("Cannot connect to 127.0.0.1:%d" % port, c.expect("The mail is kept"))
        c.expect(MENU)
        self.smtp = self.start_smtp(port=port)
        # its log is the stopped one's too (named by the port): wait for the port
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                time.sleep(0.05)
        c.line("2")
        c.expect("press s to send it again, f to save it in a file, any other key to drop it: ")
        c.send("s")
        c.expect("Mail sent successfully")
        c.expect(MENU)
        self.assertEqual(len(self.records("alice")), 1)
        self.assertIn(b"Subject: kept\r\n", self.records("alice")[0])
        self.assertTrue(self.records("alice")[0].endswith(b"\r\n\r\ntyped once\r\n"))
        # and saved in a file instead, when the server stays down
        c.line("2")
        c.expect('with only ".".\n')
        for line in ("From: bob@h", "To: alice@h", "Subject: saved", "kept in a file"):
            c.line(line)
        self.smtp.stop()
        self.servers.remove(self.smtp)
        c.line(".")
        c.expect("The mail is kept")
        c.line("2")
        c.expect("any other key to drop it: ")
        c.send("f")
        c.expect("Save the mail in the file: ")
        path = os.path.join(self.dir, "saved.txt")
        c.line(path)
        c.expect("Mail saved in %s.\n" % path)
        c.expect(MENU)
        with open(path) as f:
            self.assertEqual(f.read(), "From: bob@h\nTo: alice@h\nSubject: saved\n\n"
                                       "kept in a file\n")
        self.quit(c)


    def test_unchecked_password_asked_again_at_manage_mail(self):
        port = self.dead_port()
        c = self.client(pop_port=port)
        c.expect("Username: ")
        c.line("bob")
        c.expect("Password: ")
        c.line("bobpwx")
        c.expect("The password was not checked.\n")
        c.expect(MENU)
        self.start_pop("-w", "50", port=port)     # the server comes up
        c.line("1")
        seen = c.expect("Password: ")
        self.assertIn("Login failed: -ERR [AUTH] ", seen)
        c.line("bobpw")
        c.expect("No mails in your mailbox.\n")
        c.expect(MENU)
        self.quit(c)
        self.assertNotIn("bobpw\n", c.text)


class SendNames(ClientTest):
    """What the server refused, named; a Subject of any script, encoded."""

    def test_refused_recipient_named(self):
        c = self.client(user="alice")
        self.send_mail(c, ["From: alice@h", "To: bob@h, nobody@h", "Subject: s", "x", "."],
                       expect="Error in sending mail: 550 5.1.1 No such user\n"
                              "The server refused the recipient: nobody@h\n")
        self.quit(c)
        self.assertEqual(self.mailbox("bob"), b"")

    def test_non_ascii_subject_encoded_and_decoded_back(self):
        import email.header
        subjects = ["Gr\u00fc\u00dfe aus K\u00f6ln \u2713",
                    "\u5173\u4e8e\u4e0b\u5468\u4f1a\u8bae\u5b89\u6392\u7684\u901a\u77e5"
                    "\u548c\u8bae\u7a0b\u8349\u6848\u8bf7\u67e5\u6536",
                    "\u00e9" * 50]
        c = self.client(user="alice", size=(24, 120))
        for subject in subjects:
            self.send_mail(c, ["From: alice@h", "To: alice@h", "Subject: " + subject, "x", "."])
        for record, subject in zip(self.records("alice"), subjects):
            head = record.split(b"\r\n\r\n", 1)[0]
            self.assertTrue(all(b < 128 for b in head), head)       # 7-bit headers
            raw = re.search(rb"\r\nSubject:(.*?)\r\n(?=\S)", head, re.S).group(1)
            self.assertTrue(all(len(l) <= 78 for l in (b"Subject:" + raw).split(b"\r\n")), raw)
            self.assertRegex(raw.decode(), r"^( =\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=(\r\n)?)+$")
            decoded = "".join(t.decode(cs) if cs else t.decode() if isinstance(t, bytes) else t
                              for t, cs in email.header.decode_header(raw.decode().strip()))
            self.assertEqual(decoded, subject)
        c.line("1")
        listing = c.expect(NUMBER_PROMPT)
        for subject in subjects:
            self.assertIn(subject[:20], listing)
        c.line("-1")
        self.quit(c)
