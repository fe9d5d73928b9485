"""Domain probe: how well a linear classifier tells sim from real on the policy's own per-camera image features.

For each camera the probe takes the features the OT image terms align (:meth:`dpot.policy.PolicyHook.encode`, the
last observation step), of ``n`` source and ``n`` target frames, and fits an L2-regularized logistic regression
``p(real | f) = sigmoid(w . z + b)`` on standardized features ``z = (f - mean) / std`` (mean/std of the fit frames).

Held out: the episodes of each domain are split in two halves (seeded); the classifier is fit on frames of the
first halves and scored on frames of the second, so no episode has frames on both sides (frames of one episode
are near copies). Both sides are balanced (``n/2`` frames per domain each), so chance is 0.5. The result per camera
is the held-out accuracy with a 95 % Wilson interval over the ``n`` held-out frames (frames counted as
independent: the interval is too narrow by the within-episode correlation; across runs, compare the accuracies).

:func:`probe_items` draws the frames, :func:`probe_features` encodes them, :func:`linear_probe` fits and scores
one feature set; :func:`domain_probe` is the three in a row (what ``dpot probe`` and the trainer's
``eval.domain_probe_freq`` call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dpot.data.cotrain import SRC, TGT, EpisodeTable, SampledItem
from dpot.intervals import wilson_interval

__all__ = ["ProbeResult", "probe_items", "probe_features", "linear_probe", "domain_probe", "PROBE_SALT"]

#: seed salt of the probe's episode split and frame draw (``default_rng([seed, PROBE_SALT])``)
PROBE_SALT = 5051


@dataclass
class ProbeResult:
    """Held-out accuracy of the sim-vs-real classifier on one camera's features."""

    accuracy: float
    ci95: tuple[float, float]
    n_test: int
    n_fit: int

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "ci95": list(self.ci95), "n_test": self.n_test, "n_fit": self.n_fit}


def probe_items(src: EpisodeTable, tgt: EpisodeTable, n: int, seed: int) -> tuple[list[SampledItem], list[SampledItem]]:
    """``(fit items, test items)``: each ``n // 2`` source then ``n // 2`` target frames, drawn uniformly (with
    replacement when an episode half has fewer frames) over the frames of disjoint episode halves of each domain
    (each domain needs >= 2 episodes)."""
    rng = np.random.default_rng([int(seed), PROBE_SALT])
    half = max(int(n) // 2, 1)
    out: tuple[list, list] = ([], [])
    for domain, table in ((SRC, src), (TGT, tgt)):
        if len(table) < 2:
            name = "source" if domain == SRC else "target"
            raise ValueError(f"the domain probe needs >= 2 episodes per domain ({name} has {len(table)})")
        order = rng.permutation(len(table))
        k = len(table) // 2
        for side, rows in enumerate((order[:k], order[k:])):
            frames = np.concatenate([table.start[r] + np.arange(table.length[r]) for r in rows])
            pick = rng.choice(frames, size=half, replace=len(frames) < half)
            out[side].extend(SampledItem(domain, int(i), 0.0, False) for i in pick)
    return out


@torch.no_grad()
def probe_features(policy, hook, dataset, items: list[SampledItem], prepare, *, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Camera -> ``[len(items), D]`` features of ``items`` (:meth:`PolicyHook.encode`, last observation step) in
    eval mode. ``dataset``: a :class:`dpot.data.cotrain.CoTrainDataset`; ``prepare(raw) -> batch``: collated items to
    the policy's normalized batch (the trainer's ``prepare_batch``)."""
    was_training = policy.training
    policy.eval()
    feats: dict[str, list[np.ndarray]] = {}
    try:
        with dataset.without_transforms():
            for i in range(0, len(items), batch_size):
                raw = torch.utils.data.default_collate([dataset[it] for it in items[i:i + batch_size]])
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in prepare(raw).items()}
                for cam, f in hook.encode(policy, batch).items():
                    f = f[:, -1] if f.ndim == 3 else f
                    feats.setdefault(cam, []).append(f.float().cpu().numpy())
    finally:
        policy.train(was_training)
    return {cam: np.concatenate(v) for cam, v in feats.items()}


def linear_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
                 l2: float = 1e-2, iters: int = 200) -> ProbeResult:
    """Fit ``min_w mean(BCE(sigmoid(z w + b), y)) + l2 * |w|^2`` (LBFGS, float64) on the fit set, standardized
    with its own mean/std (std floored at 1e-8), and score ``1[z w + b > 0] == y`` on the test set."""
    mean, std = x_fit.mean(0), np.maximum(x_fit.std(0), 1e-8)
    zf = torch.as_tensor((x_fit - mean) / std, dtype=torch.float64)
    zt = torch.as_tensor((x_test - mean) / std, dtype=torch.float64)
    yf = torch.as_tensor(y_fit, dtype=torch.float64)
    w = torch.zeros(zf.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(zf @ w + b, yf) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = ((zt @ w + b) > 0).numpy().astype(np.int64)
    k = int((pred == np.asarray(y_test, dtype=np.int64)).sum())
    n = len(y_test)
    return ProbeResult(k / n, wilson_interval(k, n), n, len(y_fit))


def domain_probe(policy, hook, dataset, src: EpisodeTable, tgt: EpisodeTable, prepare, *, n: int = 256,
                 seed: int = 0, device: str | torch.device = "cpu") -> dict[str, ProbeResult]:
    """Camera -> :class:`ProbeResult` of ``policy`` on ``n`` fit and ``n`` held-out frames (module docstring)."""
    fit, test = probe_items(src, tgt, n, seed)
    f_fit = probe_features(policy, hook, dataset, fit, prepare, device=device)
    f_test = probe_features(policy, hook, dataset, test, prepare, device=device)
    y_fit = np.asarray([it.domain == TGT for it in fit], dtype=np.int64)
    y_test = np.asarray([it.domain == TGT for it in test], dtype=np.int64)
    return {cam: linear_probe(f_fit[cam], y_fit, f_test[cam], y_test) for cam in f_fit}
