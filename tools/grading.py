"""Grading a class's completed labs: every submission on its own, in a sandbox, with a row for
every student and lab.

    python -m tools.labs grade SUBMISSIONS OUT [--roster FILE] [--hidden FOLDER]

``SUBMISSIONS/<student>/<lab>.ipynb`` are the handed-in labs. For each student of the roster
(the file's names, one per line, and every folder of ``SUBMISSIONS``) and each lab:

1. **Read.** A missing lab, an empty file, a file that is not JSON or not a valid notebook, and a
   notebook whose name is not a lab's give the row a status and a reason; grading goes on. A
   browser's copy suffix (``lab04_l1_l2 (1).ipynb``) is dropped; of two files for one lab the
   newer is graded, with a warning.
2. **Clean.** nbgrader stops at a graded cell it does not know and warns confusingly at a cell
   pasted twice (both carry the same ``grade_id``). Before nbgrader sees the notebook, a cell
   whose ``grade_id`` is not one of the lab's, or that repeats one (all but the last copy, as
   nbgrader's own de-duplication keeps), loses its grading marks and runs as ordinary code;
   each such cell is a warning of the row, and so is a check or other locked cell the student
   edited (nbgrader grades the course's own copy of it).
3. **Autograde** with nbgrader (``autograde``, ``add_missing_cells`` on, so that a deleted
   check is put back and fails), where the cells run in :mod:`tools.sandbox` (no network, no
   view of the course, the gradebook or classmates, no process that outlives the grading). The
   points are the gradebook's, cross-checked against the autograded notebook (a check scores
   its points exactly when it raised no error); nbgrader's warnings (a check or a locked cell
   changed, a cell deleted) go into the row.
4. **Flag.** A solution cell that uses nlprune (the library the checks compare with), rebinds a
   name the checks use, or reaches into the interpreter or the operating system (``sys.modules``,
   ``get_ipython``, ``exec``, ``subprocess``, ...) is named in the row's ``flags``: the teacher
   reads it; the points are not changed.

``OUT/grades.csv`` has one row per check (student, lab, check, points, max_points);
``OUT/summary.csv`` one row per student and lab (student, lab, status, points, max_points,
reason, warnings, flags), the full roster × lab matrix.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path

from .labs import build_course, nbgrader_api
from .toc import ROOT

SANDBOX = Path(__file__).with_name("sandbox.py")
MATHJAX = ROOT / "book" / "_static" / "mathjax"
CELL_TIMEOUT = 60  # seconds per cell: the checks take seconds
SUBMISSION_TIMEOUT = 600  # seconds for one submission, kernel start included
FIELDS = ["student", "lab", "status", "points", "max_points", "submitted", "late", "reason",
          "warnings", "flags", "feedback"]
# names in a solution cell the teacher should look at: they can reach the grading itself
SUSPICIOUS = {"get_ipython", "exec", "eval", "compile", "__import__", "globals", "setattr",
              "__builtins__", "builtins", "sys", "os", "subprocess", "ctypes", "signal",
              "atexit", "importlib", "inspect", "gc", "socket", "shutil"}
LIBRARY = {"nlprune", "prune", "cut", "measure", "seq2seq", "train", "masks", "oneshot",
           "movement", "scores", "schedules", "penalties"}


# ------------------------------------------------------------------------------- reading
def lab_name(stem: str) -> str:
    """The lab a handed-in file's name stands for: a browser's `` (1)`` copy suffix dropped."""
    return re.sub(r"\s*\(\d+\)$", "", stem.strip()).lower()


def read_submission(path: Path) -> tuple[dict | None, str]:
    """The notebook in ``path`` and ``""``, or ``None`` and why it cannot be graded."""
    import nbformat

    if path.stat().st_size == 0:
        return None, "empty file"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"not a notebook (not JSON: {error})"
    try:
        with warnings.catch_warnings():  # repeated cell ids: `clean` renumbers them
            warnings.simplefilter("ignore")
            nb = nbformat.reads(json.dumps(raw), as_version=4)
            nbformat.validate(nb)
    except Exception as error:  # nbformat raises several kinds
        return None, f"not a valid notebook ({type(error).__name__}: {str(error)[:200]})"
    return nb, ""


def clean(nb, release: dict[str, dict]) -> list[str]:
    """Step 2 of the module docstring, in place; the warnings it gives. ``release`` maps each
    graded or locked cell of the lab, by ``grade_id``, to the cell as released."""
    notes = []
    marked = [(i, c) for i, c in enumerate(nb.cells) if "nbgrader" in c.get("metadata", {})]
    last = {}
    for i, cell in marked:
        grade_id = cell.metadata.nbgrader.get("grade_id")
        if grade_id not in release:
            notes.append(f"cell {i + 1} carries grading marks of {grade_id!r}, which is not a "
                         "cell of this lab: graded as ordinary code")
            del cell.metadata["nbgrader"]
        else:
            last[grade_id] = i
    for i, cell in marked:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None and last[grade_id] != i:
            notes.append(f"cell {i + 1} is a copy of cell {grade_id!r} (pasted twice?): the "
                         f"last copy, cell {last[grade_id] + 1}, is graded")
            del cell.metadata["nbgrader"]
    for grade_id, i in last.items():  # nbgrader restores these; say so in words
        released = release[grade_id]
        if released["metadata"]["nbgrader"].get("locked") and nb.cells[i].source.strip() != \
                "".join(released["source"]).strip():
            notes.append(f"cell {grade_id!r} was edited: graded with the course's own copy")
    seen: set[str] = set()
    for number, cell in enumerate(nb.cells):  # copied cells may repeat a cell id too
        if cell.get("id") in seen or not cell.get("id"):
            cell["id"] = f"cell-{number}-{len(seen)}"
        seen.add(cell["id"])
    return notes


def flags(nb) -> list[str]:
    """Step 4 of the module docstring: what the teacher should look at in the solution cells."""
    found = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("solution"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue  # the check reports it
        where = meta["grade_id"]
        # the names a function of the cell binds (its arguments and locals) are its own: a
        # local called `scores` is not nlprune's module; at the top of the cell it would be
        own = {a.arg for node in ast.walk(tree) if isinstance(node, ast.arguments)
               for a in [*node.posonlyargs, *node.args, *node.kwonlyargs]}
        own |= {n.id for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.Lambda))
                for n in ast.walk(f) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        own |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                and isinstance(n.ctx, ast.Store) and n.id not in LIBRARY}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                for module in {m.split(".")[0] for m in modules if m}:
                    if module in SUSPICIOUS or module == "nlprune":
                        found.append(f"{where}: imports {module}")
            elif isinstance(node, ast.Name) and node.id not in own:
                if isinstance(node.ctx, ast.Store) and node.id in LIBRARY:
                    found.append(f"{where}: rebinds {node.id}")
                elif node.id in SUSPICIOUS:
                    found.append(f"{where}: uses {node.id}")
            elif isinstance(node, ast.Attribute):
                base = node.value.id if isinstance(node.value, ast.Name) else None
                if isinstance(node.ctx, ast.Store) and base not in own:
                    found.append(f"{where}: assigns {ast.unparse(node)}")
                elif base in LIBRARY and base not in own:
                    found.append(f"{where}: uses {base}.{node.attr} (nlprune)")
    return sorted(set(found))


# ------------------------------------------------------------------------------ sandboxing
def run_sandboxed(notebook: Path, scratch: Path, hide: list[str], keep: list[str],
                  cell_timeout: int = CELL_TIMEOUT,
                  total_timeout: int = SUBMISSION_TIMEOUT) -> dict:
    """``notebook`` (inside ``scratch``) executed by :mod:`tools.sandbox`; the executed
    notebook as a dict.

    Raises:
        RuntimeError: the sandbox could not start, the kernel died, or the submission ran out of
            time; the message says which.
    """
    read_end, write_end = os.pipe()
    spec = {"scratch": str(scratch), "notebook": str(notebook), "timeout": cell_timeout,
            "result_fd": write_end, "hide": hide, "keep": keep}
    command = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
               "--kill-child", "--mount-proc", sys.executable, str(SANDBOX), json.dumps(spec)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, pass_fds=(write_end,), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log)
        os.close(write_end)
        chunks: list[bytes] = []
        reader = threading.Thread(target=_read_all, args=(read_end, chunks), daemon=True)
        reader.start()
        try:
            process.wait(timeout=total_timeout)
        except subprocess.TimeoutExpired:
            process.kill()  # --kill-child: the namespace and every process in it end
            process.wait()
            raise RuntimeError(f"sandbox: the submission ran longer than {total_timeout} s")
        finally:
            reader.join(timeout=10)
            os.close(read_end)
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
    if not chunks:
        raise RuntimeError("sandbox: no result (exit status "
                           f"{process.returncode}): {' / '.join(tail)}")
    result = json.loads(b"".join(chunks))
    if "error" in result:
        raise RuntimeError(f"sandbox: {result['error']}")
    return result["notebook"]


def _read_all(fd: int, chunks: list[bytes]) -> None:
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            return
        chunks.append(data)


def sandbox_folders(submissions: Path, out: Path) -> tuple[list[str], list[str]]:
    """What the sandbox hides (the project, the submissions, the output with its course and
    gradebook, the home folder, the temporary folders) and puts back (Python and nlprune)."""
    import nlprune

    hide = {ROOT, submissions.resolve(), out.resolve(), Path.home(), Path(tempfile.gettempdir()),
            Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")}
    keep = {Path(sys.prefix), Path(sys.base_prefix), Path(nlprune.__file__).resolve().parents[1]}
    return sorted(map(str, hide)), sorted(map(str, keep))


def sandboxed_execute_class():
    """nbgrader's ``Execute`` step, run in the sandbox (a class nbgrader's config can name)."""
    import nbformat
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Integer, List, Unicode

    class SandboxedExecute(NbGraderPreprocessor):
        """Executes the notebook with :func:`run_sandboxed`."""

        cell_timeout = Integer(CELL_TIMEOUT).tag(config=True)
        total_timeout = Integer(SUBMISSION_TIMEOUT).tag(config=True)
        hide = List(Unicode()).tag(config=True)
        keep = List(Unicode()).tag(config=True)

        def preprocess(self, nb, resources):
            with tempfile.TemporaryDirectory(prefix="nlprune-grade-") as folder:
                scratch = Path(folder) / "work"
                scratch.mkdir()
                path = scratch / "submission.ipynb"
                nbformat.write(nb, path)
                executed = run_sandboxed(path, scratch, list(self.hide), list(self.keep),
                                         self.cell_timeout, self.total_timeout)
            return nbformat.from_dict(executed), resources

    return SandboxedExecute


def check_sandbox() -> None:
    """Raise a clear error where the sandbox cannot be made (no user namespaces, no tools)."""
    try:
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--mount",
                               "--pid", "--fork", "sh", "-c",
                               "ip link set lo up && mount -t tmpfs t /mnt && command -v setpriv"],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError as error:
        raise RuntimeError(f"grading runs each submission in a sandbox and needs {error.filename} "
                           "(util-linux)") from None
    if done.returncode:
        raise RuntimeError("grading runs each submission in a sandbox, which needs unprivileged "
                           "user namespaces, iproute2 and setpriv; `unshare -rnmpf` failed: "
                           f"{done.stderr.strip()}")


# --------------------------------------------------------------------------------- grading
def api(course: Path, hide: list[str], keep: list[str]):
    """An nbgrader API for ``course`` that autogrades in the sandbox."""
    from nbgrader.converters import Autograde

    grader = nbgrader_api(course)
    steps = list(Autograde.autograde_preprocessors.default())
    names = [step.__name__ for step in steps]
    steps[names.index("Execute")] = sandboxed_execute_class()
    grader.config.Autograde.autograde_preprocessors = steps
    grader.config.OverwriteCells.add_missing_cells = True
    grader.config.SandboxedExecute.hide = hide
    grader.config.SandboxedExecute.keep = keep
    return grader


def _warnings(log: str) -> list[str]:
    """nbgrader's warnings in ``log``, but those of a changed checksum: a check with hidden
    tests always has another checksum than its released copy, and :func:`clean` names the
    cells a student edited."""
    return [line.split("]", 1)[1].strip() for line in log.splitlines()
            if line.startswith("[WARNING]") and "not in session" not in line
            and "Attribute 'checksum'" not in line]


def _reason(result: dict) -> str:
    text = f"{result.get('log', '')}\n{result.get('error', '')}"
    found = re.findall(r"sandbox: (.+)", text)
    if found:
        return found[-1].strip()
    errors = [line for line in text.splitlines() if line.startswith("[ERROR]")]
    return errors[-1][len("[ERROR]"):].strip() if errors else "nbgrader autograde failed"


def _checked(autograded: Path) -> dict[str, bool]:
    """Each check cell of an autograded notebook: whether it ran without an error."""
    nb = json.loads(autograded.read_text())
    passed = {}
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade") and cell["cell_type"] == "code":
            passed[meta["grade_id"]] = not any(o["output_type"] == "error"
                                               for o in cell.get("outputs", []))
    return passed


def submitted_at(path: Path) -> datetime:
    """When ``path`` was handed in: the time in ``<lab>.timestamp.txt`` beside it (ISO 8601,
    e.g. ``2026-12-10T23:10:00+00:00``; naive times are UTC), else the file's modification
    time (keep it when you collect the files: ``cp -p``, ``rsync -t``, an unzipped archive)."""
    stamp = path.with_suffix(".timestamp.txt")
    if stamp.exists():
        when = datetime.fromisoformat(stamp.read_text().strip())
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def _late(seconds: float) -> str:
    if seconds <= 0:
        return ""
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60} min late" if hours else f"{rest // 60} min {rest % 60} s late"


# nbgrader's feedback template loads MathJax 2 from a CDN, whatever the exporter's settings
CDN_MATHJAX = re.compile(r'<script[^>]*src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"[^>]*>'
                         r'\s*</script>')
LOCAL_MATHJAX = ('<script>window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]]}};'
                 '</script>\n<script src="../mathjax/tex-chtml.js"></script>')


def offline_feedback(page: str) -> str:
    """A feedback page of nbgrader's that loads the book's MathJax (copied to
    ``out/feedback/mathjax``) instead of a CDN's.

    Raises:
        ValueError: the page loads MathJax from somewhere this function does not know.
    """
    page, found = CDN_MATHJAX.subn(lambda _: LOCAL_MATHJAX, page)
    if found != 1:
        raise ValueError(f"feedback page: expected one MathJax script from the CDN, found {found}")
    return page


def grade(submissions: Path, out: Path, root: Path = ROOT, roster: list[str] | None = None,
          hidden: Path | None = None, due: datetime | None = None) -> list[dict]:
    """Grade ``submissions/<student>/<lab>.ipynb``; write ``out/grades.csv`` and
    ``out/summary.csv``; return the rows of summary.csv.

    ``due`` (a time with its zone) is every lab's due date: the summary says how late each
    submission came (:func:`submitted_at`); no points are taken off. Each graded submission
    gets nbgrader's feedback, a page with every check's message, in ``out/feedback``.

    Raises:
        ValueError: ``submissions`` is not a folder, or ``due`` has no time zone.
        RuntimeError: the sandbox cannot be made on this machine.
    """
    from nbgrader.api import Gradebook

    if not submissions.is_dir():
        raise ValueError(f"SUBMISSIONS must be a folder of student folders, got {submissions}")
    if due is not None and due.tzinfo is None:
        raise ValueError(f"due must say its time zone (e.g. 2026-12-10T23:59+01:00), got {due}")
    check_sandbox()
    course = out / "course"
    names = build_course(course, root, hidden)
    if due is not None:
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            for name in names:
                # the gradebook keeps naive UTC times, as nbgrader's own parse_utc makes them
                gradebook.update_or_create_assignment(
                    name, duedate=due.astimezone(timezone.utc).replace(tzinfo=None))
    released = {}
    for name in names:
        release = json.loads((course / "release" / name / f"{name}.ipynb").read_text())
        released[name] = {c["metadata"]["nbgrader"]["grade_id"]: c
                          for c in release["cells"] if "nbgrader" in c["metadata"]}
    students = sorted({p.name for p in submissions.iterdir() if p.is_dir()} | set(roster or []))
    rows: list[dict] = []
    todo = []
    for student in students:
        handed_in: dict[str, list[Path]] = {}
        folder = submissions / student
        for path in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:
            handed_in.setdefault(lab_name(path.stem), []).append(path)
        for lab in sorted(set(handed_in) - set(names)):
            rows.append(_row(student, lab, "not a lab", reason=(
                f"{', '.join(p.name for p in handed_in[lab])}: not a lab's name; the labs are "
                f"{', '.join(names)}")))
        for lab in names:
            files = sorted(handed_in.get(lab, []), key=lambda p: p.stat().st_mtime)
            if not files:
                rows.append(_row(student, lab, "missing", reason="no file handed in"))
                continue
            notes = []
            if len(files) > 1:
                notes.append(f"{len(files)} files for this lab "
                                f"({', '.join(p.name for p in files)}): graded the newest, "
                                f"{files[-1].name}")
            nb, reason = read_submission(files[-1])
            if nb is None:
                rows.append(_row(student, lab, "error", reason=f"{files[-1].name}: {reason}"))
                continue
            try:  # marks of any shape a student's editor may leave
                notes += clean(nb, released[lab])
                flagged = flags(nb)
            except (AttributeError, KeyError, TypeError) as error:
                rows.append(_row(student, lab, "error", reason=f"{files[-1].name}: its grading "
                                 f"marks cannot be read ({type(error).__name__}: {error})"))
                continue
            target = course / "submitted" / student / lab
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{lab}.ipynb").write_text(json.dumps(nb, indent=1, ensure_ascii=False))
            (target / "timestamp.txt").write_text(submitted_at(files[-1]).isoformat())
            todo.append((student, lab, notes, flagged))
    hide, keep = sandbox_folders(submissions, out)
    grader = api(course, hide, keep)
    for student, lab, notes, flagged in todo:
        result = grader.autograde(lab, student, force=True, create=True)
        notes = notes + _warnings(result.get("log", ""))
        autograded = course / "autograded" / student / lab / f"{lab}.ipynb"
        if not result["success"] or not autograded.exists():
            rows.append(_row(student, lab, "error", reason=_reason(result), warnings=notes,
                             flags=flagged))
            continue
        rows.append(_row(student, lab, "graded", warnings=notes, flags=flagged))
    checks = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for row in rows:
            if row["status"] != "graded":
                continue
            student, lab = row["student"], row["lab"]
            passed = _checked(course / "autograded" / student / lab / f"{lab}.ipynb")
            submission = gradebook.find_submission(lab, student)
            if submission.timestamp is not None:
                row["submitted"] = submission.timestamp.replace(tzinfo=timezone.utc).isoformat()
            row["late"] = _late(submission.total_seconds_late or 0)
            graded = gradebook.find_submission_notebook(lab, lab, student)
            for g in sorted(graded.grades, key=lambda g: g.name):
                if not g.max_score:
                    continue
                points, full = float(g.score), float(g.max_score)
                checks.append({"student": student, "lab": lab, "check": g.name,
                               "points": points, "max_points": full})
                row["points"] += points
                row["max_points"] += full
                if passed.get(g.name) is None or (points == full) != passed[g.name]:
                    row["warnings"].append(f"{g.name}: the gradebook's {points:g} of {full:g} "
                                           "disagrees with the autograded notebook")
    # one feedback run per lab, for all its graded students at once (a run per student and lab
    # took 1.8 s each, most of it nbconvert's start); no page of an earlier grading is kept
    shutil.rmtree(course / "feedback", ignore_errors=True)
    feedback = {lab: grader.generate_feedback(lab)
                for lab in sorted({r["lab"] for r in rows if r["status"] == "graded"})}
    for row in rows:
        if row["status"] != "graded":
            row["max_points"] = _max_points(course, row["lab"]) if row["lab"] in names else 0.0
            continue
        if not (out / "feedback" / "mathjax").exists():
            shutil.copytree(MATHJAX, out / "feedback" / "mathjax")
        result = feedback[row["lab"]]
        page = course / "feedback" / row["student"] / row["lab"] / f"{row['lab']}.html"
        if page.exists():
            target = out / "feedback" / row["student"] / f"{row['lab']}.html"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(offline_feedback(page.read_text()))
            row["feedback"] = str(target.relative_to(out))
        else:
            row["warnings"].append("no feedback page: " + _reason(result))
    rows.sort(key=lambda r: (r["student"], r["lab"]))
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "grades.csv", checks, ["student", "lab", "check", "points", "max_points"])
    _write_csv(out / "summary.csv", [{**r, "warnings": " | ".join(r["warnings"]),
                                      "flags": " | ".join(r["flags"])} for r in rows], FIELDS)
    return rows


def _row(student: str, lab: str, status: str, reason: str = "", warnings: list[str] | None = None,
         flags: list[str] | None = None) -> dict:
    return {"student": student, "lab": lab, "status": status, "points": 0.0, "max_points": 0.0,
            "submitted": "", "late": "", "feedback": "", "reason": reason,
            "warnings": list(warnings or []), "flags": list(flags or [])}


def _max_points(course: Path, lab: str) -> float:
    release = json.loads((course / "release" / lab / f"{lab}.ipynb").read_text())
    return float(sum(c["metadata"]["nbgrader"].get("points", 0) for c in release["cells"]
                     if c["metadata"].get("nbgrader", {}).get("grade")))


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
