//! CNode and Untyped operations, in the order of checks `docs/design/capabilities.md`
//! prescribes. Every function validates all of its arguments before it changes anything,
//! so an error leaves the state untouched.

use super::cte::{Cap, Cte, SlotMem};
use bulkhead_sys::cap::{rights, ObjectType, MAX_BADGE, MAX_RETYPE_COUNT, SLOT_BITS};
use bulkhead_sys::Error;

/// A slot address relative to a CSpace root: index and depth in bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    /// The index bits (those above `depth` are ignored).
    pub index: u64,
    /// How many bits of `index` to resolve (1..=64).
    pub depth: u32,
}

/// Deepest derivation the tree records.
const MAX_DEPTH: u16 = u16::MAX;

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Resolves `a` from the CSpace root `root` to a slot address.
pub fn lookup<M: SlotMem>(mem: &M, root: &Cap, a: Addr) -> Result<u64, Error> {
    if a.depth == 0 || a.depth > 64 {
        return Err(Error::RangeError);
    }
    let mut node = *root;
    let mut n = a.depth;
    loop {
        let Cap::CNode {
            addr,
            radix,
            guard_bits,
            guard,
        } = node
        else {
            return Err(Error::FailedLookup);
        };
        let level = guard_bits + radix;
        if level > n || level == 0 {
            return Err(Error::FailedLookup);
        }
        if guard_bits > 0 && (a.index >> (n - guard_bits)) & mask(guard_bits) != guard {
            return Err(Error::FailedLookup);
        }
        let idx = (a.index >> (n - level)) & mask(radix);
        let slot = addr + (idx << SLOT_BITS);
        n -= level;
        if n == 0 {
            return Ok(slot);
        }
        node = mem.read(slot).cap;
    }
}

/// Writes the initial caps into the root CNode at `root_addr` (slot 1: the root itself,
/// then one Untyped per entry of `untypeds` from slot 2), linked as parentless entries.
/// Returns the root CNode cap (the CSpace root of the first thread).
pub fn boot<M: SlotMem>(
    mem: &mut M,
    root_addr: u64,
    radix: u32,
    guard_bits: u32,
    untypeds: &[(u64, u32, bool)],
) -> Cap {
    let root = Cap::CNode {
        addr: root_addr,
        radix,
        guard_bits,
        guard: 0,
    };
    mem.clear(root_addr, 1 << (radix + SLOT_BITS));
    let mut caps = [Cap::Null; 1]
        .into_iter()
        .chain(core::iter::once(root))
        .chain(
            untypeds
                .iter()
                .map(|&(base, size_bits, device)| Cap::Untyped {
                    base,
                    size_bits,
                    watermark: 0,
                    device,
                }),
        );
    let _null_slot_0 = caps.next();
    let mut prev: Option<u64> = None;
    for (i, cap) in caps.enumerate() {
        let slot = root_addr + ((i as u64 + 1) << SLOT_BITS);
        mem.write(
            slot,
            Cte {
                cap,
                prev,
                next: None,
                depth: 0,
            },
        );
        if let Some(p) = prev {
            let mut pc = mem.read(p);
            pc.next = Some(slot);
            mem.write(p, pc);
        }
        prev = Some(slot);
    }
    root
}

/// Appends an initial (parentless) cap in slot `index` of the root CNode at `root_addr`,
/// after the caps [`boot`] placed: how the kernel hands out authority that comes from no
/// Untyped (the IRQ control cap).
pub fn place_initial<M: SlotMem>(mem: &mut M, root_addr: u64, index: u64, cap: Cap) {
    let slot = root_addr + (index << SLOT_BITS);
    // The last entry of the boot list: walk from slot 1.
    let mut last = root_addr + (1 << SLOT_BITS);
    while let Some(n) = mem.read(last).next {
        last = n;
    }
    mem.write(
        slot,
        Cte {
            cap,
            prev: Some(last),
            next: None,
            depth: 0,
        },
    );
    let mut lc = mem.read(last);
    lc.next = Some(slot);
    mem.write(last, lc);
}

/// Puts `cap` into the empty slot `dest` as the newest child of the cap in `parent`
/// (how the kernel issues IRQ handler caps from the IRQ control cap).
pub fn issue_child<M: SlotMem>(mem: &mut M, parent: u64, dest: u64, cap: Cap) -> Result<(), Error> {
    if !mem.read(dest).cap.is_null() {
        return Err(Error::DeleteFirst);
    }
    if mem.read(parent).depth == MAX_DEPTH {
        return Err(Error::RangeError);
    }
    insert_child(mem, parent, dest, cap);
    Ok(())
}

/// The slot of `slot`'s parent in the derivation tree.
pub fn parent_of<M: SlotMem>(mem: &M, slot: u64) -> Option<u64> {
    let me = mem.read(slot);
    if me.cap.is_null() || me.depth == 0 {
        return None;
    }
    let mut p = me.prev;
    while let Some(s) = p {
        let c = mem.read(s);
        if c.depth < me.depth {
            return Some(s);
        }
        p = c.prev;
    }
    None
}

fn has_children<M: SlotMem>(mem: &M, slot: u64) -> bool {
    let me = mem.read(slot);
    me.next.is_some_and(|n| mem.read(n).depth > me.depth)
}

/// Puts `cap` into the empty `dest` as the newest child of `parent`.
fn insert_child<M: SlotMem>(mem: &mut M, parent: u64, dest: u64, cap: Cap) {
    let mut p = mem.read(parent);
    let next = p.next;
    mem.write(
        dest,
        Cte {
            cap,
            prev: Some(parent),
            next,
            depth: p.depth + 1,
        },
    );
    p.next = Some(dest);
    mem.write(parent, p);
    if let Some(n) = next {
        let mut nc = mem.read(n);
        nc.prev = Some(dest);
        mem.write(n, nc);
    }
}

/// Takes `slot` out of the list (its descendants move up a level) and empties it.
/// Returns the cap it held.
fn unlink<M: SlotMem>(mem: &mut M, slot: u64) -> Cte {
    let me = mem.read(slot);
    let mut n = me.next;
    while let Some(s) = n {
        let mut c = mem.read(s);
        if c.depth <= me.depth {
            break;
        }
        c.depth -= 1;
        n = c.next;
        mem.write(s, c);
    }
    if let Some(p) = me.prev {
        let mut pc = mem.read(p);
        pc.next = me.next;
        mem.write(p, pc);
    }
    if let Some(nx) = me.next {
        let mut nc = mem.read(nx);
        nc.prev = me.prev;
        mem.write(nx, nc);
    }
    mem.write(slot, Cte::default());
    me
}

/// True if no other cap names `me`'s object (all caps to an object are adjacent).
fn is_final<M: SlotMem>(mem: &M, me: &Cte) -> bool {
    let same = |s: Option<u64>| s.is_some_and(|s| mem.read(s).cap.same_object(&me.cap));
    !(same(me.prev) || same(me.next))
}

/// The first non-empty slot of a CNode.
fn first_used<M: SlotMem>(mem: &M, addr: u64, radix: u32) -> Option<u64> {
    (0..1u64 << radix)
        .map(|i| addr + (i << SLOT_BITS))
        .find(|&s| !mem.read(s).cap.is_null())
}

/// Deletes the cap in `slot`; destroys its object if it was the last cap to it. For a
/// CNode that means deleting everything inside it, which is done without recursion (a
/// chain of nested CNodes must not overflow the kernel stack): repeatedly walk down from
/// the dying CNode through last caps to non-empty CNodes and delete one cap at the bottom.
fn delete_slot<M: SlotMem>(mem: &mut M, slot: u64) {
    let me = mem.read(slot);
    if me.cap.is_null() {
        return;
    }
    let last = is_final(mem, &me);
    unlink(mem, slot);
    if !last {
        return;
    }
    let Cap::CNode {
        addr: top,
        radix: top_radix,
        ..
    } = me.cap
    else {
        mem.destroyed(&me.cap);
        return;
    };
    loop {
        let (mut addr, mut radix) = (top, top_radix);
        let mut via: Option<u64> = None;
        loop {
            match first_used(mem, addr, radix) {
                None => {
                    match via {
                        // The dying CNode is empty: done.
                        None => return,
                        // A nested CNode is empty now: delete the last cap to it.
                        Some(s) => {
                            unlink(mem, s);
                        }
                    }
                    break;
                }
                Some(s) => {
                    let c = mem.read(s);
                    match c.cap {
                        Cap::CNode {
                            addr: a, radix: r, ..
                        } if is_final(mem, &c) && first_used(mem, a, r).is_some() && a != addr => {
                            via = Some(s);
                            addr = a;
                            radix = r;
                        }
                        _ => {
                            let last = is_final(mem, &c);
                            unlink(mem, s);
                            if last && !matches!(c.cap, Cap::CNode { .. }) {
                                mem.destroyed(&c.cap);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn resolve_used<M: SlotMem>(mem: &M, root: &Cap, a: Addr) -> Result<(u64, Cte), Error> {
    let s = lookup(mem, root, a)?;
    let c = mem.read(s);
    if c.cap.is_null() {
        return Err(Error::FailedLookup);
    }
    Ok((s, c))
}

fn resolve_empty<M: SlotMem>(mem: &M, root: &Cap, a: Addr) -> Result<u64, Error> {
    let s = lookup(mem, root, a)?;
    if !mem.read(s).cap.is_null() {
        return Err(Error::DeleteFirst);
    }
    Ok(s)
}

/// The cap derived from `src` by Copy (`badge = None`) or Mint.
fn derive(src: &Cte, mask_rights: u8, badge: Option<u64>) -> Result<Cap, Error> {
    if mask_rights & !rights::ALL != 0 {
        return Err(Error::InvalidArgument);
    }
    let mut cap = src.cap;
    if let Cap::Untyped { .. } = cap {
        return Err(Error::IllegalOperation);
    }
    if let Some(b) = badge {
        let already = matches!(cap, Cap::Endpoint { badge, .. } | Cap::Notification { badge, .. } if badge != 0);
        if b != 0 && already {
            return Err(Error::IllegalOperation);
        }
        if b > MAX_BADGE {
            return Err(Error::InvalidArgument);
        }
    }
    if src.depth == MAX_DEPTH {
        return Err(Error::RangeError);
    }
    match &mut cap {
        Cap::Endpoint {
            rights, badge: bd, ..
        }
        | Cap::Notification {
            rights, badge: bd, ..
        } => {
            *rights &= mask_rights;
            if let Some(b) = badge.filter(|&b| b != 0) {
                *bd = b;
            }
        }
        Cap::Frame { rights, .. } => *rights &= mask_rights,
        _ => {}
    }
    Ok(cap)
}

/// CNode Copy.
pub fn copy<M: SlotMem>(
    mem: &mut M,
    root: &Cap,
    dest: Addr,
    src: Addr,
    r: u8,
) -> Result<(), Error> {
    let d = resolve_empty(mem, root, dest)?;
    let (s, sc) = resolve_used(mem, root, src)?;
    let cap = derive(&sc, r, None)?;
    insert_child(mem, s, d, cap);
    Ok(())
}

/// CNode Mint.
pub fn mint<M: SlotMem>(
    mem: &mut M,
    root: &Cap,
    dest: Addr,
    src: Addr,
    r: u8,
    badge: u64,
) -> Result<(), Error> {
    let d = resolve_empty(mem, root, dest)?;
    let (s, sc) = resolve_used(mem, root, src)?;
    let cap = derive(&sc, r, Some(badge))?;
    insert_child(mem, s, d, cap);
    Ok(())
}

/// Moves the entry `cte` of slot `s` to the empty slot `d`, keeping its place in the
/// derivation list.
pub(super) fn relocate<M: SlotMem>(mem: &mut M, s: u64, d: u64, cte: Cte) {
    mem.write(d, cte);
    if let Some(p) = cte.prev {
        let mut pc = mem.read(p);
        pc.next = Some(d);
        mem.write(p, pc);
    }
    if let Some(n) = cte.next {
        let mut nc = mem.read(n);
        nc.prev = Some(d);
        mem.write(n, nc);
    }
    mem.write(s, Cte::default());
}

/// CNode Move.
pub fn move_cap<M: SlotMem>(mem: &mut M, root: &Cap, dest: Addr, src: Addr) -> Result<(), Error> {
    let d = resolve_empty(mem, root, dest)?;
    let (s, sc) = resolve_used(mem, root, src)?;
    relocate(mem, s, d, sc);
    Ok(())
}

/// CNode Mutate: Move, setting the badge of an unbadged endpoint or notification cap.
pub fn mutate<M: SlotMem>(
    mem: &mut M,
    root: &Cap,
    dest: Addr,
    src: Addr,
    badge: u64,
) -> Result<(), Error> {
    let d = resolve_empty(mem, root, dest)?;
    let (s, mut sc) = resolve_used(mem, root, src)?;
    if let Cap::Endpoint { badge: bd, .. } | Cap::Notification { badge: bd, .. } = &mut sc.cap {
        if badge != 0 {
            if *bd != 0 {
                return Err(Error::IllegalOperation);
            }
            if badge > MAX_BADGE {
                return Err(Error::InvalidArgument);
            }
            *bd = badge;
        }
    }
    relocate(mem, s, d, sc);
    Ok(())
}

/// Puts a copy of the cap in slot `src` (all its rights) into the empty slot `dest` as
/// its child: how the kernel gives a TCB its CSpace root.
pub fn derive_into<M: SlotMem>(mem: &mut M, src: u64, dest: u64) -> Result<(), Error> {
    let sc = mem.read(src);
    if sc.cap.is_null() {
        return Err(Error::FailedLookup);
    }
    if !mem.read(dest).cap.is_null() {
        return Err(Error::DeleteFirst);
    }
    let cap = derive(&sc, rights::ALL, None)?;
    insert_child(mem, src, dest, cap);
    Ok(())
}

/// Deletes the cap in the slot at `slot` (a slot inside a kernel object, such as a
/// TCB's CSpace root).
pub fn delete_at<M: SlotMem>(mem: &mut M, slot: u64) {
    delete_slot(mem, slot);
}

/// Deletes every cap in the CNode at `addr` (used when the kernel tears down a task's
/// CSpace whose root cap it holds outside any slot).
pub fn delete_all_in<M: SlotMem>(mem: &mut M, addr: u64, radix: u32) {
    for i in 0..1u64 << radix {
        delete_slot(mem, addr + (i << SLOT_BITS));
    }
}

/// CNode Delete.
pub fn delete<M: SlotMem>(mem: &mut M, root: &Cap, slot: Addr) -> Result<(), Error> {
    let s = lookup(mem, root, slot)?;
    delete_slot(mem, s);
    Ok(())
}

/// CNode Revoke.
pub fn revoke<M: SlotMem>(mem: &mut M, root: &Cap, slot: Addr) -> Result<(), Error> {
    let s = lookup(mem, root, slot)?;
    loop {
        let me = mem.read(s);
        if me.cap.is_null() {
            return Ok(());
        }
        match me.next {
            Some(n) if mem.read(n).depth > me.depth => delete_slot(mem, n),
            _ => return Ok(()),
        }
    }
}

/// Untyped Retype.
#[allow(clippy::too_many_arguments)]
pub fn retype<M: SlotMem>(
    mem: &mut M,
    root: &Cap,
    untyped: Addr,
    ty: u64,
    size_bits: u32,
    dest: Addr,
    offset: u64,
    count: u64,
) -> Result<(), Error> {
    let us = lookup(mem, root, untyped)?;
    let uc = mem.read(us);
    let (base, ubits, watermark, device) = match uc.cap {
        Cap::Null => return Err(Error::InvalidCapability),
        Cap::Untyped {
            base,
            size_bits,
            watermark,
            device,
        } => (base, size_bits, watermark, device),
        _ => return Err(Error::IllegalOperation),
    };
    let ty = ObjectType::from_raw(ty).ok_or(Error::InvalidArgument)?;
    let obits = ty.object_bits(size_bits).ok_or(Error::RangeError)?;
    if count == 0 || count > MAX_RETYPE_COUNT {
        return Err(Error::RangeError);
    }
    let ds = lookup(mem, root, dest)?;
    let Cap::CNode {
        addr: cnode, radix, ..
    } = mem.read(ds).cap
    else {
        return Err(Error::FailedLookup);
    };
    if offset
        .checked_add(count)
        .is_none_or(|end| end > 1u64 << radix)
    {
        return Err(Error::RangeError);
    }
    let slot = |i: u64| cnode + ((offset + i) << SLOT_BITS);
    if (0..count).any(|i| !mem.read(slot(i)).cap.is_null()) {
        return Err(Error::DeleteFirst);
    }
    if device && !ty.device_ok() {
        return Err(Error::InvalidArgument);
    }
    if uc.depth == MAX_DEPTH {
        return Err(Error::RangeError);
    }
    let used = if has_children(mem, us) { watermark } else { 0 };
    let size = 1u64 << obits;
    let end_of_untyped = base + (1u64 << ubits);
    let start = (base + used)
        .checked_next_multiple_of(size)
        .ok_or(Error::NotEnoughMemory)?;
    let end = count
        .checked_mul(size)
        .and_then(|total| start.checked_add(total))
        .filter(|&e| e <= end_of_untyped)
        .ok_or(Error::NotEnoughMemory)?;
    let mut u = mem.read(us);
    u.cap = Cap::Untyped {
        base,
        size_bits: ubits,
        watermark: end - base,
        device,
    };
    mem.write(us, u);
    for i in 0..count {
        let obj = start + i * size;
        // Device memory is never written by the kernel (it may be MMIO); device
        // untypeds only become untypeds and frames, whose content is not ours to zero.
        // A child Untyped is not zeroed either: every object later retyped from it is
        // zeroed then (zeroing a big Untyped here would stall the core for nothing).
        if !device && ty != ObjectType::Untyped {
            mem.clear(obj, size);
        }
        let cap = Cap::new_object(ty, obj, size_bits, device);
        insert_child(mem, us, slot(i), cap);
    }
    Ok(())
}
