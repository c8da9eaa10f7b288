"""The build Job's settings (docs/packaging.md, "On a cluster: the build Job").

Parsed from the operator's environment, which the chart fills from `build.*` values. No
`KUBEFAAS_BUILD_REGISTRY` means no builds: a Function with a `requirements.txt` then runs
the runtime image with its code mounted, as before (and cannot import its packages).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

REGISTRY_ENV = "KUBEFAAS_BUILD_REGISTRY"
PIP_INDEX_URL_ENV = "KUBEFAAS_BUILD_PIP_INDEX_URL"
PIP_EXTRA_ARGS_ENV = "KUBEFAAS_BUILD_PIP_EXTRA_ARGS"
CREDENTIALS_SECRET_ENV = "KUBEFAAS_BUILD_CREDENTIALS_SECRET"
PLAIN_HTTP_ENV = "KUBEFAAS_BUILD_PLAIN_HTTP"
BASE_IMAGES_ENV = "KUBEFAAS_BUILD_BASE_IMAGES"
DEADLINE_ENV = "KUBEFAAS_BUILD_DEADLINE_SECONDS"
TTL_ENV = "KUBEFAAS_BUILD_TTL_SECONDS"

DEFAULT_DEADLINE_SECONDS = 900
DEFAULT_TTL_SECONDS = 3600


class BuildConfigError(ValueError):
    """A build setting the operator cannot use; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    registry: str
    """``KUBEFAAS_BUILD_REGISTRY``: ``HOST[:PORT][/PREFIX]`` images are pushed under, as
    ``<registry>/<namespace>-<name>:<key>``; pods pull them from there by digest."""
    pip_index_url: str | None = None
    """``KUBEFAAS_BUILD_PIP_INDEX_URL``: ``PIP_INDEX_URL`` of the build (a private mirror)."""
    pip_extra_args: tuple[str, ...] = ()
    """``KUBEFAAS_BUILD_PIP_EXTRA_ARGS``: more pip options, shell-split
    (``--extra-index-url ... --trusted-host ...``)."""
    credentials_secret: str | None = None
    """``KUBEFAAS_BUILD_CREDENTIALS_SECRET``: a ``kubernetes.io/dockerconfigjson`` Secret in
    the Function's namespace, mounted into the build pod (never read by the operator)."""
    plain_http: bool = False
    """``KUBEFAAS_BUILD_PLAIN_HTTP``: talk HTTP to the registry (a registry on the node)."""
    base_images: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """``KUBEFAAS_BUILD_BASE_IMAGES`` (JSON runtime -> reference in a registry the builder
    reaches): the image built on; unset runtimes use the runtime image itself."""
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    """``KUBEFAAS_BUILD_DEADLINE_SECONDS``: the Job's ``activeDeadlineSeconds``."""
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    """``KUBEFAAS_BUILD_TTL_SECONDS``: the Job's ``ttlSecondsAfterFinished``."""

    def base_image(self, runtime: str, runtime_images: Mapping[str, str]) -> str:
        return self.base_images.get(runtime) or runtime_images[runtime]


def _seconds(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise BuildConfigError(f"{name} must be a positive whole number of seconds, got {text!r}")
    return int(text)


def load_build_config(environ: Mapping[str, str]) -> BuildConfig | None:
    """The build settings, or None when no registry is configured (builds off)."""
    registry = environ.get(REGISTRY_ENV, "").strip().rstrip("/")
    if not registry:
        return None
    host = registry.split("/", 1)[0]
    if "://" in registry or not host or ("." not in host and ":" not in host):
        raise BuildConfigError(
            f"{REGISTRY_ENV} must be HOST[:PORT][/PREFIX] without a scheme, "
            f"e.g. 127.0.0.1:5000 or registry.example.com/functions; got {registry!r}"
        )
    images_text = environ.get(BASE_IMAGES_ENV, "").strip()
    base_images: dict[str, str] = {}
    if images_text:
        try:
            value = json.loads(images_text)
        except json.JSONDecodeError as exc:
            raise BuildConfigError(f"{BASE_IMAGES_ENV} is not JSON: {exc}") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            raise BuildConfigError(f"{BASE_IMAGES_ENV} must be a JSON object runtime -> image")
        base_images = dict(value)
    try:
        extra = tuple(shlex.split(environ.get(PIP_EXTRA_ARGS_ENV, "")))
    except ValueError as exc:
        raise BuildConfigError(f"{PIP_EXTRA_ARGS_ENV}: {exc}") from None
    plain = environ.get(PLAIN_HTTP_ENV, "").strip().lower()
    if plain not in ("", "0", "1", "true", "false", "yes", "no"):
        raise BuildConfigError(f"{PLAIN_HTTP_ENV} must be true or false, got {plain!r}")
    return BuildConfig(
        registry=registry,
        pip_index_url=environ.get(PIP_INDEX_URL_ENV, "").strip() or None,
        pip_extra_args=extra,
        credentials_secret=environ.get(CREDENTIALS_SECRET_ENV, "").strip() or None,
        plain_http=plain in ("1", "true", "yes"),
        base_images=MappingProxyType(base_images),
        deadline_seconds=_seconds(environ, DEADLINE_ENV, DEFAULT_DEADLINE_SECONDS),
        ttl_seconds=_seconds(environ, TTL_ENV, DEFAULT_TTL_SECONDS),
    )
