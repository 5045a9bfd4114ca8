"""The real gateway matches gateway/openapi.yaml for generated requests, signed and unsigned, and never answers 5xx."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.signature import sign
from igw.config import KafkaSettings
from tests.plugins.gateway import APP_SECRET, WEBHOOK
from tests.plugins.outage import GatewayProcess, gateway_env

pytestmark = pytest.mark.kafka

schema = schemathesis.openapi.from_path(Path(__file__).parent.parent / "gateway" / "openapi.yaml")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class MetaSignature(requests.auth.AuthBase):
    """Signs the prepared body bytes the way Meta does."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        request.headers["X-Hub-Signature-256"] = sign(body if isinstance(body, bytes) else body.encode(), APP_SECRET)
        return request


@pytest.fixture(scope="module")
def contract_gateway(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("contract")
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}")
    proc = GatewayProcess(gateway_env(kafka, tmp / "spool"), tmp / "gateway.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_match_the_spec(
    case: schemathesis.Case, contract_gateway: GatewayProcess, http: requests.Session
) -> None:
    """Each generated request, sent as generated and (for the webhook POST) signed, gets a documented answer."""
    response = case.call(base_url=contract_gateway.base_url, session=http, timeout=10)
    case.validate_response(response, checks=CHECKS)
    if case.method == "POST" and case.path == WEBHOOK:
        signed = case.call(base_url=contract_gateway.base_url, session=http, timeout=10, auth=MetaSignature())
        case.validate_response(signed, checks=CHECKS)
        assert signed.status_code == 200, signed.text
        if "X-Hub-Signature-256" not in (case.headers or {}):
            assert response.status_code == 403
