"""Hashing methods behind one interface: ``create(name, bits=..., **params)``, ``fit``, ``encode``."""

from learn2hash.methods.base import FitContext, HasCenters, Hasher, OnlineHasher
from learn2hash.methods.registry import MethodInfo, available, create, method_class, register

__all__ = ["FitContext", "HasCenters", "Hasher", "MethodInfo", "OnlineHasher", "available", "create", "method_class", "register"]
