//! The kernel's capability code (`kcore::cap`, compiled for the host) behind the model's
//! interface, for the differential tests.
//!
//! Only what `kcore` implements runs here: the CNode and Untyped operations, the IPC
//! transfer, and IrqControlGet (the kernel's dispatch of it, `kernel/src/cspace.rs`, with
//! its claim table, `kernel/src/irq.rs`, written out here over `kcore::cap::issue_child`;
//! the last IRQHandler cap releases its IRQ through `kcore`'s destruction hook). The
//! other object invocations live in the kernel binary, which the host cannot run:
//! [`Kernel::apply`] answers `None` for them.
#![allow(dead_code)]

use cap_model::{Addr, BootConfig, CapView, IrqCap, Op, SlotId, SlotView, Snapshot};
use kcore::cap::{self as k, Cap, Cte, SlotMem};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Host slot memory: absent slots read as empty. Also the kernel's IRQ claim table.
#[derive(Default)]
pub struct Mem(HashMap<u64, Cte>, BTreeSet<u32>);

impl SlotMem for Mem {
    fn destroyed(&mut self, cap: &Cap) {
        // `irq::release`.
        if let Cap::IrqHandler { irq } = *cap {
            self.1.remove(&irq);
        }
    }
    fn read(&self, addr: u64) -> Cte {
        self.0.get(&addr).copied().unwrap_or_default()
    }
    fn write(&mut self, addr: u64, cte: Cte) {
        if cte == Cte::default() {
            self.0.remove(&addr);
        } else {
            self.0.insert(addr, cte);
        }
    }
    fn clear(&mut self, addr: u64, size: u64) {
        self.0.retain(|&a, _| a < addr || a >= addr + size);
    }
}

/// Where the harness keeps the caller's root cap in the kernel's tree. On the target the
/// thread's CSpace root sits in its TCB, so deleting the root CNode's own slot cap never
/// destroys the CSpace the thread runs in; the model says the same of its out-of-slot
/// root cap (decision 1 of the semantics doc). The holder is an initial (parentless) entry
/// right after slot 1, not part of any CNode, and left out of snapshots.
pub const HOLDER: u64 = 0xf000_0000;

pub struct Kernel {
    mem: Mem,
    root: Cap,
}

impl Kernel {
    pub fn boot(cfg: &BootConfig) -> Self {
        let mut mem = Mem::default();
        let root = k::boot(
            &mut mem,
            cfg.root_addr,
            cfg.root_radix,
            cfg.root_guard_bits,
            &cfg.untypeds,
        );
        let slot1 = cfg.root_addr + 32;
        let s1 = mem.read(slot1);
        mem.write(
            HOLDER,
            Cte {
                cap: root,
                prev: Some(slot1),
                next: s1.next,
                depth: 0,
            },
        );
        if let Some(n) = s1.next {
            let mut nc = mem.read(n);
            nc.prev = Some(HOLDER);
            mem.write(n, nc);
        }
        mem.write(
            slot1,
            Cte {
                next: Some(HOLDER),
                ..s1
            },
        );
        Kernel { mem, root }
    }

    /// As [`Kernel::boot`], and the IRQControl cap in root slot `slot`, placed as the
    /// kernel places it for the first boot task.
    pub fn boot_with_irq_control(cfg: &BootConfig, slot: u64) -> Self {
        let mut kernel = Self::boot(cfg);
        k::place_initial(&mut kernel.mem, cfg.root_addr, slot, Cap::IrqControl);
        kernel
    }

    /// Runs `op` if `kcore` implements it (see the module docs), else `None`.
    pub fn apply(&mut self, op: &Op) -> Option<Result<(), bulkhead_sys::Error>> {
        let a = |x: Addr| k::Addr {
            index: x.index,
            depth: x.depth,
        };
        let (m, r) = (&mut self.mem, &self.root);
        Some(match *op {
            Op::Copy { dest, src, rights } => k::copy(m, r, a(dest), a(src), rights),
            Op::Mint {
                dest,
                src,
                rights,
                badge,
            } => k::mint(m, r, a(dest), a(src), rights, badge),
            Op::Move { dest, src } => k::move_cap(m, r, a(dest), a(src)),
            Op::Mutate { dest, src, badge } => k::mutate(m, r, a(dest), a(src), badge),
            Op::Delete { slot } => k::delete(m, r, a(slot)),
            Op::Revoke { slot } => k::revoke(m, r, a(slot)),
            Op::Grant { dest, src } => {
                // What the kernel's IPC transfer does with the two looked-up slots.
                (|| {
                    let s = k::lookup(m, r, a(src))?;
                    let d = k::lookup(m, r, a(dest))?;
                    k::derive_into(m, s, d)
                })()
            }
            Op::Retype {
                untyped,
                ty,
                size_bits,
                dest,
                offset,
                count,
            } => k::retype(m, r, a(untyped), ty, size_bits, a(dest), offset, count),
            Op::IrqControlGet { control, irq, dest } => {
                Self::irq_control_get(m, r, a(control), irq, a(dest))
            }
            _ => return None,
        })
    }

    /// IrqControlGet as `kernel/src/cspace.rs` dispatches it and `kernel/src/irq.rs`
    /// claims (the kernel's timer PPI of QEMU virt is 26).
    fn irq_control_get(
        m: &mut Mem,
        root: &Cap,
        control: k::Addr,
        irq: u64,
        dest: k::Addr,
    ) -> Result<(), bulkhead_sys::Error> {
        use bulkhead_sys::Error;
        let slot = k::lookup(m, root, control)?;
        match m.read(slot).cap {
            Cap::IrqControl => {}
            Cap::Null => return Err(Error::InvalidCapability),
            _ => return Err(Error::IllegalOperation),
        }
        let irq = u32::try_from(irq).map_err(|_| Error::RangeError)?;
        let d = k::lookup(m, root, dest)?;
        if !m.read(d).cap.is_null() {
            return Err(Error::DeleteFirst);
        }
        if !(16..1020).contains(&irq) || irq == 26 {
            return Err(Error::RangeError);
        }
        if !m.1.insert(irq) {
            return Err(Error::RevokeFirst);
        }
        k::issue_child(m, slot, d, Cap::IrqHandler { irq })
    }

    /// The claimed IRQs.
    pub fn claimed_irqs(&self) -> BTreeSet<u32> {
        self.mem.1.clone()
    }

    /// Every slot (but the holder) holding an IRQ cap, with its parent.
    pub fn irq_caps(&self) -> BTreeMap<SlotId, (IrqCap, Option<SlotId>)> {
        let id = self.slot_namer();
        self.mem
            .0
            .iter()
            .filter(|(&slot, _)| slot != HOLDER)
            .filter_map(|(&slot, c)| {
                let cap = match c.cap {
                    Cap::IrqControl => IrqCap::Control,
                    Cap::IrqHandler { irq } => IrqCap::Handler(irq),
                    _ => return None,
                };
                let parent = k::parent_of(&self.mem, slot)
                    .filter(|&p| p != HOLDER)
                    .map(&id);
                Some((id(slot), (cap, parent)))
            })
            .collect()
    }

    fn view(cap: &Cap) -> Option<CapView> {
        Some(match *cap {
            Cap::Null | Cap::IrqControl | Cap::IrqHandler { .. } | Cap::SchedControl => {
                return None
            }
            Cap::Untyped {
                base,
                size_bits,
                watermark,
                device,
            } => CapView::Untyped {
                base,
                size_bits,
                watermark,
                device,
            },
            Cap::CNode {
                addr,
                radix,
                guard_bits,
                guard,
            } => CapView::CNode {
                addr,
                radix,
                guard_bits,
                guard,
            },
            Cap::Endpoint {
                addr,
                rights,
                badge,
            } => CapView::Endpoint {
                addr,
                rights,
                badge,
            },
            Cap::Notification {
                addr,
                rights,
                badge,
            } => CapView::Notification {
                addr,
                rights,
                badge,
            },
            Cap::Tcb { addr } => CapView::Tcb { addr },
            Cap::Frame {
                addr,
                size_bits,
                rights,
            } => CapView::Frame {
                addr,
                size_bits,
                rights,
            },
            Cap::PageTable { addr } => CapView::PageTable { addr },
            Cap::VSpace { addr } => CapView::VSpace { addr },
            Cap::Vcpu { addr } => CapView::Vcpu { addr },
            Cap::TablePool { addr, size_bits } => CapView::TablePool { addr, size_bits },
        })
    }

    /// Names a slot address by (CNode address, index).
    fn slot_namer(&self) -> impl Fn(u64) -> SlotId {
        // Every CNode that exists: the root and every CNode named by some cap.
        let mut cnodes: Vec<(u64, u32)> = vec![];
        if let Cap::CNode { addr, radix, .. } = self.root {
            cnodes.push((addr, radix));
        }
        for c in self.mem.0.values() {
            if let Cap::CNode { addr, radix, .. } = c.cap {
                cnodes.push((addr, radix));
            }
        }
        move |slot: u64| -> (u64, u64) {
            for &(addr, radix) in &cnodes {
                if slot >= addr && slot < addr + (32u64 << radix) {
                    return (addr, (slot - addr) / 32);
                }
            }
            panic!("slot {slot:#x} lies in no CNode");
        }
    }

    /// The kernel's state in the model's terms: slots named by (CNode address, index).
    pub fn snapshot(&self) -> Snapshot {
        let id = self.slot_namer();
        let mut snap = Snapshot::new();
        for (&slot, c) in &self.mem.0 {
            if slot == HOLDER {
                continue;
            }
            let Some(cap) = Self::view(&c.cap) else {
                continue;
            };
            let parent = k::parent_of(&self.mem, slot)
                .filter(|&p| p != HOLDER)
                .map(&id);
            snap.insert(id(slot), SlotView { cap, parent });
        }
        snap
    }
}
