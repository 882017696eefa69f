//! Bus-master DMA (the PIIX3's BAR4 registers, 8 per channel): the command, status and PRD
//! table registers, and the transfers they run against guest memory between CPU slices.

use super::*;
use channel::{Channel, Xfer};

/// Guest memory as a DMA engine sees it.
pub trait DmaMemory {
    /// Copy from physical `addr`; false if the range is not RAM.
    fn dma_read(&mut self, addr: u32, buf: &mut [u8]) -> bool;
    /// Copy to physical `addr`; false if the range is not RAM.
    fn dma_write(&mut self, addr: u32, data: &[u8]) -> bool;
}

impl DmaMemory for crate::mem::Memory {
    fn dma_read(&mut self, addr: u32, buf: &mut [u8]) -> bool {
        let a = addr as usize;
        match a
            .checked_add(buf.len())
            .and_then(|end| self.ram.get(a..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
    fn dma_write(&mut self, addr: u32, data: &[u8]) -> bool {
        let a = addr as usize;
        if a.checked_add(data.len())
            .is_none_or(|end| end > self.ram.len())
        {
            return false;
        }
        // `load` also drops decoded code from the pages written.
        self.load(addr, data);
        true
    }
}

impl DmaMemory for Vec<u8> {
    fn dma_read(&mut self, addr: u32, buf: &mut [u8]) -> bool {
        let a = addr as usize;
        match a.checked_add(buf.len()).and_then(|end| self.get(a..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
    fn dma_write(&mut self, addr: u32, data: &[u8]) -> bool {
        let a = addr as usize;
        match a
            .checked_add(data.len())
            .and_then(|end| self.get_mut(a..end))
        {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

/// Bus-master registers of one channel.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(super) struct BusMaster {
    pub(super) cmd: u8,
    pub(super) status: u8,
    pub(super) prd: u32,
}

impl Channel {
    // ---- bus master -----------------------------------------------------------------------------

    pub(super) fn bm_read(&self, reg: u8) -> u8 {
        match reg {
            BM_CMD => self.bm.cmd,
            BM_STATUS => self.bm.status,
            4..=7 => (self.bm.prd >> (8 * (reg - BM_PRD))) as u8,
            _ => 0,
        }
    }

    pub(super) fn bm_write(&mut self, reg: u8, v: u8) {
        match reg {
            // Guest starts or stops the engine and sets the direction.
            BM_CMD => {
                let start = v & BM_CMD_START != 0;
                if start && self.bm.cmd & BM_CMD_START == 0 {
                    self.bm.status |= BM_ST_ACTIVE;
                } else if !start {
                    self.bm.status &= !BM_ST_ACTIVE;
                }
                self.bm.cmd = v & (BM_CMD_START | BM_CMD_WRITE);
            }
            // Guest clears error/interrupt (write one) and sets the DMA-capable bits.
            BM_STATUS => {
                let s = self.bm.status;
                self.bm.status = (s & BM_ST_ACTIVE)
                    | (v & BM_ST_CAPABLE)
                    | (s & !v & (BM_ST_ERROR | BM_ST_INTR));
            }
            // Guest points at its PRD table.
            4..=7 => {
                let sh = 8 * u32::from(reg - BM_PRD);
                self.bm.prd = (self.bm.prd & !(0xFF << sh) | u32::from(v) << sh) & !3;
            }
            _ => {}
        }
    }

    pub(super) fn dma_ready(&self) -> bool {
        matches!(self.xfer, Xfer::Dma { .. }) && self.bm.status & BM_ST_ACTIVE != 0
    }

    /// Run an armed DMA transfer through the guest's PRD table.
    pub(super) fn run_dma(&mut self, mem: &mut dyn DmaMemory, ctx: &mut DevCtx) {
        let Xfer::Dma {
            to_memory,
            atapi,
            lba,
        } = self.xfer
        else {
            return;
        };
        let d = self.active;
        let total = self.buf.len();
        let mut done = 0usize;
        let mut addr = self.bm.prd;
        let mut eot = false;
        let mut fault = false;
        let mut entries = 0;
        while done < total && !eot && entries < PRD_MAX_ENTRIES {
            let mut e = [0u8; 8];
            if !mem.dma_read(addr, &mut e) {
                fault = true;
                break;
            }
            let base = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & !1;
            let flags = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let len = match flags & 0xFFFE {
                0 => 0x10000,
                n => n as usize,
            };
            eot = flags & PRD_EOT != 0;
            let n = len.min(total - done);
            let chunk = &mut self.buf[done..done + n];
            let ok = if to_memory {
                mem.dma_write(base, chunk)
            } else {
                mem.dma_read(base, chunk)
            };
            if !ok {
                fault = true;
                break;
            }
            done += n;
            addr = addr.wrapping_add(8);
            entries += 1;
        }
        if fault || done < total {
            // A PRD table that points outside RAM or ends early: the engine stops with an error
            // and the drive aborts the command (rather than hanging the guest).
            self.bm.status = (self.bm.status & !BM_ST_ACTIVE) | BM_ST_ERROR;
            if atapi {
                self.packet_done(d, Some(Sense::new(atapi::SK_ILLEGAL_REQUEST, 0x00, 0)), ctx);
            } else {
                self.fail(d, ER_ABRT, ctx);
            }
            return;
        }
        // The engine goes idle when the table ended exactly with the data; a longer table leaves
        // it active (as the PIIX does), with the interrupt bit telling the driver it is done.
        if eot {
            self.bm.status &= !BM_ST_ACTIVE;
        }
        self.dma_count += 1;
        if !to_memory {
            if let Some(Drive::Ata(disk)) = &mut self.slots[d].drive {
                disk.disk.write(lba, &self.buf);
            }
        }
        if atapi {
            self.packet_done(d, None, ctx);
        } else {
            self.done(d, ctx);
        }
    }
}
