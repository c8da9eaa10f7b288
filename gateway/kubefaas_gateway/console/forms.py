"""The edit form <-> a Function manifest, validated by the API's own model (docs/console.md,
"Edit and deploy").

`FORM_FIELDS` are the spec's common fields; everything else of a deployed Function
(tmpSize, destinations, labels...) is kept as it was. The manifest built from the form is
checked with `kubefaas.api.parse_function`, the same model the CRD is generated from, so
the console shows the API's own messages; each is placed next to the field it names.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubefaas import limits
from kubefaas.api import Function, InvalidFunction, parse_function

# (form field, manifest path under the document, label, kind)
FORM_FIELDS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("runtime", ("spec", "runtime"), "Runtime", "runtime"),
    ("handler", ("spec", "handler"), "Handler (module.function)", "text"),
    ("eventFormat", ("spec", "eventFormat"), "Event format", "eventFormat"),
    ("timeoutSeconds", ("spec", "timeoutSeconds"), "Timeout (seconds)", "int"),
    ("memory", ("spec", "memory"), "Memory", "text"),
    ("minScale", ("spec", "scaling", "minScale"), "Min instances", "int"),
    ("maxScale", ("spec", "scaling", "maxScale"), "Max instances", "int"),
    ("targetConcurrency", ("spec", "scaling", "targetConcurrency"), "Target concurrency", "int"),
    (
        "reservedConcurrency",
        ("spec", "scaling", "reservedConcurrency"),
        "Reserved concurrency (empty: none)",
        "optional-int",
    ),
    ("maxRetries", ("spec", "async", "maxRetries"), "Async max retries", "int"),
)
DEFAULTS: dict[str, Any] = {
    "runtime": limits.RUNTIMES[0],
    "handler": limits.DEFAULT_HANDLER,
    "eventFormat": limits.DEFAULT_EVENT_FORMAT,
}
RUNTIMES = limits.RUNTIMES
EVENT_FORMATS = ("json", "http")
NEW_FILE = "new_file_name"


@dataclass
class EditForm:
    """What the edit page shows: field values, code files, and the errors by field."""

    name: str
    namespace: str
    values: dict[str, str]
    files: list[tuple[str, str]]
    env: str
    errors: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)


def _get(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = document
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = document
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def form_of(document: dict[str, Any], fn: Function | None) -> EditForm:
    """The form for a manifest (defaults filled in from the model when the field is unset)."""
    spec = fn.spec.model_dump(by_alias=True, mode="json") if fn is not None else {}
    values = {}
    for name, path, _label, _kind in FORM_FIELDS:
        value = _get(document, path)
        if value is None:
            value = _get({"spec": spec}, path)
        if value is None:
            value = DEFAULTS.get(name, "")
        values[name] = "" if value is None else str(value)
    inline = _get(document, ("spec", "code", "inline")) or {}
    env = "\n".join(
        f"{item.get('name', '')}={item.get('value', '')}"
        for item in (_get(document, ("spec", "env")) or [])
    )
    meta = document.get("metadata") or {}
    return EditForm(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "default")),
        values=values,
        files=sorted(inline.items()),
        env=env,
    )


def _number(text: str, kind: str) -> Any:
    text = text.strip()
    if kind == "optional-int" and not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text  # the model says what is wrong with it


def apply_form(
    base: dict[str, Any], submitted: dict[str, str]
) -> tuple[dict[str, Any], EditForm, Function | None]:
    """The manifest `base` with the submitted fields, its form, and the valid Function (or
    None, with the model's messages in the form's errors)."""
    document = copy.deepcopy(base)
    for name, path, _label, kind in FORM_FIELDS:
        raw = submitted.get(name, "")
        value: Any = _number(raw, kind) if kind in ("int", "optional-int") else raw.strip()
        if value == "" and kind != "text":
            value = None
        _set(document, path, value if value != "" else None)
    files: dict[str, str] = {}
    for key, body in submitted.items():
        if key.startswith("file:"):
            files[key.removeprefix("file:")] = body.replace("\r\n", "\n")
    new_name = submitted.get(NEW_FILE, "").strip()
    if new_name:
        files[new_name] = submitted.get("new_file_body", "").replace("\r\n", "\n")
    if files:
        document.setdefault("spec", {}).setdefault("code", {})["inline"] = files
    env = []
    for line in submitted.get("env", "").splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            env.append({"name": key.strip(), "value": value})
    _set(document, ("spec", "env"), env or None)
    form = form_of(document, None)
    form.values = {name: submitted.get(name, "") for name, *_ in FORM_FIELDS}
    try:
        fn = parse_function(document)
    except InvalidFunction as exc:
        for problem in exc.problems:
            place = _field_of(problem)
            if place is None:
                form.general.append(problem)
            else:
                form.errors.setdefault(place, []).append(problem)
        return document, form, None
    return document, form, fn


STARTER_CODE = """def handler(event, context):
    return {"hello": event}
"""


def new_document(name: str, namespace: str) -> dict[str, Any]:
    """The manifest a new function starts from: inline Python code, every other default."""
    meta: dict[str, Any] = {"name": name}
    if namespace != "default":
        meta["namespace"] = namespace
    return {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": meta,
        "spec": {"runtime": limits.RUNTIMES[0], "code": {"inline": {"main.py": STARTER_CODE}}},
    }


def _field_of(problem: str) -> str | None:
    """The form field an API message is about (`spec.scaling.maxScale: ...` -> maxScale)."""
    location = problem.partition(":")[0].strip()
    parts = tuple(location.split("."))
    if parts[:2] == ("metadata", "name"):
        return "name"
    if parts[:2] == ("metadata", "namespace"):
        return "namespace"
    for name, path, _label, _kind in FORM_FIELDS:
        if parts[: len(path)] == path:
            return name
    if parts[:2] == ("spec", "env"):
        return "env"
    if parts[:2] == ("spec", "code"):
        return "code"
    return None
