"""``igw check`` passes against a well-configured gateway and names the cause of each misconfiguration."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from igw_tools.commands.check import CheckResult, Verdict, WebhookChecker, overall_ok
from tests.plugins.gateway import APP_SECRET, VERIFY_TOKEN, WEBHOOK
from tests.plugins.tools import run_cli

pytestmark = pytest.mark.kafka


Serve = Callable[..., Awaitable[str]]


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


async def test_passes_against_a_configured_gateway(webhook_url: str) -> None:
    """Every check passes on the real gateway; plain HTTP on loopback is only a warning."""
    results = await WebhookChecker(webhook_url, verify_token=VERIFY_TOKEN, app_secret=APP_SECRET).run()
    checks = by_name(results)
    assert checks["https"].verdict is Verdict.WARN
    for name in ("verification handshake", "wrong token refused", "signed POST", "bad signature refused"):
        assert checks[name].verdict is Verdict.PASS, checks[name]
    assert checks["response time"].verdict is Verdict.PASS
    assert overall_ok(results)
    assert not overall_ok(results, strict=True)


async def test_wrong_token_is_named(webhook_url: str) -> None:
    """A wrong verify token fails the handshake with 403 and names the token setting as the cause."""
    results = await WebhookChecker(webhook_url, verify_token="not-the-token", app_secret=APP_SECRET).run()
    handshake = by_name(results)["verification handshake"]
    assert handshake.verdict is Verdict.FAIL
    assert "403" in handshake.detail
    assert handshake.cause is not None
    assert "wrong verify token" in handshake.cause
    assert by_name(results)["signed POST"].verdict is Verdict.PASS
    assert not overall_ok(results)


async def test_wrong_secret_is_named(webhook_url: str) -> None:
    """A wrong app secret fails the signed POST with 403 and names the app secret as the cause."""
    results = await WebhookChecker(webhook_url, verify_token=VERIFY_TOKEN, app_secret="not-the-secret").run()
    post = by_name(results)["signed POST"]
    assert post.verdict is Verdict.FAIL
    assert post.cause is not None
    assert "wrong app secret" in post.cause
    assert by_name(results)["verification handshake"].verdict is Verdict.PASS


async def test_cli_reads_secrets_from_env_and_files_and_never_prints_them(
    webhook_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token from the environment, secret from a *_FILE: exit 0, and neither value appears in the output."""
    secret_file = tmp_path / "app_secret"
    secret_file.write_text(APP_SECRET + "\n")
    monkeypatch.setenv("INSTAGRAM_WEBHOOK_VERIFY_TOKEN", VERIFY_TOKEN)
    monkeypatch.delenv("INSTAGRAM_APP_SECRET", raising=False)
    monkeypatch.setenv("INSTAGRAM_APP_SECRET_FILE", str(secret_file))
    status, out, err = await run_cli(["check", webhook_url])
    assert status == 0, out + err
    assert "published like any event" in out
    assert "verdict: passed with 1 warning(s)" in out
    monkeypatch.setenv("INSTAGRAM_WEBHOOK_VERIFY_TOKEN", "wrong-token-1234")
    status, out, err = await run_cli(["check", webhook_url])
    assert status == 1
    assert "wrong verify token" in out
    for text in (VERIFY_TOKEN, "wrong-token-1234", APP_SECRET):
        assert text not in out + err


# -- misbehaving endpoints ------------------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(app, ssl=None)``: the URL of ``app``'s webhook path on a loopback server."""
    servers: list[TestServer] = []

    async def start(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> str:
        server = TestServer(app)
        await server.start_server(ssl=ssl_context)
        servers.append(server)
        return str(server.make_url(WEBHOOK))

    yield start
    for server in servers:
        await server.close()


def _app(get: Callable[[web.Request], object], post: Callable[[web.Request], object]) -> web.Application:
    app = web.Application()
    app.router.add_get(WEBHOOK, get)  # type: ignore[arg-type]
    app.router.add_post(WEBHOOK, post)  # type: ignore[arg-type]
    return app


async def test_json_echo_and_open_endpoint_are_named(serve: Serve) -> None:
    """A JSON-quoted challenge and an endpoint that checks neither token nor signature each get their cause."""

    async def get(request: web.Request) -> web.Response:
        return web.json_response(request.query["hub.challenge"])

    async def post(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    url = await serve(_app(get, post))
    checks = by_name(await WebhookChecker(url, verify_token="t", app_secret="s").run())
    handshake = checks["verification handshake"]
    assert handshake.verdict is Verdict.FAIL
    assert handshake.cause is not None
    assert "echoed as JSON" in handshake.cause
    assert checks["wrong token refused"].verdict is Verdict.FAIL
    assert "accepts any verify token" in (checks["wrong token refused"].cause or "")
    assert checks["bad signature refused"].verdict is Verdict.FAIL
    assert "does not verify X-Hub-Signature-256" in (checks["bad signature refused"].cause or "")


async def test_slow_answers_fail_against_the_limit(serve: Serve) -> None:
    """An answer slower than the limit fails the response-time check with Meta's deadline as the cause."""

    async def get(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text=request.query["hub.challenge"], content_type="text/plain")

    async def post(request: web.Request) -> web.Response:
        return web.Response(status=403)

    url = await serve(_app(get, post))
    checker = WebhookChecker(url, verify_token="t", app_secret="s", slow_seconds=0.05, limit_seconds=0.2)
    check = by_name(await checker.run())["response time"]
    assert check.verdict is Verdict.FAIL
    assert "Meta gives up after 0.2 s" in (check.cause or "")


async def test_nothing_listening_is_named() -> None:
    """A closed port fails the handshake with 'nothing answers' and skips the checks that need an answer."""
    from igw_tools.localbroker import free_port

    url = f"http://127.0.0.1:{free_port()}{WEBHOOK}"
    results = await WebhookChecker(url, verify_token="t", app_secret="s", timeout=2).run()
    checks = by_name(results)
    assert "nothing answers" in (checks["verification handshake"].cause or "")
    assert checks["signed POST"].verdict is Verdict.SKIP
    assert not overall_ok(results)


async def test_plain_http_to_a_public_host_fails() -> None:
    """http:// on anything but loopback fails: Meta requires HTTPS."""
    checker = WebhookChecker("http://hooks.invalid/x", verify_token="t", app_secret="s", timeout=1)
    checker._check_scheme("http", "hooks.invalid")
    [https] = checker.results
    assert https.verdict is Verdict.FAIL
    assert "requires an HTTPS callback URL" in (https.cause or "")


# -- TLS ------------------------------------------------------------------------------------------


def _certificate(directory: Path, days: int) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl tool."""
    cert, key = directory / f"cert{days}.pem", directory / f"key{days}.pem"
    subprocess.run(
        [  # noqa: S607 - the openssl tool from PATH
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_tls_self_signed_fails_and_trusted_passes(
    serve: Serve, gateway_settings: GatewaySettings, tmp_path: Path
) -> None:
    """Over HTTPS the real gateway fails the certificate check when self-signed, and passes with its CA trusted."""
    cert, key = _certificate(tmp_path, days=90)
    url = await serve(create_app(gateway_settings), _server_context(cert, key))
    assert url.startswith("https://127.0.0.1:")
    untrusted = by_name(await WebhookChecker(url, verify_token=VERIFY_TOKEN, app_secret=APP_SECRET, timeout=3).run())
    assert untrusted["tls certificate"].verdict is Verdict.FAIL
    assert "self-signed" in untrusted["tls certificate"].detail
    assert "public CA" in (untrusted["tls certificate"].cause or "")

    trusted_context = ssl.create_default_context(cafile=str(cert))
    checker = WebhookChecker(url, verify_token=VERIFY_TOKEN, app_secret=APP_SECRET, ssl_context=trusted_context)
    results = await checker.run()
    assert all(r.verdict is Verdict.PASS for r in results), results


async def test_tls_expiring_soon_warns(serve: Serve, tmp_path: Path) -> None:
    """A certificate with days left to live passes the handshake but warns to renew it."""
    cert, key = _certificate(tmp_path, days=5)

    async def get(request: web.Request) -> web.Response:
        return web.Response(text=request.query["hub.challenge"], content_type="text/plain")

    url = await serve(_app(get, get), _server_context(cert, key))
    context = ssl.create_default_context(cafile=str(cert))
    checks = by_name(await WebhookChecker(url, verify_token="t", app_secret="s", ssl_context=context).run())
    assert checks["tls certificate"].verdict is Verdict.WARN
    assert "renew" in (checks["tls certificate"].cause or "")


async def test_gateway_without_kafka_is_named(serve: Serve, gateway_settings: GatewaySettings) -> None:
    """When the gateway cannot publish, the signed POST fails with 503 and Kafka is named as the cause."""
    from igw_tools.localbroker import free_port

    kafka = dataclasses.replace(gateway_settings.kafka, bootstrap_servers=f"127.0.0.1:{free_port()}")
    settings = dataclasses.replace(gateway_settings, kafka=kafka, publish_timeout=0.3, create_topics=False)
    url = await serve(create_app(settings))
    checks = by_name(await WebhookChecker(url, verify_token=VERIFY_TOKEN, app_secret=APP_SECRET).run())
    assert checks["verification handshake"].verdict is Verdict.PASS
    post = checks["signed POST"]
    assert post.verdict is Verdict.FAIL
    assert "503" in post.detail
    assert "cannot reach Kafka" in (post.cause or "")


async def test_challenge_with_a_newline_fails(serve: Serve) -> None:
    """A challenge echoed with a trailing newline fails: Meta compares byte for byte."""

    async def get(request: web.Request) -> web.Response:
        return web.Response(text=request.query["hub.challenge"] + "\n", content_type="text/plain")

    url = await serve(_app(get, get))
    handshake = by_name(await WebhookChecker(url, verify_token="t", app_secret="s").run())["verification handshake"]
    assert handshake.verdict is Verdict.FAIL
    assert "byte for byte" in (handshake.cause or "")
