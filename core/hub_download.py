"""Downloads from the Hugging Face Hub: a preflight before any byte, and progress while it runs.

``plan_download`` asks the Hub (through ``huggingface_hub``'s own dry run: the repo's file list
and each file's metadata) which of the wanted files are missing from the local cache and how
big they are, and refuses in one sentence when the repo does not exist, is gated for this user,
or the disk holding the cache has less free space than the files need. ``download`` then fetches
them with ``snapshot_download`` while a thread reads the bytes arriving in the cache's ``blobs/``
folder (finished blobs and ``.incomplete`` parts alike, so a resumed file counts what it already
had) and reports them to a ``phases.Phase`` in bytes.

Also what every Hub call here and in ``hub.py`` (the push) shares: ``hub_token`` (whatever
``huggingface_hub`` finds: ``HF_TOKEN`` or the login; never printed or written), ``scrub_token``
and ``explain_hub_error``, one sentence per thing the Hub can answer.
"""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

POLL_S = 0.25


class DownloadError(UserError):
    """A download that cannot start or finish. One sentence for the user."""


@dataclass
class DownloadPlan:
    repo_id: str
    repo_type: str  # model | dataset
    revision: str | None
    commit: str | None
    storage: Path  # the repo's folder in the cache
    allow_patterns: list[str] | None = None
    missing: list[tuple[str, int]] = field(default_factory=list)  # (file, bytes) not in the cache yet
    cached_bytes: int = 0
    free_bytes: int | None = None

    @property
    def need_bytes(self) -> int:
        return sum(size for _, size in self.missing)

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "repo_type": self.repo_type, "commit": self.commit,
                "files": len(self.missing), "need_bytes": self.need_bytes, "cached_bytes": self.cached_bytes,
                "free_bytes": self.free_bytes, "cache": str(self.storage)}


def format_bytes(n: float | None) -> str:
    """1.5 GB, 830 MB, 12 KB (powers of 1000, as the Hub and `df -H` write sizes)."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _repo_url(repo_id: str, repo_type: str) -> str:
    return f"{_endpoint()}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def hub_token() -> str | None:
    """The user's token: ``HF_TOKEN`` or the Hugging Face login; None when logged out."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:
        return None


def scrub_token(text: str, token: str | None) -> str:
    """``text`` with the token replaced by ``***`` (an error message never holds it)."""
    return text.replace(token, "***") if token else text


def explain_hub_error(exc: BaseException, repo_id: str, repo_type: str = "model",
                      revision: str | None = None, *, pushing: bool = False) -> str:
    """One sentence for what went wrong talking to the Hub (never the token, never a stack).

    For a download of ``repo_id`` (a model or a dataset), or for a push to it (``pushing``).
    """
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = "dataset" if repo_type == "dataset" else "model"
    chain = []
    while exc is not None and exc not in chain:  # a dry run wraps the Hub's answer in a DryRunError
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    status = getattr(getattr(chain[0], "response", None), "status_code", None)
    if pushing:
        name = type(chain[0]).__name__
        if "OfflineMode" in name:
            return "HF_HUB_OFFLINE is set, so the Hub is not contacted; unset it to push"
        if status == 401:
            return ("the Hub refused the token (401 unauthorized): log in again with `hf auth login` or set a "
                    "valid HF_TOKEN")
        if status == 403:
            return (f"the token has no write access to {repo_id} (403 forbidden): use a write token or your own "
                    "namespace")
        if status == 404:
            return f"{repo_id} does not exist and cannot be created with this token (404)"
        if status is not None:
            return f"the Hub answered {status} for {repo_id}"
        return f"cannot reach the Hugging Face Hub at {_endpoint()} ({name})"
    known = (GatedRepoError, RevisionNotFoundError, RepositoryNotFoundError, LocalEntryNotFoundError)
    exc = next((e for e in chain if isinstance(e, known)), None) or next(
        (e for e in chain if "Connect" in type(e).__name__ or "Timeout" in type(e).__name__), chain[0])
    if isinstance(exc, GatedRepoError):
        if hub_token():
            return (f"{repo_id} is gated and your Hub account has no access yet: accept its terms at "
                    f"{_repo_url(repo_id, repo_type)} and try again")
        return (f"{repo_id} is gated: accept its terms at {_repo_url(repo_id, repo_type)}, then log in with "
                "`hf auth login` (or set HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id} has no revision {revision!r} on the Hub"
    if isinstance(exc, RepositoryNotFoundError):
        return (f"no {what} {repo_id} on the Hub (or it is private and you are not logged in: "
                "`hf auth login` or HF_TOKEN)")
    if isinstance(exc, LocalEntryNotFoundError) or "Connect" in type(exc).__name__ or "Timeout" in type(exc).__name__:
        return (f"cannot reach the Hugging Face Hub at {_endpoint()} to fetch {repo_id}; check the network "
                "(or download it on a connected machine into the cache)")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"the Hub answered {status} for {repo_id}"
    return f"cannot download {repo_id} ({type(exc).__name__})"


def _free_bytes(path: Path) -> int | None:
    """Free space of the disk holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _storage(repo_id: str, repo_type: str) -> Path:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE).expanduser() / repo_folder_name(repo_id=repo_id, repo_type=repo_type)


@contextmanager
def _no_hub_bars():
    """huggingface_hub's own progress bars off while we report progress ourselves (they would draw
    on the user's terminal during the preflight, and fill train.log with carriage returns)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def plan_download(repo_id: str, revision: str | None = None, *, allow_patterns: list[str] | None = None,
                  repo_type: str = "model", select=None) -> DownloadPlan:
    """What a download of ``repo_id`` would fetch, checked against the free disk space.

    ``select(filenames) -> filenames`` narrows the files ``allow_patterns`` matched (models:
    ``models.weight_files``, so no ``original/*.pth`` duplicates); the plan then downloads those only.

    Raises DownloadError (one sentence) when the repo is missing or gated, the Hub cannot be
    reached, or the files do not fit on the disk. Writes nothing to the cache's blobs."""
    from huggingface_hub import snapshot_download

    try:
        with _no_hub_bars():
            infos = snapshot_download(repo_id, revision=revision, repo_type=repo_type,
                                      allow_patterns=allow_patterns, dry_run=True)
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one sentence
        raise DownloadError(explain_hub_error(exc, repo_id, repo_type, revision)) from exc
    if select is not None:
        keep = set(select([info.filename for info in infos]))
        infos = [info for info in infos if info.filename in keep]
        allow_patterns = sorted(keep)
    storage = _storage(repo_id, repo_type)
    plan = DownloadPlan(repo_id, repo_type, revision, infos[0].commit_hash if infos else None, storage,
                        allow_patterns)
    for info in infos:
        if info.will_download:
            plan.missing.append((info.filename, int(info.file_size or 0)))
        else:
            plan.cached_bytes += int(info.file_size or 0)
    check_room(plan)
    return plan


def check_room(plan: DownloadPlan, extra_bytes: int = 0) -> None:
    """DownloadError unless the disk of the cache has room for the missing files (+ ``extra_bytes``)."""
    plan.free_bytes = _free_bytes(plan.storage)
    need = plan.need_bytes - _partial_bytes(plan.storage) + extra_bytes  # an interrupted download resumes
    if plan.free_bytes is not None and need > plan.free_bytes:
        raise DownloadError(
            f"not enough disk space to download {plan.repo_id}: it needs {format_bytes(need)} and "
            f"{_disk_name(plan.storage)} has {format_bytes(plan.free_bytes)} free; free some space or point "
            "HF_HOME at a bigger disk")


def _disk_name(storage: Path) -> str:
    return f"the disk of the Hugging Face cache ({storage.parent})"


def _partial_bytes(storage: Path) -> int:
    return sum(_size(p) for p in (storage / "blobs").glob("*.incomplete")) if (storage / "blobs").is_dir() else 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # renamed or removed between the listing and the stat
        return 0


def _blob_names(storage: Path) -> set[str]:
    blobs = storage / "blobs"
    return {p.name for p in blobs.iterdir() if not p.name.endswith(".incomplete")} if blobs.is_dir() else set()


def arrived_bytes(storage: Path, before: set[str]) -> int:
    """Bytes in ``blobs/`` that were not complete blobs when the download began."""
    blobs = storage / "blobs"
    if not blobs.is_dir():
        return 0
    total = 0
    for path in blobs.iterdir():
        if path.name not in before:
            total += _size(path)
    return total


@contextmanager
def watching(storage: Path, phase=None):
    """While the body downloads into ``storage``, report the bytes arriving to ``phase``."""
    if phase is None:
        yield
        return
    before = _blob_names(storage)
    done = threading.Event()

    def poll() -> None:
        while not done.wait(POLL_S):
            phase.update(arrived_bytes(storage, before))

    watcher = threading.Thread(target=poll, name="download-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
    phase.update(arrived_bytes(storage, before))


def download(plan: DownloadPlan, phase=None) -> Path:
    """Fetch the plan's files into the cache; ``phase`` (a phases.Phase in bytes) hears the progress.
    Returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    try:
        with watching(plan.storage, phase), _no_hub_bars():
            path = snapshot_download(plan.repo_id, revision=plan.commit or plan.revision, repo_type=plan.repo_type,
                                     allow_patterns=plan.allow_patterns)
    except Exception as exc:  # noqa: BLE001 - one sentence; the stack goes to the log by the caller
        raise DownloadError(explain_hub_error(exc, plan.repo_id, plan.repo_type, plan.revision)) from exc
    return Path(path)


def fetch(repo_id: str, revision: str | None = None, *, allow_patterns: list[str] | None = None,
          repo_type: str = "model", phases=None, select=None) -> Path:
    """Preflight, then download with a ``download`` phase on ``phases`` (a PhaseReporter) when
    anything is missing. Returns the snapshot folder."""
    plan = plan_download(repo_id, revision, allow_patterns=allow_patterns, repo_type=repo_type, select=select)
    if not plan.missing or phases is None:
        return download(plan)
    phase = phases.begin("download", total=plan.need_bytes, unit="bytes")
    path = download(plan, phase)
    phase.end()
    return path


# --------------------------------------------------------------------------- hub datasets

def _dataset_files(builder) -> list[str]:
    """The hf:// URLs of every data file the builder's config reads (all its splits)."""
    files = getattr(builder.config, "data_files", None) or {}
    out: list[str] = []
    for urls in files.values():
        out += [str(u) for u in urls]
    return out


def plan_dataset(builder, repo_id: str) -> DownloadPlan:
    """What loading ``builder`` (a datasets builder of a Hub dataset) will download, with the disk
    checked for it twice over (the files, then their prepared Arrow copy)."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    commit = None
    paths: list[str] = []
    for url in _dataset_files(builder):
        # hf://datasets/org/name@<commit>/path/in/repo
        _, _, after = url.removeprefix("hf://datasets/").partition("@")
        rev, _, path = after.partition("/")
        commit = commit or rev or None
        if path:
            paths.append(path)
    plan = DownloadPlan(repo_id, "dataset", None, commit, _storage(repo_id, "dataset"))
    if not paths:
        return plan
    try:
        infos = HfApi().get_paths_info(repo_id, paths, repo_type="dataset", revision=commit)
    except Exception as exc:  # noqa: BLE001 - one sentence
        raise DownloadError(explain_hub_error(exc, repo_id, "dataset")) from exc
    for info in infos:
        size = int(getattr(info, "size", 0) or 0)
        if isinstance(try_to_load_from_cache(repo_id, info.path, revision=commit, repo_type="dataset"), str):
            plan.cached_bytes += size
        else:
            plan.missing.append((info.path, size))
    check_room(plan, extra_bytes=plan.need_bytes)  # the prepared Arrow copy takes about as much again
    return plan
