"""Delivery reports (RFC 3464): what a sender finds in the mailbox when a
relayed mail fails or waits, and how mailclient shows it.

A message is put into A's queue (relay.queue_job, as the intake leaves
it) and A's runner (smtpmail -q) tries it at a scripted server that
answers as the test says. The report is then read from alice's mailbox on
A's spool, parsed with Python's email package, and checked field by field
against RFC 3464 and RFC 6522; mailclient reads it over POP3 as a person
would.
"""
import email
import email.policy
import os
import signal
import time

from harness import ShimBuild
from relay import (A_DOMAIN, A_HOST, FAST, RelayTest, descendants, lock_waiter, mailbox_locked,
                   queue_job, read_env, wait_for)
from test_client import (KEY_PROMPT, MENU, NUMBER_PROMPT, Client, close_clients)

SUBJECT = "Lunch on Friday?"


def lunch(subject=SUBJECT):
    """The message alice sends: a Subject, a line that starts with a dot."""
    return ("From: alice@a.example\r\nTo: bob@b.example\r\nSubject: %s\r\n"
            "Date: Sun, 07 Dec 2025 06:46:39 +0000\r\n\r\nHi Bob,\r\n.see you\r\n"
            % subject).encode()


def parse(record):
    """A report's record (trace lines first) as an email.message.Message."""
    return email.message_from_bytes(record, policy=email.policy.compat32)


def fields(part):
    """A message/delivery-status part's field groups (RFC 3464 2.1): the
    per-message fields, then one dict per recipient."""
    groups = []
    for sub in part.get_payload():
        groups.append({k: v for k, v in sub.items()})
    return groups


class ReportTest(RelayTest):
    """A, its runner, and alice's reports."""

    def reports(self):
        """alice's records on A, parsed."""
        return [parse(r) for r in self.records("alice")]

    def run_once(self, rcpt_reply, sender="alice@a.example", ident="J1", *args, **script):
        """Queue one message to bob@b.example, answer its RCPT with
        rcpt_reply, and wait until the queue is empty (timeout: fail)."""
        fake = self.fake(RCPT=rcpt_reply, **script)
        queue_job(self.spool, ident, sender, ["bob@b.example"], lunch())
        self.runner(*args, routes=[fake.route("b.example")])
        self.assertTrue(wait_for(lambda: not self.queue(), 20),
                        "the job stayed in the queue:\n" + self.listing())
        return fake


class Failed(ReportTest):
    """Issue test 6: a 550 gives one report with the fields of RFC 3464."""

    def test_one_report_with_its_fields(self):
        fake = self.run_once("550 5.1.1 no such user")
        self.assertEqual(len(fake.transactions), 1)
        records = self.records("alice")
        self.assertEqual(len(records), 1, records)
        self.assertTrue(records[0].startswith(
            b"Return-Path: <>\r\nReceived: from mx.a.example (the delivery report)\r\n"
            b"\tby mx.a.example (smtpmail) with local id "), records[0])
        msg = parse(records[0])
        self.assertEqual(msg["From"], "Mail Delivery System <MAILER-DAEMON@%s>" % A_HOST)
        self.assertEqual(msg["To"], "<alice@a.example>")
        self.assertEqual(msg["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(msg["Auto-Submitted"], "auto-replied")
        self.assertEqual(msg["MIME-Version"], "1.0")
        self.assertTrue(msg["Message-ID"] and msg["Date"])
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        text, status, headers = msg.get_payload()
        self.assertEqual([p.get_content_type() for p in (text, status, headers)],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        words = text.get_payload()
        self.assertIn("<bob@b.example>", words)
        self.assertIn("no such user", words)
        self.assertIn("550 5.1.1 no such user", words)
        self.assertIn('"%s"' % SUBJECT, words)
        per_message, per_rcpt = fields(status)
        self.assertEqual(per_message["Reporting-MTA"], "dns; " + A_HOST)
        self.assertTrue(per_message["Arrival-Date"])
        self.assertEqual(per_rcpt["Final-Recipient"], "rfc822; bob@b.example")
        self.assertEqual(per_rcpt["Action"], "failed")
        self.assertEqual(per_rcpt["Status"], "5.1.1")
        self.assertTrue(per_rcpt["Remote-MTA"].startswith("dns; "), per_rcpt)
        self.assertEqual(per_rcpt["Diagnostic-Code"], "smtp; 550 5.1.1 no such user")
        self.assertTrue(per_rcpt["Last-Attempt-Date"])
        self.assertNotIn("Will-Retry-Until", per_rcpt)
        original = headers.get_payload()
        self.assertIn("\nSubject: %s\n" % SUBJECT, original.replace("\r\n", "\n"))
        self.assertNotIn("Hi Bob", original)         # the headers only

    def test_null_sender_gets_none(self):
        """MAIL FROM:<> and a 550: no report (RFC 3464 / RFC 5321 4.5.5), the
        job is over all the same."""
        self.run_once("550 5.1.1 no such user", sender="")
        time.sleep(0.5)
        self.assertEqual(self.mailbox("alice"), b"")

    def test_sigterm_while_the_report_is_stored(self):
        """A stopping runner's SIGTERM, come while a delivery stores its
        report (here: waiting for alice's mailbox lock), waits until the
        outcome is saved too: else the job, still pending, is tried again
        and alice gets a second report."""
        fake = self.fake(RCPT="550 5.1.1 no such user")
        queue_job(self.spool, "J1", "alice@a.example", ["bob@b.example"], lunch())
        with mailbox_locked(self.spool, "alice"):
            runner = self.runner("-B", "1:1", routes=[fake.route("b.example")])
            waiting = wait_for(lambda: [p for p in descendants(runner.proc.pid)
                                        if lock_waiter(p)], 10)
            self.assertTrue(waiting, "no delivery waits for alice's mailbox")
            os.kill(waiting[0], signal.SIGTERM)     # pending while it is held
        self.assertTrue(wait_for(lambda: not self.queue(), 10), self.listing())
        time.sleep(1.5)                             # a retry would come after -B's 1 s
        self.assertEqual(len(self.records("alice")), 1)
        self.assertEqual(len(fake.transactions), 1)


class Waiting(ReportTest):
    """Issue test 7: past the lifetime a `failed` 4.4.7 report; one delay
    notice before it, not two."""

    def test_one_notice_then_expiry(self):
        fake = self.fake(RCPT="451 4.3.0 mailbox busy")
        queue_job(self.spool, "J1", "alice@a.example", ["bob@b.example"], lunch())
        self.runner("-B", "1:1", "-W", "1", "-E", "5", routes=[fake.route("b.example")],
                    fast=False)
        self.assertTrue(wait_for(lambda: not self.queue(), 25),
                        "the job stayed in the queue:\n" + self.listing())
        reports = self.reports()
        self.assertEqual([m["Subject"] for m in reports],
                         ["Delayed Mail (still being retried)",
                          "Undelivered Mail Returned to Sender"])
        self.assertGreaterEqual(len(fake.transactions), 2)
        notice, final = (fields(m.get_payload()[1])[1] for m in reports)
        self.assertEqual(notice["Action"], "delayed")
        self.assertEqual(notice["Status"], "4.3.0")
        self.assertTrue(notice["Will-Retry-Until"])
        self.assertEqual(final["Action"], "failed")
        self.assertEqual(final["Status"], "4.4.7")
        self.assertIn("the mail system has given up", reports[1].get_payload()[0].get_payload())


class NotStored(ShimBuild, ReportTest):
    """A report is stored as durably as mail (0 only when durable); one that
    cannot be stored keeps the job as it was, so it is tried again and the
    sender gets exactly one report (the failfs shim fails the mailbox)."""

    def start_a_shim(self, fake, **failures):
        """A relaying for a.example, its runner with the shim preloaded."""
        return self.start_shim("smtpmail", ["-d", self.spool, "-u", self.userfile, "-l",
                                            "127.0.0.1", "-n", A_HOST, "-o", "-D", A_DOMAIN,
                                            *FAST, "-R", fake.route("b.example")], **failures)

    def test_fsync_fails_once(self):
        fake = self.fake(RCPT="550 5.1.1 no such user")
        queue_job(self.spool, "J1", "alice@a.example", ["bob@b.example"], lunch())
        flag = os.path.join(self.dir, "failed-once")
        a = self.start_a_shim(fake, FAILFS_FSYNC_ONCE=flag)
        self.assertTrue(wait_for(lambda: not self.queue(), 20),
                        "the job stayed in the queue:\n" + self.listing() + a.log())
        self.assertTrue(os.path.exists(flag), "no fsync failed")
        self.assertIn("report: into alice/mymailbox", a.log())
        records = self.records("alice")            # the failed one was cut back
        self.assertEqual(len(records), 1, records)
        self.assertIn(b"\r\nStatus: 5.1.1\r\n", records[0])

    def test_no_space_keeps_the_job(self):
        fake = self.fake(RCPT="550 5.1.1 no such user")
        queue_job(self.spool, "J1", "alice@a.example", ["bob@b.example"], lunch())
        a = self.start_a_shim(fake, FAILFS_ENOSPC="/mymailbox")
        self.assertTrue(wait_for(lambda: "report: into alice/mymailbox" in a.log(), 20),
                        a.log())
        time.sleep(1)
        env = read_env(self.spool, "J1")
        self.assertIsNotNone(env, "the job went with its report unstored")
        self.assertNotIn(env["rcpt"][0]["state"], ("failed", "delivered"), env)
        self.assertEqual(self.records("alice"), [])
        a.stop()
        self.start_a(routes=[fake.route("b.example")])   # the disk has room again
        self.assertTrue(wait_for(lambda: not self.queue(), 20), self.listing())
        records = self.records("alice")
        self.assertEqual(len(records), 1, records)
        self.assertIn(b"\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n", records[0])


class Shown(ReportTest):
    """Issue test 14: mailclient sends to a remote address through A (which
    relays for alice, its runner started by the listening parent); the
    remote refuses the recipient; the report is listed as from the Mail
    Delivery System, and opened it says which recipient failed and why."""

    def setUp(self):
        super().setUp()
        self.clients = []

    def tearDown(self):
        problems = close_clients(self.clients)
        super().tearDown()
        if problems:
            self.fail("sanitizer report from mailclient:\n" + "\n".join(problems))

    def test_sent_refused_and_reported(self):
        fake = self.fake(RCPT="550 5.1.1 no such user")
        a = self.start_a(routes=[fake.route("b.example")])
        pop = self.start("popserver")
        c = Client(self, "127.0.0.1", a.port, pop.port, env={"TZ": "UTC", "LC_ALL": "C.UTF-8"})
        c.login("alice", "alicepw")
        c.line("2")
        c.expect('with only ".".\n')
        for line in ("From: alice@a.example", "To: bob@b.example", "Subject: " + SUBJECT,
                     "Hi Bob,", "."):
            c.line(line)
        c.expect("Mail sent successfully")
        c.expect(MENU)
        self.assertTrue(wait_for(lambda: self.records("alice"), 20),
                        "no report came:\n" + self.listing() + a.log())
        self.assertEqual(len(fake.transactions), 1)
        c.line("1")
        listing = c.expect(NUMBER_PROMPT)
        self.assertRegex(listing, r"\n1 +Mail Delivery System +[-0-9 :]+ +Undelivered Mail")
        c.line("1")
        shown = c.expect(KEY_PROMPT)        # a pty with no window size: no pages
        for line in ("From: Mail Delivery System <MAILER-DAEMON@%s>" % A_HOST,
                     "Subject: Undelivered Mail Returned to Sender",
                     "  <bob@b.example>",
                     "    The address does not exist there: no such user.",
                     "    550 5.1.1 no such user",
                     "----- enclosed headers -----",
                     "From: alice@a.example",
                     "To: bob@b.example",
                     "Subject: " + SUBJECT):
            self.assertIn("\n" + line + "\n", shown)
        self.assertNotIn("--=_report", shown)          # no MIME structure
        self.assertNotIn("Content-Type", shown)
        self.assertNotIn("Received: from", shown)      # nor trace lines
        c.send("x")
        c.expect(NUMBER_PROMPT)
        c.line("-1")
        c.expect(MENU)
        c.line("3")
        self.assertEqual(c.exit_code(), 0)
