"""Clusters: Ray cluster files read and checked (``clusterfile``), how a sweep's trials pack onto them
and what they cost (``capacity``) and the simulated makespan with and without stage barriers
(``schedule``, pure and lowest; ``capacity`` feeds it a sweep's plan). May import nf_core,
``orchestration.store``, ``orchestration.spec`` and the shared ``orchestration.errors`` /
``orchestration.tables``; pure Python, no Ray at import."""
