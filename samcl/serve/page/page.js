// The click-to-segment page: plain JavaScript, no build step, nothing fetched but this server's own API.
// State: one image (its id on the server), a list of prompt actions (points and boxes, for undo), the last mask.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const canvases = { image: $("image"), mask: $("mask"), marks: $("marks") };
  const state = { file: null, imageId: null, width: 0, height: 0, actions: [], response: null, seq: 0, requests: 0 };
  let token = sessionStorage.getItem("samcl-token") || "";
  window.samclPage = state;  // for tests and the curious

  function setStatus(text, error = false) { $("status").textContent = text; $("status").className = error ? "error" : ""; }
  function busy(on) { document.body.dataset.state = on ? "busy" : (state.imageId ? "ready" : "empty"); }

  async function api(path, options = {}, retried = false) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers["Authorization"] = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 401 && !retried) {
      token = window.prompt("This server needs a token:") || "";
      sessionStorage.setItem("samcl-token", token);
      return api(path, options, true);
    }
    const body = await response.json().catch(() => ({ error: { message: "bad response " + response.status } }));
    if (!response.ok) { const e = new Error(body.error ? body.error.message : response.statusText); e.code = body.error && body.error.code; throw e; }
    return body;
  }

  async function loadDomains() {
    try {
      const info = await api("v1/domains");
      const select = $("domain");
      for (const name of [...info.domains.filter((d) => d.kind === "module").map((d) => d.name), "base"]) {
        const option = document.createElement("option"); option.value = option.textContent = name; select.appendChild(option);
      }
    } catch (e) { setStatus("domains: " + e.message, true); }
  }

  async function upload(file) {
    const body = await api("v1/images", { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
    state.imageId = body.image_id;
    return body;
  }

  // The image as large as the window allows, both ways, aspect kept: a small image is scaled up, a large one
  // down, and the status line below it stays on screen. The overlays follow the image canvas (CSS 100%).
  function fit() {
    if (!state.width) return;
    const main = $("drop"), style = getComputedStyle(main);
    const chrome = (a, b) => parseFloat(style[a]) + parseFloat(style[b]);
    const across = chrome("paddingLeft", "paddingRight") + chrome("borderLeftWidth", "borderRightWidth")
      + chrome("marginLeft", "marginRight");
    const down = chrome("paddingTop", "paddingBottom") + chrome("borderTopWidth", "borderBottomWidth");
    const status = $("status"), statusStyle = getComputedStyle(status);
    const below = status.offsetHeight + parseFloat(statusStyle.marginTop) + parseFloat(statusStyle.marginBottom);
    const top = main.getBoundingClientRect().top + window.scrollY;
    const width = Math.max(32, document.documentElement.clientWidth - across);
    const height = Math.max(32, window.innerHeight - top - down - below - 2);
    const scale = Math.min(width / state.width, height / state.height);
    canvases.image.style.width = Math.floor(state.width * scale) + "px";
    canvases.image.style.height = Math.floor(state.height * scale) + "px";
  }
  window.addEventListener("resize", fit);

  async function openImage(file) {
    if (!file) return;
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = async () => {
      state.file = file; state.width = img.naturalWidth; state.height = img.naturalHeight;
      state.actions = []; state.response = null; state.imageId = null;
      for (const c of Object.values(canvases)) { c.width = img.naturalWidth; c.height = img.naturalHeight; }
      canvases.image.getContext("2d").drawImage(img, 0, 0);
      clearMask(); drawMarks(); $("stage").hidden = false; $("placeholder").hidden = true; fit();
      busy(true); setStatus("uploading…");
      try {
        const info = await upload(file);
        setStatus(`${info.width}x${info.height} · selector picks ${info.domain}` + (info.domain_score == null ? "" : ` (${info.domain_score.toFixed(3)})`) + " · click to segment");
      } catch (e) { setStatus("upload failed: " + e.message, true); }
      busy(false); buttons();
    };
    img.onerror = () => setStatus("this browser cannot show that file as an image", true);
    img.src = url;
  }

  function clearMask() { canvases.mask.getContext("2d").clearRect(0, 0, canvases.mask.width, canvases.mask.height); }

  function drawMarks(dragBox) {
    const ctx = canvases.marks.getContext("2d");
    ctx.clearRect(0, 0, canvases.marks.width, canvases.marks.height);
    const r = Math.max(3, Math.round(Math.min(state.width, state.height) / 60));
    for (const a of state.actions) {
      if (a.kind === "point") {
        ctx.beginPath(); ctx.arc(a.x, a.y, r, 0, 2 * Math.PI);
        ctx.fillStyle = a.label ? "#16a34a" : "#dc2626"; ctx.fill(); ctx.lineWidth = Math.max(1, r / 3); ctx.strokeStyle = "#fff"; ctx.stroke();
      }
    }
    const box = dragBox || currentBox();
    if (box) { ctx.lineWidth = Math.max(1, r / 2); ctx.strokeStyle = "#facc15"; ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]); }
  }

  function currentBox() { const boxes = state.actions.filter((a) => a.kind === "box"); return boxes.length ? boxes[boxes.length - 1].box : null; }

  function request() {
    const points = state.actions.filter((a) => a.kind === "point");
    return { image_id: state.imageId, points: points.map((p) => [p.x, p.y]), labels: points.map((p) => p.label),
             box: currentBox(), force: $("domain").value || null, mask_format: "png" };
  }

  async function segment() {
    drawMarks(); buttons();
    if (!state.actions.length) { clearMask(); state.response = null; setStatus("cleared"); buttons(); return; }
    const seq = ++state.seq; busy(true);
    try {
      let body;
      try { body = await api("v1/segment", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request()) }); }
      catch (e) {  // another server process, or evicted: upload again and retry once
        if (e.code !== "unknown_image") throw e;
        await upload(state.file);
        body = await api("v1/segment", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request()) });
      }
      if (seq !== state.seq) return;  // a newer click's answer is on its way
      state.response = body; state.requests++;
      await drawMask(body.mask.data);
      const domainScore = body.domain_score == null ? "n/a" : body.domain_score.toFixed(3);
      setStatus(`domain ${body.domain} · domain score ${domainScore} · predicted IoU ${body.score.toFixed(3)} · ${body.timings.total_ms.toFixed(0)} ms`);
    } catch (e) { if (seq === state.seq) setStatus("segment failed: " + e.message, true); }
    if (seq === state.seq) busy(false);
    buttons();
  }

  function drawMask(base64) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => {
        const ctx = canvases.mask.getContext("2d");
        ctx.clearRect(0, 0, state.width, state.height); ctx.drawImage(img, 0, 0);
        const pixels = ctx.getImageData(0, 0, state.width, state.height);
        const d = pixels.data;
        for (let i = 0; i < d.length; i += 4) {
          const on = d[i] > 127;
          d[i] = 30; d[i + 1] = 144; d[i + 2] = 255; d[i + 3] = on ? 140 : 0;
        }
        ctx.putImageData(pixels, 0, 0); resolve();
      };
      img.onerror = () => reject(new Error("the mask PNG did not decode"));
      img.src = "data:image/png;base64," + base64;
    });
  }

  function buttons() {
    $("undo").disabled = !state.actions.length; $("clear").disabled = !state.actions.length;
    $("download").disabled = !state.response;
  }

  function imagePoint(event) {
    const rect = canvases.marks.getBoundingClientRect();
    const x = (event.clientX - rect.left) * state.width / rect.width, y = (event.clientY - rect.top) * state.height / rect.height;
    return [Math.min(Math.max(x, 0), state.width - 0.01), Math.min(Math.max(y, 0), state.height - 0.01)];
  }

  let down = null;
  canvases.marks.addEventListener("contextmenu", (e) => e.preventDefault());
  canvases.marks.addEventListener("mousedown", (e) => { if (state.imageId) down = { at: imagePoint(e), button: e.button, shift: e.shiftKey, cx: e.clientX, cy: e.clientY }; });
  canvases.marks.addEventListener("mousemove", (e) => {
    if (!down || down.button !== 0 || Math.hypot(e.clientX - down.cx, e.clientY - down.cy) < 5) return;
    const [x, y] = imagePoint(e);
    drawMarks([Math.min(down.at[0], x), Math.min(down.at[1], y), Math.max(down.at[0], x), Math.max(down.at[1], y)]);
  });
  window.addEventListener("mouseup", (e) => {
    if (!down) return;
    const start = down; down = null;
    if (start.button === 0 && Math.hypot(e.clientX - start.cx, e.clientY - start.cy) >= 5) {
      const [x, y] = imagePoint(e);
      state.actions.push({ kind: "box", box: [Math.min(start.at[0], x), Math.min(start.at[1], y), Math.max(start.at[0], x), Math.max(start.at[1], y)] });
    } else if (start.button === 0 || start.button === 2) {
      state.actions.push({ kind: "point", x: start.at[0], y: start.at[1], label: start.button === 2 || start.shift ? 0 : 1 });
    } else return;
    segment();
  });

  $("file").addEventListener("change", (e) => openImage(e.target.files[0]));
  $("undo").addEventListener("click", () => { state.actions.pop(); segment(); });
  $("clear").addEventListener("click", () => { state.actions = []; segment(); });
  $("domain").addEventListener("change", () => { if (state.actions.length) segment(); });
  $("download").addEventListener("click", () => {
    const link = document.createElement("a");
    link.href = "data:image/png;base64," + state.response.mask.data; link.download = "mask.png"; link.click();
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); openImage(e.dataTransfer.files[0]); });
  loadDomains();
})();
