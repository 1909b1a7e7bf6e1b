"""The MLflow UI as a newcomer meets it, in headless Chromium (Debian's `chromium`; skipped without it):
`isosparse ui`'s landing URL opens the suite's experiment on its training runs (not MLflow's GenAI
Traces overview), and the report (the file logged on the parent run) renders. Slow: a browser and an
MLflow server."""

import os
import shutil
import socket
import subprocess
import textwrap

import pytest

from orchestrator import api
from orchestrator.runs import scheduling

pytestmark = [pytest.mark.slow, pytest.mark.ray]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SUITE = """
experiment: browsed
resources:
  dummy: {num_cpus: 0.5}
matrix:
  jobs: [dummy]
  families: [dense, l3]
  presets: [debug]
dummy: {steps: 3}
"""


def browse(url: str, tmp_path, name: str) -> str:
    """The DOM after the page's scripts ran (and a screenshot next to it, for a person to look at)."""
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
            f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,900"]  # fmt: skip
    subprocess.run([*base, f"--screenshot={tmp_path / name}.png", url], capture_output=True, timeout=120)
    done = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_ui_opens_on_the_training_runs_and_the_report_renders(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    os.environ["RAY_AUTH_MODE"] = "disabled"
    scheduling.start(num_cpus=2)
    suite = tmp_path / "browsed.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = api.run_suite(str(suite), tracking_uri=store)
    assert done.exit_code == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, landing, proc = api.ui(store, port)
    try:
        dom = browse(landing, tmp_path, "landing")
        assert "Model training" in dom and ">Runs<" in dom, dom[:2000]
        assert "browsed" in dom and "Detect Issues" not in dom  # the runs table, not the GenAI overview
        page = browse(done.report.paths.html.as_uri(), tmp_path, "report")  # the same file is on the run
        assert "<h1>isosparse report: browsed</h1>" in page and "Training loss per family" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
