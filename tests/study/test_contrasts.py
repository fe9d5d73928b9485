"""The pre-registered contrasts: the paired t over seeds against scipy's ttest_rel, the layout-paired mean by hand."""

import statistics

import pytest
from scipy import stats

from dpot.bench.study.contrasts import contrast, paired_over_layouts, paired_over_seeds, render_contrasts


def _arm(rates_per_seed: dict[int, list[int]]) -> dict[int, str]:
    return {s: "".join(str(x) for x in eps) for s, eps in rates_per_seed.items()}


A = _arm({0: [1, 1, 0, 1, 0, 1, 1, 0], 1: [1, 0, 0, 1, 0, 1, 1, 1], 2: [1, 1, 1, 1, 0, 1, 0, 0],
          3: [0, 1, 1, 1, 1, 1, 1, 1]})
B = _arm({0: [1, 0, 0, 1, 0, 0, 1, 0], 1: [0, 0, 0, 1, 0, 1, 1, 0], 2: [1, 1, 0, 0, 0, 1, 0, 0],
          3: [0, 1, 1, 0, 0, 1, 1, 0], 9: [1, 1, 1, 1, 1, 1, 1, 1]})   # seed 9 has no partner: left out


def test_seed_paired_t_equals_scipy_ttest_rel():
    ra = [A[s].count("1") / 8 for s in range(4)]
    assert len(set(a - b for a, b in zip(ra, [B[s].count("1") / 8 for s in range(4)]))) > 1  # sd > 0
    rb = [B[s].count("1") / 8 for s in range(4)]
    res = paired_over_seeds(A, B)
    ref = stats.ttest_rel(ra, rb)
    assert res.n == 4 and res.mean == pytest.approx(statistics.fmean(ra) - statistics.fmean(rb))
    assert res.p_two_sided == pytest.approx(ref.pvalue)
    assert res.p_greater == pytest.approx(stats.ttest_rel(ra, rb, alternative="greater").pvalue)
    ci = stats.ttest_rel(ra, rb).confidence_interval(0.95)
    assert res.ci95 == pytest.approx((ci.low, ci.high))
    assert res.ci90[0] > res.ci95[0] and res.ci90[1] < res.ci95[1]


def test_layout_paired_mean_by_hand_and_seed_restriction():
    res = paired_over_layouts(A, B, seeds=[0, 1])
    by_hand = [(int(A[0][k]) + int(A[1][k])) / 2 - (int(B[0][k]) + int(B[1][k])) / 2 for k in range(8)]
    assert res.n == 8 and res.mean == pytest.approx(statistics.fmean(by_hand))
    assert res.sd == pytest.approx(statistics.stdev(by_hand))
    with pytest.raises(ValueError, match="differ in episodes"):
        paired_over_layouts({0: "101"}, {0: "10"})


def test_contrast_record_and_rendering():
    rec = contrast("ot", "naive", "target_ood", A, B, seeds=[0, 1, 2])
    assert rec["seeds"] == [0, 1, 2] and set(rec["per_seed"]) == {"0", "1", "2"}
    assert rec["seed_paired"]["n"] == 3 and rec["layout_paired"]["n"] == 8
    lines = render_contrasts([rec])
    row = next(x for x in lines if x.startswith("| ot − naive"))
    assert "| target_ood | 3 |" in row and f"{100 * rec['seed_paired']['mean']:+.1f}" in row
