"""Tiny pure-Python wheels written by hand, and a find-links folder pip installs from with
no network (`PIP_NO_INDEX=1 PIP_FIND_LINKS=<folder>`)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def write_wheel(folder: Path, name: str, version: str, files: Mapping[str, str]) -> Path:
    """`<folder>/<name>-<version>-py3-none-any.whl` holding `files` (path -> source)."""
    dist_info = f"{name}-{version}.dist-info"
    contents = {
        **{path: source.encode() for path, source in files.items()},
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: kubefaas-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = "".join(
        f"{path},{_record_hash(data)},{len(data)}\n" for path, data in contents.items()
    )
    record += f"{dist_info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(contents):
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, contents[path])
        archive.writestr(zipfile.ZipInfo(f"{dist_info}/RECORD", (1980, 1, 1, 0, 0, 0)), record)
    return wheel


def offline_index(folder: Path) -> dict[str, str]:
    """A find-links folder with the `tinytext` wheel, and the pip environment using it
    (no index, no user configuration: the tests never reach the network)."""
    write_wheel(
        folder,
        "tinytext",
        "1.0",
        {"tinytext/__init__.py": "def shout(text):\n    return text.upper() + '!'\n"},
    )
    return {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(folder),
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
