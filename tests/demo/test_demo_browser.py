"""Browser test of ``musicdistill demo``: a real server on 127.0.0.1 driven by headless Chromium.

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the Python
``playwright`` package (never ``playwright install``: the system browser is used). The server is the
real command in a subprocess, serving tiny checkpoints; the test stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_COPY = Path("/tmp/demo.png")
STARTUP_TIMEOUT_S = 120.0


def _missing_browser() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install playwright; the system Chromium is used)"
    try:
        import gradio  # noqa: F401
    except ImportError:
        return "gradio is missing (pip install 'musicdistill[demo]')"
    return None


if (_reason := _missing_browser()) is not None:
    pytest.skip(_reason, allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_http(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the demo exited with code {proc.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(
        f"the demo did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{log_path.read_text(errors='replace')}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``musicdistill demo --run <tiny run>`` on a free port of 127.0.0.1; yields (URL, log file), then stops."""
    from test_demo import build_demo_run

    tmp = tmp_path_factory.mktemp("demo_e2e")
    run = build_demo_run(tmp / "run")
    port = _free_port()
    log_path = tmp / "server.log"
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
    }
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "musicdistill",
                "demo",
                "--run",
                str(run["root"]),
                "--port",
                str(port),
                "--device",
                "cpu",
                "--threads",
                "1",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_http(url, proc, log_path)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _as_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pytest.fail(f"expected a number in the read-out, got {text!r}")


def test_browser_generates_with_the_slider_and_shows_numbers(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from musicdistill.demo.app import EXAMPLE_PROMPTS

    url, server_log = server

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_text(EXAMPLE_PROMPTS[1], exact=True).click()  # the examples' loader is API-private
            expect(page.locator("#prompt textarea")).to_have_value(EXAMPLE_PROMPTS[1])
            page.locator("#prompt textarea").fill("a fast square lead melody in E minor with rock drums")
            page.locator("#lam input[type=range]").fill("0.7")
            expect(page.locator("#weights")).to_contain_text("Weights set to λ = 0.7")
            variations = page.locator("#variations input[type=number]")
            variations.fill("3")
            variations.press("Enter")
            page.locator("#compare input[type=checkbox]").check()
            page.locator("#generate").click()

            expect(page.locator("#readout table")).to_be_visible()
            for prefix in ("student", "teacher"):
                for i in range(3):
                    expect(
                        page.locator(
                            f"#{prefix}-audio-{i} audio, #{prefix}-audio-{i} .waveform-container"
                        ).first
                    ).to_be_attached()
                    expect(page.locator(f"#{prefix}-spec-{i} img")).to_be_visible()
                expect(page.locator(f"#{prefix}-audio-3")).to_be_hidden()
            rows = page.locator("#readout table tbody tr")
            expect(rows).to_have_count(2)
            cells = [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(2)]
            assert [r[0] for r in cells] == ["student", "CFG teacher"] and [r[2] for r in cells] == ["1", "2"]
            assert "λ=0.7" in cells[0][1]
            for row in cells:
                seconds, frames_per_s, _, diversity = (_as_number(c) for c in row[3:7])
                assert seconds > 0 and frames_per_s > 0 and 0.0 <= diversity <= 2.0
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copyfile(shot, SCREENSHOT_COPY)

            page.locator("#prompt textarea").fill("")
            page.locator("#generate").click()
            expect(page.locator("#message")).to_contain_text("prompt is empty")
            expect(page.locator("#readout table")).to_be_visible()  # the previous results stay
        except Exception:
            failure = tmp_path / "failure.png"
            page.screenshot(path=str(failure), full_page=True)
            print(
                f"screenshot of the failing page: {failure}\n"
                f"read-out: {page.locator('#readout').inner_text()!r}"
                f"\nweights: {page.locator('#weights').inner_text()!r}\nserver log:\n"
                f"{server_log.read_text(errors='replace')[-4000:]}"
            )
            raise
        finally:
            browser.close()


def test_the_files_endpoint_returns_wavs_and_a_readout_to_a_client(server):
    from gradio_client import Client

    url, _ = server
    client = Client(url, verbose=False)
    files, readout = client.predict(
        "a calm piano melody", 0.5, 2, 0.5, 3, 1.0, False, 3.0, api_name="/generate_files"
    )
    paths = [Path(f["path"] if isinstance(f, dict) else f) for f in files]
    assert len(paths) == 2 and all(p.read_bytes()[:4] == b"RIFF" for p in paths)
    assert readout["request"]["lam"] == 0.5 and readout["request"]["num_variations"] == 2
    (student,) = readout["systems"]
    assert student["rows_per_sample"] == 1 and len(student["files"]) == 2 and student["sampling_seconds"] > 0
    with pytest.raises(Exception, match="prompt"):
        client.predict("", 0.5, 2, 0.5, 3, 1.0, False, 3.0, api_name="/generate_files")
