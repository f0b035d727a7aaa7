"""The Kubernetes manifests of config/k8s/: rendered, schema-validated and checked for wiring.

The kustomizations are rendered by ``tests/deploy/kustomize.py`` (no kustomize binary needed)
and every object is validated with ``kubernetes-validate`` against the oldest and the newest
Kubernetes API it knows that we support, in strict mode (unknown fields are errors).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from authz.loader import load_auth_settings
from doma_gateway.cli import _parser
from gateway.routes_loader import load_routes
from tests.deploy.dockerfile import parse
from tests.deploy.kustomize import build

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "config" / "k8s"
KUSTOMIZATIONS = [K8S / "base", K8S / "overlays" / "production"]
# gRPC probes are GA from 1.27.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
ROUTES_MOUNT = "/etc/doma-gateway/routes"


def rendered(directory: Path) -> list[dict[str, Any]]:
    return build(directory)


PRODUCTION = rendered(K8S / "overlays" / "production")


def of_kind(kind: str, objects: list[dict[str, Any]] = PRODUCTION) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def container(deployment: str) -> dict[str, Any]:
    (only,) = of_kind("Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def args_of(deployment: str) -> Any:
    return _parser().parse_args(container(deployment)["args"])


def port_named(deployment: str, name: str) -> int:
    for port in container(deployment)["ports"]:
        if port["name"] == name:
            return int(port["containerPort"])
    raise AssertionError(f"{deployment} has no port {name!r}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(kustomization, version):
    objects = rendered(kustomization)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    assert {"ConfigMap", "Namespace", "ServiceAccount"} <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "doma-system", obj["metadata"]["name"]


def test_routes_config_map_holds_every_routes_file_but_the_auth_section():
    (config_map,) = of_kind("ConfigMap").values()
    assert config_map["metadata"]["name"].startswith("doma-routes-")
    expected = {p.name for p in (ROOT / "routes").glob("*.yaml")} - {"auth.yaml"}
    assert set(config_map["data"]) == expected
    for name, text in config_map["data"].items():
        assert text == (ROOT / "routes" / name).read_text()


def lay_out_routes_volume(tmp_path: Path) -> Path:
    """The projected volume as the pods see it: ConfigMap files plus the Secret's auth.yaml."""
    (config_map,) = of_kind("ConfigMap").values()
    routes = tmp_path / "routes"
    routes.mkdir()
    for name, text in config_map["data"].items():
        (routes / name).write_text(text)
    (routes / "auth.yaml").write_text((K8S / "auth.example.yaml").read_text())
    return routes


def test_pods_mount_one_routes_directory_from_the_config_map_and_the_secret():
    (config_map,) = of_kind("ConfigMap").values()
    for name in ("doma-authz", "doma-gateway"):
        spec = of_kind("Deployment")[name]["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        sources = volumes["routes"]["projected"]["sources"]
        assert sources[0]["configMap"]["name"] == config_map["metadata"]["name"]
        assert sources[1]["secret"] == {
            "name": "doma-auth",
            "items": [{"key": "auth.yaml", "path": "auth.yaml"}],
        }
        mounts = {m["name"]: m for m in container(name)["volumeMounts"]}
        assert mounts["routes"] == {"name": "routes", "mountPath": ROUTES_MOUNT, "readOnly": True}
        assert str(args_of(name).routes) == ROUTES_MOUNT


def test_the_mounted_routes_directory_is_a_valid_configuration(tmp_path):
    routes = lay_out_routes_volume(tmp_path)
    config = load_routes(routes)
    assert {domain.name for domain in config.domains} >= {"auth", "scan", "my"}
    revocation = load_auth_settings(routes).revocation
    assert revocation is not None
    assert revocation.store.startswith("redis://") and revocation.bus.startswith("amqp://")
    check = subprocess.run(
        [sys.executable, "-m", "doma_gateway.cli", "check", str(routes)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "REDIS_PASSWORD" not in check.stdout and "RABBITMQ_PASSWORD" not in check.stdout


def test_auth_example_is_the_routes_auth_section_plus_revocation():
    example = load_auth_settings(K8S / "auth.example.yaml")
    routes = load_auth_settings(ROOT / "routes" / "auth.yaml")
    for field in ("issuers", "claims_to_headers", "bypass", "max_token_bytes", "token_cache_size"):
        assert getattr(example, field) == getattr(routes, field), field


def test_containers_run_non_root_read_only_without_capabilities():
    uid, _, gid = parse(ROOT / "Dockerfile")[-1].last("USER").value.partition(":")
    for name, deployment in of_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(uid), "the image's USER"
        assert pod["securityContext"]["runAsGroup"] == int(gid)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for spec in pod["containers"]:
            security = spec["securityContext"]
            assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}
            assert spec["image"].rpartition(":")[0].endswith("/doma-gateway")
            resources = spec["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name
            # The only writable place: /tmp (the multi-worker metrics directory).
            writable = [m for m in spec["volumeMounts"] if not m.get("readOnly")]
            assert [m["mountPath"] for m in writable] == ["/tmp"]


def test_authz_probes_use_grpc_health_on_the_port_it_listens_on():
    args = args_of("doma-authz")
    assert args.command == "authz"
    spec = container("doma-authz")
    assert (
        spec["readinessProbe"]["grpc"]["port"]
        == args.listen.port
        == port_named("doma-authz", "grpc")
    )
    assert spec["livenessProbe"]["tcpSocket"]["port"] == args.listen.port
    assert args.http_listen.port == port_named("doma-authz", "http-authz")
    assert args.metrics.port == port_named("doma-authz", "metrics")
    # The revocation API stays on loopback (security rule 7).
    assert args.admin.host == "127.0.0.1" and not args.no_admin
    annotations = of_kind("Deployment")["doma-authz"]["spec"]["template"]["metadata"]
    assert annotations["annotations"]["prometheus.io/port"] == str(args.metrics.port)


def test_gateway_probes_use_healthz_and_readyz_on_its_admin_listener():
    args = args_of("doma-gateway")
    assert args.command == "serve"
    spec = container("doma-gateway")
    admin_port = port_named("doma-gateway", "http-admin")
    assert args.admin.port == admin_port and args.admin.host == "0.0.0.0"
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert args.listen.port == port_named("doma-gateway", "http")


def test_services_budgets_and_autoscalers_select_the_deployments():
    deployments = of_kind("Deployment")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        service = of_kind("Service")[name]
        assert service["spec"]["selector"].items() <= labels.items()
        ports = {p["name"] for p in container(name)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
        budget = of_kind("PodDisruptionBudget")[name]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        autoscaler = of_kind("HorizontalPodAutoscaler")[name]
        assert autoscaler["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert autoscaler["spec"]["minReplicas"] > budget["spec"]["maxUnavailable"]
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= 5 + 10, "the preStop pause plus the drain"


def test_istio_providers_address_the_authz_service():
    service = of_kind("Service")["doma-authz"]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    mesh = yaml.safe_load((ROOT / "config" / "istio" / "extension-provider.yaml").read_text())
    providers = {p["name"]: p for p in mesh["spec"]["meshConfig"]["extensionProviders"]}
    assert providers["doma-authz"]["envoyExtAuthzGrpc"]["service"] == host
    assert providers["doma-authz"]["envoyExtAuthzGrpc"]["port"] == ports["grpc"]
    assert providers["doma-authz-http"]["envoyExtAuthzHttp"]["service"] == host
    assert providers["doma-authz-http"]["envoyExtAuthzHttp"]["port"] == ports["http-authz"]
    namespace = of_kind("Namespace")["doma-system"]
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("spec", "template", "spec", "containers", 0, "readinessProbe", "grpcc"), {"port": 1}),
        (("spec", "template", "spec", "containers", 0, "resources", "requests"), "lots"),
        (("spec", "strategy", "type"), 3),
    ],
)
def test_validation_rejects_a_broken_deployment(path, bad):
    """The validation above can fail: an unknown field or a wrong type is caught."""
    deployment = build(K8S / "overlays" / "production")
    (obj,) = [
        o for o in deployment if o["kind"] == "Deployment" and "authz" in o["metadata"]["name"]
    ]
    target: Any = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
