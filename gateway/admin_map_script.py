"""The script of ``/admin/map``: polls ``/admin/map/state`` and colours domains by health.

Kept in a module rather than a ``.js`` file so it ships with the package as code does; served
as ``/admin/map.js`` so the page's Content-Security-Policy allows no inline script.
"""

__all__ = ["SCRIPT"]

SCRIPT = """\
"use strict";
(function () {
  let previous = null;

  function breakers(state, upstreams) {
    return upstreams.map(function (name) {
      const upstream = state.upstreams[name];
      return upstream ? name + ": " + upstream.breaker : name;
    }).join(", ");
  }

  function apply(state) {
    const elapsed = previous ? state.time - previous.time : 0;
    Object.keys(state.domains).forEach(function (name) {
      const domain = state.domains[name];
      const box = document.getElementById("domain-" + name);
      if (box) {
        box.classList.remove("healthy", "degraded", "down");
        box.classList.add(domain.health);
      }
      const row = document.querySelector('tr[data-domain="' + name + '"]');
      if (!row) {
        return;
      }
      const health = row.querySelector(".health");
      health.textContent = domain.health;
      health.className = "health " + domain.health;
      row.querySelector(".breaker").textContent = breakers(state, domain.upstreams);
      if (previous && elapsed > 0 && previous.domains[name]) {
        const rate = (domain.requests - previous.domains[name].requests) / elapsed;
        row.querySelector(".rate").textContent = rate.toFixed(1);
      }
    });
    document.getElementById("updated").textContent =
      "live state of " + new Date(state.time * 1000).toISOString();
    document.body.dataset.live = "1";
    previous = state;
  }

  function poll() {
    fetch("/admin/map/state", { cache: "no-store" })
      .then(function (reply) { return reply.json(); })
      .then(apply)
      .catch(function () {
        document.getElementById("updated").textContent = "live state unavailable";
      })
      .finally(function () { setTimeout(poll, 2000); });
  }

  poll();
})();
"""
