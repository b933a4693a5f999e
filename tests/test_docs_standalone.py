"""The repository stands alone: nothing cites a file outside it, no issue numbers, no work-round wording.

Conventions are stated in docs/REFERENCE.md and cited there by section; its section anchors exist.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what is checked: the package, docs, tests, notebooks, benchmarks and the top-level files
FOLDERS = ("sam3dlib", "docs", "tests", "notebooks", "benchmarks", ".ci", ".github")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml", "environment.yml")
SUFFIXES = {".py", ".md", ".json", ".csv", ".ipynb", ".toml", ".yml", ".yaml", ".cfg", ".txt", ""}

# spelled in pieces so that this file does not match itself
OUTSIDE = [re.compile(p) for p in (
    r"shared" + r"/(reference|paper)", r"\.\./" + r"paper", r"SAM3D-" + r"paper\.txt", r"\bevaluation" + r"\.md\b",
    r"/work" + r"/(main|wt|shared)",
)]
ISSUE = re.compile(r"\bissue\s+#?\d+", re.IGNORECASE)
#: an issue of another public repository is a source: ``owner/repo ... issue #N`` on the same line
OTHER_REPO = re.compile(r"\b[\w.-]+/[\w.-]+\b[^\n]*\bissue\s+#\d+", re.IGNORECASE)
ROUND = re.compile(r"\b(first|second|third|fourth|fifth|this|next|last|earlier|previous|later) " + r"round\b"
                   r"|\bthis " + r"session\b", re.IGNORECASE)


def repo_files() -> list[Path]:
    files = [ROOT / f for f in TOP_FILES if (ROOT / f).is_file()]
    for folder in FOLDERS:
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES
                  and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts]
    return sorted(files)


def offences(text: str) -> list[str]:
    """Each line of ``text`` that cites an outside file, an issue number or a work round."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        if any(p.search(line) for p in OUTSIDE):
            found.append(f"{n}: outside file: {line.strip()[:120]}")
        if ISSUE.search(line) and not OTHER_REPO.search(line):
            found.append(f"{n}: issue number: {line.strip()[:120]}")
        if ROUND.search(line):
            found.append(f"{n}: round wording: {line.strip()[:120]}")
    return found


@pytest.mark.parametrize("text, bad", [
    ("see " + "shared" + "/reference/evaluation" + ".md section 2", True),
    ("Paper = ../" + "paper/SAM3D-" + "paper.txt", True),
    ("(issue " + "12 item 3)", True),
    ("the third " + "round reaches it", True),
    ("MIC-DKFZ/nnUNet " + "issue #113 quotes the plans", False),
    ("docs/REFERENCE.md, \"Evaluation\"; rounded to 3 decimals, background", False),
])
def test_the_checker_finds_what_it_should(text, bad):
    assert bool(offences(text)) is bad


def test_nothing_cites_a_file_outside_the_repository_or_an_issue():
    files = repo_files()
    assert len(files) > 100 and ROOT / "docs" / "REFERENCE.md" in files
    problems = {str(p.relative_to(ROOT)): found for p in files
                if (found := offences(p.read_text(encoding="utf-8", errors="replace")))}
    assert problems == {}


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_reference_sections_cited_in_the_repository_exist():
    reference = (ROOT / "docs" / "REFERENCE.md").read_text()
    headings = {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", reference, re.MULTILINE)}
    anchors = {_anchor(h) for h in headings}
    for link in re.findall(r"\]\(#([\w-]+)\)", reference):
        assert link in anchors, f"docs/REFERENCE.md links to a missing section #{link}"
    cited = {}
    for path in repo_files():
        for section in re.findall(r"REFERENCE\.md[,:]? \\?\"([^\"\\]+)\\?\"", path.read_text(errors="replace")):
            cited.setdefault(section, str(path.relative_to(ROOT)))
    assert cited, "nothing cites docs/REFERENCE.md by section"
    missing = {s: where for s, where in cited.items() if s not in headings}
    assert missing == {}, f"sections cited but not in docs/REFERENCE.md: {missing}"
