"""The built-in PyBullet simulations (driving, grasping), each env with its own physics client."""

from sim2real.bullet import quiet  # noqa: F401  - imports pybullet without its stdout banner
