"""Files written whole: a reader (a later run, the report, a parallel job) finds the complete file
or the one that was there before, never a part; a write that fails (a full disk, a file-size
limit) leaves no part behind and ends in one line that names the file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from shotlab import ShotlabError


def write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(part)` on a hidden sibling of `path`, then rename it to `path` (atomic on one
    file system). On failure the part is removed and a ShotlabError names `path`."""
    path = Path(path)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write(part)
        os.replace(part, path)
    except (OSError, RuntimeError) as err:
        # torch.save reports a failed write as a RuntimeError; writing to a Python file object, it
        # keeps the file's OSError as the context.
        cause = err if isinstance(err, OSError) else err.__context__
        reason = (cause.strerror or str(cause)) if isinstance(cause, OSError) else "the write stopped short"
        raise ShotlabError(f"cannot write {path} ({reason}); it is left as it was: free some space "
                           "(or raise the file-size limit) and run again") from None
    finally:
        part.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """write_whole for a text file."""
    write_whole(path, lambda part: part.write_text(text))
