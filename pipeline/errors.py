"""The exception tree of the fleet pipeline: one root, errors that say where they happened.

    PipelineError              root; never raised itself
    ├── StateError             a serialised device state cannot be read (corrupt, wrong version)
    ├── ModelError             a model artifact cannot be used
    │   └── FeatureMismatch    the model was trained on another feature list/version
    └── PolicyError            a policy document is inconsistent (unknown mode, bad exclusion)

Contract errors on input records are `schemas.errors.ContractError`; the stream shell turns those
into dead-letter records. These errors are about the pipeline's own state and configuration.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of the pipeline's errors; `device_id` is set when the error concerns one device."""

    def __init__(self, message: str, *, device_id: str | None = None) -> None:
        super().__init__(message if device_id is None else f"{message} (device {device_id})")
        self.message = message
        self.device_id = device_id


class StateError(PipelineError):
    """A serialised process forest is corrupt or of an unknown version."""


class ModelError(PipelineError):
    """A model artifact is missing, unreadable or inconsistent with its metadata."""


class FeatureMismatch(ModelError):
    """The model's feature names or version differ from `pipeline.features`."""


class PolicyError(PipelineError):
    """A policy (modes, groups, exclusions) is invalid."""
