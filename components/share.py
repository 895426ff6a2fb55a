"""Shareable links: a tab's prompt and parameters in the page's query string.

`?tab=sampling&prompt=Hello&temperature=0.7&seed=42` opens the Sampling tab with those values and runs
it. Each tab names the fields that define its view with `share_link(demo, tab, fields)`, which puts a
"Copy link" button in the tab and returns the tab's FIRST VIEW event: it happens once per page, when the tab is
first shown (at load for the tab the page opens on, else at the first click, tour stop or "open in" that shows
it), after the query values meant for this tab were applied. The tab chains its first run on that event
(`.then(...)`) INSTEAD of `demo.load`, so the run sees the link's values, nothing runs twice, and a page load
draws one tab, not ten. Values are checked against the component they go to (type, range, choices); a value that
does not fit is skipped with a warning, never passed on. No query value reaches a file path or a shell.
"""

from __future__ import annotations

import html
import math
from urllib.parse import parse_qsl, urlencode

import gradio as gr
from gradio.context import Context

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
    """A "Copy link" button for this tab's view, and the tab's first-view event (see the module's doc).

    Call it inside the tab. `tab` is the tab's short name (the module name without `_tab`); `fields` maps query
    keys to the components that define the view. Returns the first-view event: chain the tab's first run on it
    with `.then(fn, inputs, outputs, ...)` in place of `demo.load` (a link for another tab changes nothing here,
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
    shown = gr.State(False)  # this visitor's page has drawn the tab's first view

    def apply(already: bool, request: gr.Request):
        if already:  # a later visit: the view is there
            _stop("drawn")
        query, locked = page_query(request)
        updates, rejected = values_from_query(tab, fields, query)
        if locked:  # the teacher's lesson settings: shown, not changeable
            updates = [u if isinstance(u, dict) else gr.update(value=u, interactive=False) for u in updates]  # dict: gr.skip()
        if rejected:
            gr.Warning(html.escape(t("share.rejected", fields=", ".join(rejected))))
        return [*updates, True]

    # Gradio fires a tab's select when it is shown by any means: at load for the tab the page opens on, on a
    # click, and when an event switches tabs (gr.Tabs(selected=...)). Queued (not queue=False) so that
    # gr.Warning reaches the page; it touches no model and is instant.
    shows = _enclosing_tab().select(apply, shown, [*components, shown], api_visibility="private",
                                    show_progress="hidden")
    first_view = shows.success(**_GO_ON)
    first_view.shown = shown
    return first_view


# A step that does nothing: what follows it with .then runs only when the step before it succeeded.
_GO_ON = dict(fn=lambda: None, inputs=None, outputs=None, queue=False, api_visibility="private",
              show_progress="hidden")


def _stop(reason: str):
    """End an event chain here without a word on the page: a hidden error, so the .success after it does not run."""
    raise gr.Error(reason, visible=False, print_exception=False)


def stop_unless_drawn(drawn: bool) -> None:
    if not drawn:
        _stop("not drawn")


def when_drawn(trigger, first_view):
    """An event on `trigger` (e.g. a language change) whose .then chain runs only on a page that has drawn this
    tab's first view (`first_view`: what share_link returned). A tab not shown yet has nothing to redraw: its
    first view is drawn in the page's language and model of the moment it is shown."""
    return trigger(stop_unless_drawn, first_view.shown, None, queue=False, api_visibility="private",
                   show_progress="hidden").success(**_GO_ON)


def _enclosing_tab() -> gr.Tab:
    """The gr.Tab being built (share_link is called inside it)."""
    block = Context.block
    while block is not None and not isinstance(block, gr.Tab):
        block = block.parent
    if block is None:
        raise ValueError("share_link must be called inside a gr.Tab")
    return block


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
