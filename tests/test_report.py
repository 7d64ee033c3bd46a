"""The HTML report: figures, tables, and the page as a real headless Chromium renders it."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

SOURCES = ("cot", "flan_v2", "dolly")


def _sample_text(i: int) -> str:
    return f"Task {i}: explain step {i % 7} of the procedure. <script>alert({i})</script> & done"


@pytest.fixture(scope="module")
def run_parts():
    """A curated pool (real curation on clusterable embeddings), its report, and a DS2 subset."""
    import datasets

    import ds2_hf
    from ds2_hf.curation.synthetic import default_transition, make_clusterable

    n = 400
    data = make_clusterable(n, dim=32, T=default_transition(correct=0.6), seed=1, cluster_size=20, num_topics=10)
    scores: list[int | None] = data.rated_scores.tolist()
    errors: list[str | None] = [None] * n
    for i in range(0, n, 37):  # some failed ratings, with reasons
        scores[i] = None
        errors[i] = "missing_keys: no 'Overall rating'" if i % 2 else "request_failed: timeout"
    ds = datasets.Dataset.from_dict({
        "messages": [[{"role": "user", "content": _sample_text(i)}, {"role": "assistant", "content": f"Answer {i}."}]
                     for i in range(n)],
        "source": [SOURCES[i % 3] for i in range(n)],
        "score": scores,
        "rating_error": errors,
        "embedding": data.embeddings.tolist(),
    })
    curated, report = ds2_hf.curate(ds, k=10, tau=0.3, seed=0, hoc_rounds=5, hoc_sample_size=400, hoc_steps=400,
                                    epochs=11, sample_size=400)
    subset = ds2_hf.select(curated, budget=120, strategy="ds2")
    return curated, report, subset


@pytest.fixture(scope="module")
def written(run_parts, tmp_path_factory):
    from ds2_hf.report import write_report

    curated, report, subset = run_parts
    out = tmp_path_factory.mktemp("report")
    timings = {"rate": 12.5, "embed": 3.25, "curate": 0.8, "select": 0.1}
    path = write_report(curated, report, subset, out_dir=out, timings=timings,
                        run_info={"rater": "SmolLM2-135M-Instruct", "embedder": "all-MiniLM-L6-v2", "budget": 120})
    return path, run_parts


def _nonblank(png_bytes: bytes) -> tuple[int, float]:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB"), dtype=np.float64)
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    return colours, float(img.std())


def test_report_files_and_figures(written):
    from ds2_hf.report import FIGURES

    path, _ = written
    assert path.name == "report.html" and path.is_file()
    for name in FIGURES:
        png = path.parent / "figures" / name
        assert png.is_file(), name
        colours, std = _nonblank(png.read_bytes())
        assert colours > 20 and std > 10, (name, colours, std)


def test_report_content(written):
    path, (curated, report, subset) = written
    page = path.read_text(encoding="utf-8")
    raw = np.array([-1 if s is None else s for s in curated["score"]])
    cur = np.array([-1 if s is None else s for s in curated["curated_score"]])
    changed = int(((raw >= 0) & (raw != cur)).sum())
    assert changed == report.n_changed and changed > 0  # the fixture must exercise the changed-samples table
    assert f"Samples whose score changed ({changed})" in page
    assert page.count('<pre class="sample">') == min(changed, 50)
    # failures by reason, and the total
    n_failed = sum(s is None for s in curated["score"])
    assert "missing_keys" in page and "request_failed" in page
    assert f"<b>{n_failed}</b> of {len(curated)}" in page
    # sample text is escaped: no markup from the data reaches the page
    assert "<script>" not in page and "&lt;script&gt;alert(" in page
    # the transition matrix table carries T's values
    assert f"{report.transition_matrix[0, 0]:.3f}" in page
    assert "SmolLM2-135M-Instruct" in page and ">120<" in page


def test_report_without_sources_or_subset(run_parts, tmp_path):
    from ds2_hf.report import write_report

    curated, report, subset = run_parts
    path = write_report(curated.remove_columns(["source", "rating_error"]), report, subset.remove_columns(["source"]),
                        out_dir=tmp_path)
    page = path.read_text()
    assert "composition shown by curated score" in page
    assert "null score" in page  # failures counted from null scores when no error column
    assert not (tmp_path / "figures" / "timings.png").exists() and "No timings recorded" not in page  # curation timings listed
    path2 = write_report(curated, report, None, out_dir=tmp_path / "nosubset")
    assert not (path2.parent / "figures" / "composition.png").exists()
    with pytest.raises(ValueError, match="ds2_hf.curate"):
        write_report(curated.remove_columns(["curated_score"]), report, out_dir=tmp_path / "bad")


# ----------------------------------------------------------------------------------------------
# A real headless Chromium, driven over the DevTools protocol on a pipe (no extra packages).
# ----------------------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-pipe", "--hide-scrollbars", "--window-size=1280,1000"]


class CDPPipe:
    """Chromium with ``--remote-debugging-pipe``: commands go to its fd 3, replies come from its fd 4."""

    def __init__(self, binary: str, user_data_dir: str):
        def high(fd: int) -> int:
            # move pipe ends above 4 so dup2 onto 3 and 4 in the child can never clobber one of them
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return moved

        to_child_r, self._to_child = map(high, os.pipe())
        self._from_child, from_child_w = map(high, os.pipe())

        def wire_fds():
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            # os.pipe() fds are not inherited; the dup2'd 3 and 4 are, and close_fds would close them
            close_fds=False, preexec_fn=wire_fds,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe: " + self.proc.stderr.read().decode()[-2000:])
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while True:
            ev = self._read_message(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        pytest.fail("Chromium is not installed; run `make browser` (Debian: apt-get install -y chromium) "
                    "to test the report in a real browser.")
    return binary


@pytest.mark.slow
def test_report_renders_in_headless_chromium(written):
    from ds2_hf.report import FIGURES

    path, _ = written
    with tempfile.TemporaryDirectory() as profile:
        cdp = CDPPipe(_chromium(), profile)
        try:
            target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                cdp.send(f"{domain}.enable", session=session)
            cdp.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
            cdp.wait_event("Page.loadEventFired")
            info = cdp.send("Runtime.evaluate", {"returnByValue": True, "expression": """
                JSON.stringify({title: document.title, images: [...document.images].map(img => {
                    const r = img.getBoundingClientRect();
                    return {src: img.getAttribute('src'), complete: img.complete, w: img.naturalWidth,
                            h: img.naturalHeight, x: r.left + scrollX, y: r.top + scrollY, cw: r.width, ch: r.height};
                }), rows: document.querySelectorAll('table.changed tbody tr').length})"""}, session=session)
            page = json.loads(info["result"]["value"])
            shots = {}
            for img in page["images"]:
                clip = {"x": img["x"], "y": img["y"], "width": img["cw"], "height": img["ch"], "scale": 1}
                data = cdp.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                                session=session)["data"]
                shots[img["src"]] = _nonblank(base64.b64decode(data))
            # let late console messages arrive, then drain what is queued
            cdp.send("Runtime.evaluate", {"expression": "1"}, session=session)
        finally:
            cdp.close()

    errors = [e for e in cdp.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == [], errors
    assert page["title"] == "DS2 data selection report"
    assert sorted(img["src"] for img in page["images"]) == sorted(f"figures/{n}" for n in FIGURES)
    for img in page["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, img
        colours, std = shots[img["src"]]
        assert colours > 20 and std > 10, (img["src"], colours, std)  # rendered, and not a blank box
    assert page["rows"] > 0


def test_ds2_report_command_rerenders_a_run_folder(run_parts, tmp_path, capsys):
    from ds2_hf.cli import main
    from ds2_hf.pipeline import RunLayout

    curated, report, subset = run_parts
    layout = RunLayout(tmp_path / "out")
    curated.save_to_disk(str(layout.curated))
    subset.save_to_disk(str(layout.selected))
    report.to_json(layout.curation_report)
    layout.run_info.write_text(json.dumps({"timings": {"rate": 3.0, "embed": 1.5}, "card": {"rater": "smol-rater"}}))
    assert main(["report", str(layout.root), "--max_changed_rows", "5"]) == 0
    html_path = layout.report_dir / "report.html"
    assert f"report: {html_path}" in capsys.readouterr().out
    page = html_path.read_text()
    assert page.count('<pre class="sample">') == min(5, report.n_changed)
    assert "smol-rater" in page and (layout.report_dir / "figures" / "timings.png").is_file()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
