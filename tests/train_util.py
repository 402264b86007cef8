"""Test helpers: the package's optimizer settings, as `run.make_optimizer` applies them."""

from keras_mlp.optimizers import build_optimizer

OPTIMIZER_SETTINGS = ("optimizer", "learning_rate", "lr_schedule", "warmup_epochs", "weight_decay")


def split_optimizer_settings(kwargs):
    """`(trainer kwargs, optimizer settings)` from one dict of both."""
    settings = {k: kwargs.pop(k) for k in OPTIMIZER_SETTINGS if k in kwargs}
    return kwargs, settings


def use_package_optimizer(trainer, model, data, settings):
    """Gives `trainer` the package's optimizer for `settings` (none given: the Trainer's
    default, SGD at 0.1), spanning the trainer's epochs over `data`."""
    if not settings:
        return
    settings = dict(settings)
    trainer.optimizer = build_optimizer(
        model,
        settings.pop("optimizer", "sgd"),
        settings.pop("learning_rate", 0.1),
        steps_per_epoch=len(data.train_images) // trainer.batch_size,
        epochs=trainer.epochs,
        strategy=trainer.strategy,
        **settings,
    )
