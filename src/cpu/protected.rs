//! Protected-mode mechanics: descriptors, segment loads with privilege checks, IDT delivery.
//! (to be written)

use super::exception::{Exception, Fault};
use super::interrupt::IntKind;
use super::seg::Segment;
use super::Cpu;

impl Cpu {
    /// Load a segment register in protected mode.
    pub(crate) fn load_seg_protected(&mut self, _seg: Segment, _selector: u16) -> Fault {
        Err(Exception::gp(0))
    }

    /// Deliver an interrupt through the IDT.
    pub(crate) fn interrupt_protected(
        &mut self,
        _vector: u8,
        _kind: IntKind,
        _code: Option<u32>,
    ) -> Fault {
        Err(Exception::gp(0))
    }
}
