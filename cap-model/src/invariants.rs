//! Properties every reachable state has. Those on capabilities are checked on a
//! [`Snapshot`] so that they apply to the kernel's state as well as to the model's; those
//! on the state beside the caps (stage-2 objects, VCPUs, interrupts: [`check_vm`]) on the
//! model, the only place the host has that state.

use crate::vm::{self, Space, Table};
use crate::{BootConfig, CapView, IrqCap, Model, ObjRef, SlotId, Snapshot};
use bulkhead_sys::cap::{ObjectType, SLOT_BITS};
use bulkhead_sys::map_rights;
use std::collections::{BTreeMap, BTreeSet};

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

/// Runs every check on the model's state beside the caps below.
pub fn check_vm(m: &Model) -> Result<(), String> {
    mappings_sound(m)?;
    leaves_backed(m)?;
    spaces_sound(m)?;
    threads_sound(m)?;
    vcpus_sound(m)?;
    irqs_sound(m)
}

/// The object a cap of this shape names (the canonical key of a fixed-size object).
fn obj(cap: CapView) -> ObjRef {
    cap.object()
}

/// Every mapping and region names a live frame and a configured address space (a live
/// VSpace, or the caller's own); its rights were allowed by the rights of the frame cap it
/// was made through (Read always, Write only with Write, nothing beyond RWX); it is
/// aligned to the frame's size and inside the IPA space; a frame is in each address space
/// at most once; the regions of a VSpace are disjoint and at most 16; regions are never
/// device memory; the registry holds at most 128 entries.
pub fn mappings_sound(m: &Model) -> Result<(), String> {
    let live = m.objects();
    let v = m.vm();
    if v.mappings.len() > vm::MAX_MAPPINGS {
        return Err(format!("{} mappings", v.mappings.len()));
    }
    let mut regions: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, mp) in v.mappings.iter().enumerate() {
        if !matches!(
            mp.frame.ty,
            ObjectType::Frame4K | ObjectType::Frame2M | ObjectType::Frame1G | ObjectType::Frame
        ) || !live.contains(&mp.frame)
        {
            return Err(format!("{mp:?} names a frame that does not exist"));
        }
        if !v.spaces.contains_key(&mp.space) {
            return Err(format!("{mp:?} is in an address space not configured"));
        }
        if let Space::VSpace(a) = mp.space {
            if !live.contains(&obj(CapView::VSpace { addr: a })) {
                return Err(format!("{mp:?} is in a VSpace that does not exist"));
            }
        }
        let needed = cap_rights_needed(mp.rights);
        if mp.rights & !map_rights::RWX != 0
            || mp.rights & map_rights::READ == 0
            || mp.cap_rights & needed != needed
        {
            return Err(format!(
                "{mp:?}: its rights are not allowed by the cap it was made through"
            ));
        }
        let size = 1u128 << mp.frame.size_bits;
        if u128::from(mp.ipa) % size != 0 || u128::from(mp.ipa) + size > 1 << vm::IPA_BITS {
            return Err(format!("{mp:?} is misaligned or beyond the IPA space"));
        }
        if mp.region {
            if mp.device || !matches!(mp.space, Space::VSpace(_)) {
                return Err(format!("{mp:?}: a region of device memory or of no VSpace"));
            }
            if let Space::VSpace(a) = mp.space {
                *regions.entry(a).or_default() += 1;
            }
        }
        for other in &v.mappings[i + 1..] {
            if other.frame == mp.frame && other.space == mp.space {
                return Err(format!("{mp:?} and {other:?}: a frame twice in one space"));
            }
            let overlap = mp.ipa < other.end() && other.ipa < mp.end();
            if mp.region && other.region && other.space == mp.space && overlap {
                return Err(format!("regions {mp:?} and {other:?} overlap"));
            }
        }
    }
    if let Some((vs, n)) = regions.iter().find(|(_, &n)| n > vm::MAX_REGIONS) {
        return Err(format!("VSpace {vs:#x} has {n} regions"));
    }
    Ok(())
}

/// Every installed leaf lies inside a FrameMap mapping of its own frame in the same
/// address space (so a page is mapped only while its frame exists, and only with rights
/// a cap allowed); leaves are page aligned, disjoint and inside the IPA space.
pub fn leaves_backed(m: &Model) -> Result<(), String> {
    let v = m.vm();
    for (space, state) in &v.spaces {
        let mut last_end = 0;
        for (s, e, f) in state.leaves.runs() {
            if s >= e || s % vm::PAGE != 0 || e % vm::PAGE != 0 || e > 1 << vm::IPA_BITS {
                return Err(format!("{space:?}: bad leaf run {s:#x}..{e:#x}"));
            }
            if s < last_end {
                return Err(format!("{space:?}: leaf runs overlap at {s:#x}"));
            }
            last_end = e;
            let backed = v.mappings.iter().any(|mp| {
                !mp.region && mp.frame == f && mp.space == *space && mp.ipa <= s && e <= mp.end()
            });
            if !backed {
                return Err(format!(
                    "{space:?}: leaves {s:#x}..{e:#x} of {f:?} outside every mapping of it"
                ));
            }
        }
    }
    Ok(())
}

/// The caller's own space is always there, without pool or tables; every configured
/// VSpace is a live VSpace drawing from a live TablePool, at most 64 of them; a level-3
/// table hangs below a level-2 table; no pool lends more tables than it has.
pub fn spaces_sound(m: &Model) -> Result<(), String> {
    let live = m.objects();
    let v = m.vm();
    match v.spaces.get(&Space::Own) {
        Some(own) if own.pool.is_none() && own.tables.is_empty() => {}
        other => return Err(format!("the caller's own space is {other:?}")),
    }
    if v.spaces.len() - 1 > vm::MAX_SPACES {
        return Err(format!("{} VSpaces configured", v.spaces.len() - 1));
    }
    let mut used: BTreeMap<ObjRef, u64> = BTreeMap::new();
    for (space, state) in &v.spaces {
        let Space::VSpace(a) = *space else { continue };
        if !live.contains(&obj(CapView::VSpace { addr: a })) {
            return Err(format!("configured VSpace {a:#x} does not exist"));
        }
        let Some(pool) = state.pool.filter(|p| p.ty == ObjectType::TablePool) else {
            return Err(format!("VSpace {a:#x} has no table pool"));
        };
        if !live.contains(&pool) {
            return Err(format!(
                "VSpace {a:#x} draws from {pool:?}, which does not exist"
            ));
        }
        for t in &state.tables {
            if let Table::L3(i) = *t {
                if !state.tables.contains(&Table::L2(i >> 9)) {
                    return Err(format!("VSpace {a:#x}: {t:?} below no level-2 table"));
                }
            }
        }
        *used.entry(pool).or_default() += state.tables.len() as u64;
    }
    for (pool, n) in used {
        let (_, total) = v.pool_counts(pool);
        if n > total {
            return Err(format!("{pool:?} lends {n} of {total} tables"));
        }
    }
    Ok(())
}

/// Every thread in a VSpace is a live TCB in a configured VSpace; at most 64 threads in
/// one VSpace.
pub fn threads_sound(m: &Model) -> Result<(), String> {
    let live = m.objects();
    let v = m.vm();
    for (&t, &vs) in &v.threads {
        if !live.contains(&obj(CapView::Tcb { addr: t })) {
            return Err(format!("thread {t:#x} in VSpace {vs:#x} does not exist"));
        }
        if !v.configured(vs) {
            return Err(format!(
                "thread {t:#x} is in VSpace {vs:#x}, not configured"
            ));
        }
    }
    let mut per: BTreeMap<u64, usize> = BTreeMap::new();
    for &vs in v.threads.values() {
        *per.entry(vs).or_default() += 1;
    }
    match per.iter().find(|(_, &n)| n > vm::MAX_THREADS) {
        Some((vs, n)) => Err(format!("{n} threads in VSpace {vs:#x}")),
        None => Ok(()),
    }
}

/// Every VCPU binding joins a live VCPU and a live TCB, and no TCB is bound to two VCPUs
/// (nor a VCPU to two TCBs: the bindings are a map from VCPUs).
pub fn vcpus_sound(m: &Model) -> Result<(), String> {
    let live = m.objects();
    let mut tcbs: BTreeSet<u64> = BTreeSet::new();
    for (&vc, &t) in &m.vm().vcpus {
        if !live.contains(&obj(CapView::Vcpu { addr: vc })) {
            return Err(format!("bound VCPU {vc:#x} does not exist"));
        }
        if !live.contains(&obj(CapView::Tcb { addr: t })) {
            return Err(format!(
                "VCPU {vc:#x} is bound to {t:#x}, which does not exist"
            ));
        }
        if !tcbs.insert(t) {
            return Err(format!("thread {t:#x} is bound to two VCPUs"));
        }
    }
    Ok(())
}

/// The claimed interrupts are exactly those some IRQHandler cap names (one handler
/// object per IRQ, released with its last cap), each one the kernel may hand out; a bound
/// notification exists.
pub fn irqs_sound(m: &Model) -> Result<(), String> {
    let live = m.objects();
    let claimed: BTreeSet<u32> = m.vm().irqs.keys().copied().collect();
    let named: BTreeSet<u32> = m
        .irq_caps()
        .values()
        .filter_map(|(c, _)| match c {
            IrqCap::Handler(i) => Some(*i),
            IrqCap::Control => None,
        })
        .collect();
    if claimed != named {
        return Err(format!(
            "claimed IRQs {claimed:?}, IRQHandler caps for {named:?}"
        ));
    }
    for (&irq, b) in &m.vm().irqs {
        if !vm::grantable(irq) {
            return Err(format!("IRQ {irq} is claimed but may not be handed out"));
        }
        if let Some(b) = b {
            if b.notification.ty != ObjectType::Notification || !live.contains(&b.notification) {
                return Err(format!("IRQ {irq} signals {b:?}, which does not exist"));
            }
        }
    }
    Ok(())
}

/// The map rights a mapping needs of the frame cap it is made through
/// (`bulkhead_sys::cap::rights`): Read always, Write for a writable mapping.
pub fn cap_rights_needed(map: u64) -> u8 {
    use bulkhead_sys::cap::rights;
    rights::READ
        | if map & map_rights::WRITE != 0 {
            rights::WRITE
        } else {
            0
        }
}
