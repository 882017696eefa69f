//! The CPU's registers as a teaching inspector shows them: general registers, EIP, EFLAGS with
//! the names of the set flags, the segment registers with their hidden descriptor caches, the
//! descriptor tables, the control and debug registers with CR0's and CR4's bits named, the
//! privilege level and the mode. A plain value ([`Registers`]), serialisable for the page and
//! printable as a debugger's register dump ([`format_table`]) for the CLI.

use crate::cpu::flags;
use crate::cpu::seg::{ACC_ACCESSED, ACC_CODE, ACC_DC, ACC_RW, ACC_S};
use crate::cpu::{Cpu, SegCache, TableReg};
use crate::cpu::{
    CR0_AM, CR0_CD, CR0_EM, CR0_ET, CR0_MP, CR0_NE, CR0_NW, CR0_PE, CR0_PG, CR0_TS, CR0_WP, CR4_DE,
    CR4_OSFXSR, CR4_PGE, CR4_PSE, CR4_PVI, CR4_TSD, CR4_VME,
};
use serde::Serialize;

/// The EFLAGS bits with a name, in bit order (IOPL is a two-bit field, given separately).
const FLAG_NAMES: [(u32, &str); 16] = [
    (flags::CF, "CF"),
    (flags::PF, "PF"),
    (flags::AF, "AF"),
    (flags::ZF, "ZF"),
    (flags::SF, "SF"),
    (flags::TF, "TF"),
    (flags::IF, "IF"),
    (flags::DF, "DF"),
    (flags::OF, "OF"),
    (flags::NT, "NT"),
    (flags::RF, "RF"),
    (flags::VM, "VM"),
    (flags::AC, "AC"),
    (flags::VIF, "VIF"),
    (flags::VIP, "VIP"),
    (flags::ID, "ID"),
];

/// CR0's bits with a name, in bit order.
const CR0_NAMES: [(u32, &str); 11] = [
    (CR0_PE, "PE"),
    (CR0_MP, "MP"),
    (CR0_EM, "EM"),
    (CR0_TS, "TS"),
    (CR0_ET, "ET"),
    (CR0_NE, "NE"),
    (CR0_WP, "WP"),
    (CR0_AM, "AM"),
    (CR0_NW, "NW"),
    (CR0_CD, "CD"),
    (CR0_PG, "PG"),
];

/// CR4's bits this CPU implements, in bit order.
const CR4_NAMES: [(u32, &str); 7] = [
    (CR4_VME, "VME"),
    (CR4_PVI, "PVI"),
    (CR4_TSD, "TSD"),
    (CR4_DE, "DE"),
    (CR4_PSE, "PSE"),
    (CR4_PGE, "PGE"),
    (CR4_OSFXSR, "OSFXSR"),
];

/// The names of the bits of `value` that `table` names.
fn names(value: u32, table: &[(u32, &'static str)]) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The CPU's operating mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Real mode (CR0.PE clear).
    Real,
    /// Protected mode.
    Protected,
    /// Virtual-8086 mode (EFLAGS.VM in protected mode).
    V86,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::Protected => "protected",
            Mode::V86 => "v86",
        }
    }
}

/// A segment register: the visible selector and the descriptor cache behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentReg {
    /// ES, CS, SS, DS, FS, GS, LDTR or TR.
    pub name: &'static str,
    pub selector: u16,
    /// The selector's fields: descriptor index, table (LDT or GDT), requested privilege level.
    pub index: u16,
    pub ldt: bool,
    pub rpl: u8,
    /// The cache: base, byte-granular limit, access byte (P, DPL, S, type).
    pub base: u32,
    pub limit: u32,
    pub access: u8,
    /// What the access byte says, e.g. "code, readable" or "32-bit TSS (busy)".
    pub kind: String,
    pub dpl: u8,
    pub present: bool,
    /// D/B: 32-bit code or stack (16-bit when clear).
    pub big: bool,
    /// G as loaded (the limit above is already scaled by it).
    pub granular: bool,
}

impl SegmentReg {
    fn of(name: &'static str, s: &SegCache) -> SegmentReg {
        SegmentReg {
            name,
            selector: s.selector,
            index: s.selector >> 3,
            ldt: s.selector & 4 != 0,
            rpl: (s.selector & 3) as u8,
            base: s.base,
            limit: s.limit,
            access: s.access,
            kind: segment_kind(s.access),
            dpl: s.dpl(),
            present: s.present(),
            big: s.big,
            granular: s.granular,
        }
    }
}

/// What a descriptor's access byte describes, in words.
pub fn segment_kind(access: u8) -> String {
    if access & ACC_S == 0 {
        return match access & 0xF {
            1 => "16-bit TSS (available)".into(),
            2 => "LDT".into(),
            3 => "16-bit TSS (busy)".into(),
            9 => "32-bit TSS (available)".into(),
            11 => "32-bit TSS (busy)".into(),
            t => format!("system type {t}"),
        };
    }
    let mut words = vec![if access & ACC_CODE != 0 {
        "code"
    } else {
        "data"
    }];
    match (
        access & ACC_CODE != 0,
        access & ACC_RW != 0,
        access & ACC_DC != 0,
    ) {
        (true, true, _) => words.push("readable"),
        (true, false, _) => words.push("execute-only"),
        (false, true, _) => words.push("writable"),
        (false, false, _) => words.push("read-only"),
    }
    if access & ACC_DC != 0 {
        words.push(if access & ACC_CODE != 0 {
            "conforming"
        } else {
            "expand-down"
        });
    }
    if access & ACC_ACCESSED != 0 {
        words.push("accessed");
    }
    words.join(", ")
}

/// A descriptor-table register (GDTR, IDTR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    pub base: u32,
    pub limit: u32,
}

impl From<TableReg> for Table {
    fn from(t: TableReg) -> Table {
        Table {
            base: t.base,
            limit: t.limit,
        }
    }
}

/// Everything the inspector shows of the CPU, taken at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registers {
    pub eax: u32,
    pub ecx: u32,
    pub edx: u32,
    pub ebx: u32,
    pub esp: u32,
    pub ebp: u32,
    pub esi: u32,
    pub edi: u32,
    pub eip: u32,
    /// Where the next instruction is: CS base + EIP.
    pub linear_eip: u32,
    pub eflags: u32,
    /// The names of the set EFLAGS bits (CF PF AF ZF SF TF IF DF OF NT RF VM AC VIF VIP ID).
    pub flags: Vec<&'static str>,
    pub iopl: u8,
    /// ES, CS, SS, DS, FS, GS.
    pub segments: Vec<SegmentReg>,
    pub ldtr: SegmentReg,
    pub tr: SegmentReg,
    pub gdtr: Table,
    pub idtr: Table,
    pub cr0: u32,
    /// The names of CR0's set bits (PE MP EM TS ET NE WP AM NW CD PG).
    pub cr0_bits: Vec<&'static str>,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    pub cr4_bits: Vec<&'static str>,
    /// DR0..DR7 (DR4 and DR5 alias DR6 and DR7).
    pub dr: [u32; 8],
    /// Current privilege level.
    pub cpl: u8,
    pub mode: Mode,
    /// Paging is on (CR0.PG in protected mode).
    pub paging: bool,
    /// The default operand and address size of the code: 16 or 32 (CS's D bit).
    pub code_size: u32,
    /// The stack pointer's width: 16 or 32 (SS's B bit).
    pub stack_size: u32,
    /// The CPU executed HLT and waits for an interrupt.
    pub halted: bool,
    /// Instructions retired since power-on.
    pub instructions: u64,
}

/// The segment registers' names, in `Cpu::segs` order.
const SEG_NAMES: [&str; 6] = ["ES", "CS", "SS", "DS", "FS", "GS"];

impl Registers {
    /// The registers of `cpu` now.
    pub fn of(cpu: &Cpu) -> Registers {
        let eflags = cpu.flags.word();
        let cs = &cpu.segs[crate::cpu::Segment::CS as usize];
        let ss = &cpu.segs[crate::cpu::Segment::SS as usize];
        let mode = if cpu.real_mode() {
            Mode::Real
        } else if cpu.v86_mode() {
            Mode::V86
        } else {
            Mode::Protected
        };
        Registers {
            eax: cpu.regs[crate::cpu::EAX],
            ecx: cpu.regs[crate::cpu::ECX],
            edx: cpu.regs[crate::cpu::EDX],
            ebx: cpu.regs[crate::cpu::EBX],
            esp: cpu.regs[crate::cpu::ESP],
            ebp: cpu.regs[crate::cpu::EBP],
            esi: cpu.regs[crate::cpu::ESI],
            edi: cpu.regs[crate::cpu::EDI],
            eip: cpu.eip,
            linear_eip: cs.base.wrapping_add(cpu.eip),
            eflags,
            flags: names(eflags, &FLAG_NAMES),
            iopl: ((eflags & flags::IOPL) >> 12) as u8,
            segments: SEG_NAMES
                .iter()
                .zip(cpu.segs.iter())
                .map(|(name, s)| SegmentReg::of(name, s))
                .collect(),
            ldtr: SegmentReg::of("LDTR", &cpu.ldtr),
            tr: SegmentReg::of("TR", &cpu.tr),
            gdtr: cpu.gdtr.into(),
            idtr: cpu.idtr.into(),
            cr0: cpu.cr0,
            cr0_bits: names(cpu.cr0, &CR0_NAMES),
            cr2: cpu.cr2,
            cr3: cpu.cr3,
            cr4: cpu.cr4,
            cr4_bits: names(cpu.cr4, &CR4_NAMES),
            dr: cpu.dr,
            cpl: cpu.cpl,
            mode,
            paging: cpu.protected_mode() && cpu.cr0 & CR0_PG != 0,
            code_size: if cs.big { 32 } else { 16 },
            stack_size: if ss.big { 32 } else { 16 },
            halted: cpu.halted,
            instructions: cpu.instructions,
        }
    }

    /// The eight general registers with their names, in the order a dump shows them.
    pub fn general(&self) -> [(&'static str, u32); 8] {
        [
            ("EAX", self.eax),
            ("EBX", self.ebx),
            ("ECX", self.ecx),
            ("EDX", self.edx),
            ("ESI", self.esi),
            ("EDI", self.edi),
            ("EBP", self.ebp),
            ("ESP", self.esp),
        ]
    }

    /// Each register as a name and its text in the dump, for comparing two moments. EIP and
    /// the retired count are left out: they change with every instruction.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = self
            .general()
            .iter()
            .map(|(n, v)| (*n, format!("{v:08x}")))
            .collect();
        out.push(("EFL", eflags_text(self)));
        for s in self.segments.iter().chain([&self.ldtr, &self.tr]) {
            out.push((s.name, segment_text(s)));
        }
        out.push(("GDT", table_text(&self.gdtr)));
        out.push(("IDT", table_text(&self.idtr)));
        out.push(("CR0", bits_text(self.cr0, &self.cr0_bits)));
        out.push(("CR2", format!("{:08x}", self.cr2)));
        out.push(("CR3", format!("{:08x}", self.cr3)));
        out.push(("CR4", bits_text(self.cr4, &self.cr4_bits)));
        for (n, name) in [
            (0, "DR0"),
            (1, "DR1"),
            (2, "DR2"),
            (3, "DR3"),
            (6, "DR6"),
            (7, "DR7"),
        ] {
            out.push((name, format!("{:08x}", self.dr[n])));
        }
        out.push(("CPL", self.cpl.to_string()));
        out.push(("mode", mode_text(self)));
        out.push(("halted", self.halted.to_string()));
        out
    }
}

fn eflags_text(r: &Registers) -> String {
    format!("{:08x} [{}] IOPL={}", r.eflags, r.flags.join(" "), r.iopl)
}

fn segment_text(s: &SegmentReg) -> String {
    format!(
        "{:04x} {:08x} {:08x} {:02x} DPL{} {}{} {}",
        s.selector,
        s.base,
        s.limit,
        s.access,
        s.dpl,
        if s.present { "" } else { "not present, " },
        s.kind,
        if s.big { 32 } else { 16 }
    )
}

fn table_text(t: &Table) -> String {
    format!("{:08x} {:08x}", t.base, t.limit)
}

fn bits_text(value: u32, bits: &[&str]) -> String {
    format!("{value:08x} [{}]", bits.join(" "))
}

fn mode_text(r: &Registers) -> String {
    format!(
        "{} mode, {}-bit code, paging {}",
        r.mode.name(),
        r.code_size,
        if r.paging { "on" } else { "off" }
    )
}

/// A register dump, one group per line, as a debugger prints it:
///
/// ```text
/// EAX=00000000 EBX=00000000 ECX=00000000 EDX=00000633
/// ESI=00000000 EDI=00000000 EBP=00000000 ESP=00000000
/// EIP=0000fff0 (linear fffffff0) EFL=00000002 [] IOPL=0 CPL=0
/// real mode, 16-bit code, paging off, instructions=0
/// ES =0000 00000000 0000ffff 93 DPL0 data, writable, accessed 16
/// CS =f000 ffff0000 0000ffff 93 DPL0 data, writable, accessed 16
/// ...
/// GDT=     00000000 0000ffff
/// CR0=60000010 [ET NW CD] CR2=00000000 CR3=00000000 CR4=00000000 []
/// DR0=00000000 DR1=00000000 DR2=00000000 DR3=00000000 DR6=ffff0ff0 DR7=00000400
/// ```
///
/// Segment lines: selector, base, limit, access byte, then the access byte in words and the
/// D/B size.
pub fn format_table(r: &Registers) -> String {
    let mut out = String::new();
    let g = r.general();
    for row in g.chunks(4) {
        let cells: Vec<String> = row.iter().map(|(n, v)| format!("{n}={v:08x}")).collect();
        out.push_str(&cells.join(" "));
        out.push('\n');
    }
    out.push_str(&format!(
        "EIP={:08x} (linear {:08x}) EFL={} CPL={}\n",
        r.eip,
        r.linear_eip,
        eflags_text(r),
        r.cpl
    ));
    out.push_str(&format!(
        "{}, instructions={}{}\n",
        mode_text(r),
        r.instructions,
        if r.halted { ", halted" } else { "" }
    ));
    for s in r.segments.iter() {
        out.push_str(&format!("{:<3}={}\n", s.name, segment_text(s)));
    }
    out.push_str(&format!("LDT={}\n", segment_text(&r.ldtr)));
    out.push_str(&format!("TR ={}\n", segment_text(&r.tr)));
    out.push_str(&format!("GDT=     {}\n", table_text(&r.gdtr)));
    out.push_str(&format!("IDT=     {}\n", table_text(&r.idtr)));
    out.push_str(&format!(
        "CR0={} CR2={:08x} CR3={:08x} CR4={}\n",
        bits_text(r.cr0, &r.cr0_bits),
        r.cr2,
        r.cr3,
        bits_text(r.cr4, &r.cr4_bits)
    ));
    out.push_str(&format!(
        "DR0={:08x} DR1={:08x} DR2={:08x} DR3={:08x} DR6={:08x} DR7={:08x}\n",
        r.dr[0], r.dr[1], r.dr[2], r.dr[3], r.dr[6], r.dr[7]
    ));
    out
}

/// What changed from `before` to `after`, each as `NAME=text` in the dump's notation (EIP and
/// the retired count left out), e.g. `["EAX=00000005", "EFL=00000046 [PF ZF] IOPL=0"]`.
pub fn changes(before: &Registers, after: &Registers) -> Vec<String> {
    before
        .fields()
        .into_iter()
        .zip(after.fields())
        .filter(|(b, a)| b.1 != a.1)
        .map(|(_, (name, text))| format!("{name}={text}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{Segment, CR0_PE, CR0_PG, EAX, EBX};

    #[test]
    fn power_on_registers_are_real_mode_at_the_reset_vector() {
        let cpu = Cpu::with_ram(1 << 20);
        let r = Registers::of(&cpu);
        assert_eq!((r.eip, r.linear_eip), (0xFFF0, 0xFFFF_FFF0));
        assert_eq!(r.eflags, 0x0000_0002);
        assert!(r.flags.is_empty());
        assert_eq!(r.mode, Mode::Real);
        assert_eq!((r.code_size, r.stack_size, r.paging), (16, 16, false));
        let cs = &r.segments[Segment::CS as usize];
        assert_eq!(
            (cs.name, cs.selector, cs.base, cs.limit),
            ("CS", 0xF000, 0xFFFF_0000, 0xFFFF)
        );
        assert_eq!(cs.kind, "data, writable, accessed");
        assert!(cs.present && !cs.big);
        assert_eq!(r.cr0_bits, vec!["ET", "NW", "CD"]);
        assert_eq!(r.edx, crate::cpu::system::CPU_SIGNATURE);
        assert_eq!(r.dr[6], 0xFFFF_0FF0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["mode"], "real");
        assert_eq!(json["segments"][1]["selector"], 0xF000);
    }

    #[test]
    fn flags_and_control_bits_are_named() {
        let mut cpu = Cpu::with_ram(1 << 20);
        cpu.flags.set_word(
            flags::CF | flags::ZF | flags::IF | flags::OF | (2 << 12) | flags::VM | flags::ID,
        );
        cpu.cr0 = CR0_PE | CR0_PG | CR0_WP;
        cpu.cr4 = CR4_PSE | CR4_PGE;
        let r = Registers::of(&cpu);
        assert_eq!(r.flags, vec!["CF", "ZF", "IF", "OF", "VM", "ID"]);
        assert_eq!(r.iopl, 2);
        assert_eq!(r.mode, Mode::V86, "VM in protected mode");
        assert!(r.paging);
        assert_eq!(r.cr0_bits, vec!["PE", "WP", "PG"]);
        assert_eq!(r.cr4_bits, vec!["PSE", "PGE"]);
        cpu.flags.set_word(0);
        assert_eq!(Registers::of(&cpu).mode, Mode::Protected);
    }

    #[test]
    fn segment_kinds_in_words() {
        assert_eq!(segment_kind(0x9B), "code, readable, accessed");
        assert_eq!(segment_kind(0x98), "code, execute-only");
        assert_eq!(segment_kind(0x9E), "code, readable, conforming");
        assert_eq!(segment_kind(0x96), "data, writable, expand-down");
        assert_eq!(segment_kind(0x90), "data, read-only");
        assert_eq!(segment_kind(0x8B), "32-bit TSS (busy)");
        assert_eq!(segment_kind(0x82), "LDT");
        assert_eq!(segment_kind(0x8C), "system type 12");
    }

    #[test]
    fn the_table_and_the_changes_read_like_a_debugger() {
        let mut cpu = Cpu::with_ram(1 << 20);
        let before = Registers::of(&cpu);
        let table = format_table(&before);
        assert!(
            table.starts_with("EAX=00000000 EBX=00000000 ECX=00000000 EDX=00000"),
            "{table}"
        );
        assert!(
            table.contains("EIP=0000fff0 (linear fffffff0) EFL=00000002 [] IOPL=0 CPL=0\n"),
            "{table}"
        );
        assert!(
            table.contains("CS =f000 ffff0000 0000ffff 93 DPL0 data, writable, accessed 16\n"),
            "{table}"
        );
        assert!(table.contains("real mode, 16-bit code, paging off, instructions=0\n"));
        assert!(table.contains("CR0=60000010 [ET NW CD]"), "{table}");
        cpu.regs[EAX] = 5;
        cpu.regs[EBX] = 7;
        cpu.flags.set_word(flags::ZF | flags::PF);
        cpu.eip = 0x1234;
        cpu.instructions = 9;
        let after = Registers::of(&cpu);
        assert_eq!(
            changes(&before, &after),
            vec![
                "EAX=00000005",
                "EBX=00000007",
                "EFL=00000046 [PF ZF] IOPL=0"
            ],
            "EIP and the count are not changes worth listing"
        );
        assert!(changes(&after, &after).is_empty());
    }
}
