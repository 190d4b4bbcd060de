"""Where a sweep's files live and how they are read and written: the storage roots and the `Store` over
local disk or S3 (``storage``, ``roots``), an item's files and leases (``item_files``), the results table
(``results``), credentials kept out of Ray (``credentials``) and measured fault maps read from storage
(``fault_maps_store``). May import nf_core and the shared ``orchestration.errors`` / ``orchestration.tables``
only; nothing here knows a sweep's config schema, MLflow or Ray Tune."""
