"""The console's pure parts (docs/console.md): the per-minute history and its quantiles,
the edit form's mapping of API messages to fields, and the folder Deploy of local mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubefaas.api import InvalidFunction, parse_function
from kubefaas_gateway.console import forms
from kubefaas_gateway.console.history import MINUTES, History, Sample
from kubefaas_gateway.console.store import FolderStore, function_document
from kubefaas_gateway.registry import FunctionRegistry

ROOT = Path(__file__).resolve().parents[2]
HELLO = (ROOT / "examples" / "hello.yaml").read_text()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _sample(
    invocations: float, cold: float = 0, buckets: tuple[tuple[float, float], ...] = ()
) -> Sample:
    return Sample(invocations=invocations, cold_starts=cold, buckets=buckets)


def test_history_counts_per_minute_and_forgets_after_an_hour() -> None:
    clock = Clock(600 * 60.0)
    history = History(clock=clock)
    history.record({"default/a": _sample(5, cold=1)})  # first sight: 5 since start
    clock.now += 60
    history.record({"default/a": _sample(8, cold=1)})
    window = history.window("default/a", _sample(10, cold=2))  # live, same minute
    assert window.total.invocations == 10
    assert window.total.cold_starts == 2
    assert len(window.invocations) == MINUTES
    assert window.invocations[-2:] == [5.0, 5.0]  # 5 before the first sample, 5 since
    assert sum(window.invocations) == 10
    # Two hours later with no new calls, the window holds none of them.
    history.record({"default/a": _sample(10, cold=2)})
    clock.now += 2 * 3600
    later = history.window("default/a", _sample(10, cold=2))
    assert later.total.invocations == 0
    assert sum(later.invocations) == 0


def test_quantiles_interpolate_within_the_histogram_bucket() -> None:
    # 100 durations: 50 under 10 ms, 49 between 10 and 100 ms, 1 between 100 ms and 1 s.
    sample = Sample(buckets=((0.01, 50.0), (0.1, 99.0), (1.0, 100.0), (float("inf"), 100.0)))
    assert sample.quantile(0.5) == pytest.approx(0.01)
    assert sample.quantile(0.99) == pytest.approx(0.1)
    assert 0.1 < (sample.quantile(0.995) or 0) < 1.0
    assert Sample().quantile(0.5) is None


def _form(**changes: str) -> dict[str, str]:
    fn = parse_function(yaml.safe_load(HELLO))
    form = forms.form_of(function_document(fn), fn)
    submitted = {**form.values, "env": form.env}
    submitted.update({f"file:{name}": body for name, body in form.files})
    submitted.update(changes)
    return submitted


def test_each_api_message_is_put_next_to_its_field() -> None:
    fn = parse_function(yaml.safe_load(HELLO))
    submitted = _form(maxScale="5000", timeoutSeconds="soon", env="1BAD=x")
    _document, form, valid = forms.apply_form(function_document(fn), submitted)
    assert valid is None
    assert set(form.errors) == {"maxScale", "timeoutSeconds", "env"}
    # The messages are the model's own, as `kubefaas validate` prints them.
    bad = yaml.safe_load(HELLO)
    bad["spec"]["scaling"] = {"maxScale": 5000}
    with pytest.raises(InvalidFunction) as api:
        parse_function(bad)
    assert form.errors["maxScale"] == api.value.problems
    assert form.values["maxScale"] == "5000"  # what was typed is shown again


def test_a_valid_form_keeps_the_fields_it_does_not_show() -> None:
    document = yaml.safe_load(HELLO)
    document["spec"]["tmpSize"] = "128Mi"
    fn = parse_function(document)
    _doc, form, valid = forms.apply_form(function_document(fn), _form(env="GREETING=howdy"))
    assert valid is not None, form.errors
    assert str(valid.spec.tmp_size) == "128Mi"
    assert [(e.name, e.value) for e in valid.spec.env] == [("GREETING", "howdy")]


async def test_folder_deploy_rewrites_only_its_document_and_reloads(tmp_path: Path) -> None:
    other = yaml.safe_dump(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "other"},
            "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1\n"}}},
        }
    )
    (tmp_path / "both.yaml").write_text(HELLO + "---\n" + other)
    registry = FunctionRegistry()
    store = FolderStore(tmp_path, registry)
    store.reload()
    assert {fn.key for fn in registry} == {"default/hello", "default/other"}
    before_other = registry.get("default/other")

    document = function_document(registry.get("default/hello"))  # type: ignore[arg-type]
    document["spec"]["env"] = [{"name": "GREETING", "value": "howdy"}]
    assert await store.deploy(document) == f"wrote both.yaml and reloaded {tmp_path}"

    text = (tmp_path / "both.yaml").read_text()
    assert text.startswith("# JSON in, JSON out")  # the file's leading comment is kept
    assert "main.py: |" in text  # code stays readable as a block
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(text)] == ["hello", "other"]
    hello = registry.get("default/hello")
    assert hello is not None
    assert [(e.name, e.value) for e in hello.spec.env] == [("GREETING", "howdy")]
    assert registry.get("default/other") is before_other  # unchanged: not redefined

    # A new function gets a file of its own.
    document["metadata"]["name"] = "fresh"
    await store.deploy(document)
    assert (tmp_path / "fresh.yaml").exists()
    assert "default/fresh" in registry
