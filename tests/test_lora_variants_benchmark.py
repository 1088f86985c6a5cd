"""benchmarks/lora_variants.py: variant parsing and its table (the run itself is a real-model job)."""

import importlib.util

import pytest


@pytest.fixture(scope="module")
def lora_variants():
    spec = importlib.util.spec_from_file_location("lora_variants", "benchmarks/lora_variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_parse(lora_variants):
    assert lora_variants.parse_variant("int8:qv:8") == ("int8", "qv", 8)
    assert lora_variants.parse_variant("float32:all-linear:2") == ("float32", "all-linear", 2)


@pytest.mark.parametrize("text", ["int3:qv:8", "int8:q:8", "int8:qv:0", "int8:qv", "int8:qv:x"])
def test_bad_variant_is_named(lora_variants, text):
    with pytest.raises(SystemExit, match=f"got {text!r}"):
        lora_variants.parse_variant(text)


def test_table_has_one_row_per_variant(lora_variants):
    row = {"variant": "int4:qv:8", "trainable": 534528, "weights_gib": 0.14,
           "peak_rss_gib": 4.8, "train_seconds": 300.0, "val_loss": 0.1, "test_loss": 0.05,
           "exact_match": 0.96, "test_examples": 50}
    table = lora_variants.markdown_table([row, {**row, "variant": "float32:qv:8"}]).splitlines()
    assert len(table) == 4
    assert table[2] == ("| `int4:qv:8` | 534,528 | 0.14 GiB | 4.80 GiB | 5.0 min | 0.0500 | "
                        "96% of 50 |")
