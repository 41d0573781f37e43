"""Each program is one self-contained .c file: it builds alone with plain
`cc -o prog prog.c`, and it is warning-clean under gcc and clang."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import ROOT

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
