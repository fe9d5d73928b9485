"""Report prose in English and Chinese (``--lang en|zh``): section titles and one message per rule."""

from __future__ import annotations

from dpot.errors import UserError

LANGS = ("en", "zh")

TEXT = {
    "en": {
        "title": "DP+OT Experiment Evaluation (run: {run_id})",
        "overview": "Overview", "curves": "Curves (summary)", "assessment": "Quick Assessment",
        "risks": "Bottlenecks / Risks", "plan": "Iteration Plan", "monitors": "Verification & Monitors",
        "rollback": "Rollback Triggers", "appendix": "Appendix — Key Config (for traceability)",
        "notes": "Reader notes", "throughput": "Throughput", "not_logged": "not logged (seen: {seen})",
        "no_findings": "No rule triggered: no alarm.", "best": "best", "trend": "trend over last {w} points",
        "spikes": "spikes", "evidence": "evidence", "changes": "changes",
        "convergence": "Convergence", "stability": "Stability", "ot_signal": "OT signal", "lr": "LR scheduling",
        "compare": "Run Comparison", "winner": "wins", "differs": "Config keys that differ",
        "no_proposals": "No config change proposed: keep the current settings and extend the run if it is still "
                        "improving.",
        "rollback_check": "Rollback check", "run": "run", "metric": "metric", "plots": "Plots",
        "probe": "Domain probe (held-out accuracy of a linear sim-vs-real classifier on each camera's features; "
                 "chance 0.5)",
    },
    "zh": {
        "title": "DP+OT 实验评估（run: {run_id}）",
        "overview": "概览", "curves": "曲线摘要", "assessment": "快速评估",
        "risks": "瓶颈 / 风险", "plan": "迭代计划", "monitors": "验证与监控",
        "rollback": "回滚条件", "appendix": "附录 — 关键配置（便于追溯）",
        "notes": "读取说明", "throughput": "吞吐", "not_logged": "未记录（已见：{seen}）",
        "no_findings": "没有规则被触发：无告警。", "best": "最佳", "trend": "最近 {w} 个点的趋势",
        "spikes": "尖峰", "evidence": "证据", "changes": "修改",
        "convergence": "收敛", "stability": "稳定性", "ot_signal": "OT 信号", "lr": "学习率调度",
        "compare": "运行对比", "winner": "胜出", "differs": "不同的配置键",
        "no_proposals": "不建议修改配置：保持当前设置；若仍在改善，可延长训练。",
        "rollback_check": "回滚检查", "run": "运行", "metric": "指标", "plots": "图表",
        "probe": "域探针（线性仿真/真实分类器在各相机特征上的留出准确率；随机水平 0.5）",
    },
}

FINDINGS = {
    "lr_flat": {
        "en": "Logged train/lr is flat at {lr_max} over {points} points (steps {steps}) while the scheduler is "
              "{scheduler}: switch to an explicit AdamW + diffuser cosine schedule and check train/lr varies.",
        "zh": "train/lr 在 {points} 个点（步 {steps}）上恒为 {lr_max}，而调度器为 {scheduler}："
              "改用显式 AdamW + diffuser cosine，并确认 train/lr 随步数变化。"},
    "lr_flat_as_configured": {   # lr_flat on a configured constant schedule (finding_text picks it)
        "en": "Logged train/lr is flat at {lr_max} over {points} points (steps {steps}), as its {scheduler} "
              "scheduler says: a constant LR by choice, nothing to fix.",
        "zh": "train/lr 在 {points} 个点（步 {steps}）上恒为 {lr_max}，与调度器 {scheduler} 一致："
              "这是选择的恒定学习率，无需修正。"},
    "lr_low": {
        "en": "Base LR {lr} is below the usual range {usual_range} for {policy}: learning is underpowered.",
        "zh": "基础学习率 {lr} 低于 {policy} 的常用范围 {usual_range}：学习偏慢。"},
    "lr_high": {
        "en": "Base LR {lr} is far above the usual range {usual_range} for {policy} (over {far_factor}× its top) "
              "and train/loss stalls: late-window mean {loss_late} vs {loss_start} in the first window "
              "(×{late_over_early}, steps {window_steps}; {change_noise_units} noise units, noise sd {noise_sd}). "
              "Lower the LR into the usual range.",
        "zh": "基础学习率 {lr} 远高于 {policy} 的常用范围 {usual_range}（超过上限的 {far_factor} 倍），且 train/loss "
              "停滞：最近窗口均值 {loss_late}，第一个窗口 {loss_start}（×{late_over_early}，步 {window_steps}；"
              "{change_noise_units} 个噪声单位，噪声 sd {noise_sd}）。"
              "请把学习率降到常用范围内。"},
    "data_bound": {
        "en": "Data-bound loop: dataloading takes {data_share:.0%} of each step ({dataloading_s} s vs update "
              "{update_s} s, num_workers={num_workers}).",
        "zh": "数据加载成为瓶颈：每步 {data_share:.0%} 的时间在加载数据（{dataloading_s} s，对比更新 {update_s} s，"
              "num_workers={num_workers}）。"},
    "eval_too_frequent": {
        "en": "Eval too frequent: {evals} evals over {steps} steps; eval time share {eval_share}.",
        "zh": "评估过于频繁：{steps} 步内评估 {evals} 次；评估耗时占比 {eval_share}。"},
    "ot_weak": {
        "en": "OT coupling weak: median {coupling} {pi_diag_median} < {threshold} (steps {window_steps}; "
              "after step {after_step}: {reached_after_step}). Strengthen OT: raise lambda_ot, sharpen reg.",
        "zh": "OT 耦合偏弱：{coupling} 中位数 {pi_diag_median} < {threshold}（步 {window_steps}；"
              "已过 {after_step} 步：{reached_after_step}）。可增大 lambda_ot、减小 reg。"},
    "ot_mass_destroyed": {
        "en": "OT mass is being destroyed: median pi_sum {pi_sum_median} < {threshold} (reg={reg}, tau_src={tau_src}, "
              "tau_tgt={tau_tgt}; implied cost {implied_cost}, mass = exp(-c/(reg+tau_src+tau_tgt))). Raise tau "
              "or normalize the costs.",
        "zh": "OT 质量被大量销毁：pi_sum 中位数 {pi_sum_median} < {threshold}（reg={reg}，tau_src={tau_src}，"
              "tau_tgt={tau_tgt}；对应代价约 {implied_cost}，质量 = exp(-c/(reg+tau_src+tau_tgt))）。"
              "增大 tau 或归一化代价。"},
    "ot_strong": {
        "en": "OT coupling too strong: {coupling} {pi_diag_median} (above {max_pi_diag} in {frac_above:.0%} of the "
              "last window), pi_diag/pi_sum={pi_diag_over_pi_sum}: alignment may mask the BC signal.",
        "zh": "OT 耦合过强：{coupling} {pi_diag_median}（最近窗口中 {frac_above:.0%} 的点高于 {max_pi_diag}），"
              "pi_diag/pi_sum={pi_diag_over_pi_sum}：对齐可能掩盖 BC 信号。"},
    "cost_dominance": {
        "en": "Cost term {dominant} dominates: {dominant_cost} vs {next} {next_cost} ({ratio}×, {metric}). "
              "Rebalance the weights.",
        "zh": "代价项 {dominant} 占主导：{dominant_cost}，对比 {next} {next_cost}（{ratio} 倍，{metric}）。"
              "请重新平衡权重。"},
    "embed_collapse": {
        "en": "Image embeddings collapsed ({summary}; last/first) with ot.cost_norm={cost_norm}: the image "
              "terms fade and the labels alone decide the plan. The encoder may be shrinking its embeddings to "
              "lower a scale-dependent OT cost, or BC alone may make them near-constant (the policy leaning on "
              "the state: in the cpu-small study naive co-training, lambda_ot=0, shrank them as much). Use "
              "ot.cost_norm=median (scale-invariant) so the image terms count in the plan.",
        "zh": "图像嵌入已坍缩（{summary}；末/初比值），ot.cost_norm={cost_norm}：图像项因此失效，传输计划只由标签"
              "决定。可能是编码器缩小嵌入以降低与尺度相关的 OT 代价，也可能仅由 BC 训练导致嵌入近乎恒定（策略依赖状态："
              "cpu-small 研究中 lambda_ot=0 的朴素协同训练也同样缩小）。建议使用 ot.cost_norm=median（尺度不变），"
              "使图像项在传输计划中重新起作用。"},
    "ot_skipped": {
        "en": "OT term skipped {ot_skipped} times (non-finite cost or plan), last at step {last_step}.",
        "zh": "OT 项被跳过 {ot_skipped} 次（代价或传输计划非有限值），最近一次在步 {last_step}。"},
    "ot_not_converged": {
        "en": "The OT solver stopped at ot.max_iters={max_iters} before reaching ot.tol on {maxed_pct}% of the steps "
              "{steps} (median {median_iters} iterations per solve): the plan is an unconverged iterate, not the "
              "optimal plan. Raise ot.max_iters; a larger ot.reg or smaller tau also converge faster.",
        "zh": "OT 求解器在步 {steps} 中有 {maxed_pct}% 的步骤在达到 ot.tol 之前就停在 ot.max_iters={max_iters}"
              "（每次求解中位数 {median_iters} 次迭代）：传输计划是未收敛的迭代结果，而非最优计划。建议增大 "
              "ot.max_iters；更大的 ot.reg 或更小的 tau 也收敛更快。"},
    "instability": {
        "en": "Instability: {detail}.",
        "zh": "训练不稳定：{detail}。"},
    "divergence": {
        "en": "Divergence: train/loss fell to a window mean of {loss_low} ({low_window}), then rose to {loss_late} "
              "(x{rise}, limit x{max_rise}; {change_noise_units} noise units; steps {window_steps}; non-finite after "
              "finite values: {non_finite_after_finite}). Lower the LR.",
        "zh": "训练发散：train/loss 曾降到窗口均值 {loss_low}（{low_window}），随后升到 {loss_late}（×{rise}，上限 "
              "×{max_rise}；{change_noise_units} 个噪声单位；步 {window_steps}；有限值之后出现非有限值："
              "{non_finite_after_finite}）。请降低学习率。"},
    "overfitting": {
        "en": "Overfitting: offline eval loss rose from its best window {best_window} (mean {best_mean}) to the late "
              "window {late_window} (mean {late_mean}, +{rise_pct}%): {change_noise_units} noise units, noise sd "
              "{noise_sd} per point (beyond the noise from {z_needed}), while train/loss kept falling "
              "({train_at_best} -> {late_train}). Keep the checkpoint nearest step {best_step} (the best window's "
              "centre); more regularisation (weight decay) or less training.",
        "zh": "过拟合：离线评估损失从最佳窗口 {best_window}（均值 {best_mean}）升到最后窗口 {late_window}（均值 "
              "{late_mean}，+{rise_pct}%），为 {change_noise_units} 个噪声单位（每点噪声 sd {noise_sd}，超过 "
              "{z_needed} 才算超出噪声），而 train/loss 仍在下降（{train_at_best} -> {late_train}）。保留最接近步 "
              "{best_step}（最佳窗口中心）的检查点；加强正则化（weight decay）或缩短训练。"},
    "schedule_mismatch": {
        "en": "The LR schedule ({scheduler}) cannot do what its config says within the run: warmup {warmup} of "
              "{steps} steps ({warmup_frac}× the run's length); the logged LR reached {lr_reached_frac} of the base "
              "LR. Shorten the warmup.",
        "zh": "学习率调度（{scheduler}）在本次运行内无法按配置执行：预热 {warmup} 步，总共 {steps} 步（占 "
              "{warmup_frac}× 运行长度）；记录的学习率只达到基础学习率的 {lr_reached_frac}。请缩短预热。"},
    "plateau": {
        "en": "Diminishing returns on {metric}: gain {first_half_gain} in the first half "
              "({first_half_gain_noise_units} noise units) vs {second_half_gain} in the second "
              "({second_half_gain_noise_units}; noise sd {noise_sd}; window means, steps {steps}).",
        "zh": "{metric} 收益递减：前半程下降 {first_half_gain}（{first_half_gain_noise_units} 个噪声单位），后半程仅 "
              "{second_half_gain}（{second_half_gain_noise_units}；噪声 sd {noise_sd}；窗口均值，步 {steps}）。"},
    "rollback": {
        "en": "ROLLBACK: late-window mean eval loss {child_eval} ({child_window}) is {regression_pct}% worse than "
              "parent {parent}'s {parent_eval} ({parent_window}): {change_noise_units} noise units (beyond the "
              "noise from {z_needed}); threshold {threshold_pct}%.",
        "zh": "需要回滚：最后窗口 eval loss 均值 {child_eval}（{child_window}）比父运行 {parent} 的 {parent_eval}"
              "（{parent_window}）差 {regression_pct}%：{change_noise_units} 个噪声单位（超过 {z_needed} 才算超出"
              "噪声）；阈值 {threshold_pct}%。"},
    "rollback_unchecked": {
        "en": "Rollback not checked against parent {parent}: {metric} not logged in both runs.",
        "zh": "无法与父运行 {parent} 做回滚检查：两者未都记录 {metric}。"},
}


def check_lang(lang: str) -> str:
    """Validate ``--lang``."""
    if lang not in LANGS:
        raise UserError(f"--lang {lang}: unknown language; use one of {', '.join(LANGS)}")
    return lang


def t(lang: str, key: str, **kw) -> str:
    """Section/label text in ``lang``."""
    return TEXT[lang][key].format(**kw) if kw else TEXT[lang][key]


class _Safe(dict):
    def __missing__(self, key):
        return "n/a"


def finding_text(lang: str, finding) -> str:
    """One sentence for a finding, with its evidence numbers filled in."""
    ev = dict(finding.evidence)
    if finding.id == "instability":
        parts = []
        if "grad_norm_spikes" in ev:
            parts.append(f"{ev['grad_norm_spikes']} grad_norm spikes, e.g. step/value/median {ev['spike_examples']}")
        if "loss_oscillation" in ev:
            parts.append(f"train/loss oscillation {ev['loss_oscillation']}")
        if "non_finite_loss" in ev:
            parts.append(f"{ev['non_finite_loss']} non-finite train/loss values")
        ev["detail"] = "; ".join(parts)
    if finding.id == "eval_too_frequent" and isinstance(ev.get("eval_share"), float):
        ev["eval_share"] = f"{ev['eval_share']:.0%}"
    # lr_flat is information only on a configured constant schedule (rules_optim.LrFlat): nothing to fix
    key = "lr_flat_as_configured" if finding.id == "lr_flat" and finding.severity == "info" else finding.id
    for k, v in list(ev.items()):
        if v is None:
            ev[k] = "n/a"
    try:
        return FINDINGS[key][lang].format_map(_Safe(ev))
    except (ValueError, TypeError):   # a format spec applied to 'n/a'
        return FINDINGS[key][lang].replace(":.0%", "").format_map(_Safe(ev))


PHRASES_ZH = {
    "longer training": "更长训练",
    "(on top of a)": "（在 a 的基础上）",
    "rollback: revert": "回滚：恢复",
    "if the next run confirms": "若下一次运行证实方向",
    "lower ": "降低 ",
    "raise ": "提高 ",
    "rollback": "回滚",
    "roll back to the parent config": "回滚到父运行的配置",
    "halve the LR and retry": "学习率减半后重试",
    "lower ot.lambda_ot or raise ot.reg": "减小 ot.lambda_ot 或增大 ot.reg",
    "spikes or train/loss oscillation": "出现尖峰或 train/loss 振荡",
    "sustained": "持续",
    "parent's best": "父运行最佳值",
    "late-window mean": "最后窗口均值",
    "× the parent's": "× 父运行",
    "and beyond the two runs' noise": "且超出两次运行的噪声",
    "still improving": "仍在改善",
    "no rule triggered: same settings, longer": "没有规则触发：保持设置，延长训练",
    "triggered by": "触发规则",
    "note": "备注",
    "not logged": "未记录",
}


def prose(lang: str, text: str) -> str:
    """Translate the fixed English phrases of proposals and triggers (numbers and keys stay as they are)."""
    if lang != "zh":
        return text
    for en, zh in sorted(PHRASES_ZH.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(en, zh)
    return text
