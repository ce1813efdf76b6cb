//! Address newtypes. Physical addresses, intermediate physical addresses (what a stage-2
//! table translates) and virtual addresses never convert into each other implicitly; each
//! conversion is a named function at the place where it is valid.

use core::fmt;

macro_rules! addr_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn get(self) -> u64 {
                self.0
            }
            /// Adds `off`, or `None` on overflow.
            pub const fn checked_add(self, off: u64) -> Option<Self> {
                match self.0.checked_add(off) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
            /// Rounds up to a multiple of `align` (a power of two); `None` on overflow.
            pub const fn align_up(self, align: u64) -> Option<Self> {
                match self.0.checked_add(align - 1) {
                    Some(v) => Some(Self(v & !(align - 1))),
                    None => None,
                }
            }
            /// True if a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// Offset within a 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        #[cfg(feature = "defmt")]
        impl defmt::Format for $name {
            fn format(&self, f: defmt::Formatter) {
                defmt::write!(f, "{=u64:#x}", self.0)
            }
        }
    };
}

addr_type!(
    /// A physical address.
    PhysAddr
);
addr_type!(
    /// An intermediate physical address: the input of a stage-2 translation.
    Ipa
);
addr_type!(
    /// A virtual address (the kernel's own, or a stage-1 address of a task).
    VirtAddr
);

/// The translation granule.
pub const PAGE_SIZE: u64 = 4096;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PhysRange {
    /// First byte.
    pub start: PhysAddr,
    /// One past the last byte.
    pub end: PhysAddr,
}

impl PhysRange {
    /// `[start, start + size)`, or `None` if it wraps.
    pub const fn new(start: u64, size: u64) -> Option<Self> {
        match start.checked_add(size) {
            Some(end) => Some(PhysRange {
                start: PhysAddr(start),
                end: PhysAddr(end),
            }),
            None => None,
        }
    }
    /// Size in bytes.
    pub const fn size(&self) -> u64 {
        self.end.0 - self.start.0
    }
    /// True if `a` lies inside.
    pub const fn contains(&self, a: PhysAddr) -> bool {
        a.0 >= self.start.0 && a.0 < self.end.0
    }
    /// True if the two ranges share a byte.
    pub const fn overlaps(&self, o: &PhysRange) -> bool {
        self.start.0 < o.end.0 && o.start.0 < self.end.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alignment() {
        assert_eq!(PhysAddr(0x1234).align_down(0x1000), PhysAddr(0x1000));
        assert_eq!(PhysAddr(0x1234).align_up(0x1000), Some(PhysAddr(0x2000)));
        assert_eq!(PhysAddr(u64::MAX).align_up(0x1000), None);
        assert!(Ipa(0x4000).is_aligned(0x1000));
        assert_eq!(VirtAddr(0x1234).page_offset(), 0x234);
        assert_eq!(format!("{:?}", Ipa(0x10)), "Ipa(0x10)");
    }

    #[test]
    fn ranges() {
        let r = PhysRange::new(0x1000, 0x1000).unwrap();
        assert!(r.contains(PhysAddr(0x1fff)));
        assert!(!r.contains(PhysAddr(0x2000)));
        assert!(r.overlaps(&PhysRange::new(0x1800, 0x1000).unwrap()));
        assert!(!r.overlaps(&PhysRange::new(0x2000, 0x1000).unwrap()));
        assert!(PhysRange::new(u64::MAX, 2).is_none());
    }

    proptest! {
        #[test]
        fn align_up_is_smallest_aligned_at_or_above(a in 0u64..u64::MAX / 2, shift in 0u32..30) {
            let align = 1u64 << shift;
            let up = PhysAddr(a).align_up(align).unwrap();
            prop_assert!(up.is_aligned(align));
            prop_assert!(up.0 >= a && up.0 - a < align);
            let down = PhysAddr(a).align_down(align);
            prop_assert!(down.0 <= a && a - down.0 < align);
        }
    }
}
