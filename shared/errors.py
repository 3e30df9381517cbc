"""Lumière's domain errors, one tree; the API maps each branch to one HTTP status.

LumiereError
├── InvalidInput        the user's file or options are wrong (422, or a failed job with a reason)
│   └── UnsupportedMedia    a file we cannot read as a film (415 / failed job)
├── NotFound            no such job/upload for this key (404)
├── Conflict            the job is not in a state that allows this (409)
├── ServiceUnavailable  a dependency (database, broker, store) is down (503)
└── ProcessingError     our side failed on a chunk (failed job, retried when transient)
    └── ModelUnavailable    model weights are missing; the worker says which
"""

from __future__ import annotations


class LumiereError(Exception):
    """Base of every error Lumière raises on purpose; ``str(err)`` is shown to users."""


class InvalidInput(LumiereError):
    """The input file or the options are wrong; the message says what and how to fix it."""


class UnsupportedMedia(InvalidInput):
    """The file is not a film we can decode (not a video, no video stream, unknown codec…)."""


class NotFound(LumiereError):
    """The resource does not exist, or belongs to another API key."""


class Conflict(LumiereError):
    """The resource's current state does not allow the request."""


class ServiceUnavailable(LumiereError):
    """A dependency is down; retrying later will work."""


class ProcessingError(LumiereError):
    """Processing failed on our side."""


class ModelUnavailable(ProcessingError):
    """The weights for a model are not installed; run ``lumiere models fetch``."""
