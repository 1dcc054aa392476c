"""An accelerated-time simulation of a mainnet-size subnet, run with the framework's own code.

Validators are the real :class:`~inference_subnet.validator.managing.quotas.QuotaBook` and
:class:`~inference_subnet.validator.managing.scores.ScoreBook` (their Lua scripts, against one Redis with a
key prefix per validator), the real sampling, dropout and weight math; miners are simulated objects that
answer instantly in simulated time and enforce their side of the quota with the real
:class:`~inference_subnet.miner.quota.MinerQuota`. The pure parts (population, behaviours, traffic, metrics)
live apart from the loop that drives Redis (:mod:`.engine`), so they can be tested on their own.
"""

from inference_subnet.simulate.scenario import Mix, Scenario, ScenarioError

__all__ = ["Mix", "Scenario", "ScenarioError"]
