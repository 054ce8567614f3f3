"""Counterfactual methods, registered by name (``'difclue'``, ``'dime'``, ``'fastdime'``, ``'dissect'``)."""

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
from .dissect import DISSECT

__all__ = [
    "CounterfactualMethod",
    "ExplainContext",
    "MethodOutput",
    "DifCluE",
    "DISSECT",
    "DiME",
    "FastDiME",
    "create_method",
    "layout_slots",
    "list_methods",
    "register_method",
]
