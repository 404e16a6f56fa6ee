"""The plain-HTTP scrape address: ``/metrics`` only, GET and HEAD only; the
``metricsAddress`` setting."""

from __future__ import annotations

from typing import cast

import pytest
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from karpor.app.settings import SettingsError, parse_settings
from karpor.metrics.listener import MetricsResource, split_address


def scrape(path: bytes, method: bytes = b"GET") -> tuple[DummyRequest, bytes]:
    seen: list[str] = []

    def render(accept: str) -> tuple[bytes, bytes]:
        seen.append(accept)
        return b"text/plain; version=0.0.4; charset=utf-8", b"karpor_requests_total 3.0\n"

    request = DummyRequest(path.strip(b"/").split(b"/"))
    request.path = path  # type: ignore[attr-defined]
    request.method = method
    request.requestHeaders.setRawHeaders(b"accept", [b"text/plain"])
    body = MetricsResource(render).render(cast(IRequest, request))
    if request.responseCode in (None, 200):
        assert seen == ["text/plain"]
    return request, body


def test_metrics_are_served() -> None:
    request, body = scrape(b"/metrics")
    assert body == b"karpor_requests_total 3.0\n"
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/plain; version=0.0.4; charset=utf-8"
    ]


def test_other_paths_and_methods_are_refused() -> None:
    request, _ = scrape(b"/")
    assert request.responseCode == 404
    request, _ = scrape(b"/metrics/x")
    assert request.responseCode == 404
    request, _ = scrape(b"/metrics", b"POST")
    assert request.responseCode == 405
    assert request.responseHeaders.getRawHeaders(b"allow") == [b"GET, HEAD"]


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [("127.0.0.1:9090", "127.0.0.1", 9090), ("[::1]:9100", "::1", 9100), ("h:1", "h", 1)],
)
def test_addresses(address: str, host: str, port: int) -> None:
    assert split_address(address) == (host, port)
    assert parse_settings(f'metricsAddress: "{address}"\n', "k.yaml").metrics_address == address


@pytest.mark.parametrize("bad", [":9090", "9090", "host:", "host:0", "host:99999", "a b:1"])
def test_bad_addresses_name_the_key(bad: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(f'metricsAddress: "{bad}"\n', "k.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("k.yaml: metricsAddress: must be")
