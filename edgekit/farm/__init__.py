"""Device farm: a matrix of (model, recipe, device, workload) cells run over many devices.

``config`` reads farm.yaml and expands the matrix, ``scheduler`` drives it over a ``backend.Backend``
(local threads, or Ray across hosts in ``ray_backend``), ``job`` runs one cell on the device's host.
Ray is imported only by ``ray_backend``/``ray_node`` so the rest works without the extra.
"""

from __future__ import annotations

from edgekit.farm.backend import Backend, Job, JobOutcome, device_resource

__all__ = ["Backend", "Job", "JobOutcome", "device_resource"]
