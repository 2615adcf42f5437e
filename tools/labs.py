"""Student labs generated from the chapter notebooks, and the grading of completed labs.

The chapters are the single source. A code cell takes part in a lab through its metadata:

* ``"lab": {"solution": ["f", ...]}`` -- the functions ``f`` are what the student writes: the lab
  keeps each one's signature and docstring and replaces its body by ``raise
  NotImplementedError()``;
* ``"lab": {"check": points}`` -- a graded check (it calls the student's functions on small
  inputs and fails with a message the student can act on);
* ``"lab": "setup"`` -- small inputs a check needs; runs in the lab as it is.

Every other code cell of the chapter is shown in the lab as text, with its stored figures and
printed output, so the lab carries the chapter's prose and figures without re-running its
experiments. Hidden exercise solutions (``{solution}`` blocks) are left out.

The labs and the grading use nbgrader (``generate_assignment``, ``autograde`` and its sqlite
gradebook): no server, no network.

    python -m tools.labs build OUT                            # OUT/<lab>.ipynb, one per chapter
    python -m tools.labs grade SUBMISSIONS OUT [--roster FILE] [--hidden FOLDER] [--due WHEN]

``SUBMISSIONS`` holds one folder per student with the student's completed labs,
``SUBMISSIONS/<student>/<lab>.ipynb``; ``grade`` (:mod:`tools.grading`) grades each in a
sandbox, writes ``OUT/grades.csv`` (student, lab, check, points, max_points) and
``OUT/summary.csv`` (a row per student and lab: status, points, reason, warnings, flags) and
prints the summary.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import yaml

from .toc import ROOT, entry_files

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# the hidden tests of the checks, one file per check id (tools/hidden_checks/README.md)
HIDDEN = Path(__file__).with_name("hidden_checks")
PREAMBLE = """\
# The modules the checks use (run this cell first)
import numpy as np
import torch
from torch import nn

from nlprune import cut, measure, prune, seq2seq, train

train.reproducible(seed=0, threads=2)"""
# A long printed output is cut to this many lines in the lab (the book has it whole).
MAX_OUTPUT_LINES = 25


# ------------------------------------------------------------------------------------ chapters
def chapters(root: Path = ROOT) -> list[tuple[str, list[Path]]]:
    """``(lab name, pages)`` for each numbered chapter of ``_toc.yml``: the chapter's file and its
    sections, depth first (``("lab01_what_is_pruning", [.../01_what_is_pruning.ipynb])``)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found = []
    numbered = [p for p in toc.get("parts", []) if p.get("numbered")]
    for number, entry in enumerate((c for p in numbered for c in p["chapters"]), start=1):
        pages = []
        for page in entry_files(entry):
            for suffix in (".ipynb", ".md"):
                if (root / f"{page}{suffix}").exists():
                    pages.append(root / f"{page}{suffix}")
                    break
        stem = re.sub(r"^\d+_", "", Path(entry["file"]).name)
        found.append((f"lab{number:02d}_{stem}", pages))
    return found


# ---------------------------------------------------------------------------- markdown text
def fenced_blocks(text: str, directive: str) -> list[tuple[int, int]]:
    """Line ranges ``[start, end)`` of the MyST blocks ````{directive}`` (any fence width)."""
    lines, spans, i = text.split("\n"), [], 0
    opening = re.compile(r"^(`{3,}|:{3,})\{" + re.escape(directive) + r"\}")
    while i < len(lines):
        match = opening.match(lines[i])
        if match:
            fence, j = match.group(1), i + 1
            while j < len(lines) and lines[j].strip() != fence:
                j += 1
            spans.append((i, j + 1))
            i = j + 1
        else:
            i += 1
    return spans


def replace_blocks(text: str, directive: str, replace) -> str:
    """``text`` with each ````{directive}`` block's lines passed through ``replace``."""
    lines = text.split("\n")
    for start, end in reversed(fenced_blocks(text, directive)):
        lines[start:end] = replace(lines[start:end])
    return "\n".join(lines)


def _exercise(block: list[str]) -> list[str]:
    body = [line for line in block[1:-1] if not line.startswith(":")]
    return ["> **Exercise.** " + body[0] if body else "> **Exercise.**",
            *("> " + line for line in body[1:])]


def _box(block: list[str]) -> list[str]:
    """A MyST box as a quote; a ``dropdown`` one (a hint) folded, for the student to open."""
    title = re.sub(r"^[`:]+\{\w+\}\s*", "", block[0]).strip()
    body = [line for line in block[1:-1] if not re.match(r"^:\w+:", line)]
    if any(re.match(r"^:class:.*\bdropdown\b", line) for line in block):
        return [f"<details><summary>{title or 'Hint'}</summary>", "", *body, "", "</details>"]
    head = [f"> **{title}**", ">"] if title else []
    return [*head, *(f"> {line}".rstrip() for line in body)]


def student_markdown(text: str) -> str:
    """The chapter's markdown for a student: hidden solutions removed, each exercise and box
    shown as a quote, glued book values pointed to the book."""
    text = replace_blocks(text, "solution", lambda block: [])
    text = replace_blocks(text, "exercise", _exercise)
    text = replace_blocks(text, "glue", lambda block: [
        "*(A figure of the book: see this chapter in the book.)*"])
    for box in ("admonition", "note", "tip", "warning", "important"):
        text = replace_blocks(text, box, _box)
    # MyST roles Jupyter does not know: citations as [key], values glued from cells pointed to
    # the book, cross-references as their target
    text = re.sub(r"\{cite(?::\w+)?\}`([^`]+)`", r"[\1]", text)
    text = re.sub(r"\{glue(?::\w+)?\}`[^`]+`", "*(value in the book)*", text)
    text = re.sub(r"\{(?:doc|ref|numref|eq)\}`([^`<]+?)\s*<[^`]+>`", r"\1", text)
    text = re.sub(r"\{(?:doc|ref|numref|eq)\}`([^`]+)`", r"`\1`", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ------------------------------------------------------------------------------ code cells
def solution_source(source: str, functions: list[str]) -> str:
    """``source`` with the body of each function in ``functions`` (after its docstring) between
    nbgrader's solution markers.

    Raises:
        ValueError: a function is not defined at the top level of ``source`` or has no docstring
            (the docstring is the student's task).
    """
    tree = ast.parse(source)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    lines = source.split("\n")
    inserts = []
    for name in functions:
        node = defs.get(name)
        if node is None:
            raise ValueError(f"lab solution {name!r} is not a function defined in the cell")
        if ast.get_docstring(node) is None:
            raise ValueError(f"lab solution {name!r} needs a docstring: the lab keeps it as the task")
        first, last = node.body[0].end_lineno, node.end_lineno  # docstring's last line, body's end
        indent = " " * node.body[1].col_offset if len(node.body) > 1 else " " * 4
        inserts += [(first, indent + BEGIN), (last, indent + END)]
    for line_number, text in sorted(inserts, reverse=True):
        lines.insert(line_number, text)
    return "\n".join(lines)


def _grader(kind: str, grade_id: str, points: int = 0) -> dict:
    meta = {"schema_version": 3, "grade_id": grade_id, "locked": kind != "solution",
            "solution": kind == "solution", "grade": kind == "check"}
    if kind == "check":
        meta["points"] = points
    return {"nbgrader": meta}


def _shown_as_text(cell: dict) -> list[dict]:
    """A chapter code cell the lab does not run: its code and its stored outputs as markdown."""
    tags = cell["metadata"].get("tags", [])
    if "remove-cell" in tags:
        return []
    parts = [] if "remove-input" in tags else [f"```python\n{''.join(cell['source'])}\n```"]
    attachments = {}
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "image/png" in data:
            name = f"figure{len(attachments) + 1}.png"
            attachments[name] = {"image/png": data["image/png"]}
            alt = cell["metadata"].get("mystnb", {}).get("image", {}).get("alt", "figure")
            parts.append(f"![{alt}](attachment:{name})")
            continue
        text = output.get("text") or data.get("text/plain")
        if output.get("name") == "stderr" or text is None:
            continue
        text = "".join(text).rstrip().split("\n")
        if len(text) > MAX_OUTPUT_LINES:
            text = text[:MAX_OUTPUT_LINES] + ["..."]
        parts.append("```text\n" + "\n".join(text) + "\n```")
    if not parts:
        return []
    shown = {"cell_type": "markdown", "metadata": {}, "source": "\n\n".join(parts)}
    if attachments:
        shown["attachments"] = attachments
    return [shown]


def _title(page: Path) -> str:
    text = page.read_text() if page.suffix == ".md" else "".join(
        json.loads(page.read_text())["cells"][0]["source"])
    match = re.search(r"^# (.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else page.stem


def hidden_tests(grade_id: str, hidden: Path | None = None) -> str:
    """The hidden tests of the check ``grade_id`` between nbgrader's markers (nbgrader leaves
    them out of the labs students receive and runs them at grading), or ``""``: the file
    ``<grade_id>.py`` of ``hidden``, else of :data:`HIDDEN` (see its README)."""
    for folder in (hidden, HIDDEN):
        if folder is not None and (Path(folder) / f"{grade_id}.py").exists():
            code = (Path(folder) / f"{grade_id}.py").read_text().strip()
            return f"\n\n{HIDDEN_BEGIN}\n{code}\n{HIDDEN_END}"
    return ""


def lab_source(name: str, pages: list[Path], hidden: Path | None = None) -> dict:
    """The nbgrader source notebook of one lab, built from a chapter's pages; ``hidden``, a
    folder of hidden tests that replace the defaults (:func:`hidden_tests`)."""
    number = int(name[3:5])
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source":
         f"# Lab {number}: {_title(pages[0])}\n\n"
         "This lab is generated from the chapter of the book. Its prose, figures and printed "
         "results are the book's; the chapter's experiments are shown as code you can read "
         "but do not need to run. Your work is in the cells whose functions end in `raise "
         "NotImplementedError()`: replace that line by your implementation, run the cell, then "
         "run the **check** cell below it. A check that passes prints one line; a failing one "
         "says what is wrong. Run the first code cell before any other."},
        {"cell_type": "code", "metadata": _grader("setup", "preamble"), "source": PREAMBLE,
         "outputs": [], "execution_count": None},
    ]
    ids: set[str] = set()
    for page in pages:
        if page.suffix == ".md":
            text = re.sub(r"\A---\n.*?\n---\n", "", page.read_text(), flags=re.DOTALL)
            cells.append({"cell_type": "markdown", "metadata": {}, "source": student_markdown(text)})
            continue
        for cell in json.loads(page.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "markdown":
                cells.append({"cell_type": "markdown", "metadata": {},
                              "source": student_markdown(source)})
                continue
            if cell["cell_type"] != "code":
                continue
            lab = cell["metadata"].get("lab")
            if lab is None:
                cells.extend(_shown_as_text(cell))
                continue
            if lab == "setup":
                kind, grade_id, points = "setup", f"setup{len(ids) + 1}", 0
            elif isinstance(lab, dict) and "solution" in lab:
                kind, grade_id, points = "solution", lab["solution"][0], 0
                source = solution_source(source, lab["solution"])
            elif isinstance(lab, dict) and isinstance(lab.get("check"), int):
                match = re.match(r"# Check (\w+)", source)
                kind, points = "check", lab["check"]
                grade_id = f"check_{match.group(1) if match else len(ids) + 1}"
                source += hidden_tests(grade_id, hidden)
            else:
                raise ValueError(f"{page.name}: unknown lab marking {lab!r}; expected \"setup\", "
                                 "{\"solution\": [names]} or {\"check\": points}")
            if grade_id in ids:
                raise ValueError(f"{name}: two lab cells are both called {grade_id!r}")
            ids.add(grade_id)
            cells.append({"cell_type": "code", "metadata": _grader(kind, grade_id, points),
                          "source": source, "outputs": [], "execution_count": None})
    for number_in_lab, cell in enumerate(cells):
        cell["id"] = f"cell-{number_in_lab}"
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}}


def reference_lines(source_notebook: dict) -> list[str]:
    """The lines between the solution markers of a lab's source that a lab must never contain:
    stripped statements of at least 12 characters. Block openers such as ``with
    torch.no_grad():`` are left out: they say nothing of the solution, and the chapter's own
    code, shown in the lab, has them too."""
    found = []
    for cell in source_notebook["cells"]:
        inside = False
        for line in "".join(cell["source"]).split("\n"):
            if line.strip() in (BEGIN, END):
                inside = line.strip() == BEGIN
            elif inside and len(line.strip()) >= 12 and not line.strip().endswith(":"):
                found.append(line.strip())
    return found


# ---------------------------------------------------------------------------------- nbgrader
def nbgrader_api(course: Path):
    """nbgrader's API for the course folder ``course`` (offline, no server)."""
    # nbgrader runs the `alembic` command of its environment to set up its gradebook: put this
    # Python's bin folder first on PATH, also when the venv is not activated.
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    # nbgrader 0.9.6 trips over its own gradebook session at every autograde (harmless)
    warnings.filterwarnings("ignore", message="Object of type <Submitted")

    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.course_id = "pruning-nlp-models"
    return NbGraderAPI(config=config)


def build_course(course: Path, root: Path = ROOT, hidden: Path | None = None) -> list[str]:
    """Write the nbgrader course ``course`` (source and release of every lab, the source with
    the hidden tests of ``hidden`` or the defaults); the lab names."""
    if course.exists():
        shutil.rmtree(course)
    names = []
    for name, pages in chapters(root):
        folder = course / "source" / name
        folder.mkdir(parents=True)
        source = lab_source(name, pages, hidden)
        (folder / f"{name}.ipynb").write_text(json.dumps(source, indent=1, ensure_ascii=False)
                                              + "\n")
        names.append(name)
    api = nbgrader_api(course)
    for name in names:
        result = api.generate_assignment(name, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{result.get('log')}"
                               f"\n{result.get('error')}")
    return names


def teacher_folder(out: Path) -> Path:
    """Where :func:`build` puts the nbgrader course of the labs in ``out``: beside it, never
    inside the folder handed out (the course's source holds the solutions and hidden tests)."""
    return out.resolve().parent / f"{out.resolve().name}-teacher"


def build(out: Path, root: Path = ROOT, course: Path | None = None,
          hidden: Path | None = None) -> list[Path]:
    """The student labs ``out/<lab>.ipynb`` and nothing else in ``out``; the nbgrader course,
    with solutions and hidden tests, goes to ``course`` (default :func:`teacher_folder`)."""
    course = course or teacher_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    names = build_course(course, root, hidden)
    labs = []
    for name in names:
        lab = out / f"{name}.ipynb"
        shutil.copyfile(course / "release" / name / f"{name}.ipynb", lab)
        labs.append(lab)
    return labs


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.labs",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="write one student lab per chapter")
    build_command.add_argument("out", type=Path)
    grade_command = commands.add_parser("grade", help="grade a folder of completed labs")
    grade_command.add_argument("submissions", type=Path)
    grade_command.add_argument("out", type=Path)
    grade_command.add_argument("--roster", type=Path, help="a file of student names, one a line")
    grade_command.add_argument("--hidden", type=Path, help="a folder of your own hidden tests")
    grade_command.add_argument("--due", help="the labs' due date, ISO 8601 with its time zone, "
                               "e.g. 2026-12-10T23:59+01:00: the summary says who was late")
    args = parser.parse_args(argv)
    if args.command == "build":
        labs = build(args.out)
        print(f"{len(labs)} labs written to {args.out.resolve()} (hand this folder out):")
        for lab in labs:
            print(f"  {lab.name}")
        print(f"the nbgrader course, with solutions and hidden tests (keep it): "
              f"{teacher_folder(args.out)}")
        return 0
    from .grading import grade

    roster = None
    if args.roster:
        roster = [line.strip() for line in args.roster.read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    from datetime import datetime

    due = datetime.fromisoformat(args.due) if args.due else None
    rows = grade(args.submissions, args.out, roster=roster, hidden=args.hidden, due=due)
    print(f"{'student':<16} {'lab':<28} {'status':<10} points")
    for row in rows:
        note = row["reason"] or "; ".join([row["late"]] * bool(row["late"]) + row["warnings"]
                                          + row["flags"])
        print(f"{row['student']:<16} {row['lab']:<28} {row['status']:<10} "
              f"{row['points']:g} / {row['max_points']:g}" + (f"  ({note})" if note else ""))
    print(f"per check: {(args.out / 'grades.csv').resolve()}\nper lab:   "
          f"{(args.out / 'summary.csv').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
