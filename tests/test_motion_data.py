"""pybullet's humanoid clips: parsing, frame rates, rotations, features round trip, FK, split, drawing."""

import math

import pytest
import torch

pytest.importorskip("pybullet_data")

from unmask.data import motion  # noqa: E402
from unmask.errors import UnmaskError  # noqa: E402

# Frames per clip and frames per second, read off the files by hand (the modal duration).
EXPECTED = {"backflip": (29, 16), "cartwheel": (164, 60), "crawl": (177, 60), "dance_a": (98, 60),
            "dance_b": (153, 60), "getup_facedown": (183, 60), "getup_faceup": (227, 60), "jump": (107, 60),
            "kick": (47, 30), "punch": (65, 30), "roll": (121, 60), "run": (25, 30), "spin": (107, 24),
            "spinkick": (78, 60), "walk": (39, 30)}


def rest_frame() -> torch.Tensor:
    frame = torch.zeros(1, motion.FRAME, dtype=torch.float64)
    for _, i, kind in motion.ROTATIONS:
        if kind == "quat":
            frame[0, i] = 1.0
    return frame


def test_every_clip_parses_with_44_numbers_and_its_frame_rate():
    clips = motion.load()
    assert clips.names == motion.CLIPS and len(clips.names) == 15
    assert sum(f.shape[0] for f in clips.frames) == 1620
    for name, frames, dt in zip(clips.names, clips.frames, clips.frame_time, strict=True):
        count, fps = EXPECTED[name]
        assert frames.shape == (count, 44)
        assert 1 / dt == pytest.approx(fps, rel=1e-3)


def test_quaternions_are_unit_and_w_first():
    clips = motion.load()
    for frames in clips.frames:
        for _, i, kind in motion.ROTATIONS:
            if kind == "quat":
                assert torch.allclose(frames[:, i:i + 4].norm(dim=1), torch.ones(len(frames), dtype=torch.float64))
    # walk starts upright facing +x: its root rotation is near identity only if w comes first
    walk = clips.frames[motion.CLIPS.index("walk")]
    assert walk[0, 4].abs() > 0.99


def test_rotation_conversions_invert():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(500, 4, generator=g, dtype=torch.float64), dim=1)
    q = torch.where(q[:, :1] < 0, -q, q)
    m = motion.quat_to_matrix(q)
    assert torch.allclose(m @ m.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-12)
    assert torch.allclose(motion.matrix_to_quat(m), q, atol=1e-12)
    assert torch.allclose(motion.sixd_to_matrix(motion.matrix_to_6d(m)), m, atol=1e-12)


def test_features_round_trip_exact():
    for frames in motion.load().frames:
        x = motion.features(frames)
        assert x.shape == (frames.shape[0], motion.F)
        yaw = float(motion.heading(motion.quat_to_matrix(frames[0, 4:8])))
        back = motion.to_frames(x, origin=frames[0, [1, 3]], heading=yaw)
        assert torch.allclose(motion.features(back), x, atol=1e-12)
        assert torch.allclose(back[:, 1:4], frames[:, 1:4], atol=1e-12)
        for _, i, kind in motion.ROTATIONS:
            a, b = back[:, i:i + 4 if kind == "quat" else i + 1], frames[:, i:i + 4 if kind == "quat" else i + 1]
            if kind == "quat":  # q and -q are the same rotation
                a, b = a * a[:, :1].sign(), b * torch.where(b[:, :1] < 0, -1.0, 1.0).to(b)
            assert torch.allclose(a, b, atol=1e-9)


def test_features_do_not_depend_on_where_the_body_stands_or_faces():
    frames = motion.load().frames[motion.CLIPS.index("spin")].clone()
    turned = frames.clone()
    yaw = torch.tensor(0.7, dtype=torch.float64)
    r = motion.yaw_matrix(yaw)
    turned[:, [1, 2, 3]] = (frames[:, 1:4] @ r.T) + torch.tensor([3.0, 0.0, -2.0], dtype=torch.float64)
    turned[:, 4:8] = motion.matrix_to_quat(r @ motion.quat_to_matrix(frames[:, 4:8]))
    assert torch.allclose(motion.features(turned), motion.features(frames), atol=1e-9)
    # and a window's joints start at the origin whatever came before it
    x = motion.features(turned)[10:20]
    pos = motion.joint_positions(x)
    assert pos[0, 0, [0, 2]].abs().max() < 1e-12


def test_mirror_reflects_the_joints():
    x = motion.clip_features()[motion.CLIPS.index("kick")]
    assert torch.equal(motion.mirror(motion.mirror(x)), x)
    pos, mirrored = motion.joint_positions(x), motion.joint_positions(motion.mirror(x))
    swap = [motion.JOINTS.index(j.replace("right", "@").replace("left", "right").replace("@", "left"))
            for j in motion.JOINTS]
    reflected = pos[:, swap] * torch.tensor([1.0, 1.0, -1.0], dtype=pos.dtype)
    assert torch.allclose(mirrored, reflected, atol=1e-9)
    assert not torch.allclose(mirrored, pos, atol=1e-2)  # a kick is not symmetric


def test_batched_windows_match_one_window_at_a_time():
    """to_frames, forward kinematics and joint positions over [..., T, F] equal the per-window results,
    so a batch call cannot mix windows (a cumsum over the wrong axis, a first frame taken across windows)."""
    walk = motion.clip_features()[motion.CLIPS.index("walk")].double()
    g = torch.Generator().manual_seed(0)
    x = torch.stack([walk[i:i + 12] for i in (0, 2, 5, 8, 11, 14)])
    x = x + 0.2 * torch.randn(x.shape, generator=g, dtype=x.dtype)  # windows that differ everywhere
    one = torch.stack([motion.joint_positions(w, origin=(0.4, -1.5), heading=0.7) for w in x])
    assert torch.equal(motion.joint_positions(x, origin=(0.4, -1.5), heading=0.7), one)
    assert torch.equal(motion.joint_positions(x.reshape(2, 3, 12, -1)), torch.stack(
        [motion.joint_positions(w) for w in x]).reshape(2, 3, 12, len(motion.JOINTS), 3))
    assert one.shape == (6, 12, len(motion.JOINTS), 3) and (one[1:] - one[:1]).abs().amax() > 0.1


def test_body_parts_cover_the_features_once():
    covered = sorted(i for part in motion.BODY_PARTS.values() for i in part)
    assert covered == list(range(motion.F))
    assert [len(p) for p in motion.BODY_PARTS.values()] == [22, 13, 13, 7, 7]


def test_rest_pose_bone_lengths():
    pos = motion.forward_kinematics(rest_frame())[0]
    assert pos.shape == (len(motion.JOINTS), 3)
    joints = enumerate(zip(motion.JOINTS, motion.PARENTS, strict=True))
    lengths = {j: (pos[k] - pos[p]).norm().item() for k, (j, p) in joints if p is not None}
    assert lengths == pytest.approx(motion.BONE_LENGTHS, abs=1e-12)
    # the documented lengths, by hand from the URDF offsets times 0.25
    assert lengths["right_knee"] == pytest.approx(0.25 * 1.686184)  # thigh
    assert lengths["left_ankle"] == pytest.approx(0.25 * 1.63948)  # shin
    assert lengths["right_shoulder"] == pytest.approx(0.25 * math.sqrt(0.0962**2 + 0.974**2 + 0.73244**2))
    # standing straight: the toes are 0.25 * (1.686184 + 1.63948 + 0.2) below the root
    root, toe = pos[motion.JOINTS.index("root")], pos[motion.JOINTS.index("left_toe")]
    assert (root[1] - toe[1]).item() == pytest.approx(0.25 * (1.686184 + 1.63948 + 0.2))


def test_knee_bends_the_shin_backwards():
    frame = rest_frame()
    frame[0, 20] = -math.pi / 2  # right knee, negative in the URDF's limits
    pos = motion.forward_kinematics(frame)[0]
    knee, ankle = pos[motion.JOINTS.index("right_knee")], pos[motion.JOINTS.index("right_ankle")]
    assert (ankle - knee).tolist() == pytest.approx([-0.25 * 1.63948, 0.0, 0.0], abs=1e-12)


def test_standing_feet_stay_near_the_ground():
    walk = motion.clip_features()[motion.CLIPS.index("walk")]
    pos = motion.joint_positions(walk)
    feet = pos[:, [motion.JOINTS.index(j) for j in ("left_toe", "right_toe")], 1]
    assert feet.min().abs() < 0.05 and feet.min(dim=1).values.max() < 0.12


def test_split_is_disjoint_and_complete():
    clips = motion.clip_features()
    for length in (4, 8, 12):
        train, test = motion.windows("train", length), motion.windows("test", length)
        for c, x in enumerate(clips):
            b = motion.split_point(x.shape[0])
            assert b == x.shape[0] - round(0.25 * x.shape[0])
            tr = {s + k for s in train.start[train.clip == c].tolist() for k in range(length)}
            te = {s + k for s in test.start[test.clip == c].tolist() for k in range(length)}
            assert not tr & te
            assert all(f < b for f in tr) and all(f >= b for f in te)
    w = motion.windows("train", 12)
    k = 7
    assert torch.equal(w.x[k], clips[int(w.clip[k])][int(w.start[k]):int(w.start[k]) + 12].float())
    with pytest.raises(UnmaskError, match="test window"):
        motion.windows("test", 200)


def test_resample_keeps_the_ends_and_the_rate():
    clips = motion.load()
    for frames, dt in zip(clips.frames, clips.frame_time, strict=True):
        out = motion.resample(frames, dt, rate=20)
        assert out.shape[0] == math.floor((frames.shape[0] - 1) * dt * 20 + 1e-6) + 1
        assert torch.allclose(out[0, 1:], frames[0, 1:], atol=1e-12)


def test_unknown_clip_names_the_clips():
    with pytest.raises(UnmaskError, match="walk"):
        motion.clip_index("moonwalk")


def test_render_strip_and_gif(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    pos = motion.joint_positions(motion.clip_features()[motion.CLIPS.index("walk")][:10])
    strip = motion.render_strip(pos, tmp_path / "s.png", every=3, size=64)
    assert Image.open(strip).size == (64 * 4, 64)
    gif = Image.open(motion.render_gif(pos, tmp_path / "a.gif", size=64))
    assert gif.n_frames == 10


def test_basic_motions_imu_second_set():
    pytest.importorskip("aeon")
    from unmask.data.timeseries import load_ts

    for split in ("train", "test"):
        series = load_ts("BasicMotions", split)
        assert series.x.shape == (40, 6, 100)  # 3-axis accelerometer + gyroscope, 10 s at 10 Hz
        assert series.classes == ("Standing", "Running", "Walking", "Badminton")
        assert series.labels.bincount().tolist() == [10, 10, 10, 10]
