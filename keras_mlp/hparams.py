"""TensorBoard's HParams tab, as protos: what a run's session holds, what an
experiment declares, how a session ends. No TensorFlow: sweeps and searches write
these from their own process, and runs (summaries.py) use the same values.

What the tab is for is comparing settings, so:
- values are typed: numbers as numbers; `hidden_units` as `depth` and `width`
  when every hidden layer is equally wide (else `depth` and `hidden_units` as
  text, `512,256`); one dropout rate as a number;
- the seed is no hyperparameter of a session: TensorBoard groups the sessions
  whose hyperparameters are equal (or whose `trial_id` is equal) and shows their
  mean, so repeats over seeds form one group (the seed is in the run's config
  text and its folder's run_config.json);
- an experiment marks the swept hyperparameters as differing, which the tab's
  backend sorts first (`_sort_and_reduce_to_hparams_limit`: differs, then name);
- every session of a sweep or search ends with a status.
"""

import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

# The metrics that the tab shows for every run, sweep and search.
METRICS = [
    hp.Metric("epoch_accuracy", group="validation", display_name="val_accuracy"),
    hp.Metric("epoch_loss", group="validation", display_name="val_loss"),
    hp.Metric("epoch_loss", group="train", display_name="train_loss"),
    hp.Metric("epoch_seconds", group="train", display_name="epoch_seconds"),
]

# An experiment's trial statuses as TensorBoard's: it has no "diverged" or "pruned".
# A pruned trial ended as its search meant it to (its metrics are those of its last epoch).
STATUSES = {
    "done": api_pb2.STATUS_SUCCESS,
    "pruned": api_pb2.STATUS_SUCCESS,
    "diverged": api_pb2.STATUS_FAILURE,
    "failed": api_pb2.STATUS_FAILURE,
    "stopped": api_pb2.STATUS_RUNNING,  # unfinished: it resumes on the next rerun
}
# The file suffix of a session's status: removed when a stopped trial resumes.
STATUS_SUFFIX = ".status"


def _text(values):
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def session_values(hparams):
    """A run's hyperparameters (`RunConfig.hyperparameters()`) as the HParams tab shows
    them: typed, the hidden layers as depth and width, the seed left out."""
    values = {}
    for key, value in hparams.items():
        if key == "seed" or value is None:
            continue
        if key == "hidden_units":
            values["depth"] = len(value)
            if len(set(value)) == 1:
                values["width"] = value[0]
            else:
                values["hidden_units"] = _text(value)
        elif isinstance(value, (list, tuple)):
            values[key] = value[0] if len(set(value)) == 1 else _text(value)
        else:
            values[key] = value
    return values


def _domain(values):
    """A column's domain: a given `hp.Domain`, or the distinct values listed (TensorBoard
    then sorts and filters them as numbers or as texts); none for mixed types."""
    if isinstance(values, hp.Domain):
        return values
    distinct = set(values)
    if all(isinstance(v, bool) for v in distinct) or all(isinstance(v, str) for v in distinct):
        return hp.Discrete(sorted(distinct))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        return hp.Discrete(sorted(float(v) for v in distinct))
    return None


def experiment_summary(columns, swept):
    """The experiment: `columns` (name -> the values it takes, or an `hp.Domain`), those
    named in `swept` marked as differing, so that the tab shows them first; then the
    metrics."""
    params = [hp.HParam(name, _domain(values)) for name, values in columns.items()]
    summary = hp.hparams_config_pb(params, METRICS)
    experiment = metadata.parse_experiment_plugin_data(
        summary.value[0].metadata.plugin_data.content
    )
    for info in experiment.hparam_infos:
        info.differs = info.name in swept
    plugin_data = plugin_data_pb2.HParamsPluginData(experiment=experiment)
    return _summary_pb(metadata.EXPERIMENT_TAG, plugin_data)


def session_start_summary(values, group):
    """A session: its typed values (`session_values`) and its group's name."""
    return hp.hparams_pb(values, trial_id=group)


def session_end_summary(status):
    """How a session ended: `status`, one of `STATUSES`."""
    end = plugin_data_pb2.SessionEndInfo(status=STATUSES[status], end_time_secs=time.time())
    return _summary_pb(
        metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)
    )


def _summary_pb(tag, plugin_data):
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=metadata.create_summary_metadata(plugin_data),
        tensor=metadata.NULL_TENSOR,
    )
    return summary


def write_summary(directory, summary, suffix=""):
    """Writes `summary` (at step 0) into an event file of its own in `directory`."""
    writer = EventFileWriter(str(directory), filename_suffix=suffix)
    try:
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    finally:
        writer.close()
