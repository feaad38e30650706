"""The real node's own checks: what the journey tests rely on, each of which could fail here.

Every pod below is run by the kubelet through containerd and runc in its own namespaces and cgroups
(its state is the kubelet's containerStatuses, its output comes back through ``kubectl logs`` /
``kubectl exec``); the test process talks to the API server, and reads the host side only where
that is the point (a PersistentVolume's directory, the isolation rules' packet counters).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from node_harness import (
    BRIDGE_MAC,
    CLUSTER_DOMAIN,
    KUBERNETES_SERVICE_IP,
    SERVICE_CIDR,
    RealCluster,
    cni_conflist,
    corefile,
    has_capability,
    orphaned_image_refs,
    parse_taint,
    reverse_zone,
    split_node_labels,
)

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
UID = 65532
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def restricted_pod(
    name: str, image: str, command: str, *, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A pod that passes the restricted Pod Security Standard: non-root UID 65532, read-only root
    filesystem, no capabilities, no privilege escalation, the runtime's default seccomp profile."""
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", command],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, **(labels or {})}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": UID,
                "fsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            # The session's node may carry a pool taint another module added; these checks run anyway.
            "tolerations": [{"operator": "Exists"}],
            **spec,
        },
    }


def apply(cluster: RealCluster, namespace: str, *documents: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(documents))


def exec_in(cluster: RealCluster, namespace: str, pod: str, command: str, check: bool = True) -> Any:
    return cluster.kubectl("exec", "-n", namespace, pod, "--", "/bin/sh", "-c", command, check=check)


def get_pod(cluster: RealCluster, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = json.loads(
        cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout
    )
    return pod


def terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    state = (statuses[0].get("state") or {}) if statuses else {}
    last = (statuses[0].get("lastState") or {}) if statuses else {}
    result: dict[str, Any] | None = state.get("terminated") or last.get("terminated")
    return result


@pytest.fixture(scope="module")
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    """A namespace enforcing the restricted Pod Security Standard, deleted after the module."""
    name = real_cluster.create_namespace(f"node-{uuid.uuid4().hex[:6]}", RESTRICTED)
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def busybox(real_cluster: RealCluster) -> str:
    return real_cluster.nodebin.busybox_image


@pytest.fixture(scope="module")
def web_and_client(real_cluster: RealCluster, namespace: str, busybox: str) -> dict[str, str]:
    """A busybox web server behind a Service and a client pod to run commands in."""
    web = restricted_pod(
        "web", busybox, "echo hello-from-web > /www/index.html && exec httpd -f -v -p 8080 -h /www",
        container={
            "ports": [{"containerPort": 8080}],
            "volumeMounts": [{"name": "www", "mountPath": "/www"}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        },
        volumes=[{"name": "www", "emptyDir": {}}],
    )  # fmt: skip
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    client = restricted_pod("client", busybox, "exec sleep 3600")
    apply(real_cluster, namespace, web, service, client)
    real_cluster.wait_pod_ready(namespace, "app in (web, client)", timeout_s=120, count=2)
    real_cluster.wait_service_endpoints(namespace, "web")
    cluster_ip = json.loads(
        real_cluster.kubectl("get", "service", "web", "-n", namespace, "-o", "json").stdout
    )
    return {"client": "client", "service_ip": cluster_ip["spec"]["clusterIP"]}


def test_the_node_runs_only_this_sessions_pods_and_keeps_its_images(real_cluster: RealCluster) -> None:
    """containerd's store outlives a run (images), its containers do not (start() refuses a store that
    still holds any): every container running belongs to a pod of this session's API server, and an
    archive already imported is not imported again."""
    pods = json.loads(real_cluster.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    assert real_cluster.running_pod_uids() <= {pod["metadata"]["uid"] for pod in pods}
    assert real_cluster.load_images([real_cluster.nodebin.busybox_archive]) == []
    assert orphaned_image_refs(real_cluster.image_listing()) == []


def test_a_rebuilt_images_old_id_reference_is_the_one_forgotten() -> None:
    listing = (
        "REF TYPE DIGEST SIZE PLATFORMS LABELS\n"
        "localhost/frugal:0.1.0 application/vnd.oci.image.manifest.v1+json sha256:new 3.4GiB linux/amd64 -\n"
        "sha256:newconfig application/vnd.oci.image.manifest.v1+json sha256:new 3.4GiB linux/amd64 -\n"
        "sha256:oldconfig application/vnd.oci.image.manifest.v1+json sha256:old 3.4GiB linux/amd64 -\n"
    )
    assert orphaned_image_refs(listing) == ["sha256:oldconfig"]


def test_the_node_is_ready_with_the_labels_and_taints_it_was_given(real_cluster: RealCluster) -> None:
    node = json.loads(real_cluster.kubectl("get", "node", real_cluster.node_name, "-o", "json").stdout)
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", node["status"]["conditions"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    assert {"type": "InternalIP", "address": real_cluster.pod_gateway_ip} in node["status"]["addresses"]
    labels = node["metadata"]["labels"]
    assert real_cluster.node_labels, "the fixture gives the node labels to check"
    for key, value in real_cluster.node_labels.items():
        assert labels.get(key) == value, (key, labels)
    taints = [{k: t[k] for k in ("key", "value", "effect") if k in t} for t in node["spec"].get("taints", [])]
    for taint in real_cluster.node_taints:
        assert parse_taint(taint) in taints, taints

    # ... and a test can change them as on any cluster.
    real_cluster.kubectl("label", "node", real_cluster.node_name, "frugal.dev/changed=yes")
    real_cluster.kubectl("taint", "node", real_cluster.node_name, "frugal.dev/changed=yes:PreferNoSchedule")
    node = json.loads(real_cluster.kubectl("get", "node", real_cluster.node_name, "-o", "json").stdout)
    assert node["metadata"]["labels"]["frugal.dev/changed"] == "yes"
    assert any(t["key"] == "frugal.dev/changed" for t in node["spec"]["taints"])
    real_cluster.kubectl("label", "node", real_cluster.node_name, "frugal.dev/changed-")
    real_cluster.kubectl("taint", "node", real_cluster.node_name, "frugal.dev/changed:PreferNoSchedule-")


def test_a_restricted_pod_runs_in_a_container_as_uid_65532(
    real_cluster: RealCluster, namespace: str, busybox: str
) -> None:
    created = time.monotonic()
    apply(
        real_cluster,
        namespace,
        restricted_pod("whoami", busybox, "id -u; cat /proc/self/cgroup; exec sleep 3600"),
    )
    [pod] = real_cluster.wait_pod_ready(namespace, "app=whoami", timeout_s=120)
    print(f"busybox pod: created -> Ready in {time.monotonic() - created:.2f} s")

    [status] = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("containerd://"), status
    assert "running" in status["state"], status
    assert status["imageID"], status
    logs = real_cluster.kubectl("logs", "-n", namespace, "whoami").stdout.splitlines()
    assert logs[0] == str(UID), logs
    # The kubelet's pod cgroup (cgroupfs driver), not the test's.
    assert any("/kubepods/" in line for line in logs[1:]), logs
    assert exec_in(real_cluster, namespace, "whoami", "id -u").stdout.strip() == str(UID)
    # Read-only root filesystem, as asked.
    refused = exec_in(real_cluster, namespace, "whoami", "touch /bin/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused


def test_a_pod_violating_restricted_is_refused_by_admission(
    real_cluster: RealCluster, namespace: str, busybox: str
) -> None:
    pod = restricted_pod("root", busybox, "id -u")
    pod["spec"]["securityContext"] = {"runAsUser": 0}
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    proc = real_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    assert "privileged" in proc.stderr and "runAsNonRoot" in proc.stderr, proc.stderr


def test_pods_resolve_cluster_names_and_reach_a_service_by_its_cluster_ip(
    real_cluster: RealCluster, namespace: str, web_and_client: dict[str, str]
) -> None:
    cluster, client = real_cluster, web_and_client["client"]
    kubernetes = exec_in(
        cluster, namespace, client, f"nslookup kubernetes.default.svc.{CLUSTER_DOMAIN}"
    ).stdout
    assert KUBERNETES_SERVICE_IP in kubernetes, kubernetes
    web_name = f"web.{namespace}.svc.{CLUSTER_DOMAIN}"
    web = exec_in(cluster, namespace, client, f"nslookup {web_name}").stdout
    assert web_and_client["service_ip"] in web, web
    # By the full name and by the short one (the search path the kubelet wrote), to the ClusterIP.
    for url in (f"http://{web_name}/", "http://web/", f"http://{web_and_client['service_ip']}/"):
        body = exec_in(cluster, namespace, client, f"timeout 5 wget -q -O - {url}").stdout
        assert body.strip() == "hello-from-web", (url, body)
    resolv = exec_in(cluster, namespace, client, "cat /etc/resolv.conf").stdout
    assert f"nameserver {cluster.pod_gateway_ip}" in resolv and resolv.count("nameserver") == 1, resolv


def test_a_name_outside_the_cluster_does_not_resolve(
    real_cluster: RealCluster, namespace: str, web_and_client: dict[str, str]
) -> None:
    proc = exec_in(real_cluster, namespace, web_and_client["client"], "nslookup example.com", check=False)
    assert proc.returncode != 0, proc.stdout
    assert "REFUSED" in proc.stdout + proc.stderr or "NXDOMAIN" in proc.stdout + proc.stderr, proc


def test_pods_have_no_route_out_of_the_machine(
    real_cluster: RealCluster, namespace: str, web_and_client: dict[str, str]
) -> None:
    routes = exec_in(real_cluster, namespace, web_and_client["client"], "ip route").stdout
    assert "default" not in routes, routes
    assert f"{SERVICE_CIDR} via {real_cluster.pod_gateway_ip}" in routes, routes
    proc = exec_in(
        real_cluster,
        namespace,
        web_and_client["client"],
        "timeout 5 wget -q -O - http://192.0.2.1/",
        check=False,
    )
    assert proc.returncode != 0 and "unreachable" in proc.stderr.lower(), proc
    # The gateway keeps its hardware address while pods come and go (a bridge would otherwise take its
    # lowest port's, and the pods' ARP entries would point at another pod).
    arp = exec_in(real_cluster, namespace, web_and_client["client"], "cat /proc/net/arp").stdout
    assert f"{real_cluster.pod_gateway_ip} " in arp and BRIDGE_MAC in arp, arp


def test_a_pod_that_routes_itself_out_is_dropped_at_the_bridge(
    real_cluster: RealCluster, busybox: str
) -> None:
    """Even a pod allowed to change its routes (NET_ADMIN, a privileged namespace) cannot send past the
    node: the host's isolation rules drop what it forwards from the bridge to another interface."""
    namespace = real_cluster.create_namespace(f"node-net-{uuid.uuid4().hex[:6]}")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "router", "labels": {"app": "router"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "main", "image": busybox, "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", "exec sleep 3600"],
                "securityContext": {"runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}},
            }],
        },
    }  # fmt: skip
    try:
        apply(real_cluster, namespace, pod)
        real_cluster.wait_pod_ready(namespace, "app=router", timeout_s=120)
        exec_in(real_cluster, namespace, "router", f"ip route add default via {real_cluster.pod_gateway_ip}")
        before = real_cluster.isolation_drops()
        proc = exec_in(real_cluster, namespace, "router", "timeout 3 nc 192.0.2.1 80 </dev/null", check=False)
        assert proc.returncode != 0, proc
        assert real_cluster.isolation_drops() > before
    finally:
        real_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_pod_over_its_memory_limit_is_oom_killed(
    real_cluster: RealCluster, namespace: str, busybox: str
) -> None:
    pod = restricted_pod(
        "hog", busybox, "exec dd if=/dev/zero of=/dev/null bs=128M count=1",
        container={"resources": {"limits": {"memory": "32Mi", "cpu": "500m"}}},
    )  # fmt: skip
    apply(real_cluster, namespace, pod)
    [pod] = real_cluster.wait_pods(
        namespace, "app=hog", lambda p: terminated(p) is not None, "terminated", 120
    )
    state = terminated(pod)
    assert state is not None and state["reason"] == "OOMKilled", pod["status"]
    assert state["exitCode"] == 137, state


def test_an_empty_dir_and_a_host_path_claim_are_writable_by_uid_65532(
    real_cluster: RealCluster, namespace: str, busybox: str
) -> None:
    volume = f"node-pv-{uuid.uuid4().hex[:6]}"
    host_dir = real_cluster.host_path_volume(volume, "1Gi", ["ReadWriteOnce"], owner_uid=UID)
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {
            "storageClassName": "",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    pod = restricted_pod(
        "writer", busybox,
        "echo scratch > /scratch/file && echo claimed > /data/file && ls -ln /scratch/file /data/file && exec sleep 3600",
        container={"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "data", "mountPath": "/data"}]},
        volumes=[{"name": "scratch", "emptyDir": {}}, {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    )  # fmt: skip
    apply(real_cluster, namespace, claim, pod)
    real_cluster.wait_pod_ready(namespace, "app=writer", timeout_s=120)
    bound = json.loads(real_cluster.kubectl("get", "pvc", "data", "-n", namespace, "-o", "json").stdout)
    assert bound["status"]["phase"] == "Bound" and bound["spec"]["volumeName"] == volume, bound["status"]
    listing = real_cluster.kubectl("logs", "-n", namespace, "writer").stdout.splitlines()
    assert all(line.split()[2] == str(UID) for line in listing), listing
    written = host_dir / "file"
    assert written.read_text() == "claimed\n" and written.stat().st_uid == UID


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service_with_its_token(
    real_cluster: RealCluster, namespace: str, web_and_client: dict[str, str]
) -> None:
    review = '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'
    command = (
        f'timeout 10 wget -q -O - --no-check-certificate --header "Authorization: Bearer $(cat {TOKEN_PATH})" '
        f"--header 'Content-Type: application/json' --post-data '{review}' "
        "https://kubernetes.default.svc/apis/authentication.k8s.io/v1/selfsubjectreviews"
    )
    proc = exec_in(real_cluster, namespace, web_and_client["client"], command, check=False)
    assert proc.returncode == 0, proc
    user = json.loads(proc.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:default", user
    env = exec_in(real_cluster, namespace, web_and_client["client"], "echo $KUBERNETES_SERVICE_HOST").stdout
    assert env.strip() == KUBERNETES_SERVICE_IP


# -- the pure configuration helpers (no cluster) -------------------------------------------------------
def test_the_dns_configuration_serves_the_cluster_only() -> None:
    text = corefile(kubeconfig=Path("/k"), health_port=1, ready_port=2)
    assert text.startswith("cluster.local:53 0.244.10.in-addr.arpa:53 0.96.10.in-addr.arpa:53 {")
    assert "forward" not in text and ".:53" not in text
    assert reverse_zone("10.96.0.0/24") == "0.96.10.in-addr.arpa"
    with pytest.raises(ValueError):
        reverse_zone("10.96.0.0/20")


def test_pods_get_no_default_route_and_no_masquerade() -> None:
    [bridge, _] = cni_conflist(ipam_dir=Path("/ipam"))["plugins"]
    assert bridge["ipMasq"] is False and bridge["isDefaultGateway"] is False
    assert bridge["ipam"]["routes"] == [{"dst": SERVICE_CIDR, "gw": "10.244.0.1"}]


def test_taints_labels_and_capabilities_are_read_as_written() -> None:
    assert parse_taint("a/b=c:NoSchedule") == {"key": "a/b", "value": "c", "effect": "NoSchedule"}
    assert parse_taint("a:NoExecute") == {"key": "a", "effect": "NoExecute"}
    with pytest.raises(ValueError):
        parse_taint("a=b")
    own, admin = split_node_labels(
        {"frugal.dev/pool": "cpu", "node-role.kubernetes.io/worker": "", "node.kubernetes.io/x": "1"}
    )
    assert own == {"frugal.dev/pool": "cpu", "node.kubernetes.io/x": "1"}
    assert admin == {"node-role.kubernetes.io/worker": ""}
    assert has_capability(24, "CapEff:\t000001ffffffffff\n")
    assert not has_capability(24, "CapEff:\t000001fffeffffff\n")
