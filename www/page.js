// index.html: one machine with the options of the query string, exposed as `window.wasm86`, and
// the inspector beside it (the Inspector button, or ?inspect=1).

import { MachineController, optionsFromQuery } from "./wasm86.js";
import { ScreenView, bindKeyboard, bindMouse, createTerminal, statusText, toggleFullscreen } from "./ui.js";
import { InspectorView } from "./inspector.js";

/** The page's element with this id (every id used here is in the page's markup).
 * @param {string} id
 * @returns {any} */
const $ = (id) => document.getElementById(id);

/** An exception's message.
 * @param {unknown} err */
const errorText = (err) => (err instanceof Error ? err.message : String(err));

/** @type {MachineController} */
let controller;
try {
  controller = new MachineController(optionsFromQuery());
} catch (err) {
  controller = MachineController.failed(`Bad page option: ${errorText(err)}`);
}
/** @type {any} */ (window).wasm86 = controller;

// ---- views ----

const screenBox = $("screen-box");
const screen = new ScreenView($("screen"), controller, {
  box: screenBox,
  // Keep the toolbar and status line in view on short windows.
  maxHeight: () => Math.max(240, innerHeight - 170),
});
// Opening xterm.js takes a few tens of milliseconds: in a task of its own, after the machine has
// started loading (its first output comes seconds later; anything earlier is replayed).
setTimeout(() => {
  const { term } = createTerminal($("terminal"), controller, { fontSize: 13 });
  if (controller.serialText()) term.write(controller.serialText());
});
bindKeyboard(controller, [$("screen"), $("text-input")], { textInput: $("text-input") });
bindMouse(controller, $("screen"));

// ---- status, errors, notes ----

let statusQueued = false;
function refreshStatus() {
  if (statusQueued) return;
  statusQueued = true;
  requestAnimationFrame(() => {
    statusQueued = false;
    $("status").textContent = statusText(controller);
    const state = controller.state;
    document.body.dataset.state = state;
    $("pause").disabled = !(state === "running" || state === "paused");
    $("pause").textContent = state === "paused" ? "Resume" : "Pause";
    $("reset").disabled = state === "idle" || state === "loading";
    $("save").disabled = !(state === "running" || state === "paused");
    $("record").disabled = !(state === "running" || state === "paused");
  });
}
for (const ev of ["state", "stats", "progress", "restart"]) controller.addEventListener(ev, refreshStatus);
controller.addEventListener("restart", () => showRecording(false));

function showError() {
  const message = controller.error();
  $("error").hidden = message === null;
  $("error").textContent = message === null ? "" : message;
}
controller.addEventListener("error", showError);
controller.addEventListener("restart", showError);

/** @param {string} text */
function showNote(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("notes").append(li);
  $("notes").hidden = false;
  // Only the latest few matter.
  while ($("notes").children.length > 5) $("notes").firstElementChild.remove();
}
controller.addEventListener("message", (e) => showNote(e.detail.text));
controller.addEventListener("restart", () => {
  $("notes").replaceChildren();
  $("notes").hidden = true;
});

// ---- controls ----

$("pause").onclick = () => (controller.state === "paused" ? controller.resume() : controller.pause());
$("reset").onclick = () => controller.reset();
$("fullscreen").onclick = () => toggleFullscreen(screenBox).catch((err) => console.warn("fullscreen:", err));
document.addEventListener("fullscreenchange", () => {
  screen.fit();
  if (document.fullscreenElement === screenBox) $("screen").focus();
});
$("keyboard").onclick = () => $("text-input").focus();

// ---- the inspector, beside the machine (?inspect=1 opens it at load) ----

/** @type {InspectorView | null} */
let inspector = null;
/** @param {boolean} open */
function showInspector(open) {
  // Made on first use; hidden, it asks the worker nothing.
  if (open && !inspector) inspector = new InspectorView($("inspector-pane"), controller);
  $("inspector-pane").hidden = !open;
  document.body.classList.toggle("inspecting", open);
  $("inspect").setAttribute("aria-pressed", String(open));
  $("inspect").classList.toggle("active", open);
  // The screen's box changed size.
  requestAnimationFrame(() => screen.fit());
}
$("inspect").onclick = () => showInspector($("inspector-pane").hidden);
if (["1", "on", "true", "yes"].includes((new URLSearchParams(location.search).get("inspect") || "").toLowerCase())) {
  showInspector(true);
}

// ---- saved states: a download, and the browser's own storage (IndexedDB) ----

/** The page's saved machine in this browser: {state: ArrayBuffer, savedAt: ms}, or null. */
const stored = {
  open() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open("wasm86", 1);
      req.onupgradeneeded = () => req.result.createObjectStore("states");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  },
  /**
   * @param {IDBTransactionMode} mode
   * @param {(store: IDBObjectStore) => IDBRequest} f
   * @returns {Promise<any>}
   */
  async run(mode, f) {
    const db = await this.open();
    try {
      return await new Promise((resolve, reject) => {
        const tx = db.transaction("states", mode);
        const req = f(tx.objectStore("states"));
        tx.oncomplete = () => resolve(req.result);
        tx.onerror = tx.onabort = () => reject(tx.error);
      });
    } finally {
      db.close();
    }
  },
  get() {
    return this.run("readonly", (s) => s.get("page")).then((v) => v || null);
  },
  /** @param {ArrayBuffer} state */
  put(state) {
    return this.run("readwrite", (s) => s.put({ state, savedAt: Date.now() }, "page"));
  },
};

async function showStored() {
  let saved = null;
  try {
    saved = await stored.get();
  } catch {
    // No IndexedDB (a private window may refuse it): the download still works.
  }
  $("resume-saved").hidden = !saved;
  if (saved) $("resume-saved").title = `Start the machine saved in this browser on ${new Date(saved.savedAt).toLocaleString()}`;
}

$("save").onclick = async () => {
  let state;
  try {
    state = await controller.saveState();
  } catch (err) {
    showNote(`Save failed: ${errorText(err)}`);
    return;
  }
  try {
    await stored.put(state);
    await showStored();
  } catch (err) {
    showNote(`The browser did not keep the saved machine (${errorText(err)}); it is downloaded.`);
  }
  download(state, "state");
};

/** Offer `bytes` as a download named wasm86-<time>.<extension>. */
/** @param {ArrayBuffer} bytes @param {string} extension */
function download(bytes, extension) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  a.download = `wasm86-${new Date().toISOString().replace(/[:.]/g, "-")}.${extension}`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// ---- recording: Record starts, Stop recording downloads the file for `wasm86 --replay` ----

let recording = false;
/** @param {boolean} on */
function showRecording(on) {
  recording = on;
  $("record").textContent = on ? "Stop recording" : "Record";
  $("record").classList.toggle("active", on);
}
$("record").onclick = async () => {
  try {
    if (!recording) {
      await controller.startRecording();
      showRecording(true);
      showNote("Recording: everything from now on goes into the recording; press Stop recording to download it.");
      return;
    }
    showRecording(false);
    const rec = await controller.stopRecording();
    if (rec) download(rec, "rec");
  } catch (err) {
    showRecording(false);
    showNote(`Recording failed: ${errorText(err)}`);
  }
};
$("resume-saved").onclick = async () => {
  const saved = await stored.get().catch(() => null);
  if (saved) controller.restoreState(saved.state);
  else showStored();
};
showStored();
$("restore").addEventListener("change", (/** @type {Event & {target: HTMLInputElement}} */ e) => {
  const file = e.target.files && e.target.files[0];
  e.target.value = "";
  if (file) controller.restoreState(file);
});

// ---- local disk images: the file picker and drag and drop ----

/** @param {File} file */
async function useLocalImage(file) {
  const dialog = $("slot-dialog");
  $("slot-file").textContent = `${file.name} (${(file.size / 1048576).toFixed(1)} MiB)`;
  // CD images are usually .iso; an image of a diskette's size is a floppy to boot; anything
  // else is most likely a hard disk.
  const floppySizes = [368640, 737280, 1228800, 1474560, 2949120];
  const guess = /\.iso$/i.test(file.name) ? "cdrom" : floppySizes.includes(file.size) ? "bios-fda" : "hda";
  dialog.returnValue = "cancel";
  dialog.showModal();
  dialog.querySelector(`button[value="${guess}"]`).focus();
  const slot = await new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true }));
  const none = { hda: null, hdb: null, cdrom: null, fda: null };
  if (slot === "hda" || slot === "hdb" || slot === "cdrom") controller.restart({ [slot]: file, firmware: false });
  /** @type {Record<string, [string, string]>} */
  const biosSlots = { "bios-fda": ["fda", "a"], "bios-hda": ["hda", "c"], "bios-cdrom": ["cdrom", "d"] };
  const bios = biosSlots[slot];
  if (bios) controller.restart({ ...none, [bios[0]]: file, firmware: true, boot: bios[1] });
}

$("file").addEventListener("change", (/** @type {Event & {target: HTMLInputElement}} */ e) => {
  const file = e.target.files && e.target.files[0];
  e.target.value = "";
  if (file) useLocalImage(file);
});

let dragDepth = 0;
/** @param {DragEvent} e */
const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
document.addEventListener("dragenter", (e) => {
  if (!hasFiles(e)) return;
  dragDepth++;
  $("drop").hidden = false;
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) $("drop").hidden = true;
});
document.addEventListener("dragover", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
});
document.addEventListener("drop", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth = 0;
  $("drop").hidden = true;
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (file) useLocalImage(file);
});

// ---- go ----

refreshStatus();
showError();
controller.start();
