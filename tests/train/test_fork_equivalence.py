"""A fork file computes the fork's loss in dpot (issue 30): an oracle written here from the LeRobot OT fork's
published formula (``src/lerobot/policies/ot_train/ot_loss.py``: per feature
``M_k = w_embed cdist(emb)^2 + w_label cdist(label)^2`` on the last image frame's embedding and the first action of
the chunk, raw units; ``M = sum_k M_k``; POT's
``sinkhorn_knopp_unbalanced(a, b, M, reg, (tau_src, tau_tgt), c=c)`` with uniform ``a``, ``b`` and, with
``heuristic``, ``c = I/N``, ``N = min(n_src, n_tgt)``; ``ot_loss = sum pi M``, ``ot_pi_sum = sum pi``,
``ot_pi_diag = trace pi``, ``ot_cost/<term> = mean M_k``) and dpot's plan, loss, per-term costs and metrics on the
same batches: random ones, and the batches a 3-step ``dpot train`` builds from the reference report's iter4a
(heuristic on), iter5b (heuristic off) and ACT files. Where POT fails at the fork's raw scales, the test says what the
fork then does and checks what dpot does."""

from __future__ import annotations

import copy
import json
import warnings

import draccus
import numpy as np
import ot
import pytest
import torch
from fork_helpers import fork_config, iter5b
from train_helpers import TINY_ACT, read_metrics, tiny_config

from dpot.cli import main as dpot_main
from dpot.config import OTConfig, load_train_config
from dpot.errors import UserError
from dpot.fork_config import translate_fork_config
from dpot.ot import DomainFeatures, OTAlignmentLoss

CAMS = ("top", "wrist")
RTOL = 1e-6


# ------------------------------------------------------------------ the oracle: the fork's formula, POT as the solver


def fork_oracle(src: DomainFeatures, tgt: DomainFeatures, loss_config: dict, partners: np.ndarray | None = None,
                **pot_kw) -> tuple[np.ndarray, dict[str, float], list[warnings.WarningMessage]]:
    """``(plan, metrics, POT's warnings)`` as the fork computes them on these items (float64).

    ``partners``: the batch's partner pairs when they are not the plan's diagonal (dpot's masked rows); the fork's
    ``c`` is ``1/N`` there (``N = min(n_src, n_tgt)``). Images: the policy's embedding of the last frame; any other
    key: the raw value at the fork's time step (action: the first of the chunk; state: the last), then dim_slice."""
    terms = {}
    for f in loss_config["features"]:
        key = f["tgt_key"]
        if key.startswith("observation.images."):
            cam = key.removeprefix("observation.images.")
            xs, xt = src.embeds[cam].double(), tgt.embeds[cam].double()
            xs, xt = (xs[:, -1], xt[:, -1]) if xs.ndim == 3 else (xs, xt)
            m = f["weight_embed"] * torch.cdist(xs, xt) ** 2
        else:
            xs, xt = src.raw_labels[key].double(), tgt.raw_labels[key].double()
            step = 0 if key == "action" else -1
            xs, xt = xs[:, step], xt[:, step]
            if f.get("dim_slice") is not None:
                lo, hi = f["dim_slice"]
                xs, xt = xs[:, lo:hi], xt[:, lo:hi]
            m = f["weight_label"] * torch.cdist(xs, xt) ** 2
        terms[f["term_name"]] = m.numpy()
    M = sum(terms.values())
    n, m_ = M.shape
    a, b = np.full(n, 1.0 / n), np.full(m_, 1.0 / m_)
    c = None
    if loss_config["heuristic"]:
        big_n = min(n, m_)
        c = np.zeros_like(M)
        if partners is None:
            c[np.arange(big_n), np.arange(big_n)] = 1.0 / big_n
        else:
            c[partners] = 1.0 / big_n
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pi = ot.unbalanced.sinkhorn_knopp_unbalanced(a, b, M, loss_config["reg"],
                                                     (loss_config["tau_src"], loss_config["tau_tgt"]), c=c, **pot_kw)
    if not np.isfinite(pi).all():   # the fork's fallback
        pi = np.full_like(M, 1.0 / (n * m_))
    metrics = {"ot_loss": float((pi * M).sum()), "ot_pi_sum": float(pi.sum())}
    if n == m_:
        metrics["ot_pi_diag"] = float(np.trace(pi) if partners is None else pi[partners].sum())
    metrics.update({f"ot_cost/{k}": float(v.mean()) for k, v in terms.items()})
    metrics.update({f"_M/{k}": v for k, v in terms.items()})
    return pi, metrics, list(caught)


def kl_stationarity(plan: np.ndarray, M: np.ndarray, partners: np.ndarray, reg: float, ts: float, tt: float) -> float:
    """Largest violation, over the partner pairs, of the diagonal problem's first-order condition
    ``M + reg log(pi / c) + tau_src log(pi / a) + tau_tgt log(pi / b) = 0`` (uniform a, b; c = 1/min(n, m))."""
    n, m = M.shape
    p = plan[partners]
    res = M[partners] + reg * np.log(p * min(n, m)) + ts * np.log(p * n) + tt * np.log(p * m)
    return float(np.abs(res).max())


# ------------------------------------------------------------------ dpot's side


def fork_block(heuristic: bool, *, reg=0.02, tau=0.01, label_slice=(0, 2), w_embed=0.5, w_label=0.02) -> dict:
    """A fork ``ot`` block (two cameras, the action label), as the reference report's files spell it."""
    features = [{"src_key": f"observation.images.{c}", "tgt_key": f"observation.images.{c}",
                 "use_learned_embed": True, "weight_embed": w_embed, "weight_label": 0.0, "term_name": f"img_{c}"}
                for c in CAMS]
    features.append({"src_key": "action", "tgt_key": "action", "dim_slice": list(label_slice),
                     "use_learned_embed": False, "embed_name": None, "weight_embed": 0.0, "weight_label": w_label,
                     "term_name": "action_lbl"})
    return {"enable": True, "src_root": "data/sim", "batch_ratio": 0.5, "lambda_ot": 0.1, "window_size": 20,
            "loss_config": {"features": features, "reg": reg, "tau_src": tau, "tau_tgt": tau, "heuristic": heuristic}}


def dpot_ot(block: dict, **over) -> OTConfig:
    """dpot's ``ot`` section from the fork block (the same translation ``dpot train --config_path`` runs)."""
    raw, _ = translate_fork_config({"dataset": {"repo_id": "x"}, "ot": block})
    cfg = draccus.decode(OTConfig, raw["ot"])
    for k, v in over.items():
        setattr(cfg, k, v)
    cfg.validate()
    return cfg


def random_domain(g, n: int, scale: float, d: int = 16, horizon: int = 8) -> DomainFeatures:
    emb = {c: torch.randn(n, 2, d, generator=g, dtype=torch.float64) * scale for c in CAMS}
    raw_action = torch.randn(n, horizon, 4, generator=g, dtype=torch.float64) * 0.3
    return DomainFeatures(embeds=emb, labels={"action": (raw_action - 0.1) / 0.3}, raw_labels={"action": raw_action},
                          phase=torch.rand(n, generator=g, dtype=torch.float64))


def assert_equal_to_oracle(res, pi_ref: np.ndarray, m_ref: dict, lam: float) -> None:
    plan = res.plan.numpy()
    np.testing.assert_allclose(plan, pi_ref, rtol=RTOL, atol=1e-300)
    m = res.metrics
    for key in ("ot_loss", "ot_pi_sum", "ot_pi_diag"):
        assert m[key] == pytest.approx(m_ref[key], rel=RTOL), key
    assert m["ot_loss_scaled"] == pytest.approx(lam * m_ref["ot_loss"], rel=RTOL)
    for key, value in m_ref.items():
        if key.startswith("ot_cost/"):
            assert m[key] == pytest.approx(value, rel=RTOL), key
        if key.startswith("_M/"):   # the per-term weighted cost matrices
            np.testing.assert_allclose(res.costs[key[3:]].numpy(), value, rtol=RTOL, atol=1e-12)


# ------------------------------------------------------------------ random batches


@pytest.mark.parametrize("heuristic", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_random_batches_equal_the_fork_formula(heuristic, seed):
    """iter4a-like (heuristic on: the diagonal prior) and iter5b-like (off: no prior) blocks, float64."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = random_domain(g, 8, scale=0.05), random_domain(g, 8, scale=0.05)
    block = fork_block(heuristic, reg=0.02 if heuristic else 0.05, tau=0.01 if heuristic else 0.05)
    cfg = dpot_ot(block, max_iters=100_000, tol=1e-12)
    assert cfg.resolved_prior() == ("diagonal" if heuristic else "none") and cfg.cost_norm == "none"
    res = OTAlignmentLoss(cfg, cameras=list(CAMS))(src, tgt)
    pi_ref, m_ref, caught = fork_oracle(src, tgt, block["loss_config"], numItermax=100_000, stopThr=1e-15)
    assert not caught, [str(w.message) for w in caught]
    assert_equal_to_oracle(res, pi_ref, m_ref, lam=0.1)
    if heuristic:   # the plan lives on the partner pairs: pi_diag == pi_sum, every other entry exactly 0
        assert res.metrics["ot_pi_diag"] == res.metrics["ot_pi_sum"]
        assert (res.plan.numpy()[~np.eye(8, dtype=bool)] == 0).all() and (pi_ref[~np.eye(8, dtype=bool)] == 0).all()
        assert 0 < res.metrics["ot_pi_pair_cv"]


def test_default_solver_settings_agree_with_pots_defaults():
    """With each side's default stopping rule (POT: 1e-6 on the scalings, 1000 iterations; dpot: ot.tol 1e-5 on the
    potentials, ot.max_iters 200) the no-prior plans agree to 1e-4; the diagonal prior is closed form in dpot."""
    g = torch.Generator().manual_seed(7)
    src, tgt = random_domain(g, 8, scale=0.05), random_domain(g, 8, scale=0.05)
    for heuristic in (True, False):
        block = fork_block(heuristic, reg=0.05, tau=0.05)
        res = OTAlignmentLoss(dpot_ot(block), cameras=list(CAMS))(src, tgt)
        pi_ref, m_ref, _ = fork_oracle(src, tgt, block["loss_config"])
        np.testing.assert_allclose(res.plan.numpy(), pi_ref, rtol=1e-4, atol=1e-300)
        assert res.metrics["ot_loss"] == pytest.approx(m_ref["ot_loss"], rel=1e-4)


def test_one_far_item_stops_pot_and_dpot_keeps_the_formula():
    """At the fork's reg 0.02 with raw squared distances, one item whose costs all exceed ~745 reg (15 here: an
    outlier frame, a badly paired demo) makes a row of POT's kernel exp(-M / reg) underflow to 0: POT warns
    'Numerical errors at iteration 0' and returns its starting kernel c * exp(-M / reg) for the WHOLE batch (finite,
    so the fork's uniform fallback does not fire): every pair's mass is then off its fixed point, not only the far
    one's. dpot's closed form meets the problem's first-order condition on every partner pair to float64 precision
    (the far pair's mass exp(-C / (reg + tau_src + tau_tgt)) is tiny but positive); its log-domain Sinkhorn (no
    prior) needs no fallback either."""
    g = torch.Generator().manual_seed(3)
    src, tgt = random_domain(g, 8, scale=0.05), random_domain(g, 8, scale=0.05)
    for cam in CAMS:
        src.embeds[cam][0] += 1.1          # source item 0 far from every target item (squared distances ~20)
    block = fork_block(True)
    pi_pot, m_pot, caught = fork_oracle(src, tgt, block["loss_config"])
    M = sum(v for k, v in m_pot.items() if k.startswith("_M/"))
    assert (M[0] / 0.02).min() > 745 and (np.diag(M)[1:] / 0.02).max() < 745   # exp underflows below -745
    assert any("Numerical errors at iteration 0" in str(w.message) for w in caught)
    eye = np.eye(8, dtype=bool)
    c = eye / 8.0
    np.testing.assert_allclose(pi_pot, c * np.exp(-M / 0.02), rtol=1e-12)   # what the fork would have trained on
    res = OTAlignmentLoss(dpot_ot(block), cameras=list(CAMS))(src, tgt)
    plan = res.plan.numpy()
    assert np.isfinite(plan).all() and (plan[eye] > 0).all() and (plan[~eye] == 0).all()
    assert kl_stationarity(plan, M, eye, 0.02, 0.01, 0.01) < 1e-9
    pot_on_pairs = np.where(eye, np.maximum(pi_pot, 1e-300), 0.0)
    assert kl_stationarity(pot_on_pairs, M, eye, 0.02, 0.01, 0.01) > 1.0   # POT's kernel is off the fixed point
    assert res.metrics["ot_skipped"] == 0.0 and res.loss.item() > 0
    nop = OTAlignmentLoss(dpot_ot(fork_block(False)), cameras=list(CAMS))(src, tgt)   # Sinkhorn, log domain
    assert nop.metrics["ot_skipped"] == 0.0 and np.isfinite(nop.plan.numpy()).all() and nop.metrics["ot_pi_sum"] > 0


def test_unequal_halves_follow_the_fork_n_min_rule():
    """batch_ratio != 0.5: 6 source and 10 target items; the fork's c = 1/N on (i, i), i < N = min(6, 10). POT stops
    at iteration 0 (target columns 6..9 have no partner: K^T u = 0), warns, and returns c * exp(-M / reg): that is
    what the fork trains on. dpot solves the formula: zero off the partner pairs, the first-order condition met with
    a = 1/6, b = 1/10, c = 1/6."""
    g = torch.Generator().manual_seed(5)
    src, tgt = random_domain(g, 6, scale=0.05), random_domain(g, 10, scale=0.05)
    block = fork_block(True)
    pi_pot, m_pot, caught = fork_oracle(src, tgt, block["loss_config"])
    M = sum(v for k, v in m_pot.items() if k.startswith("_M/"))
    c = np.zeros_like(M)
    c[np.arange(6), np.arange(6)] = 1 / 6
    assert any("Numerical errors at iteration 0" in str(w.message) for w in caught)
    np.testing.assert_allclose(pi_pot, c * np.exp(-M / 0.02), rtol=1e-12)
    res = OTAlignmentLoss(dpot_ot(block), cameras=list(CAMS))(src, tgt)
    partners = np.zeros((6, 10), dtype=bool)
    partners[np.arange(6), np.arange(6)] = True
    plan = res.plan.numpy()
    assert (plan[~partners] == 0).all() and (plan[partners] > 0).all()
    assert kl_stationarity(plan, M, partners, 0.02, 0.01, 0.01) < 1e-9
    assert res.metrics["ot_pi_diag"] == res.metrics["ot_pi_sum"]


def test_masked_rows_put_the_prior_on_the_partner_pairs():
    """With masked-out items the partner pairs are not the plan's diagonal: the prior, ot_pi_diag and the snapshot's
    ``paired`` array name the same entries (positions in the batch before masking)."""
    g = torch.Generator().manual_seed(11)
    src, tgt = random_domain(g, 8, scale=0.05), random_domain(g, 8, scale=0.05)
    src.mask = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool)
    tgt.mask = torch.ones(8, dtype=torch.bool)
    block = fork_block(True)
    res = OTAlignmentLoss(dpot_ot(block), cameras=list(CAMS))(src, tgt)
    partners = np.zeros((5, 8), dtype=bool)
    partners[np.arange(5), [0, 1, 3, 5, 6]] = True          # kept source rows 0, 1, 3, 5, 6 meet those targets
    np.testing.assert_array_equal(res.paired.numpy(), partners)
    sel = lambda d: DomainFeatures({k: v[d.mask] for k, v in d.embeds.items()}, {},  # noqa: E731
                                   raw_labels={k: v[d.mask] for k, v in d.raw_labels.items()})
    _, m_ref, caught = fork_oracle(sel(src), sel(tgt), block["loss_config"], partners=partners)
    assert any("Numerical errors at iteration 0" in str(w.message) for w in caught)   # 3 targets without a partner
    M = sum(v for k, v in m_ref.items() if k.startswith("_M/"))
    np.testing.assert_allclose(sum(c.numpy() for c in res.costs.values()), M, rtol=RTOL)
    plan = res.plan.numpy()
    assert (plan[~partners] == 0).all() and (plan[partners] > 0).all()
    assert kl_stationarity(plan, M, partners, 0.02, 0.01, 0.01) < 1e-9    # a = 1/5, b = 1/8, c = 1/min(5, 8)
    assert res.metrics["ot_pi_diag"] == pytest.approx(res.metrics["ot_pi_sum"], rel=1e-12)


# ------------------------------------------------------------------ config: what a fork file resolves to


def test_fork_file_resolves_to_the_fork_loss_keys(tmp_path):
    for heuristic, prior in ((True, "diagonal"), (False, "none")):
        raw = fork_config(label_slice=(0, 2))
        raw["ot"]["loss_config"]["heuristic"] = heuristic
        path = tmp_path / f"fork_{heuristic}.json"
        path.write_text(json.dumps(raw))
        cfg = load_train_config(path)
        assert (cfg.ot.prior, cfg.ot.cost_norm) == (prior, "none")   # plain squared distances
        embeds = [f for f in cfg.ot.features if f.type == "embed"]
        (label,) = [f for f in cfg.ot.features if f.type == "label"]
        assert all(f.time_index == -1 for f in embeds)
        assert (label.key, label.time_index, label.normalized) == ("action", 0, False)
    # the fork's override of heuristic carries its prior along
    cfg = load_train_config(tmp_path / "fork_True.json", ["--ot.loss_config.heuristic=false"])
    assert (cfg.ot.heuristic, cfg.ot.prior) == (False, "none")
    # dpot's own files keep their meaning: no prior key = the temporal prior while heuristic is on
    own = tiny_config({"tgt": "t", "src": "s"})
    (tmp_path / "own.json").write_text(json.dumps(own))
    cfg = load_train_config(tmp_path / "own.json")
    assert cfg.ot.prior is None and cfg.ot.resolved_prior() == "temporal" and cfg.ot.cost_norm == "dim"


def test_diagonal_prior_without_paired_batches_is_one_error(tmp_path):
    own = tiny_config({"tgt": "t", "src": "s"}, ot={"lambda_ot": 0.1, "heuristic": False, "prior": "diagonal"})
    (tmp_path / "own.json").write_text(json.dumps(own))
    with pytest.raises(UserError) as err:
        load_train_config(tmp_path / "own.json")
    msg = str(err.value)
    assert msg.startswith("ot.prior: diagonal puts the plan on the batch's partner pairs") and "\n" not in msg
    assert "ot.heuristic=true" in msg and "ot.pair_info_path" in msg


# ------------------------------------------------------------------ real batches: dpot train on the report's files


def _fork_file(toy_data, tmp_path, cfg: dict, act: bool = False) -> str:
    cfg = copy.deepcopy(cfg)
    cfg["policy"] = ({**TINY_ACT, "use_amp": False} if act else tiny_config(toy_data)["policy"] | {"use_amp": False})
    path = tmp_path / "fork.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _captured_training(toy_data, tmp_path, monkeypatch, cfg: dict, act: bool = False):
    """Train 3 steps from the fork file; return ``(run dir, [(OTConfig, src, tgt, OTResult)])`` of each OT call."""
    calls = []
    forward = OTAlignmentLoss.forward

    def spy(self, src, tgt):
        res = forward(self, src, tgt)
        detach = lambda d: DomainFeatures({k: v.detach().clone() for k, v in d.embeds.items()},  # noqa: E731
                                          {k: v.detach().clone() for k, v in d.labels.items()},
                                          None if d.phase is None else d.phase.clone(),
                                          None if d.mask is None else d.mask.clone(),
                                          {k: v.detach().clone() for k, v in d.raw_labels.items()})
        calls.append((self.cfg, detach(src), detach(tgt), res))
        return res

    monkeypatch.setattr(OTAlignmentLoss, "forward", spy)
    out = tmp_path / "run"
    rc = dpot_main(["train", f"--config_path={_fork_file(toy_data, tmp_path, cfg, act)}",
                    f"--dataset.root={toy_data['tgt']}", f"--ot.src_root={toy_data['src']}", f"--output_dir={out}",
                    "--steps=3", "--batch_size=8", "--log_freq=1", "--eval_freq=0", "--save_freq=1000",
                    "--num_workers=0", "--ot.plan_log_every=1"])
    assert rc == 0
    return out, calls


def _float64(d: DomainFeatures) -> DomainFeatures:
    return DomainFeatures({k: v.double() for k, v in d.embeds.items()}, {k: v.double() for k, v in d.labels.items()},
                          d.phase, d.mask, {k: v.double() for k, v in d.raw_labels.items()})


def _check_real_batches(cfg_raw: dict, calls, out, heuristic: bool) -> None:
    loss_config = {**cfg_raw["ot"]["loss_config"]}
    rows = read_metrics(out)
    assert len(calls) == 3 and [r["step"] for r in rows] == [1, 2, 3]
    for (cfg, src, tgt, res), row in zip(calls, rows):
        # the run's own float32 step logged what its OTResult says, under the fork's names
        assert row["train/ot_loss"] == pytest.approx(res.metrics["ot_loss"], rel=1e-6)
        if heuristic:
            assert row["train/ot_pi_diag"] == row["train/ot_pi_sum"]    # at every logged step
        # the same batch in float64: dpot's loss equals the oracle's
        cfg64 = copy.deepcopy(cfg)
        cfg64.max_iters, cfg64.tol = 100_000, 1e-12
        s64, t64 = _float64(src), _float64(tgt)
        mine = OTAlignmentLoss(cfg64, cameras=list(CAMS))(s64, t64)
        keep_s = np.ones(len(src), bool) if src.mask is None else src.mask.numpy()
        keep_t = np.ones(len(tgt), bool) if tgt.mask is None else tgt.mask.numpy()
        pos_s, pos_t = np.nonzero(keep_s)[0], np.nonzero(keep_t)[0]
        partners = pos_s[:, None] == pos_t[None, :]
        sel = lambda d, k: DomainFeatures({c: v[k] for c, v in d.embeds.items()}, {},  # noqa: E731
                                          raw_labels={c: v[k] for c, v in d.raw_labels.items()})
        pi_ref, m_ref, caught = fork_oracle(sel(s64, torch.from_numpy(keep_s)), sel(t64, torch.from_numpy(keep_t)),
                                            loss_config, partners=partners, numItermax=100_000, stopThr=1e-15)
        if heuristic and partners.shape[0] != partners.shape[1]:
            assert caught   # POT's unequal-halves failure: the fork would train on its kernel here
            assert kl_stationarity(mine.plan.numpy(), sum(c.numpy() for c in mine.costs.values()), partners,
                                   cfg.reg, cfg.tau_src, cfg.tau_tgt) < 1e-9
            continue
        assert not caught, [str(w.message) for w in caught]
        assert_equal_to_oracle(mine, pi_ref, m_ref, lam=cfg.lambda_ot)
    # the plan snapshots agree with the metrics about which entries are the partner pairs, and their costs sum to
    # the solver's cost
    from dpot.analysis.plans import read_plans

    plans = read_plans(out, k=10)
    assert [p.step for p in plans] == [1, 2, 3]
    for p, row in zip(plans, rows):
        assert p.pi_diag == pytest.approx(row["train/ot_pi_diag"], rel=1e-5)
        assert p.cost == pytest.approx(row["train/ot_loss"], rel=1e-4)


@pytest.mark.slow
def test_iter4a_trains_with_the_diagonal_plan_of_the_fork(toy_data, tmp_path, monkeypatch):
    cfg = fork_config(label_slice=(0, 2))
    cfg["ot"]["loss_config"]["features"][0]["term_name"] = "img_top"
    cfg["ot"]["loss_config"]["features"][1]["term_name"] = "img_wrist"
    out, calls = _captured_training(toy_data, tmp_path, monkeypatch, cfg)
    saved = json.loads((out / "train_config.json").read_text())["ot"]
    assert (saved["prior"], saved["cost_norm"]) == ("diagonal", "none")
    _check_real_batches(cfg, calls, out, heuristic=True)


@pytest.mark.slow
def test_iter5b_trains_with_the_fork_plan_without_a_prior(toy_data, tmp_path, monkeypatch):
    cfg = iter5b(fork_config(label_slice=(0, 2)))
    cfg["ot"]["loss_config"]["features"][0]["term_name"] = "img_top"
    cfg["ot"]["loss_config"]["features"][1]["term_name"] = "img_wrist"
    out, calls = _captured_training(toy_data, tmp_path, monkeypatch, cfg)
    assert json.loads((out / "train_config.json").read_text())["ot"]["prior"] == "none"
    _check_real_batches(cfg, calls, out, heuristic=False)


@pytest.mark.slow
def test_act_fork_file_trains_with_the_fork_plan(toy_data, tmp_path, monkeypatch):
    """The report's ACT block (reg 0.2, tau 1.0, sharpness 0.5, top-k: dpot's own DTW pairing with masked rows)."""
    cfg = fork_config(label_slice=(0, 2), sharpness=0.5, topk_src_episodes=2, window_size=8, lambda_ot=0.12,
                      loss_config={"reg": 0.2, "tau_src": 1.0, "tau_tgt": 1.0})
    cfg["ot"]["loss_config"]["features"][0]["term_name"] = "img_top"
    cfg["ot"]["loss_config"]["features"][1]["term_name"] = "img_wrist"
    cfg["use_policy_training_preset"] = True
    out, calls = _captured_training(toy_data, tmp_path, monkeypatch, cfg, act=True)
    _check_real_batches(cfg, calls, out, heuristic=True)


def test_config_convert_writes_the_explicit_keys(tmp_path):
    raw = fork_config(label_slice=(0, 2))
    (tmp_path / "fork.json").write_text(json.dumps(raw))
    assert dpot_main(["config", "convert", str(tmp_path / "fork.json"), str(tmp_path / "dpot.json")]) == 0
    ot = json.loads((tmp_path / "dpot.json").read_text())["ot"]
    assert (ot["prior"], ot["cost_norm"]) == ("diagonal", "none")
    assert [f.get("time_index") for f in ot["features"]] == [-1, -1, 0]
    assert ot["features"][-1]["normalized"] is False
