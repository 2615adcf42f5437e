"""A Sphinx extension of the book: two fixes to the HTML that Jupyter Book writes.

* **Test tags stay out of the page.** myst-nb turns every cell tag into a CSS class of the cell
  (``tag_nbval-check-output``). The nbval tags only tell the test suite which outputs to
  compare; they mean nothing to a reader, so they are removed from the document tree.
* **No script twice.** sphinx-thebe 0.3.1 registers its inline configuration script on every
  ``env-before-read-docs`` event, which fires twice in a Jupyter Book build; the second copy
  re-declares ``const THEBE_JS_URL`` and every page logs a ``SyntaxError``. Exact duplicates
  are dropped from each page's script list.
"""

from docutils import nodes

TEST_TAG_PREFIX = "tag_nbval-"


def hide_test_tags(app, doctree: nodes.document) -> None:
    for node in doctree.findall(nodes.Element):
        classes = node.get("classes", [])
        if any(c.startswith(TEST_TAG_PREFIX) for c in classes):
            node["classes"] = [c for c in classes if not c.startswith(TEST_TAG_PREFIX)]


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # an inline script's filename is None when added to the builder and "" when read back
        # from the registry: the same script either way
        attributes = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", script) or "", tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: later handlers (MathJax's loader) append to this very list


def setup(app):
    app.connect("doctree-read", hide_test_tags)
    # before the handlers that add per-page scripts (only the shared list has duplicates)
    app.connect("html-page-context", drop_duplicate_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
