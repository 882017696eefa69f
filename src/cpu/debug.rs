//! Debug registers: instruction and data breakpoints (DR0-DR3, DR6, DR7).
//! (to be written)

use super::Cpu;

impl Cpu {
    /// Check a data access against the enabled data breakpoints.
    #[inline]
    pub(crate) fn check_data_breakpoint(&mut self, _lin: u32, _size: u32, _write: bool) {}
}
