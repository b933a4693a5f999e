"""The study suite in real front ends (``make test-system``): a JupyterLab server started as ``make lab``
starts it, and headless Chromium (Debian's ``chromium``, installed with apt-get when missing) rendering
the HTML report, the demo's summary and Lab with ``06_figures`` executed.

Screenshots are kept under ``results/screenshots/`` (ignored by git).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "results" / "screenshots"
TOKEN = uuid.uuid4().hex


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_command(port: int) -> list[str]:
    """``make lab``'s command line (from ``make -n``), bound to 127.0.0.1 without a browser."""
    dry = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "lab"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    return shlex.split(dry) + ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                               f"--IdentityProvider.token={TOKEN}"] + (["--allow-root"] if os.geteuid() == 0 else [])


@pytest.fixture(scope="module")
def lab():
    """A JupyterLab server on 127.0.0.1 rooted where ``make lab`` roots it; yields its base URL."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "agg"}
    proc = subprocess.Popen(_lab_command(port), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode()[-2000:]) from None
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not answer within 120 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _api(url: str, path: str, method: str = "GET", body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}{path}?token={TOKEN}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def _run_in_kernel(url: str, code: str, timeout: float = 180) -> list[dict]:
    """Execute ``code`` in a new kernel of the server (its REST + websocket API); the iopub outputs."""
    import asyncio

    from tornado.websocket import websocket_connect

    kernel = _api(url, "/api/kernels", "POST", {"name": "python3"})["id"]

    async def go() -> list[dict]:
        ws = await websocket_connect(f"{url.replace('http', 'ws')}/api/kernels/{kernel}/channels?token={TOKEN}")
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "t", "session": uuid.uuid4().hex,
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False}}))
        outputs, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), timeout=deadline - time.monotonic()))
            if msg.get("parent_header", {}).get("msg_id") != msg_id or msg.get("channel") != "iopub":
                continue
            kind = msg["header"]["msg_type"]
            if kind in ("display_data", "execute_result", "stream", "error"):
                outputs.append({"type": kind, **msg["content"]})
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break
        ws.close()
        return outputs

    try:
        return asyncio.run(go())
    finally:
        _api(url, f"/api/kernels/{kernel}", "DELETE")


def test_lab_kernel_displays_a_figure_as_png(lab):
    """A figure cell run through the Lab server's kernel API comes back as an image, not a repr."""
    outputs = _run_in_kernel(lab, "from IPython.display import display\n"
                                  "from sam3dlib.study import report, report_figures as rf\n"
                                  "display(rf.plot_params_vs_dsc(report.paper_rows(1)))")
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, outputs
    assert images[0]["data"]["image/png"].startswith("iVBORw0KGgo")  # base64 of the PNG signature
    tree = _api(lab, "/api/contents")  # Lab reaches both the notebooks and the results
    assert {"notebooks", "results"} <= {item["name"] for item in tree["content"]}


# ------------------------------------------------------------------------------ headless Chromium


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    proc = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not shutil.which("chromium"):
        pytest.fail(f"headless Chromium missing and apt-get install chromium failed: {proc.stderr[-1000:]}")
    return shutil.which("chromium")


def _screenshot(url: str, target: Path, size: tuple[int, int] = (1400, 4000), wait_ms: int = 20000) -> np.ndarray:
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}", f"--screenshot={target}",
                    url], capture_output=True, text=True, timeout=240, check=True)
    from matplotlib.image import imread

    return (imread(target)[..., :3] * 255).astype(np.int16)


def figure_pixels(shot: np.ndarray) -> dict[str, int]:
    """Pixels that only figures produce: the bars/lines of matplotlib's default blue, and the mid-grey
    of an image (an MRI/CT slice), counted in 16 x 16 tiles that are mostly such grey (text is not)."""
    blue = np.abs(shot - np.array([31, 119, 180])).max(-1) <= 14
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    grey = (np.abs(r - g) < 8) & (np.abs(g - b) < 8) & (r > 30) & (r < 200)
    h, w = (s // 16 * 16 for s in grey.shape)
    tiles = grey[:h, :w].reshape(h // 16, 16, w // 16, 16).mean((1, 3)) > 0.6
    return {"blue": int(blue.sum()), "grey_tiles": int(tiles.sum())}


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> Path:
    from sam3dlib.study.reproduce import reproduce_table

    return reproduce_table(1, profile="smoke", data_dir=None, out=tmp_path_factory.mktemp("r") / "table1", device="cpu")


def test_html_report_in_chromium_shows_figures(report_run):
    shot = _screenshot((report_run / "table1_report.html").as_uri(), SHOTS / "table1_report.png", (1400, 9000), 5000)
    px = figure_pixels(shot)
    assert px["blue"] > 3000 and px["grey_tiles"] > 50, px


def test_demo_summary_in_chromium_shows_figures(tmp_path):
    import dataclasses

    from sam3dlib.study.demo_summary import write_demo_summary
    from sam3dlib.study.mri_demo import MRIDemoSettings, run_mri_demo

    settings = dataclasses.replace(MRIDemoSettings(), resolution=4, slab=2, gap=2, crop=64, steps=4, eval_every=2,
                                   test_slabs=1)
    out = tmp_path / "demo"
    run_mri_demo(out, settings=settings)
    page = write_demo_summary(out)
    shot = _screenshot(page.as_uri(), SHOTS / "demo_summary.png", (1400, 5000), 5000)
    px = figure_pixels(shot)
    assert px["grey_tiles"] > 50, px


def test_lab_with_06_figures_executed_shows_figures(lab):
    """06_figures executed (papermill) and opened in Lab: the screenshot shows its figures."""
    import papermill as pm

    nb = SHOTS / "06_figures_executed.ipynb"
    nb.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(REPO / "notebooks" / "06_figures.ipynb"), str(nb), cwd=str(REPO / "notebooks"),
                        parameters={"out_dir": str(SHOTS / "06_figures_out")}, progress_bar=False, kernel_name="python3")
    # the title, then the cells that display figures (the screenshot shows the top of the notebook)
    import nbformat

    executed = nbformat.read(nb, as_version=4)
    executed.cells = [executed.cells[0]] + [c for c in executed.cells if "figure" in c.metadata.get("tags", [])]
    nbformat.write(executed, nb)
    shot = _screenshot(f"{lab}/lab/tree/{nb.relative_to(REPO)}?token={TOKEN}", SHOTS / "lab_06_figures.png",
                       (1600, 3000), 40000)
    px = figure_pixels(shot)
    assert px["blue"] > 3000, px
