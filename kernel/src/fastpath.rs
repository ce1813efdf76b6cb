//! The same-core IPC fast path (`docs/design/ipc.md`): Call, ReplyRecv and fault messages
//! between threads of one core, under this core's part of the capability-and-IPC lock
//! and the endpoint's own lock, never the whole lock.
//!
//! Each operation first checks that everything it would touch, besides the endpoint's
//! queue, belongs to this core: the partner thread runs on this core, the message fits
//! (no capability travels), nothing needs a capability operation. If not, it touches
//! nothing and returns `false`, and the caller takes the slow path, which does the same
//! operation under the whole lock and reports every error. Under those conditions the
//! operation itself is the slow path's: the same `kcore::thread` functions run on the same
//! objects, so the two paths cannot differ in what a thread observes.
//!
//! Why this is safe with only this core's flag: capability slots, thread cores and every
//! other core's threads change only under the whole lock (which excludes this flag); this
//! core's threads change only on this core; an endpoint's queue (and the queue links of
//! the TCBs on it, which may belong to other cores) changes under the whole lock or the
//! endpoint's lock. The loom model `brlock::loom_tests` checks that protocol.

use core::sync::atomic::{AtomicU64, Ordering};

use bulkhead_sys::cap::rights;
use kcore::brlock;
use kcore::cap::{self, Addr, Cap, SlotMem};
use kcore::thread::{self, tcb};

use crate::arch::cpu::{self, MAX_CPUS};
use crate::cspace::{KernelSlots, CAPS};
use crate::ipcbuf::FastMem;
use crate::sched;

/// Byte offset of an endpoint's fast-path lock word.
const EP_LOCK: u64 = 16;

/// Fast-path IPC operations completed, per core (read by a test-only syscall).
static COUNT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Fast-path operations completed on this core since boot.
pub fn count() -> u64 {
    COUNT[cpu::index()].load(Ordering::Relaxed)
}

/// Holds an endpoint's fast-path lock.
struct EpGuard(&'static AtomicU64);

impl EpGuard {
    /// Locks endpoint `ep`, which the caller reached through a capability while holding
    /// its core's flag.
    fn lock(ep: u64) -> EpGuard {
        // SAFETY: `ep` is an Endpoint object (32 bytes, 32-byte aligned, in RAM the kernel
        // owns and identity maps) named by a capability read under this core's flag; it
        // cannot be destroyed, nor its memory retyped, before the flag is released, which
        // happens after this guard is dropped. Word 2 is only ever accessed atomically,
        // here (retype zeroed it before the object was reachable).
        let w = unsafe { AtomicU64::from_ptr((ep + EP_LOCK) as usize as *mut u64) };
        brlock::ep_lock(w);
        EpGuard(w)
    }
}

impl Drop for EpGuard {
    fn drop(&mut self) {
        brlock::ep_unlock(self.0);
    }
}

/// The endpoint at `cptr` in `t`'s CSpace if the cap has `right`: (address, badge, rights).
/// Any lookup problem sends the caller to the slow path, which reports it.
fn endpoint(caps: &KernelSlots, t: u64, cptr: u64, right: u8) -> Option<(u64, u64, u8)> {
    let root = caps.read(t + tcb::CSPACE_SLOT).cap;
    let at = Addr {
        index: cptr,
        depth: 64,
    };
    match caps.read(cap::lookup(caps, &root, at).ok()?).cap {
        Cap::Endpoint {
            addr,
            rights,
            badge,
        } if rights & right != 0 => Some((addr, badge, rights)),
        _ => None,
    }
}

/// The threads of this core an operation made ready (at most two: a ReplyRecv's caller
/// and a sender it received from).
#[derive(Default)]
struct Woken {
    t: [u64; 2],
    n: usize,
}

impl Woken {
    fn add(&mut self, t: u64) {
        if let Some(slot) = self.t.get_mut(self.n) {
            *slot = t;
            self.n += 1;
        }
    }
}

/// After an operation (still under this core's flag): the threads it woke become ready
/// on this core ([`sched::ready_here`]), and the operation is counted.
fn finish(done: bool, cur: u64, woken: &Woken, me: usize) {
    if done {
        sched::ready_here(cur, &woken.t[..woken.n]);
        COUNT[me].fetch_add(1, Ordering::Relaxed);
    }
}

/// True if thread `t` runs on core `me`.
fn local(me: usize) -> impl Fn(&FastMem, u64) -> bool {
    move |_, t| sched::core_of(t) == me
}

/// Call on the endpoint at `cptr` by `cur` (this core's current thread), if a receiver of
/// this core waits there. True if done.
pub fn call(cur: u64, cptr: u64) -> bool {
    send(cur, cptr, None)
}

/// Sends `cur`'s fault message `msg` to its fault endpoint `cptr` as a Call, if a handler
/// of this core waits there. True if done.
pub fn fault(cur: u64, cptr: u64, msg: [u64; 5]) -> bool {
    send(cur, cptr, Some(msg))
}

fn send(cur: u64, cptr: u64, fault: Option<[u64; 5]>) -> bool {
    let Some(caps) = CAPS.read() else {
        return false;
    };
    let me = cpu::index();
    let Some((ep, badge, r)) = endpoint(&caps, cur, cptr, rights::WRITE) else {
        return false;
    };
    let guard = EpGuard::lock(ep);
    let grant = r & rights::GRANT != 0;
    let mut woken = Woken::default();
    let mut wake = |_: &mut FastMem, t: u64| woken.add(t);
    let done = thread::fast_call(
        &mut FastMem,
        cur,
        ep,
        badge,
        grant,
        fault,
        &local(me),
        &mut wake,
    );
    drop(guard);
    finish(done, cur, &woken, me);
    drop(caps);
    done
}

/// ReplyRecv by `cur` (this core's current thread) on the endpoint at `cptr`, if the
/// caller it replies to (if any) runs on this core and the endpoint has no sender that
/// would need the slow path. True if done.
pub fn reply_recv(cur: u64, cptr: u64) -> bool {
    let Some(caps) = CAPS.read() else {
        return false;
    };
    let me = cpu::index();
    let Some((ep, _, _)) = endpoint(&caps, cur, cptr, rights::READ) else {
        return false;
    };
    let guard = EpGuard::lock(ep);
    let mut woken = Woken::default();
    let mut wake = |_: &mut FastMem, t: u64| woken.add(t);
    let done = thread::fast_reply_recv(&mut FastMem, cur, ep, &local(me), &mut wake);
    drop(guard);
    finish(done, cur, &woken, me);
    drop(caps);
    done
}
