//! The controller driven through its ports as Linux drives it: PIO and DMA, ATA and ATAPI,
//! errors, and its PCI gates.

use super::*;
use crate::block::MemBackend;
use crate::dev::testing::Rig;

/// The controller on the shared device rig, with guest memory for its DMA.
struct H {
    rig: Rig<Ide>,
    mem: Vec<u8>,
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 512) as u8).collect()
}

impl H {
    fn new() -> H {
        H {
            rig: Rig::new(Ide::new(), 0x1F0),
            mem: vec![0; 1 << 20],
        }
    }
    fn with_disk(sectors: usize) -> H {
        let mut h = H::new();
        let d = AtaDisk::new(Box::new(MemBackend::new(pattern(sectors * 512)))).unwrap();
        h.rig.dev.attach(0, Drive::Ata(d));
        h
    }
    /// Where `port` is: the range it is in (as the board maps them) and the offset.
    fn window(port: u16) -> At {
        let base = match port {
            0x1F0..=0x1F7 => 0x1F0,
            0x170..=0x177 => 0x170,
            0x3F6 | 0x376 => port,
            _ => BM_DEFAULT_BASE,
        };
        At::new(base.into(), (port - base).into())
    }
    fn out(&mut self, port: u16, size: u8, v: u32) {
        let at = Self::window(port);
        self.rig.write_at(at.base, at.offset, size, v);
    }
    fn inp(&mut self, port: u16, size: u8) -> u32 {
        let at = Self::window(port);
        self.rig.read_at(at.base, at.offset, size)
    }
    fn outb(&mut self, port: u16, v: u8) {
        self.out(port, 1, v.into());
    }
    fn inb(&mut self, port: u16) -> u8 {
        self.inp(port, 1) as u8
    }
    /// Issue an LBA28 command to the primary master.
    fn ata28(&mut self, cmd: u8, lba: u32, count: u8) {
        self.outb(0x1F6, 0xE0 | (lba >> 24) as u8 & 0x0F);
        self.outb(0x1F2, count);
        self.outb(0x1F3, lba as u8);
        self.outb(0x1F4, (lba >> 8) as u8);
        self.outb(0x1F5, (lba >> 16) as u8);
        self.outb(0x1F7, cmd);
    }
    fn read_words(&mut self, base: u16, n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.extend_from_slice(&(self.inp(base, 2) as u16).to_le_bytes());
        }
        v
    }
    fn dma(&mut self) {
        let (ide, mut ctx) = self.rig.ctx();
        ide.run_dma(&mut self.mem, &mut ctx);
    }
}

#[test]
fn identify_reports_capacity_lba48_and_dma_modes() {
    let mut h = H::with_disk(8192);
    h.outb(0x1F6, 0xA0);
    h.outb(0x1F7, CMD_IDENTIFY);
    assert!(h.rig.irq.get(14));
    let st = h.inb(0x1F7);
    assert_eq!(st & (ST_BSY | ST_DRQ | ST_DRDY), ST_DRQ | ST_DRDY);
    assert!(!h.rig.irq.get(14), "status read acknowledges");
    let id = h.read_words(0x1F0, 256);
    let w = |i: usize| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]);
    assert_eq!(w(0), 0x0040);
    assert_eq!((w(60), w(61)), (8192, 0));
    assert_eq!(w(100), 8192);
    assert!(w(83) & 0x0400 != 0 && w(49) & 0x0300 == 0x0300);
    assert_eq!(w(63) & 7, 7);
    assert_eq!(&id[54..60], b"AWMS68");
    assert_eq!(h.inb(0x1F7) & ST_DRQ, 0);
}

#[test]
fn pio_write_then_read_back_lba28_and_lba48() {
    let mut h = H::with_disk(1024);
    h.ata28(CMD_WRITE_SECTORS, 5, 2);
    assert!(!h.rig.irq.get(14), "no interrupt before the first block");
    for i in 0..128u32 {
        h.out(0x1F0, 4, 0xA5A5_0000 | i);
    }
    assert!(h.rig.irq.get(14) && h.inb(0x1F7) & ST_DRQ != 0);
    for i in 0..128u32 {
        h.out(0x1F0, 4, 0x5A5A_0000 | i);
    }
    assert_eq!(h.inb(0x1F7) & (ST_DRQ | ST_ERR | ST_BSY), 0);
    // READ SECTORS EXT: previous bytes first.
    h.outb(0x1F6, 0x40);
    for (port, v) in [
        (0x1F2, 0),
        (0x1F2, 3),
        (0x1F3, 0),
        (0x1F3, 4),
        (0x1F4, 0),
        (0x1F4, 0),
    ] {
        h.outb(port, v);
    }
    h.outb(0x1F5, 0);
    h.outb(0x1F5, 0);
    h.outb(0x1F7, CMD_READ_SECTORS_EXT);
    let mut data = Vec::new();
    for _ in 0..3 {
        assert!(h.inb(0x1F7) & ST_DRQ != 0);
        data.extend(h.read_words(0x1F0, 256));
    }
    assert_eq!(&data[..512], &pattern(1024 * 512)[4 * 512..5 * 512]);
    assert_eq!(&data[512..516], &[0, 0, 0xA5, 0xA5]);
    assert_eq!(&data[1024..1028], &[0, 0, 0x5A, 0x5A]);
    // The source image did not change.
    let Some(Drive::Ata(d)) = h.rig.dev.drive(0) else {
        panic!()
    };
    assert_eq!(d.overlay().dirty_count(), 2);
}

#[test]
fn lba_beyond_the_disk_is_idnf_and_bad_commands_abort() {
    let mut h = H::with_disk(100);
    h.ata28(CMD_READ_SECTORS, 99, 2);
    assert_eq!(h.inb(0x1F7) & ST_ERR, ST_ERR);
    assert!(h.inb(0x1F1) & ER_IDNF != 0);
    h.ata28(CMD_READ_MULTIPLE, 0, 1);
    assert_eq!(h.inb(0x1F1), ER_ABRT, "READ MULTIPLE before SET MULTIPLE");
    h.ata28(0xFF, 0, 1);
    assert_eq!(h.inb(0x1F1), ER_ABRT);
    // Data port reads with no transfer float.
    assert_eq!(h.inp(0x1F0, 2), 0xFFFF);
    // CHS: sector 0 does not exist.
    h.outb(0x1F6, 0xA0);
    h.outb(0x1F3, 0);
    h.outb(0x1F7, CMD_READ_SECTORS);
    assert!(h.inb(0x1F1) & ER_IDNF != 0);
}

#[test]
fn read_multiple_gives_blocks_of_the_set_size() {
    let mut h = H::with_disk(64);
    h.ata28(CMD_SET_MULTIPLE, 0, 4);
    assert_eq!(h.inb(0x1F7) & ST_ERR, 0);
    h.ata28(CMD_READ_MULTIPLE, 0, 6);
    h.inb(0x1F7);
    let a = h.read_words(0x1F0, 4 * 256);
    assert!(h.rig.irq.get(14), "second block interrupts");
    h.inb(0x1F7);
    let b = h.read_words(0x1F0, 2 * 256);
    assert_eq!([a, b].concat(), pattern(64 * 512)[..6 * 512].to_vec());
    assert_eq!(h.inb(0x1F7) & ST_DRQ, 0);
}

/// Write a PRD table at 0x1000 with `entries` (addr, len, eot).
fn prd(h: &mut H, entries: &[(u32, u32, bool)]) {
    for (i, &(a, l, eot)) in entries.iter().enumerate() {
        let f = (l & 0xFFFF) | if eot { PRD_EOT } else { 0 };
        let at = 0x1000 + 8 * i;
        h.mem[at..at + 4].copy_from_slice(&a.to_le_bytes());
        h.mem[at + 4..at + 8].copy_from_slice(&f.to_le_bytes());
    }
    h.out(BM_DEFAULT_BASE + 4, 4, 0x1000);
}

#[test]
fn dma_read_and_write_through_a_prd_table() {
    let mut h = H::with_disk(256);
    prd(&mut h, &[(0x2000, 512, false), (0x8000, 1024, true)]);
    h.outb(BM_DEFAULT_BASE + 2, BM_ST_ERROR | BM_ST_INTR);
    h.ata28(CMD_READ_DMA, 10, 3);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
    assert!(h.rig.dev.dma_ready());
    h.dma();
    let src = pattern(256 * 512);
    assert_eq!(&h.mem[0x2000..0x2200], &src[10 * 512..11 * 512]);
    assert_eq!(&h.mem[0x8000..0x8400], &src[11 * 512..13 * 512]);
    assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & 7, BM_ST_INTR);
    assert!(h.rig.irq.get(14));
    assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ | ST_ERR), 0);
    h.outb(BM_DEFAULT_BASE, 0);
    // Write the same memory back two sectors further on.
    h.outb(BM_DEFAULT_BASE + 2, BM_ST_INTR);
    h.ata28(CMD_WRITE_DMA, 20, 3);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START);
    h.dma();
    h.ata28(CMD_READ_SECTORS, 21, 1);
    h.inb(0x1F7);
    assert_eq!(h.read_words(0x1F0, 256), src[11 * 512..12 * 512].to_vec());
    assert_eq!(h.rig.dev.dma_count()[0], 2);
}

#[test]
fn bad_prd_tables_give_errors_not_hangs() {
    let mut h = H::with_disk(256);
    // Points outside RAM.
    prd(&mut h, &[(0xFFFF_0000, 512, true)]);
    h.ata28(CMD_READ_DMA, 0, 1);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
    h.dma();
    assert!(h.inb(BM_DEFAULT_BASE + 2) & BM_ST_ERROR != 0);
    assert!(h.inb(0x1F7) & ST_ERR != 0);
    // Too short for the data.
    h.outb(BM_DEFAULT_BASE, 0);
    h.outb(BM_DEFAULT_BASE + 2, BM_ST_ERROR | BM_ST_INTR);
    prd(&mut h, &[(0x2000, 512, true)]);
    h.ata28(CMD_READ_DMA, 0, 2);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
    h.dma();
    assert!(h.inb(BM_DEFAULT_BASE + 2) & BM_ST_ERROR != 0);
    assert!(h.inb(0x1F7) & ST_ERR != 0);
    // No EOT anywhere: the walk is bounded (zero entries mean 64 KiB each).
    h.outb(BM_DEFAULT_BASE, 0);
    h.mem[0x1000..0x11000].fill(0);
    h.out(BM_DEFAULT_BASE + 4, 4, 0x1000);
    h.ata28(CMD_READ_DMA, 0, 1);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
    h.dma();
    assert_eq!(h.inb(0x1F7) & ST_ERR, 0);
}

#[test]
fn soft_reset_shows_signatures_and_absent_slave_reads_zero() {
    let mut h = H::with_disk(64);
    let cd = Cdrom::with_disc(Box::new(MemBackend::new(vec![0; 4096])));
    h.rig.dev.attach(3, Drive::Atapi(cd));
    h.outb(0x3F6, CTL_SRST);
    assert_eq!(h.inb(0x1F7) & ST_BSY, ST_BSY);
    h.outb(0x3F6, 0);
    assert_eq!(
        (h.inb(0x1F2), h.inb(0x1F3), h.inb(0x1F4), h.inb(0x1F5)),
        (1, 1, 0, 0)
    );
    assert_eq!(h.inb(0x1F1), 1);
    assert_eq!(h.inb(0x1F7), ST_DRDY | ST_DSC);
    // Slave absent on the primary channel.
    h.outb(0x1F6, 0xB0);
    assert_eq!((h.inb(0x1F7), h.inb(0x1F1)), (0, 0));
    // ATAPI signature on the secondary slave; master absent.
    h.outb(0x376, CTL_SRST);
    h.outb(0x376, 0);
    h.outb(0x176, 0xB0);
    assert_eq!((h.inb(0x174), h.inb(0x175)), (0x14, 0xEB));
    h.outb(0x176, 0xA0);
    assert_eq!(h.inb(0x177), 0);
    // IDENTIFY DEVICE to an ATAPI drive aborts.
    h.outb(0x176, 0xB0);
    h.outb(0x177, CMD_IDENTIFY);
    assert_eq!(h.inb(0x177) & ST_ERR, ST_ERR);
    // A channel with no drives floats.
    let mut e = H::new();
    assert_eq!(e.inb(0x1F7), 0xFF);
}

#[test]
fn nien_masks_the_interrupt_line() {
    let mut h = H::with_disk(64);
    h.outb(0x3F6, CTL_NIEN);
    h.ata28(CMD_FLUSH_CACHE, 0, 0);
    assert!(!h.rig.irq.get(14));
    h.outb(0x3F6, 0);
    assert!(h.rig.irq.get(14), "INTRQ was pending");
    assert_eq!(h.inb(0x3F6) & ST_ERR, 0);
    assert!(h.rig.irq.get(14), "alternate status does not acknowledge");
    h.inb(0x1F7);
    assert!(!h.rig.irq.get(14));
}

fn packet(h: &mut H, cdb: &[u8], limit: u16, dma: bool) {
    h.outb(0x176, 0xA0);
    h.outb(0x171, u8::from(dma));
    h.outb(0x174, limit as u8);
    h.outb(0x175, (limit >> 8) as u8);
    h.outb(0x177, CMD_PACKET);
    assert_eq!(h.inb(0x177) & ST_DRQ, ST_DRQ);
    assert_eq!(h.inb(0x172), IR_COD);
    let mut c = [0u8; 12];
    c[..cdb.len()].copy_from_slice(cdb);
    for w in c.chunks(2) {
        h.out(0x170, 2, u16::from_le_bytes([w[0], w[1]]).into());
    }
}

#[test]
fn atapi_inquiry_and_read10_by_pio_and_dma() {
    let mut h = H::new();
    let disc = pattern(10 * 2048);
    h.rig.dev.attach(
        2,
        Drive::Atapi(Cdrom::with_disc(Box::new(MemBackend::new(disc.clone())))),
    );
    packet(&mut h, &[0x12, 0, 0, 0, 36], 0x1000, false);
    assert!(h.rig.irq.get(15));
    assert_eq!(h.inb(0x177) & ST_DRQ, ST_DRQ);
    assert_eq!(h.inb(0x174) as u16 | (h.inb(0x175) as u16) << 8, 36);
    let inq = h.read_words(0x170, 18);
    assert_eq!(inq[0], 5);
    assert_eq!(&inq[8..14], b"WASM86");
    assert_eq!(h.inb(0x172), IR_IO | IR_COD);
    assert_eq!(h.inb(0x177) & (ST_DRQ | ST_ERR), 0);
    // READ(10) of 2 sectors at LBA 3 with a byte count limit of 1000: chunks of 1000.
    packet(&mut h, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2], 1000, false);
    let mut got = Vec::new();
    while h.inb(0x177) & ST_DRQ != 0 {
        let n = h.inb(0x174) as usize | (h.inb(0x175) as usize) << 8;
        assert!(n <= 1000);
        got.extend(h.read_words(0x170, n / 2));
    }
    assert_eq!(got, disc[3 * 2048..5 * 2048].to_vec());
    // The same by DMA.
    prd(&mut h, &[(0x4000, 4096, true)]);
    h.out(BM_DEFAULT_BASE + 8 + 4, 4, 0x1000);
    packet(&mut h, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2], 0, true);
    h.outb(BM_DEFAULT_BASE + 8, BM_CMD_START | BM_CMD_WRITE);
    h.dma();
    assert_eq!(&h.mem[0x4000..0x5000], &disc[3 * 2048..5 * 2048]);
    assert_eq!(h.inb(0x177) & ST_ERR, 0);
    // Out of range: CHECK CONDITION, ILLEGAL REQUEST in the error register.
    packet(&mut h, &[0x28, 0, 0, 0, 0, 9, 0, 0, 2], 0, false);
    assert_eq!(h.inb(0x177) & ST_ERR, ST_ERR);
    assert_eq!(h.inb(0x171) >> 4, atapi::SK_ILLEGAL_REQUEST);
}

/// A backend that answers "pending" until released.
struct Slow {
    data: Vec<u8>,
    released: std::rc::Rc<std::cell::Cell<bool>>,
}
impl BlockBackend for Slow {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
        if !self.released.get() {
            return Ok(ReadStatus::Pending);
        }
        let o = offset as usize;
        buf.copy_from_slice(&self.data[o..o + buf.len()]);
        Ok(ReadStatus::Ready)
    }
}

#[test]
fn pending_reads_stay_busy_until_the_host_wakes_the_drive() {
    let mut h = H::new();
    let released = std::rc::Rc::new(std::cell::Cell::new(false));
    let slow = Slow {
        data: pattern(8 * 512),
        released: released.clone(),
    };
    h.rig
        .dev
        .attach(0, Drive::Ata(AtaDisk::new(Box::new(slow)).unwrap()));
    h.ata28(CMD_READ_SECTORS, 1, 1);
    assert_eq!(h.inb(0x1F7) & ST_BSY, ST_BSY);
    assert!(!h.rig.irq.get(14));
    released.set(true);
    h.wake();
    assert!(h.rig.irq.get(14));
    assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ), ST_DRQ);
    assert_eq!(
        h.read_words(0x1F0, 256),
        pattern(8 * 512)[512..1024].to_vec()
    );
}

#[test]
fn images_of_bad_size_are_refused() {
    assert_eq!(
        AtaDisk::new(Box::new(MemBackend::new(vec![0; 1000]))).unwrap_err(),
        ImageError::NotSectorMultiple(1000)
    );
    assert_eq!(
        AtaDisk::new(Box::new(MemBackend::new(Vec::new()))).unwrap_err(),
        ImageError::Empty
    );
}

// ---- backends that answer "pending" or fail ---------------------------------------------

/// What a [`Scripted`] backend answers to its next read.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Pending,
    Ready,
    Fail,
}

type Plan = std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<Answer>>>;

/// A backend that answers each read from a plan (then Ready once the plan is used up).
struct Scripted {
    data: Vec<u8>,
    plan: Plan,
}
impl BlockBackend for Scripted {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
        match self.plan.borrow_mut().pop_front().unwrap_or(Answer::Ready) {
            Answer::Pending => Ok(ReadStatus::Pending),
            Answer::Fail => Err(BlockError::Io("scripted failure".into())),
            Answer::Ready => {
                let o = offset as usize;
                buf.copy_from_slice(&self.data[o..o + buf.len()]);
                Ok(ReadStatus::Ready)
            }
        }
    }
}

fn scripted(data: Vec<u8>, plan: &[Answer]) -> (Box<dyn BlockBackend>, Plan) {
    let plan: Plan = std::rc::Rc::new(std::cell::RefCell::new(plan.iter().copied().collect()));
    (
        Box::new(Scripted {
            data,
            plan: plan.clone(),
        }),
        plan,
    )
}

impl H {
    /// A disk (primary master) over a scripted backend.
    fn with_scripted_disk(sectors: usize, plan: &[Answer]) -> (H, Plan) {
        let mut h = H::new();
        let (b, plan) = scripted(pattern(sectors * 512), plan);
        h.rig.dev.attach(0, Drive::Ata(AtaDisk::new(b).unwrap()));
        (h, plan)
    }
    /// A CD (secondary master) over a scripted backend.
    fn with_scripted_cd(sectors: usize, plan: &[Answer]) -> (H, Plan) {
        let mut h = H::new();
        let (b, plan) = scripted(pattern(sectors * CD_SECTOR), plan);
        h.rig.dev.attach(2, Drive::Atapi(Cdrom::with_disc(b)));
        (h, plan)
    }
    fn wake(&mut self) {
        let (ide, mut ctx) = self.rig.ctx();
        ide.wake(&mut ctx);
    }
    fn pci(&mut self, command: u16, idetim_hi: [u8; 2]) {
        let mut c = pci_config();
        c.set16(pci::CFG_COMMAND, command);
        c.set8(0x41, idetim_hi[0]);
        c.set8(0x43, idetim_hi[1]);
        self.rig.dev.sync_pci(&c);
    }
}

use Answer::{Fail, Pending, Ready};

#[test]
fn pending_pio_read_keeps_bsy_until_wake_then_interrupts_for_each_block() {
    let (mut h, plan) = H::with_scripted_disk(64, &[Pending, Ready, Pending, Ready]);
    h.ata28(CMD_READ_SECTORS, 3, 2);
    assert_eq!(h.inb(0x3F6), ST_BSY, "BSY alone while the backend fetches");
    assert!(!h.rig.irq.get(14));
    assert_eq!(h.inp(0x1F0, 2), 0xFFFF, "no data before DRQ");
    // A command written while BSY is ignored.
    h.outb(0x1F7, CMD_IDENTIFY);
    assert_eq!(h.inb(0x3F6), ST_BSY);
    h.wake();
    assert!(h.rig.irq.get(14), "the wake completes with an interrupt");
    assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ | ST_ERR), ST_DRQ);
    let src = pattern(64 * 512);
    assert_eq!(h.read_words(0x1F0, 256), src[3 * 512..4 * 512].to_vec());
    // The second block is pending too: BSY again, no interrupt until it arrives.
    assert_eq!(h.inb(0x3F6), ST_BSY);
    assert!(!h.rig.irq.get(14));
    h.wake();
    assert!(h.rig.irq.get(14));
    assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ), ST_DRQ);
    assert_eq!(h.read_words(0x1F0, 256), src[4 * 512..5 * 512].to_vec());
    assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ | ST_ERR), 0);
    assert!(plan.borrow().is_empty());
}

#[test]
fn pending_dma_read_moves_nothing_until_wake_then_completes() {
    let (mut h, _) = H::with_scripted_disk(64, &[Pending, Ready]);
    prd(&mut h, &[(0x2000, 1536, true)]);
    h.ata28(CMD_READ_DMA, 10, 3);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
    assert!(!h.rig.dev.dma_ready());
    h.dma();
    assert!(h.mem[0x2000..0x2600].iter().all(|&b| b == 0));
    assert_eq!(h.inb(0x3F6), ST_BSY);
    assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & 7, BM_ST_ACTIVE);
    assert!(!h.rig.irq.get(14));
    h.wake();
    // The data is in the drive; the engine moves it when the board next runs DMA.
    assert!(h.rig.dev.dma_ready() && !h.rig.irq.get(14));
    h.dma();
    let src = pattern(64 * 512);
    assert_eq!(&h.mem[0x2000..0x2600], &src[10 * 512..13 * 512]);
    assert!(h.rig.irq.get(14));
    assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & 7, BM_ST_INTR);
    assert_eq!(h.inb(0x1F7) & (ST_BSY | ST_DRQ | ST_ERR), 0);
    assert_eq!(h.rig.dev.dma_count()[0], 1);
}

#[test]
fn pending_atapi_reads_keep_bsy_until_wake_by_pio_and_by_dma() {
    let (mut h, _) = H::with_scripted_cd(16, &[Pending, Ready, Pending, Ready]);
    let src = pattern(16 * CD_SECTOR);
    // PIO: READ(10) of one sector at LBA 5.
    packet(&mut h, &[0x28, 0, 0, 0, 0, 5, 0, 0, 1], 0xFFFE, false);
    assert_eq!(h.inb(0x376), ST_BSY);
    assert!(!h.rig.irq.get(15));
    h.wake();
    assert!(h.rig.irq.get(15));
    assert_eq!(h.inb(0x177) & (ST_BSY | ST_DRQ), ST_DRQ);
    assert_eq!(h.inb(0x172), IR_IO, "data phase");
    assert_eq!(h.inb(0x174) as usize | (h.inb(0x175) as usize) << 8, 2048);
    assert_eq!(h.read_words(0x170, 1024), src[5 * 2048..6 * 2048].to_vec());
    assert!(h.rig.irq.get(15), "status phase interrupts");
    assert_eq!(h.inb(0x177) & (ST_BSY | ST_DRQ | ST_ERR), 0);
    assert_eq!(h.inb(0x172), IR_IO | IR_COD);
    // DMA: two sectors at LBA 7.
    prd(&mut h, &[(0x4000, 4096, true)]);
    h.out(BM_DEFAULT_BASE + 8 + 4, 4, 0x1000);
    packet(&mut h, &[0x28, 0, 0, 0, 0, 7, 0, 0, 2], 0, true);
    h.outb(BM_DEFAULT_BASE + 8, BM_CMD_START | BM_CMD_WRITE);
    h.dma();
    assert!(h.mem[0x4000..0x5000].iter().all(|&b| b == 0));
    assert_eq!(h.inb(0x376), ST_BSY);
    assert!(!h.rig.irq.get(15));
    h.wake();
    h.dma();
    assert_eq!(&h.mem[0x4000..0x5000], &src[7 * 2048..9 * 2048]);
    assert!(h.rig.irq.get(15));
    assert_eq!(h.inb(0x177) & (ST_BSY | ST_DRQ | ST_ERR), 0);
    assert_eq!(h.inb(0x172), IR_IO | IR_COD);
    assert_eq!(h.inb(BM_DEFAULT_BASE + 8 + 2) & BM_ST_INTR, BM_ST_INTR);
    assert_eq!(h.rig.dev.dma_count()[1], 1);
}

#[test]
fn failed_ata_reads_are_unc_with_the_failing_lba_by_pio_and_dma() {
    // PIO, LBA28: the error, the interrupt, the address of the failed sector.
    let (mut h, _) = H::with_scripted_disk(0x20000, &[Fail]);
    h.ata28(CMD_READ_SECTORS, 0x12345, 1);
    assert!(h.rig.irq.get(14));
    assert_eq!(h.inb(0x1F7), ST_DRDY | ST_ERR);
    assert_eq!(h.inb(0x1F1), ER_UNC);
    assert_eq!(
        (
            h.inb(0x1F3),
            h.inb(0x1F4),
            h.inb(0x1F5),
            h.inb(0x1F6) & 0x0F
        ),
        (0x45, 0x23, 0x01, 0)
    );
    assert_eq!(h.inp(0x1F0, 2), 0xFFFF, "no data phase");

    // PIO, the second block fails after the first was read.
    let (mut h, _) = H::with_scripted_disk(64, &[Ready, Fail]);
    h.ata28(CMD_READ_SECTORS, 8, 2);
    h.inb(0x1F7);
    h.read_words(0x1F0, 256);
    assert!(h.rig.irq.get(14));
    assert_eq!((h.inb(0x1F7), h.inb(0x1F1)), (ST_DRDY | ST_ERR, ER_UNC));
    assert_eq!(h.inb(0x1F3), 9);

    // DMA: nothing reaches memory; the drive's interrupt shows in the bus-master status.
    let (mut h, _) = H::with_scripted_disk(64, &[Fail]);
    prd(&mut h, &[(0x2000, 512, true)]);
    h.ata28(CMD_READ_DMA, 4, 1);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
    assert!(!h.rig.dev.dma_ready());
    h.dma();
    assert!(h.mem[0x2000..0x2200].iter().all(|&b| b == 0));
    assert!(h.rig.irq.get(14));
    assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & BM_ST_INTR, BM_ST_INTR);
    assert_eq!((h.inb(0x1F7), h.inb(0x1F1)), (ST_DRDY | ST_ERR, ER_UNC));
    assert_eq!(h.rig.dev.dma_count()[0], 0);

    // LBA48: the high address bytes in the previous registers (HOB).
    let (mut h, _) = H::with_scripted_disk(64, &[Fail]);
    h.outb(0x1F6, 0x40);
    for (port, v) in [(0x1F2, 0), (0x1F2, 1), (0x1F3, 0), (0x1F3, 33)] {
        h.outb(port, v);
    }
    for port in [0x1F4, 0x1F4, 0x1F5, 0x1F5] {
        h.outb(port, 0);
    }
    h.outb(0x1F7, CMD_READ_DMA_EXT);
    assert_eq!(h.inb(0x1F1), ER_UNC);
    assert_eq!(h.inb(0x1F3), 33);
    h.outb(0x3F6, CTL_HOB);
    assert_eq!((h.inb(0x1F3), h.inb(0x1F4), h.inb(0x1F5)), (0, 0, 0));
    h.outb(0x3F6, 0);

    // CHS: the failing sector as cylinder/head/sector (16 heads, 63 sectors per track).
    let (mut h, _) = H::with_scripted_disk(16 * 63 * 4, &[Fail]);
    h.outb(0x1F6, 0xA0 | 3); // head 3
    h.outb(0x1F2, 1);
    h.outb(0x1F3, 7); // sector 7
    h.outb(0x1F4, 2); // cylinder 2
    h.outb(0x1F5, 0);
    h.outb(0x1F7, CMD_READ_SECTORS);
    assert_eq!(h.inb(0x1F1), ER_UNC);
    assert_eq!(
        (
            h.inb(0x1F3),
            h.inb(0x1F4),
            h.inb(0x1F5),
            h.inb(0x1F6) & 0x0F
        ),
        (7, 2, 0, 3)
    );
}

#[test]
fn a_pending_read_that_then_fails_ends_with_an_error_interrupt() {
    let (mut h, _) = H::with_scripted_disk(64, &[Pending, Fail]);
    prd(&mut h, &[(0x2000, 512, true)]);
    h.ata28(CMD_READ_DMA, 4, 1);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
    assert_eq!(h.inb(0x3F6), ST_BSY);
    h.wake();
    assert!(h.rig.irq.get(14));
    assert_eq!((h.inb(0x1F7), h.inb(0x1F1)), (ST_DRDY | ST_ERR, ER_UNC));
    h.dma();
    assert!(h.mem[0x2000..0x2200].iter().all(|&b| b == 0));

    let (mut h, _) = H::with_scripted_cd(4, &[Pending, Fail]);
    packet(&mut h, &[0x28, 0, 0, 0, 0, 1, 0, 0, 1], 0xFFFE, false);
    assert_eq!(h.inb(0x376), ST_BSY);
    h.wake();
    assert!(h.rig.irq.get(15));
    assert_eq!(h.inb(0x177) & (ST_BSY | ST_DRQ | ST_ERR), ST_ERR);
    assert_eq!(h.inb(0x171) >> 4, atapi::SK_MEDIUM_ERROR);
}

#[test]
fn a_disc_ejected_while_a_read_waits_ends_it_not_ready() {
    let (mut h, _) = H::with_scripted_cd(4, &[Pending]);
    packet(&mut h, &[0x28, 0, 0, 0, 0, 1, 0, 0, 1], 0xFFFE, false);
    assert_eq!(h.inb(0x376), ST_BSY);
    let Some(Drive::Atapi(cd)) = h.rig.dev.drive_mut(2) else {
        panic!()
    };
    cd.eject();
    h.wake();
    assert!(h.rig.irq.get(15));
    assert_eq!(h.inb(0x177), ST_DRDY | ST_ERR);
    assert_eq!(h.inb(0x171) >> 4, atapi::SK_NOT_READY);
}

#[test]
fn failed_atapi_reads_are_check_condition_medium_error_by_pio_and_dma() {
    let (mut h, _) = H::with_scripted_cd(8, &[Fail, Fail]);
    packet(&mut h, &[0x28, 0, 0, 0, 0, 2, 0, 0, 1], 0xFFFE, false);
    assert!(h.rig.irq.get(15));
    assert_eq!(h.inb(0x177), ST_DRDY | ST_ERR, "CHECK CONDITION");
    assert_eq!(h.inb(0x171), atapi::SK_MEDIUM_ERROR << 4);
    assert_eq!(h.inb(0x172), IR_IO | IR_COD, "status phase, no data");
    // REQUEST SENSE: MEDIUM ERROR, unrecovered read error (03h/11h).
    packet(&mut h, &[0x03, 0, 0, 0, 18], 0xFFFE, false);
    assert_eq!(h.inb(0x177) & (ST_DRQ | ST_ERR), ST_DRQ);
    let sense = h.read_words(0x170, 9);
    assert_eq!(
        (sense[0], sense[2] & 0x0F, sense[12], sense[13]),
        (0x70, 3, 0x11, 0)
    );
    assert_eq!(h.inb(0x177) & ST_ERR, 0);
    // By DMA: memory untouched, the same CHECK CONDITION.
    prd(&mut h, &[(0x4000, 2048, true)]);
    h.out(BM_DEFAULT_BASE + 8 + 4, 4, 0x1000);
    packet(&mut h, &[0x28, 0, 0, 0, 0, 2, 0, 0, 1], 0, true);
    h.outb(BM_DEFAULT_BASE + 8, BM_CMD_START | BM_CMD_WRITE);
    h.dma();
    assert!(h.mem[0x4000..0x4800].iter().all(|&b| b == 0));
    assert!(h.rig.irq.get(15));
    assert_eq!(h.inb(0x177), ST_DRDY | ST_ERR);
    assert_eq!(h.inb(0x171) >> 4, atapi::SK_MEDIUM_ERROR);
    assert_eq!(h.inb(BM_DEFAULT_BASE + 8 + 2) & BM_ST_INTR, BM_ST_INTR);
    // An illegal request also sets ABRT.
    packet(&mut h, &[0xFF], 0xFFFE, false);
    assert_eq!(h.inb(0x171), atapi::SK_ILLEGAL_REQUEST << 4 | ER_ABRT);
}

// ---- PCI command register -----------------------------------------------------------------

#[test]
fn dma_waits_while_bus_mastering_is_disabled() {
    let mut h = H::with_disk(64);
    h.pci(pci::CMD_IO, [0x80, 0x80]);
    prd(&mut h, &[(0x2000, 512, true)]);
    h.ata28(CMD_READ_DMA, 1, 1);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START | BM_CMD_WRITE);
    assert!(!h.rig.dev.dma_ready(), "the bus master cannot get the bus");
    h.dma();
    assert!(h.mem[0x2000..0x2200].iter().all(|&b| b == 0));
    assert!(!h.rig.irq.get(14));
    assert_eq!(
        h.inb(BM_DEFAULT_BASE + 2) & 7,
        BM_ST_ACTIVE,
        "still pending"
    );
    assert_eq!(h.inb(0x3F6) & (ST_BSY | ST_DRQ), ST_DRQ);
    // The guest turns bus mastering on: the transfer proceeds.
    h.pci(pci::CMD_IO | pci::CMD_MASTER, [0x80, 0x80]);
    assert!(h.rig.dev.dma_ready());
    h.dma();
    assert_eq!(&h.mem[0x2000..0x2200], &pattern(64 * 512)[512..1024]);
    assert!(h.rig.irq.get(14));
    assert_eq!(h.inb(BM_DEFAULT_BASE + 2) & 7, BM_ST_INTR);
    // Writes from memory wait too.
    h.pci(pci::CMD_IO, [0x80, 0x80]);
    h.mem[0x2000..0x2200].fill(0xAB);
    h.ata28(CMD_WRITE_DMA, 2, 1);
    h.outb(BM_DEFAULT_BASE, 0);
    h.outb(BM_DEFAULT_BASE + 2, BM_ST_INTR);
    h.outb(BM_DEFAULT_BASE, BM_CMD_START);
    h.dma();
    assert_eq!(h.rig.dev.dma_count()[0], 1);
    h.pci(pci::CMD_IO | pci::CMD_MASTER, [0x80, 0x80]);
    h.dma();
    assert_eq!(h.rig.dev.dma_count()[0], 2);
    h.ata28(CMD_READ_SECTORS, 2, 1);
    h.inb(0x1F7);
    assert_eq!(h.read_words(0x1F0, 256), vec![0xAB; 512]);
}

#[test]
fn io_space_enable_and_idetim_decode_gate_the_ports() {
    let mut h = H::with_disk(64);
    h.out(BM_DEFAULT_BASE + 4, 4, 0x1000);
    // I/O space off: neither the legacy ports nor the bus-master registers answer.
    h.pci(pci::CMD_MASTER, [0x80, 0x80]);
    assert_eq!(h.inb(0x1F7), 0xFF);
    assert_eq!(h.inb(0x3F6), 0xFF);
    assert_eq!(h.inp(BM_DEFAULT_BASE + 4, 4), 0xFFFF_FFFF);
    h.out(BM_DEFAULT_BASE + 4, 4, 0x3000);
    h.ata28(CMD_IDENTIFY, 0, 0);
    assert!(!h.rig.irq.get(14), "the command went nowhere");
    // On again: the earlier PRD address stands; the ignored command did nothing.
    h.pci(pci::CMD_IO | pci::CMD_MASTER, [0x80, 0x80]);
    assert_eq!(h.inp(BM_DEFAULT_BASE + 4, 4), 0x1000);
    assert_eq!(h.inb(0x1F7), ST_DRDY | ST_DSC);
    // IDETIM: the primary channel's decode off leaves the bus-master registers on.
    h.pci(pci::CMD_IO | pci::CMD_MASTER, [0x00, 0x80]);
    assert_eq!(h.inb(0x1F7), 0xFF);
    assert_eq!(h.inp(0x1F0, 2), 0xFFFF);
    assert_eq!(h.inp(BM_DEFAULT_BASE + 4, 4), 0x1000);
    // A controller reset turns everything back on, as the PCI function resets.
    h.rig.dev.reset();
    assert_eq!(h.inb(0x1F7), ST_DRDY | ST_DSC);
}

#[test]
fn atapi_identify_offers_dma_and_reports_the_selected_mode() {
    let mut h = H::new();
    h.rig.dev.attach(
        2,
        Drive::Atapi(Cdrom::with_disc(Box::new(MemBackend::new(vec![0; 4096])))),
    );
    let identify = |h: &mut H| {
        h.outb(0x176, 0xA0);
        h.outb(0x177, CMD_IDENTIFY_PACKET);
        h.inb(0x177);
        let id = h.read_words(0x170, 256);
        (0..256)
            .map(|i| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]))
            .collect::<Vec<_>>()
    };
    let w = identify(&mut h);
    assert_eq!(w[0] & 0xC000, 0x8000, "ATAPI");
    assert_ne!(w[49] & 0x0100, 0, "DMA supported");
    assert_ne!(w[53] & 0x0002, 0, "words 64-70 valid");
    assert_ne!(w[53] & 0x0004, 0, "word 88 valid");
    assert_eq!(w[62], 0, "DMADIR not required");
    assert_eq!(w[63], 0x0007, "MWDMA 0-2, none selected");
    // SET FEATURES: multiword DMA 2.
    h.outb(0x171, SF_XFER_MODE);
    h.outb(0x172, 0x22);
    h.outb(0x177, CMD_SET_FEATURES);
    assert_eq!(h.inb(0x177) & ST_ERR, 0);
    let w = identify(&mut h);
    assert_eq!(w[63], 0x0407);
    assert_eq!(w[88] & 0xFF00, 0);
}

#[test]
fn a_state_is_a_copy_without_images_and_impossible_states_are_refused() {
    let mut h = H::with_disk(64);
    // Some guest writes, so the overlay has changed sectors.
    h.rig.dev.channels[0].slots[0]
        .drive
        .as_mut()
        .and_then(Drive::image_mut)
        .unwrap()
        .write(3, &[0x5A; 512]);
    let state = h.rig.dev.state();
    let image = state.channels[0].slots[0]
        .drive
        .as_ref()
        .and_then(Drive::image);
    assert!(image.is_some_and(|o| !o.has_base() && o.dirty_count() == 1));
    assert!(Ide::from_state(state.clone()).is_ok());

    let refused = |f: &dyn Fn(&mut Ide)| {
        let mut bad = state.clone();
        f(&mut bad);
        Ide::from_state(bad).err().unwrap_or_default()
    };
    assert!(refused(&|i| i.channels[1].end = 4).contains("beyond its"));
    assert!(refused(&|i| {
        i.channels[0].buf = vec![0; 8];
        i.channels[0].pos = 9;
        i.channels[0].end = 8;
    })
    .contains("beyond its"));
    assert!(refused(&|i| i.channels[0].active = 2).contains("drive number"));
    assert!(refused(&|i| {
        i.channels[0].xfer = channel::Xfer::Packet;
        i.channels[0].buf = vec![0; 4];
    })
    .contains("packet"));
    assert!(refused(&|i| {
        let disk = i.channels[0].slots[0]
            .drive
            .as_mut()
            .and_then(Drive::image_mut);
        disk.unwrap().write(64, &[1; 512]);
    })
    .contains("changed sector 64"));
}
