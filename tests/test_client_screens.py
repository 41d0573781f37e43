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
import codecs
import email.utils
import glob
import os
import re
import smtplib
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
        self.c = test.client(user="bob", size=(rows, cols), env={"TZ": "UTC"}, **kw)
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
