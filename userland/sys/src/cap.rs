//! Capability vocabulary: object types, rights, limits. The semantics are in
//! `docs/design/capabilities.md`.

/// Kinds of kernel object.
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectType {
    /// Untyped memory.
    Untyped = 0,
    /// Thread control block.
    Tcb = 1,
    /// IPC endpoint.
    Endpoint = 2,
    /// Notification (a word of signal bits).
    Notification = 3,
    /// Capability node (2^radix slots).
    CNode = 4,
    /// 4 KiB frame.
    Frame4K = 5,
    /// 2 MiB frame.
    Frame2M = 6,
    /// 1 GiB frame.
    Frame1G = 7,
    /// Stage-2 page table (any level below the root).
    PageTable = 8,
    /// Stage-2 address space: the 8 KiB concatenated root, then 8 KiB of kernel
    /// metadata (VMID, table pool, memory regions).
    VSpace = 9,
    /// Virtual CPU: a guest's EL1 state, bound to a TCB that then runs the guest.
    Vcpu = 10,
    /// Table pool: `2^size_bits` bytes of stage-2 table pages (the first page holds the
    /// pool's accounting) the kernel links on its own when it resolves guest faults.
    TablePool = 11,
    /// A physically contiguous frame of `2^size_bits` bytes (12..=30), for guest RAM.
    Frame = 12,
}

impl ObjectType {
    /// Every retypable type.
    pub const ALL: [ObjectType; 13] = [
        ObjectType::Untyped,
        ObjectType::Tcb,
        ObjectType::Endpoint,
        ObjectType::Notification,
        ObjectType::CNode,
        ObjectType::Frame4K,
        ObjectType::Frame2M,
        ObjectType::Frame1G,
        ObjectType::PageTable,
        ObjectType::VSpace,
        ObjectType::Vcpu,
        ObjectType::TablePool,
        ObjectType::Frame,
    ];

    /// Decodes a type number.
    pub const fn from_raw(n: u64) -> Option<Self> {
        if n < Self::ALL.len() as u64 {
            Some(Self::ALL[n as usize])
        } else {
            None
        }
    }

    /// log2 of the object's size in bytes; `size_bits` is the Retype argument (used by
    /// Untyped and CNode only). `None` if `size_bits` is out of range for the type.
    pub const fn object_bits(self, size_bits: u32) -> Option<u32> {
        match self {
            ObjectType::Untyped => {
                if size_bits >= MIN_UNTYPED_BITS && size_bits <= MAX_UNTYPED_BITS {
                    Some(size_bits)
                } else {
                    None
                }
            }
            ObjectType::CNode => {
                if size_bits >= 1 && size_bits <= MAX_CNODE_RADIX {
                    Some(size_bits + SLOT_BITS)
                } else {
                    None
                }
            }
            ObjectType::Tcb => Some(11),
            ObjectType::Endpoint => Some(5),
            ObjectType::Notification => Some(5),
            ObjectType::Frame4K => Some(12),
            ObjectType::Frame2M => Some(21),
            ObjectType::Frame1G => Some(30),
            ObjectType::PageTable => Some(12),
            ObjectType::VSpace => Some(14),
            ObjectType::Vcpu => Some(12),
            ObjectType::TablePool => {
                if size_bits >= MIN_POOL_BITS && size_bits <= MAX_POOL_BITS {
                    Some(size_bits)
                } else {
                    None
                }
            }
            ObjectType::Frame => {
                if size_bits >= 12 && size_bits <= MAX_FRAME_BITS {
                    Some(size_bits)
                } else {
                    None
                }
            }
        }
    }

    /// True for the types a device Untyped may become.
    pub const fn device_ok(self) -> bool {
        matches!(
            self,
            ObjectType::Untyped
                | ObjectType::Frame4K
                | ObjectType::Frame2M
                | ObjectType::Frame1G
                | ObjectType::Frame
        )
    }

    /// True for types whose capabilities carry a badge.
    pub const fn badged(self) -> bool {
        matches!(self, ObjectType::Endpoint | ObjectType::Notification)
    }
}

/// Capability rights (a bit set).
pub mod rights {
    /// Read (receive, map readable).
    pub const READ: u8 = 1;
    /// Write (send, map writable).
    pub const WRITE: u8 = 2;
    /// Grant capabilities over IPC.
    pub const GRANT: u8 = 4;
    /// Grant a reply capability.
    pub const GRANT_REPLY: u8 = 8;
    /// Every right.
    pub const ALL: u8 = READ | WRITE | GRANT | GRANT_REPLY;
}

/// log2 of a CNode slot's size.
pub const SLOT_BITS: u32 = 5;
/// Smallest Untyped.
pub const MIN_UNTYPED_BITS: u32 = 4;
/// Largest Untyped.
pub const MAX_UNTYPED_BITS: u32 = 47;
/// Largest CNode radix.
pub const MAX_CNODE_RADIX: u32 = 24;
/// Largest CNode guard size in bits.
pub const MAX_GUARD_BITS: u32 = 58;
/// Largest badge.
pub const MAX_BADGE: u64 = (1 << 48) - 1;
/// Smallest table pool (its accounting page and one table).
pub const MIN_POOL_BITS: u32 = 13;
/// Largest table pool (the accounting page's bitmap covers this many tables).
pub const MAX_POOL_BITS: u32 = 26;
/// Largest [`ObjectType::Frame`].
pub const MAX_FRAME_BITS: u32 = 30;
/// Most objects one Retype creates.
pub const MAX_RETYPE_COUNT: u64 = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_and_sizes() {
        for t in ObjectType::ALL {
            assert_eq!(ObjectType::from_raw(t as u64), Some(t));
        }
        assert_eq!(ObjectType::from_raw(13), None);
        assert_eq!(ObjectType::Frame.object_bits(21), Some(21));
        assert_eq!(ObjectType::TablePool.object_bits(12), None);
        assert_eq!(ObjectType::CNode.object_bits(8), Some(13));
        assert_eq!(ObjectType::CNode.object_bits(0), None);
        assert_eq!(ObjectType::Untyped.object_bits(3), None);
        assert_eq!(ObjectType::Untyped.object_bits(47), Some(47));
        assert!(ObjectType::Frame2M.device_ok() && !ObjectType::Tcb.device_ok());
    }
}
