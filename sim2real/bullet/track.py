"""Random race tracks: a polyline centreline of straights and arcs, with fast local lookups."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SPACING = 0.05  # metres between centreline points


@dataclass(frozen=True)
class TrackShape:
    """Ranges a random track is drawn from (metres, 1/metres, radians)."""

    start_straight: float = 0.5
    straight: tuple[float, float] = (1.0, 2.5)
    curvature: tuple[float, float] = (0.6, 1.0)
    turn: tuple[float, float] = (0.8, 2.4)


class Track:
    """A centreline polyline with arc length, tangents, and a local nearest-point search."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = points
        segments = np.diff(points, axis=0)
        self.tangents = np.vstack([segments, segments[-1:]]) / SPACING
        self.length = SPACING * (len(points) - 1)
        self._xs, self._ys = points[:, 0].tolist(), points[:, 1].tolist()
        self._txs, self._tys = self.tangents[:, 0].tolist(), self.tangents[:, 1].tolist()

    @classmethod
    def random(cls, rng: np.random.Generator, length: float, shape: TrackShape = TrackShape()) -> Track:
        """Draw a track of at least `length` metres: a start straight, then straights alternating with arcs."""
        pieces: list[tuple[float, float]] = [(shape.start_straight, 0.0)]  # (arc length, curvature)
        total, turning = shape.start_straight, False
        while total < length:
            if turning:
                curvature = rng.uniform(*shape.curvature) * rng.choice((-1.0, 1.0))
                piece = (rng.uniform(*shape.turn) / abs(curvature), curvature)
            else:
                piece = (rng.uniform(*shape.straight), 0.0)
            pieces.append(piece)
            total += piece[0]
            turning = not turning
        curvatures = np.concatenate([np.full(max(1, round(arc / SPACING)), k) for arc, k in pieces])
        headings = np.concatenate([[0.0], np.cumsum(curvatures * SPACING)])
        steps = SPACING * np.stack([np.cos(headings[:-1]), np.sin(headings[:-1])], axis=1)
        return cls(np.vstack([[0.0, 0.0], np.cumsum(steps, axis=0)]))

    def locate(self, x: float, y: float, hint: int) -> tuple[int, float]:
        """Nearest centreline index, found by walking from `hint`, and the signed lateral offset (left > 0).

        The walk is exact while the car stays closer to the line than the tightest radius (1 m), and
        costs a few microseconds: this runs every control step.
        """
        xs, ys = self._xs, self._ys
        last = len(xs) - 1
        index = hint
        best = (x - xs[index]) ** 2 + (y - ys[index]) ** 2
        for direction in (1, -1):
            while 0 <= index + direction <= last:
                candidate = (x - xs[index + direction]) ** 2 + (y - ys[index + direction]) ** 2
                if candidate >= best:
                    break
                index, best = index + direction, candidate
        lateral = self._txs[index] * (y - ys[index]) - self._tys[index] * (x - xs[index])
        return index, lateral

    def point(self, index: int) -> tuple[float, float]:
        """Centreline point at `index`, clamped to the end of the track."""
        index = min(index, len(self._xs) - 1)
        return self._xs[index], self._ys[index]

    def heading(self, index: int) -> float:
        """Direction of travel (radians) of the centreline at `index`."""
        return math.atan2(self._tys[index], self._txs[index])
