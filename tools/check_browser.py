"""Open every page of the built book in headless Chromium, offline, as a reader would (``make check-browser``).

For each page of ``_build/html``, at a desktop width (1280 px) and a phone width (390 px), with
every host name unresolvable (so any request to the internet fails and is reported):

* no console error, uncaught exception or failed request;
* the maths is typeset (MathJax left no raw ``\\(``/``\\[`` in the text);
* on the phone, the menu button opens the chapter list; on the desktop, it hides the sidebar
  (clicked with the mouse, so a button covered by something else fails);
* on the desktop, no code cell, text output or display equation is wider than the column
  (a reader would have to scroll it sideways; tables of numbers may scroll).

Screenshots of the start page (phone, menu open) and of chapters 4 and 5 (desktop) are saved in
``_build/browser/`` to be looked at. Playwright drives the Chromium installed on the machine
(Debian's ``chromium`` package): its wheel carries its own driver, so nothing is downloaded, and
``playwright install`` is never needed. Where no Chromium is installed, the check is skipped with
a message (exit 0).

Usage: ``python -m tools.check_browser [page.html ...]`` (default: every page);
``python -m tools.check_browser --slides [FOLDER]`` opens every deck of ``make slides`` instead
(default ``_build/slides``): offline, reveal.js started, every slide stepped through, the maths
typeset, every figure shown, and no console error or outside request.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "browser"
VIEWPORTS = {"desktop": (1280, 800, False), "phone": (390, 844, True)}
BROWSERS = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
SHOT_PAGES = {"index.html": "phone", "notebooks/04_l1_l2.html": "desktop",
              "notebooks/05_cutting.html": "desktop"}
# Headless, offline: every host name unresolvable; no background requests of Chromium's own.
CHROMIUM_FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
                  "--allow-file-access-from-files"]
LOAD_TIMEOUT_MS = 20_000
MATHJAX_MS = 1_000  # MathJax typesets after the load event
MENU_MS = 800  # the sidebar's transition after a click
# The theme may render more than one button with these classes: the visible one is clicked.
MENU_BUTTONS = '.primary-toggle, label[for="__primary"], button.sidebar-toggle'

# Where the primary sidebar is, and whether a reader sees it.
_MENU_STATE = """
() => {
  const sidebar = document.querySelector('#pst-primary-sidebar, .bd-sidebar-primary');
  if (!sidebar) return {error: 'no primary sidebar'};
  const r = sidebar.getBoundingClientRect();
  const style = getComputedStyle(sidebar);
  const visible = style.visibility !== 'hidden' && style.display !== 'none' && r.width > 50
                  && r.right > 50 && r.left < window.innerWidth - 50;
  const links = sidebar.querySelectorAll('a.reference.internal').length;
  return {visible, links, left: r.left, width: r.width};
}
"""
_RAW_MATH = """
() => {
  const article = document.querySelector('article') || document.body;
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container').forEach(e => e.remove());
  const text = clone.innerText;
  const raw = (text.match(/\\\\\\(|\\\\\\[|\\$\\$/g) || []).length;
  return {raw, typeset: document.querySelectorAll('mjx-container').length,
          mathjax: typeof window.MathJax !== 'undefined'};
}
"""

# Code, text outputs and display equations wider than their column at the desktop width.
_OVERFLOW = """
() => {
  const wide = [];
  const article = document.querySelector('article') || document.body;
  const longest = e => (e.innerText || e.textContent || '').split('\\n')
                         .sort((a, b) => b.length - a.length)[0].slice(0, 70);
  for (const [kind, selector] of [['code', '.cell_input pre'], ['output', '.cell_output pre']]) {
    article.querySelectorAll(selector).forEach(e => {
      if (e.scrollWidth > e.clientWidth + 1)
        wide.push(`${kind} ${e.scrollWidth}>${e.clientWidth}px: ${longest(e)}`);
    });
  }
  article.querySelectorAll('mjx-container[display="true"]').forEach(e => {
    const math = e.querySelector('mjx-math');
    const width = math ? Math.ceil(math.getBoundingClientRect().width) : 0;
    if (width > e.clientWidth + 1)
      wide.push(`equation ${width}>${e.clientWidth}px: ${(e.getAttribute('aria-label') || '').slice(0, 70)}`);
  });
  return wide;
}
"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class Tab:
    """One page at one viewport, with the errors it reported since it last loaded."""

    def __init__(self, browser: Browser, width: int, height: int, mobile: bool) -> None:
        context = browser.new_context(viewport={"width": width, "height": height},
                                      device_scale_factor=1, is_mobile=mobile)
        self.page: Page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(
            f"exception: {error.stack or error.message}"))
        self.page.on("console", self._console)

    def _console(self, message) -> None:
        # console.error and console.assert calls, and the browser's own error log (a failed
        # request: "Failed to load resource: net::ERR_NAME_NOT_RESOLVED", with its URL)
        if message.type in ("error", "assert"):
            url = message.location.get("url", "")
            self.errors.append(f"console.{message.type}: {message.text} {url}".rstrip())

    def load(self, path: Path) -> None:
        self.errors.clear()
        try:
            self.page.goto(path.as_uri(), wait_until="load", timeout=LOAD_TIMEOUT_MS)
        except PlaywrightTimeout:
            self.errors.append(f"not loaded within {LOAD_TIMEOUT_MS / 1000:.0f} s")
        self.page.wait_for_timeout(MATHJAX_MS)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=path)


def check(browser_path: str, pages: list[Path]) -> list[str]:
    problems: list[str] = []
    with sync_playwright() as playwright:
        # Playwright hides scrollbars in headless mode; a reader's browser shows them.
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS,
                                             ignore_default_args=["--hide-scrollbars"])
        try:
            for view, (width, height, mobile) in VIEWPORTS.items():
                tab = Tab(browser, width, height, mobile)
                for path in pages:
                    name = path.relative_to(HTML).as_posix()
                    tab.load(path)
                    where = f"{view} {name}"
                    problems += [f"{where}: {e}" for e in tab.errors]
                    math = tab.page.evaluate(_RAW_MATH)
                    if math and math["raw"]:
                        problems.append(f"{where}: {math['raw']} raw TeX delimiters left in the text")
                    if view == "desktop":
                        wide = tab.page.evaluate(_OVERFLOW)
                        problems += [f"{where}: wider than the column: {w}" for w in wide or []]
                    if SHOT_PAGES.get(name) == view and view == "desktop":
                        tab.screenshot(SHOTS / f"{view}-{path.stem}.png")
                problems += check_menu(tab, view)
                tab.page.context.close()
        finally:
            browser.close()
    return problems


def check_menu(tab: Tab, view: str) -> list[str]:
    """The menu button: on a phone it must open the chapter list, on a desktop hide the sidebar."""
    problems = []
    for name in ("index.html", "notebooks/02_magnitude_pruning.html"):
        tab.load(HTML / name)
        where = f"{view} {name}: menu button"
        before = tab.page.evaluate(_MENU_STATE)
        buttons = tab.page.locator(MENU_BUTTONS).filter(visible=True)
        if buttons.count() == 0:
            problems.append(f"{where}: no visible menu button")
            continue
        loaded = len(tab.errors)  # the page's own errors are reported by `check`
        try:
            buttons.first.click(timeout=5_000)
        except PlaywrightTimeout as error:
            problems.append(f"{where}: not clickable ({error.message.splitlines()[0]})")
            continue
        tab.page.wait_for_timeout(MENU_MS)
        after = tab.page.evaluate(_MENU_STATE)
        if view == "phone":
            if before.get("visible"):
                problems.append(f"{where}: the sidebar covers the page before the menu is opened")
            if not (after.get("visible") and after.get("links", 0) >= 6):
                problems.append(f"{where} did not open the chapter list ({after})")
            elif name == "index.html":
                tab.screenshot(SHOTS / "phone-menu-open.png")
        else:
            if not before.get("visible"):
                problems.append(f"{where}: the sidebar is not shown on the desktop ({before})")
            if after.get("visible"):
                problems.append(f"{where} did not hide the sidebar ({after})")
        problems += [f"{where}: {e}" for e in tab.errors[loaded:]]  # raised by the click
    return problems


_DECK = """
() => {
  if (typeof Reveal === 'undefined' || !Reveal.isReady()) return {error: 'reveal.js did not start'};
  const slides = Reveal.getTotalSlides();
  const text = [...document.querySelectorAll('.slides section')].map(s => {
    const clone = s.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, mjx-container').forEach(e => e.remove());
    return clone.textContent;
  }).join(' ');
  const raw = (text.match(/\\\\\\(|\\\\\\[|\\$\\$/g) || []).length;
  const images = [...document.querySelectorAll('.slides img')];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  return {slides, raw, typeset: document.querySelectorAll('mjx-container').length,
          images: images.length, broken};
}
"""


def check_slides(browser_path: str, decks: list[Path]) -> list[str]:
    """Each deck at the desktop width, offline: no page error or outside request, reveal.js
    started, every slide visited, the maths typeset and every figure loaded."""
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        try:
            width, height, mobile = VIEWPORTS["desktop"]
            tab = Tab(browser, width, height, mobile)
            for path in decks:
                tab.load(path)
                state = tab.page.evaluate(_DECK)
                where = f"slides {path.name}"
                if "error" in state:
                    problems.append(f"{where}: {state['error']}")
                else:
                    for _ in range(state["slides"]):  # every slide, as a teacher would step
                        tab.page.evaluate("() => Reveal.next()")
                    tab.page.wait_for_timeout(MATHJAX_MS)
                    state = tab.page.evaluate(_DECK)
                    if state["raw"]:
                        problems.append(f"{where}: {state['raw']} raw TeX delimiters left")
                    if state["broken"]:
                        problems.append(f"{where}: {state['broken']} figures not shown")
                    if state["slides"] < 4:
                        problems.append(f"{where}: only {state['slides']} slides")
                problems += [f"{where}: {e}" for e in tab.errors]
            tab.page.context.close()
        finally:
            browser.close()
    return problems


def _report(problems: list[str], summary: str) -> int:
    for p in problems:
        print("FAIL", p)
    print(f"{summary}, network blocked: {len(problems)} problems")
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    browser = find_browser()
    slides = argv[:1] == ["--slides"]
    if browser is None:
        print(f"check-browser{' --slides' if slides else ''}: SKIPPED, no Chromium found (tried "
              + ", ".join(BROWSERS) + "). Install Debian's `chromium` package to run it.")
        return 0
    if slides:
        folder = Path(argv[1] if len(argv) > 1 else ROOT / "_build" / "slides").resolve()
        decks = sorted(folder.glob("week*.html"))
        if not decks:
            print(f"check-browser --slides: no decks in {folder}; run `make slides` first.")
            return 1
        return _report(check_slides(browser, decks), f"check-browser --slides: {len(decks)} "
                       f"decks with {Path(browser).name}")
    if not (HTML / "index.html").exists():
        print(f"check-browser: {HTML} holds no built book; run `make book` first.")
        return 1
    pages = [Path(a).resolve() for a in argv] or sorted(
        p for p in HTML.rglob("*.html") if not ({"_static", "_sources"} & set(p.parts)))
    return _report(check(browser, pages), f"check-browser: {len(pages)} pages x {len(VIEWPORTS)} "
                   f"widths with {Path(browser).name} (screenshots in {SHOTS.relative_to(ROOT)})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
