"""The status page in a real headless Chromium (Debian's chromium and chromium-driver, driven
by selenium): the live daemon over HTTP, and over HTTPS with basic auth.

Screenshots are kept as test artefacts under pytest's temporary directory (their paths are
printed); set PYPARALLEL_SCREENSHOT_DIR to also copy them there.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import bcrypt
import pytest
from conftest import key_pem, require_binary, self_signed_pem

import support

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage")
CONFIG = {"interval": "1h", "jitter": "1s", "duty_cycle": 1,
          "probe": {"workloads": ["pure_python", "faulty_workloads:raises", "faulty_workloads:raises_with_markup"],
                    "modes": ["sequential", "threads", "processes"], "workers": [2],
                    "unit_seconds": 0.3, "repeats": 3, "timeout": "30s"}}
WIDTHS = (1280, 400)


@pytest.fixture(scope="module")
def browser_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """Start Chromium through the system chromedriver, each with a fresh profile; no driver
    or browser is downloaded."""
    for binary in ("chromium", "chromedriver"):
        require_binary(binary)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def start(*, insecure_certs: bool = False) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROME_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        options.accept_insecure_certs = insecure_certs
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture(scope="module")
def http_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.Service]:
    exporter = support.start_exporter(tmp_path_factory.mktemp("exporter-http"), CONFIG)
    try:
        support.wait_for(lambda: support.http_get(exporter.url + "/-/healthy")[0] == 200, 30, "the exporter")
        exporter.first_page = support.http_get(exporter.url + "/")[1]  # type: ignore[attr-defined]
        support.wait_ready(exporter, timeout=180)
        yield exporter
    finally:
        exporter.stop()


def save_screenshot(driver: Any, path: Path) -> Path:
    """The whole page, however long: the window is made as tall as the document first."""
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(driver.get_window_size()["width"], height + 120)
    driver.save_screenshot(str(path))
    print(f"screenshot ({width} px wide): {path}")
    copy_to = os.environ.get("PYPARALLEL_SCREENSHOT_DIR")
    if copy_to:
        Path(copy_to).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(copy_to) / path.name)
    return path


def csp_violations(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]


def row(driver: Any, result: dict[str, Any]) -> Any:
    from selenium.webdriver.common.by import By

    selector = (f'section[data-interpreter="{result["interpreter"]}"] tr[data-workload="{result["workload"]}"]'
                f'[data-mode="{result["mode"]}"][data-workers="{result["workers"]}"]')
    return driver.find_element(By.CSS_SELECTOR, selector)


def test_page_before_the_first_round_says_it_is_running(http_exporter: support.Service) -> None:
    page = http_exporter.first_page  # type: ignore[attr-defined]
    assert "The first round is running, started at" in page


def test_table_shows_what_the_api_returns_with_a_bar_per_cpu(browser_factory: Any, http_exporter: support.Service,
                                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    document = json.loads(support.http_get(http_exporter.url + "/api/v1/results")[1])
    driver = browser_factory()
    driver.set_window_size(1280, 900)
    driver.get(http_exporter.url + "/")
    assert driver.title == "Python Parallelism Exporter"
    checked = 0
    for result in document["results"]:
        element = row(driver, result)
        if not result["success"]:
            continue
        # A step the host was too busy for shows its estimate or "cannot tell", and what was measured.
        if result["speedup"] is not None:
            assert element.find_element(By.CSS_SELECTOR, ".speedup").text == f"{result['speedup']:.2f}×"
            assert element.find_element(By.CSS_SELECTOR, ".efficiency").text == f"{result['efficiency']:.0%}"
        elif result["idle_speedup"] is not None:  # the kernel's accounting stands in
            assert element.find_element(By.CSS_SELECTOR, ".speedup").text == f"~{result['idle_speedup']:.2f}×"
        assert element.find_element(By.CSS_SELECTOR, ".cores-used").text == f"{result['cores_used']:.2f}"
        bars = element.find_elements(By.CSS_SELECTOR, "svg.cores g.cpu-bar")
        assert len(bars) == len(result["core_utilisation"]) == document["host"]["logical_cpus"]
        assert [float(b.get_attribute("data-busy")) for b in bars] == pytest.approx(result["core_utilisation"], abs=1e-3)
        checked += 1
    assert checked == 3  # pure_python: sequential, threads, processes
    host = driver.find_element(By.CSS_SELECTOR, "#host").text
    assert f"{document['host']['logical_cpus']} logical" in host
    schedule = document["schedule"]
    # One round done, the next one an hour (the configured interval, give or take the jitter) later.
    assert schedule["last_round_started_at"] <= schedule["last_round_finished_at"]
    assert schedule["next_round_at"] - schedule["last_round_started_at"] == pytest.approx(3600, abs=5)
    assert "a round every 60m" in host and "Next round" in host
    assert all(len(step["points"]) == 1 for step in document["history"]["steps"])
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.sparkline")) == len(document["history"]["steps"])
    assert csp_violations(driver) == []


def test_failing_workloads_show_reason_and_message_as_text(browser_factory: Any, http_exporter: support.Service) -> None:
    from selenium.webdriver.common.by import By

    driver = browser_factory()
    driver.get(http_exporter.url + "/")
    failures = driver.find_elements(By.CSS_SELECTOR, "#failures .failure-now")
    texts = [f.text for f in failures]
    assert any("faulty_workloads:raises · sequential" in t and "reason: error" in t and "boom from a workload" in t
               for t in texts), texts
    markup = [f for f in failures if "raises_with_markup" in f.text]
    assert markup and "<img src=x onerror=alert(1)> & <b>not bold</b>" in markup[0].text
    assert driver.find_elements(By.CSS_SELECTOR, "#failures img, #failures b") == []
    assert csp_violations(driver) == []


@pytest.mark.parametrize("width", WIDTHS)
def test_page_reads_at_desktop_and_phone_width(browser_factory: Any, http_exporter: support.Service,
                                               tmp_path_factory: pytest.TempPathFactory, width: int) -> None:
    from selenium.webdriver.common.by import By

    driver = browser_factory()
    driver.set_window_size(width, 900)
    driver.get(http_exporter.url + "/")
    inner = driver.execute_script("return window.innerWidth")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= inner
    assert driver.execute_script("return document.body.scrollWidth") <= inner
    # Nothing sticks out of the viewport: every table cell and failure box fits.
    overflowing = driver.execute_script(
        "return Array.from(document.querySelectorAll('td, .failure, pre, h2, p'))"
        ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).length")
    assert overflowing == 0
    assert driver.find_element(By.CSS_SELECTOR, ".speedup").is_displayed()
    save_screenshot(driver, tmp_path_factory.mktemp("screenshots") / f"status-page-{width}px.png")


def screenshots_script() -> Any:
    """scripts/screenshots.py, whose ``mark_busy`` makes the docs' picture of a busy step."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshots", support.REPO / "scripts" / "screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("width", WIDTHS)
def test_a_step_the_host_was_too_busy_for_reads_cannot_tell_not_failed(
        browser_factory: Any, http_exporter: support.Service, tmp_path: Path, width: int) -> None:
    """The live document with one step as a busy host leaves it (scripts/screenshots.py's
    mark_busy), rendered by the page's own code: no red, what was measured still shown, the
    legend visible, nothing overflowing."""
    from selenium.webdriver.common.by import By

    from exporter.pages import statuspage

    document = json.loads(support.http_get(http_exporter.url + "/api/v1/results")[1])
    busy = screenshots_script().mark_busy(document, document["interpreters"][0]["name"], "pure_python", "threads")
    page = tmp_path / "status.html"
    page.write_text(statuspage.render_page(busy, "/metrics"))
    driver = browser_factory()
    driver.set_window_size(width, 900)
    driver.get(page.as_uri())
    result = next(r for r in busy["results"] if r["workload"] == "pure_python" and r["mode"] == "threads")
    element = row(driver, result)
    assert element.get_attribute("class") == "busy"
    assert element.find_element(By.CSS_SELECTOR, ".speedup").text == "cannot tell"
    assert element.find_element(By.CSS_SELECTOR, ".cores-used").text == f"{result['cores_used']:.2f}"
    assert len(element.find_elements(By.CSS_SELECTOR, "svg.cores g.cpu-bar")) == busy["host"]["logical_cpus"]
    assert element.find_elements(By.CSS_SELECTOR, "svg.sparkline rect.busy-round")
    assert not element.find_elements(By.CSS_SELECTOR, "svg.sparkline rect.failed-round")
    red = driver.execute_script("return Array.from(arguments[0].querySelectorAll('*')).filter(e => "
                                "getComputedStyle(e).color === 'rgb(198, 40, 40)').length", element)
    assert red == 0  # the failed rows' colour
    legend = driver.find_element(By.CSS_SELECTOR, ".legend")
    assert legend.is_displayed() and "other processes used" in legend.text
    assert driver.execute_script("return document.documentElement.scrollWidth") <= driver.execute_script(
        "return window.innerWidth")
    save_screenshot(driver, tmp_path / f"status-page-busy-{width}px.png")


@pytest.fixture(scope="module")
def https_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[support.Service, Path]]:
    from cryptography.hazmat.primitives.asymmetric import ec

    workdir = tmp_path_factory.mktemp("exporter-https")
    key = ec.generate_private_key(ec.SECP256R1())
    cert, key_path = workdir / "cert.pem", workdir / "key.pem"
    cert.write_bytes(self_signed_pem(key, "127.0.0.1"))
    key_path.write_bytes(key_pem(key))
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web_config = workdir / "web.yml"
    web_config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key_path}\n"
                          f"basic_auth_users:\n  alice: '{hashed}'\n")
    config = {**CONFIG, "probe": {**CONFIG["probe"], "workloads": ["pure_python"], "modes": ["sequential", "threads"]}}
    exporter = support.start_exporter(workdir, config, f"--web.config.file={web_config}", scheme="https")
    try:
        context = ssl.create_default_context(cafile=str(cert))
        support.wait_for(lambda: https_get(exporter.url + "/-/ready", context, ("alice", "s3cret"))[0] == 200,
                         180, "the HTTPS exporter's first round")
        yield exporter, cert
    finally:
        exporter.stop()


def https_get(url: str, context: ssl.SSLContext, auth: Optional[tuple[str, str]]) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    return support.http_get(request, context=context)  # type: ignore[arg-type]


def test_page_over_https_needs_basic_auth_and_shows_the_api_values(
        browser_factory: Any, https_exporter: tuple[support.Service, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.webdriver.common.by import By

    exporter, cert = https_exporter
    context = ssl.create_default_context(cafile=str(cert))
    for path in ("/", "/api/v1/results", "/config"):
        assert https_get(exporter.url + path, context, None)[0] == 401
    document = json.loads(https_get(exporter.url + "/api/v1/results", context, ("alice", "s3cret"))[1])
    # The self-signed certificate is checked above with Python's ssl; the browser is told to accept it.
    driver = browser_factory(insecure_certs=True)
    token = base64.b64encode(b"alice:s3cret").decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    driver.get(exporter.url + "/")
    # The threads figure, or the baseline's when a busy host left threads unable to tell.
    shown = next(r for r in sorted(document["results"], key=lambda r: r["mode"] != "threads") if r["speedup"] is not None)
    assert row(driver, shown).find_element(By.CSS_SELECTOR, ".speedup").text == f"{shown['speedup']:.2f}×"
    config_text = https_get(exporter.url + "/config", context, ("alice", "s3cret"))[1]
    assert "alice: <secret>" in config_text and "$2b$" not in config_text
    assert csp_violations(driver) == []
    save_screenshot(driver, tmp_path_factory.mktemp("screenshots") / "status-page-https.png")
