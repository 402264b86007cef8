"""StepProfiler on its own: where it asks for chunk ends, and what it refuses. (A real
profile, read back, is in test_summaries.py.)"""

import tensorflow as tf
from absl.testing import parameterized

from keras_mlp.errors import UserError
from keras_mlp.profiling import StepProfiler


class StepProfilerTest(tf.test.TestCase, parameterized.TestCase):
    def test_chunk_ends_before_the_first_step_then_after_every_profiled_step(self):
        profiler = StepProfiler(None, (3, 5))
        due = {step: profiler.steps_until_due(step) for step in range(8)}
        # Steps are counted from 1: step 3 is the one run when the count goes 2 -> 3.
        self.assertEqual(due, {0: 2, 1: 1, 2: 1, 3: 1, 4: 1, 5: None, 6: None, 7: None})

    def test_without_a_log_dir_it_records_nothing(self):
        profiler = StepProfiler(None, (1, 1))
        profiler.on_train_batch_begin(0, {"step": 0})
        profiler.on_train_batch_end(0, {"step": 1})
        self.assertFalse(profiler._profiling)

    @parameterized.named_parameters(
        ("zero", (0, 3), "0,3"),
        ("reversed", (4, 3), "4,3"),
        ("one", (3,), "3"),
        ("not_a_number", ("3", 5), "3,5"),
        ("bool", (True, 2), "True,2"),
    )
    def test_bad_steps_with_the_command_lines_message(self, steps, shown):
        with self.assertRaisesRegex(
            UserError, rf"^profile_steps={shown} must be FIRST,LAST with 1 <= FIRST <= LAST$"
        ):
            StepProfiler(None, steps)


if __name__ == "__main__":
    tf.test.main()
