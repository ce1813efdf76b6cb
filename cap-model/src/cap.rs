//! What a capability names and carries: object identity, rights and badges.

use crate::CapView;
use bulkhead_sys::cap::{rights, ObjectType, SLOT_BITS};

/// The identity of an object: "the same object" means the same type and address (and,
/// for Untyped, the same size; for the other types the size follows from type and address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjRef {
    /// The object's type.
    pub ty: ObjectType,
    /// Its address.
    pub addr: u64,
    /// log2 of its size in bytes.
    pub size_bits: u32,
}

impl ObjRef {
    /// One past the object's last byte (computed without overflow).
    pub fn end(&self) -> u128 {
        u128::from(self.addr) + (1u128 << self.size_bits)
    }

    /// True if the two objects share at least one byte.
    pub fn overlaps(&self, other: &ObjRef) -> bool {
        u128::from(self.addr) < other.end() && u128::from(other.addr) < self.end()
    }

    /// True if `other` lies entirely within `self`.
    pub fn contains(&self, other: &ObjRef) -> bool {
        self.addr <= other.addr && other.end() <= self.end()
    }
}

impl CapView {
    /// The object this cap names.
    pub fn object(&self) -> ObjRef {
        let (ty, addr, size_bits) = match *self {
            CapView::Untyped {
                base, size_bits, ..
            } => (ObjectType::Untyped, base, size_bits),
            CapView::CNode { addr, radix, .. } => (ObjectType::CNode, addr, radix + SLOT_BITS),
            CapView::Endpoint { addr, .. } => (ObjectType::Endpoint, addr, 5),
            CapView::Notification { addr, .. } => (ObjectType::Notification, addr, 5),
            CapView::Tcb { addr } => (ObjectType::Tcb, addr, 11),
            CapView::Frame {
                addr, size_bits, ..
            } => {
                let ty = match size_bits {
                    12 => ObjectType::Frame4K,
                    21 => ObjectType::Frame2M,
                    30 => ObjectType::Frame1G,
                    _ => ObjectType::Frame,
                };
                (ty, addr, size_bits)
            }
            CapView::PageTable { addr } => (ObjectType::PageTable, addr, 12),
            CapView::VSpace { addr } => (ObjectType::VSpace, addr, 14),
            CapView::Vcpu { addr } => (ObjectType::Vcpu, addr, 12),
            CapView::TablePool { addr, size_bits } => (ObjectType::TablePool, addr, size_bits),
        };
        ObjRef {
            ty,
            addr,
            size_bits,
        }
    }

    /// True for the types whose rights mean something (Endpoint, Notification, Frame).
    pub fn has_rights(&self) -> bool {
        matches!(
            self,
            CapView::Endpoint { .. } | CapView::Notification { .. } | CapView::Frame { .. }
        )
    }

    /// The cap's rights; types without meaningful rights carry all of them.
    pub fn rights(&self) -> u8 {
        match *self {
            CapView::Endpoint { rights, .. }
            | CapView::Notification { rights, .. }
            | CapView::Frame { rights, .. } => rights,
            _ => rights::ALL,
        }
    }

    /// The cap's badge; 0 for unbadged caps and for types without badges.
    pub fn badge(&self) -> u64 {
        match *self {
            CapView::Endpoint { badge, .. } | CapView::Notification { badge, .. } => badge,
            _ => 0,
        }
    }

    /// The same cap with its rights replaced (no change for types without rights).
    pub(crate) fn with_rights(self, new: u8) -> CapView {
        match self {
            CapView::Endpoint { addr, badge, .. } => CapView::Endpoint {
                addr,
                rights: new,
                badge,
            },
            CapView::Notification { addr, badge, .. } => CapView::Notification {
                addr,
                rights: new,
                badge,
            },
            CapView::Frame {
                addr, size_bits, ..
            } => CapView::Frame {
                addr,
                size_bits,
                rights: new,
            },
            other => other,
        }
    }

    /// The same cap with its badge replaced (no change for types without badges).
    pub(crate) fn with_badge(self, new: u64) -> CapView {
        match self {
            CapView::Endpoint { addr, rights, .. } => CapView::Endpoint {
                addr,
                rights,
                badge: new,
            },
            CapView::Notification { addr, rights, .. } => CapView::Notification {
                addr,
                rights,
                badge: new,
            },
            other => other,
        }
    }

    /// The cap Retype gives a new object: all rights, unbadged, CNode guard 0 (no guard
    /// bits), Untyped with watermark 0 and the parent's `device`.
    pub(crate) fn fresh(ty: ObjectType, addr: u64, size_bits: u32, device: bool) -> CapView {
        match ty {
            ObjectType::Untyped => CapView::Untyped {
                base: addr,
                size_bits,
                watermark: 0,
                device,
            },
            ObjectType::Tcb => CapView::Tcb { addr },
            ObjectType::Endpoint => CapView::Endpoint {
                addr,
                rights: rights::ALL,
                badge: 0,
            },
            ObjectType::Notification => CapView::Notification {
                addr,
                rights: rights::ALL,
                badge: 0,
            },
            ObjectType::CNode => CapView::CNode {
                addr,
                radix: size_bits,
                guard_bits: 0,
                guard: 0,
            },
            ObjectType::Frame4K | ObjectType::Frame2M | ObjectType::Frame1G => CapView::Frame {
                addr,
                size_bits: ty.object_bits(0).expect("frames have a fixed size"),
                rights: rights::ALL,
            },
            ObjectType::PageTable => CapView::PageTable { addr },
            ObjectType::VSpace => CapView::VSpace { addr },
            ObjectType::Vcpu => CapView::Vcpu { addr },
            ObjectType::TablePool => CapView::TablePool { addr, size_bits },
            ObjectType::Frame => CapView::Frame {
                addr,
                size_bits,
                rights: rights::ALL,
            },
        }
    }
}

/// A capability as the model keeps it in a slot: a cap to a memory object (what both
/// implementations report in a [`crate::Snapshot`]), or one of the kernel's authorities
/// that name no memory (left out of snapshots, as the kernel harness leaves them out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// A cap to a memory object.
    Mem(CapView),
    /// The authority to claim interrupts (`IrqControlGet`).
    IrqControl,
    /// The authority over one claimed interrupt.
    IrqHandler(u32),
}

/// What a cap names: a memory object, the IRQ control authority, or one claimed IRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Named {
    /// A memory object.
    Mem(ObjRef),
    /// The IRQ control authority (one, with no state).
    IrqControl,
    /// The handler object of one interrupt ID.
    IrqHandler(u32),
}

/// A cap that names no memory, as [`crate::Model::irq_caps`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IrqCap {
    /// An IRQControl cap.
    Control,
    /// An IRQHandler cap for this interrupt ID.
    Handler(u32),
}

impl Cap {
    /// The memory cap, if this is one.
    pub(crate) fn view(&self) -> Option<CapView> {
        match *self {
            Cap::Mem(v) => Some(v),
            _ => None,
        }
    }

    /// The IRQ cap, if this is one.
    pub(crate) fn irq(&self) -> Option<IrqCap> {
        match *self {
            Cap::Mem(_) => None,
            Cap::IrqControl => Some(IrqCap::Control),
            Cap::IrqHandler(irq) => Some(IrqCap::Handler(irq)),
        }
    }

    /// What the cap names.
    pub(crate) fn named(&self) -> Named {
        match *self {
            Cap::Mem(v) => Named::Mem(v.object()),
            Cap::IrqControl => Named::IrqControl,
            Cap::IrqHandler(irq) => Named::IrqHandler(irq),
        }
    }

    /// True for an Untyped cap (which Copy, Mint and Grant refuse).
    pub(crate) fn is_untyped(&self) -> bool {
        matches!(self, Cap::Mem(CapView::Untyped { .. }))
    }

    /// True for the types whose caps carry a badge (Endpoint and Notification).
    pub(crate) fn badged_type(&self) -> bool {
        matches!(self, Cap::Mem(v) if v.object().ty.badged())
    }

    /// The cap's rights; IRQ caps, like other types without rights, carry all of them.
    pub(crate) fn rights(&self) -> u8 {
        self.view().map_or(rights::ALL, |v| v.rights())
    }

    /// The cap's badge (0 for types without badges).
    pub(crate) fn badge(&self) -> u64 {
        self.view().map_or(0, |v| v.badge())
    }

    /// The same cap with its rights replaced (no change for types without rights).
    pub(crate) fn with_rights(self, new: u8) -> Cap {
        match self {
            Cap::Mem(v) => Cap::Mem(v.with_rights(new)),
            other => other,
        }
    }

    /// The same cap with its badge replaced (no change for types without badges).
    pub(crate) fn with_badge(self, new: u64) -> Cap {
        match self {
            Cap::Mem(v) => Cap::Mem(v.with_badge(new)),
            other => other,
        }
    }
}
