//! Physical memory as the kernel reaches it: RAM is identity mapped at EL2, so a physical
//! address is also the kernel's virtual address. This module is the one place that turns
//! physical addresses into pointers; it hands out access only to frames the kernel owns
//! (allocated from the frame allocator and not yet freed).

use core::sync::atomic::AtomicU64;
use kcore::addr::{PhysAddr, PAGE_SIZE};
use kcore::frames::FrameAllocator;
use kcore::stage2::TableMem;

use crate::sync::SpinLock;

/// The boot-time frame allocator.
pub static FRAMES: SpinLock<FrameAllocator> = SpinLock::new(FrameAllocator::new());

/// Allocates a zeroed frame.
pub fn alloc_zeroed() -> Option<PhysAddr> {
    let f = FRAMES.lock().alloc()?;
    zero(f);
    Some(f)
}

/// Allocates `pages` zeroed, contiguous frames aligned to `align`.
pub fn alloc_zeroed_aligned(pages: u64, align: u64) -> Option<PhysAddr> {
    let f = FRAMES.lock().alloc_aligned(pages, align)?;
    for i in 0..pages {
        zero(PhysAddr(f.0 + i * PAGE_SIZE));
    }
    Some(f)
}

/// Returns a frame to the allocator.
pub fn free(f: PhysAddr) {
    // A frame the allocator does not know would be a kernel bug; it is not reused.
    let _ = FRAMES.lock().free(f);
}

fn zero(f: PhysAddr) {
    // SAFETY: `f` was just allocated, so the kernel owns the whole 4 KiB frame, which lies
    // in RAM and is identity mapped read/write at EL2.
    unsafe { core::ptr::write_bytes(f.0 as *mut u8, 0, PAGE_SIZE as usize) };
}

/// Copies `data` into the owned frame `f` at `offset` (bounds are checked).
pub fn write_frame(f: PhysAddr, offset: usize, data: &[u8]) {
    assert!(f.is_aligned(PAGE_SIZE) && offset + data.len() <= PAGE_SIZE as usize);
    // SAFETY: the range lies inside the frame (asserted), which the caller owns and which
    // is identity mapped; `data` cannot overlap it (it is kernel image or stack memory).
    unsafe {
        core::ptr::copy_nonoverlapping(
            data.as_ptr(),
            (f.0 as usize + offset) as *mut u8,
            data.len(),
        )
    };
}

/// Reads bytes of a task's frame (mapped into a stage-2 the kernel built) into `buf`.
/// Byte-wise volatile reads: the task may not be the only one able to write it.
pub fn read_frame(pa: PhysAddr, buf: &mut [u8]) {
    assert!(pa.page_offset() + buf.len() as u64 <= PAGE_SIZE);
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: inside one RAM frame (asserted) that the kernel allocated for a task and
        // still owns; identity mapped; a volatile byte read has no alignment needs.
        *b = unsafe { core::ptr::read_volatile((pa.0 as usize + i) as *const u8) };
    }
}

/// Reads `len` bytes of physical memory that is not owned by any allocator (the DTB the
/// firmware left), copying nothing: returns a slice.
///
/// # Safety
/// The range must be RAM that nothing writes for the rest of the kernel's life.
pub unsafe fn firmware_blob(pa: u64, len: usize) -> &'static [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(pa as *const u8, len) }
}

/// Page-table memory reached through the identity map.
pub struct IdentityMem;

impl TableMem for IdentityMem {
    fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64 {
        let addr = table.0 as usize + index * 8;
        // SAFETY: tables are frames the kernel allocated for page tables and owns until
        // teardown; each entry is an aligned u64 inside its table (index < 1024 for the
        // 8 KiB root, < 512 for others, as kcore::stage2 guarantees), identity mapped.
        unsafe { &*(addr as *const AtomicU64) }
    }
}

/// The 8-byte word at `addr` of a kernel object, as an atomic.
pub fn atomic_word(addr: u64) -> &'static AtomicU64 {
    debug_assert!(addr.is_multiple_of(8));
    // SAFETY: callers pass aligned words of kernel objects (VCPUs, VSpaces, table pools)
    // retyped from RAM Untyped memory, which is identity mapped read/write at EL2 and
    // stays so for the kernel's life; a word shared between cores is only accessed
    // atomically.
    unsafe { &*(addr as *const AtomicU64) }
}

/// Zeroes the 4 KiB page at `pa` (a table page returning to its pool).
pub fn zero_page(pa: PhysAddr) {
    zero(pa)
}

/// Fills the 4 KiB page at `pa` with copies of `v` (poisoning a freed table).
pub fn fill_page(pa: PhysAddr, v: u64) {
    for i in 0..PAGE_SIZE / 8 {
        // SAFETY: `pa` is a table page of a pool the caller owns (being returned to it),
        // RAM identity mapped read/write at EL2; aligned words inside the page.
        unsafe { core::ptr::write_volatile((pa.0 + 8 * i) as *mut u64, v) };
    }
}
