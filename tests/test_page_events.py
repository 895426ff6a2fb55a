"""The page's events stay cheap for the browser however many tabs a visitor has opened.

Gradio's page keeps a loading status for every component that any event ever showed progress on, and on every status
change of every event it looks each of them up in the page's tree and re-reads its data (a container: everything
inside it). So no event may show progress on a container, and an event whose progress is hidden shows it nowhere
(`app.limit_progress_targets`). Checked on the config the browser receives."""

from __future__ import annotations

import pytest

CONTAINER_TYPES = {"tabs", "tabitem", "accordion", "column", "row", "group"}


@pytest.fixture(scope="module")
def page_config(session):
    import app

    return app.build_demo().get_config_file()


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
