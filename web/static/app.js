/* asset-cycle live operations view: one page over the read-only API (no build step; Leaflet served locally).
 * The fleet is polled every second and its markers are moved in place (hundreds of trucks stay cheap);
 * loaders, cycles and alerts every five seconds. Every text from the data goes in as text, never as HTML. */
"use strict";

const FLEET_MS = 1000;
const BOARD_MS = 5000;
const TRUCK_MS = 2000;
const SEGMENTS = {
  LOAD_TIME: { color: "#d97706", label: "loading" },
  LOAD_TRAVEL: { color: "#dc2626", label: "hauling (loaded)" },
  DUMP_TIME: { color: "#7c3aed", label: "dumping" },
  EMPTY_TRAVEL: { color: "#2563eb", label: "returning (empty)" },
  NONE: { color: "#6b7280", label: "no load yet" },
};

const state = { site: null, sites: [], trucks: new Map(), markers: new Map(), selected: null, fitted: false,
                token: null, layers: null, busy: {} };

// ------------------------------------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clock(iso) {
  return iso ? iso.slice(11, 19) : "–";
}

function dateTime(iso) {
  return iso ? `${iso.slice(0, 10)} ${iso.slice(11, 19)}Z` : "–";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

function segment(name) {
  return el("span", { class: `seg seg-${SEGMENTS[name] ? name : "NONE"}` }, name || "NONE");
}

function table(headers, rows, emptyText) {
  if (!rows.length) return el("p", { class: "empty" }, emptyText);
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(([text, cls]) => el("th", { class: cls }, text)))),
    el("tbody", {}, rows));
}

function replace(id, node) {
  document.getElementById(id).replaceChildren(node);
}

// ------------------------------------------------------------------------------------------------ API

class ApiError extends Error {}

async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError("the server does not answer");
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) throw new ApiError("a bearer token is required: open this page as …/#token=TOKEN");
  if (!response.ok) throw new ApiError(body.error || `HTTP ${response.status}`);
  return body;
}

function siteQuery(extra) {
  const params = new URLSearchParams(extra || {});
  if (state.site) params.set("site", state.site);
  const text = params.toString();
  return text ? `?${text}` : "";
}

function setConnection(ok, text) {
  const node = document.getElementById("connection");
  node.className = `status ${ok ? "ok" : "down"}`;
  node.textContent = ok ? "connected" : "no connection";
  node.title = text || "";
  const banner = document.getElementById("banner");
  banner.hidden = ok;
  banner.textContent = ok ? "" : text;
}

// one request of a kind at a time: a slow answer is not stacked up behind
async function once(kind, work) {
  if (state.busy[kind]) return;
  state.busy[kind] = true;
  try {
    await work();
  } finally {
    state.busy[kind] = false;
  }
}

// ------------------------------------------------------------------------------------------------ map

function createMap() {
  const map = L.map("map", { zoomSnap: 0.25, maxZoom: 22, preferCanvas: false, attributionControl: false });
  map.createPane("trucks").style.zIndex = 650;
  state.layers = { site: L.layerGroup().addTo(map), map };
  const legend = document.getElementById("legend");
  for (const [name, info] of Object.entries(SEGMENTS)) {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = info.color;
    legend.append(el("div", {}, swatch, `${name} · ${info.label}`));
  }
  legend.append(el("div", {}, el("span", { class: "swatch stale" }), "stale (silent while its site reports)"));
  return map;
}

function drawSite(site) {
  const { map } = state.layers;
  state.layers.site.clearLayers();
  const bounds = [];
  for (const region of site.regions) {
    const ring = region.points.map(([lon, lat]) => [lat, lon]);
    const dump = region.region_type === "dump";
    L.polygon(ring, { color: dump ? "#92400e" : "#6b7280", weight: 1.5, fillOpacity: dump ? 0.18 : 0.08,
                      dashArray: dump ? null : "4 4", interactive: false })
      .bindTooltip(`${region.region_name} (${region.region_type || "region"})`, { sticky: true })
      .addTo(state.layers.site);
    bounds.push(...ring);
  }
  for (const loader of site.loaders) {
    if (loader.latitude === null || loader.longitude === null) continue;
    const at = [loader.latitude, loader.longitude];
    if (site.queue_radius_m) {
      L.circle(at, { radius: site.queue_radius_m, color: "#065f46", weight: 1, dashArray: "3 5", fill: false,
                     interactive: false }).addTo(state.layers.site);
    }
    L.circle(at, { radius: site.loader_radius_m, color: "#065f46", weight: 1.5, fillOpacity: 0.15,
                   interactive: false })
      .bindTooltip(loader.asset_name || loader.asset_guid, { permanent: true, direction: "top",
                                                             className: "loader-label" })
      .addTo(state.layers.site);
    bounds.push(at);
  }
  if (bounds.length && !state.fitted) {
    map.fitBounds(L.latLngBounds(bounds).pad(0.08));
    state.fitted = true;
  }
}

function truckStyle(truck) {
  const info = SEGMENTS[truck.segment] || SEGMENTS.NONE;
  const selected = state.selected === truck.asset_guid;
  if (truck.stale) {
    return { color: selected ? "#000" : "#374151", weight: selected ? 3 : 1.5, dashArray: "2 3",
             fillColor: "#ffffff", fillOpacity: 0.5, opacity: 0.7, radius: 7 };
  }
  return { color: selected ? "#000" : "#111827", weight: selected ? 3 : 1, dashArray: null,
           fillColor: info.color, fillOpacity: 0.95, opacity: 1, radius: selected ? 9 : 7 };
}

function truckTooltip(guid) {
  const t = state.trucks.get(guid);
  if (!t) return guid;
  const cycle = t.cycle && t.cycle.elapsed_s !== null ? `, cycle ${duration(t.cycle.elapsed_s)}` : "";
  return `${guid} · ${t.segment || "NONE"}${cycle}${t.stale ? ` · stale (${duration(t.silent_s)} silent)` : ""}`;
}

function applyFleet(fleet) {
  const placed = fleet.trucks.filter((t) => t.latitude !== null && t.longitude !== null);
  if (!state.fitted && placed.length) {  // a site without drawn geometry: the trucks set the view
    state.layers.map.fitBounds(L.latLngBounds(placed.map((t) => [t.latitude, t.longitude])).pad(0.1));
    state.fitted = true;
  }
  const seen = new Set();
  for (const truck of fleet.trucks) {
    if (truck.latitude === null || truck.longitude === null) continue;
    seen.add(truck.asset_guid);
    const previous = state.trucks.get(truck.asset_guid);
    state.trucks.set(truck.asset_guid, truck);
    let marker = state.markers.get(truck.asset_guid);
    if (!marker) {
      marker = L.circleMarker([truck.latitude, truck.longitude],
                              { pane: "trucks", className: "truck", ...truckStyle(truck) });
      marker.bindTooltip(() => truckTooltip(truck.asset_guid), { direction: "top" });
      marker.on("click", () => selectTruck(truck.asset_guid));
      marker.addTo(state.layers.map);
      marker.getElement().setAttribute("data-truck", truck.asset_guid);
      state.markers.set(truck.asset_guid, marker);
      continue;
    }
    if (!previous || previous.latitude !== truck.latitude || previous.longitude !== truck.longitude) {
      marker.setLatLng([truck.latitude, truck.longitude]);
    }
    if (!previous || previous.segment !== truck.segment || previous.stale !== truck.stale) {
      marker.setStyle(truckStyle(truck));
    }
  }
  for (const [guid, marker] of state.markers) {
    if (!seen.has(guid)) {
      marker.remove();
      state.markers.delete(guid);
      state.trucks.delete(guid);
    }
  }
}

// ------------------------------------------------------------------------------------------------ panels

function showFreshness() {
  const site = state.sites.find((s) => s.site_guid === state.site);
  const trucks = [...state.trucks.values()];
  const stale = trucks.filter((t) => t.stale).length;
  const text = site ? `newest event ${dateTime(site.newest_event_utc)} · ${trucks.length} trucks` +
    (stale ? ` · ${stale} stale` : "") : "";
  document.getElementById("freshness").textContent = text;
}

function showLoaders(data) {
  const rows = data.loaders.map((l) => el("tr", {},
    el("td", {}, l.asset_name || l.loader_asset_guid),
    el("td", { class: `state-${l.state}` }, l.state.toLowerCase()),
    el("td", {}, l.in_service ? `${l.in_service.asset_guid} ${duration(l.in_service.for_s)}` : "–"),
    el("td", {}, l.waiting.length ? l.waiting.map((w) => `${w.asset_guid} ${duration(w.for_s)}`).join(", ") : "–"),
    el("td", { class: "num" }, l.state === "IDLE" && l.idle_for_s !== null ? duration(l.idle_for_s) : "–"),
    el("td", { class: "num" }, l.shift ? l.shift.loads : "–"),
    el("td", { class: "num" }, l.shift ? duration(l.shift.queue_seconds) : "–"),
    el("td", { class: "num" }, l.shift ? duration(l.shift.hang_seconds) : "–")));
  const shift = data.loaders.find((l) => l.shift);
  replace("loaders", el("div", {},
    table([["loader"], ["state"], ["in service"], ["waiting"], ["idle", "num"], ["loads", "num"], ["queue", "num"],
           ["hang", "num"]], rows, "no loaders at this site"),
    shift ? el("p", { class: "muted" }, `this shift: from ${dateTime(shift.shift.start_utc)}`) : null,
    data.warnings.map((w) => el("p", { class: "muted" }, w))));
}

function cycleRows(cycles, withTruck) {
  return cycles.map((c) => el("tr", {},
    withTruck ? el("td", {}, c.asset_guid) : null,
    el("td", {}, clock(c.load_start_utc)),
    el("td", {}, c.loader_asset_guid || "–"),
    el("td", {}, c.dump_region_guid || "–"),
    el("td", {}, c.cycle_status),
    el("td", { class: "num" }, duration(c.total_cycle_seconds))));
}

function showCycles(data) {
  replace("cycles", table([["truck"], ["load start"], ["loader"], ["dump"], ["status"], ["total", "num"]],
                          cycleRows(data.cycles, true), "no closed cycles yet"));
}

function showAlerts(data) {
  const rows = data.alerts.map((a) => el("tr", {}, el("td", {}, clock(a.event_utc)), el("td", {}, a.alert_type),
                                         el("td", {}, a.asset_guid || "–"), el("td", { title: a.detail || "" },
                                         (a.detail || "").slice(0, 60))));
  replace("alerts", table([["time"], ["type"], ["truck"], ["detail"]], rows, "no alerts"));
}

function showTruck(data) {
  const p = data.position;
  const c = data.current_cycle;
  const facts = (pairs) => el("dl", {}, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  document.getElementById("truck-title").textContent = `Truck ${data.asset_guid}`;
  replace("truck-body", el("div", {},
    p ? facts([["segment", segment(p.segment)], ["work state", p.work_state || "–"],
               ["area", p.area_guid ? `${p.area} ${p.area_guid}` : (p.area || "–")],
               ["last seen", `${dateTime(p.last_event_utc)}${p.stale ? ` (stale: ${duration(p.silent_s)} silent)` : ""}`]])
      : el("p", { class: "empty" }, "no position"),
    el("h2", {}, "Current cycle"),
    c && c.load_start_utc ? el("div", { id: "current-cycle" }, facts([
      ["load start", dateTime(c.load_start_utc)], ["loader", c.loader_asset_guid || "–"],
      ["segment", segment(c.current_segment)], ["elapsed", duration(c.elapsed_s)],
      ["load", duration(c.load_seconds)], ["haul", duration(c.load_travel_seconds)],
      ["dump", c.dump_region_guid ? `${c.dump_region_guid} ${duration(c.dump_seconds)}` : "–"],
      ["flags", [c.invalid_reason, c.outlier_rule].filter(Boolean).join(", ") || "–"]]))
      : el("p", { class: "empty", id: "current-cycle" }, "no cycle in progress (no load yet)"),
    el("h2", {}, "Last cycles"),
    table([["load start"], ["loader"], ["dump"], ["status"], ["total", "num"]], cycleRows(data.cycles, false),
          "no closed cycles")));
  document.getElementById("truck-panel").hidden = false;
}

async function selectTruck(guid) {
  const before = state.selected;
  state.selected = guid;
  for (const g of [before, guid]) {
    const marker = state.markers.get(g);
    if (marker && state.trucks.get(g)) marker.setStyle(truckStyle(state.trucks.get(g)));
  }
  await refreshTruck();
}

async function refreshTruck() {
  if (!state.selected) return;
  const guid = state.selected;
  try {
    const data = await api(`/api/trucks/${encodeURIComponent(guid)}?cycles=8`);
    if (state.selected === guid) showTruck(data);
  } catch (err) {
    if (state.selected === guid) replace("truck-body", el("p", { class: "error" }, err.message));
  }
}

// ------------------------------------------------------------------------------------------------ loops

async function refreshSites() {
  const data = await api("/api/sites");
  state.sites = data.sites;
  if (data.tile_url && !state.layers.tiles) {
    state.layers.tiles = L.tileLayer(data.tile_url, { maxZoom: 22, maxNativeZoom: 19 }).addTo(state.layers.map);
  }
  const select = document.getElementById("site");
  const wanted = new URLSearchParams(location.search).get("site");
  const names = data.sites.map((s) => s.site_guid);
  if (!state.site || !names.includes(state.site)) {
    const withTrucks = data.sites.find((s) => s.trucks > 0);
    state.site = names.includes(wanted) ? wanted : (withTrucks || data.sites[0] || {}).site_guid || null;
  }
  select.replaceChildren(...data.sites.map((s) => el("option", { value: s.site_guid }, `${s.site_guid} (${s.trucks})`)));
  if (state.site) select.value = state.site;
  const site = data.sites.find((s) => s.site_guid === state.site);
  if (site) drawSite(site);
  for (const warning of data.warnings) console.info(warning);
}

async function refreshFleet() {
  await once("fleet", async () => {
    try {
      applyFleet(await api(`/api/fleet${siteQuery()}`));
      showFreshness();
      setConnection(true);
    } catch (err) {
      setConnection(false, err.message);
    }
  });
}

async function refreshBoards() {
  await once("boards", async () => {
    const panels = [["loaders", `/api/loaders${siteQuery()}`, showLoaders],
                    ["cycles", `/api/cycles${siteQuery({ limit: 12 })}`, showCycles],
                    ["alerts", `/api/alerts${siteQuery({ limit: 12 })}`, showAlerts]];
    await Promise.all(panels.map(async ([id, path, show]) => {
      try {
        show(await api(path));
      } catch (err) {
        replace(id, el("p", { class: "error" }, err.message));
      }
    }));
  });
}

async function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("asset-cycle-token", hash.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("asset-cycle-token");
  createMap();
  document.getElementById("truck-close").addEventListener("click", () => {
    selectTruck(null);
    document.getElementById("truck-panel").hidden = true;
  });
  document.getElementById("site").addEventListener("change", (event) => {
    state.site = event.target.value;
    state.fitted = false;
    for (const marker of state.markers.values()) marker.remove();
    state.markers.clear();
    state.trucks.clear();
    history.replaceState(null, "", `?site=${encodeURIComponent(state.site)}`);
    drawSite(state.sites.find((s) => s.site_guid === state.site));
    refreshFleet();
    refreshBoards();
  });
  for (;;) {
    try {
      await refreshSites();
      break;
    } catch (err) {
      setConnection(false, err.message);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  refreshFleet();
  refreshBoards();
  setInterval(refreshFleet, FLEET_MS);
  setInterval(refreshBoards, BOARD_MS);
  setInterval(refreshTruck, TRUCK_MS);
  setInterval(() => refreshSites().catch(() => {}), 60000);
}

start();
