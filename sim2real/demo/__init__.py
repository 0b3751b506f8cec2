"""The main job: every transfer lever on every far target with the shipped policies (`sim2real demo`)."""

from sim2real.demo.run import PAGE, DemoSummary, run_demo

__all__ = ["PAGE", "DemoSummary", "run_demo"]
