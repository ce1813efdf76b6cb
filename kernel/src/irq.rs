//! Interrupts delivered to userland: which notification each interrupt ID signals.
//!
//! An IRQHandler cap is the authority over one interrupt ID. While a notification is bound,
//! the interrupt is enabled; when it fires the kernel masks it, signals the notification
//! with the bound badge, and leaves it masked until the handler acknowledges it (so a
//! level-triggered source cannot storm the kernel). Interrupt IDs the kernel uses itself
//! (SGIs, its own EL2 timer) are never handed out.

use bulkhead_sys::Error;
use kcore::board::Board;

use crate::arch::gic;
use crate::sched;
use crate::sync::SpinLock;
use crate::ThisBoard;

/// Interrupt IDs that can be handed out: PPIs and SPIs below the special range.
pub const MAX_IRQ: u32 = 1020;

#[derive(Clone, Copy)]
struct Binding {
    claimed: bool,
    ntfn: u64,
    badge: u64,
}

static TABLE: SpinLock<[Binding; MAX_IRQ as usize]> = SpinLock::new(
    [Binding {
        claimed: false,
        ntfn: 0,
        badge: 0,
    }; MAX_IRQ as usize],
);

/// True for interrupt IDs userland may own.
pub fn grantable(irq: u32) -> bool {
    (16..MAX_IRQ).contains(&irq) && irq != ThisBoard::TIMER.hyp_phys && irq != ThisBoard::TIMER.virt
}

/// Claims `irq` for a new IRQHandler cap.
pub fn claim(irq: u32) -> Result<(), Error> {
    if !grantable(irq) {
        return Err(Error::RangeError);
    }
    let mut t = TABLE.lock();
    let b = &mut t[irq as usize];
    if b.claimed {
        return Err(Error::RevokeFirst);
    }
    *b = Binding {
        claimed: true,
        ntfn: 0,
        badge: 0,
    };
    Ok(())
}

/// Binds `irq` to a notification and enables it.
pub fn bind(irq: u32, ntfn: u64, badge: u64) {
    TABLE.lock()[irq as usize] = Binding {
        claimed: true,
        ntfn,
        badge,
    };
    gic::set_enabled(irq, true);
}

/// Unbinds `irq` and disables it (it stays claimed).
/// A notification is destroyed: every interrupt bound to it is unbound and disabled (its
/// handler cap stays; SetNotification can bind it again).
pub fn notification_destroyed(ntfn: u64) {
    let mut t = TABLE.lock();
    for (irq, b) in t.iter_mut().enumerate() {
        if b.ntfn == ntfn {
            b.ntfn = 0;
            gic::set_enabled(irq as u32, false);
        }
    }
}

pub fn clear(irq: u32) {
    gic::set_enabled(irq, false);
    let mut t = TABLE.lock();
    t[irq as usize].ntfn = 0;
}

/// The last IRQHandler cap for `irq` is gone: free it.
pub fn release(irq: u32) {
    if irq < MAX_IRQ {
        gic::set_enabled(irq, false);
        TABLE.lock()[irq as usize] = Binding {
            claimed: false,
            ntfn: 0,
            badge: 0,
        };
    }
}

/// Re-enables `irq` after its handler dealt with it.
pub fn ack(irq: u32) {
    if TABLE.lock()[irq as usize].ntfn != 0 {
        gic::set_enabled(irq, true);
    }
}

/// An interrupt that is not the kernel's own: signal its notification, if bound. Returns
/// false when nobody owns it.
pub fn deliver(irq: u32) -> bool {
    if irq >= MAX_IRQ {
        return false;
    }
    let b = TABLE.lock()[irq as usize];
    gic::set_enabled(irq, false);
    if b.ntfn == 0 {
        return false;
    }
    sched::ipc(|m, w| kcore::thread::signal(m, b.ntfn, b.badge, w));
    true
}
