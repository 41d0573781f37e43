#!/usr/bin/env python3
"""run.py - run the test suite: every TestCase class of tests/test_*.py.

Each class runs in its own python process (a few at a time, they mostly
wait on sockets), so one hung or crashed class cannot take the others down.
A test counts once: failed if it or any of its subtests failed or erred,
else skipped if it or a subtest was skipped, else passed; an error outside
any test (a class fixture, an import, a crash) counts as one failure. The
last line printed is "N passed, N failed, N skipped"; the exit code is 1 on
any failure, 2 if a selector matches nothing or a program is not built.

    python3 tests/run.py                         # everything
    python3 tests/run.py test_smtp               # one module
    python3 tests/run.py test_smtp.Data          # one class
    python3 tests/run.py test_smtp.Data.test_x   # one test
    JOBS=4 CLASS_TIMEOUT=300 python3 tests/run.py

The programs are taken from MAIL_BIN (default build/asan, see harness.py);
before anything runs, each selected module's BINARIES (default: every
program whose .c is present) must be there.
"""
import importlib
import inspect
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JOBS = int(os.environ.get("JOBS", "4"))
CLASS_TIMEOUT = int(os.environ.get("CLASS_TIMEOUT", "240"))
PROGRAMS = tuple(p for p in ("smtpmail", "popserver", "mailclient")
                 if os.path.exists(os.path.join(ROOT, p + ".c")))
RANK = {"passed": 0, "skipped": 1, "failed": 2}


class Result(unittest.TextTestResult):
    """A TextTestResult that also keeps one outcome per test, subtests
    folded into their test, and the reason of each skip."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.outcome = {}
        self.skip_notes = []

    def mark(self, test, what):
        # A subtest carries its test as test_case; a fixture error has only
        # a description, which id() returns.
        tid = getattr(test, "test_case", test).id()
        if RANK[what] >= RANK[self.outcome.get(tid, "passed")]:
            self.outcome[tid] = what

    def startTest(self, test):
        super().startTest(test)
        self.mark(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.mark(test, "failed")

    def addError(self, test, err):
        super().addError(test, err)
        self.mark(test, "failed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.mark(test, "failed")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.mark(subtest, "failed")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.mark(test, "skipped")
        self.skip_notes.append("%s: %s" % (test.id(), reason))


def run_one(name):
    """Child mode: run one "module.Class", print its report, the skips,
    then "RESULT passed failed skipped"."""
    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result)
    result = runner.run(suite)
    counts = [list(result.outcome.values()).count(w) for w in ("passed", "failed", "skipped")]
    for note in result.skip_notes:
        print("SKIPPED " + note)
    print("RESULT %d %d %d" % tuple(counts), flush=True)


def normalise(selector):
    """tests/test_smtp.py -> test_smtp: a file name works as a selector too."""
    selector = selector[len("tests/"):] if selector.startswith("tests/") else selector
    return selector[:-3] if selector.endswith(".py") else selector


def test_classes(module):
    """The TestCase classes defined in module that hold tests, by name."""
    return {cname: cls for cname, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, unittest.TestCase) and cls.__module__ == module.__name__
            and unittest.defaultTestLoader.getTestCaseNames(cls)}


def select(mod, classes, selector):
    """The names selector picks from module mod (empty: none)."""
    if selector == mod:
        return [mod + "." + c for c in sorted(classes)]
    parts = selector[len(mod) + 1:].split(".")
    cls = classes.get(parts[0])
    if cls is None or len(parts) > 2:
        return []
    if len(parts) == 2 and parts[1] not in unittest.defaultTestLoader.getTestCaseNames(cls):
        return []
    return [selector]


def discover(selectors):
    """The names to run ("module.Class", or "module.Class.test" if asked),
    the modules they come from, and the selectors that matched nothing.
    A module that does not import is run as a whole: its child process
    reports the import error as a failure."""
    mods = sorted(f[:-3] for f in os.listdir(HERE)
                  if f.startswith("test_") and f.endswith(".py"))
    names, modules, matched = [], [], set()
    for mod in mods:
        wanted = [s for s in selectors if s == mod or s.startswith(mod + ".")]
        if selectors and not wanted:
            continue
        try:
            module = importlib.import_module(mod)
        except Exception:
            names.append(mod)
            matched.update(wanted)
            continue
        modules.append(module)
        classes = test_classes(module)
        for selector in wanted or [mod]:
            picked = select(mod, classes, selector)
            if picked:
                matched.add(selector)
            names.extend(n for n in picked if n not in names)
    # A test whose whole class runs anyway is not run twice.
    names = [n for n in names if n.rsplit(".", 1)[0] not in names]
    return names, modules, [s for s in selectors if s not in matched]


def build_hint(modules):
    """One line saying how to build the programs the selected modules need
    but MAIL_BIN lacks, or None if nothing is missing."""
    import harness  # MAIL_BIN is resolved in one place
    need = []
    for module in modules:
        need.extend(p for p in getattr(module, "BINARIES", PROGRAMS) if p not in need)
    missing = [p for p in need if not os.access(harness.binary(p), os.X_OK)]
    if not missing:
        return None
    where = os.path.relpath(os.path.realpath(harness.BIN), os.path.realpath(ROOT))
    if where == ".":
        return "build first: make"
    if where == os.path.join("build", "asan"):
        return "build first: make " + " ".join("build/asan/" + p for p in missing)
    return "build first: %s has no %s" % (harness.BIN, ", ".join(missing))


def stop_group(proc):
    """Kill a class's process and what it started in its process group
    (the servers of its tests): nothing of a hung class outlives the run."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def collect(name, proc, began, log):
    """The counts of one finished (or timed-out) class; prints its line."""
    if proc.poll() is None:
        stop_group(proc)
        print("%s: killed after %ds" % (name, CLASS_TIMEOUT), flush=True)
    proc.wait()
    log.seek(0)
    out = log.read().decode("utf-8", "replace")
    log.close()
    counts = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            counts = [int(n) for n in line.split()[1:4]]
    if counts is None:
        counts = [0, 1, 0]  # no report at all: it crashed or hung
    elif proc.returncode != 0 and counts[1] == 0:
        counts[1] = 1  # a report, then a crash: still a failure
    p, f, s = counts
    print("%-45s %3d passed %3d failed %3d skipped  %5.1fs  %s"
          % (name, p, f, s, time.time() - began, "FAILED" if f else "ok"), flush=True)
    if f:
        print(out, flush=True)
    else:
        for line in out.splitlines():
            if line.startswith("SKIPPED "):
                print("    " + line, flush=True)
    return counts


def start(name):
    """One class in a process of its own; (name, process, start time, log)."""
    # Output goes to a temp file, not a pipe: a pipe read only at the end
    # would block a class that prints more than 64 KiB. A session of its
    # own, so that stop_group reaches it and what it started, and only that.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, __file__, "--one", name], cwd=HERE,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return name, proc, time.time(), log


def run_all(names):
    """Run every name in its own process, JOBS at a time; the totals."""
    pending, running = list(names), []
    totals = [0, 0, 0]
    try:
        while pending or running:
            while pending and len(running) < JOBS:
                running.append(start(pending.pop(0)))
            time.sleep(0.05)
            for item in list(running):
                name, proc, began, log = item
                if proc.poll() is None and time.time() - began < CLASS_TIMEOUT:
                    continue
                running.remove(item)
                totals = [t + c for t, c in zip(totals, collect(*item))]
    except KeyboardInterrupt:
        # A Ctrl-C reaches only us (the classes have sessions of their
        # own): stop them, then go.
        for item in running:
            stop_group(item[1])
        raise
    return totals


def main():
    sys.path.insert(0, HERE)
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        run_one(sys.argv[2])
        return 0
    names, modules, unmatched = discover([normalise(s) for s in sys.argv[1:]])
    if unmatched or not names:
        print("no test matches: %s" % (" ".join(unmatched) or "(no test modules)"))
        return 2
    hint = build_hint(modules)
    if hint:
        print(hint)
        return 2
    start = time.time()
    try:
        passed, failed, skipped = run_all(names)
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    print("suite time %.1fs" % (time.time() - start))
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
