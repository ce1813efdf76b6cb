//! The emulated GICv3 distributor and redistributors of a VM (GICv3 architecture
//! specification, IHI 0069: chapter 12, "GIC register descriptions"). The CPU interface
//! is the hardware's virtual one (ICV_* through the kernel's list registers); what a
//! guest writes here decides which interrupts it wants, and SGIs it sends through
//! ICC_SGI1R_EL1 (trapped to the VMM) become injections into the target vCPUs.
//!
//! Every guest-supplied value is range-checked: an access to an offset this model does
//! not implement reads as zero and ignores writes (RAZ/WI), as the architecture allows
//! for reserved registers.

use bulkhead_sys::vm_layout::MAX_VCPUS;

/// SPIs this distributor implements (INTIDs 32..32 + SPIS).
pub const SPIS: usize = 64;
const LINES: usize = 32 + SPIS;

/// Per-vCPU redistributor state (SGIs and PPIs, INTIDs 0..31).
#[derive(Clone, Copy)]
struct Redist {
    waker: u32,
    enabled: u32,
    group: u32,
    cfg: [u32; 2],
    prio: [u8; 32],
    pending: u32,
}

impl Default for Redist {
    fn default() -> Self {
        Redist {
            waker: 0b110, // ProcessorSleep | ChildrenAsleep until the guest wakes it
            enabled: 0,
            group: 0,
            cfg: [0xaaaa_aaaa, 0],
            prio: [0; 32],
            pending: 0,
        }
    }
}

/// The distributor and redistributors.
pub struct Gic {
    vcpus: usize,
    ctlr: u32,
    enabled: [u32; LINES / 32],
    pending: [u32; LINES / 32],
    group: [u32; LINES / 32],
    cfg: [u32; LINES / 16],
    prio: [u8; LINES],
    route: [u64; LINES],
    rd: [Redist; MAX_VCPUS as usize],
}

impl Gic {
    /// A reset GIC for `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> Self {
        Gic {
            vcpus: vcpus.min(MAX_VCPUS as usize),
            ctlr: 0,
            enabled: [0; LINES / 32],
            pending: [0; LINES / 32],
            group: [0; LINES / 32],
            cfg: [0; LINES / 16],
            prio: [0; LINES],
            route: [0; LINES],
            rd: [Redist::default(); MAX_VCPUS as usize],
        }
    }

    fn bits(arr: &[u32], off: u64, base: u64) -> Option<usize> {
        let i = ((off - base) / 4) as usize;
        (i < arr.len()).then_some(i)
    }

    /// A distributor register read (`size` in bytes).
    pub fn dist_read(&self, off: u64, size: u64) -> u64 {
        match off {
            // GICD_CTLR: RWP (bit 31) always clear; DS (bit 6) set: one security state.
            0x0000 => (self.ctlr | (1 << 6)) as u64,
            // GICD_TYPER: ITLinesNumber, IDbits = 10 bits, no LPIs, no MBIs.
            0x0004 => ((LINES / 32 - 1) as u64) | (9 << 19),
            // GICD_IIDR: implementer 0x43b (Arm), product 0.
            0x0008 => 0x43b,
            0x0080..=0x00fc => {
                Self::bits(&self.group, off, 0x80).map_or(0, |i| self.group[i] as u64)
            }
            0x0100..=0x017c => {
                Self::bits(&self.enabled, off, 0x100).map_or(0, |i| self.enabled[i] as u64)
            }
            0x0180..=0x01fc => {
                Self::bits(&self.enabled, off, 0x180).map_or(0, |i| self.enabled[i] as u64)
            }
            0x0200..=0x027c => {
                Self::bits(&self.pending, off, 0x200).map_or(0, |i| self.pending[i] as u64)
            }
            0x0280..=0x02fc => {
                Self::bits(&self.pending, off, 0x280).map_or(0, |i| self.pending[i] as u64)
            }
            0x0400..=0x07f8 => {
                let i = (off - 0x400) as usize;
                let mut v = 0u64;
                for b in 0..size.min(8) as usize {
                    v |= (*self.prio.get(i + b).unwrap_or(&0) as u64) << (8 * b);
                }
                v
            }
            0x0c00..=0x0cfc => Self::bits(&self.cfg, off, 0xc00).map_or(0, |i| self.cfg[i] as u64),
            0x6100..=0x7fd8 => {
                let i = ((off - 0x6000) / 8) as usize;
                let v = *self.route.get(i).unwrap_or(&0);
                if off % 8 == 4 {
                    v >> 32
                } else {
                    v
                }
            }
            // GICD_PIDR2: architecture revision 3.
            0xffe8 => 0x3b,
            _ => 0,
        }
    }

    fn set_bits(arr: &mut [u32], off: u64, base: u64, v: u64, set: bool) {
        if let Some(i) = Self::bits(arr, off, base) {
            // SGIs and PPIs are banked in the redistributors: ignore them here.
            let v = if i == 0 { 0 } else { v as u32 };
            if set {
                arr[i] |= v;
            } else {
                arr[i] &= !v;
            }
        }
    }

    /// A distributor register write.
    pub fn dist_write(&mut self, off: u64, v: u64, size: u64) {
        match off {
            0x0000 => self.ctlr = (v as u32) & 0x13,
            0x0080..=0x00fc => {
                if let Some(i) = Self::bits(&self.group, off, 0x80) {
                    if i > 0 {
                        self.group[i] = v as u32;
                    }
                }
            }
            0x0100..=0x017c => Self::set_bits(&mut self.enabled, off, 0x100, v, true),
            0x0180..=0x01fc => Self::set_bits(&mut self.enabled, off, 0x180, v, false),
            0x0200..=0x027c => Self::set_bits(&mut self.pending, off, 0x200, v, true),
            0x0280..=0x02fc => Self::set_bits(&mut self.pending, off, 0x280, v, false),
            0x0400..=0x07f8 => {
                let i = (off - 0x400) as usize;
                for b in 0..size.min(8) as usize {
                    if (32..LINES).contains(&(i + b)) {
                        self.prio[i + b] = (v >> (8 * b)) as u8;
                    }
                }
            }
            0x0c00..=0x0cfc => {
                if let Some(i) = Self::bits(&self.cfg, off, 0xc00) {
                    if i > 1 {
                        self.cfg[i] = v as u32;
                    }
                }
            }
            0x6100..=0x7fd8 => {
                let i = ((off - 0x6000) / 8) as usize;
                if let Some(r) = self.route.get_mut(i) {
                    if off % 8 == 4 {
                        *r = (*r & 0xffff_ffff) | (v << 32);
                    } else if size == 8 {
                        *r = v;
                    } else {
                        *r = (*r & !0xffff_ffff) | (v & 0xffff_ffff);
                    }
                }
            }
            _ => {}
        }
    }

    /// Which vCPU's redistributor an offset of the redistributor region addresses, and
    /// the offset inside its 128 KiB.
    fn rd_of(&self, off: u64) -> Option<(usize, u64)> {
        let cpu = (off / 0x2_0000) as usize;
        (cpu < self.vcpus).then_some((cpu, off % 0x2_0000))
    }

    /// A redistributor region read.
    pub fn redist_read(&self, off: u64, size: u64) -> u64 {
        let Some((cpu, off)) = self.rd_of(off) else {
            return 0;
        };
        let r = &self.rd[cpu];
        match off {
            // GICR_CTLR: nothing pending (RWP clear).
            0x0000 => 0,
            0x0004 => 0x43b,
            // GICR_TYPER: affinity = the vCPU number (its MPIDR Aff0), processor number,
            // Last on the final one.
            0x0008 => {
                let last = if cpu + 1 == self.vcpus { 1 << 4 } else { 0 };
                let v = ((cpu as u64) << 32) | ((cpu as u64) << 8) | last;
                if size == 4 {
                    v & 0xffff_ffff
                } else {
                    v
                }
            }
            0x000c => cpu as u64,
            0x0014 => r.waker as u64,
            0xffe8 => 0x3b,
            // SGI_base frame.
            0x1_0080 => r.group as u64,
            0x1_0100 | 0x1_0180 => r.enabled as u64,
            0x1_0200 | 0x1_0280 => r.pending as u64,
            0x1_0400..=0x1_041c => {
                let i = (off - 0x1_0400) as usize;
                let mut v = 0u64;
                for b in 0..size.min(8) as usize {
                    v |= (*r.prio.get(i + b).unwrap_or(&0) as u64) << (8 * b);
                }
                v
            }
            0x1_0c00 => r.cfg[0] as u64,
            0x1_0c04 => r.cfg[1] as u64,
            _ => 0,
        }
    }

    /// A redistributor region write.
    pub fn redist_write(&mut self, off: u64, v: u64, size: u64) {
        let Some((cpu, off)) = self.rd_of(off) else {
            return;
        };
        let r = &mut self.rd[cpu];
        match off {
            0x0014 => {
                // ProcessorSleep follows the guest; ChildrenAsleep follows it at once.
                let sleep = (v as u32) & 0b10;
                r.waker = sleep | (sleep << 1);
            }
            0x1_0080 => r.group = v as u32,
            0x1_0100 => r.enabled |= v as u32,
            0x1_0180 => r.enabled &= !(v as u32),
            0x1_0200 => r.pending |= v as u32,
            0x1_0280 => r.pending &= !(v as u32),
            0x1_0400..=0x1_041c => {
                let i = (off - 0x1_0400) as usize;
                for b in 0..size.min(8) as usize {
                    if let Some(p) = r.prio.get_mut(i + b) {
                        *p = (v >> (8 * b)) as u8;
                    }
                }
            }
            // SGIs are always edge-triggered (ICFGR0 is read-only).
            0x1_0c04 => r.cfg[1] = v as u32,
            _ => {}
        }
    }

    /// The priority a vCPU's guest gave interrupt `intid` (for injection).
    pub fn priority(&self, cpu: usize, intid: u32) -> u8 {
        let i = intid as usize;
        if i < 32 {
            self.rd.get(cpu).map_or(0xa0, |r| r.prio[i])
        } else {
            *self.prio.get(i).unwrap_or(&0xa0)
        }
    }

    /// The vCPUs an ICC_SGI1R_EL1 value `v` from vCPU `from` targets, as a bit set, and
    /// the SGI number (Arm ARM / GICv3 spec 12.11.20: TargetList[15:0], Aff1[23:16],
    /// INTID[27:24], Aff2[39:32], IRM[40], Aff3[55:48]). vCPUs have Aff0 = their number
    /// and Aff1..3 = 0.
    pub fn sgi_targets(&self, from: usize, v: u64) -> (u32, u32) {
        let intid = ((v >> 24) & 0xf) as u32;
        let all = (1u32 << self.vcpus) - 1;
        let targets = if v & (1 << 40) != 0 {
            all & !(1 << from)
        } else if (v >> 16) & 0xff != 0 || (v >> 32) & 0xff != 0 || (v >> 48) & 0xff != 0 {
            0
        } else {
            (v & 0xffff) as u32 & all
        };
        (targets, intid)
    }
}
