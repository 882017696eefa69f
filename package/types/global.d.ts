// Appended to wasm86-machine.d.ts by scripts/package.sh: the element by its tag name, so that
// document.querySelector("wasm86-machine") and document.createElement("wasm86-machine") are
// typed.
declare global {
  interface HTMLElementTagNameMap {
    "wasm86-machine": Wasm86MachineElement;
  }
}
