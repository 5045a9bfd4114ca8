"""``igw check URL``: the checks the setup notes make people do by hand with curl, with a verdict each.

The verification handshake with a random challenge, a wrong token that must be refused, a signed
test POST (a harmless read receipt, published like any event), an unsigned POST that must be
refused, TLS, and response times against Meta's 5 s limit. Each failure names its likely cause.
The verify token and app secret are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import secrets
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import aiohttp

from gateway.signature import sign
from igw.config import Env
from igw_tools.simulator import Platform, TrafficGenerator, meta_dumps

# Meta's current page asks for an answer within 5 s; above 1 s there is little headroom left.
SLOW_SECONDS = 1.0
META_LIMIT_SECONDS = 5.0
CERT_EXPIRY_WARN_DAYS = 14


class Verdict(StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    verdict: Verdict
    detail: str
    cause: str | None = None  # the likely cause, for WARN and FAIL

    def render(self) -> str:
        line = f"  {self.verdict.value:<4}  {self.name:<22} {self.detail}"
        if self.cause:
            line += f"\n        likely cause: {self.cause}"
        return line


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    content_type: str
    body: bytes
    seconds: float
    location: str | None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _transport_cause(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s (Meta gives up after {META_LIMIT_SECONDS:g} s)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"the TLS certificate is not valid: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return (
            f"nothing answers at {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error}):"
            " is the gateway running, and is the host and port right?"
        )
    return f"the request failed: {type(exc).__name__}: {exc}"


class WebhookChecker:
    """Runs every check against one callback URL and collects the results."""

    def __init__(
        self,
        url: str,
        *,
        verify_token: str,
        app_secret: str,
        platform: Platform = "instagram",
        account_id: str | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        slow_seconds: float = SLOW_SECONDS,
        limit_seconds: float = META_LIMIT_SECONDS,
    ) -> None:
        self.url = url
        self._token = verify_token
        self._secret = app_secret
        self.platform = platform
        self.account_id = account_id
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.slow_seconds = slow_seconds
        self.limit_seconds = limit_seconds
        self.results: list[CheckResult] = []
        self._latencies: list[tuple[str, float]] = []

    def _add(self, name: str, verdict: Verdict, detail: str, cause: str | None = None) -> CheckResult:
        result = CheckResult(name, verdict, detail, cause)
        self.results.append(result)
        return result

    async def run(self) -> list[CheckResult]:
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            self._add("url", Verdict.FAIL, f"not an http(s) URL: {self.url}", "give the full callback URL")
            return self.results
        self._check_scheme(parts.scheme, parts.hostname)
        if parts.scheme == "https":
            await self._check_certificate(parts.hostname, parts.port or 443)
        connector = aiohttp.TCPConnector(ssl=self.ssl_context if parts.scheme == "https" else False)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            reachable = await self._check_handshake(session)
            if reachable:
                await self._check_wrong_token(session)
                await self._check_signed_post(session)
                await self._check_unsigned_post(session)
            else:
                for name in ("wrong token refused", "signed POST", "bad signature refused"):
                    self._add(name, Verdict.SKIP, "not run: the handshake did not get an answer")
        self._check_latency()
        return self.results

    async def _request(
        self, session: aiohttp.ClientSession, method: str, *, params: dict[str, str] | None = None, **kw: object
    ) -> _Answer:
        t0 = time.perf_counter()
        async with session.request(method, self.url, params=params, allow_redirects=False, **kw) as resp:  # type: ignore[arg-type]
            body = await resp.read()
            seconds = time.perf_counter() - t0
            return _Answer(resp.status, resp.content_type, body, seconds, resp.headers.get("Location"))

    # -- the checks ------------------------------------------------------------------------------

    def _check_scheme(self, scheme: str, host: str) -> None:
        if scheme == "https":
            self._add("https", Verdict.PASS, "the callback URL uses HTTPS")
        elif _is_loopback(host):
            self._add(
                "https",
                Verdict.WARN,
                "plain HTTP on a local address: fine for trying things out",
                "Meta only calls HTTPS URLs with a valid certificate: put a TLS proxy or tunnel in front",
            )
        else:
            self._add(
                "https",
                Verdict.FAIL,
                "plain HTTP",
                "Meta requires an HTTPS callback URL with a valid certificate (terminate TLS at a proxy"
                " or load balancer in front of the gateway)",
            )

    async def _check_certificate(self, host: str, port: int) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                _, writer = await asyncio.open_connection(host, port, ssl=self.ssl_context, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            self._add(
                "tls certificate",
                Verdict.FAIL,
                f"not accepted: {exc.verify_message}",
                "Meta needs a certificate from a public CA that matches the host name, with the full chain"
                " (self-signed and expired certificates are refused)",
            )
            return
        except (OSError, TimeoutError) as exc:
            self._add("tls certificate", Verdict.FAIL, "no TLS connection", _transport_cause(exc, self.timeout))
            return
        cert = writer.get_extra_info("peercert") or {}
        writer.close()
        # The server may drop the connection without a TLS close; the check is done anyway.
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        not_after = cert.get("notAfter")
        if not not_after:
            self._add("tls certificate", Verdict.PASS, "valid")
            return
        expires = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), tz=dt.UTC)
        days = (expires - dt.datetime.now(tz=dt.UTC)).days
        if days < CERT_EXPIRY_WARN_DAYS:
            self._add(
                "tls certificate",
                Verdict.WARN,
                f"valid, but expires in {days} days ({expires:%Y-%m-%d})",
                "renew it: Meta stops delivering when the certificate expires",
            )
        else:
            self._add("tls certificate", Verdict.PASS, f"valid until {expires:%Y-%m-%d} ({days} days)")

    async def _check_handshake(self, session: aiohttp.ClientSession) -> bool:
        name = "verification handshake"
        challenge = str(secrets.randbelow(10**10 - 10**9) + 10**9)
        params = {"hub.mode": "subscribe", "hub.verify_token": self._token, "hub.challenge": challenge}
        try:
            answer = await self._request(session, "GET", params=params)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._add(name, Verdict.FAIL, "no answer", _transport_cause(exc, self.timeout))
            return False
        self._latencies.append((name, answer.seconds))
        text = answer.body.decode("utf-8", "replace")
        got = f"{answer.status} {answer.content_type or 'no content type'}"
        if answer.status == 403:
            self._add(
                name,
                Verdict.FAIL,
                f"{got}: the token was refused",
                "wrong verify token: INSTAGRAM_WEBHOOK_VERIFY_TOKEN (or --token) differs from the gateway's;"
                " the token typed in Meta's App Dashboard must be the same",
            )
        elif answer.status in {404, 405}:
            self._add(name, Verdict.FAIL, got, _wrong_path_cause())
        elif 300 <= answer.status < 400:
            self._add(
                name,
                Verdict.FAIL,
                f"{got}: redirects to {answer.location}",
                "give Meta the final URL (a redirect, e.g. http to https or a missing slash, breaks verification)",
            )
        elif answer.status != 200:
            self._add(name, Verdict.FAIL, got, "the server failed to answer the handshake; see its logs")
        elif text == challenge and answer.content_type == "text/plain":
            self._add(name, Verdict.PASS, f"{got}, challenge echoed ({answer.seconds * 1000:.0f} ms)")
        elif text.strip() in {f'"{challenge}"', f'{{"hub.challenge":"{challenge}"}}'} or (
            text.strip().startswith(("{", '"')) and challenge in text
        ):
            self._add(
                name,
                Verdict.FAIL,
                f"{got}: the challenge came back as JSON: {text[:60]!r}",
                "the challenge is echoed as JSON; Meta needs the bare challenge as text/plain"
                " (its dashboard says 'Response does not match challenge')",
            )
        elif text.strip() == challenge and text != challenge:
            self._add(
                name,
                Verdict.FAIL,
                f"{got}: the challenge came back with extra whitespace: {text[:60]!r}",
                "Meta compares the body with the challenge byte for byte: no newline or spaces around it",
            )
        elif text == challenge:
            self._add(
                name,
                Verdict.WARN,
                f"{got}: challenge echoed, but not as text/plain",
                "answer the challenge as text/plain, as Meta's documentation shows",
            )
        else:
            self._add(
                name,
                Verdict.FAIL,
                f"{got}: the body is not the challenge: {text[:60]!r}",
                "the answer must be exactly the hub.challenge value (Meta: 'Response does not match challenge')",
            )
        return True

    async def _check_wrong_token(self, session: aiohttp.ClientSession) -> None:
        name = "wrong token refused"
        params = {
            "hub.mode": "subscribe",
            "hub.verify_token": "igw-check-" + secrets.token_hex(8),
            "hub.challenge": str(secrets.randbelow(10**9)),
        }
        try:
            answer = await self._request(session, "GET", params=params)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._add(name, Verdict.FAIL, "no answer", _transport_cause(exc, self.timeout))
            return
        self._latencies.append((name, answer.seconds))
        if answer.status == 403:
            self._add(name, Verdict.PASS, "403 for a token that is not the configured one")
        elif answer.status == 200:
            self._add(
                name, Verdict.FAIL, "200 for a made-up token", "the endpoint accepts any verify token: it must check it"
            )
        else:
            self._add(name, Verdict.WARN, f"{answer.status} for a made-up token", "Meta's examples answer 403 here")

    async def _check_signed_post(self, session: aiohttp.ClientSession) -> None:
        name = "signed POST"
        generator = TrafficGenerator(platform=self.platform, account_id=self.account_id, conversations=1)
        simulated = generator.next("read")
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(simulated.body, self._secret)}
        try:
            answer = await self._request(session, "POST", data=simulated.body, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._add(name, Verdict.FAIL, "no answer", _transport_cause(exc, self.timeout))
            return
        self._latencies.append((name, answer.seconds))
        if answer.status == 200:
            self._add(
                name,
                Verdict.PASS,
                f"200 for a signed read receipt (account {generator.account_id}, user {generator.user_id(0)});"
                " it is published like any event",
            )
        elif answer.status == 403:
            self._add(
                name,
                Verdict.FAIL,
                "403: the signature was refused",
                "wrong app secret: INSTAGRAM_APP_SECRET (or --secret) differs from the gateway's; Instagram-login"
                " apps have two secrets (Meta App Secret, Instagram App Secret): configure both on the gateway",
            )
        elif answer.status == 503:
            self._add(
                name,
                Verdict.FAIL,
                "503: the gateway could not publish",
                "the gateway cannot reach Kafka in time: see its /readyz and logs (Meta retries, then disables"
                " the webhook after an hour of failures)",
            )
        elif answer.status in {404, 405}:
            self._add(name, Verdict.FAIL, str(answer.status), _wrong_path_cause())
        else:
            self._add(name, Verdict.FAIL, f"{answer.status}", "Meta retries any answer but 200; see the server's logs")

    async def _check_unsigned_post(self, session: aiohttp.ClientSession) -> None:
        name = "bad signature refused"
        # An empty batch: even an endpoint that skips the check publishes nothing for it.
        body = meta_dumps({"object": self.platform if self.platform == "instagram" else "page", "entry": []})
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secrets.token_hex(16))}
        try:
            answer = await self._request(session, "POST", data=body, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._add(name, Verdict.FAIL, "no answer", _transport_cause(exc, self.timeout))
            return
        self._latencies.append((name, answer.seconds))
        if answer.status in {401, 403}:
            self._add(name, Verdict.PASS, f"{answer.status} for a body signed with another secret")
        elif 200 <= answer.status < 300:
            self._add(
                name,
                Verdict.FAIL,
                f"{answer.status} for a body signed with another secret",
                "the endpoint does not verify X-Hub-Signature-256: anyone could post events",
            )
        else:
            self._add(name, Verdict.WARN, f"{answer.status} for a badly signed body", "expected 403")

    def _check_latency(self) -> None:
        name = "response time"
        if not self._latencies:
            self._add(name, Verdict.SKIP, "no request was answered")
            return
        slowest_name, slowest = max(self._latencies, key=lambda pair: pair[1])
        detail = f"slowest {slowest * 1000:.0f} ms ({slowest_name})"
        if slowest > self.limit_seconds:
            self._add(
                name,
                Verdict.FAIL,
                detail,
                f"Meta gives up after {self.limit_seconds:g} s and retries: answer before any slow work",
            )
        elif slowest > self.slow_seconds:
            self._add(name, Verdict.WARN, detail, f"close to Meta's {self.limit_seconds:g} s limit")
        else:
            self._add(name, Verdict.PASS, detail)


def _wrong_path_cause() -> str:
    return (
        "nothing serves this path: check the URL's path (the gateway serves IGW_WEBHOOK_PATH,"
        " by default /api/v1/instagram/webhook)"
    )


def overall_ok(results: Sequence[CheckResult], *, strict: bool = False) -> bool:
    """True when no check failed or was skipped (and, with ``strict``, none warned)."""
    bad = {Verdict.FAIL, Verdict.SKIP} | ({Verdict.WARN} if strict else set())
    return not any(r.verdict in bad for r in results)


def _ssl_context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def run(args: argparse.Namespace) -> int:
    env = Env()
    token = args.token
    if not token:
        token = env.required_secret(
            "INSTAGRAM_WEBHOOK_VERIFY_TOKEN", "the verify token to check the gateway with", alternative="pass --token"
        ).value
    secret = args.secret
    if not secret:
        # Several comma-separated secrets (rotation): Meta signs with one; check with the first.
        configured = env.secrets(
            "INSTAGRAM_APP_SECRET", required_as="the app secret to sign the test POST with", alternative="pass --secret"
        )
        secret = configured[0].value
    checker = WebhookChecker(
        args.url,
        verify_token=token,
        app_secret=secret,
        platform=args.platform,
        account_id=args.account_id,
        timeout=args.timeout,
        ssl_context=_ssl_context(args.cafile),
    )
    results = asyncio.run(checker.run())
    out = sys.stdout
    out.write(f"igw check {args.url}\n")
    for result in results:
        out.write(result.render() + "\n")
    failed = sum(r.verdict in {Verdict.FAIL, Verdict.SKIP} for r in results)
    warned = sum(r.verdict is Verdict.WARN for r in results)
    ok = overall_ok(results, strict=args.strict)
    if ok:
        out.write("verdict: ready for Meta" if not warned else f"verdict: passed with {warned} warning(s)")
    else:
        out.write(f"verdict: NOT ready: {failed} check(s) failed" + (f", {warned} warning(s)" if warned else ""))
    out.write("\n")
    return 0 if ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a webhook URL the way Meta will call it",
        description="Verification handshake, signed and badly signed POSTs, TLS and response times, each with"
        " a verdict and the likely cause of a failure. Exit status 0 only when no check fails. The signed"
        " POST is a harmless read receipt that is published like any event.",
    )
    parser.add_argument("url", help="the callback URL, e.g. https://hooks.example.com/api/v1/instagram/webhook")
    parser.add_argument("--token", help="verify token (default: INSTAGRAM_WEBHOOK_VERIFY_TOKEN or its _FILE)")
    parser.add_argument("--secret", help="app secret (default: INSTAGRAM_APP_SECRET or its _FILE)")
    parser.add_argument("--platform", choices=("instagram", "messenger"), default="instagram")
    parser.add_argument("--account-id", help="account id to put in the test event")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument(
        "--cafile", help="verify TLS with this CA bundle instead of the system one (a private CA in staging)"
    )
    parser.add_argument("--strict", action="store_true", help="fail on warnings too")
    parser.set_defaults(func=run)
