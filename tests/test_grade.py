"""The grading kit on faulty submissions: each class of defect met in real
submissions, reproduced by tests/faulty/mailpair.py (servers) and
tests/faulty/client.py (a client) with one fault each, is reported by its
own check and by no other; a kit killed half-way leaves the checks it
finished; a check that could not run is counted apart from a failure;
tests/grade.sh grades a set with a relative -o and two jobs at once (the
control, our three files, at full marks), finds the ports a submission's
servers really listen on, grades misnamed files with a note, and leaves no
process and no temporary file after Ctrl-C.

The faulty submissions are C files that run the Python pair (see
tests/faulty/submission.c), so grade.sh builds and starts them as it does a
student's. The kit runs with short waits and a subset of its checks here.
"""
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import ROOT, binary

HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.path.join(HERE, "conform.py")
PAIR = os.path.join(HERE, "faulty", "mailpair.py")
CLIENT = os.path.join(HERE, "faulty", "client.py")
SHIM = os.path.join(HERE, "faulty", "submission.c")
GRADE = os.path.join(HERE, "grade.sh")
USERS = ["--user", "alice:alicepw", "--user", "bob:bobpw"]
FAST = ["--timeout", "3", "--grace", "0.5", "--settle", "0.1", "--silence", "0.2"]
FAST_GRADE = "--timeout 3 --grace 0.5 --settle 0.1 --silence 0.2"

sys.path.insert(0, HERE)
import conform  # noqa: E402


def namespaces():
    """True if grade.sh can give each submission namespaces of its own."""
    try:
        return subprocess.run(["unshare", "-rnpfm", "--kill-child", "--mount-proc", "true"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def shim(path, role, fault=""):
    """A submission's program (role smtp, pop3 or client) as C that runs
    the Python pair or client with fault."""
    script = CLIENT if role == "client" else PAIR
    with open(path, "w") as f:
        f.write('#define SCRIPT "%s"\n#define ROLE "%s"\n#define FAULT "%s"\n#include "%s"\n'
                % (script, role, fault, SHIM))


def submission(folder, fault="", client_fault="", names=None, settings=None):
    """A faulty submission folder; names maps a role to its file name
    (a misnaming, perhaps in a subfolder)."""
    names = dict({"smtp": "smtpmail.c", "pop3": "popserver.c", "client": "mailclient.c"},
                 **(names or {}))
    for role, name in names.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shim(path, role, client_fault if role == "client" else fault)
    if settings:
        with open(folder + ".grade", "w") as f:
            f.write(settings)


def outcome(report, result):
    return {c["name"]: c["reason"] for c in report["checks"] if c["result"] == result}


class Pair:
    """The pair, in memory, on two free ports it picks."""

    def pair(self, fault=None):
        proc = subprocess.Popen([sys.executable, PAIR, "0", "0"] + USERS
                                + (["--fault", fault] if fault else []),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        words = proc.stdout.readline().split()
        self.assertEqual(words[:1], ["listening"])
        return int(words[1]), int(words[2])

    def kit_args(self, ports, *extra):
        return [sys.executable, KIT, "--smtp", "127.0.0.1:%d" % ports[0],
                "--pop3", "127.0.0.1:%d" % ports[1]] + USERS + FAST + list(extra)

    def kit(self, fault, *extra):
        run = subprocess.run(self.kit_args(self.pair(fault), "--json", *extra),
                             capture_output=True, text=True, timeout=120)
        try:
            return json.loads(run.stdout)
        except ValueError:
            raise AssertionError("no JSON:\n%s\n%s" % (run.stdout, run.stderr)) from None


# The no-line-end server costs a short silence per reply: a subset of checks.
NO_CRLF_SUBSET = ("smtp-greeting,smtp-helo,smtp-mail,smtp-rcpt,smtp-data,smtp-end-of-data,"
                  "smtp-quit,delivery,received-line,pop-login,pop-goodbye,"
                  "smtp-crlf,pop-crlf,reply-nul,smtp-reply-space,pop-stat,pop-list-size,"
                  "smtp-pipelining,pop-pipelining,smuggle-lf-dot-lf")


class Defects(Pair, unittest.TestCase):
    """Each way of writing replies wrongly is reported once, by its own
    check; every other check reads through it and passes."""

    def test_each_defect_by_its_own_check(self):
        cases = {
            "nul-pad": ({"reply-nul": r"^replies carry NUL bytes \(SMTP, POP3\)$"}, []),
            "no-space": ({"smtp-reply-space": r"^no space after the code: '220pair"}, []),
            "no-crlf": ({"smtp-crlf": r"^replies lack CRLF", "pop-crlf": r"^replies lack CRLF"},
                        ["--only", NO_CRLF_SUBSET, "--keep"]),
            "list-no-end": ({"pop-multiline-end": r"^LIST never ends with a '\.' line"},
                            ["--only", NO_CRLF_SUBSET + ",pop-multiline-end,pop-uidl,pop-dele,"
                             "dot-line"]),
            "list-form": ({"pop-list-size": r"^LIST lines are not 'n size': '1\. \d+ octets'$"},
                          []),
        }
        for fault, (expected, extra) in cases.items():
            with self.subTest(fault=fault):
                report = self.kit(fault, "--level", "assignment,rfc,robust", "--senders", "4",
                                  *extra)
                failed = outcome(report, "fail")
                self.assertEqual(set(failed), set(expected), failed)
                self.assertEqual(outcome(report, "not-run"), {})
                for name, pattern in expected.items():
                    self.assertRegex(failed[name], pattern)
                # The checks that passed say what they read through; the
                # notes give that root cause first, then the failures.
                tolerated = [c for c in report["checks"]
                             if c["result"] == "pass" and c["tolerated"]]
                self.assertGreater(len(tolerated), 5)
                notes = conform.causes(report["checks"])
                self.assertRegex(notes[0], r"^[a-zA-Z].* \(read through\): \d+ checks$")
                self.assertEqual(notes[-1], "failed: " + " ".join(
                    c["name"] for c in report["checks"] if c["result"] == "fail"))



class LoginForm(Pair, unittest.TestCase):
    """A POP3 server the kit cannot log in to."""

    def test_pop3_login_form_fails_pop3_checks_only(self):
        # "USER : name": the POP3 checks fail; the SMTP checks that would
        # read the mail over POP3 are not run, never failed.
        report = self.kit("user-colon", "--level", "assignment")
        failed, not_run = outcome(report, "fail"), outcome(report, "not-run")
        self.assertTrue(failed)
        self.assertEqual([n for n in failed if not n.startswith("pop-")], [], failed)
        self.assertIn("delivery", not_run)
        self.assertIn("smtp-greeting", outcome(report, "pass"))


class Reading(unittest.TestCase):
    """The lenient reader on its own, against a scripted server."""

    def scripted(self, script):
        """A one-connection server that runs script(conn): its address."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        self.addCleanup(srv.close)

        def serve():
            conn, _ = srv.accept()
            with conn:
                script(conn)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        return srv.getsockname()

    def test_line_end_written_late(self):
        # The text, a pause longer than the silence, then CRLF alone: one
        # reply each, no empty line between them.
        def script(conn):
            conn.sendall(b"220 ready")
            time.sleep(0.6)
            conn.sendall(b"\r\n")
            conn.recv(100)
            conn.sendall(b"250 OK\r\n")
            time.sleep(0.5)
        line = conform.Line(self.scripted(script), 5, "SMTP", 0.2)
        self.assertEqual(line.line("(the greeting)"), b"220 ready")
        line.send(b"HELO x\r\n")
        self.assertEqual(line.line("to HELO"), b"250 OK")
        line.close()

    def test_replies_without_line_ends_told_apart(self):
        # Three replies in one write, no line ends: split at their codes.
        def script(conn):
            conn.sendall(b"220 ready")
            conn.recv(100)
            conn.sendall(b"250 OK Hello grader250 <a@b>... Sender ok354 Enter mail")
            time.sleep(0.5)
        kit = conform.Kit(conform.parse_args(["--smtp", "127.0.0.1:%d" % self.scripted(script)[1],
                                              "--pop3", "127.0.0.1:1", "--user", "a:b",
                                              "--silence", "0.2"]))
        s = conform.SMTP(kit)
        s.send(b"HELO grader\r\nMAIL FROM:<a@b>\r\nDATA\r\n")
        self.assertEqual([s.reply("x").code for _ in range(3)], [250, 250, 354])
        self.assertEqual(s.defects, {"nocrlf"})
        s.close()


class Stream(Pair, unittest.TestCase):
    """Results as they come: a killed kit leaves its finished checks; the
    budget's leftovers are not run, apart from the failures."""

    def test_killed_kit_keeps_finished_checks(self):
        stream = os.path.join(tempfile.mkdtemp(prefix="conform-stream-"), "kit.jsonl")
        self.addCleanup(shutil.rmtree, os.path.dirname(stream), True)
        # smtp-noop hangs for 30 s: the kit is killed while it waits.
        proc = subprocess.Popen(self.kit_args(self.pair("hang-noop"), "--level", "assignment,rfc",
                                              "--timeout", "30", "--stream", stream),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(proc.wait)
        deadline = time.monotonic() + 60
        names = []
        while time.monotonic() < deadline and "smtp-rset" not in names:
            time.sleep(0.2)
            if os.path.exists(stream):
                with open(stream) as f:
                    names = [json.loads(l).get("name") for l in f if l.endswith("\n")]
        proc.kill()
        with open(stream) as f:
            lines = [json.loads(l) for l in f]
        self.assertEqual([c["name"] for c in lines[0]["plan"]][:5],
                         ["smtp-greeting", "smtp-helo", "smtp-mail", "smtp-rcpt", "smtp-data"])
        done = [l["name"] for l in lines[1:]]
        self.assertIn("smtp-rset", done)
        self.assertNotIn("smtp-noop", done)
        self.assertTrue(all(l["result"] == "pass" for l in lines[1:]), lines)

    def test_signal_stops_kit_and_client(self):
        # A closed terminal (SIGHUP) while the client is being driven: the
        # kit ends at once, with its client and its temporary directory.
        tmp = tempfile.mkdtemp(prefix="conform-signal-")
        self.addCleanup(shutil.rmtree, tmp, True)
        here = tempfile.mkdtemp(prefix="conform-signal-client-")
        self.addCleanup(shutil.rmtree, here, True)
        mark = os.path.join(here, "client-pid")
        script = os.path.join(here, "client.py")
        with open(script, "w") as f:
            f.write("import os, time\nopen(%r, 'w').write(str(os.getpid()))\n"
                    "print('login:', flush=True)\ntime.sleep(60)\n" % mark)
        client = "%s %s" % (sys.executable, script)
        proc = subprocess.Popen(self.kit_args(self.pair(), "--level", "client", "--timeout", "30",
                                              "--client", client),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, TMPDIR=tmp))
        self.addCleanup(proc.wait)
        deadline = time.monotonic() + 30
        while not os.path.exists(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        with open(mark) as f:
            client_pid = int(f.read())
        os.remove(mark)
        started = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 128 + signal.SIGHUP, err)
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(os.listdir(tmp), [])
        deadline = time.monotonic() + 10
        while os.path.exists("/proc/%d" % client_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(os.path.exists("/proc/%d" % client_pid))

    def test_hung_server_is_not_waited_on(self):
        # From its fourth connection on the SMTP server never greets: after
        # three checks in a row without an answer the kit sees that, and
        # the checks that need it are not run, at once.
        started = time.monotonic()
        report = self.kit("stuck", "--level", "assignment,rfc", "--timeout", "1")
        seconds = time.monotonic() - started
        failed, not_run = outcome(report, "fail"), outcome(report, "not-run")
        self.assertEqual(list(failed)[:3], ["smtp-rcpt", "smtp-data", "smtp-end-of-data"])
        self.assertIn("smtp-quit", not_run)
        self.assertRegex(not_run["smtp-quit"], r"the SMTP server stopped answering")
        self.assertGreater(len(not_run), 20)
        self.assertLess(seconds, 30)

    def test_not_run_apart_from_fail(self):
        # A budget of 3 s and a NOOP that hangs past it: smtp-noop is cut at
        # the budget (a failure), the checks after it are not run.
        run = subprocess.run(self.kit_args(self.pair("hang-noop"), "--level", "assignment,rfc",
                                           "--timeout", "30", "--budget", "3", "--csv"),
                             capture_output=True, text=True, timeout=60)
        fields = next(csv.reader(io.StringIO(run.stdout)))
        passed, ran = map(int, fields[1].split("/"))
        not_run = int(fields[5])
        rfc = sum(1 for c in conform.CHECKS if c.level == "rfc")
        self.assertEqual(ran, passed + 1, fields)           # only smtp-noop failed
        self.assertEqual(ran + not_run, rfc, fields)
        self.assertGreater(not_run, 5)
        self.assertRegex(fields[6], r"^not run: out of time: %d checks; " % not_run)
        self.assertTrue(fields[6].endswith("failed: smtp-noop"), fields[6])
        self.assertEqual(run.returncode, 1)


@unittest.skipUnless(namespaces(), "unshare -rnpfm does not work here: grade.sh's namespaces")
class GradeSet(unittest.TestCase):
    """grade.sh -j 2 -o <relative> on the control and the faulty set."""

    def test_set(self):
        top = tempfile.mkdtemp(prefix="gradeset-")
        self.addCleanup(shutil.rmtree, top, True)
        subs = os.path.join(top, "submissions")
        os.makedirs(os.path.join(subs, "ours"))
        for prog in ("smtpmail", "popserver", "mailclient"):
            shutil.copy(os.path.join(ROOT, prog + ".c"), os.path.join(subs, "ours"))
        no_client = "client = none\n"
        submission(os.path.join(subs, "misnamed"),
                   names={"smtp": "src/smptmail.c", "pop3": "src/pop3server.c"},
                   settings=no_client)
        submission(os.path.join(subs, "fixed-ports"), "fixed-ports", settings=no_client)
        submission(os.path.join(subs, "one-shot"), "one-shot", settings=no_client)
        submission(os.path.join(subs, "spin"), "spin", settings=no_client)
        submission(os.path.join(subs, "reverse-lookup"), "reverse-lookup", settings=no_client)
        submission(os.path.join(subs, "exit-word"), client_fault="exit-word")
        submission(os.path.join(subs, "reject-all"), client_fault="reject-all")
        submission(os.path.join(subs, "own-users"), settings=no_client)
        with open(os.path.join(subs, "own-users", "user.txt"), "w") as f:
            f.write("carol carolpw\ndave davepw\n")
        # A second folder of an equal name, elsewhere.
        submission(os.path.join(top, "more", "spin"), settings=no_client)
        tmp = os.path.join(top, "tmp")
        os.mkdir(tmp)
        names = sorted(os.listdir(subs))
        names = [n for n in names if not n.endswith(".grade")]
        started = time.monotonic()
        run = subprocess.run(["bash", GRADE, "-j", "2", "-o", "results", "-t", "60", "-b", "20",
                              "-k", "--level assignment,client " + FAST_GRADE]
                             + [os.path.join("submissions", n) for n in names]
                             + [os.path.join("more", "spin")],
                             capture_output=True, text=True, timeout=240, cwd=top,
                             env=dict(os.environ, TMPDIR=tmp))
        seconds = time.monotonic() - started
        self.assertEqual(run.returncode, 0, run.stderr)
        rows = list(csv.reader(io.StringIO(run.stdout)))
        self.assertEqual(rows[0][-2:], ["not_run", "notes"])
        rows = {r[0]: r[1:] for r in rows[1:]}
        self.assertEqual(sorted(rows), sorted(names + ["spin-2"]))
        self.assertEqual(rows["spin-2"][1], "%d/%d" % ((sum(1 for c in conform.CHECKS
                                                              if c.level == "assignment"),) * 2))
        # The servers' stdout is line-buffered: a student's printf logs.
        with open(os.path.join(top, "results", "misnamed", "smtpmail.log")) as f:
            self.assertIn("smtp server starting on port 2525", f.read())
        a = sum(1 for c in conform.CHECKS if c.level == "assignment")
        c = sum(1 for c in conform.CHECKS if c.level == "client")
        full = "%d/%d" % (a, a)
        # The control at full marks, its logs under the relative -o.
        self.assertEqual(rows["ours"], ["ok", full, "-", "-", "-", "%d/%d" % (c, c), "0", ""])
        for name in ("smtpmail.log", "popserver.log", "kit.jsonl", "client.txt"):
            self.assertTrue(os.path.getsize(os.path.join(top, "results", "ours", name)) > 0)
        # Misnamed files in a subfolder: graded, with a note of which is which.
        self.assertEqual(rows["misnamed"][:2], ["ok", full])
        self.assertIn("smtpmail built from src/smptmail.c", rows["misnamed"][-1])
        self.assertIn("popserver built from src/pop3server.c", rows["misnamed"][-1])
        # Ports found where the servers listen.
        self.assertEqual(rows["fixed-ports"][1], full)
        self.assertIn("nothing listened on 2525/1100; the servers listened on 20000 and "
                      "40000: graded there", rows["fixed-ports"][-1])
        # The readiness probe left the one-shot server its one connection.
        with open(os.path.join(top, "results", "one-shot", "kit.jsonl")) as f:
            first = [json.loads(l) for l in f][1]
        self.assertEqual((first["name"], first["result"]), ("smtp-greeting", "pass"))
        # The namespace resolves 127.0.0.1 as a host does; a spinning
        # process costs nothing to the grade.
        self.assertEqual(rows["reverse-lookup"][1], full)
        self.assertEqual(rows["spin"][1], full)
        # The accounts of the submission's user.txt.
        self.assertEqual(rows["own-users"][1], full)
        self.assertIn("accounts from user.txt: carol dave", rows["own-users"][-1])
        # The client: other menu words fail only their own check; a client
        # that rejects every mail gets no credit for rejecting.
        self.assertEqual(rows["exit-word"][5:7], ["%d/%d" % (c - 1, c), "0"])
        self.assertTrue(rows["exit-word"][-1].endswith("failed: client-menu-words"))
        with open(os.path.join(top, "results", "reject-all", "kit.jsonl")) as f:
            results = {r["name"]: r["result"] for r in map(json.loads, f) if "name" in r}
        self.assertEqual(results["client-send"], "fail")
        self.assertEqual(results["client-incorrect-format"], "not-run")
        self.assertEqual(results["client-list"], "pass")
        # Nothing left: no temporary file, no process in the work directories.
        self.assertEqual(os.listdir(tmp), [])
        self.assertEqual(processes_under(top), [])
        self.assertLess(seconds, 200)


@unittest.skipUnless(namespaces(), "unshare -rnpfm does not work here: grade.sh's namespaces")
class Reference(unittest.TestCase):
    """-r: the submission's client against reference servers (ours); -m:
    a client known good (ours) against the submission's servers."""

    def test_client_and_servers_apart(self):
        top = tempfile.mkdtemp(prefix="graderef-")
        self.addCleanup(shutil.rmtree, top, True)
        # Its POP3 server wants "USER : name", its client is right.
        submission(os.path.join(top, "colon"), "user-colon")
        c = sum(1 for c in conform.CHECKS if c.level == "client")
        run = subprocess.run(["bash", GRADE, "-o", os.path.join(top, "out"), "-t", "60",
                              "-r", ROOT, "-k", "--level assignment,client " + FAST_GRADE,
                              os.path.join(top, "colon")],
                             capture_output=True, text=True, timeout=200)
        rows = {r[0]: r[1:] for r in list(csv.reader(io.StringIO(run.stdout)))[1:]}
        self.assertEqual(rows["colon"][5], "%d/%d" % (c, c), rows)
        self.assertIn("the client graded against the servers of " + ROOT, rows["colon"][-1])
        self.assertIn("pop-login", rows["colon"][-1])
        # Our client against a correct pair.
        submission(os.path.join(top, "pair"), client_fault="reject-all")
        run = subprocess.run(["bash", GRADE, "-o", os.path.join(top, "out"), "-t", "60",
                              "-m", binary("mailclient"), "-k", "--level client " + FAST_GRADE,
                              os.path.join(top, "pair")],
                             capture_output=True, text=True, timeout=200)
        rows = {r[0]: r[1:] for r in list(csv.reader(io.StringIO(run.stdout)))[1:]}
        self.assertEqual(rows["pair"][5:7], ["%d/%d" % (c, c), "0"], rows)


@unittest.skipUnless(namespaces(), "unshare -rnpfm does not work here: grade.sh's namespaces")
class HostLike(unittest.TestCase):
    """The namespace answers as a host: on a machine whose /etc/hosts lacks
    localhost (simulated in a mount namespace), grade.sh's set-up makes
    getnameinfo() of 127.0.0.1 answer and brings loopback up."""

    def test_reverse_lookup_and_loopback(self):
        top = tempfile.mkdtemp(prefix="gradehosts-")
        self.addCleanup(shutil.rmtree, top, True)
        bad = os.path.join(top, "hosts")
        with open(bad, "w") as f:
            f.write("10.1.2.3 elsewhere\n")
        script = """
mount --bind "$1" /etc/hosts || exit 3
eval "$(sed -n '/^host_like() {/,/^}/p' "$2")"
GRADE_MOUNTNS=yes host_like "$3"
python3 -c '
import socket
print(socket.getnameinfo(("127.0.0.1", 25), socket.NI_NAMEREQD)[0])
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
socket.create_connection(s.getsockname(), timeout=5).close()
print("loopback up")'
"""
        run = subprocess.run(["unshare", "-rnpfm", "--kill-child", "--mount-proc", "bash", "-c",
                              script, "-", bad, GRADE, top],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.stdout.split(), ["localhost", "loopback", "up"], run.stderr)


@unittest.skipUnless(namespaces(), "unshare -rnpfm does not work here: grade.sh's namespaces")
class TimeLimit(unittest.TestCase):
    """A kit stopped by grade.sh's time limit: its row still has every check
    it finished; the ones it never reached are not run."""

    def test_row_of_a_stopped_kit(self):
        top = tempfile.mkdtemp(prefix="gradetime-")
        self.addCleanup(shutil.rmtree, top, True)
        submission(os.path.join(top, "hangs"), "hang-noop", settings="client = none\n")
        # The kit's own budget lifted, so that the limit (-t 20) stops it
        # inside smtp-noop, which waits 60 s for its answer.
        run = subprocess.run(["bash", GRADE, "-o", os.path.join(top, "out"), "-t", "20", "-k",
                              "--level rfc --budget 9999 " + FAST_GRADE + " --timeout 60",
                              os.path.join(top, "hangs")],
                             capture_output=True, text=True, timeout=120)
        rows = {r[0]: r[1:] for r in list(csv.reader(io.StringIO(run.stdout)))[1:]}
        rfc = sum(1 for c in conform.CHECKS if c.level == "rfc")
        passed, ran = map(int, rows["hangs"][2].split("/"))
        self.assertEqual((passed, ran), (4, 4), rows)   # the four before smtp-noop
        self.assertEqual(int(rows["hangs"][6]), rfc - 4)
        self.assertIn("stopped after the time limit of 20 s", rows["hangs"][-1])
        self.assertIn("not run: out of time: %d checks" % (rfc - 4), rows["hangs"][-1])


@unittest.skipUnless(namespaces(), "unshare -rnpfm does not work here: grade.sh's namespaces")
class Limits(unittest.TestCase):
    """A server that spins on the CPU is stopped by the CPU limit."""

    def test_cpu_limit(self):
        top = tempfile.mkdtemp(prefix="gradelimit-")
        self.addCleanup(shutil.rmtree, top, True)
        submission(os.path.join(top, "spins"), "spin-start", settings="client = none\n")
        started = time.monotonic()
        run = subprocess.run(["bash", GRADE, "-o", os.path.join(top, "out"), "-t", "60", "-k",
                              "--only smtp-greeting,pop-greeting " + FAST_GRADE,
                              os.path.join(top, "spins")],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, GRADE_CPU="1"))
        rows = {r[0]: r[1:] for r in list(csv.reader(io.StringIO(run.stdout)))[1:]}
        # SIGXCPU at the limit (128 + 24), or SIGKILL (128 + 9) where the
        # soft and hard limits are one.
        for prog in ("smtpmail", "popserver"):
            self.assertRegex(rows["spins"][-1],
                             r"%s exited \(status (152|137)\) before the kit ended" % prog)
        self.assertLess(time.monotonic() - started, 40)


def processes_under(path):
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if cwd.startswith(path):
            left.append(pid)
    return left


@unittest.skipUnless(namespaces(), "unshare -rnpfm does not work here: grade.sh's namespaces")
class Interrupt(unittest.TestCase):
    """Ctrl-C (SIGINT) or a closed terminal (SIGHUP) stops grade.sh at
    once, with everything it started, and removes its temporary files."""

    def grade_and_stop(self, sig):
        top = tempfile.mkdtemp(prefix="gradestop-")
        self.addCleanup(shutil.rmtree, top, True)
        submission(os.path.join(top, "hangs"), "hang-noop", settings="client = none\n")
        tmp = os.path.join(top, "tmp")
        os.mkdir(tmp)
        out = os.path.join(top, "out")
        proc = subprocess.Popen(["bash", GRADE, "-o", out, "-t", "120", "-k",
                                 "--level rfc --timeout 60 " + FAST_GRADE.replace("3", "60", 1),
                                 os.path.join(top, "hangs")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, TMPDIR=tmp), start_new_session=True)
        self.addCleanup(proc.wait)
        self.addCleanup(lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
        stream = os.path.join(out, "hangs", "kit.jsonl")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if os.path.exists(stream) and sum(1 for _ in open(stream)) >= 3:
                break
            time.sleep(0.2)
        self.assertTrue(processes_under(tmp), "the servers did not start")
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 130, err)
        self.assertIn("stopped", err)
        deadline = time.monotonic() + 10
        while processes_under(tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual(processes_under(tmp), [])
        self.assertEqual(os.listdir(tmp), [])
        # What was done is kept.
        with open(stream) as f:
            self.assertGreaterEqual(sum(1 for _ in f), 3)

    def test_ctrl_c(self):
        self.grade_and_stop(signal.SIGINT)

    def test_closed_terminal(self):
        self.grade_and_stop(signal.SIGHUP)


if __name__ == "__main__":
    unittest.main()
