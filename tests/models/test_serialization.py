"""Own format round trips (model.json + weights.safetensors) and unreadable checkpoints."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from reidprune.models import arch_config, build, create, list_models, load, load_checkpoint, save
from reidprune.models.checkpoint_io import CheckpointError
from reidprune.models.plan import CompressionPlan

# ViT entries are built with 2 layers, a narrow width and a small input: the round trip exercises each
# entry's structure (head type, JPM, bias, scale), which does not depend on size. Other families are
# covered here by their smallest entry (their own tests cover the rest).
VIT_SMALL = {"depth": 2, "img_size": [64, 32], "num_classes": 7, "embed_dim": 64, "head_dim": 16}


def _round_trip_entries() -> list[str]:
    smallest: dict[str, tuple[int, str]] = {}
    for name in list_models():
        arch = arch_config(name)
        if arch.family != "vit":
            size = sum(p.numel() for p in _meta(arch).parameters())
            smallest[arch.family] = min(smallest.get(arch.family, (size, name)), (size, name))
    return [n for n in list_models() if arch_config(n).family == "vit"] + [n for _, n in smallest.values()]


def _meta(arch):
    with torch.device("meta"):
        return build(arch)


class NotWeights:
    """A custom class: a pickle holding it is not a weights-only checkpoint."""

    def __init__(self) -> None:
        self.lr = 0.1


def _small_kwargs(name: str) -> dict:
    if arch_config(name).family != "vit":
        return {"img_size": [64, 32], "num_classes": 7}
    return VIT_SMALL


def _outputs(model, images, camids):
    model.eval()
    with torch.no_grad():
        out = model(images, camids)
    return [out.embedding, *out.logits]


def _assert_round_trip(model, tmp_path, batch=2):
    size = model.arch.img_size
    images = torch.randn(batch, 3, size[0], size[1])
    camids = torch.zeros(batch, dtype=torch.long)
    before = _outputs(model, images, camids)
    loaded = load(save(model, tmp_path / "model"))
    assert loaded.arch == model.arch
    after = _outputs(loaded, images, camids)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)
    return loaded


@pytest.mark.parametrize("name", _round_trip_entries())
def test_every_registry_entry_round_trips_exactly(name, tmp_path):
    model = create(name, **_small_kwargs(name))
    if model.arch.family == "vit" and model.arch.head == "la":
        model.train()
        model(torch.randn(4, 3, *model.arch.img_size))  # non-trivial BN statistics in the part classifiers
    _assert_round_trip(model, tmp_path)


def test_uneven_heads_round_trip(tmp_path):
    model = create("vit_tiny_reid", num_heads=[3, 1, 2, 3, 1, 1], num_classes=11)
    loaded = _assert_round_trip(model, tmp_path)
    assert [b.attn.num_heads for b in loaded.backbone.blocks] == [3, 1, 2, 3, 1, 1]


def test_transreid_with_uneven_jpm_heads_and_cameras_round_trips(tmp_path):
    model = create(
        "transreid_base",
        num_heads=[3, 1],
        jpm_num_heads=[2, 1],
        num_cameras=3,
        embed_dim=64,
        head_dim=32,
        depth=3,
        mlp_hidden=[96, 96],
        img_size=[64, 32],
        num_classes=5,
    )
    loaded = _assert_round_trip(model, tmp_path)
    assert loaded.head.b2.block.attn.num_heads == 1 and loaded.arch.num_cameras == 3


def test_compression_plan_and_metadata_are_saved(tmp_path):
    model = create("vit_tiny_reid", depth=2)
    model.compression_plan = CompressionPlan("head-entropy", 0.25, {"heads": [3, 2]})
    directory = save(model, tmp_path / "pruned", metadata={"mAP": 12.5})
    description = json.loads((directory / "model.json").read_text())
    assert description["arch"]["num_heads"] == [3, 3] and description["metadata"] == {"mAP": 12.5}
    assert load(directory).compression_plan == model.compression_plan


def test_load_checkpoint_from_a_model_directory(tmp_path):
    model = create("vit_tiny_reid", depth=2)
    directory = save(model, tmp_path / "m")
    fresh = create("vit_tiny_reid", depth=2)
    assert load_checkpoint(fresh, directory).format == "reidprune"
    assert torch.equal(fresh.backbone.pos_embed, model.backbone.pos_embed)
    other = create("vit_tiny_reid", depth=2, num_heads=[3, 1])
    with pytest.raises(
        CheckpointError, match=r"different architecture \(num_heads: saved \[3, 3\] vs model \[3, 1\]\)"
    ):
        load_checkpoint(other, directory)


def test_a_model_directory_written_before_global_pooling_existed_still_loads(tmp_path):
    model = create("vit_tiny_reid", depth=2)
    directory = save(model, tmp_path / "m")
    description = json.loads((directory / "model.json").read_text())
    for key in ("global_pool", "fc_norm"):
        del description["arch"][key]
    (directory / "model.json").write_text(json.dumps(description))
    assert load(directory).arch == model.arch
    assert load_checkpoint(create("vit_tiny_reid", depth=2), directory).format == "reidprune"


def test_own_state_dict_saved_with_torch_save_loads(tmp_path):
    model = create("la_tiny_reid", depth=2)
    torch.save({"state_dict": model.state_dict(), "epoch": 4}, tmp_path / "last.pth")
    fresh = create("la_tiny_reid", depth=2)
    assert load_checkpoint(fresh, tmp_path / "last.pth").format == "reidprune"
    assert torch.equal(fresh.head.classifiers[3].fc.weight, model.head.classifiers[3].fc.weight)


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointError, match=r"weights\.pth: not a PyTorch checkpoint"):
        load_checkpoint(create("vit_tiny_reid", depth=1), path)


def test_a_pickle_with_custom_objects_is_refused_not_executed(tmp_path):
    model = create("vit_tiny_reid", depth=1)
    path = tmp_path / "finetuned.pth"
    torch.save({"model": model.state_dict(), "args": NotWeights()}, path)
    with pytest.raises(
        CheckpointError, match=r"not loaded: the file holds code or objects other than weights"
    ):
        load_checkpoint(model, path)


def _as_numpy1_pickle(path):
    """Rewrite a torch.save file as numpy 1.x writes it: numpy 2 pickles name `numpy._core.multiarray`,
    numpy 1.x (the seeds' environment) `numpy.core.multiarray`."""
    source = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info, data)
    path.write_bytes(out.getvalue())
    return path


@pytest.mark.parametrize("numpy1", [False, True])
def test_numpy_integers_of_the_amg_seeds_are_read(tmp_path, numpy1):
    # AMG's finetune.py: heads / dims as numpy int64 scalars, channels as 0-d tensors (TR) or, after a
    # token -> head cascade, an int64 array (LA's load_check applies np.asarray)
    model = create("vit_tiny_reid", depth=2)
    path = tmp_path / "net_last.pth"
    payload = {
        "state_dict": model.state_dict(),
        "heads": [np.int64(3), np.int64(2)],
        "dims": [np.int64(192), np.int64(128)],
        "channels": np.asarray([torch.tensor(97), torch.tensor(129)]),
        "flags": np.bool_(True),
    }
    torch.save(payload, path)
    if numpy1:
        _as_numpy1_pickle(path)
    fresh = create("vit_tiny_reid", depth=2)
    assert load_checkpoint(fresh, path).format == "reidprune"
    assert torch.equal(fresh.backbone.blocks[1].attn.qkv.weight, model.backbone.blocks[1].attn.qkv.weight)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (np.float32(0.5), "Float32DType"),
        (np.array(["a", None], dtype=object), "ObjectDType"),
        (np.random.default_rng(0), "numpy.random._pickle.__generator_ctor"),
        (NotWeights(), "NotWeights"),
    ],
)
def test_other_numpy_objects_and_classes_are_refused_by_name(tmp_path, extra, named):
    model = create("vit_tiny_reid", depth=1)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict(), "heads": [np.int64(3)], "extra": extra}, path)
    with pytest.raises(
        CheckpointError, match=r"not loaded: the file holds code or objects other than weights"
    ) as err:
        load_checkpoint(model, path)
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_a_directory_without_model_json(tmp_path):
    with pytest.raises(CheckpointError, match="not a reidprune model directory"):
        load(tmp_path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(create("vit_tiny_reid", depth=1), tmp_path / "nope.pth")
