"""Datasets: files under the data root, checksummed, loaded whole into tensors."""

from deepzoo.data.mnist import load_mnist
from deepzoo.data.root import DatasetNotFoundError, data_root
from deepzoo.data.tensors import TensorData

__all__ = ["DatasetNotFoundError", "TensorData", "data_root", "load_mnist"]
