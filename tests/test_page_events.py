"""The page's events stay cheap for the browser however many tabs a visitor has opened, and a page load draws only
the tab it opens on.

Gradio's page keeps a loading status for every component that any event ever showed progress on, and on every status
change of every event it looks each of them up in the page's tree and re-reads its data (a container: everything
inside it). So no event may show progress on a container, and an event whose progress is hidden shows it nowhere
(`app.limit_progress_targets`). Checked on the config the browser receives."""

from __future__ import annotations

import pytest

CONTAINER_TYPES = {"tabs", "tabitem", "accordion", "column", "row", "group"}


@pytest.fixture(scope="module")
def demo(session):
    import app

    return app.build_demo()


@pytest.fixture(scope="module")
def page_config(demo):
    return demo.get_config_file()


def _targets(dep: dict) -> list[int]:
    return dep["outputs"] if dep.get("show_progress_on") is None else dep["show_progress_on"]


def test_no_event_shows_progress_on_a_container(page_config):
    kinds = {c["id"]: c["type"] for c in page_config["components"]}
    assert {"tabs", "tabitem", "accordion", "column"} <= set(kinds.values())  # the page has them
    shown_on = {dep["id"]: {kinds[i] for i in _targets(dep)} for dep in page_config["dependencies"]}
    offending = {dep: sorted(types & CONTAINER_TYPES) for dep, types in shown_on.items() if types & CONTAINER_TYPES}
    assert not offending, offending


def test_events_with_hidden_progress_track_no_component(page_config):
    hidden = [dep for dep in page_config["dependencies"] if dep["show_progress"] == "hidden"]
    assert len(hidden) > 10  # the language's redraws, the relabel, animation frames
    assert all(_targets(dep) == [] for dep in hidden), [dep["id"] for dep in hidden if _targets(dep)]


def test_the_language_relabel_tracks_nothing(page_config):
    """The relabel's outputs are every translated component of the page (the tabs' titles among them)."""
    biggest = max(page_config["dependencies"], key=lambda dep: len(dep["outputs"]))
    assert len(biggest["outputs"]) > 300 and _targets(biggest) == []


def _chained(demo, starts: list, through=lambda fn: True) -> list:
    """`starts` and every event chained after them (.then / .success), transitively (only after those `through`)."""
    found, todo = [], list(starts)
    while todo:
        fn = todo.pop()
        found.append(fn)
        if through(fn):
            todo += [f for f in demo.fns.values() if f.trigger_after == fn._id]
    return found


def test_a_page_load_runs_no_model_work_and_each_tab_draws_when_first_shown(demo):
    """A hidden tab's first view waits until the tab is shown (components.share): a page load, or a visitor's model
    change, runs the model only for tabs that are drawn (measured: 39 events and ~13 s before an English page was
    quiet, 8 events and 2 s now). Each tab's first view follows its select event, which Gradio fires for the tab
    the page opens on, a click, and an event that switches tabs."""
    import gradio as gr

    from components.common import MODEL_CONCURRENCY
    from components.share import stop_unless_drawn

    def model_work(fns):
        return [fn.name for fn in fns if fn.concurrency_id == MODEL_CONCURRENCY]

    loads = [fn for fn in demo.fns.values() if any(event == "load" for _, event in fn.targets)]
    assert loads and model_work(_chained(demo, loads)) == []
    tabs = {block._id: block for block in demo.blocks.values() if isinstance(block, gr.Tab)}
    first_views = {tabs[block_id].id: model_work(_chained(demo, [fn]))
                   for fn in demo.fns.values() for block_id, event in fn.targets
                   if event == "select" and block_id in tabs}
    assert len(first_views) >= 9  # every tab with a link (the serving view runs only on its button)
    assert all(first_views[f"{tab}_tab"] for tab in ("forward", "attention", "interventions", "sampling", "beam"))
    model_shown = [fn for fn in demo.fns.values() if (demo.model_shown._id, "change") in fn.targets]
    ungated = model_work(_chained(demo, model_shown, through=lambda fn: fn.fn is not stop_unless_drawn))
    assert ungated == [], f"runs on a model change whether or not its tab was ever shown: {ungated}"
    assert len(model_work(_chained(demo, model_shown))) >= 5  # ... and redraws the tabs that are drawn
