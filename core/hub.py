"""Optional push of a run's adapter or merged model to the Hugging Face Hub.

The token comes only from where ``huggingface_hub`` looks for it — the ``HF_TOKEN`` environment
variable or the login (``hf auth login``) — and is handed to the client in memory. It is never
written to presets, logs, events or run directories, never printed, and scrubbed from any error
message; before uploading, the folder is checked not to contain it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .hub_download import explain_hub_error, hub_token, scrub_token

WHAT = ("auto", "adapter", "merged")
# Never uploaded: pickled trainer arguments and optimizer/scheduler/RNG states.
IGNORE = ["training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state*.pth", "checkpoint-*", "*.tmp"]


class HubError(UserError):
    """A push that cannot be made. One sentence; it never holds the token."""


@dataclass
class PushResult:
    repo_id: str
    url: str
    folder: Path
    what: str  # adapter | merged | full

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "url": self.url, "folder": str(self.folder), "what": self.what}


def folder_to_push(run: str | os.PathLike, what: str = "auto") -> tuple[Path, str]:
    """(folder, kind) a push of ``run`` uploads: the merged model or the final adapter/model."""
    from .merge import MergeError, run_artifacts

    if what not in WHAT:
        raise HubError(f"--what: must be one of {', '.join(WHAT)}, got {what!r}")
    try:
        art = run_artifacts(run)
    except MergeError as exc:
        raise HubError(str(exc)) from None
    merged = art.merged_dir
    if what == "merged" or (what == "auto" and (merged / "config.json").exists()):
        if not (merged / "config.json").exists():
            raise HubError(f"{art.run_dir.name}: no merged model yet; run `sft-wizard merge {art.run_dir.name}` first")
        return merged, "merged"
    if what == "adapter" and not art.is_adapter:
        raise HubError(f"{art.run_dir.name}: a {art.cfg.method.type} fine-tune has no adapter; push the full model "
                       "with --what auto")
    return art.final_dir, "adapter" if art.is_adapter else "full"


def _contains(folder: Path, secret: str) -> Path | None:
    needle = secret.encode()
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                if needle in path.read_bytes():
                    return path
            except OSError:
                continue
    return None


def push(run: str | os.PathLike, repo_id: str, *, what: str = "auto", private: bool = True,
         commit_message: str | None = None) -> PushResult:
    """Create ``repo_id`` (private unless asked) and upload the run's merged model or adapter."""
    token = hub_token()
    folder, kind = folder_to_push(run, what)
    if not token:
        raise HubError("not logged in to the Hugging Face Hub: set HF_TOKEN or run `hf auth login`; nothing was pushed")
    if not repo_id.strip():
        raise HubError("--repo: give a repository id such as user/my-model")
    leak = _contains(folder, token)
    if leak is not None:
        raise HubError(f"{leak}: this file contains your Hub token, so nothing was pushed; remove it first")
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo.repo_id, folder_path=str(folder), repo_type="model", ignore_patterns=IGNORE,
            commit_message=commit_message or f"sft-wizard: {kind} from run {folder.parent.name}",
        )
    except HubError:
        raise
    except Exception as exc:  # network, auth, naming: one sentence, never the token
        raise HubError(scrub_token(f"{explain_hub_error(exc, repo_id, pushing=True)}; nothing was pushed",
                                   token)) from None
    return PushResult(repo.repo_id, str(repo), folder, kind)
