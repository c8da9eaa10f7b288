"""`kubefaas build DIR`: a function folder -> an OCI image, without Docker.

See docs/packaging.md. The image is the runtime image (`--base`, an OCI archive) + a
dependencies layer (requirements.txt installed by `kubefaas.deps` for the image's
platform, cached by its hash) + a code layer (the folder at the pods' code path). Only the
code layer changes when only the code does; `kubefaas.oci` writes the layers
deterministically, so an unchanged folder gives the same image digest.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kubefaas import naming, oci
from kubefaas.deps import REQUIREMENTS_FILE, DependencyCache

# The runtime image's interpreter and platform: wheels are chosen for it, not for the
# machine that builds (a pure-Python or manylinux wheel; no sdist is built).
IMAGE_PYTHON_VERSION = "3.11"
# The runtime image's C library (Debian bookworm: glibc 2.36): every manylinux tag up to
# it is accepted, as pip would on the image itself.
IMAGE_GLIBC_MINOR = 36
IMAGE_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(IMAGE_GLIBC_MINOR, 16, -1)),
    "manylinux2014_x86_64",
    "linux_x86_64",
)
IMAGE_PIP_ARGS = (
    "--python-version",
    IMAGE_PYTHON_VERSION,
    "--implementation",
    "cp",
    *(arg for platform in IMAGE_PLATFORMS for arg in ("--platform", platform)),
    "--only-binary=:all:",
)


# The ABI part of a requirements key (`kubefaas.deps.requirements_key`) for the image: the
# same for `kubefaas build`, the build Job and the operator deciding whether to build.
IMAGE_ABI = f"cp{IMAGE_PYTHON_VERSION.replace('.', '')}-glibc2.{IMAGE_GLIBC_MINOR}-x86_64"


def image_dependency_cache(
    cache_dir: Path, *, extra_pip_args: tuple[str, ...] = ()
) -> DependencyCache:
    return DependencyCache(
        cache_dir / "deps",
        python=sys.executable,
        abi=IMAGE_ABI,
        pip_args=(*IMAGE_PIP_ARGS, *extra_pip_args),
    )


@dataclass(frozen=True)
class Built:
    """The image and what it is made of (for `kubefaas build`'s summary and bench/)."""

    image: oci.Image
    base_layers: int
    deps: oci.Layer | None
    code: oci.Layer
    deps_installed: bool


def build_image(
    code_dir: Path, *, base: oci.Image, cache: DependencyCache, runtime: str = "python3.11"
) -> Built:
    """The function image of `code_dir` on `base`; InstallFailed if pip fails."""
    layers: list[oci.Layer] = []
    deps_layer = None
    fresh = False
    env: dict[str, str] = {}
    requirements = code_dir / REQUIREMENTS_FILE
    if requirements.is_file():
        installed = cache.ensure(str(code_dir), runtime, requirements.read_text(encoding="utf-8"))
        fresh = installed.fresh
        deps_layer = _dependencies_layer(installed.path, installed.key)
        layers.append(deps_layer)
        env["KUBEFAAS_DEPS_DIR"] = oci.DEPS_DIR
    code_layer = oci.layer_from_folder(code_dir, naming.CODE_MOUNT_PATH, "kubefaas build: code")
    layers.append(code_layer)
    image = oci.extend(base, layers, env=env)
    return Built(image, len(base.layers), deps_layer, code_layer, fresh)


def _dependencies_layer(installed: Path, key: str) -> oci.Layer:
    """The layer of an installed set, kept next to it: a rebuild of the same requirements
    neither re-tars nor re-compresses it (for a heavy set that is most of the build)."""
    blob_path = installed.with_name(f"{key}.layer.tar.gz")
    diff_path = installed.with_name(f"{key}.layer.diffid")
    created_by = f"kubefaas build: {REQUIREMENTS_FILE} {key}"
    if blob_path.is_file() and diff_path.is_file():
        blob = oci.Blob(oci.MEDIA_LAYER_GZIP, blob_path.read_bytes())
        return oci.Layer(blob, diff_path.read_text().strip(), created_by)
    layer = oci.layer_from_folder(installed, oci.DEPS_DIR, created_by)
    staging = blob_path.with_name(blob_path.name + ".tmp")
    staging.write_bytes(layer.blob.data)
    diff_path.write_text(layer.diff_id + "\n")
    staging.replace(blob_path)
    return layer


def empty_folder_layer(prefix: str) -> oci.Layer:
    """A layer holding only the folder `prefix` (a stand-in base in tests and benches)."""
    with tempfile.TemporaryDirectory() as empty:
        return oci.layer_from_folder(Path(empty), prefix, "base")
