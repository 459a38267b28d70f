"""The dashboard in headless Chromium: two recorded runs drawn with the right number of points, a live
append makes the chart grow while the user's zoom is kept, controls and details work, screenshot saved.

Needs Debian's chromium and the Playwright Python package (never `playwright install`):
    apt-get update && apt-get install -y chromium && pip install playwright
Skipped with a reason when either is missing. Screenshot: test-artifacts/dashboard.png (repo root).
"""

import math
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from conftest import train_line  # noqa: E402
from lmforge.monitor.dashboard.server import DashboardServer  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]

POINTS = """([id, run, role]) => (document.getElementById(id).data || [])
    .filter(t => t.meta && t.meta.run === run && t.meta.role === role).map(t => t.x.length)"""


@pytest.fixture
def page():
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        pg = browser.new_page(viewport={"width": 1440, "height": 1000})
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
        yield pg
        browser.close()


def points(page, chart, run, role="raw"):
    return page.evaluate(POINTS, [chart, run, role])


def test_dashboard_in_browser(page, recorded_runs):
    with DashboardServer(recorded_runs) as srv:
        page.goto(srv.url + "/")
        page.wait_for_function("() => window.lmforge && window.lmforge.draws > 0", timeout=30_000)
        page.wait_for_function("() => (document.getElementById('chart-loss').data || []).length >= 4")

        # both runs listed with their status; both drawn with the right number of points
        rows = page.locator("#runs-body tr")
        assert rows.count() == 2
        assert page.locator("tr[data-run=alpha] .status").inner_text() == "finished"
        assert page.locator("tr[data-run=beta] .status").inner_text() == "running"
        assert points(page, "chart-loss", "alpha") == [40] and points(page, "chart-loss", "beta") == [25]
        assert points(page, "chart-loss", "alpha", "smooth") == [40]  # smoothing 0.6 by default
        assert points(page, "chart-val", "alpha") == [4] and points(page, "chart-val", "beta") == [5]
        assert points(page, "chart-lr", "beta") == [25] and points(page, "chart-grad", "alpha") == [40]
        assert points(page, "chart-tps", "alpha") == [40] and points(page, "chart-mem", "alpha", "rss_mb") == [8]
        assert points(page, "chart-loss", "alpha", "anomaly") == [1]

        # the user zooms; the run keeps training; the chart grows and the zoom stays
        page.evaluate("Plotly.relayout('chart-loss', {'xaxis.range': [5, 15]})")
        t_append = time.monotonic()
        with open(recorded_runs / "beta" / "metrics.jsonl", "a") as f:
            f.write("".join(train_line(s, time.time()) + "\n" for s in range(26, 36)))
        page.wait_for_function(f"() => ({POINTS})(['chart-loss', 'beta', 'raw']).join() === '35'", timeout=15_000)
        grew_after = time.monotonic() - t_append
        assert page.evaluate("document.getElementById('chart-loss').layout.xaxis.range") == [5, 15]
        assert points(page, "chart-loss", "alpha") == [40]

        # controls: no smoothing -> no smoothed traces; x-axis in tokens -> x values are token counts
        page.locator("#smoothing").fill("0")
        assert points(page, "chart-loss", "alpha", "smooth") == []
        page.select_option("#xaxis", "tokens")
        xs = page.evaluate("document.getElementById('chart-loss').data.find(t => t.meta.run === 'alpha').x")
        assert xs[:3] == [2048, 4096, 6144]
        page.select_option("#xaxis", "step")
        page.locator("#smoothing").fill("0.6")

        # details of alpha: anomalies, samples (text, not HTML), eval and data reports
        page.locator("tr[data-run=alpha] td.name a").click()
        assert "exploding" in page.locator("#tab-anomalies").inner_text()
        page.locator(".tab[data-tab=samples]").click()
        page.wait_for_function("() => document.getElementById('tab-samples').innerText.includes('To be')")
        assert "<script>alert(1)</script>" in page.locator("#tab-samples").inner_text()  # shown as text
        page.locator(".tab[data-tab=data]").click()
        page.wait_for_function("() => document.getElementById('tab-data').innerText.includes('documents_kept')")
        page.locator(".tab[data-tab=eval]").click()
        page.wait_for_function("() => document.getElementById('tab-eval').innerText.includes('perplexity')")
        assert "10.44" in page.locator("#tab-eval").inner_text()

        # the per-layer heat map of the run in Details: layers in model order x the logged steps
        heat = "() => (document.getElementById('chart-layers').data || []).find(t => t.type === 'heatmap')"
        page.wait_for_function(f"() => ({heat})() !== undefined")
        hm = page.evaluate(heat)
        assert hm["x"] == [10, 20, 30, 40]
        assert hm["y"] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6",
                           "blocks.7", "blocks.8", "blocks.9", "blocks.10", "blocks.11", "ln_f", "wte"]
        assert hm["z"][0][0] == pytest.approx(math.log10(0.2 / 10))  # grad_norm/blocks.0 at step 10, log10
        page.select_option("#layers-metric", "update_ratio/")
        assert page.evaluate(f"() => ({heat})().z[0][0]") == pytest.approx(math.log10(2e-3))
        assert "train loss (smoothed)" in page.locator("#runs-table thead").inner_text().lower()

        page.locator(".tab[data-tab=config]").click()
        page.wait_for_function("() => document.getElementById('tab-config').innerText.includes('lr: 0.003')")

        # long runs are min/max-decimated for drawing: fewer points, the spike still there
        got = page.evaluate("""() => { const x = [...Array(10000).keys()], y = x.map(i => i === 7777 ? 99 : 1);
                                        const [dx, dy] = decimate(x, y); return [dx.length, Math.max(...dy)]; }""")
        assert got[0] <= 4000 and got[1] == 99

        page.locator(".tab[data-tab=eval]").click()
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.mouse.move(0, 0)  # no hover toolbar in the picture
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert page.errors == []
        print(f"chart grew {grew_after:.2f} s after the append; screenshot {ARTIFACTS / 'dashboard.png'}")
