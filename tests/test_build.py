"""Each program is one self-contained .c file: it builds alone with plain
`cc -o prog prog.c`, and it is warning-clean under gcc and clang. The
Makefile keeps the usual conventions: CPPFLAGS, CFLAGS, LDFLAGS and LDLIBS
reach the compile lines, and only the test builds turn warnings into errors
(a newer compiler must not refuse the plain `make`)."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import ROOT

# Nothing here runs a built program (see run.py).
BINARIES = ()

PROGRAMS = [p for p in ("smtpmail", "popserver", "mailclient")
            if os.path.exists(os.path.join(ROOT, p + ".c"))]


class Build(unittest.TestCase):
    def compile(self, compiler, *flags):
        for prog in PROGRAMS:
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, prog)
                run = subprocess.run([compiler, *flags, "-o", out, prog + ".c"],
                                     cwd=ROOT, capture_output=True, text=True)
                self.assertEqual(run.returncode, 0, "%s %s:\n%s" % (compiler, prog, run.stderr))
                self.assertTrue(os.access(out, os.X_OK))

    def test_programs_present(self):
        self.assertIn("smtpmail", PROGRAMS)

    def test_each_builds_alone_with_cc(self):
        self.compile("cc")

    def test_gcc_warning_clean(self):
        self.compile("gcc", "-Wall", "-Wextra", "-Werror", "-O2")

    @unittest.skipUnless(shutil.which("clang"), "clang not installed")
    def test_clang_warning_clean(self):
        self.compile("clang", "-Wall", "-Wextra", "-Werror", "-O2")


class Makefile(unittest.TestCase):
    def dry_run(self, *args):
        """The commands `make -n -B args` would run, one per program, with
        no make or flags variables inherited from the caller's environment."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CPPFLAGS", "CFLAGS",
                            "LDFLAGS", "LDLIBS", "CC")}
        run = subprocess.run(["make", "-n", "-B", "-C", ROOT, *args], env=env,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        lines = {}
        for line in run.stdout.splitlines():
            words = line.split()
            for prog in PROGRAMS:
                if prog + ".c" in words and "-o" in words:
                    lines[prog] = words
        self.assertEqual(sorted(lines), sorted(PROGRAMS), run.stdout)
        return lines

    def test_plain_make_warns_without_werror(self):
        for prog, words in self.dry_run("all").items():
            with self.subTest(prog=prog):
                self.assertIn("-Wall", words)
                self.assertIn("-Wextra", words)
                self.assertNotIn("-Werror", words)

    def test_test_build_keeps_werror(self):
        for prog, words in self.dry_run(*("build/asan/" + p for p in PROGRAMS)).items():
            with self.subTest(prog=prog):
                self.assertIn("-Werror", words)
                self.assertIn("-fsanitize=address,undefined", words)

    def test_flags_variables_honoured(self):
        flags = ["CPPFLAGS=-DXYZ_TEST", "CFLAGS=-O1 -DXYZ_CFLAGS",
                 "LDFLAGS=-L/xyz/lib", "LDLIBS=-lxyz"]
        for targets in (["all"], ["build/asan/" + p for p in PROGRAMS]):
            for prog, words in self.dry_run(*flags, *targets).items():
                with self.subTest(target=targets[0], prog=prog):
                    self.assertIn("-DXYZ_TEST", words)
                    self.assertIn("-L/xyz/lib", words)
                    # Libraries come after the source, or the linker drops them.
                    self.assertGreater(words.index("-lxyz"), words.index(prog + ".c"))
                    if targets == ["all"]:
                        self.assertIn("-DXYZ_CFLAGS", words)
