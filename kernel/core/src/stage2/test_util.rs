//! Host test memory, table pools and maintenance recorders for the break-before-make tests.

use super::*;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

/// Fake physical address of the first page of the test memory (the root).
pub const BASE: u64 = 0x8000_0000;
/// What reclaimed (retired, then reused) tables are filled with: decodes as a table at
/// levels 1 and 2 (into memory that does not exist) and as a page at level 3.
pub const POISON: u64 = 0x0000_dead_dead_0003;

/// Host memory: `n` 4 KiB pages at `BASE`; pages 0 and 1 are the root, the others start
/// free. Counts entry accesses.
pub struct Mem {
    pages: Vec<Box<[AtomicU64; ENTRIES]>>,
    /// Free table pages (zeroed when allocated).
    pub free: RefCell<Vec<PhysAddr>>,
    /// `pte` calls so far.
    pub reads: Cell<usize>,
}

impl Mem {
    pub fn new(n: usize) -> Self {
        let pages = (0..n)
            .map(|_| Box::new(core::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        let free = (2..n as u64)
            .rev()
            .map(|i| PhysAddr(BASE + i * PAGE_SIZE))
            .collect();
        Mem {
            pages,
            free: RefCell::new(free),
            reads: Cell::new(0),
        }
    }
    pub fn root(&self) -> PhysAddr {
        PhysAddr(BASE)
    }
    /// Every page that can be a table below the root.
    pub fn table_pages(&self) -> BTreeSet<PhysAddr> {
        (2..self.pages.len() as u64)
            .map(|i| PhysAddr(BASE + i * PAGE_SIZE))
            .collect()
    }
    /// Stores `v` into every entry of the table page `t`.
    pub fn fill(&self, t: PhysAddr, v: u64) {
        let i = ((t.0 - BASE) / PAGE_SIZE) as usize;
        for e in self.pages[i].iter() {
            e.store(v, Ordering::Relaxed);
        }
    }
    /// The raw entry `i` of `t`, without counting.
    pub fn raw(&self, t: PhysAddr, i: usize) -> u64 {
        let byte = t.0 - BASE + i as u64 * 8;
        self.pages[(byte / PAGE_SIZE) as usize][((byte % PAGE_SIZE) / 8) as usize]
            .load(Ordering::Relaxed)
    }
    /// Overwrites the raw entry `i` of `t` (to play another writer).
    pub fn set(&self, t: PhysAddr, i: usize, v: u64) {
        let byte = t.0 - BASE + i as u64 * 8;
        self.pages[(byte / PAGE_SIZE) as usize][((byte % PAGE_SIZE) / 8) as usize]
            .store(v, Ordering::Relaxed);
    }
}

impl TableMem for Mem {
    fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64 {
        self.reads.set(self.reads.get() + 1);
        let byte = table.0 - BASE + index as u64 * 8;
        &self.pages[(byte / PAGE_SIZE) as usize][((byte % PAGE_SIZE) / 8) as usize]
    }
}

/// Tables from a [`Mem`]'s free list, zeroed on allocation; records what it handed out
/// and took back. An optional hook runs inside `alloc_table` (to play a racing writer).
pub struct Pool<'a> {
    mem: &'a Mem,
    pub allocated: Vec<PhysAddr>,
    pub freed: Vec<PhysAddr>,
    pub on_alloc: Option<Box<dyn FnMut() + 'a>>,
}

impl<'a> Pool<'a> {
    pub fn new(mem: &'a Mem) -> Self {
        Pool {
            mem,
            allocated: Vec::new(),
            freed: Vec::new(),
            on_alloc: None,
        }
    }
}

impl TableAlloc for Pool<'_> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let t = self.mem.free.borrow_mut().pop()?;
        self.mem.fill(t, 0);
        self.allocated.push(t);
        if let Some(f) = &mut self.on_alloc {
            f();
        }
        Some(t)
    }
    fn free_table(&mut self, t: PhysAddr) {
        self.freed.push(t);
        self.mem.free.borrow_mut().push(t);
    }
}

/// One maintenance call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    Ipa(Ipa, u32),
    Vmid,
    Retire(PhysAddr),
}

/// Records maintenance calls; an optional hook sees each call as it happens.
pub struct Rec<'a> {
    pub ev: Vec<Ev>,
    pub hook: Option<Box<dyn FnMut(Ev) + 'a>>,
}

impl<'a> Rec<'a> {
    pub fn new() -> Self {
        Rec {
            ev: Vec::new(),
            hook: None,
        }
    }
    pub fn with_hook(f: impl FnMut(Ev) + 'a) -> Self {
        Rec {
            ev: Vec::new(),
            hook: Some(Box::new(f)),
        }
    }
    pub fn retired(&self) -> Vec<PhysAddr> {
        self.ev
            .iter()
            .filter_map(|e| match e {
                Ev::Retire(t) => Some(*t),
                _ => None,
            })
            .collect()
    }
    fn push(&mut self, e: Ev) {
        if let Some(h) = &mut self.hook {
            h(e);
        }
        self.ev.push(e);
    }
}

impl Maintenance for Rec<'_> {
    fn tlbi_ipa(&mut self, ipa: Ipa, level: u32) {
        self.push(Ev::Ipa(ipa, level));
    }
    fn tlbi_vmid(&mut self) {
        self.push(Ev::Vmid);
    }
    fn retire(&mut self, table: PhysAddr) {
        self.push(Ev::Retire(table));
    }
}

/// An entry as the reference model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ent {
    Table,
    Leaf(u64, Perms, MemType),
}

/// The tree reachable from `root`: every valid entry by (level, first IPA), and the tables
/// below the root. Panics on a LOCKED entry, poison, or a table linked twice.
pub fn shape(mem: &Mem, root: PhysAddr) -> (BTreeMap<(u32, u64), Ent>, Vec<PhysAddr>) {
    fn visit(
        mem: &Mem,
        t: PhysAddr,
        level: u32,
        base: u64,
        out: &mut BTreeMap<(u32, u64), Ent>,
        tables: &mut Vec<PhysAddr>,
    ) {
        for i in 0..entries(level) {
            let d = mem.raw(t, i);
            let at = base + i as u64 * span(level);
            assert_ne!(d, POISON, "poison reachable at {at:#x} level {level}");
            match decode(level, d) {
                Desc::Invalid => assert_eq!(d, 0, "stray bits at {at:#x} level {level}"),
                Desc::Locked => panic!("LOCKED entry left at {at:#x} level {level}"),
                Desc::Table(next) => {
                    assert!(!tables.contains(&next), "table {next:?} linked twice");
                    tables.push(next);
                    out.insert((level, at), Ent::Table);
                    visit(mem, next, level + 1, at, out, tables);
                }
                Desc::Leaf { pa, perms, mem: ty } => {
                    out.insert((level, at), Ent::Leaf(pa.0, perms, ty));
                }
            }
        }
    }
    let (mut out, mut tables) = (BTreeMap::new(), Vec::new());
    visit(mem, root, START_LEVEL, 0, &mut out, &mut tables);
    (out, tables)
}
