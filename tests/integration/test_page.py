"""The web page in a real headless Chromium (Debian's, driven by Playwright) against a live server.

Screenshots go to test-artifacts/ (kept by CI as artifacts, ignored by git).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from optascan import Engine
from optascan.server.service import ServerSettings, Service
from optascan.testing.live_server import LiveServer
from optascan.testing.scripted import ScriptedBackend, byte_tokens

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("OPTASCAN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="no chromium here (CI installs it: apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert errors == []  # no uncaught script errors on the page


class SlowScripted:
    """The "slow" model: a scripted backend behind the server's load seam, one token per 20 ms, never ending
    on its own, so a cancel from the page is the only thing that can stop it (steps_run shows when it did)."""

    def __init__(self) -> None:
        ids, decode = byte_tokens("word " * 2000)
        self.backend = ScriptedBackend(ids, decode, step=lambda i: time.sleep(0.02))


@pytest.fixture(scope="module")
def server(tiny_dir):
    slow = SlowScripted()
    settings = ServerSettings(models=["demo", "slow", str(tiny_dir("llava"))])
    real_load = Service(settings)._load

    def load(name: str) -> Engine:
        return Engine(slow.backend, name="slow") if name == "slow" else real_load(name)

    with LiveServer(settings, Service(settings, load=load)) as live:
        live.slow = slow
        live.flow_model = str(tiny_dir("llava"))
        yield live


def scan(page, server, goal: str, *, model: str = "demo", kind: str = "ask", photo: bool = True) -> None:
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    if photo:
        page.set_input_files("#photo", str(ROOT / "examples/shapes.jpg"))
        page.wait_for_selector("#preview:not([hidden])")
    page.fill("#goal", goal)
    page.select_option("#model", model)
    page.check(f"input[name=kind][value={kind}]")
    page.click("#start")


def test_upload_a_photo_and_the_answer_streams_in(page, server):
    scan(page, server, "How many red circles are there?")
    page.wait_for_function("document.querySelector('#answer').textContent === '2'")
    page.wait_for_function("document.querySelector('#cancel').disabled")
    assert "tokens" in page.inner_text("#stats")
    assert page.get_attribute("#ring", "aria-valuenow") is not None
    assert page.is_visible("#progress")


def test_cancel_really_stops_the_generation(page, server):
    backend = server.slow.backend
    scan(page, server, "Tell me everything", model="slow", photo=False)
    page.wait_for_function("document.querySelector('#answer').textContent.length > 20")
    page.click("#cancel")
    page.wait_for_function("document.querySelector('#cancel').disabled")
    stopped_at = backend.steps_run
    time.sleep(0.5)
    assert backend.steps_run == stopped_at < 256  # nothing ran after the cancel, long before max_tokens
    assert "word" in page.inner_text("#answer")


def test_the_full_flow_with_questions_then_the_ranked_result_and_history(page, server):
    scan(page, server, "cheapest item", model=server.flow_model, kind="optimize")
    page.wait_for_selector("#questions:not([hidden])", timeout=120_000)
    page.click("#questions button[type=submit]")
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)
    assert page.inner_text("#result h3").strip()
    page.click("button.tab[data-tab=history]")
    page.wait_for_selector("#history-list li")
    assert "cheapest item" in page.inner_text("#history-list")


def test_pull_a_model_with_live_progress(page, server, tiny_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from optascan.testing.hub_server import HubServer

    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with HubServer({"tiny-org/tiny-llava": tiny_dir("llava")}) as hub:
        hub.patch_client(monkeypatch)
        page.goto(server.url + "/")
        page.click("button.tab[data-tab=models]")
        page.wait_for_selector("#model-list li")
        page.fill("#pull-name", "tiny-org/tiny-llava")
        page.click("#pull-form button")
        page.wait_for_function("document.querySelector('#pull-text').textContent.includes('done')", timeout=60_000)
        assert page.eval_on_selector("#pull-bar", "bar => bar.value") == 1
        assert "tiny-org/tiny-llava" in page.inner_text("#models-note")


def test_phone_viewport_keyboard_and_labels(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.get_attribute("#photo", "capture") == "environment"  # the phone's camera
    unlabeled = page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
        .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
        .map(el => el.id || el.name)""")
    assert unlabeled == []
    page.focus("#goal")
    page.keyboard.type("How many circles are there?")
    reached = []
    for _ in range(12):  # the keyboard alone reaches the Scan button
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
        if reached[-1] == "start":
            break
    assert "start" in reached
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#answer').textContent.length > 0")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    context.close()


def test_the_page_works_behind_an_api_key(browser, tiny_dir):
    with LiveServer(ServerSettings(models=["demo"], api_key="k3y")) as live:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(live.url + "/?api_key=k3y")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        page.set_input_files("#photo", str(ROOT / "examples/shapes.jpg"))
        page.wait_for_selector("#preview:not([hidden])")
        page.fill("#goal", "What colour is the star?")
        page.click("#start")
        page.wait_for_function("document.querySelector('#answer').textContent === 'yellow'")
        wrong = context.new_page()
        wrong.goto(live.url + "/")  # no key: the page loads, its API calls are refused
        wrong.wait_for_function("document.querySelector('#error') && !document.querySelector('#error').hidden")
        assert "API key" in wrong.inner_text("#error")
        context.close()
        assert errors == []
