"""Whole-file replacement that readers and a killed writer never see half done."""

import os
import tempfile


def write_atomic(path: str, text: str, fsync: bool = True) -> None:
    """Replaces `path` with `text` atomically (temp file, fsync, rename).

    Readers see the old file or the new one, never a partial one. fsync=False keeps
    that guarantee against a killed process (not against a power cut) at less cost.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
