"""The INT8 column's pieces: a static INT8 graph reused only while current, and a run folder's note
read back only for the model it was measured on."""

from __future__ import annotations

from pathlib import Path

import torch
from export_helpers import vit_bnneck

from reidprune.export import export_onnx
from reidprune.export.accuracy import data_config
from reidprune.export.int8_summary import read_int8_note, static_int8_graph, write_int8_note
from reidprune.models import create, save


def test_static_int8_graph_is_made_once_and_redone_when_the_fp32_graph_changes(tmp_path, synth_root) -> None:
    model = vit_bnneck()
    graph = export_onnx(model, tmp_path / "model.onnx").path
    cfg = data_config(synth_root, model.arch.img_size)
    cfg.data.num_workers = 0
    path, info = static_int8_graph(graph, cfg, images=8)
    assert path == tmp_path / "model.int8-static.onnx" and path.is_file()
    assert not info["reused"] and info["calibration_images"] == 8
    again, info = static_int8_graph(graph, cfg, images=8)
    assert again == path and info["reused"]
    assert not static_int8_graph(graph, cfg, images=4)[1]["reused"]  # other calibration settings

    other = vit_bnneck()
    with torch.no_grad():
        next(other.parameters()).mul_(2.0)
    export_onnx(other, graph)  # another model under the same name
    assert not static_int8_graph(graph, cfg, images=4)[1]["reused"]


def test_an_int8_note_is_read_back_only_for_the_model_it_was_measured_on(tmp_path: Path) -> None:
    def tiny(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return create("vit_tiny_reid", depth=1, img_size=[32, 16], embed_dim=32, head_dim=16, num_classes=3)

    run, model_dir = tmp_path / "run", tmp_path / "run" / "model"
    save(tiny(0), model_dir)
    assert read_int8_note(run, model_dir) is None  # nothing measured yet
    write_int8_note(run, model_dir, {"mAP": 61.5, "rank1": 80.0, "latency_ms": 0.4})
    note = read_int8_note(run, model_dir)
    assert note is not None and (note["mAP"], note["rank1"], note["latency_ms"]) == (61.5, 80.0, 0.4)
    assert read_int8_note(run, None) is None  # no saved model to match
    save(tiny(1), model_dir)  # the run was redone: the note describes another model
    assert read_int8_note(run, model_dir) is None
