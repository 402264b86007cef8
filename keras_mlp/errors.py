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

    The trainer sets `checkpoint` to the checkpoint it saved on the way out.
    """

    def __init__(self, signal_number, step, checkpoint=None):
        super().__init__(signal_number, step)
        self.signal_number, self.step, self.checkpoint = signal_number, step, checkpoint

    def __str__(self):
        saved = (
            f"checkpoint saved as {self.checkpoint}; rerun the same command to resume"
            if self.checkpoint
            else "nothing saved (no model_dir)"
        )
        return f"stopped by {signal.Signals(self.signal_number).name} at step {self.step}; {saved}"
