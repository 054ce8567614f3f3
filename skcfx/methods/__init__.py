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

__all__ = [
    "CounterfactualMethod",
    "ExplainContext",
    "MethodOutput",
    "DifCluE",
    "create_method",
    "layout_slots",
    "list_methods",
    "register_method",
]
