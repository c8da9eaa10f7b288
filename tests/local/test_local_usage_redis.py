"""Usage across gateway replicas: with the queue in Redis, usage goes to the same Redis, so
every replica's `/system/usage` answers for all of them (docs/logs.md, "Usage across
replicas"). Two real gateway processes, each with its own state dir, one real
redis-server (tests/redis_server.py).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.local.conftest import ManifestDir, RunningGateway
from tests.redis_server import RedisServer, redis_server, start_redis

pytestmark = [pytest.mark.local, pytest.mark.redis]
__all__ = ["redis_server"]

ADMIN = "usage-redis-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TEAM_A = "usage-redis-team-a-token"
ECHO = "def handler(event, context):\n    return event\n"


def _usage(gateway: RunningGateway, headers: dict[str, str] = AUTH) -> list[dict[str, Any]]:
    answer = gateway.client.get("/system/usage", headers=headers)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def _wait(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    give_up = time.monotonic() + timeout
    while not check():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.1)
    return True


def _by_function(items: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {
        f"{i['namespace']}/{i['function']}": (i["requests"], i["mibMilliseconds"]) for i in items
    }


def test_every_replica_answers_the_usage_of_all_of_them(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    manifest_dir.add_function("echo", ECHO, memory="128Mi")
    manifest_dir.add_function("echo", ECHO, namespace="team-a", memory="256Mi")
    secret = manifest_dir.path / "secrets" / "default" / "tokens"
    secret.mkdir(parents=True)
    (secret / "team-a").write_text(TEAM_A)
    env = {
        "KUBEFAAS_ADMIN_TOKEN": ADMIN,
        "KUBEFAAS_REDIS_URL": redis_server.url,
        "KUBEFAAS_REDIS_PREFIX": f"usage-{uuid.uuid4().hex[:8]}",
        "KUBEFAAS_NAMESPACE_TOKENS_SECRET": "tokens",
    }
    first = start_gateway(manifest_dir.path, env=env, state_dir=tmp_path / "replica-1")
    second = start_gateway(manifest_dir.path, env=env, state_dir=tmp_path / "replica-2")

    for gateway, namespace, times in ((first, None, 2), (second, None, 1), (second, "team-a", 2)):
        for _ in range(times):
            assert gateway.invoke("echo", {"n": 1}, namespace=namespace).status_code == 200

    # Each replica writes its sums every second: soon both answer the same, for both.
    def requests_of(gateway: RunningGateway) -> dict[str, int]:
        return {key: value[0] for key, value in _by_function(_usage(gateway)).items()}

    whole = {"default/echo": 2 + 1, "team-a/echo": 2}
    assert _wait(lambda: requests_of(first) == whole), requests_of(first)
    assert _wait(lambda: requests_of(second) == whole), requests_of(second)
    expected = _by_function(_usage(first))
    assert _by_function(_usage(second)) == expected
    # The whole is the sum of the replicas' own counters (what Prometheus would sum).
    for key, (_, mib_ms) in expected.items():
        namespace = key.split("/")[0]
        counted = sum(
            g.sample("kubefaas_usage_gb_seconds_total", namespace=namespace) or 0.0
            for g in (first, second)
        )
        assert counted == pytest.approx(mib_ms / 1024 / 1000)
    # A namespace token on either replica: its namespace, summed over both.
    tenant = {"Authorization": f"Bearer {TEAM_A}"}
    assert _by_function(_usage(first, tenant)) == {"team-a/echo": expected["team-a/echo"]}

    # Usage outlives both replicas: a new one on a fresh state dir reads the same.
    first.terminate()
    second.terminate()
    third = start_gateway(manifest_dir.path, env=env, state_dir=tmp_path / "replica-3")
    assert _by_function(_usage(third)) == expected
    # The SQLite usage file is not used beside Redis.
    assert not (tmp_path / "replica-3" / "usage.sqlite3").exists()


def _restart(port: int, directory: Path) -> RedisServer:
    """redis-server again on the same port and data directory (its AOF), as a restart."""
    binary = shutil.which("redis-server")
    assert binary is not None
    log = directory / "restarted.log"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "yes", "--daemonize", "no", "--logfile", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = RedisServer(f"redis://127.0.0.1:{port}/0", port, process, log)
    deadline = time.monotonic() + 10
    while not server.answers():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return server


def test_usage_waits_for_redis_and_loses_nothing(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    """Redis away for a while: usage is refused with 503 (not made up from one replica),
    the sums are kept, and once Redis is back they are all there."""
    manifest_dir.add_function("echo", ECHO)
    server = start_redis(tmp_path / "own-redis")
    port = server.port
    env = {"KUBEFAAS_ADMIN_TOKEN": ADMIN, "KUBEFAAS_REDIS_URL": server.url}
    gateway = start_gateway(manifest_dir.path, env=env)
    try:
        assert gateway.invoke("echo", {}).status_code == 200
        assert _by_function(_usage(gateway))["default/echo"][0] == 1
        server.stop()
        assert gateway.invoke("echo", {}).status_code == 200  # sync calls need no Redis
        time.sleep(1.5)  # a flush or two fail meanwhile
        refused = gateway.client.get("/system/usage", headers=AUTH)
        assert refused.status_code == 503
        assert "usage store is unavailable" in refused.json()["error"]["message"]
        # The same data directory (AOF on): the first call is in Redis, the second pending.
        server = _restart(port, tmp_path / "own-redis")
        deadline = time.monotonic() + 15
        while True:
            answer = gateway.client.get("/system/usage", headers=AUTH)
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert _by_function(answer.json()["items"])["default/echo"][0] == 2
        # The outage is logged once with its trace, and its end once: not every second.
        log = gateway.stderr()
        assert log.count("could not write function logs or usage") == 1, log
        assert log.count("function logs and usage are written again") == 1, log
    finally:
        server.stop()
