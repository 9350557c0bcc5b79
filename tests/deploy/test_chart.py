"""The Helm chart (deploy/helm/collab): linted, validated against Kubernetes' schemas, and
rendered with `helm template` into data that the tests below check."""

from __future__ import annotations

import base64
import os
import re
import shutil
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    CHART,
    KUBE_VERSIONS,
    MONITORING,
    RELEASE,
    ROOT,
    SCENARIOS,
    helm,
    kubernetes_validate,
    named,
    of_kind,
    pod_specs,
    render,
    render_fails,
    render_text,
)

DEFAULTS = SCENARIOS["defaults"]
EDITOR = f"{RELEASE}-editor"
GATEWAY = f"{RELEASE}-gateway"
Docs = list[dict[str, Any]]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A matchLabels selector selects these labels (an empty selector counts as a mistake)."""
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_labels(docs: Docs) -> dict[str, dict[str, str]]:
    return {name: meta.get("labels", {}) for name, meta, _ in pod_specs(docs)}


def container(docs: Docs, deployment: str) -> dict[str, Any]:
    spec = named(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    return spec["containers"][0]


def config(docs: Docs, name: str) -> dict[str, str]:
    return named(docs, "ConfigMap", name)["data"]


def secret_refs(docs: Docs) -> set[tuple[str, str]]:
    """(Secret name, key) of every secretKeyRef in every pod."""
    refs = set()
    for _, _, spec in pod_specs(docs):
        for item in spec["containers"]:
            for env in item.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    return refs


def env_ref(item: dict[str, Any], variable: str) -> tuple[str, str]:
    """(Secret name, key) a container reads one variable from."""
    [env] = [env for env in item["env"] if env["name"] == variable]
    ref = env["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def hook(doc: dict[str, Any]) -> tuple[set[str], int, set[str]]:
    """(hook events, weight, delete policies) of a Helm hook; empty events if it is none."""
    annotations = doc["metadata"].get("annotations") or {}
    events = annotations.get("helm.sh/hook", "")
    return (
        set(filter(None, events.split(","))),
        int(annotations.get("helm.sh/hook-weight", "0")),
        set(filter(None, annotations.get("helm.sh/hook-delete-policy", "").split(","))),
    )


def checksums(docs: Docs, deployment: str) -> dict[str, str]:
    annotations = named(docs, "Deployment", deployment)["spec"]["template"]["metadata"]
    return {
        key: value
        for key, value in (annotations.get("annotations") or {}).items()
        if key.startswith("checksum/")
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_passes_strict_lint(scenario: str) -> None:
    result = helm("lint", "--strict", str(CHART), *SCENARIOS[scenario])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_chart_is_valid_for_kubernetes(
    scenario: str, kube_version: str, tmp_path: Path
) -> None:
    rendered = tmp_path / f"{scenario}.yaml"
    rendered.write_text(render_text(*SCENARIOS[scenario], kube_version=kube_version))
    result = kubernetes_validate(rendered, kube_version)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_selectors_match_the_pods_they_mean(scenario: str) -> None:
    docs = render(*SCENARIOS[scenario])
    pods = pod_labels(docs)
    deployments = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Deployment")}
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        selected = [pod for pod, labels in pods.items() if matches(selector, labels)]
        assert selected == [f"Deployment/{name}"], f"{name} selects {selected}"

    def selected_deployment(selector: dict[str, str], what: str) -> dict[str, Any]:
        selected = [pod for pod, labels in pods.items() if matches(selector, labels)]
        assert len(selected) == 1, f"{what} selects {selected}"
        kind, name = selected[0].split("/")
        assert kind == "Deployment", f"{what} selects {selected[0]}"
        return deployments[name]

    services = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Service")}
    for name, service in services.items():
        target = selected_deployment(service["spec"]["selector"], f"Service {name}")
        container_ports = {
            port["name"]
            for item in target["spec"]["template"]["spec"]["containers"]
            for port in item["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, f"Service {name} port {port}"
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        selected_deployment(pdb["spec"]["selector"]["matchLabels"], pdb["metadata"]["name"])
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    for policy in of_kind(docs, "NetworkPolicy"):
        name = policy["metadata"]["name"]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert any(matches(selector, labels) for labels in pods.values()), name
        rules = policy["spec"].get("ingress", []) + policy["spec"].get("egress", [])
        for rule in rules:
            for peer in rule.get("from", []) + rule.get("to", []):
                peer_labels = peer.get("podSelector", {}).get("matchLabels", {})
                if peer_labels.get("app.kubernetes.io/instance") == RELEASE:
                    # The test pod exists only while `helm test` runs, but it is rendered.
                    assert any(matches(peer_labels, labels) for labels in pods.values()), name
    for monitor in of_kind(docs, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for s in services.values() if matches(selector, s["metadata"]["labels"])]
        assert len(selected) == 1, monitor["metadata"]["name"]
        port_names = {port["name"] for port in selected[0]["spec"]["ports"]}
        assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= port_names
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == GATEWAY
                ports = {port["name"] for port in services[GATEWAY]["spec"]["ports"]}
                assert backend["port"]["name"] in ports


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_and_container_is_hardened(scenario: str) -> None:
    docs = render(*SCENARIOS[scenario])
    seen = 0
    for name, _, spec in pod_specs(docs):
        seen += 1
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for item in spec["containers"] + spec.get("initContainers", []):
            where = f"{name} container {item['name']}"
            context = item["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["runAsNonRoot"] is True, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for bound in ("requests", "limits"):
                assert set(item["resources"][bound]) >= {"cpu", "memory"}, f"{where} {bound}"
            assert item["imagePullPolicy"] in ("IfNotPresent", "Always"), where
            tmp = [m for m in item.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in tmp_volumes, f"{where}: no emptyDir at /tmp"
    assert seen >= 4  # editor, gateway, migration Job, test pod


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_long_running_containers_have_all_three_probes(scenario: str) -> None:
    docs = render(*SCENARIOS[scenario])
    for deployment in of_kind(docs, "Deployment"):
        for item in deployment["spec"]["template"]["spec"]["containers"]:
            where = f"{deployment['metadata']['name']}/{item['name']}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in item, f"{where} has no {probe}"
    for name in (EDITOR, GATEWAY):
        item = container(docs, name)
        assert item["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert item["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert item["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert [port["name"] for port in item["ports"]] == ["http"]


def test_a_config_change_rolls_only_the_pods_that_read_it() -> None:
    base = render(*DEFAULTS)
    editor_change = render(*DEFAULTS, "--set", "editor.limits.maxFrameBytes=4194304")
    gateway_change = render(*DEFAULTS, "--set", "gateway.drainSeconds=12")

    def config_sum(docs: Docs, name: str) -> str:
        return checksums(docs, name)["checksum/config"]

    assert config_sum(editor_change, EDITOR) != config_sum(base, EDITOR)
    assert config_sum(editor_change, GATEWAY) == config_sum(base, GATEWAY)
    assert config_sum(gateway_change, GATEWAY) != config_sum(base, GATEWAY)
    assert config_sum(gateway_change, EDITOR) == config_sum(base, EDITOR)


def test_a_secret_change_rolls_the_pods() -> None:
    fixed = (
        *DEFAULTS,
        "--set",
        "auth.tokenSecret=" + "t" * 40,
        "--set",
        "django.secretKey=" + "d" * 50,
    )
    before = checksums(render(*fixed), EDITOR)["checksum/secret"]
    again = checksums(render(*fixed, "--set", "logging.level=INFO"), EDITOR)["checksum/secret"]
    after = render(*fixed, "--set", "database.url=postgres://collab:rotated@postgres:5432/collab")
    assert before == again
    assert checksums(after, EDITOR)["checksum/secret"] != before


def test_autoscaling_replaces_the_fixed_replica_count() -> None:
    fixed = render(*DEFAULTS)
    assert not of_kind(fixed, "HorizontalPodAutoscaler")
    for name in (EDITOR, GATEWAY):
        assert named(fixed, "Deployment", name)["spec"]["replicas"] == 2
    scaled = render(
        *DEFAULTS,
        "--set",
        "editor.autoscaling.enabled=true",
        "--set",
        "gateway.autoscaling.enabled=true",
    )
    for name in (EDITOR, GATEWAY):
        assert "replicas" not in named(scaled, "Deployment", name)["spec"]
        hpa = named(scaled, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert {pdb["apiVersion"] for pdb in of_kind(scaled, "PodDisruptionBudget")} == {"policy/v1"}


def test_authentication_is_required_by_default() -> None:
    docs = render(*DEFAULTS)
    assert config(docs, EDITOR)["COLLAB_AUTH_REQUIRED"] == "true"
    assert config(docs, GATEWAY)["COLLAB_AUTH_REQUIRED"] == "true"
    # Both services verify with the same key, from the chart's Secret.
    assert env_ref(container(docs, EDITOR), "COLLAB_TOKEN_SECRET") == (
        RELEASE,
        "COLLAB_TOKEN_SECRET",
    )
    assert env_ref(container(docs, GATEWAY), "COLLAB_TOKEN_SECRET") == (
        RELEASE,
        "COLLAB_TOKEN_SECRET",
    )
    generated = named(docs, "Secret", RELEASE)["data"]
    assert len(base64.b64decode(generated["COLLAB_TOKEN_SECRET"])) >= 32


def test_editors_check_the_gateways_origins_unless_told_otherwise() -> None:
    assert config(render(*DEFAULTS), EDITOR)["COLLAB_ALLOWED_ORIGINS"] == ""
    gateway_list = ("--set", "gateway.allowedOrigins={https://a.example,https://b.example}")
    docs = render(*DEFAULTS, *gateway_list)
    assert config(docs, GATEWAY)["GATEWAY_ALLOWED_ORIGINS"] == "https://a.example,https://b.example"
    assert config(docs, EDITOR)["COLLAB_ALLOWED_ORIGINS"] == "https://a.example,https://b.example"
    docs = render(*DEFAULTS, *gateway_list, "--set", "editor.allowedOrigins={https://c.example}")
    assert config(docs, EDITOR)["COLLAB_ALLOWED_ORIGINS"] == "https://c.example"


@pytest.mark.parametrize("value", ["editor.allowedOrigins", "gateway.allowedOrigins"])
def test_an_origin_no_header_can_equal_is_refused(value: str) -> None:
    # Origins are compared exactly with the header: "https://a.example/" matches nothing.
    assert "allowedOrigins" in render_fails(*DEFAULTS, "--set", f"{value}={{https://a.example/}}")


def test_existing_secrets_replace_the_generated_one() -> None:
    docs = render(*SCENARIOS["external"])
    assert not of_kind(docs, "Secret")
    assert secret_refs(docs) == {
        ("collab-app", "DJANGO_SECRET_KEY"),
        ("collab-app", "COLLAB_TOKEN_SECRET"),
        ("collab-db", "uri"),
        ("collab-redis", "url"),
    }
    for name in (EDITOR, GATEWAY):
        assert "checksum/secret" not in checksums(docs, name)


def test_one_existing_secret_leaves_the_other_keys_generated() -> None:
    docs = render(
        *DEFAULTS,
        "--set",
        "database.existingSecret=postgres-app",
        "--set",
        "database.existingSecretKey=uri",
    )
    data = named(docs, "Secret", RELEASE)["data"]
    assert "DATABASE_URL" not in data
    assert {"DJANGO_SECRET_KEY", "COLLAB_TOKEN_SECRET", "REDIS_URL"} <= set(data)
    assert env_ref(container(docs, EDITOR), "DATABASE_URL") == ("postgres-app", "uri")
    assert env_ref(container(docs, EDITOR), "REDIS_URL") == (RELEASE, "REDIS_URL")


def test_migrations_run_as_a_hook_before_the_deployments() -> None:
    docs = render(*DEFAULTS)
    job = named(docs, "Job", f"{RELEASE}-migrate")
    events, weight, deletion = hook(job)
    assert events == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in deletion
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["python", "manage.py", "migrate", "--no-input"]
    # Hooks run before the release's ordinary resources: no Deployment may be a hook.
    for deployment in of_kind(docs, "Deployment"):
        assert hook(deployment)[0] == set(), deployment["metadata"]["name"]
    # What the Job needs and the chart creates must be an earlier hook of the same events.
    needs = [("Secret", name) for name, _ in secret_refs([job])]
    needs.append(("ServiceAccount", pod["serviceAccountName"]))
    for kind, name in needs:
        made = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
        assert made, f"the Job needs {kind} {name}, which the chart does not create"
        needed_events, needed_weight, _ = hook(made[0])
        assert needed_events >= events, f"{kind} {name} is not a pre-install/pre-upgrade hook"
        assert needed_weight < weight, f"{kind} {name} is created after the Job"


def test_dashboard_configmap_holds_the_monitoring_file_byte_for_byte() -> None:
    link = CHART / "files" / "monitoring"
    assert link.is_symlink() and os.readlink(link) == "../../../monitoring"
    assert link.resolve() == MONITORING.resolve()
    docs = render(*SCENARIOS["ha"])
    dashboard = named(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["collab.json"].encode() == (MONITORING / "dashboard.json").read_bytes()


def test_prometheus_rule_holds_the_groups_of_the_rules_file() -> None:
    docs = render(*SCENARIOS["ha"])
    rule = named(docs, "PrometheusRule", RELEASE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    expected = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    assert rule["spec"]["groups"] == expected


def test_monitoring_resources_are_rendered_only_when_enabled() -> None:
    plain = render(*DEFAULTS)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert not of_kind(plain, kind)
    assert not [
        cm for cm in of_kind(plain, "ConfigMap") if "grafana_dashboard" in cm["metadata"]["labels"]
    ]
    monitored = render(*SCENARIOS["ha"])
    monitors = {doc["metadata"]["name"] for doc in of_kind(monitored, "ServiceMonitor")}
    assert monitors == {EDITOR, GATEWAY}
    # Prometheus names each scrape job after the Service; the rules select jobs by name.
    jobs = {
        service["metadata"]["name"]
        for service in of_kind(monitored, "Service")
        for monitor in of_kind(monitored, "ServiceMonitor")
        if matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    }
    patterns = set(re.findall(r'job=~"([^"]+)"', (MONITORING / "rules.yml").read_text()))
    assert patterns
    for pattern in patterns:
        assert any(re.fullmatch(pattern, job) for job in jobs), f"no job matches {pattern}"


def prestop_sleep(item: dict[str, Any]) -> float:
    command = item["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_termination_grace_outlasts_prestop_and_drain(scenario: str) -> None:
    docs = render(*SCENARIOS[scenario])
    drains = {
        GATEWAY: float(config(docs, GATEWAY)["GATEWAY_DRAIN_SECONDS"]),
        EDITOR: float(config(docs, EDITOR)["EDITOR_GRACEFUL_TIMEOUT"]),
    }
    for name, drain in drains.items():
        pod = named(docs, "Deployment", name)["spec"]["template"]["spec"]
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > prestop_sleep(pod["containers"][0]) + drain, name


def test_a_grace_period_too_short_to_drain_fails_the_render() -> None:
    error = render_fails(*DEFAULTS, "--set", "gateway.terminationGracePeriodSeconds=15")
    assert "gateway.terminationGracePeriodSeconds must exceed" in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "redis.url=redis://r:6379/0"), "database.url or database.existingSecret"),
        (("--set", "database.url=postgres://u:p@h:5432/d"), "exactly one of redis.url"),
        ((*DEFAULTS, "--set", "redis.bundled.enabled=true"), "exactly one of redis.url"),
        ((*DEFAULTS, "--set", "auth.tokenSecret=short"), "tokenSecret"),
        ((*DEFAULTS, "--set", "editor.replicas=3"), "Additional property replicas is not allowed"),
    ],
    ids=["no-database", "no-redis", "two-redis", "short-token-key", "unknown-value"],
)
def test_contradictory_or_unknown_values_are_refused(args: tuple[str, ...], message: str) -> None:
    assert message in render_fails(*args)


def test_gateway_finds_editors_through_the_headless_service() -> None:
    docs = render(*DEFAULTS)
    service = named(docs, "Service", EDITOR)
    assert service["spec"]["clusterIP"] == "None"
    [port] = service["spec"]["ports"]
    upstream = config(docs, GATEWAY)["GATEWAY_UPSTREAM_DNS"]
    assert upstream == f"{EDITOR}.collab.svc.cluster.local:{port['port']}"
    assert config(docs, EDITOR)["EDITOR_PORT"] == str(port["port"])
    assert named(docs, "Service", GATEWAY)["spec"]["type"] == "ClusterIP"


def test_network_policies_allow_only_the_service_chain() -> None:
    docs = render(*SCENARIOS["dev"])  # with the bundled Redis
    pods = pod_labels(docs)
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in of_kind(docs, "NetworkPolicy")}
    for name, labels in pods.items():
        assert any(
            matches(spec["podSelector"]["matchLabels"], labels) for spec in policies.values()
        ), f"{name} is not covered by any NetworkPolicy"
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]

    def peers_of(rule: dict[str, Any], side: str) -> list[str]:
        """Release components a rule names."""
        return [
            peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "")
            for peer in rule.get(side, [])
            if "podSelector" in peer and "namespaceSelector" not in peer
        ]

    dns_port = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    gateway = policies[GATEWAY]
    assert gateway["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}]}]
    assert [peers_of(rule, "to") for rule in gateway["egress"]] == [["editor"], []]
    assert gateway["egress"][1]["ports"] == dns_port

    editor = policies[EDITOR]
    [ingress] = editor["ingress"]
    assert peers_of(ingress, "from") == ["gateway"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "http"}]
    prometheus = [peer for peer in ingress["from"] if "namespaceSelector" in peer]
    assert prometheus, "Prometheus may not scrape the editors"
    egress_ports = [rule["ports"] for rule in editor["egress"]]
    assert [{"protocol": "TCP", "port": 5432}] in egress_ports
    assert [{"protocol": "TCP", "port": 6379}] in egress_ports
    assert dns_port in egress_ports
    assert ["redis"] in [peers_of(rule, "to") for rule in editor["egress"]]

    redis = policies[f"{RELEASE}-redis"]
    assert [peers_of(rule, "from") for rule in redis["ingress"]] == [["editor"]]
    assert "egress" not in redis  # Redis talks to no one


def test_helm_test_pod_runs_the_smoke_test_against_the_gateway() -> None:
    docs = render(*DEFAULTS)
    pod = named(docs, "Pod", f"{RELEASE}-test")
    assert hook(pod)[0] == {"test"}
    [item] = pod["spec"]["containers"]
    assert item["command"][:2] == ["python", "-c"]
    assert item["command"][2] == (CHART / "files" / "smoke_test.py").read_text()
    assert item["image"] == container(docs, EDITOR)["image"]
    env = {e["name"]: e.get("value") for e in item["env"]}
    port = named(docs, "Service", GATEWAY)["spec"]["ports"][0]["port"]
    assert env["GATEWAY_URL"] == f"http://{GATEWAY}:{port}"
    assert env["COLLAB_AUTH_REQUIRED"] == "true"
    assert env_ref(item, "COLLAB_TOKEN_SECRET") == env_ref(
        container(docs, GATEWAY), "COLLAB_TOKEN_SECRET"
    )


def render_notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template never renders it): a copy of the
    chart wraps it in a ConfigMap."""
    chart = tmp_path / "collab"
    shutil.copytree(CHART, chart)  # follows the files/monitoring symlink
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ include "test.notes" . | toJson }}\n'
    )
    docs = [doc for doc in yaml.safe_load_all(render_text(*args, chart=chart)) if doc]
    return str(named(docs, "ConfigMap", "notes")["data"]["notes"])


def test_notes_give_copyable_next_steps(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, *DEFAULTS)
    assert f"kubectl -n collab port-forward service/{GATEWAY} 8080:80" in notes
    assert f"kubectl -n collab exec deployment/{EDITOR} --" in notes
    assert "python manage.py issue_token --doc notes --perm write" in notes
    assert f"helm test {RELEASE} -n collab" in notes
    assert "AUTHENTICATION IS OFF" not in notes


def test_notes_warn_loudly_when_authentication_is_off(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, *SCENARIOS["dev"])
    assert "WARNING: AUTHENTICATION IS OFF" in notes
    assert "bundled single-node Redis" in notes


def test_notes_show_the_ingress_urls(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, *SCENARIOS["ha"])
    assert "https://collab.example.com/" in notes
    assert "wss://collab.example.com/ws/docs/<id>" in notes


def test_packaged_chart_carries_the_monitoring_files_themselves(tmp_path: Path) -> None:
    """`helm package` follows the symlink: a chart from a repository needs no checkout."""
    result = helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    [package] = tmp_path.glob("collab-*.tgz")
    with tarfile.open(package) as archive:
        members = {member.name: member for member in archive.getmembers()}
        packaged = sorted(name for name in members if name.startswith("collab/files/monitoring/"))
        assert packaged == [
            "collab/files/monitoring/dashboard.json",
            "collab/files/monitoring/rules.yml",
        ]
        for name in packaged:
            assert members[name].isfile()
            extracted = archive.extractfile(members[name])
            assert extracted is not None
            assert extracted.read() == (MONITORING / Path(name).name).read_bytes()


def test_every_value_is_documented_where_it_is_declared() -> None:
    """Each value has a `# --` comment right above it, unless it sits inside a documented
    value (an example map such as resources) or is a group of documented values."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    documented_at: list[int] = []  # indents of the enclosing documented values
    for number, line in enumerate(lines):
        stripped = line.lstrip()
        if not stripped or stripped.startswith(("#", "- ")):
            continue
        indent = len(line) - len(stripped)
        documented_at = [level for level in documented_at if level < indent]
        key, _, value = stripped.partition(":")
        comments = []
        for above in reversed(lines[:number]):
            if not above.lstrip().startswith("#"):
                break
            comments.append(above.strip())
        if any(comment.startswith("# --") for comment in comments):
            documented_at.append(indent)
        elif not documented_at and value.strip():  # a value, not a group of values
            undocumented.append(f"line {number + 1}: {key}")
    assert not undocumented, "values without a `# --` comment: " + ", ".join(undocumented)


def test_chart_deploys_the_version_of_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
