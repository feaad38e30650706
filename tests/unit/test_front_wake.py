"""The pure parts of the front's self-wake (`frugal.serving.front_wake`, `frugal.schema.wake_annotation`):
which Deployments it wakes, when a scale asks for a wake, the patch it sends, where the API server is,
and the flags that turn it on or off."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_manifests import DIGITS_INPUTS, IMAGE, SPEC

from frugal.operator.manifests import serving_objects
from frugal.schema.wake_annotation import deployments_to_wake, wake_annotation
from frugal.serving import front
from frugal.serving.front_wake import in_cluster_url, needs_wake, wake_patch


def test_the_wake_list_round_trips_and_never_names_what_is_not_a_deployment() -> None:
    names = ["digits-g3-r2-shard-0", "digits-g3-r2-shard-1"]
    assert deployments_to_wake(wake_annotation(names)) == tuple(names)
    assert deployments_to_wake(" digits-g1-shard-0 ,, ../x,UPPER,digits-g1-shard-0") == ("digits-g1-shard-0",)
    assert deployments_to_wake(None) == deployments_to_wake("") == ()
    for bad in ([], ["has space"], ["a/b"]):
        with pytest.raises(ValueError):
            wake_annotation(bad)


def test_only_a_scale_at_zero_is_woken_and_only_if_nobody_changed_it_since() -> None:
    assert needs_wake({"spec": {"replicas": 0}})
    assert needs_wake({"spec": {}})  # autoscaling/v1 Scale omits a replica count of 0
    assert not needs_wake({"spec": {"replicas": 1}}) and not needs_wake({"spec": {"replicas": 3}})
    scale = {"metadata": {"name": "d", "resourceVersion": "42"}, "spec": {}}
    # resourceVersion is a precondition: a count changed in between answers 409 and is left alone.
    assert wake_patch(scale) == {"metadata": {"resourceVersion": "42"}, "spec": {"replicas": 1}}


def test_the_api_server_is_the_pods_own_unless_a_flag_names_one() -> None:
    assert in_cluster_url({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}) == (
        "https://10.0.0.1:443"
    )
    assert in_cluster_url({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}) == (
        "https://[fd00::1]:6443"
    )
    assert in_cluster_url({}) is None


def test_the_operators_front_wakes_its_live_shards_through_its_own_token() -> None:
    (container,) = serving_objects.desired_front(SPEC, IMAGE, inputs=DIGITS_INPUTS)["spec"]["template"]["spec"][
        "containers"
    ]
    config = front.FrontConfig(**vars(front.build_parser({}).parse_args(container["command"][2:])))
    assert config.self_wake and config.wake_service == "digits-live"
    assert config.kube_api_url == ""  # in a pod: KUBERNETES_SERVICE_HOST/PORT
    assert config.kube_token_file == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def access(tmp_path: Path, *flags: str, environ: dict[str, str] | None = None) -> object:
    parser = front.build_parser({})
    args = ["--upstream", "http://x:8080", "--model-name", "m", "--namespace", "ns", *flags]
    config = front.FrontConfig(**vars(parser.parse_args(args)))
    return front._kube_access(parser, config, environ or {})


def test_self_wake_is_off_when_asked_or_when_there_is_nothing_to_wake(tmp_path: Path) -> None:
    assert access(tmp_path) is None  # no --wake-service: as before, the operator wakes the model
    assert access(tmp_path, "--wake-service", "m-live", "--self-wake", "off") is None


def test_self_wake_without_an_api_server_or_a_token_stops_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        access(tmp_path, "--wake-service", "m-live")  # not in a pod, no --kube-api-url
    assert stopped.value.code == 2 and "--kube-api-url" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        access(tmp_path, "--wake-service", "m-live", "--kube-api-url", "https://api:6443",
               "--kube-token-file", str(tmp_path / "absent"))  # fmt: skip
    assert "--kube-token-file" in capsys.readouterr().err
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t\n")
    ca.write_text("pem")
    found = access(tmp_path, "--wake-service", "m-live", "--kube-token-file", str(token), "--kube-ca-file",
                   str(ca), environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})  # fmt: skip
    assert found == front.KubeAccess("https://10.0.0.1:443", token, ca, "ns", "m-live")
