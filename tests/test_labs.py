"""The classroom kit (tools/labs.py, tools/grading.py): labs generated from the chapters hold no
solution and no hidden test, run as given with every check failing on the stubs only, pass with
the reference solutions filled in; `grade` scores a planted bug at exactly the points of its
check, grades a class with every kind of bad file a class hands in (a row with a reason for
each, and grading goes on), holds a submission's escape attempts in its sandbox, and takes their
points from two quiet bugs through the hidden tests."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tools import grading, labs
from tools.toc import toc_notebooks

ROOT = Path(__file__).resolve().parents[1]

# The planted bug: soft thresholding at 2 * lam instead of lam (chapter 4).
BUGGY_LAB, BUGGY_CHECK = "lab04_l1_l2", "check_prox_l1"
CORRECT_LINE = "return np.sign(v) * np.maximum(np.abs(v) - lam, 0.0)"
BUGGY_LINE = "return np.sign(v) * np.maximum(np.abs(v) - 2 * lam, 0.0)"
# The labs in which a student replaces every check with `pass`.
EDITED_LABS = ("lab02_magnitude_pruning", "lab06_rnn_math")


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
        for start, end in labs.fenced_blocks(text, "solution"):
            found += [line.strip() for line in lines[start + 1:end - 1]
                      if len(line.strip()) >= 30 and not line.startswith(":")]
    return found


def hidden_lines(source_notebook: dict) -> list[str]:
    """The lines (20 characters or more) of the hidden tests in a lab's course source."""
    found = []
    for cell in source_notebook["cells"]:
        text = "".join(cell["source"])
        if labs.HIDDEN_BEGIN in text:
            block = text.split(labs.HIDDEN_BEGIN, 1)[1].split(labs.HIDDEN_END, 1)[0]
            found += [line.strip() for line in block.split("\n") if len(line.strip()) >= 20]
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The handout folder of `make labs`; its teacher's course is `teacher(built)`."""
    out = tmp_path_factory.mktemp("labs") / "handout"
    labs.build(out)
    return out


def teacher(built: Path) -> Path:
    return labs.teacher_folder(built)


def test_the_handout_holds_the_labs_and_nothing_else(built):
    names = {f"{name}.ipynb" for name, _ in labs.chapters()}
    assert {p.name for p in built.iterdir()} == names
    assert (teacher(built) / "source").is_dir() and not teacher(built).is_relative_to(built)


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
        source = json.loads((teacher(built) / "source" / name / f"{name}.ipynb").read_text())
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
        # nor the hidden tests, which the teacher's course has
        hidden = hidden_lines(source)
        assert labs.HIDDEN_BEGIN not in text
        for line in hidden:
            assert line not in text, f"{name} contains the hidden test line {line!r}"
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
    # a hint stays folded until the student opens it
    shown = labs.student_markdown("```{admonition} Hint\n:class: dropdown\nRows gate * H.\n```")
    assert shown == "<details><summary>Hint</summary>\n\nRows gate * H.\n\n</details>"


def test_solution_markers_and_bad_markings():
    source = 'def f(x):\n    """Double x."""\n    # by hand\n    return 2 * x\n\n\nprint(f(1))'
    marked = labs.solution_source(source, ["f"]).split("\n")
    assert marked[2] == "    " + labs.BEGIN and marked[5] == "    " + labs.END
    assert marked[6:] == ["", "", "print(f(1))"]
    with pytest.raises(ValueError, match="docstring"):
        labs.solution_source("def g(x):\n    return x", ["g"])
    with pytest.raises(ValueError, match="'h' is not a function"):
        labs.solution_source(source, ["h"])


def test_grade_refuses_a_submissions_path_that_is_no_folder(tmp_path):
    with pytest.raises(ValueError, match="SUBMISSIONS must be a folder"):
        grading.grade(tmp_path / "missing", tmp_path / "out")


def test_every_check_with_hidden_tests_is_in_a_lab(built):
    sources = "\n".join(
        (teacher(built) / "source" / name / f"{name}.ipynb").read_text()
        for name, _ in labs.chapters())
    files = sorted(labs.HIDDEN.glob("check_*.py"))
    assert len(files) >= 4
    for path in files:
        assert f'"grade_id": "{path.stem}"' in sources, f"{path.name}: no check of that id"


def test_flags_name_what_the_teacher_should_read():
    import nbformat

    def solution(code):
        cell = nbformat.v4.new_code_cell(code)
        cell.metadata["nbgrader"] = {"grade_id": "f", "solution": True}
        return nbformat.v4.new_notebook(cells=[cell])

    honest = "def f(scores, s):\n    k = round(s * scores.numel())\n    return scores > k"
    assert grading.flags(solution(honest)) == []
    assert grading.flags(solution("def f(w, s):\n    return prune.compute_masks({'w': w}, s)")) \
        == ["f: uses prune.compute_masks (nlprune)"]
    assert grading.flags(solution("prune.nm_masks = lambda *a: a")) == [
        "f: assigns prune.nm_masks"]
    assert grading.flags(solution("import sys\nsys.modules['x'] = 1")) == [
        "f: imports sys", "f: uses sys"]
    # a local that shares a module's name is the function's own; at the top of the cell it is not
    local = "def f(params):\n    scores = {}\n    scores.update(params)\n    return scores"
    assert grading.flags(solution(local)) == []
    assert grading.flags(solution("scores = None")) == ["f: rebinds scores"]


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


def replaced(notebook: dict, grade_id: str, old: str, new: str) -> dict:
    """``notebook`` with ``old`` replaced by ``new`` in the cell ``grade_id`` (once, exactly)."""
    notebook = json.loads(json.dumps(notebook))
    for cell in notebook["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
            code = "".join(cell["source"])
            assert code.count(old) == 1, (grade_id, old)
            cell["source"] = code.replace(old, new)
            return notebook
    raise AssertionError(f"no cell {grade_id}")


# Escape attempts, in a solution cell that is otherwise correct: read a classmate's folder and
# the course (with the solutions), write the gradebook, and start a process that would rewrite
# the grades after grading.
ESCAPE = """import glob, subprocess
print("seen:", glob.glob(SUBMISSIONS + "/ada/*") + glob.glob(OUT + "/course/source/*"))
for _path in (OUT + "/course/gradebook.db", SUBMISSIONS + "/ada/lab02_magnitude_pruning.ipynb"):
    try:
        open(_path, "a").write("0")
        print("wrote", _path)
    except OSError as _error:
        print("refused:", type(_error).__name__)
subprocess.Popen(["sh", "-c", "sleep 2; echo mallory,2 > " + OUT + "/summary.csv; "
                  "echo escaped > " + OUT + "/escaped"])
"""


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory) -> tuple[Path, list[dict], list[dict], Path]:
    """A class graded with `python -m tools.labs grade` (what `make grade` runs): `given` hands
    in every lab untouched, `ada` every lab with the reference solutions, `bob` lab 4 with the
    reference solutions and one planted bug, `eve` two untouched labs with every check replaced
    by `pass`; the others hand in one lab each, each with one of the troubles a class brings
    (see the tests); `zoe`, on the roster, hands in nothing. (bob and eve hand in one and two
    labs, not all eight: each graded lab is a kernel started in a sandbox, some 8 s.)"""
    submissions = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("grades")
    good = {}
    for name, _ in labs.chapters():
        release = (built / f"{name}.ipynb").read_text()
        source = json.loads((teacher(built) / "source" / name / f"{name}.ipynb").read_text())
        good[name] = filled_in(json.loads(release), source)
        correct = json.dumps(good[name])
        buggy = correct.replace(json.dumps(CORRECT_LINE)[1:-1], json.dumps(BUGGY_LINE)[1:-1])
        assert (buggy != correct) == (name == BUGGY_LAB)
        tampered = json.loads(release)
        for cell in tampered["cells"]:
            if cell["metadata"].get("nbgrader", {}).get("grade"):
                cell["source"] = "pass"
        handed_in = [("given", release), ("ada", correct)]
        if name == BUGGY_LAB:
            handed_in.append(("bob", buggy))
        if name in EDITED_LABS:
            handed_in.append(("eve", json.dumps(tampered)))
        for student, text in handed_in:
            (submissions / student).mkdir(exist_ok=True)
            (submissions / student / f"{name}.ipynb").write_text(text)
    lab1, lab2, lab8 = "lab01_what_is_pruning", "lab02_magnitude_pruning", "lab08_beyond"
    pasted = json.loads(json.dumps(good[lab2]))
    at = next(i for i, c in enumerate(pasted["cells"])
              if c["metadata"].get("nbgrader", {}).get("grade_id") == "threshold")
    pasted["cells"].insert(at, json.loads(json.dumps(pasted["cells"][at])))
    fake = json.loads(json.dumps(good[lab2]))
    fake["cells"].append({"cell_type": "code", "id": "bonus", "execution_count": None,
                          "outputs": [], "source": "print('ten free points')", "metadata": {
                              "nbgrader": {"grade": True, "grade_id": "bonus", "points": 10,
                                           "locked": False, "solution": False,
                                           "schema_version": 3}}})
    deleted = json.loads(json.dumps(good[lab2]))
    deleted["cells"] = [c for c in deleted["cells"]
                        if not c["metadata"].get("nbgrader", {}).get("grade")]
    escape = ESCAPE.replace("SUBMISSIONS", repr(str(submissions))).replace("OUT", repr(str(out)))
    troubles = {
        ("empty", lab2): "",
        ("malformed", lab2): json.dumps(good[lab2])[:5000],
        ("not_a_notebook", lab2): json.dumps({"cells": "none"}),
        ("crash", lab2): json.dumps(replaced(good[lab2], "threshold", "    k = round(s * w",
                                             "    import os; os._exit(3)\n    k = round(s * w")),
        ("pasted", lab2): json.dumps(pasted),
        ("fake", lab2): json.dumps(fake),
        ("deleted", lab2): json.dumps(deleted),
        ("copied", f"{lab2} (1)"): json.dumps(good[lab2]),
        ("stray", "holiday_photos"): json.dumps(good[lab2]),
        ("mallory", lab2): json.dumps(replaced(good[lab2], "threshold", "def threshold(",
                                               escape + "\n\ndef threshold(")),
        # the two quiet bugs: int() for round(), and the largest |w| as threshold when k = 0
        ("truncates", lab1): json.dumps(replaced(
            good[lab1], "magnitude_mask", "k = round(sparsity * s", "k = int(sparsity * s")),
        ("no_k0", lab2): json.dumps(replaced(replaced(
            good[lab2], "threshold", 'if k == 0:\n        return float("-inf")',
            "if False:\n        pass"),
            "threshold", "w.abs().flatten().kthvalue(k).values.item()",
            "sorted(w.abs().flatten().tolist())[k - 1]")),
        # a cheat the checks cannot see, but the flags do
        ("copycat", lab8): json.dumps(replaced(
            good[lab8], "nm_mask", '"""\n',
            '"""\n    return prune.nm_masks({"w": scores}, n, m)["w"]\n')),
    }
    for (student, lab), text in troubles.items():
        (submissions / student).mkdir(exist_ok=True)
        (submissions / student / f"{lab}.ipynb").write_text(text)
    roster = tmp_path_factory.mktemp("roster") / "roster.txt"
    roster.write_text("# the class\nzoe\nada\n")
    # ada handed lab 1 in on time (a time stamp beside the file); every other file, written in
    # the last minutes, is an hour late
    due = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(timespec="seconds")
    on_time = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat(timespec="seconds")
    (submissions / "ada" / "lab01_what_is_pruning.timestamp.txt").write_text(on_time)
    run = subprocess.run([sys.executable, "-m", "tools.labs", "grade", str(submissions),
                          str(out), "--roster", str(roster), "--due", due],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "per check:" in run.stdout
    time.sleep(4)  # time for mallory's background process, had it survived, to do its work
    with (out / "grades.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    with (out / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    return out, rows, summary, submissions


def test_labs_as_given_fail_every_check_at_the_stubs_only(graded):
    out, rows, _, _ = graded
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
    out, rows, _, _ = graded
    ada = [r for r in rows if r["student"] == "ada"]
    assert len(ada) == len([r for r in rows if r["student"] == "given"])
    failed = [(r["lab"], r["check"]) for r in ada if float(r["points"]) != float(r["max_points"])]
    assert not failed, failed
    for notebook in (out / "course" / "autograded" / "ada").glob("*/*.ipynb"):
        for cell in json.loads(notebook.read_text())["cells"]:
            assert not [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
            # the hidden tests ran, and passed
            if labs.HIDDEN_BEGIN in "".join(cell["source"]):
                assert "hidden checks of" in "".join(
                    "".join(o.get("text", "")) for o in cell["outputs"])


def test_a_planted_bug_loses_exactly_its_checks_points(graded):
    out, rows, _, _ = graded
    points = {(r["student"], r["lab"], r["check"]): (float(r["points"]), float(r["max_points"]))
              for r in rows}
    lost = {(lab, check): full - got for (student, lab, check), (got, full) in points.items()
            if student == "bob" and got != full}
    assert lost == {(BUGGY_LAB, BUGGY_CHECK): points[("ada", BUGGY_LAB, BUGGY_CHECK)][1]}
    with (out / "summary.csv").open() as handle:
        summary = {(r["student"], r["lab"]): float(r["points"]) for r in csv.DictReader(handle)}
    assert summary[("ada", BUGGY_LAB)] - summary[("bob", BUGGY_LAB)] == lost[
        (BUGGY_LAB, BUGGY_CHECK)] == 1
    assert {lab for (who, lab, _) in points if who == "bob"} == {BUGGY_LAB}


def test_an_edited_check_does_not_change_the_grade(graded):
    # grading restores the course's check cells: eve's `pass` earns nothing, and the row says so
    out, rows, summary, _ = graded
    eve = {(r["lab"], r["check"]): float(r["points"]) for r in rows if r["student"] == "eve"}
    given = {(r["lab"], r["check"]): float(r["points"]) for r in rows if r["student"] == "given"}
    assert {lab for lab, _ in eve} == set(EDITED_LABS)
    assert eve == {key: value for key, value in given.items() if key[0] in EDITED_LABS}
    assert set(eve.values()) == {0.0}
    for row in summary:
        if row["student"] == "eve" and row["status"] == "graded":
            assert "was edited: graded with the course's own copy" in row["warnings"], row


def row_of(summary: list[dict], student: str, lab: str = "lab02_magnitude_pruning") -> dict:
    found = [r for r in summary if r["student"] == student and r["lab"] == lab]
    assert len(found) == 1, (student, lab, found)
    return found[0]


def test_the_summary_is_the_whole_roster_by_every_lab(graded):
    _, _, summary, _ = graded
    names = {name for name, _ in labs.chapters()}
    students = {r["student"] for r in summary}
    assert "zoe" in students and "stray" in students
    for student in students:
        assert names <= {r["lab"] for r in summary if r["student"] == student}, student
    assert row_of(summary, "zoe")["status"] == "missing"
    assert row_of(summary, "zoe")["max_points"] == row_of(summary, "ada")["max_points"] == "2.0"
    assert row_of(summary, "given", "lab01_what_is_pruning")["status"] == "graded"


def test_a_bad_file_gives_its_row_a_reason_and_grading_goes_on(graded):
    _, _, summary, _ = graded
    expected = {
        "empty": ("error", "empty file"),
        "malformed": ("error", "not a notebook (not JSON"),
        "not_a_notebook": ("error", "not a valid notebook"),
        "crash": ("error", "Kernel died"),
    }
    for student, (status, reason) in expected.items():
        row = row_of(summary, student)
        assert row["status"] == status and reason in row["reason"], row
        assert float(row["points"]) == 0
    stray = row_of(summary, "stray", "holiday_photos")
    assert stray["status"] == "not a lab" and "lab02_magnitude_pruning" in stray["reason"]


def test_copies_fakes_and_deletions_are_graded_and_reported(graded):
    _, _, summary, _ = graded
    full = row_of(summary, "ada")["points"]
    expected = {
        "copied": "",
        "pasted": "is a copy of cell 'threshold' (pasted twice?)",
        "fake": "carries grading marks of 'bonus', which is not a cell of this lab",
        "deleted": "Missing grade cell check_threshold encountered, adding to notebook",
    }
    for student, warning in expected.items():
        row = row_of(summary, student)
        assert row["status"] == "graded" and row["points"] == full == "2.0", row
        assert warning in row["warnings"], row
        assert row["max_points"] == "2.0"


def test_the_sandbox_holds(graded):
    out, rows, summary, submissions = graded
    mallory = row_of(summary, "mallory")
    assert mallory["status"] == "graded" and mallory["points"] == "2.0"
    assert "threshold: uses subprocess" in mallory["flags"]
    notebook = out / "course" / "autograded" / "mallory" / "lab02_magnitude_pruning" / \
        "lab02_magnitude_pruning.ipynb"
    printed = "".join("".join(o.get("text", "")) for cell in json.loads(notebook.read_text())[
        "cells"] for o in cell.get("outputs", []))
    assert "seen: []" in printed  # neither the classmate's folder nor the course
    assert printed.count("refused:") == 2 and "wrote" not in printed
    assert not (out / "escaped").exists()  # the background process died with the grading
    assert "mallory,2" not in (out / "summary.csv").read_text()
    # the classmate's file is as ada handed it in (an appended "0" would break its JSON)
    json.loads((submissions / "ada" / "lab02_magnitude_pruning.ipynb").read_text())


def test_the_quiet_bugs_lose_their_points_and_the_cheat_is_flagged(graded):
    _, rows, summary, _ = graded
    points = {(r["student"], r["check"]): float(r["points"]) for r in rows}
    assert points[("truncates", "check_magnitude_mask")] == 0  # hidden: 0.7 of 5 prunes 4
    assert points[("truncates", "check_lstm_params")] == 1  # the lab's other check still counts
    assert points[("no_k0", "check_threshold")] == 0  # hidden: sparsity 0 prunes nothing
    copycat = row_of(summary, "copycat", "lab08_beyond")
    assert copycat["points"] == copycat["max_points"]  # the checks cannot see it ...
    assert "nm_mask: uses prune.nm_masks (nlprune)" in copycat["flags"]  # ... the flags do


def test_lateness_and_feedback_are_reported(graded):
    out, _, summary, submissions = graded
    on_time = row_of(summary, "ada", "lab01_what_is_pruning")
    stamp = (submissions / "ada" / "lab01_what_is_pruning.timestamp.txt").read_text()
    assert on_time["late"] == "" and on_time["submitted"] == stamp
    late = row_of(summary, "ada")
    assert re.fullmatch(r"1 h [0-9] min late|59 min \d+ s late", late["late"]), late
    assert row_of(summary, "zoe")["late"] == ""  # nothing handed in, nothing late
    # a feedback page for every graded row, with the check's own message, and nothing to fetch
    for row in summary:
        assert bool(row["feedback"]) == (row["status"] == "graded"), row
    page = (out / row_of(summary, "no_k0")["feedback"]).read_text()
    assert "hidden check: threshold(w, 0.000)" in page and "nothing may be pruned" in page
    links = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:[^"]+)"', page)
    assert not links, links
