"""Exceptions that stages raise to stop the pipeline with a message for people, and the exit-code contract.

One table for every ``rewardline`` command and every stage script (``stages/``, through
:func:`rewardline.stage.stage_main`); the Prefect flows read it back from the stage's exit status
(:mod:`rewardline.ops.dvc_run`):

=====  ==========================================  ===========
exit   meaning                                     Prefect
=====  ==========================================  ===========
0      ok
1      a quality gate failed                       not retried
2      bad input or usage                          not retried
3      transient / environment or internal error   retried with backoff
=====  ==========================================  ===========

* 1: :class:`GateFailed`.
* 2: :class:`ConfigError`, :class:`BadInput` (:class:`ModelLoadError`, :class:`NonFiniteError`, :class:`TooLarge`), a
  ``ValueError`` from parsing user data, a file the user named that is missing (``FileNotFoundError``,
  S3 ``NoSuchKey``), a request a service refused as invalid (MLflow ``RESOURCE_DOES_NOT_EXIST``) or as not
  permitted (:class:`PermissionDenied`; MLflow ``PERMISSION_DENIED`` 403, ``UNAUTHENTICATED`` 401; an object store's
  ``AccessDenied`` / unknown key / no credentials found, :mod:`rewardline.ops.storage`), an output or lock in a
  folder this user cannot write (checked before any work, :func:`rewardline.ops.atomic.check_writable`), a file this
  user cannot read or a folder it cannot write met during a run (``EACCES``, ``EPERM``, ``EROFS``: the message
  names the path).
* 3: :class:`TransientError`, any other ``OSError`` (``ConnectionError``, ``TimeoutError``, disk full), out of
  memory, botocore / S3 endpoint errors, a server down (found anywhere in the
  exception's chain), a file missing because the network failed (a Hugging Face model not in the cache and the
  Hub unreachable: :func:`is_unreachable`); anything else is a bug, reported as ``internal error`` (retried,
  bounded).

Messages are one line (``error: FILE:LINE: field 'F': expected E, got G``); an internal error
prints ``internal error: <type>: <message>``, and its traceback only when verbose
(``rewardline --verbose`` or ``REWARDLINE_VERBOSE=1``).
"""

from __future__ import annotations

import difflib
import errno
import os
import traceback
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_TRANSIENT = 0, 1, 2, 3
VERBOSE_ENV = "REWARDLINE_VERBOSE"

#: Missing paths: the user named a file that is not there (bad input, not an outage).
_MISSING_PATH = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
#: ``errno`` of an operation this user is not permitted: a file it cannot read, a folder it cannot write, a
#: read-only filesystem. Bad input even when met mid-run: a retry fails the same.
_NOT_PERMITTED = (errno.EACCES, errno.EPERM, errno.EROFS)
#: ``error_code`` of a service's refusal of the request itself (MLflow): bad input, not an outage.
_REFUSED_CODES = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
                  "PERMISSION_DENIED", "UNAUTHENTICATED")  # 403 / 401: retrying will not grant the permission
#: Modules whose exceptions are network / endpoint failures (checked by name: no import needed).
_NETWORK_MODULES = ("botocore.", "urllib3.", "requests.", "httpx", "httpcore", "s3fs.", "aiohttp.")


class GateFailed(RuntimeError):
    """A stage's quality gate failed; the message names each failed check with value and threshold (exit 1)."""


class ConfigError(ValueError, KeyError):
    """A parameter in params.yaml (or ``--set``) is unknown or has a value the stage cannot use (exit 2)."""

    __str__ = Exception.__str__  # KeyError would quote the message


class BadInput(ValueError):
    """Input a stage was given is not what it can use (exit 2): ``FILE:LINE: field 'F': expected E, got G``.

    Every part is optional; ``detail`` replaces ``expected ... got ...`` when the problem is not
    a wrong value (``"missing"``, ``"truncated"``)."""

    def __init__(self, file: Any = None, *, line: int | None = None, field: str | None = None,
                 expected: str | None = None, got: str | None = None, detail: str | None = None) -> None:
        self.file, self.line, self.field, self.expected, self.got = file, line, field, expected, got
        where = f"{file}:{line}" if file is not None and line is not None else (str(file) if file is not None else "")
        what = detail or ", ".join(p for p in (expected and f"expected {expected}", got and f"got {got}") if p)
        parts = [p for p in (where, field and f"field {field!r}", what) if p]
        super().__init__(": ".join(parts))


class TooLarge(BadInput):
    """A record, prompt, response or request over a size bound (:mod:`rewardline.data.limits`): exit 2;
    a server answers 413. ``limit`` names the bound's key, ``limit_value`` its value, ``size`` the size found."""

    def __init__(self, file: Any = None, *, line: int | None = None, field: str | None = None, limit: str,
                 limit_value: int, size: int, unit: str) -> None:
        self.limit, self.limit_value, self.size = limit, limit_value, size
        super().__init__(file, line=line, field=field,
                         detail=f"too large: {size} {unit}; expected at most {limit}={limit_value} {unit}")


class PermissionDenied(BadInput):
    """A service refused the user (HTTP 403, or 401: no or wrong credentials): not transient, exit 2.
    The message says who was refused, what they tried and which permission it needs."""


class ModelLoadError(BadInput):
    """A model directory is not a loadable reward model: a file missing or truncated, pickle-only
    weights, no tokenizer files, a tokenizer that does not fit the embedding (exit 2)."""


class NonFiniteError(BadInput):
    """A loss or a reward is NaN or infinite: the data or the parameters (learning rate) are wrong (exit 2)."""


class NonFiniteLoss(NonFiniteError):
    """The loss or gradient norm of a training step is not finite; training stops before saving a model."""

    def __init__(self, step: int, loss: float, grad_norm: float, lr: float) -> None:
        self.step, self.loss, self.grad_norm, self.lr = step, loss, grad_norm, lr
        super().__init__(detail=f"training step {step}: loss {loss}, gradient norm {grad_norm} (lr {lr:g}); "
                                "expected finite values: not saving the model (lower train.lr, check the data)")


class TransientError(RuntimeError):
    """An outage worth retrying: a service down, a timeout (exit 3)."""


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages: ``null``, ``a string``, ``an object`` ..."""
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), (str, "a string"), (int, "a number"), (float, "a number"),
             (list, "an array"), (dict, "an object"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def exception_chain(err: BaseException, implicit: bool = True, limit: int = 8) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (``__cause__``) or, when ``implicit``, during
    (``__context__``)."""
    out: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and len(out) < limit and current not in out:
        out.append(current)
        current = current.__cause__ or (current.__context__ if implicit else None)
    return out


def service_error_code(err: BaseException) -> str | None:
    """The error code a service answered with (botocore ``ClientError``: ``response["Error"]["Code"]``), if any."""
    response = getattr(err, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def _is_missing(err: BaseException) -> bool:
    """A path or S3 object that does not exist (``NoSuchKey`` / ``NoSuchBucket`` / 404)."""
    if isinstance(err, _MISSING_PATH):
        return True
    return service_error_code(err) in ("NoSuchKey", "NoSuchBucket", "404", "NotFound")


def is_unreachable(err: BaseException) -> bool:
    """A network failure anywhere in ``err``'s chain: a connection refused or timed out, a host name not resolved.
    A service's answer is not one (an S3 ``NoSuchKey`` or an HTTP 404 carries a ``response``)."""
    return any((isinstance(e, ConnectionError | TimeoutError) or _from_network_module(e))
               and getattr(e, "response", None) is None for e in exception_chain(err))


def _from_network_module(err: BaseException) -> bool:
    """``err``'s class (or a base) comes from a network / endpoint library (:data:`_NETWORK_MODULES`)."""
    return any(k.__module__.startswith(_NETWORK_MODULES) for k in type(err).__mro__)


def _is_environment(err: BaseException) -> bool:
    """An outage or a resource limit: network, endpoints, memory (CUDA included)."""
    if isinstance(err, ConnectionError | TimeoutError | TransientError | MemoryError):
        return True
    if type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return True
    return _from_network_module(err)


def exit_code(err: BaseException) -> int:
    """The contract's exit code of an exception (see the module docstring)."""
    if isinstance(err, GateFailed):
        return EXIT_GATE_FAILED
    if isinstance(err, ConfigError | BadInput):
        return EXIT_BAD_INPUT
    if isinstance(err, OSError | ValueError) and any(_is_missing(e)
                                                     for e in exception_chain(err, implicit=False)):
        # a file the user named is not there (raised as such, or re-raised `from` it); unless it is missing because
        # the network failed while fetching it (a Hugging Face Hub cache miss with the Hub unreachable)
        return EXIT_TRANSIENT if is_unreachable(err) else EXIT_BAD_INPUT
    if any(_is_environment(e) for e in exception_chain(err)):
        return EXIT_TRANSIENT
    if isinstance(err, OSError | ValueError) and any(isinstance(e, OSError) and e.errno in _NOT_PERMITTED
                                                     for e in exception_chain(err, implicit=False)):
        return EXIT_BAD_INPUT  # a file this user cannot read, a folder it cannot write (raised, or re-raised from)
    if getattr(err, "error_code", None) in _REFUSED_CODES:  # e.g. MLflow: no such model version
        return EXIT_BAD_INPUT
    if isinstance(err, OSError):
        return EXIT_TRANSIENT
    if isinstance(err, ValueError):  # UnicodeDecodeError, JSONDecodeError, ArrowInvalid: parsing user data
        return EXIT_BAD_INPUT
    return EXIT_TRANSIENT  # unexpected: an internal error (retried, bounded, by the flows)


def is_internal(err: BaseException) -> bool:
    """Whether ``err`` is none of the contract's kinds, i.e. a bug (exit 3 with ``internal error``)."""
    return exit_code(err) == EXIT_TRANSIENT and not (
        isinstance(err, OSError) or any(_is_environment(e) for e in exception_chain(err)))


def closest_sibling(path: Path, dirs_only: bool = False) -> Path | None:
    """For a ``path`` that is not there, the entry beside it whose name is closest (``difflib``), for a "did you
    mean" in the error naming it (``models/reward-modle`` → ``models/reward-model``); None when none is close.
    Hidden entries are left out, and with ``dirs_only`` everything but directories."""
    entries = path.parent.iterdir() if path.parent.is_dir() else ()
    names = sorted(p.name for p in entries if not p.name.startswith(".") and (p.is_dir() or not dirs_only))
    close = difflib.get_close_matches(path.name, names, n=1)
    return path.parent / close[0] if close else None


def one_line(text: str) -> str:
    """A message on one line: its non-empty lines joined by ``; ``."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def verbose_from_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def describe(err: BaseException, verbose: bool = False) -> tuple[int, str]:
    """``(exit code, what to print on stderr)``: a gate failure as the gate report's message, other
    errors on one line (``error: ...`` / ``internal error: ...``), the traceback when ``verbose``."""
    code = exit_code(err)
    if code == EXIT_GATE_FAILED:
        text = str(err)
    elif is_internal(err):
        text = f"internal error: {type(err).__name__}: {one_line(str(err))}"
        if not verbose:
            text += f" (rerun with --verbose or {VERBOSE_ENV}=1 for the traceback)"
    else:
        text = f"error: {one_line(str(err)) or type(err).__name__}"
    if verbose:
        text = "".join(traceback.format_exception(err)) + text
    return code, text
