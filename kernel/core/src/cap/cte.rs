//! Capabilities and slots, and their fixed 32-byte encoding.

use bulkhead_sys::cap::{rights, ObjectType};

/// A capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Cap {
    /// The empty slot.
    #[default]
    Null,
    /// Untyped memory: `2^size_bits` bytes at `base`, of which `watermark` are used.
    Untyped {
        /// First byte.
        base: u64,
        /// log2 size.
        size_bits: u32,
        /// Bytes used from `base`.
        watermark: u64,
        /// Device memory (only Untyped and Frames may be made of it).
        device: bool,
    },
    /// A CNode of `2^radix` slots at `addr`, with a guard.
    CNode {
        /// Object address.
        addr: u64,
        /// log2 of the slot count.
        radix: u32,
        /// Guard size.
        guard_bits: u32,
        /// Guard value.
        guard: u64,
    },
    /// An endpoint.
    Endpoint {
        /// Object address.
        addr: u64,
        /// Rights bits.
        rights: u8,
        /// Badge (0 = none).
        badge: u64,
    },
    /// A notification.
    Notification {
        /// Object address.
        addr: u64,
        /// Rights bits.
        rights: u8,
        /// Badge (0 = none).
        badge: u64,
    },
    /// A thread control block.
    Tcb {
        /// Object address.
        addr: u64,
    },
    /// A frame of `2^size_bits` bytes.
    Frame {
        /// Object address.
        addr: u64,
        /// log2 size (12, 21, 30).
        size_bits: u32,
        /// Rights bits.
        rights: u8,
    },
    /// A stage-2 page table.
    PageTable {
        /// Object address.
        addr: u64,
    },
    /// A stage-2 root.
    VSpace {
        /// Object address.
        addr: u64,
    },
    /// The authority to create IRQ handler caps.
    IrqControl,
    /// The authority over one interrupt.
    IrqHandler {
        /// The interrupt ID.
        irq: u32,
    },
    /// The authority to set the cores' time-partition schedules.
    SchedControl,
    /// A virtual CPU.
    Vcpu {
        /// Object address.
        addr: u64,
    },
    /// A pool of stage-2 tables (`2^size_bits` bytes).
    TablePool {
        /// Object address.
        addr: u64,
        /// log2 size.
        size_bits: u32,
    },
}

impl Cap {
    /// True for the empty slot.
    pub fn is_null(&self) -> bool {
        matches!(self, Cap::Null)
    }

    /// The object this cap names: (type, address, size bits). Untyped caps name their
    /// region. `None` for the null cap.
    pub fn object(&self) -> Option<(ObjectType, u64, u32)> {
        // IRQ caps name no memory: they use keys no object can have (addresses above the
        // 48-bit range).
        match *self {
            Cap::IrqControl => return Some((ObjectType::Untyped, u64::MAX, 0)),
            Cap::IrqHandler { irq } => return Some((ObjectType::Untyped, u64::MAX - 1, irq)),
            Cap::SchedControl => return Some((ObjectType::Untyped, u64::MAX - 2, 0)),
            _ => {}
        }
        Some(match *self {
            Cap::Null => return None,
            Cap::Untyped {
                base, size_bits, ..
            } => (ObjectType::Untyped, base, size_bits),
            Cap::CNode { addr, radix, .. } => (ObjectType::CNode, addr, radix),
            Cap::Endpoint { addr, .. } => (ObjectType::Endpoint, addr, 0),
            Cap::Notification { addr, .. } => (ObjectType::Notification, addr, 0),
            Cap::Tcb { addr } => (ObjectType::Tcb, addr, 0),
            Cap::Frame {
                addr, size_bits, ..
            } => (ObjectType::Frame4K, addr, size_bits),
            Cap::PageTable { addr } => (ObjectType::PageTable, addr, 0),
            Cap::VSpace { addr } => (ObjectType::VSpace, addr, 0),
            Cap::Vcpu { addr } => (ObjectType::Vcpu, addr, 0),
            Cap::TablePool { addr, size_bits } => (ObjectType::TablePool, addr, size_bits),
            Cap::IrqControl | Cap::IrqHandler { .. } | Cap::SchedControl => return None,
        })
    }

    /// True if both name the same object.
    pub fn same_object(&self, other: &Cap) -> bool {
        match (self.object(), other.object()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// The cap for a freshly retyped object.
    pub fn new_object(ty: ObjectType, addr: u64, size_bits: u32, device: bool) -> Cap {
        match ty {
            ObjectType::Untyped => Cap::Untyped {
                base: addr,
                size_bits,
                watermark: 0,
                device,
            },
            ObjectType::CNode => Cap::CNode {
                addr,
                radix: size_bits,
                guard_bits: 0,
                guard: 0,
            },
            ObjectType::Endpoint => Cap::Endpoint {
                addr,
                rights: rights::ALL,
                badge: 0,
            },
            ObjectType::Notification => Cap::Notification {
                addr,
                rights: rights::ALL,
                badge: 0,
            },
            ObjectType::Tcb => Cap::Tcb { addr },
            ObjectType::Frame4K => Cap::Frame {
                addr,
                size_bits: 12,
                rights: rights::ALL,
            },
            ObjectType::Frame2M => Cap::Frame {
                addr,
                size_bits: 21,
                rights: rights::ALL,
            },
            ObjectType::Frame1G => Cap::Frame {
                addr,
                size_bits: 30,
                rights: rights::ALL,
            },
            ObjectType::PageTable => Cap::PageTable { addr },
            ObjectType::VSpace => Cap::VSpace { addr },
            ObjectType::Vcpu => Cap::Vcpu { addr },
            ObjectType::TablePool => Cap::TablePool { addr, size_bits },
            ObjectType::Frame => Cap::Frame {
                addr,
                size_bits,
                rights: rights::ALL,
            },
        }
    }

    fn tag(&self) -> u64 {
        match self {
            Cap::Null => 0,
            Cap::Untyped { .. } => 1,
            Cap::CNode { .. } => 2,
            Cap::Endpoint { .. } => 3,
            Cap::Notification { .. } => 4,
            Cap::Tcb { .. } => 5,
            Cap::Frame { .. } => 6,
            Cap::PageTable { .. } => 7,
            Cap::VSpace { .. } => 8,
            Cap::IrqControl => 9,
            Cap::IrqHandler { .. } => 10,
            Cap::SchedControl => 11,
            Cap::Vcpu { .. } => 12,
            Cap::TablePool { .. } => 13,
        }
    }

    /// Two-word encoding: word 0 = tag (bits 63:59) | small fields (58:48) | address (47:0).
    pub fn encode(&self) -> [u64; 2] {
        const A: u64 = (1 << 48) - 1;
        let t = self.tag() << 59;
        match *self {
            Cap::Null => [0, 0],
            Cap::Untyped {
                base,
                size_bits,
                watermark,
                device,
            } => [
                t | ((device as u64) << 54) | ((size_bits as u64) << 48) | (base & A),
                watermark,
            ],
            Cap::CNode {
                addr,
                radix,
                guard_bits,
                guard,
            } => [
                t | ((radix as u64) << 48) | (addr & A),
                ((guard_bits as u64) << 58) | guard,
            ],
            Cap::Endpoint {
                addr,
                rights,
                badge,
            }
            | Cap::Notification {
                addr,
                rights,
                badge,
            } => [t | ((rights as u64) << 48) | (addr & A), badge],
            Cap::Frame {
                addr,
                size_bits,
                rights,
            } => [t | ((rights as u64) << 48) | (addr & A), size_bits as u64],
            Cap::Tcb { addr }
            | Cap::PageTable { addr }
            | Cap::VSpace { addr }
            | Cap::Vcpu { addr } => [t | (addr & A), 0],
            Cap::TablePool { addr, size_bits } => [t | (addr & A), size_bits as u64],
            Cap::IrqControl => [t, 0],
            Cap::IrqHandler { irq } => [t, irq as u64],
            Cap::SchedControl => [t, 0],
        }
    }

    /// Decodes [`Cap::encode`]'s output; unknown tags read as the null cap.
    pub fn decode(w: [u64; 2]) -> Cap {
        const A: u64 = (1 << 48) - 1;
        let addr = w[0] & A;
        let small = (w[0] >> 48) & 0x7ff;
        match w[0] >> 59 {
            1 => Cap::Untyped {
                base: addr,
                size_bits: (small & 0x3f) as u32,
                watermark: w[1],
                device: small & 0x40 != 0,
            },
            2 => Cap::CNode {
                addr,
                radix: (small & 0x3f) as u32,
                guard_bits: (w[1] >> 58) as u32,
                guard: w[1] & ((1 << 58) - 1),
            },
            3 => Cap::Endpoint {
                addr,
                rights: (small & 0xf) as u8,
                badge: w[1],
            },
            4 => Cap::Notification {
                addr,
                rights: (small & 0xf) as u8,
                badge: w[1],
            },
            5 => Cap::Tcb { addr },
            6 => Cap::Frame {
                addr,
                size_bits: w[1] as u32,
                rights: (small & 0xf) as u8,
            },
            7 => Cap::PageTable { addr },
            8 => Cap::VSpace { addr },
            9 => Cap::IrqControl,
            10 => Cap::IrqHandler { irq: w[1] as u32 },
            11 => Cap::SchedControl,
            12 => Cap::Vcpu { addr },
            13 => Cap::TablePool {
                addr,
                size_bits: w[1] as u32,
            },
            _ => Cap::Null,
        }
    }
}

/// Words in an encoded slot.
pub const CTE_WORDS: usize = 4;

/// A CNode slot: a cap and its place in the derivation list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cte {
    /// The capability (null when empty).
    pub cap: Cap,
    /// Previous entry in derivation order.
    pub prev: Option<u64>,
    /// Next entry in derivation order.
    pub next: Option<u64>,
    /// Depth in the derivation tree (0 for caps with no parent).
    pub depth: u16,
}

impl Cte {
    /// The 32-byte encoding: cap (2 words), prev (bit 63 = present, 16 bits depth at
    /// 62:47, 47 bits address), next (bit 63 = present, 47 bits address). Slots therefore
    /// live below 2^47.
    pub fn encode(&self) -> [u64; CTE_WORDS] {
        const A: u64 = (1 << 47) - 1;
        let [c0, c1] = self.cap.encode();
        let link = |l: Option<u64>| l.map_or(0, |a| (1 << 63) | (a & A));
        [
            c0,
            c1,
            link(self.prev) | ((self.depth as u64) << 47 & (0xffff << 47)),
            link(self.next),
        ]
    }

    /// Decodes [`Cte::encode`]'s output.
    pub fn decode(w: [u64; CTE_WORDS]) -> Cte {
        const A: u64 = (1 << 47) - 1;
        let link = |v: u64| if v >> 63 != 0 { Some(v & A) } else { None };
        Cte {
            cap: Cap::decode([w[0], w[1]]),
            prev: link(w[2]),
            next: link(w[3]),
            depth: ((w[2] >> 47) & 0xffff) as u16,
        }
    }
}

/// Access to slot memory.
pub trait SlotMem {
    /// The slot at `addr` (an all-zero slot reads as empty).
    fn read(&self, addr: u64) -> Cte;
    /// Overwrites the slot at `addr`.
    fn write(&mut self, addr: u64, cte: Cte);
    /// A new object other than an Untyped was made at `addr`: its `size` bytes must read as
    /// zero from now on.
    fn clear(&mut self, addr: u64, size: u64);
    /// The last cap to a (non-CNode) object was deleted: the kernel stops what the object
    /// still does (a TCB's thread, an endpoint's waiters). CNodes are emptied by the
    /// capability code itself.
    fn destroyed(&mut self, _cap: &Cap) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn caps() -> impl Strategy<Value = Cap> {
        let a = 0u64..(1 << 46);
        prop_oneof![
            Just(Cap::Null),
            (a.clone(), 4u32..48, 0u64..(1 << 47), any::<bool>()).prop_map(
                |(base, size_bits, watermark, device)| Cap::Untyped {
                    base,
                    size_bits,
                    watermark,
                    device
                }
            ),
            (a.clone(), 1u32..25, 0u32..59, any::<u64>()).prop_map(
                |(addr, radix, guard_bits, g)| Cap::CNode {
                    addr,
                    radix,
                    guard_bits,
                    guard: if guard_bits == 0 {
                        0
                    } else {
                        g & ((1 << guard_bits) - 1)
                    }
                }
            ),
            (a.clone(), 0u8..16, 0u64..(1 << 48)).prop_map(|(addr, rights, badge)| Cap::Endpoint {
                addr,
                rights,
                badge
            }),
            (a.clone(), 0u8..16, 0u64..(1 << 48)).prop_map(|(addr, rights, badge)| {
                Cap::Notification {
                    addr,
                    rights,
                    badge,
                }
            }),
            a.clone().prop_map(|addr| Cap::Tcb { addr }),
            (
                a.clone(),
                prop_oneof![Just(12u32), Just(21), Just(30)],
                0u8..16
            )
                .prop_map(|(addr, size_bits, rights)| Cap::Frame {
                    addr,
                    size_bits,
                    rights
                }),
            a.clone().prop_map(|addr| Cap::PageTable { addr }),
            a.prop_map(|addr| Cap::VSpace { addr }),
            Just(Cap::IrqControl),
            Just(Cap::SchedControl),
            (0u32..1020).prop_map(|irq| Cap::IrqHandler { irq }),
        ]
    }

    proptest! {
        #[test]
        fn slots_round_trip(cap in caps(), prev in proptest::option::of(0u64..(1 << 47)), next in proptest::option::of(0u64..(1 << 47)), depth: u16) {
            let cte = Cte { cap, prev, next, depth };
            prop_assert_eq!(Cte::decode(cte.encode()), cte);
        }
    }

    #[test]
    fn zero_is_empty() {
        assert_eq!(Cte::decode([0; 4]), Cte::default());
    }
}
