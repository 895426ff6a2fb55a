"""Downloads of the traces a tab shows (CSV for tables, JSON for nested data).

Files are written under the system temp folder (which Gradio may serve) in a fresh folder per download,
with a fixed name chosen by code: no user text ever becomes part of a path. Folders older than an hour
are removed on the next write, so a class leaves nothing behind.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

EXPORT_DIR = Path(tempfile.gettempdir()) / "lie-exports"
KEEP_S = 3600
SWEEP_EVERY_S = 60  # a class dragging sliders writes a file per move: look for old folders at most this often
_last_sweep = 0.0
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,60}")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (a typed prompt or a token like "=cmd|...") gets a
    leading apostrophe, OWASP's advice against CSV injection; numbers and other text are left as they are."""
    if isinstance(cell, str) and len(cell) > 1 and cell.startswith(FORMULA_START) and not NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def _new_path(name: str, suffix: str) -> Path:
    if not NAME.fullmatch(name):
        raise ValueError(f"export name {name!r}: lowercase letters, digits, - and _ only")
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    _remove_old_exports()
    folder = EXPORT_DIR / uuid.uuid4().hex
    folder.mkdir()
    return folder / f"{name}.{suffix}"


def _remove_old_exports() -> None:
    global _last_sweep
    now = time.time()
    if now - _last_sweep < SWEEP_EVERY_S:
        return
    _last_sweep = now
    for old in EXPORT_DIR.iterdir():
        try:
            if old.stat().st_mtime < now - KEEP_S:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # removed meanwhile by another request
            pass


def csv_file(name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Write rows to <name>.csv (UTF-8, comma-separated, header first); return the path for gr.DownloadButton."""
    path = _new_path(name, "csv")
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([spreadsheet_safe(c) for c in header])
        writer.writerows([spreadsheet_safe(c) for c in row] for row in rows)
    return str(path)


def json_file(name: str, data: Any) -> str:
    """Write JSON-ready data to <name>.json; return the path."""
    path = _new_path(name, "json")
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return str(path)
