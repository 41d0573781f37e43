"""The grading kit, tested: tests/conform.py scores 100% against our servers
and against a correct Python pair (tests/faulty/mailpair.py), catches each
fault of that pair with the check meant for it and no other, stays bounded
against a server that hangs; tests/grade.sh grades a folder of submissions
(our three files, a copy with a reply text changed, one that does not
build) into the right CSV rows and leaves no process behind.

The kit runs with short waits here (--timeout, --grace, --settle, a subset
of levels for grade.sh) so that it adds little to `make test`.
"""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from harness import ROOT, SANITIZER_RE, MailTest, binary

HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.path.join(HERE, "conform.py")
PAIR = os.path.join(HERE, "faulty", "mailpair.py")
GRADE = os.path.join(HERE, "grade.sh")
USERS = ["--user", "alice:alicepw", "--user", "bob:bobpw"]
FAST = ["--timeout", "3", "--grace", "0.5", "--settle", "0.1"]

sys.path.insert(0, HERE)
import conform  # noqa: E402  (the list of checks, to count them)


def kit(smtp_port, pop_port, *extra, limit=90):
    """Run the kit with --json: (exit status, report, seconds)."""
    started = time.monotonic()
    run = subprocess.run([sys.executable, KIT, "--smtp", "127.0.0.1:%d" % smtp_port,
                          "--pop3", "127.0.0.1:%d" % pop_port, "--json"] + USERS + FAST
                         + list(extra), capture_output=True, text=True, timeout=limit)
    try:
        report = json.loads(run.stdout)
    except ValueError:
        raise AssertionError("the kit printed no JSON:\n%s\n%s" % (run.stdout, run.stderr))
    return run.returncode, report, time.monotonic() - started


def outcome(report, result):
    return {c["name"]: c["reason"] for c in report["checks"] if c["result"] == result}


def count(level):
    return sum(1 for c in conform.CHECKS if c.level == level)


class OurServers(MailTest):
    """Every check of every level, the client's too, against smtpmail,
    popserver and mailclient (the sanitizer builds)."""

    def test_every_check_passes(self):
        # Short wrong-password delays: the AUTH checks try a wrong password.
        smtp = self.start_smtp("-w", "50")
        pop = self.start_pop("-w", "50")
        log = os.path.join(self.dir, "client.txt")
        status, report, _ = kit(smtp.port, pop.port, "--client",
                                binary("mailclient") + " {host} {smtp} {pop3}",
                                "--client-log", log)
        self.assertEqual(outcome(report, "fail"), {})
        self.assertEqual(outcome(report, "skip"), {})   # AUTH is offered now
        self.assertEqual(status, 0)
        self.assertTrue(report["ok"])
        for level in conform.LEVELS:
            self.assertEqual(report["score"][level]["failed"], 0, level)
        self.assertEqual(report["score"]["client"]["passed"], count("client"))
        with open(log, "rb") as f:
            shown = f.read().decode("utf-8", "replace")
        self.assertIn("Mail sent successfully", shown)
        self.assertIsNone(SANITIZER_RE.search(shown))
        # The kit deleted all the mail it sent.
        self.assertEqual(self.records("alice") + self.records("bob"), [])

    def test_table_csv_and_subset(self):
        smtp = self.start_smtp()
        pop = self.start_pop("-w", "50")
        common = ["--smtp", "127.0.0.1:%d" % smtp.port, "--pop3", "127.0.0.1:%d" % pop.port] \
            + USERS + FAST
        run = subprocess.run([sys.executable, KIT, "--only", "smtp-noop,pop-noop"] + common,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        lines = run.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["check", "level", "result", "reason"])
        self.assertEqual([l.split()[:3] for l in lines[1:3]],
                         [["smtp-noop", "rfc", "pass"], ["pop-noop", "rfc", "pass"]])
        self.assertEqual(lines[3:], ["score: rfc 2/2",
                                     "result: PASS: every assignment and rfc check passed"])
        run = subprocess.run([sys.executable, KIT, "--level", "assignment", "--skip",
                              "pop-bad-login", "--csv"] + common,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.stdout, "%d/%d,-,-,-,-,0,\n" % ((count("assignment") - 1,) * 2))


class Usage(unittest.TestCase):
    """The command line, without servers."""

    def test_list_and_bad_usage(self):
        run = subprocess.run([sys.executable, KIT, "--list"], capture_output=True, text=True,
                             timeout=30)
        self.assertEqual(run.returncode, 0)
        rows = [line.split(None, 2) for line in run.stdout.splitlines()]
        self.assertEqual([r[0] for r in rows], [c.name for c in conform.CHECKS])
        self.assertTrue(all(r[1] in conform.LEVELS and r[2] for r in rows))
        self.assertEqual(len(set(r[0] for r in rows)), len(rows))
        # The teachers' guide names every check.
        with open(os.path.join(HERE, "GRADING.md")) as f:
            guide = f.read()
        self.assertEqual([r[0] for r in rows if "`%s`" % r[0] not in guide], [])
        for args in ([], ["--smtp", "x"], ["--smtp", "h:1", "--pop3", "h:2"],
                     ["--smtp", "h:1", "--pop3", "h:2", "--user", "a:b", "--only", "nope"],
                     ["--smtp", "h:1", "--pop3", "h:2", "--user", "a:b", "--level", "nope"]):
            run = subprocess.run([sys.executable, KIT] + args, capture_output=True, text=True,
                                 timeout=30)
            self.assertEqual(run.returncode, 2, args)
            self.assertEqual(run.stdout, "", args)


class Faults(unittest.TestCase):
    """The Python pair: correct, it passes; with one fault, exactly the
    check meant for that fault fails."""

    def pair(self, fault=None):
        """The pair on two free ports (it picks them: no race)."""
        proc = subprocess.Popen([sys.executable, PAIR, "0", "0"] + USERS
                                + (["--fault", fault] if fault else []),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        words = proc.stdout.readline().split()
        self.assertEqual(words[:1], ["listening"])
        return int(words[1]), int(words[2])

    def run_kit(self, fault, *extra):
        status, report, seconds = kit(*self.pair(fault), "--level", "assignment,rfc,robust",
                                      "--senders", "8", *extra)
        return status, outcome(report, "fail"), seconds

    def test_correct_pair_passes(self):
        status, failed, _ = self.run_kit(None)
        self.assertEqual((status, failed), (0, {}))

    def test_each_fault_caught_by_its_check(self):
        expected = {
            "store-at-quit": ({"smtp-250-stored"}, 1),
            "lf-dot-lf": ({"smuggle-lf-dot-lf", "smuggle-lf-dot-crlf", "smuggle-crlf-dot-lf"}, 0),
            "lose-dot-line": ({"dot-line"}, 1),
            "rset-deletes": ({"pop-rset"}, 1),
            "drop-deletes": ({"pop-drop-keeps"}, 1),
        }
        reasons = {}
        for fault, (checks, status) in expected.items():
            with self.subTest(fault=fault):
                got_status, failed, _ = self.run_kit(fault)
                self.assertEqual(set(failed), checks, failed)
                self.assertEqual(got_status, status)
                reasons.update(failed)
        # The reasons say what happened, with what was seen.
        self.assertRegex(reasons["dot-line"], r"^the body line '\.' was lost \(RETR \d+\)$")
        self.assertRegex(reasons["pop-rset"], r"^DELE \d+, RSET '\+OK', QUIT: the message is gone$")
        self.assertRegex(reasons["smuggle-lf-dot-lf"],
                         r"^<LF>\.<LF> ended the data: replies 250 250 250 500 500 221")
        self.assertRegex(reasons["smtp-250-stored"], r"\(it is there after QUIT\)$")

    def test_hung_command_fails_its_check_and_the_kit_goes_on(self):
        status, failed, seconds = self.run_kit("hang-noop", "--timeout", "1")
        self.assertEqual(set(failed), {"smtp-noop"})
        self.assertIn("no answer to 'NOOP' within 1s", failed["smtp-noop"])
        self.assertEqual(status, 1)
        self.assertLess(seconds, 20)


class Grade(unittest.TestCase):
    """grade.sh on a folder: our three files, a copy whose smtpmail says
    "Sender accepted" (not the assignment's "Sender ok"), one whose
    smtpmail.c does not build."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gradetest-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        subs = os.path.join(self.dir, "submissions")
        for name in ("ours", "reply-text", "no-build"):
            os.makedirs(os.path.join(subs, name))
            for prog in ("smtpmail", "popserver", "mailclient"):
                shutil.copy(os.path.join(ROOT, prog + ".c"), os.path.join(subs, name))
        self.edit(os.path.join(subs, "reply-text", "smtpmail.c"),
                  b"... Sender ok\"", b"... Sender accepted\"")
        self.edit(os.path.join(subs, "no-build", "smtpmail.c"),
                  b"static ", b"static static static ")
        self.subs = subs

    def edit(self, path, old, new):
        with open(path, "rb") as f:
            text = f.read()
        self.assertIn(old, text)
        with open(path, "wb") as f:
            f.write(text.replace(old, new))

    def test_rows(self):
        out = os.path.join(self.dir, "out")
        work = os.path.join(self.dir, "tmp")
        os.mkdir(work)
        names = [os.path.join(self.subs, n) for n in ("no-build", "ours", "reply-text")]
        run = subprocess.run(["bash", GRADE, "-o", out, "-t", "60", "-k",
                              "--level assignment,client --skip pop-bad-login --timeout 5 --grace 0.5 "
                              "--settle 0.1"]
                             + names, capture_output=True, text=True, timeout=150,
                             env=dict(os.environ, TMPDIR=work))
        self.assertEqual(run.returncode, 0, run.stderr)
        rows = list(csv.reader(io.StringIO(run.stdout)))
        self.assertEqual(rows[0], ["submission", "build", "assignment", "rfc", "robust",
                                   "extra", "client", "not_run", "notes"])
        rows = {r[0]: r[1:] for r in rows[1:]}
        self.assertEqual(sorted(rows), ["no-build", "ours", "reply-text"])
        n, c = count("assignment") - 1, count("client")
        self.assertEqual(rows["ours"], ["ok", "%d/%d" % (n, n), "-", "-", "-", "%d/%d" % (c, c),
                                        "0", ""])
        self.assertEqual(rows["reply-text"], ["ok", "%d/%d" % (n - 1, n), "-", "-", "-",
                                              "%d/%d" % (c, c), "0", "failed: smtp-mail"])
        self.assertEqual(rows["no-build"][:7], ["failed: smtpmail.c", "-", "-", "-", "-", "-", "-"])
        self.assertRegex(rows["no-build"][7], r"^smtpmail\.c: smtpmail\.c:\d+:\d+: error")
        # The logs a teacher reads, and the reason of the failure in them.
        with open(os.path.join(out, "reply-text", "kit.txt")) as f:
            table = f.read()
        self.assertRegex(table, r"smtp-mail +assignment +fail +'250 <alice@localhost>\.\.\. "
                                r"Sender accepted': not the assignment's words")
        for name in ("smtpmail.log", "popserver.log", "client.txt", "kit.json"):
            self.assertTrue(os.path.getsize(os.path.join(out, "ours", name)) > 0, name)
        # Nothing it started is left: no process runs in its work directories.
        self.assertEqual(os.listdir(work), [])
        left = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cwd = os.readlink("/proc/%s/cwd" % pid)
            except OSError:
                continue
            if cwd.startswith(work) or cwd.startswith(self.dir):
                left.append(pid)
        self.assertEqual(left, [])


if __name__ == "__main__":
    unittest.main()
