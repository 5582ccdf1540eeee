// The pipeline's graph as SVG: stages in columns by their distance from a source, links with
// the number of frames waiting in them (depth/capacity; "fused" links hand frames over directly).
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

export function drawGraph(svg, graph) {
  svg.replaceChildren();
  const defs = el("defs", {}, svg);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 6, markerHeight: 6, orient: "auto" }, defs);
  el("path", { d: "M0,0 L8,4 L0,8 z", fill: "#4a5d7a" }, marker);
  const layer = {};
  for (const n of graph.nodes) layer[n.id] = 0;
  const forward = graph.links.filter((l) => !l.feedback);
  for (let i = 0; i < graph.nodes.length; i++) {
    for (const l of forward) layer[l.dst] = Math.max(layer[l.dst], layer[l.src] + 1);
  }
  const columns = [];
  for (const n of graph.nodes) (columns[layer[n.id]] ||= []).push(n);
  const W = 92, H = 34, GX = 40, GY = 26;
  const pos = {};
  const TOP = 34;  // room for links that skip a column, drawn as arcs above
  columns.forEach((col, x) => col.forEach((n, y) => { pos[n.id] = { x: 10 + x * (W + GX), y: TOP + y * (H + GY) }; }));
  const width = columns.length * (W + GX) - GX + 20;
  const height = TOP + 30 + Math.max(...columns.map((c) => c.length)) * (H + GY);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const labels = {};
  for (const l of graph.links) {
    const a = pos[l.src], b = pos[l.dst];
    let d, lx, ly;
    if (l.feedback) {
      const low = Math.max(a.y, b.y) + H + 16;
      d = `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${low} ${b.x + W / 2},${low} ${b.x + W / 2},${b.y + H}`;
      lx = (a.x + b.x) / 2 + W / 2; ly = low - 2;
    } else if (layer[l.dst] - layer[l.src] > 1) {
      const high = Math.min(a.y, b.y) - 26;
      d = `M${a.x + W / 2},${a.y} C${a.x + W / 2},${high} ${b.x + W / 2},${high} ${b.x + W / 2},${b.y}`;
      lx = (a.x + b.x) / 2 + W / 2; ly = high + 14;
    } else {
      d = `M${a.x + W},${a.y + H / 2} L${b.x},${b.y + H / 2}`;
      lx = (a.x + W + b.x) / 2; ly = (a.y + b.y) / 2 + H / 2 - 5;
    }
    const path = el("path", { d, class: "link" + (l.feedback ? " feedback" : ""), "data-link": l.name }, svg);
    const t = el("text", { x: lx, y: ly, class: "depth" }, svg);
    labels[l.name] = { path, text: t, capacity: l.capacity };
  }
  for (const n of graph.nodes) {
    const g = el("g", { class: "node", transform: `translate(${pos[n.id].x},${pos[n.id].y})` }, svg);
    el("rect", { width: W, height: H }, g);
    el("text", { x: W / 2, y: 15 }, g).textContent = n.id;
    el("text", { x: W / 2, y: 27, class: "type" }, g).textContent = n.type;
  }
  return labels;
}

export function updateGraph(labels, links) {
  for (const [name, s] of Object.entries(links)) {
    const l = labels[name];
    if (!l) continue;
    l.text.textContent = s.fused ? "" : `${s.depth}/${s.capacity}`;
    l.path.classList.toggle("busy", !s.fused && s.depth > 0);
  }
}
