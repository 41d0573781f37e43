#!/usr/bin/env python3
"""client.py - a small mail client in Python, written to the assignment's
menu and texts, that the grading kit's tests drive as a submission's
mailclient: correct by default, with one deliberate fault when --fault
names it.

    python3 tests/faulty/client.py HOST SMTP_PORT POP3_PORT [--fault NAME]

Faults:
  exit-word    the menu says "3. Exit" instead of "3. Quit" (same meaning)
  reject-all   every mail typed gets "Incorrect format", valid or not
"""
import argparse
import re
import socket
import sys

FAULT = None


def say(text=""):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def ask(prompt):
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)
    return line.rstrip("\r\n")


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")

    def line(self):
        return self.file.readline().rstrip(b"\r\n").decode("latin-1")

    def cmd(self, text):
        self.sock.sendall(text.encode("latin-1") + b"\r\n")
        return self.line()

    def multi(self):
        lines = []
        while True:
            line = self.line()
            if line == ".":
                return lines
            lines.append(line[1:] if line.startswith(".") else line)


def smtp_reply(c):
    line = c.line()
    while line[3:4] == "-":
        line = c.line()
    return line


def send_mail(args, lines):
    fields = {}
    for line in lines[:3]:
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    address = re.compile(r"^[^@\s]+@[^@\s]+$")
    if FAULT == "reject-all" or not all(address.match(fields.get(k, "")) for k in ("from", "to")):
        say("Incorrect format")
        return
    c = Conn(args.host, args.smtp)
    steps = [None, "HELO client.example", "MAIL FROM: <%s>" % fields["from"],
             "RCPT TO: <%s>" % fields["to"], "DATA"]
    for text in steps:
        reply = smtp_reply(c) if text is None else (c.sock.sendall(text.encode() + b"\r\n")
                                                    or smtp_reply(c))
        if not reply[:1] in "23":
            say("Error in sending mail: " + reply)
            c.sock.close()
            return
    body = lines[:3] + [""] + lines[3:]
    c.sock.sendall(b"".join((("." + l) if l.startswith(".") else l).encode() + b"\r\n"
                            for l in body) + b".\r\n")
    reply = smtp_reply(c)
    c.cmd("QUIT")
    c.sock.close()
    say("Mail sent successfully" if reply.startswith("250") else "Error in sending mail: " + reply)


def header(lines, name):
    for line in lines:
        if line.lower().startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def manage(args, user, password):
    c = Conn(args.host, args.pop3)
    c.line()
    c.cmd("USER " + user)
    if not c.cmd("PASS " + password).startswith("+OK"):
        say("Login failed")
        return
    c.cmd("LIST")
    numbers = [int(l.split()[0]) for l in c.multi()]
    mails = {}
    for n in numbers:
        c.cmd("RETR %d" % n)
        mails[n] = c.multi()
    deleted = set()
    while True:
        shown = [n for n in numbers if n not in deleted]
        for k, n in enumerate(shown, 1):
            m = mails[n]
            when = re.search(r"\d{1,2} \w{3} \d{4} \d{1,2}:\d{2}|\d{1,2}:\d{2}",
                             "\n".join(m))
            say("%d %s %s %s" % (k, header(m, "from"), when.group(0) if when else "-",
                                 header(m, "subject")))
        while True:
            answer = ask("Enter mail no. to see: ").strip()
            if answer == "-1":
                c.cmd("QUIT")
                return
            if answer.lstrip("-").isdigit() and 1 <= int(answer) <= len(shown):
                break
            say("Mail no. out of range, give again")
        n = shown[int(answer) - 1]
        for line in mails[n]:
            say(line)
        if ask("").strip() == "d":
            c.cmd("DELE %d" % n)
            deleted.add(n)


def main():
    global FAULT
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("smtp", type=int)
    ap.add_argument("pop3", type=int)
    ap.add_argument("--fault", choices=("exit-word", "reject-all"))
    args = ap.parse_args()
    FAULT = args.fault
    user = ask("Username: ")
    password = ask("Password: ")
    while True:
        say("1. Manage Mail\n2. Send Mail\n3. %s" % ("Exit" if FAULT == "exit-word" else "Quit"))
        choice = ask("Enter your choice: ").strip()
        if choice == "1":
            manage(args, user, password)
        elif choice == "2":
            say("Enter the mail, ended by a line with a single '.':")
            lines = []
            while True:
                line = ask("")
                if line == ".":
                    break
                lines.append(line)
            send_mail(args, lines)
        elif choice == "3":
            return 0


if __name__ == "__main__":
    sys.exit(main())
