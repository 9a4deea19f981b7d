"""Search spaces: published choices, cardinality, subnets, sampling/mutation/crossover, JSON."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from edgekit.arch import hubert_frontend
from edgekit.errors import UserError
from edgekit.space import SearchSpace, Subnet, SubnetError, SupernetShape, get_space, list_spaces, tiny_shape


@pytest.fixture(scope="module")
def base():
    return get_space("lighthubert-base")


@pytest.fixture(scope="module")
def small():
    return get_space("lighthubert-small")


def test_published_cardinalities(base, small):
    assert base.cardinality() == 6_530_347_008 == 3 * 6 ** 12
    assert small.cardinality() == 951_892_141_473 == 3 * (9 ** 10 + 9 ** 11 + 9 ** 12)


def test_published_choices_and_defaults(base, small):
    assert (base.embed_dims, base.heads, base.ffn_ratios, base.depths) == ((512, 640, 768), (8, 10, 12), (3.5, 4.0), (12,))
    assert (small.embed_dims, small.heads, small.ffn_ratios, small.depths) == (
        (256, 384, 512), (4, 6, 8), (3.0, 3.5, 4.0), (10, 11, 12))
    assert base.head_dim == small.head_dim == 64
    assert base.default == Subnet(640, 12, (10,) * 12, (2560,) * 12)
    assert small.default == Subnet(384, 12, (6,) * 12, (1536,) * 12)
    assert small.largest() == Subnet(512, 12, (8,) * 12, (2048,) * 12)
    assert small.smallest() == Subnet(256, 10, (4,) * 10, (768,) * 10)
    assert {"lighthubert-base", "lighthubert-small", "tiny-supernet"} <= set(list_spaces())


def test_keep_maps_follow_the_paper(small):
    # 1-indexed: 11 drops layer 12; 10 drops layers 8 and 12.
    assert [i + 1 for i in small.keep_map(11)] == list(range(1, 12))
    assert [i + 1 for i in small.keep_map(10)] == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11]
    assert small.keep_map(12) == tuple(range(12))
    with pytest.raises(SubnetError, match="depth=5"):
        small.keep_map(5)


def test_default_specs_param_counts(base, small):
    b, s = base.to_arch(base.default), small.to_arch(small.default)
    assert abs(b.param_count() - 66_890_880) / 66_890_880 < 1e-3
    assert abs(s.param_count() - 26_872_960) / 26_872_960 < 1e-3
    for spec in (b, s):
        assert spec.frontend == hubert_frontend()
        assert spec.pos_conv.weight_norm is False and spec.pos_conv.groups == 16 and spec.pos_conv.kernel == 128
        assert spec.mask_emb is False and spec.feature_layer_norm and not spec.layer_norm_first
    assert [layer.ffn_dim for layer in b.layers] == [2560] * 12
    # Published ranges: Base space 41M-94M, Small space 11M-44M.
    assert 40e6 < base.to_arch(base.smallest()).param_count() < 42e6
    assert 93e6 < base.to_arch(base.largest()).param_count() < 95e6
    assert 11e6 < small.to_arch(small.smallest()).param_count() < 12e6
    assert 43e6 < small.to_arch(small.largest()).param_count() < 45e6


def test_subnet_round_trip_and_forms(small):
    sub = small.sample(random.Random(3))
    assert Subnet.from_dict(json.loads(json.dumps(sub.to_dict()))) == sub
    scalar = Subnet.from_dict({"embed_dim": 384, "depth": 11, "heads": 6, "ffn_ratios": 3.5})
    assert scalar == Subnet(384, 11, (6,) * 11, (1344,) * 11)
    upstream = {"atten_dim": [384] * 12, "embed_dim": 384, "ffn_embed": [1536] * 12, "heads_num": [6] * 12,
                "layer_num": 12, "slide_wsz": ["global"] * 12}
    assert Subnet.from_dict(upstream) == small.default
    assert small.resolve("default") == small.default
    assert small.resolve("max") == small.largest() and small.resolve("min") == small.smallest()
    assert small.resolve(small.to_arch(sub)) == sub


def test_subnet_errors_name_field_value_and_allowed(small):
    with pytest.raises(SubnetError, match="unknown key 'width'"):
        Subnet.from_dict({"embed_dim": 384, "width": 3})
    bad = Subnet(384, 12, (6,) * 3 + (5,) + (6,) * 8, (1536,) * 12)
    with pytest.raises(SubnetError, match=r"subnet\.heads\[3\]=5 .*allowed \[4, 6, 8\]"):
        small.validate(bad)
    with pytest.raises(SubnetError, match=r"subnet\.embed_dim=640 .*allowed \[256, 384, 512\]"):
        small.resolve({"embed_dim": 640, "depth": 12, "heads": 6, "ffn_ratios": 4.0})
    with pytest.raises(SubnetError, match=r"subnet\.ffn_dims\[0\]=1000"):
        small.validate(Subnet(384, 10, (6,) * 10, (1000,) + (1536,) * 9))
    with pytest.raises(SubnetError, match="heads has 3 entries"):
        Subnet(384, 10, (6, 6, 6), (1536,) * 10)
    # A SubnetError is both a UserError (CLI) and a ValueError (validation style).
    assert issubclass(SubnetError, UserError) and issubclass(SubnetError, ValueError)


def test_sampling_is_seeded_and_valid(small):
    a = [small.sample(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(0)
    subs = [small.sample(rng) for _ in range(300)]
    assert all(small.contains(s) for s in subs)
    assert {s.depth for s in subs} == {10, 11, 12} and {s.embed_dim for s in subs} == {256, 384, 512}
    assert len({s for s in subs}) == 300
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert small.sample(g1) == small.sample(g2)


def test_mutation_and_crossover(small):
    rng = random.Random(1)
    parent = small.sample(rng)
    assert small.mutate(parent, rng, prob=0.0) == parent
    mutants = [small.mutate(parent, rng, prob=1.0) for _ in range(50)]
    assert all(small.contains(m) for m in mutants) and any(m != parent for m in mutants)
    a = Subnet(256, 10, (4,) * 10, (768,) * 10)  # smallest choices, ratio 3.0
    b = Subnet(512, 12, (8,) * 12, (2048,) * 12)  # largest choices, ratio 4.0
    for _ in range(50):
        c = small.crossover(a, b, rng)
        assert small.contains(c)
        assert c.embed_dim in (256, 512) and c.depth in (10, 12)
        assert set(c.heads) <= {4, 8}
        assert {f / c.embed_dim for f in c.ffn_dims} <= {3.0, 4.0}  # ratios inherited, rescaled


def test_space_validation_on_build():
    with pytest.raises(SubnetError, match="embed_dims contains 500"):
        SearchSpace("bad", (500,), (8,), (4.0,), (12,))
    with pytest.raises(SubnetError, match="depths contains 5"):
        SearchSpace("bad", (512,), (8,), (4.0,), (5,))
    with pytest.raises(SubnetError, match="ffn_ratios contains 5.0"):
        SearchSpace("bad", (512,), (8,), (5.0,), (12,))
    with pytest.raises(SubnetError, match="heads contains 13"):
        SearchSpace("bad", (512,), (13,), (4.0,), (12,))
    tiny = get_space("tiny-supernet")
    assert tiny.supernet == tiny_shape() and tiny.cardinality() == 3 * (9 ** 2 + 9 ** 3 + 9 ** 4)
    assert tiny.keep_map(2) == (0, 2)


def test_from_file(tmp_path):
    path = tmp_path / "space.json"
    data = {"name": "mine", "embed_dims": [384, 512], "heads": [6, 8], "ffn_ratios": [4.0], "depths": [11, 12],
            "default": {"embed_dim": 384, "depth": 12, "heads": 6, "ffn_ratios": 4.0}}
    path.write_text(json.dumps(data))
    space = SearchSpace.from_file(str(path))
    assert space.cardinality() == 2 * (2 ** 11 + 2 ** 12)  # 2 embeds x (2 heads x 1 ratio)^depth
    assert space.default == Subnet(384, 12, (6,) * 12, (1536,) * 12)
    assert SearchSpace.from_dict(json.loads(space.to_json())) == space
    assert get_space(str(path)) == space
    path.write_text(json.dumps({**data, "depth": [12]}))
    with pytest.raises(SubnetError, match="unknown key 'depth'"):
        SearchSpace.from_file(str(path))
    tiny = get_space("tiny-supernet")
    assert SearchSpace.from_dict(json.loads(tiny.to_json())) == tiny
    shape = SupernetShape.from_dict(tiny.supernet.to_dict())
    assert shape == tiny.supernet
    with pytest.raises(UserError, match="unknown search space"):
        get_space("lighthubert-smal")
