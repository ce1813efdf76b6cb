//! The kernel's capability system: capabilities, CNode slots, the derivation tree, and the
//! CNode and Untyped operations, with no heap.
//!
//! Semantics: `docs/design/capabilities.md` (the `cap-model` crate is the executable
//! reference and the differential tests hold this code to it).
//!
//! Storage: every slot (a [`Cte`]) lives in a CNode object in retyped memory, addressed
//! by its physical address. This code reaches slots only through [`SlotMem`], so the
//! kernel backs it with its identity map and the host tests with a map.
//!
//! The derivation tree is kept as one list in pre-order (seL4's "MDB" idea) with each
//! entry's depth in the tree: a cap's descendants are the run after it with greater depth,
//! its parent the nearest earlier entry one level up. A new child goes right after its
//! parent; deleting a cap lifts its descendants one level. All caps to one object form a
//! contiguous run, so "is this the last cap to the object" looks at two neighbours only.

mod cte;
mod ops;

pub use cte::{Cap, Cte, SlotMem, CTE_WORDS};
pub use ops::{
    boot, copy, delete, delete_all_in, delete_at, derive_into, issue_child, lookup, mint, move_cap,
    mutate, parent_of, place_initial, retype, revoke, Addr,
};

#[cfg(test)]
mod tests;
