//! The operations, each with its checks in the documented order. Every check comes before
//! the first change, so an operation that fails leaves the state exactly as it was.

use crate::cap::Cap;
use crate::model::{Cte, Model, Object};
use crate::{Addr, CapView, Op, SlotId, MAX_DERIVATION_DEPTH};
use bulkhead_sys::cap::{rights, ObjectType, MAX_BADGE, MAX_RETYPE_COUNT};
use bulkhead_sys::Error;
use std::collections::BTreeMap;

impl Model {
    /// Applies one operation; on error the state is unchanged (but for the tables a
    /// FrameMap links before it fails, see [`Op::FrameMap`]).
    pub fn apply(&mut self, op: &Op) -> Result<(), Error> {
        self.invoke(op).map(|_| ())
    }

    /// Applies one operation and returns what the kernel returns besides the error code
    /// (in `x1`, `x2`), where the model knows it: the leaves VSpaceUnmapRange removed,
    /// PoolInfo's free and total tables. `None` for the operations that return nothing,
    /// and for register reads (the model keeps no register values).
    pub fn invoke(&mut self, op: &Op) -> Result<Option<[u64; 2]>, Error> {
        match *op {
            Op::Copy { .. }
            | Op::Mint { .. }
            | Op::Move { .. }
            | Op::Mutate { .. }
            | Op::Delete { .. }
            | Op::Revoke { .. }
            | Op::Grant { .. }
            | Op::Retype { .. } => self.cap_op(op).map(|()| None),
            _ => self.invoke_object(op),
        }
    }

    /// The CNode and Untyped operations and Grant.
    fn cap_op(&mut self, op: &Op) -> Result<(), Error> {
        match *op {
            Op::Copy { dest, src, rights } => self.derive(dest, src, rights, 0),
            Op::Mint {
                dest,
                src,
                rights,
                badge,
            } => self.derive(dest, src, rights, badge),
            Op::Move { dest, src } => self.move_cap(dest, src, None),
            Op::Mutate { dest, src, badge } => self.move_cap(dest, src, Some(badge)),
            Op::Delete { slot } => self.delete(slot),
            Op::Revoke { slot } => self.revoke(slot),
            Op::Grant { dest, src } => self.grant(dest, src),
            Op::Retype {
                untyped,
                ty,
                size_bits,
                dest,
                offset,
                count,
            } => self.retype(untyped, ty, size_bits, dest, offset, count),
            _ => unreachable!("not a capability operation: {op:?}"),
        }
    }

    /// Resolves `dest`, which must be empty, then `src`, which must not be.
    fn dest_and_src(&self, dest: Addr, src: Addr) -> Result<(SlotId, SlotId, Cte), Error> {
        let d = self.resolve(dest)?;
        if self.slot(d).is_some() {
            return Err(Error::DeleteFirst);
        }
        let s = self.resolve(src)?;
        let cte = self.slot(s).ok_or(Error::FailedLookup)?.clone();
        Ok((d, s, cte))
    }

    /// The badge checks of Mint (any type) and Mutate (Endpoint and Notification caps): a
    /// non-zero badge on an already badged cap is `IllegalOperation`, then a badge above
    /// `MAX_BADGE` is `InvalidArgument`. Returns the cap with the badge applied (kept if 0;
    /// dropped for types without badges).
    fn badged(cap: Cap, badge: u64) -> Result<Cap, Error> {
        if badge != 0 && cap.badge() != 0 {
            return Err(Error::IllegalOperation);
        }
        if badge > MAX_BADGE {
            return Err(Error::InvalidArgument);
        }
        Ok(if badge != 0 {
            cap.with_badge(badge)
        } else {
            cap
        })
    }

    /// Copy (badge 0) and Mint.
    fn derive(&mut self, dest: Addr, src: Addr, mask: u8, badge: u64) -> Result<(), Error> {
        let (d, s, src_cte) = self.dest_and_src(dest, src)?;
        if mask & !rights::ALL != 0 {
            return Err(Error::InvalidArgument);
        }
        if src_cte.cap.is_untyped() {
            return Err(Error::IllegalOperation);
        }
        let cap = Self::badged(src_cte.cap, badge)?;
        if src_cte.depth >= MAX_DERIVATION_DEPTH {
            return Err(Error::RangeError);
        }
        let cap = cap.with_rights(src_cte.cap.rights() & mask);
        self.put_child(d, cap, s);
        Ok(())
    }

    /// Move (`badge` None) and Mutate: the cap keeps its parent and its children.
    fn move_cap(&mut self, dest: Addr, src: Addr, badge: Option<u64>) -> Result<(), Error> {
        let (d, s, src_cte) = self.dest_and_src(dest, src)?;
        // Mutate ignores the badge of types without badges altogether.
        let cap = match badge {
            Some(b) if src_cte.cap.badged_type() => Self::badged(src_cte.cap, b)?,
            _ => src_cte.cap,
        };
        let mut cte = self.take(s).expect("checked non-empty");
        cte.cap = cap;
        self.put(d, cte);
        let at = self.position(s);
        self.order[at] = d;
        let children: Vec<SlotId> = self
            .all_slots()
            .filter(|(_, c)| c.parent == Some(s))
            .map(|(id, _)| id)
            .collect();
        for c in children {
            self.slot_mut(c).expect("children are non-empty").parent = Some(d);
        }
        Ok(())
    }

    fn delete(&mut self, slot: Addr) -> Result<(), Error> {
        let s = self.resolve(slot)?;
        if self.slot(s).is_some() {
            self.delete_cap(s);
        }
        Ok(())
    }

    /// IPC transfer: resolve the sender's slot, then the receive slot (`FailedLookup`);
    /// the sender's slot must hold a cap (`FailedLookup`), the receive slot must be empty
    /// (`DeleteFirst`); Untyped caps do not travel (`IllegalOperation`); the depth limit as
    /// for Copy. The kernel drops the cap on any of these and tells the receiver none
    /// arrived.
    fn grant(&mut self, dest: Addr, src: Addr) -> Result<(), Error> {
        let s = self.resolve(src)?;
        let d = self.resolve(dest)?;
        let src_cte = self.slot(s).ok_or(Error::FailedLookup)?.clone();
        if self.slot(d).is_some() {
            return Err(Error::DeleteFirst);
        }
        if src_cte.cap.is_untyped() {
            return Err(Error::IllegalOperation);
        }
        if src_cte.depth >= MAX_DERIVATION_DEPTH {
            return Err(Error::RangeError);
        }
        self.put_child(d, src_cte.cap, s);
        Ok(())
    }

    /// Deletes the cap right after the revoked one in derivation order (its newest
    /// remaining child, or that child's children once it is gone) while that is a
    /// descendant; stops early if the revoked cap itself is deleted on the way.
    fn revoke(&mut self, slot: Addr) -> Result<(), Error> {
        let s = self.resolve(slot)?;
        while self.slot(s).is_some() {
            let next = self.order.get(self.position(s) + 1).copied();
            match next {
                Some(n) if self.is_ancestor(s, n) => self.delete_cap(n),
                _ => break,
            }
        }
        Ok(())
    }

    fn retype(
        &mut self,
        untyped: Addr,
        ty: u64,
        size_bits: u32,
        dest: Addr,
        offset: u64,
        count: u64,
    ) -> Result<(), Error> {
        // 1. the invoked cap
        let u = self.resolve(untyped)?;
        let ucte = self.slot(u).ok_or(Error::InvalidCapability)?.clone();
        let Cap::Mem(CapView::Untyped {
            base,
            size_bits: ubits,
            watermark,
            device,
        }) = ucte.cap
        else {
            return Err(Error::IllegalOperation);
        };
        // 2. the arguments
        let ty = ObjectType::from_raw(ty).ok_or(Error::InvalidArgument)?;
        let obits = ty.object_bits(size_bits).ok_or(Error::RangeError)?;
        if !(1..=MAX_RETYPE_COUNT).contains(&count) {
            return Err(Error::RangeError);
        }
        // 3. the destination CNode
        let d = self.resolve(dest)?;
        let Some(Cte {
            cap: Cap::Mem(CapView::CNode {
                addr: cnode, radix, ..
            }),
            ..
        }) = self.slot(d)
        else {
            return Err(Error::FailedLookup);
        };
        let (cnode, radix) = (*cnode, *radix);
        // 4. the destination range
        if u128::from(offset) + u128::from(count) > 1u128 << radix {
            return Err(Error::RangeError);
        }
        // 5. every destination slot empty
        if (offset..offset + count).any(|i| self.slot((cnode, i)).is_some()) {
            return Err(Error::DeleteFirst);
        }
        // 6. device memory
        if device && !ty.device_ok() {
            return Err(Error::InvalidArgument);
        }
        // 7. placement (the reset of the watermark is kept only if the Retype succeeds)
        let watermark = if self.has_children(u) { watermark } else { 0 };
        let size = 1u128 << obits;
        let free = u128::from(base) + u128::from(watermark);
        let start = free.div_ceil(size) * size;
        let end = start + size * u128::from(count);
        if end > u128::from(base) + (1u128 << ubits) {
            return Err(Error::NotEnoughMemory);
        }
        // 8. the objects and their caps
        for k in 0..count {
            let addr = u64::try_from(start + size * u128::from(k)).expect("inside the untyped");
            let cap = CapView::fresh(ty, addr, size_bits, device);
            let obj = cap.object();
            if ty == ObjectType::CNode {
                let old = self.objects.insert(
                    obj,
                    Object::CNode {
                        slots: BTreeMap::new(),
                    },
                );
                assert!(old.is_none(), "model bug: a new CNode over a live one");
            } else {
                let old = self.objects.insert(obj, Object::Plain);
                assert!(
                    old.is_none() || ty == ObjectType::Untyped,
                    "model bug: a new object over a live one"
                );
            }
            self.put_child((cnode, offset + k), Cap::Mem(cap), u);
        }
        let used = u64::try_from(end - u128::from(base)).expect("inside the untyped");
        let ucap = &mut self.slot_mut(u).expect("the untyped is still there").cap;
        if let Cap::Mem(CapView::Untyped { watermark, .. }) = ucap {
            *watermark = used;
        }
        Ok(())
    }
}
