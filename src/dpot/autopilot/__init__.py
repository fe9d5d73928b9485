"""``dpot autopilot``: the report -> propose -> train -> compare -> rollback loop of the seed report, run by the tool.

Modules: :mod:`.spec` (arguments, objective, the search's identity in ``DIR/autopilot.json``), :mod:`.runs` (what a
run directory says: metrics, checkpoints, objective), :mod:`.tools` (``dpot report/propose/train`` as subprocesses,
the ``--launcher`` template), :mod:`.decisions` (rollback triggers, retries, halving budgets), :mod:`.engine` (the
loop on an Optuna study), :mod:`.lineage` (``lineage.json``), :mod:`.html` (``autopilot.html``), :mod:`.cli`
(``dpot autopilot``).
"""
