"""Training: trainers under one contract (scikit-learn, LightGBM, PyTorch, Keras) and their
family table, models fitted on feature views (with their lineage), and the quick-start
model of the demo."""

from gyre.learn._keras import KerasMLP
from gyre.learn._quickstart import QuickstartModel, train_quickstart_model
from gyre.learn._sklearn import LightGBMTrainer, SklearnTrainer
from gyre.learn._torch import TorchCNN, TorchMLP
from gyre.learn._trainer import FAMILIES, Family, Trainer, check_params, family_names, make_trainer
from gyre.learn._views import TrainedOnView, train_on_view

__all__ = [
    "FAMILIES",
    "Family",
    "KerasMLP",
    "LightGBMTrainer",
    "QuickstartModel",
    "SklearnTrainer",
    "TorchCNN",
    "TorchMLP",
    "TrainedOnView",
    "Trainer",
    "check_params",
    "family_names",
    "make_trainer",
    "train_on_view",
    "train_quickstart_model",
]
