"""The sources of the book hold no control characters.

A ``"\\frac"`` written in a Python string that is not raw becomes a form feed followed by
``rac``: the notebook stores the control character, and the page renders "rac" where a fraction
was. The same goes for ``"\\b"``, ``"\\v"``, ``"\\a"`` and ``"\\r"`` (``\\beta``, ``\\vec``,
``\\alpha``, ``\\rho``). So every cell source of every notebook and every page of ``book/`` is
checked for C0 control characters (U+0000 to U+001F) other than newline and tab, and for DEL
(U+007F); a failure names the file, the cell, the line and the character.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))
ALLOWED = {"\n", "\t"}


def control_characters(text: str) -> list[tuple[int, int, str]]:
    """``(line, column, name)`` (1-based) of every control character in ``text`` that is not a
    newline or a tab: C0 (U+0000 to U+001F) and DEL (U+007F)."""
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        for column, char in enumerate(line, start=1):
            if (ord(char) < 0x20 or ord(char) == 0x7F) and char not in ALLOWED:
                name = unicodedata.name(char, None) or {
                    "\x0c": "FORM FEED", "\x0b": "LINE TABULATION", "\x08": "BACKSPACE",
                    "\x07": "BELL", "\r": "CARRIAGE RETURN", "\x00": "NULL",
                }.get(char, "control character")
                found.append((number, column, f"U+{ord(char):04X} {name}"))
    return found


def describe(where: str, text: str) -> list[str]:
    lines = text.split("\n")
    return [
        f"{where}, line {line}, column {column}: {name} in {lines[line - 1][:70]!r}"
        for line, column, name in control_characters(text)
    ]


def test_the_checker_finds_a_form_feed():
    # what "\frac" becomes in a string that is not raw
    assert control_characters("a\n\\sqrt{\frac{p}{n}}") == [(2, 7, "U+000C FORM FEED")]
    assert control_characters("tabs\tand\nnewlines are fine") == []
    assert control_characters("carriage\r\nreturn")[0][2] == "U+000D CARRIAGE RETURN"


def test_there_are_sources_to_check():
    assert len(NOTEBOOKS) >= 7 and len(PAGES) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_cells_hold_no_control_characters(path):
    notebook = nbformat.read(path, as_version=4)
    problems = []
    for index, cell in enumerate(notebook.cells):
        where = f"{path.relative_to(ROOT)}, cell {index} ({cell.cell_type}, id {cell.get('id')})"
        problems += describe(where, cell.source)
    assert not problems, "control characters in cell sources:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_book_pages_hold_no_control_characters(path):
    # newline="" keeps a carriage return as it is in the file instead of translating it
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    problems = describe(str(path.relative_to(ROOT)), text)
    assert not problems, "control characters in the page:\n" + "\n".join(problems)
