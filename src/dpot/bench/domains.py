"""Declarative domain specs: what makes the *target* ("real") domain differ from the *source* (simulation).

A spec is a flat JSON object; every key is optional and a missing key means "stock MetaWorld". Keys:

    table_rgba, floor_rgba, wall_rgba   [r, g, b, a] in [0, 1]: material colour (multiplies its texture)
    table_texture                       "stock" | "checker": procedural checkerboard on the table
    arm_rgba, object_rgba               [r, g, b, a]: flat colour of the robot arm / the task's objects
    light_diffuse_scale                 float: multiplies every light's diffuse colour
    light_tint                          [r, g, b]: multiplies every light's diffuse colour per channel
    light_pos_offset                    [dx, dy, dz] metres added to every light's position
    headlight_ambient                   [r, g, b]: the headlight's ambient colour
    camera_pos_offset                   {camera: [dx, dy, dz]} metres added to a camera's position
    camera_fovy_scale                   {camera: float} multiplies a camera's vertical field of view
    object_mass_scale                   float: mass (and inertia) of the task's objects
    object_friction_scale               float: friction of the task's objects' geoms
    action_gain                         float: multiplies the commanded xyz motion (MetaWorld's action_scale)
    action_latency                      int >= 0: actions take effect this many steps late

``SOURCE`` is the empty spec. Two built-in shifted (target) domains:

* ``target`` (:data:`TARGET`): a combined visual + dynamics shift (colours, table texture, lights, camera pose,
  object mass/friction, action gain and latency);
* ``target-visual`` (:data:`TARGET_VISUAL`): a purely visual shift as in the paper's sim-to-sim protocol
  (``cam_pose`` + ``table-wood``): the corner4 camera moved and zoomed, and a checker texture with a brown tint
  on the table; the physics and every other colour are stock (so the scripted experts behave exactly as in the
  source domain). ``resolve_spec`` turns a name
("source", "target") or a JSON file path into a validated ``DomainSpec``; an unknown key is a ``UserError``.
Visual keys are applied to the ``MjModel`` by ``apply_model_spec``; the texture needs a render context
(``apply_texture``); the action keys are applied by the environment (``dpot.bench.env``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from dpot.errors import UserError, did_you_mean

CAMERAS = ("corner4", "gripperPOV", "topview", "corner", "corner2", "corner3", "behindGripper")


@dataclass(frozen=True)
class DomainSpec:
    """One domain's visual and dynamics settings (see the module docstring for each key)."""

    name: str = "custom"
    table_rgba: tuple[float, ...] | None = None
    floor_rgba: tuple[float, ...] | None = None
    wall_rgba: tuple[float, ...] | None = None
    table_texture: str = "stock"
    arm_rgba: tuple[float, ...] | None = None
    object_rgba: tuple[float, ...] | None = None
    light_diffuse_scale: float = 1.0
    light_tint: tuple[float, ...] | None = None
    light_pos_offset: tuple[float, ...] | None = None
    headlight_ambient: tuple[float, ...] | None = None
    camera_pos_offset: dict[str, tuple[float, ...]] = field(default_factory=dict)
    camera_fovy_scale: dict[str, float] = field(default_factory=dict)
    object_mass_scale: float = 1.0
    object_friction_scale: float = 1.0
    action_gain: float = 1.0
    action_latency: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (the format ``spec_from_dict`` reads)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


KEYS = tuple(f.name for f in dataclasses.fields(DomainSpec))
_VEC = {"table_rgba": 4, "floor_rgba": 4, "wall_rgba": 4, "arm_rgba": 4, "object_rgba": 4,
        "light_tint": 3, "light_pos_offset": 3, "headlight_ambient": 3}
_POSITIVE = ("light_diffuse_scale", "object_mass_scale", "object_friction_scale", "action_gain")

SOURCE = DomainSpec(name="source")
TARGET = DomainSpec(
    name="target",
    table_rgba=(0.75, 0.95, 0.55, 1.0), table_texture="checker",
    floor_rgba=(0.55, 0.35, 0.6, 1.0), wall_rgba=(0.95, 0.85, 0.3, 1.0),
    arm_rgba=(0.92, 0.92, 0.9, 1.0), object_rgba=(0.15, 0.25, 0.8, 1.0),
    light_diffuse_scale=0.85, light_tint=(1.0, 0.9, 0.75), light_pos_offset=(0.3, -0.2, 0.0),
    headlight_ambient=(0.25, 0.25, 0.3),
    camera_pos_offset={"corner4": (0.05, -0.06, 0.04)}, camera_fovy_scale={"corner4": 0.92},
    object_mass_scale=2.0, object_friction_scale=0.7, action_gain=0.8, action_latency=1,
)
TARGET_VISUAL = DomainSpec(
    name="target-visual",
    table_rgba=(0.62, 0.42, 0.25, 1.0), table_texture="checker",
    camera_pos_offset={"corner4": (0.05, -0.06, 0.04)}, camera_fovy_scale={"corner4": 0.92},
)
PRESETS = {"source": SOURCE, "target": TARGET, "target-visual": TARGET_VISUAL}


def _vec(key: str, value: Any, n: int) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n:
        raise UserError(f"domain spec '{key}': expected a list of {n} numbers, got {value!r}")
    return out


def spec_from_dict(data: dict[str, Any], name: str = "custom") -> DomainSpec:
    """Validate a spec dict (unknown keys, wrong shapes, unknown cameras raise ``UserError``)."""
    if not isinstance(data, dict):
        raise UserError(f"domain spec: expected a JSON object, got {type(data).__name__}")
    kwargs: dict[str, Any] = {"name": str(data.get("name", name))}
    for key, value in data.items():
        if key == "name":
            continue
        if key not in KEYS:
            raise UserError(f"domain spec: unknown key '{key}'{did_you_mean(key, KEYS)}; "
                            f"valid keys: {', '.join(k for k in KEYS if k != 'name')}")
        if value is None:
            continue
        if key in _VEC:
            kwargs[key] = _vec(key, value, _VEC[key])
        elif key == "table_texture":
            if value not in ("stock", "checker"):
                raise UserError(f"domain spec 'table_texture': must be 'stock' or 'checker', got {value!r}")
            kwargs[key] = value
        elif key in ("camera_pos_offset", "camera_fovy_scale"):
            if not isinstance(value, dict):
                raise UserError(f"domain spec '{key}': expected {{camera: value}}, got {value!r}")
            for cam in value:
                check_camera(cam, where=f"domain spec '{key}'")
            kwargs[key] = ({c: _vec(f"{key}.{c}", v, 3) for c, v in value.items()} if key == "camera_pos_offset"
                           else {c: float(v) for c, v in value.items()})
        elif key == "action_latency":
            if int(value) != value or value < 0:
                raise UserError(f"domain spec 'action_latency': must be an integer >= 0, got {value!r}")
            kwargs[key] = int(value)
        else:
            try:
                kwargs[key] = float(value)
            except (TypeError, ValueError):
                raise UserError(f"domain spec '{key}': expected a number, got {value!r}") from None
            if key in _POSITIVE and kwargs[key] <= 0:
                raise UserError(f"domain spec '{key}': must be > 0, got {value!r}")
    return DomainSpec(**kwargs)


def check_camera(camera: str, where: str = "camera") -> str:
    """Return ``camera`` if MetaWorld has it, else raise ``UserError`` naming it."""
    if camera not in CAMERAS:
        raise UserError(f"{where}: unknown camera '{camera}'{did_you_mean(camera, CAMERAS)}; "
                        f"choose from {', '.join(CAMERAS)}")
    return camera


def resolve_spec(domain: str | DomainSpec | dict) -> DomainSpec:
    """A preset name (``source``, ``target``, ``target-visual``), a JSON file path, a dict or a ``DomainSpec``
    -> ``DomainSpec``."""
    if isinstance(domain, DomainSpec):
        return domain
    if isinstance(domain, dict):
        return spec_from_dict(domain)
    if domain in PRESETS:
        return PRESETS[domain]
    path = Path(domain)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise UserError(f"domain spec {path}: file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"domain spec {path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        return spec_from_dict(data, name=path.stem)
    raise UserError(f"domain: unknown domain '{domain}'{did_you_mean(domain, PRESETS)}; "
                    f"use {', '.join(repr(k) for k in PRESETS)} or a JSON spec file")


# ---------------------------------------------------------------- applying a spec to a model

def _id(model, kind, name: str) -> int:
    return mujoco.mj_name2id(model, kind, name)


def task_object_bodies(model) -> list[int]:
    """Body ids of the task's objects: MetaWorld defines them after the ``mocap`` body."""
    mocap = _id(model, mujoco.mjtObj.mjOBJ_BODY, "mocap")
    return list(range(mocap + 1, model.nbody))


def arm_bodies(model) -> list[int]:
    """Body ids of the Sawyer arm and gripper (everything from ``right_arm_base_link`` to ``mocap``)."""
    start = _id(model, mujoco.mjtObj.mjOBJ_BODY, "right_arm_base_link")
    mocap = _id(model, mujoco.mjtObj.mjOBJ_BODY, "mocap")
    return list(range(start, mocap))


def _visible_geoms(model, bodies: list[int]) -> np.ndarray:
    body_set = np.isin(model.geom_bodyid, bodies)
    return np.flatnonzero(body_set & (model.geom_group < 3) & (model.geom_rgba[:, 3] > 0))


def _paint(model, bodies: list[int], rgba: tuple[float, ...]) -> None:
    geoms = _visible_geoms(model, bodies)
    model.geom_matid[geoms] = -1
    model.geom_rgba[geoms] = rgba


def apply_model_spec(model, spec: DomainSpec) -> None:
    """Apply the visual and physical keys of ``spec`` to ``model`` in place (not the texture or actions)."""
    for key, material in (("table_rgba", "table_wood"), ("floor_rgba", "basic_floor"), ("wall_rgba", "wall_metal")):
        rgba = getattr(spec, key)
        if rgba is not None:
            mid = _id(model, mujoco.mjtObj.mjOBJ_MATERIAL, material)
            if mid >= 0:
                model.mat_rgba[mid] = rgba
    if spec.arm_rgba is not None:
        _paint(model, arm_bodies(model), spec.arm_rgba)
    if spec.object_rgba is not None:
        _paint(model, task_object_bodies(model), spec.object_rgba)
    if spec.light_diffuse_scale != 1.0 or spec.light_tint is not None:
        tint = np.asarray(spec.light_tint if spec.light_tint is not None else (1.0, 1.0, 1.0))
        model.light_diffuse[:] = np.clip(model.light_diffuse * spec.light_diffuse_scale * tint, 0, 1)
    if spec.light_pos_offset is not None:
        model.light_pos[:] += np.asarray(spec.light_pos_offset)
    if spec.headlight_ambient is not None:
        model.vis.headlight.ambient[:] = spec.headlight_ambient
    for cam, offset in spec.camera_pos_offset.items():
        model.cam_pos[_id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam)] += np.asarray(offset)
    for cam, scale in spec.camera_fovy_scale.items():
        model.cam_fovy[_id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam)] *= scale
    objects = task_object_bodies(model)
    if spec.object_mass_scale != 1.0:
        model.body_mass[objects] *= spec.object_mass_scale
        model.body_inertia[objects] *= spec.object_mass_scale
    if spec.object_friction_scale != 1.0:
        geoms = np.flatnonzero(np.isin(model.geom_bodyid, objects))
        model.geom_friction[geoms] *= spec.object_friction_scale


def apply_texture(model, spec: DomainSpec, mjr_context) -> None:
    """Replace the table texture (``table_texture="checker"``) and upload it to the render context."""
    if spec.table_texture != "checker":
        return
    tid = _id(model, mujoco.mjtObj.mjOBJ_TEXTURE, "T_table")
    if tid < 0:
        return
    w, h, c = int(model.tex_width[tid]), int(model.tex_height[tid]), int(model.tex_nchannel[tid])
    yy, xx = np.mgrid[0:h, 0:w]
    cell = max(1, w // 8)
    checker = ((xx // cell + yy // cell) % 2).astype(bool)
    img = np.where(checker[..., None], 255, 190).astype(np.uint8)
    img = np.repeat(img, c, axis=2) if img.shape[2] != c else img
    adr = int(model.tex_adr[tid])
    model.tex_data[adr:adr + w * h * c] = img.reshape(-1)
    if mjr_context is not None:
        mujoco.mjr_uploadTexture(model, mjr_context, tid)
