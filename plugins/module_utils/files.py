# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash-safe file writes. Standard library only: runs on every managed host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat
import tempfile

from ansible.module_utils.six import text_type


def _as_bytes(data):
    if isinstance(data, text_type):
        return data.encode('utf-8')
    return bytes(data)


def read_regular_file(path):
    """Content of ``path`` if it is a regular file (not following a symlink), else None."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    if not stat.S_ISREG(st.st_mode):
        return None
    with open(path, 'rb') as handle:
        return handle.read()


def would_change(path, data, mode):
    """True when ``atomic_write(path, data, mode)`` would change anything (for check mode)."""
    data = _as_bytes(data)
    try:
        st = os.lstat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return True
        raise
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
        return True
    if st.st_size != len(data):
        return True
    return read_regular_file(path) != data


def fsync_dir(directory):
    """Make a rename or new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data, mode):
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    The temporary file is created in the same directory (os.replace must not
    cross filesystems) with ``mode`` from the start, so a private key is never
    readable by others, not even briefly. Returns True when content or mode
    changed; an identical file is left untouched (mtime included). A symlink at
    ``path`` is replaced, not followed.
    """
    data = _as_bytes(data)
    if not would_change(path, data, mode):
        return False
    existing = read_regular_file(path)
    if existing == data:
        # Same content, only the mode differs: chmod is atomic already.
        os.chmod(path, mode)
        return True
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp',
                                    dir=directory)
    try:
        # mkstemp creates 0600; set the final mode before any byte is written
        # so a wider mode never applies to partial content and a narrower one
        # is never widened.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp_path)
        raise
    os.close(fd)
    try:
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise
    fsync_dir(directory)
    return True


def ensure_directory(path, mode):
    """Create ``path`` and missing parents with ``mode`` (exactly, despite the umask).

    Returns the directories created, outermost first. Existing directories
    keep their mode: they may be shared with other software.
    """
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    missing.reverse()
    for directory in missing:
        try:
            os.mkdir(directory, mode)
        except OSError as exc:
            if exc.errno != errno.EEXIST or not os.path.isdir(directory):
                raise
            continue
        os.chmod(directory, mode)
    return missing
