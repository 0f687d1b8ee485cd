"""The loss around a point: 1-D slices along eigenvectors and a 2-D plane.

Pictures of the loss surface near θ answer what the numbers of a diagnosis
only state: along the eigenvector of ``λ_min`` a saddle goes *down*, along
the eigenvector of ``λ_max`` the loss climbs fastest, and on the plane the two
span the saddle (or the valley) is visible at a glance. Every value here is
the exact mean loss ``obj.loss(θ + a·u + b·v)`` over all samples; the model's
parameters are never moved.

:func:`loss_slice` and :func:`loss_plane` evaluate the loss along given
directions; :func:`landscape` does both along the extreme eigenvectors of a
:class:`~critpoint.Diagnosis` (which keeps them, so no second eigen-solve) or,
without one, finds them first. It returns a :class:`Landscape` that stores
only arrays and numbers (JSON via :meth:`Landscape.to_dict`), so a report can
be re-drawn without the model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from critpoint._json import check_header, clean, header
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint.analysis.step import downhill, quadratic_step
from critpoint.errors import InputError
from critpoint.linalg.lanczos import eigsh

if TYPE_CHECKING:
    from critpoint.analysis.diagnosis import Diagnosis
    from critpoint.objective import Objective

__all__ = [
    "LANDSCAPE_SCHEMA",
    "Landscape",
    "LossPlane",
    "LossSlice",
    "default_radius",
    "landscape",
    "loss_plane",
    "loss_slice",
]

logger = logging.getLogger("critpoint")

LANDSCAPE_SCHEMA = "critpoint.landscape"
LANDSCAPE_SCHEMA_VERSION = 1


def _floats(values: Any) -> Any:
    """An array as (nested) lists of floats (:func:`critpoint._json.clean` makes NaN ``None``)."""
    return np.asarray(values, dtype=np.float64).tolist()


def _array(values: Any) -> np.ndarray:
    """Inverse of :func:`_floats`: ``None`` becomes NaN (nested lists allowed)."""
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class LossSlice:
    """The loss along one unit direction ``u``: ``L(θ + α·u)`` for ``α`` in a range.

    Attributes
    ----------
    offsets : numpy.ndarray
        ``α``, shape ``(num,)``: the Euclidean distance moved in parameter
        space (parameter units; ``u`` has norm 1).
    losses : numpy.ndarray
        Mean loss at each offset, shape ``(num,)``, in loss units.
    loss0 : float
        The loss at ``α = 0``.
    slope : float
        Directional derivative ``gᵀu`` at θ (loss units per parameter unit).
    curvature : float or None
        ``uᵀHu`` (the eigenvalue when ``u`` is an eigenvector), if known.
    label : str
        What the direction is (``"lambda_min"``, ``"lambda_max"``, ...).
    """

    offsets: np.ndarray
    losses: np.ndarray
    loss0: float
    slope: float
    curvature: float | None
    label: str = ""

    def quadratic(self) -> np.ndarray:
        """The second-order model ``L + gᵀu·α + ½·curvature·α²`` at :attr:`offsets`."""
        c = 0.0 if self.curvature is None else self.curvature
        a = self.offsets
        return self.loss0 + self.slope * a + 0.5 * c * a * a

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (lists of floats; non-finite values are ``None``)."""
        return clean(
            {
                "label": self.label,
                "offsets": _floats(self.offsets),
                "losses": _floats(self.losses),
                "loss0": self.loss0,
                "slope": self.slope,
                "curvature": self.curvature,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossSlice:
        """Rebuild a slice from :meth:`to_dict`."""
        return cls(
            offsets=_array(data["offsets"]),
            losses=_array(data["losses"]),
            loss0=float(data["loss0"]),
            slope=float(data["slope"]),
            curvature=None
            if data.get("curvature") is None
            else float(data["curvature"]),
            label=str(data.get("label", "")),
        )


@dataclass(frozen=True, eq=False)
class LossPlane:
    """The loss on the plane ``θ + a·u + b·v`` spanned by two unit directions.

    Attributes
    ----------
    a : numpy.ndarray
        Offsets along ``u``, shape ``(na,)``, parameter units.
    b : numpy.ndarray
        Offsets along ``v``, shape ``(nb,)``, parameter units.
    losses : numpy.ndarray
        Mean loss, shape ``(nb, na)``: row ``i`` is ``b[i]``, column ``j`` is
        ``a[j]`` (the layout ``matplotlib.contour(a, b, losses)`` expects).
    loss0 : float
        The loss at the centre.
    cosine : float
        ``uᵀv`` of the directions as given (0 for eigenvectors); the plane is
        drawn as if they were orthogonal.
    """

    a: np.ndarray
    b: np.ndarray
    losses: np.ndarray
    loss0: float
    cosine: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (``losses`` as a list of rows; non-finite values are ``None``)."""
        return clean(
            {
                "a": _floats(self.a),
                "b": _floats(self.b),
                "losses": _floats(self.losses),
                "loss0": self.loss0,
                "cosine": self.cosine,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossPlane:
        """Rebuild a plane from :meth:`to_dict`."""
        return cls(
            a=_array(data["a"]),
            b=_array(data["b"]),
            losses=_array(data["losses"]),
            loss0=float(data["loss0"]),
            cosine=float(data.get("cosine", 0.0)),
        )


@dataclass(frozen=True, eq=False)
class Landscape:
    """The loss around θ along the extreme eigenvectors of the Hessian.

    Both eigenvectors are oriented downhill (``gᵀu ≤ 0``), so positive
    offsets never go up to first order.

    Attributes
    ----------
    lambda_min, lambda_max : float
        The eigenvalues of the two directions (loss units per parameter unit²).
    lambda_min_error, lambda_max_error : float
        Their error bounds (Lanczos residual norms).
    slice_min, slice_max : LossSlice
        The loss along the eigenvectors of ``λ_min`` and ``λ_max``.
    plane : LossPlane or None
        The loss on the plane they span (``a`` along ``λ_min``'s vector,
        ``b`` along ``λ_max``'s).
    escape : dict or None
        ``{"a": ..., "b": ..., "step": α, "predicted_change": ...,
        "loss_after": ..., "line_search": bool}``: the end point of an escape
        step of length ``α`` along the diagnosis's escape direction, in plane
        coordinates, and the loss measured there; the step is the
        diagnosis's :attr:`~critpoint.Diagnosis.escape_step` (the one
        :func:`critpoint.escape_saddle` takes, ``line_search`` true) when it
        lowers the loss and fits the radius, else :func:`critpoint.quadratic_step`'s;
        ``None`` without negative curvature.
    num_matvecs : int
        Hessian-vector products spent on the eigenvectors.
    num_loss_evals : int
        Full-data loss evaluations spent on slices and plane.
    settings : dict
        Radii, grid sizes, seed and tolerance.
    """

    lambda_min: float
    lambda_min_error: float
    lambda_max: float
    lambda_max_error: float
    slice_min: LossSlice
    slice_max: LossSlice
    plane: LossPlane | None
    escape: dict[str, float] | None
    num_matvecs: int
    num_loss_evals: int
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary with every array (a report is re-drawn from it)."""
        return clean(
            {
                **header(LANDSCAPE_SCHEMA, LANDSCAPE_SCHEMA_VERSION),
                "lambda_min": self.lambda_min,
                "lambda_min_error": self.lambda_min_error,
                "lambda_max": self.lambda_max,
                "lambda_max_error": self.lambda_max_error,
                "slice_min": self.slice_min.to_dict(),
                "slice_max": self.slice_max.to_dict(),
                "plane": self.plane.to_dict() if self.plane is not None else None,
                "escape": self.escape,
                "num_matvecs": self.num_matvecs,
                "num_loss_evals": self.num_loss_evals,
                "settings": self.settings,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Landscape:
        """Rebuild from :meth:`to_dict` (no model needed)."""
        check_header(data, LANDSCAPE_SCHEMA, LANDSCAPE_SCHEMA_VERSION, "landscape")
        try:
            plane = data.get("plane")
            return cls(
                lambda_min=float(data["lambda_min"]),
                lambda_min_error=float(data["lambda_min_error"]),
                lambda_max=float(data["lambda_max"]),
                lambda_max_error=float(data["lambda_max_error"]),
                slice_min=LossSlice.from_dict(data["slice_min"]),
                slice_max=LossSlice.from_dict(data["slice_max"]),
                plane=LossPlane.from_dict(plane) if plane is not None else None,
                escape=data.get("escape"),
                num_matvecs=int(data.get("num_matvecs", 0)),
                num_loss_evals=int(data.get("num_loss_evals", 0)),
                settings=dict(data.get("settings") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"not a critpoint landscape dictionary ({type(exc).__name__}: {exc})"
            raise InputError(msg) from exc


# ------------------------------------------------------------------ evaluation


def _unit(obj: Objective, direction: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(direction, torch.Tensor) or direction.shape != (obj.num_params,):
        shape = (
            tuple(direction.shape)
            if isinstance(direction, torch.Tensor)
            else type(direction).__name__
        )
        msg = f"{what} must be a tensor of shape ({obj.num_params},), got {shape}"
        raise InputError(msg)
    u = direction.detach().to(device=obj.device, dtype=obj.dtype)
    norm = float(torch.linalg.vector_norm(u.double()))
    if not (norm > 0 and math.isfinite(norm)):
        msg = f"{what} must be a finite non-zero vector, got norm {norm}"
        raise InputError(msg)
    return u / norm


def _radius(value: float, what: str) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        msg = (
            f"{what} must be a positive finite number (parameter units), got {value!r}"
        )
        raise InputError(msg)
    return value


def _num(value: int, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        msg = f"{what} must be an int >= {least}, got {value!r}"
        raise InputError(msg)
    return value


def loss_slice(
    obj: Objective,
    direction: torch.Tensor,
    radius: float,
    num: int = 41,
    theta: torch.Tensor | None = None,
    *,
    curvature: float | None = None,
    label: str = "",
    progress: ProgressArg = None,
) -> LossSlice:
    """The loss along a direction: ``L(θ + α·u)`` for ``α`` in ``[−radius, radius]``.

    Parameters
    ----------
    obj : Objective
        Model, loss and data; the model is not moved.
    direction : torch.Tensor
        Shape ``(n,)``; normalised to unit length, so ``α`` is a Euclidean
        distance in parameter space.
    radius : float
        Largest ``|α|``, in parameter units.
    num : int
        Number of points (odd numbers include ``α = 0``).
    theta : torch.Tensor, optional
        Centre, shape ``(n,)``; default the model's current parameters.
    curvature : float, optional
        ``uᵀHu`` if known (stored for the quadratic model in plots).
    label : str
        Name of the direction, for plots.
    progress : bool or callable, optional
        ``True`` shows a progress bar; a callable is called as
        ``progress(done, total)`` after each loss evaluation.

    Returns
    -------
    LossSlice
    """
    u = _unit(obj, direction, "direction")
    radius = _radius(radius, "radius")
    num = _num(num, "num", 2)
    theta0 = obj.theta if theta is None else obj._check_vector(theta, "theta").clone()
    loss0, g = obj.loss_and_grad(theta0)
    slope = float(g.double() @ u.double())
    offsets = np.linspace(-radius, radius, num)
    losses = np.empty(num)
    with Progress(progress, num, "loss slice", unit="loss") as bar:
        for i, a in enumerate(offsets):
            losses[i] = obj.loss(theta0 + float(a) * u)
            bar.update(i + 1)
    return LossSlice(offsets, losses, loss0, slope, curvature, label)


def loss_plane(
    obj: Objective,
    u: torch.Tensor,
    v: torch.Tensor,
    radius: float | tuple[float, float],
    num: int | tuple[int, int] = 21,
    theta: torch.Tensor | None = None,
    *,
    progress: ProgressArg = None,
) -> LossPlane:
    """The loss on a plane: ``L(θ + a·u + b·v)`` on a grid.

    Parameters
    ----------
    obj : Objective
        Model, loss and data; the model is not moved.
    u, v : torch.Tensor
        Directions of shape ``(n,)``, each normalised to unit length.
    radius : float or (float, float)
        Half-widths of the grid along ``u`` and ``v`` (parameter units).
    num : int or (int, int)
        Grid points along ``u`` and ``v``.
    theta : torch.Tensor, optional
        Centre, shape ``(n,)``; default the model's current parameters.
    progress : bool or callable, optional
        ``True`` shows a progress bar; a callable is called as
        ``progress(done, total)`` after each loss evaluation.

    Returns
    -------
    LossPlane
        ``losses`` of shape ``(num_v, num_u)``.
    """
    uu = _unit(obj, u, "u")
    vv = _unit(obj, v, "v")
    ra, rb = (radius, radius) if not isinstance(radius, tuple) else radius
    ra, rb = _radius(ra, "radius along u"), _radius(rb, "radius along v")
    na, nb = (num, num) if not isinstance(num, tuple) else num
    na, nb = _num(na, "num along u", 2), _num(nb, "num along v", 2)
    theta0 = obj.theta if theta is None else obj._check_vector(theta, "theta").clone()
    a = np.linspace(-ra, ra, na)
    b = np.linspace(-rb, rb, nb)
    losses = np.empty((nb, na))
    with Progress(progress, na * nb, "loss plane", unit="loss") as bar:
        for i, bi in enumerate(b):
            row = theta0 + float(bi) * vv
            for j, aj in enumerate(a):
                losses[i, j] = obj.loss(row + float(aj) * uu)
                bar.advance()
    cosine = float(uu.double() @ vv.double())
    return LossPlane(a, b, losses, obj.loss(theta0), cosine)


def default_radius(
    loss: float, eigenvalue: float, theta_norm: float, scale: float = 1.25
) -> float:
    """The half-width of a slice along an eigenvector of ``eigenvalue``.

    Along a unit eigenvector the quadratic model changes the loss by
    ``½λα²``; at ``α = √(2·L/|λ|)`` that change equals the loss itself (the
    loss doubles, or a negative curvature would bring it to zero), so
    ``scale`` times that distance shows the curvature clearly. It is capped at
    ``max(1, ‖θ‖)`` for nearly flat directions and floored at ``1e-6·(1+‖θ‖)``.

    Parameters
    ----------
    loss : float
        Loss at θ (values below ``1e-3`` count as ``1e-3``).
    eigenvalue : float
        Curvature along the direction.
    theta_norm : float
        ``‖θ‖``.
    scale : float
        Multiple of ``√(2·L/|λ|)``.

    Returns
    -------
    float
        Radius in parameter units.
    """
    cap = max(1.0, theta_norm)
    floor = 1e-6 * (1.0 + theta_norm)
    lam = abs(eigenvalue)
    if not (lam > 0 and math.isfinite(lam)):
        return cap
    r = scale * math.sqrt(2.0 * max(abs(loss), 1e-3) / lam)
    return float(min(max(r, floor), cap))


def landscape(
    obj: Objective,
    diagnosis: Diagnosis | None = None,
    num: int = 41,
    plane_num: int = 21,
    radius: float | tuple[float, float] | None = None,
    seed: int | torch.Generator | None = 0,
    tol: float = 1e-4,
    *,
    plane: bool = True,
    progress: ProgressArg = False,
) -> Landscape:
    """Slices of the loss along the extreme eigenvectors, and the plane they span.

    The eigenpairs of ``λ_min`` and ``λ_max`` are the diagnosis's, when it
    holds them (a diagnosis from :func:`critpoint.diagnose` does; one read
    from JSON does not) and was made at this point (its loss is the loss
    here): no Hessian-vector product is spent. Otherwise one
    Lanczos run finds them (``eigsh(which="BE", k=2)`` with ``seed`` and
    ``tol``, typically 30–100 HVPs). Then ``2·num`` loss evaluations for the
    slices and ``plane_num²`` for the plane, each a full pass over the data.
    The model is not moved.

    Parameters
    ----------
    obj : Objective
        Model, loss and data, at the point the diagnosis was made.
    diagnosis : Diagnosis, optional
        The point's diagnosis: its eigenvectors give the directions, and its
        escape direction (if any) is drawn on the plane, with the step of
        :func:`critpoint.quadratic_step` (``√(2·L/|λ_min|)``).
    num : int
        Points per 1-D slice.
    plane_num : int
        Grid points per side of the plane.
    radius : float or (float, float), optional
        Half-widths along the ``λ_min`` and ``λ_max`` eigenvectors (parameter
        units); default :func:`default_radius` of each.
    seed : int, torch.Generator or None
        Seed of the Lanczos start vector (when the eigenpairs are not the
        diagnosis's).
    tol : float
        Relative residual tolerance of that eigensolver run.
    plane : bool
        Compute the 2-D plane too.
    progress : bool or callable
        ``True`` shows a progress bar (tqdm, on stderr); a callable receives
        ``(done, total)`` loss evaluations.

    Returns
    -------
    Landscape
        ``settings["eigenpairs"]`` says where the directions came from
        (``"diagnosis"`` or ``"eigsh"``), with the seed and tolerance of
        that solve.

    Raises
    ------
    InputError
        Fewer than 2 parameters, or a diagnosis of another set of parameters.
    """
    if obj.num_params < 2:
        msg = "a landscape needs at least 2 parameters (two eigenvectors); this objective has 1"
        raise InputError(msg)
    check_progress(progress)
    theta = obj.theta
    loss0, g = obj.loss_and_grad(theta)
    pairs = _diagnosis_pairs(obj, diagnosis, loss0)
    num_matvecs = 0
    if pairs is not None:
        found = "diagnosis"
        assert diagnosis is not None
        seed = diagnosis.settings.get("seed", seed)
        tol = diagnosis.settings.get("tol", tol)
    else:
        found = "eigsh"
        H = obj.hessian(theta, check=False)
        # The budget (5th) is left to eigsh: arguments by position, as its
        # keyword for it is being renamed.
        r = eigsh(
            H,
            2,
            "BE",
            tol,
            None,
            seed,
            # A callback sees the eigensolver's products, then the losses.
            progress=progress,
        )
        assert r.eigenvectors is not None
        pairs = (
            (float(r.eigenvalues[0]), float(r.residuals[0]), r.eigenvectors[:, 0]),
            (float(r.eigenvalues[-1]), float(r.residuals[-1]), r.eigenvectors[:, -1]),
        )
        num_matvecs = r.num_matvecs
    (lam_min, err_min, v_min), (lam_max, err_max, v_max) = pairs
    u_min = downhill(v_min.detach().to(device=obj.device, dtype=obj.dtype).clone(), g)[
        0
    ]
    u_max = downhill(v_max.detach().to(device=obj.device, dtype=obj.dtype).clone(), g)[
        0
    ]
    theta_norm = float(torch.linalg.vector_norm(theta.double()))
    if radius is None:
        ra = default_radius(loss0, lam_min, theta_norm)
        rb = default_radius(loss0, lam_max, theta_norm)
    elif isinstance(radius, tuple):
        ra, rb = radius
    else:
        ra = rb = radius

    escape = None
    if diagnosis is not None and diagnosis.escape_direction is not None:
        d = diagnosis.escape_direction.detach().to(device=obj.device, dtype=obj.dtype)
        d = d / torch.linalg.vector_norm(d)
        slope = float(g.double() @ d.double())
        # The step the diagnosis measured (escape_saddle's), when made here and in range.
        found_step = diagnosis.escape_step if found == "diagnosis" else None
        if found_step is not None and not (
            found_step.lowers_loss and (radius is None or found_step.step_size <= ra)
        ):
            found_step = None
        full = quadratic_step(loss0, slope, diagnosis.lambda_min, dtype=obj.dtype)
        alpha = full.step_size if found_step is None else found_step.step_size
        if radius is None:
            ra = max(ra, 1.2 * alpha)  # show the whole escape step
        if found_step is not None:
            step_size, predicted = found_step.step_size, found_step.predicted_change
            after, source = found_step.loss_after, "line search"
        else:
            step = quadratic_step(
                loss0, slope, diagnosis.lambda_min, max_step=ra, dtype=obj.dtype
            )
            step_size, predicted = step.step_size, step.predicted_change
            after, source = obj.loss(theta + step_size * d), "quadratic model"
        escape = {
            "a": float(d.double() @ u_min.double()) * step_size,
            "b": float(d.double() @ u_max.double()) * step_size,
            "step": step_size,
            "predicted_change": predicted,
            "loss_after": after,
            "line_search": source == "line search",
        }

    total = 2 * num + (plane_num * plane_num if plane else 0)
    with Progress(progress, total, "loss landscape", unit="loss") as bar:
        offset = 0

        def report(done: int, _total: int) -> None:
            bar.update(offset + done)

        s_min = loss_slice(
            obj,
            u_min,
            ra,
            num,
            theta,
            curvature=lam_min,
            label="lambda_min",
            progress=report,
        )
        offset += num
        s_max = loss_slice(
            obj,
            u_max,
            rb,
            num,
            theta,
            curvature=lam_max,
            label="lambda_max",
            progress=report,
        )
        offset += num
        pl = (
            loss_plane(obj, u_min, u_max, (ra, rb), plane_num, theta, progress=report)
            if plane
            else None
        )
    return Landscape(
        lambda_min=lam_min,
        lambda_min_error=err_min,
        lambda_max=lam_max,
        lambda_max_error=err_max,
        slice_min=s_min,
        slice_max=s_max,
        plane=pl,
        escape=escape,
        num_matvecs=num_matvecs,
        num_loss_evals=total
        + (1 if escape is not None and not escape["line_search"] else 0),
        settings={
            "num": num,
            "plane_num": plane_num if plane else None,
            "radius_min": ra,
            "radius_max": rb,
            "seed": seed if isinstance(seed, int) or seed is None else None,
            "tol": tol,
            "theta_norm": theta_norm,
            "eigenpairs": found,
        },
    )


def _diagnosis_pairs(
    obj: Objective, diagnosis: Diagnosis | None, loss: float
) -> tuple[tuple[float, float, torch.Tensor], tuple[float, float, torch.Tensor]] | None:
    """``((λ_min, error, u_min), (λ_max, error, u_max))`` of the diagnosis, if it holds for θ.

    ``None`` when there is no diagnosis, when it was read from JSON (no
    vectors), or when it was made at another point (its loss is not the
    loss here, to ``√eps`` of the dtype): the eigenpairs are then found again.
    """
    if diagnosis is None:
        return None
    u_min, u_max = diagnosis.eigenvector_min, diagnosis.eigenvector_max
    if u_min is None or u_max is None:
        return None  # read from JSON: the vectors are not stored
    if u_min.shape != (obj.num_params,) or u_max.shape != (obj.num_params,):
        msg = (
            f"the diagnosis is of {u_min.shape[0]:,} parameters, this objective has "
            f"{obj.num_params:,}; give the diagnosis of this objective"
        )
        raise InputError(msg)
    slack = math.sqrt(torch.finfo(obj.dtype).eps) * max(1.0, abs(loss))
    if not abs(diagnosis.loss - loss) <= slack:
        logger.info(
            "the diagnosis was made at another point (loss %.6g, here %.6g): "
            "finding the eigenvectors again",
            diagnosis.loss,
            loss,
        )
        return None
    return (
        (diagnosis.lambda_min, diagnosis.lambda_min_error, u_min),
        (diagnosis.lambda_max, diagnosis.lambda_max_error, u_max),
    )
