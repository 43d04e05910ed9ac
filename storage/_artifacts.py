"""Where trained adapters are kept: an Optuna artifact store on a folder (shared by every
worker's machine: NFS or the like) or an S3 bucket, so that optuna-dashboard lists and
serves them. A trial's adapter is one tar of the folder peft's save_pretrained writes."""

from __future__ import annotations

import io
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ._open import StorageError
from ._trial_record import recorded

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore


def open_artifact_store(location: str) -> ArtifactStore:
    """The artifact store at `location`: a folder, or s3://BUCKET (boto3's credentials and
    endpoint from the environment, as the AWS tools read them)."""
    from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

    if location.startswith("s3://"):
        bucket = location.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise StorageError(f"artifact store {location!r}: give s3://BUCKET (Optuna keeps artifacts at its top)")
        return Boto3ArtifactStore(bucket)
    if "://" in location:
        raise StorageError(f"artifact store {location!r}: give a folder or s3://BUCKET")
    return FileSystemArtifactStore(location)


def check_artifact_store(location: str) -> None:
    """Make the folder (its parent must exist), then write and remove a probe; StorageError
    in one line where the store cannot be written."""
    try:
        if "://" not in location:
            Path(location).mkdir(exist_ok=True)
        store = open_artifact_store(location)
        probe = f"autotune-probe-{uuid.uuid4().hex}"
        store.write(probe, io.BytesIO(b"probe"))
        store.remove(probe)
    except StorageError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot write artifacts to {location}: {reason}") from None


def pack_adapter(folder: str) -> Path:
    """The adapter folder as one tar file (beside it, in a temporary folder of its own)."""
    packed = Path(tempfile.mkdtemp(prefix="autotune-adapter-")) / "adapter.tar"
    with tarfile.open(packed, "w") as tar:
        for file in sorted(Path(folder).iterdir()):
            tar.add(file, arcname=file.name)
    return packed


def unpack_adapter(store: ArtifactStore, artifact_id: str, folder: Path) -> None:
    """Write the adapter `artifact_id` into `folder` (made once it is read): what
    PeftModel.from_pretrained loads."""
    with store.open_reader(artifact_id) as reader:
        packed = io.BytesIO(reader.read())
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=packed) as tar:
        tar.extractall(folder, filter="data")


def kept_adapters(trials: list[optuna.trial.FrozenTrial], front: set[int], keep: str) -> dict[int, int]:
    """The trials whose adapter the keep rule holds (number -> bytes): with `front`, those
    of the front's trials and of their verification re-runs; with `all`, every one stored."""
    kept = {}
    for trial in trials:
        size = recorded(trial, "adapter_bytes")
        if recorded(trial, "adapter_artifact") is None or not trial.state.is_finished():
            continue
        verifies = recorded(trial, "verifies")
        if keep == "all" or (verifies if verifies is not None else trial.number) in front:
            kept[trial.number] = int(size or 0)
    return kept
