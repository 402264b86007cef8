"""The bytes of the files `keras.datasets` downloads, as arrays: Fashion-MNIST's IDX
files, MNIST's .npz, CIFAR-10's archive of pickles (unpickled without running code).

Each reader takes the verified contents (file name -> bytes) and returns
`((train_x, train_y, test_x, test_y), label_names)`; label_names is `()` when the
files carry none (the set's spec in `keras_mlp.sources.find` names the classes).
"""

import io
import pickle
import posixpath
import tarfile

import numpy as np

from keras_mlp.idx import IDX_FILES, parse_idx


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays (the CIFAR-10 batches) and refuses any
    other class: a pickle can run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),  # NumPy 1's name (the published pickles')
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dataset file")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # without NumPy 2's deprecation warning
        return super().find_class(module, name)


def read_idx_set(contents):
    """The four IDX files of the Fashion-MNIST layout."""
    return tuple(parse_idx(contents[name], name) for name in IDX_FILES.values()), ()


def read_mnist_npz(contents):
    (raw,) = contents.values()
    with np.load(io.BytesIO(raw), allow_pickle=False) as f:
        arrays = tuple(f[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    return arrays, ()


_CIFAR_OTHERS = ("test_batch", "batches.meta")


def read_cifar10_archive(contents):
    """CIFAR-10's python batches from its archive: uint8 (N, 32, 32, 3) images, and the
    label names from its `batches.meta`."""
    (raw,) = contents.values()
    members = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
        for member in archive:
            name = posixpath.basename(member.name)
            if member.isfile() and (name.startswith("data_batch_") or name in _CIFAR_OTHERS):
                data = archive.extractfile(member).read()
                members[name] = ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()

    def split(names):
        images = np.concatenate([np.asarray(members[n][b"data"], np.uint8) for n in names])
        labels = np.concatenate([np.asarray(members[n][b"labels"], np.uint8) for n in names])
        return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    train_x, train_y = split([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = split(["test_batch"])
    names = tuple(n.decode() for n in members["batches.meta"][b"label_names"])
    return (train_x, train_y, test_x, test_y), names
