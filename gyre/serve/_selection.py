"""Choosing the version that answers a request: pure objects with an injected RNG.

Targets are resolved to version numbers by the caller; these classes only choose.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping, Sequence


class FixedChoice:
    """Always the same version (the champion, or a shadow policy's primary)."""

    def __init__(self, version: int) -> None:
        self.version = version

    def choose(self) -> int:
        return self.version


class WeightedSplit:
    """A fixed random split, e.g. 90/10 between champion and challenger (canary)."""

    def __init__(self, weights: Sequence[tuple[int, float]], rng: random.Random) -> None:
        positive = [(v, w) for v, w in weights if w > 0]
        if not positive:
            raise ValueError("a split needs at least one positive weight")
        self.versions = [v for v, _ in positive]
        self._cumulative = list(itertools.accumulate(w for _, w in positive))
        self._rng = rng

    def choose(self) -> int:
        point = self._rng.random() * self._cumulative[-1]
        return self.versions[bisect.bisect_right(self._cumulative, point)]


class ThompsonSampling:
    """A Bernoulli bandit over versions: each arm's reward rate has a Beta(1 + rewards,
    1 + trials - rewards) posterior; each request goes to the arm whose posterior sample
    is highest, so traffic moves to the better version as evidence accumulates."""

    def __init__(
        self,
        arms: Sequence[int],
        stats: Mapping[int, tuple[int, float]],
        rng: random.Random,
    ) -> None:
        self.arms = list(arms)
        self._rng = rng
        self.trials = {arm: 0 for arm in self.arms}
        self.rewards = {arm: 0.0 for arm in self.arms}
        self.update(stats)

    def update(self, stats: Mapping[int, tuple[int, float]]) -> None:
        """Replace the evidence with `{version: (trials, summed rewards in [0, 1])}`."""
        for arm in self.arms:
            trials, rewards = stats.get(arm, (0, 0.0))
            self.trials[arm] = trials
            self.rewards[arm] = min(max(rewards, 0.0), float(trials))

    def observe(self, arm: int, reward: float) -> None:
        if arm in self.trials:
            self.trials[arm] += 1
            self.rewards[arm] += min(max(reward, 0.0), 1.0)

    def choose(self) -> int:
        best, best_draw = self.arms[0], -1.0
        for arm in self.arms:
            alpha = 1.0 + self.rewards[arm]
            beta = 1.0 + self.trials[arm] - self.rewards[arm]
            draw = self._rng.betavariate(alpha, beta)
            if draw > best_draw:
                best, best_draw = arm, draw
        return best
