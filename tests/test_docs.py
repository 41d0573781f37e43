"""test_docs.py - every citation of the documents resolves.

Code and tests cite the design and the README by heading:
`DESIGN.md "Locking"`, `README "Accounts"` (a heading "Accounts: user.txt"
counts: the cited words, then a colon). A citation may be wrapped across
comment lines. Each must name a heading that exists, so that a reader who
follows it finds the place, and a heading renamed breaks this test.
"""
import os
import re
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = (".c", ".h", ".py", ".sh")
CITATION = re.compile(r'(DESIGN\.md|README(?:\.md)?),?\s+"([^"]+)"')
# What continues a comment on the next line: " * " (C), "# " (Python, sh).
CONTINUATION = re.compile(r"\n\s*(?:\*(?!/)|#)?\s*")


def headings(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        return [m.group(1).strip() for m in re.finditer(r"(?m)^#+\s+(.*)$", f.read())]


def sources():
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "__pycache__")]
        for name in files:
            if name.endswith(SOURCES) or name == "Makefile":
                yield os.path.join(top, name)


class Citations(unittest.TestCase):
    def test_every_citation_names_a_heading(self):
        known = {"DESIGN.md": headings("DESIGN.md"), "README.md": headings("README.md")}
        found, bad = 0, []
        for path in sources():
            with open(path, encoding="utf-8", errors="replace") as f:
                text = CONTINUATION.sub(" ", f.read())
            for m in CITATION.finditer(text):
                doc = "DESIGN.md" if m.group(1).startswith("DESIGN") else "README.md"
                cited = " ".join(m.group(2).split())
                found += 1
                if not any(h == cited or h.startswith(cited + ":") for h in known[doc]):
                    bad.append("%s: %s %r" % (os.path.relpath(path, ROOT), doc, cited))
        self.assertGreater(found, 30)       # the scan found the citations at all
        self.assertEqual(bad, [], "citations that name no heading")


if __name__ == "__main__":
    unittest.main()
