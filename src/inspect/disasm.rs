//! Disassembly of guest code (Intel syntax, by iced-x86's decoder and formatter), read without
//! side effects.
//!
//! Bytes are read through the read-only page walk ([`super::walk`]): no accessed or dirty bit
//! is set, no fault is raised, the TLB is neither read nor filled, and nothing is marked as
//! code. Physical memory is read through [`PhysicalMemory`]: the core's [`Memory`] shows RAM
//! and ROM and refuses device memory (reading a device register can change the device), which
//! the machine can answer for its ROMs (`crate::machine`'s inspector). A listing ends at the
//! first byte it cannot read, with a line that says why, such as `(page not present)`.
//!
//! x86 code cannot be decoded backwards reliably (an instruction is 1 to 15 bytes and any byte
//! may start one), so [`disassemble_around`] guesses the lines before EIP: it decodes forwards
//! from several bytes back and keeps the first start (the farthest) whose instructions end
//! exactly at EIP, all readable and valid. Instruction streams resynchronise within a few
//! instructions, so the lines just before EIP are nearly always the real ones; the farthest
//! ones may not be.

use super::walk;
use crate::cpu::{Cpu, Segment};
use crate::mem::{Memory, PageKind};
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, OpKind};
use serde::Serialize;

/// The longest x86 instruction, in bytes.
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// Why guest memory cannot be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreadable {
    /// Paging is on and the page tables do not map the address.
    NotPresent,
    /// Device registers (MMIO): reading them could change the device.
    Device,
    /// No memory answers at the physical address.
    Nothing,
}

impl Unreadable {
    /// What a listing says instead of an instruction.
    pub fn text(self) -> &'static str {
        match self {
            Unreadable::NotPresent => "(page not present)",
            Unreadable::Device => "(device memory, not read)",
            Unreadable::Nothing => "(no memory here)",
        }
    }
}

/// Guest physical memory, read without side effects.
pub trait PhysicalMemory {
    /// The byte at `physical` (the A20 gate already applied).
    fn byte(&self, physical: u32) -> Result<u8, Unreadable>;
}

impl PhysicalMemory for Memory {
    fn byte(&self, physical: u32) -> Result<u8, Unreadable> {
        match self.kind(physical) {
            PageKind::Ram | PageKind::Rom | PageKind::RomWritesShadow => self
                .ram
                .get(physical as usize)
                .copied()
                .ok_or(Unreadable::Nothing),
            PageKind::Mmio => Err(Unreadable::Device),
            PageKind::Unmapped => Err(Unreadable::Nothing),
        }
    }
}

/// Reads guest memory by linear address, one translated page at a time.
pub struct LinearReader<'a> {
    cpu: &'a Cpu,
    mem: &'a dyn PhysicalMemory,
    /// The last page translated: its linear page and physical page (or why it has none).
    page: Option<(u32, Result<u32, Unreadable>)>,
}

impl<'a> LinearReader<'a> {
    pub fn new(cpu: &'a Cpu, mem: &'a dyn PhysicalMemory) -> LinearReader<'a> {
        LinearReader {
            cpu,
            mem,
            page: None,
        }
    }

    /// The byte at `linear`, as the CPU would read it now.
    pub fn byte(&mut self, linear: u32) -> Result<u8, Unreadable> {
        let lin_page = linear & 0xFFFF_F000;
        let phys_page = match self.page {
            Some((p, phys)) if p == lin_page => phys,
            _ => {
                let phys = walk::translate(self.cpu, lin_page)
                    .physical
                    .ok_or(Unreadable::NotPresent);
                self.page = Some((lin_page, phys));
                phys
            }
        };
        self.mem.byte(phys_page? | (linear & 0xFFF))
    }
}

/// One line of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// The linear address of the instruction's first byte.
    pub linear: u32,
    /// The address the instruction was decoded at: its offset in the code segment (EIP) when
    /// decoded through a segment, else the linear address. Branch targets in `text` are in the
    /// same terms.
    pub ip: u32,
    /// The instruction's bytes (those that could be read, for a line that says why not).
    pub bytes: Vec<u8>,
    /// Intel syntax (`mov eax,[ebx+4]`), `(bad)` for bytes that are no instruction, or why the
    /// bytes cannot be read (`(page not present)`).
    pub text: String,
}

/// Code to decode: where it is (a segment base and the offset in it, or a linear address) and
/// the code size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeAt {
    /// The code segment's base (0 for a linear view).
    pub base: u32,
    /// The offset of the first instruction in the segment (the linear address in a linear
    /// view).
    pub ip: u32,
    /// 16 or 32 (anything but 16 is taken as 32).
    pub bitness: u32,
    /// Decoded through a segment: offsets in 16-bit code wrap at 64 KiB, as IP does. A linear
    /// view never wraps (its IP is no offset; 16-bit branch targets are then offsets from 0).
    pub segmented: bool,
}

impl CodeAt {
    /// Code at a linear address, decoded with the linear address as IP.
    pub fn linear(linear: u32, bitness: u32) -> CodeAt {
        CodeAt {
            base: 0,
            ip: linear,
            bitness,
            segmented: false,
        }
    }

    /// Code at `base`:`ip` in a segment.
    pub fn segment(base: u32, ip: u32, bitness: u32) -> CodeAt {
        CodeAt {
            base,
            ip,
            bitness,
            segmented: true,
        }
    }

    /// The code at CS:EIP.
    pub fn eip(cpu: &Cpu) -> CodeAt {
        let cs = &cpu.segs[Segment::CS as usize];
        CodeAt::segment(cs.base, cpu.eip, if cs.big { 32 } else { 16 })
    }

    fn bits(&self) -> u32 {
        if self.bitness == 16 {
            16
        } else {
            32
        }
    }

    /// Offsets wrap at 64 KiB in 16-bit code.
    fn mask(&self) -> u32 {
        if self.bits() == 16 && self.segmented {
            0xFFFF
        } else {
            u32::MAX
        }
    }

    fn linear_of(&self, ip: u32) -> u32 {
        self.base.wrapping_add(ip & self.mask())
    }
}

/// An instruction read and decoded, or why not.
pub enum Decoded {
    Instruction(Instruction, Vec<u8>),
    /// The bytes read before an unreadable one, and why it could not be read.
    Unreadable(Vec<u8>, Unreadable),
}

/// Read and decode the instruction at `at`.
pub fn decode_at(reader: &mut LinearReader, at: CodeAt) -> Decoded {
    let mut bytes = Vec::with_capacity(MAX_INSTRUCTION_LEN);
    let mut stopped = None;
    for i in 0..MAX_INSTRUCTION_LEN as u32 {
        match reader.byte(at.linear_of(at.ip.wrapping_add(i))) {
            Ok(b) => bytes.push(b),
            Err(why) => {
                stopped = Some(why);
                break;
            }
        }
    }
    let mut decoder = Decoder::with_ip(
        at.bits(),
        &bytes,
        u64::from(at.ip & at.mask()),
        DecoderOptions::NONE,
    );
    let instr = decoder.decode();
    match stopped {
        // The bytes ran out before the instruction did.
        Some(why)
            if instr.is_invalid()
                && decoder.last_error() == iced_x86::DecoderError::NoMoreBytes =>
        {
            Decoded::Unreadable(bytes, why)
        }
        _ => {
            let len = instr.len().max(1);
            bytes.truncate(len);
            Decoded::Instruction(instr, bytes)
        }
    }
}

/// The Intel-syntax formatter the listings use: lower-case hex with a 0x prefix, small numbers
/// in decimal, branch targets without leading zeros or a SHORT/NEAR size.
pub fn formatter() -> IntelFormatter {
    let mut f = IntelFormatter::new();
    let o = f.options_mut();
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_uppercase_hex(false);
    o.set_branch_leading_zeros(false);
    o.set_show_branch_size(false);
    f
}

/// An instruction in Intel syntax. A direct far JMP or CALL reads `jmp 0xf000:0xe05b`,
/// selector first as manuals write it (the formatter writes `jmp far 0xe05b,0xf000`).
pub fn format(fmt: &mut IntelFormatter, instr: &Instruction) -> String {
    let mut text = String::new();
    let offset = match instr.op0_kind() {
        OpKind::FarBranch16 => Some(u32::from(instr.far_branch16())),
        OpKind::FarBranch32 => Some(instr.far_branch32()),
        _ => None,
    };
    match offset {
        Some(offset) => {
            fmt.format_mnemonic(instr, &mut text);
            // The selector says that it is far.
            if let Some(short) = text.strip_suffix(" far") {
                text = short.to_string();
            }
            text.push_str(&format!(" {:#x}:{offset:#x}", instr.far_branch_selector()));
        }
        None => fmt.format(instr, &mut text),
    }
    text
}

/// `count` lines of code from `at`, read through `mem`; the listing ends early at a byte it
/// cannot read (the last line says why).
pub fn disassemble_with(
    cpu: &Cpu,
    mem: &dyn PhysicalMemory,
    at: CodeAt,
    count: usize,
) -> Vec<Line> {
    let mut reader = LinearReader::new(cpu, mem);
    let mut fmt = formatter();
    let mut lines = Vec::with_capacity(count);
    let mut ip = at.ip & at.mask();
    while lines.len() < count {
        let here = CodeAt { ip, ..at };
        let linear = at.linear_of(ip);
        match decode_at(&mut reader, here) {
            Decoded::Instruction(instr, bytes) => {
                let text = if instr.is_invalid() {
                    "(bad)".to_string()
                } else {
                    format(&mut fmt, &instr)
                };
                ip = ip.wrapping_add(bytes.len() as u32) & at.mask();
                lines.push(Line {
                    linear,
                    ip: here.ip,
                    bytes,
                    text,
                });
            }
            Decoded::Unreadable(bytes, why) => {
                lines.push(Line {
                    linear,
                    ip: here.ip,
                    bytes,
                    text: why.text().to_string(),
                });
                break;
            }
        }
    }
    lines
}

/// `count` instructions of `bitness`-bit code (16 or 32) at linear address `linear`, decoded
/// with the linear address as IP, reading RAM and ROM (device memory ends the listing).
pub fn disassemble(cpu: &Cpu, linear: u32, count: usize, bitness: u32) -> Vec<Line> {
    disassemble_with(cpu, &cpu.mem, CodeAt::linear(linear, bitness), count)
}

/// The code around CS:EIP: up to `before` lines before it (a best guess, see the module's
/// notes), the instruction at EIP and `after` lines after it, decoded through CS (IPs are
/// offsets in CS; the line at EIP is the one whose `ip` is EIP).
pub fn disassemble_around(cpu: &Cpu, before: usize, after: usize) -> Vec<Line> {
    disassemble_around_with(cpu, &cpu.mem, before, after)
}

/// [`disassemble_around`] reading through `mem`.
pub fn disassemble_around_with(
    cpu: &Cpu,
    mem: &dyn PhysicalMemory,
    before: usize,
    after: usize,
) -> Vec<Line> {
    let at = CodeAt::eip(cpu);
    let mut lines = lines_before(cpu, mem, at, before);
    lines.extend(disassemble_with(cpu, mem, at, after.saturating_add(1)));
    lines
}

/// Up to `count` instructions that end exactly at `at` (see the module's notes).
fn lines_before(cpu: &Cpu, mem: &dyn PhysicalMemory, at: CodeAt, count: usize) -> Vec<Line> {
    if count == 0 {
        return Vec::new();
    }
    let target = at.ip & at.mask();
    // Not back past the segment's offset 0.
    let reach = (count.saturating_mul(MAX_INSTRUCTION_LEN) as u32).min(target);
    let mut reader = LinearReader::new(cpu, mem);
    let mut fmt = formatter();
    'start: for back in (1..=reach).rev() {
        let mut ip = target - back;
        let mut found = Vec::new();
        while ip < target {
            let here = CodeAt { ip, ..at };
            match decode_at(&mut reader, here) {
                Decoded::Instruction(instr, bytes) if !instr.is_invalid() => {
                    let text = format(&mut fmt, &instr);
                    ip += bytes.len() as u32;
                    found.push(Line {
                        linear: at.linear_of(here.ip),
                        ip: here.ip,
                        bytes,
                        text,
                    });
                }
                _ => continue 'start,
            }
        }
        if ip == target {
            let skip = found.len().saturating_sub(count);
            return found.split_off(skip);
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{SegCache, CR0_PE, CR0_PG};
    use crate::inspect::walk::{PTE_P, PTE_RW};

    /// A real-mode CPU at 0000:1000 with `code` there.
    fn real(code: &[u8]) -> Cpu {
        let mut cpu = Cpu::with_ram(1 << 20);
        cpu.mem.load(0x1000, code);
        cpu.segs[Segment::CS as usize] = SegCache::real(0);
        cpu.eip = 0x1000;
        cpu
    }

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn thirty_two_bit_code_in_intel_syntax() {
        #[rustfmt::skip]
        let code = [
            0x8B, 0x43, 0x04,             // mov eax, [ebx+4]
            0x89, 0xC1,                   // mov ecx, eax
            0xE8, 0x10, 0x00, 0x00, 0x00, // call +0x10
            0xCD, 0x80,                   // int 0x80
        ];
        let mut cpu = Cpu::with_ram(1 << 20);
        cpu.mem.load(0x2000, &code);
        let lines = disassemble(&cpu, 0x2000, 4, 32);
        assert_eq!(
            texts(&lines),
            vec!["mov eax,[ebx+4]", "mov ecx,eax", "call 0x201a", "int 0x80"]
        );
        assert_eq!(
            lines.iter().map(|l| (l.linear, l.ip)).collect::<Vec<_>>(),
            vec![
                (0x2000, 0x2000),
                (0x2003, 0x2003),
                (0x2005, 0x2005),
                (0x200A, 0x200A)
            ]
        );
        assert_eq!(lines[0].bytes, vec![0x8B, 0x43, 0x04]);
        assert_eq!(lines[2].bytes.len(), 5);
    }

    #[test]
    fn sixteen_bit_code_through_cs_shows_offsets() {
        // At F000:FFF0 (linear 0xFFFF0 here: CS base 0xF0000): a far jump, then a near one.
        let mut cpu = Cpu::with_ram(1 << 20);
        cpu.mem
            .load(0xFFFF0, &[0xEA, 0x5B, 0xE0, 0x00, 0xF0, 0xEB, 0xFE]);
        cpu.segs[Segment::CS as usize] = SegCache::real(0xF000);
        cpu.eip = 0xFFF0;
        let lines = disassemble_with(&cpu, &cpu.mem, CodeAt::eip(&cpu), 2);
        assert_eq!(texts(&lines), vec!["jmp 0xf000:0xe05b", "jmp 0xfff5"]);
        assert_eq!((lines[0].linear, lines[0].ip), (0xFFFF0, 0xFFF0));
        assert_eq!((lines[1].linear, lines[1].ip), (0xFFFF5, 0xFFF5));
    }

    #[test]
    fn reading_sets_no_accessed_bit_and_stops_at_a_page_not_present() {
        let mut cpu = Cpu::with_ram(1 << 20);
        // Paging: linear 0x40_0000.. -> physical 0x5000 (one page); the next page not present.
        cpu.cr0 = CR0_PE | CR0_PG;
        cpu.cr3 = 0x1000;
        cpu.sync_paging();
        cpu.mem
            .load(0x1004, &(0x2000 | PTE_P | PTE_RW).to_le_bytes());
        cpu.mem
            .load(0x2000, &(0x5000 | PTE_P | PTE_RW).to_le_bytes());
        // Two NOPs at the end of the page, then a MOV EAX, imm32 that crosses into the next.
        cpu.mem.load(0x5FFA, &[0x90, 0x90, 0xB8, 0x01, 0x02, 0x03]);
        let ram_before = cpu.mem.ram.clone();
        let lines = disassemble(&cpu, 0x40_0FFA, 10, 32);
        assert_eq!(
            texts(&lines),
            vec!["nop", "nop", "(page not present)"],
            "the MOV runs into the unmapped page"
        );
        assert_eq!(lines[2].linear, 0x40_0FFC);
        assert_eq!(lines[2].bytes, vec![0xB8, 0x01, 0x02, 0x03]);
        assert!(cpu.mem.ram == ram_before, "no accessed bit was set");
        assert_eq!(
            cpu.mem
                .tlb
                .lookup(0x40_0FFA, crate::mem::tlb::TLB_READ_SUPER),
            None
        );
        // An address with no page table at all.
        let lines = disassemble(&cpu, 0x80_0000, 3, 32);
        assert_eq!(texts(&lines), vec!["(page not present)"]);
        assert!(lines[0].bytes.is_empty());
    }

    #[test]
    fn device_memory_and_holes_are_not_read() {
        let mut cpu = Cpu::with_ram(1 << 20);
        cpu.mem.map(0x8_0000, 0x1000, PageKind::Mmio);
        assert_eq!(
            texts(&disassemble(&cpu, 0x8_0000, 1, 32)),
            vec!["(device memory, not read)"]
        );
        assert_eq!(
            texts(&disassemble(&cpu, 0x20_0000, 1, 32)),
            vec!["(no memory here)"]
        );
    }

    #[test]
    fn bytes_that_are_no_instruction_are_bad_and_the_listing_goes_on() {
        // FE has only /0 (INC) and /1 (DEC): FE D0 (/2) is no instruction.
        let cpu = real(&[0xFE, 0xD0, 0x90, 0x90, 0x90]);
        let lines = disassemble_with(&cpu, &cpu.mem, CodeAt::eip(&cpu), 2);
        assert_eq!(lines[0].text, "(bad)");
        assert!(!lines[0].bytes.is_empty());
        assert_eq!(lines.len(), 2, "the listing went on after it");
    }

    #[test]
    fn around_eip_finds_the_instructions_that_end_there() {
        #[rustfmt::skip]
        let code = [
            0xB8, 0x34, 0x12,       // 0x1000: mov ax, 0x1234
            0x89, 0xC3,             // 0x1003: mov bx, ax
            0x40,                   // 0x1005: inc ax
            0x01, 0xD8,             // 0x1006: add ax, bx
            0xF4,                   // 0x1008: hlt
            0x90,                   // 0x1009: nop
        ];
        let mut cpu = real(&code);
        cpu.eip = 0x1006;
        let lines = disassemble_around(&cpu, 2, 2);
        assert_eq!(
            lines.iter().map(|l| l.ip).collect::<Vec<_>>(),
            vec![0x1003, 0x1005, 0x1006, 0x1008, 0x1009]
        );
        assert_eq!(
            texts(&lines),
            vec!["mov bx,ax", "inc ax", "add ax,bx", "hlt", "nop"]
        );
        // At offset 0 there is nothing before.
        cpu.eip = 0;
        cpu.segs[Segment::CS as usize] = SegCache::real(0x100);
        let lines = disassemble_around(&cpu, 3, 0);
        assert_eq!(texts(&lines), vec!["mov ax,0x1234"]);
    }
}
