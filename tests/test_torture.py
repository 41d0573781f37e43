"""The crash-torture test, shortened for `make test`; `make torture`
runs the long one (tests/torture.py says what is checked and how).

Torture: SMTP senders and deleting POP3 sessions while a killer SIGKILLs
random session children of the two servers: afterwards nothing that got 250
is lost or duplicated, deletions that got +OK to QUIT are gone, every record
is well-formed and exactly what was sent. FsyncFailures: the same with
injected fsync failures and the committers killed too. TwoHosts: the same with
two front ends on one spool, each told it is another machine. FullFilesystem: a full disk gives
452/552 and no partial record; a POP3 update that cannot be written leaves
the mailbox as it was ("-ERR some deleted messages not removed").
"""
import sys
import unittest

import torture

TORTURE_SECONDS = 35     # the class stays under a minute with setup and audit
FSYNC_SECONDS = 8        # of load; the class takes about 10 s
FSYNC_EVERY = 10         # one mailbox fsync in 10 fails: ~100+ failures a run
HOSTS_SECONDS = 8        # two front ends on one spool


def check_fsync_run(test, report, keys):
    """What every run with injected fsync failures must show: no problem,
    and enough done to mean something (mail acknowledged, fsync failures
    that covered mail, sessions killed, mail shown over POP3). Returns the
    summary the messages quote."""
    summary = {k: report[k] for k in keys}
    test.assertEqual(report["problems"], [], "torture %s; run kept in %s"
                     % (summary, report["dir"]))
    test.assertGreater(report["acked"], 50, summary)
    test.assertGreaterEqual(report["fsync"]["named"], 5, summary)
    test.assertGreater(report["kills"].get("smtpmail", 0), 3, summary)
    test.assertGreater(report["fsync"]["pop_seen"], 20, summary)
    return summary


class Torture(unittest.TestCase):
    def test_sigkill_loses_and_duplicates_nothing(self):
        report = torture.run(TORTURE_SECONDS)
        summary = {k: report[k] for k in ("seed", "sent", "acked", "unknown", "deleted_ok",
                                          "deleted_maybe", "kills", "records")}
        self.assertEqual(report["problems"], [], "torture %s; run kept in %s"
                         % (summary, report["dir"]))
        # The run must have done enough to mean something.
        self.assertGreater(report["acked"], 50, summary)
        self.assertGreater(report["kills"].get("smtpmail", 0), 3, summary)
        self.assertGreater(report["kills"].get("popserver", 0), 3, summary)
        self.assertGreater(report["deleted_ok"], 5, summary)


class FsyncFailures(unittest.TestCase):
    """The torture run with one mailbox fsync in FSYNC_EVERY failing (the
    failfs shim, which keeps the ground truth of durability) and the
    holders of the write and commit locks among the killed: nothing that
    got 250 was covered by a failed fsync or is lost or duplicated, and no
    message shown over POP3 was covered by a failed fsync in that mailbox,
    whatever became of its session (popserver shows only what the group
    commit made durable)."""

    def test_no_250_and_no_pop3_view_of_undurable_mail(self):
        report = torture.run(FSYNC_SECONDS, fsync_every=FSYNC_EVERY)
        summary = check_fsync_run(self, report, ("seed", "acked", "refused", "unknown",
                                                 "deleted_ok", "kills", "fsync"))
        # Here the holders of the commit lock are among the killed too.
        self.assertGreater(report["kills"].get("commit-lock", 0), 1, summary)
        print("\nfsync torture: %s" % summary, file=sys.stderr)


class TwoHosts(unittest.TestCase):
    """Two front ends (a smtpmail and a popserver each) on one spool, each
    told by the failfs shim that it runs on a machine of its own (its own
    boot id and host name), with failing fsyncs, kills of sessions and of
    lock holders, dotlocks and clock steps: every 250 present exactly once,
    nothing refused present, nothing shown before durable, so no announced
    fsync of one host was forgotten or trusted by the other (DESIGN.md
    "More than one machine")."""

    def test_two_front_ends_on_one_spool(self):
        report = torture.run(HOSTS_SECONDS, fsync_every=FSYNC_EVERY, hosts=2)
        check_fsync_run(self, report, ("seed", "hosts", "acked", "refused", "unknown",
                                       "deleted_ok", "kills", "fsync"))


class FullFilesystem(unittest.TestCase):
    def test_smtp_full_disk_gives_452_and_no_partial_record(self):
        mode, problems = torture.full_disk_smtp()
        self.assertEqual(problems, [], mode)

    def test_pop_update_that_cannot_be_written_changes_nothing(self):
        mode, problems = torture.pop_update_fails()
        self.assertEqual(problems, [], mode)


if __name__ == "__main__":
    unittest.main()
