"""The package's exceptions, and the exit status the command line gives each.

No heavy imports: the command line maps these to exit codes without loading
TensorFlow.
"""

import signal


class UserError(ValueError):
    """Bad input from the user: an argument, a file, a directory.

    The message names Python arguments (`batch_size=33`); the command line
    shows them as flags (`--batch_size=33`) on one line and exits with status 2.
    """


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became non-finite; nothing bad was saved. Exit status 1."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped training at a step boundary. Exit status 128 + the signal.

    The trainer sets `checkpoint` to the checkpoint it saved on the way out; a
    signal during the final save stops nothing: `complete_in` names the finished run.
    """

    def __init__(self, signal_number, step, checkpoint=None, complete_in=None):
        super().__init__(signal_number, step)
        self.signal_number, self.step, self.checkpoint = signal_number, step, checkpoint
        self.complete_in = complete_in

    def __str__(self):
        name = signal.Signals(self.signal_number).name
        if self.complete_in:
            return f"{name} came during the final save, which was finished first: the run in {self.complete_in} is complete"
        saved = (
            f"checkpoint saved as {self.checkpoint}; rerun the same command to resume"
            if self.checkpoint
            else "nothing saved (no model_dir)"
        )
        return f"stopped by {name} at step {self.step}; {saved}"
