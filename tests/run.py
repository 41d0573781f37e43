#!/usr/bin/env python3
"""run.py - run the test suite: every TestCase class of tests/test_*.py.

Each class runs in its own python process (a few at a time, they mostly
wait on sockets), so one hung or crashed class cannot take the others down.
The last line printed is "N passed, N failed"; the exit code is 1 on any
failure.

    python3 tests/run.py                 # everything
    python3 tests/run.py test_smtp       # one module
    python3 tests/run.py test_smtp.Data  # one class
    JOBS=4 CLASS_TIMEOUT=300 python3 tests/run.py
"""
import importlib
import inspect
import os
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
JOBS = int(os.environ.get("JOBS", "4"))
CLASS_TIMEOUT = int(os.environ.get("CLASS_TIMEOUT", "240"))


def run_one(name):
    """Child mode: run one "module.Class", print its report, then RESULT p f."""
    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    print("RESULT %d %d" % (result.testsRun - bad, bad), flush=True)


def discover(selectors):
    """The "module.Class" names to run, biggest modules first."""
    mods = sorted(f[:-3] for f in os.listdir(HERE)
                  if f.startswith("test_") and f.endswith(".py"))
    names = []
    for mod in mods:
        if selectors and not any(s == mod or s.startswith(mod + ".") for s in selectors):
            continue
        m = importlib.import_module(mod)
        for cname, cls in inspect.getmembers(m, inspect.isclass):
            if (issubclass(cls, unittest.TestCase) and cls.__module__ == mod
                    and unittest.defaultTestLoader.getTestCaseNames(cls)):
                full = mod + "." + cname
                if not selectors or mod in selectors or full in selectors:
                    names.append(full)
    return names


def main():
    sys.path.insert(0, HERE)
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        run_one(sys.argv[2])
        return 0
    names = discover(sys.argv[1:])
    pending, running = list(names), []
    passed = failed = 0
    start = time.time()
    while pending or running:
        while pending and len(running) < JOBS:
            name = pending.pop(0)
            # Output goes to a temp file, not a pipe: a pipe read only at
            # the end would block a class that prints more than 64 KiB.
            log = tempfile.TemporaryFile()
            proc = subprocess.Popen([sys.executable, __file__, "--one", name],
                                    cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, proc, time.time(), log))
        time.sleep(0.05)
        for item in list(running):
            name, proc, began, log = item
            if proc.poll() is None and time.time() - began < CLASS_TIMEOUT:
                continue
            if proc.poll() is None:
                proc.kill()
                print("%s: killed after %ds" % (name, CLASS_TIMEOUT), flush=True)
            proc.wait()
            log.seek(0)
            out = log.read().decode("utf-8", "replace")
            log.close()
            running.remove(item)
            p, f = 0, 1
            for line in out.splitlines():
                if line.startswith("RESULT "):
                    p, f = map(int, line.split()[1:3])
            if proc.returncode not in (0, None) and f == 0 and p == 0:
                f = 1
            passed += p
            failed += f
            status = "ok" if f == 0 else "FAILED"
            print("%-45s %3d passed %3d failed  %5.1fs  %s"
                  % (name, p, f, time.time() - began, status), flush=True)
            if f:
                print(out, flush=True)
    print("suite time %.1fs" % (time.time() - start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not names else 0


if __name__ == "__main__":
    sys.exit(main())
