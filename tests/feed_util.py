"""Reading a feed's batches back, as the compiled chunk takes them (`keras_mlp.feeds`)."""

import tensorflow as tf


def feed_chunk(feed, num_steps, strategy=None):
    """A compiled function of `chunk_args` returning the per-replica batches of
    `num_steps` steps of `feed`, as `strategy.run` gives them (default: the default
    strategy)."""
    strategy = strategy or tf.distribute.get_strategy()

    @tf.function
    def chunk(args):
        step_args = feed.start(args)
        return [strategy.run(feed.replica_batch, args=step_args(i)) for i in range(num_steps)]

    return chunk


def feed_batches(feed, chunk_args, num_steps, strategy=None):
    """The batches of `num_steps` steps of `feed` from `chunk_args` (`feed_chunk`): one
    list per step, of one tuple of NumPy arrays per replica (replica 0 first)."""
    strategy = strategy or tf.distribute.get_strategy()
    steps = []
    for batch in feed_chunk(feed, num_steps, strategy)(chunk_args):
        per_replica = zip(*(strategy.experimental_local_results(t) for t in batch), strict=True)
        steps.append([tuple(t.numpy() for t in replica) for replica in per_replica])
    return steps
