//! Isolation analysis: can authority leave the partition that owns it?
//!
//! The input ([`Spec`]) is a static picture of a system: named partitions, the objects each
//! one owns, which partition initially holds a capability to which object with which
//! rights, and the declared channels (objects two named partitions may share, with the
//! rights each side may hold). [`Spec::analyse`] closes the capability distribution under
//! every transfer that could ever happen and reports each [`Violation`].
//!
//! # The closure rule
//!
//! Rights are `bulkhead_sys::cap::rights` bits. The closure repeats, until nothing changes,
//! "if there is a *transfer edge* `S → R`, then for every object `o`, `R` may come to hold
//! any right on `o` that `S` holds". The edges, recomputed from the current (growing)
//! distribution each round, are, for distinct partitions `S` and `R`:
//!
//! 1. **Grant over an endpoint**: `S` holds `GRANT` on an endpoint `E` and `R` holds `READ`
//!    on `E` (`S` sends caps, `R` receives them). `WRITE` is not required of `S`.
//! 2. **Grant over a reply**: `S` holds `READ` on an endpoint `E` and `R` holds `GRANT` or
//!    `GRANT_REPLY` on `E` (`R` calls, `S` answers through the reply cap, which may carry
//!    caps). `WRITE` is not required of `R`.
//! 3. **Access to another's CSpace or thread**: `S` holds any cap to a CNode or TCB owned by
//!    `R`, or `R` holds one to a CNode or TCB owned by `S` (either can then move caps
//!    between the two CSpaces in both directions; the CNode or TCB need not be `R`'s own
//!    CSpace or thread, which over-approximates).
//!
//! Every rule over-approximates: a right that can flow is assumed to flow, to every
//! partition at the end of an edge, and caps can be passed on any number of times. A
//! sender may pass any subset of its rights, so the receiver's rights are bounded by the
//! sender's, never by the edge. Notifications and memory regions carry no caps and create
//! no edges. The closure runs in rounds (each round applies every edge of the previous
//! round's distribution once), and each right's recorded path is one that delivers it in
//! the fewest rounds; among those, the one with the most hops, as a path with fewer hops
//! than rounds leaves out transfers that enabled it; then one over the edges that existed
//! earliest, endpoints before CNodes and TCBs.
//!
//! # Violations
//!
//! A channel *covers* partition `p`'s cap to object `o` when `o` is one of its objects and
//! both `p` and `o`'s owner are among the two partitions it is declared between. After the
//! closure, partition `p` holding rights `r` on object `o` is a violation when
//!
//! - some channel covers it and `r` exceeds the union of the rights those channels declare
//!   for `p`'s side (this applies to the channel object's owner too), or
//! - no channel covers it and `o` is owned by another partition (any right is too much).
//!
//! Each violation names the excess rights and the chain of transfers that delivered them.

use std::collections::BTreeMap;
use std::fmt;

use bulkhead_sys::cap::rights::{GRANT, GRANT_REPLY, READ, WRITE};

/// Rights bits (`bulkhead_sys::cap::rights`).
pub type Rights = u8;

/// Index of a partition in its [`Spec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(usize);

/// Index of an object in its [`Spec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(usize);

/// What an object is (only the distinctions the analysis needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// IPC endpoint: caps travel over it.
    Endpoint,
    /// Notification: signals only.
    Notification,
    /// A frame or other memory region: data only.
    Memory,
    /// Capability node: whoever holds it can move caps in and out of it.
    CNode,
    /// Thread: whoever holds it can change its CSpace.
    Tcb,
    /// Untyped memory.
    Untyped,
}

impl ObjectKind {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Endpoint => "endpoint",
            ObjectKind::Notification => "notification",
            ObjectKind::Memory => "memory",
            ObjectKind::CNode => "cnode",
            ObjectKind::Tcb => "tcb",
            ObjectKind::Untyped => "untyped",
        }
    }
}

#[derive(Debug, Clone)]
struct Object {
    owner: PartitionId,
    name: String,
    kind: ObjectKind,
}

#[derive(Debug, Clone)]
struct Channel {
    between: [PartitionId; 2],
    objects: Vec<ObjectId>,
    rights: [Rights; 2],
}

/// A mistake in building a [`Spec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// The input: partitions, objects, the initial distribution and the declared channels.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    partitions: Vec<String>,
    objects: Vec<Object>,
    caps: Vec<(PartitionId, ObjectId, Rights)>,
    channels: Vec<Channel>,
}

/// One transfer in a cap's path: the cap moved `from` → `to` over the object `via`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The endpoint (or CNode/TCB) it moved through, as `owner.name`.
    pub via: String,
    /// Sending partition.
    pub from: String,
    /// Receiving partition.
    pub to: String,
}

/// A partition holding authority it should not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The holding partition.
    pub partition: String,
    /// The object's owner.
    pub owner: String,
    /// The object's name (within its owner).
    pub object: String,
    /// The object's kind.
    pub kind: ObjectKind,
    /// The rights held beyond what is allowed (all delivered by `path`).
    pub rights: Rights,
    /// The transfers that delivered them; empty for the initial distribution.
    pub path: Vec<Hop>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition `{}` holds {} on {} `{}.{}`: ",
            self.partition,
            rights_string(self.rights),
            self.kind.name(),
            self.owner,
            self.object
        )?;
        if self.path.is_empty() {
            return f.write_str("initial distribution");
        }
        for (i, hop) in self.path.iter().enumerate() {
            if i > 0 {
                f.write_str(", then ")?;
            }
            write!(f, "granted {} -> {} via `{}`", hop.from, hop.to, hop.via)?;
        }
        Ok(())
    }
}

/// The result of [`Spec::analyse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every violation, ordered by partition, then object.
    pub violations: Vec<Violation>,
    /// How many (partition, object) pairs hold some right after the closure.
    pub caps_after_closure: usize,
}

impl Report {
    /// No violation.
    pub fn is_isolated(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Rights as letters: `r`, `w`, `g` (grant) and `p` (grant-reply); `-` for none.
pub fn rights_string(r: Rights) -> String {
    let s: String = [(READ, 'r'), (WRITE, 'w'), (GRANT, 'g'), (GRANT_REPLY, 'p')]
        .iter()
        .filter(|(bit, _)| r & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    if s.is_empty() {
        "-".to_string()
    } else {
        s
    }
}

/// The bits the analysis tracks, one path each.
const BITS: [Rights; 4] = [READ, WRITE, GRANT, GRANT_REPLY];

type Path = Vec<(ObjectId, PartitionId, PartitionId)>;
/// Per (holder, object): for each bit in [`BITS`], the path that first delivered it.
type Held = BTreeMap<(PartitionId, ObjectId), [Option<Path>; 4]>;

impl Spec {
    /// An empty system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a partition; names must be unique.
    pub fn add_partition(&mut self, name: &str) -> Result<PartitionId, SpecError> {
        if self.partitions.iter().any(|p| p == name) {
            return Err(SpecError(format!("duplicate partition `{name}`")));
        }
        self.partitions.push(name.to_string());
        Ok(PartitionId(self.partitions.len() - 1))
    }

    /// Adds an object owned by `owner`; names are unique per owner.
    pub fn add_object(
        &mut self,
        owner: PartitionId,
        name: &str,
        kind: ObjectKind,
    ) -> Result<ObjectId, SpecError> {
        self.check_partition(owner)?;
        if self.object(owner, name).is_some() {
            let p = &self.partitions[owner.0];
            return Err(SpecError(format!("duplicate object `{p}.{name}`")));
        }
        self.objects.push(Object {
            owner,
            name: name.to_string(),
            kind,
        });
        Ok(ObjectId(self.objects.len() - 1))
    }

    /// Finds an object by owner and name.
    pub fn object(&self, owner: PartitionId, name: &str) -> Option<ObjectId> {
        self.objects
            .iter()
            .position(|o| o.owner == owner && o.name == name)
            .map(ObjectId)
    }

    /// Finds a partition by name.
    pub fn partition(&self, name: &str) -> Option<PartitionId> {
        self.partitions
            .iter()
            .position(|p| p == name)
            .map(PartitionId)
    }

    /// Gives `holder` a cap to `object` in the initial distribution (rights accumulate).
    pub fn give(
        &mut self,
        holder: PartitionId,
        object: ObjectId,
        rights: Rights,
    ) -> Result<(), SpecError> {
        self.check_partition(holder)?;
        self.check_object(object)?;
        self.caps.push((holder, object, rights));
        Ok(())
    }

    /// Declares a channel between `between[0]` and `between[1]` sharing `objects`, with
    /// the rights each side may hold (`rights[i]` for `between[i]`). Every object must be
    /// owned by one of the two.
    pub fn add_channel(
        &mut self,
        between: [PartitionId; 2],
        objects: &[ObjectId],
        rights: [Rights; 2],
    ) -> Result<(), SpecError> {
        self.check_partition(between[0])?;
        self.check_partition(between[1])?;
        if between[0] == between[1] {
            let p = &self.partitions[between[0].0];
            return Err(SpecError(format!("channel between `{p}` and itself")));
        }
        for &o in objects {
            self.check_object(o)?;
            if !between.contains(&self.objects[o.0].owner) {
                return Err(SpecError(format!(
                    "channel object `{}` is owned by neither side",
                    self.qualified(o)
                )));
            }
        }
        self.channels.push(Channel {
            between,
            objects: objects.to_vec(),
            rights,
        });
        Ok(())
    }

    fn check_partition(&self, p: PartitionId) -> Result<(), SpecError> {
        if p.0 < self.partitions.len() {
            Ok(())
        } else {
            Err(SpecError(format!("no partition #{}", p.0)))
        }
    }

    fn check_object(&self, o: ObjectId) -> Result<(), SpecError> {
        if o.0 < self.objects.len() {
            Ok(())
        } else {
            Err(SpecError(format!("no object #{}", o.0)))
        }
    }

    fn qualified(&self, o: ObjectId) -> String {
        let obj = &self.objects[o.0];
        format!("{}.{}", self.partitions[obj.owner.0], obj.name)
    }

    /// The transfer edges `(via, from, to)` the current distribution allows.
    fn edges(&self, held: &Held) -> Vec<(ObjectId, PartitionId, PartitionId)> {
        let rights = |p: PartitionId, o: ObjectId| -> Rights {
            held.get(&(p, o)).map_or(0, |paths| {
                BITS.iter()
                    .zip(paths)
                    .filter(|(_, path)| path.is_some())
                    .fold(0, |acc, (bit, _)| acc | bit)
            })
        };
        let mut edges = Vec::new();
        for &(s, o) in held.keys() {
            let obj = &self.objects[o.0];
            let rs = rights(s, o);
            match obj.kind {
                ObjectKind::Endpoint => {
                    for &(r, o2) in held.keys() {
                        if o2 != o || r == s {
                            continue;
                        }
                        let rr = rights(r, o);
                        let grant = rs & GRANT != 0 && rr & READ != 0;
                        let reply = rs & READ != 0 && rr & (GRANT | GRANT_REPLY) != 0;
                        if grant || reply {
                            edges.push((o, s, r));
                        }
                    }
                }
                ObjectKind::CNode | ObjectKind::Tcb if obj.owner != s && rs != 0 => {
                    edges.push((o, s, obj.owner));
                    edges.push((o, obj.owner, s));
                }
                _ => {}
            }
        }
        edges.sort();
        edges.dedup();
        edges
    }

    /// Closes the distribution under the transfer rule and lists the violations.
    pub fn analyse(&self) -> Report {
        let mut held: Held = BTreeMap::new();
        for &(p, o, r) in &self.caps {
            let entry = held.entry((p, o)).or_default();
            for (i, bit) in BITS.iter().enumerate() {
                if r & bit != 0 && entry[i].is_none() {
                    entry[i] = Some(Vec::new());
                }
            }
        }
        // When each edge first appeared: earlier edges are preferred for paths.
        let mut since: BTreeMap<(ObjectId, PartitionId, PartitionId), usize> = BTreeMap::new();
        for round in 0.. {
            for edge in self.edges(&held) {
                since.entry(edge).or_insert(round);
            }
            let mut edges: Vec<_> = since.iter().map(|(&e, &r)| (r, e)).collect();
            edges.sort_by_key(|&(r, (via, from, to))| {
                let kind = self.objects[via.0].kind;
                (r, kind != ObjectKind::Endpoint, via, from, to)
            });
            let mut added: Held = BTreeMap::new();
            for (_, (via, from, to)) in edges {
                for (&(_, o), paths) in
                    held.range((from, ObjectId(0))..=(from, ObjectId(usize::MAX)))
                {
                    for (i, path) in paths.iter().enumerate() {
                        let Some(path) = path else { continue };
                        let have = held.get(&(to, o)).is_some_and(|p| p[i].is_some());
                        let slot = &mut added.entry((to, o)).or_default()[i];
                        // Among paths of the same round, keep the first with the most
                        // hops (`s` already has one hop more than `path`).
                        if have || slot.as_ref().is_some_and(|s| s.len() > path.len()) {
                            continue;
                        }
                        let mut longer = path.clone();
                        longer.push((via, from, to));
                        *slot = Some(longer);
                    }
                }
            }
            let mut changed = false;
            for (key, paths) in added {
                let entry = held.entry(key).or_default();
                for (i, path) in paths.into_iter().enumerate() {
                    if path.is_some() && entry[i].is_none() {
                        entry[i] = path;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let caps_after_closure = held
            .values()
            .filter(|p| p.iter().any(Option::is_some))
            .count();
        let mut violations = Vec::new();
        for (&(p, o), paths) in &held {
            let allowed = self.allowed(p, o);
            // Group the excess bits by the path that delivered them.
            let mut groups: Vec<(Rights, &Path)> = Vec::new();
            for (bit, path) in BITS.iter().zip(paths) {
                let Some(path) = path else { continue };
                if allowed & bit != 0 {
                    continue;
                }
                match groups.iter_mut().find(|(_, q)| *q == path) {
                    Some((r, _)) => *r |= bit,
                    None => groups.push((*bit, path)),
                }
            }
            for (rights, path) in groups {
                violations.push(self.violation(p, o, rights, path));
            }
        }
        violations.sort_by(|a, b| {
            (&a.partition, &a.owner, &a.object).cmp(&(&b.partition, &b.owner, &b.object))
        });
        Report {
            violations,
            caps_after_closure,
        }
    }

    /// The rights partition `p` may hold on object `o`.
    fn allowed(&self, p: PartitionId, o: ObjectId) -> Rights {
        let owner = self.objects[o.0].owner;
        let mut covered = false;
        let mut allowed = 0;
        for ch in &self.channels {
            if !ch.objects.contains(&o) || !ch.between.contains(&owner) {
                continue;
            }
            if let Some(side) = ch.between.iter().position(|&q| q == p) {
                covered = true;
                allowed |= ch.rights[side];
            }
        }
        if !covered && owner == p {
            Rights::MAX
        } else {
            allowed
        }
    }

    fn violation(&self, p: PartitionId, o: ObjectId, rights: Rights, path: &Path) -> Violation {
        let obj = &self.objects[o.0];
        let name = |q: PartitionId| self.partitions[q.0].clone();
        Violation {
            partition: name(p),
            owner: name(obj.owner),
            object: obj.name.clone(),
            kind: obj.kind,
            rights,
            path: path
                .iter()
                .map(|&(via, from, to)| Hop {
                    via: self.qualified(via),
                    from: name(from),
                    to: name(to),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: Rights = READ | WRITE;
    const RWG: Rights = READ | WRITE | GRANT;

    /// Partitions `names`, each owning a `cspace` CNode and a `private` memory region with
    /// all rights.
    fn spec(names: &[&str]) -> (Spec, Vec<PartitionId>) {
        let mut s = Spec::new();
        let ids: Vec<PartitionId> = names.iter().map(|n| s.add_partition(n).unwrap()).collect();
        for &p in &ids {
            let c = s.add_object(p, "cspace", ObjectKind::CNode).unwrap();
            let m = s.add_object(p, "private", ObjectKind::Memory).unwrap();
            s.give(p, c, RWG).unwrap();
            s.give(p, m, RWG).unwrap();
        }
        (s, ids)
    }

    /// An endpoint owned by `a` shared with `b`, declared with `declared` for both sides,
    /// held with `held_a` and `held_b`.
    fn endpoint(
        s: &mut Spec,
        name: &str,
        [a, b]: [PartitionId; 2],
        declared: Rights,
        [held_a, held_b]: [Rights; 2],
    ) -> ObjectId {
        let ep = s.add_object(a, name, ObjectKind::Endpoint).unwrap();
        s.add_channel([a, b], &[ep], [declared, declared]).unwrap();
        s.give(a, ep, held_a).unwrap();
        s.give(b, ep, held_b).unwrap();
        ep
    }

    fn hop(via: &str, from: &str, to: &str) -> Hop {
        Hop {
            via: via.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    fn find<'r>(r: &'r Report, holder: &str, object: &str) -> &'r Violation {
        r.violations
            .iter()
            .find(|v| v.partition == holder && format!("{}.{}", v.owner, v.object) == object)
            .unwrap_or_else(|| panic!("no violation for {holder} on {object}: {r:?}"))
    }

    #[test]
    fn clean_channel_is_isolated() {
        let (mut s, ids) = spec(&["a", "b"]);
        endpoint(&mut s, "ab", [ids[0], ids[1]], RW, [RW, RW]);
        let shm = s.add_object(ids[1], "shm", ObjectKind::Memory).unwrap();
        s.add_channel([ids[0], ids[1]], &[shm], [READ, RW]).unwrap();
        s.give(ids[0], shm, READ).unwrap();
        s.give(ids[1], shm, RW).unwrap();
        let r = s.analyse();
        assert!(r.is_isolated(), "{r:?}");
        assert_eq!(r.caps_after_closure, 8);
    }

    #[test]
    fn grant_on_both_sides_leaks_private_caps() {
        let (mut s, ids) = spec(&["a", "b"]);
        endpoint(&mut s, "ab", [ids[0], ids[1]], RWG, [RWG, RWG]);
        let r = s.analyse();
        let v = find(&r, "b", "a.private");
        assert_eq!(v.rights, RWG);
        assert_eq!(v.path, [hop("a.ab", "a", "b")]);
        assert_eq!(
            v.to_string(),
            "partition `b` holds rwg on memory `a.private`: granted a -> b via `a.ab`"
        );
        find(&r, "a", "b.private");
        find(&r, "b", "a.cspace");
        // The channel itself was declared with GRANT, so holding it is fine.
        assert!(r.violations.iter().all(|v| v.object != "ab"), "{r:?}");
    }

    #[test]
    fn grant_without_a_receiver_leaks_nothing() {
        let (mut s, ids) = spec(&["a", "b"]);
        // a may grant, but b cannot receive: nothing flows to b. b can send only.
        endpoint(&mut s, "ab", [ids[0], ids[1]], RWG, [RWG, WRITE]);
        assert!(s.analyse().is_isolated());
    }

    #[test]
    fn reply_grant_lets_the_receiver_answer_with_caps() {
        let (mut s, ids) = spec(&["a", "b"]);
        // b calls with GRANT_REPLY; a receives and may answer with its caps.
        let decl = RW | GRANT_REPLY;
        endpoint(
            &mut s,
            "ab",
            [ids[0], ids[1]],
            decl,
            [READ, WRITE | GRANT_REPLY],
        );
        let r = s.analyse();
        assert_eq!(find(&r, "b", "a.private").path, [hop("a.ab", "a", "b")]);
        // b then holds a's CSpace, through which b's caps can reach a.
        assert_eq!(find(&r, "a", "b.private").path, [hop("a.cspace", "b", "a")]);
    }

    #[test]
    fn direct_cap_is_reported_as_initial() {
        let (mut s, ids) = spec(&["a", "b"]);
        let private = s.object(ids[0], "private").unwrap();
        s.give(ids[1], private, READ).unwrap();
        let r = s.analyse();
        assert_eq!(r.violations.len(), 1, "{r:?}");
        let v = &r.violations[0];
        assert_eq!((v.rights, v.path.is_empty()), (READ, true));
        assert_eq!(
            v.to_string(),
            "partition `b` holds r on memory `a.private`: initial distribution"
        );
    }

    #[test]
    fn two_hop_chain_reaches_the_third_partition() {
        let (mut s, ids) = spec(&["a", "b", "c"]);
        // a grants to b over ab; b grants to c over bc.
        endpoint(&mut s, "ab", [ids[0], ids[1]], RWG, [WRITE | GRANT, READ]);
        endpoint(&mut s, "bc", [ids[1], ids[2]], RWG, [WRITE | GRANT, READ]);
        let r = s.analyse();
        let v = find(&r, "c", "a.private");
        assert_eq!(v.rights, RWG);
        assert_eq!(v.path, [hop("a.ab", "a", "b"), hop("b.bc", "b", "c")]);
        assert!(v
            .to_string()
            .ends_with("granted a -> b via `a.ab`, then granted b -> c via `b.bc`"));
        // a's cap to the ab endpoint reaches c too; and b, holding READ on ab, may answer
        // a's calls with caps (a holds GRANT on ab).
        find(&r, "c", "a.ab");
        assert_eq!(find(&r, "a", "b.private").path, [hop("a.ab", "b", "a")]);
    }

    #[test]
    fn rights_beyond_the_channel_are_reported() {
        let (mut s, ids) = spec(&["a", "b"]);
        let shm = s.add_object(ids[0], "shm", ObjectKind::Memory).unwrap();
        s.add_channel([ids[0], ids[1]], &[shm], [RW, READ]).unwrap();
        s.give(ids[0], shm, RW).unwrap();
        s.give(ids[1], shm, RW).unwrap();
        let r = s.analyse();
        assert_eq!(r.violations.len(), 1, "{r:?}");
        let v = &r.violations[0];
        assert_eq!((v.partition.as_str(), v.object.as_str()), ("b", "shm"));
        assert_eq!(v.rights, WRITE);
    }

    #[test]
    fn rights_flowing_beyond_the_channel_are_reported() {
        let (mut s, ids) = spec(&["a", "b"]);
        let ep = s.add_object(ids[0], "ab", ObjectKind::Endpoint).unwrap();
        // b may grant to a; a may only receive. b passes its WRITE on ab to a.
        s.add_channel([ids[0], ids[1]], &[ep], [READ, WRITE | GRANT])
            .unwrap();
        s.give(ids[0], ep, READ).unwrap();
        s.give(ids[1], ep, WRITE | GRANT).unwrap();
        let r = s.analyse();
        let v = r
            .violations
            .iter()
            .find(|v| v.partition == "a" && v.object == "ab")
            .unwrap();
        assert_eq!(v.rights, WRITE | GRANT);
        assert_eq!(v.path, [hop("a.ab", "b", "a")]);
    }

    #[test]
    fn a_channel_between_others_does_not_cover() {
        let (mut s, ids) = spec(&["a", "b", "c"]);
        let shm = s.add_object(ids[0], "shm", ObjectKind::Memory).unwrap();
        s.add_channel([ids[0], ids[1]], &[shm], [RW, RW]).unwrap();
        s.give(ids[2], shm, READ).unwrap();
        let r = s.analyse();
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].partition, "c");
    }

    #[test]
    fn cspace_access_flows_both_ways() {
        let (mut s, ids) = spec(&["a", "b"]);
        let cspace = s.object(ids[0], "cspace").unwrap();
        s.give(ids[1], cspace, READ).unwrap();
        let r = s.analyse();
        assert!(find(&r, "b", "a.cspace").path.is_empty());
        assert_eq!(find(&r, "b", "a.private").path, [hop("a.cspace", "a", "b")]);
        assert_eq!(find(&r, "a", "b.private").path, [hop("a.cspace", "b", "a")]);
    }

    #[test]
    fn builder_errors() {
        let (mut s, ids) = spec(&["a", "b", "c"]);
        assert!(s.add_partition("a").is_err());
        assert!(s.add_object(ids[0], "private", ObjectKind::Memory).is_err());
        let m = s.object(ids[2], "private").unwrap();
        assert!(s.add_channel([ids[0], ids[0]], &[], [RW, RW]).is_err());
        let e = s.add_channel([ids[0], ids[1]], &[m], [RW, RW]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "channel object `c.private` is owned by neither side"
        );
        assert!(s.give(PartitionId(9), m, READ).is_err());
        assert_eq!(rights_string(0), "-");
        assert_eq!(rights_string(RWG | GRANT_REPLY), "rwgp");
    }
}
