"""Kubernetes protobuf: request bodies decoded into JSON objects, responses
encoded from them, sans-IO.

kubectl's typed clients (``kubectl create namespace``, ``create configmap``,
``create secret``, ``create serviceaccount``, and from kubectl 1.32 on also
``create deployment`` and ``create service``...) send
``Content-Type: application/vnd.kubernetes.protobuf`` (while accepting
``application/vnd.kubernetes.protobuf,application/json``, so JSON answers do):
the magic ``k8s\\0`` followed by a ``runtime.Unknown`` envelope (``typeMeta``,
``raw``) whose ``raw`` is the object in the protobuf encoding of
``k8s.io/api``.

This module decodes the kinds of :data:`KINDS` (Pod, Service, Deployment,
Namespace, ConfigMap, Secret, ServiceAccount, SelfSubjectReview) with their
whole spec and status: every message reachable from them (``PodSpec``,
``Container``, ``Volume`` and its sources, ``ServicePort``, ``LabelSelector``,
``ObjectMeta``, ``PodStatus``...), with the field numbers of ``k8s.io/api``'s
``generated.proto``.  Other kinds raise :class:`~karpor.kube.status.ApiError` 415
with a message naming the kind, so the caller knows to send JSON
(``kubectl create -f`` and ``kubectl apply`` do).

Responses: a client that prefers ``application/vnd.kubernetes.protobuf``
(client-go with ``ContentType`` protobuf, as kube's own components and
kubectl's typed clients of late) gets objects and lists of
:data:`ENCODABLE` kinds in protobuf (:func:`wants_protobuf`,
:func:`encode_object`), with their statuses; Tables, other kinds and watch
streams stay JSON (client-go decodes by the response's ``Content-Type``).

The decoded result is the JSON the same Go object marshals to, as far as requests
go: gogo-protobuf writes every non-pointer scalar, while ``encoding/json``
drops the zero ones marked ``omitempty``; a field whose zero value JSON keeps
(a pointer, like ``spec.replicas: 0``, or a field without ``omitempty``) is
marked ``?`` in the schema and kept.  Embedded structs (``Volume``'s
``VolumeSource``, ``Probe``'s ``ProbeHandler``) are inlined as JSON does.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any, NamedTuple

from karpor.kube import negotiate, protowire
from karpor.kube.status import ApiError

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class Field(NamedTuple):
    """One field of a message: its JSON name, how to decode it, and how JSON shows it.

    ``type`` is a scalar (``string``, ``bytes``, ``int``, ``bool``), a
    well-known apimachinery type (``time``, ``microtime``, ``quantity``,
    ``intorstr``, ``raw``), or a message name of :data:`SCHEMAS`.
    """

    name: str
    type: str
    repeated: bool = False
    #: a ``map<string, type>``
    map: bool = False
    #: a zero scalar is kept (a Go pointer, or a field without ``omitempty``)
    keep_zero: bool = False
    #: an embedded struct whose fields JSON writes into the parent
    inline: bool = False


#: The schema, one message per unindented line, then ``number name type`` per
#: field: ``type[]`` repeated, ``{type}`` a map with string keys, ``type?`` a
#: scalar whose zero value JSON keeps, ``(inline)`` an embedded struct.  The
#: apimachinery messages are written by hand; the rest is ``k8s.io/api``'s
#: ``core/v1`` and ``apps/v1`` ``generated.proto`` (with the pointer and
#: ``omitempty`` facts of their ``types.go``), reachable from :data:`KINDS`.
SCHEMA_TEXT = """\
PodCondition
  1 type string?
  2 status string?
  3 lastProbeTime time?
  4 lastTransitionTime time?
  5 reason string
  6 message string
  7 observedGeneration int
HostIP
  1 ip string?
PodIP
  1 ip string?
ContainerStatus
  1 name string?
  2 state ContainerState
  3 lastState ContainerState
  4 ready bool?
  5 restartCount int?
  6 image string?
  7 imageID string?
  8 containerID string
  9 started bool?
ContainerState
  1 waiting ContainerStateWaiting
  2 running ContainerStateRunning
  3 terminated ContainerStateTerminated
ContainerStateWaiting
  1 reason string
  2 message string
ContainerStateRunning
  1 startedAt time
ContainerStateTerminated
  1 exitCode int?
  2 signal int
  3 reason string
  4 message string
  5 startedAt time
  6 finishedAt time
  7 containerID string
DeploymentCondition
  1 type string?
  2 status string?
  4 reason string
  5 message string
  6 lastUpdateTime time
  7 lastTransitionTime time
Event
  1 metadata ObjectMeta
  2 involvedObject ObjectReference
  3 reason string
  4 message string
  5 source EventSource
  6 firstTimestamp time?
  7 lastTimestamp time?
  8 count int
  9 type string
  10 eventTime microtime?
  11 series EventSeries
  12 action string
  13 related ObjectReference
  14 reportingComponent string?
  15 reportingInstance string?
EventSource
  1 component string
  2 host string
EventSeries
  1 count int
  2 lastObservedTime microtime
ListMeta
  1 selfLink string
  2 resourceVersion string
  3 continue string
  4 remainingItemCount int?
PodList
  1 metadata ListMeta
  2 items Pod[]
ServiceList
  1 metadata ListMeta
  2 items Service[]
DeploymentList
  1 metadata ListMeta
  2 items Deployment[]
NamespaceList
  1 metadata ListMeta
  2 items Namespace[]
ConfigMapList
  1 metadata ListMeta
  2 items ConfigMap[]
SecretList
  1 metadata ListMeta
  2 items Secret[]
ServiceAccountList
  1 metadata ListMeta
  2 items ServiceAccount[]
EventList
  1 metadata ListMeta
  2 items Event[]
ObjectMeta
  1 name string
  2 generateName string
  3 namespace string
  4 selfLink string
  5 uid string
  6 resourceVersion string
  7 generation int
  8 creationTimestamp time?
  9 deletionTimestamp time
  10 deletionGracePeriodSeconds int?
  11 labels {string}
  12 annotations {string}
  13 ownerReferences OwnerReference[]
  14 finalizers string[]
  17 managedFields ManagedFieldsEntry[]
OwnerReference
  1 kind string
  3 name string
  4 uid string
  5 apiVersion string
  6 controller bool?
  7 blockOwnerDeletion bool?
ManagedFieldsEntry
  1 manager string
  2 operation string
  3 apiVersion string
  4 time time
  6 fieldsType string
  7 fieldsV1 raw
  8 subresource string
LabelSelector
  1 matchLabels {string}
  2 matchExpressions LabelSelectorRequirement[]
LabelSelectorRequirement
  1 key string
  2 operator string
  3 values string[]
Condition
  1 type string?
  2 status string?
  3 observedGeneration int
  4 lastTransitionTime time?
  5 reason string?
  6 message string?
SelfSubjectReview
  1 metadata ObjectMeta
Pod
  1 metadata ObjectMeta
  2 spec PodSpec
  3 status PodStatus
Service
  1 metadata ObjectMeta
  2 spec ServiceSpec
  3 status ServiceStatus
Deployment
  1 metadata ObjectMeta
  2 spec DeploymentSpec
  3 status DeploymentStatus
Namespace
  1 metadata ObjectMeta
  2 spec NamespaceSpec
  3 status NamespaceStatus
ConfigMap
  1 metadata ObjectMeta
  2 data {string}
  3 binaryData {bytes}
  4 immutable bool?
Secret
  1 metadata ObjectMeta
  2 data {bytes}
  3 type string
  4 stringData {string}
  5 immutable bool?
ServiceAccount
  1 metadata ObjectMeta
  2 secrets ObjectReference[]
  3 imagePullSecrets LocalObjectReference[]
  4 automountServiceAccountToken bool?
PodSpec
  1 volumes Volume[]
  2 containers Container[]
  3 restartPolicy string
  4 terminationGracePeriodSeconds int?
  5 activeDeadlineSeconds int?
  6 dnsPolicy string
  7 nodeSelector {string}
  8 serviceAccountName string
  9 serviceAccount string
  10 nodeName string
  11 hostNetwork bool
  12 hostPID bool
  13 hostIPC bool
  14 securityContext PodSecurityContext
  15 imagePullSecrets LocalObjectReference[]
  16 hostname string
  17 subdomain string
  18 affinity Affinity
  19 schedulerName string
  20 initContainers Container[]
  21 automountServiceAccountToken bool?
  22 tolerations Toleration[]
  23 hostAliases HostAlias[]
  24 priorityClassName string
  25 priority int?
  26 dnsConfig PodDNSConfig
  27 shareProcessNamespace bool?
  28 readinessGates PodReadinessGate[]
  29 runtimeClassName string?
  30 enableServiceLinks bool?
  31 preemptionPolicy string?
  32 overhead {quantity}
  33 topologySpreadConstraints TopologySpreadConstraint[]
  34 ephemeralContainers EphemeralContainer[]
  35 setHostnameAsFQDN bool?
  36 os PodOS
  37 hostUsers bool?
  38 schedulingGates PodSchedulingGate[]
  39 resourceClaims PodResourceClaim[]
  40 resources ResourceRequirements
  41 hostnameOverride string?
  43 schedulingGroup PodSchedulingGroup
  44 evictionResponders EvictionResponder[]
PodStatus
  1 phase string
  2 conditions PodCondition[]
  3 message string
  4 reason string
  5 hostIP string
  6 podIP string
  7 startTime time
  8 containerStatuses ContainerStatus[]
  9 qosClass string
  10 initContainerStatuses ContainerStatus[]
  11 nominatedNodeName string
  12 podIPs PodIP[]
  13 ephemeralContainerStatuses ContainerStatus[]
  14 resize string
  16 hostIPs HostIP[]
  17 observedGeneration int
ServiceSpec
  1 ports ServicePort[]
  2 selector {string}
  3 clusterIP string
  4 type string
  5 externalIPs string[]
  7 sessionAffinity string
  8 loadBalancerIP string
  9 loadBalancerSourceRanges string[]
  10 externalName string
  11 externalTrafficPolicy string
  12 healthCheckNodePort int
  13 publishNotReadyAddresses bool
  14 sessionAffinityConfig SessionAffinityConfig
  17 ipFamilyPolicy string?
  18 clusterIPs string[]
  19 ipFamilies string[]
  20 allocateLoadBalancerNodePorts bool?
  21 loadBalancerClass string?
  22 internalTrafficPolicy string?
  23 trafficDistribution string?
ServiceStatus
  1 loadBalancer LoadBalancerStatus
  2 conditions Condition[]
DeploymentSpec
  1 replicas int?
  2 selector LabelSelector
  3 template PodTemplateSpec
  4 strategy DeploymentStrategy
  5 minReadySeconds int
  6 revisionHistoryLimit int?
  7 paused bool
  9 progressDeadlineSeconds int?
DeploymentStatus
  1 observedGeneration int
  2 replicas int
  3 updatedReplicas int
  4 availableReplicas int
  5 unavailableReplicas int
  6 conditions DeploymentCondition[]
  7 readyReplicas int
  8 collisionCount int?
  9 terminatingReplicas int?
NamespaceSpec
  1 finalizers string[]
NamespaceStatus
  1 phase string
  2 conditions NamespaceCondition[]
ObjectReference
  1 kind string
  2 namespace string
  3 name string
  4 uid string
  5 apiVersion string
  6 resourceVersion string
  7 fieldPath string
LocalObjectReference
  1 name string
Volume
  1 name string?
  2 (inline) VolumeSource
Container
  1 name string?
  2 image string
  3 command string[]
  4 args string[]
  5 workingDir string
  6 ports ContainerPort[]
  7 env EnvVar[]
  8 resources ResourceRequirements
  9 volumeMounts VolumeMount[]
  10 livenessProbe Probe
  11 readinessProbe Probe
  12 lifecycle Lifecycle
  13 terminationMessagePath string
  14 imagePullPolicy string
  15 securityContext SecurityContext
  16 stdin bool
  17 stdinOnce bool
  18 tty bool
  19 envFrom EnvFromSource[]
  20 terminationMessagePolicy string
  21 volumeDevices VolumeDevice[]
  22 startupProbe Probe
  23 resizePolicy ContainerResizePolicy[]
  24 restartPolicy string?
  25 restartPolicyRules ContainerRestartRule[]
EphemeralContainer
  1 (inline) EphemeralContainerCommon
  2 targetContainerName string
PodSecurityContext
  1 seLinuxOptions SELinuxOptions
  2 runAsUser int?
  3 runAsNonRoot bool?
  4 supplementalGroups int[]
  5 fsGroup int?
  6 runAsGroup int?
  7 sysctls Sysctl[]
  8 windowsOptions WindowsSecurityContextOptions
  9 fsGroupChangePolicy string?
  10 seccompProfile SeccompProfile
  11 appArmorProfile AppArmorProfile
  12 supplementalGroupsPolicy string?
  13 seLinuxChangePolicy string?
Affinity
  1 nodeAffinity NodeAffinity
  2 podAffinity PodAffinity
  3 podAntiAffinity PodAntiAffinity
Toleration
  1 key string
  2 operator string
  3 value string
  4 effect string
  5 tolerationSeconds int?
HostAlias
  1 ip string?
  2 hostnames string[]
PodDNSConfig
  1 nameservers string[]
  2 searches string[]
  3 options PodDNSConfigOption[]
PodReadinessGate
  1 conditionType string?
TopologySpreadConstraint
  1 maxSkew int?
  2 topologyKey string?
  3 whenUnsatisfiable string?
  4 labelSelector LabelSelector
  5 minDomains int?
  6 nodeAffinityPolicy string?
  7 nodeTaintsPolicy string?
  8 matchLabelKeys string[]
PodOS
  1 name string?
PodSchedulingGate
  1 name string?
PodResourceClaim
  1 name string?
  3 resourceClaimName string?
  4 resourceClaimTemplateName string?
ResourceRequirements
  1 limits {quantity}
  2 requests {quantity}
  3 claims ResourceClaim[]
PodSchedulingGroup
  1 podGroupName string?
EvictionResponder
  1 name string?
  2 priority int?
ServicePort
  1 name string
  2 protocol string
  3 port int?
  4 targetPort intorstr
  5 nodePort int
  6 appProtocol string?
SessionAffinityConfig
  1 clientIP ClientIPConfig
LoadBalancerStatus
  1 ingress LoadBalancerIngress[]
PodTemplateSpec
  1 metadata ObjectMeta
  2 spec PodSpec
DeploymentStrategy
  1 type string
  2 rollingUpdate RollingUpdateDeployment
NamespaceCondition
  1 type string?
  2 status string?
  4 lastTransitionTime time
  5 reason string
  6 message string
VolumeSource
  1 hostPath HostPathVolumeSource
  2 emptyDir EmptyDirVolumeSource
  3 gcePersistentDisk GCEPersistentDiskVolumeSource
  4 awsElasticBlockStore AWSElasticBlockStoreVolumeSource
  5 gitRepo GitRepoVolumeSource
  6 secret SecretVolumeSource
  7 nfs NFSVolumeSource
  8 iscsi ISCSIVolumeSource
  9 glusterfs GlusterfsVolumeSource
  10 persistentVolumeClaim PersistentVolumeClaimVolumeSource
  11 rbd RBDVolumeSource
  12 flexVolume FlexVolumeSource
  13 cinder CinderVolumeSource
  14 cephfs CephFSVolumeSource
  15 flocker FlockerVolumeSource
  16 downwardAPI DownwardAPIVolumeSource
  17 fc FCVolumeSource
  18 azureFile AzureFileVolumeSource
  19 configMap ConfigMapVolumeSource
  20 vsphereVolume VsphereVirtualDiskVolumeSource
  21 quobyte QuobyteVolumeSource
  22 azureDisk AzureDiskVolumeSource
  23 photonPersistentDisk PhotonPersistentDiskVolumeSource
  24 portworxVolume PortworxVolumeSource
  25 scaleIO ScaleIOVolumeSource
  26 projected ProjectedVolumeSource
  27 storageos StorageOSVolumeSource
  28 csi CSIVolumeSource
  29 ephemeral EphemeralVolumeSource
  30 image ImageVolumeSource
ContainerPort
  1 name string
  2 hostPort int
  3 containerPort int?
  4 protocol string
  5 hostIP string
EnvFromSource
  1 prefix string
  2 configMapRef ConfigMapEnvSource
  3 secretRef SecretEnvSource
EnvVar
  1 name string?
  2 value string
  3 valueFrom EnvVarSource
ContainerResizePolicy
  1 resourceName string?
  2 restartPolicy string?
ContainerRestartRule
  1 action string
  2 exitCodes ContainerRestartRuleOnExitCodes
VolumeMount
  1 name string?
  2 readOnly bool
  3 mountPath string?
  4 subPath string
  5 mountPropagation string?
  6 subPathExpr string
  7 recursiveReadOnly string?
  8 bindMountOptions string[]
VolumeDevice
  1 name string?
  2 devicePath string?
Probe
  1 (inline) ProbeHandler
  2 initialDelaySeconds int
  3 timeoutSeconds int
  4 periodSeconds int
  5 successThreshold int
  6 failureThreshold int
  7 terminationGracePeriodSeconds int?
Lifecycle
  1 postStart LifecycleHandler
  2 preStop LifecycleHandler
  3 stopSignal string?
SecurityContext
  1 capabilities Capabilities
  2 privileged bool?
  3 seLinuxOptions SELinuxOptions
  4 runAsUser int?
  5 runAsNonRoot bool?
  6 readOnlyRootFilesystem bool?
  7 allowPrivilegeEscalation bool?
  8 runAsGroup int?
  9 procMount string?
  10 windowsOptions WindowsSecurityContextOptions
  11 seccompProfile SeccompProfile
  12 appArmorProfile AppArmorProfile
EphemeralContainerCommon
  1 name string?
  2 image string
  3 command string[]
  4 args string[]
  5 workingDir string
  6 ports ContainerPort[]
  7 env EnvVar[]
  8 resources ResourceRequirements
  9 volumeMounts VolumeMount[]
  10 livenessProbe Probe
  11 readinessProbe Probe
  12 lifecycle Lifecycle
  13 terminationMessagePath string
  14 imagePullPolicy string
  15 securityContext SecurityContext
  16 stdin bool
  17 stdinOnce bool
  18 tty bool
  19 envFrom EnvFromSource[]
  20 terminationMessagePolicy string
  21 volumeDevices VolumeDevice[]
  22 startupProbe Probe
  23 resizePolicy ContainerResizePolicy[]
  24 restartPolicy string?
  25 restartPolicyRules ContainerRestartRule[]
SELinuxOptions
  1 user string
  2 role string
  3 type string
  4 level string
WindowsSecurityContextOptions
  1 gmsaCredentialSpecName string?
  2 gmsaCredentialSpec string?
  3 runAsUserName string?
  4 hostProcess bool?
Sysctl
  1 name string?
  2 value string?
SeccompProfile
  1 type string?
  2 localhostProfile string?
AppArmorProfile
  1 type string?
  2 localhostProfile string?
NodeAffinity
  1 requiredDuringSchedulingIgnoredDuringExecution NodeSelector
  2 preferredDuringSchedulingIgnoredDuringExecution PreferredSchedulingTerm[]
PodAffinity
  1 requiredDuringSchedulingIgnoredDuringExecution PodAffinityTerm[]
  2 preferredDuringSchedulingIgnoredDuringExecution WeightedPodAffinityTerm[]
PodAntiAffinity
  1 requiredDuringSchedulingIgnoredDuringExecution PodAffinityTerm[]
  2 preferredDuringSchedulingIgnoredDuringExecution WeightedPodAffinityTerm[]
PodDNSConfigOption
  1 name string
  2 value string?
ResourceClaim
  1 name string?
  2 request string
ClientIPConfig
  1 timeoutSeconds int?
LoadBalancerIngress
  1 ip string
  2 hostname string
  3 ipMode string?
  4 ports PortStatus[]
RollingUpdateDeployment
  1 maxUnavailable intorstr
  2 maxSurge intorstr
HostPathVolumeSource
  1 path string?
  2 type string?
EmptyDirVolumeSource
  1 medium string
  2 sizeLimit quantity
  3 mode int?
GCEPersistentDiskVolumeSource
  1 pdName string?
  2 fsType string
  3 partition int
  4 readOnly bool
AWSElasticBlockStoreVolumeSource
  1 volumeID string?
  2 fsType string
  3 partition int
  4 readOnly bool
GitRepoVolumeSource
  1 repository string?
  2 revision string
  3 directory string
SecretVolumeSource
  1 secretName string
  2 items KeyToPath[]
  3 defaultMode int?
  4 optional bool?
  5 defaultUser int?
NFSVolumeSource
  1 server string?
  2 path string?
  3 readOnly bool
ISCSIVolumeSource
  1 targetPortal string?
  2 iqn string?
  3 lun int?
  4 iscsiInterface string
  5 fsType string
  6 readOnly bool
  7 portals string[]
  8 chapAuthDiscovery bool
  10 secretRef LocalObjectReference
  11 chapAuthSession bool
  12 initiatorName string?
GlusterfsVolumeSource
  1 endpoints string?
  2 path string?
  3 readOnly bool
PersistentVolumeClaimVolumeSource
  1 claimName string?
  2 readOnly bool
RBDVolumeSource
  1 monitors string[]
  2 image string?
  3 fsType string
  4 pool string
  5 user string
  6 keyring string
  7 secretRef LocalObjectReference
  8 readOnly bool
FlexVolumeSource
  1 driver string?
  2 fsType string
  3 secretRef LocalObjectReference
  4 readOnly bool
  5 options {string}
CinderVolumeSource
  1 volumeID string?
  2 fsType string
  3 readOnly bool
  4 secretRef LocalObjectReference
CephFSVolumeSource
  1 monitors string[]
  2 path string
  3 user string
  4 secretFile string
  5 secretRef LocalObjectReference
  6 readOnly bool
FlockerVolumeSource
  1 datasetName string
  2 datasetUUID string
DownwardAPIVolumeSource
  1 items DownwardAPIVolumeFile[]
  2 defaultMode int?
  3 defaultUser int?
FCVolumeSource
  1 targetWWNs string[]
  2 lun int?
  3 fsType string
  4 readOnly bool
  5 wwids string[]
AzureFileVolumeSource
  1 secretName string?
  2 shareName string?
  3 readOnly bool
ConfigMapVolumeSource
  1 (inline) LocalObjectReference
  2 items KeyToPath[]
  3 defaultMode int?
  4 optional bool?
  5 defaultUser int?
VsphereVirtualDiskVolumeSource
  1 volumePath string?
  2 fsType string
  3 storagePolicyName string
  4 storagePolicyID string
QuobyteVolumeSource
  1 registry string?
  2 volume string?
  3 readOnly bool
  4 user string
  5 group string
  6 tenant string
AzureDiskVolumeSource
  1 diskName string?
  2 diskURI string?
  3 cachingMode string?
  4 fsType string?
  5 readOnly bool?
  6 kind string?
PhotonPersistentDiskVolumeSource
  1 pdID string?
  2 fsType string
ProjectedVolumeSource
  1 sources VolumeProjection[]
  2 defaultMode int?
  3 defaultUser int?
PortworxVolumeSource
  1 volumeID string?
  2 fsType string
  3 readOnly bool
ScaleIOVolumeSource
  1 gateway string?
  2 system string?
  3 secretRef LocalObjectReference
  4 sslEnabled bool
  5 protectionDomain string
  6 storagePool string
  7 storageMode string
  8 volumeName string
  9 fsType string
  10 readOnly bool
StorageOSVolumeSource
  1 volumeName string
  2 volumeNamespace string
  3 fsType string
  4 readOnly bool
  5 secretRef LocalObjectReference
CSIVolumeSource
  1 driver string?
  2 readOnly bool?
  3 fsType string?
  4 volumeAttributes {string}
  5 nodePublishSecretRef LocalObjectReference
EphemeralVolumeSource
  1 volumeClaimTemplate PersistentVolumeClaimTemplate
ImageVolumeSource
  1 reference string
  2 pullPolicy string
ConfigMapEnvSource
  1 (inline) LocalObjectReference
  2 optional bool?
SecretEnvSource
  1 (inline) LocalObjectReference
  2 optional bool?
EnvVarSource
  1 fieldRef ObjectFieldSelector
  2 resourceFieldRef ResourceFieldSelector
  3 configMapKeyRef ConfigMapKeySelector
  4 secretKeyRef SecretKeySelector
  5 fileKeyRef FileKeySelector
ContainerRestartRuleOnExitCodes
  1 operator string
  2 values int[]
ProbeHandler
  1 exec ExecAction
  2 httpGet HTTPGetAction
  3 tcpSocket TCPSocketAction
  4 grpc GRPCAction
LifecycleHandler
  1 exec ExecAction
  2 httpGet HTTPGetAction
  3 tcpSocket TCPSocketAction
  4 sleep SleepAction
Capabilities
  1 add string[]
  2 drop string[]
NodeSelector
  1 nodeSelectorTerms NodeSelectorTerm[]
PreferredSchedulingTerm
  1 weight int?
  2 preference NodeSelectorTerm
PodAffinityTerm
  1 labelSelector LabelSelector
  2 namespaces string[]
  3 topologyKey string?
  4 namespaceSelector LabelSelector
  5 matchLabelKeys string[]
  6 mismatchLabelKeys string[]
WeightedPodAffinityTerm
  1 weight int?
  2 podAffinityTerm PodAffinityTerm
PortStatus
  1 port int?
  2 protocol string?
  3 error string?
KeyToPath
  1 key string?
  2 path string?
  3 mode int?
  4 user int?
DownwardAPIVolumeFile
  1 path string?
  2 fieldRef ObjectFieldSelector
  3 resourceFieldRef ResourceFieldSelector
  4 mode int?
  5 user int?
VolumeProjection
  1 secret SecretProjection
  2 downwardAPI DownwardAPIProjection
  3 configMap ConfigMapProjection
  4 serviceAccountToken ServiceAccountTokenProjection
  5 clusterTrustBundle ClusterTrustBundleProjection
  6 podCertificate PodCertificateProjection
PersistentVolumeClaimTemplate
  1 metadata ObjectMeta
  2 spec PersistentVolumeClaimSpec
ObjectFieldSelector
  1 apiVersion string
  2 fieldPath string?
ResourceFieldSelector
  1 containerName string
  2 resource string?
  3 divisor quantity
ConfigMapKeySelector
  1 (inline) LocalObjectReference
  2 key string?
  3 optional bool?
SecretKeySelector
  1 (inline) LocalObjectReference
  2 key string?
  3 optional bool?
FileKeySelector
  1 volumeName string?
  2 path string?
  3 key string?
  4 optional bool?
ExecAction
  1 command string[]
HTTPGetAction
  1 path string
  2 port intorstr
  3 host string
  4 scheme string
  5 httpHeaders HTTPHeader[]
  6 protocol string?
TCPSocketAction
  1 port intorstr
  2 host string
GRPCAction
  1 port int?
  2 service string?
  3 mode string?
SleepAction
  1 seconds int?
NodeSelectorTerm
  1 matchExpressions NodeSelectorRequirement[]
  2 matchFields NodeSelectorRequirement[]
SecretProjection
  1 (inline) LocalObjectReference
  2 items KeyToPath[]
  4 optional bool?
DownwardAPIProjection
  1 items DownwardAPIVolumeFile[]
ConfigMapProjection
  1 (inline) LocalObjectReference
  2 items KeyToPath[]
  4 optional bool?
ServiceAccountTokenProjection
  1 audience string
  2 expirationSeconds int?
  3 path string?
  4 user int?
ClusterTrustBundleProjection
  1 name string?
  2 signerName string?
  3 labelSelector LabelSelector
  4 path string?
  5 optional bool?
  6 user int?
PodCertificateProjection
  1 signerName string
  2 keyType string
  3 maxExpirationSeconds int?
  4 credentialBundlePath string
  5 keyPath string
  6 certificateChainPath string
  7 userAnnotations {string}
  8 user int?
PersistentVolumeClaimSpec
  1 accessModes string[]
  2 resources VolumeResourceRequirements
  3 volumeName string
  4 selector LabelSelector
  5 storageClassName string?
  6 volumeMode string?
  7 dataSource TypedLocalObjectReference
  8 dataSourceRef TypedObjectReference
  9 volumeAttributesClassName string?
HTTPHeader
  1 name string?
  2 value string?
NodeSelectorRequirement
  1 key string?
  2 operator string?
  3 values string[]
VolumeResourceRequirements
  1 limits {quantity}
  2 requests {quantity}
TypedLocalObjectReference
  1 apiGroup string?
  2 kind string?
  3 name string?
TypedObjectReference
  1 apiGroup string?
  2 kind string?
  3 name string?
  4 namespace string?
"""

#: the kinds :func:`decode_object` accepts
KINDS = frozenset(
    {
        "Pod",
        "Service",
        "Deployment",
        "Namespace",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "SelfSubjectReview",
    }
)

_SCALARS = frozenset({"string", "bytes", "int", "bool"})
_VARINTS = frozenset({"int", "bool"})


def parse_schema(text: str) -> dict[str, dict[int, Field]]:
    """Parse :data:`SCHEMA_TEXT` (or text in its format) into :data:`SCHEMAS`."""
    schemas: dict[str, dict[int, Field]] = {}
    current: dict[int, Field] | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not line.startswith(" "):
            current = schemas.setdefault(line.strip(), {})
            continue
        parts = line.split()
        if current is None or len(parts) != 3:
            raise ValueError(f"schema line {lineno}: {line!r}")
        number, name, kind = int(parts[0]), parts[1], parts[2]
        if name == "(inline)":
            current[number] = Field("", kind, inline=True)
        elif kind.startswith("{") and kind.endswith("}"):
            current[number] = Field(name, kind[1:-1], map=True)
        elif kind.endswith("[]"):
            current[number] = Field(name, kind[:-2], repeated=True)
        elif kind.endswith("?"):
            current[number] = Field(name, kind[:-1], keep_zero=True)
        else:
            current[number] = Field(name, kind)
    return schemas


#: the messages this module can decode, by name
SCHEMAS: dict[str, dict[int, Field]] = parse_schema(SCHEMA_TEXT)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(data: bytes, *, micro: bool = False) -> str | None:
    seconds = nanos = 0
    for number, _, value in protowire.fields(data):
        if isinstance(value, int):
            if number == 1:
                seconds = _signed(value)
            elif number == 2:
                nanos = _signed(value)
    if seconds == 0 and nanos == 0:  # the zero time.Time: JSON null
        return None
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if micro:
        text += f".{nanos // 1000:06d}"
    return text + "Z"


def _well_known(kind: str, data: bytes) -> Any:
    """``quantity``, ``intorstr`` and ``raw`` (length-delimited messages) as JSON values."""
    values: dict[int, int | bytes] = {number: value for number, _, value in protowire.fields(data)}
    if kind == "quantity":
        text = values.get(1, b"")
        return text.decode() if isinstance(text, bytes) else ""
    if kind == "intorstr":
        if values.get(1) == 1:
            text = values.get(3, b"")
            return text.decode() if isinstance(text, bytes) else ""
        number = values.get(2, 0)
        return _signed(number) if isinstance(number, int) else 0
    raw = values.get(1, b"")
    if not isinstance(raw, bytes) or not raw:
        return None
    return json.loads(raw)


def _value(kind: str, raw: int | bytes, where: str) -> Any:
    """One non-map value of type ``kind``."""
    if kind in _VARINTS:
        if not isinstance(raw, int):
            raise ValueError(f"{where}: not a varint")
        return bool(raw) if kind == "bool" else _signed(raw)
    if not isinstance(raw, bytes):
        raise ValueError(f"{where}: not length-delimited")
    if kind == "string":
        return raw.decode()
    if kind == "bytes":
        return base64.b64encode(raw).decode()
    if kind in ("time", "microtime"):
        return _time(raw, micro=kind == "microtime")
    if kind in ("quantity", "intorstr", "raw"):
        return _well_known(kind, raw)
    return decode_message(raw, kind)


def _map_entry(data: bytes, kind: str, where: str) -> tuple[str, Any]:
    key: str = ""
    value: Any = None
    for number, _, raw in protowire.fields(data):
        if number == 1 and isinstance(raw, bytes):
            key = raw.decode()
        elif number == 2:
            value = _value(kind, raw, where)
    if value is None:
        value = _value(kind, b"", where) if kind not in _VARINTS else _value(kind, 0, where)
    return key, value


def _packed(data: bytes) -> list[int]:
    out = []
    at = 0
    while at < len(data):
        value, at = protowire.read_varint(data, at)
        out.append(value)
    return out


def decode_message(data: bytes, message: str) -> dict[str, Any]:
    """Decode ``data`` as the message ``message`` of :data:`SCHEMAS` into JSON form."""
    schema = SCHEMAS[message]
    out: dict[str, Any] = {}
    for number, _, raw in protowire.fields(data):
        spec = schema.get(number)
        if spec is None:
            continue
        where = f"{message}.{spec.name or spec.type}"
        if spec.inline:
            if not isinstance(raw, bytes):
                raise ValueError(f"{where}: not length-delimited")
            out.update(decode_message(raw, spec.type))
            continue
        if spec.map:
            if not isinstance(raw, bytes):
                raise ValueError(f"{where}: not a map entry")
            key, entry = _map_entry(raw, spec.type, where)
            out.setdefault(spec.name, {})[key] = entry
            continue
        if spec.repeated:
            items = out.setdefault(spec.name, [])
            if spec.type in _VARINTS and isinstance(raw, bytes):  # packed
                items.extend(_value(spec.type, v, where) for v in _packed(raw))
            else:
                items.append(_value(spec.type, raw, where))
            continue
        value = _value(spec.type, raw, where)
        if not spec.keep_zero and (
            value is None or (spec.type in _SCALARS and value in ("", 0, False))
        ):
            # gogo-protobuf writes every non-pointer scalar (and zero times);
            # JSON omits the empty ones marked omitempty
            out.pop(spec.name, None)
            continue
        out[spec.name] = value
    return out


def split_envelope(body: bytes) -> tuple[str, str, bytes]:
    """The apiVersion, kind and raw message of a ``k8s\\0``-prefixed
    ``runtime.Unknown``; ``ValueError`` when malformed."""
    api_version = kind = ""
    raw = b""
    for number, _, value in protowire.fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            for sub, _, text in protowire.fields(value):
                if isinstance(text, bytes):
                    if sub == 1:
                        api_version = text.decode()
                    elif sub == 2:
                        kind = text.decode()
        elif number == 2 and isinstance(value, bytes):
            raw = value
    return api_version, kind, raw


def decode_object(body: bytes) -> dict[str, Any]:
    """A ``k8s\\0``-prefixed protobuf object as the JSON object it stands for.

    Raises :class:`ApiError` 400 for a malformed body and 415 for a kind not
    in :data:`KINDS`.
    """
    if not body.startswith(MAGIC):
        raise ApiError(400, "provided object is not a Kubernetes protobuf message")
    try:
        api_version, kind, raw = split_envelope(body)
        if kind not in KINDS:
            raise ApiError(
                415,
                f"the karpor simulator cannot decode {kind or 'this object'} from protobuf: "
                "send it as application/json",
            )
        obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
        obj.update(decode_message(raw, kind))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"unable to decode protobuf body: {exc}") from None
    return obj


# -- encoding responses ---------------------------------------------------------------

#: the kinds (and their lists) :func:`encode_object` writes, with their apiVersion
ENCODABLE: dict[str, str] = {
    "Pod": "v1",
    "Service": "v1",
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "ServiceAccount": "v1",
    "Event": "v1",
    "Deployment": "apps/v1",
}


def _timestamp(text: str) -> bytes:
    stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    seconds = int(stamp.timestamp())
    nanos = stamp.microsecond * 1000
    out = protowire.key(1, 0) + protowire.varint(seconds) if seconds else b""
    return out + (protowire.key(2, 0) + protowire.varint(nanos) if nanos else b"")


def _encode_value(number: int, kind: str, value: Any) -> bytes:
    """One field ``number`` of type ``kind`` holding the JSON ``value``."""
    if kind in _VARINTS:
        return protowire.key(number, 0) + protowire.varint(int(value))
    if kind == "string":
        return protowire.delimited(number, str(value).encode())
    if kind == "bytes":
        return protowire.delimited(number, base64.b64decode(str(value)))
    if kind in ("time", "microtime"):
        return protowire.delimited(number, _timestamp(str(value)))
    if kind == "quantity":
        return protowire.delimited(number, protowire.delimited(1, str(value).encode()))
    if kind == "intorstr":
        if isinstance(value, str):
            body = (
                protowire.key(1, 0) + protowire.varint(1) + protowire.delimited(3, value.encode())
            )
        else:
            body = (
                protowire.key(1, 0)
                + protowire.varint(0)
                + protowire.key(2, 0)
                + protowire.varint(int(value))
            )
        return protowire.delimited(number, body)
    if kind == "raw":
        return protowire.delimited(number, protowire.delimited(1, json.dumps(value).encode()))
    return protowire.delimited(
        number, encode_message(value if isinstance(value, dict) else {}, kind)
    )


def encode_message(obj: dict[str, Any], message: str) -> bytes:
    """The JSON form ``obj`` as the protobuf message ``message`` of :data:`SCHEMAS`
    (the inverse of :func:`decode_message`; members it does not know are dropped)."""
    out = bytearray()
    schema = SCHEMAS[message]
    for number in sorted(schema):
        spec = schema[number]
        if spec.inline:
            out += protowire.delimited(number, encode_message(obj, spec.type))
            continue
        value = obj.get(spec.name)
        if value is None:
            if spec.keep_zero and spec.type in ("time", "microtime") and spec.name in obj:
                out += protowire.delimited(number, b"")  # gogo writes the zero time: JSON null
            continue
        if spec.map:
            for key, entry in value.items():
                body = _encode_value(1, "string", key)
                if entry is not None:
                    body += _encode_value(2, spec.type, entry)
                out += protowire.delimited(number, body)
        elif spec.repeated:
            for item in value:
                out += _encode_value(number, spec.type, item)
        elif spec.keep_zero or spec.type not in _SCALARS or value not in ("", 0, False):
            out += _encode_value(number, spec.type, value)
    return bytes(out)


def encode_object(obj: dict[str, Any]) -> bytes:
    """An object (or list) of :data:`ENCODABLE` as kube-apiserver answers it in
    protobuf: ``k8s\\0`` and a ``runtime.Unknown`` envelope; ``ValueError`` for
    another kind."""
    kind = str(obj.get("kind", ""))
    if not encodable(obj):
        raise ValueError(f"cannot encode {kind or 'this object'} as protobuf")
    type_meta = _encode_value(1, "string", obj.get("apiVersion", "")) + _encode_value(
        2, "string", kind
    )
    return (
        MAGIC
        + protowire.delimited(1, type_meta)
        + protowire.delimited(2, encode_message(obj, kind))
        + protowire.delimited(3, b"")
        + protowire.delimited(4, b"")
    )


def encodable(obj: Any) -> bool:
    """Whether :func:`encode_object` can write ``obj``."""
    if not isinstance(obj, dict):
        return False
    kind = str(obj.get("kind", "")).removesuffix("List")
    return kind in ENCODABLE and obj.get("apiVersion") == ENCODABLE[kind]


def wants_protobuf(accept: str | None) -> bool:
    """Whether the ``Accept`` header prefers a protobuf object (no ``as=``
    representation) over everything else it names that this server produces."""
    for media in negotiate.parse_accept(accept):
        if media.media_type == PROTOBUF:
            if "as" not in media.params:
                return True
            continue  # a Table or metadata in protobuf: not served, the next one
        if media.matches("application/json") or media.matches("application/yaml"):
            return False
    return False
