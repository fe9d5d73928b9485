"""Salts of dpot's seeded random streams, in one place.

Every stream is ``np.random.default_rng([seed, SALT, ...])`` (or ``SeedSequence`` with the same entropy): the
run's ``seed`` plus a salt that names the stream, so two streams of one run never share draws and a stream's
values depend only on ``(seed, salt, counter)``. Changing a value here changes every sampled batch (exact
resume of old checkpoints and the pinned tests in tests/train/test_cotrain_sampler.py would break): add new
salts, never edit old ones.
"""

from __future__ import annotations

#: batch sampling per step: ``default_rng([seed, SAMPLER, step])`` (:class:`dpot.data.cotrain.CoTrainBatchSampler`)
SAMPLER = 7919
#: the separate OT pair batch per step (``ot.pair_batch_size`` > 0): ``default_rng([seed, OT_PAIRS, step])``
OT_PAIRS = 6007
#: diffusion noise and timesteps per step: ``SeedSequence([seed, DIFFUSION_NOISE, step])`` (dpot.train.loop)
DIFFUSION_NOISE = 31337
#: held-out target episodes: ``default_rng([seed, VAL_SPLIT])`` (:func:`dpot.data.cotrain.split_episodes`)
VAL_SPLIT = 1337
#: order of the held-out frames: ``default_rng([seed, VAL_BATCHES])`` (:func:`dpot.data.cotrain.val_batches`)
VAL_BATCHES = 4242
#: scripted-expert action noise per episode: ``default_rng([seed, EXPERT_NOISE])`` (dpot.bench.experts)
EXPERT_NOISE = 7
#: toy datasets: the target domain draws from ``default_rng(seed + TOY_TARGET_OFFSET)`` (:mod:`dpot.data.toy`)
TOY_TARGET_OFFSET = 10_000
# The DTW partner subset (dpot.data.cotrain.DTWAlignment) draws from ``default_rng(seed)`` with no salt; it is
# kept that way so that existing runs' partners (and their cached DTW paths) stay the same.

__all__ = ["DIFFUSION_NOISE", "EXPERT_NOISE", "OT_PAIRS", "SAMPLER", "TOY_TARGET_OFFSET", "VAL_BATCHES", "VAL_SPLIT"]
