"""deploy/ and the Dockerfile only use commands, ports, paths and variables that igw really has."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.settings import GatewaySettings
from igw.config import Secret
from igw_tools.cli import build_parser
from tests.plugins.sourcescan import ROOT

DEPLOY = ROOT / "deploy"
SECRET_LIKE = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY)")
# Bind mounts written by the observability work (deploy/prometheus, deploy/grafana), not checked here.
OTHER_AREAS = ("./prometheus/", "./grafana/")


def parse_igw(command: list[str]) -> argparse.Namespace:
    """Parse an ``igw ...`` command line with the real parser; fail the test when argparse refuses it."""
    assert command[0] == "igw", command
    try:
        return build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"igw does not accept: {shlex.join(command)}")


def listen_port(args: argparse.Namespace) -> int:
    """The port a parsed igw command serves HTTP on (webhooks or metrics)."""
    port = getattr(args, "port", None) if args.command == "gateway" else getattr(args, "metrics_port", None)
    assert isinstance(port, int), f"{args.command} must be given its port explicitly"
    return port


def gateway_routes() -> set[str]:
    """The paths the real gateway app serves."""
    settings = GatewaySettings(verify_token=Secret("t"), app_secrets=(Secret("s"),))
    app = create_app(settings)
    return {r.canonical for r in app.router.resources()}


# Consumers serve these from their metrics server (consumers/common/metrics_server.py).
CONSUMER_ROUTES = {"/metrics", "/healthz", "/readyz"}


def routes_for(command: str) -> set[str]:
    return gateway_routes() if command == "gateway" else CONSUMER_ROUTES


# -- Compose --------------------------------------------------------------------------------------

# `igw agent` and `igw analytics` come from their own branches; until they are registered in
# igw_tools.cli the checks of those processes are expected to fail (strict: they must pass once merged).
_REGISTERED = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def process(name: str) -> Any:
    return pytest.param(
        name,
        marks=pytest.mark.xfail(
            name not in _REGISTERED, reason=f"igw {name} is not registered in igw_tools.cli yet", strict=True
        ),
    )


PROCESSES = [process("gateway"), process("agent"), process("analytics"), process("reconcile")]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return document


def test_compose_services(compose: dict[str, Any]) -> None:
    """Compose runs the four igw processes, Kafka in KRaft mode, Redis, Prometheus and Grafana."""
    services = compose["services"]
    commands = {s["command"][1] for s in services.values() if s.get("command", [""])[0] == "igw"}
    assert commands == {"gateway", "agent", "analytics", "reconcile"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in json.dumps(kafka)
    for name in ("redis", "prometheus", "grafana"):
        assert name in services


@pytest.mark.parametrize("name", PROCESSES)
def test_compose_process(name: str, compose: dict[str, Any], code_env_vars: dict[str, set[str]]) -> None:
    """The command parses; health check, published port and Prometheus target use its port; env is known;
    secrets are mounted files."""
    service = compose["services"][name]
    args = parse_igw(service["command"])
    assert args.command == name
    port = listen_port(args)
    check = service["healthcheck"]["test"]
    assert check[:4] == ["CMD", "python", "-m", "igw_tools.healthcheck"], check
    assert check[4] == f"http://127.0.0.1:{port}/healthz"
    assert "/healthz" in routes_for(args.command)
    for published in service.get("ports", []):
        assert published.endswith(f":{port}"), published
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert f"{name}:{port}" in targets
    assert "/metrics" in routes_for(args.command)

    service_secrets = set(service.get("secrets", []))
    assert service_secrets <= set(compose["secrets"])
    for key, value in service["environment"].items():
        assert key in code_env_vars, f"{name} sets {key}, which igw does not read"
        if SECRET_LIKE.search(key):
            assert key.endswith("_FILE"), f"{name}: {key} must be given as a file"
            assert str(value).removeprefix("/run/secrets/") in service_secrets, f"{name}: {value} is not mounted"


def test_compose_secrets_and_mounts(compose: dict[str, Any]) -> None:
    """Secrets are files under deploy/secrets; bind mounts of this area exist; Grafana's password is a file."""
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    for service in compose["services"].values():
        for key in service.get("environment", {}):
            assert not SECRET_LIKE.search(key) or key.endswith(("_FILE", "__FILE")), key
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and not source.startswith(OTHER_AREAS):
                assert (DEPLOY / source).exists(), source


# -- Kubernetes -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def test_kustomization_lists_every_manifest(
    manifests: list[dict[str, Any]], code_env_vars: dict[str, set[str]]
) -> None:
    """kustomization.yaml names each manifest; the shared ConfigMap sets only variables igw reads."""
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    configmap = of_kind(manifests, "ConfigMap")["igw-config"]
    assert set(configmap["data"]) <= set(code_env_vars)
    assert not any(SECRET_LIKE.search(key) for key in configmap["data"])


@pytest.mark.parametrize("name", PROCESSES)
def test_kubernetes_deployment(name: str, manifests: list[dict[str, Any]], code_env_vars: dict[str, set[str]]) -> None:
    """Command parses, port matches, probes hit served paths, env is known, secrets are mounted files."""
    deployment = of_kind(manifests, "Deployment")[f"igw-{name}"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
    [container] = pod["containers"]
    args = parse_igw(container["command"])
    assert args.command == name
    port = listen_port(args)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in ports.values()
    probes = [p for p in ("livenessProbe", "readinessProbe", "startupProbe") if p in container]
    assert {"livenessProbe", "readinessProbe"} <= set(probes)
    for probe in probes:
        get = container[probe]["httpGet"]
        assert get["path"] in routes_for(args.command), probe
        assert ports.get(get["port"], get["port"]) == port, probe
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    for var in container.get("env", []):
        assert var["name"] in code_env_vars, f"{name} sets {var['name']}, which igw does not read"
        if SECRET_LIKE.search(var["name"]):
            assert var["name"].endswith("_FILE"), f"{var['name']} must be a mounted file"
            directory = var["value"].rsplit("/", 1)[0]
            assert mounts.get(directory) in secret_volumes, f"{var['value']} is not a mounted secret"
    # Above the 20 s drain of the gateway and the consumers' shutdown alike.
    assert pod["terminationGracePeriodSeconds"] > GatewaySettings.__dataclass_fields__["shutdown_timeout"].default


def test_kubernetes_gateway_scaling_and_shutdown(manifests: list[dict[str, Any]]) -> None:
    """The gateway has a Service, an HPA, a PDB, readiness on /readyz, and a grace period above its drain."""
    deployment = of_kind(manifests, "Deployment")["igw-gateway"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    drain = float(
        env.get("IGW_SHUTDOWN_TIMEOUT_SECONDS") or GatewaySettings.__dataclass_fields__["shutdown_timeout"].default
    )
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(re.findall(r"sleep\((\d+(?:\.\d+)?)\)", " ".join(pre_stop))[0])
    assert pod["terminationGracePeriodSeconds"] > drain + pause
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    service = of_kind(manifests, "Service")["igw-gateway"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    hpa = of_kind(manifests, "HorizontalPodAutoscaler")["igw-gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "igw-gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = of_kind(manifests, "PodDisruptionBudget")["igw-gateway"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# -- AWS ------------------------------------------------------------------------------------------


def test_ecs_task_definition_has_no_inline_secrets(code_env_vars: dict[str, set[str]]) -> None:
    """Secrets come from Secrets Manager by valueFrom; plain variables are known and not secret-like."""
    task = json.loads((DEPLOY / "aws" / "ecs-task-definition.json").read_text())
    [container] = task["containerDefinitions"]
    args = parse_igw(container["command"])
    assert container["portMappings"][0]["containerPort"] == listen_port(args)
    for var in container["environment"]:
        assert var["name"] in code_env_vars
        assert not SECRET_LIKE.search(var["name"]), f"{var['name']} is inline: use secrets/valueFrom"
    names = {s["name"] for s in container["secrets"]}
    assert {"INSTAGRAM_WEBHOOK_VERIFY_TOKEN", "INSTAGRAM_APP_SECRET"} <= names <= set(code_env_vars)
    for secret in container["secrets"]:
        assert set(secret) == {"name", "valueFrom"}
        assert secret["valueFrom"].startswith("arn:aws:secretsmanager:")
    assert container["healthCheck"]["command"][:4] == ["CMD", "python", "-m", "igw_tools.healthcheck"]
    assert container["stopTimeout"] > GatewaySettings.__dataclass_fields__["shutdown_timeout"].default


def test_terraform_uses_secrets_manager_only() -> None:
    """The Terraform snippet puts no secret value anywhere and passes the secrets by valueFrom."""
    text = (DEPLOY / "aws" / "igw-gateway.tf").read_text()
    assert "secret_string" not in text
    for name in re.findall(r'name\s*=\s*"([A-Z0-9_]+)",\s*value\s*=', text):
        assert not SECRET_LIKE.search(name), f"{name} is given inline"
    for name in ("INSTAGRAM_WEBHOOK_VERIFY_TOKEN", "INSTAGRAM_APP_SECRET"):
        assert re.search(rf'name = "{name}", valueFrom = aws_secretsmanager_secret\.\w+\.arn', text), name
    command = re.search(r"command\s*=\s*(\[.*\])", text)
    assert command is not None
    parse_igw(json.loads(command.group(1)))


# -- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_dockerfile_static_checks() -> None:
    """Multi-stage on python:3.11-slim, dependencies before code, non-root USER, HEALTHCHECK, exec-form CMD."""
    instructions = dockerfile_instructions()
    froms = [i for i, (k, _) in enumerate(instructions) if k == "FROM"]
    assert len(froms) >= 2
    final = instructions[froms[-1] :]
    assert all(args.split()[0] == "python:3.11-slim" for k, args in instructions if k == "FROM")

    build = instructions[froms[0] : froms[-1]]
    runs = [(i, a) for i, (k, a) in enumerate(build) if k == "RUN"]
    deps = next(i for i, a in runs if "pip install -r" in a)
    code = next(i for i, (k, a) in enumerate(build) if k == "COPY" and a.startswith("gateway/"))
    assert deps < code, "dependencies must be installed before the code is copied"
    assert "docker-requirements.py setup.cfg fast redis yaml" in build[deps][1]
    assert any("pip install --no-deps ." in a for _, a in runs)

    users = [a for k, a in final if k == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    [healthcheck] = [a for k, a in final if k == "HEALTHCHECK"]
    assert json.loads(healthcheck.split("CMD", 1)[1].strip()) == ["python", "-m", "igw_tools.healthcheck"]
    [cmd] = [a for k, a in final if k == "CMD"]
    command = json.loads(cmd)  # exec form: a JSON list
    args = parse_igw(command)
    assert args.command == "gateway"
    assert args.host == "0.0.0.0"  # noqa: S104 - the container's address
    assert [a for k, a in final if k == "EXPOSE"] == [str(listen_port(args))]


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    """Every COPY source exists (README.md is optional by pattern) and .dockerignore keeps it in the context."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    for keyword, args in dockerfile_instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = args.split()
        for source in sources:
            if "[" in source:
                continue
            assert (ROOT / source).exists(), source
            assert source.rstrip("/").split("/")[0] not in ignored, source


def test_image_requirements_are_the_runtime_and_chosen_extras() -> None:
    """The requirement list holds install_requires plus fast, redis, yaml, and never the local broker."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "docker-requirements.py"),
            str(ROOT / "setup.cfg"),
            "fast",
            "redis",
            "yaml",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    names = {re.split(r"[<>=!\[ ]", line)[0].lower() for line in out}
    assert {
        "aiohttp",
        "aiokafka",
        "cryptography",
        "multidict",
        "orjson",
        "prometheus-client",
        "uvloop",
        "redis",
        "pyyaml",
    } == names


def test_healthcheck_script_refuses_other_hosts() -> None:
    """The container health check only ever calls its own container."""
    from igw_tools.healthcheck import healthy

    with pytest.raises(ValueError, match="only calls this container"):
        healthy("http://example.com/healthz")


def test_no_secret_file_is_committed() -> None:
    """The secrets README tells what to create; no secret file is committed."""
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/secrets"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert tracked == ["deploy/secrets/README.md"] or not tracked


def test_compose_grafana_mounts_match_the_provisioning(compose: dict[str, Any]) -> None:
    """Grafana's dashboard providers read from where Compose mounts deploy/grafana/dashboards."""
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    target = mounts["./grafana/dashboards"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    for provider_file in sorted((DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            assert provider["options"]["path"].rstrip("/") == target, provider_file
    for source_file in sorted((DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(source_file.read_text())["datasources"]:
            if source["type"] == "prometheus":
                assert source["url"] == "http://prometheus:9090", source_file


# -- Secrets readable by the image's user ---------------------------------------------------------


def image_user() -> tuple[int, int]:
    """The numeric uid and gid of the image's final USER."""
    [user] = [a for k, a in dockerfile_instructions() if k == "USER"][-1:]
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


@pytest.mark.parametrize("name", ["gateway", "agent", "analytics"])
def test_kubernetes_secret_files_are_readable_by_the_image_user(name: str, manifests: list[dict[str, Any]]) -> None:
    """Pods run as the image's user with fsGroup its group; secret volumes are group-readable, not world-readable."""
    uid, gid = image_user()
    pod = of_kind(manifests, "Deployment")[f"igw-{name}"]["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    assert security["fsGroup"] == gid, "without fsGroup the secret files are root's alone (mode 0400 or 0440)"
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            mode = volume["secret"]["defaultMode"]
            assert mode & 0o040, f"{name}: defaultMode {mode:o} does not let group {gid} read"
            assert not mode & 0o007, f"{name}: defaultMode {mode:o} lets every user read"


def readable_by(path: Path, uid: int, gid: int) -> bool:
    """What the kernel checks on the file itself for a process of ``uid``/``gid`` (no ACLs here)."""
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & 0o400)
    if st.st_gid == gid:
        return bool(st.st_mode & 0o040)
    return bool(st.st_mode & 0o004)


def test_compose_secret_recipe_makes_files_the_image_user_can_read(tmp_path: Path) -> None:
    """deploy/secrets/README.md's shell block, run as written, leaves files uid 10001 can read in a 0700 dir."""
    text = (DEPLOY / "secrets" / "README.md").read_text()
    [block] = re.findall(r"```sh\n(.*?)```", text, re.S)
    secrets_dir = tmp_path / "deploy" / "secrets"
    secrets_dir.mkdir(parents=True)
    subprocess.run(["bash", "-euc", block], cwd=tmp_path, check=True, timeout=30)  # noqa: S607
    assert secrets_dir.stat().st_mode & 0o777 == 0o700, "the directory keeps the files private on the host"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert sorted(p.name for p in secrets_dir.iterdir()) == sorted(
        Path(s["file"]).name for s in compose["secrets"].values()
    )
    uid, gid = image_user()
    grafana = 472  # the grafana/grafana image's user
    for path in secrets_dir.iterdir():
        assert path.stat().st_uid not in (uid, grafana), "the test must not pass by owning the files"
        # Compose mounts the file alone: inside the container only the file's own mode counts.
        assert readable_by(path, uid, gid), f"uid {uid} cannot read {path.name}"
        assert readable_by(path, grafana, grafana), f"Grafana cannot read {path.name}"
    # The control: a file made with umask 077 alone, as this README said before, is not readable.
    private = tmp_path / "private"
    private.write_text("x")
    private.chmod(0o600)
    assert not readable_by(private, uid, gid)


def test_unreadable_secret_file_names_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret file the process may not read stops start-up with one line naming the file, uid and gid."""
    from igw.config import Env
    from igw.errors import SettingsError

    secret = tmp_path / "app_secret"
    secret.write_text("s")

    def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(SettingsError) as caught:
        Env({"INSTAGRAM_APP_SECRET_FILE": str(secret)}).secret("INSTAGRAM_APP_SECRET")
    message = str(caught.value)
    assert message.startswith(f"INSTAGRAM_APP_SECRET_FILE: cannot read {secret}: Permission denied")
    assert f"uid {os.getuid()}, gid {os.getgid()}" in message
    assert "deploy/README.md" in caught.value.remedy


# -- ECS: the task definition and the Terraform agree --------------------------------------------


def terraform_container() -> str:
    text = (DEPLOY / "aws" / "igw-gateway.tf").read_text()
    return text[text.index("container_definitions") : text.index('resource "aws_lb_target_group"')]


def test_ecs_json_and_terraform_run_the_gateway_alike() -> None:
    """User, read-only root, mount points, stop timeout, health check and command are the same in both."""
    task = json.loads((DEPLOY / "aws" / "ecs-task-definition.json").read_text())
    [container] = task["containerDefinitions"]
    tf = terraform_container()
    uid, gid = image_user()
    assert container["user"] == f"{uid}:{gid}"
    assert f'user                   = "{uid}:{gid}"' in tf
    assert container["readonlyRootFilesystem"] is True
    assert re.search(r"readonlyRootFilesystem\s*=\s*true", tf)
    for mount in container["mountPoints"]:
        assert f'{{ sourceVolume = "{mount["sourceVolume"]}", containerPath = "{mount["containerPath"]}" }}' in tf
        assert re.search(rf'volume \{{\s*name = "{mount["sourceVolume"]}"\s*\}}', tf)
    assert re.search(rf"stopTimeout\s*=\s*{container['stopTimeout']}\b", tf)
    assert json.dumps(container["healthCheck"]["command"]).replace(" ", "") in tf.replace(" ", "")
    assert json.dumps(container["command"]).replace(" ", "") in tf.replace(" ", "")
    # The spool's mount is the image's VOLUME, which Fargate fills from the image (owner included).
    volumes = [a for k, a in dockerfile_instructions() if k == "VOLUME"]
    assert any("/var/lib/igw/spool" in v for v in volumes)


def test_load_balancer_health_check_is_what_the_docs_say() -> None:
    """The ALB checks /healthz (ECS replaces tasks it fails); docs/scaling.md and deploy/README.md say so."""
    text = (DEPLOY / "aws" / "igw-gateway.tf").read_text()
    [path] = re.findall(r'health_check \{\s*path\s*=\s*"([^"]+)"', text)
    assert path == "/healthz"
    scaling = (ROOT / "docs" / "scaling.md").read_text()
    [health] = [line for line in scaling.split("\n- ") if line.startswith("Health:")]
    assert "ECS" in health
    assert "`/healthz`" in health
    assert "target group checks `/healthz`" in " ".join((DEPLOY / "README.md").read_text().split())
