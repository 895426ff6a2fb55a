"""Cold start of the app (first start converts the GGUF; second start reuses the cached weights) and
tokenize latency.

Targets (issue 2): the second start serves the page in under 1/3 of the first start's time, and loads the
model itself in under 2 s.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import Result, best_of, check, free_port

ROOT = Path(__file__).resolve().parent.parent
LOAD_LINE = re.compile(r"loaded in ([0-9.]+) s")
LOAD_SCRIPT = """
import time
t0 = time.perf_counter()
import transformers.models.llama.modeling_llama, transformers.models.auto.tokenization_auto  # imports first
t1 = time.perf_counter()
from inference.session import get_session
s = get_session()
t2 = time.perf_counter()
print(f"imports {t1 - t0:.3f} load {t2 - t1:.3f} source {s.source}")
"""


def _start_and_wait(cache: str, timeout: float = 300) -> tuple[float, float]:
    """Start `python app.py`; return (seconds until the page answers, model load seconds it logged)."""
    port = free_port()
    env = {**os.environ, "LIE_CACHE_DIR": cache, "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        served = time.perf_counter() - started
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise TimeoutError("the app did not start")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    match = LOAD_LINE.search(output)
    return served, float(match.group(1)) if match else float("nan")


def _load_only(cache: str) -> tuple[float, float]:
    env = {**os.environ, "LIE_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    imports, load = re.search(r"imports ([0-9.]+) load ([0-9.]+)", out).groups()
    return float(imports), float(load)


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="lie-bench-cache-") as cache:
        first_served, first_load = _start_and_wait(cache)
        second_served, second_load = _start_and_wait(cache)
        imports, load_only = _load_only(cache)

    from inference.session import get_session
    from inference.tokens import tokenize_with

    session = get_session()
    text = (ROOT / "README.md").read_text()[:4000] if (ROOT / "README.md").exists() else "word " * 800
    tokenize_s = best_of(lambda: tokenize_with(session.tokenizer, text), repeat=20)
    return [
        check("startup: first start, page served (converts the GGUF)", first_served, "s"),
        check("startup: first start, model load", first_load, "s"),
        check("startup: second start, page served", second_served, "s"),
        check("startup: second/first page-served ratio", second_served / first_served, "ratio", 1 / 3),
        check("startup: second start, model load (cached weights)", load_only, "s", 2.0),
        check("startup: second start, transformers imports before it", imports, "s"),
        check(f"tokenize {len(text):,} characters (uncached)", tokenize_s * 1000, "ms"),
    ]
