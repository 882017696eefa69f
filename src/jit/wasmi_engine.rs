//! The native host's engine for generated code: the wasmi interpreter.
//!
//! Natively the `Cpu` is not inside a wasm memory, so each module imports a memory laid over
//! the `Cpu` struct itself (page size 1, exactly the struct's bytes), and the generated code
//! reaches its fields at the same offsets as in the browser, from address 0. `step` is a host
//! function that turns the raw pointer back into the `Cpu`.
//!
//! This engine exists so that `cargo test` checks the code generator against the interpreter
//! without a browser; wasmi interprets the generated code, so it is not a speed-up natively.

use super::{codegen, Engine};
use crate::cpu::Cpu;
use wasmi::{Caller, Config, Func, Instance, Linker, Memory, MemoryType, Module, Store, TypedFunc};

/// What host functions see: the CPU being run.
struct Host {
    cpu: *mut Cpu,
}

type RunFn = TypedFunc<(i32, i64, i32, i32, i32), i32>;

/// The memories laid over the `Cpu`, its TLB entries and its RAM.
#[derive(Clone, Copy)]
struct Memories {
    cpu: Memory,
    tlb: Memory,
    ram: Memory,
}

/// A wasmi engine, its store, and the modules loaded into it.
pub struct WasmiEngine {
    engine: wasmi::Engine,
    store: Store<Host>,
    /// The memories over the `Cpu` and the address they were made for.
    memory: Option<(Memories, *mut Cpu)>,
    /// Loaded modules by handle (None: free), with their instance's `run`.
    modules: Vec<Option<(Module, RunFn)>>,
}

impl Default for WasmiEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl WasmiEngine {
    pub fn new() -> WasmiEngine {
        let mut config = Config::default();
        config.wasm_custom_page_sizes(true);
        config.wasm_multi_memory(true);
        let engine = wasmi::Engine::new(&config);
        let store = Store::new(
            &engine,
            Host {
                cpu: std::ptr::null_mut(),
            },
        );
        WasmiEngine {
            engine,
            store,
            memory: None,
            modules: Vec::new(),
        }
    }

    /// Make sure the memories lie over `cpu`, its TLB entries and its RAM; if the `Cpu` moved
    /// since, start a new store and instantiate every module again over its new address.
    fn memory_for(&mut self, cpu: *mut Cpu) -> Result<Memories, String> {
        if let Some((memories, at)) = self.memory {
            if at == cpu {
                return Ok(memories);
            }
        }
        self.store = Store::new(&self.engine, Host { cpu });
        // SAFETY: `cpu` points to a live `Cpu` (the callers' contract); the TLB's entries and
        // RAM are its own allocations, which never move or change size while it lives.
        let (tlb, ram) = unsafe {
            let c = &mut *cpu;
            (
                (
                    c.mem.tlb.entries.as_mut_ptr() as *mut u8,
                    std::mem::size_of_val(&*c.mem.tlb.entries),
                ),
                (c.mem.ram.as_mut_ptr(), c.mem.ram.len()),
            )
        };
        let mut over = |ptr: *mut u8, bytes: usize| -> Result<Memory, String> {
            let mut ty = MemoryType::builder();
            ty.min(bytes as u64).page_size_log2(0);
            let ty = ty.build().map_err(|e| e.to_string())?;
            // SAFETY: `ptr` and `bytes` describe one of the three allocations above, all
            // owned by the `Cpu`. The engine lives inside that `Cpu` (`Cpu::jit_engine`), so the
            // store, and the slice with it, are dropped before them; if the `Cpu` moves, this
            // function runs again with the new address before any code runs, and the old store
            // is dropped. The slice is only read or written by generated code during `call`,
            // whose contract gives it sole access to the `Cpu`.
            let buf: &'static mut [u8] = unsafe { std::slice::from_raw_parts_mut(ptr, bytes) };
            // wasmi zeroes a static buffer when it makes a memory of it: keep the bytes and
            // put them back.
            let saved = buf.to_vec();
            let memory = Memory::new_static(&mut self.store, ty, buf);
            // SAFETY: `ptr` points to `bytes` bytes (see above) and `saved` is a separate
            // allocation of the same length; the bytes are exactly the ones that were there.
            unsafe { std::ptr::copy_nonoverlapping(saved.as_ptr(), ptr, bytes) };
            memory.map_err(|e| e.to_string())
        };
        let memories = Memories {
            cpu: over(cpu as *mut u8, std::mem::size_of::<Cpu>())?,
            tlb: over(tlb.0, tlb.1)?,
            ram: over(ram.0, ram.1)?,
        };
        self.memory = Some((memories, cpu));
        for slot in 0..self.modules.len() {
            if let Some((module, _)) = self.modules[slot].take() {
                let run = self.instantiate(memories, &module)?;
                self.modules[slot] = Some((module, run));
            }
        }
        Ok(memories)
    }

    fn instantiate(&mut self, memories: Memories, module: &Module) -> Result<RunFn, String> {
        let step = Func::wrap(
            &mut self.store,
            |caller: Caller<'_, Host>, _cpu: i32, slot: i32, index: i32| -> i32 {
                // SAFETY: `call` set `cpu` to the live `Cpu` it was given, which nothing else
                // touches while generated code runs (Engine::call's contract); the generated
                // code does not access the memory while this host function runs.
                let cpu = unsafe { &mut *caller.data().cpu };
                super::step(cpu, slot as u32, index as u32) as i32
            },
        );
        let mut linker = Linker::<Host>::new(&self.engine);
        linker
            .define("core", "memory", memories.cpu)
            .and_then(|l| l.define("core", "tlb", memories.tlb))
            .and_then(|l| l.define("core", "ram", memories.ram))
            .and_then(|l| l.define("core", "step", step))
            .map_err(|e| e.to_string())?;
        let instance: Instance = linker
            .instantiate_and_start(&mut self.store, module)
            .map_err(|e| e.to_string())?;
        instance
            .get_typed_func::<(i32, i64, i32, i32, i32), i32>(&self.store, "run")
            .map_err(|e| e.to_string())
    }
}

impl Engine for WasmiEngine {
    fn shared_memory(&self) -> bool {
        false
    }

    fn load(&mut self, cpu: *mut Cpu, wasm: &[u8]) -> Result<u32, String> {
        let memory = self.memory_for(cpu)?;
        let module = Module::new(&self.engine, wasm).map_err(|e| e.to_string())?;
        let run = self.instantiate(memory, &module)?;
        let slot = match self.modules.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.modules.push(None);
                self.modules.len() - 1
            }
        };
        self.modules[slot] = Some((module, run));
        Ok(slot as u32)
    }

    unsafe fn call(
        &mut self,
        handle: u32,
        cpu: *mut Cpu,
        limit: u64,
        entry: u32,
    ) -> Result<u32, String> {
        self.memory_for(cpu)?;
        self.store.data_mut().cpu = cpu;
        let run = match self.modules.get(handle as usize) {
            Some(Some((_, run))) => *run,
            _ => return Err(format!("no compiled module {handle}")),
        };
        // Each memory starts at what it lies over: the addresses of the Cpu, the TLB's
        // entries and RAM inside them are 0.
        let status = run
            .call(&mut self.store, (0, limit as i64, entry as i32, 0, 0))
            .map_err(|e| e.to_string())?;
        debug_assert!(status as u32 == codegen::RAN || status as u32 == codegen::FAULTED);
        Ok(status as u32)
    }

    fn unload(&mut self, handle: u32) {
        if let Some(m) = self.modules.get_mut(handle as usize) {
            *m = None;
        }
    }
}
