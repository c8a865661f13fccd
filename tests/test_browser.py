"""The notebooks where learners run them: JupyterLab in a real (headless) Chromium, driven by Playwright.

Covers: a `jupyter lab` server started from this environment on 127.0.0.1 (random port and token, a temp
copy of notebooks/ as its root, its own config, settings, workspaces and runtime folders), notebook 01 run
with Run → Run All Cells (no cell may raise; its metrics.json must hold the 7B count), its rank slider
moved with the keyboard and the printed trainable count checked against r · 32 layers · 2 projections ·
(4096 + 4096), a screenshot kept in runs/browser/; and notebook 03's listen widget (``listen_widget``)
rendered on two tiny generated tones in a scratch notebook: the browser decodes each clip and the clip
slider switches audio and transcripts.
Does not: run notebook 03's training (13 minutes on CPU; the papermill test does), play sound, test other
browsers, or judge the layout beyond "the slider is on screen".

Needs Chromium at /usr/bin/chromium (Debian's `chromium`; `.ci/run` installs it), the Python packages
`playwright` and `jupyterlab` (the `dev` extra); without any of them the tests skip and say which.
Playwright's own browser downloads are never used: Chromium is launched from its path with every
background connection off.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from lorakit_nb.env import read_metrics

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run the "
                "browser tests", allow_module_level=True)
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed: pip install -e '.[dev]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")

pytestmark = [pytest.mark.browser, pytest.mark.notebook]  # `notebook` too: slow, so `make unit` leaves it out

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "runs" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
START_TIMEOUT_S = 90    # server up; notebook open with an idle kernel
RUN_ALL_TIMEOUT_S = 300  # notebook 01 takes about a minute on 2 CPU cores; generous for a loaded machine
# Settings a learner would leave alone, switched off because they reach the internet (news, update check).
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                '{"fetchNews": "false", "checkForUpdates": false}'}
# An error output or a traceback printed anywhere: "Traceback", or an exception name such as "ValueError".
ERROR_TEXT = r"Traceback|\b[A-Z]\w*Error\b"
LLAMA_QV_PER_RANK = 32 * 2 * (4096 + 4096)  # LLaMA-2-7B, q_proj + v_proj: 32 layers × 2 × (d_in + d_out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_notebook() -> nbformat.NotebookNode:
    """Notebook 03's listen cell on two generated tones (0.5 s and 0.25 s), instead of 13 minutes of training."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import numpy as np\n"
        "from lorakit_nb.speech.evaluate import listen_widget\n"
        "clips = [0.1 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000),   # 0.5 s at 16 kHz\n"
        "         0.1 * np.sin(2 * np.pi * 660 * np.arange(4000) / 16000)]   # 0.25 s\n"
        'listen_widget(clips, {"reference": ["你好世界", "今天天气很好"], "fine-tuned": ["你好世界", "今天天气好"]})')]
    return nb


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    """A running `jupyter lab` on a temp copy of notebooks/; yields (base URL, token, root dir); always stopped."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nbformat.write(listen_notebook(), root / "listen_widget.ipynb")  # notebook 01 needs only the package
    settings = tmp / "settings"
    for rel, text in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(text)
    # Own config / data / runtime / workspaces folders: a learner's ~/.jupyter can neither help nor break it;
    # the kernel is this environment's (its sys-prefix kernelspec, or ipykernel's default for this Python).
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp / "jupyter-lab.log", "wb")  # closed by the finalizer
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}", "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:  # CI containers run as root; jupyter refuses that unless told
        args.append("--allow-root")
    proc = subprocess.Popen(
        args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down, then exits
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()

    request.addfinalizer(stop)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{(tmp / 'jupyter-lab.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"jupyter lab did not answer /api/status within {START_TIMEOUT_S} s:\n"
                        f"{(tmp / 'jupyter-lab.log').read_text()[-3000:]}")
        time.sleep(0.5)
    return base, token, root


@pytest.fixture(scope="module")
def browser(request):
    pw = sync_api.sync_playwright().start()
    request.addfinalizer(pw.stop)
    chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    request.addfinalizer(chromium.close)
    return chromium


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(START_TIMEOUT_S * 1000)
    yield context.new_page()
    context.close()


def kernel_indicator(page):
    return page.locator(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator").first


def kernel_state(lab, path: str):
    """The server's view of the notebook's kernel ("starting", "idle", "busy", ...), or None before it has one."""
    base, token, _ = lab
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as r:
        sessions = json.load(r)
    return next((s["kernel"]["execution_state"] for s in sessions if s["path"] == path), None)


def open_notebook(page, lab, path: str, route: str = "lab/tree"):
    """Open a notebook, accept the kernel dialog if one asks, and wait until its kernel is started and idle.

    Waiting for the server's session matters: the toolbar says "idle" before any kernel exists, and Run All
    on a notebook without a kernel opens the Select Kernel dialog instead of running.
    """
    base, token, _ = lab
    page.goto(f"{base}/{route}/{path}?token={token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (kernel_state(lab, path) == "idle" and kernel_indicator(page).get_attribute("data-status") == "idle"):
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and "Select Kernel" in dialog.first.inner_text():
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()  # the default: python3
        if time.monotonic() > deadline:
            pytest.fail(f"the kernel of {path} did not become idle within {START_TIMEOUT_S} s (server: "
                        f"{kernel_state(lab, path)!r}, page: {kernel_indicator(page).get_attribute('data-status')!r})")
        page.wait_for_timeout(250)


def run_all_cells(page) -> float:
    """Run → Run All Cells, as a learner does; wait until the kernel is idle and nothing is queued. Seconds."""
    t0 = time.monotonic()
    page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
    # Done: the kernel is idle, no cell is queued or running ([*]), and either every code cell has an
    # execution count or a cell failed (Run All stops there, the rest stays unexecuted).
    page.wait_for_function(
        """(errorText) => {
            const idle = document.querySelector(
                '.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status="idle"]');
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                .map(p => p.textContent.trim());
            const texts = [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')]
                .map(o => o.textContent);
            const failed = texts.some(t => new RegExp(errorText).test(t));
            return idle && prompts.length > 0 && !prompts.some(p => p.includes('*'))
                && (failed || prompts.every(p => /^\\[\\d+\\]:$/.test(p)));
        }""", arg=ERROR_TEXT, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=500)
    return time.monotonic() - t0


def assert_no_errors(page):
    # textContent, not innerText: JupyterLab skips rendering off-screen cells (content-visibility), and
    # innerText of an unrendered element is empty, which would hide an error below the fold.
    def texts(selector):
        return page.locator(selector).evaluate_all("els => els.map(e => e.textContent)")

    raised = [t for t in texts('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
              if "Traceback" in t]
    assert not raised, f"a cell raised:\n{raised[0][:3000]}"
    bad = [t for t in texts(".jp-Notebook .jp-RenderedText") if re.search(ERROR_TEXT, t)]
    assert not bad, f"an output shows an error:\n{bad[0][:3000]}"
    prompts = [p.strip() for p in texts(".jp-Notebook .jp-CodeCell .jp-InputPrompt")]
    unrun = [i for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p)]
    assert not unrun, f"code cells {unrun} of {len(prompts)} did not run (prompts {[prompts[i] for i in unrun]})"


def save_screenshot(page, name: str, widget) -> Path:
    """A PNG of the viewport in runs/browser/ (temp file, then rename), checked to be a real image in which
    ``widget`` (a locator, scrolled on screen) is drawn: its box holds many colours, not a blank patch."""
    widget.scroll_into_view_if_needed()
    box = widget.bounding_box()
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], f"{name}: widget off screen"
    SHOTS.mkdir(parents=True, exist_ok=True)
    path, tmp = SHOTS / name, SHOTS / f".{name}.tmp"
    page.screenshot(path=str(tmp), type="png")
    os.replace(tmp, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"]), f"{path} is {width}×{height}"
    # A blank 1280×900 page compresses to a few kB; JupyterLab with text, a plot and widgets is ~100 kB.
    assert len(data) > 30_000, f"{path} is only {len(data):,} bytes: the page looks blank"
    with Image.open(path) as img:  # a blank patch has 1 colour; a slider with its label and readout has dozens
        crop = img.convert("RGB").crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
                                        int(box["y"] + box["height"])))
        colours = len(crop.getcolors(maxcolors=1 << 20))
    assert colours >= 10, f"{path}: the widget's area has only {colours} colours: it was not drawn"
    return path


def trainable_count(text: str) -> int:
    m = re.search(r"trainable: ([\d,]+)", text)
    assert m, f"no trainable count in the interact output: {text!r}"
    return int(m.group(1).replace(",", ""))


def test_notebook_01_runs_in_jupyterlab_and_its_slider_works(lab, page):
    root = lab[2]
    t0 = time.monotonic()
    open_notebook(page, lab, "01_lora_math.ipynb")
    t_open = time.monotonic()
    run_s = run_all_cells(page)
    print(f"notebook 01: open {t_open - t0:.1f} s, Run All {run_s:.1f} s")
    assert_no_errors(page)
    m = read_metrics(root / "runs" / "01")  # the notebook's own OUTPUT_DIR, relative to its folder
    assert m["llama2_7b_r8_qv_trainable"] == 8 * LLAMA_QV_PER_RANK == 4_194_304

    interact = page.locator(".widget-interact").first
    interact.scroll_into_view_if_needed()
    r_slider = interact.locator(".widget-slider").filter(
        has=page.locator("label.widget-label", has_text=re.compile(r"^r$")))
    assert r_slider.count() == 1, "the interact cell should render one slider labelled r"
    readout, output = r_slider.locator(".widget-readout"), interact.locator(".widget-output")
    # expect() polls textContent: the output may render a frame after the cell scrolls on screen
    sync_api.expect(readout).to_have_text("8")
    sync_api.expect(output).to_contain_text(f"trainable: {8 * LLAMA_QV_PER_RANK:,}", timeout=30_000)
    before = trainable_count(output.text_content())

    handle = r_slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(3):  # r: 8 -> 11, one step per arrow key
        handle.press("ArrowRight")
    sync_api.expect(readout).to_have_text("11", timeout=10_000)
    sync_api.expect(output).to_contain_text(f"{11 * LLAMA_QV_PER_RANK:,}", timeout=30_000)
    after = trainable_count(output.text_content())
    assert after == 11 * LLAMA_QV_PER_RANK != before

    shot = save_screenshot(page, "01_lora_math_slider.png", r_slider)
    print(f"notebook 01: whole test {time.monotonic() - t0:.1f} s; "
          f"count {before:,} -> {after:,}; screenshot {shot} ({shot.stat().st_size:,} bytes)")


def test_listen_widget_plays_and_switches_clips(lab, page):
    t0 = time.monotonic()
    open_notebook(page, lab, "listen_widget.ipynb", route="lab/workspaces/listen/tree")  # its own workspace
    run_all_cells(page)
    assert_no_errors(page)

    box = page.locator(".widget-vbox").filter(has=page.locator(".widget-slider")).first
    audio, table = box.locator("audio"), box.locator(".widget-html")
    sync_api.expect(table).to_contain_text("你好世界", timeout=30_000)
    assert "今天天气很好" not in table.text_content()

    def duration() -> float:  # what the browser decoded from the widget's WAV bytes
        audio.evaluate("a => a.readyState >= 1 || new Promise(ok => a.addEventListener('loadedmetadata', ok))")
        return audio.evaluate("a => a.duration")

    assert abs(duration() - 0.5) < 0.01, "clip 0 is 0.5 s of 16 kHz audio"
    first_src = audio.get_attribute("src")
    handle = box.locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowRight")  # clip 0 -> clip 1
    sync_api.expect(table).to_contain_text("今天天气很好", timeout=30_000)
    sync_api.expect(audio).not_to_have_attribute("src", first_src, timeout=10_000)
    assert abs(duration() - 0.25) < 0.01, "clip 1 is 0.25 s of 16 kHz audio"
    shot = save_screenshot(page, "listen_widget.png", box.locator(".widget-slider"))
    print(f"listen widget: {time.monotonic() - t0:.1f} s; screenshot {shot} ({shot.stat().st_size:,} bytes)")
