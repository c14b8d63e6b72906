"""Data: generators and loaders behind one registry; every stage reads through :func:`open`."""

from heatlab.data.registry import available_datasets, open_data
from heatlab.data.registry import open_data as open  # noqa: A001  (heatlab.data.open(spec, split))
from heatlab.data.split import TRUTH_LEVELS, ArraySplit, Split, has_truth, iter_batches, iter_shards

__all__ = ["open", "open_data", "available_datasets", "Split", "ArraySplit", "TRUTH_LEVELS", "has_truth",
           "iter_batches", "iter_shards"]
