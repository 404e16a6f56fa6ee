"""``meta.k8s.io/v1`` Tables, as kube-apiserver's printers build them.

``kubectl get`` asks for ``as=Table;v=v1;g=meta.k8s.io`` and prints the
columns and cells it gets back; these are the columns and cells of kube's
``pkg/printers/internalversion`` for the simulator's types (generated wide,
as the apiserver does: ``priority: 1`` columns are the ``-o wide`` ones), and
the default ``Name``/``Created At`` table for anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from karpor.kube.humanize import age
from karpor.kube.selectors import format_labels, label_selector_from_object
from karpor.sim.events import from_events_v1
from karpor.sim.resources import ResourceType

Row = dict[str, Any]
Column = dict[str, Any]

_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_CREATED_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_CONTAINERS_DOC = "Names of each container in the template."
_IMAGES_DOC = "Images referenced by each container in the template."
_SERVICE_TYPE_DOC = (
    "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are "
    'ExternalName, ClusterIP, NodePort, and LoadBalancer. "ClusterIP" allocates a '
    "cluster-internal IP address for load-balancing to endpoints. Endpoints are determined "
    "by the selector or if that is not specified, by manual construction of an Endpoints "
    'object or EndpointSlice objects. If clusterIP is "None", no virtual IP is allocated '
    "and the endpoints are published as a set of endpoints rather than a virtual IP. "
    '"NodePort" builds on ClusterIP and allocates a port on every node which routes to '
    'the same endpoints as the clusterIP. "LoadBalancer" builds on NodePort and creates '
    "an external load-balancer (if supported in the current cloud) which routes to the "
    'same endpoints as the clusterIP. "ExternalName" aliases this service to the '
    "specified externalName. Several other fields do not apply to ExternalName services. "
    "More info: "
    "https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types"
)
_CLUSTER_IP_DOC = (
    "clusterIP is the IP address of the service and is usually assigned randomly. If an "
    "address is specified manually, is in-range (as per system configuration), and is not "
    "in use, it will be allocated to the service; otherwise creation of the service will "
    "fail. This field may not be changed through updates unless the type field is also "
    "being changed to ExternalName (which requires this field to be blank) or the type "
    "field is being changed from ExternalName (in which case this field may optionally be "
    'specified, as describe above).\n\nValid values are "None", empty string (""), or '
    'a valid IP address. Setting this to "None" makes a "headless service" (no virtual '
    "IP), which is useful when direct endpoint connections are preferred and proxying is "
    "not required.\n\nOnly applies to types ClusterIP, NodePort, and LoadBalancer. If this "
    "field is specified when creating a Service of type ExternalName, creation will fail. "
    "This field will be wiped when updating a Service to type ExternalName. More info: "
    "https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"
)
_EXTERNAL_IPS_DOC = (
    "externalIPs is a list of IP addresses for which nodes in the cluster will also accept "
    "traffic for this service.\n\nThese IPs are not managed by Kubernetes.\n\nThe user is "
    "responsible for ensuring that traffic arrives at a node with this IP.\n\nA common "
    "example is external load-balancers that are not part of the Kubernetes system."
)
_SA_SECRETS_DOC = (
    "Secrets is a list of the secrets in the same namespace that pods running using this "
    "ServiceAccount are allowed to use. Pods are only limited to this list if this service "
    'account has a "kubernetes.io/enforce-mountable-secrets" annotation set to "true". '
    'The "kubernetes.io/enforce-mountable-secrets" annotation is deprecated since v1.32. '
    "Prefer separate namespaces to isolate access to mounted secrets. This field should "
    "not be used to find auto-generated service account token secrets for use outside of "
    "pods. Instead, tokens can be requested directly using the TokenRequest API, or "
    "service account token secrets can be manually created. More info: "
    "https://kubernetes.io/docs/concepts/configuration/secret"
)
_FIELD_PATH_DOC = (
    "If referring to a piece of an object instead of an entire object, this string should "
    "contain a valid JSON/Go field access statement, such as "
    "desiredState.manifest.containers[2]. For example, if the object reference is to a "
    'container within a pod, this would take on a value like: "spec.containers{name}" '
    '(where "name" refers to the name of the container that triggered the event) or if '
    'no container name is specified "spec.containers[2]" (container with index 2 in this '
    "pod). This syntax is chosen only to have some well-defined way of referencing a part "
    "of an object."
)


def column(
    name: str, description: str, *, type: str = "string", format: str = "", priority: int = 0
) -> Column:
    """A ``TableColumnDefinition``."""
    return {
        "name": name,
        "type": type,
        "format": format,
        "description": description,
        "priority": priority,
    }


def _name_column(priority: int = 0) -> Column:
    return column("Name", _NAME_DOC, format="name", priority=priority)


def _age_column() -> Column:
    return column("Age", _CREATED_DOC)


POD_COLUMNS: list[Column] = [
    _name_column(),
    column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    column("Status", "The aggregate status of the containers in this pod."),
    column(
        "Restarts",
        "The number of times the containers in this pod have been restarted and when the last "
        "container in this pod has restarted.",
    ),
    _age_column(),
    column(
        "IP",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not "
        "yet allocated.",
        priority=1,
    ),
    column(
        "Node",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a "
        "candidate for scheduling by the scheduler defined in schedulerName. Once this field is "
        "set, the kubelet for this node becomes responsible for the lifecycle of this pod. This "
        "field should not be used to express a desire for the pod to be scheduled on a specific "
        "node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
        priority=1,
    ),
    column(
        "Nominated Node",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it "
        "cannot be scheduled right away as preemption victims receive their graceful termination "
        "periods. This field does not guarantee that the pod will be scheduled on this node. "
        "Scheduler may decide to place the pod elsewhere if other nodes become available sooner. "
        "Scheduler may also decide to give the resources on this node to a higher priority pod "
        "that is created after preemption. As a result, this field may be different than "
        "PodSpec.nodeName when the pod is scheduled.",
        priority=1,
    ),
    column(
        "Readiness Gates",
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready "
        "when all its containers are ready AND all conditions specified in the readiness gates "
        'have status equal to "True" More info: '
        "https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
        priority=1,
    ),
]

NAMESPACE_COLUMNS: list[Column] = [
    _name_column(),
    column("Status", "The status of the namespace"),
    _age_column(),
]

CONFIGMAP_COLUMNS: list[Column] = [
    _name_column(),
    column(
        "Data",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, "
        "'-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The "
        "keys stored in Data must not overlap with the keys in the BinaryData field, this is "
        "enforced during validation process.",
    ),
    _age_column(),
]

SECRET_COLUMNS: list[Column] = [
    _name_column(),
    column(
        "Type",
        "Used to facilitate programmatic handling of secret data. More info: "
        "https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    column(
        "Data",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', "
        "'_' or '.'. The serialized form of the secret data is a base64 encoded string, "
        "representing the arbitrary (possibly non-string) data value here. Described in "
        "https://tools.ietf.org/html/rfc4648#section-4",
    ),
    _age_column(),
]

SERVICE_COLUMNS: list[Column] = [
    _name_column(),
    column(
        "Type",
        _SERVICE_TYPE_DOC,
    ),
    column(
        "Cluster-IP",
        _CLUSTER_IP_DOC,
    ),
    column(
        "External-IP",
        _EXTERNAL_IPS_DOC,
    ),
    column(
        "Port(s)",
        "The list of ports that are exposed by this service. More info: "
        "https://kubernetes.io/docs/concepts/services-networking/service/"
        "#virtual-ips-and-service-proxies",
    ),
    _age_column(),
    column(
        "Selector",
        "Route service traffic to pods with label keys and values matching this selector. If "
        "empty or not present, the service is assumed to have an external process managing its "
        "endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, "
        "and LoadBalancer. Ignored if type is ExternalName. More info: "
        "https://kubernetes.io/docs/concepts/services-networking/service/",
        priority=1,
    ),
]

SERVICEACCOUNT_COLUMNS: list[Column] = [
    _name_column(),
    column(
        "Secrets",
        _SA_SECRETS_DOC,
    ),
    _age_column(),
]

DEPLOYMENT_COLUMNS: list[Column] = [
    _name_column(),
    column("Ready", "Number of the pod with ready state"),
    column(
        "Up-to-date",
        "Total number of non-terminated pods targeted by this deployment that have the desired "
        "template spec.",
    ),
    column(
        "Available",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this "
        "deployment.",
    ),
    _age_column(),
    column("Containers", _CONTAINERS_DOC, priority=1),
    column("Images", _IMAGES_DOC, priority=1),
    column(
        "Selector",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be "
        "the ones affected by this deployment.",
        priority=1,
    ),
]

REPLICASET_COLUMNS: list[Column] = [
    _name_column(),
    column(
        "Desired",
        "Number of desired pods. This is a pointer to distinguish between explicit "
        "zero and not specified. Defaults to 1.",
        type="integer",
    ),
    column("Current", "Replicas is the most recently observed number of replicas.", type="integer"),
    column("Ready", "The number of ready replicas for this replica set.", type="integer"),
    _age_column(),
    column("Containers", _CONTAINERS_DOC, priority=1),
    column("Images", _IMAGES_DOC, priority=1),
    column(
        "Selector",
        "Selector is a label query over pods that should match the replica count. Label keys and "
        "values that must match in order to be controlled by this replica set. It must match the "
        "pod template's labels.",
        priority=1,
    ),
]

EVENT_COLUMNS: list[Column] = [
    column("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    column("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
    column(
        "Reason",
        "This should be a short, machine understandable string that gives the reason for the "
        "transition into the object's current status.",
    ),
    column("Object", "The object that this event is about."),
    column(
        "Subobject",
        _FIELD_PATH_DOC,
        priority=1,
    ),
    column(
        "Source",
        "The component reporting this event. Should be a short machine understandable string.",
        priority=1,
    ),
    column("Message", "A human-readable description of the status of this operation."),
    column(
        "First Seen",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
        priority=1,
    ),
    column("Count", "The number of times this event has occurred.", priority=1),
    _name_column(priority=1),
]

DEFAULT_COLUMNS: list[Column] = [
    _name_column(),
    column("Created At", _CREATED_DOC, type="date"),
]

_POD_SUCCEEDED = [
    {
        "type": "Completed",
        "status": "True",
        "reason": "Succeeded",
        "message": "The pod has completed successfully.",
    }
]
_POD_FAILED = [
    {"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}
]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _get(obj: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(step)
    return obj


def _created(obj: Mapping[str, Any], now: float) -> str:
    return age(_meta(obj).get("creationTimestamp"), now)


def _is_restartable_init(container: Any) -> bool:
    return isinstance(container, Mapping) and container.get("restartPolicy") == "Always"


def _has_condition(conditions: Any, kind: str) -> bool:
    return any(
        isinstance(c, Mapping) and c.get("type") == kind and c.get("status") == "True"
        for c in conditions or []
    )


def pod_cells(pod: Mapping[str, Any], now: float) -> tuple[list[Any], list[dict[str, str]]]:
    """The cells and row conditions of a pod (kube's ``printPod``, wide)."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    metadata = _meta(pod)
    containers = spec.get("containers") or []
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or [] if isinstance(c, dict)}
    total = len(containers) + sum(1 for c in init_specs.values() if _is_restartable_init(c))
    ready = 0
    restarts = 0
    restartable_restarts = 0
    last_restart = ""
    last_restartable_restart = ""
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    conditions: list[dict[str, str]] = []
    if phase == "Succeeded":
        conditions = _POD_SUCCEEDED
    elif phase == "Failed":
        conditions = _POD_FAILED

    def finished(container: Mapping[str, Any]) -> str:
        return str(_get(container, "lastState", "terminated", "finishedAt") or "")

    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, container in enumerate(init_statuses):
        restarts += int(container.get("restartCount") or 0)
        last_restart = max(last_restart, finished(container))
        restartable = _is_restartable_init(init_specs.get(container.get("name")))
        if restartable:
            restartable_restarts += int(container.get("restartCount") or 0)
            last_restartable_restart = max(last_restartable_restart, finished(container))
        terminated = _get(container, "state", "terminated")
        waiting = _get(container, "state", "waiting")
        if terminated is not None and int(terminated.get("exitCode") or 0) == 0:
            continue
        if restartable and container.get("started"):
            if container.get("ready"):
                ready += 1
            continue
        if terminated is not None:
            if not terminated.get("reason"):
                if terminated.get("signal"):
                    reason = f"Init:Signal:{terminated['signal']}"
                else:
                    reason = f"Init:ExitCode:{int(terminated.get('exitCode') or 0)}"
            else:
                reason = "Init:" + terminated["reason"]
        elif (
            waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing"
        ):
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _has_condition(status.get("conditions"), "Initialized"):
        restarts = restartable_restarts
        last_restart = last_restartable_restart
        has_running = False
        for container in reversed(status.get("containerStatuses") or []):
            restarts += int(container.get("restartCount") or 0)
            last_restart = max(last_restart, finished(container))
            waiting = _get(container, "state", "waiting")
            terminated = _get(container, "state", "terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                if terminated.get("signal"):
                    reason = f"Signal:{terminated['signal']}"
                else:
                    reason = f"ExitCode:{int(terminated.get('exitCode') or 0)}"
            elif container.get("ready") and _get(container, "state", "running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _has_condition(status.get("conditions"), "Ready") else "NotReady"

    if metadata.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif metadata.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f"{restarts} ({age(last_restart, now)} ago)"

    pod_ips = status.get("podIPs") or []
    pod_ip = (pod_ips[0].get("ip") if pod_ips else "") or "<none>"
    gates = spec.get("readinessGates") or []
    readiness = "<none>"
    if gates:
        true_conditions = 0
        for gate in gates:
            for condition in status.get("conditions") or []:
                if condition.get("type") == gate.get("conditionType"):
                    if condition.get("status") == "True":
                        true_conditions += 1
                    break
        readiness = f"{true_conditions}/{len(gates)}"
    cells = [
        metadata.get("name", ""),
        f"{ready}/{total}",
        reason,
        restarts_text,
        _created(pod, now),
        pod_ip,
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        readiness,
    ]
    return cells, conditions


def _namespace_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    return [_meta(obj).get("name", ""), _get(obj, "status", "phase") or "", _created(obj, now)]


def _configmap_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    count = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [_meta(obj).get("name", ""), count, _created(obj, now)]


def _secret_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    return [
        _meta(obj).get("name", ""),
        obj.get("type") or "",
        len(obj.get("data") or {}),
        _created(obj, now),
    ]


def _serviceaccount_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    return [_meta(obj).get("name", ""), len(obj.get("secrets") or []), _created(obj, now)]


def _load_balancer_ips(status: Mapping[str, Any]) -> str:
    found = set()
    for ingress in _get(status, "loadBalancer", "ingress") or []:
        if ingress.get("ip"):
            found.add(ingress["ip"])
        elif ingress.get("hostname"):
            found.add(ingress["hostname"])
    return ",".join(sorted(found))


def _service_external_ip(svc: Mapping[str, Any]) -> str:
    spec = svc.get("spec") or {}
    kind = spec.get("type") or ""
    external = spec.get("externalIPs") or []
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if kind == "LoadBalancer":
        lb = _load_balancer_ips(svc.get("status") or {})
        if external:
            return ",".join((lb.split(",") if lb else []) + list(external))
        return lb or "<pending>"
    if kind == "ExternalName":
        return str(spec.get("externalName") or "")
    return "<unknown>"


def _service_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    spec = obj.get("spec") or {}
    cluster_ips = spec.get("clusterIPs") or []
    ports = []
    for port in spec.get("ports") or []:
        protocol = port.get("protocol") or ""
        if port.get("nodePort"):
            ports.append(f"{port.get('port', 0)}:{port['nodePort']}/{protocol}")
        else:
            ports.append(f"{port.get('port', 0)}/{protocol}")
    return [
        _meta(obj).get("name", ""),
        spec.get("type") or "",
        cluster_ips[0] if cluster_ips else "<none>",
        _service_external_ip(obj),
        ",".join(ports) or "<none>",
        _created(obj, now),
        format_labels(spec.get("selector")),
    ]


def _container_cells(containers: Sequence[Any]) -> tuple[str, str]:
    names = ",".join(str(c.get("name", "")) for c in containers)
    images = ",".join(str(c.get("image", "")) for c in containers)
    return names, images


def _deployment_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    try:
        selector = str(label_selector_from_object(spec.get("selector")))
    except ValueError:
        selector = "<invalid>"
    names, images = _container_cells(_get(spec, "template", "spec", "containers") or [])
    return [
        _meta(obj).get("name", ""),
        f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        _created(obj, now),
        names,
        images,
        selector,
    ]


def _replica_set_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    try:
        selector = str(label_selector_from_object(spec.get("selector")))
    except ValueError:
        selector = "<invalid>"
    names, images = _container_cells(_get(spec, "template", "spec", "containers") or [])
    return [
        _meta(obj).get("name", ""),
        int(spec.get("replicas") or 0),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
        _created(obj, now),
        names,
        images,
        selector,
    ]


def _event_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    first = (
        age(obj["firstTimestamp"], now)
        if obj.get("firstTimestamp")
        else age(obj.get("eventTime"), now)
    )
    last = age(obj["lastTimestamp"], now) if obj.get("lastTimestamp") else first
    count = int(obj.get("count") or 0)
    series = obj.get("series")
    if isinstance(series, Mapping):
        last = age(series.get("lastObservedTime"), now)
        count = int(series.get("count") or 0)
    elif count == 0:
        count = 1
    involved = obj.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = obj.get("source") or {}
    component = source.get("component") or obj.get("reportingController") or ""
    instance = source.get("host") or obj.get("reportingInstance") or ""
    return [
        last,
        obj.get("type") or "",
        obj.get("reason") or "",
        target,
        involved.get("fieldPath") or "",
        f"{component}, {instance}" if instance else component,
        str(obj.get("message") or "").strip(),
        first,
        count,
        _meta(obj).get("name", ""),
    ]


def _default_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    del now
    return [
        _meta(obj).get("name", ""),
        _meta(obj).get("creationTimestamp") or "0001-01-01T00:00:00Z",
    ]


Printer = Callable[[Mapping[str, Any], float], list[Any]]

#: The columns and the cell printer of each (group, kind).
PRINTERS: dict[tuple[str, str], tuple[list[Column], Printer]] = {
    ("", "Namespace"): (NAMESPACE_COLUMNS, _namespace_cells),
    ("", "ConfigMap"): (CONFIGMAP_COLUMNS, _configmap_cells),
    ("", "Secret"): (SECRET_COLUMNS, _secret_cells),
    ("", "ServiceAccount"): (SERVICEACCOUNT_COLUMNS, _serviceaccount_cells),
    ("", "Service"): (SERVICE_COLUMNS, _service_cells),
    ("", "Event"): (EVENT_COLUMNS, _event_cells),
    ("apps", "Deployment"): (DEPLOYMENT_COLUMNS, _deployment_cells),
    ("apps", "ReplicaSet"): (REPLICASET_COLUMNS, _replica_set_cells),
    ("events.k8s.io", "Event"): (
        EVENT_COLUMNS,
        lambda obj, now: _event_cells(from_events_v1(dict(obj)), now),
    ),
}


def columns_for(rt: ResourceType) -> list[Column]:
    """The column definitions of a resource type's table."""
    if (rt.group, rt.kind) == ("", "Pod"):
        return POD_COLUMNS
    return PRINTERS.get((rt.group, rt.kind), (DEFAULT_COLUMNS, _default_cells))[0]


def _row_object(rt: ResourceType, obj: Mapping[str, Any], include_object: str) -> Any:
    if include_object == "Object":
        typed = {"kind": rt.kind, "apiVersion": rt.group_version}
        typed.update({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        return typed
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(_meta(obj)),
    }


def row_for(rt: ResourceType, obj: Mapping[str, Any], *, include_object: str, now: float) -> Row:
    """One ``TableRow``: cells, row conditions (finished pods) and the object."""
    conditions: list[dict[str, str]] = []
    if (rt.group, rt.kind) == ("", "Pod"):
        cells, conditions = pod_cells(obj, now)
    else:
        printer = PRINTERS.get((rt.group, rt.kind), (DEFAULT_COLUMNS, _default_cells))[1]
        cells = printer(obj, now)
    row: Row = {"cells": cells}
    if conditions:
        row["conditions"] = [dict(c) for c in conditions]
    if include_object != "None":
        row["object"] = _row_object(rt, obj, include_object)
    return row


def to_table(
    rt: ResourceType,
    objects: Sequence[Mapping[str, Any]],
    *,
    resource_version: str,
    continue_token: str = "",
    remaining: int | None = None,
    include_object: str = "Metadata",
    now: float,
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` ``Table`` of ``objects`` as kube-apiserver answers it.

    ``include_object`` is the ``includeObject`` parameter: ``Metadata`` (the
    default) puts a ``PartialObjectMetadata`` in each row, ``Object`` the
    whole object, ``None`` nothing.  ``now`` (epoch seconds) dates the ages.
    """
    metadata: dict[str, Any] = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    if remaining is not None:
        metadata["remainingItemCount"] = remaining
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [dict(c) for c in columns_for(rt)],
        "rows": [row_for(rt, obj, include_object=include_object, now=now) for obj in objects],
    }
