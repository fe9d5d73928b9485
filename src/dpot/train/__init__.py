"""DP+OT co-training trainer: ``dpot train`` (see :mod:`dpot.train.loop`)."""
