"""clusters/: Ray's own launcher validation offline, node configs against the clouds' own service
models, the KubeRay manifest's structure, what every cluster file promises (token auth, no
credentials, the MLflow server the sweeps look for) and the pinned installs.

`ray up` has no dry run, so these checks are what stands between a typo and a failed launch.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster_support import CLUSTER_FILES, CLUSTERS, LAUNCHERS, PYPROJECT, ROOT, load, prepared, ray_cluster


# ------------------------------------------------------------------ Ray's own validation
@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_yaml_passes_rays_validation(name: str) -> None:
    cfg = prepared(load(name))
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_raw_launcher_yaml_needs_rays_defaults_first() -> None:
    # Why the test above prepares first: validate_config wants keys only prepare_config adds.
    from ray.autoscaler._private.util import validate_config

    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(load("aws.yaml"))


def test_local_provider_rejects_node_types_the_cloud_files_use() -> None:
    raw = load("local.yaml")
    raw["available_node_types"] = load("aws.yaml")["available_node_types"]
    with pytest.raises(Exception, match="not supported for on-premise"):
        prepared(raw)


def test_kuberay_manifest_passes_the_autoscalers_own_translation() -> None:
    # What the in-cluster autoscaler does with the CR (it ends in validate_config).
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    cfg = _derive_autoscaling_config_from_ray_cr(ray_cluster())
    types = cfg["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0  # no trials on the head
    assert sorted(t["resources"].get("GPU", 0) for t in types.values()) == [0, 0, 1, 8]


# ------------------------------------------------------------------ EC2 node_config (botocore)
RAY_EC2_KEYS = {"SubnetIds"}  # read by Ray's AWS provider itself, never sent to EC2


def _close(key: str, choices: Any) -> str:
    near = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def botocore_errors(shape: Any, value: Any, where: str, top: bool = False) -> list[str]:
    """Where ``value`` does not fit botocore's ``shape``: unknown or missing fields, wrong types, bad enums."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {value!r}"]
        errs = []
        for k, v in value.items():
            if k in shape.members:
                errs += botocore_errors(shape.members[k], v, f"{where}.{k}")
            elif not (top and k in RAY_EC2_KEYS):
                errs.append(f"{where}.{k}: not a field of {shape.name}{_close(k, shape.members)}")
        if not top:  # MinCount/MaxCount of RunInstances itself are Ray's to add
            errs += [f"{where}.{m}: required by {shape.name}" for m in shape.required_members if m not in value]
        return errs
    if kind == "list":
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [e for i, v in enumerate(value) for e in botocore_errors(shape.member, v, f"{where}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {value!r}"]
        return [e for k, v in value.items() for e in botocore_errors(shape.value, v, f"{where}.{k}")]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {value!r}"]
        enum = getattr(shape, "enum", None) or []
        return [f"{where}: {value!r} is not one of {enum}"] if enum and value not in enum else []
    if kind in ("integer", "long"):
        return (
            []
            if isinstance(value, int) and not isinstance(value, bool)
            else [f"{where}: expected an integer, got {value!r}"]
        )
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected true/false, got {value!r}"]
    if kind in ("double", "float"):
        return (
            [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{where}: expected a number"]
        )
    return []  # timestamp, blob: not used in node configs


def ec2_node_config_errors(node_config: dict[str, Any]) -> list[str]:
    import botocore.session

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    return botocore_errors(shape, node_config, "node_config", top=True)


@pytest.mark.parametrize("node_type", sorted(load("aws.yaml")["available_node_types"]))
def test_ec2_node_configs_fit_runinstances(node_type: str) -> None:
    assert ec2_node_config_errors(load("aws.yaml")["available_node_types"][node_type]["node_config"]) == []


def test_ec2_checker_catches_what_ray_lets_through() -> None:
    raw = load("aws.yaml")
    nc = raw["available_node_types"]["gpu1-spot"]["node_config"]
    nc["InstanceTyp"] = nc.pop("InstanceType")
    nc["InstanceMarketOptions"]["SpotOptions"]["InstanceInterruptionBehaviour"] = "terminate"
    nc["InstanceMarketOptions"]["MarketType"] = "spott"
    nc["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] = "200GB"
    prepared(raw)  # Ray's validation does not look inside node_config ...
    errs = ec2_node_config_errors(nc)  # ... botocore's model does
    assert len(errs) == 4, errs
    assert any("InstanceTyp: not a field" in e and "'InstanceType'" in e for e in errs)
    assert any("InstanceInterruptionBehaviour" in e for e in errs)
    assert any("'spott' is not one of" in e for e in errs)
    assert any("VolumeSize: expected an integer" in e for e in errs)


# ------------------------------------------------------------------ GCE node_config (discovery doc)
def gce_errors(schemas: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> list[str]:
    """Where ``value`` does not fit a Compute Engine v1 discovery schema (types, enums, unknown fields)."""
    if "$ref" in schema:
        return gce_errors(schemas, schemas[schema["$ref"]], value, where)
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {value!r}"]
        props = schema["properties"]
        return [
            e
            for k, v in value.items()
            for e in (
                gce_errors(schemas, props[k], v, f"{where}.{k}")
                if k in props
                else [f"{where}.{k}: not a field{_close(k, props)}"]
            )
        ]
    if kind == "object":  # a map, e.g. labels
        sub = schema.get("additionalProperties", {})
        return [e for k, v in (value or {}).items() for e in gce_errors(schemas, sub, v, f"{where}.{k}")]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [e for i, v in enumerate(value) for e in gce_errors(schemas, schema["items"], v, f"{where}[{i}]")]
    if kind == "string" and schema.get("format") in ("int64", "uint64"):
        return [] if isinstance(value, int) or str(value).isdigit() else [f"{where}: expected an integer"]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {value!r}"]
        enum = schema.get("enum")
        return [f"{where}: {value!r} is not one of {enum}"] if enum and value not in enum else []
    if kind == "integer":
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: expected an integer"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected true/false"]
    return []


def gce_node_config_errors(node_config: dict[str, Any]) -> list[str]:
    import googleapiclient  # a test dependency: it ships Compute Engine's discovery document

    doc = Path(googleapiclient.__file__).parent / "discovery_cache/documents/compute.v1.json"
    schemas = json.loads(doc.read_text())["schemas"]
    return gce_errors(schemas, schemas["Instance"], node_config, "node_config")


def test_gce_node_configs_fit_the_compute_api() -> None:
    raw = load("gcp.yaml")
    for name, spec in raw["available_node_types"].items():
        assert gce_node_config_errors(spec["node_config"]) == [], name
    nc = raw["available_node_types"]["gpu1-spot"]["node_config"]
    nc["scheduling"]["provisioningModle"] = nc["scheduling"].pop("provisioningModel")
    nc["scheduling"]["onHostMaintenance"] = "MIGRATE_LATER"
    errs = gce_node_config_errors(nc)
    assert len(errs) == 2 and any("did you mean 'provisioningModel'" in e for e in errs), errs


# ------------------------------------------------------------------ KubeRay manifest structure
def kuberay_errors(cr: dict[str, Any]) -> list[str]:
    """The RayCluster fields KubeRay needs, typed as its CRD types them (no API server needed)."""
    errs = []
    if cr.get("apiVersion") != "ray.io/v1":
        errs.append(f"apiVersion: {cr.get('apiVersion')!r}, expected 'ray.io/v1'")
    if cr.get("kind") != "RayCluster":
        errs.append(f"kind: {cr.get('kind')!r}, expected 'RayCluster'")
    if not (cr.get("metadata") or {}).get("name"):
        errs.append("metadata.name: missing")
    spec = cr.get("spec") or {}
    if (spec.get("authOptions") or {}).get("mode", "token") not in ("token", "disabled"):
        errs.append("spec.authOptions.mode: must be token or disabled")

    def group(g: dict[str, Any], where: str, head: bool) -> None:
        params = g.get("rayStartParams")
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            errs.append(f"{where}.rayStartParams: must be a map of strings (KubeRay's map[string]string)")
        containers = ((g.get("template") or {}).get("spec") or {}).get("containers") or []
        if not containers:
            errs.append(f"{where}.template.spec.containers: missing")
            return
        c = containers[0]  # the Ray container: the autoscaler reads its resources
        if not c.get("image"):
            errs.append(f"{where}.containers[0].image: missing")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(part) or {}):
                errs.append(f"{where}.containers[0].resources.{part}: needs cpu and memory")
        if not head:
            lo, hi, n = g.get("minReplicas"), g.get("maxReplicas"), g.get("replicas", 0)
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= n <= hi):
                errs.append(f"{where}: need 0 <= minReplicas <= replicas <= maxReplicas, got {lo}, {n}, {hi}")
            if not g.get("groupName"):
                errs.append(f"{where}.groupName: missing")

    if "headGroupSpec" not in spec:
        errs.append("spec.headGroupSpec: missing")
    else:
        group(spec["headGroupSpec"], "spec.headGroupSpec", True)
    workers = spec.get("workerGroupSpecs") or []
    for i, g in enumerate(workers):
        group(g, f"spec.workerGroupSpecs[{i}]", False)
    names = [g.get("groupName") for g in workers]
    if len(set(names)) != len(names):
        errs.append(f"spec.workerGroupSpecs: duplicate groupName in {names}")
    return errs


def test_kuberay_manifest_structure() -> None:
    cr = ray_cluster()
    assert kuberay_errors(cr) == []
    broken = copy.deepcopy(cr)
    broken["apiVersion"] = "ray.io/v1alpha1"
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # an int: the CRD rejects it
    broken["spec"]["workerGroupSpecs"][0]["minReplicas"] = 20
    broken["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"] = []
    assert len(kuberay_errors(broken)) == 4, kuberay_errors(broken)


def test_kuberay_objects_it_refers_to_are_defined_or_documented() -> None:
    text = (CLUSTERS / "kuberay.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    cr = ray_cluster()
    groups = [cr["spec"]["headGroupSpec"], *cr["spec"]["workerGroupSpecs"]]
    for g in groups:
        assert g["template"]["spec"]["serviceAccountName"] in accounts
    for secret in re.findall(r"secretKeyRef: \{name: ([\w-]+)", text):  # made by the documented kubectl step
        assert f"create secret generic {secret}" in text


# ------------------------------------------------------------------ what every cluster file promises
def test_token_auth_is_on_everywhere() -> None:
    for name in LAUNCHERS:
        raw = load(name)
        assert raw["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token", name
        assert any("export RAY_AUTH_MODE=token" in c for c in raw["setup_commands"]), name
    assert ray_cluster()["spec"]["authOptions"]["mode"] == "token"


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("name", [n for n in CLUSTER_FILES if n.endswith(".yaml")])
def test_no_credentials_in_cluster_files(name: str) -> None:
    for s in _strings(list(yaml.safe_load_all((CLUSTERS / name).read_text()))):
        assert not re.search(r"AKIA[0-9A-Z]{16}", s), s
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", s), f"credentials in a URI: {s}"
        for m in re.finditer(r"(SECRET[A-Z_]*|PASSWORD|TOKEN|ACCESS_KEY_ID)=(\S+)", s):
            assert m.group(2).startswith('"$('), f"a literal secret: {m.group(0)}"


def _mlflow_servers(name: str) -> list[str]:
    if name == "kuberay.yaml":
        head = ray_cluster()["spec"]["headGroupSpec"]["template"]["spec"]
        return [" ".join(c["command"]) for c in head["containers"] if c.get("command", [""])[0] == "mlflow"]
    return [c for c in load(name)["head_start_ray_commands"] if "mlflow server" in c]


@pytest.mark.parametrize("name", LAUNCHERS + ["kuberay.yaml"])
def test_head_serves_mlflow_where_the_sweeps_look(name: str) -> None:
    servers = _mlflow_servers(name)
    assert len(servers) == 1, name
    words = shlex.split(servers[0].replace("(", " ").replace(")", " "))
    assert words[words.index("--host") + 1] == "127.0.0.1"  # loopback: reached by SSH tunnel only
    port = words[words.index("--port") + 1]
    for sweep in (ROOT / "sweeps").glob("*.yaml"):
        assert yaml.safe_load(sweep.read_text())["mlflow"]["tracking_uri"] == f"http://127.0.0.1:{port}", sweep.name
    assert "MLFLOW_BACKEND_STORE_URI" in (CLUSTERS / name).read_text()  # the DB URI never on a command line


def test_installs_pin_this_projects_release_and_its_ray() -> None:
    version = PYPROJECT["project"]["version"]
    name = PYPROJECT["project"]["name"]
    ray_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray[")).split("==")[1]
    for launcher in LAUNCHERS:
        setup = " ".join(load(launcher)["setup_commands"])
        assert f'"{name} @ git+' in setup and f'@v{version}"' in setup, launcher
        assert f'"ray[default]=={ray_pin}"' in setup, launcher  # the dashboard and job API need [default]
        assert "--python 3.11" in setup and PYPROJECT["project"]["requires-python"] == ">=3.11,<3.12"
    docker = (CLUSTERS / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray_pin}-py311-gpu" in docker and f"NF_REF=v{version}" in docker
    assert f'"{name} @ git+' in docker
    cr = ray_cluster()
    assert cr["spec"]["rayVersion"] == ray_pin
    images = {
        c["image"]
        for g in [cr["spec"]["headGroupSpec"], *cr["spec"]["workerGroupSpecs"]]
        for c in g["template"]["spec"]["containers"]
    }
    assert images == {f"YOUR-REGISTRY/neuralfuse-sweeps:{version}"}
