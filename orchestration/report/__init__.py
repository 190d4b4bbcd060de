"""`nf report`: a sweep's results as an offline HTML page with figures (PNG/SVG) and tables (CSV/LaTeX/Markdown).

``tables``, ``figures`` and ``html`` are pure builders (results rows in, files out); ``build`` assembles the
page (``build_report``) or reads a sweep from its storage (``report_sweep``) and logs the figures to the
sweep's MLflow parent run; ``command`` is the `nf report` command line. Nothing here imports at package
import time, so the CLI stays fast. May import ``orchestration.sweep`` and everything below it (``cluster``,
``tracking``, ``spec``, ``store``, nf_core); never ``orchestration.commands``.
"""
