# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.fleetcert.meteor.plugins.module_utils import files


def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


@pytest.fixture
def wide_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_creates_file_with_exact_mode_despite_umask(tmp_path, wide_umask):
    target = tmp_path / 'key.pem'
    assert files.atomic_write(str(target), b'secret', 0o600) is True
    assert target.read_bytes() == b'secret'
    assert mode_of(target) == 0o600
    public = tmp_path / 'cert.pem'
    assert files.atomic_write(str(public), b'cert', 0o644) is True
    assert mode_of(public) == 0o644


def test_identical_content_and_mode_is_untouched(tmp_path):
    target = tmp_path / 'f'
    files.atomic_write(str(target), b'data', 0o640)
    before = os.stat(str(target))
    assert files.atomic_write(str(target), b'data', 0o640) is False
    after = os.stat(str(target))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert files.would_change(str(target), b'data', 0o640) is False


def test_content_change_replaces_the_inode(tmp_path):
    target = tmp_path / 'f'
    files.atomic_write(str(target), b'old', 0o600)
    old_inode = os.stat(str(target)).st_ino
    assert files.would_change(str(target), b'new', 0o600) is True
    assert files.atomic_write(str(target), b'new', 0o600) is True
    assert target.read_bytes() == b'new'
    assert os.stat(str(target)).st_ino != old_inode


def test_mode_only_change_is_reported_and_applied(tmp_path):
    target = tmp_path / 'key.pem'
    target.write_bytes(b'secret')
    os.chmod(str(target), 0o644)
    assert files.would_change(str(target), b'secret', 0o600) is True
    assert files.atomic_write(str(target), b'secret', 0o600) is True
    assert mode_of(target) == 0o600
    assert files.atomic_write(str(target), b'secret', 0o600) is False


def test_same_size_different_content_is_a_change(tmp_path):
    target = tmp_path / 'f'
    files.atomic_write(str(target), b'aaaa', 0o644)
    assert files.atomic_write(str(target), b'bbbb', 0o644) is True
    assert target.read_bytes() == b'bbbb'


def test_no_temporary_files_are_left(tmp_path):
    target = tmp_path / 'f'
    files.atomic_write(str(target), b'1', 0o600)
    files.atomic_write(str(target), b'2', 0o600)
    assert sorted(os.listdir(str(tmp_path))) == ['f']


def test_temporary_file_is_removed_on_failure(tmp_path):
    target = tmp_path / 'dir-in-the-way'
    target.mkdir()
    (target / 'child').write_bytes(b'x')
    with pytest.raises(OSError):
        files.atomic_write(str(target), b'data', 0o600)
    assert sorted(os.listdir(str(tmp_path))) == ['dir-in-the-way']


def test_symlink_is_replaced_not_followed(tmp_path):
    outside = tmp_path / 'outside'
    outside.write_bytes(b'keep')
    link = tmp_path / 'link'
    os.symlink(str(outside), str(link))
    assert files.would_change(str(link), b'keep', 0o644) is True
    assert files.atomic_write(str(link), b'new', 0o644) is True
    assert not os.path.islink(str(link))
    assert link.read_bytes() == b'new'
    assert outside.read_bytes() == b'keep'


def test_text_is_written_as_utf8(tmp_path):
    target = tmp_path / 'f'
    files.atomic_write(str(target), u'caf\u00e9', 0o644)
    assert target.read_bytes() == b'caf\xc3\xa9'


def test_read_regular_file(tmp_path):
    target = tmp_path / 'f'
    target.write_bytes(b'x')
    assert files.read_regular_file(str(target)) == b'x'
    assert files.read_regular_file(str(tmp_path / 'missing')) is None
    assert files.read_regular_file(str(target / 'below-a-file')) is None
    assert files.read_regular_file(str(tmp_path)) is None


def test_ensure_directory_creates_missing_parents_with_mode(tmp_path, wide_umask):
    leaf = tmp_path / 'a' / 'b' / 'c'
    created = files.ensure_directory(str(leaf), 0o755)
    assert created == [str(tmp_path / 'a'), str(tmp_path / 'a' / 'b'), str(leaf)]
    assert all(mode_of(path) == 0o755 for path in created)
    assert files.ensure_directory(str(leaf), 0o755) == []


def test_ensure_directory_keeps_existing_modes(tmp_path):
    existing = tmp_path / 'shared'
    existing.mkdir()
    os.chmod(str(existing), 0o700)
    files.ensure_directory(str(existing / 'sub'), 0o755)
    assert mode_of(existing) == 0o700
    assert mode_of(existing / 'sub') == 0o755


def test_ensure_directory_refuses_a_file_in_the_way(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_bytes(b'')
    with pytest.raises(OSError):
        files.ensure_directory(str(blocker / 'sub'), 0o755)
