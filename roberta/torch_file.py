"""Reading files written by `torch.save` safely: no pickled code runs (unless asked), and a damaged
file is one line naming it.

torch's own reader fails on a cut zip archive with an OSError (Errno 22) or a struct error, and on
a cut legacy pickle with whatever the unpickler hits first; so the structure is checked before
torch reads, and anything torch still raises is reported as damage.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from roberta.errors import UserError

logger = logging.getLogger(__name__)

# Released fairseq RoBERTa `model.pt` files keep their config in an argparse.Namespace, which is
# inert to rebuild (attributes only), so allowing it does not open the door to code execution.
_SAFE_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [argparse.Namespace]
_ZIP_LOCAL_HEADER, _ZIP_LOCAL_HEADER_SIZE = b"PK\x03\x04", 30
# torch.save's legacy format: pickles of the magic number, protocol, system info, the checkpoint
# and its storage keys, then the raw tensor data.
_LEGACY_PICKLES = 5


def read_torch_file(path: Path, *, unsafe: bool = False) -> Any:
    """`torch.load` of an existing file onto the CPU, its structure checked first, so that a damaged
    file (any prefix of a checkpoint, flipped bytes) is one line naming it, never a traceback."""
    _check_looks_like_torch_file(path)
    if unsafe:
        logger.warning("loading %s with --unsafe-load: its pickled code runs with your permissions", path)
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if not _pickles_are_whole(path):  # a global's name cut short is damage, not a refusal
            raise _truncated_or_corrupt(path, _detail(error)) from None
        if found:
            raise UserError(f"refusing to unpickle {path}: it needs arbitrary code (global "
                            f"{found.group(1)}). If you trust the file, pass --unsafe-load") from None
        raise UserError(f"refusing to unpickle {path}: {_detail(error)}; it may need arbitrary code. If you "
                        f"trust the file, pass --unsafe-load") from None
    except Exception as error:  # noqa: BLE001
        # The structure was checked above, so whatever torch's reader raises now (OSError, struct
        # errors, IndexError, ...) comes from damaged contents; its message is kept as the detail.
        raise _truncated_or_corrupt(path, _detail(error)) from None


def _check_looks_like_torch_file(path: Path) -> None:
    """torch.save writes a zip archive (legacy files: a pickle, whose first byte is 0x80); anything
    else (a text file, a dataset .bin, an empty file) would only give an obscure unpickling error.
    A zip archive is checked whole here, since torch's reader fails on a cut one with an OSError."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise UserError(f"checkpoint {path}: empty file (an interrupted copy or save?); use another checkpoint")
    if head[:1] == b"\x80":
        return
    if head != _ZIP_LOCAL_HEADER:
        raise UserError(f"checkpoint {path}: not a PyTorch checkpoint (neither a zip archive nor a pickle); "
                        f"pass a file written by roberta-train or fairseq-train")
    try:
        _check_zip_archive(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, struct.error) as error:
        raise _truncated_or_corrupt(path, _detail(error)) from None


def _check_zip_archive(path: Path) -> None:
    """The archive's directory is intact, every member's data lies within the file (checking CRCs
    would read gigabytes) and the pickle, small and read first, matches its CRC."""
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        members = archive.infolist()
        for member in members:
            end = _member_data_end(handle, member)
            if end > size:
                raise zipfile.BadZipFile(f"{member.filename} ends at byte {end} of {size}")
            if member.compress_type == zipfile.ZIP_STORED and member.file_size != member.compress_size:
                raise zipfile.BadZipFile(f"{member.filename} claims {member.file_size} bytes but stores "
                                         f"{member.compress_size}")
        pickles = [member for member in members if member.filename.rsplit("/", 1)[-1] == "data.pkl"]
        if not pickles:
            raise UserError(f"checkpoint {path}: a zip archive without data.pkl, not a PyTorch checkpoint; "
                            f"pass a file written by roberta-train or fairseq-train")
        if pickles[0].CRC:  # torch.save leaves it 0 under torch.serialization.set_crc32_options(False)
            archive.read(pickles[0])  # raises BadZipFile on a CRC mismatch


def _member_data_end(handle: BinaryIO, member: zipfile.ZipInfo) -> int:
    """Where `member`'s data ends, from its local header (whose name and extra field precede it)."""
    handle.seek(member.header_offset)
    header = handle.read(_ZIP_LOCAL_HEADER_SIZE)
    if len(header) < _ZIP_LOCAL_HEADER_SIZE or not header.startswith(_ZIP_LOCAL_HEADER):
        raise zipfile.BadZipFile(f"no local header for {member.filename} at byte {member.header_offset}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return member.header_offset + _ZIP_LOCAL_HEADER_SIZE + name_length + extra_length + member.compress_size


def _pickles_are_whole(path: Path) -> bool:
    """Whether the pickles torch reads are complete: a zip archive's one was checked with it; a
    legacy file holds `_LEGACY_PICKLES` before its raw tensor data, a plain pickle file one."""
    with open(path, "rb") as handle:
        if handle.read(4) == _ZIP_LOCAL_HEADER:
            return True
        handle.seek(0)
        try:
            for _ in range(_LEGACY_PICKLES):
                if not handle.peek(1):
                    return True
                for _ in pickletools.genops(handle):
                    pass
        except Exception:  # noqa: BLE001 - whatever stops the decoding, the stream is damaged
            return False
    return True


def _truncated_or_corrupt(path: Path, detail: str) -> UserError:
    return UserError(f"checkpoint {path}: truncated or corrupt (an interrupted copy or save?): {detail}; "
                     f"use another checkpoint")


def _detail(error: BaseException) -> str:
    """An exception as one short line; torch's weights-only errors put theirs after a preamble."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1]
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {line}"[:160]
