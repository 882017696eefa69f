// A TypeScript program that uses the package the way someone who installed it would. `make
// package` type-checks it against the package it built (pkg-npm/): every use below must be
// allowed by the declarations, and every line after a @ts-expect-error must be refused.
import { MachineController, resolveOptions, type MachineEventMap, type MachineOptions } from "wasm86";
import { Wasm86MachineElement, type Wasm86MachineAttributes } from "wasm86/wasm86-machine.js";
import { ToWorker, FromWorker, type ToWorkerMessage, type FromWorkerMessage, type Stats } from "wasm86/protocol.js";
import { createTerminal, ScreenView } from "wasm86/ui.js";
import type { WasmApi } from "wasm86/worker.js";
import type * as WasmPackage from "wasm86/pkg/wasm86.js";

// The options, the controller and its automation API.
const options: MachineOptions = { images: "https://example.org/wasm86/images/", memory: 64, jit: false };
const m = new MachineController(options);
const resolved = resolveOptions({ hda: "disk.img" }, "https://example.org/");
const firmware: boolean = resolved.firmware;
const ready: Promise<MachineController> = m.start();
const stats: Stats = m.stats();
const state: "idle" | "loading" | "running" | "paused" | "error" = stats.state;
m.sendSerial("uname -a\n");
m.typeText("ls\n");
m.key("ArrowDown", true);
async function inspect(): Promise<number> {
  const r = await m.registers();
  const lines = await m.disassemble(null, 8);
  const walk = await m.translate(r.linearEip);
  const bytes = await m.readMemory(r.esp, 16);
  await m.setBreakpoint({ port: 0x3f8 });
  const state: ArrayBuffer = await m.saveState();
  const recording: ArrayBuffer | null = await m.stopRecording();
  return r.eip + lines.length + (walk.physical ?? 0) + bytes.length + state.byteLength + (recording ? 1 : 0);
}

// Typed events.
m.addEventListener("serial", (e) => {
  const text: string = e.detail.text;
  const before: number | null = e.detail.instructionsBefore;
  console.log(text, before);
});
m.addEventListener("state", (e) => console.log(e.detail.state));
m.addEventListener("breakpoint", (e) => console.log(e.detail.breakpoint.kind, e.detail.registers.eip));
const onStats = (e: MachineEventMap["stats"]) => console.log(e.detail.mips);
m.addEventListener("stats", onStats);
m.removeEventListener("stats", onStats);
m.addEventListener("anything-else", (e: Event) => console.log(e.type));

// The element: by tag name, its properties.
const el = document.createElement("wasm86-machine");
const same: Wasm86MachineElement = el;
const machine: MachineController = el.machine;
const found: Wasm86MachineElement | null = document.querySelector("wasm86-machine");
const attributes: Wasm86MachineAttributes = { show: "both+cpu", run: "dmesg | head", images: "images/" };
el.inspector?.walk(0xc0000000);

// The views and the protocol.
const canvas = document.createElement("canvas");
const life = new AbortController();
new ScreenView(canvas, m, { signal: life.signal }).dispose();
createTerminal(document.body, m, { rows: 20, signal: life.signal }).dispose();
const start: ToWorkerMessage = { type: ToWorker.PAUSE };
function kind(msg: FromWorkerMessage): string {
  return msg.type === FromWorker.SAVED ? `saved ${msg.id}` : msg.type;
}

// The worker's idea of the wasm API must fit wasm-bindgen's output (pkg/wasm86.d.ts).
declare const wasmPackage: typeof WasmPackage;
const api: WasmApi = wasmPackage;

// What the declarations refuse.
// @ts-expect-error: no such option
new MachineController({ memroy: 64 });
// @ts-expect-error: a message with a misspelt field
const bad: ToWorkerMessage = { type: ToWorker.KEY, code: "KeyA", presed: true };
// @ts-expect-error: the serial event's detail has no `data`
m.addEventListener("serial", (e) => e.detail.data);
// @ts-expect-error: the controller's insides are private
m.worker;

export { ready, firmware, state, inspect, same, machine, found, attributes, start, kind, api, bad };
