//! What an IPC carries beyond the registers: message registers 4 and up, copied from the
//! sender's IPC buffer to the receiver's, and one capability, copied from the sender's
//! CSpace into the slot the receiver named (only if the sender's endpoint cap has Grant).
//!
//! IPC buffers are pages in the threads' own address spaces; the kernel finds them by
//! walking the thread's stage-2 tables and requires them mapped readable and writable.
//! Anything missing (no buffer, unmapped, no receive slot, slot occupied, a cap that
//! cannot be copied) shortens the message or drops the capability; the receiver's message
//! info says what arrived, as in seL4.

use kcore::addr::{Ipa, PhysAddr, PAGE_SIZE};
use kcore::cap::{self, Addr, SlotMem};
use kcore::stage2;
use kcore::thread::{msg, tcb, ObjMem};

use crate::cspace::KernelSlots;
use crate::mem::IdentityMem;
use crate::sched::KObj;

/// Object memory for an IPC operation, with the capability lock held (for transfers).
pub struct IpcMem<'a> {
    /// The slots, locked.
    pub caps: &'a mut KernelSlots,
}

/// The physical address of thread `t`'s IPC buffer, if it has a usable one.
fn buffer(t: u64) -> Option<u64> {
    let va = KObj.rd(t + tcb::IPC_BUF);
    if va == 0 || !va.is_multiple_of(PAGE_SIZE) {
        return None;
    }
    let root = PhysAddr(KObj.rd(t + tcb::VTTBR) & 0x0000_ffff_ffff_fffe);
    let (pa, perms) = stage2::translate(&IdentityMem, root, Ipa(va))?;
    (perms.read && perms.write).then_some(pa.0)
}

fn word(buf: u64, i: u64) -> u64 {
    // SAFETY: `buf` is a page of RAM mapped read/write in a thread's stage-2 tables (so a
    // frame the kernel handed out and still owns), identity mapped; i < 512.
    unsafe { core::ptr::read_volatile((buf + 8 * i) as usize as *const u64) }
}

fn set_word(buf: u64, i: u64, v: u64) {
    // SAFETY: as in `word`.
    unsafe { core::ptr::write_volatile((buf + 8 * i) as usize as *mut u64, v) }
}

/// Copies message registers 4..`want` from buffer `src` to `dst` if both exist; returns
/// the length the receiver gets.
fn copy_mrs(src: Option<u64>, dst: Option<u64>, want: u64) -> u64 {
    match (src, dst) {
        (Some(s), Some(d)) if want > msg::REGISTER_MRS => {
            for i in msg::REGISTER_MRS..want {
                set_word(d, i, word(s, i));
            }
            want
        }
        _ => want.min(msg::REGISTER_MRS),
    }
}

/// Object memory for the IPC fast path, which holds only its core's part of the
/// capability lock: long messages are copied, capabilities never travel (the fast path
/// takes no message that carries one).
pub struct FastMem;

impl ObjMem for FastMem {
    fn rd(&self, addr: u64) -> u64 {
        KObj.rd(addr)
    }

    fn wr(&mut self, addr: u64, v: u64) {
        KObj.wr(addr, v)
    }

    fn extend(&mut self, from: u64, to: u64, info: u64, _caps_ok: bool) -> u64 {
        let want = msg::length(info).min(msg::MAX_MRS);
        if want <= msg::REGISTER_MRS {
            return msg::delivered(info, want, 0);
        }
        msg::delivered(info, copy_mrs(buffer(from), buffer(to), want), 0)
    }
}

impl ObjMem for IpcMem<'_> {
    fn rd(&self, addr: u64) -> u64 {
        KObj.rd(addr)
    }

    fn wr(&mut self, addr: u64, v: u64) {
        KObj.wr(addr, v)
    }

    fn extend(&mut self, from: u64, to: u64, info: u64, caps_ok: bool) -> u64 {
        let want = msg::length(info).min(msg::MAX_MRS);
        let wants_caps = caps_ok && msg::caps(info) > 0;
        if want <= msg::REGISTER_MRS && !wants_caps {
            // The common short message: registers only, no buffer walks.
            return msg::delivered(info, want, 0);
        }
        let (src, dst) = (buffer(from), buffer(to));
        let len = copy_mrs(src, dst, want);
        let mut caps = 0;
        if wants_caps {
            if let (Some(s), Some(d)) = (src, dst) {
                let (send, recv) = (word(s, msg::BUF_CAP), word(d, msg::BUF_RECV_SLOT));
                let from_root = self.caps.read(from + tcb::CSPACE_SLOT).cap;
                let to_root = self.caps.read(to + tcb::CSPACE_SLOT).cap;
                let at = |index| Addr { index, depth: 64 };
                if recv != 0 {
                    if let (Ok(ss), Ok(ds)) = (
                        cap::lookup(&*self.caps, &from_root, at(send)),
                        cap::lookup(&*self.caps, &to_root, at(recv)),
                    ) {
                        if cap::derive_into(self.caps, ss, ds).is_ok() {
                            caps = 1;
                        }
                    }
                }
            }
        }
        msg::delivered(info, len, caps)
    }
}
