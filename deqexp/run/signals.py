"""Stopping a run cleanly on a signal.

SLURM warns a job before its time limit with SIGUSR2 (``hydra.launcher.signal_delay_s``
seconds ahead) and ends it with SIGTERM (``scancel``, preemption, the limit itself). While a
:class:`StopSignals` is active, either signal records a request and asks every solver loop to
stop (:class:`deqexp.deq.interrupt.Interrupt`): the training loop honours it within a solver
iteration (every batch's forward and adjoint solves check it), writes the checkpoint of
the last finished epoch, and raises :class:`StopRequested`. A rerun, or SLURM's requeue,
then resumes from that epoch instead of the last periodic checkpoint. Ctrl-C (SIGINT) stops
at once, and also leaves the checkpoint of the last finished epoch.

Under submitit, SIGUSR2 is also its cue to requeue the job: :meth:`StopSignals.forward` hands
the signal to submitit's own handler once the checkpoint is written.
"""
from __future__ import annotations

import signal

from ..deq.interrupt import Interrupt

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGUSR2: "SIGUSR2 (SLURM's time-limit warning)"}


class StopRequested(Exception):
    """A stop signal was honoured at the boundary after ``epoch``."""

    def __init__(self, signum: int, epoch: int):
        self.signum, self.epoch = signum, epoch
        super().__init__(f"stopped by {NAMES.get(signum, signum)} after epoch {epoch}")


class StopSignals:
    """Context manager: SIGTERM and SIGUSR2 set :attr:`signum` instead of ending the process.

    With ``defer=False`` (a task without epochs to stop between) they interrupt at once, as
    Ctrl-C does. Where Python cannot install handlers (off the main thread), it does nothing
    and the signals keep their previous effect.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self, defer: bool = True):
        self.signum: int | None = None
        self.defer = defer
        self._previous: dict[int, object] = {}

    def _record(self, signum, frame) -> None:
        if not self.defer:
            raise KeyboardInterrupt
        if self.signum is None:  # srun and slurmd may both deliver it: the first one counts
            self.signum = signum
        Interrupt.asked = True  # the running solve or batch stops within an iteration

    @property
    def installed(self) -> bool:
        """Whether this object's handlers are in place (inside ``with``, on the main thread)."""
        return bool(self._previous)

    def __enter__(self) -> "StopSignals":
        Interrupt.asked = False
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._record)
            except ValueError:  # not the main thread
                break
        return self

    def __exit__(self, *exc) -> None:
        Interrupt.asked = False
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def check(self, epoch: int, save=None) -> None:
        """At an epoch boundary: if a stop was asked for, ``save()`` (a checkpoint of this
        epoch, when given) and raise :class:`StopRequested`."""
        if self.signum is None:
            return
        if save is not None:
            save()
        raise StopRequested(self.signum, epoch)

    def forward(self, signum: int) -> None:
        """Pass ``signum`` to the handler that was there before (submitit's requeue on SIGUSR2),
        after :meth:`__exit__` restored it; a default or ignored handler is left alone."""
        handler = self._previous.get(signum)
        if callable(handler):
            handler(signum, None)
