"""The image builder's pure parts: what the Dockerfiles say, requirements, pins, cache keys.

The images themselves are built and run by `make images` and the e2e tier; these tests pin
down the decisions that make them equivalent to ``docker build`` and make the cache honest.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import setuptools

from kubefaas_cluster import appimages
from kubefaas_cluster.dockerfile import Directory, DockerfileError, parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfiles_give_the_documented_entrypoints_user_and_ports() -> None:
    source = appimages.SourceTree(root=ROOT)
    runtime = source.dockerfile("runtime")
    gateway = source.dockerfile("gateway")
    operator = source.dockerfile("operator")

    assert runtime.entrypoint == ("python", "-m", "kubefaas_runtime")
    assert runtime.env["PORT"] == "8080"
    assert runtime.env["KUBEFAAS_CODE_DIR"] == runtime.working_dir == "/var/task"
    assert gateway.entrypoint == ("kubefaas", "gateway")
    assert gateway.cmd == ("--host", "0.0.0.0", "--port", "8080")
    assert Directory("/var/lib/kubefaas", mode=0o750, uid=65532, gid=65532) in gateway.directories
    assert operator.entrypoint == ("kubefaas", "operator")
    for spec in (runtime, gateway, operator):
        assert spec.user == "65532:65532"
        assert spec.env["HOME"] == "/tmp"
    assert runtime.exposed_ports == gateway.exposed_ports == ("8080/tcp",)


def test_image_config_puts_the_base_image_env_first() -> None:
    config = appimages.image_config(appimages.SourceTree(root=ROOT).dockerfile("runtime"))
    assert config.env[0].startswith("PATH=")
    assert "LANG=C.UTF-8" in config.env
    assert "PORT=8080" in config.env


def test_only_the_final_stage_counts() -> None:
    spec = parse_dockerfile(
        "FROM a AS build\nENV X=1\nRUN apt-get install -y gcc\nCOPY . /src\n"
        'FROM b\nENV Y="two words" \\\n    W=1\nENV Z=${Y}\nWORKDIR /work\nENTRYPOINT ["run"]\n'
    )
    assert spec.env == {"Y": "two words", "W": "1", "Z": "two words"}
    assert spec.working_dir == "/work"
    assert spec.entrypoint == ("run",)


@pytest.mark.parametrize(
    ("final_stage", "complaint"),
    [
        ("COPY app /app", "COPY in the final stage"),
        ("RUN apt-get install -y curl", "unsupported RUN"),
        ("ENTRYPOINT python -m app", "JSON exec form"),
        ("WORKDIR relative", "WORKDIR must be absolute"),
    ],
)
def test_what_the_builder_cannot_reproduce_is_refused(final_stage: str, complaint: str) -> None:
    with pytest.raises(DockerfileError, match=complaint):
        parse_dockerfile(f"FROM base\n{final_stage}\n")


def test_extra_requirements_expand_the_project_self_reference() -> None:
    pyproject = {
        "project": {
            "name": "Kube_FaaS",
            "dependencies": ["pydantic>=2"],
            "optional-dependencies": {
                "runtime": ["uvicorn>=0.30"],
                "gateway": ["kube-faas[runtime]", "fastapi"],
            },
        }
    }
    assert appimages.extra_requirements(pyproject, "gateway") == [
        "fastapi",
        "pydantic>=2",
        "uvicorn>=0.30",
    ]


def test_pins_follow_dependencies_present_in_the_environment() -> None:
    installed = {
        "fastapi": ("0.1", ["starlette>=0.3", "pydantic ; extra == 'all'"]),
        "starlette": ("0.4", []),
        "pydantic": ("2.9", []),
        "pytest": ("8.0", []),
    }
    pins = appimages.environment_pins(["FastAPI>=0.1", "not-installed"], installed=installed)
    # pydantic only through an extra: pinning it anyway is harmless; pytest is unrelated.
    assert pins == ["fastapi==0.1", "pydantic==2.9", "starlette==0.4"]


def test_console_script_runs_the_entry_point_with_the_image_python() -> None:
    script = appimages.console_script("kubefaas.cli:main")
    assert script.startswith("#!/usr/bin/python3\n")
    assert "from kubefaas.cli import main" in script
    assert "sys.exit(main())" in script
    nested = appimages.console_script("pkg.mod:App.run [extra]")
    assert "from pkg.mod import App" in nested
    assert "sys.exit(App.run())" in nested


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1.0"\n'
        '[tool.setuptools.packages.find]\nwhere = ["."]\ninclude = ["pkg*"]\n'
    )
    (root / "README.md").write_text("demo\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"junk")
    (root / "other").mkdir()
    (root / "other" / "notes.txt").write_text("not in the wheel\n")
    return root


def test_wheel_key_changes_with_package_sources_only(tmp_path: Path) -> None:
    source = appimages.SourceTree(root=_tree(tmp_path))
    before = source.wheel_key()
    assert [str(p) for p in source.wheel_files()] == [
        "README.md",
        "pkg/__init__.py",
        "pkg/mod.py",
        "pyproject.toml",
    ]

    (tmp_path / "other" / "notes.txt").write_text("changed\n")
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"other junk")
    assert source.wheel_key() == before

    (tmp_path / "pkg" / "mod.py").write_text("X = 2\n")
    assert source.wheel_key() != before


def test_layer_keeps_base_directory_metadata_and_sets_declared_ones(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/local/bin").mkdir(parents=True)
    script = tree / "usr/local/bin/tool"
    script.write_text("#!/usr/bin/python3\n")
    script.chmod(0o700)
    base = {"tmp": (0o1777, 0, 0), "usr": (0o755, 0, 0)}
    layer = appimages.layer_from_tree(
        tmp_path / "layer.tar",
        tree,
        base_directories=base,
        extra_directories=[
            Directory("/tmp"),
            Directory("/var/lib/kubefaas", mode=0o750, uid=65532, gid=65532),
        ],
    )
    with tarfile.open(layer) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["usr/local/bin/tool"].mode == 0o755
    assert members["usr/local/bin/tool"].mtime == 0
    assert members["var/lib/kubefaas"].mode == 0o750
    assert (members["var/lib/kubefaas"].uid, members["var/lib/kubefaas"].gid) == (65532, 65532)
    assert members["var"].mode == 0o755
    # An explicit Directory wins over the base: `install -d -m` changes an existing mode.
    assert members["tmp"].mode == 0o755
    names = list(members)
    assert names == sorted(names), "parents must come before their children"


def test_the_product_wheel_carries_the_components_and_not_the_dev_tooling() -> None:
    files = appimages.SourceTree(root=ROOT).wheel_files()
    packages = {path.parent.name for path in files if path.name == "__init__.py"}
    top_level = {name for name in packages if name.startswith("kubefaas")}
    assert top_level == {"kubefaas", "kubefaas_operator", "kubefaas_gateway", "kubefaas_runtime"}
    assert not [path for path in files if path.parts[0] in {"cluster", "tests", "e2e", "bench"}]
    # The runtime image imports the wire contract: it must be in the wheel it installs.
    assert Path("kubefaas/wire.py") in files
    assert Path("runtime/kubefaas_runtime/__main__.py") in files


def test_setuptools_packs_what_the_image_builder_keys_the_wheel_on() -> None:
    # The builder copies wheel_files() and lets setuptools build from them: both must agree
    # on the packages, and neither may pick up kubefaas_cluster or the tests.
    source = appimages.SourceTree(root=ROOT)
    find = source.pyproject["tool"]["setuptools"]["packages"]["find"]  # type: ignore[index]
    found = set()
    for where in find["where"]:
        for package in setuptools.find_packages(where=str(ROOT / where), include=find["include"]):
            found.add(package.split(".")[0])
    assert found == {"kubefaas", "kubefaas_operator", "kubefaas_gateway", "kubefaas_runtime"}


def test_the_images_are_built_from_the_product_alone() -> None:
    # Neither the Docker build context nor the build stages copy the dev tooling.
    assert "!cluster/" not in (ROOT / ".dockerignore").read_text(encoding="utf-8")
    for component in appimages.COMPONENTS:
        dockerfile = (ROOT / component / "Dockerfile").read_text(encoding="utf-8")
        assert "cluster/" not in dockerfile, component


def test_markers_on_the_full_python_version_follow_the_images_python() -> None:
    # redis needs async-timeout below 3.11.3: bookworm's 3.11.2 does, a newer builder not,
    # and pip would evaluate the marker for the builder's Python.
    installed = {
        "redis": (
            "5.0",
            ["async-timeout>=4.0.3; python_full_version < '3.11.3'", "hiredis; extra == 'h'"],
        ),
        "fastapi": ("0.1", ["tomli; python_version < '3.11'"]),
    }
    wanted = ["redis>=5", "fastapi"]
    assert appimages.PYTHON_FULL_VERSION == "3.11.2"
    found = appimages.image_only_requirements(wanted, installed=installed, builder_python="3.11.7")
    assert found == ["async-timeout>=4.0.3"]
    same = appimages.image_only_requirements(wanted, installed=installed, builder_python="3.11.2")
    assert same == []
