"""The train benchmark's PyTorch contender, in a module that never imports TensorFlow:
the two libraries in one process can crash it (a segmentation fault with
TensorFlow 2.21 and PyTorch 2.14 on Linux), so `keras-mlp-benchmark` runs this in a
process of its own (`python -m keras_mlp.torch_loop ARRAYS.npz EPOCHS`).

PyTorch eager, the chapter's epoch as `contenders` defines it: 784 -> 256 -> 10 with
Glorot-uniform kernels and zero biases, SGD 0.1, batch 256, a fresh permutation each
epoch, full batches only, then the accuracy on the whole validation split; one thread
per core (PyTorch's default).
"""

import json
import resource
import sys
import time

import numpy as np

# The chapter's epoch for every contender (keras_mlp.contenders imports them from here).
BATCH_SIZE, LEARNING_RATE, HIDDEN = 256, 0.1, 256


def time_torch(arrays, epochs):
    """`(per-epoch seconds, last validation accuracy, threads)` on `arrays` (the keys
    `train_images`, `train_labels`, `val_images`, `val_labels`; uint8 images)."""
    import torch

    def scaled(images):
        return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)

    torch.manual_seed(0)
    x, y = scaled(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]).long()
    x_val, y_val = scaled(arrays["val_images"]), torch.from_numpy(arrays["val_labels"]).long()
    num_classes = int(max(y.max(), y_val.max())) + 1
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, num_classes)
    )
    for layer in (model[0], model[2]):
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    steps, seconds = len(x) // BATCH_SIZE, []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x))
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for step in range(steps):
            rows = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            scores = model(x[rows])
            loss = torch.nn.functional.cross_entropy(scores, y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # The epoch's training loss and accuracy, as every contender reports them.
            with torch.no_grad():
                loss_sum += loss * BATCH_SIZE
                correct += (scores.argmax(dim=1) == y[rows]).sum()
        with torch.no_grad():
            accuracy = float((model(x_val).argmax(dim=1) == y_val).float().mean())
        seconds.append(time.perf_counter() - start)
    return seconds, accuracy, torch.get_num_threads()


def main(argv=None):
    """Prints `{"epoch_seconds", "val_accuracy", "peak_rss_mib", "settings"}` as one JSON
    line."""
    path, epochs = (argv or sys.argv)[1:3]
    with np.load(path) as arrays:
        seconds, accuracy, threads = time_torch(dict(arrays), int(epochs))
    import torch

    settings = {"torch": torch.__version__, "torch_threads": threads}
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    record = {"epoch_seconds": seconds, "val_accuracy": accuracy, "peak_rss_mib": peak_rss_mib}
    print(json.dumps({**record, "settings": settings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
