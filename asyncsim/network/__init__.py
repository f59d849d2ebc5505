"""The cluster network: topology and routes, and the two transfer models.

* :mod:`.topology` — link directions and every worker's pull/push route
  (closed form for ``star`` and ``two_tier``; networkx for ``custom`` only);
* :mod:`.maxmin` — max-min fair rates by progressive filling;
* :mod:`.fair` — the flow-level model (``network.sharing: fair``, the
  default): flows share link directions max-min fairly;
* the circuit model (``network.sharing: circuit``): a transfer holds every
  link direction of its path exclusively at the path's smallest bandwidth
  (:meth:`asyncsim.engine._model.Model.transfer`).

The model is chosen in one place, :class:`asyncsim.engine._model.Model`.
See docs/transfer-model.md.
"""

from .maxmin import max_min_rates
from .topology import SERVER, Network, Route, build_graph, build_network, worker_node

__all__ = ["Route", "Network", "build_graph", "build_network", "worker_node", "SERVER", "max_min_rates",
           "SHARING"]

#: the transfer models, default first
SHARING = ("fair", "circuit")
