"""The classroom kit (tools/labs.py): labs generated from the chapters hold no solution, run as
given with every check failing on the stubs only, pass with the reference solutions filled in,
and `grade` scores a planted bug at exactly the points of its check."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools import labs
from tools.toc import toc_notebooks

ROOT = Path(__file__).resolve().parents[1]

# The planted bug: soft thresholding at 2 * lam instead of lam (chapter 4).
BUGGY_LAB, BUGGY_CHECK = "lab04_l1_l2", "check_prox_l1"
CORRECT_LINE = "return np.sign(v) * np.maximum(np.abs(v) - lam, 0.0)"
BUGGY_LINE = "return np.sign(v) * np.maximum(np.abs(v) - 2 * lam, 0.0)"


def strings(node: object) -> list[str]:
    """Every string in a notebook's JSON: sources, outputs, metadata, attachments' names."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [key, *strings(value)]]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return []


def solution_blocks(notebook: Path) -> list[str]:
    """The lines (30 characters or more) of the hidden exercise solutions of a chapter."""
    found = []
    for cell in json.loads(notebook.read_text())["cells"]:
        text = "".join(cell["source"])
        lines = text.split("\n")
        for start, end in labs._fenced_blocks(text, "solution"):
            found += [line.strip() for line in lines[start + 1:end - 1]
                      if len(line.strip()) >= 30 and not line.startswith(":")]
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labs")
    labs.build(out)
    return out


def test_a_lab_for_every_chapter_of_the_toc(built):
    names = [name for name, _ in labs.chapters()]
    assert len(names) == 8 and names[0] == "lab01_what_is_pruning"
    # every chapter notebook of the book belongs to exactly one lab
    pages = [p for _, chapter in labs.chapters() for p in chapter if p.suffix == ".ipynb"]
    assert sorted(pages) == sorted(toc_notebooks())
    for name in names:
        lab = json.loads((built / f"{name}.ipynb").read_text())
        kinds = [c["metadata"].get("nbgrader", {}) for c in lab["cells"]]
        assert any(k.get("solution") for k in kinds), f"{name} has nothing to write"
        assert any(k.get("grade") and k.get("points", 0) > 0 for k in kinds), f"{name} has no check"
        # the chapter's figures travel with the prose
        assert any("attachments" in c for c in lab["cells"]), f"{name} has no figure"


def test_no_lab_contains_solution_code_or_text(built):
    chapters = dict(labs.chapters())
    for name, pages in chapters.items():
        source = json.loads((built / "course" / "source" / name / f"{name}.ipynb").read_text())
        reference = labs.reference_lines(source)
        assert len(reference) >= 3, f"{name}: too few reference lines to search for"
        lab = json.loads((built / f"{name}.ipynb").read_text())
        text = "\n".join(strings(lab))
        for line in reference:
            assert line not in text, f"{name} contains the reference line {line!r}"
        for page in pages:
            if page.suffix == ".ipynb":
                for line in solution_blocks(page):
                    assert line not in text, f"{name} contains exercise solution text {line!r}"
        assert "{solution}" not in text and labs.BEGIN not in text
        # no chapter metadata (where a solution could hide) and no stored output of a lab cell
        for cell in lab["cells"]:
            assert set(cell["metadata"]) <= {"nbgrader", "deletable", "editable"}, cell["metadata"]
            assert not cell.get("outputs")


def test_markdown_drops_solutions_and_keeps_exercises():
    text = ("Intro\n\n```{exercise}\n:label: ex-1\nPrune it.\n```\n\n"
            "````{solution} ex-1\n:class: dropdown\nThe answer.\n```python\nx = 1\n```\n````\nEnd")
    shown = labs.student_markdown(text)
    assert "The answer" not in shown and "x = 1" not in shown
    assert "> **Exercise.** Prune it." in shown and shown.endswith("End")
    # MyST that Jupyter would show raw: boxes become quotes, roles plain text
    shown = labs.student_markdown(
        "As {cite}`han2015learning` ({glue:text}`acc`, {doc}`/book/errata`).\n\n"
        "```{admonition} Errata\n:class: warning\n1. A claim.\n```")
    assert shown == ("As [han2015learning] (*(value in the book)*, `/book/errata`).\n\n"
                     "> **Errata**\n>\n> 1. A claim.")


def test_solution_markers_and_bad_markings():
    source = 'def f(x):\n    """Double x."""\n    # by hand\n    return 2 * x\n\n\nprint(f(1))'
    marked = labs.solution_source(source, ["f"]).split("\n")
    assert marked[2] == "    " + labs.BEGIN and marked[5] == "    " + labs.END
    assert marked[6:] == ["", "", "print(f(1))"]
    with pytest.raises(ValueError, match="docstring"):
        labs.solution_source("def g(x):\n    return x", ["g"])
    with pytest.raises(ValueError, match="'h' is not a function"):
        labs.solution_source(source, ["h"])


def test_grade_rejects_bad_submissions(tmp_path):
    with pytest.raises(ValueError, match="SUBMISSIONS must be a folder"):
        labs.grade(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "ann").mkdir()
    with pytest.raises(ValueError, match="no <student>/<lab>.ipynb"):
        labs.grade(tmp_path, tmp_path / "out")
    (tmp_path / "ann" / "lab99_nothing.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="'lab99_nothing' is not a lab"):
        labs.grade(tmp_path, tmp_path / "out")


def filled_in(release: dict, source: dict) -> dict:
    """A release lab with the reference solutions pasted into its solution cells."""
    reference = {c["metadata"]["nbgrader"]["grade_id"]: c["source"] for c in source["cells"]
                 if c["metadata"].get("nbgrader", {}).get("solution")}
    for cell in release["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in reference:
            code = "".join(reference[grade_id])
            cell["source"] = re.sub(rf"\s*{labs.BEGIN}|\s*{labs.END}", "", code)
    return release


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory) -> tuple[Path, list[dict]]:
    """Four made-up students graded with `python -m tools.labs grade` (what `make grade` runs):
    `given` hands in the labs untouched, `ada` the reference solutions, `bob` the reference
    solutions with one planted bug, `eve` the untouched labs with every check replaced by
    `pass`."""
    submissions = tmp_path_factory.mktemp("submissions")
    for name, _ in labs.chapters():
        release = (built / f"{name}.ipynb").read_text()
        source = json.loads((built / "course" / "source" / name / f"{name}.ipynb").read_text())
        correct = json.dumps(filled_in(json.loads(release), source))
        buggy = correct.replace(CORRECT_LINE, BUGGY_LINE)
        assert (buggy != correct) == (name == BUGGY_LAB)
        tampered = json.loads(release)
        for cell in tampered["cells"]:
            if cell["metadata"].get("nbgrader", {}).get("grade"):
                cell["source"] = "pass"
        for student, text in [("given", release), ("ada", correct), ("bob", buggy),
                              ("eve", json.dumps(tampered))]:
            (submissions / student).mkdir(exist_ok=True)
            (submissions / student / f"{name}.ipynb").write_text(text)
    out = tmp_path_factory.mktemp("grades")
    run = subprocess.run([sys.executable, "-m", "tools.labs", "grade",
                          str(submissions), str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "per check:" in run.stdout
    with (out / "grades.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return out, rows


def test_labs_as_given_fail_every_check_at_the_stubs_only(graded):
    out, rows = graded
    given = [r for r in rows if r["student"] == "given"]
    assert {r["lab"] for r in given} == {name for name, _ in labs.chapters()}
    assert given and all(float(r["points"]) == 0 for r in given)
    for notebook in (out / "course" / "autograded" / "given").glob("*/*.ipynb"):
        for cell in json.loads(notebook.read_text())["cells"]:
            errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
            meta = cell["metadata"].get("nbgrader", {})
            if meta.get("grade"):
                # the check fails because the student's function is still a stub
                assert [e["ename"] for e in errors] == ["NotImplementedError"], (
                    notebook.name, meta["grade_id"], [e["ename"] for e in errors])
            else:
                assert not errors, (notebook.name, meta.get("grade_id"), errors)


def test_reference_solutions_pass_every_check(graded):
    out, rows = graded
    ada = [r for r in rows if r["student"] == "ada"]
    assert len(ada) == len([r for r in rows if r["student"] == "given"])
    failed = [(r["lab"], r["check"]) for r in ada if float(r["points"]) != float(r["max_points"])]
    assert not failed, failed
    for notebook in (out / "course" / "autograded" / "ada").glob("*/*.ipynb"):
        for cell in json.loads(notebook.read_text())["cells"]:
            assert not [o for o in cell.get("outputs", []) if o["output_type"] == "error"]


def test_a_planted_bug_loses_exactly_its_checks_points(graded):
    out, rows = graded
    points = {(r["student"], r["lab"], r["check"]): (float(r["points"]), float(r["max_points"]))
              for r in rows}
    lost = {(lab, check): full - got for (student, lab, check), (got, full) in points.items()
            if student == "bob" and got != full}
    assert lost == {(BUGGY_LAB, BUGGY_CHECK): points[("ada", BUGGY_LAB, BUGGY_CHECK)][1]}
    with (out / "summary.csv").open() as handle:
        summary = {(r["student"], r["lab"]): float(r["points"]) for r in csv.DictReader(handle)}
    total = {s: sum(v for (who, _), v in summary.items() if who == s) for s in ("ada", "bob")}
    assert total["ada"] - total["bob"] == lost[(BUGGY_LAB, BUGGY_CHECK)] == 1


def test_an_edited_check_does_not_change_the_grade(graded):
    # grading restores the course's check cells: eve's `pass` earns nothing
    out, rows = graded
    eve = {(r["lab"], r["check"]): float(r["points"]) for r in rows if r["student"] == "eve"}
    given = {(r["lab"], r["check"]): float(r["points"]) for r in rows if r["student"] == "given"}
    assert eve == given and set(eve.values()) == {0.0}

