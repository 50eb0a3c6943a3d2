"""The stages before rendering, run in order: load, method signatures, resolve, lock.

`render`, the CLI's `render` and the builder all need the same four results, computed the
same way (one BuildSettings for resolve's base registry and lock's indexes), so they are
computed here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelpack.pipeline.locking import LockResult, lock
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.pipeline.resolver import resolve
from modelpack.pipeline.settings import BuildSettings
from modelpack.progress import ProgressObserver, Reporter, reporter
from modelpack.project.config import as_model_dir
from modelpack.project.methods import SignatureResult, signature
from modelpack.project.model_dir import ModelDir, ModelDirLike


@dataclass(frozen=True)
class PreparedModel:
    """Everything `render` needs besides the output folder."""

    model_dir: ModelDir
    signature: SignatureResult
    resolved: ResolveResult
    lock: LockResult | None  # None only for settings.use_dockerfile: the model's Dockerfile installs


def prepare(
    model_dir: ModelDirLike,
    *,
    settings: BuildSettings | None = None,
    lock_result: LockResult | None = None,
    keep_clarifai: bool = False,
    force_lock: bool = False,
    progress: ProgressObserver | Reporter | None = None,
) -> PreparedModel:
    """Load (validate), read the method signatures, resolve the base and use or make the lock.

    ``settings`` default to `BuildSettings.from_env()`. ``lock_result``: a lock the caller
    already has, used instead of locking. ``progress`` receives validate, signature, resolve
    and lock events.
    """
    report = reporter(progress)
    settings = settings if settings is not None else BuildSettings.from_env()
    loaded = as_model_dir(model_dir)
    report("validate", f"{loaded.root}: valid")
    sig = signature(loaded.root)
    report("signature", f"{sig.signature.class_name}: {len(sig.signature.methods)} method(s)")
    resolved = resolve(loaded, base_registry=settings.base_registry)
    report("resolve", f"base {resolved.base_image}")
    if lock_result is None and not settings.use_dockerfile:
        lock_result = lock(
            loaded,
            resolved=resolved,
            settings=settings,
            force=force_lock,
            keep_clarifai=keep_clarifai,
            progress=report,
        )
    return PreparedModel(model_dir=loaded, signature=sig, resolved=resolved, lock=lock_result)
