"""Shareable links: a tab's prompt and parameters in the page's query string.

`?tab=sampling&prompt=Hello&temperature=0.7&seed=42` opens the Sampling tab with those values and runs
it. Each tab names the fields that define its view with `share_link(demo, tab, fields)`, which puts a
"Copy link" button in the tab and returns the page-load event that applies the query values meant for
this tab. The tab chains its first run on that event (`.then(...)`) INSTEAD of `demo.load`, so the run
sees the link's values and nothing runs twice. Values are checked against the component they go to (type,
range, choices); a value that does not fit is skipped with a warning, never passed on. No query value reaches
a file path or a shell.
"""

from __future__ import annotations

import html
import math
from urllib.parse import parse_qsl, urlencode

import gradio as gr

from inference.limits import MAX_TEXT_CHARS
from inference.model import policy

from .i18n import T, t

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}
# Query parameters the app itself uses; no tab field may take these names.
RESERVED = {"tab", "presenter", "__theme", "view", "lang"}

# Every tab's link fields, as registered by `share_link` (the bounds test reads them).
LINK_FIELDS: dict[str, dict] = {}

COPY_JS = """(query) => {
  if (!query) return "";
  const url = window.location.origin + window.location.pathname + "?" + query;
  try { navigator.clipboard.writeText(url); } catch (e) { /* no clipboard (plain http): the box shows it */ }
  return url;
}"""


def encode(value) -> str | None:
    """A field's value as query text; None leaves it out."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, (list, tuple)):  # multi-select: comma-joined
        return ",".join(str(v) for v in value)
    return str(value)


def _choice_values(component) -> list:
    return [c[1] if isinstance(c, (list, tuple)) else c for c in (getattr(component, "choices", None) or [])]


def decode(component, raw: str):
    """The query text converted for `component`; ValueError if it does not fit."""
    if isinstance(component, gr.Checkbox):
        low = raw.strip().lower()
        if low in TRUE | FALSE:
            return low in TRUE
        raise ValueError("expected 1 or 0")
    if isinstance(component, (gr.Slider, gr.Number)):
        number = float(raw)
        if not math.isfinite(number):
            raise ValueError("not a finite number")
        low, high = getattr(component, "minimum", None), getattr(component, "maximum", None)
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"outside {low}..{high}")
        integral = getattr(component, "precision", None) == 0 or (
            isinstance(component, gr.Slider) and float(component.step).is_integer() and float(low or 0).is_integer())
        if integral:
            if not number.is_integer():
                raise ValueError("expected a whole number")
            return int(number)
        return number
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        values = _choice_values(component)
        if getattr(component, "multiselect", False):
            picked = [v for v in raw.split(",") if v]
            matched = [next((c for c in values if str(c) == v), None) for v in picked]
            if None in matched:
                raise ValueError("not one of the choices")
            return matched
        for c in values:
            if str(c) == raw:
                return c
        raise ValueError("not one of the choices")
    if len(raw) > MAX_TEXT_CHARS:
        raise ValueError(f"longer than {MAX_TEXT_CHARS:,} characters")
    return raw


def query_for(tab: str, keys: list[str], values) -> str:
    """The query string of a view: the tab, each field that has a value, and the visitor's language (a link
    opens in the language it was copied in)."""
    from .i18n import DEFAULT, language

    pairs = [("tab", tab)] + [(k, e) for k, v in zip(keys, values) if (e := encode(v)) is not None]
    lang = language()
    return urlencode(pairs + ([("lang", lang)] if lang != DEFAULT else []))


def values_from_query(tab: str, fields: dict, query: dict[str, str]) -> tuple[list, list[str]]:
    """Updates for `fields` from a page's query (gr.skip() where absent or not for this tab), and the
    names of values that were rejected."""
    if query.get("tab") != tab:
        return [gr.skip()] * len(fields), []
    updates, rejected = [], []
    for key, component in fields.items():
        if key not in query:
            updates.append(gr.skip())
            continue
        try:
            updates.append(decode(component, query[key]))
        except (ValueError, TypeError):
            updates.append(gr.skip())
            rejected.append(key)
    return updates, rejected


def share_link(demo: gr.Blocks, tab: str, fields: dict[str, gr.components.Component]):
    """A "Copy link" button for this tab's view, and the page-load step that applies a shared link.

    `tab` is the tab's short name (the module name without `_tab`); `fields` maps query keys to the
    components that define the view. Returns the load event: chain the tab's first run on it with
    `.then(fn, inputs, outputs, ...)` in place of `demo.load` (a link for another tab changes nothing here,
    and the run then shows the defaults)."""
    bad = RESERVED & set(fields)
    if bad:
        raise ValueError(f"reserved query names used as fields: {sorted(bad)}")
    keys, components = list(fields), list(fields.values())
    LINK_FIELDS[tab] = dict(fields)
    with gr.Row(elem_classes=["lie-share-row"]):
        copy = demo.texts.make(gr.Button, T("share.copy"), size="sm", elem_id=f"share-{tab}",
                               elem_classes=["lie-share"], scale=0, min_width=220)
        link = demo.texts.make(gr.Textbox, show_label=False, container=False, interactive=False,
                               elem_id=f"share-{tab}-url", placeholder=T("share.placeholder"), scale=3)
    copy.click(lambda *values: query_for(tab, keys, values), components, link, queue=False,
               api_visibility="private").then(None, link, link, js=COPY_JS, queue=False)

    def apply(request: gr.Request):
        query, locked = page_query(request)
        updates, rejected = values_from_query(tab, fields, query)
        if locked:  # the teacher's lesson settings: shown, not changeable
            updates = [u if isinstance(u, dict) else gr.update(value=u, interactive=False) for u in updates]  # dict: gr.skip()
        if rejected:
            gr.Warning(html.escape(t("share.rejected", fields=", ".join(rejected))))
        return updates if len(updates) > 1 else updates[0]

    # Queued (not queue=False) so that gr.Warning reaches the page; it touches no model and is instant.
    return demo.load(apply, None, components, api_visibility="private", show_progress="hidden")


def page_query(request: gr.Request | None) -> tuple[dict[str, str], bool]:
    """The query a page opens with, and whether its values are locked: the visitor's own link, or the
    teacher's lesson settings (policy.lesson_query) when the link names no tab or the teacher locked them."""
    own = dict(request.query_params) if request else {}
    host = policy.current()
    lesson = dict(parse_qsl(host.lesson_query))
    if host.lesson_query and (host.lock_settings or "tab" not in own):
        return {**own, **lesson}, host.lock_settings
    return own, False


def tab_from_query(query: dict[str, str], tabs: list[str]):
    """The tab a link opens (gr.Tabs update) or gr.skip()."""
    name = query.get("tab")
    return gr.Tabs(selected=f"{name}_tab") if name in tabs else gr.skip()
