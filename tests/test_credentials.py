"""Credentials never travel with what the driver hands to Ray: trial arguments, the storage spec,
pickled filesystems, or the runtime_env of Tune's trial actors (which Ray logs in clear text).

The end-to-end check (an S3 sweep with a canary secret, every file under Ray's temp dir, the
bucket, the MLflow store and the output grepped) is tests/test_sweep_e2e.py::test_sweep_on_s3_with_resume.
"""

from __future__ import annotations

import json

import cloudpickle
import pyarrow.fs as pafs
import pytest
import yaml
from ray.tune.execution import class_cache

from orchestration.spec.config import parse_config
from orchestration.store.credentials import is_credential_var, keep_credentials_out_of_ray
from orchestration.store.roots import sweep_store
from orchestration.store.storage import Store

KEY_ID, SECRET, TOKEN = "AKIANFCANARY0000001", "nf/canary+secret-0001", "nf-canary-session-token-0001"
AWS_CREDENTIAL_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}


@pytest.fixture
def canary_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _leaks(blob: bytes) -> list[str]:
    return [s for s in (KEY_ID, SECRET, TOKEN) if s.encode() in blob]


def test_what_trials_receive_holds_no_key_material(canary_env: None) -> None:
    cfg = parse_config(
        {"name": "creds", "storage": "s3://nf-bucket/team", "s3_endpoint": "http://127.0.0.1:9", "models": ["resnet18"]}
    )
    store = sweep_store(cfg)
    # Exactly what run_sweep gives Tune: with_parameters(cfg=, store=spec), storage_filesystem=store.fs
    # (cloudpickled to every trial); sweep.yaml and MLflow params come from cfg.to_dict().
    shipped = cloudpickle.dumps((cfg, store.spec(), store.fs, store, store.sub("items", "base")))
    assert _leaks(shipped) == []
    assert _leaks(json.dumps(store.spec()).encode() + yaml.safe_dump(cfg.to_dict()).encode()) == []
    assert store.spec() == {"uri": "s3://nf-bucket/team/creds", "endpoint": "http://127.0.0.1:9", "region": None}
    # Why it matters: a filesystem given keys explicitly pickles them in clear for every trial.
    explicit = pafs.S3FileSystem(access_key=KEY_ID, secret_key=SECRET, endpoint_override="127.0.0.1:9")
    assert _leaks(cloudpickle.dumps(explicit)) == [KEY_ID, SECRET]


def test_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    for endpoint in (f"http://{KEY_ID}:{SECRET}@127.0.0.1:9000", f"{KEY_ID}:{SECRET}@minio:9000/"):
        with pytest.raises(ValueError, match=r"carries credentials") as e:
            Store("s3://nf-bucket/x", endpoint)
        assert _leaks(str(e.value).encode()) == [], e.value
    assert Store("s3://nf-bucket/x", "http://127.0.0.1:9000").spec()["endpoint"] == "http://127.0.0.1:9000"


class _Trainable:  # stands in for the class Tune builds from a trainable function
    pass


def test_tune_trial_actors_get_no_credentials_in_runtime_env(canary_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray Tune 2.60 copies these names from the driver's environment into each trial actor's
    # runtime_env, which runtime_env_agent.log prints. Start from Ray's own set (plus the AWS names,
    # in case an earlier test in this process already removed them) on a copy we may change.
    monkeypatch.setattr(
        class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE) | AWS_CREDENTIAL_VARS
    )
    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")  # a non-secret name Tune must still pass on
    leaky = class_cache._ActorClassCache().get(_Trainable)._default_options["runtime_env"]
    assert _leaks(json.dumps(leaky).encode()) == [KEY_ID, SECRET, TOKEN]  # Ray's behaviour without the fix

    assert keep_credentials_out_of_ray() == sorted(AWS_CREDENTIAL_VARS)  # those, and only those
    assert keep_credentials_out_of_ray() == []  # idempotent
    env = class_cache._ActorClassCache().get(_Trainable)._default_options["runtime_env"]["env_vars"]
    assert _leaks(json.dumps(env).encode()) == []
    assert env["RAY_CHDIR_TO_TRIAL_DIR"] == "0"


def test_refuses_to_run_with_env_credentials_if_ray_moved_its_propagation(
    canary_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", frozenset(AWS_CREDENTIAL_VARS))
    with pytest.raises(RuntimeError, match="AWS_SECRET_ACCESS_KEY") as e:
        keep_credentials_out_of_ray()
    assert _leaks(str(e.value).encode()) == []
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    assert keep_credentials_out_of_ray() == []  # nothing to leak: runs


def test_credential_variable_names() -> None:
    assert all(map(is_credential_var, [*AWS_CREDENTIAL_VARS, "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN"]))
    assert not any(map(is_credential_var, ["AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "RAY_TRAIN_V2_ENABLED"]))
