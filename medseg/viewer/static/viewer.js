// medseg view: the page. NiiVue draws; this file fetches volumes from the loopback server (the
// token travels in a header, never in a volume URL), wires the controls and sends prompts.
// World coordinates are NiiVue's millimetres, i.e. the NIfTI sform the server wrote: RAS+.
"use strict";
(function () {
  const token = new URLSearchParams(window.location.search).get("token") || "";
  const nvlib = window.niivue;
  const RAS_LETTERS = true; // display in the radiological convention: the patient's right on the screen's left
  const state = { info: null, box: null, points: [], labels: [], history: [], maskIndex: -1, maskRefIndex: -1,
                  lastPrompt: null, lastSave: null, errors: [] };

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

  function applyWindow(nv, range) {
    if (!nv || !nv.volumes.length) return;
    nv.volumes[0].cal_min = range[0];
    nv.volumes[0].cal_max = range[1];
    nv.updateGLVolume();
  }

  function setOpacity(value) {
    for (const nv of [window.medseg.nv, window.medseg.nvRef]) {
      if (!nv) continue;
      for (let i = 1; i < nv.volumes.length; i++) nv.setOpacity(i, value);
    }
  }

  function setOutline(on) {
    for (const nv of [window.medseg.nv, window.medseg.nvRef]) {
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

  function applyTool() {
    const nv = window.medseg.nv;
    const t = tool();
    nv.opts.dragModePrimary = t === "box" ? nvlib.DRAG_MODE.roiSelection
      : (t === "navigate" ? nvlib.DRAG_MODE.crosshair : nvlib.DRAG_MODE.none);
    nv.opts.dragMode = t === "box" ? nvlib.DRAG_MODE.roiSelection : nvlib.DRAG_MODE.contrast;
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

  // POST a prompt (or undo / clear) and show the mask that comes back
  async function send(path, body) {
    document.body.dataset.state = "prompting";
    const t0 = performance.now();
    try {
      const response = await api(path, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
      });
      const summary = JSON.parse(response.headers.get("X-Medseg-Prompt") || "{}");
      const buf = await response.arrayBuffer();
      if (summary.has_mask) await showMask(buf); else await dropMask();
      state.hasMask = Boolean(summary.has_mask);
      summary.roundTripMs = performance.now() - t0;
      state.lastPrompt = summary;
      state.promptCount = (state.promptCount || 0) + 1;
      const ml = summary.volume_ml === null ? "" : summary.volume_ml.toFixed(1) + " mL, ";
      document.getElementById("prompt-status").textContent = summary.has_mask
        ? ml + summary.voxels + " voxels, " + Math.round(summary.roundTripMs) + " ms" : "no prompt";
      setMessage("");
      return true;
    } catch (err) {
      setMessage("prompt refused: " + err.message, true);
      return false;
    } finally {
      document.body.dataset.state = "ready";
    }
  }

  async function dropMask() {
    const nv = window.medseg.nv;
    if (state.maskIndex >= 0) {
      nv.removeVolumeByIndex(state.maskIndex);
      state.maskIndex = -1;
    }
  }

  async function showMask(buf) {
    const nv = window.medseg.nv;
    await dropMask();
    const img = await nvlib.NVImage.loadFromUrl({ url: buf, name: "mask.nii.gz", opacity: 0.6 });
    // the prompt's mask in one colour no label map uses here: yellow
    img.setColormapLabel({ R: [0, 255], G: [0, 255], B: [0, 0], A: [0, 255], I: [0, 1], labels: ["", "prompt"] });
    nv.addVolume(img);
    state.maskIndex = nv.volumes.length - 1;
  }

  function remember() {
    state.history.push(JSON.stringify({ box: state.box, points: state.points, labels: state.labels }));
  }

  // a box starts a new object; a click corrects the current mask (or, with none yet, starts one)
  function onDragRelease(p) {
    if (tool() !== "box") return;
    const box = boxFromDrag(p);
    if (!box) return;
    remember();
    state.box = box; state.points = []; state.labels = [];
    send("/api/prompt", { box });
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
      remember();
      state.box = null; state.points = []; state.labels = [];
      send("/api/prompt", { extreme_points: extreme });
      return;
    }
    remember();
    state.points.push(point); state.labels.push(label);
    if (state.hasMask) send("/api/prompt", { points: [point], labels: [label], refine: true });
    else send("/api/prompt", { points: state.points, labels: state.labels });
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
    if (info.has_labels) {
      const lab = await volume("labels", { opacity: 0.5 });
      lab.setColormapLabel(lut(info.labels));
      nv.addVolume(lab);
    }
    for (const th of document.querySelectorAll("thead th:last-child")) th.textContent = info.volume_unit;
    fillLegend("legend", info.labels);
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
      applyWindow(nv, r); applyWindow(window.medseg.nvRef, r);
    });
    document.getElementById("opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value)));
    document.getElementById("outline").addEventListener("change", (e) => setOutline(e.target.checked));
    for (const r of document.querySelectorAll("input[name=tool]")) r.addEventListener("change", applyTool);
    document.getElementById("undo").addEventListener("click", async () => {
      if (!state.history.length) return;
      if (await send("/api/undo")) Object.assign(state, JSON.parse(state.history.pop()));
    });
    document.getElementById("clear").addEventListener("click", async () => {
      if (!state.hasMask) return;
      remember();
      if (await send("/api/clear")) { state.box = null; state.points = []; state.labels = []; }
    });
    const saveButton = document.getElementById("save");
    saveButton.disabled = !info.can_save;
    saveButton.addEventListener("click", () => save("nifti"));
    const segButton = document.getElementById("save-seg");
    segButton.hidden = !info.can_save_seg;
    segButton.addEventListener("click", () => save("dicom-seg"));
    const rtButton = document.getElementById("save-rt");
    rtButton.hidden = !info.can_save_seg;
    rtButton.addEventListener("click", () => save("rtstruct"));
    applyTool();
    nv.drawScene();
    document.body.dataset.state = "ready";
  }

  function setWindow(lo, hi) {
    applyWindow(window.medseg.nv, [lo, hi]);
    applyWindow(window.medseg.nvRef, [lo, hi]);
  }

  window.medseg = { state, goto, setWindow, setOpacity, setOutline, setTool: (t) => {
    document.querySelector("input[name=tool][value=" + t + "]").checked = true; applyTool();
  }, save, send, boxFromDrag };
  window.medseg.ready = main().catch((err) => {
    setMessage("could not load: " + err.message, true);
    document.body.dataset.state = "error";
  });
})();
