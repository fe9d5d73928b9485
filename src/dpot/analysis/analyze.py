"""One call from RUN to everything a report needs: run, summaries, throughput, findings, proposals."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dpot.analysis.diagnose import Finding, RuleContext, diagnose
from dpot.analysis.propose import Proposal, build_proposals
from dpot.analysis.readers import Run, open_run
from dpot.analysis.summary import MetricSummary, summarize, throughput
from dpot.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """A read run with its summaries, throughput breakdown, findings and next-config proposals."""

    run: Run
    summaries: dict[str, MetricSummary]
    throughput: dict
    findings: list[Finding]
    proposals: list[Proposal]
    rules: dict
    parent: Run | None = None
    notes: list[str] = field(default_factory=list)


def analyze(spec: str, rules: dict, parent: str | None = None, run: Run | None = None) -> Analysis:
    """Read ``spec`` (unless ``run`` is given), summarize, diagnose (rollback against ``parent`` or the
    recorded parent), and derive proposals."""
    run = run or open_run(spec)
    srules = rules.get("summary", {})
    sums = summarize(run.history, window_frac=srules.get("window_frac", 0.2),
                     spike_factor=srules.get("spike_factor", 3.0))
    tp = throughput(run.history, run.config, run.times)
    notes = list(run.notes)
    parent_spec = parent or run.parent
    parent_run = None
    if parent_spec:
        try:
            parent_run = open_run(parent_spec)
        except UserError as err:
            if parent:
                raise
            notes.append(f"recorded parent {parent_spec} could not be read ({err}); rollback not checked")
            log.info("%s: %s", run.run_id, notes[-1])
    window = rules.get("window", {})
    ctx = RuleContext(run, sums, tp, parent_run, **{k: window[k] for k in ("frac", "min_points") if k in window})
    findings = diagnose(ctx, rules)
    log.debug("%s (%s): findings %s", run.run_id, run.kind, [f.id for f in findings])
    props = build_proposals(run, findings, rules, spec) if run.config else []
    if not run.config:
        notes.append("no resolved config found: no proposals")
    return Analysis(run, sums, tp, findings, props, rules, parent_run, notes)
