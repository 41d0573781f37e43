"""test_docs.py - every citation of the documents resolves.

Code and tests cite the design and the READMEs by heading:
`DESIGN.md "Locking"`, `README "Accounts"` (a heading "Accounts: user.txt"
counts: the cited words, then a colon), `tests/README.md "Performance"`. A
citation may be wrapped across comment lines. Each must name a heading that
exists, so that a reader who follows it finds the place, and a heading
renamed breaks this test. A citation in any other form (the document, then
a comma or a colon and a name not in quotes, or a step number) is one this
test could not follow, and fails too; so do citations of what a clone does
not have (the course's style notes, issue numbers).
"""
import os
import re
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = (".c", ".h", ".py", ".sh")
DOCS = "(tests/README\\.md|DESIGN\\.md|(?<![\\w/.])README(?:\\.md)?)"
CITATION = re.compile(DOCS + r',?\s+"([^"]+)"')
# A document named, then not a quoted heading but something that looks like
# a section's name: a capital, a parenthesis, or a step number.
LOOSE = re.compile(DOCS + r'(?:[,:]\s*|\s+)(?=[A-Z(]|step\b)')
ELSEWHERE = re.compile(r"STYLE\.md|\b[Ii]ssues? \d+|\bissue #\d+")
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
        known = {doc: headings(doc) for doc in ("DESIGN.md", "README.md", "tests/README.md")}
        found, bad = 0, []
        for path in sources():
            with open(path, encoding="utf-8", errors="replace") as f:
                text = CONTINUATION.sub(" ", f.read())
            for m in CITATION.finditer(text):
                doc = m.group(1) if m.group(1) != "README" else "README.md"
                cited = " ".join(m.group(2).split())
                found += 1
                if not any(h == cited or h.startswith(cited + ":") for h in known[doc]):
                    bad.append("%s: %s %r" % (os.path.relpath(path, ROOT), doc, cited))
        self.assertGreater(found, 30)       # the scan found the citations at all
        self.assertEqual(bad, [], "citations that name no heading")

    def test_citations_in_the_one_form(self):
        loose = []
        for path in sources():
            with open(path, encoding="utf-8", errors="replace") as f:
                text = CONTINUATION.sub(" ", f.read())
            for m in LOOSE.finditer(text):
                loose.append("%s: %s" % (os.path.relpath(path, ROOT),
                                         text[m.start():m.start() + 50]))
        self.assertEqual(loose, [], 'cite a heading by its name in double quotes')

    def test_nothing_cited_that_a_clone_lacks(self):
        found = []
        for path in list(sources()) + [os.path.join(ROOT, d) for d in
                                       ("README.md", "DESIGN.md", "tests/README.md",
                                        "tests/GRADING.md")]:
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if ELSEWHERE.search(line) and os.path.basename(path) != "test_docs.py":
                        found.append("%s:%d: %s" % (os.path.relpath(path, ROOT), number,
                                                    line.strip()[:80]))
        self.assertEqual(found, [], "STYLE.md and issue numbers are not in the repository")


if __name__ == "__main__":
    unittest.main()
