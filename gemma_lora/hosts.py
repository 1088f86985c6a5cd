"""Hosted notebooks: Kaggle and Colab, as the notebooks see them.

Each notebook calls these right after its imports, and they do nothing
elsewhere (a laptop, `make run-notebooks`, CI):

- `detect_host` tells Kaggle and Colab apart from their environment variables;
- `default_run_dir` moves the shipped `run_dir` to the folder the host keeps
  (`/kaggle/working/runs/<time>` on Kaggle, `/content/runs/<time>` on Colab);
- `attached_path` finds the notebook's data files (`data/...`) among the
  datasets attached on Kaggle, e.g. uploaded with the wheel;
- `copy_host_secrets` copies `KAGGLE_USERNAME`, `KAGGLE_KEY`,
  `KAGGLE_API_TOKEN` and `HF_TOKEN` from the host's secrets into the
  environment, where kagglehub and huggingface_hub read them (never printed,
  never passed as parameters, so never written into a run folder);
- `check_accelerator` names the JAX backend and devices, and stops a notebook
  whose host offers a GPU or TPU that JAX cannot see;
- `zip_folder` and `downloads_message` end a run with one `.zip` per adapter
  and the list of files to download.

Example (a notebook's imports cell)::

    host = hosts.detect_host()
    if copied := hosts.copy_host_secrets(host):
        print(hosts.secrets_message(host, copied))
    print(hosts.check_accelerator(host))  # e.g. "JAX 0.10.2 on tpu: 8 x TPU v5 lite"
    run_dir = hosts.default_run_dir(run_dir, "runs/manual", host)
"""

from __future__ import annotations

import datetime
import importlib
import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, MutableMapping, NamedTuple

import jax

from gemma_lora.errors import ConfigError

KAGGLE = "kaggle"
COLAB = "colab"

# Where each host keeps what a notebook writes: Kaggle saves /kaggle/working as
# the notebook's output; Colab keeps /content until the runtime ends.
HOST_ROOTS = {KAGGLE: "/kaggle/working", COLAB: "/content"}
# Where Kaggle mounts the datasets attached to a notebook (read-only).
KAGGLE_INPUT = "/kaggle/input"

# The secrets copied into the environment, in the order they are tried.
# kagglehub reads KAGGLE_API_TOKEN (an access token) before the legacy
# KAGGLE_USERNAME + KAGGLE_KEY pair; huggingface_hub reads HF_TOKEN.
SECRET_NAMES = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "HF_TOKEN")

_HOST_NAMES = {KAGGLE: "Kaggle", COLAB: "Colab"}


class Accelerator(NamedTuple):
    """An accelerator the host attached to this session.

    Attributes:
        kind: `"gpu"` or `"tpu"`.
        evidence: what shows it, e.g. `"/dev/nvidia0"` or `"ISTPUVM=1"`.
    """

    kind: str
    evidence: str


class Download(NamedTuple):
    """A file of a run worth downloading.

    Attributes:
        path: the file.
        size: its size in bytes.
    """

    path: Path
    size: int


def detect_host(environ: Mapping[str, str] | None = None) -> str | None:
    """Which hosted notebook service runs this process, if any.

    Kaggle sets `KAGGLE_KERNEL_RUN_TYPE` (`"Interactive"` or `"Batch"`) in
    every notebook, as kagglehub checks; Colab sets `COLAB_RELEASE_TAG`, and
    `COLAB_GPU` in every runtime (empty without a GPU). Kaggle's images are
    built on Colab's, so Kaggle is checked first.

    Args:
        environ: the environment to read; `os.environ` when None.

    Returns:
        `"kaggle"`, `"colab"`, or None elsewhere.

    Example:
    >>> detect_host({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"})
    'kaggle'
    """
    environ = os.environ if environ is None else environ
    if "KAGGLE_KERNEL_RUN_TYPE" in environ:
        return KAGGLE
    if "COLAB_RELEASE_TAG" in environ or "COLAB_GPU" in environ:
        return COLAB
    return None


def default_run_dir(
    run_dir: str,
    shipped: str,
    host: str | None,
    roots: Mapping[str, str] | None = None,
    now: datetime.datetime | None = None,
) -> str:
    """The run folder to use: on a host, the shipped default moves where the host keeps files.

    A `run_dir` that differs from the notebook's shipped default was chosen
    (a papermill `-p run_dir`, or an edit such as a Google Drive folder) and
    is kept as it is.

    Args:
        run_dir: the notebook's `run_dir` parameter.
        shipped: the notebook's default for it, e.g. `"runs/manual"`.
        host: `detect_host()`'s answer.
        roots: the folder each host keeps, by host; `HOST_ROOTS` when None.
        now: the time that names the folder; the current time when None.

    Returns:
        `<root>/runs/<YYYYmmdd-HHMMSS>` on Kaggle or Colab when `run_dir` is
        the shipped default, else `run_dir` unchanged.

    Example:
    >>> default_run_dir("runs/manual", "runs/manual", "kaggle",
    ...                 now=datetime.datetime(2026, 5, 1, 12, 0, 0))
    '/kaggle/working/runs/20260501-120000'
    """
    roots = HOST_ROOTS if roots is None else roots
    if host is None or run_dir != shipped:
        return run_dir
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return os.path.join(roots[host], "runs", stamp)


def attached_path(
    path: str | None, host: str | None, inputs: str | os.PathLike = KAGGLE_INPUT
) -> str | None:
    """A data file the notebook names, found among Kaggle's attached datasets when not here.

    The notebooks name their shipped data relative to the project folder
    (`data/order_extraction.jsonl`); a Kaggle notebook starts in
    `/kaggle/working` without it. Attached in a dataset (with the wheel, for
    instance) it lies under `/kaggle/input/<dataset>/`: this finds it by name.

    Args:
        path: a file parameter (`data_path`, `test_data_path`, `requests_path`).
        host: `detect_host()`'s answer.
        inputs: where Kaggle mounts the attached datasets.

    Returns:
        The attached file, on Kaggle, for a relative `path` that does not exist
        and names a file attached once; `path` unchanged otherwise (None, a
        `tfds:` source, an absolute or existing path, off Kaggle, not attached:
        the run's own checks then name the missing file).

    Raises:
        ConfigError: several attached files have that name; the message
            lists them and names the parameter value to set.

    Example:
    >>> attached_path("data/order_extraction.jsonl", None)
    'data/order_extraction.jsonl'
    """
    if (host != KAGGLE or path is None or ":" in path or os.path.isabs(path)
            or os.path.exists(path)):
        return path
    found = sorted(Path(inputs).glob(f"**/{Path(path).name}"))
    if len(found) > 1:
        raise ConfigError(
            f"{path!r} is not in {os.getcwd()}, and the attached datasets hold several files "
            f"of that name: {[str(file) for file in found]}. Set the parameter to the one to "
            "use.")
    return str(found[0]) if found else path


def copy_host_secrets(
    host: str | None,
    names: Iterable[str] = SECRET_NAMES,
    environ: MutableMapping[str, str] | None = None,
) -> tuple[str, ...]:
    """Copy the host's secrets into the environment, for kagglehub and huggingface_hub.

    On Kaggle the secrets are those attached to the notebook (Add-ons >
    Secrets, read with `kaggle_secrets.UserSecretsClient`); on Colab those of
    the Secrets panel with notebook access on (`google.colab.userdata`). A
    name already set in the environment is left alone; a secret the host does
    not have, or refuses to give, is skipped. Values are never printed,
    logged or returned.

    Args:
        host: `detect_host()`'s answer; None copies nothing.
        names: the secrets to copy; `SECRET_NAMES` by default.
        environ: the environment to write; `os.environ` when None.

    Returns:
        The names copied, in the order of `names`.

    Example (on Kaggle, with two of the secrets attached)::

        copy_host_secrets("kaggle")  # ('KAGGLE_USERNAME', 'KAGGLE_KEY')
    """
    environ = os.environ if environ is None else environ
    wanted = [name for name in names if not environ.get(name)]
    if host is None or not wanted:
        return ()
    read = _secret_reader(host)
    if read is None:
        return ()
    copied = []
    for name in wanted:
        value = _read_secret(read, name)
        if value:
            environ[name] = value
            copied.append(name)
    return tuple(copied)


def secrets_message(host: str | None, copied: Iterable[str]) -> str | None:
    """The line a notebook prints after `copy_host_secrets`, naming what was copied.

    Args:
        host: `detect_host()`'s answer.
        copied: `copy_host_secrets`' answer.

    Returns:
        E.g. `"Copied KAGGLE_USERNAME, KAGGLE_KEY from the Kaggle secrets."`,
        or None when nothing was copied.
    """
    copied = list(copied)
    if host is None or not copied:
        return None
    return f"Copied {', '.join(copied)} from the {_HOST_NAMES[host]} secrets."


def _secret_reader(host: str) -> Callable[[str], Any] | None:
    """The host's `get(name)` for secrets, or None when its client is unavailable."""
    try:
        if host == KAGGLE:
            # Only Kaggle's images ship `kaggle_secrets`; its client raises
            # when the notebook has no secrets token.
            return importlib.import_module("kaggle_secrets").UserSecretsClient().get_secret
        return importlib.import_module("google.colab.userdata").get
    except Exception:  # noqa: BLE001 - any failure means: no secrets to copy.
        return None


def _read_secret(read: Callable[[str], Any], name: str) -> str | None:
    """One secret's value, or None when the host has none by that name.

    Kaggle's client raises for a label the notebook has no secret for, and
    Colab's raises `SecretNotFoundError` or `NotebookAccessError`; their
    messages are not kept, so no value can reach a log.
    """
    try:
        value = read(name)
    except Exception:  # noqa: BLE001 - host-specific error classes.
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def offered_accelerator(
    host: str | None,
    environ: Mapping[str, str] | None = None,
    dev_root: str | os.PathLike = "/dev",
) -> Accelerator | None:
    """The GPU or TPU the host attached to this session, from its own signals.

    A GPU shows as `/dev/nvidia<N>` (both hosts) or `COLAB_GPU=1`; a TPU as
    `/dev/accel<N>` or `/dev/vfio/<N>` (TPU VMs), `ISTPUVM` (Kaggle),
    `COLAB_TPU_1VM=1`, `TPU_ACCELERATOR_TYPE` or `TPU_NAME`, or Colab's old
    `COLAB_TPU_ADDR`.

    Args:
        host: `detect_host()`'s answer; None (not a hosted notebook) offers none.
        environ: the environment to read; `os.environ` when None.
        dev_root: where device files live (a stand-in folder in tests).

    Returns:
        The accelerator, or None on a CPU-only session or outside a host.
    """
    if host is None:
        return None
    environ = os.environ if environ is None else environ
    dev = Path(dev_root)
    tpu_files = sorted(dev.glob("accel[0-9]*")) + sorted(dev.glob("vfio/[0-9]*"))
    if tpu_files:
        return Accelerator("tpu", str(tpu_files[0]))
    for name in ("ISTPUVM", "COLAB_TPU_1VM", "TPU_ACCELERATOR_TYPE", "TPU_NAME", "COLAB_TPU_ADDR"):
        if environ.get(name, "") not in ("", "0"):
            return Accelerator("tpu", f"{name}={environ[name]}")
    gpu_files = sorted(dev.glob("nvidia[0-9]*"))
    if gpu_files:
        return Accelerator("gpu", str(gpu_files[0]))
    if environ.get("COLAB_GPU", "") not in ("", "0"):
        return Accelerator("gpu", f"COLAB_GPU={environ['COLAB_GPU']}")
    return None


def describe_devices(devices: list[Any] | None = None) -> str:
    """One line naming JAX's version, backend and devices.

    Args:
        devices: JAX devices; `jax.devices()` (the default backend's) when None.

    Returns:
        E.g. `"JAX 0.10.2 on gpu: 1 x Tesla T4"` or
        `"JAX 0.10.2 on tpu: 8 x TPU v5 lite"`.
    """
    devices = jax.devices() if devices is None else devices
    kinds = Counter(device.device_kind for device in devices)
    listed = ", ".join(f"{count} x {kind}" for kind, count in kinds.items())
    return f"JAX {jax.__version__} on {devices[0].platform}: {listed}"


def check_accelerator(
    host: str | None,
    devices: list[Any] | None = None,
    environ: Mapping[str, str] | None = None,
    dev_root: str | os.PathLike = "/dev",
) -> str:
    """Describe the devices, and refuse to go on when JAX misses the host's accelerator.

    Args:
        host: `detect_host()`'s answer.
        devices: JAX devices; `jax.devices()` when None.
        environ: the environment to read; `os.environ` when None.
        dev_root: where device files live (a stand-in folder in tests).

    Returns:
        `describe_devices`' line, for the notebook to print.

    Raises:
        ConfigError: the host attached a GPU or TPU but JAX runs on the CPU;
            the message says what shows the accelerator, why JAX may miss
            it and how to fix it.
    """
    devices = jax.devices() if devices is None else devices
    line = describe_devices(devices)
    offered = offered_accelerator(host, environ, dev_root)
    if offered is None or devices[0].platform != "cpu":
        return line
    fix = {
        "gpu": "a CUDA build of JAX (`pip list | grep -i jax` shows jax-cuda12-plugin or "
               "jax-cuda13-plugin)",
        "tpu": "JAX's TPU runtime (`pip list | grep -i libtpu` shows libtpu)",
    }[offered.kind]
    raise ConfigError(
        f"This {_HOST_NAMES[host]} session has a {offered.kind.upper()} ({offered.evidence}), "
        f"but {line}: training would run on the CPU, many times slower. JAX finds the "
        f"{offered.kind.upper()} only through {fix}; it is missing or was replaced, usually by "
        "a `pip install` that pinned `jax[cpu]` or `jaxlib` (such as the project's "
        "requirements.txt). Fix: restart the session (on Kaggle: Run > Factory reset; on "
        "Colab: Runtime > Disconnect and delete runtime), install gemma_lora only through the "
        "notebook's setup cell, which leaves JAX alone, and run again. To train on the CPU "
        "on purpose, switch the accelerator off in the session settings."
    )


def zip_folder(folder: str | os.PathLike) -> Path:
    """Write `folder` as one `.zip` next to it, atomically.

    The archive holds the folder itself (unzipping it gives `adapter/...`),
    is written under a temporary name and renamed when complete, and
    replaces an older archive of the same name.

    Args:
        folder: the folder to archive, e.g. `run_dir/adapter`.

    Returns:
        The archive, `<folder>.zip`.

    Raises:
        ConfigError: `folder` is not a folder.

    Example::

        zip_folder("/kaggle/working/runs/20260501-093005/adapter")
        # PosixPath('/kaggle/working/runs/20260501-093005/adapter.zip')
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"Cannot zip {str(folder)!r}: it is not a folder.")
    target = folder.with_name(folder.name + ".zip")
    tmp = folder.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                archive.write(path, path.relative_to(folder.parent))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def list_downloads(run_dir: str | os.PathLike) -> list[Download]:
    """The files at the top of a run folder: metrics, config, plots, histories, zips.

    Sub-folders (the adapter, which `zip_folder` packs into one file, and the
    checkpoints, useful only to resume in place) and hidden files are left out.

    Args:
        run_dir: the run folder.

    Returns:
        The files with their sizes, sorted by name.
    """
    return [Download(path, path.stat().st_size)
            for path in sorted(Path(run_dir).iterdir())
            if path.is_file() and not path.name.startswith(".")]


def downloads_message(run_dir: str | os.PathLike, host: str | None) -> str:
    """What to download from a run folder, with sizes, and where the host shows it.

    Args:
        run_dir: the run folder.
        host: `detect_host()`'s answer.

    Returns:
        A few lines: where to find the folder, then one line per file.
    """
    where = {
        KAGGLE: "Kaggle keeps it in the notebook's Output (right-hand panel; after Save "
                "Version, in the version's Output tab)",
        COLAB: "on Colab, open the Files panel (folder icon, left) and download each file; "
               "/content is erased when the runtime ends",
        None: "the run folder",
    }[host]
    lines = [f"Files to download from {run_dir} ({where}):"]
    lines += [f"  {item.path.name:<32} {_size(item.size):>9}" for item in list_downloads(run_dir)]
    return "\n".join(lines)


def _size(size: int) -> str:
    """A byte count for people: 812 B, 14.2 kB, 3.1 MB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
