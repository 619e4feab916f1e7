"""Tasks: what a walker is (a flat parameter vector in a box) and its collective variables.

Every task gives, for walkers (B, n_params): x (B,) = the windowed CV (ln L_train) and y (B,) = the
second CV. One family per module (spiral, images, tabular, box) on the contract of ``base``; the
deck's `[task] kind` finds its class in ``registry``. The analytic ``box_quadratic`` system goes
through exactly the same interface, so the engine path it tests is the one the networks use.
"""
from .base import ClassificationTask, NetworkTask, RegressionTask, Task, TaskError, TaskFactory, validate_task
from .box import BoxQuadraticTask
from .images import Cifar10Task, ImageTask, MnistTask
from .module import ModuleTask
from .registry import KINDS, describe_unbuilt, make_task
from .spiral import SpiralRegressionTask, SpiralTask, spiral_data, spiral_regression_data
from .tabular import FeaturesTask, HousePricesTask

__all__ = ["BoxQuadraticTask", "Cifar10Task", "ClassificationTask", "FeaturesTask", "HousePricesTask", "ImageTask",
           "KINDS", "MnistTask", "ModuleTask", "NetworkTask", "RegressionTask", "SpiralRegressionTask", "SpiralTask", "Task",
           "TaskError", "TaskFactory", "describe_unbuilt", "make_task", "spiral_data", "spiral_regression_data",
           "validate_task"]
