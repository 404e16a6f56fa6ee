"""The resource types the simulator serves, with the facts discovery publishes.

Names, kinds, short names, categories, verbs and subresources are those a
kube-apiserver (1.30-1.33) lists in ``/api/v1`` and ``/apis/<group>/<version>``
for the same resources, so ``kubectl`` resolves ``po``, ``deploy`` or ``all``
exactly as against a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

#: The verbs of an ordinary stored resource, as discovery lists them (sorted).
ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclass(frozen=True)
class Subresource:
    """A subresource as discovery describes it (``pods/log``, ``deployments/scale``...).

    ``group``/``version`` are set when the subresource answers with a kind of
    another group (``pods/eviction`` is ``policy/v1`` ``Eviction``).
    """

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ResourceType:
    """One resource of one group/version, with its discovery facts."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    #: the subresources with their kinds and verbs, in the order of ``subresources``
    subresource_details: tuple[Subresource, ...] = ()
    #: whether objects are kept in the store (``selfsubjectreviews`` are not)
    stored: bool = True
    #: whether an update of a missing object creates it (kube: events)
    allow_create_on_update: bool = False
    #: the name validation kube applies: ``subdomain``, ``label`` or ``dns1035``
    name_rule: str = "subdomain"

    @property
    def group_version(self) -> str:
        """``v1`` for the core group, ``<group>/<version>`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        """The kind of a list of these objects (``PodList``)."""
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        """Whether the resource has a ``status`` subresource (updates then keep status)."""
        return "status" in self.subresources

    def subresource(self, name: str) -> Subresource | None:
        """The discovery facts of a subresource, or ``None``."""
        for sub in self.subresource_details:
            if sub.name == name:
                return sub
        return None

    def qualified_kind(self) -> str:
        """``Pod`` or ``Deployment.apps``, as kube names kinds in ``Invalid`` messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def qualified_resource(self) -> str:
        """``pods`` or ``deployments.apps``, as kube names resources in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _rt(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    *,
    singular: str | None = None,
    short_names: tuple[str, ...] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
    categories: tuple[str, ...] = (),
    subresources: tuple[Subresource, ...] = (),
    stored: bool = True,
    allow_create_on_update: bool = False,
    name_rule: str = "subdomain",
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        singular=singular if singular is not None else kind.lower(),
        kind=kind,
        namespaced=namespaced,
        short_names=short_names,
        verbs=verbs,
        categories=categories,
        subresources=tuple(s.name for s in subresources),
        subresource_details=subresources,
        stored=stored,
        allow_create_on_update=allow_create_on_update,
        name_rule=name_rule,
    )


_GET_PATCH_UPDATE = ("get", "patch", "update")


class Catalog:
    """The resource types of a simulated cluster, looked up as the API paths name them."""

    def __init__(self, types: list[ResourceType]) -> None:
        self._types = list(types)
        self._by_path = {(t.group, t.version, t.plural): t for t in self._types}

    def __iter__(self) -> Iterator[ResourceType]:
        """Every resource type, in discovery order."""
        return iter(self._types)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        """The type served at ``/api(s)/<group>/<version>/<plural>``, or ``None``."""
        return self._by_path.get((group, version, plural))

    def lookup_kind(self, group: str, version: str, kind: str) -> ResourceType | None:
        """The type of objects of ``apiVersion``/``kind``, or ``None``."""
        for t in self._types:
            if (t.group, t.version, t.kind) == (group, version, kind):
                return t
        return None

    def group_versions(self) -> list[tuple[str, list[str]]]:
        """Each group with its versions, preferred version first, core group first.

        The group order is kube-apiserver's (core, apps, ...,
        authentication.k8s.io, ...).
        """
        groups: dict[str, list[str]] = {}
        for t in self._types:
            versions = groups.setdefault(t.group, [])
            if t.version not in versions:
                versions.append(t.version)
        return list(groups.items())

    def resources(self, group: str, version: str) -> list[ResourceType]:
        """The resource types of one group/version, in discovery order."""
        return [t for t in self._types if (t.group, t.version) == (group, version)]


def _selfsubjectreviews(version: str) -> ResourceType:
    return _rt(
        "authentication.k8s.io",
        version,
        "selfsubjectreviews",
        "SelfSubjectReview",
        False,
        verbs=("create",),
        stored=False,
    )


def _self_review(plural: str, kind: str) -> ResourceType:
    return _rt("authorization.k8s.io", "v1", plural, kind, False, verbs=("create",), stored=False)


#: The simulator's resource types: core/v1, apps/v1, authentication.k8s.io
#: and authorization.k8s.io.
CATALOG = Catalog(
    [
        _rt(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            True,
            short_names=("cm",),
        ),
        _rt(
            "",
            "v1",
            "events",
            "Event",
            True,
            short_names=("ev",),
            allow_create_on_update=True,
        ),
        _rt(
            "",
            "v1",
            "namespaces",
            "Namespace",
            False,
            short_names=("ns",),
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
            subresources=(
                Subresource("finalize", "Namespace", ("update",)),
                Subresource("status", "Namespace", _GET_PATCH_UPDATE),
            ),
            name_rule="label",
        ),
        _rt(
            "",
            "v1",
            "pods",
            "Pod",
            True,
            short_names=("po",),
            categories=("all",),
            subresources=(
                Subresource("attach", "PodAttachOptions", ("create", "get")),
                Subresource("binding", "Binding", ("create",)),
                Subresource("eviction", "Eviction", ("create",), "policy", "v1"),
                Subresource("exec", "PodExecOptions", ("create", "get")),
                Subresource("log", "Pod", ("get",)),
                Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
                Subresource("status", "Pod", _GET_PATCH_UPDATE),
            ),
        ),
        _rt("", "v1", "secrets", "Secret", True),
        _rt(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            True,
            short_names=("sa",),
            subresources=(
                Subresource("token", "TokenRequest", ("create",), "authentication.k8s.io", "v1"),
            ),
        ),
        _rt(
            "",
            "v1",
            "services",
            "Service",
            True,
            short_names=("svc",),
            categories=("all",),
            subresources=(Subresource("status", "Service", _GET_PATCH_UPDATE),),
            name_rule="dns1035",
        ),
        _rt(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            True,
            short_names=("deploy",),
            categories=("all",),
            subresources=(
                Subresource("scale", "Scale", _GET_PATCH_UPDATE, "autoscaling", "v1"),
                Subresource("status", "Deployment", _GET_PATCH_UPDATE),
            ),
        ),
        _rt(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            True,
            short_names=("rs",),
            categories=("all",),
            subresources=(
                Subresource("scale", "Scale", _GET_PATCH_UPDATE, "autoscaling", "v1"),
                Subresource("status", "ReplicaSet", _GET_PATCH_UPDATE),
            ),
        ),
        _rt(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            True,
            short_names=("ev",),
            allow_create_on_update=True,
        ),
        _selfsubjectreviews("v1"),
        _selfsubjectreviews("v1beta1"),
        _selfsubjectreviews("v1alpha1"),
        _self_review("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
        _self_review("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
    ]
)
