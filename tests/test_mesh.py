"""Layouts, meshes and their errors."""

import jax
import numpy as np
import pytest

from samplepar import mesh


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", (1, 1)),
        ("1", (1, 1)),
        ("sample=8", (8, 1)),
        ("data=8", (1, 8)),
        ("sample=4,data=2", (4, 2)),
        ("data=4, sample=2", (2, 4)),
        ("sample", (8, 1)),
        ("data", (1, 8)),
        ("sample=2,data", (2, 4)),
    ],
)
def test_parse_layout(text, expected):
    layout = mesh.parse_layout(text, num_devices=8)
    assert (layout.sample, layout.data) == expected


def test_make_mesh_axes_and_shape():
    m = mesh.make_mesh("sample=4,data=2")
    assert m.axis_names == (mesh.SAMPLE, mesh.DATA)
    assert dict(m.shape) == {"sample": 4, "data": 2}
    assert mesh.layout_of(m) == mesh.Layout(4, 2)


def test_layout_larger_than_devices_is_refused_with_sizes():
    with pytest.raises(
        mesh.LayoutError, match=r"needs 16 devices but 8 are present.*may be at most 8"
    ):
        mesh.make_mesh("sample=4,data=4")


def test_explicit_devices_must_match_layout_product():
    with pytest.raises(mesh.LayoutError, match="has 4 devices but 8 were given"):
        mesh.make_mesh("sample=2,data=2", devices=jax.devices())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model=2", "unknown axis 'model'"),
        ("sample=0", "positive integer"),
        ("sample=x", "positive integer"),
        ("sample=2,sample=4", "given twice"),
        ("sample,data", "at most one axis"),
        ("sample=3,data", "cannot be split"),
    ],
)
def test_bad_layout_text(text, message):
    with pytest.raises(mesh.LayoutError, match=message):
        mesh.parse_layout(text, num_devices=8)


def test_samples_not_divisible_names_working_sizes():
    with pytest.raises(
        mesh.LayoutError, match=r"6 samples cannot be split over sample=4.*\[1, 2, 3, 6\]"
    ):
        mesh.check_num_samples(6, mesh.Layout(4, 2))
    mesh.check_num_samples(8, mesh.Layout(4, 2))


def test_batch_not_divisible_by_data_axis():
    with pytest.raises(mesh.LayoutError, match=r"batch of 10 examples cannot be split over data=4"):
        mesh.check_batch_size(10, mesh.Layout(2, 4))
    mesh.check_batch_size(12, mesh.Layout(2, 4))


def test_pad_to_multiple_masks_padding():
    x = np.arange(10.0).reshape(5, 2)
    padded, mask = mesh.pad_to_multiple(x, 4)
    assert padded.shape == (8, 2)
    np.testing.assert_array_equal(padded[:5], x)
    np.testing.assert_array_equal(padded[5:], 0)
    np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)


def test_global_batch_is_sharded_over_data():
    m = mesh.make_mesh("sample=2,data=4")
    batch = mesh.global_batch({"x": np.arange(16.0).reshape(8, 2)}, m)
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec(mesh.DATA)
    assert len(batch["x"].addressable_shards) == 8
    assert batch["x"].addressable_shards[0].data.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(16.0).reshape(8, 2))


def test_global_batch_refuses_ragged_or_indivisible_rows():
    m = mesh.make_mesh("sample=2,data=4")
    with pytest.raises(
        mesh.LayoutError, match=r"share their leading \(row\) axis; rows \['x'\]: 16, \['y'\]: 8"
    ):
        mesh.global_batch({"x": np.zeros((16, 3)), "y": np.zeros(8)}, m)
    with pytest.raises(mesh.LayoutError, match="batch of 15 examples cannot be split over data=4"):
        mesh.global_batch({"x": np.zeros((15, 3)), "y": np.zeros(15)}, m)


def test_make_mesh_names_a_layout_of_the_wrong_type():
    with pytest.raises(mesh.LayoutError, match="layout must be a string such as"):
        mesh.make_mesh(8)


def test_sample_counts_must_be_whole_numbers():
    layout = mesh.parse_layout("sample=2")
    for bad in (4.0, True, "4"):
        with pytest.raises(mesh.LayoutError, match="must be a whole number of samples"):
            mesh.check_num_samples(bad, layout)
    mesh.check_num_samples(np.int64(4), layout)


def test_process_slice_single_process_is_everything():
    assert mesh.process_slice(12, mesh.make_mesh("sample=2,data=4")) == slice(0, 12)
