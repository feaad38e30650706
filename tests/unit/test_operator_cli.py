"""`frugal operator`'s options: flags default from the FRUGAL_* variables the Helm chart sets; flags win."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from frugal.operator.cluster.operator_command import ENVIRONMENT, OptionError, Options, build_parser, resolve

CHART_ENV = {
    "FRUGAL_NAMESPACES": "team-a, team-b",
    "FRUGAL_LOG_LEVEL": "DEBUG",
    "FRUGAL_WORKLOAD_IMAGE": "registry.example/frugal:1.2",
    "FRUGAL_STORAGE_URI": "pvc://frugal-artifacts/",
    "FRUGAL_ALLOW_HOST_PATH": "false",
    "FRUGAL_PVC_ROOT": "/var/lib/frugal/claims",
    "FRUGAL_METRICS_PORT": "8000",
    "FRUGAL_HEALTH_PORT": "8080",
}


def options(*argv: str, env: dict[str, str] | None = None) -> Options:
    return resolve(build_parser().parse_args(argv), env or {})


def test_the_chart_environment_configures_everything() -> None:
    got = options(env=CHART_ENV)
    assert got.namespaces == ("team-a", "team-b")
    assert got.log_level == "DEBUG"
    assert got.settings.image == "registry.example/frugal:1.2"
    assert got.settings.storage_uri == "pvc://frugal-artifacts/"
    assert got.settings.pvc_root == Path("/var/lib/frugal/claims")
    assert (got.metrics_port, got.health_port) == (8000, 8080)
    assert got.liveness_endpoint == "http://0.0.0.0:8080/healthz"


def test_flags_win_over_the_environment() -> None:
    got = options("-n", "x", "--namespace", "y,z", "--image", "mine:dev", "--metrics-port", "9100",
                  "--health-port", "0", "--log-level", "warning", "--pvc-root", "/claims", env=CHART_ENV)  # fmt: skip
    assert got.namespaces == ("x", "y", "z")
    assert got.settings.image == "mine:dev" and got.settings.pvc_root == Path("/claims")
    assert (got.metrics_port, got.health_port, got.log_level) == (9100, 0, "WARNING")
    assert got.liveness_endpoint is None
    assert options("--workload-image", "w:1", env=CHART_ENV).settings.image == "w:1"


def test_host_path_is_off_unless_the_flag_or_the_variable_turns_it_on() -> None:
    assert options(env=CHART_ENV).settings.allow_host_path is False
    assert options("--allow-host-path", env=CHART_ENV).settings.allow_host_path is True
    assert options(env={"FRUGAL_ALLOW_HOST_PATH": "true"}).settings.allow_host_path is True
    assert options(env={"FRUGAL_ALLOW_HOST_PATH": "false"}).settings.allow_host_path is False


def test_the_node_cache_is_off_unless_its_root_is_given_as_an_absolute_path() -> None:
    assert options(env=CHART_ENV).settings.node_cache_root is None
    assert options("--node-cache-root", "/var/lib/frugal/model-cache/").settings.node_cache_root == (
        "/var/lib/frugal/model-cache"
    )
    assert options(env={"FRUGAL_NODE_CACHE_ROOT": "/cache"}).settings.node_cache_root == "/cache"
    for bad in ("cache", "/var/../etc"):
        with pytest.raises(OptionError, match=r"absolute path without '\.\.'"):
            options("--node-cache-root", bad)


def test_network_policies_are_off_unless_asked_for_and_name_the_monitoring_namespace() -> None:
    assert options(env=CHART_ENV).settings.network_policies is False
    got = options("--network-policies", "--monitoring-namespace", "obs", env=CHART_ENV).settings
    assert got.network_policies is True and got.monitoring_namespace == "obs"
    assert options(env={"FRUGAL_NETWORK_POLICIES": "true"}).settings.monitoring_namespace == "monitoring"


def test_empty_variables_count_as_unset() -> None:
    """The chart sets FRUGAL_NAMESPACES="" to watch every namespace."""
    got = options(env={name: "" for name in ENVIRONMENT.values()})
    assert got == Options()
    assert got.namespaces == () and got.metrics_port == 8000 and got.settings.pvc_root is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ((), {"FRUGAL_METRICS_PORT": "metrics"}, "FRUGAL_METRICS_PORT='metrics': not a port number"),
        (("--health-port", "70000"), {}, "--health-port='70000': out of range"),
        ((), {"FRUGAL_LOG_LEVEL": "verbose"}, "FRUGAL_LOG_LEVEL='verbose': use one of DEBUG, INFO"),
        (("--interval", "0"), {}, "--interval='0': must be greater than 0"),
        (("--namespace", " , "), {}, "--namespace=' , ': name at least one namespace"),
        ((), {"FRUGAL_STORAGE_URI": "https://b/frugal"}, "FRUGAL_STORAGE_URI='https://b/frugal': use s3://, gs:// or az://<bucket>/<prefix>"),
        ((), {"FRUGAL_OBJECT_STORE": '{"addressingStyle": "dns"}'}, "FRUGAL_OBJECT_STORE='{\"addressingStyle\": \"dns\"}': addressingStyle: "),
        ((), {"FRUGAL_ALLOW_HOST_PATH": "maybe"}, "FRUGAL_ALLOW_HOST_PATH='maybe': expected true or false"),
        (("--monitoring-namespace", "Mon_itoring"), {}, "--monitoring-namespace='Mon_itoring': not a namespace"),
    ],
)
def test_a_bad_value_names_the_flag_or_variable(
    argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    with pytest.raises(OptionError) as error:
        options(*argv, env=env)
    assert str(error.value).startswith(message), error.value


def test_help_names_every_variable() -> None:
    text = build_parser().format_help()
    assert [name for name in ENVIRONMENT.values() if name not in text] == []


def test_a_bad_variable_exits_2_with_one_line_and_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "frugal.operator.cluster.operator_command"],
        env={"FRUGAL_HEALTH_PORT": "healthz", "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "frugal operator: FRUGAL_HEALTH_PORT='healthz': not a port number: use 1-65535, or 0 to turn the endpoint off"
    )


def test_fronts_are_placed_where_the_chart_places_the_operator() -> None:
    placement = '{"nodeSelector": {"pool": "system"}, "tolerations": [{"key": "pool", "operator": "Exists"}]}'
    got = options(env={**CHART_ENV, "FRUGAL_FRONT_PLACEMENT": placement}).settings.front_placement
    assert got == {"nodeSelector": {"pool": "system"}, "tolerations": [{"key": "pool", "operator": "Exists"}]}
    assert options(env={**CHART_ENV, "FRUGAL_FRONT_PLACEMENT": '{"nodeSelector": {}, "tolerations": []}'}
                   ).settings.front_placement == {}  # fmt: skip
    for bad, says in (("{", "not JSON"), ('{"affinity": {}}', "expected"), ('{"tolerations": {}}', "a list")):
        with pytest.raises(OptionError, match=f"FRUGAL_FRONT_PLACEMENT.*{says}"):
            options(env={**CHART_ENV, "FRUGAL_FRONT_PLACEMENT": bad})
