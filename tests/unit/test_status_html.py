"""The status page's HTML and its resource (karpor.status.page,
karpor.status.resource): what admin input and error text can do to the
markup (nothing), the paths, the headers."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from karpor.metrics.listener import MetricsResource
from karpor.status import page
from karpor.status.board import StatusBoard
from karpor.status.clusters import ClusterInfo, Fleet
from karpor.status.gateway import GatewayFacts
from karpor.status.resource import StatusResource
from karpor.status.sample import Sample

T0 = 1_800_000_000.0

#: every element the pages are made of
TAGS = {
    "html", "head", "meta", "title", "link", "script", "body", "header", "h1", "h2", "h3", "p",
    "a", "main", "section", "div", "table", "caption", "thead", "tbody", "tr", "th", "td",
    "span", "time", "svg", "line", "polyline", "ul", "li",
}  # fmt: skip


class Elements(HTMLParser):
    """The elements and attributes of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: set[str] = set()
        self.scripts: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes |= {name for name, _ in attrs}
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))


def board_of(*clusters: ClusterInfo, problems: tuple[str, ...] = ()) -> StatusBoard:
    board = StatusBoard()
    fleet = Fleet(clusters=list(clusters), problems=list(problems))
    board.observe(Sample(time=T0), fleet, GatewayFacts(pid=1))
    board.observe(Sample(time=T0 + 5), fleet, GatewayFacts(pid=1))
    return board


def parse(text: str) -> Elements:
    found = Elements()
    found.feed(text)
    return found


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(min_size=1, max_size=40),
    free=st.text(max_size=80),
    label=st.text(max_size=40),
)
def test_admin_input_and_error_text_never_become_markup(name: str, free: str, label: str) -> None:
    info = ClusterInfo(
        name=name,
        display_name=free,
        provider=free,
        labels={label: free},
        endpoint=free,
        healthy=False,
        version=free,
        message=free,
        reach="tunnel",
        agent_version=free,
        agent_links=1,
    )
    doc = board_of(info, problems=(free,)).document(T0 + 5)
    for html in (page.overview(doc), page.cluster_page(doc, name)):
        elements = parse(html)
        assert set(elements.tags) <= TAGS
        assert not {a for a in elements.attributes if a.startswith("on")}
        assert elements.scripts == ["/static/status.js"]


def test_hostile_text_is_escaped() -> None:
    evil = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    info = ClusterInfo(name="prod", display_name=evil, healthy=False, message=evil)
    doc = board_of(info, problems=(evil,)).document(T0 + 5)
    html = page.overview(doc)
    assert "<img" not in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert 'data-cluster="prod" data-health="unhealthy"' in html
    assert "✗ Unhealthy" in html
    detail = page.cluster_page(doc, "prod")
    assert "<img" not in detail and detail.count('<svg class="chart"') == 6


def request(resource: Any, path: bytes, method: bytes = b"GET") -> tuple[DummyRequest, bytes]:
    req = DummyRequest(path.strip(b"/").split(b"/"))
    req.path = path  # type: ignore[attr-defined]
    req.method = method
    body: bytes = resource.render(cast(IRequest, req))
    return req, body


def header(req: DummyRequest, name: bytes) -> bytes:
    return (req.responseHeaders.getRawHeaders(name) or [b""])[0]


def test_the_paths() -> None:
    resource = StatusResource(board_of(ClusterInfo(name="prod a")), now=lambda: T0 + 6)
    req, body = request(resource, b"/status.json")
    assert req.responseCode in (None, 200)
    assert header(req, b"content-type") == b"application/json"
    assert json.loads(body)["clusters"][0]["name"] == "prod a"
    req, body = request(resource, b"/")
    assert header(req, b"content-type") == b"text/html; charset=utf-8"
    assert b'href="/clusters/prod%20a"' in body
    req, body = request(resource, b"/clusters/prod%20a")
    assert req.responseCode in (None, 200) and b'data-cluster="prod a"' in body
    req, _ = request(resource, b"/clusters/nope")
    assert req.responseCode == 404
    req, body = request(resource, b"/static/status.js")
    assert header(req, b"content-type").startswith(b"text/javascript") and b"status.json" in body
    req, body = request(resource, b"/static/status.css")
    assert header(req, b"content-type").startswith(b"text/css") and b"prefers-color-scheme" in body
    for path in (b"/static/other.js", b"/clusters/a/b", b"/x"):
        assert request(resource, path)[0].responseCode == 404
    req, _ = request(resource, b"/", b"POST")
    assert req.responseCode == 405
    req, body = request(resource, b"/", b"HEAD")
    assert body == b"" and header(req, b"content-type") == b"text/html; charset=utf-8"


def test_every_answer_forbids_foreign_content() -> None:
    resource = StatusResource(board_of(), now=lambda: T0)
    for path in (b"/", b"/status.json", b"/static/status.js", b"/nothing"):
        req, _ = request(resource, path)
        policy = header(req, b"content-security-policy")
        assert b"default-src 'none'" in policy and b"script-src 'self'" in policy
        assert header(req, b"x-content-type-options") == b"nosniff"
        assert header(req, b"x-frame-options") == b"DENY"


def test_the_metrics_listener_hands_other_paths_to_the_page() -> None:
    resource = StatusResource(board_of(), now=lambda: T0)
    listener = MetricsResource(lambda accept: (b"text/plain", b"m 1\n"), resource)
    _, body = request(listener, b"/metrics")
    assert body == b"m 1\n"
    _, body = request(listener, b"/status.json")
    assert json.loads(body)["version"] == 1
