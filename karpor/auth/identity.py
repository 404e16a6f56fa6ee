"""Who is calling: the identity an authenticated request carries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

AUTHENTICATED = "system:authenticated"
ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED = "system:unauthenticated"


@dataclass(frozen=True)
class Identity:
    """A caller as Kubernetes sees one: user name, uid, groups and extra."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def with_authenticated(self) -> Identity:
        """The identity with ``system:authenticated`` added, as the apiserver does."""
        if AUTHENTICATED in self.groups or self.user == ANONYMOUS_USER:
            return self
        return Identity(self.user, (*self.groups, AUTHENTICATED), self.uid, self.extra)
