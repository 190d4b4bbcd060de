"""The `nf` subcommands, one module per family. Each module imports only the standard library (and
``orchestration.store.roots`` for the shared ``--storage`` options) at the top; torch, Ray, MLflow and
pandas are imported inside the functions that run a command, so `nf --help` and building the parser stay
fast. ``views`` formats plans, estimates and statuses as text. May import every package below it
(``report``, ``sweep``, ``cluster``, ``tracking``, ``spec``, ``store``, nf_core); only ``orchestration.cli``
imports it."""
