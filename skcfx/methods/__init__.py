"""Counterfactual methods, registered by name (``'difclue'``, ``'dime'``, ``'fastdime'``)."""

from .base import (
    CounterfactualMethod,
    ExplainContext,
    MethodOutput,
    create_method,
    layout_slots,
    list_methods,
    register_method,
)
from .difclue import DifCluE
from .dime import DiME, FastDiME

__all__ = [
    "CounterfactualMethod",
    "ExplainContext",
    "MethodOutput",
    "DifCluE",
    "DiME",
    "FastDiME",
    "create_method",
    "layout_slots",
    "list_methods",
    "register_method",
]
