#!/usr/bin/env python3
"""mailpair.py - a small SMTP and POP3 server pair in Python that the grading
kit's own tests point tests/conform.py at: correct by default (the kit must
pass it, so the kit is not tuned to smtpmail and popserver), and with one
deliberate fault when --fault names it (the kit must catch it, with the
check named in tests/test_conform.py).

    python3 tests/faulty/mailpair.py SMTP_PORT POP3_PORT --user alice:alicepw \\
        [--user bob:bobpw] [--fault NAME]

Faults:
  store-at-quit   answers 250 at the end of the data, but stores the mail only at QUIT
  lf-dot-lf       ends the data at a "." line ended by a bare LF (LF.LF, LF.CRLF, CRLF.LF)
  lose-dot-line   drops a body line that is a single "."
  rset-deletes    POP3 RSET removes the messages DELE marked instead of unmarking them
  drop-deletes    a POP3 session that ends without QUIT removes its marked messages too
  hang-noop       SMTP NOOP is never answered
  nul-pad         every reply is sent with NUL bytes after it (send(fd, buf, sizeof buf))
  no-space        SMTP replies have no space after the code ("250<a@b>... Sender ok")
  no-crlf         single-line replies are sent without any line end
  list-no-end     POP3 LIST never sends its final "." line
  spin-start      spins on the CPU for ever instead of starting
  list-form       POP3 LIST lines are "n. size octets", not "n size"
  user-colon      POP3 wants "USER : name" and "PASS : password" (the colon form)
  fixed-ports     listens on 20000 (SMTP) and 40000 (POP3), whatever it is given
  one-shot        serves one connection, then exits
  spin            after each SMTP session, leaves a child process spinning on the CPU
  stuck           from its fourth SMTP connection on, never greets (an iterative
                  server blocked on a session that will not end)
  reverse-lookup  looks the client's address up (getnameinfo) before the greeting and
                  closes the connection if that fails

--only smtp|pop3 serves one of the two (two processes, as a submission's two
programs); --spool DIR keeps the mail in DIR/<user>/mymailbox as the
assignment does (messages separated by "." lines, a body "." line stored
as ".."), the accounts from DIR/user.txt when no --user is given.

It listens on 127.0.0.1 only (a port 0 is any free port), keeps the mail in
memory unless --spool, prints "listening SMTP_PORT POP3_PORT" when both ports are open and
runs until it is killed.
"""
import argparse
import email.utils
import fcntl
import hashlib
import itertools
import os
import re
import socket
import socketserver
import sys
import threading
import time

HOST = "pair.example"
FAULTS = ("store-at-quit", "lf-dot-lf", "lose-dot-line", "rset-deletes", "drop-deletes",
          "hang-noop", "nul-pad", "no-space", "no-crlf", "list-no-end", "user-colon",
          "fixed-ports", "one-shot", "spin", "reverse-lookup", "stuck", "list-form", "spin-start")
FAULT = None
SPOOL = None                # the directory of the mailbox files, or None: in memory
USERS = {}                  # login -> password
MAILBOXES = {}              # login -> [Record]
SESSION_LOCKS = {}          # login -> the POP3 session lock
STORE = threading.Lock()    # guards MAILBOXES
UIDS = itertools.count(1)
SMTP_SESSIONS = itertools.count(1)


class Record:
    """One stored message: its lines (unstuffed, no line ends) and a UIDL."""

    def __init__(self, lines, uid=None):
        self.lines = lines
        self.uid = uid or "m%d" % next(UIDS)

    def size(self):
        return sum(len(line) + 2 for line in self.lines)


def unstuff(line):
    return line[1:] if line.startswith(b".") else line


def mailbox_path(login):
    return os.path.join(SPOOL, login, "mymailbox")


def load(login):
    """The messages of login: [Record]."""
    if SPOOL is None:
        return list(MAILBOXES[login])
    try:
        with open(mailbox_path(login), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    records, lines = [], []
    for line in data.split(b"\n")[:-1]:
        if line == b".":
            # The id of the content, stable across sessions and deletions;
            # equal messages told apart by how many came before.
            uid = hashlib.sha1(b"\n".join(lines)).hexdigest()[:16]
            uid += "-%d" % sum(1 for r in records if r.uid.startswith(uid))
            records.append(Record(lines, uid))
            lines = []
        else:
            lines.append(unstuff(line))
    return records


def save(login, records, append=False):
    """Write login's messages (or append them) to the mailbox file, locked."""
    if SPOOL is None:
        MAILBOXES[login] = MAILBOXES[login] + records if append else records
        return
    os.makedirs(os.path.dirname(mailbox_path(login)), exist_ok=True)
    data = b"".join(b"".join((b"." + l if l.startswith(b".") else l) + b"\n" for l in r.lines)
                    + b".\n" for r in records)
    with open(mailbox_path(login), "ab" if append else "wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(data)


def deliver(logins, lines):
    with STORE:
        for login in logins:
            save(login, [Record(lines)], append=True)


class Handler(socketserver.StreamRequestHandler):
    timeout = 60
    limit = 1000

    def out(self, text):
        if FAULT == "no-space" and re.match(r"\d{3} ", text):
            text = re.sub(r"(?m)^(\d{3}) ", r"\1", text)
        end = b"" if FAULT == "no-crlf" and "\r\n" not in text else b"\r\n"
        data = text.encode("latin-1") + end
        if FAULT == "nul-pad":
            data = data.ljust(256, b"\0")
        self.wfile.write(data)
        self.wfile.flush()

    def command(self):
        """The next command line without its line end; None at the end."""
        line = self.rfile.readline(self.limit + 1)
        if not line:
            return None
        if not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = self.rfile.readline(65536)
            return ""               # too long: an empty line gets an error
        return line.rstrip(b"\r\n").decode("latin-1")


class SMTPHandler(Handler):
    def handle(self):
        if FAULT == "reverse-lookup":
            try:
                socket.getnameinfo(self.client_address, socket.NI_NAMEREQD)
            except OSError:
                return              # no name for the client: no greeting
        if FAULT == "stuck" and next(SMTP_SESSIONS) > 3:
            time.sleep(3600)
        self.out("220 %s Service ready" % HOST)
        self.sender, self.rcpts, self.pending, self.helo = None, [], [], b"unknown"
        while True:
            line = self.command()
            if line is None:
                return
            verb, _, arg = line.partition(" ")
            handler = getattr(self, "cmd_" + verb.lower(), None) if verb.isalpha() else None
            if line == "":
                self.out("500 Line too long")
            elif handler is None:
                self.out("500 Command unrecognized")
            elif handler(arg.strip()) == "quit":
                return

    def cmd_helo(self, arg):
        self.sender, self.rcpts, self.helo = None, [], arg.encode("latin-1")
        self.out("250 OK Hello %s" % arg)

    def cmd_ehlo(self, arg):
        self.sender, self.rcpts, self.helo = None, [], arg.encode("latin-1")
        self.out("250-%s Hello %s\r\n250-PIPELINING\r\n250 8BITMIME" % (HOST, arg))

    def cmd_mail(self, arg):
        m = re.match(r"(?i)FROM:\s*<([^>]*)>", arg)
        if not m:
            self.out("501 Syntax: MAIL FROM:<address>")
        elif self.sender is not None:
            self.out("503 Sender already specified")
        else:
            self.sender = m.group(1)
            self.out("250 <%s>... Sender ok" % self.sender)

    def cmd_rcpt(self, arg):
        m = re.match(r"(?i)TO:\s*<?([^<>\s]+)>?$", arg)
        if self.sender is None:
            self.out("503 Need MAIL command")
        elif not m:
            self.out("501 Syntax: RCPT TO:<address>")
        elif m.group(1).split("@")[0].lower() not in USERS:
            self.out("550 No such user")
        else:
            self.rcpts.append(m.group(1).split("@")[0].lower())
            self.out("250 <%s>... Recipient ok" % m.group(1))

    def cmd_data(self, arg):
        if not self.rcpts:
            self.out("503 Need RCPT command")
            return None
        self.out('354 Enter mail, end with "." on a line by itself')
        lines = self.read_data()
        if lines is None:
            return "quit"           # the client went away: nothing stored
        if FAULT == "lose-dot-line":
            lines = [line for line in lines if line != b"."]
        stamp = email.utils.formatdate(localtime=True).encode()
        lines.insert(0, b"Received: from %s by %s; %s" % (self.helo, HOST.encode(), stamp))
        if FAULT == "store-at-quit":
            self.pending.append((self.rcpts, lines))
        else:
            deliver(self.rcpts, lines)
        self.sender, self.rcpts = None, []
        self.out("250 OK Message accepted for delivery")
        return None

    def read_data(self):
        """The data's lines, unstuffed; only CR LF . CR LF ends it (RFC 5321
        4.1.1.4); a line is split at any bare CR or LF. None at EOF."""
        data = b""
        while True:
            chunk = self.rfile.readline(65536)
            if not chunk:
                return None
            if FAULT == "lf-dot-lf" and chunk in (b".\n", b".\r\n"):
                return [unstuff(line.rstrip(b"\r")) for line in data.split(b"\n")[:-1]]
            data += chunk
            if data == b".\r\n" or data.endswith(b"\r\n.\r\n"):
                break
        lines = []
        for line in data[:-3].split(b"\r\n")[:-1]:
            lines.extend(re.split(rb"[\r\n]", unstuff(line)))
        return lines

    def cmd_rset(self, arg):
        self.sender, self.rcpts = None, []
        self.out("250 OK")

    def cmd_noop(self, arg):
        if FAULT == "hang-noop":
            time.sleep(3600)
        self.out("250 OK")

    def cmd_vrfy(self, arg):
        self.out("252 Cannot VRFY user, but will accept message and attempt delivery")

    def cmd_quit(self, arg):
        for rcpts, lines in self.pending:
            deliver(rcpts, lines)
        self.out("221 %s closing connection" % HOST)
        return "quit"

    def finish(self):
        super().finish()
        if FAULT == "spin" and os.fork() == 0:
            while True:             # a student loop that never sees the close
                pass


class POP3Handler(Handler):
    limit = 255

    def handle(self):
        self.out("+OK POP3 server ready")
        self.user, self.login, self.deleted = None, None, set()
        try:
            self.session()
        finally:
            if self.login:
                if FAULT == "drop-deletes":
                    self.commit()
                SESSION_LOCKS[self.login].release()

    def session(self):
        while True:
            line = self.command()
            if line is None:
                return
            if FAULT == "user-colon":
                m = re.match(r"(?i)(USER|PASS) : (.*)", line)
                if m:
                    line = "%s %s" % m.groups()
                elif re.match(r"(?i)(USER|PASS) ", line):
                    line = "BAD"
            verb, _, arg = line.partition(" ")
            state = "trans" if self.login else "auth"
            handler = getattr(self, "%s_%s" % (state, verb.lower()), None) if verb.isalpha() else None
            if line == "":
                self.out("-ERR line too long")
            elif verb.lower() == "capa":
                self.out("+OK capability list follows\r\nUSER\r\nTOP\r\nUIDL\r\nPIPELINING\r\n.")
            elif handler is None:
                self.out("-ERR command not valid in this state")
            elif handler(arg.strip()) == "quit":
                return

    def auth_user(self, arg):
        self.user = arg
        self.out("+OK send PASS")

    def auth_pass(self, arg):
        login = (self.user or "").lower()
        if self.user is None:
            self.out("-ERR USER first")
        elif USERS.get(login) != arg:
            self.out("-ERR invalid user name or password")
        elif not SESSION_LOCKS[login].acquire(blocking=False):
            self.out("-ERR mailbox locked by another session")
            return "quit"
        else:
            self.login = login
            with STORE:
                self.messages = load(login)
            self.out("+OK maildrop has %d messages" % len(self.messages))
        return None

    def auth_quit(self, arg):
        self.out("+OK goodbye")
        return "quit"

    def message(self, arg):
        """The Record numbered arg, or None after a -ERR."""
        if not arg.isdigit() or not 1 <= int(arg) <= len(self.messages) \
                or int(arg) in self.deleted:
            self.out("-ERR no such message")
            return None
        return self.messages[int(arg) - 1]

    def live(self):
        return [(n, r) for n, r in enumerate(self.messages, 1) if n not in self.deleted]

    def trans_stat(self, arg):
        live = self.live()
        self.out("+OK %d %d" % (len(live), sum(r.size() for _, r in live)))

    def trans_list(self, arg):
        if arg:
            r = self.message(arg)
            if r:
                self.out("+OK %s %d" % (arg, r.size()))
            return
        self.out("\r\n".join(["+OK scan listing follows"] +
                             [("%d. %d octets" if FAULT == "list-form" else "%d %d")
                              % (n, r.size()) for n, r in self.live()] +
                             ([] if FAULT == "list-no-end" else ["."])))

    def trans_uidl(self, arg):
        if arg:
            r = self.message(arg)
            if r:
                self.out("+OK %s %s" % (arg, r.uid))
            return
        self.out("\r\n".join(["+OK unique-id listing follows"] +
                             ["%d %s" % (n, r.uid) for n, r in self.live()] + ["."]))

    def send_lines(self, first, lines):
        self.wfile.write(first.encode() + b"\r\n" + b"".join(
            (b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n")
        self.wfile.flush()

    def trans_retr(self, arg):
        r = self.message(arg)
        if r:
            self.send_lines("+OK %d octets" % r.size(), r.lines)

    def trans_top(self, arg):
        n, _, k = arg.partition(" ")
        r = self.message(n)
        if r and not k.isdigit():
            self.out("-ERR syntax: TOP n lines")
        elif r:
            head = r.lines.index(b"") + 1 if b"" in r.lines else len(r.lines)
            self.send_lines("+OK top of message follows", r.lines[:head + int(k)])

    def trans_dele(self, arg):
        if self.message(arg):
            self.deleted.add(int(arg))
            self.out("+OK message %s deleted" % arg)

    def trans_rset(self, arg):
        if FAULT == "rset-deletes":
            self.commit()
        self.deleted = set()
        self.out("+OK")

    def trans_noop(self, arg):
        self.out("+OK")

    def trans_quit(self, arg):
        self.commit()
        self.deleted = set()
        self.out("+OK goodbye")
        return "quit"

    def commit(self):
        gone = [self.messages[n - 1] for n in self.deleted]
        gone_uids = [g.uid for g in gone]
        with STORE:
            kept = []
            for r in load(self.login):
                if r.uid in gone_uids:
                    gone_uids.remove(r.uid)
                else:
                    kept.append(r)
            save(self.login, kept)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    request_queue_size = 128
    daemon_threads = True


def accounts(args):
    """login -> password: --user, else SPOOL/user.txt ("login password" lines)."""
    if args.user:
        return [spec.partition(":")[::2] for spec in args.user]
    with open(os.path.join(SPOOL or ".", "user.txt")) as f:
        return [tuple(line.split()[:2]) for line in f if len(line.split()) >= 2]


def main():
    global FAULT, SPOOL
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("smtp_port", type=int)
    ap.add_argument("pop3_port", type=int)
    ap.add_argument("--user", action="append", default=[], metavar="USER:PASSWORD")
    ap.add_argument("--fault", choices=FAULTS)
    ap.add_argument("--only", choices=("smtp", "pop3"))
    ap.add_argument("--spool", metavar="DIR")
    args = ap.parse_args()
    FAULT, SPOOL = args.fault, args.spool
    for login, password in accounts(args):
        USERS[login.lower()] = password
        MAILBOXES[login.lower()] = []
        SESSION_LOCKS[login.lower()] = threading.Lock()
    if FAULT == "spin-start":
        while True:                 # a loop that never ends, before listening
            pass
    if FAULT == "fixed-ports":
        args.smtp_port, args.pop3_port = 20000, 40000
    servers = []
    for name, port, handler in (("smtp", args.smtp_port, SMTPHandler),
                                ("pop3", args.pop3_port, POP3Handler)):
        if args.only in (None, name):
            servers.append(Server(("127.0.0.1", port), handler))
    print("listening " + " ".join(str(srv.server_address[1]) for srv in servers), flush=True)
    if FAULT == "one-shot":
        servers[0].daemon_threads = False
        servers[0].handle_request()
        servers[0].server_close()       # waits for that one session
        return 0
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    servers[0].serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
