"""When the consumer is catching up: a backlog is being read, not live traffic.

The consume loop asks after every fetch. Entering is immediate (more than ``lag`` records
behind); leaving waits until the consumer has stayed within ``lag`` for ``settle_s``. Reading
a backlog, the records behind swing with every fetch and rebalance (a partition just assigned
or sought has no position yet), and each flip changes the checkpoint interval and releases the
held jobs: a brief dip would write every job's state and post half-assembled jobs. When how far
behind is unknown, the mode stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How long the consumer must stay within the lag before it counts as caught up.
SETTLE_S = 1.0


@dataclass
class CatchUpMode:
    """The mode, from successive readings of how many records are behind."""

    lag: int
    settle_s: float = SETTLE_S
    catching_up: bool = False
    #: when the readings last went within ``lag`` while catching up
    _within_since: float | None = None

    def observe(self, behind: int | None, now: float) -> bool:
        """The mode after a reading (``behind`` None: unknown) taken at ``now`` (seconds)."""
        if behind is None:
            return self.catching_up
        if behind > self.lag:
            self.catching_up = True
            self._within_since = None
        elif self.catching_up:
            if self._within_since is None:
                self._within_since = now
            if now - self._within_since >= self.settle_s:
                self.catching_up = False
                self._within_since = None
        return self.catching_up
