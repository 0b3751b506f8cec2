"""Transfer on the robot itself: off-policy adaptation over the testbed, robot time accounted, crash-safe.

``make_robot_plan`` checks a plan before the robot moves; ``run_on_testbed`` runs it into a run
directory that a rerun resumes; ``audit`` checks a run's journal against the server's log.
"""

from sim2real.robot.audit import Audit, audit
from sim2real.robot.plan import RobotPlan, make_robot_plan
from sim2real.robot.run import run_on_testbed, write_robot_run_report

__all__ = ["Audit", "RobotPlan", "audit", "make_robot_plan", "run_on_testbed", "write_robot_run_report"]
