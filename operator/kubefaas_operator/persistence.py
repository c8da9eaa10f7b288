"""Where kopf keeps its bookkeeping on a Function: annotations under ``kubefaas.io/``.

Not in ``status``: the CRD's status schema is the user's view (conditions, replicas, url)
and stays free of framework fields.

Persisted formats (kopf's, with our prefix `naming.PROGRESS_PREFIX`):

- ``kubefaas.io/<handler-id>``: JSON progress of a handler being retried
  (``{"started", "retries", "delayed", ...}``); removed once the handler succeeds.
- ``kubefaas.io/last-handled-configuration``: JSON of the Function's essence (spec, labels,
  annotations) as last reconciled; kopf diffs against it to tell an update from a no-op.
  Unlike kopf's default, each inline code file is stored as ``sha256:<hex>`` of its text:
  annotations share a 256 KiB limit per object, and inline code may be up to 900 KiB
  (`limits.INLINE_CODE_MAX_BYTES`), so storing it verbatim would make the Function
  unpatchable. A digest still changes whenever the code does, which is all the diff needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import kopf

from kubefaas import naming

DIFFBASE_KEY = "last-handled-configuration"


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class CompactDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base with inline code files replaced by their digests."""

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[Any] | None = None,
    ) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        code = essence.get("spec", {}).get("code") or {}
        inline = code.get("inline")
        if isinstance(inline, dict):
            code["inline"] = {name: digest(str(text)) for name, text in inline.items()}
        return essence


def progress_storage() -> kopf.ProgressStorage:
    return kopf.AnnotationsProgressStorage(prefix=naming.PROGRESS_PREFIX)


def diffbase_storage() -> kopf.DiffBaseStorage:
    return CompactDiffBaseStorage(prefix=naming.PROGRESS_PREFIX, key=DIFFBASE_KEY)
