"""The package's exceptions, and the exit status the command line gives each.

No heavy imports: the command line maps these to exit codes without loading
TensorFlow.
"""

import re
import signal


class UserError(ValueError):
    """Bad input from the user: an argument, a file, a directory.

    The message names Python arguments (`batch_size=33`); the command line
    shows them as flags (`--batch_size=33`) on one line and exits with status 2.
    """


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became non-finite; nothing bad was saved. Exit status 1."""


class OutputError(Exception):
    """A run's outputs (a checkpoint, the final model, export, plot or metrics) could
    not be written: the disk is full, the folder became read-only. Exit status 3.

    Nothing saved before is lost: the rerun of the same command, once there is room,
    resumes from the last checkpoint.
    """

    def __init__(self, path, cause):
        super().__init__(path, cause)
        self.path, self.cause = path, cause

    @classmethod
    def from_error(cls, path, error):
        """The `OutputError` of a write of `path` that raised `error`: an `OSError`, or
        a TensorFlow op error ("...tempstate123; No space left on device [Op:SaveV2]")."""
        if isinstance(error, OSError):
            return cls(path, error.strerror or str(error))
        message = str(getattr(error, "message", error)).strip().splitlines()[0]
        return cls(path, re.sub(r"\s*\[Op:\w+\]$", "", message).rpartition("; ")[2])

    def __str__(self):
        return (
            f"cannot write {self.path} ({self.cause}); what was saved before is kept: make "
            "room (or move the model_dir to a roomier disk) and rerun the same command to resume"
        )


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
