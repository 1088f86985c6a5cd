"""Hosted notebooks (Kaggle, Colab) simulated on this machine.

`gemma_lora.hosts` is tested with the hosts' environment variables set by
monkeypatch, fake `kaggle_secrets` and `google.colab.userdata` modules in
`sys.modules`, and temporary folders standing in for `/dev`, `/kaggle/input`
and `/kaggle/working`.

The notebooks' setup cell (the same in all four, tested) is run for real: in
a fresh virtual environment that sees this project's installed packages (as a
host's image has JAX, TensorFlow and Keras) but not gemma_lora, under
simulated Kaggle and Colab environments, with pip offline. It must install
the wheel that `make wheel` builds and leave gemma_lora importable from that
environment. A dry-run install of that wheel into this project's own
environment must change no installed distribution but gemma-lora itself.
"""

import datetime
import json
import logging
import os
import re
import subprocess
import sys
import sysconfig
import types
import venv
import zipfile
from pathlib import Path

import pytest

import gemma_lora
from gemma_lora import hosts
from gemma_lora.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SETUP_MARK = "# Setup: the same cell in every notebook."
SOURCE_LINE = 'GEMMA_LORA_SOURCE = ""'
FAKE_VALUES = {
    "KAGGLE_USERNAME": "fake-user-3f9a",
    "KAGGLE_KEY": "fake-key-8c21d0",
    "HF_TOKEN": "hf_fake_77e1b2",
}


# === Which host, and where its results go ===


@pytest.mark.parametrize("environ, expected", [
    ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KAGGLE_URL_BASE": "https://www.kaggle.com"}, "kaggle"),
    ({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "COLAB_GPU": ""}, "kaggle"),  # Kaggle's image is Colab's
    ({"COLAB_RELEASE_TAG": "release-colab_20260514-060047_RC00", "COLAB_GPU": ""}, "colab"),
    ({"COLAB_GPU": "1"}, "colab"),
    ({"HOME": "/root"}, None),
])
def test_detect_host_reads_the_hosts_own_variables(environ, expected):
    assert hosts.detect_host(environ) == expected


def test_detect_host_reads_os_environ(monkeypatch):
    for name in ("KAGGLE_KERNEL_RUN_TYPE", "COLAB_RELEASE_TAG", "COLAB_GPU"):
        monkeypatch.delenv(name, raising=False)
    assert hosts.detect_host() is None
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert hosts.detect_host() == "kaggle"


def test_default_run_dir_moves_only_the_shipped_default_on_a_host(tmp_path):
    now = datetime.datetime(2026, 5, 1, 9, 30, 5)
    roots = {"kaggle": str(tmp_path / "kaggle" / "working"), "colab": str(tmp_path / "content")}
    assert hosts.default_run_dir("runs/manual", "runs/manual", "kaggle", roots, now) == str(
        tmp_path / "kaggle" / "working" / "runs" / "20260501-093005")
    assert hosts.default_run_dir("runs/manual", "runs/manual", "colab", roots, now) == str(
        tmp_path / "content" / "runs" / "20260501-093005")
    assert hosts.default_run_dir("runs/manual", "runs/manual", "kaggle", now=now) == (
        "/kaggle/working/runs/20260501-093005")
    # Chosen folders stay: a papermill -p run_dir, a Drive folder, and anything off a host.
    drive = "/content/drive/MyDrive/runs/first"
    assert hosts.default_run_dir(drive, "runs/manual", "colab", roots, now) == drive
    assert hosts.default_run_dir("runs/20260501/01", "runs/manual", "kaggle", roots) == "runs/20260501/01"
    assert hosts.default_run_dir("runs/manual", "runs/manual", None, roots, now) == "runs/manual"


def test_attached_path_finds_the_notebooks_data_among_kaggles_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # /kaggle/working: no data/ folder
    inputs = tmp_path / "input"
    (inputs / "gemma-lora-wheel").mkdir(parents=True)
    attached = inputs / "gemma-lora-wheel" / "order_extraction.jsonl"
    attached.write_text("{}\n")
    name = "data/order_extraction.jsonl"
    assert hosts.attached_path(name, "kaggle", inputs) == str(attached)
    # Left as they are: off Kaggle, None, TFDS, absolute, present here, or attached nowhere.
    assert hosts.attached_path(name, "colab", inputs) == name
    assert hosts.attached_path(None, "kaggle", inputs) is None
    assert hosts.attached_path("tfds:imdb_reviews[train]", "kaggle", inputs) == "tfds:imdb_reviews[train]"
    assert hosts.attached_path("/data/mine.jsonl", "kaggle", inputs) == "/data/mine.jsonl"
    assert hosts.attached_path("data/sentiment_test.jsonl", "kaggle", inputs) == "data/sentiment_test.jsonl"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "order_extraction.jsonl").write_text("{}\n")
    assert hosts.attached_path(name, "kaggle", inputs) == name


def test_attached_path_refuses_to_guess_between_two_attached_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for dataset in ("first", "second"):
        (tmp_path / "input" / dataset).mkdir(parents=True)
        (tmp_path / "input" / dataset / "order_requests.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"several files of that name: .*first.*second.*Set the "
                                          r"parameter to the one to use"):
        hosts.attached_path("data/order_requests.jsonl", "kaggle", tmp_path / "input")


# === Secrets ===


class _KaggleBackendError(Exception):
    """What Kaggle's client raises for a label the notebook has no secret for."""


def _fake_kaggle_secrets(values: dict, calls: list) -> types.ModuleType:
    module = types.ModuleType("kaggle_secrets")

    class UserSecretsClient:
        def get_secret(self, label):
            calls.append(label)
            if label not in values:
                raise _KaggleBackendError(f"Unexpected response from the service for {label}")
            return values[label]

    module.UserSecretsClient = UserSecretsClient
    return module


def _fake_colab_userdata(values: dict) -> types.ModuleType:
    module = types.ModuleType("google.colab.userdata")

    class SecretNotFoundError(Exception):
        pass

    class NotebookAccessError(Exception):
        pass

    def get(key):
        if key == "HF_TOKEN":
            raise NotebookAccessError(key)  # exists, but notebook access is off
        if key not in values:
            raise SecretNotFoundError(key)
        return values[key]

    module.get = get
    return module


@pytest.fixture
def clean_secrets_env(monkeypatch):
    for name in hosts.SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_kaggle_secrets_are_copied_when_present_and_unset(clean_secrets_env, capsys, caplog):
    calls = []
    clean_secrets_env.setitem(sys.modules, "kaggle_secrets", _fake_kaggle_secrets(FAKE_VALUES, calls))
    clean_secrets_env.setenv("HF_TOKEN", "hf_already_set")
    with caplog.at_level(logging.DEBUG):
        copied = hosts.copy_host_secrets("kaggle")
    assert copied == ("KAGGLE_USERNAME", "KAGGLE_KEY")
    assert os.environ["KAGGLE_USERNAME"] == FAKE_VALUES["KAGGLE_USERNAME"]
    assert os.environ["KAGGLE_KEY"] == FAKE_VALUES["KAGGLE_KEY"]
    assert os.environ["HF_TOKEN"] == "hf_already_set"  # an environment value wins
    assert "KAGGLE_API_TOKEN" not in os.environ  # the client raised: skipped
    assert calls == ["KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"]  # HF_TOKEN not asked
    assert hosts.secrets_message("kaggle", copied) == (
        "Copied KAGGLE_USERNAME, KAGGLE_KEY from the Kaggle secrets.")
    printed = capsys.readouterr()
    for value in FAKE_VALUES.values():
        assert value not in printed.out + printed.err + caplog.text + repr(copied)


def test_colab_secrets_are_copied_and_refusals_skipped(clean_secrets_env):
    colab = types.ModuleType("google.colab")
    userdata = _fake_colab_userdata(FAKE_VALUES)
    colab.userdata = userdata
    clean_secrets_env.setitem(sys.modules, "google.colab", colab)
    clean_secrets_env.setitem(sys.modules, "google.colab.userdata", userdata)
    environ = {}
    assert hosts.copy_host_secrets("colab", environ=environ) == ("KAGGLE_USERNAME", "KAGGLE_KEY")
    assert environ == {name: FAKE_VALUES[name] for name in ("KAGGLE_USERNAME", "KAGGLE_KEY")}


def test_no_secrets_client_copies_nothing(clean_secrets_env):
    module = types.ModuleType("kaggle_secrets")

    class UserSecretsClient:
        def __init__(self):
            raise RuntimeError("A JWT Token is required to use the UserSecretsClient")

    module.UserSecretsClient = UserSecretsClient
    clean_secrets_env.setitem(sys.modules, "kaggle_secrets", module)
    assert hosts.copy_host_secrets("kaggle") == ()
    clean_secrets_env.setitem(sys.modules, "kaggle_secrets", None)  # not importable at all
    assert hosts.copy_host_secrets("kaggle") == ()
    assert hosts.copy_host_secrets(None) == ()
    assert hosts.secrets_message("kaggle", ()) is None


def test_blank_secrets_are_not_copied(clean_secrets_env):
    clean_secrets_env.setitem(sys.modules, "kaggle_secrets", _fake_kaggle_secrets(
        {"KAGGLE_USERNAME": "  ", "KAGGLE_KEY": "key-with-newline\n"}, []))
    environ = {}
    assert hosts.copy_host_secrets("kaggle", environ=environ) == ("KAGGLE_KEY",)
    assert environ == {"KAGGLE_KEY": "key-with-newline"}


# === Accelerator check ===


class _Device:
    def __init__(self, platform, device_kind):
        self.platform, self.device_kind = platform, device_kind


CPU = [_Device("cpu", "cpu")]


def test_describe_devices_names_version_backend_and_devices():
    import jax

    assert hosts.describe_devices() == f"JAX {jax.__version__} on cpu: 1 x cpu"
    tpus = [_Device("tpu", "TPU v5 lite")] * 8
    assert hosts.describe_devices(tpus) == f"JAX {jax.__version__} on tpu: 8 x TPU v5 lite"
    mixed = [_Device("gpu", "Tesla T4"), _Device("gpu", "Tesla T4"), _Device("gpu", "NVIDIA L4")]
    assert hosts.describe_devices(mixed).endswith("on gpu: 2 x Tesla T4, 1 x NVIDIA L4")


@pytest.mark.parametrize("host, environ, files, kind, evidence", [
    ("kaggle", {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, ["nvidia0", "nvidiactl"], "gpu", "nvidia0"),
    ("kaggle", {"ISTPUVM": "1"}, [], "tpu", "ISTPUVM=1"),
    ("kaggle", {}, ["accel0", "accel1"], "tpu", "accel0"),
    ("colab", {"COLAB_GPU": "1"}, [], "gpu", "COLAB_GPU=1"),
    ("colab", {"COLAB_GPU": "", "COLAB_TPU_1VM": "1", "TPU_ACCELERATOR_TYPE": "v5e-1"}, [], "tpu",
     "COLAB_TPU_1VM=1"),
    ("colab", {"COLAB_GPU": ""}, ["vfio/0"], "tpu", "vfio/0"),
    ("colab", {"COLAB_TPU_ADDR": "10.0.0.2:8470"}, [], "tpu", "COLAB_TPU_ADDR=10.0.0.2:8470"),
])
def test_offered_accelerator_from_the_hosts_signals(tmp_path, host, environ, files, kind, evidence):
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    offered = hosts.offered_accelerator(host, environ, tmp_path)
    assert offered.kind == kind and offered.evidence.endswith(evidence)


def test_cpu_sessions_and_non_hosts_offer_no_accelerator(tmp_path):
    (tmp_path / "nvidiactl").touch()  # the control node alone is no GPU
    # Colab's CPU runtime: the GPU image's CUDA variables, but empty COLAB_GPU / COLAB_TPU_1VM.
    colab_cpu = {"COLAB_GPU": "", "COLAB_TPU_1VM": "", "NVIDIA_VISIBLE_DEVICES": "all",
                 "CUDA_VERSION": "12.5.1"}
    assert hosts.offered_accelerator("colab", colab_cpu, tmp_path) is None
    assert hosts.offered_accelerator("kaggle", {"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, tmp_path) is None
    (tmp_path / "nvidia0").touch()
    assert hosts.offered_accelerator(None, {}, tmp_path) is None  # a workstation's GPU is its business


def test_check_accelerator_stops_when_jax_misses_the_hosts_gpu(tmp_path):
    (tmp_path / "nvidia0").touch()
    with pytest.raises(ConfigError) as info:
        hosts.check_accelerator("kaggle", CPU, {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, tmp_path)
    message = str(info.value)
    assert "This Kaggle session has a GPU" in message and "nvidia0" in message
    assert "on cpu: 1 x cpu" in message and "jax-cuda12-plugin" in message
    assert "restart the session" in message and "setup cell" in message


def test_check_accelerator_stops_when_jax_misses_the_hosts_tpu(tmp_path):
    with pytest.raises(ConfigError, match=r"This Colab session has a TPU \(COLAB_TPU_1VM=1\).*libtpu"):
        hosts.check_accelerator("colab", CPU, {"COLAB_TPU_1VM": "1"}, tmp_path)


def test_check_accelerator_returns_the_device_line_otherwise(tmp_path):
    (tmp_path / "nvidia0").touch()
    gpu = [_Device("gpu", "Tesla T4")]
    assert hosts.check_accelerator("kaggle", gpu, {}, tmp_path).endswith("on gpu: 1 x Tesla T4")
    assert hosts.check_accelerator(None, CPU, {}, tmp_path).endswith("on cpu: 1 x cpu")
    assert hosts.check_accelerator("colab", CPU, {"COLAB_GPU": ""}, tmp_path / "none").endswith(
        "on cpu: 1 x cpu")


# === Results: the adapter as one zip, and what to download ===


def _adapter(folder: Path) -> Path:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text('{"rank": 8}\n')
    (folder / "adapter" / "adapter.safetensors").write_bytes(b"\x00" * 3000)
    return folder / "adapter"


def test_zip_folder_writes_the_folder_as_one_archive_atomically(tmp_path):
    adapter = _adapter(tmp_path / "kaggle" / "working" / "runs" / "20260501-093005")
    archive = hosts.zip_folder(adapter)
    assert archive == adapter.with_name("adapter.zip")
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == ["adapter/adapter.safetensors", "adapter/adapter_config.json"]
        assert opened.read("adapter/adapter_config.json") == b'{"rank": 8}\n'
    assert sorted(path.name for path in adapter.parent.iterdir()) == ["adapter", "adapter.zip"]
    (adapter / "adapter_config.json").write_text('{"rank": 16}\n')
    hosts.zip_folder(adapter)  # replaces the older archive
    with zipfile.ZipFile(archive) as opened:
        assert opened.read("adapter/adapter_config.json") == b'{"rank": 16}\n'


def test_zip_folder_leaves_no_partial_archive(tmp_path, monkeypatch):
    adapter = _adapter(tmp_path)

    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "write", fail)
    with pytest.raises(OSError, match="No space left"):
        hosts.zip_folder(adapter)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter"]


def test_zip_folder_refuses_what_is_not_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="it is not a folder"):
        hosts.zip_folder(tmp_path / "adapter")


def test_downloads_are_the_top_level_files_with_sizes(tmp_path):
    run_dir = tmp_path / "content" / "runs" / "20260501-093005"
    hosts.zip_folder(_adapter(run_dir))
    (run_dir / "checkpoints" / "step-000025").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-000025" / "arrays.safetensors").write_bytes(b"\x00" * 10)
    (run_dir / "metrics.json").write_text("{}\n")
    (run_dir / "loss.png").write_bytes(b"\x89PNG" + b"\x00" * 2400)
    (run_dir / ".metrics.json.123.tmp").write_text("partial")
    listed = hosts.list_downloads(run_dir)
    assert [item.path.name for item in listed] == ["adapter.zip", "loss.png", "metrics.json"]
    assert listed[1].size == 2404
    message = hosts.downloads_message(run_dir, "colab")
    assert message.splitlines()[0].startswith(f"Files to download from {run_dir} (on Colab, open the Files")
    assert "loss.png" in message and "2.4 kB" in message and "3 B" in message
    assert "Output" in hosts.downloads_message(run_dir, "kaggle")


# === The setup cell, run in a fresh environment under simulated hosts ===


def _setup_cells() -> dict[str, str]:
    """Each notebook's setup cell, by notebook name."""
    cells = {}
    for path in NOTEBOOKS:
        sources = ["".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]
                   if cell["cell_type"] == "code"]
        setup = [source for source in sources if source.startswith(SETUP_MARK)]
        assert len(setup) == 1, f"{path.name}: {len(setup)} setup cells"
        assert sources.index(setup[0]) == 1, f"{path.name}: the setup cell must follow the parameters"
        cells[path.name] = setup[0]
    return cells


def _setup_cell() -> str:
    source = _setup_cells()["01_finetune_gemma_lora.ipynb"]
    assert source.count(SOURCE_LINE) == 1, f"the setup cell must set {SOURCE_LINE} exactly once"
    return source


def test_the_four_notebooks_have_the_same_setup_cell_without_a_url():
    cells = _setup_cells()
    assert len(cells) == 4
    assert len(set(cells.values())) == 1, "setup cells differ: " + ", ".join(cells)
    source = next(iter(cells.values()))
    assert not re.search(r"[a-z][a-z0-9+.-]*://|www\.|github\.com", source, re.IGNORECASE)
    for path in NOTEBOOKS:
        assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `make wheel` builds (into a temporary DIST)."""
    dist = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "wheel", f"DIST={dist}",
         f"PYTHON={sys.executable}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    [built] = dist.glob("gemma_lora-*-py3-none-any.whl")
    return built


def test_installing_the_wheel_changes_nothing_but_gemma_lora(wheel, tmp_path):
    """What pip would do to this project's environment: install gemma-lora, nothing else.

    A host's image has JAX, TensorFlow and Keras as this environment has
    (other builds of them): the wheel's ranges must be met by what is
    there, so that pip upgrades, downgrades or adds none of them.
    """
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index",
         "--disable-pip-version-check", "--report", str(report), str(wheel)],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    installs = [(item["metadata"]["name"], item["metadata"]["version"])
                for item in json.loads(report.read_text())["install"]]
    assert installs == [("gemma-lora", gemma_lora.__version__)]


def _host_python(folder: Path) -> Path:
    """A fresh virtual environment seeing this project's packages except gemma_lora.

    A host's image already has JAX, TensorFlow, Keras and KerasHub; here the
    project's installed packages stand in for them, through a folder of
    links to each of them but gemma_lora, added as a site folder.
    """
    venv.create(folder / "env", with_pip=False, symlinks=True)
    packages = folder / "host-packages"
    packages.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "gemma_lora" not in entry.name and "gemma-lora" not in entry.name:
            (packages / entry.name).symlink_to(entry)
    python = folder / "env" / "bin" / "python"
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    Path(site_packages, "host_packages.pth").write_text(
        f"import site; site.addsitedir({str(packages)!r})\n")
    return python


def _run_setup_cell(python: Path, cwd: Path, environ: dict, source: str) -> subprocess.CompletedProcess:
    """The setup cell, then a report of where gemma_lora was imported from."""
    report = ("\nimport json, gemma_lora, gemma_lora.hosts\n"
              "print(json.dumps({'file': gemma_lora.__file__, 'version': gemma_lora.__version__,"
              " 'host': gemma_lora.hosts.detect_host(), 'backend': os.environ['KERAS_BACKEND']}))\n")
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith(("KAGGLE_", "COLAB_", "PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env = {**inherited, **environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("KERAS_BACKEND", None)
    return subprocess.run([python, "-c", source + report], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _installed_report(completed: subprocess.CompletedProcess, python: Path) -> dict:
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(python.parent.parent), report
    assert report["backend"] == "jax"
    site_packages = Path(report["file"]).parent.parent
    added = {entry.name for entry in site_packages.iterdir()} - {"host_packages.pth", "__pycache__"}
    assert added == {"gemma_lora", f"gemma_lora-{report['version']}.dist-info"}  # nothing else
    return report


def test_setup_cell_on_kaggle_installs_the_attached_wheel(wheel, tmp_path):
    inputs = tmp_path / "kaggle" / "input"
    (inputs / "gemma-lora-wheel").mkdir(parents=True)
    attached = inputs / "gemma-lora-wheel" / wheel.name
    attached.write_bytes(wheel.read_bytes())
    working = tmp_path / "kaggle" / "working"
    working.mkdir()
    python = _host_python(tmp_path)
    kaggle = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KAGGLE_URL_BASE": "https://www.kaggle.com",
              "GEMMA_LORA_INPUT_DIR": str(inputs)}
    completed = _run_setup_cell(python, working, kaggle, _setup_cell())
    report = _installed_report(completed, python)
    assert f"Installing gemma_lora from {attached}" in completed.stdout
    assert report["host"] == "kaggle"
    again = _run_setup_cell(python, working, kaggle, _setup_cell())  # installed: does nothing
    assert "Installing" not in again.stdout and again.returncode == 0


def test_setup_cell_on_colab_installs_the_named_source(wheel, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    python = _host_python(tmp_path)
    colab = {"COLAB_RELEASE_TAG": "release-colab_20260514-060047_RC00", "COLAB_GPU": "",
             "GEMMA_LORA_INPUT_DIR": str(tmp_path / "no-kaggle-input")}
    source = _setup_cell().replace(SOURCE_LINE, f"GEMMA_LORA_SOURCE = {str(wheel)!r}")
    completed = _run_setup_cell(python, content, colab, source)
    assert _installed_report(completed, python)["host"] == "colab"
    assert f"Installing gemma_lora from {wheel}" in completed.stdout


def test_setup_cell_without_a_source_says_how_to_give_one(tmp_path):
    python = _host_python(tmp_path)
    colab = {"COLAB_RELEASE_TAG": "release-colab_20260514-060047_RC00",
             "GEMMA_LORA_INPUT_DIR": str(tmp_path / "no-kaggle-input")}
    completed = _run_setup_cell(python, tmp_path, colab, _setup_cell())
    assert completed.returncode != 0
    assert "ModuleNotFoundError: gemma_lora is not installed" in completed.stderr
    for step in ("attach the wheel that `make wheel` builds", "set GEMMA_LORA_SOURCE",
                 "run `make setup`"):
        assert step in completed.stderr


def test_the_wheel_holds_every_module_of_the_package(wheel):
    with zipfile.ZipFile(wheel) as opened:
        packed = {name for name in opened.namelist() if name.endswith(".py")}
    sources = {path.relative_to(REPO).as_posix() for path in (REPO / "gemma_lora").rglob("*.py")}
    assert sources and sources <= packed, sorted(sources - packed)
