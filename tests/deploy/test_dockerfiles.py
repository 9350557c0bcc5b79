"""Static checks of services/editor/Dockerfile and services/gateway/Dockerfile.

No Docker engine runs here, so the files are parsed and checked against the repository:
what they copy exists and is in the build context, what they run exists, and the final
image is small, pinned and unprivileged.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.helpers import ROOT, SCENARIOS, named, render

DOCKERFILES = {
    "editor": ROOT / "services" / "editor" / "Dockerfile",
    "gateway": ROOT / "services" / "gateway" / "Dockerfile",
}
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3-dev|libc6-dev)\b")
PINNED_IMAGE = re.compile(r"^[\w.\-/]+:\d+\.\d+\.\d+[\w.\-]*(@sha256:[0-9a-f]{64})?$")


@dataclass
class Stage:
    """One FROM ... [AS name] and its instructions (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for args in self.all("ENV") for item in shlex.split(args))
        return {key: value for key, value in pairs}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    current = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    assert not current, f"{path} ends inside a continued line"
    parsed = []
    for item in joined:
        keyword, _, args = item.partition(" ")
        parsed.append((keyword.upper(), args.strip()))
    return parsed


def stages(path: Path) -> list[Stage]:
    """The build stages, with ARG defaults declared before the first FROM substituted."""
    defaults: dict[str, str] = {}
    result: list[Stage] = []
    for keyword, args in instructions(path):
        if keyword == "ARG" and not result:
            name, _, value = args.partition("=")
            defaults[name] = value
        elif keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], args).split()
            base = words[0]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base, name))
        else:
            assert result, f"{path}: {keyword} before the first FROM"
            result[-1].instructions.append((keyword, args))
    return result


def copy_parts(args: str) -> tuple[dict[str, str], list[str], str]:
    """(--flags, sources, destination) of a COPY, shell or JSON form."""
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    rest = " ".join(words)
    if rest.startswith("["):
        words = json.loads(rest)
    return flags, words[:-1], words[-1]


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str) -> bool:
    """True when .dockerignore keeps this path (or a parent of it) out of the context."""
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in dockerignore():
        pattern = pattern.rstrip("/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pattern[3:])
            ):
                return True
    return False


@pytest.fixture(params=sorted(DOCKERFILES))
def service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_base_images_are_pinned_to_a_version(service: str) -> None:
    known: set[str] = set()
    for stage in stages(DOCKERFILES[service]):
        if stage.base not in known:
            assert PINNED_IMAGE.match(stage.base), f"{stage.base} is not pinned to x.y.z"
            assert ":latest" not in stage.base
        if stage.name:
            known.add(stage.name)


def test_every_copy_source_exists_in_the_build_context(service: str) -> None:
    earlier: set[str] = set()
    copies = 0
    for stage in stages(DOCKERFILES[service]):
        for args in stage.all("COPY") + stage.all("ADD"):
            copies += 1
            flags, sources, _ = copy_parts(args)
            if "from" in flags:
                assert flags["from"] in earlier, f"COPY --from={flags['from']}: no such stage"
                continue
            for source in sources:
                matches = list(ROOT.glob(source.rstrip("/")))
                assert matches, f"COPY {source}: not in the repository"
                assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
        if stage.name:
            earlier.add(stage.name)
    assert copies


def test_final_stage_runs_as_a_numeric_non_root_user(service: str) -> None:
    users = stages(DOCKERFILES[service])[-1].all("USER")
    assert users, "the final stage never leaves root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]} is not a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) > 0)


def test_chart_runs_the_image_as_its_own_user(service: str) -> None:
    uid = int(stages(DOCKERFILES[service])[-1].all("USER")[-1].partition(":")[0])
    docs = render(*SCENARIOS["defaults"])
    pod = named(docs, "Deployment", f"collab-{service}")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid


def test_command_is_one_the_project_has(service: str) -> None:
    final = stages(DOCKERFILES[service])[-1]
    [cmd] = final.all("CMD")
    command = json.loads(cmd)  # exec form: signals reach the process itself
    workdir = final.all("WORKDIR")[-1]
    code = ROOT / workdir.removeprefix("/app/")
    assert code.is_dir(), f"WORKDIR {workdir} is not a folder of the repository"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    if service == "editor":
        assert command[:2] == ["gunicorn", "-c"]
        assert any(dep.startswith("gunicorn==") for dep in dependencies)
        assert (code / command[2]).is_file(), f"{command[2]} is not in {code}"
        module, _, attribute = command[3].partition(":")
        source = (code / (module.replace(".", "/") + ".py")).read_text()
        assert re.search(rf"^{attribute}\b", source, re.M), f"{command[3]} does not exist"
    else:
        assert command == ["python", "-m", "gateway"]
        assert (code / "gateway" / "__main__.py").is_file()
    # The chart runs the same command.
    docs = render(*SCENARIOS["defaults"])
    pod = named(docs, "Deployment", f"collab-{service}")["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == command


def test_code_is_copied_to_the_working_directory(service: str) -> None:
    all_stages = stages(DOCKERFILES[service])
    workdir = all_stages[-1].all("WORKDIR")[-1]
    destinations = [
        copy_parts(args)[2].rstrip("/") for stage in all_stages for args in stage.all("COPY")
    ]
    assert any(
        workdir == dest or workdir.startswith(dest + "/") or dest.startswith(workdir + "/")
        for dest in destinations
    ), f"nothing is copied to {workdir}"


def test_no_healthcheck_probes_come_from_kubernetes(service: str) -> None:
    for stage in stages(DOCKERFILES[service]):
        assert not stage.all("HEALTHCHECK")


def test_final_stage_installs_no_build_tools(service: str) -> None:
    final = stages(DOCKERFILES[service])[-1]
    assert "slim" in final.base
    for args in final.all("RUN"):
        assert not COMPILERS.search(args), f"the final stage installs build tools: {args}"
        assert "pip install" not in args, "dependencies belong in the build stage"


def test_python_writes_no_bytecode_and_does_not_buffer(service: str) -> None:
    env = stages(DOCKERFILES[service])[-1].env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"


def test_dependencies_come_from_the_pinned_pyproject(service: str) -> None:
    runs = [args for stage in stages(DOCKERFILES[service]) for args in stage.all("RUN")]
    assert any(re.search(r"\bpip install \.(\s|$)", args) for args in runs)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    unpinned = [dep for dep in dependencies if "==" not in dep]
    assert not unpinned, f"unpinned runtime dependencies: {unpinned}"


def test_listening_port_is_the_charts(service: str) -> None:
    final = stages(DOCKERFILES[service])[-1]
    docs = render(*SCENARIOS["defaults"])
    container = named(docs, "Deployment", f"collab-{service}")["spec"]["template"]["spec"][
        "containers"
    ][0]
    [port] = container["ports"]
    assert final.all("EXPOSE") == [str(port["containerPort"])]
    prefix = service.upper()
    assert final.env()[f"{prefix}_PORT"] == str(port["containerPort"])
    assert final.env()[f"{prefix}_HOST"] == "0.0.0.0"


def test_editor_collects_static_files_at_build_time() -> None:
    all_stages = stages(DOCKERFILES["editor"])
    collecting = [
        stage
        for stage in all_stages
        if any("collectstatic --no-input" in args for args in stage.all("RUN"))
    ]
    assert len(collecting) == 1
    [run] = [args for args in collecting[0].all("RUN") if "collectstatic" in args]
    assert "COLLAB_DATA_DIR=/app/var" in run
    final = all_stages[-1]
    assert final.env()["COLLAB_DATA_DIR"] == "/app/var"
    copied = [copy_parts(args) for args in final.all("COPY")]
    assert any(
        flags.get("from") == collecting[0].name and dest.rstrip("/") in ("/app", "/app/var")
        for flags, _, dest in copied
    ), "the final stage does not take the collected static files"


def test_editor_builds_browser_assets_in_a_node_stage() -> None:
    all_stages = stages(DOCKERFILES["editor"])
    [node] = [stage for stage in all_stages if stage.base.startswith("node:")]
    runs = " ".join(node.all("RUN"))
    assert "npm ci --omit=dev" in runs
    assert "npm run build --if-present" in runs
    copied = [copy_parts(args) for stage in all_stages for args in stage.all("COPY")]
    assert any(
        flags.get("from") == node.name
        and sources == ["/src/services/editor/collab/static/"]
        and dest.endswith("services/editor/collab/static/")
        for flags, sources, dest in copied
    )


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    for path in (".git", ".venv", ".tools", "node_modules", "services/editor/var", "tests"):
        assert ignored(path), f"{path} is sent to the Docker daemon"
    for path in ("pyproject.toml", "services/shared/collab_common", "package-lock.json"):
        assert not ignored(path), f"{path} is needed by the images"
