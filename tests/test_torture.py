"""The crash-torture test, shortened for `make test`; `make torture`
runs the long one (tests/torture.py says what is checked and how).

Torture: SMTP senders and deleting POP3 sessions while a killer SIGKILLs
random session children of the two servers: afterwards nothing that got 250
is lost or duplicated, deletions that got +OK to QUIT are gone, every record
is well-formed and exactly what was sent. FullFilesystem: a full disk gives
452/552 and no partial record; a POP3 update that cannot be written leaves
the mailbox as it was ("-ERR some deleted messages not removed").
"""
import unittest

import torture

TORTURE_SECONDS = 35     # the class stays under a minute with setup and audit


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


class FullFilesystem(unittest.TestCase):
    def test_smtp_full_disk_gives_452_and_no_partial_record(self):
        mode, problems = torture.full_disk_smtp()
        self.assertEqual(problems, [], mode)

    def test_pop_update_that_cannot_be_written_changes_nothing(self):
        mode, problems = torture.pop_update_fails()
        self.assertEqual(problems, [], mode)


if __name__ == "__main__":
    unittest.main()
