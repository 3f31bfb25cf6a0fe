"""The README's tour screenshots of the Dagster UI and MLflow, taken in headless Chromium.

Run after `make demo` (it reads the demo's data folder): `.venv/bin/python scripts/screenshots.py`.
It starts `dagster-webserver` on the demo's instance and `mlflow ui` on its store, each on a free port
of 127.0.0.1, drives Debian's chromium through its chromedriver (selenium), and writes the PNGs
under `tauxcharge_assets_tests/screenshots/`. The dashboard's own screenshots come from its browser
test (`UPDATE_SCREENSHOTS=1 make test`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tauxcharge_assets_tests" / "screenshots"
HOME = Path(os.environ.get("TAUXCHARGE_HOME", ROOT / ".tauxcharge"))
BIN = Path(os.environ.get("TAUXCHARGE_BIN", Path(sys.executable).parent))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(command: list[str], url: str, env: dict[str, str] | None = None, timeout_s: float = 240) -> Iterator[str]:
    """A server started for the screenshots, stopped afterwards; yields its URL once it answers."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError(f"{command[0]} did not answer at {url} within {timeout_s:.0f} s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def browser() -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1500,950"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def click_if_present(driver: webdriver.Chrome, text: str) -> None:
    for button in driver.find_elements(By.XPATH, f"//button[normalize-space()='{text}']"):
        try:
            button.click()
        except WebDriverException:
            continue


def shoot(
    driver: webdriver.Chrome,
    url: str,
    name: str,
    settle_s: float = 8.0,
    dismiss: str | None = None,
    close_labels: tuple[str, ...] = (),
) -> Path:
    driver.get(url)
    time.sleep(settle_s)
    if dismiss:
        click_if_present(driver, dismiss)
        time.sleep(2)
    for label in close_labels:  # side panels (MLflow's assistant) closed by their labelled button
        for button in driver.find_elements(By.CSS_SELECTOR, f"button[aria-label='{label}']"):
            try:
                button.click()
            except WebDriverException:
                continue
        time.sleep(2)
    path = OUT / name
    driver.save_screenshot(str(path))
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def main() -> int:
    if not (HOME / "mlflow.db").exists():
        print(f"no demo data in {HOME}: run `make demo` first", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    dagster_port, mlflow_port = free_port(), free_port()
    dagster = [str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
               "-p", str(dagster_port)]  # fmt: skip
    mlflow = [str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(mlflow_port),
              "--backend-store-uri", f"sqlite:///{HOME / 'mlflow.db'}"]  # fmt: skip
    env = {"DAGSTER_HOME": str(HOME / "dagster_home")}
    with (
        serving(dagster, f"http://127.0.0.1:{dagster_port}/server_info", env) as _,
        serving(mlflow, f"http://127.0.0.1:{mlflow_port}/health") as _,
    ):
        driver = browser()
        try:
            base = f"http://127.0.0.1:{dagster_port}"
            lineage = f"{base}/assets/anomaly_report?view=lineage&lineageScope=upstream&lineageDepth=8"
            shoot(driver, lineage, "dagster_lineage.png", dismiss="Skip")
            shoot(driver, f"{base}/runs", "dagster_runs.png")
            models = f"http://127.0.0.1:{mlflow_port}/#/models/tauxcharge-load-lstm"
            shoot(driver, models, "mlflow_model.png", settle_s=30, close_labels=("Close",))
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
