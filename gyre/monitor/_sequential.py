"""A canary's verdict from live feedback that stays valid however often it is looked at.

A fixed-sample test checked after every batch of feedback finds a difference that is not
there far more often than its nominal rate (with 100 looks at 5%, about a third of the
time). The canary is judged instead on confidence sequences: intervals for each version's
mean loss that hold at every sample size at once, with probability 1 - alpha, so checking
after every new label costs no validity.

Each version's sequence is the asymptotic confidence sequence of Waudby-Smith, Arbour,
Sinha, Kennedy and Ramdas ("Time-uniform central limit theory and asymptotic confidence
sequences", 2021), the two-sided normal-mixture boundary with the running variance:

    mean_t +- sqrt( 2 (t v rho^2 + 1) / (t^2 rho^2) * log( sqrt(t v rho^2 + 1) / a ) )

where t is the number of losses, v their variance and rho sets the sample size at which
the boundary is tightest (`TIGHT_AT`). Each version gets alpha / 2, so the interval of the
difference (challenger minus champion: the bounds' differences) holds with 1 - alpha. The
losses are a label's cost for the answer given: squared or absolute error, log loss, or
1 - reward.

The verdict, given a margin (how much worse the challenger may be, >= 0):

- `promote`: the difference is below `margin` at its upper bound (not worse by more than
  the margin), once each version has `min_samples` losses;
- `roll_back`: the difference is above `margin` at its lower bound (clearly worse by
  more than the challenger may be);
- `roll_back` also when `max_samples` challenger losses came and neither was shown (an
  undecided canary keeps the champion);
- otherwise `continue`.

The object is pure: losses in, a verdict out. Where the losses come from (the feedback
joined to the prediction log) and what a verdict does (the registry) live elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gyre.errors import MonitorError

TIGHT_AT = 500  # losses at which each sequence is tightest (rho's choice)


@dataclass
class _Running:
    """A running mean and variance (Welford)."""

    count: int = 0
    mean: float = 0.0
    squares: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.squares += delta * (value - self.mean)

    @property
    def variance(self) -> float:
        return self.squares / self.count if self.count else 0.0


def _radius(count: int, variance: float, alpha: float) -> float:
    if count == 0:
        return math.inf
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / TIGHT_AT
    spread = count * variance * rho2 + 1
    return math.sqrt(2 * spread / (count**2 * rho2) * math.log(math.sqrt(spread) / alpha))


@dataclass(frozen=True)
class CanaryVerdict:
    decision: str  # promote, roll_back, continue
    difference: float  # challenger's mean loss minus the champion's
    lower: float
    upper: float
    samples: tuple[int, int]  # losses seen: champion, challenger
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "difference": self.difference,
            "interval": [self.lower, self.upper],
            "samples": list(self.samples),
            "reason": self.reason,
        }


@dataclass
class CanaryTest:
    """The always-valid comparison of a challenger's live losses with the champion's."""

    margin: float = 0.0
    alpha: float = 0.05
    min_samples: int = 100
    max_samples: int = 100_000
    _champion: _Running = field(default_factory=_Running, init=False, repr=False)
    _challenger: _Running = field(default_factory=_Running, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1):
            raise MonitorError(f"canary `alpha` must be in (0, 1), not {self.alpha!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise MonitorError(f"canary `margin` must be a finite number >= 0, not {self.margin!r}")
        if not (1 <= self.min_samples <= self.max_samples):
            raise MonitorError(
                f"canary samples: need 1 <= min_samples ({self.min_samples}) <= max_samples "
                f"({self.max_samples})"
            )

    def add(self, version: str, loss: float) -> None:
        """One labelled answer's loss, for `champion` or `challenger`."""
        if not math.isfinite(loss):
            raise MonitorError(f"a canary loss must be a finite number, not {loss!r}")
        if version == "champion":
            self._champion.add(float(loss))
        elif version == "challenger":
            self._challenger.add(float(loss))
        else:
            raise MonitorError(f"canary losses are for `champion` or `challenger`, not {version!r}")

    def verdict(self) -> CanaryVerdict:
        mine, theirs = self._challenger, self._champion
        half = self.alpha / 2
        r_mine = _radius(mine.count, mine.variance, half)
        r_theirs = _radius(theirs.count, theirs.variance, half)
        difference = mine.mean - theirs.mean
        lower, upper = difference - r_mine - r_theirs, difference + r_mine + r_theirs
        samples = (theirs.count, mine.count)

        def says(decision: str, reason: str) -> CanaryVerdict:
            return CanaryVerdict(decision, difference, lower, upper, samples, reason)

        shown = f"loss difference {difference:+.4g}, interval [{lower:.4g}, {upper:.4g}]"
        if min(samples) < self.min_samples:
            return says("continue", f"{samples} losses: waiting for {self.min_samples} each")
        if lower > self.margin:
            return says("roll_back", f"worse by more than {self.margin:g}: {shown}")
        if upper < self.margin:
            return says("promote", f"not worse by more than {self.margin:g}: {shown}")
        if mine.count >= self.max_samples:
            return says("roll_back", f"undecided after {mine.count} losses: {shown}")
        return says("continue", shown)
