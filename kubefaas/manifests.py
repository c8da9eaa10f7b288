"""Reading Function manifests from files, as `kubectl apply -f DIR` would.

Every `.yaml`/`.yml`/`.json` file in a folder (not recursive) may hold several documents.
Documents of other kinds are ignored (a folder may also hold ConfigMaps); empty documents
are skipped. A bad document is reported with its file, document index, field and rule, and
never stops the good ones from loading.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubefaas.api import Function, InvalidFunction, parse_function

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class LoadResult:
    """What a folder held: the valid Functions and one error per bad document."""

    functions: list[Function] = field(default_factory=list)
    errors: list[InvalidFunction] = field(default_factory=list)
    # Non-Function documents (e.g. ConfigMaps holding code), keyed by (namespace, name).
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # Secrets (credentials of queue triggers), keyed the same way: stringData, or data
    # decoded from base64 as the API server would.
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)


def _documents(path: Path) -> list[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    docs = list(yaml.safe_load_all(text))
    many = len(docs) > 1
    return [(f"{path}#{i + 1}" if many else str(path), doc) for i, doc in enumerate(docs)]


def load_file(path: Path, result: LoadResult | None = None) -> LoadResult:
    """Add the Functions of one file to `result`; YAML syntax errors become an error entry."""
    result = result if result is not None else LoadResult()
    try:
        documents = _documents(path)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        result.errors.append(InvalidFunction([f"not valid YAML: {exc}"], str(path)))
        return result
    for source, doc in documents:
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            meta = doc.get("metadata") or {}
            key = (str(meta.get("namespace", "default")), str(meta.get("name", "")))
            result.config_maps[key] = {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
            continue
        if isinstance(doc, dict) and doc.get("kind") == "Secret":
            meta = doc.get("metadata") or {}
            key = (str(meta.get("namespace", "default")), str(meta.get("name", "")))
            data = {
                str(k): base64.b64decode(str(v)).decode("utf-8", "replace")
                for k, v in (doc.get("data") or {}).items()
            }
            data.update({str(k): str(v) for k, v in (doc.get("stringData") or {}).items()})
            result.secrets[key] = data
            continue
        if isinstance(doc, dict) and doc.get("kind") not in (None, "Function"):
            continue
        try:
            result.functions.append(parse_function(doc, source))
        except InvalidFunction as exc:
            result.errors.append(exc)
    return result


def load_directory(directory: Path) -> LoadResult:
    """Load every manifest file directly in `directory` (or the one file it names)."""
    result = LoadResult()
    paths = (
        [directory]
        if directory.is_file()
        else sorted(p for p in directory.iterdir() if p.suffix in MANIFEST_SUFFIXES)
    )
    for path in paths:
        load_file(path, result)
    seen: dict[str, str] = {}
    unique = []
    for fn in result.functions:
        if fn.key in seen:
            result.errors.append(
                InvalidFunction([f"function {fn.key} is defined twice"], seen[fn.key])
            )
            continue
        seen[fn.key] = fn.key
        unique.append(fn)
    result.functions = unique
    return result
