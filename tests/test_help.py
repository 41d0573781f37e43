"""test_help.py - each program's option list is one text, and README shows it.

The usage and every option of a program live in one place: help_text in its
.c file (the header comment points there). -h prints it whole on stdout;
bad usage prints its synopsis (the lines before its first blank line) on
stderr. README's copy, the indented block that starts "usage: <program>",
must be the same text, and every option letter that getopt accepts must
have a line of its own in it ("  -x ..."), so that an option added to the
code without a word in the help fails here.

To add an option: its getopt letter, its line in help_text, and the same
line in README's block. Nothing here needs to change.
"""
import os
import re
import subprocess
import time
import unittest

from harness import ROOT, SANITIZER_ENV, MailTest, Raw, binary

PROGRAMS = ("smtpmail", "popserver", "mailclient")


def readme_copy(program):
    """README's indented block that starts "usage: program", unindented."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("    usage: %s " % program)]
    if len(starts) != 1:
        raise AssertionError("README has %d copies of %s -h, not 1" % (len(starts), program))
    block = []
    for line in lines[starts[0]:]:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    while block and not block[-1]:
        block.pop()
    return "\n".join(block) + "\n"


def getopt_letters(program):
    """The option letters of the program's getopt call."""
    with open(os.path.join(ROOT, program + ".c"), encoding="utf-8") as f:
        found = re.findall(r'getopt\(argc, argv, "([^"]+)"\)', f.read())
    if len(found) != 1:
        raise AssertionError("%s.c: %d getopt calls, not 1" % (program, len(found)))
    return [c for c in found[0] if c != ":"]


def run(program, *args):
    return subprocess.run([binary(program)] + list(args), capture_output=True, text=True,
                          timeout=20, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, **SANITIZER_ENV))


class Help(unittest.TestCase):
    def test_readme_shows_what_h_prints(self):
        for program in PROGRAMS:
            with self.subTest(program=program):
                done = run(program, "-h")
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertEqual(done.stdout, readme_copy(program))

    def test_every_getopt_letter_has_its_line(self):
        for program in PROGRAMS:
            text = run(program, "-h").stdout
            letters = getopt_letters(program)
            self.assertGreater(len(letters), 2, program)
            for letter in letters:
                with self.subTest(program=program, option=letter):
                    self.assertRegex(text, r"(?m)^  -%s\b" % re.escape(letter))

    def test_bad_usage_prints_the_synopsis(self):
        for program in PROGRAMS:
            with self.subTest(program=program):
                synopsis = run(program, "-h").stdout.split("\n\n")[0] + "\n"
                self.assertTrue(synopsis.startswith("usage: %s " % program), synopsis)
                done = run(program, "-Q")
                self.assertEqual(done.returncode, 2)
                self.assertTrue(done.stderr.endswith(synopsis), done.stderr)
                self.assertEqual(done.stdout, "")


class OldPenaltyOption(MailTest):
    """popserver's wrong-password delay was -a; it is -w now, as in smtpmail.
    For one release -a still works, and the log says that it is now -w."""

    def test_a_still_sets_the_delay_and_warns(self):
        pop = self.start_pop("-a", "200")
        with Raw(pop.port) as r:
            r.line()
            r.cmd("USER alice")
            start = time.time()
            self.assertEqual(r.cmd("PASS nope"), "-ERR [AUTH] invalid user name or password")
            self.assertGreater(time.time() - start, 0.19)
            r.cmd("QUIT")
        self.assertIn("-a is now -w", pop.log())

    def test_w_warns_nothing(self):
        pop = self.start_pop("-w", "0")
        with Raw(pop.port) as r:
            r.line()
            r.cmd("QUIT")
        self.assertNotIn("-a is now -w", pop.log())


if __name__ == "__main__":
    unittest.main()
