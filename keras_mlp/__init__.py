"""keras_mlp: the d2l.ai chapter "Implementation of Multilayer Perceptrons" as
TensorFlow/Keras software.

Modules, smallest first: names (accepted names, no heavy imports), checks (each
argument check, written once), layers
(hand-written ReLU, ScratchDense, Dropout, L2Penalty), models (MLPScratch,
concise_mlp), idx (the IDX file format), sources (where named datasets come
from: keras cache, downloads, tfds), data (Dataset, load_dataset, host copies),
feeds (how a compiled chunk gets its batches), inputs (what fit takes),
distribute (strategies), signals (SIGINT/SIGTERM held for a block), schedules
(learning rates), callbacks (checkpoints, guard, signal stop, progress),
summaries (the TensorBoard callback), diagnostics (its histograms and
predictions), figures (their pictures), step_graph (the training step for its
Graphs tab), profiling (the profiler's callback), training (the Trainer loop),
reporting (run files, export), run_dir (one run per folder), config (RunConfig),
run (train(config)), cli (flags, exit codes, a quiet start). Tools, each with a
`main()` and a console script: train, launch, predict, sweep, search, benchmark.

Importing any module changes no global state; `run.configure_process` holds
what a training run changes process-wide.
"""

__version__ = "0.2.0"
