"""nnU-Net .pkl files are read with an allow-list unpickler."""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from sam3dlib.data.readers import load_pickle


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_plain_nnunet_properties_load(tmp_path):
    props = OrderedDict(
        original_size_of_raw_data=np.array([85, 512, 512]),
        original_spacing=np.array([3.0, 0.76, 0.76]),
        itk_origin=(0.0, 1.0, 2.0),
        classes=np.array([-1.0, 0.0, 1.0], dtype=np.float32),
        crop_bbox=[[0, 85], [10, 500], [3, 499]],
        size_after_cropping=(85, 490, 496),
        use_nonzero_mask_for_norm=OrderedDict({0: False}),
        name="img0001",
        count=np.int64(3),
        ids={1, 2},
    )
    path = tmp_path / "img0001.pkl"
    path.write_bytes(pickle.dumps(props))
    loaded = load_pickle(path)
    assert loaded["name"] == "img0001" and loaded["count"] == 3
    np.testing.assert_array_equal(loaded["original_size_of_raw_data"], [85, 512, 512])


def test_code_in_a_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _Exploit()}))
    with pytest.raises(ValueError, match=r"evil\.pkl.*refusing to load posix\.system|evil\.pkl.*refusing"):
        load_pickle(path)
