"""``dpot autopilot``: the report -> propose -> train -> compare -> rollback loop of the seed report, run by the tool.

Modules: :mod:`.spec` (arguments, objective, the search's identity in ``DIR/autopilot.json``, its directory layout),
:mod:`.record` (the typed state: ``TrialRecord``, ``IterationRecord``, the ``Decision`` / ``Kind`` values),
:mod:`.store` (that state in the Optuna study, public API only), :mod:`.claim` (workers: claiming, take-over,
heartbeats, the lock), :mod:`.candidates` (what is trained next, enqueued as plans; ``--strategy``),
:mod:`.space` (the one search space, shared with ``benchmarks/autopilot.py``: its ranges and draws, the params every
trial records), :mod:`.sampling` (the model-based sampler's draws), :mod:`.training` (one trial: train, report,
decide, tell), :mod:`.decisions` (the rules as pure functions: rollback triggers, closing an iteration, stops,
retries, halving budgets), :mod:`.runs` (a run's objective from its metrics), :mod:`.tools`
(``dpot report/propose/bench eval`` as subprocesses; training is launched, with the ``--launcher`` template, by
:func:`dpot.launch.launch_train`), :mod:`.engine` (opens the search and runs the loop), :mod:`.lineage`
(``lineage.json``), :mod:`.html` (``autopilot.html``), :mod:`.cli` (``dpot autopilot``).
"""
