// medseg view: the page. NiiVue draws; this file fetches volumes from the loopback server (the
// token travels in a header, never in a volume URL), wires the controls and sends prompts.
// World coordinates are NiiVue's millimetres, i.e. the NIfTI sform the server wrote: RAS+.
"use strict";
(function () {
  const token = new URLSearchParams(window.location.search).get("token") || "";
  const nvlib = window.niivue;
  const SCRIBBLE_OBJECT = 254, SCRIBBLE_BACKGROUND = 255; // drawing values of the two scribble pens
  const RAS_LETTERS = true; // display in the radiological convention: the patient's right on the screen's left
  const state = { info: null, box: null, points: [], labels: [], lastPrompt: null, lastSave: null, errors: [],
                  strokes: Promise.resolve(), review: null };

  function setMessage(text, isError) {
    const el = document.getElementById("message");
    el.textContent = text;
    el.className = isError ? "error" : "";
    if (isError) state.errors.push(text);
  }

  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = Object.assign({ "X-Medseg-Token": token }, opts.headers || {});
    const response = await fetch(path, opts);
    if (!response.ok) {
      const text = await response.text();
      throw new Error(text || response.statusText || String(response.status));
    }
    return response;
  }

  function makeNiivue(canvasId) {
    const nv = new nvlib.Niivue({
      isRadiologicalConvention: RAS_LETTERS,
      showAllOrientationMarkers: true,
      isOrientationTextVisible: true,
      crosshairColor: [1, 0, 0, 1],
      crosshairWidth: 1,
      backColor: [0, 0, 0, 1],
      isColorbar: false,
      multiplanarShowRender: nvlib.SHOW_RENDER.NEVER,
      multiplanarLayout: nvlib.MULTIPLANAR_TYPE.GRID,
      dragAndDropEnabled: false,
      isNearestInterpolation: true,
      logLevel: "warn",
    });
    nv.attachTo(canvasId);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    return nv;
  }

  async function volume(role, options) {
    const buf = await (await api("/volume/" + role)).arrayBuffer();
    return nvlib.NVImage.loadFromUrl(Object.assign({ url: buf, name: role + ".nii.gz" }, options || {}));
  }

  function lut(entries) {
    const R = [0], G = [0], B = [0], A = [0], I = [0], labels = [""];
    for (const e of entries) {
      R.push(e.colour[0]); G.push(e.colour[1]); B.push(e.colour[2]); A.push(255); I.push(e.value); labels.push(e.name);
    }
    return { R, G, B, A, I, labels };
  }

  function fillLegend(tableId, entries) {
    const body = document.querySelector("#" + tableId + " tbody");
    body.textContent = "";
    for (const e of entries) {
      const tr = document.createElement("tr");
      tr.dataset.value = String(e.value);
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = "rgb(" + e.colour.join(",") + ")";
      const c0 = document.createElement("td"); c0.appendChild(sw);
      const c1 = document.createElement("td"); c1.textContent = e.name;
      const c2 = document.createElement("td"); c2.className = "ml"; c2.textContent = e.size.toFixed(1);
      tr.append(c0, c1, c2);
      body.appendChild(tr);
    }
  }

  // the editable map's structures with their volumes, as the server counted them after the last
  // change (every answer carries them): the legend itself under review, a "Mask" table otherwise
  function showMaskVolumes(entries) {
    state.legend = entries;
    if (state.info.edit_labels) { fillLegend("legend", entries); return; }
    fillLegend("mask-legend", entries);
    document.getElementById("mask-legend").hidden = entries.length === 0;
    document.getElementById("mask-legend-title").hidden = entries.length === 0;
  }

  function applyWindow(nv, range) {
    if (!nv || !nv.volumes.length) return;
    nv.volumes[0].cal_min = range[0];
    nv.volumes[0].cal_max = range[1];
    nv.updateGLVolume();
  }

  function setOpacity(value) {
    for (const nv of [window.medseg.nv, window.medseg.nvRef, window.medseg.nvFull]) {
      if (!nv) continue;
      for (let i = 1; i < nv.volumes.length; i++) nv.setOpacity(i, value);
    }
  }

  function setOutline(on) {
    for (const nv of [window.medseg.nv, window.medseg.nvRef, window.medseg.nvFull]) {
      if (!nv) continue;
      nv.opts.atlasOutline = on ? 1 : 0;
      nv.updateGLVolume();
    }
  }

  function goto(mm) {
    // move the crosshair of both views to a world position (RAS mm)
    for (const nv of [window.medseg.nv, window.medseg.nvRef]) {
      if (!nv) continue;
      nv.scene.crosshairPos = nv.mm2frac([mm[0], mm[1], mm[2]]);
      nv.drawScene();
      nv.createOnLocationChange();
    }
  }

  function tool() {
    return document.querySelector("input[name=tool]:checked").value;
  }

  const PEN = { brush: null, eraser: 0, "scribble-object": SCRIBBLE_OBJECT, "scribble-background": SCRIBBLE_BACKGROUND };

  function applyTool() {
    const nv = window.medseg.nv;
    const t = tool();
    const pen = t in PEN;
    // NiiVue draws with the pen only while the left button's drag mode is "crosshair"
    nv.opts.dragModePrimary = t === "box" ? nvlib.DRAG_MODE.roiSelection
      : (t === "navigate" || pen ? nvlib.DRAG_MODE.crosshair : nvlib.DRAG_MODE.none);
    nv.opts.dragMode = t === "box" ? nvlib.DRAG_MODE.roiSelection : nvlib.DRAG_MODE.contrast;
    nv.setDrawingEnabled(pen);
    if (pen) {
      nv.opts.penSize = Number(document.getElementById("pen-size").value) || 1;
      nv.setPenValue(t === "brush" ? structure() : PEN[t], false);
    }
  }

  // A box drawn on one view: its two corners fix the in-plane extent; along the view's normal the box
  // spans the larger in-plane half-extent either side of the slice (a roughly round object).
  function boxFromDrag(p) {
    if (p.axCorSag < 0 || p.axCorSag > 2) return null;
    const a = [p.mmStart[0], p.mmStart[1], p.mmStart[2]];
    const b = [p.mmEnd[0], p.mmEnd[1], p.mmEnd[2]];
    const normal = [2, 1, 0][p.axCorSag]; // axial: z, coronal: y, sagittal: x
    const inPlane = [0, 1, 2].filter((d) => d !== normal);
    const half = Math.max(...inPlane.map((d) => Math.abs(a[d] - b[d]))) / 2;
    if (half <= 0) return null;
    a[normal] -= half;
    b[normal] += half;
    return a.concat(b);
  }

  // POST a prompt (or undo / redo / clear / a stroke) and paint the box of the label map that
  // changed (the server sends only that box, as gzip NIfTI) into NiiVue's drawing layer
  async function send(path, body, raw) {
    document.body.dataset.state = "prompting";
    const t0 = performance.now();
    try {
      const response = await api(path, raw ? {
        method: "POST", headers: { "Content-Type": "application/gzip" }, body: raw,
      } : {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
      });
      const summary = JSON.parse(response.headers.get("X-Medseg-Prompt") || "{}");
      const buf = await response.arrayBuffer();
      const t1 = performance.now();
      if (summary.roi) await paintBox(summary.roi[0], buf);
      summary.paintMs = performance.now() - t1;
      summary.bytes = buf.byteLength;
      state.hasMask = Boolean(summary.has_mask);
      summary.roundTripMs = performance.now() - t0;
      state.lastPrompt = summary;
      if (summary.legend) showMaskVolumes(summary.legend);
      state.promptCount = (state.promptCount || 0) + 1;
      document.getElementById("redo").disabled = !summary.redo;
      document.getElementById("undo").disabled = !summary.undo;
      const ml = summary.volume_ml === null ? "" : summary.volume_ml.toFixed(1) + " mL, ";
      document.getElementById("prompt-status").textContent = summary.has_mask
        ? ml + summary.voxels + " voxels, " + Math.round(summary.roundTripMs) + " ms" : "empty";
      setMessage("");
      return true;
    } catch (err) {
      setMessage("refused: " + err.message, true);
      return false;
    } finally {
      document.body.dataset.state = "ready";
    }
  }

  // ---- the drawing layer: NiiVue keeps it in its RAS-permuted voxel order (NVImage.img2RAS); the
  // server speaks the display grid's own voxel order (the NIfTI it sent). rasMap converts.
  function rasMap() {
    const b = window.medseg.nv.back;
    const perm = Array.from(b.permRAS);
    const d = [b.hdr.dims[1], b.hdr.dims[2], b.hdr.dims[3]];
    const ax = perm.map((p) => Math.abs(p) - 1);
    const o = ax.map((a) => d[a]);
    return { perm, d, ax, o };
  }

  function rasIndex(m, x, y, z) {
    const n = [x, y, z], c = [0, 0, 0];
    for (let r = 0; r < 3; r++) {
      const a = m.ax[r];
      c[r] = m.perm[r] > 0 ? n[a] : m.d[a] - 1 - n[a];
    }
    return c[0] + m.o[0] * (c[1] + m.o[1] * c[2]);
  }

  async function gunzip(buf) {
    const stream = new Blob([buf]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }

  async function gzip(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }

  // NIfTI-1 (uint8, 3D) from the server: its size and voxels
  function readNifti(ab) {
    const v = new DataView(ab);
    if (v.getInt32(0, true) !== 348 || v.getInt16(70, true) !== 2) throw new Error("not a uint8 NIfTI-1 box");
    const dims = [v.getInt16(42, true), v.getInt16(44, true), v.getInt16(46, true)];
    const offset = Math.round(v.getFloat32(108, true));
    return { dims, data: new Uint8Array(ab, offset, dims[0] * dims[1] * dims[2]) };
  }

  // NIfTI-1 (uint8, 3D) to the server: the box's voxels with the display grid's affine moved to its
  // first voxel (the server checks the affine against its grid before it takes the box)
  function writeNifti(data, dims, lo) {
    const A = state.info.display.affine;
    const buf = new ArrayBuffer(352 + data.length), v = new DataView(buf);
    v.setInt32(0, 348, true);
    v.setInt16(40, 3, true);
    for (let i = 0; i < 7; i++) v.setInt16(42 + 2 * i, i < 3 ? dims[i] : 1, true);
    v.setInt16(70, 2, true); // DT_UINT8
    v.setInt16(72, 8, true);
    v.setFloat32(76, 1, true);
    for (let c = 0; c < 3; c++) v.setFloat32(80 + 4 * c, Math.hypot(A[0][c], A[1][c], A[2][c]), true);
    v.setFloat32(108, 352, true);
    v.setFloat32(112, 1, true);
    v.setUint8(123, 2); // mm
    v.setInt16(254, 1, true); // sform_code: scanner
    for (let r = 0; r < 3; r++) {
      for (let c = 0; c < 3; c++) v.setFloat32(280 + 16 * r + 4 * c, A[r][c], true);
      v.setFloat32(280 + 16 * r + 12, A[r][3] + A[r][0] * lo[0] + A[r][1] * lo[1] + A[r][2] * lo[2], true);
    }
    [110, 43, 49, 0].forEach((ch, i) => v.setUint8(344 + i, ch)); // "n+1\0"
    new Uint8Array(buf, 352).set(data);
    return new Uint8Array(buf);
  }

  // paint a gzip NIfTI box (display grid, first voxel lo) into the drawing and its synced copy
  async function paintBox(lo, buf) {
    if (!buf.byteLength) return;
    const nv = window.medseg.nv, m = state.rasMap, bm = nv.drawBitmap, syn = state.synced;
    const { dims, data } = readNifti(await gunzip(buf));
    let n = 0;
    for (let z = 0; z < dims[2]; z++) {
      for (let y = 0; y < dims[1]; y++) {
        for (let x = 0; x < dims[0]; x++) {
          const i = rasIndex(m, lo[0] + x, lo[1] + y, lo[2] + z);
          bm[i] = syn[i] = data[n++];
        }
      }
    }
    nv.refreshDrawing(true);
  }

  // after a pen stroke: the box of voxels that differ from the server's label map goes to the
  // server (a brush / eraser edit, or scribbles for medseg.prompt.segment); what comes back is painted
  async function syncStroke() {
    const t0 = performance.now();
    const nv = window.medseg.nv, m = state.rasMap, bm = nv.drawBitmap, syn = state.synced;
    const lo = [Infinity, Infinity, Infinity], hi = [-1, -1, -1];
    const o0 = m.o[0], o01 = m.o[0] * m.o[1];
    for (let i = 0; i < bm.length; i++) {
      if (bm[i] === syn[i]) continue;
      const z = Math.floor(i / o01), rest = i - z * o01, y = Math.floor(rest / o0), x = rest - y * o0;
      const c = [x, y, z];
      for (let r = 0; r < 3; r++) { if (c[r] < lo[r]) lo[r] = c[r]; if (c[r] > hi[r]) hi[r] = c[r]; }
    }
    if (hi[0] < 0) return;
    const nlo = [0, 0, 0], nhi = [0, 0, 0];
    for (let r = 0; r < 3; r++) {
      const a = m.ax[r];
      if (m.perm[r] > 0) { nlo[a] = lo[r]; nhi[a] = hi[r]; } else { nlo[a] = m.d[a] - 1 - hi[r]; nhi[a] = m.d[a] - 1 - lo[r]; }
    }
    const dims = [0, 1, 2].map((a) => nhi[a] - nlo[a] + 1);
    const data = new Uint8Array(dims[0] * dims[1] * dims[2]);
    const t = tool(), scribble = t === "scribble-object" || t === "scribble-background";
    const visit = (fn) => {
      let n = 0;
      for (let z = 0; z < dims[2]; z++) {
        for (let y = 0; y < dims[1]; y++) {
          for (let x = 0; x < dims[0]; x++) fn(rasIndex(m, nlo[0] + x, nlo[1] + y, nlo[2] + z), n++);
        }
      }
    };
    visit((i, n) => {
      const v = bm[i];
      if (scribble) data[n] = v === SCRIBBLE_OBJECT ? 1 : (v === SCRIBBLE_BACKGROUND ? 2 : 0);
      else data[n] = v === SCRIBBLE_OBJECT || v === SCRIBBLE_BACKGROUND ? syn[i] : v;
    });
    const body = await gzip(writeNifti(data, dims, nlo));
    const value = structure();
    state.lastStroke = { lo: nlo, dims, tool: t, value };
    const path = scribble ? "/api/scribble?value=" + value + "&refine=" + (state.hasMask ? 1 : 0) : "/api/edit";
    await send(path, null, body);
    visit((i) => { bm[i] = syn[i]; }); // what the server did not take is taken back from the page
    nv.refreshDrawing(true);
    state.lastStrokeMs = performance.now() - t0;
  }

  function onDrawingChanged(action) {
    if (action !== "draw") return;
    // NiiVue 0.69 draws each pen segment from the new point back to the last one, leaving out the
    // new point, so a stroke's last voxel is never painted; the pen is still there when this runs
    const nv = window.medseg.nv, at = nv.drawPenLocation;
    if (at && Number.isFinite(at[0]) && nv.drawPenAxCorSag >= 0) {
      nv.drawPt(at[0], at[1], at[2], nv.opts.penValue);
      nv.refreshDrawing(true);
    }
    state.strokes = state.strokes.then(syncStroke).catch((err) => setMessage("stroke refused: " + err.message, true));
  }

  function structure() {
    return Number(document.getElementById("structure").value || 1);
  }

  // a box starts a new object; a click corrects the current mask (or, with none yet, starts one)
  function onDragRelease(p) {
    if (tool() !== "box") return;
    const box = boxFromDrag(p);
    if (!box) return;
    state.box = box; state.points = []; state.labels = [];
    send("/api/prompt", { box, value: structure() });
  }

  function onPointerUp(ev) {
    const t = tool();
    if (t !== "positive" && t !== "negative" && t !== "extreme") return;
    const nv = window.medseg.nv;
    const rect = nv.canvas.getBoundingClientRect();
    const dpr = nv.uiData.dpr || window.devicePixelRatio || 1;
    const frac = nv.canvasPos2frac([(ev.clientX - rect.left) * dpr, (ev.clientY - rect.top) * dpr]);
    if (frac[0] < 0) return;
    const mm = nv.frac2mm(frac);
    const point = [mm[0], mm[1], mm[2]], label = t === "positive" ? 1 : 0;
    if (t === "extreme") {
      // DEXTR: the object's extreme points, 6 in 3D (4 on a 2D image); sent when all are in
      const need = state.info.shape.length === 3 && state.info.shape[2] > 1 ? 6 : 4;
      state.extreme = (state.extreme || []).concat([point]);
      document.getElementById("prompt-status").textContent = "extreme points " + state.extreme.length + " / " + need;
      if (state.extreme.length < need) return;
      const extreme = state.extreme;
      state.extreme = [];
      state.box = null; state.points = []; state.labels = [];
      send("/api/prompt", { extreme_points: extreme, value: structure() });
      return;
    }
    state.points.push(point); state.labels.push(label);
    if (state.hasMask) send("/api/prompt", { points: [point], labels: [label], refine: true, value: structure() });
    else send("/api/prompt", { points: state.points, labels: state.labels, value: structure() });
  }

  // a reduced study: the source-grid voxels of a box around the crosshair (GET /api/fullres, at most
  // info.full_side per axis) in a pane of their own, with the labels and the mask as they are now
  async function fullResolution() {
    const mm = state.location ? state.location.mm : null;
    if (!mm) { setMessage("move the crosshair to the place to see first", true); return false; }
    const q = "x=" + mm[0] + "&y=" + mm[1] + "&z=" + mm[2];
    const crop = async (role, options) => {
      const r = await api("/api/fullres?role=" + role + "&" + q);
      const box = JSON.parse(r.headers.get("X-Medseg-Crop") || "{}");
      const img = await nvlib.NVImage.loadFromUrl(Object.assign({ url: await r.arrayBuffer(), name: role + "-full.nii.gz" },
                                                                 options || {}));
      return { img, box };
    };
    try {
      document.getElementById("pane-full").hidden = false;
      let nv = window.medseg.nvFull;
      if (!nv) { nv = makeNiivue("gl-full"); window.medseg.nvFull = nv; }
      while (nv.volumes.length) nv.removeVolume(nv.volumes[nv.volumes.length - 1]);
      const win = state.window || Object.values(state.info.presets)[0];
      const { img, box } = await crop("image", { colormap: "gray", cal_min: win[0], cal_max: win[1] });
      nv.addVolume(img);
      const opacity = Number(document.getElementById("opacity").value);
      if (state.info.has_labels && !state.info.edit_labels) {
        const lab = (await crop("labels", { opacity })).img;
        lab.setColormapLabel(lut(state.info.labels));
        nv.addVolume(lab);
      }
      if (state.hasMask) {
        const m = (await crop("mask", { opacity })).img;
        m.setColormapLabel(lut(state.info.mask_legend));
        nv.addVolume(m);
      }
      nv.scene.crosshairPos = nv.mm2frac(mm);
      nv.drawScene();
      state.fullres = { mm, lo: box.lo, shape: box.shape };
      document.getElementById("title-full").textContent = "full resolution: " + box.shape.join("x") +
        " voxels around RAS " + mm.map((v) => v.toFixed(1)).join(", ") + " mm (view only)";
      state.fullresCount = (state.fullresCount || 0) + 1;
      return true;
    } catch (err) {
      setMessage("full resolution refused: " + err.message, true);
      return false;
    }
  }

  async function save(format) {
    try {
      const r = await api("/api/save", { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify({ format: format || "nifti" }) });
      state.lastSave = await r.json();
      setMessage("saved " + state.lastSave.saved);
    } catch (err) {
      setMessage("save refused: " + err.message, true);
    }
  }

  function drawLut(entries) {
    // 0 transparent; each structure its colour; the two scribble values green and magenta
    const R = [0], G = [0], B = [0], A = [0], I = [0], labels = [""];
    const add = (v, rgb, name) => { R.push(rgb[0]); G.push(rgb[1]); B.push(rgb[2]); A.push(255); I.push(v); labels.push(name); };
    for (const e of entries) add(e.value, e.colour, e.name);
    add(SCRIBBLE_OBJECT, [0, 220, 0], "object scribble");
    add(SCRIBBLE_BACKGROUND, [230, 0, 230], "background scribble");
    return { R, G, B, A, I, labels };
  }

  async function setupDrawing(info) {
    const nv = window.medseg.nv;
    nv.createEmptyDrawing();
    nv.setDrawColormap(drawLut(info.mask_legend));
    nv.drawOpacity = 0.6;
    state.rasMap = rasMap();
    state.synced = new Uint8Array(nv.drawBitmap.length);
    const m = state.rasMap;
    if (nv.drawBitmap.length !== m.o[0] * m.o[1] * m.o[2]) throw new Error("drawing and image grids differ");
    const select = document.getElementById("structure");
    for (const e of info.mask_legend) {
      const o = document.createElement("option");
      o.value = String(e.value); o.textContent = e.name; select.appendChild(o);
    }
    select.hidden = info.mask_legend.length < 2;
    if (info.edit_labels) {  // a prediction under review: the editable map starts as it
      await paintBox([0, 0, 0], await (await api("/volume/mask")).arrayBuffer());
      state.hasMask = true;
    }
    nv.onDrawingChanged = onDrawingChanged;
    document.getElementById("undo").disabled = !info.undo;
    document.getElementById("redo").disabled = !info.redo;
  }

  async function setupReview() {
    const bar = document.getElementById("review");
    bar.hidden = false;
    const show = (listing) => {
      state.review = listing;
      const c = listing.cases[listing.current];
      const done = listing.cases.filter((x) => x.decision).length;
      document.getElementById("review-status").textContent = "case " + (listing.current + 1) + " of " + listing.count +
        " (" + c.key + "): " + (c.decision || "not reviewed") + "; " + done + " reviewed";
      document.getElementById("prev").disabled = listing.current === 0;
      document.getElementById("next").disabled = listing.current === listing.count - 1;
    };
    show(await (await api("/api/review")).json());
    const post = async (path, body) => (await api(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
    const open = async (index) => {
      try {
        await post("/api/review/open", { index });
        window.location.reload();  // the page loads the case the server now holds
      } catch (err) { setMessage("could not open: " + err.message, true); }
    };
    document.getElementById("prev").addEventListener("click", () => open(state.review.current - 1));
    document.getElementById("next").addEventListener("click", () => open(state.review.current + 1));
    const decide = async (decision) => {
      await state.strokes;
      try {
        show(await post("/api/review/decide", { decision }));
        state.decided = (state.decided || 0) + 1;
        setMessage("recorded: " + state.review.cases[state.review.current].decision);
      } catch (err) { setMessage("not recorded: " + err.message, true); }
    };
    document.getElementById("accept").addEventListener("click", () => decide("accept"));
    document.getElementById("reject").addEventListener("click", () => decide("reject"));
  }

  async function main() {
    const info = await (await api("/api/info")).json();
    state.info = info;
    const nv = makeNiivue("gl-main");
    window.medseg.nv = nv;
    const presets = Object.entries(info.presets);
    const select = document.getElementById("preset");
    for (const [name] of presets) {
      const o = document.createElement("option");
      o.value = name; o.textContent = name; select.appendChild(o);
    }
    const first = presets[0][1];
    const image = await volume("image", { colormap: "gray", cal_min: first[0], cal_max: first[1] });
    nv.addVolume(image);
    if (info.has_labels && !info.edit_labels) {
      const lab = await volume("labels", { opacity: 0.5 });
      lab.setColormapLabel(lut(info.labels));
      nv.addVolume(lab);
    }
    if (info.display.reduced) {
      const note = document.getElementById("reduced");
      note.hidden = false;
      document.getElementById("reduced-text").textContent = "large study: shown at every " +
        info.display.factor.join("/") + "th voxel (" + info.display.shape.join("x") +
        "); prompts and saves use the full grid";
      document.getElementById("fullres").addEventListener("click", fullResolution);
    }
    for (const th of document.querySelectorAll("thead th:last-child")) th.textContent = info.volume_unit;
    fillLegend("legend", info.labels);
    document.getElementById("prompt-method").textContent = "prompts: " + info.prompt_method_label;
    if (info.has_reference) {
      document.getElementById("pane-ref").hidden = false;
      document.getElementById("ref-legend").hidden = false;
      document.getElementById("ref-legend-title").hidden = false;
      const nvRef = makeNiivue("gl-ref");
      window.medseg.nvRef = nvRef;
      nvRef.addVolume(await volume("image", { colormap: "gray", cal_min: first[0], cal_max: first[1] }));
      const ref = await volume("reference", { opacity: 0.5 });
      ref.setColormapLabel(lut(info.reference));
      nvRef.addVolume(ref);
      nv.broadcastTo(nvRef, { "2d": true, "3d": true });
      nvRef.broadcastTo(nv, { "2d": true, "3d": true });
      fillLegend("ref-legend", info.reference);
    }
    await setupDrawing(info);
    showMaskVolumes(info.mask_volumes);
    nv.onLocationChange = (loc) => {
      const mm = loc.mm;
      const v = loc.values && loc.values.length ? loc.values[0].value : NaN;
      document.getElementById("location").textContent =
        "RAS " + [mm[0], mm[1], mm[2]].map((x) => x.toFixed(1)).join(", ") + " mm; voxel " +
        Array.from(loc.vox).join(", ") + "; value " + (Number.isFinite(v) ? v.toFixed(0) : "");
      state.location = { mm: [mm[0], mm[1], mm[2]], vox: Array.from(loc.vox), value: v };
    };
    nv.onDragRelease = onDragRelease;
    nv.canvas.addEventListener("pointerup", onPointerUp);
    select.addEventListener("change", () => {
      const r = info.presets[select.value];
      state.window = r;
      applyWindow(nv, r); applyWindow(window.medseg.nvRef, r); applyWindow(window.medseg.nvFull, r);
    });
    document.getElementById("opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value)));
    document.getElementById("outline").addEventListener("change", (e) => setOutline(e.target.checked));
    for (const r of document.querySelectorAll("input[name=tool]")) r.addEventListener("change", applyTool);
    document.getElementById("pen-size").addEventListener("change", applyTool);
    document.getElementById("structure").addEventListener("change", applyTool);
    const after = (fn) => async () => { await state.strokes; return fn(); };
    document.getElementById("undo").addEventListener("click", after(() => send("/api/undo")));
    document.getElementById("redo").addEventListener("click", after(() => send("/api/redo")));
    document.getElementById("clear").addEventListener("click", after(async () => {
      if (await send("/api/clear")) { state.box = null; state.points = []; state.labels = []; }
    }));
    const saveButton = document.getElementById("save");
    saveButton.disabled = !info.can_save;
    saveButton.hidden = Boolean(info.review);
    saveButton.addEventListener("click", after(() => save("nifti")));
    const segButton = document.getElementById("save-seg");
    segButton.hidden = !info.can_save_seg;
    segButton.addEventListener("click", after(() => save("dicom-seg")));
    const rtButton = document.getElementById("save-rt");
    rtButton.hidden = !info.can_save_seg;
    rtButton.addEventListener("click", after(() => save("rtstruct")));
    if (info.review) await setupReview();
    applyTool();
    nv.drawScene();
    document.body.dataset.state = "ready";
  }

  function setWindow(lo, hi) {
    state.window = [lo, hi];
    applyWindow(window.medseg.nv, [lo, hi]);
    applyWindow(window.medseg.nvRef, [lo, hi]);
    applyWindow(window.medseg.nvFull, [lo, hi]);
  }

  window.medseg = { state, goto, setWindow, setOpacity, setOutline, setTool: (t) => {
    document.querySelector("input[name=tool][value=" + t + "]").checked = true; applyTool();
  }, save, send, boxFromDrag, fullResolution, rasIndex: (x, y, z) => rasIndex(state.rasMap, x, y, z),
  strokesDone: () => state.strokes };
  window.medseg.ready = main().catch((err) => {
    setMessage("could not load: " + err.message, true);
    document.body.dataset.state = "error";
  });
})();
