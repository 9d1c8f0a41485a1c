"""Point-cloud scenes (data_pipelines/scenes.py): .npy / .ply readers, degenerate clouds, rendering."""
import numpy as np
import pytest

from data_pipelines import errors, scenes

XYZ = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.5], [1, 1, 1]], np.float32)
RGB = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)


def _ply(path, binary):
  header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment scannet export",
            f"element vertex {len(XYZ)}", "property float x", "property float y", "property float z",
            "property uchar red", "property uchar green", "property uchar blue", "property uchar alpha",
            "element face 0", "property list uchar int vertex_indices", "end_header"]
  with open(path, "wb") as f:
    f.write(("\n".join(header) + "\n").encode())
    if binary:
      table = np.zeros(len(XYZ), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1"),
                                  ("a", "u1")])
      for i, k in enumerate("xyz"):
        table[k] = XYZ[:, i]
      for i, k in enumerate("rgb"):
        table[k] = RGB[:, i]
      f.write(table.tobytes())
    else:
      for p, c in zip(XYZ, RGB):
        f.write((" ".join(f"{v:g}" for v in p) + " " + " ".join(str(v) for v in c) + " 255\n").encode())
  return str(path)


@pytest.mark.parametrize("binary", [False, True])
def test_ply_vertices_are_read(tmp_path, binary):
  cloud = scenes.load_point_cloud(_ply(tmp_path / "scene0000_00_vh_clean_2.ply", binary))
  np.testing.assert_allclose(cloud.xyz, XYZ)
  np.testing.assert_array_equal(cloud.rgb, RGB)


def test_npy_with_colours_in_0_255_or_0_1(tmp_path):
  for scale in (1.0, 1 / 255):
    table = np.concatenate([XYZ, RGB * scale, np.ones((4, 3))], 1)  # ScanQA's *_vert.npy keeps extra columns
    np.save(tmp_path / "scene.npy", table)
    cloud = scenes.load_point_cloud(str(tmp_path / "scene.npy"))
    np.testing.assert_array_equal(cloud.rgb, RGB)
    np.testing.assert_allclose(cloud.center, [0.5, 0.5, 0.5])


@pytest.mark.parametrize("xyz, message", [
    (np.zeros((0, 3)), "no points"),
    (np.array([[0, 0, np.nan], [1, 1, 1], [0, 1, 0]]), "non-finite"),
    (np.array([[1, 1, 1]] * 5), "a point or a line"),
    (np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]]), "a point or a line"),
])
def test_degenerate_clouds_are_bad_examples_naming_the_file(tmp_path, xyz, message):
  path = str(tmp_path / "bad.npy")
  np.save(path, np.concatenate([xyz, np.zeros((len(xyz), 3))], 1))
  with pytest.raises(errors.BadExampleError, match=message) as info:
    scenes.load_point_cloud(path)
  assert info.value.reason == errors.BAD_MEDIA and path in str(info.value)
  assert "degenerate point cloud" in str(info.value)


def test_unreadable_files_are_named(tmp_path):
  with pytest.raises(errors.BadExampleError, match="does not exist"):
    scenes.load_point_cloud(str(tmp_path / "none.ply"))
  np.save(tmp_path / "xyz_only.npy", XYZ)
  with pytest.raises(errors.BadExampleError, match=r"\[N, 6\+\]"):
    scenes.load_point_cloud(str(tmp_path / "xyz_only.npy"))
  (tmp_path / "no_colour.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
                                          "property float y\nproperty float z\nend_header\n0 0 0\n")
  with pytest.raises(errors.BadExampleError, match=r"lacks properties \['red', 'green', 'blue'\]"):
    scenes.load_point_cloud(str(tmp_path / "no_colour.ply"))


def test_render_z_buffer_keeps_the_nearest_point():
  cloud = scenes.PointCloud(np.array([[0, 0, 0], [0, 0, 1], [2, 2, 0], [-2, -2, 0]], np.float32),
                            np.array([[255, 0, 0], [0, 255, 0], [9, 9, 9], [9, 9, 9]], np.uint8))
  top = scenes.Camera("top", (0.0, 0.0, 10.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0))
  image, coverage = scenes.render_view(cloud, top, image_size=32)
  assert (image == [0, 255, 0]).all(-1).sum() == 1 and not (image == [255, 0, 0]).all(-1).any()
  assert coverage == pytest.approx(3 / 4)  # the red point is hidden under the green one
