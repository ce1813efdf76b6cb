//! Puts `task.x`, the native-task linker script, on the linker search path of every
//! binary that depends on this crate. Each task binary adds `-Ttask.x` itself.
use std::{env, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rustc-link-search={}", dir.display());
    println!("cargo:rerun-if-changed=task.x");
}
