//! What the page hands the core (the page's options and the widget's attributes themselves are
//! parsed in JavaScript, in www/, and reach the core only as the values below): key codes and
//! text typed into the screen, serial bytes, the boot order letters, and the inspector's
//! requests (disassembly, memory, page walks, breakpoints, stepping) at any address in a
//! machine whose memory and CPU mode come from the input.

use super::Input;
use wasm86::input::HostInput;
use wasm86::keymap;
use wasm86::machine::inspect::{Breakpoint, Breakpoints};
use wasm86::machine::{BootOrder, Machine, MachineConfig};

const RAM: usize = 1 << 20;
const MAX_STEPS: usize = 64;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let letters = input.string(8);
    if let Ok(order) = BootOrder::parse(&letters) {
        assert!(!order.devices().is_empty() && order.devices().len() <= 3);
    }
    let mut m = Machine::new(MachineConfig {
        ram_bytes: RAM,
        ..MachineConfig::default()
    });
    let n = input.length(4096);
    let at = input.u32() % RAM as u32;
    let bytes = input.bytes(n).to_vec();
    m.cpu.mem.load(at, &bytes);
    if input.bool() {
        // Some protected-mode state for the inspector to walk (paging with CR3 anywhere).
        m.cpu.cr0 |= wasm86::cpu::CR0_PE | (u32::from(input.bool()) << 31);
        m.cpu.cr3 = input.u32();
        m.cpu.cr4 = u32::from(input.u8()) & 0x90;
        m.cpu.sync_paging();
        m.cpu.segs[wasm86::cpu::Segment::CS as usize].big = input.bool();
    }
    let mut host = HostInput::default();
    let mut breakpoints = Breakpoints::new();
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 10 {
            0 => {
                let code = input.string(24);
                let _ = keymap::scancode(&code);
                host.key(&code, input.bool());
            }
            1 => {
                host.type_text(&input.string(64));
            }
            2 => {
                let n = input.length(256);
                host.send_serial(input.bytes(n));
            }
            3 => {
                host.pump(&mut m);
                m.run(u64::from(input.u16()));
            }
            4 => {
                let (linear, count) = (input.u32(), input.length(64));
                assert!(m.disassemble(linear, count).len() <= count);
            }
            5 => {
                let (before, after) = (input.length(32), input.length(32));
                m.disassemble_around(before, after);
            }
            6 => {
                let (linear, len) = (input.u32(), input.length(4096));
                assert_eq!(m.read_linear(linear, len).len(), len);
                m.translate(input.u32());
                m.registers();
            }
            7 => {
                let bp = if input.bool() {
                    Breakpoint::Linear(input.u32())
                } else {
                    Breakpoint::Port(input.u16())
                };
                if input.bool() {
                    breakpoints.add(bp);
                } else {
                    breakpoints.remove(bp);
                }
            }
            8 => {
                let max = u64::from(input.u16());
                if input.bool() {
                    m.run_to_breakpoint(&breakpoints, max);
                } else {
                    m.step_over(&breakpoints, max);
                }
            }
            _ => {
                let _ = m.step_event();
            }
        }
    }
}
