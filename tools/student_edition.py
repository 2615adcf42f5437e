"""The student edition of the book: the same pages, with the lab functions as stubs and the
exercise solutions left out, so that a teacher can hand out a book that does not print the
answers of the labs (:mod:`tools.labs`).

    python -m tools.student_edition SOURCE_FOLDER     # then: jupyter-book build SOURCE_FOLDER

The folder receives a copy of the book's sources (``_config.yml``, ``_toc.yml``, ``book/``,
``notebooks/``) in which

* each function a lab asks for (a code cell marked ``"lab": {"solution": [...]}``) keeps its
  signature and docstring and its body becomes ``raise NotImplementedError()``;
* every ``{solution}`` block of the exercises is removed, in the notebooks and in the pages,
  and so is every admonition of class ``teacher`` (the teaching guide's model answers);
* the title says it is the student edition.

The stored outputs stay: they show what the reference computed, not how. ``make student-book``
builds it to ``_build/student/_build/html``.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import yaml

from .labs import replace_blocks
from .toc import ROOT

STUB = "raise NotImplementedError()  # the lab's task: write it from the docstring"
NOTE = ("This is the **student edition**: the functions the labs ask for are left as stubs and "
        "the solutions of the exercises are left out.")


def stub_source(source: str, functions: list[str]) -> str:
    """``source`` with the body of each function in ``functions`` (after its docstring) replaced
    by :data:`STUB`.

    Raises:
        ValueError: a function is not defined at the top level of ``source`` or has no docstring.
    """
    tree = ast.parse(source)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    lines = source.split("\n")
    for name in sorted(functions, key=lambda f: -defs[f].lineno if f in defs else 0):
        node = defs.get(name)
        if node is None:
            raise ValueError(f"lab solution {name!r} is not a function defined in the cell")
        if ast.get_docstring(node) is None:
            raise ValueError(f"lab solution {name!r} needs a docstring: it is the student's task")
        indent = " " * node.body[0].col_offset
        lines[node.body[0].end_lineno:node.end_lineno] = [indent + STUB]
    return "\n".join(lines)


def _teacher_note(block: list[str]) -> bool:
    return any(line.startswith(":class:") and "teacher" in line.split() for line in block)


def without_solutions(text: str) -> str:
    """``text`` (markdown) with every ``{solution}`` block removed, and every admonition of
    class ``teacher`` (the teaching guide's model answers)."""
    text = replace_blocks(text, "solution", lambda block: [])
    return replace_blocks(text, "admonition",
                           lambda block: [] if _teacher_note(block) else block)


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [line + "\n" for line in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def student_notebook(notebook: dict) -> dict:
    """A chapter notebook of the student edition (a new dict)."""
    notebook = json.loads(json.dumps(notebook))
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        lab = cell["metadata"].get("lab")
        if cell["cell_type"] == "code" and isinstance(lab, dict) and "solution" in lab:
            cell["source"] = _lines(stub_source(source, lab["solution"]))
        elif cell["cell_type"] == "markdown":
            cell["source"] = _lines(without_solutions(source))
    return notebook


def write(folder: Path, root: Path = ROOT) -> list[Path]:
    """Write the student edition's sources to ``folder`` (emptied first); the files written."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["title"] = f"{config['title']} (student edition)"
    (folder / "_config.yml").write_text(yaml.safe_dump(config, allow_unicode=True,
                                                       sort_keys=False))
    shutil.copyfile(root / "_toc.yml", folder / "_toc.yml")
    shutil.copytree(root / "book", folder / "book",
                    ignore=shutil.ignore_patterns("__pycache__", "_generated_student"))
    (folder / "notebooks").mkdir()
    written = [folder / "_config.yml", folder / "_toc.yml"]
    for page in sorted((folder / "book").glob("*.md")):
        text = page.read_text()
        changed = without_solutions(text)
        if page.name == "intro.md":  # the note under the title
            title, rest = changed.split("\n", 1)
            changed = f"{title}\n\n```{{note}}\n{NOTE}\n```\n{rest}"
        if changed != text:
            page.write_text(changed)
        written.append(page)
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        target = folder / "notebooks" / path.name
        target.write_text(json.dumps(student_notebook(json.loads(path.read_text())), indent=1,
                                     ensure_ascii=False) + "\n")
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    written = write(Path(argv[0]))
    print(f"student edition: {len(written)} files written to {Path(argv[0]).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
