// Live refresh of the overview: poll its JSON endpoint and rewrite the numbers and tables in place.
// The page works without it (the server renders the same numbers); nothing here leaves this origin.
"use strict";
(function () {
  const marker = document.querySelector("[data-poll]");
  if (!marker) return;
  const url = marker.getAttribute("data-poll");
  const ms = (v) => (v === null || v === undefined ? "—" : Math.round(1000 * v) + " ms");
  const pct = (v) => (100 * v).toFixed(1) + " %";
  const get = (o, path) => path.split(".").reduce((a, k) => (a == null ? a : a[k]), o);
  function cell(text, num) {
    const td = document.createElement("td");
    if (num) td.className = "num";
    td.textContent = text;
    return td;
  }
  function rows(kind, list) {
    const body = document.querySelector(`tbody[data-rows="${kind}"]`);
    if (!body) return;
    body.replaceChildren(...list.map((w) => {
      const tr = document.createElement("tr");
      tr.append(cell(w.name), cell(String(w.requests), true), cell(w.per_s.toFixed(3), true), cell(ms(w.p50_s), true),
        cell(ms(w.p95_s), true), cell(pct(w.error_rate), true), cell(w.cost_usd.toFixed(6), true));
      return tr;
    }));
  }
  async function tick() {
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(r.status);
      const d = await r.json();
      document.querySelectorAll("[data-k]").forEach((el) => {
        const v = get(d, el.getAttribute("data-k"));
        el.textContent = el.hasAttribute("data-ms") ? ms(v) : el.hasAttribute("data-pct") ? pct(v)
          : el.hasAttribute("data-usd") ? v.toFixed(6) : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : String(v);
      });
      if (d.routers.length) rows("router", d.routers);
      if (d.experts.length) rows("expert", d.experts);
      marker.textContent = "live, updated " + new Date().toLocaleTimeString();
      marker.dataset.updates = String(Number(marker.dataset.updates || 0) + 1);
    } catch (e) {
      marker.textContent = "live refresh paused (" + e.message + ")";
    }
  }
  setInterval(tick, 5000);
  tick();
})();
