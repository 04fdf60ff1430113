"""End to end: export from real checkpoints, rate in headless Chromium, download the CSV, analyse it.

Needs /usr/bin/chromium (``apt-get install -y chromium``) and the playwright package (the ``dev``
extra); skipped otherwise. ``playwright install`` is never needed: the system Chromium is used.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from musicdistill.cli import main
from musicdistill.listening.vocabulary import RATINGS_COLUMNS, TRIAL_DIVERSITY, rater_seed, trial_order

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/listening.png")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.is_file(), reason="needs /usr/bin/chromium (apt-get install -y chromium)"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs the playwright package (pip install -e '.[dev]'); never 'playwright install'",
    ),
]


def scripted_score(stimuli: list[str], question: str) -> int:
    """A deterministic rater: the same clip and question always get the same score (passes the attention check)."""
    digest = hashlib.sha256(("+".join(sorted(stimuli)) + question).encode()).digest()
    return 1 + digest[0] % 5


def rate_everything(page, rater: str, screenshot: Path | None) -> int:
    """Enter the rater id, play every clip, answer every question and move on until the end; -> trials done."""
    page.fill("#rater-id", rater)
    page.click("#start")
    done = 0
    while page.is_visible("#trial"):
        clips = [b.get_attribute("data-clip") for b in page.query_selector_all("button.play")]
        assert page.is_disabled("#next")
        for button in page.query_selector_all("button.play"):
            button.click()
        page.wait_for_selector(".scale input:not([disabled])", timeout=10_000)
        for fieldset in page.query_selector_all("fieldset"):
            question = fieldset.query_selector("input").get_attribute("name")
            page.click(f"label[for='{question}-{scripted_score(clips, question)}']")
        if screenshot is not None and done == 0:
            page.screenshot(path=str(screenshot), full_page=True)
        page.click("#next")
        done += 1
    return done


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from test_listening import build_tiny_run, write_listening_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is far faster on a busy machine
    try:
        root = tmp_path_factory.mktemp("e2e")
        run = build_tiny_run(root / "run")
        config = write_listening_config(root / "lt.yaml", run, root / "export")
        assert main(["listening", "export", "--config", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "export"


def test_a_scripted_rater_completes_the_page_and_the_analysis_reads_the_csv(
    exported: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    page_data = json.loads(
        (exported / "raters" / "index.html")
        .read_text(encoding="utf-8")
        .split('<script type="application/json" id="test-data">')[1]
        .split("</script>")[0]
    )
    trials = page_data["trials"]
    ratings_dir = tmp_path / "ratings"
    ratings_dir.mkdir()
    started = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": 960, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto((exported / "raters" / "index.html").as_uri())
            assert page.title() == "Music listening test"
            # the page's JavaScript draws the same per-rater order as the Python reference
            assert page.evaluate("r => window.musicdistillTrialOrder(r)", "R01") == trial_order(
                trials, page_data["order_seed"], "R01"
            )
            page.fill("#rater-id", "not valid!")
            page.click("#start")
            assert page.is_visible("#intro-error") and not page.is_visible("#trial")
            assert rate_everything(page, "R01", SCREENSHOT) == len(trials)
            with page.expect_download() as download:
                page.click("#download")
            csv_path = ratings_dir / download.value.suggested_filename
            download.value.save_as(csv_path)
            assert errors == []
        finally:
            browser.close()
    elapsed = time.perf_counter() - started

    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert csv_path.name == f"ratings_{page_data['test_id']}_R01.csv"
    assert tuple(rows[0]) == RATINGS_COLUMNS
    expected_rows = sum(1 if t["type"] == TRIAL_DIVERSITY else 3 for t in trials)
    assert len(rows) == expected_rows
    order = trial_order(trials, page_data["order_seed"], "R01")
    seen_order = list(dict.fromkeys((int(r["order_index"]), r["stimulus_a"], r["trial_type"]) for r in rows))
    assert [(i + 1, trials[t]["stimuli"][0], trials[t]["type"]) for i, t in enumerate(order)] == seen_order
    assert {r["seed"] for r in rows} == {str(rater_seed(page_data["order_seed"], "R01"))}
    for r in rows:
        stimuli = [s for s in (r["stimulus_a"], r["stimulus_b"]) if s]
        assert int(r["score"]) == scripted_score(stimuli, r["question"])
        assert int(r["plays"]) >= len(stimuli) and r["answered_at"] >= r["started_at"]

    out = tmp_path / "summary"
    assert (
        main(
            [
                "listening",
                "analyze",
                "--key",
                str(exported / "key.csv"),
                "--ratings",
                str(ratings_dir),
                "--out",
                str(out),
                "--bootstrap",
                "200",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_accepted"] == expected_rows and summary["problem_counts"] == {}
    assert summary["attention"]["R01"]["status"] == "pass"
    assert {m["system"] for m in summary["means"]} == {"base_cfg3", "student_nocfg"}
    assert "data:image/png;base64," in (out / "summary.html").read_text()
    assert SCREENSHOT.is_file()
    assert elapsed < 60, f"the browser session took {elapsed:.0f} s"
