"""How dpot takes features out of a LeRobot DiffusionPolicy (no fork of LeRobot)."""

from dpot.policy.features import DiffusionStepOutput, diffusion_loss_with_features, stack_cameras

__all__ = ["DiffusionStepOutput", "diffusion_loss_with_features", "stack_cameras"]
