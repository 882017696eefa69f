//! The browser's engine for the compiling tier (crate::jit): each generated module is compiled
//! and instantiated synchronously with `WebAssembly.Module`/`Instance` (the machine always runs
//! in a worker, where that is allowed for modules of any size), importing this module's own
//! memory and the `step` helper, and its `run` export is put into this module's function
//! table, so the core calls it with an ordinary indirect call.
//!
//! The table grows by one slot per live module (the linker is told to make it growable, see
//! .cargo/config.toml); a freed slot is reused.

use js_sys::{Object, Reflect, Uint8Array, WebAssembly};
use wasm_bindgen::{JsCast, JsValue};

use crate::cpu::Cpu;
use crate::jit::Engine;

/// The helper generated code imports as `core.step`: run one instruction through the
/// interpreter (see crate::jit::step).
extern "C" fn jit_step(cpu: *mut Cpu, slot: u32, index: u32) -> u32 {
    // SAFETY: only generated code calls this, during `BrowserEngine::call`, with the `cpu`
    // pointer that call was given; its contract (Engine::call) says that `Cpu` is live and
    // that nothing else accesses it until the call returns.
    let cpu = unsafe { &mut *cpu };
    crate::jit::step(cpu, slot, index)
}

/// The signature of a generated `run`, as Rust calls it through the table.
type RunFn = extern "C" fn(u32, u64, u32, u32, u32) -> u32;

pub struct BrowserEngine {
    table: WebAssembly::Table,
    imports: Object,
    /// Table slots of loaded modules that were unloaded, for reuse.
    free: Vec<u32>,
    /// `performance.now` of this worker or page (None if there is none), and the time spent
    /// in `load` so far (ms).
    now: Option<(JsValue, js_sys::Function)>,
    compile_ms: f64,
}

impl BrowserEngine {
    fn now_ms(&self) -> f64 {
        self.now
            .as_ref()
            .and_then(|(perf, now)| now.call0(perf).ok())
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    }
}

fn describe(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"))
}

impl BrowserEngine {
    pub fn new() -> Result<BrowserEngine, String> {
        let table: WebAssembly::Table = wasm_bindgen::function_table()
            .dyn_into()
            .map_err(|_| "the module's function table is not exported".to_string())?;
        // On wasm32 a function pointer is its index in the table.
        let step_index = jit_step as RunStepFn as usize as u32;
        let step = table.get(step_index).map_err(describe)?;
        let core = Object::new();
        Reflect::set(&core, &"memory".into(), &wasm_bindgen::memory()).map_err(describe)?;
        Reflect::set(&core, &"step".into(), &step).map_err(describe)?;
        let imports = Object::new();
        Reflect::set(&imports, &"core".into(), &core).map_err(describe)?;
        let perf = Reflect::get(&js_sys::global(), &"performance".into()).ok();
        let now = perf.and_then(|p| {
            let f = Reflect::get(&p, &"now".into()).ok()?;
            Some((p, f.dyn_into::<js_sys::Function>().ok()?))
        });
        Ok(BrowserEngine {
            table,
            imports,
            free: Vec::new(),
            now,
            compile_ms: 0.0,
        })
    }
}

type RunStepFn = extern "C" fn(*mut Cpu, u32, u32) -> u32;

impl Engine for BrowserEngine {
    fn shared_memory(&self) -> bool {
        true
    }

    fn load(&mut self, _cpu: *mut Cpu, wasm: &[u8]) -> Result<u32, String> {
        let t0 = self.now_ms();
        let bytes = Uint8Array::from(wasm);
        let module = WebAssembly::Module::new(&bytes).map_err(describe)?;
        let instance = WebAssembly::Instance::new(&module, &self.imports).map_err(describe)?;
        self.compile_ms += self.now_ms() - t0;
        let run = Reflect::get(&instance.exports(), &"run".into()).map_err(describe)?;
        let run: js_sys::Function = run.dyn_into().map_err(|_| "no run export".to_string())?;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.table.grow(1).map_err(describe)?,
        };
        self.table.set(slot, &run).map_err(describe)?;
        Ok(slot)
    }

    unsafe fn call(
        &mut self,
        handle: u32,
        cpu: *mut Cpu,
        limit: u64,
        entry: u32,
    ) -> Result<u32, String> {
        // SAFETY: `handle` is a table slot that `load` filled with a generated `run`, whose
        // type is (i32, i64, i32, i32, i32) -> i32, exactly what `RunFn` lowers to on wasm32 (a
        // function pointer is a table index there, and the indirect call checks the type).
        let run: RunFn = unsafe { std::mem::transmute::<usize, RunFn>(handle as usize) };
        // Addresses in this module's memory are the pointers themselves.
        // SAFETY: `cpu` is live (Engine::call's contract); only the addresses of the TLB's
        // entries and of RAM are read.
        let (tlb, ram) = unsafe {
            (
                (*cpu).mem.tlb.entries.as_ptr() as u32,
                (*cpu).mem.ram.as_ptr() as u32,
            )
        };
        Ok(run(cpu as u32, limit, entry, tlb, ram))
    }

    fn compile_ms(&self) -> Option<f64> {
        Some(self.compile_ms)
    }

    fn unload(&mut self, handle: u32) {
        // The slot keeps the old function until it is reused (a table of functions cannot be
        // given null through js-sys); the number of slots stays bounded by the live regions.
        self.free.push(handle);
    }
}
