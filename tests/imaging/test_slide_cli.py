"""`fusionrx slide` on the real Aperio slide: metadata, tissue fraction and tile count agree with its own PNGs."""

import json

import numpy as np
import pytest
from PIL import Image

from flows.cli import main
from tests.realdata import realdata_dir


def test_slide_command_json_and_pngs(tmp_path, capsys):
    path = realdata_dir() / "wsi" / "CMU-1-Small-Region.svs"
    assert main(["slide", str(path), "--format", "json", "--out", str(tmp_path), "--tile-size", "256",
                 "--target-mpp", "0.5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["vendor"], info["objective_power"]) == ("aperio", "aperio", 20.0)
    assert info["mpp"] == pytest.approx(0.499)
    assert info["levels"] == [{"level": 0, "width": 2220, "height": 2967, "downsample": 1.0, "mpp": 0.499}]
    thumb = np.asarray(Image.open(info["thumbnail_png"]))
    mask = np.asarray(Image.open(info["tissue_mask_png"])) > 0
    assert thumb.shape[:2] == mask.shape and max(mask.shape) == 1024
    assert info["tissue_fraction"] == pytest.approx(mask.mean())
    # tissue where the thumbnail is stained: glass is bright and grey
    rgb = thumb.astype(int)
    stained = (rgb.max(-1) - rgb.min(-1)) > 30
    assert (stained & mask).sum() / stained.sum() > 0.9
    # tile count by hand from the mask PNG: 256 px cells (0.499 is read as 0.5), >= 50% tissue by pixel centres
    down = 2967 / 1024
    ys, xs = (np.arange(n) for n in mask.shape)
    n = 0
    for y0 in range(0, 2967 - 255, 256):
        for x0 in range(0, 2220 - 255, 256):
            rows = ys[((ys + 0.5) * down >= y0) & ((ys + 0.5) * down < y0 + 256)]
            cols = xs[((xs + 0.5) * down >= x0) & ((xs + 0.5) * down < x0 + 256)]
            n += mask[np.ix_(rows, cols)].mean() >= 0.5
    assert abs(info["n_tiles"] - n) <= 2 and n > 10


def test_slide_command_names_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "scan.ndpi"
    bad.write_bytes(b"\x00" * 1000)
    assert main(["slide", str(bad)]) == 2
    assert "scan.ndpi" in capsys.readouterr().err
