"""The slide decks (tools/slides.py): one per session of the teaching guide, built from the
cells the chapters mark, with their assets beside them and nothing to fetch from the network.
(`make check-slides` opens them in Chromium.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import slides

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def decks(tmp_path_factory) -> list[Path]:
    return slides.build(tmp_path_factory.mktemp("slides"))


def test_a_deck_for_every_session_of_the_guide(decks):
    sessions = slides.sessions()
    assert [s["week"] for s in sessions] == list(range(1, 9))
    assert [d.name for d in decks] == [f"week{w:02d}.html" for w in range(1, 9)]
    for session, deck in zip(sessions, decks):
        text = deck.read_text()
        assert text.count("<section") >= 4, deck.name
        assert "Learning objectives" in text and session["title"].split(":")[0] in text
        assert "<strong>Ask:</strong>" in text
        assert "data:image/png;base64," in text, f"{deck.name} shows no figure"


def test_the_decks_fetch_nothing(decks):
    folder = decks[0].parent
    assert (folder / "revealjs" / "dist" / "reveal.js").exists()
    assert (folder / "mathjax" / "tex-chtml.js").exists()
    for deck in [*decks, folder / "index.html"]:
        text = deck.read_text()
        links = re.findall(r'(?:src|href)="([^"]+)"', text)
        outside = [link for link in links if re.match(r"[a-z]+:", link)
                   and not link.startswith("data:")]
        assert not outside, (deck.name, outside)
        for link in links:
            if not link.startswith("data:"):
                assert (folder / link.split("#")[0]).exists(), (deck.name, link)


def test_the_maths_reaches_mathjax_intact():
    html = slides.myst_to_html(r"The mask $M_{ij} = 1$ and $$\tau_s = w_{(k)}$$ by {cite}`han2015`.")
    assert r"\(M_{ij} = 1\)" in html and r"\[\tau_s = w_{(k)}\]" in html
    assert "[han2015]" in html and "<em>" not in html


def test_a_wrong_marking_is_refused():
    notebook = {"cells": [{"cell_type": "code", "metadata": {"slide": "picture"}, "source": []}]}
    with pytest.raises(ValueError, match="slide marking 'picture'"):
        slides.marked(notebook)
