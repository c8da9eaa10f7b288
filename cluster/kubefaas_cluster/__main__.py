"""Command line: ``python -m kubefaas_cluster COMMAND``.

Commands: build, up, down, status, kubeconfig, smoke, images, knative.

The Makefile targets ``k8s-binaries``, ``cluster-up`` and ``cluster-down`` call this, and
the pytest fixture uses the same `LocalCluster`, so a developer's cluster and a test
session's cluster are started the same way.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from kubefaas_cluster import appimages, binaries, images, knative
from kubefaas_cluster.binaries import BinaryCache, BuildError, MissingBinary
from kubefaas_cluster.cluster import DEFAULT_TIMEOUT_SECONDS, ClusterError, LocalCluster
from kubefaas_cluster.layout import default_cluster_dir
from kubefaas_cluster.smoke import run_smoke


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubefaas_cluster",
        description="Build and run a local Kubernetes cluster from source, without Docker.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="cluster state directory (default: $KUBEFAAS_CLUSTER_DIR or <repo>/.cluster)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build and cache the Kubernetes binaries, helm and etcd")
    up = commands.add_parser("up", help="start the cluster (reuses what already runs)")
    up.add_argument("--api-only", action="store_true", help="etcd + API server + controllers")
    up.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS)
    up.add_argument(
        "--no-images", action="store_true", help="do not build and import the kubefaas images"
    )
    down = commands.add_parser("down", help="stop every process the cluster started")
    down.add_argument("--purge", action="store_true", help="also delete the cluster directory")
    commands.add_parser("status", help="list the components and their PIDs")
    commands.add_parser("kubeconfig", help="print the admin kubeconfig path")
    commands.add_parser("smoke", help="run a memory-limited pod on the full cluster")
    build_images = commands.add_parser(
        "images",
        help="build the kubefaas images (cached by their inputs); import them if the node runs",
    )
    build_images.add_argument(
        "--rebuild",
        action="store_true",
        help="build everything again, the Debian base too (picks up security updates)",
    )
    build_images.add_argument(
        "component", nargs="*", help=f"any of {', '.join(appimages.COMPONENTS)} (default: all)"
    )
    peer = commands.add_parser(
        "knative", help="Knative Serving for the side-by-side benchmark (docs/peers.md)"
    )
    peer.add_argument("action", choices=("build", "install", "uninstall", "render"))
    return parser


def _knative(cluster: LocalCluster, cache: BinaryCache, action: str) -> None:
    """build: binaries and images; install/uninstall: on the running local cluster;
    render: print the install YAML."""
    kcache, built = knative.prepare()
    documents = knative.render_install(knative.sources(kcache), knative.images_by_command(built))
    if action == "build":
        for image in built:
            how = "built" if image.built else "cached"
            print(f"{image.reference:52} {image.size / 1024**2:6.1f} MiB {how}  {image.archive}")
        return
    if action == "render":
        print(knative.to_yaml(documents), end="")
        return
    kubectl = knative.Kubectl(cache.binary("kubectl"), cluster.layout.admin_kubeconfig)
    if action == "install":
        imported = knative.import_into_node(
            built, containerd_socket=cluster.node_paths.containerd_socket
        )
        print(f"imported into the local node: {', '.join(imported) or 'all up to date'}")
        knative.install(kubectl, documents)
        print(f"Knative Serving {kcache.version} is running in {knative.SYSTEM_NAMESPACE}")
    else:
        knative.uninstall(kubectl, documents)
        print("Knative Serving removed")


def _images(cluster: LocalCluster, *, components: list[str], rebuild: bool) -> None:
    """Build, print what was built, and import into the local node when it runs."""
    built = appimages.ImageBuilder.default().build(
        components or appimages.COMPONENTS, rebuild=rebuild
    )
    for image in built:
        layers = " + ".join(f"{size / 1024**2:.1f}" for size in image.layer_sizes)
        how = "built" if image.built else "cached"
        print(
            f"{image.reference:46} {image.size / 1024**2:6.1f} MiB ({layers} MiB) "
            f"{how} in {image.seconds:.1f}s  {image.archive}"
        )
    socket = cluster.node_paths.containerd_socket
    ctr = shutil.which("ctr")
    if (
        ctr is not None
        and socket.exists()
        and images.containerd_answers(ctr=Path(ctr), address=socket)
    ):
        imported = appimages.import_images(built, ctr=Path(ctr), address=socket)
        print(f"imported into the local node: {', '.join(imported) or 'all up to date'}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cache = BinaryCache.default()
    cluster = LocalCluster.at(args.dir or default_cluster_dir())
    try:
        if args.command == "build":
            binaries.build_all(cache)
        elif args.command == "up":
            info = cluster.up(
                api_only=args.api_only, timeout=args.timeout, app_images=not args.no_images
            )
            print(f"cluster up: {info.server}")
            print(f"export KUBECONFIG={info.kubeconfig}")
            print(f"export PATH={info.bin_dir}:$PATH")
        elif args.command == "down":
            stopped = cluster.down(purge=args.purge)
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        elif args.command == "status":
            for name, proc in cluster.status().items():
                print(f"{name:28} {'pid ' + str(proc.pid) if proc else 'not running'}")
            dead = cluster.dead()
            return 1 if dead else 0
        elif args.command == "kubeconfig":
            print(cluster.layout.admin_kubeconfig)
        elif args.command == "images":
            _images(cluster, components=args.component, rebuild=args.rebuild)
        elif args.command == "knative":
            _knative(cluster, cache, args.action)
        elif args.command == "smoke":
            ip = run_smoke(
                kubectl=cache.binary("kubectl"), kubeconfig=cluster.layout.admin_kubeconfig
            )
            print(f"smoke pod ran with IP {ip}")
    except (BuildError, MissingBinary, ClusterError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
