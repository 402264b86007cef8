"""The training step as TensorBoard's Graphs tab shows it: the trainer's own step,
traced (never run), its layers named as their weights are.

What is traced. `steps.CompiledSteps.train_step`, the function each compiled chunk
runs through `strategy.run` once per step (the Trainer hands it to callbacks as
`params["train_step"]`), traced through `strategy.run` for one step: the chunk's
loop, a `while` whose body would hide the step, is left out. So the graph is what
every step does: the forward pass, the loss with the weight penalty
(`loss/penalty`) and loss scaling (`loss/scale`) when the run has them, the
gradients, the optimizer's update (for a loss-scale optimizer, its finite checks and
its skip branch) and the running totals (`totals`). Tracing adds no variable and
runs nothing; in a cluster the chief alone traces it, which is safe because
collective ops take their instance keys when they run, not when traced
(docs/design.md, "Collective instance keys").

Why the scopes are renamed. Keras 3 enters a layer's name scope twice per call:
around `build` (a no-op once built) and around `call` (`Layer.__call__`). In a
graph each entry of a name scope takes a fresh name, so the first takes `dense` and
the ops land in `dense_1`; the second Dense layer, itself `dense_1`, gets
`dense_1_2`, all under `concise_mlp_1`. Eager code and `variable.path` never see
this. `keras_scope_names` gives each layer's scope its Keras path back (one `_N`
off a layer's scope: the call's entry always has one), so the graph's
`concise_mlp/dense/MatMul` sits beside the histogram `concise_mlp/dense/kernel`
(docs/design.md, "Keras name scopes in a traced graph").
"""

import re

import tensorflow as tf

_SUFFIX = re.compile(r"_\d+$")


def train_step_graph(train_step, model, images, labels):
    """The `GraphDef` of one `train_step(images, labels)` run by the model's strategy,
    traced for the specs `images` and `labels`, with the model's layers in scopes named
    by their Keras paths."""
    strategy = model.distribute_strategy

    def one_step(images, labels):
        strategy.run(train_step, args=(images, labels))

    graph = tf.function(one_step).get_concrete_function(images, labels).graph
    return keras_scope_names(graph.as_graph_def(), model)


def layer_paths(model):
    """The Keras paths of `model` and of its layers: `concise_mlp`, `concise_mlp/dense`,
    ...: the model's name, the folders of its variables' paths, and its layers (and their
    layers, for a nested model) by name, those without weights too."""
    paths = {model.name}
    for variable in model.variables:
        parts = variable.path.split("/")[:-1]
        if parts[:1] == [model.name]:
            paths.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    layers = [(model.name, layer) for layer in getattr(model, "layers", ())]
    while layers:
        parent, layer = layers.pop()
        path = f"{parent}/{layer.name}"
        paths.add(path)
        layers.extend((path, child) for child in getattr(layer, "layers", ()))
    return paths


def keras_name(name, paths):
    """The node name `name` with each layer scope named by its Keras path (`paths`, from
    `layer_paths`): `gradient_tape/concise_mlp_1/dense_1_2/MatMul` becomes
    `gradient_tape/concise_mlp/dense_1/MatMul`; other parts stay as they are."""
    parts, path = [], ""
    for part in name.split("/"):
        base = _SUFFIX.sub("", part)
        candidate = f"{path}/{base}" if path else base
        if base != part and candidate in paths:
            parts.append(base)
            path = candidate
        else:
            parts.append(part)
            path = ""  # out of the model: a later part may enter it again
    return "/".join(parts)


def keras_scope_names(graph_def, model):
    """A copy of `graph_def` with its nodes renamed by `keras_name` (their inputs and
    colocations too). The graph stays as traced if two nodes would take one name."""
    paths = layer_paths(model)
    renamed = {node.name: keras_name(node.name, paths) for node in graph_def.node}
    if len(set(renamed.values())) < len(renamed):
        return graph_def
    result = tf.compat.v1.GraphDef()
    result.CopyFrom(graph_def)
    for node in result.node:
        node.name = renamed[node.name]
        node.input[:] = [_renamed_input(ref, renamed) for ref in node.input]
        if "_class" in node.attr:  # colocations: b"loc:@<node name>"
            locations = node.attr["_class"].list.s
            locations[:] = [_renamed_location(location, renamed) for location in locations]
    return result


def _renamed_input(ref, renamed):
    """An input reference (`name`, `name:1`, `^name`) with its node renamed."""
    control = "^" if ref.startswith("^") else ""
    name, colon, port = ref.removeprefix("^").partition(":")
    return f"{control}{renamed.get(name, name)}{colon}{port}"


def _renamed_location(location, renamed):
    if not location.startswith(b"loc:@"):
        return location
    name = location.decode().removeprefix("loc:@")
    return f"loc:@{renamed.get(name, name)}".encode()
