"""Bring a local cluster up or down: the one place that orders the components.

``up`` is a reconcile, not a script: a component whose recorded process is alive with the
same command line is reused, one that died or whose flags changed is (re)started, each is
waited for before the next starts, and any failure raises `ClusterError` carrying the tail
of every component log. ``down`` stops the recorded processes in reverse order and keeps
the directory (certificates, etcd data) for the next ``up`` unless asked to purge it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubefaas_cluster import (
    appimages,
    binaries,
    components,
    host,
    images,
    network,
    node,
    node_registry,
    probes,
    versions,
)
from kubefaas_cluster.binaries import BinaryCache, BuildError
from kubefaas_cluster.certs import Pki, ensure_pki
from kubefaas_cluster.kubeconfigs import write_kubeconfig
from kubefaas_cluster.layout import ClusterLayout, ClusterState, load_or_create_state
from kubefaas_cluster.processes import ProcessSpec, ProcessTable, Running

API_COMPONENTS: tuple[str, ...] = ("etcd", "kube-apiserver", "kube-controller-manager")
# Start order of the full cluster; `down` walks it backwards.
ALL_COMPONENTS: tuple[str, ...] = (
    *API_COMPONENTS,
    "kube-scheduler",
    "containerd",
    # The node's image registry (kubefaas_cluster.node_registry).
    "docker-registry",
    "kubelet",
    "kube-proxy",
)
DEFAULT_TIMEOUT_SECONDS = 120.0
# Component kubeconfigs, named after the client certificate each one uses.
COMPONENT_CLIENTS: tuple[str, ...] = ("kube-controller-manager", "kube-scheduler")
NODE_CLIENTS: tuple[str, ...] = ("kubelet", "kube-proxy")

_PORTS_OF: dict[str, tuple[str, ...]] = {
    "etcd": ("etcd_client", "etcd_peer"),
    "kube-apiserver": ("apiserver",),
    "kube-controller-manager": ("controller_manager",),
    "kube-scheduler": ("scheduler",),
    "kubelet": ("kubelet", "kubelet_healthz"),
    "kube-proxy": ("proxy_healthz", "proxy_metrics"),
}


@dataclass(frozen=True)
class Step:
    """Start one component, wait for `ready`, then run `after_ready` (an image import)."""

    spec: ProcessSpec
    ready: Callable[[], bool]
    after_ready: Callable[[], None] | None = None


class ClusterError(RuntimeError):
    """The cluster could not be brought up; `logs` holds the tail of every component log."""

    def __init__(self, message: str, *, logs: str) -> None:
        super().__init__(message)
        self.logs = logs

    def __str__(self) -> str:
        return f"{self.args[0]}\n\n{self.logs}"


@dataclass(frozen=True)
class ClusterInfo:
    """How to reach a cluster that is up."""

    directory: Path
    kubeconfig: Path
    server: str
    bin_dir: Path


@dataclass
class LocalCluster:
    """One cluster directory and the processes recorded in it."""

    layout: ClusterLayout
    cache: BinaryCache = field(default_factory=BinaryCache.default)
    die_with_parent: bool = False

    def __post_init__(self) -> None:
        self.processes = ProcessTable(run_dir=self.layout.run_dir, log_dir=self.layout.log_dir)

    @classmethod
    def at(
        cls, directory: Path, *, cache: BinaryCache | None = None, die_with_parent: bool = False
    ) -> LocalCluster:
        return cls(
            layout=ClusterLayout(root=directory.resolve()),
            cache=cache or BinaryCache.default(),
            die_with_parent=die_with_parent,
        )

    # -- up -------------------------------------------------------------------------------

    def up(
        self,
        *,
        api_only: bool,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        app_images: bool = True,
    ) -> ClusterInfo:
        """Start whatever is not running yet and wait until the cluster answers.

        The full cluster also builds (or finds cached) the kubefaas images and imports them
        into containerd unless `app_images` is false; see `kubefaas_cluster.appimages`.
        """
        for name in versions.KUBERNETES_COMMANDS:
            self.cache.binary(name)
        if not api_only:
            host.require_root()
        etcd = binaries.ensure_etcd()
        state = load_or_create_state(self.layout)
        plan = components.ControlPlanePlan(
            layout=self.layout,
            state=state,
            bin_dir=self.cache.bin_dir,
            etcd=etcd,
            api_only=api_only,
        )
        pki = Pki(root=self.layout.pki_dir)
        ensure_pki(pki, node_name=state.node_name, node_ip=state.node_ip)
        for client in COMPONENT_CLIENTS if api_only else (*COMPONENT_CLIENTS, *NODE_CLIENTS):
            write_kubeconfig(
                self.layout.component_kubeconfig(client),
                server=plan.apiserver_url,
                ca_cert=pki.ca.cert,
                client=pki.pair(client),
            )
        admin = pki.pair("admin")

        def api_ok(path: str) -> Callable[[], bool]:
            return lambda: probes.answers_ok(f"{plan.apiserver_url}{path}", ca=pki.ca, client=admin)

        steps = [
            Step(components.etcd(plan), lambda: probes.etcd_healthy(plan.etcd_url)),
            Step(components.kube_apiserver(plan), api_ok("/readyz")),
            Step(
                components.kube_controller_manager(plan),
                lambda: probes.answers_ok(components.healthz_url(plan, "kube-controller-manager")),
            ),
        ]
        if api_only:
            # A node left from a full run would point at the API server's old address.
            self._stop([n for n in reversed(ALL_COMPONENTS) if n not in API_COMPONENTS])
        else:
            steps += self._node_steps(plan, pki=pki, app_images=app_images)
        for step in steps:
            self._ensure_running(step, state=state, timeout=timeout)
        names = [step.spec.name for step in steps]
        if not api_only:
            self._wait(
                lambda: probes.node_ready(
                    f"{plan.apiserver_url}/api/v1/nodes/{state.node_name}", ca=pki.ca, client=admin
                ),
                what=f"node {state.node_name} to be Ready",
                components=names,
                timeout=timeout,
            )
        self._wait(
            api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
            what="the controller-manager to create the default ServiceAccount",
            components=names,
            timeout=timeout,
        )
        write_kubeconfig(
            self.layout.admin_kubeconfig,
            server=plan.apiserver_url,
            ca_cert=pki.ca.cert,
            client=admin,
        )
        return self.info(server=plan.apiserver_url)

    def _node_steps(
        self, plan: components.ControlPlanePlan, *, pki: Pki, app_images: bool
    ) -> list[Step]:
        """Prepare the host and the node's files; the steps that start scheduler and node."""
        commands = host.ensure_node_commands()
        paths = self.node_paths
        host.check_free_disk(paths.var_dir, self.layout.root)
        host.set_sysctls()
        self._claim_node()
        archive = images.pause_archive()
        # Built before anything starts: a cold build takes a minute or two, a warm one none.
        built = appimages.ImageBuilder.default().build() if app_images else []
        for directory in (paths.containerd_state, paths.cni_conf_dir, paths.cni_ipam_dir):
            directory.mkdir(parents=True, exist_ok=True)
        registry_paths = node_registry.RegistryPaths(config_dir=paths.config_dir)
        registry_command = node_registry.binary()
        node_registry.write_files(registry_paths)
        node_registry.ensure_bridge_address()
        containerd_toml = node.containerd_config(paths) + node_registry.containerd_section(
            registry_paths
        )
        kubelet_yaml = node.kubelet_config(plan, paths)
        kube_proxy_yaml = node.kube_proxy_config(plan)
        files = {
            paths.containerd_config: containerd_toml,
            paths.cni_conf_dir / "10-kubefaas.conflist": node.cni_conflist(paths),
            paths.kubelet_config: kubelet_yaml,
            paths.kube_proxy_config: kube_proxy_yaml,
        }
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        ctr, socket_path = commands["ctr"], paths.containerd_socket

        def containerd_ready() -> bool:
            return socket_path.exists() and images.containerd_answers(ctr=ctr, address=socket_path)

        def import_images() -> None:
            images.import_archive(archive, ctr=ctr, address=socket_path)
            appimages.import_images(built, ctr=ctr, address=socket_path)

        def push_platform_images() -> None:
            # The builder pulls its base (the runtime image) from the registry.
            node_registry.push_archives((image.archive, image.reference) for image in built)

        def healthz(port_name: str) -> Callable[[], bool]:
            url = f"http://{network.LOOPBACK}:{plan.state.ports[port_name]}/healthz"
            return lambda: probes.answers_ok(url)

        return [
            Step(
                components.kube_scheduler(plan),
                lambda: probes.answers_ok(components.healthz_url(plan, "kube-scheduler")),
            ),
            Step(
                node.containerd(paths, binary=commands["containerd"], config=containerd_toml),
                containerd_ready,
                import_images,
            ),
            Step(
                node_registry.process(registry_paths, command=registry_command),
                node_registry.answers,
                push_platform_images,
            ),
            Step(node.kubelet(plan, paths, config=kubelet_yaml), healthz("kubelet_healthz")),
            Step(node.kube_proxy(plan, paths, config=kube_proxy_yaml), healthz("proxy_healthz")),
        ]

    @property
    def node_paths(self) -> node.NodePaths:
        return node.NodePaths(config_dir=self.layout.node_dir)

    def _claim_node(self) -> None:
        """Refuse to run a second node on this machine; iptables and cni0 are shared."""
        owner_file = self.node_paths.run_dir / "owner"
        mine = str(self.layout.root)
        if owner_file.is_file():
            owner = owner_file.read_text(encoding="utf-8").strip()
            if owner != mine:
                other = ProcessTable(
                    run_dir=Path(owner) / "run", log_dir=Path(owner) / "logs"
                ).running("containerd")
                if other is not None:
                    raise ClusterError(
                        f"a full cluster from {owner} already runs on this machine; "
                        f"stop it first (python -m kubefaas_cluster --dir {owner} down)",
                        logs="",
                    )
        owner_file.parent.mkdir(parents=True, exist_ok=True)
        owner_file.write_text(mine + "\n", encoding="utf-8")

    def info(self, *, server: str) -> ClusterInfo:
        return ClusterInfo(
            directory=self.layout.root,
            kubeconfig=self.layout.admin_kubeconfig,
            server=server,
            bin_dir=self.cache.bin_dir,
        )

    def _ensure_running(self, step: Step, *, state: ClusterState, timeout: float) -> None:
        spec = step.spec
        current = self.processes.running(spec.name)
        if current is not None and (
            current.argv != tuple(spec.argv) or current.config_digest != spec.config_digest
        ):
            # Flags or config changed (another mode, a new version): restart with the new ones.
            self.processes.stop(spec.name)
            current = None
        if current is None:
            self._check_ports_free(spec.name, state=state)
            self.processes.start(spec, die_with_parent=self.die_with_parent)
        self._wait(
            step.ready, what=f"{spec.name} to be ready", components=[spec.name], timeout=timeout
        )
        if step.after_ready is not None:
            try:
                step.after_ready()
            except (OSError, BuildError) as exc:
                raise ClusterError(f"after starting {spec.name}: {exc}", logs=self.logs()) from exc

    def _check_ports_free(self, name: str, *, state: ClusterState) -> None:
        for port_name in _PORTS_OF.get(name, ()):
            port = state.ports[port_name]
            if not network.port_is_free(port):
                raise ClusterError(
                    f"{name} cannot start: port {port} ({port_name}) is already in use; "
                    f"stop whatever holds it or remove {self.layout.state_file} to pick new ports",
                    logs=self.logs(),
                )

    def _wait(
        self, check: Callable[[], bool], *, what: str, components: list[str], timeout: float
    ) -> None:
        try:
            network.wait_until(
                check,
                timeout=timeout,
                what=what,
                abort=lambda: self.processes.dead_component(components),
            )
        except TimeoutError as exc:
            raise ClusterError(str(exc), logs=self.logs()) from exc

    # -- inspection -------------------------------------------------------------------------

    def status(self) -> dict[str, Running | None]:
        """Every known component and its live process, if any."""
        names = list(dict.fromkeys([*ALL_COMPONENTS, *self.processes.recorded_names()]))
        return {name: self.processes.running(name) for name in names}

    def dead(self) -> list[str]:
        """Components that were started here and have died since."""
        return [
            name for name in self.processes.recorded_names() if self.processes.running(name) is None
        ]

    def logs(self, *, lines: int = 40) -> str:
        """The tail of every component log, for failure reports."""
        parts = []
        for name in dict.fromkeys([*ALL_COMPONENTS, *self.processes.recorded_names()]):
            if self.processes.log_file(name).exists():
                parts.append(f"----- {self.processes.log_file(name)} (last {lines} lines) -----")
                parts.append(self.processes.tail(name, lines=lines))
        return "\n".join(parts) if parts else f"(no component logs in {self.layout.log_dir})"

    # -- down -----------------------------------------------------------------------------

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop every recorded component, last started first; return the names stopped."""
        recorded = self.processes.recorded_names()
        stopped = self._stop([*reversed(ALL_COMPONENTS), *recorded])
        if purge and self.layout.root.exists():
            shutil.rmtree(self.layout.root)
        return stopped

    def _stop(self, names: list[str]) -> list[str]:
        """Stop `names` in the order given (duplicates ignored); return those that ran.

        Containers are stopped after the kubelet (so it cannot restart them) and before
        containerd; shims of our containerd that outlive it are killed.
        """
        stopped = []
        for name in dict.fromkeys(names):
            if name == "containerd" and self.processes.running(name) is not None:
                ctr = shutil.which("ctr")
                if ctr is not None:
                    host.stop_containers(ctr=Path(ctr), address=self.node_paths.containerd_socket)
            if self.processes.stop(name):
                stopped.append(name)
            if name == "containerd" and stopped and stopped[-1] == name:
                host.kill_shims(self.node_paths.containerd_socket)
        return stopped
