"""What a sweep is: the YAML schema (``config``: `SweepConfig`, one-line `ConfigError`s) and the items
it expands to with their dependencies (``plan``). May import nf_core, ``orchestration.store`` and the
shared ``orchestration.errors`` / ``orchestration.tables``; pure Python (pydantic, no torch, Ray or
MLflow at import), so the CLI can validate and plan a sweep in its first second."""
