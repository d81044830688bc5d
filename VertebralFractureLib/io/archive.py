"""Safe extraction of a zip archive (a DICOM series sent as one file).

Members are checked before anything is written: no absolute paths, drive letters or ``..``
components (path traversal), no encrypted members, a bounded number of members, a bounded total
size and a bounded compression ratio (a "zip bomb" guard). The declared sizes are enforced while
extracting, so an archive that lies about them cannot fill the disk.
"""

from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from VertebralFractureLib.errors import InputError

#: Most members accepted (a 2,000-slice series with a DICOMDIR is far below this).
MAX_MEMBERS = 100_000
#: Largest total uncompressed size accepted (bytes).
MAX_TOTAL_BYTES = 8 * 1024**3
#: Largest uncompressed/compressed ratio of one member larger than 1 MiB.
MAX_RATIO = 200.0

_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a member may be written to, ``None`` for a folder entry.

    Raises:
        InputError: for an absolute path, a drive letter, a ``..`` component or a NUL byte.
    """
    clean = name.replace("\\", "/")
    parts = [part for part in clean.split("/") if part not in ("", ".")]
    if clean.startswith("/") or _DRIVE.match(clean) or ".." in parts or "\0" in clean:
        raise InputError(
            f"unsafe zip member '{name}': absolute paths and '..' components are not allowed; "
            "the archive was not extracted"
        )
    if not parts or clean.endswith("/"):
        return None
    return PurePosixPath(*parts)


def extract_zip(archive: str | Path, destination: str | Path) -> tuple[list[Path], list[str]]:
    """Extract ``archive`` into the existing folder ``destination`` after checking every member.

    Args:
        archive: the ``.zip`` file.
        destination: an existing (usually temporary) folder.

    Returns:
        The extracted files, and the names of members that were corrupt (CRC or data errors) and
        were left out.

    Raises:
        InputError: for a file that is not a zip, an unsafe or encrypted member, or an archive
            over the member, size or compression-ratio limits.
    """
    archive, destination = Path(archive), Path(destination).resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"cannot open '{archive.name}' as a zip archive: {err}") from err
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InputError(f"'{archive.name}' has {len(infos)} members; at most {MAX_MEMBERS} are accepted")
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        total = 0
        for info in infos:
            rel = safe_member_path(info.filename)
            if rel is None or info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise InputError(f"'{archive.name}' holds an encrypted member ('{info.filename}'); it cannot be read")
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise InputError(
                    f"'{archive.name}' expands to more than {MAX_TOTAL_BYTES / 1024**3:.0f} GiB; refusing to extract it"
                )
            if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise InputError(
                    f"'{archive.name}': member '{info.filename}' is compressed more than {MAX_RATIO:.0f}:1 "
                    "(a zip bomb?); refusing to extract it"
                )
            target = (destination / rel).resolve()
            if not target.is_relative_to(destination):
                raise InputError(f"unsafe zip member '{info.filename}': it would be written outside the folder")
            plan.append((info, target))
        written, corrupt = [], []
        for info, target in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                # ZipExtFile stops at the declared file_size and checks the CRC at the end
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
            except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, OSError) as err:
                target.unlink(missing_ok=True)
                if isinstance(err, OSError) and not isinstance(err, zipfile.BadZipFile) and err.errno is not None:
                    raise InputError(f"cannot extract '{archive.name}': {err}") from err  # disk full, permissions
                corrupt.append(info.filename)
                continue
            written.append(target)
    return written, corrupt
