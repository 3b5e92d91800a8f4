"""ssd.image_io: decoding to RGB and the one resize to the network input, on hand-made images."""

import cv2
import numpy as np

from ssd.image_io import decode_rgb, read_rgb, resize_rgb


def test_resize_hand_worked_halves_keep_their_colours():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255  # right half white
    out = resize_rgb(image, 50, 40)
    assert out.shape == (50, 40, 3) and out.dtype == np.uint8
    # 200 -> 40 columns: output column c samples input x = 5c + 2 (half-pixel centres): 97 | 102.
    assert np.all(out[:, :20] == 0) and np.all(out[:, 20:] == 255)


def test_decode_and_read_give_rgb(tmp_path):
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    (tmp_path / "red.png").write_bytes(png.tobytes())
    for image in (decode_rgb(png.tobytes()), read_rgb(tmp_path / "red.png")):
        assert image.shape == (4, 6, 3)
        assert np.all(image[..., 0] == 200) and np.all(image[..., 2] == 0)


def test_undecodable_bytes_give_none():
    assert decode_rgb(b"not an image") is None
