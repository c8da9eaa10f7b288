"""Inline-code paths shared by the model test and the API-server test (model = CRD)."""

from __future__ import annotations

from kubefaas import limits

GOOD_PATHS = [
    "pkg/__init__.py",
    "pkg/sub/mod.py",
    "templates/page.html",
    ".env",
    "a/.hidden/b.txt",
    "x..y/z.py",
    "/".join(["d"] * (limits.INLINE_PATH_MAX_DEPTH - 1)) + "/f.py",
]

BAD_PATHS = [
    "../escape.py",
    "/etc/passwd",
    "pkg/../main.py",
    "./main2.py",
    "pkg/./x.py",
    "..data/x.py",
    "pkg/..data",
    "pkg//x.py",
    "pkg/",
    "with space.py",
    "back\\\\slash.py",
    "/".join(["d"] * limits.INLINE_PATH_MAX_DEPTH) + "/f.py",
    "p" * (limits.INLINE_PATH_MAX_LENGTH + 1),
]
