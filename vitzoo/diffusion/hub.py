"""Loading by Hugging Face Hub id: one readable error when an id cannot be fetched.

``from_pretrained`` and ``snapshot_download`` report an id that is neither a local folder nor cached, while
downloads are impossible (no network, ``HF_HUB_OFFLINE=1``) or the id is wrong, as a chain of ``OSError`` s
several screens long that ends in ``... does not appear to have a file named config.json``. Every vitzoo call
site that takes a folder-or-hub-id loads inside :func:`hub_errors`, which turns exactly those failures into
one ``FileNotFoundError`` naming the id:

    with hub_errors(name, what="--vae"):
        vae = AutoencoderKL.from_pretrained(name)
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterator

__all__ = ["hub_errors"]

# diffusers warns "Couldn't connect to the Hub: ... Will try to load from local cache." on every offline load
_OFFLINE_NOTICE = "Couldn't connect to the Hub"
_NOTICE_LOGGER = "diffusers.pipelines.pipeline_utils"
# diffusers 0.42 passes an argument huggingface_hub >= 1.0 no longer uses; it warns on every hub load
_SYMLINK_WARNING = r"The `local_dir_use_symlinks` argument is deprecated"


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or during, outermost first."""
    found: list[BaseException] = []
    while err is not None and not any(err is seen for seen in found):
        found.append(err)
        err = err.__cause__ or err.__context__
    return found


def _reason(err: BaseException, name: str, what: str) -> str | None:
    """The one-line message for a failed fetch of ``name``, or None when ``err`` is not one."""
    from huggingface_hub import errors

    chain = _chain(err)

    def has(*classes: type) -> bool:
        return any(isinstance(e, classes) for e in chain)

    try:
        import httpx

        network_errors: tuple[type, ...] = (ConnectionError, TimeoutError, httpx.TransportError)
    except ImportError:  # huggingface_hub < 1.0 talks through requests, whose errors are OSErrors
        network_errors = (ConnectionError, TimeoutError)
    label = f"{what} {name!r}"
    if has(errors.GatedRepoError):
        return f"{label} is a gated Hugging Face Hub repository: accept its terms on huggingface.co and log in " \
               "(hf auth login)"
    if has(errors.OfflineModeIsEnabled):
        return f"{label} is neither a local folder nor in the Hugging Face cache, and downloads are off " \
               "(HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE, download it on a machine with network, or check the id"
    if has(errors.LocalEntryNotFoundError, *network_errors):
        return f"{label} is neither a local folder nor in the Hugging Face cache, and it cannot be downloaded: " \
               "the network is unavailable or the id is wrong"
    if has(errors.RepositoryNotFoundError):
        return f"{label} is neither a local folder nor a Hugging Face Hub repository (check the id or the path)"
    if has(errors.HFValidationError):
        return f"{label}: no such file or folder (nor a Hugging Face Hub id owner/name)"
    return None


class _DropOfflineNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_OFFLINE_NOTICE)


@contextlib.contextmanager
def hub_errors(name: str | Path, what: str = "model") -> Iterator[None]:
    """Within the block, a failure to fetch ``name`` from the Hub is raised as a one-line ``FileNotFoundError``.

    Covered: no network, ``HF_HUB_OFFLINE=1`` with the id not (fully) cached, an unknown or malformed id, a gated
    repository. Anything else (a local folder that exists but is broken, a bad config) passes unchanged, as does
    every error when ``name`` is an existing local path. Two notices of every offline or hub load are dropped:
    diffusers' "Couldn't connect to the Hub ... Will try to load from local cache." (a cached model loads without
    it, a missing one fails with this message) and huggingface_hub's "`local_dir_use_symlinks` is deprecated"
    (an argument diffusers passes).

    Args:
        name: the folder or hub id being loaded.
        what: how the message names it, e.g. the command-line flag (``"--vae"``) or ``"LinFusion checkpoint"``.
    """
    notice_filter = _DropOfflineNotice()
    logger = logging.getLogger(_NOTICE_LOGGER)
    logger.addFilter(notice_filter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SYMLINK_WARNING, category=UserWarning)
            yield
    except (OSError, ValueError) as err:  # HFValidationError is a ValueError
        if Path(name).exists():
            raise
        message = _reason(err, str(name), what)
        if message is None:
            raise
        raise FileNotFoundError(message) from err
    finally:
        logger.removeFilter(notice_filter)
