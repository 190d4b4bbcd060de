"""clusters/: Ray's own launcher validation offline, node configs against the clouds' own
service models, the KubeRay manifest's structure, every reference the files make resolving
in this repo, and the capacity estimate of `nf sweep plan --cluster` on hand-computed cases.

`ray up` has no dry run, so these checks are what stands between a typo and a failed launch.
"""
from __future__ import annotations

import copy
import difflib
import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.capacity import (Cluster, NodeType, add_cluster_args, estimate, format_estimate, pack,
                                    parse_epoch_seconds, plan_with_cluster, read_cluster, trial_bundles,
                                    trials_per_node)
from orchestration.config import parse_config
from orchestration.plan import plan

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHERS = ["aws.yaml", "gcp.yaml", "local.yaml"]
CLUSTER_FILES = sorted(p.name for p in CLUSTERS.iterdir() if p.is_file())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTERS / name).read_text())


def ray_cluster(name: str = "kuberay.yaml") -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((CLUSTERS / name).read_text()) if d]
    return next(d for d in docs if d.get("kind") == "RayCluster")


def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


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
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

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
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: expected an integer, got {value!r}"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected true/false, got {value!r}"]
    if kind in ("double", "float"):
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{where}: expected a number"]
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
        return [e for k, v in value.items() for e in
                (gce_errors(schemas, props[k], v, f"{where}.{k}") if k in props
                 else [f"{where}.{k}: not a field{_close(k, props)}"])]
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


# ------------------------------------------------------------------ references resolve in this repo
REPO_PATH = re.compile(r"(?<![\w/.-])((?:clusters|sweeps|orchestration|nf_core|tests)/[\w./-]*\w)")
NF_COMMAND = re.compile(r"(?:^|[\s`(])nf\s+([a-z][^\n`;|&)#]*)")
RAY_COMMAND = re.compile(r"(?:^|[\s`(;])ray\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?")


def referring_files() -> list[Path]:
    return [CLUSTERS / n for n in CLUSTER_FILES] + sorted((ROOT / "sweeps").glob("*.yaml"))


def _subparser(parser: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The (sub)parser a command line reaches, and the words left for it."""
    import argparse

    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or words[0] not in subs[0].choices:
            break
        parser, words = subs[0].choices[words[0]], words[1:]
    return parser, words


@pytest.mark.parametrize("path", referring_files(), ids=lambda p: p.name)
def test_paths_mentioned_exist(path: Path) -> None:
    for ref in REPO_PATH.findall(path.read_text()):
        assert (ROOT / ref).exists(), f"{path.name} mentions {ref}, which is not in the repo"


@pytest.mark.parametrize("path", referring_files(), ids=lambda p: p.name)
def test_nf_commands_mentioned_exist(path: Path) -> None:
    from orchestration.cli import build_parser

    for line in NF_COMMAND.findall(path.read_text()):
        words = shlex.split(line)
        parser, rest = _subparser(build_parser(), words)
        if not rest:  # a command named in prose, as in "`nf sweep plan` reads them"
            assert parser.get_default("func") is not None, f"{path.name}: `nf {line.strip()}` is no command"
            continue
        if words[:2] == ["sweep", "plan"] and not any("--cluster" in a.option_strings for a in parser._actions):
            add_cluster_args(parser)  # the options plan gains from orchestration.capacity
        try:
            args = parser.parse_args(rest)
        except SystemExit:
            pytest.fail(f"{path.name}: `nf {line.strip()}` is not a valid nf command")
        assert hasattr(args, "func"), f"{path.name}: `nf {line.strip()}` names no command"
        config = getattr(args, "config", None)
        if config:  # a config given to nf: by repo path, or relative to `--working-dir sweeps`
            assert (ROOT / config).exists() or (ROOT / "sweeps" / config).exists(), f"{path.name}: {config}"


@pytest.mark.parametrize("path", referring_files(), ids=lambda p: p.name)
def test_ray_commands_mentioned_exist(path: Path) -> None:
    from ray.scripts.scripts import cli

    import click

    for sub, subsub in RAY_COMMAND.findall(path.read_text()):
        assert sub in cli.commands, f"{path.name}: `ray {sub}` is not a ray command"
        if isinstance(cli.commands[sub], click.Group):  # ray job submit, ray job status, ...
            assert subsub in cli.commands[sub].commands, f"{path.name}: `ray {sub} {subsub}` is not a ray command"


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
    images = {c["image"] for g in [cr["spec"]["headGroupSpec"], *cr["spec"]["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"]}
    assert images == {f"YOUR-REGISTRY/neuralfuse-sweeps:{version}"}


# ------------------------------------------------------------------ reading clusters for `nf sweep plan`
def test_read_cluster_sees_every_shape() -> None:
    def shapes(name: str) -> dict[str, tuple[float | None, float, int]]:
        return {t.name: (t.cpus, t.gpus, t.max_nodes) for t in read_cluster(str(CLUSTERS / name)).node_types}

    assert shapes("aws.yaml") == {"head": (0, 0, 1), "gpu1-spot": (8, 1, 16), "gpu1-ondemand": (8, 1, 4),
                                  "gpu8-spot": (192, 8, 2), "gpu8-ondemand": (192, 8, 1), "cpu-spot": (8, 0, 2)}
    assert shapes("local.yaml") == {"head": (0, 0, 1), "local.cluster.node": (64, 8, 4)}
    assert shapes("kuberay.yaml") == {"headgroup": (0, 0, 1), "gpu1": (7, 1, 16), "gpu8": (90, 8, 2), "cpu": (4, 0, 2)}
    assert read_cluster(str(CLUSTERS / "gcp.yaml")).max_workers == 20


def test_instance_type_table_fills_in_missing_resources(tmp_path: Path) -> None:
    raw = load("aws.yaml")
    for spec in raw["available_node_types"].values():
        spec["resources"] = {}
    raw["available_node_types"]["gpu1-spot"]["node_config"]["InstanceType"] = "p9.huge"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    types = {t.name: t for t in read_cluster(str(path)).node_types}
    assert (types["gpu8-spot"].cpus, types["gpu8-spot"].gpus) == (192, 8)  # g5.48xlarge from the table
    assert types["gpu1-spot"].gpus == 0 and types["gpu1-spot"].source.startswith("unknown instance type")


def test_fractional_gpus_pack_exactly() -> None:
    one = NodeType("g", cpus=8, gpus=1, max_nodes=1)
    assert [trials_per_node(one, 1, g) for g in (0.5, 0.25, 0.2, 0.3, 1)] == [2, 4, 5, 3, 1]
    assert trials_per_node(one, 3, 0.25) == 2  # CPUs bind before GPUs
    assert trials_per_node(NodeType("c", cpus=8, gpus=0, max_nodes=1), 1, 0.5) == 0


def test_estimate_on_a_hand_computed_cluster(tmp_path: Path) -> None:
    # Worker types: gpu1 (8 CPU, 1 GPU, up to 3 nodes), gpu4 (16 CPU, 4 GPU, 1 node); at most
    # 3 workers in all. Trials need 3 CPU + 0.5 GPU: gpu1 holds min(1/0.5, 8/3) = 2, gpu4 holds
    # min(4/0.5, 16/3) = 5 (CPU-bound). 13 generator trials: gpu4 x1 (5) + gpu1 x2 (4) = 9 at
    # once, so 2 waves. Each trial: 10 epochs x 60 s = 1/6 h; GPU-hours 13 x 1/6 x 0.5 = 13/12.
    cluster = {
        "cluster_name": "hand", "max_workers": 3,
        "provider": {"type": "aws", "region": "us-west-2"},
        "available_node_types": {
            "head": {"resources": {"CPU": 0}, "node_config": {"InstanceType": "m6i.2xlarge"}},
            "gpu1": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 3, "node_config": {"InstanceType": "g5.2xlarge"}},
            "gpu4": {"resources": {"CPU": 16, "GPU": 4}, "max_workers": 1, "node_config": {"InstanceType": "g5.12xlarge"}},
        },
        "head_node_type": "head",
    }
    path = tmp_path / "hand.yaml"
    path.write_text(yaml.safe_dump(cluster))
    cfg = parse_config({"name": "hand", "models": ["resnet18"], "generators": ["ConvS"], "ns": list(range(1, 14)),
                        "base": {"epochs": 20}, "generator": {"epochs": 10},
                        "resources": {"cpus": 3, "gpus": 0.5}, "transfer": False})
    est = estimate(cfg, plan(cfg), str(path), {"base": 30.0, "generator": 60.0})
    g = est["stages"]["generator"]
    assert (g["trials"], g["concurrent"], g["capacity"], g["waves"]) == (13, 9, 9, 2)
    assert g["nodes"] == {"gpu4": 1, "gpu1": 2}
    assert g["per_node"] == {"head": 0, "gpu1": 2, "gpu4": 5}
    assert g["gpu_hours"] == pytest.approx(13 / 12) and g["wall_hours"] == pytest.approx(2 / 6)
    b = est["stages"]["base"]  # one trial, 20 x 30 s = 1/6 h, on one node
    assert (b["concurrent"], b["waves"], b["nodes"]) == (1, 1, {"gpu4": 1})
    assert b["gpu_hours"] == pytest.approx(0.5 / 6)
    assert est["stages"]["eval"]["gpu_hours"] is None  # not timed ...
    assert est["total"]["gpu_hours"] is None and any("eval" in n for n in est["notes"])  # ... and said so
    text = format_estimate(est)
    assert "9/9" in text and "gpu4 x1, gpu1 x2" in text


def test_max_concurrent_and_global_bounds() -> None:
    c = Cluster("x", "x", 2, (NodeType("h", 0, 0, 1, is_head=True), NodeType("a", 8, 1, 5, priority=1),
                               NodeType("b", 8, 1, 5)))
    assert pack(c, 1, 1, 10) == (2, {"a": 2})  # two workers in all; spot-like `a` (priority) first
    assert pack(c, 1, 1, 10, max_concurrent=1) == (1, {"a": 1})
    assert pack(c, 1, 0, 3) == (3, {"a": 1})  # CPU-only: both types have GPUs, so one node will do


def test_trial_bundles() -> None:
    """What a trial asks Ray for (the runner requests exactly these): its own share, then a pool actor each."""
    from orchestration.runner import _resources

    base = {"name": "b", "models": ["resnet18", "vgg11"], "resources": {"cpus": 2, "gpus": 0.5}}
    plain = parse_config(base)
    assert trial_bundles(plain, "generator") == [{"CPU": 2, "GPU": 0.5}]
    pooled = parse_config({**base, "sources": [["resnet18", "vgg11"]], "generator": {"access": "pool", "pool_actors": 2}})
    # an ensemble of two models × two replicas each = four actor bundles
    assert trial_bundles(pooled, "generator") == [{"CPU": 2, "GPU": 0.5}] + [{"CPU": 0.5}] * 4
    assert trial_bundles(pooled, "base") == [{"CPU": 2, "GPU": 0.5}]
    ev = parse_config({**base, "evaluation": {"pool_actors": 3}, "resources": {"cpus": 1, "pool_actor_gpus": 0.25}})
    assert trial_bundles(ev, "transfer") == [{"CPU": 1}] + [{"CPU": 0.5, "GPU": 0.25}] * 3
    assert _resources(pooled, "generator").bundles == trial_bundles(pooled, "generator")


def test_epoch_seconds_parsing() -> None:
    assert parse_epoch_seconds("120") == 120.0
    assert parse_epoch_seconds("base=600, generator=120") == {"base": 600.0, "generator": 120.0}
    for bad, why in (("gen=5", "valid choices"), ("base=-1", "positive"), ("fast", "not a number")):
        with pytest.raises(ValueError, match=why):
            parse_epoch_seconds(bad)


def test_plan_with_cluster_from_argparse() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("-v", "--verbose", action="store_true")
    add_cluster_args(p)
    cfg = parse_config(yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text()))
    items = plan(cfg)
    plain = plan_with_cluster(p.parse_args(["x"]), cfg, items)
    assert plain.splitlines()[0].startswith("sweep 'smoke'") and "total" in plain
    text = plan_with_cluster(p.parse_args(["x", "--cluster", str(CLUSTERS / "aws.yaml"), "--epoch-seconds", "2"]),
                             cfg, items)
    assert "cpu-spot x1" in text  # CPU-only trials go to the CPU type, as the autoscaler sends them
    with pytest.raises(ValueError, match="does not exist"):
        plan_with_cluster(p.parse_args(["x", "--cluster", "clusters/nope.yaml"]), cfg, items)


def test_every_paper_sweep_fits_every_cluster() -> None:
    # A trial no node type can hold would wait forever; catch it before paying for the cluster.
    from orchestration.config import load_config

    clusters = [read_cluster(str(CLUSTERS / n)) for n in LAUNCHERS + ["kuberay.yaml"]]
    for sweep in sorted((ROOT / "sweeps").glob("*.yaml")):
        cfg = load_config(str(sweep))
        for stage in ("base", "generator", "eval", "transfer"):
            cpus = sum(b.get("CPU", 0) for b in trial_bundles(cfg, stage))
            gpus = sum(b.get("GPU", 0) for b in trial_bundles(cfg, stage))
            for c in clusters:
                assert pack(c, cpus, gpus, 1)[0] == 1, (sweep.name, stage, c.path)



# ------------------------------------------------------------------ two Ray nodes, one machine
def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all sockets held open until every port is picked)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get(url: str, token: str) -> bytes:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with opener.open(req, timeout=10) as r:
        return r.read()


def _get_json(url: str, token: str) -> Any:
    return json.loads(_get(url, token))


def _marked_pids(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (NAME=value): everything the test's
    `ray start` processes started, orphans re-parented away from their tree included."""
    needle = marker.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:  # gone, or a zombie
                continue
    return pids


def _stop_nodes(procs: list[Any], marker: str) -> None:
    """SIGTERM each `ray start --block` (it stops its node), then SIGKILL, by PID, whatever
    the nodes started and left behind."""
    import signal
    import subprocess
    import time

    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    while _marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _marked_pids(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        proc.wait(timeout=30)


def test_multinode_sweep_through_ray_job_submit(tmp_path: Path) -> None:
    """The cluster files' path end to end on 127.0.0.1: a token-auth head and a second node
    (separate `ray start` processes, 1 CPU each), a cut of sweeps/smoke.yaml submitted as a
    Ray job, its trials on both nodes, every MLflow run on the (loopback) tracking server
    finished, and no process of the two nodes left behind."""
    import secrets
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    import uuid

    from mlflow.tracking import MlflowClient

    from orchestration.mlflow_server import start_mlflow_server, stop_mlflow_server

    bin_dir = Path(sys.executable).parent
    token = secrets.token_hex(16)
    tag = uuid.uuid4().hex  # in the environment of every process the nodes start
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,  # as the cluster files set them
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
           "NF_TEST_RAY_NODES": tag}
    marker = f"NF_TEST_RAY_NODES={tag}"
    # A temp dir per node, as separate machines have: nodes sharing one would share the job's
    # unpacked working dir, and the worker's runtime-env agent deletes it under the driver's feet.
    # Short paths: Ray's socket paths must fit 107 bytes.
    temps = [tempfile.mkdtemp(prefix="nfr", dir="/tmp") for _ in range(2)]
    # Every port explicit and free: Ray's fixed defaults (dashboard agent 52365, client server
    # 10001, ...) clash between the two nodes, and with any other Ray on this machine.
    gcs, dash, client_port, *node_ports = _free_ports(11)

    def node_args(i: int) -> list[str]:
        agent, agent_grpc, runtime_env, metrics = node_ports[4 * i:4 * i + 4]
        return ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats",
                f"--temp-dir={temps[i]}", f"--dashboard-agent-listen-port={agent}",
                f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
                f"--metrics-export-port={metrics}"]

    ray = str(bin_dir / "ray")
    procs: list[subprocess.Popen] = []
    server = None
    api = f"http://127.0.0.1:{dash}"
    try:
        procs.append(subprocess.Popen(
            [ray, "start", "--head", f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
             "--include-dashboard=true", f"--ray-client-server-port={client_port}", *node_args(0)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        server, url = start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))
        deadline = time.monotonic() + 120

        def wait_for(what: str, ready: Any) -> None:
            while True:
                try:
                    if ready():
                        return
                except OSError:
                    pass
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs), f"{what}: timed out"
                time.sleep(0.5)

        # The job API answers, and the head's dashboard agent, which runs submitted jobs, is up.
        wait_for("the head", lambda: _get_json(f"{api}/api/version", token) and
                 _get(f"http://127.0.0.1:{node_ports[0]}/api/healthz", token) is not None)
        procs.append(subprocess.Popen([ray, "start", f"--address=127.0.0.1:{gcs}", *node_args(1)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("the second node", lambda: len([n for n in _get_json(f"{api}/api/v0/nodes", token)["data"]["result"]
                                                 ["result"] if n["state"] == "ALIVE"]) == 2)
        with pytest.raises(OSError):  # token auth is on: the job API refuses callers without it
            _get_json(f"{api}/api/version", "wrong-token")

        sweep = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
        sweep.update(name="smoke_multinode", storage=str(tmp_path / "storage"), mlflow={"tracking_uri": url})
        # Shorter than the smoke sweep: one base epoch, and no transfer stage (the eval stage
        # runs the same trainable). Two trials per stage (one per model), one CPU each.
        sweep["base"]["epochs"] = 1
        sweep["transfer"] = False
        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / "smoke.yaml").write_text(yaml.safe_dump(sweep))
        submit = subprocess.run([ray, "job", "submit", "--address", api, "--working-dir", str(job_dir),
                                 "--", "nf", "sweep", "run", "smoke.yaml"],
                                env=env, capture_output=True, text=True, timeout=600)
        assert submit.returncode == 0 and "succeeded" in submit.stdout, submit.stdout[-4000:] + submit.stderr[-2000:]

        # Trials ran as Tune actors; their records say on which node.
        actors = _get_json(f"{api}/api/v0/actors?detail=1&limit=10000", token)["data"]["result"]["result"]
        trial_nodes = {a["node_id"] for a in actors if "ImplicitFunc" in (a.get("class_name") or "")}
        assert len(trial_nodes) == 2, [(a["class_name"], a["node_id"]) for a in actors]

        client = MlflowClient(url)
        exp = client.get_experiment_by_name("smoke_multinode")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        trials = sum(len(v) for v in plan(parse_config(sweep)).values())
        assert trials == 6 and len(runs) == trials + 1  # one child run per trial, plus the parent
        assert {r.info.status for r in runs} == {"FINISHED"}
    finally:
        if server is not None:
            stop_mlflow_server(server)
            Path(server.nf_log_path).unlink(missing_ok=True)
        _stop_nodes(procs, marker)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
    assert _marked_pids(marker) == []  # every process the two nodes started is gone
