"""Unit tests of the programs' pure functions: tests/unit/unit_*.c include
one program's .c file (built with -Dmain=<prog>_main, so its static
functions are callable) and run tables of cases, input -> expected output.
Each class builds one unit program with the flags of `make test` (ASan,
UBSan, -Werror) into a temp dir; each test method runs one group of it
and fails with the program's report, one line per failing case."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import ROOT, SANITIZER_ENV

UNIT = os.path.join(ROOT, "tests", "unit")
FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined", "-Wall", "-Wextra", "-Werror"]
SUMMARY_RE = re.compile(r"^(\w+): (\d+) cases, (\d+) failed$", re.M)


class UnitProgram:
    """Build tests/unit/<source> once for the class; run_group runs one group."""
    source = program = None
    tmp = exe = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="unit-")
        cls.exe = os.path.join(cls.tmp, cls.source[:-2])
        cc = os.environ.get("CC", "cc")
        cls.build = subprocess.run([cc, *FLAGS, "-Dmain=%s_main" % cls.program,
                                    "-o", cls.exe, os.path.join(UNIT, cls.source)],
                                   cwd=ROOT, capture_output=True, text=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_group(self, group):
        self.assertEqual(self.build.returncode, 0, self.build.stderr[-4000:])
        run = subprocess.run([self.exe, group], cwd=self.tmp, capture_output=True,
                             text=True, errors="replace", timeout=120,
                             env=dict(os.environ, **SANITIZER_ENV))
        report = run.stdout[-6000:] + run.stderr[-3000:]
        self.assertEqual(run.returncode, 0, report)
        summary = SUMMARY_RE.findall(run.stdout)
        self.assertEqual(len(summary), 1, report)
        name, cases, failed = summary[0]
        self.assertEqual(name, group, report)
        self.assertGreater(int(cases), 0, report)  # a group that checks nothing fails
        self.assertEqual(int(failed), 0, report)


class SmtpUnits(UnitProgram, unittest.TestCase):
    source, program = "unit_smtp.c", "smtpmail"

    def test_parse_path(self):
        self.run_group("parse_path")

    def test_check_address(self):
        self.run_group("check_address")

    def test_domain_valid(self):
        self.run_group("domain_valid")

    def test_size_param(self):
        self.run_group("size_param")

    def test_scan_data(self):
        self.run_group("scan_data")

    def test_userfile(self):
        self.run_group("userfile")

    def test_accounts(self):
        self.run_group("accounts")

    def test_md5(self):
        self.run_group("md5")

    def test_hmac_md5(self):
        self.run_group("hmac_md5")

    def test_base64(self):
        self.run_group("base64")

    def test_commit(self):
        self.run_group("commit")

    def test_report(self):
        self.run_group("report")

    def test_relay_trust(self):
        self.run_group("relay_trust")

    def test_relay_hops(self):
        self.run_group("relay_hops")


class PopUnits(UnitProgram, unittest.TestCase):
    source, program = "unit_pop.c", "popserver"

    def test_top_cut(self):
        self.run_group("top_cut")

    def test_next_dot_line(self):
        self.run_group("next_dot_line")

    def test_scan_chunk(self):
        self.run_group("scan_chunk")

    def test_trace_len(self):
        self.run_group("trace_len")

    def test_uidl_window(self):
        self.run_group("uidl_window")

    def test_uidl_unique(self):
        self.run_group("uidl_unique")

    def test_parse_number(self):
        self.run_group("parse_number")

    def test_split_args(self):
        self.run_group("split_args")

    def test_mailbox(self):
        self.run_group("mailbox")

    def test_penalty_delay(self):
        self.run_group("penalty_delay")

    def test_penalty_table(self):
        self.run_group("penalty_table")

    def test_logins(self):
        self.run_group("logins")


class ClientUnits(UnitProgram, unittest.TestCase):
    source, program = "unit_client.c", "mailclient"

    def test_parse_date(self):
        self.run_group("parse_date")

    def test_zone_offset(self):
        self.run_group("zone_offset")

    def test_parse_address(self):
        self.run_group("parse_address")

    def test_char_len(self):
        self.run_group("char_len")

    def test_log_escape(self):
        self.run_group("log_escape")

    def test_piece_len(self):
        self.run_group("piece_len")

    def test_decode_words(self):
        self.run_group("decode_words")

    def test_decode_body(self):
        self.run_group("decode_body")

    def test_param_value(self):
        self.run_group("param_value")

    def test_html_to_text(self):
        self.run_group("html_to_text")

    def test_view_body(self):
        self.run_group("view_body")


if __name__ == "__main__":
    unittest.main()
