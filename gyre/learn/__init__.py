"""Training: specs checked in beside the code, trainers under one contract, and runs
recorded with their parameters, metrics and lineage (`docs/learn.md`)."""

from gyre.learn._data import TrainingData
from gyre.learn._quickstart import QuickstartModel, train_quickstart_model
from gyre.learn._spec import TrainingSpec, load_spec, parse_spec
from gyre.learn._train import Checked, Fitted, RunModel, TrainResult, run_model
from gyre.learn._train import check as check_spec
from gyre.learn._train import fit as fit_spec
from gyre.learn._train import train as train_spec
from gyre.learn._verify import NEURAL_TOLERANCE, Verification
from gyre.learn._verify import verify as verify_run
from gyre.learn._views import TrainedOnView, train_on_view

__all__ = [
    "NEURAL_TOLERANCE",
    "Checked",
    "Fitted",
    "QuickstartModel",
    "RunModel",
    "TrainResult",
    "TrainedOnView",
    "TrainingData",
    "TrainingSpec",
    "Verification",
    "check_spec",
    "fit_spec",
    "load_spec",
    "parse_spec",
    "run_model",
    "train_on_view",
    "train_quickstart_model",
    "train_spec",
    "verify_run",
]
