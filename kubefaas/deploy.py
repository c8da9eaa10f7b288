"""`kubefaas deploy PATH`: build each function's image, push it, apply it by digest.

See docs/packaging.md. For every Function of the manifests at PATH whose code the cluster
cannot install by itself (`spec.code.path`, or inline code with a `requirements.txt`), the
code is built into an image (`kubefaas.build`) and pushed to `REGISTRY/<namespace>-<name>`;
the Function is then rewritten to `spec.image: REGISTRY/...@sha256:...` (no `spec.runtime`,
no `spec.code`) and applied with `kubectl apply -f -` (or printed with `--dry-run`), the
way `faas-cli up` and `func deploy` work. Other Functions are applied as they are.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubefaas import oci
from kubefaas.api import Function, InvalidFunction
from kubefaas.build import build_image, image_dependency_cache
from kubefaas.deps import REQUIREMENTS_FILE
from kubefaas.manifests import MANIFEST_SUFFIXES, load_file


@dataclass(frozen=True)
class Deployed:
    """One Function as it is applied, and the image built for it (None: left as is)."""

    document: dict[str, Any]
    image: str | None


def _manifests(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES)


def _needs_build(fn: Function) -> bool:
    code = fn.spec.code
    if code is None:
        return False
    return code.path is not None or (code.inline is not None and REQUIREMENTS_FILE in code.inline)


def _code_folder(fn: Function, manifest: Path, scratch: Path) -> Path:
    code = fn.spec.code
    assert code is not None
    if code.path is not None:
        return (manifest.parent / code.path).resolve()
    assert code.inline is not None
    folder = scratch / fn.namespace / fn.name
    for name, source in code.inline.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(source, encoding="utf-8")
    return folder


def as_image_function(fn: Function, image: str) -> dict[str, Any]:
    """`fn` as a Function of `image`: runtime and code dropped, everything else kept."""
    document = fn.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"status"})
    spec = document["spec"]
    spec.pop("runtime", None)
    spec.pop("code", None)
    spec["image"] = image
    meta = {k: v for k, v in document["metadata"].items() if v not in ({}, None)}
    document["metadata"] = meta
    return document


def build_all(
    path: Path, *, base: oci.Image, registry: str, cache_dir: Path, scheme: str
) -> list[Deployed]:
    """Build and push what needs it; InvalidFunction for a bad manifest (nothing pushed)."""
    found: list[tuple[Function, Path]] = []
    for manifest in _manifests(path):
        result = load_file(manifest)
        if result.errors:
            raise result.errors[0]
        found.extend((fn, manifest) for fn in result.functions)
    if not found:
        raise InvalidFunction([f"no Function in {path}"])
    cache = image_dependency_cache(cache_dir)
    deployed = []
    with tempfile.TemporaryDirectory(prefix="kubefaas-deploy-") as scratch:
        for fn, manifest in found:
            if not _needs_build(fn):
                document = fn.model_dump(by_alias=True, exclude_none=True, mode="json")
                deployed.append(Deployed(document, None))
                continue
            built = build_image(_code_folder(fn, manifest, Path(scratch)), base=base, cache=cache)
            repository = f"{registry.rstrip('/')}/{fn.namespace}-{fn.name}"
            digest = oci.push(
                built.image, f"{repository}:{built.image.digest[7:19]}", scheme=scheme
            )
            image = f"{repository}@{digest}"
            deployed.append(Deployed(as_image_function(fn, image), image))
    return deployed


def apply(deployed: Sequence[Deployed], kubectl: Sequence[str]) -> int:
    """`kubectl apply -f -` of every document; kubectl's exit status."""
    text = yaml.safe_dump_all([d.document for d in deployed], sort_keys=False)
    return subprocess.run(
        [*kubectl, "apply", "-f", "-"], input=text, text=True, check=False
    ).returncode
