"""sgl_kernel.zones: the committed JSON vectors stay what the classifier produces, and the
distance bins / fingerprint layout agree across the Python modules that use them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgl_kernel import zones
from sgl_kernel.capture_common import fingerprint
from sgl_kernel.capture_torch import distance_bin
from sk_dense_ref import dist_bin


def _committed() -> dict:
    with open(zones.VECTORS_PATH) as f:
        return json.load(f)


def test_committed_vectors_match_the_classifier():
    data = _committed()
    assert data["version"] == 1
    assert data["thresholds"] == zones.THRESHOLDS
    assert data["vectors"] == json.loads(json.dumps(zones._test_vectors()))
    seen = {v["zone"] for v in data["vectors"]}
    assert seen == set(zones.ZONES), "the vectors must cover every zone for the TypeScript copy"


@pytest.mark.parametrize("vec", _committed()["vectors"], ids=lambda v: v["name"])
def test_each_vector_classifies_as_recorded(vec):
    r = zones.classify(vec["fingerprint"])
    assert r.zone == vec["zone"]
    assert r.confidence == pytest.approx(vec["confidence"], abs=1e-6)
    assert zones.traits(vec["fingerprint"]) == vec["traits"]
    assert zones.ripple(vec["fingerprint"][4:]) == pytest.approx(vec["ripple"], abs=1e-8)
    assert zones.sampling_hints(vec["fingerprint"])["zone"] == vec["zone"]


def test_distance_bins_agree_everywhere():
    ds = list(range(0, 70)) + [2**b + o for b in range(6, 17) for o in (-1, 0, 1)] + [10**6]
    torch_bins = distance_bin(torch.tensor(ds)).tolist()
    assert torch_bins == [zones.bin_of_distance(d) for d in ds] == [dist_bin(d) for d in ds]
    assert zones.bin_of_distance(32767) == 14 and zones.bin_of_distance(32768) == 15


def test_torch_fingerprint_matches_zones_layout():
    rng = np.random.default_rng(1)
    hist = rng.dirichlet(np.ones(16), size=3)
    n_keys = torch.tensor([1, 50, 4000])
    ent = torch.tensor([0.0, 1.3, 20.0])  # the last exceeds ln(4000): normalised value clamps to 1
    fp = fingerprint(torch.tensor(hist, dtype=torch.float32), ent, n_keys)
    for i in range(3):
        norm = 0.0 if i == 0 else min(1.0, float(ent[i]) / np.log(float(n_keys[i])))
        np.testing.assert_allclose(fp[i].numpy(), zones.fingerprint_from_hist(hist[i], norm), atol=1e-6)


@pytest.mark.parametrize("bad", [[0.1] * 19, [0.1] * 21, [float("nan")] + [0.0] * 19, ["x"] * 20, None])
def test_validate_fingerprint_rejects(bad):
    with pytest.raises(ValueError, match="fingerprint"):
        zones.validate_fingerprint(bad)


def test_version_2_vectors_and_thresholds():
    """Version-2 fingerprints read with the re-derived thresholds; the committed vectors (which
    the TypeScript copy reads too) are what the classifier produces, and some of them change
    zone between the versions, so a classifier that ignored the version would fail them."""
    data = _committed()
    assert data["thresholds_v2"] == zones.THRESHOLDS_V2 and data["focused_entropy_v2"] == zones.FOCUSED_ENTROPY_V2
    assert data["vectors_v2"] == json.loads(json.dumps(zones._test_vectors(2)))
    assert {v["zone"] for v in data["vectors_v2"]} == set(zones.ZONES)
    changed = 0
    for vec in data["vectors_v2"]:
        r = zones.classify(vec["fingerprint"], 2)
        assert r.zone == vec["zone"] and zones.traits(vec["fingerprint"], 2) == vec["traits"]
        assert r.confidence == pytest.approx(vec["confidence"], abs=1e-6)
        assert zones.sampling_hints(vec["fingerprint"], 2)["zone"] == vec["zone"]
        changed += zones.classify(vec["fingerprint"], 1).zone != vec["zone"]
    assert changed >= 3
    assert zones.thresholds(1) == (zones.THRESHOLDS, zones.FOCUSED_ENTROPY)
    with pytest.raises(ValueError, match="version"):
        zones.classify(data["vectors_v2"][0]["fingerprint"], 3)
