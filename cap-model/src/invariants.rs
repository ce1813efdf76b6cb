//! Properties every reachable state has, checked on a [`Snapshot`] so that they apply to
//! the kernel's state as well as to the model's.

use crate::{BootConfig, CapView, ObjRef, SlotId, Snapshot};
use bulkhead_sys::cap::{ObjectType, SLOT_BITS};
use std::collections::BTreeSet;

/// Runs every check below.
pub fn check_all(snap: &Snapshot, cfg: &BootConfig) -> Result<(), String> {
    forest(snap)?;
    rights_monotone(snap)?;
    derivation_shape(snap)?;
    slots_in_live_cnodes(snap, cfg)?;
    objects_aligned(snap)?;
    objects_disjoint(snap, cfg)
}

/// The derivation tree is a forest: every parent slot is non-empty and no cap is its own
/// ancestor.
pub fn forest(snap: &Snapshot) -> Result<(), String> {
    for (&id, view) in snap {
        let mut seen: BTreeSet<SlotId> = BTreeSet::new();
        seen.insert(id);
        let mut at = view.parent;
        while let Some(p) = at {
            let Some(pv) = snap.get(&p) else {
                return Err(format!("{id:?} has an ancestor {p:?} that is empty"));
            };
            if !seen.insert(p) {
                return Err(format!("cycle through {p:?} above {id:?}"));
            }
            at = pv.parent;
        }
    }
    Ok(())
}

/// No cap has a right its parent lacks (where both carry meaningful rights).
pub fn rights_monotone(snap: &Snapshot) -> Result<(), String> {
    for (id, view) in snap {
        if view.cap.rights() & !bulkhead_sys::cap::rights::ALL != 0 {
            return Err(format!("{id:?} has undefined rights bits"));
        }
        let Some(parent) = view.parent.and_then(|p| snap.get(&p)) else {
            continue;
        };
        if view.cap.has_rights()
            && parent.cap.has_rights()
            && view.cap.rights() & !parent.cap.rights() != 0
        {
            return Err(format!(
                "{id:?} ({:?}) has rights its parent ({:?}) lacks",
                view.cap, parent.cap
            ));
        }
    }
    Ok(())
}

/// A cap's parent is either a cap to the same object (it was copied or minted) or an
/// Untyped cap whose used part (below its watermark) holds the cap's object (it was
/// retyped from there, or from an Untyped inside that one).
pub fn derivation_shape(snap: &Snapshot) -> Result<(), String> {
    for (id, view) in snap {
        let Some(parent) = view.parent.and_then(|p| snap.get(&p)) else {
            continue;
        };
        let obj = view.cap.object();
        let ok = match parent.cap {
            _ if parent.cap.object() == obj => true,
            CapView::Untyped {
                base, watermark, ..
            } => {
                u128::from(base) <= u128::from(obj.addr)
                    && obj.end() <= u128::from(base) + u128::from(watermark)
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{id:?} ({:?}) cannot descend from {:?}",
                view.cap, parent.cap
            ));
        }
    }
    Ok(())
}

/// Every non-empty slot lies in a CNode that some cap (or the caller's root) names, within
/// its radix.
pub fn slots_in_live_cnodes(snap: &Snapshot, cfg: &BootConfig) -> Result<(), String> {
    let mut cnodes: BTreeSet<(u64, u32)> = BTreeSet::new();
    cnodes.insert((cfg.root_addr, cfg.root_radix));
    for view in snap.values() {
        if let CapView::CNode { addr, radix, .. } = view.cap {
            cnodes.insert((addr, radix));
        }
    }
    for &(cnode, index) in snap.keys() {
        let inside = cnodes
            .iter()
            .any(|&(addr, radix)| addr == cnode && index >> radix == 0);
        if !inside {
            return Err(format!("slot {:?} is in no live CNode", (cnode, index)));
        }
    }
    Ok(())
}

/// The live objects (those some cap names, and the root CNode).
pub fn live_objects(snap: &Snapshot, cfg: &BootConfig) -> BTreeSet<ObjRef> {
    let mut objs: BTreeSet<ObjRef> = snap.values().map(|v| v.cap.object()).collect();
    objs.insert(ObjRef {
        ty: ObjectType::CNode,
        addr: cfg.root_addr,
        size_bits: cfg.root_radix + SLOT_BITS,
    });
    objs
}

/// Every object a cap names is aligned to its size.
pub fn objects_aligned(snap: &Snapshot) -> Result<(), String> {
    for view in snap.values() {
        let obj = view.cap.object();
        if u128::from(obj.addr) % (1u128 << obj.size_bits) != 0 {
            return Err(format!("{obj:?} is not aligned to its size"));
        }
    }
    Ok(())
}

/// Live objects other than Untyped never share a byte; Untyped regions are nested or
/// apart; every other object is inside or outside each Untyped, never across its edge;
/// and every object but the root CNode lies inside one of the initial untypeds.
pub fn objects_disjoint(snap: &Snapshot, cfg: &BootConfig) -> Result<(), String> {
    let objs: Vec<ObjRef> = live_objects(snap, cfg).into_iter().collect();
    let root = ObjRef {
        ty: ObjectType::CNode,
        addr: cfg.root_addr,
        size_bits: cfg.root_radix + SLOT_BITS,
    };
    let initial: Vec<ObjRef> = cfg
        .untypeds
        .iter()
        .map(|&(base, size_bits, _)| ObjRef {
            ty: ObjectType::Untyped,
            addr: base,
            size_bits,
        })
        .collect();
    for (i, a) in objs.iter().enumerate() {
        if *a != root && !initial.iter().any(|u| u.contains(a)) {
            return Err(format!("{a:?} is outside every initial untyped"));
        }
        for b in &objs[i + 1..] {
            if !a.overlaps(b) {
                continue;
            }
            let holds = |outer: &ObjRef, inner: &ObjRef| {
                outer.ty == ObjectType::Untyped && outer.contains(inner)
            };
            if !holds(a, b) && !holds(b, a) {
                return Err(format!("{a:?} and {b:?} overlap"));
            }
        }
    }
    Ok(())
}
