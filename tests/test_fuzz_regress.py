"""Fuzz regression: every kept input - tests/fuzz/regress/<proto>/
(inputs that once crashed, hung or leaked) and tests/fuzz/seeds/<proto>/ -
replayed through the libFuzzer harnesses. A libFuzzer binary given files
runs each once and exits non-zero on a crash, a sanitizer report (ASan,
UBSan, LeakSanitizer) or a timeout. Skipped only if clang is missing."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import ROOT

FUZZ = os.path.join(ROOT, "tests", "fuzz")
FLAGS = ["-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=fuzzer,address,undefined",
         "-fno-sanitize-recover=undefined"]


def kept_inputs(proto):
    files = []
    for sub in ("regress", "seeds"):
        top = os.path.join(FUZZ, sub, proto)
        if os.path.isdir(top):
            files += sorted(os.path.join(top, f) for f in os.listdir(top)
                            if os.path.isfile(os.path.join(top, f)))
    return files


@unittest.skipUnless(shutil.which("clang"), "clang not installed")
class Replay:
    """Build one harness in a temp dir, run every kept input through it."""
    proto = source = program = None

    def test_every_kept_input_runs_clean(self):
        inputs = kept_inputs(self.proto)
        self.assertTrue(inputs, "no kept inputs for %s" % self.proto)
        with tempfile.TemporaryDirectory() as tmp:
            exe = os.path.join(tmp, "fuzz_" + self.proto)
            build = subprocess.run(["clang", *FLAGS, "-Dmain=%s_main" % self.program,
                                    "-o", exe, os.path.join(FUZZ, self.source)],
                                   cwd=ROOT, capture_output=True, text=True)
            self.assertEqual(build.returncode, 0, build.stderr[-3000:])
            run = subprocess.run([exe, "-timeout=20", "-rss_limit_mb=2048", *inputs],
                                 cwd=tmp, capture_output=True, text=True,
                                 errors="replace", timeout=240)
            self.assertEqual(run.returncode, 0, run.stderr[-6000:])
            self.assertEqual(run.stderr.count("Running: "), len(inputs), run.stderr[-3000:])


class ReplaySmtp(Replay, unittest.TestCase):
    proto, source, program = "smtp", "fuzz_smtp.c", "smtpmail"


class ReplayPop(Replay, unittest.TestCase):
    proto, source, program = "pop", "fuzz_pop.c", "popserver"


class ReplayMbox(Replay, unittest.TestCase):
    proto, source, program = "mbox", "fuzz_mbox.c", "popserver"


if __name__ == "__main__":
    unittest.main()
