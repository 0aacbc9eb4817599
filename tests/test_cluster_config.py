"""cluster.yaml is checked offline by Ray's own cluster-launcher validation."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_ray_validation(raw):
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]


def test_head_runs_no_simulations_and_versions_are_pinned(raw):
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    setup = "\n".join(raw["setup_commands"])
    assert "torch==2.13.0" in setup and "ray[default]==2.60.0" in setup
    assert any("--num-cpus=0" in c for c in raw["head_start_ray_commands"])


def test_validation_catches_a_broken_config(raw):
    broken = copy.deepcopy(raw)
    broken["max_workerz"] = 3  # a typo Ray's schema must reject
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
