//! Saving a whole machine to a state file and starting one from it (the file format is in
//! [`crate::state`]).
//!
//! A state is taken between runs (never inside `Cpu::run`), so the CPU is at an instruction
//! boundary and every device is as the board left it. A machine restored from it and run on
//! with the same inputs retires the same instructions and prints the same bytes as the machine
//! that was saved would have: everything that decides what happens next is in the state, and
//! what is left out (decoded blocks, the TLB, compiled code, the rendered frame) is rebuilt on
//! demand without changing what the guest sees.

use super::{
    Board, BoardState, Machine, MachineConfig, TimeMode, DETERMINISTIC_EPOCH, IMAGE_SLOTS,
};
use crate::block::BlockBackend;
use crate::cpu::state::CpuState;
use crate::dev::vga;
use crate::state::{self, DiskIdentity, StateError, StateFile};
use serde::{Deserialize, Serialize};

/// The largest RAM a state may ask for (the 32-bit physical space below the MMIO hole).
const MAX_RAM: u64 = 3 << 30;

/// Everything but memory and the source images (see [`crate::state`]).
#[derive(Serialize, Deserialize)]
struct MachineState {
    ram_bytes: u64,
    ns_per_instruction: u64,
    fast_serial: bool,
    cpu: CpuState,
    board: BoardState,
    /// The BIOS area's shadow RAM (RAM itself is the file's RAM section).
    shadow: crate::mem::ShadowState,
}

impl Machine {
    /// Tell the machine what the image at drive `slot` is called (its path or URL), so that a
    /// saved state names it and a restore can say which image it wants.
    pub fn set_disk_name(&mut self, slot: usize, name: &str) {
        if let Some(n) = self.disk_names.get_mut(slot) {
            *n = name.to_string();
        }
    }

    /// The machine's whole state as a state file (see [`crate::state`]).
    pub fn save_state(&mut self) -> Vec<u8> {
        let board = self.board.borrow();
        let machine = MachineState {
            ram_bytes: self.cpu.mem.ram.len() as u64,
            ns_per_instruction: self.config.ns_per_instruction,
            fast_serial: self.config.fast_serial,
            cpu: self.cpu.state(),
            board: board.state(),
            shadow: self.cpu.mem.shadow_state(),
        };
        // Serialising plain data into a Vec cannot fail.
        let machine = postcard::to_stdvec(&machine).unwrap_or_default();
        let disks = (0..IMAGE_SLOTS)
            .filter_map(|slot| {
                board
                    .with_image(slot, |o| {
                        o.base_mut()
                            .map(|image| DiskIdentity::of(slot, &self.disk_names[slot], image))
                    })
                    .flatten()
            })
            .collect();
        let vga = board.vga.borrow();
        state::write(&StateFile {
            machine,
            ram: &self.cpu.mem.ram,
            vram: vga.vram(),
            disks,
        })
    }

    /// A machine from the state file `file`, with the drives' source images given again as
    /// (slot, image): each must be the image the saved drive had (checked by its size and the
    /// CRC of its ends), and every drive with media needs one. `time_mode` is the host's
    /// choice; the rest of the configuration comes from the file. On any error, nothing is
    /// built.
    pub fn restore_state(
        file: &[u8],
        time_mode: TimeMode,
        disks: Vec<(usize, Box<dyn BlockBackend>)>,
    ) -> Result<Machine, StateError> {
        let parsed = state::read(file)?;
        let saved: MachineState = postcard::from_bytes(&parsed.machine)
            .map_err(|e| StateError::Corrupt(format!("the machine's state: {e}")))?;
        if saved.ram_bytes == 0
            || saved.ram_bytes > MAX_RAM
            || !saved.ram_bytes.is_multiple_of(4096)
        {
            return Err(StateError::Corrupt(format!(
                "a RAM size of {} bytes",
                saved.ram_bytes
            )));
        }
        if saved.ns_per_instruction == 0 || saved.cpu.cpl > 3 {
            return Err(StateError::Corrupt(
                "impossible CPU timing or privilege".into(),
            ));
        }
        let vram = state::decode_memory("video memory", parsed.vram_pages, vga::VRAM_SIZE)?;
        let board = Board::from_state(saved.board).map_err(StateError::Corrupt)?;
        board.vga.borrow_mut().set_vram(vram);
        attach_images(&board, &parsed.disks, disks)?;
        let config = MachineConfig {
            ram_bytes: saved.ram_bytes as usize,
            ns_per_instruction: saved.ns_per_instruction,
            time_mode,
            // The clock the RTC shows is in its state.
            rtc_unix_seconds: DETERMINISTIC_EPOCH,
            fast_serial: saved.fast_serial,
            firmware: board.firmware().cloned(),
        };
        let mut m = Machine::with_board(config, board);
        state::decode_memory_into("RAM", parsed.ram_pages, &mut m.cpu.mem.ram)?;
        m.cpu
            .mem
            .set_shadow_state(saved.shadow)
            .map_err(StateError::Corrupt)?;
        m.cpu.set_state(&saved.cpu);
        for d in &parsed.disks {
            m.set_disk_name(d.slot, &d.name);
        }
        // A drive that was waiting for a streamed read asks its new image again.
        m.storage_wake();
        Ok(m)
    }
}

/// Give each drive of `board` that has media its image from `given`, checked against the
/// identity the state recorded for that slot.
fn attach_images(
    board: &Board,
    saved: &[DiskIdentity],
    mut given: Vec<(usize, Box<dyn BlockBackend>)>,
) -> Result<(), StateError> {
    for slot in 0..IMAGE_SLOTS {
        let attached = board.with_image(slot, |overlay| {
            let identity = saved
                .iter()
                .find(|d| d.slot == slot)
                .cloned()
                .unwrap_or(DiskIdentity {
                    slot,
                    size: overlay.len(),
                    edges_crc: None,
                    name: String::new(),
                });
            let Some(at) = given.iter().position(|(s, _)| *s == slot) else {
                return Err(StateError::DiskMissing(identity));
            };
            let (_, mut image) = given.swap_remove(at);
            if let Err(found) = identity.check(image.as_mut()) {
                return Err(StateError::DiskMismatch {
                    expected: identity,
                    found,
                });
            }
            overlay.reattach(image).map_err(|_| {
                StateError::Corrupt(format!(
                    "drive {slot}'s overlay does not have the size its image has"
                ))
            })
        });
        attached.unwrap_or(Ok(()))?;
    }
    match given.first() {
        Some((slot, _)) => Err(StateError::DiskUnexpected(*slot)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file of `m` with its saved machine changed by `change` (and a right checksum).
    fn forged(m: &mut Machine, change: impl FnOnce(&mut MachineState)) -> Vec<u8> {
        let file = m.save_state();
        let parsed = state::read(&file).unwrap();
        let mut saved: MachineState = postcard::from_bytes(&parsed.machine).unwrap();
        change(&mut saved);
        let vga = m.board.borrow().vga.clone();
        let vga = vga.borrow();
        state::write(&StateFile {
            machine: postcard::to_stdvec(&saved).unwrap(),
            ram: &m.cpu.mem.ram,
            vram: vga.vram(),
            disks: Vec::new(),
        })
    }

    #[test]
    fn a_well_formed_file_with_an_impossible_device_state_is_refused_by_name() {
        let mut m = Machine::new(MachineConfig {
            ram_bytes: 1 << 20,
            ..MachineConfig::default()
        });
        let ok = forged(&mut m, |_| {});
        assert!(Machine::restore_state(&ok, TimeMode::Deterministic, vec![]).is_ok());
        let bad = forged(&mut m, |s| s.board.vga.dac.truncate(3));
        let e = Machine::restore_state(&bad, TimeMode::Deterministic, vec![])
            .err()
            .unwrap();
        assert!(
            matches!(e, StateError::Corrupt(ref why) if why.contains("the display")),
            "{e}"
        );
    }
}
