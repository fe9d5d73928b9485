"""dpot: sim-and-real co-training of LeRobot Diffusion Policies with unbalanced OT alignment."""

__version__ = "0.1.0"
