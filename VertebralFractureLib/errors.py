"""Exceptions raised by the library. Every one derives from :class:`VertebralFractureError`."""

from __future__ import annotations


class VertebralFractureError(Exception):
    """Base class of every error this library raises on purpose."""


class InputError(VertebralFractureError, ValueError):
    """The input image or folder cannot be used (wrong format, missing slices, not a CT, ...)."""


class UsageError(VertebralFractureError, ValueError):
    """An option's value cannot be used (the command line, not the input files, is wrong)."""


class ModelNotAvailableError(VertebralFractureError):
    """A stage needs trained weights that are not installed in ``Resources/Models``."""


class ModelIntegrityError(VertebralFractureError):
    """A weights file does not match the sha256 recorded in ``models.json``."""


class OutputError(VertebralFractureError, OSError):
    """The results cannot be written where asked: the path is or holds the input, its folder is not
    writable or is a file, the disk is (nearly) full."""


class OutputExistsError(OutputError, FileExistsError):
    """The output folder exists and ``overwrite`` was not requested."""


class CancelledError(VertebralFractureError):
    """The analysis was cancelled by the caller."""
