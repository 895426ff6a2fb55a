"""python -m bench [name ...]: run the benchmarks (all, or those whose module name contains a name)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result  # noqa: E402


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    rows: list[Result] = []
    for name in names:
        print(f"running {name} ...", flush=True)
        rows.extend(importlib.import_module(f"bench.{name}").run())
    width = max((len(r.name) for r in rows), default=10)
    print(f"\n{'benchmark':<{width}}  {'value':>10}  {'unit':<6}  {'target':<9}  result")
    for r in rows:
        verdict = "" if r.ok is None else ("ok" if r.ok else "MISSED")
        print(f"{r.name:<{width}}  {r.value:>10.3f}  {r.unit:<6}  {r.target:<9}  {verdict}")
    missed = [r for r in rows if r.ok is False]
    print(f"\n{len(rows)} measurements, {len(missed)} targets missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
