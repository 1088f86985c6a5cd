import os

import pytest

from gemma_lora import io_utils


def test_atomic_files_and_folders_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        io_utils.write_json_atomic(tmp_path / "metrics.json", {"a": 1})
        with io_utils.atomic_directory(tmp_path / "adapter") as folder:
            (folder / "weights").write_text("w")
    finally:
        os.umask(mask)
    assert oct((tmp_path / "metrics.json").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "adapter").stat().st_mode & 0o777) == oct(0o755)


def test_a_failed_directory_write_leaves_the_previous_one(tmp_path):
    with io_utils.atomic_directory(tmp_path / "adapter") as folder:
        (folder / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with io_utils.atomic_directory(tmp_path / "adapter") as folder:
            (folder / "weights").write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "adapter" / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
