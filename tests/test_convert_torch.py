"""Tests for ssd/modeling/convert/torch_pickle.py and the ssd.pytorch side of convert.py.

The .pth fixtures were written once by a real torch in both serialisation formats
(tests/fixtures/torch/make_torch_fixtures.py, run outside CI); their values are closed forms
recomputed here. Full-size state dicts with ssd.pytorch's key names are built here from its
layer configuration, and converted layers are checked against a NumPy convolution.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import hostile_files as hf
import keras
import numpy as np
import pytest
from numpy_reference import numpy_conv

from ssd.modeling.convert.convert import torch_source
from ssd.modeling.convert.mapping import BASE_LAYERS, assign, detector_layers
from ssd.modeling.convert.torch_pickle import UnsafePickleError, read_state_dict, read_torch_file
from ssd.modeling.model import build_model

FIXTURES = Path(__file__).parent / "fixtures" / "torch"


def fixture_values() -> dict[str, np.ndarray]:
    """What make_torch_fixtures.py saved, recomputed without torch."""
    shared = np.arange(10, dtype=np.float32) * 0.25
    return {
        "vgg.0.weight": np.arange(108, dtype=np.float32).reshape(4, 3, 3, 3) / np.float32(10),
        "vgg.0.bias": np.arange(4, dtype=np.float32) - 1.5,
        "L2Norm.weight": np.full(4, 20.0, np.float32),
        "conf.0.weight": np.arange(24, dtype=np.float32).reshape(4, 6).T,
        "loc.0.bias": shared[2:8:2],
        "extras.0.bias": shared[3:7],
        "extras.1.weight": np.arange(6, dtype=np.float64).reshape(2, 3) - 2.5,
        "extras.1.bias": np.array(7.0, np.float32),
    }


@pytest.mark.parametrize("name", ["state_dict_zip.pth", "state_dict_legacy.pth"])
def test_both_torch_formats_read_to_the_saved_values(name):
    state = read_state_dict(FIXTURES / name)
    expected = fixture_values()
    assert list(state) == list(expected)
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and state[key].shape == value.shape, key
        np.testing.assert_array_equal(state[key], value, err_msg=key)


class Exploit:
    """Unpickling this runs os.system: what a malicious .pth does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def legacy_file(obj_pickle: bytes) -> bytes:
    """The legacy layout around an object pickle: magic number, protocol, sys info, object, keys."""
    head = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    return b"".join(pickle.dumps(x, protocol=2) for x in head) + obj_pickle + pickle.dumps([], protocol=2)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_malicious_pickle_is_refused_before_it_runs(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"vgg.0.weight": Exploit(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
    else:
        path.write_bytes(legacy_file(payload))
    with pytest.raises(UnsafePickleError, match=r"evil.pth: refusing to load (posix|os)\.system"):
        read_torch_file(path)
    assert not marker.exists()
    # Plain pickle would have run it: the payload is live.
    pickle.loads(payload)
    assert marker.exists()


def test_truncated_and_foreign_files_are_refused_with_the_file_name(tmp_path):
    data = (FIXTURES / "state_dict_legacy.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:-20])
    with pytest.raises(ValueError, match=r"cut.pth: cannot read.*storage .*expected \d+ values"):
        read_state_dict(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="text.pth: .*no torch magic number"):
        read_state_dict(tmp_path / "text.pth")
    (tmp_path / "list.pth").write_bytes(legacy_file(pickle.dumps([1, 2], protocol=2)))
    with pytest.raises(ValueError, match="list.pth: expected a state dict"):
        read_state_dict(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")


def test_a_tensor_past_its_storage_is_refused(tmp_path):
    """A zip whose tensor claims more values than its storage holds (a crafted or damaged file)."""
    with zipfile.ZipFile(FIXTURES / "state_dict_zip.pth") as source, zipfile.ZipFile(tmp_path / "big.pth", "w") as out:
        for item in source.namelist():
            data = source.read(item)
            if item.endswith("data.pkl"):
                # vgg.0.bias: size (4,) -> (5,) in its storage of 4 (BININT1 4 then TUPLE1).
                data = data.replace(b"K\x04\x85q\x11", b"K\x05\x85q\x11", 1)
            out.writestr(item, data)
    with pytest.raises(ValueError, match=r"big.pth: .*size \(5,\) .*offset 0.* runs past its storage of 4"):
        read_state_dict(tmp_path / "big.pth")


# -- ssd.pytorch's SSD300, full size

VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)
EXTRAS = ((256, 1024, 1), (512, 256, 3), (128, 512, 1), (256, 128, 3), (128, 256, 1), (256, 128, 3),
          (128, 256, 1), (256, 128, 3))  # (out, in, kernel) of extras.0 ... extras.7
SOURCES, MBOX = (512, 1024, 512, 256, 256, 256), (4, 6, 6, 6, 4, 4)


def pytorch_ssd300_state(rng: np.random.Generator, base_only: bool = False) -> dict[str, np.ndarray]:
    """Random weights under ssd.pytorch's names and shapes (its vgg(), add_extras(), multibox())."""
    convs, index, channels = [], 0, 3
    for v in VGG_CFG:  # a conv is followed by a ReLU (2 modules), a pool is 1 module
        if v in ("M", "C"):
            index += 1
        else:
            convs.append((index, (v, channels, 3, 3)))
            channels, index = v, index + 2
    index += 1  # pool5
    convs += [(index, (1024, 512, 3, 3)), (index + 2, (1024, 1024, 1, 1))]  # conv6 (dilated), conv7
    prefix = "" if base_only else "vgg."
    shapes = {f"{prefix}{i}": s for i, s in convs}
    if not base_only:
        shapes.update({f"extras.{i}": (o, c, k, k) for i, (o, c, k) in enumerate(EXTRAS)})
        for i, (c, k) in enumerate(zip(SOURCES, MBOX)):
            shapes[f"loc.{i}"], shapes[f"conf.{i}"] = (k * 4, c, 3, 3), (k * 21, c, 3, 3)
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.weight"] = (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)
        state[f"{name}.bias"] = (rng.standard_normal(shape[0]) * 0.1).astype(np.float32)
    if not base_only:
        state["L2Norm.weight"] = rng.uniform(10, 30, 512).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def full300():
    return build_model("vgg300", 21)


def test_full_size_pytorch_ssd300_computes_what_ssd_pytorch_computes(full300):
    state = pytorch_ssd300_state(np.random.default_rng(0))
    source = torch_source(state, Path("ssd300_mAP_77.43_v2.pth"))
    assert (source.preset, source.num_classes, source.unused) == ("vgg300", 21, ())
    assign(full300, source.tensors, source.names, detector_layers("vgg300"), "test")

    # ssd.pytorch: BGR image minus (104, 117, 123), then swapped to RGB, into vgg.0.
    x = np.random.default_rng(1).integers(0, 256, (1, 300, 300, 3)).astype(np.uint8)
    rgb_input = x[0, :24, :24].astype(np.float64) - (123, 117, 104)
    expected = np.maximum(numpy_conv(rgb_input, state["vgg.0.weight"], state["vgg.0.bias"], pad=1), 0)
    ours = keras.Model(full300.input, full300.get_layer("conv1_1").output)(x)
    np.testing.assert_allclose(np.asarray(ours)[0, 1:23, 1:23], expected[1:23, 1:23], rtol=1e-4, atol=1e-3)

    rng = np.random.default_rng(2)
    for layer_name, key, side, stride, pad, relu in (("conv8_2", "extras.1", 19, 2, 1, True),
                                                     ("conv11_2", "extras.7", 3, 1, 0, True),
                                                     ("conv9_2_mbox_conf", "conf.3", 5, 1, 1, False)):
        layer = full300.get_layer(layer_name)
        inputs = rng.standard_normal((1, side, side, layer.kernel.shape[2])).astype(np.float32)
        reference = numpy_conv(inputs[0], state[f"{key}.weight"], state[f"{key}.bias"], stride, pad)
        np.testing.assert_allclose(np.asarray(layer(inputs))[0], np.maximum(reference, 0) if relu else reference,
                                   rtol=1e-4, atol=1e-4, err_msg=layer_name)
    np.testing.assert_array_equal(full300.get_layer("conv4_3_norm").get_weights()[0], state["L2Norm.weight"])


def test_full_size_pytorch_base_keys_and_problems(full300):
    state = pytorch_ssd300_state(np.random.default_rng(3), base_only=True)  # vgg16_reducedfc.pth: "N.weight"
    source = torch_source(state, Path("vgg16_reducedfc.pth"))
    assert source.preset is None and source.unused == ()
    assign(full300, source.tensors, source.names, BASE_LAYERS, "test")
    # The base is Caffe's BGR VGG: no channel reversal.
    np.testing.assert_array_equal(full300.get_layer("conv1_1").kernel.numpy(),
                                  state["0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(full300.get_layer("conv7").bias.numpy(), state["33.bias"])

    state = pytorch_ssd300_state(np.random.default_rng(4))
    del state["extras.3.weight"]
    state["conf.5.bias"] = state["conf.5.bias"][:-1]
    state["vgg.35.weight"] = state["vgg.33.weight"]
    source = torch_source(state, Path("ssd.pth"))
    assert source.unused == ("vgg.35.weight",)
    with pytest.raises(ValueError) as info:
        assign(full300, source.tensors, source.names, detector_layers("vgg300"), "ssd.pth")
    assert "missing extras.3.weight (for conv9_2)" in str(info.value)
    assert "conf.5.weight (for conv11_2_mbox_conf): [(3, 3, 256, 84), (83,)]" in str(info.value)


# -- hostile files (issue: hardening, third round), built here from pickle opcodes

def hostile_torch_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """{case: (file, what its one-line refusal must say)}."""
    legacy_tensor = hf.state_dict(w=hf.tensor("0", 2**61, (4,), (1,)))
    cases = {
        "stride 0": (hf.write_zip(tmp_path / "stride0.pth", hf.state_dict(w=hf.tensor("0", 4, (20000, 20000), (0, 0))),
                                  {"0": bytes(16)}), r"repeats elements \(stride 0\): 400,000,000 elements"),
        "stride 0, 10^7 x 10^7": (hf.write_zip(tmp_path / "stride0_huge.pth", hf.state_dict(
            w=hf.tensor("0", 4, (10**7, 10**7), (0, 0))), {"0": bytes(16)}), "repeats elements"),
        "more elements than storage": (hf.write_zip(tmp_path / "overlap.pth", hf.state_dict(
            w=hf.tensor("0", 4, (3, 3), (1, 1))), {"0": bytes(16)}), "9 elements .* runs past its storage of 4"),
        "posix.system": (hf.write_zip(tmp_path / "system.pth", hf.whole(hf.call(hf.global_("posix", "system"),
                                                                                 hf.value("true")))),
                         r"refusing to load posix\.system"),
        "calls a storage type": (hf.write_zip(tmp_path / "call_storage.pth", hf.whole(
            hf.call(hf.global_("torch", "FloatStorage"), hf.value(4)))), "torch.FloatStorage is called"),
        "OrderedDict(1)": (hf.write_zip(tmp_path / "ordered1.pth", hf.whole(
            hf.call(hf.global_("collections", "OrderedDict"), hf.value(1)))), r"collections\.OrderedDict\(1,\)"),
        "_rebuild_tensor_v2()": (hf.write_zip(tmp_path / "noargs.pth", hf.whole(
            hf.call(hf.global_("torch._utils", "_rebuild_tensor_v2")))), r"_rebuild_tensor_v2\(\): .*argument"),
        "200,000-deep list": (hf.write_zip(tmp_path / "deep.pth", hf.nested_list(200_000)), "nested more than 32"),
        "legacy count 2^61": (tmp_path / "count.pth", "expected 2,305,843,009,213,693,952 values|more than the"),
        "legacy sys info int": (tmp_path / "sysinfo.pth", "unsupported legacy protocol 1001 / sys info 7"),
        "BUILD on a storage type": (hf.write_zip(tmp_path / "poison.pth", hf.state_dict(
            w=hf.global_("torch", "FloatStorage") + hf.value({"name": "IntStorage"}) + hf.BUILD)),
            "refusing to set the state of torch.FloatStorage"),
    }
    count = (2**61).to_bytes(8, "little")
    cases["legacy count 2^61"][0].write_bytes(hf.legacy_file(legacy_tensor, ["0"], count + bytes(16)))
    cases["legacy sys info int"][0].write_bytes(hf.legacy_file(hf.state_dict(), [], head=(hf.LEGACY_HEAD[0], 1001, 7)))
    return cases


def test_hostile_torch_files_exit_2_with_one_line_naming_the_file(tmp_path, capsys):
    from tools import convert_weights

    for case, (path, message) in hostile_torch_files(tmp_path).items():
        line = hf.cli_error_line(capsys, convert_weights.main, path, "--run-dir", str(tmp_path / "run"))
        assert line.startswith(f"convert_weights.py: error: PyTorch file {path}: "), case
        assert re.search(message, line), (case, line)
        assert not (tmp_path / "run").exists()


def test_build_cannot_change_what_an_allowed_name_means_for_the_next_file(tmp_path):
    """The poisoned storage type is refused, and an honest file read after it keeps its float32 values."""
    poison = hf.state_dict(w=hf.global_("torch", "FloatStorage") + hf.value({"name": "IntStorage"}) + hf.BUILD)
    for target in (("torch", "FloatStorage"), ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")):
        path = hf.write_zip(tmp_path / "poison.pth", hf.state_dict(
            w=hf.global_(*target) + hf.value(({"__defaults__": (0,)}, {"name": "IntStorage"})) + hf.BUILD))
        with pytest.raises(UnsafePickleError, match="refusing to set the state"):
            read_torch_file(path)
    with pytest.raises(UnsafePickleError):
        read_torch_file(hf.write_zip(tmp_path / "poison2.pth", poison))
    np.testing.assert_array_equal(read_state_dict(FIXTURES / "state_dict_zip.pth")["vgg.0.bias"],
                                  np.arange(4, dtype=np.float32) - 1.5)


ZIP_BOMB_BYTES = 700_000_000  # over MAX_TENSOR_BYTES


@pytest.mark.slow
def test_zip_bombs_and_stride_0_tensors_are_refused_in_bounded_memory(tmp_path):
    """Peak RSS of a fresh process reading them (was 2.4 GB for stride 0, 3.9 GB for a 1.5 GB bomb)."""
    cases = hostile_torch_files(tmp_path)
    numel = ZIP_BOMB_BYTES // 4
    paths = [hf.write_zip_bomb(tmp_path / "bomb.pth", hf.state_dict(w=hf.tensor("0", 4, (4,), (1,))), "0",
                               ZIP_BOMB_BYTES),
             hf.write_zip(tmp_path / "claim.pth", hf.state_dict(w=hf.tensor("0", numel, (numel,), (1,))), {"0": b""}),
             cases["stride 0"][0], cases["legacy count 2^61"][0], cases["200,000-deep list"][0]]
    assert all(p.stat().st_size < 1_000_000 for p in paths)
    result = hf.peak_memory_of_reading("ssd.modeling.convert.torch_pickle:read_state_dict", paths)
    bomb, claim, stride0, count, deep = result["result"]
    assert "bomb.pth" in bomb and "declares 700,000,000 bytes" in bomb and "expected 16 bytes" in bomb
    assert "claim.pth" in claim and "need 700,000,000 bytes, more than the 600,000,000" in claim
    assert "stride0.pth" in stride0 and "count.pth" in count and "deep.pth" in deep
    assert result["peak_mb"] - result["baseline_mb"] < 50, result


def test_a_storage_is_read_only_as_far_as_its_tensors_reach(tmp_path):
    """A 1000-element storage whose one tensor uses elements 2..5: values right, the rest never needed."""
    data = np.arange(1000, dtype="<f4").tobytes()
    pickled = hf.state_dict(w=hf.tensor("0", 1000, (2, 2), (2, 1), offset=2))
    state = read_state_dict(hf.write_zip(tmp_path / "part.pth", pickled, {"0": data}))
    np.testing.assert_array_equal(state["w"], [[2, 3], [4, 5]])
    legacy = hf.legacy_file(pickled, ["0"], (1000).to_bytes(8, "little") + data)
    (tmp_path / "part_legacy.pth").write_bytes(legacy)
    np.testing.assert_array_equal(read_state_dict(tmp_path / "part_legacy.pth")["w"], [[2, 3], [4, 5]])
