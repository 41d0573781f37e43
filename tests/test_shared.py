"""test_shared.py - the code that more than one program carries stays identical.

Each program is one self-contained .c file (the assignment hands in three
files), so code that two or three of them need is copied, not linked. Every
such copy sits between markers:

    /* >>> shared: NAME - what it is (file.c, file.c, ...) */
    ...
    /* <<< shared: NAME */

This test finds every block in smtpmail.c, popserver.c and mailclient.c and
fails, with a unified diff, when two copies of the same block differ; when a
block is missing from a file its opening line names (or present in one it
does not name); when markers do not pair up; and when two files carry their
common blocks in a different order. Change one copy, change them all.

A block that names one file only is one program's part of a shared design
(smtpmail's pool: the server block calls it through struct pool_ops, and
popserver, which is not pooled, has no copy). Such blocks are listed in
ONE_FILE, so that a block that lost its other copies by mistake still fails.
"""
import difflib
import os
import re
import unittest

from harness import ROOT

PROGRAMS = ("smtpmail.c", "popserver.c", "mailclient.c")
ONE_FILE = {"pool": "smtpmail.c"}
OPEN_RE = re.compile(r"^/\* >>> shared: (\w+) - (.*)\((.*)\) \*/$")
CLOSE_RE = re.compile(r"^/\* <<< shared: (\w+) \*/$")


def read_blocks(path):
    """{name: (text, files named in its opening line)} and the names in order."""
    blocks, order, current, lines = {}, [], None, []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            opened, closed = OPEN_RE.match(line), CLOSE_RE.match(line)
            if ">>> shared" in line and not opened:
                raise AssertionError("%s:%d: malformed opening marker" % (path, number))
            if opened:
                if current:
                    raise AssertionError("%s:%d: block %s opened inside %s"
                                         % (path, number, opened.group(1), current))
                current, lines = opened.group(1), [line]
                named = {n.strip() for n in opened.group(3).split(",")}
            elif closed:
                if closed.group(1) != current:
                    raise AssertionError("%s:%d: closes %s, but %s is open"
                                         % (path, number, closed.group(1), current))
                if current in blocks:
                    raise AssertionError("%s: block %s twice" % (path, current))
                blocks[current] = ("\n".join(lines + [line]) + "\n", named)
                order.append(current)
                current = None
            elif current:
                lines.append(line)
    if current:
        raise AssertionError("%s: block %s never closed" % (path, current))
    return blocks, order


class SharedBlocks(unittest.TestCase):
    def setUp(self):
        self.found = {}
        for prog in PROGRAMS:
            path = os.path.join(ROOT, prog)
            if os.path.exists(path):
                self.found[prog] = read_blocks(path)

    def test_blocks_exist(self):
        """The servers share at least the I/O, accounts, spool and accept loop."""
        names = set(self.found["smtpmail.c"][0]) & set(self.found["popserver.c"][0])
        for name in ("log", "conn", "accounts", "spool", "server"):
            self.assertIn(name, names)

    def test_pool_in_smtpmail_only(self):
        """The pool is smtpmail's alone: popserver forks a process per session."""
        self.assertIn("pool", self.found["smtpmail.c"][0])
        self.assertNotIn("pool", self.found["popserver.c"][0])

    def test_copies_identical(self):
        copies = {}
        for prog, (blocks, _) in self.found.items():
            for name, (text, _) in blocks.items():
                copies.setdefault(name, []).append((prog, text))
        for name, versions in copies.items():
            first_prog, first = versions[0]
            for prog, text in versions[1:]:
                with self.subTest(block=name, files=(first_prog, prog)):
                    if text != first:
                        diff = "".join(difflib.unified_diff(
                            first.splitlines(True), text.splitlines(True),
                            first_prog, prog))
                        self.fail("shared block %s differs:\n%s" % (name, diff))

    def test_each_block_where_it_says(self):
        named_in = {}
        for prog, (blocks, _) in self.found.items():
            for name, (_, named) in blocks.items():
                named_in.setdefault(name, set()).update(named)
        for name, named in named_in.items():
            for prog in self.found:
                with self.subTest(block=name, file=prog):
                    self.assertEqual(name in self.found[prog][0], prog in named,
                                     "%s names %s, but %s %s it" % (
                                         name, sorted(named), prog,
                                         "lacks" if prog in named else "has"))
            if name in ONE_FILE:
                self.assertEqual(named, {ONE_FILE[name]}, name)
            else:
                self.assertGreaterEqual(len(named), 2, "a block of one file is not shared")

    def test_same_order(self):
        """Blocks appear in the same order in every file that carries them."""
        orders = {prog: order for prog, (_, order) in self.found.items()}
        for a in orders:
            for b in orders:
                common = [n for n in orders[a] if n in orders[b]]
                with self.subTest(files=(a, b)):
                    self.assertEqual(common, [n for n in orders[b] if n in orders[a]])


if __name__ == "__main__":
    unittest.main()
