"""Offline evaluation on held-out target episodes: full diffusion sampling vs. ground truth.

``eval/offline_eval/avg_loss`` = mean over ``eval.n_batches`` fixed batches of
``mean |a_hat - a|`` where ``a_hat`` = ``DiffusionModel.generate_actions`` (the full reverse diffusion with
``num_inference_steps``, the executed ``n_action_steps`` chunk starting at the current observation) and ``a``
the ground-truth chunk, both in the normalized action space. The initial noise and the sampler's own noise are
drawn from a fixed seed inside ``torch.random.fork_rng`` so the score is comparable across evaluations and the
training RNG is untouched (resume stays exact). The held-out batches are loaded once and kept in memory.
"""

from __future__ import annotations

import time

import torch

from dpot.policy.features import stack_cameras


class OfflineEvaluator:
    """Holds the fixed held-out batches (raw, uint8 images) and scores a policy on them."""

    def __init__(self, raw_batches: list[dict], prepare, *, seed: int):
        """``prepare(raw_batch) -> normalized batch on the policy's device`` (the trainer's preprocessing)."""
        self.raw_batches = raw_batches
        self.prepare = prepare
        self.seed = int(seed)

    @torch.no_grad()
    def __call__(self, policy) -> dict[str, float]:
        t0 = time.perf_counter()
        cfg = policy.config
        was_training = policy.training
        policy.eval()
        total, count = 0.0, 0
        devices = [policy.config.device] if str(policy.config.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for raw in self.raw_batches:
                batch = self.prepare(raw)
                start = cfg.n_obs_steps - 1
                gt = batch["action"][:, start:start + cfg.n_action_steps]
                image_keys = list(cfg.image_features) if cfg.image_features else []
                b = stack_cameras(batch, image_keys, cfg.n_obs_steps)
                noise = torch.randn(gt.shape[0], cfg.horizon, gt.shape[-1], device=gt.device)
                pred = policy.diffusion.generate_actions(b, noise=noise)
                total += float((pred.float() - gt.float()).abs().mean()) * gt.shape[0]
                count += gt.shape[0]
        if was_training:
            policy.train()
        return {"eval/offline_eval/avg_loss": total / max(count, 1),
                "eval/offline_eval/eval_s": time.perf_counter() - t0}
