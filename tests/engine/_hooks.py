"""Training hooks shared by the engine tests."""

from __future__ import annotations

import signal

from weakseg.engine.train import Hook


class InterruptAt(Hook):
    """SIGTERM after iteration ``at``, as a user's Ctrl-C or a scheduler would send it: the run
    stops after the next step, saving a checkpoint (mid-epoch when ``at`` falls inside one)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_iteration(self, run, terms) -> None:
        if run.state["iteration"] == self.at:
            signal.raise_signal(signal.SIGTERM)
