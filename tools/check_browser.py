"""Open every page of the built book in headless Chromium, offline, as a reader would (``make check-browser``).

For each page of ``_build/html``, at a desktop width (1280 px) and a phone width (390 px), with
every host name unresolvable (so any request to the internet fails and is reported):

* no console error, uncaught exception or failed request;
* the maths is typeset (MathJax left no raw ``\\(``/``\\[`` in the text);
* on the phone, the menu button opens the chapter list; on the desktop, it hides the sidebar;
* on the desktop, no code cell, text output or display equation is wider than the column
  (a reader would have to scroll it sideways; tables of numbers may scroll).

Screenshots of the start page (phone, menu open) and of chapters 4 and 5 (desktop) are saved in
``_build/browser/`` to be looked at. The browser is driven over the Chrome DevTools Protocol
with tornado's websocket client. Where no Chromium is installed, the check is skipped with a
message (exit 0); install Debian's ``chromium`` package to run it.

Usage: ``python tools/check_browser.py [page.html ...]`` (default: every page).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tornado.websocket import websocket_connect

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "browser"
VIEWPORTS = {"desktop": (1280, 800, False), "phone": (390, 844, True)}
BROWSERS = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
SHOT_PAGES = {"index.html": "phone", "notebooks/04_l1_l2.html": "desktop",
              "notebooks/05_cutting.html": "desktop"}

# The visible sidebar toggle (the theme may render more than one button with the class).
_MENU_STATE = """
(() => {
  const sidebar = document.querySelector('#pst-primary-sidebar, .bd-sidebar-primary');
  if (!sidebar) return {error: 'no primary sidebar'};
  const r = sidebar.getBoundingClientRect();
  const style = getComputedStyle(sidebar);
  const visible = style.visibility !== 'hidden' && style.display !== 'none' && r.width > 50
                  && r.right > 50 && r.left < window.innerWidth - 50;
  const links = sidebar.querySelectorAll('a.reference.internal').length;
  return {visible, links, left: r.left, width: r.width};
})()
"""
_CLICK_MENU = """
(() => {
  const buttons = [...document.querySelectorAll('.primary-toggle, label[for="__primary"], '
                                                + 'button.sidebar-toggle')];
  const shown = buttons.filter(b => b.offsetParent !== null && b.getBoundingClientRect().width > 0);
  if (!shown.length) return 'no visible menu button';
  shown[0].click();
  return 'clicked ' + (shown[0].className || shown[0].tagName);
})()
"""
_RAW_MATH = """
(() => {
  const article = document.querySelector('article') || document.body;
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container').forEach(e => e.remove());
  const text = clone.innerText;
  const raw = (text.match(/\\\\\\(|\\\\\\[|\\$\\$/g) || []).length;
  return {raw, typeset: document.querySelectorAll('mjx-container').length,
          mathjax: typeof window.MathJax !== 'undefined'};
})()
"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """One browser tab, driven over the DevTools protocol."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id, self.events = ws, 0, []

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.write_message(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.read_message())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        return result.get("result", {}).get("value")

    async def drain(self, seconds: float) -> None:
        """Collect events for ``seconds`` (console messages, exceptions, load events)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(self.ws.read_message(), timeout=left)
            except asyncio.TimeoutError:
                return
            self.events.append(json.loads(msg))

    async def load(self, url: str) -> None:
        self.events.clear()
        await self.call("Page.navigate", url=url)
        end = time.monotonic() + 20
        while time.monotonic() < end and not any(e.get("method") == "Page.loadEventFired"
                                                 for e in self.events):
            await self.drain(0.2)
        await self.drain(1.0)  # MathJax typesets after the load event

    def errors(self) -> list[str]:
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                          for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        return found

    async def screenshot(self, path: Path) -> None:
        data = await self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

# Code, text outputs and display equations wider than their column at the desktop width.
_OVERFLOW = """
(() => {
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
})()
"""


async def check(browser: str, pages: list[Path]) -> list[str]:
    port = free_port()
    profile = tempfile.mkdtemp(prefix="nlprune-chromium-")
    proc = subprocess.Popen(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--remote-debugging-port={port}",
         "--allow-file-access-from-files", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    problems: list[str] = []
    try:
        targets = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as r:
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if not targets:
            return ["Chromium did not start (no DevTools page target)"]
        ws = await websocket_connect(targets[0]["webSocketDebuggerUrl"], max_message_size=64 * 2**20)
        page = Page(ws)
        for domain in ("Page", "Runtime", "Log"):
            await page.call(f"{domain}.enable")
        for view, (width, height, mobile) in VIEWPORTS.items():
            await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                            deviceScaleFactor=1, mobile=mobile)
            for path in pages:
                name = path.relative_to(HTML).as_posix()
                await page.load(path.as_uri())
                where = f"{view} {name}"
                problems += [f"{where}: {e}" for e in page.errors()]
                math = await page.evaluate(_RAW_MATH)
                if math and math["raw"]:
                    problems.append(f"{where}: {math['raw']} raw TeX delimiters left in the text")
                if view == "desktop":
                    wide = await page.evaluate(_OVERFLOW)
                    problems += [f"{where}: wider than the column: {w}" for w in wide or []]
                if SHOT_PAGES.get(name) == view and view == "desktop":
                    await page.screenshot(SHOTS / f"{view}-{path.stem}.png")
            problems += await check_menu(page, view)
        ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
    return problems


async def check_menu(page: Page, view: str) -> list[str]:
    """The menu button: on a phone it must open the chapter list, on a desktop hide the sidebar."""
    problems = []
    for name in ("index.html", "notebooks/02_magnitude_pruning.html"):
        await page.load((HTML / name).as_uri())
        before = await page.evaluate(_MENU_STATE)
        clicked = await page.evaluate(_CLICK_MENU)
        await page.drain(0.8)
        after = await page.evaluate(_MENU_STATE)
        where = f"{view} {name}: menu button"
        if not str(clicked).startswith("clicked"):
            problems.append(f"{where}: {clicked}")
            continue
        if view == "phone":
            if before.get("visible"):
                problems.append(f"{where}: the sidebar covers the page before the menu is opened")
            if not (after.get("visible") and after.get("links", 0) >= 6):
                problems.append(f"{where} did not open the chapter list ({after})")
            elif name == "index.html":
                await page.screenshot(SHOTS / "phone-menu-open.png")
        else:
            if not before.get("visible"):
                problems.append(f"{where}: the sidebar is not shown on the desktop ({before})")
            if after.get("visible"):
                problems.append(f"{where} did not hide the sidebar ({after})")
    return problems


def main(argv: list[str]) -> int:
    browser = find_browser()
    if browser is None:
        print("check-browser: SKIPPED, no Chromium found (tried " + ", ".join(BROWSERS) + "). "
              "Install Debian's `chromium` package to run the browser check.")
        return 0
    if not (HTML / "index.html").exists():
        print(f"check-browser: {HTML} holds no built book; run `make book` first.")
        return 1
    pages = [Path(a).resolve() for a in argv] or sorted(
        p for p in HTML.rglob("*.html") if not ({"_static", "_sources"} & set(p.parts)))
    problems = asyncio.run(check(browser, pages))
    for p in problems:
        print("FAIL", p)
    print(f"check-browser: {len(pages)} pages x {len(VIEWPORTS)} widths with {Path(browser).name}, "
          f"network blocked: {len(problems)} problems; screenshots in {SHOTS.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
