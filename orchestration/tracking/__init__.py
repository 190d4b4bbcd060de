"""MLflow: the sweep tracker (``tracker``: parent and child runs, params, metrics, artifacts), the SQLite
file kept in S3 storage and its back-fill (``sync``), the `nf sweep ui` server (``server``) and the Ray
Tune callback that logs each trial's results (``tune_callback``). May import nf_core,
``orchestration.store``, ``orchestration.spec`` and the shared ``orchestration.errors`` /
``orchestration.tables``; never the sweep runner, the cluster model, reports or commands."""
