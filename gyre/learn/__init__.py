"""Training: specs checked in beside the code, trainers under one contract (scikit-learn,
LightGBM, PyTorch, Keras), and runs recorded with their parameters, metrics and lineage
(`docs/learn.md`), logged without waiting from users' own training code (`docs/runs.md`);
the quick-start model of the demo."""

from gyre.learn._data import TrainingData
from gyre.learn._keras import KerasMLP
from gyre.learn._made import run_profile, version_run
from gyre.learn._pgruns import PostgresRunStore
from gyre.learn._quickstart import QuickstartModel, train_quickstart_model
from gyre.learn._runs import RUN_STATUSES, MetricPoint, Run, RunStore
from gyre.learn._sklearn import LightGBMTrainer, SklearnTrainer
from gyre.learn._spec import TrainingSpec, load_spec, parse_spec
from gyre.learn._sqliteruns import SQLiteRunStore
from gyre.learn._torch import TorchCNN, TorchMLP
from gyre.learn._tracking import ActiveRun, start_run
from gyre.learn._train import Checked, Fitted, RunModel, TrainResult, run_model
from gyre.learn._train import check as check_spec
from gyre.learn._train import fit as fit_spec
from gyre.learn._train import train as train_spec
from gyre.learn._trainer import FAMILIES, Family, Trainer, check_params, family_names, make_trainer
from gyre.learn._verify import NEURAL_TOLERANCE, Verification
from gyre.learn._verify import verify as verify_run
from gyre.learn._views import TrainedOnView, train_on_view

__all__ = [
    "FAMILIES",
    "NEURAL_TOLERANCE",
    "RUN_STATUSES",
    "ActiveRun",
    "Checked",
    "Family",
    "Fitted",
    "KerasMLP",
    "LightGBMTrainer",
    "MetricPoint",
    "PostgresRunStore",
    "QuickstartModel",
    "Run",
    "RunModel",
    "RunStore",
    "SQLiteRunStore",
    "SklearnTrainer",
    "TorchCNN",
    "TorchMLP",
    "TrainResult",
    "TrainedOnView",
    "Trainer",
    "TrainingData",
    "TrainingSpec",
    "Verification",
    "check_params",
    "check_spec",
    "family_names",
    "fit_spec",
    "load_spec",
    "make_trainer",
    "parse_spec",
    "run_model",
    "run_profile",
    "start_run",
    "train_on_view",
    "train_quickstart_model",
    "train_spec",
    "verify_run",
    "version_run",
]
