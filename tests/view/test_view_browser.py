"""`vlmbench view` in a real browser: the system's Chromium driven by Playwright, against the app served on
a free localhost port. Skipped, with the reason, only where Playwright or Chromium is missing (CI and
`make system-deps` install Chromium). Set VLMBENCH_DOCS_SCREENSHOT=docs/images/viewer.png to keep the
screenshot that docs/viewer.md shows."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
from view_helpers import SCRIPT_ANSWER, compare_flips, make_runs, predictions

from vlmbench.analysis.explorer import load_explorer
from vlmbench.analysis.explorer_app import create_app

pytestmark = pytest.mark.slow(seconds=20)

CHROMIUM = os.environ.get("VLMBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
    )
    if CHROMIUM is None:
        pytest.skip("no Chromium here: install the Debian/Ubuntu package chromium (make system-deps does)")
    with sync_api.sync_playwright() as p:
        # the system's browser: tests never download one (`playwright install` needs the internet)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The runs of view_helpers, served by the app as `vlmbench view` serves it; yields (base URL, runs)."""
    from werkzeug.serving import make_server

    root = tmp_path_factory.mktemp("browser")
    dirs = make_runs(root)
    server = make_server("127.0.0.1", 0, create_app(load_explorer([root / "runs"])), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", dirs
    server.shutdown()
    thread.join()


@pytest.fixture
def page(browser, served):
    """A fresh page that records console errors, uncaught exceptions and dialogs (an alert would be one)."""
    context = browser.new_context(viewport={"width": 1400, "height": 6000})
    tab = context.new_page()
    tab.problems = []
    tab.on(
        "console", lambda m: tab.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    tab.on("pageerror", lambda e: tab.problems.append(f"page error: {e}"))
    tab.on("dialog", lambda d: (tab.problems.append(f"dialog: {d.message}"), d.dismiss()))
    yield tab
    context.close()


def _shown(page) -> list[str]:
    return page.eval_on_selector_all("tr.sample", "rows => rows.map(r => r.dataset.sample)")


def _apply(page):
    with page.expect_navigation():
        page.click("#f-apply")


def test_page_loads_clean_with_thumbnails(page, served):
    base, _ = served
    page.goto(f"{base}/?task=shapes")
    assert len(_shown(page)) == 25
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    widths = page.eval_on_selector_all("img.thumb", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 24 and all(w > 0 for w in widths)  # the sample whose image is missing has none
    assert page.problems == []


def test_each_filter_shows_the_right_rows(page, served):
    base, dirs = served
    reads = predictions(dirs["shapes/reads-question"])
    colour = predictions(dirs["shapes/looks-at-colour"])
    page.goto(f"{base}/?task=shapes")
    page.check("#f-difficulty-5")
    _apply(page)
    assert _shown(page) == [s for s, r in reads.items() if r["difficulty"] == 5]
    # the questions reads-question got wrong at difficulty 5: the "few clicks"
    page.select_option('select[data-model="reads-question"]', "reads-question=wrong")
    _apply(page)
    wrong5 = [
        s
        for s, r in reads.items()
        if r["difficulty"] == 5 and r["status"] == "ok" and r["scores"]["exact_match"] == 0
    ]
    assert _shown(page) == wrong5 and len(wrong5) == 3
    if os.environ.get("VLMBENCH_DOCS_SCREENSHOT"):
        page.set_viewport_size({"width": 1400, "height": 900})
        page.screenshot(path=os.environ["VLMBENCH_DOCS_SCREENSHOT"], full_page=False)
    page.goto(f"{base}/?task=shapes")
    page.select_option('select[data-model="reads-question"]', "reads-question=skipped")
    _apply(page)
    assert _shown(page) == [s for s, r in reads.items() if r["status"] == "skipped"]
    assert "does not exist" in page.inner_text('td[data-model="reads-question"] .reason')
    page.goto(f"{base}/?task=shapes&model=looks-at-colour&model=reads-question")
    page.check("#f-disagree")
    _apply(page)
    assert _shown(page) == [
        s for s in reads if reads[s]["status"] == "ok" and reads[s]["answer"] != colour[s]["answer"]
    ]
    page.goto(f"{base}/?task=shapes")
    page.fill("#f-search", "item 1")
    _apply(page)
    assert _shown(page) == [s for s, r in reads.items() if "item 1" in r["question"]]
    page.goto(f"{base}/?task=shapes")
    page.select_option("#f-sort", "exact_match:looks-at-colour")
    page.select_option("#f-order", "desc")
    _apply(page)
    shown = _shown(page)
    right = [s for s, r in colour.items() if r["scores"].get("exact_match") == 1.0]
    assert shown[: len(right)] == right and len(shown) == 25
    page.select_option("#f-task", "other")
    with page.expect_navigation():
        page.click("#f-task-go")
    assert _shown(page) == list(predictions(dirs["other/prior"]))
    assert page.problems == []


def test_side_by_side_lists_the_flips_of_compare(page, served):
    base, dirs = served
    expected = compare_flips(dirs["shapes/looks-at-colour"], dirs["shapes/reads-question"])
    page.goto(f"{base}/?task=shapes")
    page.select_option("#f-pair", "looks-at-colour vs reads-question")
    _apply(page)
    assert _shown(page)[: len(expected)] == expected
    assert page.inner_text("#flip-count") == str(len(expected))
    assert page.eval_on_selector_all(
        "tr.sample", "rows => rows.filter(r => r.querySelector('td.flip').textContent).length"
    ) == len(expected)
    assert page.problems == []


def test_markup_in_answers_is_text(page, served):
    base, _ = served
    page.goto(f"{base}/?task=shapes&model=writes-markup")
    texts = page.eval_on_selector_all(
        'td[data-model="writes-markup"] .text', "ts => ts.map(t => t.textContent)"
    )
    assert texts.count(SCRIPT_ANSWER) == 12 and texts.count("<img/src=x/onerror=alert(2)>") == 12
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.querySelectorAll('img[onerror], img[src=\"x\"]').length") == 0
    page.wait_for_timeout(200)  # an alert() would have opened a dialog by now
    assert page.problems == []


def test_path_traversal_is_404(page, served):
    base, _ = served
    for path in (
        "/image/1/..%2Fshapes.yaml",
        "/image/1/%2e%2e/%2e%2e/shapes/shapes.yaml",
        "/thumb/1/..%2F..%2Fshapes%2Fdata.csv",
    ):
        assert page.request.get(base + path).status == 404, path
    assert page.request.get(base + "/image/1/00/img000.jpg").status == 200
