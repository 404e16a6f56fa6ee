"""Host names and addresses a serving certificate covers (sans-IO).

A serving certificate's SANs are DNS names or IP addresses.  :func:`normal_host`
gives the form they compare in (IP addresses canonical, names lower-case
without a trailing dot); :func:`check_host` refuses what cannot be a SAN;
:func:`parse_host_names` is the :class:`karpor.config.validation.Key` parser
of ``servingNames`` (a YAML list, or a comma-separated string as the
``--serving-names`` flag gives it).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from karpor.config.validation import Checker, describe, join

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def url_host(host: str) -> str:
    """``host`` as it stands in a URL's authority (an IPv6 address in brackets)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def normal_host(host: str) -> str:
    """A host as a SAN compares: IP addresses in canonical form, names lower-case."""
    host = host.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


def check_host(value: str) -> str:
    """``value`` in its normal form when it may be a SAN: an IP address or a
    DNS name (labels of letters, digits and ``-``; a leading ``*.`` wildcard
    allowed); :class:`ValueError` saying why not."""
    host = normal_host(value)
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if not host or len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"not a DNS name or IP address: {value[:64]!r}")
    return host


def parse_host_names(
    c: Checker, obj: Mapping[str, Any], key: str, path: str
) -> tuple[str, ...] | None:
    """``servingNames``: a list of DNS names or IP addresses (or one string,
    comma-separated), in normal form, without repeats."""
    value = obj.get(key)
    field = join(path, key)
    if isinstance(value, str):
        items: list[Any] = [v for v in (p.strip() for p in value.split(",")) if v]
    elif isinstance(value, list):
        items = value
    else:
        c.error(field, f"must be a list of DNS names or IP addresses, not {describe(value)}")
        return None
    names: list[str] = []
    for entry in items:
        if not isinstance(entry, str):
            c.error(
                field,
                f"must be a list of DNS names or IP addresses, not one with {describe(entry)}",
            )
            return None
        try:
            names.append(check_host(entry))
        except ValueError as exc:
            c.error(field, str(exc))
            return None
    return tuple(dict.fromkeys(names))
