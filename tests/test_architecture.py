"""The direction of imports, checked on the source (AST): data flows inference -> figures -> tabs, never back.

- `inference/` never imports gradio or `components`, and names no UI tab;
- only `inference/model/` reaches into a model's modules (`model.model.layers`, `self_attn`, `get_decoder`);
- figure modules (`components/<feature>/figures.py`) are pure: no gradio, torch, session or model;
- tab modules (`components/<feature>/*.py` other than figures) never touch the model or torch themselves.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INFERENCE = sorted((ROOT / "inference").rglob("*.py"))
FEATURES = sorted(p for p in (ROOT / "components").glob("*/*.py"))
FIGURES = [p for p in FEATURES if p.name == "figures.py"]
TAB_MODULES = [p for p in FEATURES if p.name != "figures.py"]


def _imports(path: Path) -> set[str]:
    """Absolute names of every module the file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _hits(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("path", INFERENCE, ids=_rel)
def test_inference_never_imports_the_ui(path):
    assert not _hits(_imports(path), ("gradio", "components")), _rel(path)
    assert not re.search(r"[\"'][a-z]+_tab[\"']", path.read_text(encoding="utf-8")), f"{_rel(path)} names a UI tab"


@pytest.mark.parametrize("path", [p for p in INFERENCE if "model" not in p.relative_to(ROOT / "inference").parts[:1]],
                         ids=_rel)
def test_only_the_model_layer_reaches_into_the_model(path):
    source = path.read_text(encoding="utf-8")
    found = re.findall(r"\.self_attn\b|\bmodel\.model\b|\.layers\[|get_decoder\(|\.text_config\b", source)
    assert not found, f"{_rel(path)} reaches into the model ({found}); ask inference.model instead"


@pytest.mark.parametrize("path", FIGURES, ids=_rel)
def test_figures_are_pure(path):
    banned = ("gradio", "torch", "transformers", "inference.session", "inference.model")
    assert not _hits(_imports(path), banned), _rel(path)


@pytest.mark.parametrize("path", TAB_MODULES, ids=_rel)
def test_tabs_never_call_the_model(path):
    banned = ("torch", "transformers", "inference.model.run", "inference.model.hooks", "inference.model.loading")
    assert not _hits(_imports(path), banned), _rel(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    touched = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "model"]
    assert not touched, f"{_rel(path)} touches session.model on lines {touched}"
