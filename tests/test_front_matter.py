"""The preface's study plan says what the notebooks say.

Each notebook's first cell gives its study time ("**Time:** about N minutes ..."); the preface's
chapter table gives the time of each chapter, and of chapters 7 and 8 the sum of their sections.
A section that grows or a page that is edited by hand goes stale silently, so this test compares
the two: a failure names the chapter and both numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
STUDY_TIME = re.compile(r"\*\*Time:\*\* about (\d+) minutes")
PREFACE_ROW = re.compile(r"^\| (\w+) \| (.+?) \| (\d+) min\b", re.MULTILINE)


def study_minutes(notebook: Path) -> int:
    first = nbformat.read(notebook, as_version=4).cells[0].source
    match = STUDY_TIME.search(first)
    assert match, f"{notebook.name}: its first cell has no '**Time:** about N minutes'"
    return int(match.group(1))


def test_the_preface_gives_each_chapter_the_study_time_of_its_notebooks():
    rows = {chapter: int(minutes)
            for chapter, _, minutes in PREFACE_ROW.findall((ROOT / "book" / "preface.md").read_text())}
    assert set(rows) == {"1", "2", "2b", "3", "4", "5", "6", "7", "8"}, sorted(rows)
    for chapter, minutes in rows.items():
        # "02" is chapter 2, "02b" its own row; 07_1 ... 07_4 together are chapter 7
        notebooks = [nb for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))
                     if nb.stem.split("_")[0] == f"0{chapter}"]
        assert notebooks, f"no notebook for chapter {chapter}"
        total = sum(study_minutes(nb) for nb in notebooks)
        assert total == minutes, (f"preface: chapter {chapter} {minutes} min; its notebooks "
                                  f"({', '.join(nb.stem for nb in notebooks)}) say {total} min")
