"""What a request is labelled with in the metrics (sans-IO).

- :data:`GATEWAY`: the ``cluster`` label of requests the gateway answers
  itself without a known cluster (its own API, a cluster name that is not
  defined, a malformed request): one fixed value, so no caller can make new
  series by inventing cluster names;
- :func:`request_verb`: the Kubernetes verb of a request, as the access
  policy names verbs (:func:`karpor.auth.policy.attributes`: ``get list
  watch create update patch delete deletecollection``, ``exec attach
  portforward proxy``, or the lower-cased method of a non-resource path).
  Parsing a path costs more than the rest of the metrics of a request, so
  verbs are cached per (method, path, watch) — the only inputs the verb
  depends on;
- :func:`stream_kind`: the kind of a long-running request (``watch``,
  ``logs``, ``exec``, ``attach``, ``portforward``, ``proxy`` for any other
  upgrade), ``None`` for the others.
"""

from __future__ import annotations

from functools import lru_cache

from karpor.auth.policy import attributes
from karpor.kube.requestinfo import RequestInfoError, parse_query, parse_request_info, query_bool
from karpor.upstream.h2 import is_long_running

#: the ``cluster`` label of requests answered without a known cluster
GATEWAY = "-"
#: every value of the ``kind`` label of long-running requests
STREAM_KINDS = ("watch", "logs", "exec", "attach", "portforward", "proxy")
#: (method, path, watch) entries the verb cache keeps
VERB_CACHE_SIZE = 4096

_UPGRADE_KINDS = {b"exec": "exec", b"attach": "attach", b"portforward": "portforward"}


@lru_cache(maxsize=VERB_CACHE_SIZE)
def _verb(method: bytes, path: bytes, watch: bool) -> str:
    text = method.decode("latin-1")
    try:
        info = parse_request_info(text, path.decode("latin-1"), "watch=true" if watch else "")
    except RequestInfoError:
        return text.lower()
    return attributes(info).verb


def request_verb(method: bytes, target: bytes) -> str:
    """The policy verb of a request for ``target`` (raw path and query)."""
    path, _, query = target.partition(b"?")
    watch = b"watch" in query and query_bool(parse_query(query.decode("latin-1")).get("watch"))
    return _verb(method, path, watch)


def stream_kind(target: bytes, upgrade: bool) -> str | None:
    """The kind of a long-running request (see the module docstring)."""
    if upgrade:
        path = target.partition(b"?")[0]
        return _UPGRADE_KINDS.get(path.rpartition(b"/")[2], "proxy")
    if not is_long_running(target):
        return None
    return "logs" if target.partition(b"?")[0].endswith(b"/log") else "watch"
