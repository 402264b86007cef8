"""Where the named datasets come from, and how they are checked: what
`keras_mlp.data.load_dataset` searches when no `data_dir` is given.

A named set is searched for in this order, and the first place that has it wins:

1. `data_dir`, when given: four IDX files, any image set, used as they are
   (`keras_mlp.data` reads it with `keras_mlp.idx`; this package is not asked).
2. The keras cache (`$KERAS_HOME/datasets`, default `~/.keras/datasets`), in the
   layout `keras.datasets` writes (fashion_mnist, mnist, cifar10).
3. A tensorflow-datasets copy already prepared in `$TFDS_DATA_DIR` (default
   `~/tensorflow_datasets`).
4. A download: fashion_mnist, mnist and cifar10 from the files `keras.datasets`
   downloads, into the keras cache; kmnist and emnist/letters through
   tensorflow-datasets, only with `download=True`.

Files from the keras cache or a download are checked against the published ones
(size, SHA-256, and the IDX magic number) before use. Network waits are bounded
(seconds), a failed download leaves nothing behind, and when every place fails
the error is one line naming each place and why.

Modules, one concern each:

- `find`: the named sets (class names, how each maps to ours), the search order,
  `find_dataset`.
- `published`: the files `keras.datasets` downloads (`KERAS_SETS`), and `verify`.
- `readers`: those files' bytes to arrays (IDX, .npz, CIFAR-10's pickles, safely).
- `keras_cache`: the keras cache as a place of the search.
- `download`: staged, verified downloads into the keras cache.
- `tfds_copy`: tensorflow-datasets, a prepared copy or a bounded download.
- `network`: bounded network waits (the reachability probe, the read timeout).
- `place`: `NotHere`, what a place raises when it lacks the set.
"""
