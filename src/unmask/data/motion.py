"""Motion capture: the 15 humanoid clips that ship with pybullet, as features, windows and body parts.

Source: `pybullet_data/data/motions/humanoid3d_*.txt`, the DeepMimic clips (Peng et al. 2018,
"DeepMimic: Example-Guided Deep Reinforcement Learning of Physics-Based Character Skills",
arXiv:1804.02717): walk, run, jump, kick, punch, spin, spinkick, backflip, cartwheel, crawl, roll,
dance_a, dance_b, getup_facedown, getup_faceup. pybullet is the `motion` extra, imported only to find
its data folder. The data are tiny: 1,620 frames, about 34 seconds in all (1,010 frames at 30 fps, 670
at `RATE`); claims made on them stay modest.

Frame (44 numbers, `FRAME`): duration (1), root position (3, metres, y up), root rotation (4), chest (4),
neck (4), right hip (4), right knee (1 angle), right ankle (4), right shoulder (4), right elbow (1), left
hip (4), left knee (1), left ankle (4), left shoulder (4), left elbow (1). Quaternions are w, x, y, z
(pybullet's own reader swaps them to x, y, z, w: `humanoid_pose_interpolator.py`); joint rotations are
local to the parent link. A few clips store quaternions off the unit sphere (kick by up to 0.42), so
`load` normalises them. Durations differ per clip: 60 fps (9 clips), 30 fps (kick, punch, run, walk),
24 fps (spin), 16 fps (backflip); `load` reports each clip's frame time and `clip_features` resamples
every clip to `RATE` = 20 fps (the rate of HumanML3D, which MMM uses) by slerp.

Features (`features`, `F` = 62 per frame, float), laid out by body part so `BODY_PARTS` are contiguous:
  torso      [0:22]  root height (1), root velocity (2: metres per frame along the facing direction and
                     to its side), turn (1: change of heading since the last frame, radians), root rotation
                     without its heading (6), chest (6), neck (6)
  right_leg  [22:35] hip (6), knee angle (1), ankle (6)
  left_leg   [35:48] hip (6), knee angle (1), ankle (6)
  right_arm  [48:55] shoulder (6), elbow angle (1)
  left_arm   [55:62] shoulder (6), elbow angle (1)
The heading is the yaw of the root's facing direction (its +x) about the vertical; velocity and turn are
0 at a clip's first frame. Features are thus the same wherever the body stands and whichever way it
faces (HumanML3D's root representation, Guo et al. 2022), so the held-out end of a spin is not a heading
never seen. (Upside down, as in a backflip, the heading is ill-defined and the turn jumps; it is still
inverted exactly.) Each rotation is the 6D form of Zhou et al. 2019 ("On the Continuity of Rotation
Representations in Neural Networks", arXiv:1812.07035): the first two columns of its matrix, continuous
where quaternions flip sign. `to_frames(features, origin, heading)` inverts it (Gram-Schmidt back to a
matrix, then a quaternion with w >= 0; heading and root x, z as running sums from the first frame's),
so features -> frames -> features is exact to float error and frames -> features -> frames is exact up
to each quaternion's sign.

Skeleton (`JOINTS`, 18 points; `joint_positions`): the link offsets of `pybullet_data/humanoid/
humanoid.urdf` times 0.25, the scale at which pybullet's DeepMimic environment loads it
(`humanoid_stable_pd.py`). Wrists, the head (the neck link's sphere centre) and the toes (the front
lower edge of the foot box) are fixed points added for drawing. Bone lengths in metres: `BONE_LENGTHS`.

Split: the first 75% of each clip's frames (at `RATE`) train, the last 25% are held out (`TEST_SHARE`);
no frame is in both. Every clip is in both splits, so the test asks "continue or fill in a motion whose
beginning was seen"; the periodic clips (walk, run) repeat their gait, so their held-out frames look like
seen ones. `windows(split, length)` crops fixed-length windows inside one split of one clip; a clip
whose part is shorter than `length` gives no window (with `length` 12 about 6 clips give test windows).

Drawing (Pillow, the `motion` extra; `data/stick_figure.py`): `render_strip(positions, path, every=k)` writes a PNG
strip of side views (x right, y up), `render_gif(positions, path)` an animation
(several motions side by side).

    >>> clips = load()                                          # doctest: +SKIP
    >>> w = windows("train", 12)                                # doctest: +SKIP
    >>> w.x.shape, w.clip.shape                                 # doctest: +SKIP
    (torch.Size([M, 12, 61]), torch.Size([M]))
    >>> render_gif(joint_positions(w.x[0]), "walk.gif")          # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch

from ..errors import UnmaskError

CLIPS = ("backflip", "cartwheel", "crawl", "dance_a", "dance_b", "getup_facedown", "getup_faceup",
         "jump", "kick", "punch", "roll", "run", "spin", "spinkick", "walk")
FRAME = 44
RATE = 20
TEST_SHARE = 0.25
# Frame columns: (name, start, kind) with kind "quat" (4 numbers, w first) or "angle" (1 number).
ROTATIONS = (("root", 4, "quat"), ("chest", 8, "quat"), ("neck", 12, "quat"), ("right_hip", 16, "quat"),
             ("right_knee", 20, "angle"), ("right_ankle", 21, "quat"), ("right_shoulder", 25, "quat"),
             ("right_elbow", 29, "angle"), ("left_hip", 30, "quat"), ("left_knee", 34, "angle"),
             ("left_ankle", 35, "quat"), ("left_shoulder", 39, "quat"), ("left_elbow", 43, "angle"))
# Feature order: the rotations grouped by body part (see the module docstring).
FEATURE_ORDER = ("root", "chest", "neck", "right_hip", "right_knee", "right_ankle", "left_hip",
                 "left_knee", "left_ankle", "right_shoulder", "right_elbow", "left_shoulder", "left_elbow")
F = 62
BODY_PARTS = {"torso": tuple(range(0, 22)), "right_leg": tuple(range(22, 35)), "left_leg": tuple(range(35, 48)),
              "right_arm": tuple(range(48, 55)), "left_arm": tuple(range(55, 62))}

SCALE = 0.25
# (joint, parent, offset in the parent's frame in URDF units, rotation that moves it or None)
_SKELETON = (
    ("root", None, (0.0, 0.0, 0.0), "root"),
    ("chest", "root", (0.0, 0.944604, 0.0), "chest"),
    ("neck", "chest", (0.0, 0.895576, 0.0), "neck"),
    ("head", "neck", (0.0, 0.7, 0.0), None),
    ("right_hip", "root", (0.0, 0.0, 0.339548), "right_hip"),
    ("right_knee", "right_hip", (0.0, -1.686184, 0.0), "right_knee"),
    ("right_ankle", "right_knee", (0.0, -1.63948, 0.0), "right_ankle"),
    ("right_toe", "right_ankle", (0.534, -0.2, 0.0), None),
    ("right_shoulder", "chest", (-0.0962, 0.974, 0.73244), "right_shoulder"),
    ("right_elbow", "right_shoulder", (0.0, -1.099152, 0.0), "right_elbow"),
    ("right_wrist", "right_elbow", (0.0, -1.035788, 0.0), None),
    ("left_hip", "root", (0.0, 0.0, -0.339548), "left_hip"),
    ("left_knee", "left_hip", (0.0, -1.686184, 0.0), "left_knee"),
    ("left_ankle", "left_knee", (0.0, -1.63948, 0.0), "left_ankle"),
    ("left_toe", "left_ankle", (0.534, -0.2, 0.0), None),
    ("left_shoulder", "chest", (-0.0962, 0.974, -0.73244), "left_shoulder"),
    ("left_elbow", "left_shoulder", (0.0, -1.099152, 0.0), "left_elbow"),
    ("left_wrist", "left_elbow", (0.0, -1.035788, 0.0), None),
)
JOINTS = tuple(j for j, *_ in _SKELETON)
PARENTS = tuple(None if p is None else JOINTS.index(p) for _, p, _, _ in _SKELETON)
BONE_LENGTHS = {j: SCALE * math.dist(o, (0.0, 0.0, 0.0)) for j, p, o, _ in _SKELETON if p is not None}
# The joints each body part's features move (a hip's place is set by the root; its name says its leg).
JOINT_PARTS = {part: tuple(JOINTS.index(j) for j in names) for part, names in (
    ("torso", ("root", "chest", "neck", "head")),
    ("right_leg", ("right_hip", "right_knee", "right_ankle", "right_toe")),
    ("left_leg", ("left_hip", "left_knee", "left_ankle", "left_toe")),
    ("right_arm", ("right_shoulder", "right_elbow", "right_wrist")),
    ("left_arm", ("left_shoulder", "left_elbow", "left_wrist")))}


class Clips(NamedTuple):
    names: tuple[str, ...]
    frames: list[torch.Tensor]  # per clip Float64[T_i, 44], quaternions normalised
    frame_time: list[float]  # seconds per frame, per clip


class Windows(NamedTuple):
    x: torch.Tensor  # Float[M, length, F]
    clip: torch.Tensor  # Long[M], index into CLIPS
    start: torch.Tensor  # Long[M], first frame (at RATE) in the clip


def motions_dir() -> Path:
    try:
        import pybullet_data
    except ImportError:
        raise UnmaskError("motion data needs pybullet; install the motion extra: "
                          "pip install 'unmask[motion]'") from None
    return Path(pybullet_data.getDataPath()) / "data" / "motions"


@lru_cache(maxsize=1)
def load() -> Clips:
    """The 15 clips as read (quaternions normalised), with each clip's frame time (its modal duration)."""
    frames, times = [], []
    for name in CLIPS:
        data = json.loads((motions_dir() / f"humanoid3d_{name}.txt").read_text())
        x = torch.tensor(data["Frames"], dtype=torch.float64)
        if x.shape[1] != FRAME:
            raise UnmaskError(f"clip {name}: expected {FRAME} numbers per frame, got {x.shape[1]}")
        for _, i, kind in ROTATIONS:
            if kind == "quat":
                x[:, i:i + 4] = x[:, i:i + 4] / x[:, i:i + 4].norm(dim=1, keepdim=True)
        durations = x[:, 0][x[:, 0] > 0]
        frames.append(x)
        times.append(float(durations.mode().values))  # roll has one doubled duration: a skipped frame
    return Clips(CLIPS, frames, times)


# rotations ----------------------------------------------------------------------------------------
def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """q: [..., 4] unit quaternions w, x, y, z -> [..., 3, 3] rotation matrices."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotations -> [..., 4] quaternions w, x, y, z with w >= 0 (Shepperd's branch choice)."""
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = (m[..., i, :].unbind(-1) for i in range(3))
    # Each row is 4 q_k times the quaternion, for k = w, x, y, z; dividing by the largest never divides by ~0.
    cands = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], dim=-2)  # [..., 4, 4]
    best = cands.diagonal(dim1=-2, dim2=-1).argmax(-1)
    q = cands.gather(-2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_6d(m: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> [..., 6]: the first column, then the second."""
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def sixd_to_matrix(d: torch.Tensor) -> torch.Tensor:
    """[..., 6] -> [..., 3, 3] by Gram-Schmidt (any 6 numbers give a rotation)."""
    a = torch.nn.functional.normalize(d[..., :3], dim=-1)
    b = d[..., 3:] - (a * d[..., 3:]).sum(-1, keepdim=True) * a
    b = torch.nn.functional.normalize(b, dim=-1)
    return torch.stack([a, b, torch.cross(a, b, dim=-1)], dim=-1)


def axis_angle_z(angle: torch.Tensor) -> torch.Tensor:
    """[...] angles -> [..., 3, 3] rotations about z (the axis of the knees and elbows in the URDF)."""
    c, s, o, i = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([c, -s, o, s, c, o, o, o, i], -1).reshape(*angle.shape, 3, 3)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Shortest-arc interpolation of unit quaternions q0, q1 [..., 4] at fractions t [...]."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    t = t[..., None]
    near = theta < 1e-6  # nearly equal: sin(theta) ~ 0, linear interpolation is exact enough
    s = torch.where(near, torch.ones_like(theta), torch.sin(theta))
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / s)
    w1 = torch.where(near, t, torch.sin(t * theta) / s)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


# frames <-> features --------------------------------------------------------------------------------
def resample(frames: torch.Tensor, frame_time: float, rate: int = RATE) -> torch.Tensor:
    """[T, 44] frames at 1 / frame_time fps -> [T', 44] at `rate` fps over the same span (slerp, lerp)."""
    span = (frames.shape[0] - 1) * frame_time
    pos = torch.arange(0, math.floor(span * rate + 1e-6) + 1, dtype=frames.dtype) / rate / frame_time
    lo = pos.floor().long().clamp(max=frames.shape[0] - 1)
    hi = (lo + 1).clamp(max=frames.shape[0] - 1)
    t = pos - lo
    out = frames[lo] + (frames[hi] - frames[lo]) * t[:, None]
    out[:, 0] = 1.0 / rate
    for _, i, kind in ROTATIONS:
        if kind == "quat":
            out[:, i:i + 4] = slerp(frames[lo, i:i + 4], frames[hi, i:i + 4], t)
    return out


def heading(rot: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] root rotations -> [...] yaw: the angle about y of the facing direction (the root's +x)."""
    return torch.atan2(-rot[..., 2, 0], rot[..., 0, 0])


def yaw_matrix(yaw: torch.Tensor) -> torch.Tensor:
    """[...] angles -> [..., 3, 3] rotations about y (up)."""
    c, s, o, i = yaw.cos(), yaw.sin(), torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([c, o, s, o, i, o, -s, o, c], -1).reshape(*yaw.shape, 3, 3)


def features(frames: torch.Tensor) -> torch.Tensor:
    """[T, 44] frames -> [T, F] features (module docstring); the dtype is kept."""
    columns = {name: (i, kind) for name, i, kind in ROTATIONS}
    root = quat_to_matrix(frames[:, 4:8])
    yaw = heading(root)
    turn = torch.zeros_like(yaw)
    turn[1:] = torch.remainder(yaw[1:] - yaw[:-1] + math.pi, 2 * math.pi) - math.pi
    delta = torch.zeros_like(frames[:, [1, 3]])
    delta[1:] = frames[1:, [1, 3]] - frames[:-1, [1, 3]]
    c, s = yaw.cos(), yaw.sin()
    velocity = torch.stack([c * delta[:, 0] - s * delta[:, 1], s * delta[:, 0] + c * delta[:, 1]], 1)  # by -yaw
    parts = [frames[:, 2:3], velocity, turn[:, None], matrix_to_6d(yaw_matrix(-yaw) @ root)]
    for name in FEATURE_ORDER[1:]:
        i, kind = columns[name]
        parts.append(matrix_to_6d(quat_to_matrix(frames[:, i:i + 4])) if kind == "quat" else frames[:, i:i + 1])
    return torch.cat(parts, dim=1)


def _feature_columns() -> dict[str, slice]:
    out, at = {}, 4
    for name in FEATURE_ORDER:
        width = 6 if dict((n, k) for n, _, k in ROTATIONS)[name] == "quat" else 1
        out[name] = slice(at, at + width)
        at += width
    return out


def to_frames(x: torch.Tensor, origin: tuple[float, float] | torch.Tensor = (0.0, 0.0), heading: float = 0.0,
              rate: int = RATE) -> torch.Tensor:
    """[..., T, F] features -> [..., T, 44] frames. The first frame's root stands at `origin` (x, z) facing
    `heading`; the yaw and the root's x, z are running sums of the turns and (rotated back) velocities."""
    out = torch.zeros(*x.shape[:-1], FRAME, dtype=x.dtype)
    out[..., 0] = 1.0 / rate
    yaw = heading + x[..., 3].cumsum(-1) - x[..., :1, 3]  # a window's first turn leads into it: not part of it
    c, s = yaw.cos(), yaw.sin()
    delta = torch.stack([c * x[..., 1] + s * x[..., 2], -s * x[..., 1] + c * x[..., 2]], -1)  # by +yaw
    xz = torch.as_tensor(origin, dtype=x.dtype) + delta.cumsum(-2) - delta[..., :1, :]
    out[..., 1], out[..., 2], out[..., 3] = xz[..., 0], x[..., 0], xz[..., 1]
    slices = _feature_columns()
    for name, i, kind in ROTATIONS:
        v = x[..., slices[name]]
        if kind == "angle":
            out[..., i] = v[..., 0]
            continue
        rot = sixd_to_matrix(v)
        out[..., i:i + 4] = matrix_to_quat(yaw_matrix(yaw) @ rot if name == "root" else rot)
    return out


def joint_positions(x: torch.Tensor, origin: tuple[float, float] | torch.Tensor = (0.0, 0.0),
                    heading: float = 0.0) -> torch.Tensor:
    """[..., T, F] features -> [..., T, J, 3] joint positions in metres (forward kinematics, `JOINTS` order),
    each window's first frame's root at `origin` facing `heading`."""
    return forward_kinematics(to_frames(x, origin, heading))


def forward_kinematics(frames: torch.Tensor) -> torch.Tensor:
    """[..., T, 44] frames -> [..., T, J, 3]: each joint at its parent plus the parent's rotation times its
    offset."""
    columns = {name: (i, kind) for name, i, kind in ROTATIONS}
    rot, pos = [], []
    for (_, _, offset, moved), parent in zip(_SKELETON, PARENTS, strict=True):
        if parent is None:
            p = frames[..., 1:4]
            r = torch.eye(3, dtype=frames.dtype).expand(*frames.shape[:-1], 3, 3)
        else:
            off = SCALE * torch.tensor(offset, dtype=frames.dtype)
            p = pos[parent] + rot[parent] @ off
            r = rot[parent]
        if moved is not None:
            i, kind = columns[moved]
            local = quat_to_matrix(frames[..., i:i + 4]) if kind == "quat" else axis_angle_z(frames[..., i])
            r = r @ local
        rot.append(r)
        pos.append(p)
    return torch.stack(pos, dim=-2)


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Float[..., F] features -> those of the motion reflected left for right (z -> -z): the skeleton is
    symmetric, so the right and left limbs swap, each rotation R becomes M R M (M = diag(1, 1, -1): in 6D
    form, its columns' z negated), the sideways velocity and the turn change sign, and the knee and elbow
    angles (about z) stay. Mirroring twice is the identity."""
    out = x.clone()
    for right, left in (("right_leg", "left_leg"), ("right_arm", "left_arm")):
        out[..., list(BODY_PARTS[right])] = x[..., list(BODY_PARTS[left])]
        out[..., list(BODY_PARTS[left])] = x[..., list(BODY_PARTS[right])]
    out[..., 2:4] = -out[..., 2:4]
    kinds = dict((n, k) for n, _, k in ROTATIONS)
    for name, where in _feature_columns().items():
        if kinds[name] == "quat":
            out[..., [where.start + 2, where.start + 5]] = -out[..., [where.start + 2, where.start + 5]]
    return out


# clips at RATE, split, windows ----------------------------------------------------------------------
@lru_cache(maxsize=1)
def clip_features() -> tuple[torch.Tensor, ...]:
    """Per clip Float64[T_i, F] at `RATE` fps (shared: do not modify in place)."""
    clips = load()
    return tuple(features(resample(f, t)) for f, t in zip(clips.frames, clips.frame_time, strict=True))


def split_point(frames: int) -> int:
    """Frames [0, b) of a clip train, [b, frames) are held out."""
    return frames - max(1, round(TEST_SHARE * frames))


def windows(split: str, length: int, stride: int = 1) -> Windows:
    """Every `length`-frame crop (every `stride` frames) inside one split of one clip, as float32."""
    if split not in ("train", "test"):
        raise UnmaskError(f"split must be 'train' or 'test', got {split!r}")
    xs, clip, start = [], [], []
    for c, x in enumerate(clip_features()):
        b = split_point(x.shape[0])
        lo, hi = (0, b) if split == "train" else (b, x.shape[0])
        for s in range(lo, hi - length + 1, stride):
            xs.append(x[s:s + length])
            clip.append(c)
            start.append(s)
    if not xs:
        raise UnmaskError(f"no {split} window of {length} frames: the longest {split} part is shorter")
    return Windows(torch.stack(xs).float(), torch.tensor(clip), torch.tensor(start))


def clip_index(name: str) -> int:
    if name not in CLIPS:
        raise UnmaskError(f"unknown motion clip {name!r}; the clips are: {', '.join(CLIPS)}")
    return CLIPS.index(name)


# drawing (data/stick_figure.py) ----------------------------------------------------------------------
def render_strip(positions: torch.Tensor, path: str | Path, every: int = 4, size: int = 128) -> Path:
    """positions [T, J, 3] -> PNG strip of side views of frames 0, every, 2 every, ... (each centred on its root)."""
    from .stick_figure import strip

    return strip(positions, PARENTS, JOINTS, path, every, size)


def render_gif(positions: torch.Tensor, path: str | Path, rate: int = RATE, size: int = 160) -> Path:
    """positions [T, J, 3], or [K, T, J, 3] for K motions side by side -> an animated GIF with T frames
    at `rate` fps; each view follows its root."""
    from .stick_figure import gif

    return gif(positions, PARENTS, JOINTS, path, rate, size)
