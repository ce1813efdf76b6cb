//! The model's state: the object table, CNode slots, the derivation tree, and lookup.

use crate::cap::{Cap, IrqCap, Named};
use crate::vm::Vm;
use crate::{Addr, BootConfig, CapView, ObjRef, SlotId, SlotView, Snapshot};
use bulkhead_sys::cap::{
    ObjectType, MAX_CNODE_RADIX, MAX_GUARD_BITS, MAX_UNTYPED_BITS, MIN_UNTYPED_BITS, SLOT_BITS,
};
use bulkhead_sys::Error;
use std::collections::{BTreeMap, BTreeSet};

/// A non-empty slot: the cap, its parent in the derivation tree, and its derivation depth
/// (the number of its ancestors, kept up to date as ancestors are deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cte {
    pub(crate) cap: Cap,
    pub(crate) parent: Option<SlotId>,
    pub(crate) depth: u32,
}

/// What the model keeps for a live object. Only CNodes have state it cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Object {
    /// The non-empty slots by index (every index below `2^radix` absent here is empty).
    CNode { slots: BTreeMap<u64, Cte> },
    /// Any other object.
    Plain,
}

/// The whole capability state of one system: every live object and every cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub(crate) config: BootConfig,
    /// The caller's CSpace root: a cap to the root CNode held outside every slot.
    pub(crate) root: CapView,
    /// Every live object. An object is live while some cap names it (the root CNode, named
    /// by `root`, always is).
    pub(crate) objects: BTreeMap<ObjRef, Object>,
    /// Every non-empty slot in derivation order: the forest in pre-order, a new child
    /// right after its parent (so the newest child first), a moved cap in its old place,
    /// a deleted cap's descendants where they were. Revoke follows it.
    pub(crate) order: Vec<SlotId>,
    /// The state of stage-2 objects, VCPUs and interrupts that refers to objects
    /// (configurations, regions, mappings, bindings, claimed IRQs).
    pub(crate) vm: Vm,
}

impl Model {
    /// Root CNode exists; slot 1 holds a CNode cap to the root itself (radix, guard_bits from config, guard 0);
    /// slots 2.. hold the untyped caps (watermark 0). Initial caps have no parent. The caller's CSpace root
    /// (used to resolve every Addr) is a CNode cap equal to the one in slot 1 but held outside any slot.
    ///
    /// Panics if the configuration is impossible (radix or guard out of range, untypeds
    /// that do not fit in the root, overlap each other or the root, or are misaligned).
    pub fn boot(cfg: &BootConfig) -> Self {
        assert!(
            (1..=MAX_CNODE_RADIX).contains(&cfg.root_radix),
            "root radix out of range"
        );
        assert!(
            cfg.root_guard_bits <= MAX_GUARD_BITS && cfg.root_guard_bits + cfg.root_radix <= 64,
            "root guard out of range"
        );
        assert!(
            2 + cfg.untypeds.len() as u64 <= 1u64 << cfg.root_radix,
            "too many untypeds for the root CNode"
        );
        let root = CapView::CNode {
            addr: cfg.root_addr,
            radix: cfg.root_radix,
            guard_bits: cfg.root_guard_bits,
            guard: 0,
        };
        let mut slots = BTreeMap::new();
        slots.insert(
            1,
            Cte {
                cap: Cap::Mem(root),
                parent: None,
                depth: 0,
            },
        );
        let mut objects = BTreeMap::new();
        let mut placed = vec![root.object()];
        for (i, &(base, size_bits, device)) in cfg.untypeds.iter().enumerate() {
            assert!(
                (MIN_UNTYPED_BITS..=MAX_UNTYPED_BITS).contains(&size_bits),
                "untyped size out of range"
            );
            assert!(base % (1u64 << size_bits) == 0, "untyped misaligned");
            let cap = CapView::Untyped {
                base,
                size_bits,
                watermark: 0,
                device,
            };
            let obj = cap.object();
            assert!(
                placed.iter().all(|o| !o.overlaps(&obj)),
                "initial objects overlap"
            );
            placed.push(obj);
            objects.insert(obj, Object::Plain);
            slots.insert(
                2 + i as u64,
                Cte {
                    cap: Cap::Mem(cap),
                    parent: None,
                    depth: 0,
                },
            );
        }
        let order = slots.keys().map(|&i| (cfg.root_addr, i)).collect();
        objects.insert(root.object(), Object::CNode { slots });
        Model {
            config: cfg.clone(),
            root,
            objects,
            order,
            vm: Vm::default(),
        }
    }

    /// Like [`Model::boot`], and the IRQControl cap in root slot `slot` (parentless, after
    /// the Untyped caps in derivation order), as the kernel gives the first boot task one
    /// (there in the slot after its Untyped caps).
    ///
    /// Panics if `slot` is outside the root CNode or holds one of the initial caps.
    pub fn boot_with_irq_control(cfg: &BootConfig, slot: u64) -> Self {
        let mut m = Self::boot(cfg);
        assert!(
            slot >> cfg.root_radix == 0,
            "IRQ control slot outside the root"
        );
        let id = (cfg.root_addr, slot);
        assert!(m.slot(id).is_none(), "IRQ control slot already used");
        m.put(
            id,
            Cte {
                cap: Cap::IrqControl,
                parent: None,
                depth: 0,
            },
        );
        m.order.push(id);
        m
    }

    /// The configuration this model was booted with.
    pub fn config(&self) -> &BootConfig {
        &self.config
    }

    /// The caller's CSpace root cap (held outside every slot).
    pub fn root_cap(&self) -> CapView {
        self.root
    }

    /// All slots of all CNodes that exist holding a cap to a memory object, with their
    /// parents. IRQ caps are left out (see [`Model::irq_caps`]); they never have a memory
    /// cap as a parent or child, so the snapshot is a forest on its own.
    pub fn snapshot(&self) -> Snapshot {
        self.all_slots()
            .filter_map(|(id, cte)| {
                Some((
                    id,
                    SlotView {
                        cap: cte.cap.view()?,
                        parent: cte.parent,
                    },
                ))
            })
            .collect()
    }

    /// Every slot holding an IRQ cap, with the cap and its parent.
    pub fn irq_caps(&self) -> std::collections::BTreeMap<SlotId, (IrqCap, Option<SlotId>)> {
        self.all_slots()
            .filter_map(|(id, cte)| Some((id, (cte.cap.irq()?, cte.parent))))
            .collect()
    }

    /// The state of stage-2 objects, VCPUs and interrupts.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Every live object.
    pub fn objects(&self) -> BTreeSet<ObjRef> {
        self.objects.keys().copied().collect()
    }

    /// Every non-empty slot in derivation order (the tree in pre-order, the newest child of
    /// a cap first), as the design page's "list in derivation order".
    pub fn derivation_order(&self) -> &[SlotId] {
        &self.order
    }

    /// The derivation depth of the cap in `slot` (its number of ancestors), if any.
    pub fn depth(&self, slot: SlotId) -> Option<u32> {
        self.slot(slot).map(|c| c.depth)
    }

    /// Resolves `addr` from the caller's root, as the doc's "Addressing" says: the slot it
    /// names (which may be empty), `RangeError` for a depth outside 1 ..= 64, and
    /// `FailedLookup` for a guard mismatch, too few bits left, or a non-CNode on the way.
    pub fn resolve(&self, addr: Addr) -> Result<SlotId, Error> {
        if !(1..=64).contains(&addr.depth) {
            return Err(Error::RangeError);
        }
        let mut node = Cap::Mem(self.root);
        let mut n = addr.depth;
        loop {
            let Cap::Mem(CapView::CNode {
                addr: cnode,
                radix,
                guard_bits,
                guard,
            }) = node
            else {
                return Err(Error::FailedLookup);
            };
            let level = guard_bits + radix;
            if level > n {
                return Err(Error::FailedLookup);
            }
            if bits(addr.index, n - guard_bits, guard_bits) != guard {
                return Err(Error::FailedLookup);
            }
            let index = bits(addr.index, n - level, radix);
            n -= level;
            if n == 0 {
                return Ok((cnode, index));
            }
            node = match self.slot((cnode, index)) {
                Some(cte) => cte.cap,
                None => return Err(Error::FailedLookup),
            };
        }
    }

    /// The slots of the live CNode at `addr`.
    pub(crate) fn cnode_slots(&self, addr: u64) -> Option<&BTreeMap<u64, Cte>> {
        self.objects
            .range(cnode_range(addr))
            .find_map(|(_, o)| match o {
                Object::CNode { slots } => Some(slots),
                Object::Plain => None,
            })
    }

    fn cnode_slots_mut(&mut self, addr: u64) -> Option<&mut BTreeMap<u64, Cte>> {
        self.objects
            .range_mut(cnode_range(addr))
            .find_map(|(_, o)| match o {
                Object::CNode { slots } => Some(slots),
                Object::Plain => None,
            })
    }

    /// The cap in a slot; `None` if the slot is empty or its CNode does not exist.
    pub(crate) fn slot(&self, id: SlotId) -> Option<&Cte> {
        self.cnode_slots(id.0).and_then(|s| s.get(&id.1))
    }

    pub(crate) fn slot_mut(&mut self, id: SlotId) -> Option<&mut Cte> {
        self.cnode_slots_mut(id.0).and_then(|s| s.get_mut(&id.1))
    }

    /// Fills an empty slot with a new child of the cap in `parent`, its newest.
    pub(crate) fn put_child(&mut self, id: SlotId, cap: Cap, parent: SlotId) {
        let depth = self.slot(parent).expect("the parent is non-empty").depth + 1;
        self.put(
            id,
            Cte {
                cap,
                parent: Some(parent),
                depth,
            },
        );
        let at = self.position(parent);
        self.order.insert(at + 1, id);
    }

    /// Where a non-empty slot is in the derivation order.
    pub(crate) fn position(&self, id: SlotId) -> usize {
        self.order
            .iter()
            .rposition(|&s| s == id)
            .expect("model bug: a non-empty slot missing from the derivation order")
    }

    /// Fills an empty slot of a live CNode (the caller keeps the derivation order).
    pub(crate) fn put(&mut self, id: SlotId, cte: Cte) {
        let slots = self
            .cnode_slots_mut(id.0)
            .expect("model bug: filling a slot of a CNode that does not exist");
        let old = slots.insert(id.1, cte);
        assert!(old.is_none(), "model bug: filling a non-empty slot");
    }

    /// Empties a slot, returning what it held.
    pub(crate) fn take(&mut self, id: SlotId) -> Option<Cte> {
        self.cnode_slots_mut(id.0).and_then(|s| s.remove(&id.1))
    }

    /// Every non-empty slot of every live CNode.
    pub(crate) fn all_slots(&self) -> impl Iterator<Item = (SlotId, &Cte)> {
        self.objects.iter().flat_map(|(obj, o)| {
            let slots = match o {
                Object::CNode { slots } => Some(slots),
                Object::Plain => None,
            };
            slots
                .into_iter()
                .flatten()
                .map(move |(&i, cte)| ((obj.addr, i), cte))
        })
    }

    /// True if the cap in `id` has a child.
    pub(crate) fn has_children(&self, id: SlotId) -> bool {
        self.all_slots().any(|(_, c)| c.parent == Some(id))
    }

    /// True if the cap in `a` is a (strict) ancestor of the cap in `d`.
    pub(crate) fn is_ancestor(&self, a: SlotId, d: SlotId) -> bool {
        let mut at = self.slot(d).and_then(|c| c.parent);
        while let Some(p) = at {
            if p == a {
                return true;
            }
            at = self.slot(p).and_then(|c| c.parent);
        }
        false
    }

    /// Every slot whose cap descends from the cap in `id`, in slot order.
    pub fn descendants(&self, id: SlotId) -> Vec<SlotId> {
        let mut children: BTreeMap<SlotId, Vec<SlotId>> = BTreeMap::new();
        for (s, c) in self.all_slots() {
            if let Some(p) = c.parent {
                children.entry(p).or_default().push(s);
            }
        }
        let mut found: BTreeSet<SlotId> = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(at) = todo.pop() {
            for &c in children.get(&at).into_iter().flatten() {
                if found.insert(c) {
                    todo.push(c);
                }
            }
        }
        found.remove(&id);
        found.into_iter().collect()
    }

    /// True if some cap (in any slot of any live CNode, or the caller's root cap) names `obj`.
    fn is_named(&self, obj: Named) -> bool {
        Named::Mem(self.root.object()) == obj || self.all_slots().any(|(_, c)| c.cap.named() == obj)
    }

    /// Deletes the cap in `id` (which must be non-empty): its children become children of
    /// its parent and, if it was the last cap to its object, the object is destroyed.
    pub(crate) fn delete_cap(&mut self, id: SlotId) {
        for d in self.descendants(id) {
            let cte = self.slot_mut(d).expect("descendants are non-empty");
            cte.depth -= 1;
        }
        let gone = self.take(id).expect("model bug: deleting an empty slot");
        let at = self.position(id);
        self.order.remove(at);
        let children: Vec<SlotId> = self
            .all_slots()
            .filter(|(_, c)| c.parent == Some(id))
            .map(|(s, _)| s)
            .collect();
        for c in children {
            self.slot_mut(c).expect("children are non-empty").parent = gone.parent;
        }
        let named = gone.cap.named();
        if !self.is_named(named) {
            match named {
                Named::Mem(obj) => self.destroy(obj),
                Named::IrqHandler(irq) => self.release_irq(irq),
                Named::IrqControl => {}
            }
        }
    }

    /// Destroys an object no cap names any more. A CNode first has every cap it holds
    /// deleted (in slot order, each by the same rule); every other object first loses
    /// whatever refers to it (`Model::object_destroyed`: mappings, regions, bindings,
    /// configurations). The memory is not given back here: the Untyped it came from
    /// reclaims it at its next Retype once it has no children.
    fn destroy(&mut self, obj: ObjRef) {
        self.object_destroyed(obj);
        if obj.ty == ObjectType::CNode {
            loop {
                let first = match self.objects.get(&obj) {
                    Some(Object::CNode { slots }) => slots.keys().next().copied(),
                    _ => None,
                };
                match first {
                    Some(i) => self.delete_cap((obj.addr, i)),
                    None => break,
                }
            }
        }
        self.objects.remove(&obj);
    }

    /// Checks the model's own bookkeeping: every parent exists and the tree has no cycle,
    /// each cached depth is the number of ancestors, every cap sits in a CNode within its
    /// radix, and the object table holds exactly the objects some cap names.
    pub fn check_consistency(&self) -> Result<(), String> {
        let caps = self.all_slots().count() as u64;
        let mut named: BTreeSet<ObjRef> = BTreeSet::new();
        named.insert(self.root.object());
        let mut handlers: BTreeSet<u32> = BTreeSet::new();
        for (id, cte) in self.all_slots() {
            match cte.cap.named() {
                Named::Mem(obj) => {
                    named.insert(obj);
                }
                Named::IrqHandler(irq) => {
                    handlers.insert(irq);
                }
                Named::IrqControl => {}
            }
            if let Some(p) = cte.parent.and_then(|p| self.slot(p)) {
                if p.cap.view().is_some() != cte.cap.view().is_some() {
                    return Err(format!("{id:?} and its parent: one an IRQ cap, one not"));
                }
            }
            let mut depth = 0u64;
            let mut at = cte.parent;
            while let Some(p) = at {
                depth += 1;
                if p == id || depth > caps {
                    return Err(format!("cycle in the derivation tree at {id:?}"));
                }
                match self.slot(p) {
                    Some(pc) => at = pc.parent,
                    None => return Err(format!("{id:?} has parent {p:?}, which is empty")),
                }
            }
            if depth != u64::from(cte.depth) {
                return Err(format!(
                    "{id:?} caches depth {}, has {depth} ancestors",
                    cte.depth
                ));
            }
        }
        for (obj, o) in &self.objects {
            if let Object::CNode { slots } = o {
                let radix = obj.size_bits - SLOT_BITS;
                if let Some(&i) = slots.keys().next_back() {
                    if i >> radix != 0 {
                        return Err(format!("slot {i} outside CNode {obj:?}"));
                    }
                }
            }
        }
        self.check_order()?;
        let live: BTreeSet<ObjRef> = self.objects.keys().copied().collect();
        if live != named {
            return Err(format!(
                "object table {live:?} differs from named objects {named:?}"
            ));
        }
        let claimed: BTreeSet<u32> = self.vm.irqs.keys().copied().collect();
        if claimed != handlers {
            return Err(format!(
                "claimed IRQs {claimed:?} differ from those IRQHandler caps name {handlers:?}"
            ));
        }
        Ok(())
    }
}

impl Model {
    /// The derivation order holds every non-empty slot once and is a pre-order of the
    /// tree: each cap comes after its parent, inside the parent's run.
    fn check_order(&self) -> Result<(), String> {
        let listed: BTreeSet<SlotId> = self.order.iter().copied().collect();
        let filled: BTreeSet<SlotId> = self.all_slots().map(|(id, _)| id).collect();
        if listed.len() != self.order.len() || listed != filled {
            return Err(format!(
                "derivation order {:?} does not list the non-empty slots {filled:?}",
                self.order
            ));
        }
        // The path from a root of the forest to the previous entry.
        let mut path: Vec<SlotId> = Vec::new();
        for &id in &self.order {
            let parent = self.slot(id).expect("listed slots are non-empty").parent;
            match parent {
                None => path.clear(),
                Some(p) => {
                    while path.last().is_some_and(|&top| top != p) {
                        path.pop();
                    }
                    if path.is_empty() {
                        return Err(format!("{id:?} is not in the run of its parent {p:?}"));
                    }
                }
            }
            path.push(id);
        }
        Ok(())
    }
}

/// `width` bits of `x` starting at bit `lo` (0 if `width` is 0).
fn bits(x: u64, lo: u32, width: u32) -> u64 {
    if width == 0 {
        return 0;
    }
    let shifted = x >> lo; // lo < 64 since lo + width <= 64 and width > 0
    if width >= 64 {
        shifted
    } else {
        shifted & ((1u64 << width) - 1)
    }
}

/// All possible table keys of a CNode at `addr`.
fn cnode_range(addr: u64) -> std::ops::RangeInclusive<ObjRef> {
    let key = |size_bits| ObjRef {
        ty: ObjectType::CNode,
        addr,
        size_bits,
    };
    key(0)..=key(u32::MAX)
}
