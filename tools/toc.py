"""The pages of the book in reading order, read from ``_toc.yml`` (used by ``tools.bench``,
``tools.labs`` and the tests): chapters still being written stay out of ``_toc.yml``, so the
table of contents, not the folders, says what the book is."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_pages(root: Path = ROOT) -> list[str]:
    """Every file of ``_toc.yml`` without its extension: the root page, then the chapters of each
    part with their sections, depth first (``["book/intro", "book/preface", "notebooks/01_…", …]``)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [toc["root"]] + [f for part in toc.get("parts", []) for c in part.get("chapters", [])
                            for f in entry_files(c)]


def entry_files(entry: dict) -> list[str]:
    """The file of one ``_toc.yml`` entry and those of its sections, depth first."""
    return [entry["file"], *(f for section in entry.get("sections", []) for f in entry_files(section))]


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks among :func:`toc_pages`, in reading order."""
    return [root / f"{page}.ipynb" for page in toc_pages(root) if (root / f"{page}.ipynb").exists()]
