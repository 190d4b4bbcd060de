"""Credentials reach Ray workers from their own node, never through Ray.

Every process that touches S3 (driver, trials, pool actors, the MLflow server) finds its
credentials itself, through the default AWS chain that pyarrow and boto3 follow: the
environment the process was started with (a local Ray's workers inherit the driver's), a
shared credentials file (``~/.aws/credentials`` or ``AWS_SHARED_CREDENTIALS_FILE``, mode
0600), or the instance / pod role. Nothing in this project hands them on: ``Store.spec()``
and the pickled filesystems carry none, and Ray Tune's habit of copying the driver's
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / session token into every trial's
``runtime_env`` (which ``runtime_env_agent.log`` prints in clear text, and which the GCS
keeps for every worker) is switched off here.
"""

from __future__ import annotations

import os

# Substrings of environment-variable names that hold a secret (matched on the upper-cased name).
CREDENTIAL_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY", "CREDENTIAL", "SESSION_KEY")


def is_credential_var(name: str) -> bool:
    """True for environment variables whose value is a secret (AWS_SECRET_ACCESS_KEY, …_TOKEN …)."""
    upper = name.upper()
    return any(m in upper for m in CREDENTIAL_MARKERS)


def keep_credentials_out_of_ray() -> list[str]:
    """Stop Ray Tune from copying credential variables into each trial's runtime_env.

    Ray Tune 2.60 builds every trainable actor with ``runtime_env={"env_vars": …}`` holding
    the driver's values of the names in ``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``
    (AWS keys among them). We drop the credential names from that set, in this (the driver's)
    process, once; the other names (Ray Train switches) still travel. Returns the names removed.
    If that set ever moves, sweeps with credentials in the environment are refused rather than
    risking a leak (tests/test_credentials.py notices the move first).
    """
    try:
        from ray.tune.execution import class_cache

        propagated = class_cache.ENV_VARS_TO_PROPAGATE
        if not isinstance(propagated, set):  # read at each actor creation: changed in place
            raise TypeError(f"ENV_VARS_TO_PROPAGATE is a {type(propagated).__name__}, not a set")
    except (ImportError, AttributeError, TypeError) as e:
        present = sorted(n for n in os.environ if is_credential_var(n))
        if present:
            raise RuntimeError(
                f"cannot stop Ray Tune from copying {', '.join(present)} into trials' runtime_env "
                f"({e}); unset them and use ~/.aws/credentials or an instance role"
            ) from e
        return []
    removed = sorted(n for n in propagated if is_credential_var(n))
    propagated.difference_update(removed)
    return removed
