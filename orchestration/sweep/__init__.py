"""Running a sweep on Ray Tune: the driver (``runner``), the dependency-driven item flow and trial
resources (``dataflow``), the trainables (``trainables``, with the pool actors in ``pool``), resume and
config changes (``resume``), item states (``status``), the live view (``progress``) and the checks run
before compute (``preflight``). Inside, ``runner`` sits on top (it imports the others; none imports
it). May import nf_core, ``orchestration.store``, ``orchestration.spec``, ``orchestration.tracking``,
``orchestration.cluster`` and the shared ``orchestration.errors`` / ``orchestration.tables``; never
reports or commands."""
