"""Data- and model-parallel training (`gemma_lora.parallel`).

The runs on several devices use 8 simulated CPU devices. JAX fixes its device
count when it starts, and this pytest process already started it with one,
so they run in subprocesses (`tests/distributed_run.py`, papermill) with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` in their environment.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import keras_hub
import numpy as np
import pytest
from safetensors.numpy import load_file

from gemma_lora.training import checkpoint
from gemma_lora import parallel
from gemma_lora.parallel import mesh as mesh_module
from gemma_lora.parallel import multihost
from gemma_lora.parallel import runtime
from gemma_lora import lora
from gemma_lora.runs import report
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError

from tests import tiny_presets
from tests.distributed_run import STEPS
from tests.distributed_run import random_adapter

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "distributed_run.py"
RUN_FILES = ["adapter/adapter.safetensors", "adapter/adapter_config.json",
             f"checkpoints/step-{STEPS:06d}/arrays.safetensors",
             f"checkpoints/step-{STEPS:06d}/state.json", "history.csv", "tensorboard/<events>"]
# Every run starts from the same random adapter (B != 0) and trains STEPS steps; each
# step's loss and the final adapter must be the single-device run's within these, in
# float32. Measured (8 simulated CPU devices): losses within 1.3e-7 relative, adapter
# values within 8.2e-7 (one process) and 1.3e-6 (two processes), while training moves
# the values by 2.7e-3 (median).
LOSS_RTOL = 1e-6
ADAPTER_ATOL = 1e-5


def simulated_devices(count: int) -> dict:
    """The environment of a subprocess whose JAX sees `count` CPU devices."""
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}",
            "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}


# === Mesh sizes, batch size, multi-host settings ===


@pytest.mark.parametrize("data, model, devices, expected", [
    ("auto", "auto", 8, (8, 1)),
    ("auto", 4, 8, (2, 4)),
    (2, "auto", 8, (2, 4)),
    (1, 8, 8, (1, 8)),
    ("auto", "auto", 1, (1, 1)),
])
def test_mesh_shape_resolves_auto_sizes(data, model, devices, expected):
    assert parallel.mesh_shape(data, model, devices) == expected


@pytest.mark.parametrize("data, model, message", [
    (2, 2, "data_parallel × model_parallel = 2 × 2 = 4, but 8 tpu devices are available: the "
           'product must equal the device count. Set one of them to "auto"'),
    ("auto", 3, "model_parallel=3 does not divide the 8 tpu devices available; it must be one "
                "of [1, 2, 4, 8]"),
    (16, "auto", "data_parallel=16 does not divide the 8 tpu devices available"),
])
def test_mesh_shape_that_does_not_fit_the_devices_names_the_parameter(data, model, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parallel.mesh_shape(data, model, 8, "tpu")


def test_batch_size_must_split_across_the_data_axis():
    parallel.check_batch_size(8, 4)
    with pytest.raises(ConfigError, match=r"batch_size=4 cannot be split across data_parallel=8 "
                                          r"devices.*Use a multiple of 8 \(e.g. 8\)"):
        parallel.check_batch_size(4, 8)
    with pytest.raises(ConfigError, match="batch_size=6 cannot be split across data_parallel=4"):
        RunConfig(batch_size=6, data_parallel=4)


@pytest.mark.parametrize("fields, message", [
    ({"data_parallel": 0}, 'data_parallel must be "auto" or an integer >= 1'),
    ({"model_parallel": "4"}, 'model_parallel must be "auto" or an integer >= 1'),
    ({"num_processes": 2}, "num_processes and process_id go together"),
    ({"num_processes": 2, "process_id": 2}, "process_id must be below num_processes=2"),
    ({"coordinator_address": "10.0.0.2"}, 'coordinator_address must be "host:port"'),
    ({"coordinator_address": "10.0.0.2:1234"}, "needs num_processes and process_id too"),
])
def test_config_rejects_bad_device_settings(fields, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**fields)


def test_config_round_trips_device_settings():
    config = RunConfig(batch_size=8, data_parallel=2, model_parallel=4,
                       coordinator_address="10.0.0.2:1234", num_processes=2, process_id=1)
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("variables, found", [
    ({}, None),
    ({"SLURM_NTASKS": "1", "OMPI_COMM_WORLD_SIZE": "1", "TPU_WORKER_HOSTNAMES": "localhost"}, None),
    ({"SLURM_NTASKS": "4"}, "SLURM_NTASKS=4"),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "OMPI_COMM_WORLD_SIZE=2"),
    ({"TPU_WORKER_HOSTNAMES": "t1-w-0,t1-w-1"}, "TPU_WORKER_HOSTNAMES=t1-w-0,t1-w-1"),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, "JAX_COORDINATOR_ADDRESS=10.0.0.2:1234"),
    ({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "a:1,b:1"}, "KERAS_DISTRIBUTION_JOB_ADDRESSES=a:1,b:1"),
])
def test_cluster_environment_detects_several_hosts_only(monkeypatch, variables, found):
    for name in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS",
                 "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert parallel.cluster_environment() == found


def test_multi_host_starts_from_the_config_or_a_cluster_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(keras.distribution, "initialize", lambda *args: calls.append(args))
    monkeypatch.setattr(multihost.jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(multihost, "cluster_environment", lambda: None)
    log = []
    assert not parallel.initialize_multi_host(RunConfig(), log.append)
    config = RunConfig(coordinator_address="10.0.0.2:1234", num_processes=4, process_id=3)
    assert parallel.initialize_multi_host(config, log.append)
    assert parallel.initialize_multi_host(RunConfig(coordinator_address="auto"), log.append)
    monkeypatch.setattr(multihost, "cluster_environment", lambda: "SLURM_NTASKS=4")
    assert parallel.initialize_multi_host(RunConfig(), log.append)
    assert calls == [("10.0.0.2:1234", 4, 3), (None, None, None), (None, None, None)]
    assert "SLURM_NTASKS=4" in log[-1]


def _fake_devices(monkeypatch, count: int, hosts: int) -> None:
    """Make `apply` see `count` TPU devices on `hosts` hosts (it fails before using them)."""
    devices = [SimpleNamespace(process_index=i * hosts // count, id=i, platform="tpu")
               for i in range(count)]
    monkeypatch.setattr(mesh_module, "initialize_multi_host", lambda config, log: False)
    monkeypatch.setattr(mesh_module.jax, "devices", lambda: devices)
    monkeypatch.setattr(mesh_module.jax, "process_count", lambda: hosts)
    monkeypatch.setattr(mesh_module.jax, "local_device_count", lambda: count // hosts)


def test_auto_data_parallel_checks_the_batch_size_against_the_devices(monkeypatch):
    _fake_devices(monkeypatch, 8, hosts=1)
    with pytest.raises(ConfigError, match=r"batch_size=4 cannot be split across data_parallel=8 "
                                          r"devices.*Use a multiple of 8 \(e.g. 8\)"):
        parallel.apply(RunConfig(batch_size=4, model_parallel=1))


@pytest.mark.parametrize("batch_size, devices, expected", [
    (4, 8, (4, 2)),   # Kaggle's TPU v5e-8 with the notebooks' default batch
    (6, 8, (2, 4)),
    (3, 8, (1, 8)),
    (8, 8, (8, 1)),
    (16, 8, (8, 1)),
    (4, 1, (1, 1)),
])
def test_auto_mesh_puts_on_the_data_axis_what_the_batch_splits_across(batch_size, devices, expected):
    assert parallel.mesh_shape("auto", "auto", devices, "tpu", batch_size) == expected


def test_auto_mesh_that_would_span_hosts_names_the_batch_size_to_set(monkeypatch):
    _fake_devices(monkeypatch, 8, hosts=2)
    with pytest.raises(ConfigError, match=r"batch_size=1 cannot be split across data_parallel=8 "
                                          r"devices.*Use a multiple of 8 \(e.g. 8\)"):
        parallel.apply(RunConfig(batch_size=1))


def test_model_axis_must_stay_within_one_host(monkeypatch):
    _fake_devices(monkeypatch, 8, hosts=2)
    with pytest.raises(ConfigError, match="model_parallel=8 must divide the 4 devices of each host"):
        parallel.apply(RunConfig(batch_size=8, model_parallel=8))


# === Layouts, without devices ===


class _Mesh(keras.distribution.DeviceMesh):
    """A mesh of device names only: enough to choose layouts, never to place arrays."""

    def __init__(self, data: int, model: int):
        super().__init__((data, model), (parallel.DATA_AXIS, parallel.MODEL_AXIS),
                         [f"cpu:{i}" for i in range(data * model)])


def test_gemma3_layout_splits_heads_and_mlp_and_keeps_a_single_kv_head_whole():
    # Gemma 3 1B: vocabulary 262144, width 1152, 4 query heads, 1 key/value head of 256.
    mesh = _Mesh(2, 4)
    strategy = parallel.GemmaModelParallel(
        mesh, parallel.layout_rules(parallel.backbone_class("gemma3_1b"), mesh))
    axes = strategy.variable_axes
    block = "decoder_block_7"
    assert axes("token_embedding/embeddings", (262144, 1152)) == ("model", None)
    assert axes(f"{block}/attention/query/kernel", (4, 1152, 256)) == ("model", None, None)
    assert axes(f"{block}/attention/key/kernel", (1, 1152, 256)) == (None, None, None)
    assert axes(f"{block}/attention/value/kernel", (1, 1152, 256)) == (None, None, None)
    assert axes(f"{block}/attention/attention_output/kernel", (4, 256, 1152)) == ("model", None, None)
    assert axes(f"{block}/ffw_gating_2/kernel", (1152, 6912)) == (None, "model")
    assert axes(f"{block}/ffw_linear/kernel", (6912, 1152)) == ("model", None)
    assert axes(f"{block}/pre_ffw_norm/scale", (1152,)) == (None,)
    # LoRA follows the base: A like the kernel's input dimensions, B like its output.
    assert axes(f"{block}/attention/query/lora_kernel_a", (4, 1152, 8)) == ("model", None, None)
    assert axes(f"{block}/attention/query/lora_kernel_b", (8, 256)) == (None, None)
    assert axes(f"{block}/attention/key/lora_kernel_a", (1, 1152, 8)) == (None, None, None)
    assert axes(f"{block}/ffw_gating_2/lora_kernel_a", (1152, 8)) == (None, None)
    assert axes(f"{block}/ffw_gating_2/lora_kernel_b", (8, 6912)) == (None, "model")


def test_gemma3_layout_follows_the_config_not_the_preset():
    # 8 devices on the model axis: 4 query heads no longer split; a vocabulary
    # that does not divide falls back to splitting the width.
    mesh = _Mesh(1, 8)
    strategy = parallel.GemmaModelParallel(
        mesh, parallel.layout_rules(parallel.backbone_class("gemma3_4b"), mesh))
    axes = strategy.variable_axes
    assert axes("decoder_block_0/attention/query/kernel", (4, 1152, 256)) == (None,) * 3
    assert axes("decoder_block_0/attention/query/kernel", (8, 2560, 256)) == ("model", None, None)
    assert axes("decoder_block_0/attention/key/kernel", (4, 2560, 256)) == (None,) * 3
    assert axes("decoder_block_0/attention/key/kernel", (8, 2560, 256)) == ("model", None, None)
    assert axes("token_embedding/embeddings", (502, 128)) == (None, "model")
    assert axes("token_embedding/embeddings", (502, 100)) == (None, None)


def test_gemma2_uses_keras_hub_layout_map_with_the_single_kv_head_kept_whole():
    # Gemma 2B (Gemma 1 architecture): 8 query heads, 1 key/value head (#1613).
    mesh = _Mesh(2, 4)
    backbone = parallel.backbone_class("gemma_2b_en")
    assert backbone is keras_hub.models.GemmaBackbone
    strategy = parallel.GemmaModelParallel(mesh, parallel.layout_rules(backbone, mesh))
    axes = strategy.variable_axes
    # KerasHub's map: heads on the model axis, the width on the data axis.
    assert axes("decoder_block_0/attention/query/kernel", (8, 2048, 256)) == ("model", "batch", None)
    assert axes("decoder_block_0/attention/key/kernel", (1, 2048, 256)) == (None, "batch", None)
    assert axes("decoder_block_0/ffw_linear/kernel", (16384, 2048)) == ("model", "batch")
    # LoRA follows the model axis only, so every host holds its matrices whole.
    assert axes("decoder_block_0/attention/query/lora_kernel_a", (8, 2048, 4)) == ("model", None, None)
    assert axes("decoder_block_0/ffw_linear/lora_kernel_a", (16384, 4)) == ("model", None)


def test_architecture_without_a_layout_map_is_refused_for_model_parallel():
    with pytest.raises(ConfigError, match="there is none for LlamaBackbone.*use model_parallel=1"):
        parallel.layout_rules(keras_hub.models.LlamaBackbone, _Mesh(2, 4))


# === One device: nothing changes, and only process 0 writes ===


def test_one_device_sets_no_distribution():
    log = []
    shape = parallel.apply(RunConfig(batch_size=3), log.append)
    assert log == ["1 cpu device: data_parallel=1 × model_parallel=1; batch_size 3 = 3 per device."]
    assert (shape.data_parallel, shape.model_parallel) == (1, 1)
    assert keras.distribution.distribution() is None
    batch = {"token_ids": np.zeros((3, 8), "int32")}
    assert parallel.shard_batch(batch) is batch
    assert parallel.batch_summary(3) == ""


def test_only_process_zero_writes_run_files(tmp_path, monkeypatch, tiny_causal_lm):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=2))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = RunConfig(run_dir=str(run_dir))

    def write_everything():
        report.write_config(config)
        training.write_history([{"step": 1, "loss": 2.0, "learning_rate": 0.1, "val_loss": 1.5}],
                            run_dir / "history.csv")
        report.write_metrics(config, {"steps": 1})
        report.plot_history([{"step": 1, "loss": 2.0, "learning_rate": 0.1, "val_loss": 1.5}],
                            run_dir / "loss_curves.png")
        checkpoint.save(run_dir, 1, {"w": np.zeros(2)}, {"fingerprint": {}}, keep=1)
        lora.save_adapter(tiny_causal_lm, run_dir / "adapter", "tiny")

    monkeypatch.setattr(runtime.jax, "process_index", lambda: 1)
    write_everything()
    assert list(run_dir.iterdir()) == []
    monkeypatch.setattr(runtime.jax, "process_index", lambda: 0)
    write_everything()
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "adapter", "checkpoints", "config.json", "history.csv", "loss_curves.png", "metrics.json",
        "tensorboard"]


# === 8 simulated devices ===


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory, tiny_tokenizer_proto):
    """A one-block tiny Gemma 3 with 8 query heads and one key/value head, as a preset."""
    from gemma_lora.testing import build_tiny_gemma3

    folder = tmp_path_factory.mktemp("distributed") / "preset"
    model = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, num_layers=1, hidden_dim=128)
    model.save_to_preset(str(folder))
    return folder


def test_auto_mesh_with_a_batch_the_devices_do_not_divide_runs_and_says_so(tiny_preset):
    script = ("from gemma_lora import parallel\n"
              "from gemma_lora.config import RunConfig\n"
              f"shape = parallel.apply(RunConfig(preset={str(tiny_preset)!r}, batch_size=4))\n"
              "print((shape.data_parallel, shape.model_parallel))\n")
    completed = subprocess.run([sys.executable, "-c", script], env=simulated_devices(8),
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.splitlines() == [
        "8 cpu devices: data_parallel=4 × model_parallel=2; batch_size 4 = 1 per device.",
        'data_parallel="auto": batch_size=4 does not split across 8 cpu devices, so 4 model '
        "replicas of 2 devices each (model_parallel=2). For data parallelism alone, set "
        "batch_size to a multiple of 8.",
        "(4, 2)",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tiny_preset, tmp_path_factory):
    """Every multi-device run, started together and awaited once.

    - `meshes`: one process with 8 devices: a single-device reference run,
      then the meshes 8×1, 2×4 and 1×8;
    - `hosts`: a 2×4 mesh over two processes of 4 devices each, joined
      through `jax.distributed` on localhost, each given its own run folder
      (as on hosts that share no disk).
    """
    work = tmp_path_factory.mktemp("runs")
    port = str(_free_port())
    commands = {
        "meshes": (["meshes", tiny_preset, work / "meshes", work / "meshes.json"], 8),
        "host-0": (["host", tiny_preset, work / "host-0", work / "host-0.json", port, "0"], 4),
        "host-1": (["host", tiny_preset, work / "host-1", work / "host-1.json", port, "1"], 4),
    }
    processes = {
        name: subprocess.Popen([sys.executable, str(SCRIPT), *map(str, arguments)],
                               env=simulated_devices(devices), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        for name, (arguments, devices) in commands.items()
    }
    try:
        outputs = {name: process.communicate(timeout=600)[0] for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for name, process in processes.items():
        assert process.returncode == 0, f"{name}:\n{outputs[name][-3000:]}"
    return {
        "meshes": json.loads((work / "meshes.json").read_text()),
        "hosts": [json.loads((work / f"host-{index}.json").read_text()) for index in (0, 1)],
        "outputs": outputs,
        "run_dirs": {**{mesh: work / "meshes" / mesh for mesh in ("1x1", "8x1", "2x4", "1x8")},
                     "host-0": work / "host-0"},
    }


def final_adapter(run_dir: Path) -> dict:
    """The LoRA values of a run's last checkpoint (its last step, not its best adapter)."""
    arrays = load_file(str(checkpoint.latest(run_dir) / checkpoint.ARRAYS_FILE))
    assert checkpoint.latest(run_dir).name == f"step-{STEPS:06d}"
    return {key: value for key, value in arrays.items()
            if not key.startswith(("optimizer/", "best/"))}


def assert_trains_like_one_device(runs, losses: list, run_dir: Path) -> None:
    """Each step's loss and the final adapter are the single-device run's (LOSS_RTOL, ADAPTER_ATOL)."""
    assert losses == pytest.approx(runs["meshes"]["1x1"]["losses"], rel=LOSS_RTOL)
    expected, adapter = final_adapter(runs["run_dirs"]["1x1"]), final_adapter(run_dir)
    assert adapter.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(adapter[key], expected[key], rtol=0, atol=ADAPTER_ATOL,
                                   err_msg=key)


def test_the_single_device_run_trains_its_random_adapter(runs):
    losses = runs["meshes"]["1x1"]["losses"]
    assert len(losses) == STEPS and all(np.isfinite(losses))
    final = final_adapter(runs["run_dirs"]["1x1"])
    start = random_adapter({key: value.shape for key, value in final.items()})
    assert any(np.any(value != 0) for key, value in start.items() if key.endswith("lora_kernel_b"))
    moved = np.concatenate([np.abs(final[key] - start[key]).ravel() for key in final])
    assert np.median(moved) > 100 * ADAPTER_ATOL  # the tolerance is far below one run's change


@pytest.mark.parametrize("mesh", ["8x1", "2x4", "1x8"])
def test_each_mesh_trains_like_one_device(runs, mesh):
    assert_trains_like_one_device(runs, runs["meshes"][mesh]["losses"], runs["run_dirs"][mesh])


def test_mesh_log_prints_the_per_device_batch(runs):
    output = runs["outputs"]["meshes"]
    assert "8 cpu devices: data_parallel=2 × model_parallel=4; batch_size 8 = 4 per device." in output
    assert f"Training {STEPS} steps of 8 examples (4 per device, data_parallel=2)" in output
    assert f"Training {STEPS} steps of 8 examples (1 per device, data_parallel=8)" in output


def test_batches_are_split_across_the_data_axis(runs):
    for mesh, rows in (("8x1", 1), ("2x4", 4), ("1x8", 8)):
        assert runs["meshes"][mesh]["batch_spec"] == ["batch", None]
        assert runs["meshes"][mesh]["batch_shard_shape"] == [rows, 16]


def test_data_parallel_replicates_every_weight(runs):
    run = runs["meshes"]["8x1"]
    for path, axes in run["specs"].items():
        assert set(axes) == {None}, path
    assert all(set(axes) == {None} for axes in run["slots"].values())


# The tiny model: vocabulary 502 (divides by neither 4 nor 8, so the width is
# split instead), width 128, 8 query heads, 1 key/value head, MLP width 256.
MODEL_PARALLEL_SPECS = {
    "token_embedding/embeddings": [None, "model"],
    "decoder_block_0/attention/query/kernel": ["model", None, None],
    "decoder_block_0/attention/key/kernel": [None, None, None],  # one head: kept whole
    "decoder_block_0/attention/attention_output/kernel": ["model", None, None],
    "decoder_block_0/ffw_gating/kernel": [None, "model"],
    "decoder_block_0/ffw_linear/kernel": ["model", None],
    "decoder_block_0/pre_ffw_norm/scale": [None],
    "decoder_block_0/attention/query/lora_kernel_a": ["model", None, None],
    "decoder_block_0/attention/query/lora_kernel_b": [None, None],
    "decoder_block_0/ffw_gating/lora_kernel_b": [None, "model"],
    "decoder_block_0/ffw_linear/lora_kernel_a": ["model", None],
}


@pytest.mark.parametrize("mesh", ["2x4", "1x8"])
def test_model_parallel_weights_are_laid_out_as_the_layout_map_says(runs, mesh):
    run = runs["meshes"][mesh]
    assert run["specs"] == MODEL_PARALLEL_SPECS
    assert run["slots"] == {  # AdamW's momentum follows its LoRA matrix
        "decoder_block_0_attention_query_lora_kernel_a_momentum": ["model", None, None],
        "decoder_block_0_ffw_gating_lora_kernel_b_momentum": [None, "model"],
    }


@pytest.mark.parametrize("mesh", ["1x1", "8x1", "2x4", "1x8"])
def test_each_run_writes_its_files_once_with_the_trained_adapter(runs, mesh):
    run = runs["meshes"][mesh]
    assert run["files"] == RUN_FILES
    assert run["adapter_error"] == 0.0


def test_two_hosts_train_together_and_only_process_zero_writes(runs):
    hosts = runs["hosts"]
    assert [host["is_writer"] for host in hosts] == [True, False]
    assert [host["process_count"] for host in hosts] == [2, 2]
    for host in hosts:  # both processes compute the same steps; process 0 saves them
        assert_trains_like_one_device(runs, host["losses"], runs["run_dirs"]["host-0"])
        assert host["specs"] == MODEL_PARALLEL_SPECS
        assert host["batch_shard_shape"] == [4, 16]
    assert hosts[0]["files"] == RUN_FILES and hosts[0]["adapter_error"] == 0.0
    assert hosts[1]["files"] == []  # process 1 writes nothing
    assert "process 1 of 2, 4 local of 8 devices" in runs["outputs"]["host-1"]


@pytest.mark.notebook
def test_finetuning_notebook_runs_on_a_2x4_mesh(tmp_path):
    preset = tiny_presets.save_tiny_gemma_preset(tmp_path / "preset", seed=0)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "papermill", "notebooks/01_finetune_gemma_lora.ipynb",
               str(tmp_path / "01.ipynb"), "--cwd", "."]
    for name, value in dict(preset=preset, run_dir=run_dir, data_parallel=2, model_parallel=4,
                            batch_size=4, max_steps=2, eval_every=1, warmup_steps=1,
                            validation_fraction=0.002, test_fraction=0.004, max_new_tokens=4,
                            eval_batch_size=8, num_samples=2).items():
        command += ["-p", name, str(value)]
    completed = subprocess.run(command, cwd=REPO, env=simulated_devices(8), capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["data_parallel"], metrics["model_parallel"]) == (2, 4)
    assert metrics["results"]["steps"] == 2
    executed = (tmp_path / "01.ipynb").read_text()
    assert "8 cpu devices: data_parallel=2 × model_parallel=4; batch_size 4 = 2 per device." in executed
    assert "Training 2 steps of 4 examples (2 per device, data_parallel=2)" in executed
