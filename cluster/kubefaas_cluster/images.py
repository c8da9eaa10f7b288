"""Local images: the pod sandbox ("pause") image, built from C, and imports into containerd.

Every pod needs a sandbox image and none can be pulled here, so a tiny static C program is
built with ``gcc -static`` and written as a one-layer OCI archive. The binary and archive
are cached under ``$KUBEFAAS_CACHE/pause/<source sha256 prefix>/`` (``pause`` and
``pause.oci.tar``), so a change to the source builds a new image and nothing else does.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from kubefaas_cluster import oci
from kubefaas_cluster.binaries import BuildError, cache_root, ensure_command

# The exact name containerd's CRI `sandbox_image` points at; a "localhost/" name is never
# looked up in a registry.
PAUSE_IMAGE = "localhost/kubefaas/pause:3.10"
CONTAINERD_NAMESPACE = "k8s.io"
IMPORT_ATTEMPTS = 4

# Sleeps until SIGINT/SIGTERM, reaps orphaned children (it is PID 1 of the pod when the
# process namespace is shared), exits 0 on a stop signal.
PAUSE_SOURCE = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stop = {0};
    stop.sa_handler = on_stop;
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    struct sigaction child = {0};
    child.sa_handler = on_child;
    child.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &child, NULL);
    for (;;) {
        pause();
    }
    return 1;
}
"""


def _pause_dir() -> Path:
    digest = hashlib.sha256(PAUSE_SOURCE.encode()).hexdigest()[:16]
    return cache_root() / "pause" / digest


def build_pause() -> Path:
    """The static pause binary, compiled once per source version."""
    target = _pause_dir() / "pause"
    if target.is_file():
        return target
    gcc = ensure_command("gcc", package="gcc")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = target.parent / "pause.c"
    source.write_text(PAUSE_SOURCE, encoding="utf-8")
    partial = target.with_suffix(".partial")
    result = subprocess.run(
        [str(gcc), "-static", "-Os", "-s", "-o", str(partial), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"gcc -static failed (is libc6-dev installed?): {result.stderr}")
    partial.replace(target)
    return target


def pause_archive() -> Path:
    """The pause image as an OCI archive, written once per source version."""
    archive = _pause_dir() / "pause.oci.tar"
    if archive.is_file():
        return archive
    binary = build_pause()
    layer = oci.layer_from_entries(
        archive.parent / "layer.tar", {"pause": oci.FileEntry(binary.read_bytes(), mode=0o755)}
    )
    oci.write_oci_archive(
        archive,
        reference=PAUSE_IMAGE,
        layers=[layer],
        config=oci.ImageConfig(entrypoint=("/pause",), env=()),
    )
    layer.unlink()
    return archive


def import_archive(archive: Path, *, ctr: Path, address: Path) -> None:
    """``ctr images import`` into the CRI namespace; importing the same archive again is a no-op.

    The image is unpacked for the default snapshotter during import, so the first pod that
    uses it does not pay for that. Re-tagging an image (a rebuilt one replaces the old)
    wakes containerd 1.6's garbage collector, which can remove a shared parent snapshot
    while the next import unpacks onto it ("parent snapshot ... does not exist"); the same
    import then succeeds when tried again, so a few attempts are made before giving up.
    """
    command = [
        str(ctr),
        f"--address={address}",
        f"--namespace={CONTAINERD_NAMESPACE}",
        "images",
        "import",
        str(archive),
    ]
    for attempt in range(1, IMPORT_ATTEMPTS + 1):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        output = result.stderr or result.stdout
        if "does not exist" not in output or attempt == IMPORT_ATTEMPTS:
            raise BuildError(f"ctr images import {archive} failed: {output}")
        time.sleep(0.5 * attempt)


def containerd_answers(*, ctr: Path, address: Path) -> bool:
    """True once containerd serves its API on `address`."""
    result = subprocess.run(
        [str(ctr), f"--address={address}", "version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return result.returncode == 0
