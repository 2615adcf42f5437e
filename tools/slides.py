"""One slide deck per session of the teaching guide, offline (``make slides``).

    python -m tools.slides OUT        # OUT/index.html and OUT/week01.html ... week08.html

The sessions are the rows of the guide's "Eight weeks" table (``book/teaching.md``): each deck
has a title slide (week, session, chapters), the learning objectives of each chapter of the
session, the cells those chapters mark for projection, and the question of the guide's "What to
project" table. A chapter marks a cell for projection in the cell's metadata:

* ``"slide": "equation"`` -- a markdown cell: its text, with the maths (the key equations);
* ``"slide": "figure"`` -- a code cell: its stored figure;
* ``"slide": "table"`` -- a code cell: its stored table (or printed text).

The decks use reveal.js 5 as the ``sphinx-revealjs`` package ships it and the book's own copy
of MathJax, both copied next to the decks: nothing is fetched from the network.
``python -m tools.check_browser --slides OUT`` opens each deck in Chromium, offline.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
from pathlib import Path

import yaml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

from .toc import ROOT, entry_files

GUIDE = ROOT / "book" / "teaching.md"
MATHJAX = ROOT / "book" / "_static" / "mathjax"
KINDS = ("equation", "figure", "table")


def reveal_folder() -> Path:
    """reveal.js as the ``sphinx-revealjs`` package ships it (dist/ and plugin/)."""
    import sphinx_revealjs

    folder = Path(sphinx_revealjs.__file__).parent / "_static" / "revealjs"
    if not (folder / "dist" / "reveal.js").exists():
        raise RuntimeError(f"no reveal.js in {folder}: is sphinx-revealjs installed?")
    return folder


# ---------------------------------------------------------------------------- the guide
def _table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after ``heading`` in ``text``."""
    part = text.split(heading, 1)[1]
    rows = []
    for line in part.split("\n"):
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header


def sessions(guide: Path = GUIDE) -> list[dict]:
    """The guide's eight sessions: week, title, the pages (``notebooks/...``, ``book/...``),
    and what to show and ask."""
    text = guide.read_text()
    project = {row[0]: row for row in _table(text, "## What to project")}
    found = []
    for row in _table(text, "## Eight weeks"):
        week, title, chapters = row[0], row[1], row[2]
        pages = re.findall(r"\{doc\}`/?([^`]+)`", chapters)
        show, ask = (project[week][1], project[week][2]) if week in project else ("", "")
        found.append({"week": int(week), "title": title, "pages": pages, "show": show,
                      "ask": ask})
    return found


def notebooks_of(page: str, root: Path = ROOT) -> list[Path]:
    """The notebooks of a page of the table of contents: itself, or its sections."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        for entry in part.get("chapters", []):
            files = list(entry_files(entry))
            if page in files:
                return [root / f"{f}.ipynb" for f in files if (root / f"{f}.ipynb").exists()]
    return [root / f"{page}.ipynb"] if (root / f"{page}.ipynb").exists() else []


# ------------------------------------------------------------------------------ markdown
def _markdown() -> MarkdownIt:
    def maths(content: str, options: dict) -> str:
        if options.get("display_mode"):
            return f"<div class=\"math\">\\[{html.escape(content)}\\]</div>"
        return f"\\({html.escape(content)}\\)"

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    dollarmath_plugin(md, renderer=maths, double_inline=True)
    return md


MD = _markdown()


def myst_to_html(text: str) -> str:
    """The course's MyST markdown as HTML for a slide: roles as plain text, boxes as their
    content, maths for MathJax."""
    text = re.sub(r"^(`{3,}|:{3,})\{[\w-]+\}.*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"^(`{3,}|:{3,})\s*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"^:\w+:.*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"\{cite(?::\w+)?\}`([^`]+)`", r"[\1]", text)
    text = re.sub(r"\{glue(?::\w+)?\}`[^`]+`", "(see the book)", text)
    text = re.sub(r"\{(?:doc|ref|numref|eq)\}`([^`<]+?)\s*<[^`]+>`", r"\1", text)
    text = re.sub(r"\{(?:doc|ref|numref|eq)\}`([^`]+)`", r"\1", text)
    return MD.render(text)


def inline(text: str) -> str:
    """A table cell of the guide as inline HTML."""
    return MD.renderInline(re.sub(r"\{doc\}`([^`]+)`", r"\1", text))


def objectives(notebook: dict) -> str:
    """The learning objectives of a chapter (its first cell's "Learning objectives" box)."""
    first = "".join(notebook["cells"][0]["source"])
    match = re.search(r"\{admonition\} Learning objectives\n(?::\w+:.*\n)*(.*?)\n(`{3,}|:{3,})",
                      first, flags=re.DOTALL)
    return match.group(1).strip() if match else ""


def title(notebook: dict) -> str:
    match = re.search(r"^# (.+)$", "".join(notebook["cells"][0]["source"]), flags=re.MULTILINE)
    return match.group(1).strip() if match else ""


def marked(notebook: dict) -> list[tuple[str, dict]]:
    """The cells a chapter marks for projection, in order, with their kind."""
    found = []
    for cell in notebook["cells"]:
        kind = cell["metadata"].get("slide")
        if kind is None:
            continue
        if kind not in KINDS:
            raise ValueError(f"slide marking {kind!r}: expected one of {KINDS}")
        found.append((kind, cell))
    return found


def cell_slide(kind: str, cell: dict, chapter: str) -> str:
    """The ``<section>`` of one marked cell."""
    if kind == "equation":
        body = myst_to_html("".join(cell["source"]))
        return f"<section class=\"equation\"><p class=\"chapter\">{html.escape(chapter)}</p>{body}</section>"
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if kind == "figure" and "image/png" in data:
            alt = cell["metadata"].get("mystnb", {}).get("image", {}).get("alt", chapter)
            png = "".join(data["image/png"]).replace("\n", "")
            return (f"<section class=\"figure\"><p class=\"chapter\">{html.escape(chapter)}</p>"
                    f"<img src=\"data:image/png;base64,{png}\" alt=\"{html.escape(alt)}\">"
                    "</section>")
        if kind == "table" and ("text/html" in data or "text/plain" in data or "text" in output):
            if "text/html" in data:
                body = "".join(data["text/html"])
            else:
                body = f"<pre>{html.escape(''.join(data.get('text/plain') or output['text']))}</pre>"
            return (f"<section class=\"table\"><p class=\"chapter\">{html.escape(chapter)}</p>"
                    f"<div class=\"scroll\">{body}</div></section>")
    raise ValueError(f"{chapter}: a cell marked {kind!r} has no stored {kind}")


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="revealjs/dist/reveal.css">
<link rel="stylesheet" href="revealjs/dist/theme/white.css">
<style>
.reveal {{ font-size: 28px; }}
.reveal .chapter {{ font-size: 0.6em; color: #666; margin: 0 0 0.4em; }}
.reveal section.figure img {{ display: block; margin: 0 auto; max-height: 600px; width: auto; min-height: 420px; }}
.reveal .scroll {{ max-height: 560px; overflow: auto; font-size: 0.55em; }}
.reveal table {{ margin: 0 auto; }}
.reveal section {{ text-align: left; }}
.reveal section.equation {{ font-size: 0.75em; }}
.reveal h1, .reveal h2 {{ text-align: left; text-transform: none; }}
</style>
<script>
window.MathJax = {{ tex: {{ inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]] }},
                   options: {{ skipHtmlTags: ["script", "noscript", "style", "textarea", "pre", "code"] }} }};
</script>
<script src="mathjax/tex-chtml.js"></script>
</head>
<body>
<div class="reveal"><div class="slides">
{slides}
</div></div>
<script src="revealjs/dist/reveal.js"></script>
<script>
Reveal.initialize({{ hash: true, slideNumber: "c/t", width: 1280, height: 760 }}).then(() => {{
  if (window.MathJax && MathJax.typesetPromise) MathJax.typesetPromise();
}});
</script>
</body>
</html>
"""


def deck(session: dict, root: Path = ROOT) -> str:
    """The HTML of one session's deck."""
    slides = []
    chapters = []
    for page in session["pages"]:
        for path in notebooks_of(page, root):
            chapters.append((path, json.loads(path.read_text())))
    names = ", ".join(title(nb) for _, nb in chapters)
    slides.append(f"<section><h1>Week {session['week']}</h1><h2>{html.escape(session['title'])}"
                  f"</h2><p>{html.escape(names)}</p></section>")
    for path, nb in chapters:
        goals = objectives(nb)
        if goals:
            slides.append(f"<section><p class=\"chapter\">{html.escape(title(nb))}</p>"
                          f"<h3>Learning objectives</h3>{myst_to_html(goals)}</section>")
        for kind, cell in marked(nb):
            slides.append(cell_slide(kind, cell, title(nb)))
    if session["ask"]:
        slides.append(f"<section><h3>The question of the week</h3><p>Show {inline(session['show'])}."
                      f"</p><p><strong>Ask:</strong> {inline(session['ask'])}</p></section>")
    return PAGE.format(title=html.escape(f"Week {session['week']}: {session['title']}"),
                       slides="\n".join(slides))


def build(out: Path, root: Path = ROOT) -> list[Path]:
    """Write every deck, an index and the assets to ``out``; the decks."""
    out.mkdir(parents=True, exist_ok=True)
    for name, source in (("revealjs", reveal_folder()), ("mathjax", MATHJAX)):
        if (out / name).exists():
            shutil.rmtree(out / name)
        shutil.copytree(source, out / name, ignore=shutil.ignore_patterns("*.esm.js", "*.map"))
    decks, items = [], []
    for session in sessions(root / "book" / "teaching.md"):
        path = out / f"week{session['week']:02d}.html"
        path.write_text(deck(session, root))
        decks.append(path)
        items.append(f"<li><a href=\"{path.name}\">Week {session['week']}: "
                     f"{html.escape(session['title'])}</a></li>")
    (out / "index.html").write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Slides: Pruning "
        "NLP Models</title></head><body><h1>Slides, one deck per session</h1><ol>"
        + "".join(items) + "</ol></body></html>\n")
    return decks


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    decks = build(Path(argv[0]))
    print(f"{len(decks)} decks written to {Path(argv[0]).resolve()}: open index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
