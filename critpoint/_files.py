"""Writing outputs whole, without clobbering what is at the path: the one writer.

Every file critpoint writes goes through :func:`atomic_path` (or the helpers
built on it), which does what the thing at the path calls for:

* a regular file (or a new one) is written to a temporary name in the same
  folder, flushed to disk and renamed over the path, so a reader sees the old
  file or the new one, never half of one. A replaced file keeps its
  permissions (and, for root, its owner); a new file gets what a plain
  ``open()`` would (``0o666`` less the umask);
* a symbolic link is followed: its target is written (the same way), the
  link stays;
* a FIFO, a character or block device, and ``/dev/stdout``, ``/dev/stderr``,
  ``/dev/fd/N``, ``/proc/self/fd/N`` are written straight through, never
  renamed over (``--json /dev/null`` must not replace the device node).

A failure names the user's path, not the temporary one, and the temporary
file is removed on every exit Python sees (errors, Ctrl-C). :func:`write_folder`
replaces a set of files in a folder as a unit, and :func:`check_outputs`
refuses an output that is one of a command's inputs (or another output).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from critpoint.errors import InputError, OutputError

__all__ = [
    "atomic_path",
    "check_outputs",
    "write_bytes_atomic",
    "write_folder",
    "write_text_atomic",
    "write_with_atomic",
]

PathLike = str | os.PathLike[str]

#: Paths that name an already open file descriptor (written through it).
_FD_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd)/(\d+)$")
_STD_PATHS = {"/dev/stdout": 1, "/dev/stderr": 2}


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _descriptor(path: str) -> int | None:
    """The file descriptor a path like ``/dev/stdout`` or ``/dev/fd/3`` stands for."""
    if path in _STD_PATHS:
        return _STD_PATHS[path]
    match = _FD_PATH.match(path)
    return int(match.group(1)) if match else None


def _straight_through(path: Path) -> bool:
    """Whether ``path`` is written in place: a FIFO, a device, an open descriptor."""
    if _descriptor(os.path.abspath(path)) is not None:
        return True
    try:
        st = os.stat(path)  # follows symlinks: /dev/stdout → /proc/self/fd/1 → ...
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


def _describe(exc: BaseException, tmp: str | None, path: Path) -> str:
    """The exception's text with the temporary name replaced by the user's path."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
    if tmp:
        text = text.replace(tmp, str(path))
    return text


def _output_error(
    exc: BaseException, tmp: str | None, path: Path, partial: bool = False
) -> OutputError:
    state = "what reached it may be incomplete" if partial else "it was left as it was"
    msg = (
        f"could not write {str(path)!r}: {_describe(exc, tmp, path)}; {state} — free "
        "some space, check the permissions, or choose another path"
    )
    return OutputError(msg)


def _is_write_failure(exc: BaseException) -> bool:
    """OSError, or a library's wrapper of one (torch's file writer, safetensors)."""
    if isinstance(exc, OSError):
        return True
    module = type(exc).__module__ or ""
    return isinstance(exc, RuntimeError) or module.startswith("safetensors")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every system can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_through(src: Path, target: Path) -> None:
    """Copy ``src`` into ``target`` without replacing it (device, FIFO, descriptor)."""
    fd = _descriptor(os.path.abspath(target))
    if fd is not None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with open(src, "rb") as f, os.fdopen(os.dup(fd), "wb") as out:
            shutil.copyfileobj(f, out)
        return
    with open(src, "rb") as f, open(target, "wb") as out:
        shutil.copyfileobj(f, out)


def _mode_for(target: Path) -> tuple[int, tuple[int, int] | None]:
    """Permissions for a file at ``target``: the replaced file's, or the umask's."""
    try:
        st = os.stat(target)
    except OSError:
        return 0o666 & ~_umask(), None
    return stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; put it at ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or PathLike
        Where the output goes (its folder is created if needed). See the
        module docstring for what happens to regular files, symbolic links,
        FIFOs, devices and ``/dev/stdout``.

    Yields
    ------
    Path
        A fresh temporary file to write (possibly replaced by the writer).

    Raises
    ------
    OutputError
        Writing failed (full disk, read-only folder...): the message names
        ``path``; a regular file at ``path`` is left as it was.
    InputError
        ``path`` is a folder.
    """
    target = Path(path)
    if target.is_dir():
        msg = f"cannot write {str(target)!r}: it is a folder; give a file name"
        raise InputError(msg)
    if _straight_through(target):
        scratch = tempfile.mkdtemp(prefix=".critpoint-")
        tmp = Path(scratch) / (target.name or "output")
        try:
            yield tmp
            if not tmp.exists():
                tmp.touch()
            _copy_through(tmp, target)
        except Exception as exc:
            if isinstance(exc, OutputError) or not _is_write_failure(exc):
                raise
            raise _output_error(exc, str(tmp), target, partial=True) from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return

    real = Path(os.path.realpath(target))  # a symlink: write its target
    tmp_name: str | None = None
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        mode, owner = _mode_for(real)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{real.name}.", suffix=".tmp", dir=real.parent
        )
        os.close(fd)
        os.chmod(tmp_name, mode)  # mkstemp makes 0600
        if owner is not None and getattr(os, "geteuid", lambda: -1)() == 0:
            with contextlib.suppress(OSError):  # root replacing a user's file
                os.chown(tmp_name, *owner)
        yield Path(tmp_name)
        with open(tmp_name, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_name, mode)  # the writer may have recreated the file
        # Atomic on POSIX and Windows: readers see the old file or the new one.
        os.replace(tmp_name, real)
        tmp_name = None
        _fsync_dir(real.parent)
    except Exception as exc:
        if isinstance(exc, OutputError) or not _is_write_failure(exc):
            raise
        raise _output_error(exc, tmp_name, target) from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def write_with_atomic(path: PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)``, then put the result at ``path`` (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole and return the path."""
    return write_with_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8; a lone surrogate becomes ``?``) to ``path`` whole."""
    return write_bytes_atomic(path, text.encode("utf-8", "replace"))


# --------------------------------------------------------------------- folders


def write_folder(
    folder: PathLike,
    files: Mapping[str, bytes],
    owned: Iterable[str] = (),
    last: str | None = None,
) -> Path:
    """Replace a set of files in ``folder`` as a unit.

    Everything is first written to a sibling staging folder (a full disk or
    an error leaves ``folder`` as it was). A new folder is then renamed into
    place in one step; in an existing one the files are renamed in, ``last``
    at the very end, after the files of ``owned`` that this set no longer
    holds are removed, so a reader never finds the new ``last`` beside old
    files. Other files in the folder are not touched.

    Parameters
    ----------
    folder : str or PathLike
    files : dict of str to bytes
        File names (no folders) and contents.
    owned : iterable of str
        Names this kind of folder may hold; stale ones are removed.
    last : str, optional
        The name written last (the file readers open first, e.g. ``report.html``).

    Returns
    -------
    Path
        The folder.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        msg = f"cannot write the folder {str(out)!r}: a file of that name exists"
        raise InputError(msg)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        )
    except OSError as exc:
        raise _output_error(exc, None, out) from exc
    order = [n for n in files if n != last] + ([last] if last in files else [])
    try:
        for name in order:
            mode, _ = _mode_for(out / name)
            path = staging / name
            path.write_bytes(files[name])
            os.chmod(path, mode)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        if not out.exists():
            os.chmod(staging, 0o777 & ~_umask())
            with contextlib.suppress(OSError):  # lost a race: fall through
                os.rename(staging, out)
                _fsync_dir(out.parent)
                return out
        for name in order:
            if name == last:
                for stale in set(owned) - set(files):
                    with contextlib.suppress(FileNotFoundError):
                        (out / stale).unlink()
            dest = out / name
            if dest.is_symlink() or _straight_through(dest):
                write_bytes_atomic(dest, files[name])
            else:
                os.replace(staging / name, dest)
        _fsync_dir(out)
    except OSError as exc:
        raise _output_error(exc, str(staging), out) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# ---------------------------------------------------------- inputs vs outputs


def _identity(path: PathLike) -> tuple[object, ...] | None:
    """What makes two paths the same file; ``None`` for ``-`` and non-regular files."""
    text = os.fspath(path)
    if text == "-" or _straight_through(Path(text)):
        return None
    try:
        st = os.stat(text)
    except OSError:
        return ("path", os.path.realpath(text))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", st.st_dev, st.st_ino)
    return ("file", st.st_dev, st.st_ino)


def check_outputs(
    outputs: Sequence[tuple[str, PathLike | None]],
    inputs: Sequence[tuple[str, PathLike | None]] = (),
) -> None:
    """Refuse an output that is one of the inputs, or the same file as another output.

    Parameters
    ----------
    outputs, inputs : sequence of (what, path)
        ``what`` names the option for the message (``"--json"``,
        ``"the checkpoint"``); ``None`` paths are skipped, as are ``-``
        (standard output) and devices such as ``/dev/null``.

    Raises
    ------
    InputError
        Naming both roles and the path, before anything is computed.
    """
    seen: dict[tuple[object, ...], tuple[str, str]] = {}
    for what, path in inputs:
        if path is not None:
            key = _identity(path)
            if key is not None:
                seen.setdefault(key, (what, os.fspath(path)))
    for what, path in outputs:
        if path is None:
            continue
        key = _identity(path)
        if key is None:
            continue
        if key in seen:
            other, other_path = seen[key]
            msg = (
                f"{what} {os.fspath(path)!r} is the same file as {other} "
                f"{other_path!r}; writing it would destroy it — choose another path"
            )
            raise InputError(msg)
        seen[key] = (what, os.fspath(path))
