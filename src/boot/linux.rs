//! Direct Linux boot: the x86 boot protocol 2.04+ (Documentation/x86/boot.rst), 32-bit entry.
//!
//! Instead of running the kernel's real-mode setup code (which needs a BIOS), the loader does
//! what that code would: it fills the "zero page" (`struct boot_params`) with a copy of the
//! bzImage's setup header, the command line, the initrd and an e820 memory map, loads the
//! protected-mode kernel at 1 MiB and enters it at `code32_start` in flat 32-bit protected mode
//! with ESI pointing at the zero page.
//!
//! Guest physical layout chosen here (all below 640 KiB, away from the kernel and the initrd):
//!
//! | address   | what                                              |
//! |-----------|---------------------------------------------------|
//! | 0x10000   | boot_params (the zero page, 4 KiB)                |
//! | 0x11000   | the boot GDT (null, null, 0x10 code, 0x18 data)   |
//! | 0x20000   | the kernel command line (NUL-terminated)          |
//! | 0x100000  | the protected-mode kernel                         |
//! | top       | the initrd, as high as initrd_addr_max and RAM allow |

use crate::cpu::seg::{ACC_ACCESSED, ACC_CODE, ACC_P, ACC_RW, ACC_S};
use crate::cpu::{flags, Cpu, SegCache, Segment, CR0_ET, CR0_PE, EBP, EBX, EDI, ESI};

/// Where the zero page goes.
pub const BOOT_PARAMS_ADDR: u32 = 0x1_0000;
/// Where the boot GDT goes.
pub const GDT_ADDR: u32 = 0x1_1000;
/// Where the command line goes.
pub const CMDLINE_ADDR: u32 = 0x2_0000;
/// Where the protected-mode kernel is loaded (the protocol's fixed bzImage address).
pub const KERNEL_ADDR: u32 = 0x10_0000;
/// The boot selectors the protocol requires: flat code and flat data.
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;

/// Start of the EBDA-sized hole at the top of conventional memory, marked reserved in e820.
const LOW_RAM_END: u64 = 0x9_FC00;
/// Start of extended memory.
const HIGH_RAM_START: u64 = 0x10_0000;
/// The oldest protocol this loader speaks: 2.04 (32-bit syssize, initrd_addr_max).
const MIN_PROTOCOL: u16 = 0x0204;

// Setup header fields (offsets in the bzImage file and in boot_params alike).
/// Number of 512-byte setup sectors after the boot sector (0 means 4).
const HDR_SETUP_SECTS: usize = 0x1F1;
/// Size of the protected-mode code in 16-byte paragraphs.
const HDR_SYSSIZE: usize = 0x1F4;
/// 0xAA55 boot sector signature.
const HDR_BOOT_FLAG: usize = 0x1FE;
/// Two-byte jump; its second byte is the header length beyond 0x202.
const HDR_JUMP: usize = 0x200;
/// "HdrS".
const HDR_MAGIC: usize = 0x202;
/// Boot protocol version (major.minor as 0xMMmm).
const HDR_VERSION: usize = 0x206;
/// Boot loader identifier (0xFF: undefined).
const HDR_TYPE_OF_LOADER: usize = 0x210;
/// LOADED_HIGH, KEEP_SEGMENTS, CAN_USE_HEAP...
const HDR_LOADFLAGS: usize = 0x211;
/// 32-bit entry point.
const HDR_CODE32_START: usize = 0x214;
/// Initrd load address and size.
const HDR_RAMDISK_IMAGE: usize = 0x218;
const HDR_RAMDISK_SIZE: usize = 0x21C;
/// End of the setup heap, relative to the real-mode code.
const HDR_HEAP_END_PTR: usize = 0x224;
/// Physical address of the command line.
const HDR_CMD_LINE_PTR: usize = 0x228;
/// Highest address the initrd may occupy.
const HDR_INITRD_ADDR_MAX: usize = 0x22C;
/// Alignment the kernel needs (relocatable kernels).
const HDR_KERNEL_ALIGNMENT: usize = 0x230;
/// Maximum command line length without the NUL (2.06+).
const HDR_CMDLINE_SIZE: usize = 0x238;
/// Preferred load address (2.10+).
const HDR_PREF_ADDRESS: usize = 0x258;
/// Linear memory the kernel needs from its load address to decompress and start (2.10+).
const HDR_INIT_SIZE: usize = 0x260;

/// loadflags: the protected-mode code is loaded at 0x100000 (a bzImage).
const LOADED_HIGH: u8 = 0x01;
/// loadflags: heap_end_ptr is valid.
const CAN_USE_HEAP: u8 = 0x80;

// boot_params fields outside the setup header.
/// screen_info.orig_x/orig_y (cursor position).
const BP_ORIG_X: usize = 0x00;
/// screen_info.ext_mem_k: KiB of memory above 1 MiB (16 bits).
const BP_EXT_MEM_K: usize = 0x02;
/// screen_info.orig_video_mode.
const BP_VIDEO_MODE: usize = 0x06;
/// screen_info.orig_video_cols.
const BP_VIDEO_COLS: usize = 0x07;
/// screen_info.orig_video_ega_bx (bx of INT 10h AH=12h: VGA present, 256 KiB).
const BP_VIDEO_EGA_BX: usize = 0x0A;
/// screen_info.orig_video_lines.
const BP_VIDEO_LINES: usize = 0x0E;
/// screen_info.orig_video_isVGA (1 = VGA text mode).
const BP_VIDEO_IS_VGA: usize = 0x0F;
/// screen_info.orig_video_points (character height).
const BP_VIDEO_POINTS: usize = 0x10;
/// alt_mem_k: KiB of memory above 1 MiB (32 bits).
const BP_ALT_MEM_K: usize = 0x1E0;
/// Number of e820 entries.
const BP_E820_ENTRIES: usize = 0x1E8;
/// The e820 table: 20-byte entries (base u64, length u64, type u32).
const BP_E820_TABLE: usize = 0x2D0;
/// Size of boot_params.
const BOOT_PARAMS_SIZE: usize = 4096;

/// e820 entry types.
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// Why a kernel could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("not a bzImage: {0}")]
    NotBzImage(&'static str),
    #[error("truncated: the setup header says {expected} bytes, the file has {actual}")]
    Truncated { expected: u64, actual: u64 },
    #[error("boot protocol {major}.{minor:02} is too old (2.04 or newer needed)")]
    ProtocolTooOld { major: u8, minor: u8 },
    #[error("the kernel needs memory up to {needed:#x} but the machine has {ram:#x} bytes of RAM")]
    KernelTooLarge { needed: u64, ram: u64 },
    #[error(
        "initrd of {size} bytes does not fit: only {room} bytes are free between the kernel and \
         min(initrd_addr_max, end of RAM)"
    )]
    InitrdTooLarge { size: u64, room: u64 },
    #[error("command line of {len} bytes is longer than the kernel's limit of {max}")]
    CommandLineTooLong { len: usize, max: usize },
}

/// The setup header fields the loader uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Protocol version, 0xMMmm.
    pub version: u16,
    /// Setup sectors after the boot sector.
    pub setup_sects: u32,
    pub loadflags: u8,
    pub code32_start: u32,
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub cmdline_size: u32,
    pub pref_address: u64,
    pub init_size: u32,
    /// File offset of the protected-mode kernel.
    pub payload_offset: usize,
    /// End (exclusive) of the header bytes copied into boot_params.
    pub header_end: usize,
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from(le32(b, off)) | u64::from(le32(b, off + 4)) << 32
}

/// Smallest file that holds every header field this loader reads.
const MIN_HEADER_LEN: usize = HDR_INIT_SIZE + 4;

/// Parse and check the setup header of a bzImage.
pub fn parse_header(image: &[u8]) -> Result<SetupHeader, LoadError> {
    if image.len() < HDR_MAGIC + 4 {
        return Err(LoadError::NotBzImage("too short to hold a setup header"));
    }
    if &image[HDR_MAGIC..HDR_MAGIC + 4] != b"HdrS" {
        return Err(LoadError::NotBzImage(
            "no \"HdrS\" signature at offset 0x202",
        ));
    }
    if image.len() < MIN_HEADER_LEN {
        return Err(LoadError::Truncated {
            expected: MIN_HEADER_LEN as u64,
            actual: image.len() as u64,
        });
    }
    let version = le16(image, HDR_VERSION);
    if version < MIN_PROTOCOL {
        return Err(LoadError::ProtocolTooOld {
            major: (version >> 8) as u8,
            minor: version as u8,
        });
    }
    if le16(image, HDR_BOOT_FLAG) != 0xAA55 {
        return Err(LoadError::NotBzImage("no 0xAA55 boot flag at offset 0x1FE"));
    }
    let loadflags = image[HDR_LOADFLAGS];
    if loadflags & LOADED_HIGH == 0 {
        return Err(LoadError::NotBzImage(
            "a zImage (loaded low), not a bzImage (LOADED_HIGH is clear)",
        ));
    }
    let setup_sects = match image[HDR_SETUP_SECTS] {
        0 => 4,
        n => u32::from(n),
    };
    let payload_offset = (setup_sects as usize + 1) * 512;
    let syssize = u64::from(le32(image, HDR_SYSSIZE)) * 16;
    let expected = payload_offset as u64 + syssize;
    // syssize counts 16-byte paragraphs, rounded up: the file may end up to 15 bytes before
    // (memtest86+'s does; QEMU and the boot loaders load such a file whole).
    if (image.len() as u64) < expected.saturating_sub(15) || image.len() <= payload_offset {
        return Err(LoadError::Truncated {
            expected: expected.max(payload_offset as u64 + 1),
            actual: image.len() as u64,
        });
    }
    let header_end = (HDR_MAGIC + usize::from(image[HDR_JUMP + 1]))
        .clamp(HDR_INIT_SIZE + 4, payload_offset.min(BOOT_PARAMS_SIZE));
    let at_least = |v: u16, off: usize| -> u32 {
        if version >= v {
            le32(image, off)
        } else {
            0
        }
    };
    Ok(SetupHeader {
        version,
        setup_sects,
        loadflags,
        code32_start: le32(image, HDR_CODE32_START),
        initrd_addr_max: le32(image, HDR_INITRD_ADDR_MAX),
        kernel_alignment: at_least(0x0205, HDR_KERNEL_ALIGNMENT),
        cmdline_size: if version >= 0x0206 {
            le32(image, HDR_CMDLINE_SIZE)
        } else {
            255
        },
        pref_address: if version >= 0x020A {
            le64(image, HDR_PREF_ADDRESS)
        } else {
            u64::from(KERNEL_ADDR)
        },
        init_size: at_least(0x020A, HDR_INIT_SIZE),
        payload_offset,
        header_end,
    })
}

/// Where things went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    pub header: SetupHeader,
    /// The 32-bit entry point (code32_start).
    pub entry: u32,
    /// Physical address and size of the initrd, if any.
    pub initrd: Option<(u32, u32)>,
}

/// Load `kernel` (a bzImage), the optional `initrd` and the command line into the CPU's RAM,
/// and put the CPU at the kernel's 32-bit entry point as the boot protocol requires.
pub fn load(
    cpu: &mut Cpu,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<BootInfo, LoadError> {
    let hdr = parse_header(kernel)?;
    let ram = cpu.mem.ram.len() as u64;
    let payload = &kernel[hdr.payload_offset..];

    // The kernel occupies its load address up to the file's end, and while it starts it
    // decompresses into init_size bytes at pref_address (where a relocatable kernel loaded lower
    // moves itself too).
    let kernel_end = (u64::from(KERNEL_ADDR) + payload.len() as u64)
        .max(hdr.pref_address.saturating_add(u64::from(hdr.init_size)));
    if kernel_end > ram {
        return Err(LoadError::KernelTooLarge {
            needed: kernel_end,
            ram,
        });
    }

    let max_cmdline = (hdr.cmdline_size as usize).min(0xFFFF);
    if cmdline.len() > max_cmdline {
        return Err(LoadError::CommandLineTooLong {
            len: cmdline.len(),
            max: max_cmdline,
        });
    }

    let initrd_at = match initrd {
        None => None,
        Some(data) => {
            let size = data.len() as u64;
            let top = (u64::from(hdr.initrd_addr_max) + 1).min(ram);
            let lowest = kernel_end.next_multiple_of(4096);
            let room = top.saturating_sub(lowest);
            if size > room || size > u64::from(u32::MAX) {
                return Err(LoadError::InitrdTooLarge { size, room });
            }
            let addr = (top - size) & !0xFFF;
            Some((addr as u32, size as u32))
        }
    };

    // The zero page: the setup header as the kernel's setup code would leave it.
    let mut bp = vec![0u8; BOOT_PARAMS_SIZE];
    bp[HDR_SETUP_SECTS..hdr.header_end].copy_from_slice(&kernel[HDR_SETUP_SECTS..hdr.header_end]);
    bp[HDR_TYPE_OF_LOADER] = 0xFF;
    bp[HDR_LOADFLAGS] |= CAN_USE_HEAP;
    bp[HDR_HEAP_END_PTR..HDR_HEAP_END_PTR + 2].copy_from_slice(&0xFE00u16.to_le_bytes());
    bp[HDR_CMD_LINE_PTR..HDR_CMD_LINE_PTR + 4].copy_from_slice(&CMDLINE_ADDR.to_le_bytes());
    let (rd_addr, rd_size) = initrd_at.unwrap_or((0, 0));
    bp[HDR_RAMDISK_IMAGE..HDR_RAMDISK_IMAGE + 4].copy_from_slice(&rd_addr.to_le_bytes());
    bp[HDR_RAMDISK_SIZE..HDR_RAMDISK_SIZE + 4].copy_from_slice(&rd_size.to_le_bytes());

    // screen_info: VGA text mode 3, 80x25, cursor at the top left: the state the VGA adapter
    // powers up in (src/dev/vga), since no BIOS sets a mode on a direct boot.
    bp[BP_ORIG_X] = 0;
    bp[BP_ORIG_X + 1] = 0;
    bp[BP_VIDEO_MODE] = 3;
    bp[BP_VIDEO_COLS] = 80;
    bp[BP_VIDEO_LINES] = 25;
    bp[BP_VIDEO_IS_VGA] = 1;
    bp[BP_VIDEO_EGA_BX..BP_VIDEO_EGA_BX + 2].copy_from_slice(&0x0003u16.to_le_bytes());
    bp[BP_VIDEO_POINTS..BP_VIDEO_POINTS + 2].copy_from_slice(&16u16.to_le_bytes());

    let ext_kib = ram.saturating_sub(HIGH_RAM_START) / 1024;
    bp[BP_EXT_MEM_K..BP_EXT_MEM_K + 2].copy_from_slice(&(ext_kib.min(0xFFFF) as u16).to_le_bytes());
    bp[BP_ALT_MEM_K..BP_ALT_MEM_K + 4]
        .copy_from_slice(&(ext_kib.min(u64::from(u32::MAX)) as u32).to_le_bytes());

    // e820: conventional memory, the reserved hole (EBDA, VGA window, ROMs), extended memory.
    let e820 = [
        (0, LOW_RAM_END, E820_RAM),
        (LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, E820_RESERVED),
        (HIGH_RAM_START, ram - HIGH_RAM_START, E820_RAM),
    ];
    for (i, &(base, len, kind)) in e820.iter().enumerate() {
        let at = BP_E820_TABLE + 20 * i;
        bp[at..at + 8].copy_from_slice(&base.to_le_bytes());
        bp[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
        bp[at + 16..at + 20].copy_from_slice(&kind.to_le_bytes());
    }
    bp[BP_E820_ENTRIES] = e820.len() as u8;

    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.push(0);

    // The boot GDT: null, null, then flat 4 GiB code (0x10) and data (0x18).
    let gdt: [u64; 4] = [0, 0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();

    cpu.mem.load(BOOT_PARAMS_ADDR, &bp);
    cpu.mem.load(GDT_ADDR, &gdt_bytes);
    cpu.mem.load(CMDLINE_ADDR, &cmd);
    cpu.mem.load(KERNEL_ADDR, payload);
    if let (Some(data), Some((addr, _))) = (initrd, initrd_at) {
        cpu.mem.load(addr, data);
    }

    enter_protected_mode(cpu, hdr.code32_start, gdt_bytes.len() as u32);
    Ok(BootInfo {
        entry: hdr.code32_start,
        initrd: initrd_at,
        header: hdr,
    })
}

/// A flat 4 GiB 32-bit segment register as loading the boot GDT's descriptor leaves it.
fn flat(selector: u16, code: bool) -> SegCache {
    let kind = if code { ACC_CODE | ACC_RW } else { ACC_RW };
    let mut s = SegCache {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        access: ACC_P | ACC_S | ACC_ACCESSED | kind,
        big: true,
        granular: true,
        avl: false,
        read_lo: 0,
        read_hi: 0,
        write_lo: 0,
        write_hi: 0,
    };
    s.compute_ranges();
    s
}

/// The protocol's 32-bit entry state: protected mode, paging off, interrupts off, flat CS/DS/ES/SS
/// from the GDT, ESI = boot_params, EBP = EDI = EBX = 0.
fn enter_protected_mode(cpu: &mut Cpu, entry: u32, gdt_len: u32) {
    cpu.reset();
    cpu.set_a20(true);
    cpu.gdtr.base = GDT_ADDR;
    cpu.gdtr.limit = gdt_len - 1;
    cpu.idtr.base = 0;
    cpu.idtr.limit = 0;
    cpu.cr0 = CR0_PE | CR0_ET;
    cpu.sync_paging();
    cpu.mem.tlb.flush_all();
    for seg in [
        Segment::ES,
        Segment::SS,
        Segment::DS,
        Segment::FS,
        Segment::GS,
    ] {
        cpu.segs[seg as usize] = flat(BOOT_DS, false);
    }
    cpu.segs[Segment::CS as usize] = flat(BOOT_CS, true);
    cpu.set_cpl(0);
    cpu.flags.set(flags::IF, false);
    cpu.regs = [0; crate::cpu::REG_SLOTS];
    cpu.regs[ESI] = BOOT_PARAMS_ADDR;
    cpu.regs[EBP] = 0;
    cpu.regs[EDI] = 0;
    cpu.regs[EBX] = 0;
    cpu.eip = entry;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: boot sector + `setup_sects` sectors of setup, then `payload`.
    fn fake_bzimage(version: u16, payload: &[u8]) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut img = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        img[HDR_SETUP_SECTS] = setup_sects;
        img[HDR_SYSSIZE..HDR_SYSSIZE + 4]
            .copy_from_slice(&(payload.len().div_ceil(16) as u32).to_le_bytes());
        img[HDR_BOOT_FLAG..HDR_BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
        img[HDR_JUMP] = 0xEB;
        img[HDR_JUMP + 1] = 0x6A; // header up to 0x26C
        img[HDR_MAGIC..HDR_MAGIC + 4].copy_from_slice(b"HdrS");
        img[HDR_VERSION..HDR_VERSION + 2].copy_from_slice(&version.to_le_bytes());
        img[HDR_LOADFLAGS] = LOADED_HIGH;
        img[HDR_CODE32_START..HDR_CODE32_START + 4].copy_from_slice(&KERNEL_ADDR.to_le_bytes());
        img[HDR_INITRD_ADDR_MAX..HDR_INITRD_ADDR_MAX + 4]
            .copy_from_slice(&0x37FF_FFFFu32.to_le_bytes());
        img[HDR_KERNEL_ALIGNMENT..HDR_KERNEL_ALIGNMENT + 4]
            .copy_from_slice(&0x20_0000u32.to_le_bytes());
        img[HDR_CMDLINE_SIZE..HDR_CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        img[HDR_PREF_ADDRESS..HDR_PREF_ADDRESS + 8]
            .copy_from_slice(&u64::from(KERNEL_ADDR).to_le_bytes());
        img[HDR_INIT_SIZE..HDR_INIT_SIZE + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
        let mut padded = payload.to_vec();
        padded.resize(payload.len().div_ceil(16) * 16, 0);
        img.extend_from_slice(&padded);
        img
    }

    #[test]
    fn rejects_a_file_that_is_not_a_bzimage() {
        let mut cpu = Cpu::with_ram(16 << 20);
        let elf = b"\x7fELF this is not a kernel".repeat(100);
        assert!(matches!(
            load(&mut cpu, &elf, None, ""),
            Err(LoadError::NotBzImage(_))
        ));
        assert!(matches!(
            load(&mut cpu, b"tiny", None, ""),
            Err(LoadError::NotBzImage(_))
        ));
    }

    #[test]
    fn rejects_a_truncated_bzimage() {
        let mut cpu = Cpu::with_ram(16 << 20);
        let img = fake_bzimage(0x020F, &[0x90; 8192]);
        let cut = &img[..img.len() - 4096];
        assert_eq!(
            load(&mut cpu, cut, None, ""),
            Err(LoadError::Truncated {
                expected: img.len() as u64,
                actual: cut.len() as u64
            })
        );
        assert!(matches!(
            load(&mut cpu, &img[..0x240], None, ""),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn a_file_that_ends_inside_its_last_paragraph_loads_whole() {
        let mut cpu = Cpu::with_ram(16 << 20);
        let payload: Vec<u8> = (0..8190u32).map(|i| (i * 7) as u8).collect();
        let img = fake_bzimage(0x020F, &payload);
        assert_eq!(le32(&img, HDR_SYSSIZE), 512, "rounded up to 8192 bytes");
        load(&mut cpu, &img, None, "").unwrap();
        let at = KERNEL_ADDR as usize;
        assert_eq!(cpu.mem.ram[at..at + payload.len()], payload[..]);
        // A whole paragraph missing is a truncated file.
        let short = fake_bzimage(0x020F, &[0x90; 8192]);
        assert!(matches!(
            load(&mut cpu, &short[..short.len() - 16], None, ""),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn rejects_an_old_protocol() {
        let mut cpu = Cpu::with_ram(16 << 20);
        let img = fake_bzimage(0x0202, &[0x90; 16]);
        assert_eq!(
            load(&mut cpu, &img, None, ""),
            Err(LoadError::ProtocolTooOld { major: 2, minor: 2 })
        );
    }

    #[test]
    fn rejects_an_initrd_too_large_for_memory() {
        let mut cpu = Cpu::with_ram(8 << 20);
        let img = fake_bzimage(0x020F, &[0x90; 16]);
        let initrd = vec![0u8; 7 << 20];
        assert!(matches!(
            load(&mut cpu, &img, Some(&initrd), ""),
            Err(LoadError::InitrdTooLarge { size, .. }) if size == 7 << 20
        ));
    }

    #[test]
    fn rejects_a_kernel_larger_than_memory() {
        let mut cpu = Cpu::with_ram(1 << 20);
        let img = fake_bzimage(0x020F, &[0x90; 16]);
        assert!(matches!(
            load(&mut cpu, &img, None, ""),
            Err(LoadError::KernelTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_a_command_line_over_the_limit() {
        let mut cpu = Cpu::with_ram(16 << 20);
        let img = fake_bzimage(0x020F, &[0x90; 16]);
        let long = "x".repeat(3000);
        assert!(matches!(
            load(&mut cpu, &img, None, &long),
            Err(LoadError::CommandLineTooLong {
                len: 3000,
                max: 2047
            })
        ));
    }

    #[test]
    fn fills_boot_params_and_enters_32_bit_mode() {
        let mut cpu = Cpu::with_ram(16 << 20);
        // Payload: mov eax,[esi+0x228] (cmd_line_ptr) ; hlt
        let img = fake_bzimage(0x020F, &[0x8B, 0x86, 0x28, 0x02, 0x00, 0x00, 0xF4]);
        let initrd = vec![0xA5u8; 10_000];
        let info = load(&mut cpu, &img, Some(&initrd), "console=ttyS0").unwrap();
        let (rd, rd_size) = info.initrd.unwrap();
        assert_eq!(rd_size, 10_000);
        assert_eq!(rd % 4096, 0);
        assert!(u64::from(rd) + 10_000 <= 16 << 20);
        let m = &cpu.mem.ram;
        let bp = BOOT_PARAMS_ADDR as usize;
        assert_eq!(m[bp + HDR_TYPE_OF_LOADER], 0xFF);
        assert_eq!(&m[bp + HDR_MAGIC..bp + HDR_MAGIC + 4], b"HdrS");
        assert_eq!(m[bp + HDR_LOADFLAGS], LOADED_HIGH | CAN_USE_HEAP);
        assert_eq!(le32(m, bp + HDR_RAMDISK_IMAGE), rd);
        assert_eq!(le32(m, bp + HDR_RAMDISK_SIZE), 10_000);
        assert_eq!(m[bp + BP_E820_ENTRIES], 3);
        assert_eq!(le64(m, bp + BP_E820_TABLE + 40 + 8), (15 << 20) as u64);
        assert_eq!(
            &m[CMDLINE_ADDR as usize..CMDLINE_ADDR as usize + 14],
            b"console=ttyS0\0"
        );
        assert_eq!(m[rd as usize], 0xA5);
        assert_eq!(cpu.regs[ESI], BOOT_PARAMS_ADDR);
        assert_eq!(cpu.eip, KERNEL_ADDR);
        cpu.run(10);
        assert!(cpu.halted);
        assert_eq!(cpu.regs[crate::cpu::EAX], CMDLINE_ADDR);
    }
}
