"""The student edition of the book (tools/student_edition.py): every page of the book, the lab
functions as stubs, no exercise solution, and none of the labs' reference lines anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import labs, student_edition

ROOT = Path(__file__).resolve().parents[1]


def reference_lines() -> list[str]:
    """The statements of every lab function's body, as the labs' test searches for them."""
    cells = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            lab = cell["metadata"].get("lab")
            if isinstance(lab, dict) and "solution" in lab:
                cells.append({"source": labs.solution_source("".join(cell["source"]),
                                                             lab["solution"])})
    return labs.reference_lines({"cells": cells})


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("student")
    student_edition.write(folder)
    return folder


def test_the_edition_has_every_page_and_no_answer(edition):
    originals = sorted(p.relative_to(ROOT) for p in [*(ROOT / "notebooks").glob("*.ipynb"),
                                                     *(ROOT / "book").glob("*.md")])
    copies = sorted(p.relative_to(edition) for p in [*(edition / "notebooks").glob("*.ipynb"),
                                                     *(edition / "book").glob("*.md")])
    assert copies == originals
    text = "\n".join(p.read_text(errors="replace") for p in edition.rglob("*") if p.is_file())
    lines = reference_lines()
    assert len(lines) >= 20
    for line in lines:
        assert line not in text, f"the student edition contains the reference line {line!r}"
    assert "{solution}" not in text
    original = "\n".join(p.read_text() for p in ROOT.glob("*/*.*")
                         if p.suffix in (".md", ".ipynb") and p.parent.name in ("book", "notebooks"))
    assert text.count("{exercise}") == original.count("{exercise}") > 20
    functions = [name for p in (ROOT / "notebooks").glob("*.ipynb")
                 for c in json.loads(p.read_text())["cells"]
                 if isinstance(c["metadata"].get("lab"), dict) and "solution" in c["metadata"]["lab"]
                 for name in c["metadata"]["lab"]["solution"]]
    assert text.count(student_edition.STUB) == len(functions) >= 10
    # the teaching guide's notes for the teacher are left out, the rest of the guide is kept
    guide = (ROOT / "book" / "teaching.md").read_text()
    assert guide.count(":class: dropdown teacher") >= 9
    copy = (edition / "book" / "teaching.md").read_text()
    assert "teacher" not in "".join(line for line in copy.split("\n") if line.startswith(":class:"))
    assert "## Discussion questions" in copy and "What to listen for" not in copy
    assert "(student edition)" in (edition / "_config.yml").read_text()
    assert "student edition" in (edition / "book" / "intro.md").read_text()


def test_teacher_notes_and_solutions_are_removed_and_the_rest_kept():
    text = ("Q1. Why?\n\n```{admonition} What to listen for\n:class: dropdown teacher\nBecause.\n```\n"
            "\n```{admonition} Errata\n:class: warning\nA claim.\n```\n\n"
            "````{solution} ex-1\n:class: dropdown\nThe answer.\n````\nEnd")
    assert student_edition.without_solutions(text) == (
        "Q1. Why?\n\n\n```{admonition} Errata\n:class: warning\nA claim.\n```\n\nEnd")


def test_a_stub_keeps_the_signature_and_docstring():
    source = 'def f(x):\n    """Double x."""\n    # by hand\n    return 2 * x\n\n\nprint(f(1))'
    assert student_edition.stub_source(source, ["f"]).split("\n") == [
        "def f(x):", '    """Double x."""', "    " + student_edition.STUB, "", "", "print(f(1))"]
    with pytest.raises(ValueError, match="docstring"):
        student_edition.stub_source("def g(x):\n    return x", ["g"])
    with pytest.raises(ValueError, match="'h' is not a function"):
        student_edition.stub_source(source, ["h"])
