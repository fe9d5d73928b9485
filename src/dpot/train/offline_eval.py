"""Offline evaluation on held-out target episodes: the policy's predicted action chunk vs. ground truth.

``eval/offline_eval/avg_loss`` = mean over ``eval.n_batches`` fixed batches of
``mean |a_hat - a|`` where ``a_hat`` is the policy hook's ``predict_chunk`` (Diffusion:
``DiffusionModel.generate_actions``, the full reverse diffusion with ``num_inference_steps``; ACT: its chunk in
eval mode; the executed ``n_action_steps`` chunk starting at the current observation) and ``a`` the ground-truth
chunk, both in the normalized action space. The initial noise and the sampler's own noise are
drawn from a fixed seed inside ``torch.random.fork_rng`` so the score is comparable across evaluations and the
training RNG is untouched (resume stays exact). The held-out batches are loaded once and kept in memory.
"""

from __future__ import annotations

import time

import torch

from dpot.metric_names import EVAL_LOSS, EVAL_S


class OfflineEvaluator:
    """Holds the fixed held-out batches (raw, uint8 images) and scores a policy on them."""

    def __init__(self, raw_batches: list[dict], prepare, *, seed: int, predict):
        """``prepare(raw_batch) -> normalized batch on the policy's device`` (the trainer's preprocessing);
        ``predict(policy, batch) -> (predicted, ground truth)`` chunks (``dpot.policy.PolicyHook.predict_chunk``)."""
        self.raw_batches = raw_batches
        self.prepare = prepare
        self.predict = predict
        self.seed = int(seed)

    @torch.no_grad()
    def __call__(self, policy) -> dict[str, float]:
        t0 = time.perf_counter()
        was_training = policy.training
        policy.eval()
        total, count = 0.0, 0
        devices = [policy.config.device] if str(policy.config.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for raw in self.raw_batches:
                pred, gt = self.predict(policy, self.prepare(raw))
                total += float((pred.float() - gt.float()).abs().mean()) * gt.shape[0]
                count += gt.shape[0]
        if was_training:
            policy.train()
        return {EVAL_LOSS: total / max(count, 1),
                EVAL_S: time.perf_counter() - t0}
