"""Read the runtime settings of an image from its Dockerfile, so images built without Docker
match the ones ``docker build`` makes.

The Dockerfiles in ``runtime/``, ``gateway/`` and ``operator/`` stay the one description of
each image: entrypoint, command, environment, user, working directory, exposed ports and
labels are taken from their final stage. Besides the ``pip install`` of the project (which
the image builder does itself) the only ``RUN`` form understood is ``install -d`` (a
directory with mode and owner); any other instruction that changes the final stage's files
is refused, so a Dockerfile cannot grow a step that the local images would silently lack.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

# Instructions that describe the build, not the resulting image.
_IGNORED = frozenset({"ARG", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD"})


class DockerfileError(ValueError):
    """The Dockerfile uses something the local image builder cannot reproduce."""


@dataclass(frozen=True)
class Directory:
    """A directory the image creates (``RUN install -d -m MODE -o UID -g GID PATH``)."""

    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class ImageSpec:
    """What the final stage of a Dockerfile sets, in the order it sets it."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    working_dir: str = "/"
    exposed_ports: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    directories: tuple[Directory, ...] = ()


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations; drop comments and blank lines. Keeps the first line no."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        lines.append((start, " ".join(pending)))
    return lines


def _key_values(argument: str, *, line: int, instruction: str) -> dict[str, str]:
    """``K=V K2="V 2"`` (or the legacy ``K V`` form) as a dict."""
    words = shlex.split(argument)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    pairs: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise DockerfileError(f"line {line}: {instruction} {word!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def _exec_form(argument: str, *, line: int, instruction: str) -> tuple[str, ...]:
    """The JSON (exec) form; the shell form would need a shell the image may not have."""
    try:
        value = json.loads(argument)
    except json.JSONDecodeError as exc:
        raise DockerfileError(
            f"line {line}: {instruction} must use the JSON exec form, got {argument!r}"
        ) from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DockerfileError(f"line {line}: {instruction} must be a JSON list of strings")
    return tuple(value)


def _expand(value: str, env: dict[str, str]) -> str:
    """``$VAR`` / ``${VAR}`` from earlier ENV lines, as Docker expands them in ENV and WORKDIR."""
    for key, known in env.items():
        value = value.replace("${" + key + "}", known).replace("$" + key, known)
    return value


def _install_directories(argument: str, *, line: int) -> tuple[Directory, ...]:
    words = shlex.split(argument)
    if words[:2] != ["install", "-d"]:
        raise DockerfileError(f"line {line}: unsupported RUN {argument!r}")
    mode, uid, gid = 0o755, 0, 0
    paths: list[str] = []
    rest = iter(words[2:])
    for word in rest:
        if word == "-m":
            mode = int(next(rest), 8)
        elif word == "-o":
            uid = int(next(rest))
        elif word == "-g":
            gid = int(next(rest))
        elif word.startswith("-"):
            raise DockerfileError(f"line {line}: unsupported option {word} of install -d")
        else:
            paths.append(word)
    return tuple(Directory(path=p, mode=mode, uid=uid, gid=gid) for p in paths)


def parse_dockerfile(text: str) -> ImageSpec:
    """The settings of the final stage of `text`; raise `DockerfileError` on what we cannot do."""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: dict[str, str] = {}
    user, working_dir = "", "/"
    ports: list[str] = []
    labels: dict[str, str] = {}
    directories: list[Directory] = []
    # Problems only matter in the final stage: a build stage may do anything.
    unsupported: list[str] = []
    stages = 0
    for line, logical in _logical_lines(text):
        instruction, _, argument = logical.partition(" ")
        instruction = instruction.upper()
        argument = argument.strip()
        if instruction == "FROM":
            stages += 1
            entrypoint, cmd, user, working_dir = (), (), "", "/"
            env, ports, labels, directories, unsupported = {}, [], {}, [], []
        elif instruction in _IGNORED:
            continue
        elif instruction == "ENV":
            pairs = _key_values(argument, line=line, instruction="ENV")
            env.update({key: _expand(value, env) for key, value in pairs.items()})
        elif instruction == "LABEL":
            labels.update(_key_values(argument, line=line, instruction="LABEL"))
        elif instruction == "ENTRYPOINT":
            entrypoint = _exec_form(argument, line=line, instruction="ENTRYPOINT")
            cmd = ()  # Docker resets CMD when ENTRYPOINT is set after it
        elif instruction == "CMD":
            cmd = _exec_form(argument, line=line, instruction="CMD")
        elif instruction == "USER":
            user = argument
        elif instruction == "WORKDIR":
            working_dir = _expand(argument, env)
            if not working_dir.startswith("/"):
                raise DockerfileError(f"line {line}: WORKDIR must be absolute, got {argument!r}")
        elif instruction == "EXPOSE":
            ports.extend(p if "/" in p else f"{p}/tcp" for p in argument.split())
        elif instruction == "RUN":
            words = [w for w in argument.split() if not w.startswith("--mount=")]
            command = " ".join(words)
            if "pip install" in command or "pip wheel" in command:
                continue  # the project and its dependencies: the image builder installs them
            try:
                directories.extend(_install_directories(command, line=line))
            except DockerfileError as exc:
                unsupported.append(str(exc))
        elif instruction in ("COPY", "ADD", "VOLUME"):
            unsupported.append(f"line {line}: {instruction} in the final stage")
        else:
            raise DockerfileError(f"line {line}: unknown instruction {instruction}")
    if stages == 0:
        raise DockerfileError("no FROM line")
    if unsupported:
        raise DockerfileError(
            "the local image builder does not reproduce: "
            + "; ".join(unsupported)
            + " (teach kubefaas_cluster.appimages about it)"
        )
    return ImageSpec(
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        user=user,
        working_dir=working_dir,
        exposed_ports=tuple(ports),
        labels=labels,
        directories=tuple(directories),
    )
